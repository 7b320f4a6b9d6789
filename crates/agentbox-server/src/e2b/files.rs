//! envd's REST `/files`: download (the file's bytes) and upload (multipart, or one file as
//! `application/octet-stream`). Both stream through `cat` in the sandbox, so a 50 MB file never
//! sits in memory whole, and the sandbox's user writes what the sandbox's user can.

use std::io::{Read, Write};
use std::process::Stdio;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::RpcError;
use super::helper::{self, absolute, Exec};
use super::sandboxes::Current;
use crate::state::Shared;

/// The largest upload taken (per request).
pub const MAX_UPLOAD: usize = 4 << 30;

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    path: Option<String>,
}

/// A REST error as the SDK reads it: `{code, message}` with the status.
fn rest_error(e: RpcError) -> Response {
    let status = match e.code {
        "not_found" => StatusCode::NOT_FOUND,
        "invalid_argument" => StatusCode::BAD_REQUEST,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "unavailable" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({ "code": status.as_u16(), "message": e.message }))).into_response()
}

/// `GET /files?path=P`: the file's bytes.
pub async fn download(
    State(state): State<Shared>,
    Extension(current): Extension<Current>,
    Query(q): Query<FileQuery>,
) -> Response {
    let path = match q.path.as_deref().map(absolute) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return rest_error(e),
        None => return rest_error(RpcError::new("invalid_argument", "path: which file?")),
    };
    let home = state.home.clone();
    let id = current.id.clone();
    let started = tokio::task::spawn_blocking(move || {
        let out = helper::script(
            &home,
            &id,
            r#"[ -e "$1" ] || exit 44; [ -d "$1" ] && exit 47; [ -f "$1" ] || exit 48; exit 0"#,
            &[&path],
        )?;
        if !out.status.success() {
            return Err(helper::failure(&out, &path));
        }
        let e = Exec { argv: vec!["cat".into(), "--".into(), path.clone().into()], ..Default::default() };
        helper::command(&home, &id, &e)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| RpcError::new("internal", format!("reading {path}: {err}")))
    })
    .await;
    let mut child = match started {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return rest_error(e),
        Err(e) => return rest_error(e.into()),
    };
    let Some(mut out) = child.stdout.take() else {
        return rest_error(RpcError::new("internal", "no output from the sandbox"));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        let _ = child.kill();
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
        let _ = child.wait();
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    }));
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r
}

/// A file being written in the sandbox: chunks go to `cat > PATH` through its stdin.
struct Writer {
    tx: std::sync::mpsc::SyncSender<Bytes>,
    done: std::thread::JoinHandle<Result<(), RpcError>>,
}

impl Writer {
    fn start(state: &Shared, id: &str, path: &str) -> Result<Self, RpcError> {
        let script = r#"mkdir -p -- "$(dirname -- "$1")" || exit 1; [ -d "$1" ] && exit 47; exec cat > "$1""#;
        let argv = vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into(), path.into()];
        let e = Exec { argv, stdin: true, ..Default::default() };
        let mut child = helper::command(&state.home, id, &e)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| RpcError::new("internal", format!("writing {path}: {err}")))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        let path = path.to_string();
        let done = std::thread::spawn(move || {
            if let Some(mut stdin) = child.stdin.take() {
                for chunk in rx {
                    if stdin.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
            let out = child.wait_with_output().map_err(|e| RpcError::new("internal", e.to_string()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(helper::failure(&out, &path))
            }
        });
        Ok(Self { tx, done })
    }

    /// Sends a chunk; false once the sandbox stopped taking the file (`finish` says why).
    async fn write(&self, chunk: Bytes) -> bool {
        let tx = self.tx.clone();
        matches!(tokio::task::spawn_blocking(move || tx.send(chunk)).await, Ok(Ok(())))
    }

    async fn finish(self) -> Result<(), RpcError> {
        drop(self.tx);
        let done = self.done;
        tokio::task::spawn_blocking(move || {
            done.join().unwrap_or_else(|_| Err(RpcError::new("internal", "the writer failed")))
        })
        .await?
    }
}

fn written(path: &str) -> serde_json::Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({ "name": name, "type": "file", "path": path })
}

/// `POST /files?path=P`: multipart (field `file`, its filename the destination when no `path`
/// is given) or the raw bytes of one file.
pub async fn upload(
    State(state): State<Shared>,
    Extension(current): Extension<Current>,
    Query(q): Query<FileQuery>,
    req: Request,
) -> Response {
    let query_path = match q.path.as_deref().map(absolute).transpose() {
        Ok(p) => p,
        Err(e) => return rest_error(e),
    };
    if req.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity") {
        return rest_error(RpcError::new(
            "invalid_argument",
            "compressed uploads are not supported: send the bytes as they are",
        ));
    }
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut done = Vec::new();
    if !multipart {
        let Some(path) = query_path else {
            return rest_error(RpcError::new("invalid_argument", "path: where should the file go?"));
        };
        let w = match Writer::start(&state, &current.id, &path) {
            Ok(w) => w,
            Err(e) => return rest_error(e),
        };
        let mut stream = req.into_body().into_data_stream();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            match chunk {
                Ok(c) => {
                    if !w.write(c).await {
                        break;
                    }
                }
                Err(e) => {
                    return rest_error(RpcError::new("invalid_argument", format!("reading the upload: {e}")))
                }
            }
        }
        if let Err(e) = w.finish().await {
            return rest_error(e);
        }
        done.push(written(&path));
        return (StatusCode::OK, Json(done)).into_response();
    }
    let mut form = match Multipart::from_request(req, &state).await {
        Ok(f) => f,
        Err(e) => return rest_error(RpcError::new("invalid_argument", e.body_text())),
    };
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return rest_error(RpcError::new("invalid_argument", e.body_text())),
        };
        let path = match (&query_path, field.file_name()) {
            (Some(p), _) => p.clone(),
            (None, Some(name)) => match absolute(name) {
                Ok(p) => p,
                Err(e) => return rest_error(e),
            },
            (None, None) => {
                return rest_error(RpcError::new("invalid_argument", "a part without a file name or path"))
            }
        };
        let w = match Writer::start(&state, &current.id, &path) {
            Ok(w) => w,
            Err(e) => return rest_error(e),
        };
        loop {
            match field.chunk().await {
                Ok(Some(c)) => {
                    if !w.write(c).await {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return rest_error(RpcError::new("invalid_argument", e.body_text())),
            }
        }
        if let Err(e) = w.finish().await {
            return rest_error(e);
        }
        done.push(written(&path));
    }
    if done.is_empty() {
        return rest_error(RpcError::new("invalid_argument", "no file in the upload"));
    }
    (StatusCode::OK, Json(done)).into_response()
}
