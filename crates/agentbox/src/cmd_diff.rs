//! `diff`: what changed in an agent's workspace since it was spawned.
//!
//! The agent controls everything in its workspace, `.git` included, so this never runs host code
//! on it: the comparison reads file metadata and contents only, and git (for the git-aware part)
//! runs in a fresh sandbox of its own with hooks, fsmonitor, external diff tools and textconv
//! turned off. A `.git/config` the agent wrote can then only run code inside that sandbox.

use std::path::Path;
use std::time::Duration;

use agentbox_core::SandboxSpec;
use agentbox_jail::{
    build_plan, resolve, start, wait_foreground, HostContext, Outcome, RealFs, SandboxRequest, Stdio,
};
use anyhow::{bail, Context, Result};

use crate::agents;
use crate::cli::DiffArgs;
use crate::home::Home;
use crate::snapshot::{self, escape};

pub const SNAPSHOT_FILE: &str = "snapshot.tsv";

/// Records the workspace as it is now, as the base for `diff`.
pub fn record_snapshot(state_dir: &Path, workspace: &Path) -> Result<()> {
    snapshot::save(&snapshot::take(workspace), &state_dir.join(SNAPSHOT_FILE))
}

fn git_status_in_sandbox(workspace: &Path) -> Result<i32> {
    let git = |args: &[&str]| -> Vec<std::ffi::OsString> {
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
        argv
    };
    let env = ["GIT_OPTIONAL_LOCKS=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_PAGER=cat"]
        .iter()
        .map(|e| agentbox_core::parse_env_arg(e))
        .collect::<Result<Vec<_>, _>>()?;
    let request = SandboxRequest {
        command: git(&["--no-pager", "status", "--short", "--branch", "--no-renames"]),
        workspace: Some(workspace.to_path_buf()),
        env,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let spec = resolve(request, &HostContext::current()?)?;
    let running = start(&build_plan(&spec, &RealFs), Stdio::Inherit, false)?;
    match wait_foreground(running, spec.timeout)? {
        Outcome::Exited(code) => Ok(code),
        Outcome::Signaled(s) => Ok(128 + s),
        Outcome::TimedOut => bail!("git status did not finish within 60s"),
    }
}

pub fn diff(args: DiffArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    let spec: SandboxSpec = serde_json::from_str(&rec.spec).context("decoding the stored spec")?;
    let base = agents::state_dir(&rec).join(SNAPSHOT_FILE);
    if !base.exists() {
        bail!("no record of the workspace at spawn for '{}' (it was spawned by an older agentbox)", rec.name);
    }
    let changes = snapshot::compare(&snapshot::load(&base)?, &snapshot::take(&spec.workspace));
    if args.json {
        let v: Vec<_> =
            changes.iter().map(|(c, p)| serde_json::json!({ "change": c.to_string(), "path": p })).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    for (c, p) in &changes {
        println!("{c} {}", escape(p));
    }
    let is_repo = std::fs::symlink_metadata(spec.workspace.join(".git")).is_ok_and(|m| m.is_dir());
    if is_repo && !args.no_git {
        let git_inside = agentbox_core::SANDBOX_PATH.split(':').any(|d| Path::new(d).join("git").exists());
        if git_inside {
            println!("\ngit status (run in a sandbox):");
            use std::io::Write;
            std::io::stdout().flush()?;
            git_status_in_sandbox(&spec.workspace)?;
        } else {
            println!("\n(the workspace is a git repository; install git for git status here)");
        }
    }
    Ok(0)
}
