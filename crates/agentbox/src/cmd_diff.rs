//! `diff`: what changed in an agent's workspace since it was spawned; `verify`: whether the
//! commits made since then carry the agent's signature.
//!
//! The agent controls everything in its workspace, `.git` included, so this never runs host code
//! on it: the comparison reads file metadata and contents only, and git (for the git-aware part)
//! runs in a fresh sandbox of its own with hooks, fsmonitor, external diff tools and textconv
//! turned off. A `.git/config` the agent wrote can then only run code inside that sandbox.

use std::path::Path;

use agentbox_core::termfilter::escape_for_terminal;
use agentbox_core::SandboxSpec;
use anyhow::{bail, Result};

use crate::agents;
use crate::cli::{DiffArgs, VerifyArgs};
use crate::home::Home;
use crate::snapshot::{self, escape};

pub const SNAPSHOT_FILE: &str = "snapshot.tsv";

/// Records the workspace as it is now, as the base for `diff`.
pub fn record_snapshot(state_dir: &Path, workspace: &Path) -> Result<()> {
    snapshot::save(&snapshot::take(workspace), &state_dir.join(SNAPSHOT_FILE))
}

pub fn diff(args: DiffArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    let spec = SandboxSpec::decode(&rec.spec)?;
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
        if crate::sandboxed_git::available() {
            println!("\ngit status (run in a sandbox):");
            let out = crate::sandboxed_git::run(
                &spec.workspace,
                &["--no-pager", "status", "--short", "--branch", "--no-renames"],
                vec![],
            )?;
            // The agent shaped everything git prints (branch names, messages): escaped.
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                println!("{}", escape_for_terminal(line));
            }
        } else {
            println!("\n(the workspace is a git repository; install git for git status here)");
        }
    }
    Ok(0)
}

/// Records the commits that exist before the agent runs, so `verify` checks only the agent's.
pub fn record_commit_base(state_dir: &Path, workspace: &Path) -> Result<()> {
    let is_repo = std::fs::symlink_metadata(workspace.join(".git")).is_ok_and(|m| m.is_dir());
    let base = if is_repo && crate::sandboxed_git::available() {
        crate::sandboxed_git::run(workspace, &["rev-list", "--all"], vec![])?.stdout
    } else {
        Vec::new()
    };
    std::fs::write(state_dir.join(crate::identity::BASE_FILE), base)?;
    Ok(())
}

pub fn verify(args: VerifyArgs) -> Result<i32> {
    use crate::identity;
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    let spec = SandboxSpec::decode(&rec.spec)?;
    let dir = agents::state_dir(&rec);
    let Some(did) = identity::did(&dir) else {
        bail!("agent '{}' has no identity: spawn it with --identity", rec.name);
    };
    if !crate::sandboxed_git::available() {
        bail!("verify needs git (apt-get install git)");
    }
    if !std::fs::symlink_metadata(spec.workspace.join(".git")).is_ok_and(|m| m.is_dir()) {
        bail!("{} is not a git repository", spec.workspace.display());
    }
    let base = std::fs::read_to_string(dir.join(identity::BASE_FILE)).unwrap_or_default();
    let base: std::collections::HashSet<&str> = base.lines().collect();
    // The allowed-signers file is the host-side copy: the agent cannot change whose key counts.
    let signers = agentbox_core::MountArg {
        source: dir.join(identity::SIGNERS_FILE),
        target: Some("/run/agentbox-signers".into()),
        writable: false,
    };
    let git = crate::sandboxed_git::run(
        &spec.workspace,
        &[
            "-c",
            "gpg.ssh.allowedSignersFile=/run/agentbox-signers",
            "log",
            "--format=%H%x09%G?%x09%GS%x09%s",
            "HEAD",
        ],
        vec![signers],
    )?;
    let (code, out) = (git.code, git.stdout);
    if code != 0 {
        bail!("git log failed in the workspace (exit status {code}); is there a commit?");
    }
    let me = identity::email(&rec.name);
    let (mut good, mut bad) = (0, 0);
    for line in String::from_utf8_lossy(&out).lines() {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        let [hash, status, signer, subject] = f.as_slice() else { continue };
        if base.contains(hash) {
            continue;
        }
        let short = &hash[..hash.len().min(12)];
        let subject = escape(Path::new(subject));
        if (*status == "G" || *status == "U") && *signer == me {
            good += 1;
            println!("ok        {short} {subject}");
        } else {
            bad += 1;
            let why = match *status {
                "N" => "not signed",
                "B" => "bad signature",
                "E" => "signature cannot be checked",
                _ => "signed by someone else",
            };
            println!("NOT OURS  {short} {subject} ({why})");
        }
    }
    println!("{good} commit(s) signed by {} ({did}), {bad} not", rec.name);
    Ok(if bad == 0 { 0 } else { 1 })
}
