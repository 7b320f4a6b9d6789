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
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::MsgFlags;

use crate::config::{
    Accel, Boot, VmLaunch, CHANNEL_SOCKET, CONSOLE_LOG, EXEC_SOCKET, QEMU_LOG, QMP_SOCKET, REPORT_ENV,
    RUN_DIR, SNAPSHOT_FILE,
};
use crate::frame::{set_nonblocking, Conn, Frame, ReadOutcome};
use crate::monitor::Qmp;

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
    /// Restored from a snapshot: the guest said Hello before it was saved.
    restored: bool,
    /// Where a restore that did not start is reported ([`REPORT_ENV`]); closed once the guest is
    /// up, which says that it started.
    report: Option<OwnedFd>,
    /// Told to stop (a signal) while the guest was starting: not a failure of the snapshot.
    stopped: bool,
}

/// The socket the launcher handed over for [`Host::report`], made close-on-exec so that QEMU
/// does not hold it open.
fn report_channel() -> Option<OwnedFd> {
    let fd: i32 = std::env::var(REPORT_ENV).ok()?.parse().ok()?;
    if fd < 3 {
        return None;
    }
    let fd = agentbox_sys::inherited_fd(fd)?;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
    Some(fd)
}

/// The most of a reason that is reported (the launcher reads no more).
const REPORT_MAX: usize = 2048;

/// Tells the launcher why the snapshot did not start, in one send that cannot raise SIGPIPE
/// (this process has SIGPIPE's default action): a launcher that does not listen costs nothing.
fn tell(report: &mut Option<OwnedFd>, why: &str) {
    if let Some(fd) = report {
        let mut end = why.len().min(REPORT_MAX);
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        let _ = nix::sys::socket::send(fd.as_raw_fd(), &why.as_bytes()[..end], MsgFlags::MSG_NOSIGNAL);
    }
}

/// Runs the VM to the end; returns the agent's exit status (or [`VM_FAILED`]).
pub fn run_host(launch: VmLaunch) -> i32 {
    match start(&launch, report_channel()) {
        Ok(mut host) => host.run(&launch),
        Err(msg) => {
            eprintln!("{}", failure(&msg));
            VM_FAILED
        }
    }
}

fn start(launch: &VmLaunch, mut report: Option<OwnedFd>) -> Result<Host, String> {
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
    // Not fatal: huge pages only cost memory.
    let _ = agentbox_sys::disable_transparent_huge_pages();
    if let Boot::Restore { qemu } = &launch.boot {
        match restore(qemu) {
            Ok((qemu, stream)) => return Ok(Host::new(qemu, stream, signals, true, report)),
            Err(why) => {
                eprintln!(
                    "agentbox: the VM's snapshot could not be restored ({why}); booting the guest instead"
                );
                tell(&mut report, &format!("it could not be restored ({why})"));
                report = None;
            }
        }
    }
    let (qemu, stream) = cold(launch)?;
    Ok(Host::new(qemu, stream, signals, false, report))
}

/// QEMU booting the guest, with the channel connected.
fn cold(launch: &VmLaunch) -> Result<(Child, UnixStream), String> {
    let mut qemu = spawn_qemu(&launch.qemu, Stdio::null())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    match connect(&mut qemu, CHANNEL_SOCKET, deadline) {
        Ok(stream) => Ok((qemu, stream)),
        Err(e) => {
            let _ = qemu.kill();
            let _ = qemu.wait();
            Err(format!("QEMU's channel socket: {e}"))
        }
    }
}

/// Why a guest did not get to Ready.
enum BootFailure {
    /// The guest answered the setup with why it could not apply it: a booted guest would too.
    Refused(String),
    /// No answer in time, a broken channel, QEMU gone: a restored guest is booted instead.
    NoAnswer(String),
}

impl From<String> for BootFailure {
    fn from(why: String) -> Self {
        Self::NoAnswer(why)
    }
}

impl BootFailure {
    fn message(self) -> String {
        match self {
            Self::Refused(m) => format!("the guest could not set up: {m}"),
            Self::NoAnswer(m) => m,
        }
    }
}

/// The channel to the guest over `stream`. Blocking reads would stall the relay; a socket that
/// cannot be made non-blocking is caught by the first read.
fn channel(stream: UnixStream) -> Conn<UnixStream> {
    let _ = set_nonblocking(&stream);
    Conn::new(stream)
}

/// How long a restored guest may take to mount the agent's view and answer: far less than a boot.
const RESTORED_READY: Duration = Duration::from_secs(30);

/// Starts QEMU with `argv`, its output in [`QEMU_LOG`].
fn spawn_qemu(argv: &[String], stdin: Stdio) -> Result<Child, String> {
    let log = File::create(QEMU_LOG).map_err(|e| format!("creating {QEMU_LOG}: {e}"))?;
    let (program, args) = argv.split_first().ok_or("no QEMU command")?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(stdin).stderr(log.try_clone().map_err(|e| e.to_string())?);
    cmd.stdout(log);
    // Its own process group: keys typed at the terminal are the guest's, not signals to QEMU.
    cmd.process_group(0).spawn().map_err(|e| format!("cannot start {program}: {e}"))
}

/// Connects to the socket QEMU listens on at `path`, once it is there.
fn connect(qemu: &mut Child, path: &str, deadline: Instant) -> Result<UnixStream, String> {
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if let Ok(Some(st)) = qemu.try_wait() {
                    return Err(format!("QEMU exited ({st}): {}", tail(QEMU_LOG, 3)));
                }
                if Instant::now() > deadline {
                    return Err(format!("{path} did not appear: {e}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// How long loading a snapshot may take (it is read from the page cache; software emulation
/// included, a second is usual).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// QEMU restoring [`SNAPSHOT_FILE`], running, with the channel connected before the guest runs
/// (so the guest never sees the host side go away).
fn restore(argv: &[String]) -> Result<(Child, UnixStream), String> {
    let snapshot = File::open(SNAPSHOT_FILE).map_err(|e| format!("opening {SNAPSHOT_FILE}: {e}"))?;
    for stale in [CHANNEL_SOCKET, QMP_SOCKET] {
        let _ = std::fs::remove_file(stale);
    }
    let mut qemu = spawn_qemu(argv, Stdio::from(snapshot))?;
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    let restored = (|| {
        let stream = connect(&mut qemu, CHANNEL_SOCKET, deadline)?;
        let mut qmp = Qmp::new(connect(&mut qemu, QMP_SOCKET, deadline)?).map_err(|e| e.to_string())?;
        loop {
            let status = match qmp.execute("query-status", None) {
                Ok(v) => v.get("status").and_then(|s| s.as_str()).unwrap_or_default().to_string(),
                Err(e) => match qemu.try_wait() {
                    Ok(Some(st)) => return Err(format!("QEMU exited ({st}): {}", tail(QEMU_LOG, 3))),
                    _ => return Err(e.to_string()),
                },
            };
            match status.as_str() {
                "inmigrate" if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                "inmigrate" => return Err(format!("still loading after {}s", RESTORE_TIMEOUT.as_secs())),
                // Saved while stopped, so it stays stopped until told.
                "paused" | "postmigrate" | "running" => break,
                other => return Err(format!("the machine is {other} after loading")),
            }
        }
        qmp.execute("cont", None).map_err(|e| e.to_string())?;
        Ok(stream)
    })();
    match restored {
        Ok(stream) => Ok((qemu, stream)),
        Err(e) => {
            // QEMU that fails to load exits with why in its log; the monitor only saw it go.
            let gone = Instant::now() + Duration::from_millis(500);
            while Instant::now() < gone && matches!(qemu.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let said = tail(QEMU_LOG, 3);
            let _ = qemu.kill();
            let _ = qemu.wait();
            Err(if said.is_empty() { e } else { format!("{e}; QEMU said: {said}") })
        }
    }
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
    fn new(
        qemu: Child,
        stream: UnixStream,
        signals: SignalFd,
        restored: bool,
        report: Option<OwnedFd>,
    ) -> Self {
        Self {
            qemu,
            channel: channel(stream),
            signals,
            exec: None,
            clients: HashMap::new(),
            next_client: 0,
            next_session: 1,
            restored,
            report,
            stopped: false,
        }
    }

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
                    self.stopped = true;
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
        if launch.boot == Boot::Template {
            let saved = self.await_hello(launch).and_then(|_| self.save());
            self.stop_qemu();
            return match saved {
                Ok(()) => 0,
                Err(msg) => {
                    eprintln!("{}", failure(&msg));
                    VM_FAILED
                }
            };
        }
        let booted = self.boot(launch).or_else(|f| self.boot_instead(launch, f));
        // Up (or given up on): the launcher has heard all there was to hear.
        self.report = None;
        if let Err(f) = booted {
            self.stop_qemu();
            eprintln!("{}", failure(&f.message()));
            return VM_FAILED;
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

    fn await_hello(&mut self, launch: &VmLaunch) -> Result<(), String> {
        let how = match &launch.accel {
            Accel::Kvm => "with KVM".to_string(),
            Accel::Tcg { reason } => format!("under software emulation ({reason})"),
        };
        let deadline = Instant::now() + Duration::from_secs(launch.boot_timeout_secs);
        let waiting = format!("waiting {}s for the guest to boot {how}", launch.boot_timeout_secs);
        match self.await_frame(deadline, &waiting)? {
            Frame::Hello => Ok(()),
            other => Err(format!("the guest sent {other:?} before Hello")),
        }
    }

    /// Saves the stopped machine to stdout through QEMU's monitor (the descriptor is handed
    /// over, so QEMU writes nothing but that stream, and only there).
    fn save(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut qmp = Qmp::new(connect(&mut self.qemu, QMP_SOCKET, deadline)?).map_err(|e| e.to_string())?;
        let m = |e: crate::monitor::MonitorError| e.to_string();
        qmp.execute("stop", None).map_err(m)?;
        qmp.send_fd("snapshot", std::io::stdout().as_fd()).map_err(m)?;
        qmp.execute("migrate", Some(serde_json::json!({ "uri": "fd:snapshot" }))).map_err(m)?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let v = qmp.execute("query-migrate", None).map_err(m)?;
            match v.get("status").and_then(|s| s.as_str()).unwrap_or_default() {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    let why = v.get("error-desc").and_then(|d| d.as_str()).unwrap_or("no reason given");
                    return Err(format!("saving the machine failed: {why}"));
                }
                _ if Instant::now() > deadline => return Err("saving the machine took over 600s".into()),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// After a restored guest failed to answer (`why`): boots it instead, once.
    fn boot_instead(&mut self, launch: &VmLaunch, failed: BootFailure) -> Result<(), BootFailure> {
        let why = match failed {
            // Told to stop: neither booted again nor blamed on the snapshot.
            BootFailure::NoAnswer(why) if self.restored && !self.stopped => why,
            other => return Err(other),
        };
        eprintln!(
            "agentbox: the VM restored from its snapshot did not set up ({why}); booting the guest instead"
        );
        tell(&mut self.report, &format!("the guest restored from it did not set up ({why})"));
        self.report = None;
        self.stop_qemu();
        let (qemu, stream) = cold(launch)?;
        self.qemu = qemu;
        self.channel = channel(stream);
        self.restored = false;
        self.boot(launch)
    }

    fn boot(&mut self, launch: &VmLaunch) -> Result<(), BootFailure> {
        let deadline = if self.restored {
            Instant::now() + RESTORED_READY
        } else {
            self.await_hello(launch)?;
            Instant::now() + Duration::from_secs(launch.boot_timeout_secs)
        };
        let mut setup = launch.setup.clone();
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            setup.clock = Some((now.as_secs() as i64, now.subsec_nanos()));
        }
        setup.entropy = vec![0; 32];
        File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut setup.entropy))
            .map_err(|e| format!("reading /dev/urandom for the guest: {e}"))?;
        self.channel.send(&Frame::Setup(Box::new(setup)));
        self.flush_channel(deadline)?;
        match self.await_frame(deadline, "waiting for the guest's setup")? {
            Frame::Ready => Ok(()),
            Frame::SetupFailed(m) => Err(BootFailure::Refused(m)),
            other => Err(format!("the guest sent {other:?} instead of Ready").into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::io::Read;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).unwrap()
    }

    #[test]
    fn a_report_is_one_bounded_send_cut_between_characters() {
        let (read, write) = pair();
        let mut report = Some(write);
        tell(&mut report, &"é".repeat(REPORT_MAX));
        drop(report);
        let mut said = String::new();
        File::from(read).read_to_string(&mut said).expect("not cut between characters");
        assert!(said.len() <= REPORT_MAX && said.len() > REPORT_MAX - 2, "{}", said.len());
    }

    #[test]
    fn a_report_nobody_hears_does_not_kill_the_host() {
        // The host runs with SIGPIPE's default action, which a write to a closed pipe would take.
        agentbox_sys::default_disposition([Signal::SIGPIPE]).unwrap();
        let (read, write) = pair();
        drop(read);
        let mut report = Some(write);
        tell(&mut report, "it could not be restored");
        tell(&mut report, "and again");
    }
}
