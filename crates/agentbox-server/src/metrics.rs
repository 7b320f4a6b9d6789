//! Prometheus metrics at `/metrics`.
//!
//! Request latency is measured here, in the server. Everything else is read at scrape time from
//! the same sources the CLI reads, so it is right whoever changed the agents: agents by state
//! from the snapshot, spawns and exits from the store's journal, output bytes from the agents'
//! logs, proxy decisions from their audit logs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use agentbox_supervisor::paths;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use agentbox_engine::views::AgentView;
use agentbox_engine::Home;

use super::store::with_store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    latency: LatencyFamily,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        Self { latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram) }
    }
}

/// Times every request, labelled by its route pattern (never the raw path: names would make
/// one series per agent).
pub async fn observe(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let labels = RouteLabels { method, route, status: resp.status().as_u16() };
    metrics.latency.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    resp
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

/// The text exposition, built from the current state (blocking: reads the store and logs).
pub fn render(metrics: &Metrics, agents: &[AgentView], home: &Home) -> agentbox_engine::Result<String> {
    let mut reg = Registry::with_prefix("agentbox");

    let by_state: Family<StateLabel, Gauge> = Family::default();
    for s in ["starting", "running", "paused", "exited", "killed", "failed", "created"] {
        let _ = by_state.get_or_create(&StateLabel { state: s.into() });
    }
    let mut output = 0u64;
    let mut decisions: BTreeMap<String, u64> = BTreeMap::new();
    for a in agents {
        by_state.get_or_create(&StateLabel { state: a.state.to_string() }).inc();
        let dir = home.agent_dir(&a.name);
        output += std::fs::metadata(paths::log(&dir)).map(|m| m.len()).unwrap_or(0);
        if a.network == "proxy" {
            for r in agentbox_proxy::read_records(&paths::net_log(&dir)).unwrap_or_default() {
                if r.event == "decision" && r.decision != "pending" {
                    *decisions.entry(r.decision).or_default() += 1;
                }
            }
        }
    }
    reg.register("agents", "Agents by state", by_state);

    let counts = with_store(home, |s| Ok(s.event_counts()?))?;
    let count = |kind: &str| counts.iter().find(|(k, _)| k == kind).map(|(_, n)| *n).unwrap_or(0);
    let spawns: Counter = Counter::default();
    spawns.inc_by(count("spawn"));
    reg.register("spawns", "Agents spawned (from the journal)", spawns);
    let exits: Family<StateLabel, Counter> = Family::default();
    for (event, label) in [("exit", "exited"), ("killed", "killed"), ("failed", "failed")] {
        exits.get_or_create(&StateLabel { state: label.into() }).inc_by(count(event));
    }
    reg.register("exits", "Agents that ended, by how (from the journal)", exits);

    let out: Gauge = Gauge::default();
    out.set(output as i64);
    reg.register("output_bytes", "Bytes of terminal output logged by the agents present", out);

    let proxy: Family<DecisionLabel, Counter> = Family::default();
    for (d, n) in decisions {
        proxy.get_or_create(&DecisionLabel { decision: d }).inc_by(n);
    }
    reg.register("proxy_decisions", "Egress proxy decisions of the agents present", proxy);

    reg.register("api_request_duration_seconds", "API latency by route", metrics.latency.clone());
    let mut text = String::new();
    encode(&mut text, &reg).map_err(|_| agentbox_engine::Error::internal("encoding the metrics"))?;
    Ok(text)
}
