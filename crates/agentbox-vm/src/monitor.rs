//! QEMU's monitor (QMP), from the host: how a VM agent is paused (`stop`: its vCPUs halt, its
//! memory and devices stay) and resumed (`cont`).
//!
//! QEMU listens on [`QMP_SOCKET`] inside its own sandbox. The host reaches it through the
//! sandbox's root (`/proc/PID/root`), opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`: that directory is QEMU's to write, and a link planted there must not
//! lead the host to a socket of its own. The socket is connected through the descriptor so found
//! (`/proc/self/fd/N`), never by path.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

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
    let failed = |what: &str, e: std::io::Error| MonitorError::Failed(format!("{what}: {e}"));
    let stream = UnixStream::connect(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| MonitorError::Missing(format!("connecting: {e}")))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| failed("timeout", e))?;
    let mut writer = stream.try_clone().map_err(|e| failed("socket", e))?;
    let mut reader = BufReader::new(stream);
    // The whole exchange, however QEMU answers (a stream of events, a line without end).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let answer = |reader: &mut BufReader<UnixStream>| -> Result<serde_json::Value, MonitorError> {
        // Events (`{"event": ...}`) may come before the answer; the greeting is `{"QMP": ...}`.
        loop {
            if std::time::Instant::now() > deadline {
                return Err(MonitorError::Failed("no answer within 5 seconds".into()));
            }
            let mut line = String::new();
            let read =
                reader.by_ref().take(LINE_LIMIT).read_line(&mut line).map_err(|e| failed("reading", e))?;
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
    };
    let greeting = answer(&mut reader)?;
    if greeting.get("QMP").is_none() {
        return Err(MonitorError::Failed(format!("no greeting but {greeting}")));
    }
    for cmd in ["qmp_capabilities", execute] {
        let line = serde_json::json!({ "execute": cmd }).to_string() + "\n";
        writer.write_all(line.as_bytes()).map_err(|e| failed("writing", e))?;
        let v = answer(&mut reader)?;
        if let Some(err) = v.get("error") {
            return Err(MonitorError::Failed(format!("{cmd}: {err}")));
        }
    }
    Ok(())
}
