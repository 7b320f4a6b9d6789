//! Connect-RPC with the JSON codec, as E2B's SDKs speak it to envd: unary calls are a JSON body
//! and a JSON answer; streams are 5-byte envelopes (`flags`, big-endian length) of JSON messages,
//! ended by an end-stream envelope (flags 2) carrying `{}` or `{"error": {code, message}}`.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::RpcError;

const END_STREAM: u8 = 2;

fn envelope(flags: u8, msg: &Value) -> Bytes {
    let json = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(flags);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    Bytes::from(out)
}

/// The messages of an enveloped request body (a stream's first message, or several).
pub fn messages(body: &[u8]) -> Result<Vec<Value>, RpcError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(RpcError::new("invalid_argument", "a truncated Connect envelope"));
        }
        let flags = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(msg) = rest.get(5..5 + len) else {
            return Err(RpcError::new("invalid_argument", "a truncated Connect envelope"));
        };
        if flags & 1 != 0 {
            return Err(RpcError::new("unimplemented", "compressed messages are not supported"));
        }
        if flags & END_STREAM == 0 {
            out.push(
                serde_json::from_slice(msg).map_err(|e| {
                    RpcError::new("invalid_argument", format!("the message is not JSON: {e}"))
                })?,
            );
        }
        rest = &rest[5 + len..];
    }
    Ok(out)
}

/// A server-stream request's one message.
pub fn first_message(body: &[u8]) -> Result<Value, RpcError> {
    messages(body)?.into_iter().next().ok_or_else(|| RpcError::new("invalid_argument", "no request message"))
}

/// A unary request's message: the body as JSON (`{}` when empty).
pub fn unary(body: &[u8]) -> Result<Value, RpcError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| RpcError::new("invalid_argument", format!("the body is not JSON: {e}")))
}

/// A unary answer.
pub fn reply(result: Result<Value, RpcError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The sending side of a server stream.
#[derive(Debug, Clone)]
pub struct Stream {
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    /// Sends one message; false once the client has gone.
    pub async fn send(&self, msg: &Value) -> bool {
        self.tx.send(envelope(0, msg)).await.is_ok()
    }

    /// Ends the stream (with an error, or without).
    pub async fn end(self, error: Option<RpcError>) {
        let body = match error {
            None => json!({}),
            Some(e) => json!({ "error": { "code": e.code, "message": e.message } }),
        };
        let _ = self.tx.send(envelope(END_STREAM, &body)).await;
    }
}

/// A streaming answer: its body, and the side that writes it.
pub fn stream() -> (Stream, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    }));
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+json"));
    (Stream { tx }, r)
}

/// A stream that fails before its first message.
pub fn failed_stream(e: RpcError) -> Response {
    let mut body = Vec::new();
    body.extend_from_slice(&envelope(
        END_STREAM,
        &json!({ "error": { "code": e.code, "message": e.message } }),
    ));
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_bad_ones_are_errors() {
        let mut body = envelope(0, &json!({"a": 1})).to_vec();
        body.extend_from_slice(&envelope(0, &json!({"b": 2})));
        body.extend_from_slice(&envelope(END_STREAM, &json!({})));
        assert_eq!(messages(&body).unwrap(), vec![json!({"a": 1}), json!({"b": 2})]);
        assert!(messages(&body[..7]).is_err());
        assert!(messages(&[0, 0, 0, 0, 2, b'{', b'x']).is_err());
        assert!(messages(&[1, 0, 0, 0, 0]).is_err());
        assert_eq!(unary(b"").unwrap(), json!({}));
        assert!(unary(b"nope").is_err());
    }
}
