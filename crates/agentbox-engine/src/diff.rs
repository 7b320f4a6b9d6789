//! What an agent changed (`diff`), and whether its commits are its own (`verify`).
//!
//! The agent controls everything in its workspace, `.git` included, so this never runs host code
//! on it: the comparison reads file metadata and contents through descriptors only, and git (for
//! the git-aware part) runs in a fresh sandbox of its own with hooks, fsmonitor, external diff
//! tools and textconv turned off. A `.git/config` the agent wrote can then only run code inside
//! that sandbox.

use std::path::{Path, PathBuf};

use agentbox_core::{MountArg, SandboxSpec};
use serde::Serialize;

use crate::agents;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::snapshot;
use crate::{bail, identity};

pub const SNAPSHOT_FILE: &str = "snapshot.tsv";

/// Records the workspace as it is now, as the base for `diff`.
pub fn record_snapshot(state_dir: &Path, workspace: &Path) -> Result<()> {
    snapshot::save(&snapshot::take(workspace), &state_dir.join(SNAPSHOT_FILE))
}

/// Records the commits that exist before the agent runs, so `verify` checks only the agent's.
pub fn record_commit_base(state_dir: &Path, workspace: &Path) -> Result<()> {
    let is_repo = std::fs::symlink_metadata(workspace.join(".git")).is_ok_and(|m| m.is_dir());
    let base = if is_repo && crate::git::available() {
        crate::git::run(workspace, &["rev-list", "--all"], vec![])?.stdout
    } else {
        Vec::new()
    };
    std::fs::write(state_dir.join(identity::BASE_FILE), base)?;
    Ok(())
}

/// One change: `A`dded, `M`odified or `D`eleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub change: char,
    pub path: PathBuf,
}

/// What `diff` found.
#[derive(Debug, Clone)]
pub struct Diff {
    pub changes: Vec<Change>,
    /// `git status` of the workspace, run in a sandbox: `None` when it is not a repository or
    /// git was not asked for; the lines as git printed them otherwise (or why it could not run).
    pub git_status: Option<Vec<String>>,
}

/// Compares an agent's workspace with its state at spawn; with `git`, adds `git status`.
pub fn diff(home: &Home, name: &str, git: bool) -> Result<Diff> {
    let store = home.store()?;
    let rec = agents::get(&store, name)?;
    let spec = SandboxSpec::decode(&rec.spec)?;
    let base = agents::state_dir(&rec).join(SNAPSHOT_FILE);
    if !base.exists() {
        bail!(Error::conflict(format!(
            "no record of the workspace at spawn for '{}' (it was spawned by an older agentbox)",
            rec.name
        )));
    }
    let changes = snapshot::compare(&snapshot::load(&base)?, &snapshot::take(&spec.workspace))
        .into_iter()
        .map(|(change, path)| Change { change, path })
        .collect();
    let is_repo = std::fs::symlink_metadata(spec.workspace.join(".git")).is_ok_and(|m| m.is_dir());
    let git_status = match (is_repo && git, crate::git::available()) {
        (false, _) => None,
        (true, false) => {
            Some(vec!["(the workspace is a git repository; install git for git status here)".into()])
        }
        (true, true) => {
            let out = crate::git::run(
                &spec.workspace,
                &["--no-pager", "status", "--short", "--branch", "--no-renames"],
                vec![],
            )?;
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            Some(text.lines().map(str::to_string).collect())
        }
    };
    Ok(Diff { changes, git_status })
}

/// One commit `verify` looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    pub hash: String,
    pub subject: String,
    /// Signed by the agent's own key.
    pub ours: bool,
    /// Why not (not signed, bad signature, someone else's).
    pub why: Option<&'static str>,
}

/// What `verify` found: the agent's identity and every commit made since spawn.
#[derive(Debug, Clone)]
pub struct Verified {
    pub did: String,
    pub commits: Vec<Commit>,
}

/// Checks that every commit reachable from HEAD, made since spawn, is signed by the agent's key.
pub fn verify(home: &Home, name: &str) -> Result<Verified> {
    let store = home.store()?;
    let rec = agents::get(&store, name)?;
    let spec = SandboxSpec::decode(&rec.spec)?;
    let dir = agents::state_dir(&rec);
    let Some(did) = identity::did(&dir) else {
        bail!(Error::conflict(format!("agent '{}' has no identity: spawn it with --identity", rec.name)));
    };
    if !crate::git::available() {
        bail!(Error::refused("verify needs git (apt-get install git)"));
    }
    if !std::fs::symlink_metadata(spec.workspace.join(".git")).is_ok_and(|m| m.is_dir()) {
        bail!(Error::conflict(format!("{} is not a git repository", spec.workspace.display())));
    }
    let base = std::fs::read_to_string(dir.join(identity::BASE_FILE)).unwrap_or_default();
    let base: std::collections::HashSet<&str> = base.lines().collect();
    // The allowed-signers file is the host-side copy: the agent cannot change whose key counts.
    let signers = MountArg {
        source: dir.join(identity::SIGNERS_FILE),
        target: Some("/run/agentbox-signers".into()),
        writable: false,
    };
    let git = crate::git::run(
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
    if git.code != 0 {
        bail!(Error::conflict(format!(
            "git log failed in the workspace (exit status {}); is there a commit?",
            git.code
        )));
    }
    let me = identity::email(&rec.name);
    let mut commits = Vec::new();
    for line in String::from_utf8_lossy(&git.stdout).lines() {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        let [hash, status, signer, subject] = f.as_slice() else { continue };
        if base.contains(hash) {
            continue;
        }
        let ours = (*status == "G" || *status == "U") && *signer == me;
        let why = (!ours).then_some(match *status {
            "N" => "not signed",
            "B" => "bad signature",
            "E" => "signature cannot be checked",
            _ => "signed by someone else",
        });
        commits.push(Commit { hash: hash.to_string(), subject: subject.to_string(), ours, why });
    }
    Ok(Verified { did, commits })
}
