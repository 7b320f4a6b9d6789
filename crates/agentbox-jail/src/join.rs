//! Running another command inside a running sandbox (`agentbox exec`), like `docker exec`.
//!
//! 1. Check that the pid is a sandbox init (its command line is `agentbox-init`), open its
//!    namespaces and root directory, compile the same seccomp filter.
//! 2. Fork a helper; move it into the sandbox's cgroup (its limits apply to the new command too);
//!    send "go".
//! 3. The helper joins the user namespace, then mount, IPC, UTS, network, cgroup and PID; chroots
//!    into the sandbox root; applies the same Landlock, capability and seccomp restrictions; forks
//!    the command into the sandbox's PID namespace and reaps it.
//!
//! The command dies with the sandbox: it is in the sandbox's PID namespace.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigmaskHow, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use agentbox_sys::{fork_process, Child};

use crate::child::{self, ChildContext, Join, PtyRequest};
use crate::launch::{handled_signals, receive_master, Running, Stdio};
use crate::plan::Plan;
use crate::wire;
use crate::JailError;

const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
];

/// The cgroup directories a process is in, if agentbox created them (`agentbox-*`).
fn agentbox_cgroups(pid: Pid) -> Vec<PathBuf> {
    let mounts = crate::limits::parse_cgroup_mounts(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    let theirs = crate::limits::parse_proc_cgroup(
        &std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default(),
    );
    let mut dirs = Vec::new();
    for (ctrls, path) in theirs {
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agentbox-")) {
            continue;
        }
        let mount = mounts.iter().find(|m| {
            if ctrls.is_empty() {
                m.v2
            } else {
                !m.v2 && ctrls.iter().all(|c| m.controllers.contains(c))
            }
        });
        if let Some(m) = mount {
            if let Ok(rel) = path.strip_prefix(&m.root) {
                let dir = m.mount_point.join(rel);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

/// Starts `plan.process` inside the running sandbox whose init is `init`.
pub fn exec_in(init: Pid, plan: &Plan, stdio: Stdio) -> Result<Running, JailError> {
    let proc = Path::new("/proc").join(init.to_string());
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    if !cmdline.starts_with(b"agentbox-init\0") {
        return Err(JailError::Setup {
            step: "find the sandbox".into(),
            message: format!("process {init} is not a running sandbox"),
        });
    }
    let open = |p: PathBuf, flags: OFlag| {
        nix::fcntl::open(&p, flags | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| JailError::OpenSource { path: p, source: e })
    };
    let mut namespaces: Vec<(OwnedFd, CloneFlags)> = Vec::new();
    for (name, kind) in NAMESPACES {
        namespaces.push((open(proc.join("ns").join(name), OFlag::O_RDONLY)?, kind));
    }
    let root = open(proc.join("root"), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let seccomp = plan.seccomp.compile()?;
    let first = plan.process.argv.first().ok_or(agentbox_core::SpecError::NoCommand)?;
    let (argv, envp) = child::c_strings(&plan.process.argv, &plan.process.env).map_err(|reason| {
        JailError::Exec { command: first.to_string_lossy().into(), reason, not_found: false }
    })?;
    let program = argv[0].clone();
    let cgroups = agentbox_cgroups(init);

    let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(JailError::sys("pipe"))?;
    let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(JailError::sys("pipe"))?;
    let (pty, parent_sock) = match stdio {
        Stdio::Inherit => (None, None),
        Stdio::Pty { size, termios } => {
            let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
                .map_err(JailError::sys("socketpair"))?;
            (Some(PtyRequest { sock: b, size, termios }), Some(a))
        }
    };
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)
        .map_err(JailError::sys("block signals"))?;
    let pid = match fork_process().map_err(JailError::sys("fork"))? {
        Child::Child => child::join_main(
            ChildContext {
                plan,
                go: go_read,
                report: report_write,
                pty,
                seccomp: &seccomp,
                rlimits: &[],
                program,
                argv,
                envp,
            },
            Join { namespaces, root },
        ),
        Child::Parent(pid) => pid,
    };
    drop((go_read, report_write, pty, namespaces, root));
    let abort = |e: JailError| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    for dir in &cgroups {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|e| {
            abort(JailError::Limits(format!(
                "cannot join the sandbox's cgroup {} (its limits must apply): {e}",
                dir.display()
            )))
        })?;
    }
    nix::unistd::write(&go_write, b"g").map_err(|e| abort(JailError::sys("start")(e)))?;
    drop(go_write);
    let master = match &parent_sock {
        Some(sock) => receive_master(sock).map_err(abort)?,
        None => None,
    };
    match wire::read_outcome(report_read) {
        Ok(None) => {}
        Ok(Some(f)) => {
            let _ = waitpid(pid, None);
            return Err(crate::launch::failure_to_error(f, plan));
        }
        Err(source) => return Err(abort(JailError::Io { what: "read the setup report", source })),
    }
    Ok(Running { pid, master, limit_notes: vec![], cgroup: None })
}
