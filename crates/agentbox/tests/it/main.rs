//! Integration tests for `agentbox`: real sandboxes, real namespaces, real PTYs.
//!
//! Security tests run every attack as the invoking user (root in CI) and again as an unprivileged
//! user (uid 65534 through `setpriv`) when the tests run as root.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Skips the test, saying so, when a tool it needs is missing here; with `CI=true` a missing tool
/// fails the test instead, so CI never passes by skipping. A tool is a command on PATH or a path.
macro_rules! require {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::support::available(module_path!(), &[$($tool.as_ref()),+]) {
            return;
        }
    };
}

mod agents;
mod attacks_fs;
mod attacks_kernel;
mod attacks_left_behind;
mod attacks_net;
mod attacks_proc;
mod cli;
mod cow;
mod e2b;
mod egress;
mod hitl;
mod limits;
mod logins;
mod profiles;
mod races;
mod real_agents;
mod reliability;
mod run;
mod server;
mod server_api;
mod support;
mod tasks;
mod vm;
mod workspaces;
