//! `pause` and `resume`: every process of an agent's sandbox frozen, and thawed.
//!
//! The freezing itself is the jail's ([`agentbox_jail::freeze`]): the sandbox's freezer cgroup
//! where it has one, SIGSTOP to each process otherwise; a VM's guest is stopped through QEMU's
//! monitor instead ([`agentbox_supervisor::pause_sandbox`]). Here is the agent's side: its lock, its
//! state (`paused` in the store, journalled with how it was done), and which runs may be paused.
//! A paused agent is still live: `kill`, `stop` and `restart` work on it (a stop resumes it first
//! so that its command can handle SIGTERM). An agent's own supervisor pauses it too when it has
//! been idle for `pause --after` (see `agentbox_supervisor`), under the same lock.

use std::time::Duration;

use agentbox_core::{AgentState, SandboxSpec};
use agentbox_jail::SandboxTree;
use agentbox_store::{AgentRecord, Store};

use crate::agents;
use crate::error::{Error, Result};
use crate::home::Home;

/// Whether `rec` runs in a VM (paused through QEMU's monitor).
fn is_vm(rec: &AgentRecord) -> bool {
    SandboxSpec::decode(&rec.spec).is_ok_and(|s| s.backend == agentbox_core::Backend::Vm)
}

/// The running sandbox of `rec`, as the jail freezes it.
fn tree_of(rec: &AgentRecord) -> Result<SandboxTree> {
    let root = rec
        .sandbox_pid
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| Error::conflict(format!("agent '{}' has no sandbox process yet", rec.name)))?;
    Ok(agentbox_supervisor::sandbox_tree(&agents::state_dir(rec), nix::unistd::Pid::from_raw(root)))
}

/// Pauses a running agent: every process of its sandbox frozen, memory kept.
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
    let tree = tree_of(&rec)?;
    let vm = is_vm(&rec);
    let how = agentbox_supervisor::pause_sandbox(tree, vm)?;
    if let Err(e) = store.mark_paused(name, rec.generation, true, &how) {
        // It ended (or was started again) meanwhile: what was paused is let go.
        let _ = agentbox_supervisor::resume_sandbox(tree, vm);
        return Err(e.into());
    }
    agents::get_for_change(store, name)
}

/// `pause --after`: the agent's supervisor pauses it once it has been idle (no output, no input)
/// for `after`, and input resumes it; `None` turns that off. Kept in its spec, so that its later
/// starts do the same; a stopped agent gets it from its next start.
pub fn when_idle(home: &Home, store: &Store, name: &str, after: Option<Duration>) -> Result<AgentRecord> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    if rec.state == AgentState::Creating {
        return Err(Error::conflict(format!("agent '{name}' is being created")));
    }
    let mut spec = SandboxSpec::decode(&rec.spec)?;
    spec.pause_after = after;
    if agents::is_live_state(&rec.state) {
        agentbox_supervisor::pause_after(&agents::state_dir(&rec), after)?;
    }
    store.set_spec(name, &spec.encode()?)?;
    crate::recovery::save(store, name);
    let detail = match after {
        Some(d) => format!("pause when idle for {}s; input resumes it", d.as_secs()),
        None => "never paused for idleness".to_string(),
    };
    store.record(name, "pause-after", &detail)?;
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

/// Runs `f` with a running agent's processes frozen (a consistent view of its files), and thaws
/// them after; a paused or stopped agent is not touched. The caller holds its lock.
pub(crate) fn frozen<T>(rec: &AgentRecord, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if rec.state != AgentState::Running {
        return f();
    }
    let (tree, vm) = (tree_of(rec)?, is_vm(rec));
    agentbox_supervisor::pause_sandbox(tree, vm)?;
    let out = f();
    let _ = agentbox_supervisor::resume_sandbox(tree, vm);
    out
}

/// [`resume`] of a paused agent, with its lock held (or by `stop`, which must let its command
/// run to handle SIGTERM).
pub(crate) fn resume_locked(store: &Store, rec: &AgentRecord) -> Result<()> {
    let how = agentbox_supervisor::resume_sandbox(tree_of(rec)?, is_vm(rec))?;
    store.mark_paused(&rec.name, rec.generation, false, &how)?;
    Ok(())
}
