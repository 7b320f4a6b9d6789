//! git on an agent's workspace, run in a sandbox of its own.
//!
//! The agent controls `.git` (config, hooks, attributes), so host-side git on it could run the
//! agent's code (fsmonitor, hooks, filters, external diff). agentbox runs git only here: in a
//! fresh sandbox on the workspace, no network, with those entry points turned off as well.

use std::path::Path;
use std::time::Duration;

use crate::bail;
use crate::error::{Context, Result};
use agentbox_core::termfilter::escape_for_terminal;
use agentbox_core::MountArg;
use agentbox_jail::{
    build_plan, resolve, start, wait_captured, HostContext, Outcome, RealFs, SandboxRequest, Stdio,
};

/// Whether git can run inside a sandbox (it must be on the sandbox's PATH).
pub fn available() -> bool {
    agentbox_core::SANDBOX_PATH.split(':').any(|d| Path::new(d).join("git").exists())
}

/// Whether `url` names a local repository (true) or a remote one (false); an error if neither.
pub fn check_url(url: &str) -> Result<bool> {
    let local = Path::new(url).is_absolute()
        || url.starts_with("file://")
        || url.starts_with("./")
        || url.starts_with("../");
    let remote =
        ["https://", "http://", "ssh://", "git://"].iter().any(|p| url.starts_with(p)) || url.contains('@');
    if (!local && !remote) || url.chars().any(char::is_control) {
        bail!(crate::Error::invalid(format!(
            "{url:?} is not a repository address: use an https://, ssh:// or git:// URL, user@host:path, or an absolute local path"
        )));
    }
    Ok(local)
}

/// Clones `url` into the empty directory `workspace` (and checks out `git_ref`), in a sandbox: a
/// local repository is mounted read-only with no network; a remote URL gets the host network.
pub fn clone(url: &str, git_ref: Option<&str>, workspace: &Path) -> Result<()> {
    let local = check_url(url)?;
    let (mounts, network) = if local {
        let path = std::fs::canonicalize(url.trim_start_matches("file://"))
            .with_context(|| format!("--from-git {url}"))?;
        (vec![MountArg { source: path, target: None, writable: false }], agentbox_core::NetworkMode::None)
    } else {
        (vec![], agentbox_core::NetworkMode::Full)
    };
    let source = match &mounts.first() {
        Some(m) => m.source.to_string_lossy().into_owned(),
        None => url.to_string(),
    };
    // Arguments travel as positional parameters: no quoting of user input into the script.
    // `safe.directory`: the source may belong to another user (a task runner cloning a shared
    // repository); git's ownership check guards the host against that repository's config, and
    // here there is no host to guard: a throwaway sandbox with a private home and no hooks.
    let script = "git config --global --add safe.directory '*' && git -c protocol.ext.allow=never -c core.hooksPath=/dev/null clone --quiet -- \"$1\" . \
                  && if [ -n \"$2\" ]; then git -c core.hooksPath=/dev/null -c advice.detachedHead=false checkout --quiet \"$2\" --; fi";
    let request = SandboxRequest {
        command: vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "clone".into(),
            source.into(),
            git_ref.unwrap_or("").into(),
        ],
        workspace: Some(workspace.to_path_buf()),
        mounts,
        network,
        env: vec![agentbox_core::parse_env_arg("GIT_TERMINAL_PROMPT=0")?],
        timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let spec = resolve(request, &HostContext::current()?)?;
    // Pipes, never the caller's terminal: the repository's content runs here (filters in
    // .gitattributes are the clone's own config, but git still prints what the server sends).
    let running = start(&build_plan(&spec, &RealFs), Stdio::Pipes, false)?;
    let done = wait_captured(running, spec.timeout, OUTPUT_LIMIT)?;
    let said = escape_for_terminal(String::from_utf8_lossy(&done.stderr).trim());
    match done.outcome {
        Outcome::Exited(0) => Ok(()),
        Outcome::Exited(code) => bail!("git clone of {url} failed (exit status {code}): {said}"),
        Outcome::Signaled(s) => bail!("git clone of {url} was killed by signal {s}"),
        Outcome::TimedOut => bail!("git clone of {url} did not finish within 10 minutes"),
    }
}

/// Most output kept from a sandboxed git.
const OUTPUT_LIMIT: usize = 16 << 20;

/// What a sandboxed git printed.
#[derive(Debug)]
pub struct GitOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// More than 16 MiB was printed: the rest was dropped.
    pub truncated: bool,
}

/// Settings every sandboxed git runs with: the agent's `.git/config` cannot turn these entry
/// points back on.
const SAFE_CONFIG: [&str; 6] = [
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "diff.external=",
    "core.pager=cat",
    "core.quotePath=true",
    // As root the workspace may belong to someone else than the sandbox's user; the ownership
    // check guards a host against a repository's config, and this sandbox is the guard here.
    "safe.directory=*",
];

/// Runs `git ARGS` on `workspace` in a sandbox of its own, its output collected through pipes
/// (never the caller's terminal: the agent's `.git/config` may name filters that run here).
/// An overlay workspace is mounted there as the agent sees it.
pub fn run(
    workspace: &Path,
    overlay: Option<&agentbox_core::Overlay>,
    args: &[&str],
    mounts: Vec<MountArg>,
) -> Result<GitOutput> {
    let mut argv: Vec<std::ffi::OsString> = vec!["git".into()];
    for opt in SAFE_CONFIG {
        argv.push("-c".into());
        argv.push(opt.into());
    }
    argv.extend(args.iter().map(Into::into));
    sandboxed(workspace, overlay, argv, mounts)
}

/// Runs the shell `script` (its positional parameters `args`) on `workspace` in a sandbox of
/// its own, with git's entry points off for every git it runs (`GIT_CONFIG_*` in the
/// environment: they win over the repository's config).
pub fn run_script(workspace: &Path, script: &str, args: &[&str]) -> Result<GitOutput> {
    let mut argv: Vec<std::ffi::OsString> =
        vec!["sh".into(), "-c".into(), script.into(), "git-script".into()];
    argv.extend(args.iter().map(Into::into));
    sandboxed(workspace, None, argv, vec![])
}

fn sandboxed(
    workspace: &Path,
    overlay: Option<&agentbox_core::Overlay>,
    command: Vec<std::ffi::OsString>,
    mounts: Vec<MountArg>,
) -> Result<GitOutput> {
    let mut env: Vec<String> =
        ["GIT_OPTIONAL_LOCKS=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_PAGER=cat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    env.push(format!("GIT_CONFIG_COUNT={}", SAFE_CONFIG.len()));
    for (i, kv) in SAFE_CONFIG.iter().enumerate() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        env.push(format!("GIT_CONFIG_KEY_{i}={k}"));
        env.push(format!("GIT_CONFIG_VALUE_{i}={v}"));
    }
    let env = env.iter().map(|e| agentbox_core::parse_env_arg(e)).collect::<Result<Vec<_>, _>>()?;
    let request = SandboxRequest {
        command,
        workspace: Some(workspace.to_path_buf()),
        mounts,
        env,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let mut spec = resolve(request, &HostContext::current()?)?;
    // A read-only view of the layers: the agent's own overlay may be mounted on them right now.
    spec.overlay = overlay.cloned().map(|o| agentbox_core::Overlay { read_only: true, ..o });
    let running = start(&build_plan(&spec, &RealFs), Stdio::Pipes, false)?;
    let done = wait_captured(running, spec.timeout, OUTPUT_LIMIT)?;
    let code = match done.outcome {
        Outcome::Exited(code) => code,
        Outcome::Signaled(s) => 128 + s,
        Outcome::TimedOut => bail!("git did not finish within 60s"),
    };
    Ok(GitOutput { code, stdout: done.stdout, stderr: done.stderr, truncated: done.truncated })
}
