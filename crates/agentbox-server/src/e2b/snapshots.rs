//! E2B's fork, snapshots and metrics, on agentbox's own fork.
//!
//! A sandbox's files are its agent's workspace and home (copied by `lifecycle::fork`) and its
//! `/home/user`, a directory of the E2B sandbox's own (`e2b/ID/user`) bound into the agent. So
//! a copy of a sandbox is: the source paused (if it runs), the agent forked stopped, that
//! directory copied, the copy's spec pointed at its own, the source resumed.
//!
//! - `POST /sandboxes/{id}/fork` `{count, timeout}`: `count` (1 to 20) new running sandboxes,
//!   each answered on its own (`{sandbox}` or `{error}`).
//! - `POST /sandboxes/{id}/snapshots` `{name}`: a stopped copy, `snap-...`, tagged
//!   `created-by=e2b-snapshot`; it outlives its source. `Sandbox.create(SNAPSHOT_ID)` starts a
//!   fork of it. `GET /snapshots` lists them, `DELETE /templates/{id}` removes one.
//!
//! What is copied is the filesystem: E2B's "full" snapshots also keep memory (its processes go
//! on in the copy); here a copy starts its command afresh. `GET /sandboxes/{id}/metrics` is one
//! sample of now: CPU, memory (the sandbox's processes) and disk (its directories).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::control::{blocking, body_of, sandbox_json, timeout_secs};
use super::error::ApiError;
use super::sandboxes::{self, Sandbox, TAG};
use crate::state::Shared;
use crate::store::with_store;
use agentbox_core::{AgentState, SandboxSpec};
use agentbox_engine::{Error, Home, Result};
use agentbox_store::Store;

/// The tag of a snapshot's stopped agent.
pub const SNAPSHOT_TAG: (&str, &str) = ("created-by", "e2b-snapshot");
/// The most forks one request makes (E2B's limit).
const MAX_FORKS: u64 = 20;

/// A new snapshot id.
fn new_snapshot_id() -> String {
    sandboxes::new_id().replacen("e2b-", "snap-", 1)
}

/// Whether `id` names a snapshot made here.
pub fn is_snapshot(store: &Store, id: &str) -> bool {
    agentbox_core::validate_name(id).is_ok()
        && agentbox_engine::agents::get(store, id)
            .is_ok_and(|r| r.tags.iter().any(|(k, v)| k == SNAPSHOT_TAG.0 && v == SNAPSHOT_TAG.1))
}

/// Copies sandbox (or snapshot) `src` into a new agent `dst` with its own `/home/user`, its
/// record saying `sandbox`, tagged `tag`; it is left stopped. A running source is paused for
/// the copy and resumed after.
fn copy_sandbox(
    home: &Home,
    store: &mut Store,
    src: &str,
    dst: &str,
    sandbox: &Sandbox,
    tag: (&str, &str),
) -> Result<()> {
    let rec = agentbox_engine::agents::get(store, src)?;
    let was_running = rec.state == AgentState::Running;
    if was_running {
        agentbox_engine::pause::pause(home, store, src)?;
    }
    let made = (|| -> Result<()> {
        let dir = sandboxes::dir(home, dst);
        agentbox_engine::home::private_dir(&dir)?;
        agentbox_engine::tree::copy_for_agent(
            &sandboxes::user_home(home, src),
            &sandboxes::user_home(home, dst),
        )?;
        sandbox.save(home, dst)?;
        agentbox_engine::lifecycle::fork(home, store, src, dst, None, true)?;
        // The copy binds its own /home/user.
        let forked = agentbox_engine::agents::get(store, dst)?;
        let mut spec = SandboxSpec::decode(&forked.spec)?;
        let (from, to) = (sandboxes::user_home(home, src), sandboxes::user_home(home, dst));
        for m in &mut spec.mounts {
            if m.source == from {
                m.source = to.clone();
            }
        }
        store.set_spec(dst, &spec.encode()?)?;
        let mut tags: Vec<(String, String)> = forked.tags.into_iter().filter(|(k, _)| k != TAG.0).collect();
        tags.push((tag.0.to_string(), tag.1.to_string()));
        store.set_tags(dst, &tags)?;
        Ok(())
    })();
    if was_running {
        if let Err(e) = agentbox_engine::pause::resume(home, store, src) {
            crate::extract::warn(&format!("sandbox {src} stays paused after it was copied: {e}"));
        }
    }
    if made.is_err() {
        let _ = agentbox_engine::lifecycle::remove(home, store, dst, true);
        let _ = agentbox_engine::tree::remove_tree(&sandboxes::dir(home, dst));
    }
    made
}

/// A new running sandbox copied from sandbox or snapshot `src`, ending after `timeout_s`.
pub fn start_copy(
    home: &Home,
    store: &mut Store,
    src: &str,
    from: &Sandbox,
    metadata: Option<std::collections::BTreeMap<String, String>>,
    timeout_s: u64,
) -> Result<(String, Sandbox)> {
    let id = sandboxes::new_id();
    let now = agentbox_store::now_ms();
    let sandbox = Sandbox {
        token: sandboxes::new_token(),
        started_ms: now,
        end_ms: now + (timeout_s as i64) * 1000,
        metadata: metadata.unwrap_or_else(|| from.metadata.clone()),
        ..from.clone()
    };
    copy_sandbox(home, store, src, &id, &sandbox, TAG)?;
    if let Err(e) = agentbox_engine::lifecycle::restart(home, store, &id) {
        let _ = sandboxes::remove(home, store, &id);
        return Err(e);
    }
    Ok((id, sandbox))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkRequest {
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
}

/// `POST /sandboxes/{id}/fork`.
#[utoipa::path(post, path = "/sandboxes/{id}/fork", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])), request_body = super::doc::ForkRequest,
    responses((status = 201, body = Vec<super::doc::ForkResult>), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn fork(
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ForkRequest = serde_json::from_value(body_of(&raw)?)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid fork request: {e}")))?;
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_FORKS).contains(&count) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("count: between 1 and {MAX_FORKS}, not {count}"),
        ));
    }
    let timeout = timeout_secs(req.timeout)?;
    let home = state.home.clone();
    let results = blocking(move || {
        with_store(&home, |s| {
            let (rec, from) = sandboxes::get(&home, s, &id)?;
            if sandboxes::state(&rec).is_none() {
                return Err(Error::not_found(format!("sandbox {id} not found")));
            }
            let mut out = Vec::new();
            for _ in 0..count {
                out.push(match start_copy(&home, s, &id, &from, None, timeout) {
                    Ok((new, sandbox)) => json!({ "sandbox": sandbox_json(&new, &sandbox) }),
                    Err(e) => {
                        let status = crate::extract::status_of(e.kind());
                        json!({ "error": { "code": status.as_u16(), "message": e.to_string() } })
                    }
                });
            }
            Ok(out)
        })
    })
    .await?;
    state.refresh().await;
    Ok((StatusCode::CREATED, Json(Value::Array(results))).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct SnapshotRequest {
    #[serde(default)]
    name: Option<String>,
}

/// `POST /sandboxes/{id}/snapshots`.
#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])), request_body = super::doc::SnapshotRequest,
    responses((status = 201, body = super::doc::SnapshotInfo), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError), (status = 409, body = super::doc::E2bError)))]
pub async fn snapshot(
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: SnapshotRequest = serde_json::from_value(body_of(&raw)?)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid snapshot request: {e}")))?;
    let home = state.home.clone();
    let info = blocking(move || {
        with_store(&home, |s| {
            let (rec, mut from) = sandboxes::get(&home, s, &id)?;
            if sandboxes::state(&rec).is_none() {
                return Err(Error::not_found(format!("sandbox {id} not found")));
            }
            let snap = new_snapshot_id();
            // The snapshot remembers where it came from and what it was asked to be called.
            from.metadata.insert("agentbox.snapshot.of".into(), id.clone());
            if let Some(n) = &req.name {
                from.metadata.insert("agentbox.snapshot.name".into(), n.clone());
            }
            copy_sandbox(&home, s, &id, &snap, &from, SNAPSHOT_TAG)?;
            Ok(snapshot_json(&snap, &from))
        })
    })
    .await?;
    state.refresh().await;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

fn snapshot_json(id: &str, s: &Sandbox) -> Value {
    let mut names = vec![id.to_string()];
    if let Some(n) = s.metadata.get("agentbox.snapshot.name") {
        names.insert(0, n.clone());
    }
    json!({ "snapshotID": id, "names": names })
}

/// `GET /snapshots[?sandboxID=]`.
#[utoipa::path(get, path = "/snapshots", tag = "e2b", params(("sandboxID" = Option<String>, Query)), security(("e2b_api_key" = [])),
    responses((status = 200, body = Vec<super::doc::SnapshotInfo>), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError)))]
pub async fn list(State(state): State<Shared>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let of_sandbox = super::control::query_pairs(raw.as_deref())
        .into_iter()
        .find(|(k, _)| k == "sandboxID")
        .map(|(_, v)| v);
    let home = state.home.clone();
    let all = blocking(move || {
        with_store(&home, |s| {
            let mut out = Vec::new();
            for rec in agentbox_engine::agents::all(s)? {
                if !rec.tags.iter().any(|(k, v)| k == SNAPSHOT_TAG.0 && v == SNAPSHOT_TAG.1) {
                    continue;
                }
                let Some(sb) = Sandbox::load(&home, &rec.name) else { continue };
                let of = sb.metadata.get("agentbox.snapshot.of").cloned().unwrap_or_default();
                if of_sandbox.as_ref().is_none_or(|want| *want == of) {
                    out.push(snapshot_json(&rec.name, &sb));
                }
            }
            Ok(out)
        })
    })
    .await?;
    Ok(Json(Value::Array(all)).into_response())
}

/// `DELETE /templates/{id}`: a snapshot is removed (its agent and its files); 404 for anything
/// else (templates here are profiles, which are not removed through E2B).
#[utoipa::path(delete, path = "/templates/{id}", tag = "e2b", params(("id" = String, Path, description = "The snapshot's id")), security(("e2b_api_key" = [])),
    responses((status = 204), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn delete(State(state): State<Shared>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let home = state.home.clone();
    blocking(move || {
        with_store(&home, |s| {
            if !is_snapshot(s, &id) {
                return Err(Error::not_found(format!("snapshot {id} not found")));
            }
            agentbox_engine::lifecycle::remove(&home, s, &id, true)?;
            let _ = agentbox_engine::tree::remove_tree(&sandboxes::dir(&home, &id));
            Ok(())
        })
    })
    .await?;
    state.refresh().await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /sandboxes/{id}/metrics`: one sample of now.
#[utoipa::path(get, path = "/sandboxes/{id}/metrics", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])),
    responses((status = 200, body = Vec<super::doc::Metric>), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn metrics(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let home = state.home.clone();
    let sample = blocking(move || {
        with_store(&home, |s| {
            let (rec, _) = sandboxes::get(&home, s, &id)?;
            if sandboxes::state(&rec).is_none() {
                return Err(Error::not_found(format!("sandbox {id} not found")));
            }
            let usage = agentbox_engine::measure::measure(std::slice::from_ref(&rec));
            let u = usage.first().cloned();
            let spec = SandboxSpec::decode(&rec.spec)?;
            let disk = agentbox_engine::measure::disk_bytes(&agentbox_engine::agents::state_dir(&rec))
                + agentbox_engine::measure::disk_bytes(&sandboxes::dir(&home, &id));
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
            let mem_total = spec.limits.memory.unwrap_or_else(host_memory);
            let now = agentbox_store::now_ms();
            Ok(json!([{
                "timestamp": super::control::utc(now),
                "timestampUnix": now / 1000,
                "cpuCount": spec.limits.cpus.map_or(cpus, |c| c.ceil().max(1.0) as u64),
                "cpuUsedPct": u.as_ref().map_or(0.0, |u| u.cpu_percent),
                "memUsed": u.as_ref().map_or(0, |u| u.rss_bytes),
                "memTotal": mem_total,
                "memCache": 0,
                "diskUsed": disk,
                "diskTotal": disk_total(&home.root),
            }]))
        })
    })
    .await?;
    Ok(Json(sample).into_response())
}

/// The host's memory in bytes (`MemTotal`).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The size of the filesystem agentbox keeps its state on.
fn disk_total(root: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(root).map_or(0, |s| s.blocks() * s.fragment_size())
}
