//! The operations behind both the CLI and the server's API: one place that validates requests,
//! changes agents and says what went wrong, so `agentbox kill x` and `POST
//! /api/v1/agents/x/kill` cannot drift apart.
//!
//! Errors stay `anyhow::Error`; [`status_of`] reads the typed causes inside (a missing agent, a
//! name taken, a bad spec, a [`Refused`] request) to give the API its status code. Anything it does
//! not recognise is the server's fault (500).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use agentbox_core::{EnvArg, HostRule, NetworkMode, SandboxSpec, SpecError};
use agentbox_store::{AgentRecord, Store, StoreError};
use agentbox_supervisor::{paths, ClientError};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agents::{self, is_live_state, wait_finished};
use crate::cli::{SandboxFlags, SpawnOptions};
use crate::home::Home;
use crate::tree::remove_tree;

/// A request refused for a reason the caller can fix (the message says how), with the status it
/// stands for: 400 for input that is wrong, 409 for a request that conflicts with the agent's
/// state (it is running, or not running).
#[derive(Debug)]
pub struct Refused {
    status: u16,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

pub fn invalid(msg: impl Into<String>) -> anyhow::Error {
    Refused { status: 400, message: msg.into() }.into()
}

pub fn conflict(msg: impl Into<String>) -> anyhow::Error {
    Refused { status: 409, message: msg.into() }.into()
}

/// A refusal with the status another process reported.
pub fn refused(status: u16, msg: impl Into<String>) -> anyhow::Error {
    Refused { status, message: msg.into() }.into()
}

pub fn not_found(msg: impl Into<String>) -> anyhow::Error {
    Refused { status: 404, message: msg.into() }.into()
}

/// The HTTP status an error stands for.
pub fn status_of(e: &anyhow::Error) -> u16 {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            match s {
                StoreError::NotFound(_) | StoreError::NoTask(_) | StoreError::NoHitl(_) => return 404,
                StoreError::AmbiguousTask(_) => return 400,
                StoreError::Exists(_) => return 409,
                _ => {}
            }
        }
        if let Some(r) = cause.downcast_ref::<Refused>() {
            return r.status;
        }
        if cause.is::<SpecError>() {
            return 400;
        }
        if let Some(agentbox_jail::JailError::Spec(_)) = cause.downcast_ref::<agentbox_jail::JailError>() {
            return 400;
        }
        if matches!(cause.downcast_ref(), Some(ClientError::NotRunning(_))) {
            return 409;
        }
    }
    500
}

/// A new agent, as the API and the dashboard's form give it. Every field means what the
/// `agentbox spawn` flag of the same name means, and goes through the same parsers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// Lowercase letters, digits and '-', at most 63 characters.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
    /// claude-code, codex, gemini, aider, opencode, pi or a profile of your own.
    #[serde(default)]
    pub profile: Option<String>,
    /// The command; empty: the profile's, or a shell.
    #[serde(default)]
    pub command: Vec<String>,
    /// Text typed into the agent once it runs (Enter is added).
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// A host directory used as the workspace itself, read-write.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Start from a copy of this host directory.
    #[serde(default)]
    pub from_dir: Option<String>,
    /// Start from a clone of this git repository (URL or host path).
    #[serde(default)]
    pub from_git: Option<String>,
    /// With from_git: the branch, tag or commit.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// none, proxy or full.
    #[serde(default)]
    pub network: Option<String>,
    /// Hosts the proxy may reach: host, *.domain or an IP address.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Secrets kept on the host: NAME or NAME=HOST,HOST.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Hold requests to other hosts until allowed.
    #[serde(default)]
    pub ask: bool,
    /// KEY=VALUE pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// Memory limit such as 512M or 2G.
    #[serde(default)]
    pub memory: Option<String>,
    /// Maximum number of processes.
    #[serde(default)]
    pub pids: Option<u64>,
    /// CPU bandwidth in cores, such as 0.5 (with backend vm: virtual CPUs, rounded up).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// ns (namespaces, the default) or vm (a QEMU microVM; memory and cpus size the guest).
    #[serde(default)]
    #[schema(pattern = r"^(ns|vm)$")]
    pub backend: Option<String>,
    /// Give the agent its own signing identity.
    #[serde(default)]
    pub identity: bool,
    /// More host paths bound inside: HOST[:SANDBOX][:ro|rw].
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Working directory inside (relative: from the workspace).
    #[serde(default)]
    pub workdir: Option<String>,
    /// on-failure[:N[:WINDOW]]: start it again when it exits non-zero.
    #[serde(default)]
    pub restart: Option<String>,
}

fn host_dir(field: &str, value: &str) -> Result<PathBuf> {
    let p = PathBuf::from(value);
    if !p.is_absolute() {
        bail!(invalid(format!("{field} '{value}' is not an absolute path")));
    }
    if !p.is_dir() {
        bail!(invalid(format!("{field} '{value}' is not a directory on the server")));
    }
    Ok(p)
}

impl SpawnRequest {
    /// The same options `agentbox spawn` builds from its flags, checked the same way.
    pub fn to_options(&self, home: &Home) -> Result<SpawnOptions> {
        agentbox_core::validate_name(&self.name)?;
        let bad = |e: String| invalid(e);
        if let Some(p) = &self.profile {
            crate::profiles::load(home, p).map_err(|e| invalid(format!("{e:#}")))?;
        }
        if self.workspace.is_some() && (self.from_dir.is_some() || self.from_git.is_some()) {
            bail!(invalid("give one of workspace, from_dir and from_git"));
        }
        if self.from_dir.is_some() && self.from_git.is_some() {
            bail!(invalid("give one of from_dir and from_git"));
        }
        if self.git_ref.is_some() && self.from_git.is_none() {
            bail!(invalid("ref needs from_git"));
        }
        if let Some(url) = &self.from_git {
            crate::sandboxed_git::check_url(url)?;
        }
        let mut tags = Vec::new();
        for (k, v) in &self.tags {
            tags.push(agents::parse_tag(&format!("{k}={v}")).map_err(bad)?);
        }
        let mut env = Vec::new();
        for e in &self.env {
            match agentbox_core::parse_env_arg(e)? {
                EnvArg::Inherit(k) => bail!(invalid(format!("env '{k}': give KEY=VALUE"))),
                set => env.push(set),
            }
        }
        let network = match &self.network {
            Some(n) => Some(n.parse::<NetworkMode>().map_err(bad)?),
            None => None,
        };
        let allow =
            self.allow.iter().map(|a| a.parse::<HostRule>()).collect::<Result<Vec<_>, _>>().map_err(bad)?;
        let secrets = self
            .secrets
            .iter()
            .map(|s| agentbox_core::parse_secret_arg(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let memory = match &self.memory {
            Some(m) => Some(agentbox_core::Limits::parse_memory(m)?),
            None => None,
        };
        let pids = match self.pids {
            Some(n) => Some(agentbox_core::Limits::parse_pids(&n.to_string())?),
            None => None,
        };
        let cpus = match self.cpus {
            Some(n) => Some(agentbox_core::Limits::parse_cpus(&n.to_string())?),
            None => None,
        };
        let backend =
            self.backend.as_deref().map(str::parse::<agentbox_core::Backend>).transpose().map_err(bad)?;
        if self.command.iter().any(|a| a.contains('\0'))
            || self.prompt.as_ref().is_some_and(|p| p.contains('\0'))
        {
            bail!(invalid("command and prompt may not contain NUL bytes"));
        }
        let volumes = self
            .volumes
            .iter()
            .map(|v| agentbox_core::parse_mount_arg(v).map_err(|e| invalid(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let restart = self.restart.as_deref().map(str::parse).transpose().map_err(bad)?;
        if self.workdir.as_ref().is_some_and(|w| w.contains('\0') || w.is_empty()) {
            bail!(invalid("workdir must be a non-empty path"));
        }
        Ok(SpawnOptions {
            volumes,
            workdir: self.workdir.as_deref().map(PathBuf::from),
            restart,
            profile: self.profile.clone(),
            prompt: None,
            prompt_text: self.prompt.clone(),
            tags,
            identity: self.identity,
            from_dir: self.from_dir.as_deref().map(|d| host_dir("from_dir", d)).transpose()?,
            from_git: self.from_git.clone(),
            git_ref: self.git_ref.clone(),
            mount: self.workspace.as_deref().map(|d| host_dir("workspace", d)).transpose()?,
            sandbox: SandboxFlags {
                network,
                allow,
                secrets,
                ask: self.ask,
                env,
                memory,
                pids,
                cpus,
                backend,
            },
            command: self.command.iter().map(OsString::from).collect(),
        })
    }
}

/// An agent as `list --json` and the API show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct AgentView {
    pub name: String,
    /// starting, running, exited, killed, failed, created or crashloop.
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
    /// `running` (starting or running) or `exited` (anything else).
    pub status: Option<String>,
}

impl Filter {
    pub fn parse_status(s: &str) -> Result<String> {
        match s {
            "running" | "exited" => Ok(s.to_string()),
            _ => bail!(invalid(format!("invalid status '{s}': use running or exited"))),
        }
    }

    pub fn matches(&self, a: &AgentView) -> bool {
        self.tags.iter().all(|(k, v)| a.tags.get(k) == Some(v))
            && match self.status.as_deref() {
                Some("running") => a.is_live(),
                Some("exited") => !a.is_live(),
                _ => true,
            }
    }
}

pub fn list(store: &Store, filter: &Filter) -> Result<Vec<AgentView>> {
    Ok(agents::all(store)?.iter().map(AgentView::of).filter(|a| filter.matches(a)).collect())
}

/// Spawns one agent from a request (validated here, whoever calls).
pub fn spawn(home: &Home, req: &SpawnRequest) -> Result<AgentView> {
    let opts = req.to_options(home)?;
    crate::cmd_spawn::spawn_one(home, &req.name, &opts)?;
    Ok(AgentView::of(&agents::get(&home.store()?, &req.name)?))
}

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
            bail!(conflict(format!(
                "agent '{name}' is running; stop it with `agentbox kill {name}` or use rm --force"
            )));
        }
        kill(store, name)?;
    }
    remove_tree(&agents::state_dir(&rec))?;
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
    if let Err(e) = crate::cmd_spawn::start_supervisor(home, &rec.name, &dir) {
        let _ = store.mark_finished(&rec.name, agentbox_core::AgentState::Failed, None, &format!("{e:#}"));
        return Err(e);
    }
    crate::cmd_spawn::type_after_start(&dir, &keys, rec.prompt.as_deref())?;
    agents::get(store, name)
}

pub fn set_tags(store: &mut Store, name: &str, tags: &BTreeMap<String, String>) -> Result<AgentRecord> {
    agentbox_core::validate_name(name)?;
    let mut pairs = Vec::new();
    for (k, v) in tags {
        pairs.push(agents::parse_tag(&format!("{k}={v}")).map_err(invalid)?);
    }
    store.set_tags(name, &pairs)?;
    agents::get(store, name)
}

fn live(store: &Store, name: &str) -> Result<AgentRecord> {
    let rec = agents::get(store, name)?;
    if !is_live_state(&rec.state) {
        bail!(conflict(format!("agent '{}' is {}; nothing is reading its terminal", rec.name, rec.state)));
    }
    Ok(rec)
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

/// Answers an open HITL request: claims it (so two people answering at once cannot both type),
/// then types the text (and Enter) into the agent.
pub fn answer_hitl(store: &Store, id: i64, text: &str, enter: bool) -> Result<agentbox_store::HitlRecord> {
    let req = store.hitl(id)?;
    if req.state != agentbox_core::HitlState::Open {
        bail!(conflict(format!("request #{id} is {} already", req.state)));
    }
    if text.contains('\0') || text.len() > 64 * 1024 {
        bail!(invalid("the answer must be text without NUL bytes, at most 64 KiB"));
    }
    let rec = live(store, &req.agent)?;
    if !store.close_hitl(id, agentbox_core::HitlState::Answered, Some(text), &format!("answered: {text}"))? {
        bail!(conflict(format!("request #{id} was closed meanwhile")));
    }
    let mut bytes = text.as_bytes().to_vec();
    if enter {
        bytes.push(b'\r');
    }
    agentbox_supervisor::send_input(&agents::state_dir(&rec), &bytes)?;
    Ok(store.hitl(id)?)
}

/// Types bytes into a running agent's terminal.
pub fn send(store: &Store, name: &str, bytes: &[u8]) -> Result<()> {
    let rec = live(store, name)?;
    agentbox_supervisor::send_input(&agents::state_dir(&rec), bytes)?;
    Ok(())
}

/// The current screen of an agent (its last screen once it ended).
pub fn screen(store: &Store, name: &str, ansi: bool) -> Result<(AgentRecord, String)> {
    let rec = agents::get(store, name)?;
    let text = agentbox_supervisor::screen(&agents::state_dir(&rec), ansi)?;
    Ok((rec, text))
}

/// Resizes a running agent's terminal.
pub fn resize(store: &Store, name: &str, rows: u16, cols: u16) -> Result<()> {
    if !(1..=1000).contains(&rows) || !(1..=1000).contains(&cols) {
        bail!(invalid(format!("terminal size {rows}x{cols}: rows and cols must be between 1 and 1000")));
    }
    let rec = live(store, name)?;
    agentbox_supervisor::resize(&agents::state_dir(&rec), rows, cols)?;
    Ok(())
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
}

pub const MAX_LOG_CHUNK: u64 = 4 << 20;

pub fn log_range(
    store: &Store,
    name: &str,
    offset: Option<u64>,
    limit: Option<u64>,
    raw: bool,
) -> Result<LogChunk> {
    log_range_of(&agents::get(store, name)?, offset, limit, raw)
}

/// `log_range` of an agent already looked up.
pub fn log_range_of(
    rec: &AgentRecord,
    offset: Option<u64>,
    limit: Option<u64>,
    raw: bool,
) -> Result<LogChunk> {
    log_range_at(&paths::log(&agents::state_dir(rec)), offset, limit, raw)
}

/// `log_range` of a log file by its path (an agent's, or a log a task kept).
pub fn log_range_at(
    path: &std::path::Path,
    offset: Option<u64>,
    limit: Option<u64>,
    raw: bool,
) -> Result<LogChunk> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogChunk { offset: 0, next_offset: 0, size: 0, data: String::new() })
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let size = file.metadata()?.len();
    let limit = limit.unwrap_or(MAX_LOG_CHUNK).min(MAX_LOG_CHUNK);
    // Without an offset: the last `limit` bytes, like `tail`.
    let offset = offset.unwrap_or(size.saturating_sub(limit)).min(size);
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    let next_offset = offset + bytes.len() as u64;
    let text = if raw { bytes } else { crate::cmd_session::plain(&bytes) };
    Ok(LogChunk { offset, next_offset, size, data: String::from_utf8_lossy(&text).into_owned() })
}

/// Lets a proxy-mode agent reach `host`: now (if it runs) and, unless `once`, after restarts.
pub fn allow(
    home: &Home,
    store: &Store,
    name: &str,
    host: &HostRule,
    once: bool,
    always: bool,
) -> Result<()> {
    let rec = agents::get(store, name)?;
    let mut spec = SandboxSpec::decode(&rec.spec)?;
    if spec.network != NetworkMode::Proxy {
        bail!(conflict(format!(
            "{name} runs with --network {}; only agents with --network proxy have an allowlist",
            spec.network
        )));
    }
    if once && always {
        bail!(invalid("once and always exclude each other"));
    }
    let rule = host.to_string();
    let running = is_live_state(&rec.state);
    if running {
        agentbox_supervisor::allow_host(&agents::state_dir(&rec), &rule, once)?;
    } else if once {
        bail!(conflict(format!("{name} is not running; --once applies to a running agent")));
    }
    if !once {
        // Kept with the agent, so a restart keeps it.
        if !spec.egress.allow.contains(host) {
            spec.egress.allow.push(host.clone());
            store.set_spec(name, &spec.encode()?)?;
        }
        if !running {
            store.record(name, "allow", &format!("{rule} (from the next start)"))?;
        }
    }
    if always {
        crate::egress::Config::add_allow(home, host.clone())?;
    }
    Ok(())
}

/// An agent's audit records, oldest first (the last `limit`).
pub fn net_records(store: &Store, name: &str, limit: usize) -> Result<Vec<agentbox_proxy::AuditRecord>> {
    let rec = agents::get(store, name)?;
    let path = paths::net_log(&agents::state_dir(&rec));
    let mut records =
        agentbox_proxy::read_records(&path).with_context(|| format!("reading {}", path.display()))?;
    let skip = records.len().saturating_sub(limit);
    records.drain(..skip);
    Ok(records)
}
