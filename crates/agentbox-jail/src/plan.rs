//! The sandbox setup plan: plain data that says what the child will do, in order.
//!
//! `build_plan` turns a [`SandboxSpec`](agentbox_core::SandboxSpec) into a [`Plan`]; the executor in
//! `child` interprets it. Keeping the plan as data lets unit tests check every mount, path and rule
//! without root or namespaces, and lets `agentbox run --dry-run` print exactly what will happen.

use std::ffi::OsString;
use std::path::PathBuf;

use agentbox_core::Limits;
use serde::Serialize;

use crate::seccomp::SeccompPolicy;

/// Whether a bind mount's source is a directory or a single file (device nodes, hidden files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Dir,
    File,
}

/// One filesystem step. Every `target` is a path inside the sandbox; the executor prefixes the
/// staging root and never follows a symlink while walking to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MountOp {
    /// A fresh tmpfs (`mode` is the root directory's permission bits).
    Tmpfs { target: PathBuf, mode: u32 },
    /// Bind a host path (opened by the launcher before the sandbox exists).
    Bind { source: PathBuf, target: PathBuf, kind: NodeKind, writable: bool },
    /// An overlayfs: `lower` read-only below, writes into `upper` (host paths, opened by the
    /// launcher like a bind's source). Mounted in the sandbox's user namespace with user xattrs,
    /// no metacopy and no redirects, so the upper layer holds whole files a host reader can take
    /// as they are.
    /// With `writable` false, `upper` is stacked on `lower` read-only and `work` is not used.
    Overlay { lower: PathBuf, upper: PathBuf, work: PathBuf, target: PathBuf, writable: bool },
    /// Bind a host device node (`/dev/null`, ...). Unlike every other mount it keeps device access
    /// (no `nodev`); it is still `nosuid` and `noexec`.
    Device { source: PathBuf, target: PathBuf },
    /// Bind a path of the sandbox onto itself read-only (e.g. `/proc/sys`). Skipped if missing.
    ReadonlyRebind { target: PathBuf },
    /// A symlink `target -> points_to`.
    Symlink { target: PathBuf, points_to: PathBuf },
    /// A new procfs for the sandbox's PID namespace.
    Proc { target: PathBuf },
    /// A private devpts instance (its own pty numbering; host ptys are invisible).
    Devpts { target: PathBuf },
    /// Cover a secret with an empty, unreadable, read-only node.
    Hide { target: PathBuf, kind: NodeKind },
    /// Cover a file with one of these contents, read-only (the sandbox's own /etc/passwd).
    File { target: PathBuf, contents: String },
}

impl MountOp {
    pub fn target(&self) -> &PathBuf {
        match self {
            Self::Tmpfs { target, .. }
            | Self::Bind { target, .. }
            | Self::Overlay { target, .. }
            | Self::Device { target, .. }
            | Self::ReadonlyRebind { target }
            | Self::Symlink { target, .. }
            | Self::Proc { target }
            | Self::Devpts { target }
            | Self::Hide { target, .. }
            | Self::File { target, .. } => target,
        }
    }
}

/// What Landlock allows once the sandbox is built: read and execute everywhere that is visible,
/// write only beneath `read_write`. The scopes stop abstract-socket connections and signals that
/// leave the sandbox's Landlock domain (ABI 6+; applied where the kernel has them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockPolicy {
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
}

/// The process that runs inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessPlan {
    #[serde(serialize_with = "serialize_argv")]
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// A descriptor of the launcher's that the command inherits, under the same number (every
    /// other one is closed on exec): how a VM's host reports back while it starts. The launcher
    /// names it to the command (in `env`) and keeps it open until the launch.
    pub keep_fd: Option<i32>,
}

fn serialize_argv<S: serde::Serializer>(argv: &[OsString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(argv.iter().map(|a| a.to_string_lossy()))
}

/// Everything the launcher and the child do to build one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Unshare the network namespace (only loopback inside).
    pub new_netns: bool,
    /// In the new network namespace, listen on 127.0.0.1:PORT and hand the socket to the
    /// launcher, which serves the egress proxy on it from outside.
    pub proxy_port: Option<u16>,
    /// uid and gid the caller becomes inside the user namespace.
    pub uid: u32,
    pub gid: u32,
    /// The host uid and gid that `uid`/`gid` map to: the caller's own, or, when the caller is
    /// root, [`agentbox_core::ROOT_AGENT_ID`], so nothing the agent does happens as host root.
    pub host_uid: u32,
    pub host_gid: u32,
    pub hostname: String,
    /// Filesystem steps, parents before children.
    pub mounts: Vec<MountOp>,
    pub landlock: LandlockPolicy,
    pub seccomp: SeccompPolicy,
    #[serde(skip)]
    pub limits: Limits,
    pub process: ProcessPlan,
}
