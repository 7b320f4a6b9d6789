use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Backend, EgressSpec, Limits, MountSpec, NetworkMode, SpecError};

/// The home directory path inside every sandbox. It is never the caller's home.
pub const SANDBOX_HOME: &str = "/home/agent";
pub const DEFAULT_HOSTNAME: &str = "agentbox";
/// The caller is mapped to this uid/gid inside. Not 0: agents such as Claude Code refuse to skip
/// permission prompts as root, and a non-root uid owns nothing of the host's root-owned files.
pub const DEFAULT_UID: u32 = 1000;
pub const DEFAULT_GID: u32 = 1000;

/// The host uid and gid a sandbox runs as when agentbox runs as root. Mapping the agent to root
/// would make every file it creates root's, let it set the setuid bit on them, and let it write
/// any root-owned file that a hard link brings into its workspace. This id belongs to no account,
/// lies above the ranges that `useradd` (subordinate ids) and systemd-nspawn hand out, and below
/// 2^31 for tools that store ids as signed numbers.
pub const ROOT_AGENT_ID: u32 = 2_100_000_000;

/// The host ids a sandbox runs as for a caller whose effective ids are `(uid, gid)`: the caller's
/// own, or [`ROOT_AGENT_ID`] for root.
pub fn host_ids_for(uid: u32, gid: u32) -> (u32, u32) {
    if uid == 0 {
        (ROOT_AGENT_ID, ROOT_AGENT_ID)
    } else {
        (uid, gid)
    }
}

/// Where the sandbox's home directory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HomeSpec {
    /// A fresh, private tmpfs that disappears with the sandbox.
    Tmpfs,
    /// A host directory (an agent's persistent home under agentbox's state), bound read-write.
    Bind(PathBuf),
}

/// A copy-on-write workspace: `lower` (the person's directory) seen read-only below, the
/// agent's writes in `upper` (its own state) above. Mounted by overlayfs inside the sandbox's
/// mount namespace only; on the host, `lower` is never written and the workspace path is an
/// empty mount point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    pub lower: PathBuf,
    pub upper: PathBuf,
    /// overlayfs's scratch directory, on the same filesystem as `upper`.
    pub work: PathBuf,
    /// A read-only view (`upper` stacked on `lower`, nothing written): for a look at a running
    /// agent's workspace beside its own mount of the same layers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A complete, validated description of one sandbox: the single canonical form that CLI flags,
/// profile files and API requests all resolve into. Host paths are canonical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// argv of the command; reaches `execve` byte for byte.
    pub command: Vec<OsString>,
    /// Host directory bound read-write at the same path (the mount point of `overlay`, when
    /// there is one).
    pub workspace: PathBuf,
    /// The workspace is an overlay on a host directory rather than the directory itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
    /// Working directory inside the sandbox.
    pub workdir: PathBuf,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkMode,
    /// What a `proxy`-mode sandbox may reach, and the secrets swapped in on the way.
    #[serde(default)]
    pub egress: EgressSpec,
    /// The complete environment of the command.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    pub home: HomeSpec,
    pub timeout: Option<Duration>,
    /// Sandbox paths (inside mounts) covered with an unreadable node, e.g. a profile's files to hide.
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// Namespaces (`ns`) or a virtual machine (`vm`).
    #[serde(default)]
    pub backend: Backend,
    /// Host ports forwarded to the agent's own loopback while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::PortMap>,
    /// `pause --after`: its supervisor pauses the agent once it has been idle (no output, no
    /// input) this long, and input resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after: Option<Duration>,
    /// The layout version of a stored spec ([`SPEC_VERSION`]); 0 for specs stored before versions.
    #[serde(default)]
    pub version: u32,
}

/// The layout version [`SandboxSpec::encode`] writes. Raise it when a field changes meaning, and
/// teach [`SandboxSpec::decode`] to read the older layouts.
pub const SPEC_VERSION: u32 = 2;

impl SandboxSpec {
    /// Reads a spec stored by this or an earlier version of agentbox.
    ///
    /// Version 0 (no `version` field) is the layout before versions; it decodes as is: every field
    /// added since has a default.
    pub fn decode(json: &str) -> Result<Self, SpecError> {
        let spec: Self = serde_json::from_str(json).map_err(|e| SpecError::Stored(e.to_string()))?;
        if spec.version > SPEC_VERSION {
            return Err(SpecError::Stored(format!(
                "written by a newer agentbox (layout {}, this one reads up to {SPEC_VERSION}); upgrade agentbox",
                spec.version
            )));
        }
        Ok(spec)
    }

    /// The spec as it is stored, with the current layout version.
    pub fn encode(&self) -> Result<String, SpecError> {
        let mut spec = self.clone();
        spec.version = SPEC_VERSION;
        serde_json::to_string(&spec).map_err(|e| SpecError::Stored(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row written by agentbox before specs had versions decodes, and comes back stored with
    /// the current one.
    #[test]
    fn a_spec_stored_before_versions_decodes() {
        let old = include_str!("../tests/fixtures/spec-v0.json");
        let spec = SandboxSpec::decode(old).unwrap();
        assert_eq!(spec.version, 0);
        assert_eq!(spec.hostname, "old1");
        assert_eq!(spec.limits.memory, Some(512 << 20));
        assert_eq!(spec.egress.secrets[0].auth_headers(), vec!["x-api-key", "authorization"]);
        let again = SandboxSpec::decode(&spec.encode().unwrap()).unwrap();
        assert_eq!(again.version, SPEC_VERSION);
        assert_eq!(SandboxSpec { version: 0, ..again }, spec);
        let newer = old.replacen('{', "{\"version\":99,", 1);
        assert!(SandboxSpec::decode(&newer).unwrap_err().to_string().contains("newer agentbox"));
        assert!(SandboxSpec::decode("{").is_err());
    }
}
