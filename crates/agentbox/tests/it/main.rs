//! Integration tests for `agentbox`: real sandboxes, real namespaces, real PTYs.
//!
//! Security tests run every attack as the invoking user (root in CI) and again as an unprivileged
//! user (uid 65534 through `setpriv`) when the tests run as root.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agents;
mod attacks_fs;
mod attacks_kernel;
mod attacks_left_behind;
mod attacks_net;
mod attacks_proc;
mod egress;
mod hitl;
mod limits;
mod profiles;
mod run;
mod server;
mod server_api;
mod support;
mod tasks;
mod vm;
