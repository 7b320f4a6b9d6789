//! `pause` and `resume`: every process of an agent's sandbox stopped, and continued.
//!
//! The sandbox's processes are its init's descendants (orphans are re-parented to the init of
//! its pid namespace, so none leaves the tree) and the commands `exec` started in its PID
//! namespace (found by the namespace's inode, from the handles its supervisor keeps). Each is
//! sent SIGSTOP through a process descriptor opened and then checked against the start time
//! read together with the parent that placed it in the tree, so a pid reused by a process
//! outside the sandbox is never signalled. A process forked while the tree is being stopped
//! shows up in the next scan; the pause is done when a scan finds every process stopped.
//! Stopped processes use no CPU and keep their memory; their terminal output waits in the PTY.
//! `resume` continues every process of the sandbox, including any the agent had stopped itself
//! (job control), which a cgroup freezer would leave stopped. A paused agent is still live:
//! `kill`, `stop` and `restart` work on it (a stop resumes it first so that its command can
//! handle SIGTERM).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agentbox_core::AgentState;
use agentbox_store::{AgentRecord, Store};
use agentbox_sys::PidFd;
use nix::sys::signal::Signal;

use crate::agents;
use crate::error::{Error, Result};
use crate::home::Home;

/// How long a pause keeps scanning for processes that are not stopped yet before it gives up
/// (and continues the ones it stopped).
const SETTLE: Duration = Duration::from_secs(3);

/// A process as one read of its `/proc/PID/stat` saw it: parent, state letter (`R`, `S`, `T`,
/// `Z`...) and start time.
#[derive(Debug, Clone, Copy)]
struct Seen {
    ppid: i32,
    state: char,
    start: u64,
}

fn stat(pid: i32) -> Option<Seen> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Seen {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// What a scan looks for: the sandbox's init and, when known, its PID namespace (by inode), which
/// also holds the commands `exec` started there (their parent is the joining helper, outside).
#[derive(Debug, Clone, Copy)]
struct Sandbox {
    root: i32,
    pid_ns: Option<u64>,
}

impl Sandbox {
    fn of(rec: &AgentRecord) -> Result<Self> {
        let root = sandbox_root(rec)?;
        let pid_ns = agentbox_supervisor::sandbox_handles(&agents::state_dir(rec)).ok().and_then(|h| {
            let fd = h.namespace(nix::sched::CloneFlags::CLONE_NEWPID)?;
            nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
        });
        Ok(Self { root, pid_ns })
    }
}

/// Whether `pid` lives in the PID namespace with inode `ns`.
fn in_pid_ns(pid: i32, ns: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == ns)
}

/// The sandbox's processes: its init's descendants (itself included) and whatever else is in
/// its PID namespace, each as the one read of its stat that placed it there saw it, so the
/// start time a signal is later checked against comes from that same read.
fn scan(sandbox: Sandbox) -> Vec<(i32, Seen)> {
    let mut all: HashMap<i32, Seen> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            if let Some(seen) = stat(pid) {
                all.insert(pid, seen);
            }
        }
    }
    let root = sandbox.root;
    let mut out: Vec<(i32, Seen)> = all.get(&root).map(|s| (root, *s)).into_iter().collect();
    if let Some(ns) = sandbox.pid_ns {
        out.extend(all.iter().filter(|(p, _)| **p != root && in_pid_ns(**p, ns)).map(|(p, s)| (*p, *s)));
    }
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].0;
        let children: Vec<(i32, Seen)> = all
            .iter()
            .filter(|(p, s)| s.ppid == parent && !out.iter().any(|(o, _)| o == *p))
            .map(|(p, s)| (*p, *s))
            .collect();
        out.extend(children);
        i += 1;
    }
    out
}

/// Sends `signal` to `pid` if it is still the process that started at `start`. `Ok(false)`:
/// it has ended (or its pid is another process's now).
fn signal_if_same(pid: i32, start: u64, signal: Signal) -> Result<bool> {
    let fd = match PidFd::open(pid) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOSYS) => {
            return Err(Error::internal("this kernel has no pidfd_open (Linux 5.3+): pause needs it"))
        }
        Err(_) => return Ok(false),
    };
    // Opened first, checked second: if `pid` was reused before the open, the start time
    // differs; after the open, the descriptor keeps naming the process it was opened on.
    Ok(stat(pid).is_some_and(|s| s.start == start) && fd.signal(signal).is_ok())
}

fn sandbox_root(rec: &AgentRecord) -> Result<i32> {
    rec.sandbox_pid
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| Error::conflict(format!("agent '{}' has no sandbox process yet", rec.name)))
}

/// Stops every process below `root`; returns how many. On failure the ones stopped are
/// continued again.
fn stop_tree(sandbox: Sandbox) -> Result<usize> {
    let mut stopped: HashSet<(i32, u64)> = HashSet::new();
    let deadline = std::time::Instant::now() + SETTLE;
    let give_back = |stopped: &HashSet<(i32, u64)>| {
        for (pid, start) in stopped {
            let _ = signal_if_same(*pid, *start, Signal::SIGCONT);
        }
    };
    loop {
        let mut settled = true;
        for (pid, seen) in scan(sandbox) {
            let ours = stopped.contains(&(pid, seen.start));
            match seen.state {
                // Ended, or stopped by us: nothing left to do for it. One in uninterruptible
                // sleep (a vfork parent waiting for its child, which is stopped too) uses no CPU
                // and stops, with the SIGSTOP it has pending, before it runs any code of its own.
                'Z' | 'X' | 'x' => {}
                'T' | 't' | 'D' if ours => {}
                _ => {
                    settled = false;
                    if !ours {
                        match signal_if_same(pid, seen.start, Signal::SIGSTOP) {
                            Ok(true) => {
                                stopped.insert((pid, seen.start));
                            }
                            Ok(false) => {}
                            Err(e) => {
                                give_back(&stopped);
                                return Err(e);
                            }
                        }
                    }
                }
            }
        }
        if settled {
            return Ok(stopped.len());
        }
        if std::time::Instant::now() > deadline {
            give_back(&stopped);
            return Err(Error::conflict(
                "its processes did not all stop within 3 seconds (they kept starting new ones); it was left running",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Continues every process below `root`.
fn continue_tree(sandbox: Sandbox) -> Result<usize> {
    let mut n = 0;
    for (pid, seen) in scan(sandbox) {
        n += usize::from(signal_if_same(pid, seen.start, Signal::SIGCONT)?);
    }
    Ok(n)
}

/// Pauses a running agent: every process of its sandbox stopped, memory kept.
pub fn pause(home: &Home, store: &Store, name: &str) -> Result<AgentRecord> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    match rec.state {
        AgentState::Running => {}
        AgentState::Paused => return Err(Error::conflict(format!("agent '{name}' is paused already"))),
        other => {
            return Err(Error::conflict(format!("agent '{name}' is {other}: only a running agent pauses")))
        }
    }
    let sandbox = Sandbox::of(&rec)?;
    let n = stop_tree(sandbox)?;
    if let Err(e) = store.mark_paused(name, rec.generation, true, &format!("{n} processes stopped")) {
        // It ended (or was started again) meanwhile: what was stopped is let go.
        let _ = continue_tree(sandbox);
        return Err(e.into());
    }
    agents::get_for_change(store, name)
}

/// Resumes a paused agent.
pub fn resume(home: &Home, store: &Store, name: &str) -> Result<AgentRecord> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    if rec.state != AgentState::Paused {
        return Err(Error::conflict(format!("agent '{name}' is {}, not paused", rec.state)));
    }
    resume_locked(store, &rec)?;
    agents::get_for_change(store, name)
}

/// Runs `f` with a running agent's processes stopped (a consistent view of its files), and
/// continues them after; a paused or stopped agent is not touched. The caller holds its lock.
pub(crate) fn frozen<T>(rec: &AgentRecord, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if rec.state != AgentState::Running {
        return f();
    }
    let sandbox = Sandbox::of(rec)?;
    stop_tree(sandbox)?;
    let out = f();
    let _ = continue_tree(sandbox);
    out
}

/// [`resume`] of a paused agent, with its lock held (or by `stop`, which must let its command
/// run to handle SIGTERM).
pub(crate) fn resume_locked(store: &Store, rec: &AgentRecord) -> Result<()> {
    let n = continue_tree(Sandbox::of(rec)?)?;
    store.mark_paused(&rec.name, rec.generation, false, &format!("{n} processes continued"))?;
    Ok(())
}
