use std::io;
use std::path::PathBuf;

use agentbox_core::SpecError;
use nix::errno::Errno;

/// Why a sandbox could not be created or run. Messages say what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("workspace {path}: {source}")]
    Workspace { path: PathBuf, source: io::Error },
    #[error("--mount source {path}: {source}")]
    MountSource { path: PathBuf, source: io::Error },
    #[error("cannot open {path} to mount it into the sandbox: {source}")]
    OpenSource { path: PathBuf, source: Errno },
    #[error("a sandbox is started only from a process with one thread (a fork would copy locks other threads hold): {0}")]
    Threads(Errno),
    #[error("cannot create the sandbox namespaces: {0}{hint}", hint = clone_hint(*.0))]
    Clone(Errno),
    #[error("cannot write the user namespace map ({what}): {source}")]
    IdMap { what: &'static str, source: io::Error },
    #[error("sandbox setup failed at '{step}': {message}{hint}", hint = setup_hint(step))]
    Setup { step: String, message: String },
    #[error("cannot execute '{command}': {reason}")]
    Exec { command: String, reason: String, not_found: bool },
    #[error("{0}")]
    Limits(String),
    /// Freezing or thawing a running sandbox (`pause`) failed.
    #[error("{0}")]
    Freeze(String),
    #[error("seccomp: {0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: Errno },
}

fn clone_hint(e: Errno) -> &'static str {
    match e {
        Errno::EPERM | Errno::ENOSPC | Errno::EUSERS => {
            ". User namespaces look disabled or exhausted: check sysctl user.max_user_namespaces (must be > 0), \
             kernel.unprivileged_userns_clone (Debian, must be 1) and, on Ubuntu 24.04+, \
             kernel.apparmor_restrict_unprivileged_userns; `agentbox doctor` checks all of them"
        }
        Errno::EINVAL => ". The kernel lacks a namespace type agentbox needs; run `agentbox doctor`",
        _ => "",
    }
}

fn setup_hint(step: &str) -> &'static str {
    if step.starts_with("mount proc") {
        ". A fresh /proc can only be mounted where the host's /proc is not partly hidden (as inside some containers)"
    } else if step.starts_with("landlock") {
        ". agentbox needs Landlock (Linux 5.13+, enabled in the LSM list); run `agentbox doctor`"
    } else if step.starts_with("mount_setattr") {
        ". agentbox needs Linux 5.12 or later"
    } else {
        ""
    }
}

impl JailError {
    pub(crate) fn sys(what: &'static str) -> impl FnOnce(Errno) -> Self {
        move |source| Self::Sys { what, source }
    }
}
