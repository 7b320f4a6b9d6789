//! The namespace sandbox ("ns" backend).
//!
//! A [`SandboxSpec`](agentbox_core::SandboxSpec) becomes a [`Plan`] (plain data: namespaces, mount
//! steps, Landlock paths, seccomp rules, limits), which the launcher ([`start`]) executes: it
//! prepares everything that can fail outside, clones a child into new namespaces, and the child
//! builds the root filesystem, restricts itself and execs the command. [`wait_foreground`] relays a
//! foreground sandbox's terminal and signals until it ends.
//!
//! Everything here is synchronous and must run before any thread or async runtime exists in the
//! process: the clone duplicates only the calling thread.

mod build;
mod child;
mod doctor;
mod error;
mod freeze;
mod go;
mod handles;
mod hostfs;
mod join;
mod launch;
mod limits;
mod plan;
mod relay;
mod resolve;
pub mod seccomp;
mod wire;

pub use build::build_plan;
pub use doctor::{doctor, Check, Status};
pub use error::JailError;
pub use freeze::{freeze, thaw, thaw_for_kill, Froze, SandboxTree};
pub use handles::SandboxHandles;
pub use hostfs::{HostEntry, HostFs, RealFs};
pub use join::exec_in;
pub use launch::{launch, start, Launched, Pipes, Running, Stdio};
pub use limits::{parse_cgroup_mounts, parse_proc_cgroup, remove_leftover_cgroups, Enforcement};
pub use plan::{LandlockPolicy, MountOp, NodeKind, Plan, ProcessPlan};
pub use relay::{wait_captured, wait_foreground, wait_streamed, AfterEnd, Captured, Outcome, Streamed};
pub use resolve::{
    resolve, CaFiles, HostContext, SandboxRequest, SANDBOX_CA_BUNDLE, SANDBOX_CA_CERT, SYSTEM_CA_BUNDLES,
};
