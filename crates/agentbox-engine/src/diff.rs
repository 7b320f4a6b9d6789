//! What an agent changed (`diff`), and whether its commits are its own (`verify`).
//!
//! The agent controls everything in its workspace, `.git` included, so this never runs host code
//! on it: the comparison reads file metadata and contents through descriptors only, and git (for
//! the git-aware part) runs in a fresh sandbox of its own with hooks, fsmonitor, external diff
//! tools and textconv turned off. A `.git/config` the agent wrote can then only run code inside
//! that sandbox.

use std::path::Path;

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
        crate::git::run(workspace, None, &["rev-list", "--all"], vec![])?.stdout
    } else {
        Vec::new()
    };
    std::fs::write(state_dir.join(identity::BASE_FILE), base)?;
    Ok(())
}

pub use crate::workspace::changes::Change;

/// What `diff` found.
#[derive(Debug, Clone)]
pub struct Diff {
    pub changes: Vec<Change>,
    /// `git status` of the workspace, run in a sandbox: `None` when it is not a repository or
    /// git was not asked for; the lines as git printed them otherwise (or why it could not run).
    pub git_status: Option<Vec<String>>,
}

/// What an agent changed in its workspace since spawn: its overlay's upper layer, or its copy
/// compared with the manifest taken at spawn.
pub fn changes(state_dir: &Path, spec: &SandboxSpec, name: &str) -> Result<Vec<Change>> {
    if let Some(o) = &spec.overlay {
        return crate::workspace::changes::of_overlay(&o.upper, &o.lower);
    }
    let base = state_dir.join(SNAPSHOT_FILE);
    if !base.exists() {
        bail!(Error::conflict(format!(
            "no record of the workspace at spawn for '{name}' (it was spawned by an older agentbox)"
        )));
    }
    let before = snapshot::load(&base)?;
    let found = snapshot::compare(&before, &snapshot::take(&spec.workspace))
        .into_iter()
        .map(|(change, path)| Change::new(change, path))
        .collect();
    Ok(crate::workspace::changes::pair_renames(
        found,
        |p| crate::workspace::changes::hash_file(&spec.workspace, p),
        |p| before.get(p).and_then(snapshot::Entry::content),
    ))
}

/// [`changes`] of an agent, by name.
pub fn changes_of(store: &agentbox_store::Store, name: &str) -> Result<Vec<Change>> {
    let rec = agents::get(store, name)?;
    let spec = SandboxSpec::decode(&rec.spec)?;
    changes(&agents::state_dir(&rec), &spec, &rec.name)
}

/// Whether the workspace holds a git repository (for an overlay: in either layer, not deleted).
fn is_repository(spec: &SandboxSpec) -> bool {
    let dir_at = |root: &Path| std::fs::symlink_metadata(root.join(".git")).ok();
    match &spec.overlay {
        None => dir_at(&spec.workspace).is_some_and(|m| m.is_dir()),
        Some(o) => match dir_at(&o.upper) {
            Some(m) => m.is_dir(),
            None => dir_at(&o.lower).is_some_and(|m| m.is_dir()),
        },
    }
}

/// Compares an agent's workspace with its state at spawn; with `git`, adds `git status`.
pub fn diff(home: &Home, name: &str, git: bool) -> Result<Diff> {
    let store = home.store()?;
    let rec = agents::get(&store, name)?;
    let spec = SandboxSpec::decode(&rec.spec)?;
    let changes = changes(&agents::state_dir(&rec), &spec, &rec.name)?;
    let is_repo = is_repository(&spec);
    let git_status = match (is_repo && git, crate::git::available()) {
        (false, _) => None,
        (true, false) => {
            Some(vec!["(the workspace is a git repository; install git for git status here)".into()])
        }
        (true, true) => {
            let out = crate::git::run(
                &spec.workspace,
                spec.overlay.as_ref(),
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
    if !is_repository(&spec) {
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
        spec.overlay.as_ref(),
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
