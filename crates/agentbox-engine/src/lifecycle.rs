//! An agent's life after spawn: kill, remove, restart, clone, rename, wait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_core::{validate_name, AgentState, HomeSpec, SandboxSpec};
use agentbox_store::{AgentRecord, NewAgent, Store};
use agentbox_supervisor::{paths, ClientError};

use crate::agents::{self, is_live_state, wait_finished};
use crate::error::{Context, Error, Result};
use crate::home::{private_dir, Home};
use crate::tree;
use crate::{bail, ensure};

/// Kills an agent and returns once its sandbox is gone. Killing a stopped agent changes nothing.
pub fn kill(store: &Store, name: &str) -> Result<AgentRecord> {
    let rec = agents::get_for_change(store, name)?;
    if !is_live_state(&rec.state) {
        return Ok(rec);
    }
    match agentbox_supervisor::kill_agent(&agents::state_dir(&rec)) {
        Ok(()) => {}
        // The supervisor vanished between the lookup and the request: refresh records that.
        Err(ClientError::NotRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match wait_finished(store, &rec.name, Some(Duration::from_secs(30)))? {
        Some(rec) => Ok(rec),
        None => bail!("agent '{}' did not stop within 30s", rec.name),
    }
}

/// Removes a stopped agent (workspace, home, log, record); `force` kills a running one first.
pub fn remove(store: &Store, name: &str, force: bool) -> Result<()> {
    let rec = agents::get_for_change(store, name)?;
    if is_live_state(&rec.state) {
        if !force {
            bail!(Error::conflict(format!(
                "agent '{name}' is running; stop it with `agentbox kill {name}` or use rm --force"
            )));
        }
        kill(store, name)?;
    }
    tree::remove_tree(&agents::state_dir(&rec))?;
    store.delete(&rec.name)?;
    Ok(())
}

/// Starts an agent again (killing it first if it runs) and replays its prompt.
pub fn restart(home: &Home, store: &Store, name: &str) -> Result<AgentRecord> {
    let rec = kill(store, name)?;
    let dir = agents::state_dir(&rec);
    let keys = match &rec.profile {
        Some(p) => crate::profiles::load(home, p)?.startup_keys.into_bytes(),
        None => Vec::new(),
    };
    store.mark_starting(&rec.name, "restart")?;
    if let Err(e) = crate::start::start_supervisor(home, &rec.name, &dir) {
        let _ = store.mark_finished(&rec.name, AgentState::Failed, None, &e.to_string());
        return Err(e);
    }
    crate::start::type_after_start(&dir, &keys, rec.prompt.as_deref())?;
    agents::get(store, name)
}

/// Replaces an agent's tags.
pub fn set_tags(store: &mut Store, name: &str, tags: &BTreeMap<String, String>) -> Result<AgentRecord> {
    validate_name(name)?;
    let mut pairs = Vec::new();
    for (k, v) in tags {
        pairs.push(agents::parse_tag(&format!("{k}={v}")).map_err(Error::invalid)?);
    }
    store.set_tags(name, &pairs)?;
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
    spec.hostname = name.to_string();
    spec
}

/// Copies an agent's workspace and home into a new, stopped agent `dst` (state `created`).
pub fn clone(home: &Home, store: &mut Store, src: &str, dst: &str) -> Result<AgentRecord> {
    validate_name(dst)?;
    let src = agents::get(store, src)?;
    if store.get(dst).is_ok() {
        return Err(agentbox_store::StoreError::Exists(dst.to_string()).into());
    }
    let spec = SandboxSpec::decode(&src.spec)?;
    let (src_dir, dst_dir) = (agents::state_dir(&src), home.agent_dir(dst));
    ensure!(
        !dst_dir.exists(),
        Error::conflict(format!("{} already exists; move it away first", dst_dir.display()))
    );
    let result = (|| -> Result<()> {
        private_dir(&dst_dir)?;
        tree::copy_for_agent(&spec.workspace, &paths::workspace(&dst_dir))?;
        match &spec.home {
            HomeSpec::Bind(h) => tree::copy_for_agent(h, &paths::home(&dst_dir))?,
            HomeSpec::Tmpfs => tree::agent_dir(&paths::home(&dst_dir))?,
        }
        let dst_dir_canon = std::fs::canonicalize(&dst_dir)?;
        let mut new_spec = moved_spec(spec.clone(), &src_dir, &dst_dir_canon, dst);
        // A workspace that was a host directory (--mount) is copied into the clone's own.
        let ws = paths::workspace(&dst_dir_canon);
        new_spec.workdir = rebase(&new_spec.workdir, &new_spec.workspace, &ws);
        new_spec.workspace = ws;
        new_spec.home = HomeSpec::Bind(paths::home(&dst_dir_canon));
        crate::diff::record_snapshot(&dst_dir, &new_spec.workspace)?;
        let spec_json = new_spec.encode()?;
        let state_dir = dst_dir.to_string_lossy();
        store.create_agent(&NewAgent {
            name: dst,
            spec_json: &spec_json,
            state_dir: &state_dir,
            tags: &src.tags,
            profile: src.profile.as_deref(),
            prompt: src.prompt.as_deref(),
            state: Some(AgentState::Created),
            restart: src.restart.as_deref(),
        })?;
        store.record(dst, "clone", &format!("from {}", src.name))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = tree::remove_tree(&dst_dir);
        return Err(e);
    }
    agents::get(store, dst)
}

/// Renames a stopped agent (its state directory moves with it).
pub fn rename(home: &Home, store: &mut Store, old: &str, new: &str) -> Result<AgentRecord> {
    validate_name(new)?;
    let rec = agents::get_for_change(store, old)?;
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
