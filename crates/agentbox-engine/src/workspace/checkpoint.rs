//! Checkpoints: saved states of an agent's workspace and home, to roll back to or fork from.
//!
//! A checkpoint is a directory in the agent's state (`checkpoints/ID/`) with a copy of the
//! workspace's own layer (an overlay's upper layer: only what the agent changed; a copied
//! workspace: all of it) and of its home, made by [`super::layer::copy`]: files unchanged since
//! the previous checkpoint are hard links to it, so a checkpoint costs what changed since the
//! last one. A running agent's processes are stopped while the copy is made, so it is one
//! instant of the agent's files. Checkpoints live and die with the agent's state directory.

use std::path::{Path, PathBuf};

use agentbox_core::{AgentState, HomeSpec, SandboxSpec};
use agentbox_store::{AgentRecord, Store};
use serde::{Deserialize, Serialize};

use super::layer::{self, Copied, Previous, Stamps};
use crate::error::{Context, Error, Result};
use crate::home::Home;
use crate::{agents, bail, tree};

const DIR: &str = "checkpoints";
const META: &str = "checkpoint.json";
const LAYER: &str = "workspace";
const HOME: &str = "home";

/// One checkpoint, as `checkpoints NAME` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The agent's own numbering: 1, 2, 3...
    pub id: u32,
    pub message: String,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Entries in the saved workspace layer and home.
    pub entries: u64,
    /// Bytes of file data this checkpoint wrote (files unchanged since the previous one are
    /// shared with it and write none).
    pub bytes: u64,
    /// Files shared with the previous checkpoint.
    pub shared: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    info: Checkpoint,
    workspace: Stamps,
    home: Stamps,
}

fn root(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

/// The directory an agent's workspace layer lives in, which checkpoints save and rollback
/// replaces: an overlay's upper layer, or a workspace agentbox made. A host directory given
/// as the workspace itself (`--workspace DIR`) is the person's, not agentbox's to roll back.
fn layer_dir(state_dir: &Path, spec: &SandboxSpec) -> Result<PathBuf> {
    if let Some(o) = &spec.overlay {
        return Ok(o.upper.clone());
    }
    if spec.workspace.starts_with(state_dir)
        || std::fs::canonicalize(state_dir).is_ok_and(|d| spec.workspace.starts_with(d))
    {
        return Ok(spec.workspace.clone());
    }
    bail!(Error::conflict(format!(
        "the workspace is the host directory {} itself; checkpoints cover workspaces agentbox made \
         (spawn with --from-dir to work on a copy-on-write view of it)",
        spec.workspace.display()
    )))
}

fn home_dir(spec: &SandboxSpec) -> Option<PathBuf> {
    match &spec.home {
        HomeSpec::Bind(h) => Some(h.clone()),
        HomeSpec::Tmpfs => None,
    }
}

fn parse_id(id: &str) -> Result<u32> {
    id.trim_start_matches('#').parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
        Error::invalid(format!("'{id}' is not a checkpoint id: ids are the numbers `checkpoints NAME` lists"))
    })
}

fn load(dir: &Path) -> Result<Saved> {
    let path = dir.join(META);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::internal(format!("{} is damaged: {e}", path.display())))
}

/// The checkpoints of an agent's state directory, oldest first (an unfinished one, left by a
/// crash, is not listed).
fn all(state_dir: &Path) -> Result<Vec<Checkpoint>> {
    let dir = root(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::from(e).context(format!("reading {}", dir.display()))),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_str().and_then(|n| n.parse::<u32>().ok()).is_none() {
            continue;
        }
        if let Ok(saved) = load(&e.path()) {
            out.push(saved.info);
        }
    }
    out.sort_by_key(|c| c.id);
    Ok(out)
}

/// Lists an agent's checkpoints.
pub fn list(store: &Store, name: &str) -> Result<Vec<Checkpoint>> {
    let rec = agents::get(store, name)?;
    all(&agents::state_dir(&rec))
}

/// Saves the agent's workspace layer and home as a new checkpoint; a running agent is frozen
/// for the time the copy takes.
pub fn create(home: &Home, store: &Store, name: &str, message: &str) -> Result<Checkpoint> {
    if message.len() > 4096 || message.contains('\0') {
        bail!(Error::invalid("the message must be text without NUL bytes, at most 4096 bytes"));
    }
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    if rec.state == AgentState::Creating {
        bail!(Error::conflict(format!("agent '{name}' is being created")));
    }
    let state_dir = agents::state_dir(&rec);
    let spec = SandboxSpec::decode(&rec.spec)?;
    let layer = layer_dir(&state_dir, &spec)?;
    let existing = all(&state_dir)?;
    let id = existing.last().map_or(1, |c| c.id + 1);
    let dir = root(&state_dir);
    crate::home::private_dir(&dir)?;
    // Made under a temporary name and renamed into place: a crash leaves no half checkpoint.
    let tmp = dir.join(format!(".new-{id}-{}", std::process::id()));
    if std::fs::symlink_metadata(&tmp).is_ok() {
        tree::remove_tree(&tmp)?;
    }
    crate::home::private_dir(&tmp)?;
    // The previous checkpoint, whose unchanged files this one shares.
    let prev_dir = existing.last().map(|c| dir.join(c.id.to_string()));
    let prev_saved = prev_dir.as_ref().and_then(|p| load(p).ok());
    let (prev_ws, prev_home) = match &prev_dir {
        Some(p) => (p.join(LAYER), p.join(HOME)),
        None => (PathBuf::new(), PathBuf::new()),
    };
    let ws_prev = prev_saved.as_ref().map(|s| Previous { root: &prev_ws, stamps: &s.workspace });
    let home_prev = prev_saved.as_ref().map(|s| Previous { root: &prev_home, stamps: &s.home });
    let made = crate::pause::frozen(&rec, || {
        let (ws, ws_cost) = layer::copy(&layer, &tmp.join(LAYER), ws_prev)?;
        let (hs, h_cost) = match home_dir(&spec) {
            Some(h) => layer::copy(&h, &tmp.join(HOME), home_prev)?,
            None => (Stamps::new(), Copied::default()),
        };
        Ok((ws, hs, ws_cost, h_cost))
    });
    let (ws, hs, a, b) = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = tree::remove_tree(&tmp);
            return Err(e.context(format!("checkpointing '{name}'")));
        }
    };
    let info = Checkpoint {
        id,
        message: message.to_string(),
        created_ms: crate::workspace::origin::now_ns() / 1_000_000,
        entries: a.entries + b.entries,
        bytes: a.bytes + b.bytes,
        shared: a.linked + b.linked,
    };
    let saved = Saved { info: info.clone(), workspace: ws, home: hs };
    let json = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    let finish = || -> Result<()> {
        std::fs::write(tmp.join(META), json)?;
        std::fs::rename(&tmp, dir.join(id.to_string()))?;
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = tree::remove_tree(&tmp);
        return Err(e.context(format!("saving checkpoint {id} of '{name}'")));
    }
    let _ = store.record(name, "checkpoint", &format!("{id}: {message}"));
    Ok(info)
}

/// Removes one checkpoint.
pub fn remove(home: &Home, store: &Store, name: &str, id: &str) -> Result<()> {
    let id = parse_id(id)?;
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    let dir = root(&agents::state_dir(&rec)).join(id.to_string());
    if std::fs::symlink_metadata(&dir).is_err() {
        bail!(Error::not_found(format!("agent '{name}' has no checkpoint {id}")));
    }
    tree::remove_tree(&dir)?;
    let _ = store.record(name, "checkpoint-rm", &id.to_string());
    Ok(())
}

/// The saved layers of one checkpoint: its workspace layer and home.
pub(crate) fn saved_dirs(rec: &AgentRecord, id: &str) -> Result<(u32, PathBuf, PathBuf)> {
    let n = parse_id(id)?;
    let dir = root(&agents::state_dir(rec)).join(n.to_string());
    if !dir.join(META).exists() {
        bail!(Error::not_found(format!("agent '{}' has no checkpoint {n}", rec.name)));
    }
    Ok((n, dir.join(LAYER), dir.join(HOME)))
}

/// Lays a saved layer (or the agent's current one) into `dst`, which must not exist: a whole
/// copy the agent may write.
pub(crate) fn lay(src: &Path, dst: &Path) -> Result<()> {
    layer::copy(src, dst, None)?;
    Ok(())
}

/// Puts the agent's workspace and home back as they were at a checkpoint. A live agent is
/// stopped first and started again on that state; a stopped one stays stopped.
pub fn rollback(home: &Home, store: &Store, name: &str, id: &str) -> Result<AgentRecord> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    if rec.state == AgentState::Creating {
        bail!(Error::conflict(format!("agent '{name}' is being created")));
    }
    let (n, saved_layer, saved_home) = saved_dirs(&rec, id)?;
    let state_dir = agents::state_dir(&rec);
    let spec = SandboxSpec::decode(&rec.spec)?;
    let layer = layer_dir(&state_dir, &spec)?;
    let was_live = agents::is_live_state(&rec.state);
    let rec = crate::lifecycle::kill_locked(store, name)?;
    replace(&saved_layer, &layer)?;
    if let Some(o) = &spec.overlay {
        super::overlay::clear_work(o)?;
    }
    if let (Some(h), true) = (home_dir(&spec), saved_home.exists()) {
        replace(&saved_home, &h)?;
    }
    let _ = store.record(name, "rollback", &format!("to checkpoint {n}"));
    if was_live {
        crate::lifecycle::start_locked(home, store, &rec, "rollback")
    } else {
        agents::get(store, name)
    }
}

/// Replaces the directory `dst` by a copy of `src`: the copy is made beside it first, so a
/// failure leaves `dst` as it was.
fn replace(src: &Path, dst: &Path) -> Result<()> {
    let parent = dst.parent().unwrap_or(Path::new("/"));
    let file = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staged = parent.join(format!(".{file}.rollback"));
    let old = parent.join(format!(".{file}.old"));
    for leftover in [&staged, &old] {
        if std::fs::symlink_metadata(leftover).is_ok() {
            tree::remove_tree(leftover)?;
        }
    }
    lay(src, &staged)?;
    std::fs::rename(dst, &old).with_context(|| format!("moving {} aside", dst.display()))?;
    if let Err(e) = std::fs::rename(&staged, dst) {
        let _ = std::fs::rename(&old, dst);
        return Err(Error::from(e).context(format!("putting {} back", dst.display())));
    }
    tree::remove_tree(&old)?;
    Ok(())
}
