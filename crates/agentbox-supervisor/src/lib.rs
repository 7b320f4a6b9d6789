//! The per-agent supervisor and the clients that talk to it.
//!
//! `agentbox spawn` starts the same binary in the supervisor role (detached, in its own session);
//! the supervisor starts the sandbox, owns its terminal, and serves `attach`, `send`, `screen` and
//! `kill` over a Unix socket in the agent's state directory (mode 0600 in a 0700 directory).
//! See `supervise` for the loop and `protocol` for the frames.

mod client;
pub mod hitl;
mod idle;
mod logfile;
pub mod paths;
mod pausing;
pub mod protocol;
mod recorder;
mod screen;
mod supervise;
mod vm;
pub mod vm_snapshot;

use std::path::PathBuf;

pub use client::{
    allow_host, attach, kill_agent, pause_after, resize, revoke_host, sandbox_handles, sandbox_tree, screen,
    send_input, terminate_agent, AttachEnd, AttachOptions, ClientError,
};
pub use logfile::DEFAULT_LIMIT as DEFAULT_LOG_LIMIT;
pub use pausing::{pause_sandbox, resume_sandbox};
pub use recorder::{Notice, Notifier};
pub use supervise::{supervise, AgentStore, Meanwhile, ProxySetup, SupervisorConfig, INVALID_COMMAND};
pub use vm::{snapshot_path, vm_plan, VmAssets};
pub use vm_snapshot::{ensure_snapshot, RestoreReport};

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Start(String),
    #[error("attach socket {0}: {1}")]
    Socket(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] agentbox_store::StoreError),
    #[error("{0}: {1}")]
    Sys(&'static str, nix::errno::Errno),
}
