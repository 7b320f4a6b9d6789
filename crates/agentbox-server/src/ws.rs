//! `/ws/agents/{name}/attach`: a terminal over a WebSocket.
//!
//! Each viewer gets its own connection to the agent's supervisor, which replays the screen and
//! then streams output, exactly as `agentbox attach` does; many viewers therefore cost the
//! server nothing but copying. Binary messages carry terminal bytes both ways. Text messages are
//! JSON: the client may send `{"type":"resize","rows":R,"cols":C}`; the server sends
//! `{"type":"size","rows":R,"cols":C}` before the first output and whenever the agent's terminal
//! changes size, and `{"type":"exit","code":N}` when the agent ends.
//!
//! Viewers observe; `?role=controller` types and resizes, and needs the controller token.

use agentbox_supervisor::paths;
use agentbox_supervisor::protocol::{Decoder, Frame};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::auth::Scope;
use super::extract::{blocking, ApiError, ApiQuery, ApiResult};
use super::state::Shared;
use super::store::with_store;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachQuery {
    /// `observer` (default) or `controller`.
    role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { rows: u16, cols: u16 },
}

pub async fn attach(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Extension(scope): Extension<Scope>,
    ApiQuery(q): ApiQuery<AttachQuery>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let controller = match q.role.as_deref() {
        None | Some("observer") => false,
        Some("controller") if scope == Scope::Controller => true,
        Some("controller") => {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "role=controller needs the controller token (api-token)",
            ))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!("invalid role '{other}': use observer or controller")))
        }
    };
    let home = state.home.clone();
    let rec = blocking(move || with_store(&home, |s| agentbox_engine::agents::get(s, &name))).await?;
    if !agentbox_engine::agents::is_live_state(&rec.state) {
        return Err(agentbox_engine::Error::conflict(format!(
            "agent '{}' is {}; see its logs instead",
            rec.name, rec.state
        ))
        .into());
    }
    let sock = UnixStream::connect(paths::socket(&agentbox_engine::agents::state_dir(&rec))).await.map_err(
        |_| ApiError::from(agentbox_engine::Error::conflict(format!("agent '{}' is not running", rec.name))),
    )?;
    // Where the log stands now: what this viewer is sent from here on is the log from there.
    let log = paths::log(&agentbox_engine::agents::state_dir(&rec));
    let log_at = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    Ok(upgrade
        .protocols([super::auth::WS_PROTOCOL])
        .on_upgrade(move |ws| bridge(ws, sock, controller, log, log_at)))
}

/// The close code of a viewer the supervisor dropped for falling too far behind (the reason says
/// the log offset to resume from).
pub const BEHIND: u16 = 4000;

/// Tells the browser the agent's terminal size when it changes (someone resized it): a viewer
/// draws at the agent's size instead of making the agent draw at its own. The size marks of the
/// log say it; their file grows at every change, so one `stat` per chunk notices.
struct SizeWatch {
    marks: std::path::PathBuf,
    log: std::path::PathBuf,
    seen_len: Option<u64>,
    size: Option<(u16, u16)>,
}

impl SizeWatch {
    fn new(log: std::path::PathBuf) -> Self {
        Self { marks: paths::log_sizes(&log), log, seen_len: None, size: None }
    }

    /// A `size` message if the size changed since the last one.
    fn changed(&mut self) -> Option<Message> {
        let len = std::fs::metadata(&self.marks).map(|m| m.len()).ok();
        if self.size.is_some() && len == self.seen_len {
            return None;
        }
        self.seen_len = len;
        let now = agentbox_engine::logs::terminal_size(&self.log);
        if self.size == Some(now) {
            return None;
        }
        self.size = Some(now);
        let msg = serde_json::json!({"type": "size", "rows": now.0, "cols": now.1}).to_string();
        Some(Message::Text(msg.into()))
    }
}

async fn bridge(ws: WebSocket, sock: UnixStream, controller: bool, log: std::path::PathBuf, log_at: u64) {
    let (mut rd, mut wr) = sock.into_split();
    let hello = if controller { Frame::Attach } else { Frame::Observe };
    if wr.write_all(&hello.encode()).await.is_err() {
        return;
    }
    let (mut ws_tx, mut ws_rx) = ws.split();
    let to_browser = async move {
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 65536];
        // The first output is the screen's replay; the rest is the log, from `log_at` on.
        let (mut replayed, mut seen) = (false, log_at);
        let mut size = SizeWatch::new(log);
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            loop {
                match decoder.next_frame() {
                    Ok(Some(Frame::Output(bytes))) => {
                        if replayed {
                            seen += bytes.len() as u64;
                        }
                        replayed = true;
                        if let Some(msg) = size.changed() {
                            if ws_tx.send(msg).await.is_err() {
                                return;
                            }
                        }
                        if ws_tx.send(Message::Binary(bytes.into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(Frame::Exit(code))) => {
                        let msg = serde_json::json!({"type": "exit", "code": code}).to_string();
                        let _ = ws_tx.send(Message::Text(msg.into())).await;
                        let _ = ws_tx.close().await;
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        let reason = format!("the agent's stream could not be read: {e}");
                        let frame = axum::extract::ws::CloseFrame { code: 1011, reason: reason.into() };
                        let _ = ws_tx.send(Message::Close(Some(frame))).await;
                        return;
                    }
                }
            }
        }
        // The supervisor hung up without the agent ending: it drops a viewer that falls more
        // than its backlog behind. Say so, and where the log has what this viewer missed.
        let reason = format!("fell too far behind; reattach, or read the log from offset {seen}");
        let frame = axum::extract::ws::CloseFrame { code: BEHIND, reason: reason.into() };
        let _ = ws_tx.send(Message::Close(Some(frame))).await;
    };
    let from_browser = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let frames: Vec<Frame> = match msg {
                // Pasted text can be large; the supervisor takes frames of at most 1 MiB.
                Message::Binary(b) if controller => {
                    b.chunks(64 * 1024).map(|c| Frame::Input(c.to_vec())).collect()
                }
                Message::Text(t) if controller => match serde_json::from_str::<Control>(&t) {
                    Ok(Control::Resize { rows, cols }) if rows > 0 && cols > 0 => {
                        vec![Frame::Resize { rows, cols }]
                    }
                    _ => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            for frame in frames {
                if wr.write_all(&frame.encode()).await.is_err() {
                    return;
                }
            }
        }
    };
    // Whichever side ends first ends the session; the other is dropped with it.
    tokio::select! {
        _ = to_browser => {}
        _ = from_browser => {}
    }
}
