//! Running another command inside a running sandbox (`agentbox exec`), like `docker exec`.
//!
//! 1. Take the sandbox's handles (namespaces and root, handed over by its init at start), compile
//!    the same seccomp filter.
//! 2. Fork a helper inside the sandbox's v2 cgroup, if it has one, and move it into its other
//!    cgroup directories (its limits apply to the new command too); send "go".
//! 3. The helper joins the user namespace, then mount, IPC, UTS, network, cgroup and PID; chroots
//!    into the sandbox root; applies the same Landlock, capability and seccomp restrictions; forks
//!    the command into the sandbox's PID namespace and reaps it.
//!
//! The command dies with the sandbox: it is in the sandbox's PID namespace.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use agentbox_sys::{clone_process_into, fork_process, Child, SingleThreaded};

use crate::child::{self, ChildContext, Join};
use crate::handles::SandboxHandles;
use crate::launch::{await_exec, handled_signals, receive_fds, Channels, Running, Stdio};
use crate::limits::sandbox_cgroups;
use crate::plan::Plan;
use crate::JailError;

/// Starts `plan.process` inside the running sandbox behind `handles`, whose init is `init` (its
/// pid tells which cgroup the sandbox is in).
pub fn exec_in(init: Pid, handles: SandboxHandles, plan: &Plan, stdio: Stdio) -> Result<Running, JailError> {
    let SandboxHandles { namespaces, root } = handles;
    let seccomp = plan.seccomp.compile()?;
    let first = plan.process.argv.first().ok_or(agentbox_core::SpecError::NoCommand)?;
    let (argv, envp) = child::c_strings(&plan.process.argv, &plan.process.env).map_err(|reason| {
        JailError::Exec { command: first.to_string_lossy().into(), reason, not_found: false }
    })?;
    let program = argv[0].clone();
    let mut cgroups: Vec<PathBuf> = Vec::new();
    let mut v2: Option<PathBuf> = None;
    for c in sandbox_cgroups(init) {
        if c.v2 {
            v2 = Some(c.dir.clone());
        }
        if !cgroups.contains(&c.dir) {
            cgroups.push(c.dir);
        }
    }
    // The helper starts inside the sandbox's v2 cgroup when it has one (no move: see
    // `clone_process_into`); the other directories are joined by writing its pid.
    let entry = v2.as_ref().and_then(|d| std::fs::File::open(d).ok()).map(OwnedFd::from);

    let Channels { go_tx, go_rx, report_read, report_write, parent_sock, handoff } = Channels::new()?;
    let (pty, child_pipes, pipes) = stdio.split()?;
    let want_terminal = pty.is_some();

    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)
        .map_err(JailError::sys("block signals"))?;
    let one = SingleThreaded::check().map_err(JailError::Threads)?;
    let (child, entered) =
        match entry.as_ref().map(|fd| clone_process_into(&one, CloneFlags::empty(), fd.as_fd())) {
            Some(Ok(child)) => (child, v2.as_deref()),
            _ => (fork_process(&one).map_err(JailError::sys("fork"))?, None),
        };
    let pid = match child {
        Child::Child => child::join_main(
            ChildContext {
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
                want_handles: false,
                switch_ids: nix::unistd::geteuid().as_raw() != plan.host_uid,
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
    drop((go_rx, report_write, pty, handoff, namespaces, root, child_pipes, entry));
    let abort = |e: JailError| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    for dir in cgroups.iter().filter(|d| Some(d.as_path()) != entered) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|e| {
            abort(JailError::Limits(format!(
                "cannot join the sandbox's cgroup {} (its limits must apply): {e}",
                dir.display()
            )))
        })?;
    }
    go_tx.send().map_err(|e| abort(JailError::sys("start")(e)))?;
    let master = if want_terminal {
        match receive_fds(&parent_sock, 1).map_err(abort)? {
            Some((child::HANDOFF_TERMINAL, mut fds)) => fds.pop(),
            _ => None,
        }
    } else {
        None
    };
    await_exec(pid, report_read, master.is_some() || !want_terminal, plan)?;
    Ok(Running {
        pid,
        master,
        pipes,
        handles: None,
        proxy_listener: None,
        limit_notes: vec![],
        cgroup: None,
        ended: None,
    })
}
