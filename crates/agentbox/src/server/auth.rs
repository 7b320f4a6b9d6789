//! Tokens and who may do what.
//!
//! Two tokens are created on the first start, each in an owner-only file in AGENTBOX_HOME:
//! `api-token` may do everything (spawn, kill, type into agents: the `controller` scope) and
//! `api-token-viewer` may only read (list, logs, screens, watch terminals). A request presents
//! one as `Authorization: Bearer TOKEN`; the dashboard keeps it in a cookie set by `/login`.
//!
//! A cookie is sent by the browser whoever asks it to, so a request that relies on the cookie
//! and changes something must also carry a header no cross-site form can set (htmx sends
//! `HX-Request`), and a WebSocket upgrade must come from the server's own origin.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand_core::RngCore;

use super::extract::ApiError;
use super::state::Shared;
use crate::home::Home;

pub const COOKIE: &str = "agentbox_token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read everything; watch terminals.
    Viewer,
    /// Everything, including typing into agents and spawning them.
    Controller,
}

#[derive(Clone)]
pub struct Tokens {
    controller: String,
    viewer: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

pub fn token_path(home: &Home) -> PathBuf {
    home.root.join("api-token")
}

pub fn viewer_token_path(home: &Home) -> PathBuf {
    home.root.join("api-token-viewer")
}

/// Reads a token file, creating it (0600, 32 random bytes as hex) if it does not exist.
fn load_or_create(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty; remove it and a new token is created", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok(token)
}

impl Tokens {
    pub fn load_or_create(home: &Home) -> Result<Self> {
        Ok(Self {
            controller: load_or_create(&token_path(home))?,
            viewer: load_or_create(&viewer_token_path(home))?,
        })
    }

    pub fn accepts(&self, presented: &str) -> bool {
        self.scope_of(presented).is_some()
    }

    fn scope_of(&self, presented: &str) -> Option<Scope> {
        if constant_time_eq(presented.as_bytes(), self.controller.as_bytes()) {
            Some(Scope::Controller)
        } else if constant_time_eq(presented.as_bytes(), self.viewer.as_bytes()) {
            Some(Scope::Viewer)
        } else {
            None
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token's value from a `Cookie` header.
pub fn cookie_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Whether the request's Origin (if any) is this server itself.
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, h)| h == host)
}

fn deny(status: StatusCode, msg: &str) -> Response {
    let mut r = ApiError::new(status, msg).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

/// Paths anyone may fetch: the liveness probe and what the login page needs.
fn public(path: &str) -> bool {
    path == "/healthz" || path == "/login" || path == "/favicon.ico" || path.starts_with("/assets/")
}

/// Checks the token on every request but the public ones and records its scope.
pub async fn require_token(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if public(&path) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let (scope, by_cookie) = match (bearer(headers), cookie_token(headers)) {
        (Some(t), _) => (state.tokens.scope_of(t), false),
        (None, Some(t)) => (state.tokens.scope_of(t), true),
        (None, None) => (None, false),
    };
    let Some(scope) = scope else {
        // A person in a browser is sent to the login page; a program gets a 401.
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        if wants_html && req.method() == Method::GET && !path.starts_with("/api/") {
            return axum::response::Redirect::to("/login").into_response();
        }
        return deny(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send `Authorization: Bearer TOKEN` (the token is in AGENTBOX_HOME/api-token)",
        );
    };
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method && scope != Scope::Controller {
        return deny(
            StatusCode::FORBIDDEN,
            "this token may only read; use the controller token (api-token) to change agents",
        );
    }
    if by_cookie {
        let is_ws = headers.get(header::UPGRADE).is_some();
        let marked = headers.contains_key("hx-request") || headers.contains_key("x-agentbox-client");
        if (unsafe_method && !marked) || ((unsafe_method || is_ws) && !same_origin(headers)) {
            return deny(
                StatusCode::FORBIDDEN,
                "cross-site request refused: send the token as a Bearer header",
            );
        }
    }
    req.extensions_mut().insert(scope);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_origins() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::COOKIE, "a=b; agentbox_token=xyz; c=d".parse().unwrap());
        assert_eq!(cookie_token(&h), Some("xyz"));
        h.insert(header::HOST, "127.0.0.1:8122".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8122".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn tokens_are_created_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api-token");
        let t = load_or_create(&p).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&p).unwrap(), t);
    }
}
