//! The operations every agentbox front end (the CLI, the server, the task runner) shares.
//!
//! # Layout
//! - [`tree`]: host-side work on directory trees an agent could have written (copy, walk, remove,
//!   chown), which never follows a link the agent planted and never recreates what could hurt
//!   the host (set-id bits, device nodes, expanded sparse files).

pub mod tree;
