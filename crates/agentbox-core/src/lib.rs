//! Domain types of agentbox and the rules that make them valid.
//!
//! Every way of asking for a sandbox (CLI flags today; profile files and API bodies later) is turned
//! into the same [`SandboxSpec`]. This crate owns the parsing of the small value grammars (sizes,
//! mount specs, `K=V` pairs, hostnames) and the policy checks that need no I/O (which workspaces are
//! refused, which environment variables may pass). Anything that touches the host lives elsewhere:
//! `agentbox-jail` resolves paths and builds the setup plan from a spec.

mod backend;
mod egress;
mod env;
mod error;
mod hostname;
mod limits;
mod mount;
mod name;
mod network;
mod paths;
mod profile;
mod size;
mod spawn;
mod spec;
mod state;
mod task;
pub mod termfilter;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backend::{Backend, VM_DEFAULT_MEMORY, VM_MIN_MEMORY};
pub use egress::{
    canonical_ip, check_header_name, check_secret_hosts, default_auth_headers, parse_secret_arg, EgressSpec,
    Host, HostPattern, HostRule, LoginBinding, SecretBinding, DEFAULT_PORTS,
};
pub use env::{default_env, is_valid_env_key, parse_env_arg, set_env, EnvArg, ENV_ALLOWLIST, SANDBOX_PATH};
pub use error::SpecError;
pub use hostname::validate_hostname;
pub use limits::Limits;
pub use mount::{parse_mount_arg, MountArg, MountSpec};
pub use name::validate_name;
pub use network::{NetworkMode, PROXY_PORT};
pub use paths::{check_mount_target, check_workspace, normalize_absolute, SYSTEM_DIRS};
pub use profile::{is_below, token_url_parts, Install, Instructions, LoginSpec, Profile, BUILTIN_PROFILES};
pub use size::{format_size, parse_size};
pub use spawn::{EgressRequest, Field, PortMap, RestartPolicy, SpawnSpec, WorkspaceSource};
pub use spec::{
    host_ids_for, HomeSpec, Overlay, SandboxSpec, DEFAULT_GID, DEFAULT_HOSTNAME, DEFAULT_UID, ROOT_AGENT_ID,
    SANDBOX_HOME, SPEC_VERSION,
};
pub use state::{AgentState, Decision, HitlKind, HitlState, TaskState};
pub use task::{
    check_relative, format_duration, manifest_document, parse_duration, parse_idle, AgentSection,
    ManifestError, ManifestFormat, Metadata, Repository, TaskManifest, MANIFEST_VERSIONS, MAX_RETRIES,
};

/// Writes `agentbox: MSG` on stderr, ignoring failure. The supervisor's stderr is a file in
/// AGENTBOX_HOME: on a full disk `eprintln!` would panic, and the supervisor would die of
/// saying that the disk is full.
pub fn note(msg: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "agentbox: {msg}");
}
