use std::path::PathBuf;

/// Why a sandbox request is not acceptable. Each message says what is wrong and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid size '{0}': use a number with an optional unit K, M, G or T (e.g. 512M, 2G)")]
    Size(String),
    #[error(
        "invalid --mount '{0}': use HOST[:SANDBOX][:ro|rw] with absolute paths and no ':' inside a path"
    )]
    MountSyntax(String),
    #[error("invalid --env '{0}': use KEY=VALUE (or KEY to pass the caller's value); KEY is letters, digits and '_', not starting with a digit")]
    EnvSyntax(String),
    #[error("--env {0} refers to a variable the caller does not have set; set it or give KEY=VALUE")]
    EnvUnset(String),
    #[error("invalid hostname '{0}': use 1-63 letters, digits and '-', not starting or ending with '-'")]
    Hostname(String),
    #[error("refusing workspace {path}: {reason}; choose a project directory instead")]
    Workspace { path: PathBuf, reason: &'static str },
    #[error("refusing --mount target {path}: {reason}")]
    MountTarget { path: PathBuf, reason: &'static str },
    #[error("refusing writable --mount of {path}: {reason}; mount it read-only (':ro') or choose a narrower directory")]
    MountSource { path: PathBuf, reason: &'static str },
    #[error("{path} is not an absolute path")]
    NotAbsolute { path: PathBuf },
    #[error("invalid {what} '{value}': {reason}")]
    Limit { what: &'static str, value: String, reason: &'static str },
    #[error(
        "invalid agent name '{0}': use lowercase letters, digits and '-' (not first or last), at most 63 characters"
    )]
    Name(String),
    #[error("{origin}: {message}")]
    Profile { origin: String, message: String },
    #[error("no command given: put the command after '--', e.g. agentbox run -- bash")]
    NoCommand,
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    EgressWithoutProxy(&'static str),
    #[error("invalid --timeout '{0}': give a whole number of seconds from 1 to 315360000 (ten years)")]
    Timeout(String),
    /// A stored spec that cannot be read back.
    #[error("the stored sandbox spec cannot be read: {0}")]
    Stored(String),
}
