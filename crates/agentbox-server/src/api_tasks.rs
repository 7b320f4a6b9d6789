//! Tasks and HITL requests in the REST API.

#![allow(unused_qualifications)] // from the path attributes

use std::convert::Infallible;
use std::io::Read;
use std::time::Duration;

use agentbox_core::ManifestFormat;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::wants_stream;
use super::extract::{blocking, ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::session;
use agentbox_engine::tasks::artifacts::{self, Artifact};
use agentbox_engine::tasks::{self, TaskDetail, TaskView};
use agentbox_engine::views::HitlView;

/// A task to run: the manifest as a JSON object (the same document a YAML file holds).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

/// List tasks, oldest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", responses((status = 200, body = Vec<TaskView>)))]
pub async fn list_tasks(State(state): State<Shared>) -> ApiResult<Json<Vec<TaskView>>> {
    let home = state.home.clone();
    Ok(Json(blocking(move || with_store(&home, |s| tasks::list(&home, s))).await?))
}

/// Submit a task; it starts when a slot in the queue is free.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", request_body = SubmitRequest,
    responses((status = 201, body = TaskView), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn submit_task(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> ApiResult<Response> {
    let home = state.home.clone();
    let view = blocking(move || {
        let text = serde_json::to_string(&req.manifest)?;
        let manifest = tasks::parse_manifest(&text, ManifestFormat::Json)?;
        with_store(&home, |s| tasks::submit(&home, s, &manifest))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Get one task (a unique prefix of its id will do).
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, pattern = r"^[0-9a-f]{1,12}$")),
    responses((status = 200, body = TaskDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_task(State(state): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<TaskDetail>> {
    let home = state.home.clone();
    let detail = blocking(move || with_store(&home, |s| tasks::detail(&home, s, &id))).await?;
    Ok(Json(detail))
}

/// Cancel a task, whatever state it is in (its agent is killed); 409 once it has ended.
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, pattern = r"^[0-9a-f]{1,12}$")),
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_task(State(state): State<Shared>, Path(id): Path<String>) -> ApiResult<Json<TaskView>> {
    let home = state.home.clone();
    let view = blocking(move || with_store(&home, |s| tasks::cancel(&home, s, &id))).await?;
    state.refresh().await;
    Ok(Json(view))
}

/// List a task's artifacts (files in its output directory).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/artifacts", tag = "tasks", params(("id" = String, Path, pattern = r"^[0-9a-f]{1,12}$")),
    responses((status = 200, body = Vec<Artifact>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_artifacts(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Artifact>>> {
    let home = state.home.clone();
    let list = blocking(move || {
        with_store(&home, |s| {
            let t = tasks::get(&home, s, &id)?;
            artifacts::list(std::path::Path::new(&t.output_dir))
        })
    })
    .await?;
    Ok(Json(list))
}

/// Download one artifact; `path` is relative to the output directory, its slashes escaped (%2F).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/artifacts/{path}", tag = "tasks",
    params(("id" = String, Path, pattern = r"^[0-9a-f]{1,12}$"), ("path" = String, Path)),
    responses((status = 200, body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_artifact(
    State(state): State<Shared>,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let home = state.home.clone();
    let (bytes, name) = blocking(move || {
        with_store(&home, |s| {
            let t = tasks::get(&home, s, &id)?;
            let (mut f, size) = artifacts::open(std::path::Path::new(&t.output_dir), &path)?;
            if size > 256 << 20 {
                return Err(agentbox_engine::Error::refused(
                    "artifact larger than 256 MiB: use `agentbox task artifacts --download` on the server",
                ));
            }
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf)?;
            let name = path.rsplit('/').next().unwrap_or("artifact").to_string();
            Ok((buf, name))
        })
    })
    .await?;
    let safe: String = name.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{safe}\"")),
        ],
        Body::from(bytes),
    )
        .into_response())
}

/// The log of a task's current attempt as text; with `Accept: text/event-stream`, `state` events
/// as the task moves, `log` events with new output (across retries), and `end` once it ended.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/logs", tag = "tasks", params(("id" = String, Path, pattern = r"^[0-9a-f]{1,12}$")),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn task_logs(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let home = state.home.clone();
    let i = id.clone();
    let t = blocking(move || with_store(&home, |s| tasks::get(&home, s, &i))).await?;
    if !wants_stream(&headers) {
        let home = state.home.clone();
        let text = blocking(move || {
            with_store(&home, |s| {
                Ok(match tasks::log_path(&home, s, &t) {
                    Some(p) => agentbox_engine::logs::plain(&std::fs::read(p).unwrap_or_default()),
                    None => Vec::new(),
                })
            })
        })
        .await?;
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    Ok(Sse::new(task_stream(state, t.id)).keep_alive(KeepAlive::default()).into_response())
}

struct TaskFollow {
    state: Shared,
    id: String,
    last_state: Option<agentbox_core::TaskState>,
    log: tasks::LogCursor,
    queue: Vec<SseEvent>,
    done: bool,
}

fn task_stream(state: Shared, id: String) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let f = TaskFollow {
        state,
        id,
        last_state: None,
        log: tasks::LogCursor::default(),
        queue: Vec::new(),
        done: false,
    };
    futures_util::stream::unfold(f, |mut f| async move {
        loop {
            if !f.queue.is_empty() {
                let ev = f.queue.remove(0);
                return Some((Ok(ev), f));
            }
            if f.done {
                return None;
            }
            let (home, id, mut log) = (f.state.home.clone(), f.id.clone(), f.log.clone());
            let polled = blocking(move || {
                with_store(&home, |s| {
                    let t = tasks::get(&home, s, &id)?;
                    let text = log.next(&home, s, &t)?;
                    Ok((t, log, text))
                })
            })
            .await;
            match polled {
                Ok((t, log, text)) => {
                    f.log = log;
                    if !text.is_empty() {
                        let body = serde_json::json!({ "text": text });
                        f.queue.push(SseEvent::default().event("log").json_data(body).unwrap_or_default());
                    }
                    if Some(t.state) != f.last_state {
                        f.last_state = Some(t.state);
                        f.queue.push(SseEvent::default().event("state").json_data(&t).unwrap_or_default());
                    }
                    if t.state.is_final() && text.is_empty() {
                        f.queue.push(SseEvent::default().event("end").json_data(&t).unwrap_or_default());
                        f.done = true;
                    }
                }
                Err(e) => {
                    f.queue.push(SseEvent::default().event("error").data(e.message));
                    f.done = true;
                }
            }
            if f.queue.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HitlQuery {
    /// Answered and closed requests too (default: open ones only).
    all: Option<bool>,
}

/// HITL requests: agents waiting on a person, newest first.
#[utoipa::path(get, path = "/api/v1/hitl", tag = "hitl", params(HitlQuery), responses((status = 200, body = Vec<HitlView>), (status = 400, body = ErrorBody)))]
pub async fn list_hitl(
    State(state): State<Shared>,
    ApiQuery(q): ApiQuery<HitlQuery>,
) -> ApiResult<Json<Vec<HitlView>>> {
    let home = state.home.clone();
    let all = q.all.unwrap_or(false);
    let list = blocking(move || with_store(&home, |s| Ok(s.hitl_list(!all, 500)?))).await?;
    Ok(Json(list.iter().map(HitlView::of).collect()))
}

/// An answer, typed into the agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    #[serde(alias = "response")]
    pub text: String,
    /// Press Enter after the text (default true).
    #[serde(default)]
    pub enter: Option<bool>,
}

/// Answer a HITL request: the text (and Enter) is typed into the agent, the request closes.
#[utoipa::path(post, path = "/api/v1/hitl/{id}/answer", tag = "hitl", params(("id" = String, Path, pattern = r"^[0-9]{1,18}$")), request_body = AnswerRequest,
    responses((status = 200, body = HitlView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn answer_hitl(
    State(state): State<Shared>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AnswerRequest>,
) -> ApiResult<Json<HitlView>> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{id}' is not a request id (see GET /api/v1/hitl)")))?;
    let home = state.home.clone();
    let r = blocking(move || {
        with_store(&home, |s| session::answer_hitl(s, id, &req.text, req.enter.unwrap_or(true)))
    })
    .await?;
    Ok(Json(HitlView::of(&r)))
}
