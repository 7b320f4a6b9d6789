//! The E2B control plane in the server's OpenAPI document (tag `e2b`): the shapes E2B's SDKs
//! send and read, as this server serves them. envd (the in-sandbox API) is Connect-RPC and is
//! described in ARCHITECTURE.md instead.
//!
//! These types only describe; the handlers read and write the same JSON (`control.rs`,
//! `snapshots.rs`), and the schema fuzzer checks every answer against what is written here.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// An E2B error: the HTTP status again as `code`, and what went wrong.
#[derive(Serialize, ToSchema)]
pub struct E2bError {
    pub code: u16,
    pub message: String,
}

/// `POST /v2/sandboxes` (also `POST /sandboxes`).
#[derive(Serialize, ToSchema)]
pub struct NewSandbox {
    /// `base` (a shell), an agentbox profile's name, or a snapshot's id.
    #[serde(rename = "templateID")]
    pub template_id: Option<String>,
    /// Seconds until the sandbox is killed (or paused, with `autoPause`): 1 to 86400, default 300.
    pub timeout: Option<u64>,
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(rename = "envVars")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(rename = "autoPause")]
    pub auto_pause: Option<bool>,
    pub network: Option<NetworkRules>,
    pub allow_internet_access: Option<bool>,
}

/// Hosts the sandbox may reach (through agentbox's egress proxy); nothing else.
#[derive(Serialize, ToSchema)]
pub struct NetworkRules {
    #[serde(rename = "allowOut")]
    pub allow_out: Option<Vec<String>>,
    /// Accepted: everything `allowOut` does not name is denied already (`allowOut` wins).
    #[serde(rename = "denyOut")]
    pub deny_out: Option<Vec<String>>,
}

/// A sandbox as create and connect answer it.
#[derive(Serialize, ToSchema)]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub alias: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    /// The token envd calls must carry (`X-Access-Token`).
    #[serde(rename = "envdAccessToken")]
    pub envd_access_token: String,
    #[serde(rename = "trafficAccessToken")]
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

/// A sandbox as the list and `GET /sandboxes/{id}` show it.
#[derive(Serialize, ToSchema)]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub alias: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "startedAt")]
    pub started_at: String,
    #[serde(rename = "endAt")]
    pub end_at: String,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    /// `running` or `paused`.
    pub state: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(rename = "envdAccessToken")]
    pub envd_access_token: String,
    pub domain: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// `{timeout}`: seconds from now.
#[derive(Serialize, ToSchema)]
pub struct Timeout {
    pub timeout: u64,
}

/// `{duration}`: seconds from now (default 300).
#[derive(Serialize, ToSchema)]
pub struct Refresh {
    pub duration: Option<u64>,
}

/// `{timeout}`: a paused sandbox resumes with this many seconds; a running one is extended.
#[derive(Serialize, ToSchema)]
pub struct Connect {
    pub timeout: Option<u64>,
}

/// `POST /sandboxes/{id}/fork`.
#[derive(Serialize, ToSchema)]
pub struct ForkRequest {
    /// Seconds each copy lives (default 300).
    pub timeout: Option<u64>,
    /// How many copies: 1 to 20 (default 1).
    pub count: Option<u64>,
}

/// One copy: the sandbox, or why it could not be made.
#[derive(Serialize, ToSchema)]
pub struct ForkResult {
    pub sandbox: Option<Sandbox>,
    pub error: Option<E2bError>,
}

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Serialize, ToSchema)]
pub struct SnapshotRequest {
    pub name: Option<String>,
    /// Accepted and ignored: a snapshot here holds the files, not the memory.
    pub memory: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

/// One sample of a sandbox's use.
#[derive(Serialize, ToSchema)]
pub struct Metric {
    pub timestamp: String,
    #[serde(rename = "timestampUnix")]
    pub timestamp_unix: i64,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u64,
    #[serde(rename = "cpuUsedPct")]
    pub cpu_used_pct: f64,
    #[serde(rename = "memUsed")]
    pub mem_used: u64,
    #[serde(rename = "memTotal")]
    pub mem_total: u64,
    #[serde(rename = "memCache")]
    pub mem_cache: u64,
    #[serde(rename = "diskUsed")]
    pub disk_used: u64,
    #[serde(rename = "diskTotal")]
    pub disk_total: u64,
}

#[derive(OpenApi)]
#[openapi(
    paths(
        super::control::create,
        super::control::list,
        super::control::info,
        super::control::kill,
        super::control::timeout,
        super::control::refresh,
        super::control::pause,
        super::control::connect,
        super::snapshots::fork,
        super::snapshots::snapshot,
        super::snapshots::list,
        super::snapshots::delete,
        super::snapshots::metrics,
    ),
    components(schemas(E2bError, NewSandbox, NetworkRules, Sandbox, SandboxDetail, Timeout, Refresh, Connect,
        ForkRequest, ForkResult, SnapshotRequest, SnapshotInfo, Metric)),
    modifiers(&ApiKey),
    tags((name = "e2b", description = "E2B's control plane, for E2B's own SDKs: authenticated by `X-API-KEY` (the server's controller token)"))
)]
pub struct E2bDoc;

struct ApiKey;

impl utoipa::Modify for ApiKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey as Key, ApiKeyValue, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "e2b_api_key",
            SecurityScheme::ApiKey(Key::Header(ApiKeyValue::new("X-API-KEY"))),
        );
    }
}
