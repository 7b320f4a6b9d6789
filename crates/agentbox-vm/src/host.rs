//! The host side of the channel: `agentbox __vmm`, the command of QEMU's sandbox.
//!
//! It starts QEMU, waits for the guest agent, sends it the setup, then runs the agent as session
//! 0: its own stdin/stdout (the supervisor's terminal, or `run`'s stdio) become the guest
//! process's terminal or pipes, SIGWINCH becomes a resize, forwarded signals go to the guest
//! process, and the guest's exit status becomes this process's own. `agentbox exec` clients
//! connect to [`EXEC_SOCKET`] and get further sessions on the same channel.
//!
//! The supervisor therefore sees an ordinary command on its terminal: logs, screen, attach,
//! send, HITL and wait need nothing VM-specific. Killing the sandbox kills QEMU with it (same PID
//! namespace); QEMU is never left running.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::{Accel, VmLaunch, CHANNEL_SOCKET, CONSOLE_LOG, EXEC_SOCKET, QEMU_LOG, RUN_DIR};
use crate::frame::{set_nonblocking, Conn, Frame, ReadOutcome};

/// Exit status when the VM itself fails (as docker uses 125 for its own errors).
pub const VM_FAILED: i32 = 125;

const HANDLED: [Signal; 8] = [
    Signal::SIGCHLD,
    Signal::SIGWINCH,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn tail(path: &str, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Why the VM failed, with what QEMU and the guest console said last.
fn failure(msg: &str) -> String {
    let mut out = format!("agentbox: {msg}");
    let q = tail(QEMU_LOG, 10);
    if !q.is_empty() {
        out.push_str(&format!("\nQEMU said:\n{q}"));
    }
    let c = tail(CONSOLE_LOG, 15);
    if !c.is_empty() {
        out.push_str(&format!("\nthe guest console's last lines:\n{c}"));
    }
    out
}

struct ExecClient {
    conn: Conn<UnixStream>,
    session: Option<u32>,
    done: bool,
}

struct Host {
    qemu: Child,
    channel: Conn<UnixStream>,
    signals: SignalFd,
    exec: Option<UnixListener>,
    clients: HashMap<u64, ExecClient>,
    next_client: u64,
    next_session: u32,
}

/// Runs the VM to the end; returns the agent's exit status (or [`VM_FAILED`]).
pub fn run_host(launch: VmLaunch) -> i32 {
    match start(&launch) {
        Ok(mut host) => host.run(&launch),
        Err(msg) => {
            eprintln!("{}", failure(&msg));
            VM_FAILED
        }
    }
}

fn start(launch: &VmLaunch) -> Result<Host, String> {
    let mut mask = SigSet::empty();
    for s in HANDLED {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(RUN_DIR)
        .map_err(|e| format!("creating {RUN_DIR}: {e}"))?;
    let log = File::create(QEMU_LOG).map_err(|e| format!("creating {QEMU_LOG}: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let (program, args) = launch.qemu.split_first().ok_or("no QEMU command")?;
    // Its own process group: keys typed at the terminal are the guest's, not signals to QEMU.
    let mut qemu = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(CHANNEL_SOCKET) {
            Ok(s) => break s,
            Err(e) => {
                if let Ok(Some(st)) = qemu.try_wait() {
                    return Err(format!("QEMU exited at start ({st})"));
                }
                if Instant::now() > deadline {
                    let _ = qemu.kill();
                    return Err(format!("QEMU's channel socket did not appear: {e}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    set_nonblocking(&stream).map_err(|e| e.to_string())?;
    Ok(Host {
        qemu,
        channel: Conn::new(stream),
        signals,
        exec: None,
        clients: HashMap::new(),
        next_client: 0,
        next_session: 1,
    })
}

fn write_all(stream: u8, data: &[u8]) {
    if stream == 2 {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(data);
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(data);
        let _ = o.flush();
    }
}

/// Ends this process the way the guest process ended: with its code, or by its signal.
pub fn exit_like(code: i32, signal: i32) -> i32 {
    if signal > 0 {
        if let Ok(sig) = Signal::try_from(signal) {
            let _ = agentbox_sys::default_disposition([sig]);
            let mut set = SigSet::empty();
            set.add(sig);
            let _ = set.thread_unblock();
            let _ = kill(nix::unistd::getpid(), sig);
        }
        return 128 + signal;
    }
    code
}

impl Host {
    fn stop_qemu(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }

    /// Waits for one frame from the guest, until `deadline`. `Err` carries why not.
    fn await_frame(&mut self, deadline: Instant, waiting_for: &str) -> Result<Frame, String> {
        loop {
            if let Some(f) = self.channel.next_frame()? {
                return Ok(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(waiting_for.to_string());
            }
            let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
            let mut fds = [
                PollFd::new(self.channel.raw_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::from(ms));
            while let Ok(Some(info)) = self.signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig != Signal::SIGCHLD as i32 && sig != Signal::SIGWINCH as i32 {
                    return Err(format!("stopped by signal {sig} while the VM was starting"));
                }
            }
            if let Ok(Some(st)) = self.qemu.try_wait() {
                return Err(format!("QEMU exited ({st}) while {waiting_for}"));
            }
            if self.channel.read() == ReadOutcome::Closed {
                return Err(format!("the guest closed the channel while {waiting_for}"));
            }
        }
    }

    fn run(&mut self, launch: &VmLaunch) -> i32 {
        match self.boot(launch) {
            Ok(()) => {}
            Err(msg) => {
                self.stop_qemu();
                eprintln!("{}", failure(&msg));
                return VM_FAILED;
            }
        }
        let raw = self.start_main(launch);
        let result = self.relay();
        drop(raw);
        match result {
            Ok((code, signal)) => {
                // The guest powers off after the agent ends; give it a moment, then make sure.
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(self.qemu.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                self.stop_qemu();
                exit_like(code, signal)
            }
            Err(msg) => {
                self.stop_qemu();
                eprintln!("{}", failure(&msg));
                VM_FAILED
            }
        }
    }

    fn boot(&mut self, launch: &VmLaunch) -> Result<(), String> {
        let how = match &launch.accel {
            Accel::Kvm => "with KVM".to_string(),
            Accel::Tcg { reason } => format!("under software emulation ({reason})"),
        };
        let deadline = Instant::now() + Duration::from_secs(launch.boot_timeout_secs);
        let waiting = format!("waiting {}s for the guest to boot {how}", launch.boot_timeout_secs);
        match self.await_frame(deadline, &waiting)? {
            Frame::Hello => {}
            other => return Err(format!("the guest sent {other:?} before Hello")),
        }
        self.channel.send(&Frame::Setup(Box::new(launch.setup.clone())));
        self.flush_channel(deadline)?;
        match self.await_frame(deadline, "waiting for the guest's setup")? {
            Frame::Ready => Ok(()),
            Frame::SetupFailed(m) => Err(format!("the guest could not set up: {m}")),
            other => Err(format!("the guest sent {other:?} instead of Ready")),
        }
    }

    fn flush_channel(&mut self, deadline: Instant) -> Result<(), String> {
        match self.channel.flush_until(deadline) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the guest stopped reading the channel".into()),
            Err(e) => Err(format!("channel: {e}")),
        }
    }

    /// Starts the agent; returns the raw-mode guard of its terminal.
    fn start_main(&mut self, launch: &VmLaunch) -> Option<agentbox_sys::RawTerminal> {
        let mut spec = launch.main.clone();
        let stdin = std::io::stdin();
        let tty = nix::unistd::isatty(stdin.as_fd()).unwrap_or(false);
        spec.tty = tty;
        let mut saved = None;
        if tty {
            if let Ok(size) = agentbox_sys::get_winsize(stdin.as_fd()) {
                spec.rows = size.rows;
                spec.cols = size.cols;
            }
            saved = agentbox_sys::RawTerminal::enter(stdin.as_fd());
        }
        self.channel.send(&Frame::Start(0, Box::new(spec)));
        let _ = std::fs::remove_file(EXEC_SOCKET);
        if let Ok(l) = UnixListener::bind(EXEC_SOCKET) {
            let _ = l.set_nonblocking(true);
            self.exec = Some(l);
        }
        saved
    }

    /// Relays until the agent's process ends; its (code, signal).
    fn relay(&mut self) -> Result<(i32, i32), String> {
        let mut stdin_open = true;
        let stdin = std::io::stdin();
        loop {
            self.channel.flush().map_err(|e| format!("the channel broke: {e}"))?;
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            let mut fds = vec![
                PollFd::new(self.channel.raw_fd(), self.channel.interest()),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(stdin.as_fd(), if stdin_open { PollFlags::POLLIN } else { PollFlags::empty() }),
            ];
            if let Some(l) = &self.exec {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            let base = fds.len();
            for id in &ids {
                let c = &self.clients[id];
                fds.push(PollFd::new(c.conn.raw_fd(), c.conn.interest()));
            }
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            let revents: Vec<PollFlags> =
                fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
            drop(fds);
            let ready =
                |i: usize| revents[i].intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
            if ready(2) && stdin_open {
                let mut buf = [0u8; 16384];
                match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => {
                        stdin_open = false;
                        self.channel.send(&Frame::InputEnd(0));
                    }
                    Ok(n) => self.channel.send(&Frame::Input(0, buf[..n].to_vec())),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(_) => stdin_open = false,
                }
            }
            if ready(1) {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let sig = info.ssi_signo as i32;
                    if sig == Signal::SIGWINCH as i32 {
                        if let Ok(size) = agentbox_sys::get_winsize(stdin.as_fd()) {
                            self.channel.send(&Frame::Resize {
                                session: 0,
                                rows: size.rows,
                                cols: size.cols,
                            });
                        }
                    } else if sig != Signal::SIGCHLD as i32 {
                        self.channel.send(&Frame::Signal { session: 0, signal: sig });
                    }
                }
                if let Ok(Some(st)) = self.qemu.try_wait() {
                    // Take what the guest wrote before it went.
                    let _ = self.channel.read();
                    if let Some(r) = self.drain_frames()? {
                        return Ok(r);
                    }
                    return Err(format!("QEMU exited ({st}) before the agent ended"));
                }
            }
            if self.exec.is_some() && ready(3) {
                self.accept_clients();
            }
            for (i, id) in ids.iter().enumerate() {
                if revents[base + i].intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_client(*id);
                }
            }
            if ready(0) && self.channel.read() == ReadOutcome::Closed {
                if let Some(r) = self.drain_frames()? {
                    return Ok(r);
                }
                return Err("the guest closed the channel before the agent ended".into());
            }
            if let Some(r) = self.drain_frames()? {
                return Ok(r);
            }
            for c in self.clients.values_mut() {
                if c.conn.flush().is_err() {
                    c.done = true;
                    c.conn.discard();
                }
            }
            self.clients.retain(|_, c| !(c.done && c.conn.pending() == 0));
        }
    }

    /// Handles every complete frame from the guest; `Some` once the agent has ended.
    fn drain_frames(&mut self) -> Result<Option<(i32, i32)>, String> {
        while let Some(frame) = self.channel.next_frame()? {
            match frame {
                Frame::Output { session: 0, stream, data } => write_all(stream, &data),
                Frame::Exited { session: 0, code, signal } => return Ok(Some((code, signal))),
                Frame::Output { session, .. } | Frame::Exited { session, .. } => {
                    let ended = matches!(frame, Frame::Exited { .. });
                    if let Some(c) = self.clients.values_mut().find(|c| c.session == Some(session)) {
                        c.conn.send(&frame);
                        let _ = c.conn.flush();
                        c.done |= ended;
                    }
                }
                other => return Err(format!("unexpected frame from the guest: {other:?}")),
            }
        }
        Ok(None)
    }

    fn accept_clients(&mut self) {
        let Some(l) = &self.exec else { return };
        while let Ok((s, _)) = l.accept() {
            if set_nonblocking(&s).is_err() {
                continue;
            }
            self.next_client += 1;
            self.clients
                .insert(self.next_client, ExecClient { conn: Conn::new(s), session: None, done: false });
        }
    }

    fn read_client(&mut self, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        let closed = c.conn.read() == ReadOutcome::Closed;
        loop {
            let frame = match c.conn.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    c.done = true;
                    break;
                }
            };
            let forward = match (frame, c.session) {
                (Frame::Start(_, spec), None) => {
                    let s = self.next_session;
                    self.next_session += 1;
                    c.session = Some(s);
                    Frame::Start(s, spec)
                }
                (Frame::Input(_, d), Some(s)) => Frame::Input(s, d),
                (Frame::InputEnd(_), Some(s)) => Frame::InputEnd(s),
                (Frame::Resize { rows, cols, .. }, Some(s)) => Frame::Resize { session: s, rows, cols },
                (Frame::Signal { signal, .. }, Some(s)) => Frame::Signal { session: s, signal },
                _ => {
                    c.done = true;
                    break;
                }
            };
            self.channel.send(&forward);
        }
        if closed {
            // A client that goes away takes its process with it, as a closed `docker exec` does.
            if let Some(s) = c.session.filter(|_| !c.done) {
                self.channel.send(&Frame::Signal { session: s, signal: Signal::SIGHUP as i32 });
            }
            c.done = true;
        }
    }
}
