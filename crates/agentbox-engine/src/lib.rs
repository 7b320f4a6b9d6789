//! The operations every agentbox front end (the CLI, the server, the task runner) shares: each
//! front end translates its input into these calls and their typed results and errors into its
//! own output, so `agentbox kill x` and `POST /api/v1/agents/x/kill` cannot drift apart.
//!
//! # Layout
//! - [`error`]: the one error type, with a [`Kind`] every front end maps exhaustively.
//! - [`home`], [`config`], [`secrets`], [`profiles`]: what lives in `AGENTBOX_HOME`.
//! - [`spawn`], [`lifecycle`], [`agents`]: making agents and changing them.
//! - [`session`], [`logs`], [`net`], [`exec`], [`diff`], [`measure`]: working with a running or
//!   finished agent from outside.
//! - [`views`]: agents, HITL requests and log ranges as every front end shows them.
//! - [`tasks`]: the task queue and its runner.
//! - [`tree`]: host-side work on directory trees an agent could have written (copy, walk, remove,
//!   chown), which never follows a link the agent planted and never recreates what could hurt
//!   the host (set-id bits, device nodes, expanded sparse files).
//! - [`egress`], [`git`], [`hooks`], [`identity`], [`notify`], [`crashloop`], [`snapshot`],
//!   [`vm`]: what those operations are made of.

pub mod error;

pub mod agents;
pub mod config;
pub mod control;
pub mod cp;
pub mod crashloop;
pub mod diff;
pub mod egress;
pub mod exec;
pub mod git;
pub mod home;
pub mod hooks;
pub mod identity;
pub mod installs;
pub mod lifecycle;
pub mod logins;
pub mod logs;
pub mod measure;
pub mod net;
pub mod notify;
pub mod pause;
pub mod ports;
pub mod profiles;
pub mod recovery;
pub mod secrets;
pub mod session;
pub mod snapshot;
pub mod spawn;
pub mod start;
pub mod supervise;
pub mod tasks;
pub mod tree;
pub mod views;
pub mod vm;
pub mod volumes;
pub mod workspace;

pub use error::{Context, Error, Kind, Result};
pub use home::Home;
