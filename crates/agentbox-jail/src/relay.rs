//! Waiting for a foreground sandbox: forwards signals, relays the terminal, enforces the timeout.
//!
//! One thread, one poll loop over a signalfd (SIGCHLD, SIGWINCH and the forwarded signals, all
//! blocked since before the clone), the caller's stdin, and the terminal master. Input to the
//! master is buffered and written only when the master is writable, so a command that stops
//! reading can never block the loop and stall its own output.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use agentbox_sys::{get_winsize, set_winsize};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::launch::{handled_signals, Running};
use crate::JailError;

/// How a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this code (init reports a command killed by signal N as 128+N).
    Exited(i32),
    /// The sandbox's init was killed by this signal (from outside).
    Signaled(i32),
    /// The timeout expired and the sandbox was killed.
    TimedOut,
}

/// Puts a terminal in raw mode and restores it when dropped.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Option<Self> {
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, SetArg::TCSAFLUSH, &self.saved);
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

fn wait_status(status: WaitStatus) -> Option<Outcome> {
    match status {
        WaitStatus::Exited(_, code) => Some(Outcome::Exited(code)),
        WaitStatus::Signaled(_, sig, _) => Some(Outcome::Signaled(sig as i32)),
        _ => None,
    }
}

/// Copies everything still buffered in the master to stdout (after the command ended).
fn drain(master: &OwnedFd, out: &mut impl Write) {
    let mut buf = [0u8; 16384];
    loop {
        match nix::unistd::read(master.as_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = out.flush();
}

/// Waits for the sandbox to end, relaying its terminal to the caller's stdin/stdout when it has one.
pub fn wait_foreground(running: Running, timeout: Option<Duration>) -> Result<Outcome, JailError> {
    let Running { pid, master, cgroup, .. } = running;
    let deadline = timeout.map(|t| Instant::now() + t);
    let sfd = SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_CLOEXEC)
        .map_err(JailError::sys("signalfd"))?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let _raw = match &master {
        Some(m) => {
            set_nonblocking(m.as_fd()).map_err(JailError::sys("terminal"))?;
            RawMode::enter(stdin.as_fd())
        }
        None => None,
    };
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16384];

    let outcome = loop {
        let remaining = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    break Outcome::TimedOut;
                }
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let stdin_idx = (stdin_open && pending.len() < 1 << 20).then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let master_idx = match (&master, master_open) {
            (Some(m), true) => {
                let mut ev = PollFlags::POLLIN;
                if !pending.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(m.as_fd(), ev));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        match poll(&mut fds, remaining) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(JailError::sys("poll")(e)),
            Ok(_) => {}
        }
        let ready = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
        let sig_ready = !ready(0).is_empty();
        let stdin_ready = stdin_idx.map(ready).unwrap_or(PollFlags::empty());
        let master_ready = master_idx.map(ready).unwrap_or(PollFlags::empty());
        drop(fds);

        if let (Some(m), true) = (&master, master_open) {
            if master_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                match nix::unistd::read(m.as_fd(), &mut buf) {
                    Ok(0) | Err(Errno::EIO) => master_open = false,
                    Ok(n) => {
                        let _ = stdout.write_all(&buf[..n]);
                        let _ = stdout.flush();
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => master_open = false,
                }
            }
            if master_ready.contains(PollFlags::POLLOUT) && !pending.is_empty() {
                match nix::unistd::write(m.as_fd(), &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => pending.clear(),
                }
            }
        }
        if stdin_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        if sig_ready {
            let Ok(Some(info)) = sfd.read_signal() else {
                continue;
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {
                    if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                        if let Some(outcome) = wait_status(status) {
                            break outcome;
                        }
                    }
                }
                Ok(Signal::SIGWINCH) => {
                    if let (Some(m), Ok(size)) = (&master, get_winsize(std::io::stdout().as_fd())) {
                        let _ = set_winsize(m.as_fd(), size);
                    }
                }
                Ok(sig) => {
                    let _ = kill(pid, sig);
                }
                Err(_) => {}
            }
        }
    };
    if let Some(m) = &master {
        drain(m, &mut stdout);
    }
    drop(cgroup);
    Ok(outcome)
}
