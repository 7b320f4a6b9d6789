//! Workspaces in the REST API: what an agent changed, applying it back (and undoing that),
//! checkpoints, rollback and fork.

#![allow(unused_qualifications)] // from the path attributes

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{blocking, ApiJson, ApiResult, ErrorBody};
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::views::AgentView;
use agentbox_engine::workspace::apply::{self, Applied, ApplyRequest};
use agentbox_engine::workspace::changes::Change;
use agentbox_engine::workspace::checkpoint::{self, Checkpoint};
use agentbox_engine::workspace::gitapply::{BranchMade, BranchRequest};

/// A checkpoint to take.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCheckpoint {
    /// What it is (shown in the list).
    #[serde(default)]
    message: String,
}

/// A fork to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFork {
    /// The new agent's name.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    name: String,
    /// From this checkpoint rather than the agent as it is now.
    #[serde(default)]
    at: Option<String>,
    /// Made but not started.
    #[serde(default)]
    stopped: bool,
}

/// An undo of the last apply.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UndoApply {
    /// Undo paths changed since the apply too.
    #[serde(default)]
    force: bool,
}

/// What the agent changed in its workspace since spawn (`A`, `M`, `D`, `R` with `from`).
#[utoipa::path(get, path = "/api/v1/agents/{name}/changes", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, body = Vec<Object>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_changes(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Change>>> {
    let home = state.home.clone();
    Ok(Json(blocking(move || with_store(&home, |s| agentbox_engine::diff::changes_of(s, &name))).await?))
}

/// Write the agent's changes into the directory its workspace was made from (or `to`); 409
/// listing the paths that changed there since the agent started, unless `force`.
#[utoipa::path(post, path = "/api/v1/agents/{name}/apply", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = ApplyRequest,
    responses((status = 200, body = Applied), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn apply_changes(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ApplyRequest>,
) -> ApiResult<Json<Applied>> {
    let home = state.home.clone();
    Ok(Json(blocking(move || with_store(&home, |s| apply::apply(&home, s, &name, &req))).await?))
}

/// A `--from-git` agent's work since the commit it was spawned on, as one binary-safe patch
/// (`git apply` takes it); empty when nothing changed. 400 for another kind of workspace.
#[utoipa::path(get, path = "/api/v1/agents/{name}/patch", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, content_type = "text/x-diff", body = String), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_patch(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let home = state.home.clone();
    let patch = blocking(move || agentbox_engine::workspace::gitapply::patch(&home, &name)).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/x-diff")], patch).into_response())
}

/// A `--from-git` agent's work as one commit on a new branch of a repository on the server (the
/// local one it was cloned from, or `to`); 409 if the branch exists (unless `force`).
#[utoipa::path(post, path = "/api/v1/agents/{name}/branch", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = BranchRequest,
    responses((status = 200, body = BranchMade), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn make_branch(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<BranchRequest>,
) -> ApiResult<Json<BranchMade>> {
    let home = state.home.clone();
    let made = blocking(move || {
        agentbox_engine::workspace::gitapply::branch(&home, &name, &req.branch, req.to.as_deref(), req.force)
    })
    .await?;
    Ok(Json(made))
}

/// Put back what the agent's last apply overwrote or removed.
#[utoipa::path(post, path = "/api/v1/agents/{name}/apply/undo", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = UndoApply,
    responses((status = 200, body = Applied), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn undo_apply(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UndoApply>,
) -> ApiResult<Json<Applied>> {
    let home = state.home.clone();
    Ok(Json(blocking(move || with_store(&home, |s| apply::undo(&home, s, &name, req.force))).await?))
}

/// The agent's checkpoints, oldest first.
#[utoipa::path(get, path = "/api/v1/agents/{name}/checkpoints", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, body = Vec<Checkpoint>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_checkpoints(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    let home = state.home.clone();
    Ok(Json(blocking(move || with_store(&home, |s| checkpoint::list(s, &name))).await?))
}

/// Save the agent's workspace and home as a checkpoint (a running agent is frozen while it is
/// taken).
#[utoipa::path(post, path = "/api/v1/agents/{name}/checkpoints", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = NewCheckpoint,
    responses((status = 201, body = Checkpoint), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_checkpoint(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NewCheckpoint>,
) -> ApiResult<(StatusCode, Json<Checkpoint>)> {
    let home = state.home.clone();
    let made =
        blocking(move || with_store(&home, |s| checkpoint::create(&home, s, &name, &req.message))).await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// Remove one checkpoint.
#[utoipa::path(delete, path = "/api/v1/agents/{name}/checkpoints/{id}", tag = "workspaces",
    params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), ("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_checkpoint(
    State(state): State<Shared>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| checkpoint::remove(&home, s, &name, &id))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Put the agent's workspace and home back as a checkpoint saved them; a live agent restarts on
/// that state.
#[utoipa::path(post, path = "/api/v1/agents/{name}/checkpoints/{id}/rollback", tag = "workspaces",
    params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), ("id" = String, Path)),
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rollback(
    State(state): State<Shared>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<AgentView>> {
    let home = state.home.clone();
    let rec = blocking(move || with_store(&home, |s| checkpoint::rollback(&home, s, &name, &id))).await?;
    state.refresh().await;
    Ok(Json(AgentView::of(&rec)))
}

/// A new agent from this one (as it is, or at a checkpoint): workspace, home and spec. It starts
/// unless `stopped`.
#[utoipa::path(post, path = "/api/v1/agents/{name}/fork", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = NewFork,
    responses((status = 201, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn fork_agent(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NewFork>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    let home = state.home.clone();
    let rec = blocking(move || {
        with_store(&home, |s| {
            agentbox_engine::lifecycle::fork(&home, s, &name, &req.name, req.at.as_deref(), req.stopped)
        })
    })
    .await?;
    state.refresh().await;
    Ok((StatusCode::CREATED, Json(AgentView::of(&rec))))
}
