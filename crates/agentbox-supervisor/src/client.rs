//! Client side of the attach protocol: one-shot requests and the interactive attach loop.

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use agentbox_sys::{get_winsize, RawTerminal, SandboxOutput};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::paths;
use crate::protocol::{read_frame, write_frame, Decoder, Frame};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the agent is not running (no supervisor answers at {0})")]
    NotRunning(String),
    #[error("the supervisor refused: {0}")]
    Refused(String),
    /// No answer in time: the supervisor is stopped or stuck. The request is not carried out
    /// later (the supervisor drops a request whose client has gone).
    #[error("the supervisor at {0} did not answer within {secs}s (is it stopped?)", secs = ANSWER_WITHIN.as_secs())]
    Timeout(String),
    #[error("talking to the supervisor: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}: {1}")]
    Sys(&'static str, Errno),
}

/// How long a one-shot request waits for the supervisor.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

fn connect(state_dir: &Path) -> Result<UnixStream, ClientError> {
    let path = paths::socket(state_dir);
    let s = UnixStream::connect(&path).map_err(|_| ClientError::NotRunning(path.display().to_string()))?;
    s.set_read_timeout(Some(ANSWER_WITHIN))?;
    s.set_write_timeout(Some(ANSWER_WITHIN))?;
    Ok(s)
}

/// A read or write that ran out of time is the supervisor not answering.
fn timed(state_dir: &Path, e: std::io::Error) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError::Timeout(paths::socket(state_dir).display().to_string())
        }
        _ => ClientError::Io(e),
    }
}

fn request(state_dir: &Path, frame: Frame) -> Result<Frame, ClientError> {
    let mut s = connect(state_dir)?;
    write_frame(&mut s, &frame).map_err(|e| timed(state_dir, e))?;
    match read_frame(&mut s).map_err(|e| timed(state_dir, e))? {
        Some(Frame::Error(e)) => Err(ClientError::Refused(e)),
        Some(f) => Ok(f),
        None => Err(ClientError::Refused("the supervisor closed the connection".into())),
    }
}

/// Types `bytes` into the agent's terminal.
pub fn send_input(state_dir: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    request(state_dir, Frame::Input(bytes.to_vec())).map(drop)
}

/// Sets the agent's terminal size (what a controlling client's Resize does, without attaching).
pub fn resize(state_dir: &Path, rows: u16, cols: u16) -> Result<(), ClientError> {
    let mut s = connect(state_dir)?;
    write_frame(&mut s, &Frame::Resize { rows, cols }).map_err(|e| timed(state_dir, e))?;
    Ok(())
}

/// Takes `rule` off the agent's egress proxy allowlist.
pub fn revoke_host(state_dir: &Path, rule: &str) -> Result<(), ClientError> {
    request(state_dir, Frame::Revoke { rule: rule.to_string() }).map(drop)
}

/// Lets the agent's egress proxy reach `rule` (a host rule), once or from now on.
pub fn allow_host(state_dir: &Path, rule: &str, once: bool) -> Result<(), ClientError> {
    request(state_dir, Frame::Allow { rule: rule.to_string(), once }).map(drop)
}

/// Has the supervisor pause the agent once it has been idle for `after` (`None`: never).
pub fn pause_after(state_dir: &Path, after: Option<std::time::Duration>) -> Result<(), ClientError> {
    let ms = after.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
    request(state_dir, Frame::PauseAfter(ms)).map(drop)
}

/// Kills the agent's sandbox (and with it every process inside).
pub fn kill_agent(state_dir: &Path) -> Result<(), ClientError> {
    request(state_dir, Frame::Kill).map(drop)
}

/// Asks the agent to end: SIGTERM to its command's process group (`stop`).
pub fn terminate_agent(state_dir: &Path) -> Result<(), ClientError> {
    request(state_dir, Frame::Terminate).map(drop)
}

/// The agent's current screen; the final screen once it has ended.
pub fn screen(state_dir: &Path, formatted: bool) -> Result<String, ClientError> {
    let saved = || {
        let path = if formatted { paths::screen_ansi(state_dir) } else { paths::screen_text(state_dir) };
        std::fs::read_to_string(path)
    };
    match request(state_dir, Frame::ScreenRequest { formatted }) {
        Ok(Frame::Screen(s)) => Ok(s),
        Err(ClientError::NotRunning(p)) => saved().map_err(|_| ClientError::NotRunning(p)),
        // The agent ended while it was asked (the answer is its exit, or the connection goes):
        // its supervisor saves the last screen and goes.
        reply => {
            let e = match reply {
                Ok(other) => ClientError::Refused(format!("unexpected reply {other:?}")),
                Err(e) => e,
            };
            for _ in 0..40 {
                if let Err(ClientError::NotRunning(_)) = connect(state_dir) {
                    return saved().map_err(|_| e);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e)
        }
    }
}

/// The sandbox's handles, to join it (`agentbox exec`). Only the socket's owner can ask.
pub fn sandbox_handles(state_dir: &Path) -> Result<agentbox_jail::SandboxHandles, ClientError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut s = connect(state_dir)?;
    write_frame(&mut s, &Frame::HandlesRequest).map_err(|e| timed(state_dir, e))?;
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 16]);
    let msg = match recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
        Ok(m) => m,
        Err(Errno::EAGAIN) => {
            return Err(ClientError::Timeout(paths::socket(state_dir).display().to_string()))
        }
        Err(e) => return Err(ClientError::Sys("receive the sandbox's handles", e)),
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| ClientError::Sys("receive the sandbox's handles", e))? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(raw.into_iter().map(agentbox_sys::own_received_fd));
        }
    }
    let bytes = msg.bytes;
    let mut decoder = Decoder::default();
    decoder.push(&buf[..bytes]);
    match decoder.next_frame()? {
        Some(Frame::Handles) => agentbox_jail::SandboxHandles::from_fds(fds)
            .ok_or_else(|| ClientError::Refused("the supervisor sent incomplete handles".into())),
        Some(Frame::Error(e)) => Err(ClientError::Refused(e)),
        _ => Err(ClientError::Refused("unexpected reply to a handles request".into())),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AttachOptions {
    pub read_only: bool,
    /// Type into the agent but leave its terminal's size as it is (a small pane of a grid
    /// should not shrink the agent for everyone else).
    pub keep_size: bool,
    /// The byte that detaches (Ctrl-] = 0x1d by default).
    pub detach_key: u8,
}

/// How an attach session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachEnd {
    Detached,
    Exited(i32),
}

/// Attaches the caller's terminal to the agent until the detach key is typed or the agent ends.
pub fn attach(state_dir: &Path, opts: AttachOptions) -> Result<AttachEnd, ClientError> {
    let mut sock = connect(state_dir)?;
    let stdin = std::io::stdin();
    let _raw = RawTerminal::enter(stdin.as_fd());
    // Dropped first (declared last): the agent's modes are undone while the terminal is still raw.
    let mut stdout = SandboxOutput::new(std::io::stdout(), std::io::stdout().is_terminal());
    write_frame(&mut sock, if opts.read_only { &Frame::Observe } else { &Frame::Attach })?;
    let send_size = |sock: &mut UnixStream| -> Result<(), ClientError> {
        if let Ok(size) = get_winsize(std::io::stdout().as_fd()) {
            if size.rows > 0 && size.cols > 0 && !opts.read_only && !opts.keep_size {
                write_frame(sock, &Frame::Resize { rows: size.rows, cols: size.cols })?;
            }
        }
        Ok(())
    };
    send_size(&mut sock)?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGWINCH);
    mask.thread_block().map_err(|e| ClientError::Sys("block SIGWINCH", e))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| ClientError::Sys("signalfd", e))?;

    let mut decoder = Decoder::default();
    let mut stdin_open = true;
    let mut buf = [0u8; 16384];
    loop {
        let mut fds =
            vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ClientError::Sys("poll", e)),
            Ok(_) => {}
        }
        let ev: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
        drop(fds);
        if !ev[0].is_empty() {
            let n = sock.read(&mut buf)?;
            if n == 0 {
                return Err(ClientError::NotRunning("the supervisor went away".into()));
            }
            decoder.push(&buf[..n]);
            while let Some(frame) = decoder.next_frame()? {
                match frame {
                    Frame::Output(bytes) => stdout.write(&bytes)?,
                    Frame::Exit(code) => return Ok(AttachEnd::Exited(code)),
                    Frame::Error(e) => return Err(ClientError::Refused(e)),
                    _ => {}
                }
            }
        }
        if !ev[1].is_empty() {
            while let Ok(Some(_)) = sfd.read_signal() {}
            send_size(&mut sock)?;
        }
        if stdin_open && ev.get(2).is_some_and(|e| !e.is_empty()) {
            let n = nix::unistd::read(stdin.as_fd(), &mut buf).unwrap_or(0);
            if n == 0 {
                stdin_open = false;
                continue;
            }
            let input = &buf[..n];
            let (before, detach) = match input.iter().position(|b| *b == opts.detach_key) {
                Some(i) => (&input[..i], true),
                None => (input, false),
            };
            if !before.is_empty() && !opts.read_only {
                write_frame(&mut sock, &Frame::Input(before.to_vec()))?;
            }
            if detach {
                return Ok(AttachEnd::Detached);
            }
        }
    }
}

/// The running sandbox whose init is `root`, as the jail freezes it: with its PID namespace
/// taken from the handles its supervisor keeps (not from `/proc/ROOT`, which would name another
/// process's namespace if `root` had ended and its pid been reused).
pub fn sandbox_tree(state_dir: &Path, root: nix::unistd::Pid) -> agentbox_jail::SandboxTree {
    let pid_ns = sandbox_handles(state_dir).ok().and_then(|h| {
        let fd = h.namespace(nix::sched::CloneFlags::CLONE_NEWPID)?;
        nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
    });
    agentbox_jail::SandboxTree { root, pid_ns }
}
