//! QEMU's monitor (QMP), from the host: how a VM agent is paused (`stop`: its vCPUs halt, its
//! memory and devices stay) and resumed (`cont`).
//!
//! QEMU listens on [`QMP_SOCKET`] inside its own sandbox. The host reaches it through the
//! sandbox's root (`/proc/PID/root`), opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`: that directory is QEMU's to write, and a link planted there must not
//! lead the host to a socket of its own. The socket is connected through the descriptor so found
//! (`/proc/self/fd/N`), never by path.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::config::QMP_SOCKET;

/// The longest line of QMP read.
const LINE_LIMIT: u64 = 64 << 10;

/// Why the monitor could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// No monitor socket: a VM started before monitors were given one, or not a VM.
    #[error("QEMU's monitor is not there ({0})")]
    Missing(String),
    #[error("QEMU's monitor: {0}")]
    Failed(String),
}

/// The monitor socket in the sandbox whose init is `root`, found without following links.
fn socket_fd(root: Pid) -> Result<OwnedFd, MonitorError> {
    let dir = open(
        format!("/proc/{root}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| MonitorError::Missing(format!("the sandbox's root: {e}")))?;
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    openat2(&dir, QMP_SOCKET.trim_start_matches('/'), how)
        .map_err(|e| MonitorError::Missing(format!("{QMP_SOCKET}: {e}")))
}

/// Runs one QMP command (`stop`, `cont`) in the VM of the sandbox whose init is `root`.
pub fn command(root: Pid, execute: &str) -> Result<(), MonitorError> {
    let fd = socket_fd(root)?;
    let stream = UnixStream::connect(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| MonitorError::Missing(format!("connecting: {e}")))?;
    Qmp::new(stream)?.execute(execute, None).map(drop)
}

/// A QMP connection, greeted and with commands enabled. Every exchange is bounded: in time (5 s
/// per command), in line length, and against a monitor that answers with anything but JSON.
#[derive(Debug)]
pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Failed(format!("{what}: {e}"))
}

impl Qmp {
    pub fn new(stream: UnixStream) -> Result<Self, MonitorError> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| failed("timeout", e))?;
        let writer = stream.try_clone().map_err(|e| failed("socket", e))?;
        let mut qmp = Self { writer, reader: BufReader::new(stream) };
        let greeting = qmp.answer(Instant::now() + Duration::from_secs(5))?;
        if greeting.get("QMP").is_none() {
            return Err(MonitorError::Failed(format!("no greeting but {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The next line that is not an event (`{"event": ...}` may come before any answer).
    fn answer(&mut self, deadline: Instant) -> Result<serde_json::Value, MonitorError> {
        loop {
            if Instant::now() > deadline {
                return Err(MonitorError::Failed("no answer within 5 seconds".into()));
            }
            let mut line = String::new();
            let read = self
                .reader
                .by_ref()
                .take(LINE_LIMIT)
                .read_line(&mut line)
                .map_err(|e| failed("reading", e))?;
            if read == 0 {
                return Err(MonitorError::Failed("it closed the connection".into()));
            }
            if !line.ends_with('\n') {
                return Err(MonitorError::Failed("an answer longer than 64 KiB".into()));
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| MonitorError::Failed(format!("an answer that is not JSON ({e})")))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    fn request(execute: &str, arguments: Option<serde_json::Value>) -> String {
        let mut cmd = serde_json::json!({ "execute": execute });
        if let Some(a) = arguments {
            cmd["arguments"] = a;
        }
        cmd.to_string() + "\n"
    }

    fn result(&mut self, execute: &str) -> Result<serde_json::Value, MonitorError> {
        let mut v = self.answer(Instant::now() + Duration::from_secs(5))?;
        if let Some(err) = v.get("error") {
            return Err(MonitorError::Failed(format!("{execute}: {err}")));
        }
        Ok(v.get_mut("return").map(serde_json::Value::take).unwrap_or_default())
    }

    /// Runs `execute` with `arguments`; what it returned.
    pub fn execute(
        &mut self,
        execute: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, MonitorError> {
        self.writer
            .write_all(Self::request(execute, arguments).as_bytes())
            .map_err(|e| failed("writing", e))?;
        self.result(execute)
    }

    /// Hands `fd` to QEMU under `name` (`getfd`), for commands that take a descriptor by name.
    pub fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), MonitorError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let line = Self::request("getfd", Some(serde_json::json!({ "fdname": name })));
        let fds = [fd.as_raw_fd()];
        let iov = [std::io::IoSlice::new(line.as_bytes())];
        let sent = sendmsg::<()>(
            self.writer.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| failed("passing a descriptor", e))?;
        if sent != line.len() {
            self.writer.write_all(&line.as_bytes()[sent..]).map_err(|e| failed("writing", e))?;
        }
        self.result("getfd").map(drop)
    }
}
