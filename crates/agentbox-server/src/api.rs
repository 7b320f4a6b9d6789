//! The REST API under `/api/v1`. Handlers only translate HTTP to a `service` call and back; the
//! OpenAPI document is generated from the attributes on these handlers and the routes are
//! registered from the same attributes, so the two cannot disagree.

// The path attributes name parameter types in a way the lint mistakes for needless paths.
#![allow(unused_qualifications)]

use std::collections::BTreeMap;

use agentbox_core::HostRule;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{blocking, ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use super::state::{Shared, Usage};
use super::store::with_store;
use super::stream;
use agentbox_engine::views::{AgentView, Filter, ScreenView};
use agentbox_engine::{lifecycle, net, session};

use crate::spawn_request::SpawnRequest;

#[derive(OpenApi)]
#[openapi(
    info(title = "agentbox", description = "Sandboxed AI coding agents: spawn, watch and steer them."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "agents"), (name = "sessions"), (name = "network"), (name = "events"), (name = "tasks"), (name = "hitl"), (name = "volumes"), (name = "workspaces"), (name = "server"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes and its OpenAPI document, built together.
pub fn router() -> (axum::Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_agents, spawn_agent))
        .routes(routes!(get_agent, remove_agent))
        .routes(routes!(kill_agent))
        .routes(routes!(stop_agent))
        .routes(routes!(clean_agents))
        .routes(routes!(restart_agent))
        .routes(routes!(pause_agent))
        .routes(routes!(resume_agent))
        .routes(routes!(set_tags))
        .routes(routes!(get_screen))
        .routes(routes!(send_input))
        .routes(routes!(resize))
        .routes(routes!(stream::get_logs))
        .routes(routes!(get_net))
        .routes(routes!(allow_host))
        .routes(routes!(revoke_host))
        .routes(routes!(stream::get_events))
        .routes(routes!(list_profiles))
        .routes(routes!(super::api_volumes::list_volumes, super::api_volumes::create_volume))
        .routes(routes!(super::api_volumes::remove_volume))
        .routes(routes!(super::api_archive::get_archive, super::api_archive::put_archive))
        .routes(routes!(super::api_workspace::get_changes))
        .routes(routes!(super::api_workspace::apply_changes))
        .routes(routes!(super::api_workspace::undo_apply))
        .routes(routes!(super::api_workspace::get_patch))
        .routes(routes!(super::api_workspace::make_branch))
        .routes(routes!(super::api_workspace::list_checkpoints, super::api_workspace::create_checkpoint))
        .routes(routes!(super::api_workspace::remove_checkpoint))
        .routes(routes!(super::api_workspace::rollback))
        .routes(routes!(super::api_workspace::fork_agent))
        .routes(routes!(super::ports::list_ports))
        .routes(routes!(super::ports::port_ticket))
        .routes(routes!(super::api_tasks::list_tasks, super::api_tasks::submit_task))
        .routes(routes!(super::api_tasks::get_task, super::api_tasks::cancel_task))
        .routes(routes!(super::api_tasks::list_artifacts))
        .routes(routes!(super::api_tasks::get_artifact))
        .routes(routes!(super::api_tasks::task_logs))
        .routes(routes!(super::api_tasks::list_hitl))
        .routes(routes!(super::api_tasks::answer_hitl))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .split_for_parts();
    (router, with_common_errors(doc))
}

/// Adds the answers every operation can give, which the middleware (not the handler) produces:
/// 401 without a valid token, 403 for a change with the viewer token, 415 for a body that is not
/// JSON.
fn with_common_errors(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
        for (i, op) in ops.into_iter().enumerate() {
            let Some(op) = op.as_mut() else { continue };
            let public = op.security.as_ref().is_some_and(|s| s.iter().all(|r| r == &Default::default()));
            if !public {
                op.responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| error("missing or wrong token").into());
            }
            if i > 0 {
                op.responses
                    .responses
                    .entry("403".into())
                    .or_insert_with(|| error("the token may only read").into());
            }
            if op.request_body.is_some() {
                op.responses
                    .responses
                    .entry("415".into())
                    .or_insert_with(|| error("the body is not JSON").into());
            }
        }
    }
    doc
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `running` (starting or running) or `exited` (every other state).
    status: Option<String>,
    /// Only agents with these tags: `KEY=VAL[,KEY=VAL...]`.
    tag: Option<String>,
}

fn parse_tags(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| agentbox_engine::agents::parse_tag(t).map_err(ApiError::bad_request))
        .collect()
}

/// List agents.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(ListQuery),
    responses((status = 200, body = Vec<AgentView>), (status = 400, body = ErrorBody)))]
pub async fn list_agents(
    State(state): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let snapshot = state.fresh_snapshot().await;
    if q.status.is_none() && q.tag.is_none() {
        return Ok(
            ([(axum::http::header::CONTENT_TYPE, "application/json")], snapshot.json.clone()).into_response()
        );
    }
    let filter = Filter {
        tags: q.tag.as_deref().map(parse_tags).transpose()?.unwrap_or_default(),
        status: q.status.as_deref().map(Filter::parse_status).transpose()?,
    };
    let agents: Vec<&AgentView> = snapshot.agents.iter().filter(|a| filter.matches(a)).collect();
    Ok(Json(agents).into_response())
}

/// Spawn an agent. The sandbox is built by a fresh agentbox process, never inside the server's
/// threads.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = SpawnRequest,
    responses((status = 201, body = AgentView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn spawn_agent(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<SpawnRequest>,
) -> ApiResult<Response> {
    let view = super::spawner::spawn(&state.home, &req).await?;
    state.refresh().await;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// An agent, its resolved sandbox spec and its current CPU and memory use.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: AgentView,
    /// The resolved sandbox spec.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub usage: Option<Usage>,
    /// The agent's did:key, when spawned with an identity.
    pub identity: Option<String>,
}

/// Get one agent.
#[utoipa::path(get, path = "/api/v1/agents/{name}", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, body = AgentDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_agent(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<AgentDetail>> {
    let home = state.home.clone();
    let rec = blocking(move || with_store(&home, |s| agentbox_engine::agents::get(s, &name))).await?;
    let usage = state.usage().get(&rec.name).copied();
    Ok(Json(AgentDetail {
        agent: AgentView::of(&rec),
        spec: serde_json::from_str(&rec.spec).unwrap_or(serde_json::Value::Null),
        usage,
        identity: agentbox_engine::identity::did(&agentbox_engine::agents::state_dir(&rec)),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Kill the agent first if it runs.
    force: Option<bool>,
}

/// Remove an agent: its workspace, home, logs and record.
#[utoipa::path(delete, path = "/api/v1/agents/{name}", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), RemoveQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_agent(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| lifecycle::remove(&home, s, &name, q.force.unwrap_or(false))))
        .await?;
    state.refresh().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove every stopped agent, and what crashes left behind (names whose spawn died, agent
/// directories no agent owns). Answers what was removed.
#[utoipa::path(post, path = "/api/v1/clean", tag = "agents", responses((status = 200, body = Vec<String>)))]
pub async fn clean_agents(State(state): State<Shared>) -> ApiResult<Json<Vec<String>>> {
    let home = state.home.clone();
    let removed = blocking(move || with_store(&home, |s| lifecycle::clean(&home, s))).await?;
    state.refresh().await;
    Ok(Json(removed))
}

/// Kill an agent's sandbox; answers once it is gone.
#[utoipa::path(post, path = "/api/v1/agents/{name}/kill", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn kill_agent(State(state): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<AgentView>> {
    let home = state.home.clone();
    let rec = blocking(move || with_store(&home, |s| lifecycle::kill(&home, s, &name))).await?;
    state.refresh().await;
    Ok(Json(AgentView::of(&rec)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopQuery {
    /// Seconds the agent has to end after SIGTERM before it is killed (default 10, at most 3600).
    #[param(maximum = 3600)]
    grace: Option<u64>,
}

/// Stop an agent: SIGTERM to its command's process group, then killed after the grace period.
/// Not restarted by its restart policy. Answers 200 once it has ended, or 202 with it still
/// running when it takes longer than 5 seconds (the server kills it when the grace is over).
#[utoipa::path(post, path = "/api/v1/agents/{name}/stop", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), StopQuery),
    responses((status = 200, body = AgentView), (status = 202, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_agent(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<StopQuery>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
    let grace = q.grace.unwrap_or(10);
    if grace > 3600 {
        return Err(
            agentbox_engine::Error::invalid(format!("grace: {grace} is more than 3600 seconds")).into()
        );
    }
    let grace = std::time::Duration::from_secs(grace);
    let home = state.home.clone();
    let asked = blocking(move || with_store(&home, |s| lifecycle::ask_to_stop(s, &name, grace))).await?;
    let asked = match asked {
        lifecycle::StopAsked::Ended(rec) => return Ok((StatusCode::OK, Json(AgentView::of(&rec)))),
        lifecycle::StopAsked::Asked(rec) => rec,
    };
    let (home, first) = (state.home.clone(), asked.clone());
    let quick = grace.min(ANSWER_WITHIN);
    if quick == grace {
        // The whole grace fits in the answer: waited, then killed if need be.
        let rec =
            blocking(move || with_store(&home, |s| lifecycle::end_stop(&home, s, &first, quick))).await?;
        state.refresh().await;
        return Ok((StatusCode::OK, Json(AgentView::of(&rec))));
    }
    let ended = blocking(move || with_store(&home, |s| lifecycle::wait_stopped(s, &first, quick))).await?;
    if let Some(rec) = ended {
        state.refresh().await;
        return Ok((StatusCode::OK, Json(AgentView::of(&rec))));
    }
    // Still running: the rest of the grace, then the kill, go on here.
    let home = state.home.clone();
    let rest = grace.saturating_sub(quick);
    let view = AgentView::of(&asked);
    tokio::task::spawn_blocking(move || {
        let _ = with_store(&home, |s| lifecycle::end_stop(&home, s, &asked, rest));
    });
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Start an agent again (killing it first if it runs); its prompt is typed again.
#[utoipa::path(post, path = "/api/v1/agents/{name}/restart", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn restart_agent(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let home = state.home.clone();
    let rec = blocking(move || with_store(&home, |s| lifecycle::restart(&home, s, &name))).await?;
    state.refresh().await;
    Ok(Json(AgentView::of(&rec)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PauseQuery {
    /// Instead of pausing now: pause the agent whenever it has been idle (no output, no input)
    /// this long (`90`, `30s`, `10m`, `1h`), input resuming it; `off` (or `0`) turns that off.
    after: Option<String>,
}

/// Pause a running agent: every process of its sandbox stopped (no CPU), memory kept, its
/// output waiting; `paused` until resumed. 409 if it is not running. With `after`, it is
/// paused whenever it has been idle that long instead.
#[utoipa::path(post, path = "/api/v1/agents/{name}/pause", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), PauseQuery),
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause_agent(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PauseQuery>,
) -> ApiResult<Json<AgentView>> {
    let home = state.home.clone();
    let after = match q.after.as_deref() {
        Some(a) => {
            Some(agentbox_core::parse_idle(a).map_err(|e| ApiError::bad_request(format!("after: {e}")))?)
        }
        None => None,
    };
    let rec = blocking(move || {
        with_store(&home, |s| match after {
            Some(after) => agentbox_engine::pause::when_idle(&home, s, &name, after),
            None => agentbox_engine::pause::pause(&home, s, &name),
        })
    })
    .await?;
    state.refresh().await;
    Ok(Json(AgentView::of(&rec)))
}

/// Resume a paused agent. 409 if it is not paused.
#[utoipa::path(post, path = "/api/v1/agents/{name}/resume", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume_agent(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let home = state.home.clone();
    let rec =
        blocking(move || with_store(&home, |s| agentbox_engine::pause::resume(&home, s, &name))).await?;
    state.refresh().await;
    Ok(Json(AgentView::of(&rec)))
}

/// Replace an agent's tags.
#[utoipa::path(put, path = "/api/v1/agents/{name}/tags", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = BTreeMap<String, String>,
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_tags(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(tags): ApiJson<BTreeMap<String, String>>,
) -> ApiResult<Json<AgentView>> {
    let home = state.home.clone();
    let rec = blocking(move || with_store(&home, |s| lifecycle::set_tags(s, &name, &tags))).await?;
    state.refresh().await;
    Ok(Json(AgentView::of(&rec)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScreenQuery {
    /// Keep colours and attributes as escape sequences.
    ansi: Option<bool>,
}

/// The agent's screen as it is now (its last screen once it ended).
#[utoipa::path(get, path = "/api/v1/agents/{name}/screen", tag = "sessions", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), ScreenQuery),
    responses((status = 200, body = ScreenView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_screen(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ScreenQuery>,
) -> ApiResult<Json<ScreenView>> {
    let home = state.home.clone();
    let (rec, screen) =
        blocking(move || with_store(&home, |s| session::screen(s, &name, q.ansi.unwrap_or(false)))).await?;
    Ok(Json(ScreenView { name: rec.name, state: rec.state.to_string(), screen }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputBody {
    /// Text to type.
    pub text: String,
    /// Press Enter afterwards (default true).
    #[serde(default)]
    pub enter: Option<bool>,
}

/// Type text into a running agent's terminal.
#[utoipa::path(post, path = "/api/v1/agents/{name}/input", tag = "sessions", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = InputBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn send_input(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<InputBody>,
) -> ApiResult<StatusCode> {
    let mut bytes = body.text.into_bytes();
    if body.enter.unwrap_or(true) {
        bytes.push(b'\r');
    }
    if bytes.len() > agentbox_supervisor::protocol::MAX_FRAME {
        return Err(ApiError::bad_request("input is larger than 1 MiB; send it in parts"));
    }
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| session::send(s, &name, &bytes))).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeBody {
    pub rows: u16,
    pub cols: u16,
}

/// Resize a running agent's terminal.
#[utoipa::path(post, path = "/api/v1/agents/{name}/resize", tag = "sessions", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = ResizeBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resize(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ResizeBody>,
) -> ApiResult<StatusCode> {
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| session::resize(s, &name, body.rows, body.cols))).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NetQuery {
    /// The newest N records (default 1000).
    limit: Option<usize>,
}

/// The agent's network audit: one record per proxy decision and per closed connection.
#[utoipa::path(get, path = "/api/v1/agents/{name}/net", tag = "network", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), NetQuery),
    responses((status = 200, body = Vec<Object>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_net(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<NetQuery>,
) -> ApiResult<Json<Vec<agentbox_proxy::AuditRecord>>> {
    let home = state.home.clone();
    let limit = q.limit.unwrap_or(1000);
    Ok(Json(blocking(move || with_store(&home, |s| net::net_records(s, &name, limit))).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowBody {
    /// A host (api.example.com), a domain (*.example.com) or an IP address.
    pub host: String,
    /// For the next connection only.
    #[serde(default)]
    pub once: bool,
    /// For every agent from now on (the config's allow list).
    #[serde(default)]
    pub always: bool,
}

/// Let a proxy-mode agent reach a host.
#[utoipa::path(post, path = "/api/v1/agents/{name}/allow", tag = "network", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = AllowBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn allow_host(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<AllowBody>,
) -> ApiResult<StatusCode> {
    let rule: HostRule = body.host.parse().map_err(ApiError::bad_request)?;
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| net::allow(&home, s, &name, &rule, body.once, body.always)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// The rule as it was allowed (api.example.com, *.example.com, an IP address).
    pub host: String,
    /// Off the config's allow list too (every agent from now on).
    #[serde(default)]
    pub always: bool,
}

/// Take a host off a proxy-mode agent's allowlist: new connections to it are refused.
#[utoipa::path(post, path = "/api/v1/agents/{name}/deny", tag = "network", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = RevokeBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_host(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RevokeBody>,
) -> ApiResult<StatusCode> {
    let rule: HostRule = body.host.parse().map_err(ApiError::bad_request)?;
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| net::revoke(&home, s, &name, &rule, body.always))).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileInfo {
    pub name: String,
    /// built-in, or the file it comes from.
    pub origin: String,
}

/// Agent profiles a spawn may name.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "agents", responses((status = 200, body = Vec<ProfileInfo>)))]
pub async fn list_profiles(State(state): State<Shared>) -> ApiResult<Json<Vec<ProfileInfo>>> {
    let home = state.home.clone();
    let all = blocking(move || agentbox_engine::profiles::all(&home)).await?;
    Ok(Json(all.into_iter().map(|(p, origin)| ProfileInfo { name: p.name, origin }).collect()))
}

/// Liveness: the server answers. Needs no token.
#[utoipa::path(get, path = "/healthz", tag = "server", security(()), responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the state database can be read.
#[utoipa::path(get, path = "/readyz", tag = "server", responses((status = 200, body = String), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<Shared>) -> Response {
    let home = state.home.clone();
    match blocking(move || with_store(&home, |s| Ok(s.events(1, None)?))).await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.message).into_response(),
    }
}
