//! Agents, HITL requests and log ranges as every front end shows them: `list --json`, the API,
//! the dashboard and the remote CLI read and print the same types.

use std::collections::BTreeMap;

use agentbox_core::SandboxSpec;
use agentbox_store::{AgentRecord, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agents::{self, is_live_state};
use crate::error::{Error, Result};

/// An agent as `list --json` and the API show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct AgentView {
    pub name: String,
    /// starting, running, paused, exited, killed, failed, created or crashloop.
    #[schema(value_type = String)]
    pub state: agentbox_core::AgentState,
    pub exit_code: Option<i64>,
    pub supervisor_pid: Option<i64>,
    pub profile: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub tags: BTreeMap<String, String>,
    pub workspace: String,
    pub command: Vec<String>,
    /// none, proxy or full.
    pub network: String,
}

impl AgentView {
    pub fn of(rec: &AgentRecord) -> Self {
        let spec: Option<SandboxSpec> = SandboxSpec::decode(&rec.spec).ok();
        Self {
            name: rec.name.clone(),
            state: rec.state,
            exit_code: rec.exit_code,
            supervisor_pid: rec.supervisor_pid,
            profile: rec.profile.clone(),
            created_at: rec.created_at,
            started_at: rec.started_at,
            finished_at: rec.finished_at,
            tags: rec.tags.iter().cloned().collect(),
            workspace: spec.as_ref().map(|s| s.workspace.display().to_string()).unwrap_or_default(),
            command: spec
                .as_ref()
                .map(|s| s.command.iter().map(|a| a.to_string_lossy().into_owned()).collect())
                .unwrap_or_default(),
            network: spec.map(|s| s.network.to_string()).unwrap_or_default(),
        }
    }

    pub fn is_live(&self) -> bool {
        is_live_state(&self.state)
    }

    /// `running`, `exited (0)`, `killed`, ...
    pub fn describe_state(&self) -> String {
        agents::describe(&self.state, self.exit_code)
    }
}

/// Which agents a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tags: Vec<(String, String)>,
    /// `running` (being created, starting, running or paused), `paused` (only those), or
    /// `exited` (anything else).
    pub status: Option<String>,
}

impl Filter {
    pub fn parse_status(s: &str) -> Result<String> {
        match s {
            "running" | "paused" | "exited" => Ok(s.to_string()),
            _ => Err(Error::invalid(format!("invalid status '{s}': use running, paused or exited"))),
        }
    }

    pub fn matches(&self, a: &AgentView) -> bool {
        self.tags.iter().all(|(k, v)| a.tags.get(k) == Some(v))
            && match self.status.as_deref() {
                Some("running") => a.is_live() || a.state == agentbox_core::AgentState::Creating,
                Some("paused") => a.state == agentbox_core::AgentState::Paused,
                Some("exited") => !(a.is_live() || a.state == agentbox_core::AgentState::Creating),
                _ => true,
            }
    }
}

pub fn list(store: &Store, filter: &Filter) -> Result<Vec<AgentView>> {
    Ok(agents::all(store)?.iter().map(AgentView::of).filter(|a| filter.matches(a)).collect())
}

/// A HITL request as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct HitlView {
    pub id: i64,
    pub agent: String,
    /// open, answered or gone.
    #[schema(value_type = String)]
    pub state: agentbox_core::HitlState,
    /// yes-no, choices, confirm or question.
    #[schema(value_type = String)]
    pub kind: agentbox_core::HitlKind,
    pub score: f64,
    pub prompt: String,
    pub screen: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub answer: Option<String>,
}

impl HitlView {
    pub fn of(r: &agentbox_store::HitlRecord) -> Self {
        Self {
            id: r.id,
            agent: r.agent.clone(),
            state: r.state,
            kind: r.kind,
            score: r.score,
            prompt: r.prompt.clone(),
            screen: r.screen.clone(),
            created_at: r.created_at,
            closed_at: r.closed_at,
            answer: r.answer.clone(),
        }
    }
}

/// A byte range of an agent's output log: from `offset`, at most `limit` bytes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    pub offset: u64,
    /// Where the next read starts.
    pub next_offset: u64,
    /// The log's size now.
    pub size: u64,
    /// The bytes, as text (invalid UTF-8 replaced); ANSI stripped unless raw.
    pub data: String,
    /// Where in the log the agent's terminal changed size: a client that renders the raw bytes
    /// as a screen (a transcript) draws each part at its size.
    #[serde(default)]
    pub sizes: Vec<SizeMark>,
    /// When the bytes of this range were written: the last mark at or before `offset`, then
    /// those up to `next_offset` (a client stamps lines with them, `logs --timestamps`).
    #[serde(default)]
    pub times: Vec<TimeMark>,
}

/// The byte at `offset` of a log file was written at `ms` (Unix time in milliseconds), and the
/// bytes up to the next mark within a second of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimeMark {
    pub offset: u64,
    pub ms: u64,
}

/// From `offset` of a log file on, its output was drawn for a terminal of `rows` x `cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SizeMark {
    pub offset: u64,
    pub rows: u16,
    pub cols: u16,
}

/// An agent's screen as text (`screen`, `GET /api/v1/agents/NAME/screen`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ScreenView {
    pub name: String,
    pub state: String,
    pub screen: String,
}

/// A byte range of a log with its bytes as they are ([`LogChunk`] carries them as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBytes {
    pub offset: u64,
    pub next_offset: u64,
    pub size: u64,
    pub data: Vec<u8>,
    pub sizes: Vec<SizeMark>,
    pub times: Vec<TimeMark>,
}

impl From<LogChunk> for LogBytes {
    fn from(c: LogChunk) -> Self {
        Self {
            offset: c.offset,
            next_offset: c.next_offset,
            size: c.size,
            data: c.data.into_bytes(),
            sizes: c.sizes,
            times: c.times,
        }
    }
}
