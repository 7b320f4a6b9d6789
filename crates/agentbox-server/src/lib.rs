//! `agentbox serve`: a view and control plane over the same store and supervisors the CLI uses.
//!
//! The server owns no agent. Agents belong to their supervisors; the server reads the store,
//! talks to supervisors over their sockets and starts new agents through a fresh `agentbox`
//! process. Killing or restarting it never stops an agent, and when it comes back it shows every
//! agent as the store and the supervisors say they are.

mod api;
mod api_archive;
mod api_tasks;
mod api_volumes;
mod api_workspace;
mod auth;
mod e2b;
mod extract;
mod layout;
mod metrics;
mod ports;
mod screen_html;
mod spawn_request;
mod spawner;
mod state;
mod store;
mod stream;
mod ui;
mod ui_bulk;
mod ui_tasks;
mod ui_workspace;
mod ws;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

pub use auth::{token_path, viewer_token_path};
pub use spawn_request::SpawnRequest;
use state::{AppState, Shared};

use agentbox_engine::Home;

/// How `agentbox serve` listens (its flags, as data).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `IP:PORT`.
    pub listen: String,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Plain HTTP on a non-loopback address, knowingly.
    pub insecure_plain_http_on_network: bool,
    /// Worker threads (default 2).
    pub threads: Option<usize>,
}

/// The whole HTTP surface: API, OpenAPI document, metrics, WebSocket, dashboard.
fn app(state: Shared) -> Router {
    let (api, mut doc) = api::router();
    doc.merge(e2b::openapi());
    let doc = Arc::new(doc);
    let openapi = get(move || {
        let doc = doc.clone();
        async move { Json(doc.as_ref().clone()) }
    });
    let e2b = e2b::router(&state);
    let main = Router::new()
        .merge(api)
        .route("/api/v1/openapi.json", openapi)
        .route("/metrics", get(metrics_text))
        .route("/ws/agents/{name}/attach", get(ws::attach))
        .route("/api/v1/agents/{name}/ports/{port}/", any(ports::api_proxy))
        .route("/api/v1/agents/{name}/ports/{port}/{*rest}", any(ports::api_proxy))
        .merge(ui::router())
        .merge(ui_workspace::router())
        .merge(ui_tasks::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.tokens.clone(), auth::require_token));
    // E2B's routes check their own credentials (X-API-KEY, a sandbox's X-Access-Token).
    Router::new()
        .merge(e2b)
        .merge(main)
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::observe))
        // A port's own origin (`PORT-NAME.localhost`) is the agent's: none of the above there.
        .layer(axum::middleware::from_fn_with_state(state.clone(), ports::by_host))
        .with_state(state)
}

async fn not_found() -> extract::ApiError {
    extract::ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/openapi.json")
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    let snapshot = state.fresh_snapshot().await;
    match extract::blocking(move || metrics::render(&state.metrics, &snapshot.agents, &state.home)).await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn load_tls(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading --tls-cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing --tls-cert {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not match")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Checks the address against the TLS options before anything is bound.
fn check_exposure(addr: &SocketAddr, args: &ServeOptions) -> Result<()> {
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        bail!("give both --tls-cert and --tls-key, or neither");
    }
    if !addr.ip().is_loopback() && args.tls_cert.is_none() && !args.insecure_plain_http_on_network {
        bail!(
            "{addr} is reachable from other machines: give --tls-cert and --tls-key, or accept sending the \
             token in clear text with --insecure-plain-http-on-network"
        );
    }
    Ok(())
}

pub fn serve(args: ServeOptions) -> Result<i32> {
    let addr: SocketAddr = args.listen.parse().map_err(|_| {
        anyhow::anyhow!("invalid --listen '{}': use IP:PORT, e.g. 127.0.0.1:8122", args.listen)
    })?;
    check_exposure(&addr, &args)?;
    let home = Home::open()?;
    home.store()?;
    // Tasks a runner left half-done (a crash, a reboot) are taken over now, not at the next submit.
    agentbox_engine::tasks::runner::ensure_running(&home)?;
    let tokens = auth::Tokens::load_or_create(&home)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(load_tls(c, k)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.unwrap_or(2).max(1))
        .thread_name("serve")
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let state: Shared = Arc::new(AppState::new(home.clone(), tokens)?);
        state.refresh_blocking()?;
        state::start_refreshers(&state);
        e2b::start_reaper(&state);
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("agentbox serve: listening on {scheme}://{local}");
        eprintln!("agentbox serve: token in {} (viewer: {})", token_path(&home).display(), viewer_token_path(&home).display());
        if !local.ip().is_loopback() && tls.is_none() {
            eprintln!("agentbox serve: WARNING: plain HTTP on a network address; the token crosses the network in clear text");
        }
        // The line scripts wait for.
        println!("{scheme}://{local}");
        let app = app(state);
        accept_loop(listener, app, tls).await
    })?;
    Ok(0)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of descriptors and the like: wait a moment rather than spin.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(s), service).with_upgrades().await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).with_upgrades().await;
                }
            }
        });
    }
}
