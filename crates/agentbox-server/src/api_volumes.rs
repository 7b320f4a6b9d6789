//! Volumes in the REST API: list, create, remove.

#![allow(unused_qualifications)] // from the path attributes

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{blocking, ApiJson, ApiResult, ErrorBody};
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::volumes::{self, VolumeView};

/// A volume to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVolume {
    /// a-z, 0-9 and '-', up to 63 characters.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    name: String,
}

/// Every volume, with its size and the live agents that use it.
#[utoipa::path(get, path = "/api/v1/volumes", tag = "volumes", responses((status = 200, body = Vec<VolumeView>)))]
pub async fn list_volumes(State(state): State<Shared>) -> ApiResult<Json<Vec<VolumeView>>> {
    let home = state.home.clone();
    Ok(Json(blocking(move || with_store(&home, |s| volumes::list(&home, s))).await?))
}

/// Make a volume (agents bind it with `volumes: ["NAME:/path"]`; a spawn also makes one it names).
#[utoipa::path(post, path = "/api/v1/volumes", tag = "volumes", request_body = NewVolume,
    responses((status = 201, body = VolumeView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_volume(
    State(state): State<Shared>,
    ApiJson(v): ApiJson<NewVolume>,
) -> ApiResult<(StatusCode, Json<VolumeView>)> {
    let home = state.home.clone();
    let made = blocking(move || volumes::create(&home, &v.name)).await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// Remove a volume and its files; 409 while a live agent uses it.
#[utoipa::path(delete, path = "/api/v1/volumes/{name}", tag = "volumes", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_volume(State(state): State<Shared>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let home = state.home.clone();
    blocking(move || with_store(&home, |s| volumes::remove(&home, s, &name))).await?;
    Ok(StatusCode::NO_CONTENT)
}
