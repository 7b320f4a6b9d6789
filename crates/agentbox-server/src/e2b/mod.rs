//! E2B compatibility: `agentbox serve` also speaks the API E2B's own SDKs use, at its root, so
//! that code written for E2B runs here by changing `E2B_API_URL` and `E2B_SANDBOX_URL`.
//!
//! A sandbox is an agent (tag `created-by=e2b`): same engine, isolation and policy, visible in
//! `agentbox list`, the dashboard and the journal. Two surfaces:
//!
//! - the control plane (`/sandboxes`, `/v2/sandboxes`), authenticated by `X-API-KEY` (the
//!   server's controller token), with E2B's `{code, message}` errors ([`control`]);
//! - envd, the in-sandbox API, which the SDK sends for every sandbox to one URL with the
//!   sandbox named in `E2b-Sandbox-Id` and the sandbox's own token in `X-Access-Token`: the
//!   Connect-RPC services `process.Process` and `filesystem.Filesystem` (JSON codec, see
//!   [`connect`]) and the REST `/files` and `/health` ([`process`], [`fs`], [`files`]).
//!
//! Every process and every file operation goes through `agentbox exec` (the same path as the
//! CLI's): it joins the sandbox's namespaces, so nothing here follows a path the agent made on
//! the host.

mod connect;
mod control;
mod doc;
mod error;
mod files;
mod fs;
mod helper;
mod process;
mod sandboxes;
mod snapshots;

use axum::routing::{get, post};
use axum::Router;

use super::state::Shared;

pub use process::Processes;
pub use sandboxes::start_reaper;

/// The control plane's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <doc::E2bDoc as utoipa::OpenApi>::openapi()
}

/// The largest Connect request taken (a command's input, a path): files go through `/files`.
const RPC_BODY: usize = 16 << 20;

/// The E2B routes, each with its own authentication (not the agentbox API's token header).
pub fn router(state: &Shared) -> Router<Shared> {
    let control = Router::new()
        .route("/sandboxes", post(control::create).get(control::list))
        .route("/v2/sandboxes", post(control::create).get(control::list))
        .route("/sandboxes/{id}", get(control::info).delete(control::kill))
        .route("/sandboxes/{id}/timeout", post(control::timeout))
        .route("/sandboxes/{id}/refreshes", post(control::refresh))
        .route("/sandboxes/{id}/pause", post(control::pause))
        .route("/sandboxes/{id}/resume", post(control::connect))
        .route("/sandboxes/{id}/connect", post(control::connect))
        .route("/v2/sandboxes/{id}/connect", post(control::connect))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/sandboxes/{id}/snapshots", post(snapshots::snapshot))
        .route("/sandboxes/{id}/metrics", get(snapshots::metrics))
        .route("/snapshots", get(snapshots::list))
        .route("/templates/{id}", axum::routing::delete(snapshots::delete))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), control::require_api_key));
    let envd = Router::new()
        .route("/health", get(fs::health))
        .route(
            "/files",
            get(files::download)
                .post(files::upload)
                .layer(axum::extract::DefaultBodyLimit::max(files::MAX_UPLOAD)),
        )
        .route("/process.Process/{method}", post(process::rpc))
        .route("/filesystem.Filesystem/{method}", post(fs::rpc))
        .layer(axum::extract::DefaultBodyLimit::max(RPC_BODY))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), sandboxes::require_access_token));
    control.merge(envd)
}
