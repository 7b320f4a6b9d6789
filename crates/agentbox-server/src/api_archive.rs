//! Files in and out of an agent's sandbox as tar streams, docker's `archive` endpoints: what
//! `agentbox cp` uses through a server. The work is the engine's (`cp`: tar runs in the agent's
//! own sandbox); these handlers only move the bytes between the HTTP body and it, streamed both
//! ways so a large tree is never held in memory.

#![allow(unused_qualifications)] // from the path attributes

use std::io::{Read, Write};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::auth::Scope;
use super::extract::{blocking, ApiError, ApiQuery, ApiResult, ErrorBody};
use super::state::Shared;
use agentbox_engine::cp;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    /// A path in the agent's sandbox (relative: from its working directory).
    path: String,
    /// PUT only: the stream's one top entry, which lands as `path` when `path` is not a
    /// directory (docker cp's rule); without it the stream is unpacked into the directory `path`.
    top: Option<String>,
}

/// How many bytes went in.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveWritten {
    bytes: u64,
}

/// A writer that hands what it is given to the response body.
struct ToBody(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ToBody {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader of the request body's chunks. A body that breaks off is an error, never a clean
/// end: a tar cut at an entry boundary would otherwise unpack as a whole one.
struct FromBody {
    chunks: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for FromBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!("the request body broke off: {e}")))
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Ends a copy's helper when dropped.
struct StopOnDrop(cp::Stopper);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn controller_only(scope: Scope) -> ApiResult<()> {
    match scope {
        Scope::Controller => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "reading an agent's files needs the controller token (api-token)",
        )),
    }
}

/// A tar stream of `path` in the agent's sandbox (running or stopped); its one top entry is
/// named as `path` is. Needs the controller token: it reads the agent's files.
#[utoipa::path(get, path = "/api/v1/agents/{name}/archive", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), ArchiveQuery),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_archive(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Extension(scope): Extension<Scope>,
    ApiQuery(q): ApiQuery<ArchiveQuery>,
) -> ApiResult<Response> {
    controller_only(scope)?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let home = state.home.clone();
    let stopper = cp::Stopper::default();
    let helper = stopper.clone();
    // Owned by this request, then by its body: when it is dropped (sent in full, or the client
    // went away), a helper still running is ended, so a tar the agent holds stopped keeps
    // nothing of the server's.
    let guard = StopOnDrop(stopper);
    let task = tokio::task::spawn_blocking(move || {
        let mut out = ToBody(tx.clone());
        let done = cp::archive_out_stoppable(&home, &name, std::path::Path::new(&q.path), &mut out, &helper);
        // Failing after bytes went out: the body ends in an error, not as a cut tar that looks whole.
        if let Err(e) = &done {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        done
    });
    // The first MiB is held back: a tar that fails early (no such path: GNU tar still writes an
    // empty archive) is then answered with its error and status, not a 200 cut short.
    const HOLD: usize = 1 << 20;
    let mut held: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let mut size = 0;
    let mut ended = false;
    while size < HOLD {
        match rx.recv().await {
            Some(Ok(b)) => {
                size += b.len();
                held.push(Ok(b));
            }
            Some(Err(_)) | None => {
                ended = true;
                break;
            }
        }
    }
    if ended {
        task.await??;
    }
    let rest = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    });
    let body = futures_util::stream::iter(held).chain(rest);
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], Body::from_stream(body)).into_response())
}

/// Unpack a tar stream in the agent's sandbox at `path` (running or stopped): into that
/// directory, or with `top`, the stream's one entry landing as `path` when `path` is not one.
#[utoipa::path(put, path = "/api/v1/agents/{name}/archive", tag = "agents", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), ArchiveQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a tar stream (any content type is taken as one)"),
    responses((status = 200, body = ArchiveWritten), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put_archive(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ArchiveQuery>,
    body: Body,
) -> ApiResult<Json<ArchiveWritten>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(8);
    let mut stream = body.into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk.map_err(|e| e.to_string())).await.is_err() || failed {
                break;
            }
        }
    });
    let home = state.home.clone();
    let bytes = blocking(move || {
        let mut input = FromBody { chunks: rx, current: Bytes::new() };
        let top = q.top.as_deref().map(std::ffi::OsStr::new);
        cp::archive_in(&home, &name, std::path::Path::new(&q.path), top, &mut input)
    })
    .await?;
    Ok(Json(ArchiveWritten { bytes }))
}
