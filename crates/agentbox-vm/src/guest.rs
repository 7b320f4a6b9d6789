//! The guest agent: agentbox as `/init` (pid 1) of the VM.
//!
//! 1. mount /proc, /sys and /dev; load the image's modules in order; find the virtio-serial port;
//! 2. say Hello, receive the setup: the host root share read-only, tmpfs and writable shares in
//!    the order given, the network device (proxy mode), the pids limit; chroot into it;
//! 3. start each requested process on a terminal or pipes, relay its bytes, resize and signals,
//!    report its exit; reap every orphan (pid 1's duty);
//! 4. when the agent (session 0) ends, flush the channel and power the machine off.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use nix::sys::time::TimeSpec;

use crate::accel::{PROBE_MARKER, PROBE_PARAM};
use crate::config::{GuestMount, GuestSetup, ProcSpec, GUEST_ADDR, GUEST_NETMASK, INFRA_DIR, PORT_NAME};
use crate::frame::{set_nonblocking, Conn, Frame, ReadOutcome};
use crate::qemu::TEMPLATE_PARAM;

const SYSROOT: &str = "/sysroot";
const HOSTROOT: &str = "/host";
/// Output waits while the channel has this much queued: the agent then blocks on its writes.
const BACKLOG: usize = 4 << 20;

fn console(msg: &str) {
    let _ = writeln!(std::io::stderr(), "agentbox-guest: {msg}");
}

fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // pid 1 must not return.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn mnt(src: &str, target: &Path, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(|e| format!("mounting {fstype} {src} on {}: {e}", target.display()))
}

fn inside(p: &Path) -> PathBuf {
    Path::new(SYSROOT).join(p.strip_prefix("/").unwrap_or(p))
}

/// pid 1 of the VM. Never returns.
pub fn run_guest() -> ! {
    if let Ok(state) = std::env::var(RESUME_ENV) {
        resume(&state);
    }
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let early = mnt("proc", Path::new("/proc"), "proc", nodev, None)
        .and_then(|_| mnt("sysfs", Path::new("/sys"), "sysfs", nodev, None))
        .and_then(|_| mnt("devtmpfs", Path::new("/dev"), "devtmpfs", MsFlags::MS_NOSUID, None));
    if let Err(e) = early {
        console(&e);
        power_off();
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == PROBE_PARAM) {
        println!("{PROBE_MARKER}");
        power_off();
    }
    load_modules();
    report_small_free_blocks();
    let port = match open_port(Duration::from_secs(15)) {
        Ok(f) => f,
        Err(e) => {
            console(&e);
            power_off();
        }
    };
    let mut guest = match Guest::new(port) {
        Ok(g) => g,
        Err(e) => {
            console(&e);
            power_off();
        }
    };
    guest.run();
    power_off();
}

/// Before a snapshot is made: has the kernel hand out (and so zero) every free page, then gives
/// them back. Saving skips zero pages, so the snapshot, and the memory of each machine restored
/// from it, hold only the pages in use, not what the boot left in freed memory (the unpacked
/// initramfs's archive, for one).
fn zero_free_memory() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    const CHUNK: usize = 8 << 20;
    // What stays available, in KiB: a margin against the OOM killer, beyond the kernel's reserves
    // (which MemAvailable leaves out, and MemFree does not).
    const KEEP_KIB: u64 = 32 << 10;
    let mut held: Vec<Vec<u8>> = Vec::new();
    while mem_available_kib().is_some_and(|free| free > KEEP_KIB + (CHUNK as u64 >> 10)) {
        let mut chunk = vec![0u8; CHUNK];
        // One write per page faults it in; the kernel zeroes each page it hands out.
        for page in chunk.chunks_mut(4096) {
            page[0] = std::hint::black_box(0);
        }
        std::hint::black_box(&chunk[..]);
        held.push(chunk);
    }
}

fn mem_available_kib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn load_modules() {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir("/modules").map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    for f in files {
        let loaded = File::open(&f)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            .and_then(|file| {
                nix::kmod::finit_module(&file, &CString::default(), nix::kmod::ModuleInitFlags::empty())
            });
        match loaded {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => console(&format!("loading {}: {e}", f.display())),
        }
    }
    // Loaded: their files would only take guest memory (and room in every snapshot).
    let _ = std::fs::remove_dir_all("/modules");
}

/// Freed guest memory goes back to the host (free page reporting, through the balloon) in blocks
/// of 2^5 pages, 128 KiB, instead of the kernel's default 2 MiB: an idle guest frees in smaller
/// pieces, and the default left about 10 MiB of a 512 MiB agent's free memory in QEMU. The
/// balloon driver sets the default when it registers, so this comes after the modules; a
/// snapshot carries it into every VM restored from it.
fn report_small_free_blocks() {
    const ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";
    if let Err(e) = std::fs::write(ORDER, "5") {
        console(&format!("{ORDER}: {e}"));
    }
}

/// The virtio-serial port named [`PORT_NAME`]; devices appear asynchronously after the driver
/// loads, so it is looked for until `wait` has passed.
fn open_port(wait: Duration) -> Result<File, String> {
    let deadline = Instant::now() + wait;
    loop {
        for e in std::fs::read_dir("/sys/class/virtio-ports").into_iter().flatten().flatten() {
            let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
            if name.trim() == PORT_NAME {
                let dev = Path::new("/dev").join(e.file_name());
                if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&dev) {
                    return Ok(f);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no virtio-serial port named {PORT_NAME} appeared"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

enum Io {
    Pty(OwnedFd),
    Pipes { stdin: Option<OwnedFd>, stdout: Option<OwnedFd>, stderr: Option<OwnedFd> },
}

struct Session {
    pid: Pid,
    io: Io,
    input: Vec<u8>,
    input_end: bool,
    exited: Option<(i32, i32)>,
}

struct Guest {
    channel: Conn<File>,
    signals: SignalFd,
    sessions: HashMap<u32, Session>,
    setup: Option<GuestSetup>,
}

impl Guest {
    fn new(port: File) -> Result<Self, String> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(|e| format!("blocking SIGCHLD: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;
        set_nonblocking(&port).map_err(|e| format!("channel: {e}"))?;
        Ok(Self { channel: Conn::new(port), signals, sessions: HashMap::new(), setup: None })
    }

    /// Best effort: the guest powers off next, whatever is left.
    fn flush_all(&mut self, wait: Duration) {
        let _ = self.channel.flush_until(Instant::now() + wait);
    }

    /// The next frame, waiting as long as it takes; `None` if the channel closed. Before the
    /// setup, the host side may not be there yet (a restored machine's host connects anew), so
    /// a closed channel is waited on then.
    fn wait_frame(&mut self) -> Option<Frame> {
        loop {
            match self.channel.next_frame() {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => {
                    console(&format!("bad frame from the host: {e}"));
                    return None;
                }
            }
            let mut fds = [PollFd::new(self.channel.raw_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::NONE);
            if self.channel.read() == ReadOutcome::Closed {
                if self.setup.is_some() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn run(&mut self) {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if cmdline.split_whitespace().any(|w| w == TEMPLATE_PARAM) {
            zero_free_memory();
        }
        self.channel.send(&Frame::Hello);
        self.flush_all(Duration::from_secs(30));
        let setup = match self.wait_frame() {
            Some(Frame::Setup(s)) => *s,
            other => {
                console(&format!("expected the setup, got {other:?}"));
                return;
            }
        };
        if let Err(e) = apply(&setup) {
            self.setup_failed(e);
            return;
        }
        hand_off(self.channel.inner(), &setup);
        self.ready(setup);
    }

    fn setup_failed(&mut self, e: String) {
        console(&e);
        self.channel.send(&Frame::SetupFailed(e));
        self.flush_all(Duration::from_secs(5));
    }

    /// Enters the mounted view, says Ready, and serves until the agent ends.
    fn ready(&mut self, setup: GuestSetup) {
        if let Err(e) = enter_view() {
            self.setup_failed(e);
            return;
        }
        self.setup = Some(setup);
        self.channel.send(&Frame::Ready);
        self.serve();
        self.flush_all(Duration::from_secs(10));
    }

    fn serve(&mut self) {
        loop {
            let _ = self.channel.flush();
            let ids: Vec<u32> = self.sessions.keys().copied().collect();
            let backlog = self.channel.pending() > BACKLOG;
            let mut fds = vec![
                PollFd::new(self.channel.raw_fd(), self.channel.interest()),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            let mut owners: Vec<(u32, u8)> = Vec::new();
            for id in &ids {
                let s = &self.sessions[id];
                let out_ev = if backlog { PollFlags::empty() } else { PollFlags::POLLIN };
                match &s.io {
                    Io::Pty(m) => {
                        let ev = if s.input.is_empty() { out_ev } else { out_ev | PollFlags::POLLOUT };
                        fds.push(PollFd::new(m.as_fd(), ev));
                        owners.push((*id, 1));
                    }
                    Io::Pipes { stdin, stdout, stderr } => {
                        let want_in = if s.input.is_empty() { None } else { stdin.as_ref() };
                        for (fd, stream, ev) in [
                            (want_in, 0u8, PollFlags::POLLOUT),
                            (stdout.as_ref(), 1, out_ev),
                            (stderr.as_ref(), 2, out_ev),
                        ] {
                            if let Some(fd) = fd {
                                fds.push(PollFd::new(fd.as_fd(), ev));
                                owners.push((*id, stream));
                            }
                        }
                    }
                }
            }
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    console(&format!("poll: {e}"));
                    return;
                }
            }
            let revents: Vec<PollFlags> =
                fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
            drop(fds);
            for (i, (id, stream)) in owners.iter().enumerate() {
                let ev = revents[2 + i];
                if ev.contains(PollFlags::POLLOUT) {
                    self.write_input(*id);
                }
                if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) && *stream != 0
                {
                    self.read_output(*id, *stream);
                }
            }
            if revents[1].contains(PollFlags::POLLIN) {
                while let Ok(Some(_)) = self.signals.read_signal() {}
                self.reap();
            }
            if revents[0].intersects(PollFlags::POLLIN | PollFlags::POLLHUP)
                && self.channel.read() == ReadOutcome::Closed
            {
                return;
            }
            loop {
                match self.channel.next_frame() {
                    Ok(Some(f)) => self.handle(f),
                    Ok(None) => break,
                    Err(e) => {
                        console(&format!("bad frame from the host: {e}"));
                        return;
                    }
                }
            }
            if self.finish_ended() {
                return;
            }
        }
    }

    fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::Start(id, spec) => {
                if self.sessions.contains_key(&id) {
                    return;
                }
                let rewrite = self.setup.as_ref().and_then(|s| s.proxy_rewrite.clone());
                match spawn(&spec, rewrite.as_ref()) {
                    Ok(s) => {
                        self.sessions.insert(id, s);
                    }
                    Err((code, msg)) => {
                        let data = format!("agentbox: {msg}\r\n").into_bytes();
                        self.channel.send(&Frame::Output { session: id, stream: 2, data });
                        self.channel.send(&Frame::Exited { session: id, code, signal: 0 });
                    }
                }
            }
            Frame::Input(id, data) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.input.extend_from_slice(&data);
                }
                self.write_input(id);
            }
            Frame::InputEnd(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.input_end = true;
                }
                self.write_input(id);
            }
            Frame::Resize { session, rows, cols } => {
                if let Some(Session { io: Io::Pty(m), .. }) = self.sessions.get(&session) {
                    let _ = agentbox_sys::set_winsize(m.as_fd(), agentbox_sys::WinSize { rows, cols });
                }
            }
            Frame::Signal { session, signal } => {
                if let (Some(s), Ok(sig)) = (self.sessions.get(&session), Signal::try_from(signal)) {
                    // Each process leads its own session and group: signal the whole group.
                    if kill(Pid::from_raw(-s.pid.as_raw()), sig).is_err() {
                        let _ = kill(s.pid, sig);
                    }
                }
            }
            other => console(&format!("unexpected frame {other:?}")),
        }
    }

    fn write_input(&mut self, id: u32) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let fd = match &s.io {
            Io::Pty(m) => Some(m.as_fd()),
            Io::Pipes { stdin, .. } => stdin.as_ref().map(|f| f.as_fd()),
        };
        if let Some(fd) = fd {
            while !s.input.is_empty() {
                match nix::unistd::write(fd, &s.input) {
                    Ok(n) => {
                        s.input.drain(..n);
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EAGAIN) => return,
                    Err(_) => {
                        s.input.clear();
                        break;
                    }
                }
            }
        } else {
            s.input.clear();
        }
        if s.input_end && s.input.is_empty() {
            if let Io::Pipes { stdin, .. } = &mut s.io {
                *stdin = None;
            }
        }
    }

    /// Reads what a session's descriptor has; closes it at end of file.
    fn read_output(&mut self, id: u32, stream: u8) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let mut buf = [0u8; 65536];
        let mut closed = false;
        {
            let fd = match (&s.io, stream) {
                (Io::Pty(m), _) => Some(m.as_fd()),
                (Io::Pipes { stdout, .. }, 1) => stdout.as_ref().map(|f| f.as_fd()),
                (Io::Pipes { stderr, .. }, _) => stderr.as_ref().map(|f| f.as_fd()),
            };
            let Some(fd) = fd else { return };
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => closed = true,
                Ok(n) => {
                    self.channel.send(&Frame::Output { session: id, stream, data: buf[..n].to_vec() });
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => closed = true,
            }
        }
        if closed {
            if let Io::Pipes { stdout, stderr, .. } = &mut s.io {
                if stream == 1 {
                    *stdout = None;
                } else {
                    *stderr = None;
                }
            } else if s.exited.is_none() {
                // The terminal hung up before the process ended: nothing more to read from it.
                s.io = Io::Pipes { stdin: None, stdout: None, stderr: None };
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let (pid, result) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, (code, 0)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, (0, sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if let Some(s) = self.sessions.values_mut().find(|s| s.pid == pid) {
                s.exited = Some(result);
            }
        }
    }

    /// Reports sessions whose process ended, after taking what their output still holds.
    /// True once the agent (session 0) has ended.
    fn finish_ended(&mut self) -> bool {
        let ended: Vec<u32> =
            self.sessions.iter().filter(|(_, s)| s.exited.is_some()).map(|(id, _)| *id).collect();
        let mut main_ended = false;
        for id in ended {
            for stream in [1u8, 2] {
                for _ in 0..64 {
                    let before = self.channel.pending();
                    self.read_output(id, stream);
                    if self.channel.pending() == before {
                        break;
                    }
                }
            }
            if let Some(s) = self.sessions.remove(&id) {
                let (code, signal) = s.exited.unwrap_or((0, 0));
                self.channel.send(&Frame::Exited { session: id, code, signal });
                main_ended |= id == 0;
            }
        }
        main_ended
    }
}

fn rewrite_env(env: &[(String, String)], rewrite: Option<&(String, String)>) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| match rewrite {
            Some((from, to)) if v.contains(from.as_str()) => (k.clone(), v.replace(from.as_str(), to)),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

/// Starts a process; on failure the exit status a shell would give (127 not found, 126 other).
fn spawn(spec: &ProcSpec, rewrite: Option<&(String, String)>) -> Result<Session, (i32, String)> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err((127, "empty command".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(rewrite_env(&spec.env, rewrite))
        .current_dir(&spec.cwd)
        .uid(spec.uid)
        .gid(spec.gid);
    let io = if spec.tty {
        let size = nix::pty::Winsize {
            ws_row: spec.rows.max(1),
            ws_col: spec.cols.max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).map_err(|e| (126, format!("openpty: {e}")))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| (126, format!("terminal: {e}")));
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        agentbox_sys::new_session_on_spawn(&mut cmd, true);
        set_nonblocking(&pty.master).map_err(|e| (126, format!("terminal: {e}")))?;
        Io::Pty(pty.master)
    } else {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        agentbox_sys::new_session_on_spawn(&mut cmd, false);
        Io::Pipes { stdin: None, stdout: None, stderr: None }
    };
    let mut child = cmd.spawn().map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        (code, format!("cannot run {}: {e}", program.to_string_lossy()))
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    let io = match io {
        Io::Pty(m) => Io::Pty(m),
        Io::Pipes { .. } => {
            let take = |fd: Option<OwnedFd>| {
                fd.inspect(|f| {
                    let _ = set_nonblocking(f);
                })
            };
            Io::Pipes {
                stdin: take(child.stdin.take().map(OwnedFd::from)),
                stdout: take(child.stdout.take().map(OwnedFd::from)),
                stderr: take(child.stderr.take().map(OwnedFd::from)),
            }
        }
    };
    Ok(Session { pid, io, input: Vec::new(), input_end: false, exited: None })
}

/// Builds the guest's root from the setup, then enters it.
fn apply(setup: &GuestSetup) -> Result<(), String> {
    if let Some((secs, nanos)) = setup.clock {
        nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, TimeSpec::new(secs, nanos.into()))
            .map_err(|e| format!("setting the clock: {e}"))?;
    }
    if !setup.entropy.is_empty() {
        File::open("/dev/urandom")
            .map_err(|e| e.to_string())
            .and_then(|f| agentbox_sys::reseed_random(f.as_fd(), &setup.entropy).map_err(|e| e.to_string()))
            .map_err(|e| format!("reseeding the random generator: {e}"))?;
    }
    let sysroot = Path::new(SYSROOT);
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let root_opts = "trans=virtio,version=9p2000.L,msize=262144,cache=loose";
    mnt(&setup.root_tag, sysroot, "9p", nosuid | MsFlags::MS_RDONLY, Some(root_opts))?;
    mount(Some(sysroot), Path::new(HOSTROOT), None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("binding the root share: {e}"))?;
    for m in &setup.mounts {
        let target = inside(m.target());
        match m {
            GuestMount::Tmpfs { mode, uid, gid, .. } => {
                let _ = std::fs::create_dir_all(&target);
                let opts = format!("mode={mode:o},uid={uid},gid={gid}");
                mnt("tmpfs", &target, "tmpfs", nosuid, Some(&opts))?;
            }
            GuestMount::Share { tag, writable, .. } => {
                let _ = std::fs::create_dir_all(&target);
                let mut flags = nosuid;
                if !writable {
                    flags |= MsFlags::MS_RDONLY;
                }
                mnt(
                    tag,
                    &target,
                    "9p",
                    flags,
                    Some("trans=virtio,version=9p2000.L,msize=262144,cache=mmap"),
                )?;
            }
            GuestMount::Rebind { target: t } => {
                let source = Path::new(HOSTROOT).join(t.strip_prefix("/").unwrap_or(t));
                if source.is_dir() {
                    let _ = std::fs::create_dir_all(&target);
                } else {
                    if let Some(p) = target.parent() {
                        let _ = std::fs::create_dir_all(p);
                    }
                    let _ = File::create(&target);
                }
                mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(|e| format!("binding {}: {e}", t.display()))?;
                let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid;
                mount(None::<&str>, &target, None::<&str>, ro, None::<&str>)
                    .map_err(|e| format!("making {} read-only: {e}", t.display()))?;
            }
        }
    }
    let noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mnt("proc", &inside(Path::new("/proc")), "proc", noexec, None)?;
    // Like an `ns` sandbox, the guest shows /sys only where the host view has a directory for it.
    if inside(Path::new("/sys")).is_dir() {
        mnt("sysfs", &inside(Path::new("/sys")), "sysfs", noexec | MsFlags::MS_RDONLY, None)?;
    }
    mnt("devtmpfs", &inside(Path::new("/dev")), "devtmpfs", MsFlags::MS_NOSUID, None)?;
    let pts = inside(Path::new("/dev/pts"));
    let _ = std::fs::create_dir_all(&pts);
    mnt("devpts", &pts, "devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=620,ptmxmode=666"))?;
    let shm = inside(Path::new("/dev/shm"));
    let _ = std::fs::create_dir_all(&shm);
    mnt("tmpfs", &shm, "tmpfs", noexec, Some("mode=1777"))?;
    if let Some(max) = setup.pids {
        limit_pids(max)?;
    }
    nix::unistd::sethostname(&setup.hostname).map_err(|e| format!("hostname: {e}"))?;
    let _ = agentbox_sys::bring_loopback_up();
    if setup.network {
        let [a, b, c, d] = GUEST_ADDR;
        let [m1, m2, m3, m4] = GUEST_NETMASK;
        agentbox_sys::configure_ipv4(
            "eth0",
            std::net::Ipv4Addr::new(a, b, c, d),
            std::net::Ipv4Addr::new(m1, m2, m3, m4),
        )
        .map_err(|e| format!("configuring eth0: {e}"))?;
    }
    Ok(())
}

/// Makes the mounted view the root of pid 1 (and of everything it starts).
fn enter_view() -> Result<(), String> {
    nix::unistd::chdir(SYSROOT).map_err(|e| format!("chdir: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))
}

/// Where the guest agent continues once the shares are mounted: this binary, as the root share
/// shows it (QEMU's sandbox binds it at [`INFRA_DIR`]).
fn shared_binary() -> PathBuf {
    Path::new(HOSTROOT).join(INFRA_DIR.trim_start_matches('/')).join("agentbox")
}

/// What the guest agent passes to itself across the hand-off.
#[derive(serde::Serialize, serde::Deserialize)]
struct Resume {
    channel: i32,
    setup: GuestSetup,
}

/// The environment variable that carries [`Resume`].
const RESUME_ENV: &str = "AGENTBOX_GUEST_RESUME";

/// Execs the binary from the root share, as pid 1 still, with the channel and the setup. The
/// initramfs's copy of the binary lives in guest memory (20+ MiB, in every snapshot too); once
/// no process runs it, it is removed, and the balloon's free page reporting gives that memory
/// back to the host. The shared copy costs only the pages the guest agent touches. Returns only
/// if the exec failed, and the agent then goes on from the initramfs.
fn hand_off(channel: &File, setup: &GuestSetup) {
    use std::os::fd::AsRawFd;
    let exe = shared_binary();
    // Only the very same build: another one (agentbox upgraded while this VM was made) may not
    // read this one's hand-off.
    match (build_id(Path::new("/init")), build_id(&exe)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return,
    }
    // The random bytes have been used; they stay out of the next program's environment.
    let setup = GuestSetup { entropy: Vec::new(), ..setup.clone() };
    let Ok(state) = serde_json::to_string(&Resume { channel: channel.as_raw_fd(), setup }) else {
        return;
    };
    let cloexec = |on: bool| {
        let flags = if on { nix::fcntl::FdFlag::FD_CLOEXEC } else { nix::fcntl::FdFlag::empty() };
        nix::fcntl::fcntl(channel.as_fd(), nix::fcntl::FcntlArg::F_SETFD(flags))
    };
    if cloexec(false).is_err() {
        return;
    }
    let err = Command::new(&exe).arg0("/init").env_clear().env(RESUME_ENV, state).exec();
    console(&format!("continuing from {}: {err}", exe.display()));
    let _ = cloexec(true);
}

/// The GNU build id of the ELF file at `path`, read lazily (over 9p, only its headers and note).
fn build_id(path: &Path) -> Option<Vec<u8>> {
    use object::Object;
    let file = File::open(path).ok()?;
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).ok()?;
    obj.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// pid 1 again, after [`hand_off`]: the shares are mounted, the channel is open.
fn resume(state: &str) -> ! {
    let resumed = serde_json::from_str::<Resume>(state)
        .map_err(|e| format!("the hand-off's state: {e}"))
        .and_then(|r| {
            let fd = agentbox_sys::inherited_fd(r.channel).ok_or("the channel was not handed over")?;
            Ok((File::from(fd), r.setup))
        });
    let (port, setup) = match resumed {
        Ok(r) => r,
        Err(e) => {
            console(&e);
            power_off();
        }
    };
    // Nothing runs the initramfs's copy any more. Cached files and the boot's reclaimable
    // kernel objects go too: free pages are what the balloon reports to the host.
    let _ = std::fs::remove_file("/init");
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let mut guest = match Guest::new(port) {
        Ok(g) => g,
        Err(e) => {
            console(&e);
            power_off();
        }
    };
    guest.ready(setup);
    power_off();
}

/// Puts pid 1 (and so everything it starts) in a cgroup with `pids.max`. The cgroup tree is
/// mounted in the initramfs, outside the agent's root.
fn limit_pids(max: u64) -> Result<(), String> {
    let cg = PathBuf::from("/sys/fs/cgroup");
    mnt("cgroup2", &cg, "cgroup2", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV, None)?;
    let w =
        |p: PathBuf, v: String| std::fs::write(&p, v).map_err(|e| format!("writing {}: {e}", p.display()));
    w(cg.join("cgroup.subtree_control"), "+pids".into())?;
    let agent = cg.join("agent");
    std::fs::create_dir_all(&agent).map_err(|e| format!("creating the cgroup: {e}"))?;
    w(agent.join("pids.max"), max.to_string())?;
    w(agent.join("cgroup.procs"), std::process::id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_address_is_rewritten_in_values_only() {
        let env = vec![
            ("HTTPS_PROXY".to_string(), "http://127.0.0.1:3128".to_string()),
            ("127.0.0.1:3128".to_string(), "x".to_string()),
            ("HOME".to_string(), "/home/agent".to_string()),
        ];
        let r = ("127.0.0.1:3128".to_string(), "10.0.2.100:3128".to_string());
        let out = rewrite_env(&env, Some(&r));
        assert_eq!(out[0].1, "http://10.0.2.100:3128");
        assert_eq!(out[1].0, "127.0.0.1:3128");
        assert_eq!(out[2].1, "/home/agent");
        assert_eq!(rewrite_env(&env, None), env);
    }
}
