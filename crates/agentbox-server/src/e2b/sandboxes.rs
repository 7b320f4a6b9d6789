//! E2B sandboxes as agents: what E2B knows of a sandbox that an agent does not (its template,
//! metadata, variables, access token and deadline) kept in `AGENTBOX_HOME/e2b/ID/sandbox.json`
//! beside the directory that is its `/home/user`; the deadline's reaper; envd's token check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use super::error::{gone, RpcError};
use crate::state::Shared;
use crate::store::with_store;
use agentbox_core::AgentState;
use agentbox_engine::{Error, Home, Result};
use agentbox_store::{AgentRecord, Store};

/// The tag every sandbox made through E2B carries.
pub const TAG: (&str, &str) = ("created-by", "e2b");
/// Where the sandbox user's home is, as E2B's SDKs assume.
pub const USER_HOME: &str = "/home/user";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub template: String,
    pub metadata: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub token: String,
    pub started_ms: i64,
    pub end_ms: i64,
    /// At the deadline: paused (true) or killed.
    pub auto_pause: bool,
}

pub fn dir(home: &Home, id: &str) -> PathBuf {
    home.root.join("e2b").join(id)
}

pub fn user_home(home: &Home, id: &str) -> PathBuf {
    dir(home, id).join("user")
}

fn file(home: &Home, id: &str) -> PathBuf {
    dir(home, id).join("sandbox.json")
}

pub fn new_id() -> String {
    let mut b = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("e2b-{}", crate::auth::hex(&b))
}

pub fn new_token() -> String {
    let mut b = [0u8; 24];
    rand_core::OsRng.fill_bytes(&mut b);
    crate::auth::hex(&b)
}

impl Sandbox {
    pub fn save(&self, home: &Home, id: &str) -> Result<()> {
        let path = file(home, id);
        let tmp = path.with_extension("json.new");
        std::fs::write(&tmp, serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn load(home: &Home, id: &str) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(file(home, id)).ok()?).ok()
    }
}

/// A sandbox and its agent, if `id` names one made through E2B.
pub fn get(home: &Home, store: &Store, id: &str) -> Result<(AgentRecord, Sandbox)> {
    let missing = || Error::not_found(format!("sandbox {id} not found"));
    if agentbox_core::validate_name(id).is_err() {
        return Err(missing());
    }
    let rec = agentbox_engine::agents::get(store, id).map_err(|_| missing())?;
    let ours = rec.tags.iter().any(|(k, v)| k == TAG.0 && v == TAG.1);
    match (ours, Sandbox::load(home, id)) {
        (true, Some(s)) => Ok((rec, s)),
        _ => Err(missing()),
    }
}

/// Every sandbox made through E2B.
pub fn all(home: &Home, store: &Store) -> Result<Vec<(AgentRecord, Sandbox)>> {
    let mut out = Vec::new();
    for rec in agentbox_engine::agents::all(store)? {
        if rec.tags.iter().any(|(k, v)| k == TAG.0 && v == TAG.1) {
            if let Some(s) = Sandbox::load(home, &rec.name) {
                out.push((rec, s));
            }
        }
    }
    Ok(out)
}

/// The E2B state of an agent: `running` or `paused`; `None` once it ended (a sandbox whose
/// command ended is gone, as far as E2B is concerned).
pub fn state(rec: &AgentRecord) -> Option<&'static str> {
    match rec.state {
        AgentState::Paused => Some("paused"),
        AgentState::Running | AgentState::Starting => Some("running"),
        _ => None,
    }
}

/// Removes a sandbox: its agent (killed first) and its E2B directory.
pub fn remove(home: &Home, store: &Store, id: &str) -> Result<()> {
    get(home, store, id)?;
    agentbox_engine::lifecycle::remove(home, store, id, true)?;
    let _ = agentbox_engine::tree::remove_tree(&dir(home, id));
    Ok(())
}

/// envd's check: `E2b-Sandbox-Id` names a running sandbox and `X-Access-Token` is its token.
pub async fn require_access_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let (presented, id) = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        (header("x-access-token").unwrap_or_default(), header("e2b-sandbox-id"))
    };
    let Some(id) = id else {
        let no = RpcError::new("invalid_argument", "no E2b-Sandbox-Id header: which sandbox?");
        return refuse(req, no.into_response()).await;
    };
    let home = state.home.clone();
    let lookup = id.clone();
    let found = tokio::task::spawn_blocking(move || with_store(&home, |s| get(&home, s, &lookup))).await;
    let Ok(Ok((rec, sandbox))) = found else { return refuse(req, gone(&id)).await };
    if state_of_running(&rec).is_none() {
        return refuse(req, gone(&id)).await;
    }
    if !crate::auth::constant_time_eq(presented.as_bytes(), sandbox.token.as_bytes()) {
        let no = RpcError::new("unauthenticated", "missing or wrong X-Access-Token for this sandbox");
        return refuse(req, no.into_response()).await;
    }
    let mut req = req;
    req.extensions_mut().insert(Current { id, sandbox });
    next.run(req).await
}

/// Answers a request refused before its body was read, reading (a bounded part of) the body
/// first: the client's connection then stays usable for its next request.
pub async fn refuse(req: Request, answer: Response) -> Response {
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    answer
}

fn state_of_running(rec: &AgentRecord) -> Option<()> {
    (state(rec) == Some("running")).then_some(())
}

/// The sandbox an envd request is for (set by [`require_access_token`]).
#[derive(Debug, Clone)]
pub struct Current {
    pub id: String,
    pub sandbox: Sandbox,
}

/// Kills (or pauses, with autoPause) every sandbox past its deadline, once a second.
pub fn start_reaper(state: &Shared) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let home = state.home.clone();
            let _ = tokio::task::spawn_blocking(move || with_store(&home, |s| reap(&home, s))).await;
        }
    });
}

fn reap(home: &Home, store: &Store) -> Result<()> {
    let now = agentbox_store::now_ms();
    for (rec, sandbox) in all(home, store)? {
        // A paused sandbox waits to be connected to; one whose command ended (or that was
        // stopped from the CLI) is removed once its time is up, like a running one.
        if sandbox.end_ms > now || state(&rec) == Some("paused") {
            continue;
        }
        let outcome = if sandbox.auto_pause && state(&rec) == Some("running") {
            agentbox_engine::pause::pause(home, store, &rec.name).map(drop)
        } else {
            remove(home, store, &rec.name)
        };
        if let Err(e) = outcome {
            crate::extract::warn(&format!("sandbox {} reached its timeout: {e}", rec.name));
        }
    }
    Ok(())
}
