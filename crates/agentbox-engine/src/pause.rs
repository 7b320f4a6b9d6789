//! `pause` and `resume`: every process of an agent's sandbox stopped, and continued.
//!
//! The sandbox's processes are its init's descendants (orphans are re-parented to the init of
//! its pid namespace, so none leaves the tree). Each is sent SIGSTOP through a process
//! descriptor opened and then checked against the start time the scan saw, so a pid reused by
//! a process outside the sandbox is never signalled. A process forked while the tree is being
//! stopped shows up in the next scan; the pause is done when a scan finds every process stopped.
//! Stopped processes use no CPU and keep their memory; their terminal output waits in the PTY.
//! A paused agent is still live: `kill`, `stop` and `restart` work on it (a stop resumes it
//! first so that its command can handle SIGTERM).

use std::collections::HashSet;
use std::time::Duration;

use agentbox_core::AgentState;
use agentbox_store::{AgentRecord, Store};
use agentbox_sys::PidFd;
use nix::sys::signal::Signal;

use crate::agents;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::measure::{parents, tree};

/// How long a pause keeps scanning for processes that are not stopped yet before it gives up
/// (and continues the ones it stopped).
const SETTLE: Duration = Duration::from_secs(3);

/// A process as one scan saw it: its state letter (`R`, `S`, `T`, `Z`...) and start time.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.first()?.chars().next()?, fields.get(19)?.parse().ok()?))
}

/// Sends `signal` to `pid` if it is still the process that started at `start`.
fn signal_if_same(pid: i32, start: u64, signal: Signal) -> bool {
    let Ok(fd) = PidFd::open(pid) else { return false };
    // Opened first, checked second: if `pid` was reused before the open, the start time
    // differs; after the open, the descriptor keeps naming the process it was opened on.
    stat(pid).is_some_and(|(_, s)| s == start) && fd.signal(signal).is_ok()
}

fn sandbox_root(rec: &AgentRecord) -> Result<i32> {
    rec.sandbox_pid
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| Error::conflict(format!("agent '{}' has no sandbox process yet", rec.name)))
}

/// Stops every process below `root`; returns how many. On failure the ones stopped are
/// continued again.
fn stop_tree(root: i32) -> Result<usize> {
    let mut stopped: HashSet<(i32, u64)> = HashSet::new();
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let mut settled = true;
        for pid in tree(root, &parents()) {
            let Some((state, start)) = stat(pid) else { continue };
            let ours = stopped.contains(&(pid, start));
            match state {
                // Ended, or stopped by us: nothing left to do for it. One in uninterruptible
                // sleep (a vfork parent waiting for its child, which is stopped too) uses no CPU
                // and stops, with the SIGSTOP it has pending, before it runs any code of its own.
                'Z' | 'X' | 'x' => {}
                'T' | 't' | 'D' if ours => {}
                _ => {
                    settled = false;
                    if !ours && signal_if_same(pid, start, Signal::SIGSTOP) {
                        stopped.insert((pid, start));
                    }
                }
            }
        }
        if settled {
            return Ok(stopped.len());
        }
        if std::time::Instant::now() > deadline {
            for (pid, start) in &stopped {
                signal_if_same(*pid, *start, Signal::SIGCONT);
            }
            return Err(Error::conflict(
                "its processes did not all stop within 3 seconds (they kept starting new ones); it was left running",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Continues every process below `root`.
fn continue_tree(root: i32) -> usize {
    let mut n = 0;
    for pid in tree(root, &parents()) {
        if let Some((_, start)) = stat(pid) {
            n += usize::from(signal_if_same(pid, start, Signal::SIGCONT));
        }
    }
    n
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
    let root = sandbox_root(&rec)?;
    let n = stop_tree(root)?;
    if let Err(e) = store.mark_paused(name, rec.generation, true, &format!("{n} processes stopped")) {
        // It ended (or was started again) meanwhile: what was stopped is let go.
        continue_tree(root);
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

/// [`resume`] of a paused agent, with its lock held (or by `stop`, which must let its command
/// run to handle SIGTERM).
pub(crate) fn resume_locked(store: &Store, rec: &AgentRecord) -> Result<()> {
    let n = continue_tree(sandbox_root(rec)?);
    store.mark_paused(&rec.name, rec.generation, false, &format!("{n} processes continued"))?;
    Ok(())
}
