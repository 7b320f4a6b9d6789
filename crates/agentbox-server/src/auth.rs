//! Tokens and who may do what.
//!
//! Two tokens are created on the first start, each in an owner-only file in AGENTBOX_HOME:
//! `api-token` may do everything (spawn, kill, type into agents: the `controller` scope) and
//! `api-token-viewer` may only read (list, logs, screens, watch terminals). A request presents
//! one as `Authorization: Bearer TOKEN`.
//!
//! The dashboard never puts a credential in a cookie: browsers send a host's cookies to every
//! port of it, so a dev server an agent starts on 127.0.0.1:3000 would receive it. Signing in
//! (`POST /login`) gives the page a session token (scope, expiry, a MAC keyed by the scope's
//! token), which the page keeps in `localStorage` (scoped to this origin: scheme, host and port)
//! and sends itself: in the `Authorization` header of every request (htmx), and as a WebSocket
//! subprotocol (`agentbox.auth.TOKEN`, since browsers cannot set headers on WebSockets). A page
//! loaded without a header (typing a URL, reloading) is a shell that loads its content that way.
//! No token ever travels in a URL.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentbox_engine::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand_core::RngCore;

use super::extract::ApiError;
use agentbox_engine::Home;

/// The WebSocket subprotocol the dashboard selects; its credential comes as a second one,
/// `agentbox.auth.TOKEN`.
pub const WS_PROTOCOL: &str = "agentbox";
const WS_AUTH_PREFIX: &str = "agentbox.auth.";
/// How long a dashboard session lasts.
const SESSION_SECS: u64 = 12 * 3600;

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
        Ok(_) => {
            return Err(agentbox_engine::Error::invalid(format!(
                "{} is empty; remove it and a new token is created",
                path.display()
            )))
        }
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

    /// Whether `presented` is the controller's API token itself (E2B's `X-API-KEY`).
    pub fn is_controller_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.controller.as_bytes())
    }

    /// The scope of an API token or of a dashboard session that has not expired.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        if constant_time_eq(presented.as_bytes(), self.controller.as_bytes()) {
            Some(Scope::Controller)
        } else if constant_time_eq(presented.as_bytes(), self.viewer.as_bytes()) {
            Some(Scope::Viewer)
        } else {
            self.session_scope(presented, now_secs())
        }
    }

    fn key(&self, scope: Scope) -> ring::hmac::Key {
        let token = match scope {
            Scope::Controller => &self.controller,
            Scope::Viewer => &self.viewer,
        };
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes())
    }

    /// A dashboard session for `scope`: `abs1.SCOPE.EXPIRY.NONCE.MAC`, the MAC keyed by the
    /// scope's API token (so rotating a token ends its sessions).
    pub fn session(&self, scope: Scope) -> String {
        let mut nonce = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut nonce);
        self.session_at(scope, now_secs() + SESSION_SECS, &hex(&nonce))
    }

    fn session_at(&self, scope: Scope, expiry: u64, nonce: &str) -> String {
        let name = match scope {
            Scope::Controller => "c",
            Scope::Viewer => "v",
        };
        let payload = format!("abs1.{name}.{expiry}.{nonce}");
        let mac = ring::hmac::sign(&self.key(scope), payload.as_bytes());
        format!("{payload}.{}", hex(mac.as_ref()))
    }

    fn session_scope(&self, presented: &str, now: u64) -> Option<Scope> {
        let mut parts = presented.split('.');
        let (Some("abs1"), Some(name), Some(expiry), Some(nonce), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let scope = match name {
            "c" => Scope::Controller,
            "v" => Scope::Viewer,
            _ => return None,
        };
        let expiry: u64 = expiry.parse().ok()?;
        if expiry <= now || nonce.len() != 32 {
            return None;
        }
        let mac = unhex(mac)?;
        let payload = format!("abs1.{name}.{expiry}.{nonce}");
        ring::hmac::verify(&self.key(scope), payload.as_bytes(), &mac).ok()?;
        Some(scope)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credential a browser's WebSocket offers as a subprotocol (`agentbox.auth.TOKEN`).
fn ws_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_AUTH_PREFIX))
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

/// A dashboard page (not the API, a fragment or a terminal), which a browser loads by URL.
fn dashboard_page(path: &str) -> bool {
    !(path.starts_with("/api/") || path.starts_with("/ui/") || path.starts_with("/ws/") || path == "/metrics")
}

/// Checks the token on every request but the public ones and records its scope.
pub async fn require_token(State(tokens): State<Arc<Tokens>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if public(&path) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let (presented, by_ws_protocol) = match (bearer(headers), ws_token(headers)) {
        (Some(t), _) => (Some(t), false),
        (None, Some(t)) => (Some(t), true),
        (None, None) => (None, false),
    };
    let Some(scope) = presented.and_then(|t| tokens.scope_of(t)) else {
        // A person opening a page by URL gets the shell, which signs in from this origin's own
        // storage; a program gets a 401.
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        if presented.is_none() && wants_html && req.method() == Method::GET && dashboard_page(&path) {
            return super::layout::shell();
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
    // A browser's WebSocket carries the credential its page chose to send; still, only this
    // server's own pages may open one.
    if by_ws_protocol && !same_origin(headers) {
        return deny(StatusCode::FORBIDDEN, "cross-site WebSocket refused");
    }
    req.extensions_mut().insert(scope);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_scoped_signed_and_expire() {
        let t = Tokens { controller: "c".repeat(64), viewer: "v".repeat(64) };
        let s = t.session(Scope::Controller);
        assert_eq!(t.scope_of(&s), Some(Scope::Controller));
        assert_eq!(t.scope_of(&t.session(Scope::Viewer)), Some(Scope::Viewer));
        // Tampering with any part, or another server's token, breaks it.
        assert_eq!(t.scope_of(&s.replacen("abs1.c.", "abs1.v.", 1)), None);
        let other = Tokens { controller: "x".repeat(64), viewer: "v".repeat(64) };
        assert_eq!(other.scope_of(&s), None);
        let expired = t.session_at(Scope::Controller, now_secs() - 1, &"0".repeat(32));
        assert_eq!(t.scope_of(&expired), None);
        assert_eq!(t.scope_of("abs1.c.1.2.3"), None);
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "agentbox, agentbox.auth.abc".parse().unwrap());
        assert_eq!(ws_token(&h), Some("abc"));
    }

    #[test]
    fn origins() {
        let mut h = axum::http::HeaderMap::new();
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
