//! git on an agent's workspace, run in a sandbox of its own.
//!
//! The agent controls `.git` (config, hooks, attributes), so host-side git on it could run the
//! agent's code (fsmonitor, hooks, filters, external diff). agentbox runs git only here: in a
//! fresh sandbox on the workspace, no network, with those entry points turned off as well.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use agentbox_core::MountArg;
use agentbox_jail::{
    build_plan, resolve, start, wait_foreground, HostContext, Outcome, RealFs, SandboxRequest, Stdio,
};
use anyhow::{bail, Result};

/// Whether git can run inside a sandbox (it must be on the sandbox's PATH).
pub fn available() -> bool {
    agentbox_core::SANDBOX_PATH.split(':').any(|d| Path::new(d).join("git").exists())
}

/// Runs `git ARGS` on `workspace`. With `scratch`, stdout is captured through a file created
/// there (a directory outside the sandbox) and returned.
pub fn run(
    workspace: &Path,
    args: &[&str],
    mounts: Vec<MountArg>,
    scratch: Option<&Path>,
) -> Result<(i32, Vec<u8>)> {
    let mut argv: Vec<std::ffi::OsString> = vec!["git".into()];
    for opt in [
        "core.fsmonitor=false",
        "core.hooksPath=/dev/null",
        "diff.external=",
        "core.pager=cat",
        "core.quotePath=true",
    ] {
        argv.push("-c".into());
        argv.push(opt.into());
    }
    argv.extend(args.iter().map(Into::into));
    let env = ["GIT_OPTIONAL_LOCKS=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_PAGER=cat"]
        .iter()
        .map(|e| agentbox_core::parse_env_arg(e))
        .collect::<Result<Vec<_>, _>>()?;
    let request = SandboxRequest {
        command: argv,
        workspace: Some(workspace.to_path_buf()),
        mounts,
        env,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let spec = resolve(request, &HostContext::current()?)?;
    let capture = scratch.map(|dir| dir.join(format!(".git-output-{}", std::process::id())));
    let stdio = match &capture {
        Some(path) => Stdio::Capture(std::fs::File::create(path)?.into()),
        None => Stdio::Inherit,
    };
    let running = start(&build_plan(&spec, &RealFs), stdio, false)?;
    let code = match wait_foreground(running, spec.timeout)? {
        Outcome::Exited(code) => code,
        Outcome::Signaled(s) => 128 + s,
        Outcome::TimedOut => bail!("git did not finish within 60s"),
    };
    let mut out = Vec::new();
    if let Some(path) = capture {
        std::fs::File::open(&path)?.read_to_end(&mut out)?;
        std::fs::remove_file(&path)?;
    }
    Ok((code, out))
}
