//! Logs and the event journal: a JSON range by default, a Server-Sent Events stream when the
//! client asks for `text/event-stream` (as `EventSource` does).

#![allow(unused_qualifications)] // from the path attributes

use std::convert::Infallible;
use std::time::Duration;

use agentbox_store::Event;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::wants_stream;
use super::extract::{blocking, ApiQuery, ApiResult, ErrorBody};
use super::state::Shared;
use super::store::with_store;
use agentbox_engine::logs;
use agentbox_engine::views::LogChunk;

const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// First byte (default: the last `limit` bytes).
    offset: Option<u64>,
    /// At most this many bytes (default and maximum 4 MiB).
    limit: Option<u64>,
    /// Keep escape sequences.
    raw: Option<bool>,
    /// Without `offset`: start at the output written at or after this time (Unix time in
    /// milliseconds; to the second). With `limit=0` this asks only where that is (`offset`).
    since: Option<u64>,
}

/// An agent's output log: a byte range, or with `Accept: text/event-stream` every new chunk as a
/// `log` event until the agent ends (then one `end` event).
#[utoipa::path(get, path = "/api/v1/agents/{name}/logs", tag = "sessions", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), LogsQuery),
    responses((status = 200, body = LogChunk, content_type = "application/json"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_logs(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let raw = q.raw.unwrap_or(false);
    let home = state.home.clone();
    let n = name.clone();
    let first = blocking(move || {
        with_store(&home, |s| {
            let offset = match (q.offset, q.since) {
                (None, Some(ms)) => Some(logs::agent_offset_at(s, &n, ms)?),
                (offset, _) => offset,
            };
            logs::log_range(s, &n, offset, q.limit, raw)
        })
    })
    .await?;
    if !wants_stream(&headers) {
        return Ok(Json(first).into_response());
    }
    Ok(Sse::new(log_stream(state, name, first, raw)).keep_alive(KeepAlive::default()).into_response())
}

fn log_event(c: &LogChunk) -> SseEvent {
    SseEvent::default().event("log").id(c.next_offset.to_string()).json_data(c).unwrap_or_default()
}

/// What a log follower has: the agent, where it has read to, a chunk not yet sent, whether done.
struct Follow {
    state: Shared,
    name: String,
    offset: u64,
    pending: Option<LogChunk>,
    done: bool,
}

fn log_stream(
    state: Shared,
    name: String,
    first: LogChunk,
    raw: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let f = Follow { state, name, offset: first.next_offset, pending: Some(first), done: false };
    futures_util::stream::unfold(f, move |mut f| async move {
        if f.done {
            return None;
        }
        if let Some(chunk) = f.pending.take() {
            return Some((Ok(log_event(&chunk)), f));
        }
        loop {
            let (home, name, offset) = (f.state.home.clone(), f.name.clone(), f.offset);
            // Read the state before the log: output written before the agent ended is not lost.
            let live = blocking(move || {
                with_store(&home, |s| {
                    let rec = agentbox_engine::agents::get(s, &name)?;
                    let live = agentbox_engine::agents::is_live_state(&rec.state);
                    Ok((live, logs::log_range_of(&rec, Some(offset), None, raw)?))
                })
            })
            .await;
            match live {
                Ok((_, c)) if c.next_offset > f.offset => {
                    f.offset = c.next_offset;
                    return Some((Ok(log_event(&c)), f));
                }
                Ok((false, _)) => {
                    f.done = true;
                    return Some((Ok(SseEvent::default().event("end").data("{}")), f));
                }
                Ok((true, _)) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    f.done = true;
                    return Some((Ok(SseEvent::default().event("error").data(e.message)), f));
                }
            }
        }
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The newest N events (default 100, at most 10000).
    limit: Option<usize>,
    /// Only events of this kind (spawn, start, exit, killed, failed, rm, ...).
    event: Option<String>,
    /// Only events after this id (a stream also honours `Last-Event-ID`).
    after: Option<i64>,
}

/// The lifecycle journal. With `Accept: text/event-stream`: every new event as it is recorded,
/// each with its journal id as the event id.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = Vec<Object>, content_type = "application/json"), (status = 400, body = ErrorBody)))]
pub async fn get_events(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    let home = state.home.clone();
    let kind = q.event.clone();
    if !wants_stream(&headers) {
        let events: Vec<Event> = blocking(move || {
            with_store(&home, |s| {
                Ok(match q.after {
                    Some(after) => s.events_after(after, limit)?,
                    None => s.events(limit, kind.as_deref())?,
                }
                .into_iter()
                .filter(|e| kind.as_deref().is_none_or(|k| e.event == k))
                .collect())
            })
        })
        .await?;
        return Ok(Json(events).into_response());
    }
    let resume =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let start = match resume.or(q.after) {
        Some(id) => id,
        // From now: the newest id so far.
        None => {
            blocking(move || with_store(&home, |s| Ok(s.events(1, None)?.last().map(|e| e.id).unwrap_or(0))))
                .await?
        }
    };
    Ok(Sse::new(event_stream(state, start, q.event)).keep_alive(KeepAlive::default()).into_response())
}

fn event_stream(
    state: Shared,
    after: i64,
    kind: Option<String>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold((state, after, Vec::<Event>::new()), move |(state, mut after, mut queue)| {
        let kind = kind.clone();
        async move {
            loop {
                if let Some(e) = queue.pop() {
                    if kind.as_deref().is_some_and(|k| k != e.event) {
                        continue;
                    }
                    let ev = SseEvent::default()
                        .event(e.event.clone())
                        .id(e.id.to_string())
                        .json_data(&e)
                        .unwrap_or_default();
                    return Some((Ok(ev), (state, after, queue)));
                }
                let home = state.home.clone();
                match blocking(move || with_store(&home, |s| Ok(s.events_after(after, 500)?))).await {
                    Ok(mut new) if !new.is_empty() => {
                        after = new.last().map(|e| e.id).unwrap_or(after);
                        new.reverse();
                        queue = new;
                    }
                    _ => tokio::time::sleep(POLL * 2).await,
                }
            }
        }
    })
}
