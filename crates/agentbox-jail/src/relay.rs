//! Waiting for a foreground sandbox: forwards signals, relays its terminal or pipes, enforces the
//! timeout.
//!
//! One thread, one poll loop over a signalfd (SIGCHLD, SIGWINCH and the forwarded signals, all
//! blocked since before the clone), the caller's stdin, and the sandbox's terminal master or its
//! stdio pipes. Input is buffered and written only when the sandbox side is writable, so a command
//! that stops reading can never block the loop and stall its own output.
//!
//! Output that goes to a terminal passes through [`TermFilter`]: no clipboard access, file
//! transfers or queries whose answers would be typed into the sandbox, and the modes the command
//! set are undone when it ends. When the sandbox's process ends, what its pipes already hold is
//! read; a process it left behind (`exec` into a running agent) keeps nothing of the caller's.

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use agentbox_sys::{get_winsize, set_winsize, RawTerminal, SandboxOutput};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::launch::{handled_signals, Pipes, Running};
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

/// What [`wait_foreground`] does once the sandbox's init says that its command ended and that
/// nothing else of the sandbox is left: init's own exit, which tears down the sandbox's mounts,
/// is still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEnd {
    /// Wait for that exit too, and reap init: for a process that goes on.
    Reap,
    /// Return at once and leave init to be reaped by whoever inherits this process's children:
    /// only for a process that exits right after (`agentbox run`), which would otherwise add the
    /// teardown of the sandbox's mounts to every run. Ignored for a sandbox with its own cgroup,
    /// which is removed only once init is gone.
    LeaveToExit,
}

/// What [`wait_captured`] collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output beyond the limit was discarded.
    pub truncated: bool,
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

/// Where relayed output goes.
trait Sink {
    fn out(&mut self, data: &[u8]);
    fn err(&mut self, data: &[u8]);
}

/// The caller's stdout and stderr; each filtered when it is a terminal, and restored when the
/// relay ends.
struct Caller {
    stdout: SandboxOutput<std::io::Stdout>,
    stderr: SandboxOutput<std::io::Stderr>,
}

impl Caller {
    fn new() -> Self {
        Self {
            stdout: SandboxOutput::new(std::io::stdout(), std::io::stdout().is_terminal()),
            stderr: SandboxOutput::new(std::io::stderr(), std::io::stderr().is_terminal()),
        }
    }
}

impl Sink for Caller {
    fn out(&mut self, data: &[u8]) {
        let _ = self.stdout.write(data);
    }
    fn err(&mut self, data: &[u8]) {
        let _ = self.stderr.write(data);
    }
}

/// Output kept in memory, up to a limit.
struct Memory {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Memory {
    fn keep(buf: &mut Vec<u8>, data: &[u8], limit: usize, truncated: &mut bool) {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        *truncated |= data.len() > room;
    }
}

impl Sink for Memory {
    fn out(&mut self, data: &[u8]) {
        Self::keep(&mut self.stdout, data, self.limit, &mut self.truncated);
    }
    fn err(&mut self, data: &[u8]) {
        Self::keep(&mut self.stderr, data, self.limit, &mut self.truncated);
    }
}

/// Stdout into a writer (a file being made), stderr kept in memory up to a limit.
struct Streaming<'a> {
    out: &'a mut dyn std::io::Write,
    write_error: Option<std::io::Error>,
    stderr: Memory,
}

impl Sink for Streaming<'_> {
    fn out(&mut self, data: &[u8]) {
        if self.write_error.is_none() {
            if let Err(e) = self.out.write_all(data) {
                self.write_error = Some(e);
            }
        }
    }
    fn err(&mut self, data: &[u8]) {
        self.stderr.err(data);
    }
}

/// What [`wait_streamed`] saw.
#[derive(Debug)]
pub struct Streamed {
    pub outcome: Outcome,
    /// At most the limit given.
    pub stderr: Vec<u8>,
    /// Writing stdout failed (a full disk): what was written is incomplete.
    pub write_error: Option<std::io::Error>,
}

/// Waits for the sandbox to end (started with [`crate::Stdio::Pipes`]), writing its stdout to
/// `out` as it comes and keeping at most `limit` bytes of its stderr.
pub fn wait_streamed(
    running: Running,
    timeout: Option<Duration>,
    out: &mut dyn std::io::Write,
    limit: usize,
) -> Result<Streamed, JailError> {
    let stderr = Memory { stdout: Vec::new(), stderr: Vec::new(), limit, truncated: false };
    let mut sink = Streaming { out, write_error: None, stderr };
    let outcome = relay(running, timeout, None, &mut sink, AfterEnd::Reap)?;
    Ok(Streamed { outcome, stderr: sink.stderr.stderr, write_error: sink.write_error })
}

/// Waits for the sandbox to end, relaying its terminal or pipes to the caller's stdin, stdout
/// and stderr.
pub fn wait_foreground(
    running: Running,
    timeout: Option<Duration>,
    after: AfterEnd,
) -> Result<Outcome, JailError> {
    let stdin = std::io::stdin();
    let _raw = match &running.master {
        Some(_) => RawTerminal::enter(stdin.as_fd()),
        None => None,
    };
    // Dropped before the terminal leaves raw mode: modes are restored first.
    let mut caller = Caller::new();
    relay(running, timeout, Some(stdin.as_fd()), &mut caller, after)
}

/// Waits for the sandbox to end, collecting what it writes to its stdout and stderr (at most
/// `limit` bytes each; it must have been started with [`crate::Stdio::Pipes`]). Its stdin is
/// closed: a host-side helper (git on a workspace) never reads the person's input.
pub fn wait_captured(
    running: Running,
    timeout: Option<Duration>,
    limit: usize,
) -> Result<Captured, JailError> {
    let mut memory = Memory { stdout: Vec::new(), stderr: Vec::new(), limit, truncated: false };
    let outcome = relay(running, timeout, None, &mut memory, AfterEnd::Reap)?;
    Ok(Captured { outcome, stdout: memory.stdout, stderr: memory.stderr, truncated: memory.truncated })
}

/// The sandbox's side of the relay.
struct Side {
    master: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl Side {
    /// Where input for the sandbox goes.
    fn input(&self) -> Option<BorrowedFd<'_>> {
        self.master.as_ref().or(self.stdin.as_ref()).map(|f| f.as_fd())
    }
}

/// Reads what `fd` holds now into `sink` (a pipe or terminal of a sandbox that ended; a process
/// it left behind may keep the other end open, so this stops at "would block" too).
fn drain(fd: &OwnedFd, buf: &mut [u8], sink: &mut dyn FnMut(&[u8])) {
    loop {
        match nix::unistd::read(fd.as_fd(), buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => sink(&buf[..n]),
        }
    }
}

/// The command's status, from init's message on the handoff socket; `None` at end-of-file (init
/// exited without one) or for anything else.
fn read_end(sock: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 8];
    match nix::unistd::read(sock.as_fd(), &mut buf) {
        Ok(5) if buf[0] == crate::child::ENDED => Some(i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]])),
        _ => None,
    }
}

fn relay(
    running: Running,
    timeout: Option<Duration>,
    caller_stdin: Option<BorrowedFd<'_>>,
    sink: &mut dyn Sink,
    after: AfterEnd,
) -> Result<Outcome, JailError> {
    let Running { pid, master, pipes, cgroup, ended, .. } = running;
    let mut ended = ended.filter(|_| after == AfterEnd::LeaveToExit && cgroup.is_none());
    let (stdin_pipe, stdout, stderr) = match pipes {
        Some(Pipes { stdin, stdout, stderr }) => (Some(stdin), Some(stdout), Some(stderr)),
        None => (None, None, None),
    };
    let mut side = Side { master, stdin: stdin_pipe, stdout, stderr };
    for fd in [&side.master, &side.stdin, &side.stdout, &side.stderr].into_iter().flatten() {
        set_nonblocking(fd.as_fd()).map_err(JailError::sys("relay"))?;
    }
    // Without a caller to read from, the sandbox's stdin ends at once.
    if caller_stdin.is_none() {
        side.stdin = None;
    }
    // A timeout past the clock's end is none.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let sfd = SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_CLOEXEC)
        .map_err(JailError::sys("signalfd"))?;
    // The caller's terminal may have been resized between the moment its size was read for the
    // sandbox's terminal and the moment SIGWINCH was blocked (that SIGWINCH was lost): from here
    // on every resize is seen, so the size is passed on once now.
    if let (Some(m), Ok(size)) = (&side.master, get_winsize(std::io::stdout().as_fd())) {
        let _ = set_winsize(m.as_fd(), size);
    }
    let mut stdin_open = caller_stdin.is_some() && side.input().is_some();
    let mut pending: Vec<u8> = Vec::new();
    // On the heap from `calloc`: its pages are touched only as output arrives (a zeroed array
    // on the stack faulted in all 16 of them, and `drain` another 16, for every `run`).
    let mut buf = vec![0u8; 65536];

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
        // Slots: 0 signals, then each of caller stdin, sandbox input, master, stdout, stderr if
        // present.
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        fn slot<'f>(fds: &mut Vec<PollFd<'f>>, fd: BorrowedFd<'f>, ev: PollFlags) -> usize {
            fds.push(PollFd::new(fd, ev));
            fds.len() - 1
        }
        let caller_idx = match caller_stdin {
            Some(fd) if stdin_open && pending.len() < 1 << 20 => Some(slot(&mut fds, fd, PollFlags::POLLIN)),
            _ => None,
        };
        let master_idx = side.master.as_ref().map(|m| {
            let mut ev = PollFlags::POLLIN;
            if !pending.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            slot(&mut fds, m.as_fd(), ev)
        });
        let stdin_idx = match &side.stdin {
            Some(p) if !pending.is_empty() => Some(slot(&mut fds, p.as_fd(), PollFlags::POLLOUT)),
            _ => None,
        };
        let out_idx = side.stdout.as_ref().map(|p| slot(&mut fds, p.as_fd(), PollFlags::POLLIN));
        let err_idx = side.stderr.as_ref().map(|p| slot(&mut fds, p.as_fd(), PollFlags::POLLIN));
        let ended_idx = ended.as_ref().map(|e| slot(&mut fds, e.as_fd(), PollFlags::POLLIN));
        match poll(&mut fds, remaining) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(JailError::sys("poll")(e)),
            Ok(_) => {}
        }
        let ready = |i: Option<usize>| {
            i.map(|i| fds[i].revents().unwrap_or(PollFlags::empty())).unwrap_or(PollFlags::empty())
        };
        let (sig_ready, caller_ready, master_ready, stdin_ready, out_ready, err_ready, ended_ready) = (
            !ready(Some(0)).is_empty(),
            ready(caller_idx),
            ready(master_idx),
            ready(stdin_idx),
            ready(out_idx),
            ready(err_idx),
            ready(ended_idx),
        );
        drop(fds);
        let readable = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;

        if master_ready.intersects(readable) {
            if let Some(m) = &side.master {
                match nix::unistd::read(m.as_fd(), &mut buf) {
                    Ok(0) | Err(Errno::EIO) => side.master = None,
                    Ok(n) => sink.out(&buf[..n]),
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => side.master = None,
                }
            }
        }
        for (ready, which) in [(out_ready, 1), (err_ready, 2)] {
            if !ready.intersects(readable) {
                continue;
            }
            let pipe = if which == 1 { &mut side.stdout } else { &mut side.stderr };
            if let Some(p) = pipe.as_ref() {
                match nix::unistd::read(p.as_fd(), &mut buf) {
                    Ok(0) => *pipe = None,
                    Ok(n) if which == 1 => sink.out(&buf[..n]),
                    Ok(n) => sink.err(&buf[..n]),
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => *pipe = None,
                }
            }
        }
        if (master_ready | stdin_ready).contains(PollFlags::POLLOUT) && !pending.is_empty() {
            if let Some(fd) = side.input() {
                match nix::unistd::write(fd, &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => pending.clear(),
                }
            }
        } else if stdin_ready.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
            // The command closed its stdin: nothing more will be read.
            pending.clear();
            side.stdin = None;
        }
        if caller_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            if let Some(fd) = caller_stdin {
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
        }
        // The caller's input ended and all of it was passed on: the command sees end-of-file.
        if !stdin_open && pending.is_empty() {
            side.stdin = None;
        }
        if !ended_ready.is_empty() {
            match ended.as_ref().map(read_end) {
                Some(Some(code)) => break Outcome::Exited(code),
                // Init went without a word (processes were left, or it was killed): its exit,
                // seen as SIGCHLD, says how the sandbox ended.
                _ => ended = None,
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
                    if let (Some(m), Ok(size)) = (&side.master, get_winsize(std::io::stdout().as_fd())) {
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
    if let Some(m) = &side.master {
        drain(m, &mut buf, &mut |d| sink.out(d));
    }
    if let Some(p) = &side.stdout {
        drain(p, &mut buf, &mut |d| sink.out(d));
    }
    if let Some(p) = &side.stderr {
        drain(p, &mut buf, &mut |d| sink.err(d));
    }
    drop(cgroup);
    Ok(outcome)
}
