//! Tasks: "clone this repository, run this agent with this prompt, stop after two hours, keep
//! these files", submitted and left alone.
//!
//! ```text
//! AGENTBOX_HOME/tasks/<id>/    mode 0700
//!   manifest.json              the validated manifest
//!   input/                     /task/input inside the sandbox, read-only (prompt.md, manifest.json)
//!   output/                    /task/output inside, writable; artifacts are collected here
//!   workspace/                 the repository clone, the agent's workspace
//!   attempt-N.log              the agent's log of each attempt
//! ```
//!
//! A task's state lives in the store; the work is done by one detached runner process
//! (`agentbox __tasks`, see `runner`) that any `task submit` or `agentbox serve` starts when none
//! runs. The runner holds a lock while it lives, so there is never a second one, and it adopts
//! tasks a previous runner left half-done: every state can be resumed or is failed explicitly.

pub mod artifacts;
pub mod runner;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Context, Result};
use agentbox_core::{format_duration, ManifestFormat, TaskManifest};
use agentbox_store::{Store, TaskRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::home::{private_dir, Home};
use crate::Error;

pub fn tasks_dir(home: &Home) -> PathBuf {
    home.root.join("tasks")
}

pub fn task_dir(home: &Home, id: &str) -> PathBuf {
    tasks_dir(home).join(id)
}

/// The name of the agent that runs task `id`.
pub fn agent_name(id: &str) -> String {
    format!("task-{id}")
}

/// A task as `task list --json` and the API show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    /// pending, staging, provisioning, running, completing, completed, failed or cancelled.
    #[schema(value_type = String)]
    pub state: agentbox_core::TaskState,
    /// Why it is in this state.
    pub reason: String,
    pub agent: Option<String>,
    pub attempt: i64,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub timeout_secs: Option<u64>,
    pub retries: u32,
    pub labels: BTreeMap<String, String>,
    pub input_dir: String,
    pub output_dir: String,
    pub workspace: String,
}

impl TaskView {
    pub fn of(home: &Home, t: &TaskRecord) -> Self {
        let m: Option<TaskManifest> = serde_json::from_str(&t.manifest).ok();
        let dir = task_dir(home, &t.id);
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            state: t.state,
            reason: t.reason.clone(),
            agent: t.agent.clone(),
            attempt: t.attempt,
            cancel_requested: t.cancel_requested,
            created_at: t.created_at,
            updated_at: t.updated_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            exit_code: t.exit_code,
            timeout_secs: m.as_ref().and_then(|m| m.timeout_secs),
            retries: m.as_ref().map_or(0, |m| m.retries),
            labels: m.map(|m| m.metadata.labels).unwrap_or_default(),
            input_dir: dir.join("input").display().to_string(),
            output_dir: dir.join("output").display().to_string(),
            workspace: dir.join("workspace").display().to_string(),
        }
    }

    /// One line for people: the state and, where it matters, why.
    pub fn describe(&self) -> String {
        use agentbox_core::TaskState;
        match (self.state, self.reason.is_empty()) {
            (TaskState::Failed | TaskState::Cancelled, false) => format!("{}: {}", self.state, self.reason),
            (s, _) => s.to_string(),
        }
    }

    pub fn timeout_text(&self) -> String {
        self.timeout_secs.map_or("none".into(), |s| format_duration(std::time::Duration::from_secs(s)))
    }
}

/// Parses a manifest file's text; the error says where in the file the problem is.
pub fn parse_manifest(text: &str, format: ManifestFormat) -> Result<TaskManifest> {
    TaskManifest::parse(text, format).map_err(|e| Error::invalid(format!("invalid task manifest: {e}")))
}

fn new_id() -> Result<String> {
    use rand_core::RngCore;
    let mut bytes = [0u8; 6];
    rand_core::OsRng.try_fill_bytes(&mut bytes).map_err(|e| crate::err!("reading random bytes: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Records a new pending task and its directories, and makes sure a runner will pick it up.
pub fn submit(home: &Home, store: &Store, manifest: &TaskManifest) -> Result<TaskView> {
    if let Some(p) = &manifest.agent.profile {
        crate::profiles::load(home, p).map_err(|e| Error::invalid(format!("agent.profile: {e}")))?;
    }
    if let Some(r) = &manifest.repository {
        crate::git::check_url(&r.url).map_err(|e| Error::invalid(format!("repository.url: {e}")))?;
    }
    let id = new_id()?;
    let dir = task_dir(home, &id);
    private_dir(&tasks_dir(home))?;
    private_dir(&dir)?;
    let json = serde_json::to_string_pretty(manifest).context("encoding the manifest")?;
    let made = (|| -> Result<()> {
        std::fs::write(dir.join("manifest.json"), &json).context("writing manifest.json")?;
        store.create_task(&id, &manifest.title(), &json)?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    runner::ensure_running(home)?;
    Ok(TaskView::of(home, &store.task(&id)?))
}

/// A task with its manifest, its journal and its artifacts (`task show`, `GET /api/v1/tasks/ID`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<agentbox_store::Event>,
    pub artifacts: Vec<artifacts::Artifact>,
    /// The runner's process id, while one runs.
    pub runner: Option<i32>,
}

pub fn detail(home: &Home, store: &Store, id: &str) -> Result<TaskDetail> {
    let rec = store.find_task(id)?;
    let task = TaskView::of(home, &rec);
    let artifacts = artifacts::list(std::path::Path::new(&task.output_dir))?;
    Ok(TaskDetail {
        manifest: serde_json::from_str(&rec.manifest).unwrap_or_default(),
        events: store.events_of(&rec.id, 500)?,
        artifacts,
        task,
        runner: runner::runner_pid(home),
    })
}

pub fn list(home: &Home, store: &Store) -> Result<Vec<TaskView>> {
    Ok(store.tasks()?.iter().map(|t| TaskView::of(home, t)).collect())
}

pub fn get(home: &Home, store: &Store, id: &str) -> Result<TaskView> {
    Ok(TaskView::of(home, &store.find_task(id)?))
}

/// Cancels a task in any state: a pending one at once, one in progress through its runner
/// (started if none runs). Refused for a task that already ended.
pub fn cancel(home: &Home, store: &Store, id: &str) -> Result<TaskView> {
    let t = store.find_task(id)?;
    if t.state.is_final() {
        crate::bail!(Error::conflict(format!("task {} already ended ({})", t.id, t.state)));
    }
    let t = store.cancel_task(&t.id, "cancelled on request")?;
    if !t.state.is_final() {
        runner::ensure_running(home)?;
    }
    Ok(TaskView::of(home, &t))
}

/// The log of the task's current (or last) attempt: the agent's own while it exists, else the
/// copy the runner kept.
pub fn log_path(home: &Home, store: &Store, t: &TaskView) -> Option<PathBuf> {
    if let Some(agent) = &t.agent {
        if let Ok(rec) = store.get(agent) {
            return Some(agentbox_supervisor::paths::log(&crate::agents::state_dir(&rec)));
        }
    }
    let kept = task_dir(home, &t.id).join(format!("attempt-{}.log", t.attempt));
    kept.exists().then_some(kept)
}

/// Where a reader of a task's log is: which attempt's log, and how far into it.
#[derive(Debug, Default, Clone)]
pub struct LogCursor {
    path: Option<PathBuf>,
    offset: u64,
}

impl LogCursor {
    /// The text added since the last call (ANSI stripped, at most one chunk); the log of a new
    /// attempt is read from its start.
    pub fn next(&mut self, home: &Home, store: &Store, t: &TaskView) -> Result<String> {
        let Some(path) = log_path(home, store, t) else { return Ok(String::new()) };
        if self.path.as_ref() != Some(&path) {
            self.offset = 0;
        }
        let chunk = crate::logs::log_range_at(&path, Some(self.offset), None, false)?;
        self.path = Some(path);
        self.offset = chunk.next_offset;
        Ok(chunk.data)
    }
}
