//! What the server shares between requests: the state directory, the tokens, the metrics and a
//! snapshot of every agent.
//!
//! The snapshot is the server's answer to "list the agents", pre-serialised. It remembers the
//! stamp of the store's last commit (see `agentbox_store::ChangeWatch`) from before it was read;
//! a list request compares the stamp first and rebuilds the snapshot when anything committed
//! since, from any process (the CLI, the API, a supervisor). So every read reflects every change
//! completed before it, and an unchanged store costs one `pread`.
//! A background task also rebuilds it a few times a second: an agent whose supervisor vanished
//! changes nothing in the store, yet is shown failed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentbox_engine::Result;
use agentbox_store::{ChangeWatch, Stamp};
use axum::body::Bytes;

use super::auth::Tokens;
use super::extract::warn;
use super::metrics::Metrics;
use super::store::with_store;
use agentbox_engine::views::{self, AgentView, Filter};
use agentbox_engine::Home;

/// How often the snapshot is rebuilt from the store.
pub const REFRESH: Duration = Duration::from_millis(500);
/// How often CPU and memory are sampled.
pub const USAGE_REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Snapshot {
    /// The stamp of the store's last commit when it was read (`None`: unknown, always rebuilt).
    pub version: Option<Stamp>,
    /// The order in which rebuilds began: a rebuild that began earlier never replaces one that
    /// began later (it may have read the store before a change the later one saw).
    pub seq: u64,
    pub agents: Vec<AgentView>,
    /// `agents` as the JSON body of an unfiltered list.
    pub json: Bytes,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub processes: usize,
}

#[derive(Debug)]
pub struct AppState {
    pub home: Home,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Hands out [`Snapshot::seq`].
    rebuilds: std::sync::atomic::AtomicU64,
    /// Tells whether anything was committed since the snapshot was read.
    changes: Option<ChangeWatch>,
    usage: RwLock<Arc<HashMap<String, Usage>>>,
    /// The processes E2B's SDKs started in sandboxes.
    pub e2b: Arc<crate::e2b::Processes>,
    /// Agent ports opened through the server: forwarders, tickets, sessions.
    pub ports: Arc<crate::ports::Ports>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(home: Home, tokens: Tokens) -> Result<Self> {
        let changes = ChangeWatch::open(&home.store_path())
            .map_err(|e| warn(&format!("every list request reads the store: {e}")))
            .ok();
        Ok(Self {
            changes,
            home,
            tokens: Arc::new(tokens),
            metrics: Arc::new(Metrics::new()),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            rebuilds: std::sync::atomic::AtomicU64::new(1),
            usage: RwLock::new(Arc::new(HashMap::new())),
            e2b: Arc::default(),
            ports: Arc::default(),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn usage(&self) -> Arc<HashMap<String, Usage>> {
        self.usage.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The stamp of the store's last commit now (`None`: unknown).
    fn stamp(&self) -> Option<Stamp> {
        self.changes.as_ref()?.stamp().ok()
    }

    /// Rebuilds the snapshot from the store (blocking).
    pub fn refresh_blocking(&self) -> Result<()> {
        let seq = self.rebuilds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Read before the data: a change committed meanwhile makes the next request rebuild.
        let version = self.stamp();
        let agents = with_store(&self.home, |s| views::list(s, &Filter::default()))?;
        let json = Bytes::from(serde_json::to_vec(&agents)?);
        if let Ok(mut slot) = self.snapshot.write() {
            if slot.seq < seq {
                *slot = Arc::new(Snapshot { version, seq, agents, json });
            }
        }
        Ok(())
    }

    /// The snapshot, rebuilt first if the store changed since it was read.
    pub async fn fresh_snapshot(self: &Arc<Self>) -> Arc<Snapshot> {
        let current = self.snapshot();
        if current.version.is_some() && current.version == self.stamp() {
            return current;
        }
        self.refresh().await;
        self.snapshot()
    }

    /// Rebuilds the snapshot, off the async threads.
    pub async fn refresh(self: &Arc<Self>) {
        let me = self.clone();
        let done = tokio::task::spawn_blocking(move || me.refresh_blocking()).await;
        if let Ok(Err(e)) = done {
            warn(&format!("refreshing the agent list: {e:#}"));
        }
    }

    fn sample_usage(&self) {
        let running: Vec<_> = match with_store(&self.home, |s| agentbox_engine::agents::all(s)) {
            Ok(all) => all.into_iter().filter(|a| agentbox_engine::agents::is_live_state(&a.state)).collect(),
            Err(_) => return,
        };
        let map = agentbox_engine::measure::measure(&running)
            .into_iter()
            .map(|u| {
                let v = Usage { cpu_percent: u.cpu_percent, rss_bytes: u.rss_bytes, processes: u.processes };
                (u.name, v)
            })
            .collect();
        if let Ok(mut slot) = self.usage.write() {
            *slot = Arc::new(map);
        }
    }
}

/// Keeps the snapshot and the usage figures fresh for as long as the server runs.
pub fn start_refreshers(state: &Shared) {
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            s.refresh().await;
            tokio::time::sleep(REFRESH).await;
        }
    });
    let s = state.clone();
    std::thread::Builder::new()
        .name("usage".into())
        .spawn(move || loop {
            s.sample_usage();
            std::thread::sleep(USAGE_REFRESH);
        })
        .map(drop)
        .unwrap_or_else(|e| warn(&format!("no CPU/memory sampling: {e}")));
}
