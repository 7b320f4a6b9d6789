//! An agent's web app, reached through the server: HTTP and WebSocket (any `Upgrade`) proxied to
//! a port the agent listens on inside its own network.
//!
//! **Where it is served.** Never on the dashboard's origin: a page the agent wrote, served there,
//! could read the dashboard's session token from `localStorage` and drive every agent. A browser
//! gets each agent port on an origin of its own, `http://PORT-NAME.localhost:SERVERPORT/`
//! (browsers resolve every `*.localhost` name to the loopback address, and each such name is a
//! site of its own, so its cookies and storage are its own). On such a host the server serves
//! nothing of its own but the sign-in step below: every other path goes to the agent.
//!
//! **How a browser gets in.** The dashboard asks for a ticket (`POST
//! /api/v1/agents/NAME/ports/PORT/ticket`, with its session token: controllers only), then posts
//! it in a form to `/.agentbox/enter` on the port's origin. A ticket is good once, for 60
//! seconds, for that agent and port; it becomes a cookie on that origin alone (HttpOnly,
//! SameSite=Lax), good for 12 hours for that agent and port. No credential is ever in a URL, and
//! the cookie is taken out of every request before it reaches the agent.
//!
//! **Programs** (curl, scripts) use `/api/v1/agents/NAME/ports/PORT/...` with the API token in
//! `Authorization`, which is taken out too. A browser cannot send that header by navigating, so
//! nothing the agent serves there ever runs as a page of the dashboard's origin; the answers
//! carry `Content-Security-Policy: sandbox` besides.
//!
//! **How the bytes get there.** The server cannot join an agent's network from its threads, so
//! it starts a forwarder process (`agentbox __publish NAME PORT 0 --keyed`, as `spawn --publish`
//! does) on a free loopback port the first time a port is opened, keeps it for that run of the
//! agent, and starts another when the agent has been restarted or the forwarder is gone. The
//! forwarder gets a random key on its stdin and lets in only connections that send it first: no
//! other local user, and no page a browser was sent to, can use it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{blocking, ApiError, ApiResult, ErrorBody};
use super::state::Shared;
use super::store::with_store;

/// The cookie a port's origin keeps its grant in (never passed on to the agent).
const COOKIE: &str = "agentbox_port_session";
/// The one path a port's origin answers itself.
const ENTER: &str = "/.agentbox/enter";
const TICKET_LIFE: Duration = Duration::from_secs(60);
const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);

/// An agent's port: what a ticket or a session lets in.
type Target = (String, u16);

#[derive(Clone)]
struct Forwarder {
    generation: i64,
    addr: SocketAddr,
    key: std::sync::Arc<[u8]>,
}

/// Forwarders, tickets and sessions of every agent port opened through this server.
#[derive(Default)]
pub struct Ports {
    /// Per agent port: the run of the agent, where its forwarder listens, and the key each
    /// connection to it must send first.
    forwards: Mutex<HashMap<Target, Forwarder>>,
    /// Held while a forwarder starts: two first requests at once start one.
    starting: tokio::sync::Mutex<()>,
    tickets: Mutex<HashMap<String, (Target, Instant)>>,
    sessions: Mutex<HashMap<String, (Target, Instant)>>,
}

/// Counts only: tickets and sessions are credentials.
impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("forwards", &lock(&self.forwards).len())
            .field("tickets", &lock(&self.tickets).len())
            .field("sessions", &lock(&self.sessions).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn secret() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    super::auth::hex(&bytes)
}

impl Ports {
    fn mint(&self, target: Target) -> String {
        let ticket = secret();
        let now = Instant::now();
        let mut tickets = lock(&self.tickets);
        tickets.retain(|_, (_, until)| *until > now);
        tickets.insert(ticket.clone(), (target, now + TICKET_LIFE));
        ticket
    }

    /// Spends a ticket for `target`: a new session, or `None` if the ticket is not one for it.
    fn enter(&self, ticket: &str, target: &Target) -> Option<String> {
        let now = Instant::now();
        let (for_target, until) = lock(&self.tickets).remove(ticket)?;
        if &for_target != target || until <= now {
            return None;
        }
        let session = secret();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, (_, until)| *until > now);
        sessions.insert(session.clone(), (for_target, now + SESSION_LIFE));
        Some(session)
    }

    fn admits(&self, session: &str, target: &Target) -> bool {
        lock(&self.sessions).get(session).is_some_and(|(t, until)| t == target && *until > Instant::now())
    }
}

/// The agent port a request's `Host` names (`PORT-NAME.localhost[:N]`), if it names one.
fn port_host(headers: &HeaderMap) -> Option<Target> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name_part = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let label = name_part.strip_suffix(".localhost")?;
    let (port, name) = label.split_once('-')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    agentbox_core::validate_name(name).ok()?;
    Some((name.to_string(), port))
}

/// The host name a browser opens `target` at.
fn origin_host(target: &Target) -> String {
    format!("{}-{}.localhost", target.1, target.0)
}

/// Serves a request for a port's origin, or passes it on to the server's own routes.
pub async fn by_host(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match port_host(req.headers()) {
        Some(target) => on_port_origin(state, target, req).await,
        None => next.run(req).await,
    }
}

async fn on_port_origin(state: Shared, target: Target, req: Request) -> Response {
    if req.uri().path() == ENTER {
        return enter(state, target, req).await;
    }
    let granted = cookies(req.headers()).any(|(k, v)| k == COOKIE && state.ports.admits(v, &target));
    if !granted {
        let msg = format!(
            "open {}:{} from the agentbox dashboard (its agent page, Ports): this origin lets in only browsers it \
             sent here",
            target.0, target.1
        );
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg)
            .into_response();
    }
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    proxy(state, target, req, path, false).await
}

/// `POST /.agentbox/enter` with the form field `ticket`: the ticket becomes this origin's cookie.
async fn enter(state: Shared, target: Target, req: Request) -> Response {
    let bad = |msg: &str| (StatusCode::FORBIDDEN, msg.to_string()).into_response();
    if req.method() != axum::http::Method::POST {
        return bad("open this port from the agentbox dashboard");
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), 4096).await else {
        return bad("the sign-in form is too large");
    };
    let ticket = url_form_value(&body, "ticket").unwrap_or_default();
    match state.ports.enter(&ticket, &target) {
        None => {
            bad("this ticket is spent, expired, or for another port: open the port from the dashboard again")
        }
        Some(session) => {
            let cookie = format!(
                "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
                SESSION_LIFE.as_secs()
            );
            (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, "/".to_string())])
                .into_response()
        }
    }
}

/// The value of `key` in an `application/x-www-form-urlencoded` body (tickets are hex: no
/// decoding beyond `+`/`%` is needed, and anything else is simply not a ticket).
fn url_form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// `name=value` pairs of the request's cookies.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

/// What the dashboard needs to open a port in a browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortTicket {
    /// Good once, for 60 seconds: post it as the form field `ticket` to `/.agentbox/enter` on
    /// `host`, at this server's scheme and port.
    pub ticket: String,
    /// The port's own origin's host name (`PORT-NAME.localhost`).
    pub host: String,
}

/// The ports an agent listens on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listening {
    pub ports: Vec<u16>,
}

fn parse_port(s: &str) -> ApiResult<u16> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("port: '{s}' is not a port (1-65535)")))
}

/// The TCP ports a running agent listens on inside its own network: what can be opened.
#[utoipa::path(get, path = "/api/v1/agents/{name}/ports", tag = "workspaces", params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses((status = 200, body = Listening), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list_ports(State(state): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<Listening>> {
    let home = state.home.clone();
    let ports = blocking(move || with_store(&home, |s| agentbox_engine::ports::listening(s, &name))).await?;
    Ok(Json(Listening { ports }))
}

/// A one-time ticket that lets a browser into an agent's port, on the port's own origin.
#[utoipa::path(post, path = "/api/v1/agents/{name}/ports/{port}/ticket", tag = "workspaces",
    params(("name" = String, Path, pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"), ("port" = u16, Path, minimum = 1)),
    responses((status = 200, body = PortTicket), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn port_ticket(
    State(state): State<Shared>,
    Path((name, port)): Path<(String, String)>,
) -> ApiResult<Json<PortTicket>> {
    let port = parse_port(&port)?;
    agentbox_core::validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let home = state.home.clone();
    let n = name.clone();
    blocking(move || with_store(&home, |s| agentbox_engine::agents::get(s, &n))).await?;
    let target = (name, port);
    Ok(Json(PortTicket { host: origin_host(&target), ticket: state.ports.mint(target) }))
}

/// `/api/v1/agents/NAME/ports/PORT/...` for programs: the API token's holder reaches the port.
pub async fn api_proxy(
    State(state): State<Shared>,
    axum::Extension(scope): axum::Extension<super::auth::Scope>,
    req: Request,
) -> Response {
    // An app's GET can change things too: the controller's alone, like typing into the agent.
    if scope != super::auth::Scope::Controller {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "reaching an agent's port takes the controller token (api-token)",
        )
        .into_response();
    }
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/api/v1/agents/") else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    let mut parts = rest.splitn(4, '/');
    let (Some(name), Some("ports"), Some(port)) = (parts.next(), parts.next(), parts.next()) else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    let port = match parse_port(port) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = agentbox_core::validate_name(name) {
        return ApiError::bad_request(e.to_string()).into_response();
    }
    let mut upstream = format!("/{}", parts.next().unwrap_or(""));
    if let Some(q) = req.uri().query() {
        upstream = format!("{upstream}?{q}");
    }
    proxy(state.clone(), (name.to_string(), port), req, upstream, true).await
}

/// Headers that belong to one hop, not to the request (RFC 9110 7.6.1); `Upgrade` and
/// `Connection` are put back for an upgrade.
const HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
        && headers.contains_key(header::UPGRADE)
}

/// The request as the agent gets it: hop headers, the server's credentials (its cookie, the
/// API token) taken out.
fn outgoing_headers(headers: &mut HeaderMap, upgrade: bool, from_api: bool, port: u16) {
    let upgrade_to = headers.get(header::UPGRADE).cloned();
    for h in HOP {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    let kept: Vec<String> =
        cookies(headers).filter(|(k, _)| *k != COOKIE).map(|(k, v)| format!("{k}={v}")).collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
    if from_api {
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
        headers.remove("x-access-token");
        // The dashboard's WebSocket credential travels as a subprotocol (`agentbox.auth.TOKEN`).
        let protocols: Vec<String> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty() && !p.starts_with("agentbox.auth."))
            .map(str::to_string)
            .collect();
        headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        if let Ok(v) = HeaderValue::from_str(&protocols.join(", ")) {
            if !protocols.is_empty() {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&format!("127.0.0.1:{port}")) {
            headers.insert(header::HOST, v);
        }
    }
    if let (true, Some(to)) = (upgrade, upgrade_to) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, to);
    }
}

fn bad_gateway(target: &Target, why: impl std::fmt::Display) -> Response {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("{}:{}: {why} (is the agent listening on that port?)", target.0, target.1),
    )
    .into_response()
}

/// Where this run of the agent's `port` is forwarded from, starting a forwarder if needed
/// (`fresh`: the last one did not answer).
async fn forwarder(state: &Shared, target: &Target, fresh: bool) -> ApiResult<Forwarder> {
    let home = state.home.clone();
    let name = target.0.clone();
    let rec = blocking(move || with_store(&home, |s| agentbox_engine::agents::get(s, &name))).await?;
    if rec.state != agentbox_core::AgentState::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("agent '{}' is {}; ports reach a running agent", rec.name, rec.state),
        ));
    }
    let generation = rec.generation;
    let known = || lock(&state.ports.forwards).get(target).filter(|f| f.generation == generation).cloned();
    if let (false, Some(f)) = (fresh, known()) {
        return Ok(f);
    }
    let _one = state.ports.starting.lock().await;
    // Started by the request that held the lock before this one?
    if let (false, Some(f)) = (fresh, known()) {
        return Ok(f);
    }
    let (home, name, port) = (state.home.clone(), target.0.clone(), target.1);
    let fwd = blocking(move || agentbox_engine::ports::forward_for_server(&home, &name, port)).await?;
    let agentbox_engine::ports::ServerForward { addr, generation, mut child, key } = fwd;
    // It ends with that run of the agent; reaped then.
    std::thread::spawn(move || child.wait());
    let made = Forwarder { generation, addr, key: key.into() };
    lock(&state.ports.forwards).insert(target.clone(), made.clone());
    Ok(made)
}

async fn connect(state: &Shared, target: &Target) -> Result<tokio::net::TcpStream, Response> {
    let mut last = String::new();
    for fresh in [false, true] {
        use tokio::io::AsyncWriteExt;
        let f = forwarder(state, target, fresh).await.map_err(IntoResponse::into_response)?;
        match tokio::net::TcpStream::connect(f.addr).await {
            // The forwarder lets in only connections that send its key first.
            Ok(mut s) => match s.write_all(&f.key).await {
                Ok(()) => return Ok(s),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
    }
    Err(bad_gateway(target, last))
}

/// Sends `req` to the agent's port as `path` and its answer back; an upgrade (WebSocket) the
/// agent accepts is joined through.
async fn proxy(state: Shared, target: Target, mut req: Request, path: String, from_api: bool) -> Response {
    let stream = match connect(&state, &target).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return bad_gateway(&target, e),
        };
    tokio::spawn(conn.with_upgrades());
    let upgrade = is_upgrade(req.headers());
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    match Uri::builder().path_and_query(path).build() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return ApiError::bad_request(format!("the path: {e}")).into_response(),
    }
    outgoing_headers(req.headers_mut(), upgrade, from_api, target.1);
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(&target, e),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_side) = client_side {
            let agent_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(a)) = tokio::join!(client_side, agent_side) {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(a)).await;
                }
            });
        }
    }
    let mut resp = resp.map(Body::new);
    if from_api {
        resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn port_hosts() {
        assert_eq!(port_host(&host("3000-web.localhost:8122")), Some(("web".into(), 3000)));
        assert_eq!(port_host(&host("8080-my-app.localhost")), Some(("my-app".into(), 8080)));
        for not in [
            "127.0.0.1:8122",
            "localhost:8122",
            "web.localhost",
            "0-web.localhost",
            "3000-.localhost",
            "3000-Web.localhost",
            "99999-web.localhost",
            "3000-web.localhost.evil.com",
            "3000-web.example.com",
        ] {
            assert_eq!(port_host(&host(not)), None, "{not}");
        }
    }

    #[test]
    fn tickets_are_good_once_for_their_port() {
        let p = Ports::default();
        let web = ("web".to_string(), 3000);
        let t = p.mint(web.clone());
        assert_eq!(p.enter(&t, &("web".into(), 3001)), None, "another port");
        let t = p.mint(web.clone());
        let s = p.enter(&t, &web).unwrap();
        assert_eq!(p.enter(&t, &web), None, "spent");
        assert!(p.admits(&s, &web) && !p.admits(&s, &("web".into(), 3001)) && !p.admits("x", &web));
    }

    #[test]
    fn the_servers_credentials_stay_here() {
        let mut h = host("3000-web.localhost:8122");
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; agentbox_port_session=s3cret; b=2"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat, agentbox.auth.s3cret"));
        h.insert("x-api-key", HeaderValue::from_static("tok"));
        outgoing_headers(&mut h, true, true, 3000);
        assert_eq!(h.get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(), "chat");
        assert!(h.get("x-api-key").is_none());
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h.get(header::HOST).unwrap(), "127.0.0.1:3000");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
    }
}
