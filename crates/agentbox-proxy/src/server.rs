//! Connections from the sandbox: CONNECT tunnels, intercepted TLS sessions and plain HTTP.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentbox_core::Host;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::audit::{now_ms, AuditRecord};
use crate::counting::{Counters, Counting};
use crate::login::{Login, Tokens, MAX_TOKEN_BODY};
use crate::policy::Verdict;
use crate::resolve::Candidate;
use crate::swap::{swap_headers, Credential};
use crate::Shared;

type Body = BoxBody<Bytes, hyper::Error>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RELAY_BUF: usize = 256 << 10;

/// Headers that belong to one hop and are not forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_client(stream, shared.clone()));
            }
            // Out of descriptors, most likely: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What one client connection did, written as its `close` record when the last user of the
/// connection (the HTTP server, a tunnel, an intercepted session) lets go of it.
struct ConnState {
    id: u64,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    last: Mutex<Option<AuditRecord>>,
    swapped: Mutex<Vec<String>>,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut rec) = last {
            rec.ts_ms = now_ms();
            rec.event = "close".into();
            rec.reason = None;
            rec.swapped = std::mem::take(&mut *self.swapped.lock().unwrap_or_else(|e| e.into_inner()));
            rec.bytes_up = self.counters.up.load(Ordering::Relaxed);
            rec.bytes_down = self.counters.down.load(Ordering::Relaxed);
            self.shared.audit.record(&rec);
        }
    }
}

impl ConnState {
    fn record(&self, method: &str, host: &str, port: u16, decision: &str, reason: Option<String>) {
        let rec = AuditRecord {
            ts_ms: now_ms(),
            agent: self.shared.agent.clone(),
            conn: self.id,
            event: "decision".into(),
            method: method.into(),
            host: host.into(),
            port,
            decision: decision.into(),
            reason,
            swapped: Vec::new(),
            bytes_up: 0,
            bytes_down: 0,
        };
        self.shared.audit.record(&rec);
        if decision != "denied" && decision != "pending" {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(rec);
        }
    }
}

async fn serve_client(stream: TcpStream, shared: Arc<Shared>) {
    let counters = Arc::new(Counters::default());
    let state = Arc::new(ConnState {
        id: shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1,
        shared,
        counters: counters.clone(),
        last: Mutex::new(None),
        swapped: Mutex::new(Vec::new()),
    });
    let io = TokioIo::new(Counting { inner: stream, counters });
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, state).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).with_upgrades().await;
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed()
}

/// A response from the proxy itself, saying why in its body.
fn refusal(status: StatusCode, why: &str) -> Response<Body> {
    let mut resp = Response::new(full(format!("agentbox egress proxy: {why}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert("x-agentbox-proxy", HeaderValue::from_static("refused"));
    resp
}

async fn handle(req: Request<Incoming>, state: Arc<ConnState>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(req, state).await;
    }
    let uri = req.uri().clone();
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => plain_http(req, state).await,
        (Some(_), Some(_)) => refusal(
            StatusCode::BAD_REQUEST,
            "only http:// URLs are proxied as plain requests; https goes through CONNECT (HTTPS_PROXY)",
        ),
        _ => refusal(
            StatusCode::BAD_REQUEST,
            "this is the sandbox's egress proxy; send requests through HTTP_PROXY / HTTPS_PROXY",
        ),
    }
}

/// Waits (with `--ask`) for a decision on `host`.
async fn decide(state: &ConnState, method: &str, host: &Host, port: u16) -> Verdict {
    let shared = &state.shared;
    let deadline = tokio::time::Instant::now() + shared.ask_timeout;
    let mut announced = false;
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let verdict = shared.policy().decide(host, port);
        if verdict != Verdict::Ask {
            return verdict;
        }
        if !announced {
            let why = format!("waiting up to {}s for `agentbox allow`", shared.ask_timeout.as_secs());
            state.record(method, &host.to_string(), port, "pending", Some(why));
            announced = true;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Verdict::Deny(format!(
                "{host} is not in the allowlist and nobody allowed it within {}s",
                shared.ask_timeout.as_secs()
            ));
        }
    }
}

/// Policy, resolution and address checks for one destination: the addresses to connect to and
/// whether to intercept, or the refusal to send back. Every outcome is audited.
async fn admit(
    state: &ConnState,
    method: &str,
    host: &Host,
    port: u16,
    plain: bool,
) -> Result<(bool, Vec<Candidate>), Response<Body>> {
    let shown = host.to_string();
    let deny = |status: StatusCode, why: String| {
        state.record(method, &shown, port, "denied", Some(why.clone()));
        refusal(status, &format!("{method} {shown}:{port} refused: {why}"))
    };
    if plain && state.shared.policy().carries_secret(host) {
        // The placeholder would travel in clear text and be swapped nowhere: refused outright.
        return Err(deny(
            StatusCode::FORBIDDEN,
            format!("plain HTTP to {shown}, which a secret is bound to, is refused; use https://{shown}"),
        ));
    }
    let intercept = match decide(state, method, host, port).await {
        Verdict::Allow { intercept } => intercept && !plain,
        Verdict::Deny(why) => return Err(deny(StatusCode::FORBIDDEN, why)),
        Verdict::Ask => return Err(deny(StatusCode::FORBIDDEN, "no decision".into())),
    };
    let found = match state.shared.resolver.resolve(host, port).await {
        Ok(f) => f,
        // Allowed, but the name does not resolve: a DNS failure, audited as one (not a refusal).
        Err(why) => {
            state.record(method, &shown, port, "unresolved", Some(why.clone()));
            return Err(refusal(
                StatusCode::BAD_GATEWAY,
                &format!("{method} {shown}:{port}: the egress proxy could not resolve the name (DNS): {why}"),
            ));
        }
    };
    let ok = state.shared.policy().check_addresses(host, found);
    match ok {
        Ok(candidates) => {
            let decision = if plain {
                "http"
            } else if intercept {
                "intercept"
            } else {
                "tunnel"
            };
            state.record(method, &shown, port, decision, None);
            Ok((intercept, candidates))
        }
        Err(why) => Err(deny(StatusCode::FORBIDDEN, why)),
    }
}

async fn dial(candidates: &[Candidate]) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for c in candidates {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(c.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = format!("{}: {e}", c.addr),
            Err(_) => last = format!("{}: timed out", c.addr),
        }
    }
    Err(format!("cannot connect ({last})"))
}

fn target(req: &Request<Incoming>, default_port: u16) -> Result<(Host, u16), String> {
    let auth = req.uri().authority().ok_or("the request names no host")?;
    let host = Host::parse(auth.host())?;
    Ok((host, auth.port_u16().unwrap_or(default_port)))
}

async fn connect(req: Request<Incoming>, state: Arc<ConnState>) -> Response<Body> {
    if req.uri().authority().and_then(|a| a.port_u16()).is_none() {
        return refusal(StatusCode::BAD_REQUEST, "CONNECT needs HOST:PORT");
    }
    let (host, port) = match target(&req, 443) {
        Ok(t) => t,
        Err(why) => {
            let raw = req.uri().authority().map(|a| a.host().to_string()).unwrap_or_default();
            state.record("CONNECT", &raw, 0, "denied", Some(why.clone()));
            return refusal(StatusCode::BAD_REQUEST, &why);
        }
    };
    let (intercept, candidates) = match admit(&state, "CONNECT", &host, port, false).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let upgrade = hyper::upgrade::on(req);
    if intercept {
        tokio::spawn(intercepted_session(upgrade, state, host, port, candidates));
    } else {
        let upstream = match dial(&candidates).await {
            Ok(s) => s,
            Err(why) => return refusal(StatusCode::BAD_GATEWAY, &format!("{host}:{port}: {why}")),
        };
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                // The sandbox's own TCP connection underneath: the kernel relays (`splice`).
                match up.downcast::<TokioIo<Counting<TcpStream>>>() {
                    Ok(parts) => {
                        let _ = crate::splice::relay(parts.io.into_inner(), parts.read_buf, upstream).await;
                    }
                    Err(up) => {
                        let mut client = TokioIo::new(up);
                        let mut upstream = upstream;
                        // Larger buffers than the default 8 KiB: fewer syscalls per byte.
                        let _ = tokio::io::copy_bidirectional_with_sizes(
                            &mut client,
                            &mut upstream,
                            RELAY_BUF,
                            RELAY_BUF,
                        )
                        .await;
                    }
                }
            }
            drop(state);
        });
    }
    Response::new(full(String::new()))
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    for h in named {
        headers.remove(h);
    }
}

fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query().and_then(|pq| pq.as_str().parse().ok()).unwrap_or_else(|| Uri::from_static("/"))
}

async fn plain_http(req: Request<Incoming>, state: Arc<ConnState>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let (host, port) = match target(&req, 80) {
        Ok(t) => t,
        Err(why) => return refusal(StatusCode::BAD_REQUEST, &why),
    };
    let (_, candidates) = match admit(&state, &method, &host, port, true).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let fail = |why: String| refusal(StatusCode::BAD_GATEWAY, &format!("{host}:{port}: {why}"));
    let stream = match dial(&candidates).await {
        Ok(s) => s,
        Err(why) => return fail(why),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return fail(e.to_string()),
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(HOST) {
        if let Some(Ok(v)) = parts.uri.authority().map(|a| HeaderValue::from_str(a.as_str())) {
            parts.headers.insert(HOST, v);
        }
    }
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = origin_form(&parts.uri);
    match sender.send_request(Request::from_parts(parts, body.boxed())).await {
        Ok(resp) => pass_back(resp),
        Err(e) => fail(e.to_string()),
    }
}

fn pass_back(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

fn upstream_tls(shared: &Shared) -> Result<Arc<rustls::ClientConfig>, String> {
    shared
        .upstream_tls
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted root certificates on this host (install ca-certificates)".into());
            }
            let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(cfg))
        })
        .clone()
}

/// A verified TLS connection to the real host.
async fn open_upstream(
    shared: &Shared,
    host: &Host,
    candidates: &[Candidate],
) -> Result<SendRequest<Body>, String> {
    let cfg = upstream_tls(shared)?;
    let name = match host {
        Host::Name(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let tcp = dial(candidates).await?;
    let tls = TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// TLS toward a host that carries a secret: terminated here with a certificate from the local
/// CA, each request's headers swapped, and forwarded over a verified connection of our own.
async fn intercepted_session(
    upgrade: hyper::upgrade::OnUpgrade,
    state: Arc<ConnState>,
    host: Host,
    port: u16,
    candidates: Vec<Candidate>,
) {
    let Ok(up) = upgrade.await else { return };
    let Some(ca) = &state.shared.ca else { return };
    let Ok(server_cfg) = ca.server_config(&host.to_string()) else { return };
    let Ok(tls) = TlsAcceptor::from(server_cfg).accept(TokioIo::new(up)).await else { return };
    let upstream: Arc<tokio::sync::Mutex<Option<SendRequest<Body>>>> =
        Arc::new(tokio::sync::Mutex::new(None));
    let candidates = Arc::new(candidates);
    let host = Arc::new(host);
    let svc = service_fn(move |req| {
        let (state, upstream, host, candidates) =
            (state.clone(), upstream.clone(), host.clone(), candidates.clone());
        async move {
            Ok::<_, Infallible>(forward_intercepted(req, &state, &upstream, &host, port, &candidates).await)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
}

async fn forward_intercepted(
    req: Request<Incoming>,
    state: &ConnState,
    upstream: &tokio::sync::Mutex<Option<SendRequest<Body>>>,
    host: &Host,
    port: u16,
    candidates: &[Candidate],
) -> Response<Body> {
    let shared = &state.shared;
    let fail = |why: String| refusal(StatusCode::BAD_GATEWAY, &format!("{host}: {why}"));
    let (mut parts, body) = req.into_parts();
    // Logins: the access token toward their API hosts, the refresh token's placeholder guarded
    // (refused in headers and the URL) toward their token endpoints.
    let mut login_creds: Vec<Credential> = Vec::new();
    let mut refresh: Option<(&Login, Tokens)> = None;
    for l in shared.logins.iter().filter(|l| l.api_host(host) || l.token_host(host)) {
        let tokens = match l.store.current() {
            Ok(t) => t,
            Err(why) => return fail(format!("the login of {}: {why}", l.binding.login)),
        };
        if l.api_host(host) {
            login_creds.push(l.access_credential(&tokens));
        }
        if l.token_host(host) {
            login_creds.push(l.refresh_guard());
            if refresh.is_none() && l.is_token_request(host, &parts.method, parts.uri.path()) {
                refresh = Some((l, tokens));
            }
        }
    }
    let creds: Vec<&Credential> =
        shared.credentials.iter().filter(|c| c.bound_to(host)).chain(login_creds.iter()).collect();
    let uri = parts.uri.to_string();
    match swap_headers(&mut parts.headers, &uri, &creds) {
        Ok(used) => {
            let mut swapped = state.swapped.lock().unwrap_or_else(|e| e.into_inner());
            for u in used {
                if !swapped.contains(&u) {
                    swapped.push(u);
                }
            }
        }
        Err(why) => {
            let why = why.to_string();
            state.record(parts.method.as_str(), &host.to_string(), port, "denied", Some(why.clone()));
            return refusal(StatusCode::FORBIDDEN, &format!("request to {host} refused: {why}"));
        }
    }
    // The request goes to the host the tunnel was opened for, whatever Host it names.
    let authority = if port == 443 { host.to_string() } else { format!("{host}:{port}") };
    match HeaderValue::from_str(&authority) {
        Ok(v) => {
            parts.headers.insert(HOST, v);
        }
        Err(_) => return fail("cannot name the host in a Host header".into()),
    }
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = origin_form(&parts.uri);
    let body = match &refresh {
        // A refresh: the body read whole, its placeholder swapped, the answer uncompressed
        // (it is rewritten before the sandbox sees it).
        Some((login, tokens)) => {
            let read = http_body_util::Limited::new(body, MAX_TOKEN_BODY).collect().await;
            let Ok(read) = read else { return fail("the token request is too large or broke off".into()) };
            let swapped = match login.swap_request(&read.to_bytes(), tokens) {
                Ok(b) => b,
                Err(why) => {
                    state.record("POST", &host.to_string(), port, "denied", Some(why.clone()));
                    return refusal(StatusCode::FORBIDDEN, &format!("request to {host} refused: {why}"));
                }
            };
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
            parts.headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(swapped.len()));
            parts.headers.insert(hyper::header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            parts.headers.insert(hyper::header::ACCEPT, HeaderValue::from_static("application/json"));
            Full::new(Bytes::from(swapped)).map_err(|never| match never {}).boxed()
        }
        None => body.boxed(),
    };
    let request = Request::from_parts(parts, body);

    // A refresh runs to its end in a task of its own, on a connection of its own: the new
    // tokens are stored even if the agent's connection goes away meanwhile (with rotating
    // refresh tokens, a lost answer would end the login for every agent).
    if let Some((login, before)) = refresh {
        let (shared, to, candidates, login) =
            (state.shared.clone(), host.clone(), candidates.to_vec(), login.clone());
        let exchange = tokio::spawn(async move {
            let mut sender = open_upstream(&shared, &to, &candidates).await?;
            let resp = sender.send_request(request).await.map_err(|e| e.to_string())?;
            token_answer(resp, &login, &before).await
        });
        return match exchange.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(why)) => {
                state.record("POST", &host.to_string(), port, "denied", Some(why.clone()));
                fail(why)
            }
            Err(e) => fail(e.to_string()),
        };
    }

    let mut slot = upstream.lock().await;
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        match open_upstream(shared, host, candidates).await {
            Ok(s) => *slot = Some(s),
            Err(why) => return fail(why),
        }
    }
    let Some(sender) = slot.as_mut() else { return fail("no upstream connection".into()) };
    if let Err(e) = sender.ready().await {
        *slot = None;
        return fail(e.to_string());
    }
    match sender.send_request(request).await {
        Ok(resp) => pass_back(resp),
        Err(e) => {
            *slot = None;
            fail(e.to_string())
        }
    }
}

/// A token endpoint's answer, read whole and rewritten: the sandbox never sees a real token.
async fn token_answer(
    resp: Response<Incoming>,
    login: &Login,
    before: &Tokens,
) -> Result<Response<Body>, String> {
    let (mut parts, body) = resp.into_parts();
    if parts.headers.get(hyper::header::CONTENT_ENCODING).is_some_and(|v| v != "identity") {
        return Err("the token endpoint answered compressed although asked not to".into());
    }
    let read = http_body_util::Limited::new(body, MAX_TOKEN_BODY).collect().await;
    let read = read.map_err(|e| format!("reading the token endpoint's answer: {e}"))?;
    let out = login.rewrite_answer(parts.status.as_u16(), &read.to_bytes(), before)?;
    // Only what describes the body we send: no cookies or other state of the endpoint's.
    parts.headers = hyper::HeaderMap::new();
    parts.headers.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    parts.headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, Full::new(Bytes::from(out)).map_err(|never| match never {}).boxed()))
}
