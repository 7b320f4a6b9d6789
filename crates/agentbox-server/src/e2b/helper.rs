//! Commands in a sandbox, as `agentbox exec` runs them (the same binary, as a child of the
//! server): it joins the sandbox's namespaces, root, cgroup and restrictions, and relays the
//! command's stdio through pipes. The server itself never joins a sandbox (it has threads).

use std::ffi::OsString;
use std::process::{Command, Output, Stdio};

use super::error::RpcError;
use super::sandboxes::USER_HOME;
use agentbox_engine::Home;

/// A command for sandbox `id`.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Keep a pipe to its stdin.
    pub stdin: bool,
    /// A terminal inside (`exec -i -t`; the caller gives it a terminal of its own as stdio).
    pub tty: bool,
}

/// `path` as the sandbox user means it: a relative path is from `/home/user`.
pub fn absolute(path: &str) -> Result<String, RpcError> {
    if path.contains('\0') {
        return Err(RpcError::new("invalid_argument", "the path contains a NUL byte"));
    }
    if path.is_empty() {
        return Err(RpcError::new("invalid_argument", "the path is empty"));
    }
    Ok(if path.starts_with('/') { path.to_string() } else { format!("{USER_HOME}/{path}") })
}

pub fn command(home: &Home, id: &str, e: &Exec) -> Command {
    let mut c = agentbox_engine::home::self_command();
    c.arg("exec");
    if e.stdin || e.tty {
        c.arg("-i");
    }
    if e.tty {
        c.arg("-t");
    }
    for (k, v) in &e.env {
        c.arg("-e").arg(format!("{k}={v}"));
    }
    c.arg("-w").arg(e.cwd.as_deref().unwrap_or(USER_HOME));
    c.arg(id).arg("--").args(&e.argv);
    c.env("AGENTBOX_HOME", &home.root).current_dir("/");
    c
}

/// Runs a short script in the sandbox (`sh -c SCRIPT sh ARGS...`: arguments never pass through
/// a shell's parsing) and collects its output.
pub fn script(home: &Home, id: &str, script: &str, args: &[&str]) -> Result<Output, RpcError> {
    let mut argv: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()];
    argv.extend(args.iter().map(Into::into));
    let e = Exec { argv, ..Default::default() };
    command(home, id, &e)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| RpcError::new("internal", format!("running a command in the sandbox: {err}")))
}

/// The exit statuses the scripts use to say what is wrong.
pub const MISSING: i32 = 44;
pub const NOT_A_DIR: i32 = 45;
pub const EXISTS: i32 = 46;
pub const IS_A_DIR: i32 = 47;
pub const NOT_A_FILE: i32 = 48;

/// A script's failure as an envd error.
pub fn failure(out: &Output, path: &str) -> RpcError {
    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(MISSING) => RpcError::new("not_found", format!("{path}: no such file or directory")),
        Some(NOT_A_DIR) => RpcError::new("invalid_argument", format!("{path} is not a directory")),
        Some(EXISTS) => RpcError::new("already_exists", format!("{path} exists already")),
        Some(IS_A_DIR) => RpcError::new("invalid_argument", format!("{path} is a directory")),
        Some(NOT_A_FILE) => RpcError::new("invalid_argument", format!("{path} is not a regular file")),
        _ if why.contains("is paused") => RpcError::new("unavailable", why),
        _ => RpcError::new("internal", if why.is_empty() { format!("{path}: failed") } else { why }),
    }
}
