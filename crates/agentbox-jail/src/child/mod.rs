//! Code that runs in the sandbox child, pid 1 of the new PID namespace, before and after it starts
//! the command. Single-threaded and outside any async runtime, as fork/unshare/seccomp require.
//!
//! The child's life:
//! 1. ask for SIGKILL if the launcher dies, wait for the launcher's "go" (uid/gid maps written,
//!    cgroup joined); end-of-file means the launcher is gone;
//! 2. unshare the cgroup namespace, build the root filesystem (`fs`), set the hostname, bring up
//!    loopback;
//! 3. create the terminal inside the sandbox's own devpts when asked and pass its master side to
//!    the launcher;
//! 4. restrict itself (`restrict`): rlimits, Landlock + no_new_privs, no capabilities, seccomp;
//!    become non-dumpable so the command cannot ptrace it or read its memory;
//! 5. fork the command, which takes the terminal or the inherited stdio, and execs;
//! 6. as init: forward signals from the launcher, reap orphans, and exit with the command's status
//!    as soon as the command ends. The kernel then kills everything left in the namespace.

mod fs;
mod restrict;

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use agentbox_sys::exit_now as _exit;
use agentbox_sys::{bring_loopback_up, set_controlling_tty, set_winsize, Child, WinSize};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::Resource;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use nix::sys::termios::{tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use seccompiler::BpfProgram;

use crate::plan::Plan;
use crate::wire;

/// Exit code of the child when setup fails (the launcher reports the recorded reason).
pub(crate) const SETUP_FAILED: i32 = 125;

/// Signals the launcher forwards to the command through init.
pub(crate) const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

#[derive(Debug)]
pub(crate) struct Failure {
    pub step: String,
    pub errno: Errno,
    pub message: String,
}

/// The terminal the child creates for the command.
#[derive(Debug)]
pub(crate) struct PtyRequest {
    pub size: Option<WinSize>,
    pub termios: Option<Termios>,
}

/// The sandbox's namespaces in the order a joining process must enter them (user first: it grants
/// the capabilities the others need), as `/proc/self/ns` names.
pub const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
];

/// Tags of the handoff message from the child to the launcher.
pub(crate) const HANDOFF_SANDBOX: u8 = b'H';
pub(crate) const HANDOFF_TERMINAL: u8 = b'T';

/// Sends descriptors over the handoff socket in one message.
fn send_fds(sock: &OwnedFd, tag: u8, fds: &[RawFd]) -> Result<(), Failure> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &[std::io::IoSlice::new(&[tag])], &cmsg, MsgFlags::empty(), None)
        .map(drop)
        .map_err(|e| failure("hand descriptors to the launcher", e))
}

/// Everything the child needs, prepared by the launcher before the fork.
#[derive(Debug)]
pub(crate) struct ChildContext<'a> {
    pub plan: &'a Plan,
    /// The launcher had one thread when it forked this process, so this one has one too.
    pub one: &'a agentbox_sys::SingleThreaded,
    /// The launcher's "go".
    pub go: crate::go::GoReceiver,
    pub report: OwnedFd,
    pub pty: Option<PtyRequest>,
    /// Pipes the command's stdin, stdout and stderr are connected to instead of the inherited
    /// ones (`Stdio::Pipes`).
    pub pipes: Option<[OwnedFd; 3]>,
    /// Socket to the launcher for the handoff message.
    pub handoff: OwnedFd,
    /// Hand the sandbox's namespaces and root to the launcher (agents keep them for `exec`).
    pub want_handles: bool,
    /// The launcher's host uid is not the one the sandbox maps (a root launcher): the child must
    /// take the sandbox's ids itself.
    pub switch_ids: bool,
    pub seccomp: &'a BpfProgram,
    pub rlimits: &'a [(Resource, u64)],
    /// Resolved program path and argv/envp, as C strings, built before the fork.
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// Converts the plan's process into C strings (done by the launcher: allocation failures and NUL
/// bytes are reported before anything is created).
pub(crate) fn c_strings(
    argv: &[OsString],
    env: &[(String, String)],
) -> Result<(Vec<CString>, Vec<CString>), String> {
    let argv = argv
        .iter()
        .map(|a| {
            CString::new(a.clone().into_vec()).map_err(|_| format!("argument {a:?} contains a NUL byte"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| {
            CString::new(format!("{k}={v}"))
                .map_err(|_| format!("environment variable {k} contains a NUL byte"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((argv, envp))
}

/// Resolves the program like execvp, but on the sandbox's PATH (`path_var`), not the launcher's.
/// Called inside the sandbox, after pivot_root.
fn resolve_program(arg0: &CString, path_var: Option<&str>) -> Result<CString, Errno> {
    let bytes = arg0.as_bytes();
    if bytes.contains(&b'/') {
        return Ok(arg0.clone());
    }
    let mut last = Errno::ENOENT;
    for dir in path_var.unwrap_or(agentbox_core::SANDBOX_PATH).split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(OsString::from_vec(bytes.to_vec()));
        match nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if !candidate.is_dir() => {
                return CString::new(candidate.into_os_string().into_vec()).map_err(|_| Errno::EINVAL)
            }
            Ok(()) => last = Errno::EACCES,
            Err(Errno::EACCES) => last = Errno::EACCES,
            Err(_) => {}
        }
    }
    Err(last)
}

/// Entry point of the child. Never returns.
pub(crate) fn child_main(mut ctx: ChildContext<'_>) -> ! {
    let report = ctx.report.try_clone().unwrap_or_else(|_| _exit(SETUP_FAILED));
    match setup(&mut ctx) {
        Ok(never) => match never {},
        Err(f) => {
            wire::report(&report, &f.step, f.errno, &f.message);
            _exit(SETUP_FAILED)
        }
    }
}

fn failure(step: &str, e: Errno) -> Failure {
    Failure { step: step.into(), errno: e, message: e.desc().into() }
}

fn setup(ctx: &mut ChildContext<'_>) -> Result<std::convert::Infallible, Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| failure("set parent-death signal", e))?;
    if !ctx.go.wait() {
        _exit(SETUP_FAILED) // the launcher went away before the sandbox was ready
    }

    // We are in the sandbox's cgroups now (cloned into its v2 one, moved into the others by the
    // launcher), if it has any; make them our cgroup namespace's root.
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| failure("unshare cgroup namespace", e))?;
    // Bind sources are opened with the launcher's credentials (a root launcher's state directories
    // are not the sandbox user's to search); everything created afterwards belongs to that user.
    let sources = fs::open_sources(&ctx.plan.mounts)?;
    become_sandbox_user(ctx)?;
    fs::build_root(&ctx.plan.mounts, sources, (ctx.plan.uid, ctx.plan.gid))?;
    nix::unistd::sethostname(&ctx.plan.hostname).map_err(|e| failure("sethostname", e))?;
    if ctx.plan.new_netns {
        bring_loopback_up().map_err(|e| failure("bring up loopback", e))?;
    }
    // Handles to this sandbox (its namespaces and root), opened by init itself: once init is
    // non-dumpable nobody without CAP_SYS_PTRACE could open them through /proc. The supervisor
    // keeps them for `agentbox exec`.
    let mut handed: Vec<OwnedFd> = Vec::with_capacity(9);
    if ctx.want_handles {
        for (name, _) in NAMESPACES {
            let path = format!("/proc/self/ns/{name}");
            handed.push(
                nix::fcntl::open(path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| failure(&format!("open {path}"), e))?,
            );
        }
        handed.push(
            nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| failure("open the sandbox root", e))?,
        );
    }
    let terminal = match ctx.pty.take() {
        Some(req) => {
            let (master, slave) = open_terminal(req)?;
            handed.push(master);
            Some(slave)
        }
        None => None,
    };
    if let Some(port) = ctx.plan.proxy_port {
        // Created here so it lives in the sandbox's network namespace; served from outside.
        let listener =
            std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).map_err(|e| Failure {
                step: format!("listen on 127.0.0.1:{port} for the egress proxy"),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                message: e.to_string(),
            })?;
        handed.push(OwnedFd::from(listener));
    }
    if !handed.is_empty() {
        let tag = if ctx.want_handles { HANDOFF_SANDBOX } else { HANDOFF_TERMINAL };
        let raw: Vec<RawFd> = handed.iter().map(|h| h.as_raw_fd()).collect();
        send_fds(&ctx.handoff, tag, &raw)?;
    }
    drop(handed);

    agentbox_sys::overwrite_cmdline(b"agentbox-init").map_err(|e| Failure {
        step: "hide the launcher's command line".into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        message: e.to_string(),
    })?;
    // init is a copy of the launcher, whose environment may hold the caller's secrets: clear it.
    agentbox_sys::clear_environ_area().map_err(|e| Failure {
        step: "clear the launcher's environment".into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        message: e.to_string(),
    })?;

    restrict_and_run(ctx, terminal, Reaper::Init)
}

/// Who stays behind after forking the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaper {
    /// A new sandbox's pid 1: every process of the sandbox ends up its child.
    Init,
    /// `exec`'s helper, outside the sandbox's PID namespace: it reaps only its command.
    Helper,
}

/// The last steps of every sandboxed start (a new sandbox or `exec` into one): restrict this
/// process, fork the command, and stay behind as its reaper.
fn restrict_and_run(
    ctx: &ChildContext<'_>,
    terminal: Option<OwnedFd>,
    reaper: Reaper,
) -> Result<std::convert::Infallible, Failure> {
    restrict::rlimits(ctx.rlimits)?;
    restrict::landlock(&ctx.plan.landlock)?;
    restrict::drop_capabilities()?;
    restrict::seccomp(ctx.seccomp)?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| failure("set non-dumpable", e))?;

    let path_var = ctx.plan.process.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    let program = resolve_program(&ctx.program, path_var);
    // For `exec`, setns(PID) applies to children: the command is forked into the sandbox's PID
    // namespace while this process stays outside as its reaper, like the sandbox's own init.
    match agentbox_sys::fork_process(ctx.one).map_err(|e| failure("fork command", e))? {
        Child::Child => exec_command(ctx, terminal.as_ref(), program),
        Child::Parent(pid) => {
            drop(terminal);
            // Nothing of the host may stay open here: not the caller's stdio, not the pipes.
            if let Ok(null) = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            // pid 1 of a sandbox nobody joins keeps its end of the handoff socket, to say when
            // the sandbox has ended. (`exec` starts processes in an agent's sandbox that are not
            // init's children: there, init without a child is not a sandbox without processes.)
            let keep = (reaper == Reaper::Init && !ctx.want_handles).then(|| ctx.handoff.as_raw_fd());
            let _ = agentbox_sys::close_from(ctx.one, 3, keep);
            init_loop(pid, keep)
        }
    }
}

/// What joining a running sandbox needs, opened by the launcher before the fork.
#[derive(Debug)]
pub(crate) struct Join {
    /// Namespace descriptors of the sandbox's init, the user namespace first.
    pub namespaces: Vec<(OwnedFd, CloneFlags)>,
    /// The sandbox's root directory.
    pub root: OwnedFd,
}

/// Entry point of a process that joins a running sandbox (`agentbox exec`). Never returns.
pub(crate) fn join_main(mut ctx: ChildContext<'_>, join: Join) -> ! {
    let report = ctx.report.try_clone().unwrap_or_else(|_| _exit(SETUP_FAILED));
    match join_setup(&mut ctx, join) {
        Ok(never) => match never {},
        Err(f) => {
            wire::report(&report, &f.step, f.errno, &f.message);
            _exit(SETUP_FAILED)
        }
    }
}

fn join_setup(ctx: &mut ChildContext<'_>, join: Join) -> Result<std::convert::Infallible, Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| failure("set parent-death signal", e))?;
    if !ctx.go.wait() {
        _exit(SETUP_FAILED) // the launcher went away before the sandbox was ready
    }
    // A namespace the sandbox shares with the host (its network, with --network full) is one this
    // process is in already, and joining it again would need the host's privileges: skipped.
    // Read before any setns, while /proc is still this process's.
    let id = |st: nix::sys::stat::FileStat| (st.st_dev, st.st_ino);
    let already: Vec<bool> = join
        .namespaces
        .iter()
        .map(|(fd, kind)| {
            let name = NAMESPACES.iter().find(|(_, k)| k == kind).map(|(n, _)| *n);
            let mine = name.and_then(|n| nix::sys::stat::stat(format!("/proc/self/ns/{n}").as_str()).ok());
            mine.map(id) == nix::sys::stat::fstat(fd).ok().map(id)
        })
        .collect();
    // The user namespace first: it grants the capabilities the other setns calls and chroot need.
    for ((fd, kind), already) in join.namespaces.iter().zip(already) {
        if already {
            continue;
        }
        nix::sched::setns(fd, *kind)
            .map_err(|e| failure(&format!("join the sandbox's {kind:?} namespace"), e))?;
    }
    nix::unistd::fchdir(&join.root).map_err(|e| failure("enter the sandbox root", e))?;
    nix::unistd::chroot(".").map_err(|e| failure("enter the sandbox root", e))?;
    nix::unistd::chdir("/").map_err(|e| failure("enter the sandbox root", e))?;
    drop(join);
    become_sandbox_user(ctx)?;
    let terminal = match ctx.pty.take() {
        Some(req) => {
            let (master, slave) = open_terminal(req)?;
            send_fds(&ctx.handoff, HANDOFF_TERMINAL, &[master.as_raw_fd()])?;
            Some(slave)
        }
        None => None,
    };
    restrict_and_run(ctx, terminal, Reaper::Helper)
}

/// Takes the sandbox's uid and gid, and no supplementary groups, when the launcher's own ids are
/// not the ones the sandbox maps (a root launcher: the sandbox runs as an unprivileged host id).
/// The process keeps its capabilities in the sandbox's user namespace (its old uid was not that
/// namespace's root), so the rest of the setup works the same; they are all dropped before exec.
fn become_sandbox_user(ctx: &ChildContext<'_>) -> Result<(), Failure> {
    if !ctx.switch_ids {
        // The launcher's own ids are the ones mapped (an unprivileged caller).
        return Ok(());
    }
    let plan = ctx.plan;
    nix::unistd::setgroups(&[]).map_err(|e| failure("drop supplementary groups", e))?;
    let gid = nix::unistd::Gid::from_raw(plan.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| failure("set the sandbox's gid", e))?;
    let uid = nix::unistd::Uid::from_raw(plan.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| failure("set the sandbox's uid", e))?;
    // A change of credentials clears the parent-death signal: ask again, then make sure the
    // launcher did not die in between (its end of the handoff socket, which it never writes to,
    // would read as closed).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| failure("set parent-death signal", e))?;
    let mut hup = [nix::poll::PollFd::new(ctx.handoff.as_fd(), nix::poll::PollFlags::POLLIN)];
    if nix::poll::poll(&mut hup, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0) {
        _exit(SETUP_FAILED);
    }
    // Changing ids made the process non-dumpable, which hands its /proc files to root; the setup
    // still writes its own (the cmdline overwrite). It becomes non-dumpable again before exec.
    nix::sys::prctl::set_dumpable(true).map_err(|e| failure("set dumpable", e))
}

/// Opens a new pty in the sandbox's devpts: (master, slave).
fn open_terminal(req: PtyRequest) -> Result<(OwnedFd, OwnedFd), Failure> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| failure("open /dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| failure("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| failure("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| failure("ptsname", e))?;
    let slave =
        nix::fcntl::open(name.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| failure("open pty slave", e))?;
    if let Some(t) = &req.termios {
        tcsetattr(&slave, SetArg::TCSANOW, t).map_err(|e| failure("configure terminal", e))?;
    }
    if let Some(size) = req.size {
        set_winsize(slave.as_fd(), size).map_err(|e| failure("set terminal size", e))?;
    }
    Ok((master.into(), slave))
}

/// In the forked command process: take the terminal or stdio, reset signal state, exec.
fn exec_command(ctx: &ChildContext<'_>, terminal: Option<&OwnedFd>, program: Result<CString, Errno>) -> ! {
    let fail = |step: &str, e: Errno| {
        wire::report(&ctx.report, step, e, e.desc());
        _exit(SETUP_FAILED)
    };
    // A new session: the command has no controlling terminal of the host's, so it cannot send
    // job-control signals to the caller's shell or use TIOCSTI on the caller's terminal.
    if let Err(e) = nix::unistd::setsid() {
        fail("setsid", e);
    }
    if let Some(slave) = terminal {
        if let Err(e) = set_controlling_tty(slave.as_fd()) {
            fail("set controlling terminal", e);
        }
        for r in
            [nix::unistd::dup2_stdin(slave), nix::unistd::dup2_stdout(slave), nix::unistd::dup2_stderr(slave)]
        {
            if let Err(e) = r {
                fail("attach terminal", e);
            }
        }
    }
    if let Some([stdin, stdout, stderr]) = &ctx.pipes {
        for r in [
            nix::unistd::dup2_stdin(stdin),
            nix::unistd::dup2_stdout(stdout),
            nix::unistd::dup2_stderr(stderr),
        ] {
            if let Err(e) = r {
                fail("connect the command's pipes", e);
            }
        }
    }
    if let Err(e) = nix::unistd::chdir(&PathBuf::from(&ctx.plan.process.cwd)) {
        let why = if ctx.switch_ids && e == Errno::EACCES {
            format!(
                " (agentbox runs as root, so the command runs as the unprivileged host uid {}, which \
                 may not enter it: give it the directory with `chown -R {}:{} DIR`, or run agentbox as \
                 an ordinary user)",
                ctx.plan.host_uid, ctx.plan.host_uid, ctx.plan.host_gid
            )
        } else {
            String::new()
        };
        let msg = format!(
            "working directory {} is not available inside the sandbox: {}{why}",
            ctx.plan.process.cwd.display(),
            e.desc()
        );
        wire::report(&ctx.report, "chdir", e, &msg);
        _exit(SETUP_FAILED);
    }
    // Descriptors the caller of agentbox left open (beyond stdio) must not leak in.
    if let Err(e) = agentbox_sys::cloexec_from(3) {
        fail("close inherited descriptors", e);
    }
    if let Some(fd) = ctx.plan.process.keep_fd {
        if let Err(e) = agentbox_sys::keep_on_exec(fd) {
            fail("hand over the report descriptor", e);
        }
    }
    // The command starts with default signal actions and nothing blocked, whatever agentbox had.
    if let Err(e) = agentbox_sys::default_disposition_all() {
        fail("reset signal actions", e);
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    );
    let program = match program {
        Ok(p) => p,
        Err(e) => {
            wire::report(&ctx.report, wire::EXEC_STEP, e, e.desc());
            _exit(SETUP_FAILED)
        }
    };
    let Err(e) = nix::unistd::execve(&program, &ctx.argv, &ctx.envp);
    wire::report(&ctx.report, wire::EXEC_STEP, e, e.desc());
    _exit(SETUP_FAILED)
}

/// pid 1: forward signals to the command, reap everything, exit with the command's status.
///
/// The signals stay blocked (the launcher blocked them before the clone) and are taken with
/// sigwait. Blocked signals are queued even for a PID namespace's init, which would otherwise
/// drop signals it has no handler for.
///
/// `ended` (the init of a sandbox nobody joins only): the handoff socket, on which [`end`] tells
/// the launcher the command's status before this process exits.
fn init_loop(command: Pid, ended: Option<RawFd>) -> ! {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            // To the command's process group when it leads one (an agent on its terminal, and
            // the programs it started there), else to the command.
            if kill(Pid::from_raw(-command.as_raw()), sig).is_err() {
                let _ = kill(command, sig);
            }
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => end(code, ended),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => end(128 + sig as i32, ended),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// The first byte of the message [`end`] sends; the command's status follows (i32, little-endian).
pub(crate) const ENDED: u8 = b'E';

/// The command ended with `code`: exit with it. When no other process of the sandbox is left
/// (every one ends up a child of pid 1, so none is left when pid 1 has no child), the launcher is
/// told first, on `ended`: the exit itself then tears down the sandbox's mounts, and a launcher
/// that exits right after the command (`agentbox run`) need not wait for that. With processes
/// left, nothing is sent: the kernel kills them when this process exits, and the launcher learns
/// of the end from the exit, after them.
fn end(code: i32, ended: Option<RawFd>) -> ! {
    if let Some(fd) = ended {
        let alone = loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Err(Errno::ECHILD) => break true,
                Err(Errno::EINTR) => {}
                Ok(WaitStatus::StillAlive) | Err(_) => break false,
                Ok(_) => {} // another process that had ended: reaped
            }
        };
        // The launcher may exit as soon as it has the message: its death must not kill this
        // process before it exits on its own (with the command's status, which the caller of
        // the launcher may then reap).
        if alone && nix::sys::prctl::set_pdeathsig(None).is_ok() {
            let mut msg = [ENDED, 0, 0, 0, 0];
            msg[1..].copy_from_slice(&code.to_le_bytes());
            // MSG_NOSIGNAL: a launcher that closed its end (it does not wait this way) is no
            // reason for a signal.
            let _ = nix::sys::socket::send(fd, &msg, MsgFlags::MSG_NOSIGNAL);
        }
    }
    _exit(code)
}
