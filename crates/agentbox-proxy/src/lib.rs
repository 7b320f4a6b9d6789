//! The egress proxy of a `proxy`-mode sandbox.
//!
//! The sandbox has no route out. Its init creates a listening TCP socket on its own loopback and
//! hands it to the supervisor; this crate serves that socket from outside the sandbox, on one
//! thread with a single-threaded async runtime, started after the sandbox was cloned (so nothing
//! of it, and none of the secrets it holds, was ever in the sandbox's memory).
//!
//! For each CONNECT or plain-HTTP request: decide by the policy (allowlist, one-shot grants,
//! `--ask`), resolve the name here (never in the sandbox), refuse non-public addresses unless
//! named, then either tunnel the bytes untouched or, for a host a secret is bound to, terminate
//! TLS with a certificate from the local CA, swap the placeholder for the secret in the request
//! headers, and forward the request over a verified TLS connection. Every attempt is audited.

mod addr;
mod audit;
mod ca;
mod counting;
mod login;
mod policy;
mod resolve;
mod server;
mod splice;
mod swap;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agentbox_core::{EgressSpec, HostRule};

pub use addr::non_public;
pub use audit::{format_utc, now_ms, read_records, Audit, AuditRecord};
pub use ca::{cert_path, LocalCa};
pub use login::{Login, TokenStore, Tokens};
pub use policy::{Policy, Verdict};
pub use resolve::{Candidate, Resolver};
pub use swap::{swap_headers, Credential, SwapError};

/// The address the proxy listens on inside every `proxy`-mode sandbox (the sandbox's own
/// loopback; each sandbox has its own network namespace).
pub const LISTEN_PORT: u16 = 3128;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("egress proxy CA: {0}")]
    Ca(String),
    #[error("egress proxy: {0}")]
    Config(String),
    #[error("egress proxy: {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

/// Everything one proxy needs.
#[derive(Debug)]
pub struct ProxyConfig {
    pub agent: String,
    pub egress: EgressSpec,
    /// The secrets, with their real values (loaded after the sandbox was started).
    pub credentials: Vec<Credential>,
    /// Subscription logins, their tokens read from their stores at each use.
    pub logins: Vec<Login>,
    /// Needed when there are credentials.
    pub ca: Option<LocalCa>,
    pub resolver: Resolver,
    pub audit: Audit,
    /// How long a request waits for `agentbox allow` with `--ask`.
    pub ask_timeout: Duration,
}

pub(crate) struct Shared {
    agent: String,
    policy: Mutex<Policy>,
    /// Woken when the policy changes, for requests waiting on a decision.
    changed: tokio::sync::Notify,
    credentials: Vec<Credential>,
    logins: Vec<Login>,
    ca: Option<LocalCa>,
    resolver: Resolver,
    audit: Audit,
    ask_timeout: Duration,
    upstream_tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    next_conn: AtomicU64,
}

impl Shared {
    fn policy(&self) -> std::sync::MutexGuard<'_, Policy> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy: grants reach it through here.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle").field("agent", &self.shared.agent).finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// Allows `rule` from now on (or for one connection), waking requests that wait for it.
    pub fn allow(&self, rule: HostRule, once: bool) {
        self.shared.policy().grant(rule, once);
        self.shared.changed.notify_waiters();
    }

    /// Takes `rule` off the allowlist (and its one-shot grants): new connections are decided
    /// without it; connections open now are not cut. Whether it was there.
    pub fn revoke(&self, rule: &HostRule) -> bool {
        self.shared.policy().revoke(rule)
    }
}

/// Serves `listener` (a socket created inside the sandbox's network namespace) on a new thread.
pub fn start(listener: std::net::TcpListener, cfg: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    if !(cfg.credentials.is_empty() && cfg.logins.is_empty()) && cfg.ca.is_none() {
        return Err(ProxyError::Config("credentials need the local CA".into()));
    }
    listener.set_nonblocking(true).map_err(|source| ProxyError::Io { what: "listener", source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ProxyError::Io { what: "runtime", source })?;
    let shared = Arc::new(Shared {
        agent: cfg.agent,
        policy: Mutex::new(Policy::new(cfg.egress)),
        changed: tokio::sync::Notify::new(),
        credentials: cfg.credentials,
        logins: cfg.logins,
        ca: cfg.ca,
        resolver: cfg.resolver,
        audit: cfg.audit,
        ask_timeout: cfg.ask_timeout,
        upstream_tls: OnceLock::new(),
        // Numbered from the start time, so numbers stay unique across restarts of the agent.
        next_conn: AtomicU64::new(now_ms() * 1000),
    });
    let serving = shared.clone();
    std::thread::Builder::new()
        .name("egress-proxy".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => server::accept_loop(l, serving).await,
                    Err(e) => agentbox_core::note(format_args!("egress proxy: {e}")),
                }
            })
        })
        .map_err(|source| ProxyError::Io { what: "thread", source })?;
    Ok(ProxyHandle { shared })
}
