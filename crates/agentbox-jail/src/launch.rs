//! The launcher side: everything agentbox does outside the sandbox to start one.
//!
//! 1. compile the seccomp filter, build argv/envp, check every bind source exists, decide how
//!    limits are enforced and create the cgroup: all before any namespace exists, so every input
//!    error is reported with nothing created;
//! 2. block the signals the launcher and init take synchronously, then clone the child into new
//!    user, mount, PID, IPC, UTS, cgroup (and network) namespaces;
//!    (started inside the sandbox's v2 cgroup where it has one: see `Cgroup::v2_entry`);
//! 3. write the child's uid/gid maps, move it into the cgroup's other directories, send "go";
//! 4. receive the terminal's master side (if one was asked for), then read the child's report
//!    pipe to end-of-file: empty means the command is running.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use agentbox_sys::{clone_process, clone_process_into, Child, SingleThreaded, WinSize};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::termios::Termios;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::child::{self, ChildContext, PtyRequest, FORWARDED};
use crate::go::{GoReceiver, GoSender};
use crate::handles::SandboxHandles;
use crate::limits::{enforce, Cgroup, Enforcement};
use crate::plan::{MountOp, Plan};
use crate::wire::{self, ChildFailure};
use crate::JailError;

/// How the command's stdio is connected.
///
/// A terminal of the caller's must never be handed to sandboxed code: whoever holds it can keep
/// it after the command returns, read what the person types later, and write to their screen.
/// Callers use `Inherit` only when none of their stdio is a terminal.
#[derive(Debug)]
pub enum Stdio {
    /// The launcher's own stdin/stdout/stderr, passed through unchanged.
    Inherit,
    /// Three pipes; the launcher keeps the other ends ([`Running::pipes`]) and relays them.
    Pipes,
    /// A new terminal inside the sandbox; the launcher gets its master side.
    Pty { size: Option<WinSize>, termios: Option<Termios> },
}

/// The launcher's ends of [`Stdio::Pipes`].
#[derive(Debug)]
pub struct Pipes {
    /// Write end of the command's stdin.
    pub stdin: OwnedFd,
    /// Read ends of its stdout and stderr.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What a [`Stdio`] becomes: the terminal the child creates, the child's ends of the pipes
/// (stdin, stdout, stderr), and the launcher's.
pub(crate) type StdioParts = (Option<PtyRequest>, Option<[OwnedFd; 3]>, Option<Pipes>);

impl Stdio {
    pub(crate) fn split(self) -> Result<StdioParts, JailError> {
        match self {
            Stdio::Inherit => Ok((None, None, None)),
            Stdio::Pty { size, termios } => Ok((Some(PtyRequest { size, termios }), None, None)),
            Stdio::Pipes => {
                let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(JailError::sys("pipe"));
                let (in_r, in_w) = pipe()?;
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                Ok((
                    None,
                    Some([in_r, out_w, err_w]),
                    Some(Pipes { stdin: in_w, stdout: out_r, stderr: err_r }),
                ))
            }
        }
    }
}

/// The pipes and socket between a launcher and its child: "go" (launcher to child), the setup
/// report (child to launcher, close-on-exec), and the handoff socket for descriptors.
pub(crate) struct Channels {
    pub go_tx: GoSender,
    pub go_rx: GoReceiver,
    pub report_read: OwnedFd,
    pub report_write: OwnedFd,
    pub parent_sock: OwnedFd,
    pub handoff: OwnedFd,
}

impl Channels {
    pub(crate) fn new() -> Result<Self, JailError> {
        let (go_tx, go_rx) = crate::go::channel()?;
        let (report_read, report_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(JailError::sys("pipe"))?;
        let (parent_sock, handoff) =
            socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
                .map_err(JailError::sys("socketpair"))?;
        Ok(Self { go_tx, go_rx, report_read, report_write, parent_sock, handoff })
    }
}

/// A started sandbox whose command is running.
#[derive(Debug)]
pub struct Running {
    /// The sandbox's init (pid 1 inside), as seen from the host.
    pub pid: Pid,
    /// Master side of the sandbox's terminal, for `Stdio::Pty`.
    pub master: Option<OwnedFd>,
    /// The launcher's ends of the command's stdio, for `Stdio::Pipes`.
    pub pipes: Option<Pipes>,
    /// The sandbox's namespaces and root, for joining it later (`agentbox exec`).
    pub handles: Option<SandboxHandles>,
    /// The socket listening on the sandbox's own loopback, for the egress proxy (`proxy` mode).
    pub proxy_listener: Option<std::net::TcpListener>,
    /// How each limit is enforced, for `--verbose` and `info`.
    pub limit_notes: Vec<String>,
    pub(crate) cgroup: Option<Cgroup>,
    /// The handoff socket of a sandbox nobody joins (started without `keep_handles`), on which
    /// its init says that the command ended and nothing else of the sandbox is left (see
    /// [`crate::AfterEnd`]).
    pub(crate) ended: Option<OwnedFd>,
}

/// Signals the launcher handles through a signalfd; blocked before the clone so the child inherits
/// the mask and takes them with sigwait as init.
pub(crate) fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    for s in FORWARDED {
        set.add(s);
    }
    set
}

fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("agentbox-{}-{nanos:x}", std::process::id())
}

/// Maps the sandbox's uid and gid to the plan's host ids, one id each.
///
/// An unprivileged writer may only map its own ids, and only after giving up setgroups(2). A root
/// writer maps the sandbox to an unprivileged id instead of its own, and leaves setgroups
/// allowed so the child can drop root's supplementary groups (nothing inside has the capability
/// to call it afterwards).
fn write_id_maps(pid: Pid, plan: &Plan) -> Result<(), JailError> {
    let proc = Path::new("/proc").join(pid.to_string());
    let root = nix::unistd::geteuid().is_root();
    std::fs::write(proc.join("setgroups"), if root { "allow" } else { "deny" })
        .map_err(|source| JailError::IdMap { what: "setgroups", source })?;
    std::fs::write(proc.join("uid_map"), format!("{} {} 1\n", plan.uid, plan.host_uid))
        .map_err(|source| JailError::IdMap { what: "uid_map", source })?;
    std::fs::write(proc.join("gid_map"), format!("{} {} 1\n", plan.gid, plan.host_gid))
        .map_err(|source| JailError::IdMap { what: "gid_map", source })
}

/// Reads the child's report to end-of-file: returns once the command was exec'd. On any failure
/// the child is killed and reaped, so nothing is left behind. `handed_over`: the handoff message
/// the launcher expected did arrive.
pub(crate) fn await_exec(pid: Pid, report: OwnedFd, handed_over: bool, plan: &Plan) -> Result<(), JailError> {
    let abort = |e: JailError| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    match wire::read_outcome(report) {
        Ok(None) if handed_over => Ok(()),
        Ok(None) => Err(abort(JailError::Setup {
            step: "handoff".into(),
            message: "the sandbox did not hand over its descriptors".into(),
        })),
        Ok(Some(f)) => {
            let _ = waitpid(pid, None);
            Err(failure_to_error(f, plan))
        }
        Err(source) => Err(abort(JailError::Io { what: "read the sandbox's setup report", source })),
    }
}

pub(crate) fn failure_to_error(f: ChildFailure, plan: &Plan) -> JailError {
    if f.step == wire::EXEC_STEP {
        let command = plan.process.argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
        let not_found = f.errno == Errno::ENOENT as i32;
        let reason = if not_found { "command not found inside the sandbox".to_string() } else { f.message };
        return JailError::Exec { command, reason, not_found };
    }
    JailError::Setup { step: f.step, message: f.message }
}

/// Receives one handoff message from the child: its tag and descriptors. `None` if the child
/// closed the socket first (it failed; its report says why).
pub(crate) fn receive_fds(sock: &OwnedFd, max: usize) -> Result<Option<(u8, Vec<OwnedFd>)>, JailError> {
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 16]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(JailError::sys("receive the sandbox's descriptors"))?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(JailError::sys("receive the sandbox's descriptors"))? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(raw.into_iter().map(agentbox_sys::own_received_fd));
        }
    }
    if fds.len() > max {
        return Err(JailError::Setup {
            step: "handoff".into(),
            message: format!("{} descriptors, expected at most {max}", fds.len()),
        });
    }
    Ok(Some((buf[0], fds)))
}

/// Starts the sandbox described by `plan`; returns once the command has been exec'd inside.
///
/// With `keep_handles`, the sandbox's namespaces and root come back in [`Running::handles`], so
/// that commands can be started in it later ([`crate::exec_in`]), and it gets a freezer cgroup
/// for `pause`; a foreground `run` needs neither.
pub fn start(plan: &Plan, stdio: Stdio, keep_handles: bool) -> Result<Running, JailError> {
    launch(plan, stdio, keep_handles)?.finish()
}

/// A sandbox cloned and told to go: its child builds its root and restricts itself while the
/// launcher may do work of its own (a supervisor opens its log and binds its socket), as soon as
/// the scheduler gives the child a CPU: at the latest when the launcher waits in
/// [`Launched::finish`], which returns once the command runs.
///
/// Dropped unfinished (the launcher's own work failed), the child is killed and reaped, and its
/// cgroup removed: nothing of it is left.
#[must_use = "a launched sandbox is killed when dropped; finish it"]
#[derive(Debug)]
pub struct Launched<'p> {
    /// First, so that it is dropped first: the child is reaped before its cgroup is removed.
    child: Unfinished,
    plan: &'p Plan,
    keep_handles: bool,
    want_terminal: bool,
    parent_sock: OwnedFd,
    report_read: OwnedFd,
    pipes: Option<Pipes>,
    enforcement: Enforcement,
}

/// A launched child nobody answers for yet: killed and reaped when dropped. [`Launched::finish`]
/// takes it over, and from then on its own failures kill and reap the child (once: a reaped pid
/// may already be another process's).
#[derive(Debug)]
struct Unfinished(Pid);

impl Unfinished {
    fn take_over(self) -> Pid {
        let pid = self.0;
        std::mem::forget(self);
        pid
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = waitpid(self.0, None);
    }
}

/// The first half of [`start`]: everything up to the child's "go". See [`Launched`].
pub fn launch(plan: &Plan, stdio: Stdio, keep_handles: bool) -> Result<Launched<'_>, JailError> {
    let seccomp = plan.seccomp.compile()?;
    let first = plan.process.argv.first().ok_or(agentbox_core::SpecError::NoCommand)?;
    let program = std::ffi::CString::new(first.as_encoded_bytes()).map_err(|_| JailError::Exec {
        command: first.to_string_lossy().into(),
        reason: "contains a NUL byte".into(),
        not_found: false,
    })?;
    let (argv, envp) = child::c_strings(&plan.process.argv, &plan.process.env).map_err(|reason| {
        JailError::Exec { command: first.to_string_lossy().into(), reason, not_found: false }
    })?;

    // Bind sources are opened by the child, inside its mount namespace (the kernel refuses to bind
    // a mount of another namespace); here we only check that each exists, so a missing path is
    // reported before anything is created.
    for op in &plan.mounts {
        let sources: Vec<&std::path::PathBuf> = match op {
            MountOp::Bind { source, .. } | MountOp::Device { source, .. } => vec![source],
            MountOp::Overlay { lower, upper, work, .. } => vec![lower, upper, work],
            _ => vec![],
        };
        for source in sources {
            std::fs::symlink_metadata(source).map_err(|e| JailError::OpenSource {
                path: source.clone(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
        }
    }

    let mut enforcement = enforce(&plan.limits, &unique_id(), keep_handles)?;
    let Channels { go_tx, go_rx, report_read, report_write, parent_sock, handoff } = Channels::new()?;
    let (pty, child_pipes, pipes) = stdio.split()?;
    let want_terminal = pty.is_some();

    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)
        .map_err(JailError::sys("block signals"))?;

    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if plan.new_netns {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let switch_ids = nix::unistd::geteuid().as_raw() != plan.host_uid;
    let one = SingleThreaded::check().map_err(JailError::Threads)?;
    // Started inside its v2 cgroup when it has one; otherwise (or if the kernel refuses that)
    // cloned here and moved there below.
    let entry = enforcement.cgroup.as_ref().and_then(Cgroup::v2_entry);
    let (child, entered_v2) = match entry.as_ref().map(|fd| clone_process_into(&one, flags, fd.as_fd())) {
        Some(Ok(child)) => (child, true),
        _ => (clone_process(&one, flags).map_err(JailError::Clone)?, false),
    };
    let pid = match child {
        Child::Child => child::child_main(ChildContext {
            plan,
            one: &one,
            go: {
                drop(go_tx);
                go_rx
            },
            report: report_write,
            pty,
            pipes: child_pipes,
            handoff,
            want_handles: keep_handles,
            switch_ids,
            seccomp: &seccomp,
            rlimits: &enforcement.rlimits,
            program,
            argv,
            envp,
        }),
        Child::Parent(pid) => pid,
    };
    drop((go_rx, report_write, pty, handoff, child_pipes, entry));

    // From here a failure drops the guard, which kills and reaps the child (before `enforcement`,
    // declared earlier, removes its cgroup).
    let child = Unfinished(pid);
    write_id_maps(pid, plan)?;
    if let Some(cg) = &mut enforcement.cgroup {
        cg.add(pid, entered_v2)?;
    }
    go_tx.send().map_err(JailError::sys("start the sandbox"))?;
    Ok(Launched { child, plan, keep_handles, want_terminal, parent_sock, report_read, pipes, enforcement })
}

impl Launched<'_> {
    /// The second half of [`start`]: receives what the child hands over and waits until its
    /// command was exec'd. On failure the child is killed and reaped.
    pub fn finish(self) -> Result<Running, JailError> {
        let Launched {
            child,
            plan,
            keep_handles,
            want_terminal,
            parent_sock,
            report_read,
            pipes,
            enforcement,
        } = self;
        let pid = child.take_over();
        let abort = |e: JailError| {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            e
        };
        // The handoff carries, in order: the namespace handles and root, the terminal's master,
        // the proxy listener; each only when asked for.
        let want_listener = plan.proxy_port.is_some();
        let handed = if keep_handles || want_terminal || want_listener {
            receive_fds(&parent_sock, SandboxHandles::COUNT + 2).map_err(abort)?
        } else {
            None
        };
        let (handles, master, listener) = match handed {
            Some((tag, mut fds)) => {
                let listener = if want_listener { fds.pop() } else { None };
                let master = if want_terminal { fds.pop() } else { None };
                let handles =
                    if tag == child::HANDOFF_SANDBOX { SandboxHandles::from_fds(fds) } else { None };
                (handles, master, listener)
            }
            None => (None, None, None),
        };
        let handed_over = (handles.is_some() || !keep_handles)
            && (master.is_some() || !want_terminal)
            && (listener.is_some() || !want_listener);
        await_exec(pid, report_read, handed_over, plan)?;
        Ok(Running {
            pid,
            master,
            pipes,
            handles,
            proxy_listener: listener.map(std::net::TcpListener::from),
            limit_notes: enforcement.notes,
            cgroup: enforcement.cgroup,
            ended: (!keep_handles).then_some(parent_sock),
        })
    }
}
