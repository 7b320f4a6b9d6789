//! When the store is damaged: each agent keeps a copy of its record in its own directory
//! (`agent.json`), so that `agentbox store recover` can rebuild the store from the directories,
//! and `agentbox store check` says whether the store is sound.

use std::path::{Path, PathBuf};

use agentbox_core::AgentState;
use agentbox_store::{NewAgent, Store};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::home::Home;

const RECORD: &str = "agent.json";

/// What `agent.json` holds: what the store would need to know the agent again.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    name: String,
    /// The resolved sandbox spec, as the store holds it.
    spec: String,
    tags: Vec<(String, String)>,
    profile: Option<String>,
    prompt: Option<Vec<u8>>,
    restart: Option<String>,
    created_at: i64,
}

/// Writes the agent's record into its directory (replacing the last one). Best effort: the
/// copy only matters when the store is lost, so a failure (a full disk) is not the caller's.
pub fn save(store: &Store, name: &str) {
    let Ok(rec) = store.get(name) else { return };
    let saved = Saved {
        name: rec.name.clone(),
        spec: rec.spec.clone(),
        tags: rec.tags.clone(),
        profile: rec.profile.clone(),
        prompt: rec.prompt.clone(),
        restart: rec.restart.clone(),
        created_at: rec.created_at,
    };
    let dir = crate::agents::state_dir(&rec);
    let (path, tmp) = (dir.join(RECORD), dir.join(format!(".{RECORD}.tmp")));
    if let Ok(json) = serde_json::to_vec_pretty(&saved) {
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// What `store check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub path: PathBuf,
    /// Empty when the store is sound.
    pub problems: Vec<String>,
}

pub fn check(home: &Home) -> Checked {
    let path = home.store_path();
    let problems = match home.store() {
        Ok(store) => store.check().unwrap_or_else(|e| vec![e.to_string()]),
        Err(e) => vec![e.to_string()],
    };
    Checked { path, problems }
}

/// What `store recover` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Where the old store files were moved.
    pub kept_aside: Vec<PathBuf>,
    /// Agents recorded again (as `failed`: restart them).
    pub agents: Vec<String>,
    /// Agent directories without a record to recover from, left as they are.
    pub skipped: Vec<PathBuf>,
}

/// Moves the store aside and makes a new one from the agents' directories. Every recovered
/// agent is recorded as `failed` (its supervisor, if one still runs, no longer owns it).
pub fn recover(home: &Home) -> Result<Recovered> {
    let mut out = Recovered::default();
    let stamp = agentbox_store::now_ms();
    let db = home.store_path();
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}.damaged-{stamp}{suffix}", db.display()));
            std::fs::rename(&from, &to).with_context(|| format!("moving {} aside", from.display()))?;
            out.kept_aside.push(to);
        }
    }
    let store = home.store()?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(home.root.join("agents"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        match recover_one(&store, &dir) {
            Ok(name) => out.agents.push(name),
            Err(_) => out.skipped.push(dir),
        }
    }
    Ok(out)
}

fn recover_one(store: &Store, dir: &Path) -> Result<String> {
    let text = std::fs::read(dir.join(RECORD))?;
    let saved: Saved = serde_json::from_slice(&text)?;
    agentbox_core::validate_name(&saved.name)?;
    if dir.file_name() != Some(std::ffi::OsStr::new(&saved.name)) {
        return Err(Error::invalid(format!("{} records another agent ({})", dir.display(), saved.name)));
    }
    let owner = crate::agents::me();
    let state_dir = dir.to_string_lossy();
    store.claim(&saved.name, &state_dir, &owner)?;
    let new = NewAgent {
        name: &saved.name,
        spec_json: &saved.spec,
        state_dir: &state_dir,
        tags: &saved.tags,
        profile: saved.profile.as_deref(),
        prompt: saved.prompt.as_deref(),
        state: Some(AgentState::Failed),
        restart: saved.restart.as_deref(),
    };
    store.fill_claim(&new, &owner)?;
    store.record(&saved.name, "recovered", "from its directory, after the store was damaged")?;
    Ok(saved.name)
}
