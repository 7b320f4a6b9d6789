//! An agent's life after spawn: kill, remove, restart, clone, rename, wait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_core::{validate_name, AgentState, HomeSpec, SandboxSpec};
use agentbox_store::{AgentRecord, NewAgent, Store};
use agentbox_supervisor::{paths, ClientError};

use crate::agents::{self, is_live_state, wait_finished};
use crate::error::{Context, Error, Result};
use crate::home::Home;
use crate::tree;
use crate::{bail, ensure};

/// Kills an agent and returns once its sandbox is gone. Killing a stopped agent changes nothing.
pub fn kill(home: &Home, store: &Store, name: &str) -> Result<AgentRecord> {
    let _turn = agents::lock(home, name)?;
    kill_locked(store, name)
}

/// [`kill`], with the agent's lock held.
pub(crate) fn kill_locked(store: &Store, name: &str) -> Result<AgentRecord> {
    let rec = agents::get_for_change(store, name)?;
    if !is_live_state(&rec.state) {
        return Ok(rec);
    }
    match agentbox_supervisor::kill_agent(&agents::state_dir(&rec)) {
        Ok(()) => {}
        // No supervisor answers: one that is still starting finds the agent killed and stops
        // its sandbox (its start is conditional); one that vanished is recorded as failed by
        // the wait below.
        Err(ClientError::NotRunning(_)) if rec.state == AgentState::Starting => {
            match store.mark_finished(
                &rec.name,
                Some(rec.generation),
                AgentState::Killed,
                None,
                "killed while starting",
            ) {
                Ok(())
                | Err(
                    agentbox_store::StoreError::WrongState { .. }
                    | agentbox_store::StoreError::Superseded { .. },
                ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::NotRunning(_)) => {}
        // The supervisor does not answer (stopped, stuck): its sandbox is killed directly, then
        // the supervisor itself, and the end is recorded here.
        Err(ClientError::Timeout(_)) => {
            use nix::sys::signal::{kill, Signal::SIGKILL};
            use nix::unistd::Pid;
            if agents::supervisor_alive(&rec) {
                if let Some(p) = rec.sandbox_pid {
                    // The supervisor's unreaped child: the pid cannot have been reused.
                    let _ = kill(Pid::from_raw(p as i32), SIGKILL);
                    agentbox_jail::thaw_for_kill(Pid::from_raw(p as i32));
                }
                if let Some(p) = rec.supervisor_pid {
                    let _ = kill(Pid::from_raw(p as i32), SIGKILL);
                }
            }
            match store.mark_finished(
                &rec.name,
                Some(rec.generation),
                AgentState::Killed,
                None,
                "killed directly: its supervisor did not answer",
            ) {
                Ok(())
                | Err(
                    agentbox_store::StoreError::WrongState { .. }
                    | agentbox_store::StoreError::Superseded { .. },
                ) => {}
                Err(e) => return Err(e.into()),
            }
            return agents::get_for_change(store, name);
        }
        Err(e) => return Err(e.into()),
    }
    match wait_finished(store, &rec.name, Some(Duration::from_secs(30)))? {
        // A supervisor that vanished is recorded as failed, not only shown so.
        Some(_) => agents::get_for_change(store, name),
        None => bail!("agent '{}' did not stop within 30s", rec.name),
    }
}

/// Asks a running agent to end, as `docker stop` does: SIGTERM to its command's process group,
/// up to `grace` to finish, then the sandbox is killed. An agent that ends this way is not
/// restarted by its restart policy (the journal's `stop` says it was asked to).
pub fn stop(home: &Home, store: &Store, name: &str, grace: Duration) -> Result<AgentRecord> {
    match ask_to_stop(store, name, grace)? {
        StopAsked::Ended(rec) => Ok(rec),
        StopAsked::Asked(rec) => end_stop(home, store, &rec, grace),
    }
}

/// What [`ask_to_stop`] found.
#[derive(Debug)]
pub enum StopAsked {
    /// It was not running.
    Ended(AgentRecord),
    /// SIGTERM was sent to this run of it.
    Asked(AgentRecord),
}

/// The first half of [`stop`]: journals the stop and sends SIGTERM.
pub fn ask_to_stop(store: &Store, name: &str, grace: Duration) -> Result<StopAsked> {
    let rec = agents::get_for_change(store, name)?;
    refuse_creating(&rec)?;
    if !is_live_state(&rec.state) {
        // Between a crash and its restart (`--restart`): the restart is called off.
        if rec.restart.is_some() && rec.state == AgentState::Exited {
            store.record(name, "stop", "while waiting to be restarted: not restarted")?;
        }
        return Ok(StopAsked::Ended(rec));
    }
    store.record(name, "stop", &format!("SIGTERM, killed after {}s if still running", grace.as_secs()))?;
    // A paused command could not handle SIGTERM: it runs again to get it.
    // (A resume that races this one, or fails, still leaves the kill after the grace.)
    if rec.state == AgentState::Paused {
        let _ = crate::pause::resume_locked(store, &rec);
    }
    // A supervisor that does not answer is dealt with by the kill at the end.
    let _ = agentbox_supervisor::terminate_agent(&agents::state_dir(&rec));
    Ok(StopAsked::Asked(rec))
}

/// The second half of [`stop`]: waits up to `wait` for the run that was asked to end, then kills
/// it (unless it was started again meanwhile).
pub fn end_stop(home: &Home, store: &Store, asked: &AgentRecord, wait: Duration) -> Result<AgentRecord> {
    if let Some(done) = wait_stopped(store, asked, wait)? {
        return Ok(done);
    }
    let now = agents::get(store, &asked.name)?;
    if now.generation != asked.generation {
        return Ok(now);
    }
    kill(home, store, &asked.name)
}

/// Waits up to `wait` for the run that was asked to end; `None` if it still runs (nothing is
/// killed here).
pub fn wait_stopped(store: &Store, asked: &AgentRecord, wait: Duration) -> Result<Option<AgentRecord>> {
    if let Some(done) = wait_finished(store, &asked.name, Some(wait))? {
        return Ok(Some(done));
    }
    let now = agents::get(store, &asked.name)?;
    Ok((now.generation != asked.generation).then_some(now))
}

/// Whether the agent's current run was asked to stop (`stop` journals it before it asks).
pub fn stop_requested(store: &Store, rec: &AgentRecord) -> Result<bool> {
    let since = rec.started_at.unwrap_or(rec.created_at);
    Ok(store.events_of(&rec.name, 20)?.iter().any(|e| e.event == "stop" && e.at >= since))
}

/// A name being created refuses what only a made agent allows.
fn refuse_creating(rec: &AgentRecord) -> Result<()> {
    match rec.state {
        AgentState::Creating => Err(Error::conflict(format!("agent '{}' is being created", rec.name))),
        _ => Ok(()),
    }
}

/// Removes a stopped agent (workspace, home, log, record); `force` kills a running one first. A
/// name whose spawn died while it was being created is removed too.
pub fn remove(home: &Home, store: &Store, name: &str, force: bool) -> Result<()> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    if agents::is_dead_claim(&rec) {
        tree::remove_tree(&agents::state_dir(&rec))?;
        store.release_claim(name, rec.owner.as_deref().unwrap_or_default())?;
        store.record(name, "rm", "the spawn that claimed the name died")?;
        return Ok(());
    }
    refuse_creating(&rec)?;
    if is_live_state(&rec.state) {
        if !force {
            bail!(Error::conflict(format!(
                "agent '{name}' is running; stop it with `agentbox kill {name}` or use rm --force"
            )));
        }
        kill_locked(store, name)?;
    }
    tree::remove_tree(&agents::state_dir(&rec))?;
    store.delete(&rec.name)?;
    Ok(())
}

/// Starts an agent again (killing it first if it runs) and replays its prompt.
pub fn restart(home: &Home, store: &Store, name: &str) -> Result<AgentRecord> {
    let _turn = agents::lock(home, name)?;
    let rec = kill_locked(store, name)?;
    start_locked(home, store, &rec, "restart")
}

/// Starts an agent that is not running, with its lock held, and replays its prompt.
pub(crate) fn start_locked(home: &Home, store: &Store, rec: &AgentRecord, why: &str) -> Result<AgentRecord> {
    let name = rec.name.as_str();
    refuse_creating(rec)?;
    let dir = agents::state_dir(rec);
    let keys = match &rec.profile {
        Some(p) => crate::profiles::load(home, p)?.startup_keys.into_bytes(),
        None => Vec::new(),
    };
    let publish = SandboxSpec::decode(&rec.spec).map(|s| s.publish).unwrap_or_default();
    let generation = store.mark_starting(&rec.name, why)?;
    if let Err(e) = crate::start::start_supervisor(home, &rec.name, &dir, &publish, None) {
        let _ = store.mark_finished(&rec.name, Some(generation), AgentState::Failed, None, &e.to_string());
        return Err(e);
    }
    crate::start::type_after_start(&dir, &keys, rec.prompt.as_deref())?;
    agents::get(store, name)
}

/// What crashes left in `AGENTBOX_HOME`: names claimed by spawns that died, and agent
/// directories no agent owns.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    pub dead_claims: Vec<String>,
    pub orphan_dirs: Vec<PathBuf>,
}

pub fn leftovers(home: &Home, store: &Store) -> Result<Leftovers> {
    // Directories first, rows second: a spawn claims its name before it makes its directory, so
    // a directory seen here whose row is missing afterwards belongs to no spawn.
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(home.root.join("agents"))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    let rows = store.list()?;
    let owned: std::collections::HashSet<PathBuf> = rows.iter().map(agents::state_dir).collect();
    Ok(Leftovers {
        dead_claims: rows.iter().filter(|r| agents::is_dead_claim(r)).map(|r| r.name.clone()).collect(),
        orphan_dirs: dirs.into_iter().filter(|d| !owned.contains(d)).collect(),
    })
}

/// Removes every stopped agent and what crashes left behind; returns what it removed (agent
/// names, and the paths of orphan directories).
pub fn clean(home: &Home, store: &Store) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let left = leftovers(home, store)?;
    for dir in &left.orphan_dirs {
        tree::remove_tree(dir)?;
        removed.push(dir.display().to_string());
    }
    for rec in agents::all(store)? {
        let stopped = !is_live_state(&rec.state) && rec.state != AgentState::Creating;
        if stopped || left.dead_claims.contains(&rec.name) {
            match remove(home, store, &rec.name, false) {
                Ok(()) => removed.push(rec.name),
                // Started again or removed meanwhile: not stopped any more.
                Err(e) if matches!(e.kind(), crate::Kind::Conflict | crate::Kind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Replaces an agent's tags.
pub fn set_tags(store: &mut Store, name: &str, tags: &BTreeMap<String, String>) -> Result<AgentRecord> {
    validate_name(name)?;
    let mut pairs = Vec::new();
    for (k, v) in tags {
        pairs.push(agents::parse_tag(&format!("{k}={v}")).map_err(Error::invalid)?);
    }
    crate::spawn::check_tags(&pairs)?;
    store.set_tags(name, &pairs)?;
    crate::recovery::save(store, name);
    agents::get(store, name)
}

/// `p` with the prefix `from` replaced by `to` (unchanged when it is not under `from`).
fn rebase(p: &Path, from: &Path, to: &Path) -> PathBuf {
    match p.strip_prefix(from) {
        Ok(rest) => to.join(rest),
        Err(_) => p.to_path_buf(),
    }
}

/// The spec of an agent whose state directory moved from `from` to `to`, named `name`.
fn moved_spec(mut spec: SandboxSpec, from: &Path, to: &Path, name: &str) -> SandboxSpec {
    let old_ws = spec.workspace.clone();
    spec.workspace = rebase(&spec.workspace, from, to);
    spec.workdir = rebase(&spec.workdir, &old_ws, &spec.workspace);
    if let HomeSpec::Bind(h) = &spec.home {
        spec.home = HomeSpec::Bind(rebase(h, from, to));
    }
    for m in &mut spec.mounts {
        m.source = rebase(&m.source, from, to);
    }
    if let Some(o) = &mut spec.overlay {
        o.upper = rebase(&o.upper, from, to);
        o.work = rebase(&o.work, from, to);
    }
    spec.hostname = name.to_string();
    spec
}

/// Copies an agent's workspace and home into a new, stopped agent `dst` (state `created`).
pub fn clone(home: &Home, store: &Store, src: &str, dst: &str) -> Result<AgentRecord> {
    fork(home, store, src, dst, None, true)
}

/// A new agent `dst` from `src`: its workspace, home and spec, as they are now (a running agent
/// is frozen for the copy) or as checkpoint `at` saved them. It starts, as a spawn would, unless
/// `stopped`. An overlay workspace's fork is an overlay on the same directory with a copy of
/// the upper layer, so it costs what the agent changed, and applies back to the same place.
pub fn fork(
    home: &Home,
    store: &Store,
    src: &str,
    dst: &str,
    at: Option<&str>,
    stopped: bool,
) -> Result<AgentRecord> {
    validate_name(dst)?;
    let _turn = agents::lock(home, src)?;
    let src = agents::get_for_change(store, src)?;
    refuse_creating(&src)?;
    let spec = SandboxSpec::decode(&src.spec)?;
    let (src_dir, dst_dir) = (agents::state_dir(&src), home.agent_dir(dst));
    let saved = at.map(|id| crate::workspace::checkpoint::saved_dirs(&src, id)).transpose()?;
    // Claimed first, as a spawn does: the fork's directory is its own.
    let owner = agents::me();
    crate::spawn::claim(store, dst, &dst_dir, &owner)?;
    let result = (|| -> Result<()> {
        crate::spawn::make_dir(&dst_dir)?;
        let dst_dir_canon = std::fs::canonicalize(&dst_dir)?;
        let mut new_spec = moved_spec(spec.clone(), &src_dir, &dst_dir_canon, dst);
        let ws = paths::workspace(&dst_dir_canon);
        new_spec.workdir = rebase(&new_spec.workdir, &new_spec.workspace, &ws);
        new_spec.workspace = ws.clone();
        new_spec.home = HomeSpec::Bind(paths::home(&dst_dir_canon));
        // Where the copied layer goes: the new overlay's upper layer, or the workspace.
        let layer_to = match &spec.overlay {
            Some(o) => {
                tree::agent_dir(&ws)?;
                let made = crate::workspace::overlay::make(&dst_dir_canon, &o.lower)?;
                tree::remove_tree(&made.upper)?;
                let to = made.upper.clone();
                new_spec.overlay = Some(made);
                to
            }
            None => ws.clone(),
        };
        let copy = || -> Result<()> {
            match (&saved, &spec.overlay) {
                (Some((_, layer, home_saved)), _) => {
                    crate::workspace::checkpoint::lay(layer, &layer_to)?;
                    match home_saved.exists() {
                        true => crate::workspace::checkpoint::lay(home_saved, &paths::home(&dst_dir))?,
                        false => tree::agent_dir(&paths::home(&dst_dir))?,
                    }
                    return Ok(());
                }
                (None, Some(o)) => crate::workspace::checkpoint::lay(&o.upper, &layer_to)?,
                // A workspace agentbox made is laid as it is; a host directory given as the
                // workspace (--workspace) is copied into the fork's own.
                (None, None)
                    if spec.workspace.starts_with(&src_dir)
                        || std::fs::canonicalize(&src_dir).is_ok_and(|d| spec.workspace.starts_with(d)) =>
                {
                    crate::workspace::checkpoint::lay(&spec.workspace, &layer_to)?
                }
                (None, None) => tree::copy_for_agent(&spec.workspace, &layer_to)?,
            }
            match &spec.home {
                HomeSpec::Bind(h) => crate::workspace::checkpoint::lay(h, &paths::home(&dst_dir))?,
                HomeSpec::Tmpfs => tree::agent_dir(&paths::home(&dst_dir))?,
            }
            Ok(())
        };
        crate::pause::frozen(&src, copy)?;
        // What the source knew of its workspace's beginnings holds for the fork: diff and
        // apply compare with the same start.
        for f in [crate::diff::SNAPSHOT_FILE, crate::workspace::origin::FILE] {
            if src_dir.join(f).exists() {
                std::fs::copy(src_dir.join(f), dst_dir.join(f))?;
            }
        }
        if !dst_dir.join(crate::diff::SNAPSHOT_FILE).exists() && new_spec.overlay.is_none() {
            crate::diff::record_snapshot(&dst_dir, &new_spec.workspace)?;
        }
        let spec_json = new_spec.encode()?;
        let state_dir = dst_dir.to_string_lossy();
        store.fill_claim(
            &NewAgent {
                name: dst,
                spec_json: &spec_json,
                state_dir: &state_dir,
                tags: &src.tags,
                profile: src.profile.as_deref(),
                prompt: src.prompt.as_deref(),
                state: Some(AgentState::Created),
                restart: src.restart.as_deref(),
            },
            &owner,
        )?;
        let from = match &saved {
            Some((n, _, _)) => format!("from {} at checkpoint {n}", src.name),
            None => format!("from {}", src.name),
        };
        store.record(dst, if stopped { "clone" } else { "fork" }, &from)?;
        crate::recovery::save(store, dst);
        Ok(())
    })();
    if let Err(e) = result {
        let _ = tree::remove_tree(&dst_dir);
        let _ = store.release_claim(dst, &owner);
        return Err(e);
    }
    drop(_turn);
    if stopped {
        return agents::get(store, dst);
    }
    let _new_turn = agents::lock(home, dst)?;
    let rec = agents::get_for_change(store, dst)?;
    start_locked(home, store, &rec, "fork")
}

/// Renames a stopped agent (its state directory moves with it).
pub fn rename(home: &Home, store: &mut Store, old: &str, new: &str) -> Result<AgentRecord> {
    validate_name(new)?;
    let _turn = agents::lock(home, old)?;
    let rec = agents::get_for_change(store, old)?;
    refuse_creating(&rec)?;
    if is_live_state(&rec.state) {
        bail!(Error::conflict(format!(
            "agent '{}' is running; stop it with `agentbox kill {}` first",
            rec.name, rec.name
        )));
    }
    if store.get(new).is_ok() {
        return Err(agentbox_store::StoreError::Exists(new.to_string()).into());
    }
    let (from, to) = (agents::state_dir(&rec), home.agent_dir(new));
    ensure!(!to.exists(), Error::conflict(format!("{} already exists; move it away first", to.display())));
    let spec = SandboxSpec::decode(&rec.spec)?;
    let from_canon = std::fs::canonicalize(&from).unwrap_or(from.clone());
    std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    let to_canon = std::fs::canonicalize(&to).unwrap_or(to.clone());
    let new_spec = moved_spec(spec, &from_canon, &to_canon, new);
    if let Err(e) = store.rename(&rec.name, new, &new_spec.encode()?, &to.to_string_lossy()) {
        let _ = std::fs::rename(&to, &from);
        return Err(e.into());
    }
    crate::recovery::save(store, new);
    agents::get(store, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebasing() {
        assert_eq!(
            rebase(Path::new("/h/agents/a/workspace/x"), Path::new("/h/agents/a"), Path::new("/h/agents/b")),
            PathBuf::from("/h/agents/b/workspace/x")
        );
        assert_eq!(
            rebase(Path::new("/srv/proj"), Path::new("/h/agents/a"), Path::new("/h/agents/b")),
            PathBuf::from("/srv/proj")
        );
    }
}
