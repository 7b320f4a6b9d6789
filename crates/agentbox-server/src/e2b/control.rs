//! E2B's control plane: create, list, get, kill, timeout, pause and connect (resume).

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::sandboxes::{self, Sandbox, TAG, USER_HOME};
use crate::state::Shared;
use crate::store::with_store;
use agentbox_core::{EnvArg, HostRule, MountArg, NetworkMode, SpawnSpec};
use agentbox_engine::{Error, Home};
use agentbox_store::AgentRecord;

/// The envd version the SDKs see: high enough that they use every call served here.
pub const ENVD_VERSION: &str = "0.6.4";
/// A sandbox lives this long without `timeout` (E2B's default).
const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The longest timeout accepted (E2B's own limit for paid plans: 24 hours).
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// `X-API-KEY` must be the server's controller token.
pub async fn require_api_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !state.tokens.is_controller_token(key) {
        let no = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-API-KEY: use the server's token (AGENTBOX_HOME/api-token) as E2B_API_KEY",
        );
        return sandboxes::refuse(req, no.into_response()).await;
    }
    next.run(req).await
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> agentbox_engine::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

pub(super) fn body_of(raw: &axum::body::Bytes) -> Result<Value, ApiError> {
    if raw.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID", default)]
    template_id: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    #[serde(default)]
    auto_pause: bool,
    #[serde(default)]
    network: Option<NetworkRules>,
    #[serde(default, rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkRules {
    #[serde(default)]
    allow_out: Vec<String>,
    // `denyOut` is read and needs nothing: everything allowOut does not name is denied here
    // already (and, as with E2B, allowOut wins over denyOut).
}

/// A sandbox's timeout in seconds: the default when not given, refused when 0 or over the limit.
pub(super) fn timeout_secs(t: Option<u64>) -> Result<u64, ApiError> {
    match t.unwrap_or(DEFAULT_TIMEOUT_SECS) {
        0 => Err(ApiError::new(StatusCode::BAD_REQUEST, "timeout must be at least 1 second")),
        t if t > MAX_TIMEOUT_SECS => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("timeout {t}s is over the limit of {MAX_TIMEOUT_SECS}s"),
        )),
        t => Ok(t),
    }
}

/// What the SDK reads after create and connect.
pub(super) fn sandbox_json(id: &str, s: &Sandbox) -> Value {
    json!({
        "templateID": s.template,
        "sandboxID": id,
        "clientID": "agentbox",
        "alias": s.template,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": s.token,
        "trafficAccessToken": null,
        "domain": null,
    })
}

/// A time in Unix milliseconds as E2B writes times (RFC 3339, UTC).
pub(super) fn utc(ms: i64) -> String {
    agentbox_proxy::format_utc(u64::try_from(ms).unwrap_or(0))
}

/// A sandbox as `get_info` and the list show it.
fn detail_json(rec: &AgentRecord, s: &Sandbox, state: &str) -> Value {
    let spec = agentbox_core::SandboxSpec::decode(&rec.spec).ok();
    let limits = spec.map(|s| s.limits).unwrap_or_default();
    json!({
        "templateID": s.template,
        "alias": s.template,
        "sandboxID": rec.name,
        "clientID": "agentbox",
        "startedAt": utc(s.started_ms),
        "endAt": utc(s.end_ms),
        "cpuCount": limits.cpus.map_or(1, |c| c.ceil().max(1.0) as u64),
        "memoryMB": limits.memory.map_or(0, |m| m >> 20),
        "diskSizeMB": 0,
        "state": state,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": s.token,
        "domain": null,
        "metadata": s.metadata,
    })
}

/// `POST /sandboxes`, `POST /v2/sandboxes`.
#[utoipa::path(post, path = "/v2/sandboxes", tag = "e2b", request_body = super::doc::NewSandbox, security(("e2b_api_key" = [])),
    responses((status = 201, body = super::doc::Sandbox), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError), (status = 409, body = super::doc::E2bError), (status = 500, body = super::doc::E2bError)))]
pub async fn create(State(state): State<Shared>, raw: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: NewSandbox = serde_json::from_value(body_of(&raw)?)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid sandbox request: {e}")))?;
    let timeout = timeout_secs(req.timeout)?;
    let home = state.home.clone();
    let (id, sandbox) = blocking(move || make(&home, req, timeout)).await?;
    state.refresh().await;
    Ok((StatusCode::CREATED, Json(sandbox_json(&id, &sandbox))).into_response())
}

fn make(home: &Home, req: NewSandbox, timeout: u64) -> agentbox_engine::Result<(String, Sandbox)> {
    let template = req.template_id.unwrap_or_else(|| "base".into());
    // A snapshot's id names a template too: the new sandbox is a copy of it (its files, its
    // settings; the request's metadata).
    if let Some(made) = with_store(home, |s| {
        if !super::snapshots::is_snapshot(s, &template) {
            return Ok(None);
        }
        if !req.env_vars.is_empty() || req.network.as_ref().is_some_and(|n| !n.allow_out.is_empty()) {
            return Err(Error::invalid(
                "a sandbox made from a snapshot has the snapshot's variables and network: leave envVars and \
                 network.allowOut out (or give them to the sandbox the snapshot is taken of)",
            ));
        }
        let from = Sandbox::load(home, &template).ok_or_else(|| {
            Error::not_found(format!("snapshot {template} is damaged: its sandbox.json is gone"))
        })?;
        super::snapshots::start_copy(home, s, &template, &from, Some(req.metadata.clone()), timeout).map(Some)
    })? {
        return Ok(made);
    }
    let profile = match template.as_str() {
        "base" => None,
        name => {
            agentbox_engine::profiles::load(home, name).map_err(|_| {
                Error::not_found(format!(
                    "template '{name}' not found: use 'base' (a shell) or an agentbox profile (`agentbox profiles`)"
                ))
            })?;
            Some(name.to_string())
        }
    };
    let mut env = Vec::new();
    for (k, v) in &req.env_vars {
        let arg = agentbox_core::parse_env_arg(&format!("{k}={v}"))
            .map_err(|e| Error::invalid(format!("envVars: {e}")))?;
        env.push(arg);
    }
    env.push(EnvArg::Set("HOME".into(), USER_HOME.into()));
    let mut allow = Vec::new();
    if let Some(n) = &req.network {
        for h in &n.allow_out {
            allow.push(h.parse::<HostRule>().map_err(|e| Error::invalid(format!("network.allowOut: {e}")))?);
        }
    }
    // Deny by default: a sandbox reaches the hosts allowOut names, through the egress proxy.
    let network = match (allow.is_empty(), req.allow_internet_access) {
        (_, Some(false)) | (true, _) => NetworkMode::None,
        (false, _) => NetworkMode::Proxy,
    };
    let id = sandboxes::new_id();
    let dir = sandboxes::dir(home, &id);
    std::fs::create_dir_all(dir.parent().unwrap_or(&home.root))?;
    agentbox_engine::home::private_dir(&dir)?;
    let undo = |e: Error| {
        let _ = agentbox_engine::tree::remove_tree(&dir);
        e
    };
    agentbox_engine::tree::agent_dir(&sandboxes::user_home(home, &id)).map_err(undo)?;
    let now = agentbox_store::now_ms();
    let sandbox = Sandbox {
        template: template.clone(),
        metadata: req.metadata,
        env: req.env_vars,
        token: sandboxes::new_token(),
        started_ms: now,
        end_ms: now + (timeout as i64) * 1000,
        auto_pause: req.auto_pause,
    };
    sandbox.save(home, &id).map_err(undo)?;
    let spec = SpawnSpec {
        name: id.clone(),
        profile,
        // The base template's sandbox waits; commands come through envd.
        command: if template == "base" { vec!["sleep".into(), "infinity".into()] } else { vec![] },
        tags: vec![(TAG.0.into(), TAG.1.into())],
        network: Some(network),
        egress: agentbox_core::EgressRequest { allow, ..Default::default() },
        env,
        volumes: vec![MountArg {
            source: sandboxes::user_home(home, &id),
            target: Some(USER_HOME.into()),
            writable: true,
        }],
        workdir: Some(USER_HOME.into()),
        ..Default::default()
    };
    agentbox_engine::spawn::spawn_in_child(home, &spec).map_err(undo)?;
    Ok((id, sandbox))
}

/// The list's query, read leniently (an unknown parameter is ignored, a wrong one is an E2B
/// error, never axum's plain-text rejection).
#[derive(Debug, Default)]
pub struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
}

/// `key=value` pairs of a raw query string, each decoded once.
pub(super) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect()
}

impl ListQuery {
    fn parse(q: Option<&str>) -> Result<Self, ApiError> {
        let mut out = Self::default();
        for (k, v) in query_pairs(q) {
            match k.as_str() {
                "metadata" => out.metadata = Some(v),
                "state" => out.state = Some(v),
                "nextToken" => out.next_token = Some(v),
                "limit" => {
                    out.limit = Some(v.parse().map_err(|_| {
                        ApiError::new(StatusCode::BAD_REQUEST, format!("limit '{v}' is not a whole number"))
                    })?)
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())) {
            (b'%', Some(h)) if u8::from_str_radix(h, 16).is_ok() => {
                out.push(u8::from_str_radix(h, 16).unwrap_or_default());
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `metadata=...` as it arrives, decoded once: form pairs (`k=v&k2=v2`, each part
/// form-encoded) whose keys and values the SDK had percent-encoded once more before joining them.
fn metadata_filter(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(&percent_decode(k)), percent_decode(&percent_decode(v)))
        })
        .collect()
}

/// `GET /sandboxes`, `GET /v2/sandboxes`: running and paused sandboxes, filtered by metadata and
/// state, a page at a time (`limit`, `nextToken` from the `x-next-token` header).
#[utoipa::path(get, path = "/v2/sandboxes", tag = "e2b", params(("metadata" = Option<String>, Query, description = "`key=value` pairs, `&`-joined and URL-encoded"), ("state" = Option<String>, Query, description = "`running`, `paused`, or both comma-separated"), ("nextToken" = Option<String>, Query), ("limit" = Option<u32>, Query)), security(("e2b_api_key" = [])),
    responses((status = 200, body = Vec<super::doc::SandboxDetail>), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError)))]
pub async fn list(State(state): State<Shared>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = ListQuery::parse(raw.as_deref())?;
    let wanted: Vec<String> = match &q.state {
        Some(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
        None => vec!["running".into(), "paused".into()],
    };
    if let Some(bad) = wanted.iter().find(|s| *s != "running" && *s != "paused") {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("state '{bad}': use running or paused")));
    }
    let filter = q.metadata.as_deref().map(metadata_filter).unwrap_or_default();
    let start: usize = match &q.next_token {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "nextToken is not one this server gave"))?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let home = state.home.clone();
    let mut found = blocking(move || with_store(&home, |s| sandboxes::all(&home, s))).await?;
    found.sort_by_key(|(_, s)| s.started_ms);
    let items: Vec<Value> = found
        .iter()
        .filter_map(|(rec, s)| Some((rec, s, sandboxes::state(rec)?)))
        .filter(|(_, _, st)| wanted.iter().any(|w| w == st))
        .filter(|(_, s, _)| filter.iter().all(|(k, v)| s.metadata.get(k) == Some(v)))
        .map(|(rec, s, st)| detail_json(rec, s, st))
        .collect();
    let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
    let mut headers = HeaderMap::new();
    let next = start.saturating_add(limit);
    if next < items.len() {
        if let Ok(v) = HeaderValue::from_str(&next.to_string()) {
            headers.insert("x-next-token", v);
        }
    }
    Ok((headers, Json(page)).into_response())
}

async fn found(state: &Shared, id: String) -> Result<(AgentRecord, Sandbox), ApiError> {
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| sandboxes::get(&home, s, &id))).await
}

/// `GET /sandboxes/{id}`.
#[utoipa::path(get, path = "/sandboxes/{id}", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])),
    responses((status = 200, body = super::doc::SandboxDetail), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn info(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (rec, s) = found(&state, id.clone()).await?;
    let st = sandboxes::state(&rec)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found")))?;
    Ok(Json(detail_json(&rec, &s, st)).into_response())
}

/// `DELETE /sandboxes/{id}`.
#[utoipa::path(delete, path = "/sandboxes/{id}", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])),
    responses((status = 204), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn kill(State(state): State<Shared>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let home = state.home.clone();
    let gone = id.clone();
    blocking(move || with_store(&home, |s| sandboxes::remove(&home, s, &gone))).await?;
    state.e2b.forget_sandbox(&id);
    state.refresh().await;
    Ok(StatusCode::NO_CONTENT)
}

fn set_deadline(state: &Shared, id: String, secs: u64) -> impl FnOnce() -> agentbox_engine::Result<()> {
    let home = state.home.clone();
    move || {
        with_store(&home, |s| {
            let (_, mut sandbox) = sandboxes::get(&home, s, &id)?;
            sandbox.end_ms = agentbox_store::now_ms() + (secs as i64) * 1000;
            sandbox.save(&home, &id)
        })
    }
}

/// `POST /sandboxes/{id}/timeout` `{timeout}`: the sandbox ends that many seconds from now.
#[utoipa::path(post, path = "/sandboxes/{id}/timeout", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])), request_body = super::doc::Timeout,
    responses((status = 204), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn timeout(
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let body = body_of(&raw)?;
    let secs = timeout_secs(Some(body["timeout"].as_u64().ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "timeout: give the seconds from now, a whole number")
    })?))?;
    blocking(set_deadline(&state, id, secs)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/refreshes` `{duration}`.
#[utoipa::path(post, path = "/sandboxes/{id}/refreshes", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])), request_body = super::doc::Refresh,
    responses((status = 204), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn refresh(
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let body = body_of(&raw)?;
    let secs = timeout_secs(Some(body["duration"].as_u64().unwrap_or(DEFAULT_TIMEOUT_SECS)))?;
    blocking(set_deadline(&state, id, secs)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/pause`: every process stopped, memory kept; 409 if paused already.
#[utoipa::path(post, path = "/sandboxes/{id}/pause", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])),
    responses((status = 204), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError), (status = 409, body = super::doc::E2bError)))]
pub async fn pause(State(state): State<Shared>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let home = state.home.clone();
    blocking(move || {
        with_store(&home, |s| {
            sandboxes::get(&home, s, &id)?;
            agentbox_engine::pause::pause(&home, s, &id).map(drop)
        })
    })
    .await?;
    state.refresh().await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v2/sandboxes/{id}/connect` (and `/sandboxes/{id}/connect`, `/resume`): a paused
/// sandbox resumes (201); a running one answers 200. A timeout given extends, never shortens.
#[utoipa::path(post, path = "/v2/sandboxes/{id}/connect", tag = "e2b", params(("id" = String, Path, description = "The sandbox's id")), security(("e2b_api_key" = [])), request_body = super::doc::Connect,
    responses((status = 200, body = super::doc::Sandbox), (status = 201, body = super::doc::Sandbox), (status = 400, body = super::doc::E2bError), (status = 401, body = super::doc::E2bError), (status = 404, body = super::doc::E2bError)))]
pub async fn connect(
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = body_of(&raw)?;
    let extend = match body.get("timeout").and_then(Value::as_u64) {
        Some(t) => Some(timeout_secs(Some(t))?),
        None => None,
    };
    let home = state.home.clone();
    let (resumed, sandbox) = blocking(move || {
        with_store(&home, |s| {
            let (rec, mut sandbox) = sandboxes::get(&home, s, &id)?;
            let resumed = match sandboxes::state(&rec) {
                Some("paused") => {
                    agentbox_engine::pause::resume(&home, s, &id)?;
                    true
                }
                Some(_) => false,
                None => return Err(Error::not_found(format!("sandbox {id} not found"))),
            };
            let now = agentbox_store::now_ms();
            let wanted = now + (extend.unwrap_or(DEFAULT_TIMEOUT_SECS) as i64) * 1000;
            if resumed || extend.is_some() {
                sandbox.end_ms = if resumed { wanted } else { sandbox.end_ms.max(wanted) };
                sandbox.save(&home, &id)?;
            }
            Ok((resumed, (id, sandbox)))
        })
    })
    .await?;
    state.refresh().await;
    let status = if resumed { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(sandbox_json(&sandbox.0, &sandbox.1))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_filters() {
        // As the query arrives once decoded: the SDK quoted each key and value first.
        assert_eq!(
            metadata_filter("k=v&team=web%2520x"),
            vec![("k".into(), "v".into()), ("team".into(), "web x".into())]
        );
        assert_eq!(metadata_filter(""), vec![]);
    }
}
