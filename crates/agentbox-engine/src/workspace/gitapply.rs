//! A `--from-git` workspace brought back as git: `apply --patch` (the agent's work since the
//! commit it was spawned on, as one binary-safe patch) and `apply --branch BR` (that patch as one
//! commit on a new branch of the person's repository, its parent the same commit; the agent's
//! own commit subjects in its message).
//!
//! The agent's repository is the agent's (config, hooks, attributes, even what `.git` is), so
//! the patch is made by git in a sandbox of its own (`crate::git::run_script`), with fsmonitor,
//! hooks and external diff off; it writes nothing into the workspace: the index it stages into
//! and the objects it makes are in the sandbox's `/tmp`. Only the patch leaves, as data. Host git
//! runs on the person's own repository alone, with plumbing that runs no hook (`read-tree`,
//! `apply --cached`, `write-tree`, `commit-tree`, `update-ref`), on a throwaway index: their
//! working tree, index and HEAD are never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::agents;
use crate::error::{Context, Error, Result};
use crate::home::Home;

pub(crate) const FILE: &str = "git-origin.json";

/// Where a `--from-git` workspace came from: the address given, and the commit it was on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitOrigin {
    pub url: String,
    /// The repository's directory, when the address was a local one: where `--branch` goes.
    pub local: Option<PathBuf>,
    /// The commit checked out at spawn.
    pub base: String,
}

impl GitOrigin {
    /// Records the origin of a workspace just cloned from `url`.
    pub fn record(state_dir: &Path, workspace: &Path, url: &str) -> Result<()> {
        let out = crate::git::run(workspace, None, &["rev-parse", "--verify", "HEAD^{commit}"], vec![])?;
        let base = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.code != 0 || !is_sha(&base) {
            // An empty repository: nothing to compare with, nothing recorded.
            return Ok(());
        }
        let local = match crate::git::check_url(url)? {
            true => std::fs::canonicalize(url.trim_start_matches("file://")).ok(),
            false => None,
        };
        let me = Self { url: url.to_string(), local, base };
        let json = serde_json::to_vec_pretty(&me).map_err(std::io::Error::other)?;
        let path = state_dir.join(FILE);
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
    }

    fn load(state_dir: &Path, name: &str) -> Result<Self> {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(format!(
                "agent '{name}' was not spawned with --from-git (or from an empty repository): there is no \
                 commit to make a patch or a branch against; use `apply` to write its files back"
            ))),
            Err(e) => Err(Error::from(e).context(format!("reading {}", path.display()))),
        }
    }
}

fn is_sha(s: &str) -> bool {
    (40..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// In the sandbox: stage everything in the working tree (tracked, untracked, deletions) into a
/// copy of the index, with new objects in `/tmp`, and print the difference from the base commit
/// ($1) as a binary patch. `--no-renames` keeps every path's change explicit for `apply`.
const PATCH_SCRIPT: &str = r#"set -e
gitdir=$(git rev-parse --absolute-git-dir)
mkdir -p /tmp/agentbox-objects
export GIT_OBJECT_DIRECTORY=/tmp/agentbox-objects
export GIT_ALTERNATE_OBJECT_DIRECTORIES="$gitdir/objects"
export GIT_INDEX_FILE=/tmp/agentbox-index
if [ -f "$gitdir/index" ]; then cp "$gitdir/index" "$GIT_INDEX_FILE"; fi
git add -A -- . >/dev/null
git diff --cached --binary --no-renames --no-color --no-ext-diff --no-textconv --no-relative --src-prefix=a/ --dst-prefix=b/ "$1" --
"#;

/// The agent's commit subjects since the base (for the branch's commit message).
const LOG_SCRIPT: &str = r#"git log --no-color --format='%h %s' "$1..HEAD" -- 2>/dev/null | head -n 50"#;

/// The agent's work since spawn as a binary patch against the commit it was spawned on (empty:
/// nothing changed).
pub fn patch(home: &Home, name: &str) -> Result<Vec<u8>> {
    let rec = agents::get(&home.store()?, name)?;
    let origin = GitOrigin::load(&agents::state_dir(&rec), name)?;
    let workspace = agentbox_core::SandboxSpec::decode(&rec.spec)?.workspace;
    make_patch(&workspace, &origin.base)
}

fn make_patch(workspace: &Path, base: &str) -> Result<Vec<u8>> {
    let out = crate::git::run_script(workspace, PATCH_SCRIPT, &[base])?;
    if out.code != 0 {
        return Err(Error::conflict(format!(
            "git could not make the patch (exit status {}): {}",
            out.code,
            agentbox_core::termfilter::escape_for_terminal(String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    if out.truncated {
        return Err(Error::conflict(
            "the patch is larger than 16 MiB: bring the files back with `apply` (or `cp`) instead",
        ));
    }
    Ok(out.stdout)
}

/// `apply --branch`: which branch, in which repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchRequest {
    /// The new branch's name.
    pub branch: String,
    /// The repository (default: the local one the agent was cloned from).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub to: Option<PathBuf>,
    /// Replace a branch of that name.
    #[serde(default)]
    pub force: bool,
}

/// What `apply --branch` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BranchMade {
    #[schema(value_type = String)]
    pub repository: PathBuf,
    pub branch: String,
    pub commit: String,
    /// The commit it was made on (the one the agent was spawned on).
    pub base: String,
}

/// Runs host git on the person's repository `repo`; its stdout, trimmed.
fn host_git(repo: &Path, index: Option<&Path>, args: &[&str], input: Option<&[u8]>) -> Result<String> {
    use std::io::Write;
    let mut cmd = Command::new("git");
    // No hook of any kind (`update-ref` runs reference-transaction hooks), wherever the
    // repository's config points them.
    cmd.arg("-C")
        .arg(repo)
        .args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR");
    if let Some(i) = index {
        cmd.env("GIT_INDEX_FILE", i);
    }
    cmd.stdin(if input.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().context("running git (is it installed?)")?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error shows as git's own failure below.
        let _ = stdin.write_all(bytes);
    }
    let out = child.wait_with_output().context("running git")?;
    if !out.status.success() {
        return Err(Error::conflict(format!(
            "git {} in {}: {}",
            args.first().copied().unwrap_or_default(),
            repo.display(),
            agentbox_core::termfilter::escape_for_terminal(String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The agent's work as one commit on a new branch `branch` of the person's repository (`to`, or
/// the local repository the agent was cloned from), on the commit it was spawned on. An existing
/// branch is refused unless `force`.
pub fn branch(home: &Home, name: &str, branch: &str, to: Option<&Path>, force: bool) -> Result<BranchMade> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get(&home.store()?, name)?;
    let origin = GitOrigin::load(&agents::state_dir(&rec), name)?;
    let repo = match (to, &origin.local) {
        (Some(t), _) => std::fs::canonicalize(t)
            .map_err(|e| Error::invalid(format!("--to {}: {e}", t.display())))?,
        (None, Some(l)) => l.clone(),
        (None, None) => {
            return Err(Error::invalid(format!(
                "agent '{name}' was cloned from {}, not from a repository here: give --to REPO (a clone that has \
                 commit {}), or use --patch",
                origin.url, origin.base
            )))
        }
    };
    // Never a repository agentbox keeps (another agent's workspace): the person's own only.
    if std::fs::canonicalize(&home.root).is_ok_and(|h| repo.starts_with(h)) {
        return Err(Error::invalid(format!(
            "{} is inside agentbox's own state: make the branch in your repository (--to REPO)",
            repo.display()
        )));
    }
    let check = Command::new("git")
        .args(["check-ref-format", "--branch", branch])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running git (is it installed?)")?;
    if !check.success() || branch.starts_with('-') {
        return Err(Error::invalid(format!("'{branch}' is not a branch name git accepts")));
    }
    host_git(&repo, None, &["rev-parse", "--git-dir"], None).map_err(|e| {
        Error::invalid(format!("{} is not a git repository agentbox can use here ({e})", repo.display()))
    })?;
    let base_commit = format!("{}^{{commit}}", origin.base);
    host_git(&repo, None, &["cat-file", "-e", &base_commit], None).map_err(|_| {
        Error::conflict(format!(
            "{} does not have commit {} (the one the agent was spawned on): fetch it there first",
            repo.display(),
            origin.base
        ))
    })?;
    let full = format!("refs/heads/{branch}");
    let existing = host_git(&repo, None, &["rev-parse", "--verify", "--quiet", &full], None).ok();
    if existing.is_some() && !force {
        return Err(Error::conflict(format!(
            "branch '{branch}' exists in {}: choose another name, or --force to replace it",
            repo.display()
        )));
    }

    let workspace = agentbox_core::SandboxSpec::decode(&rec.spec)?.workspace;
    let patch = make_patch(&workspace, &origin.base)?;
    let subjects = crate::git::run_script(&workspace, LOG_SCRIPT, &[&origin.base])
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();

    // A throwaway index in the agent's directory (the agent's lock keeps it to one at a time).
    let index = agents::state_dir(&rec).join("branch-index");
    let _ = std::fs::remove_file(&index);
    let made = commit_on_base(&repo, &index, &origin.base, &patch, name, &subjects);
    let _ = std::fs::remove_file(&index);
    let commit = made?;
    // Only from what was seen: a branch made meanwhile is not overwritten.
    let old = existing.unwrap_or_else(|| "0".repeat(origin.base.len()));
    host_git(&repo, None, &["update-ref", "-m", "agentbox apply --branch", &full, &commit, &old], None)?;
    Ok(BranchMade { repository: repo, branch: branch.to_string(), commit, base: origin.base })
}

/// The commit of `base` with `patch` applied, made through the index file `index`.
fn commit_on_base(
    repo: &Path,
    index: &Path,
    base: &str,
    patch: &[u8],
    name: &str,
    subjects: &str,
) -> Result<String> {
    host_git(repo, Some(index), &["read-tree", base], None)?;
    if !patch.is_empty() {
        host_git(
            repo,
            Some(index),
            &["apply", "--cached", "--binary", "--whitespace=nowarn", "-"],
            Some(patch),
        )?;
    }
    let tree = host_git(repo, Some(index), &["write-tree"], None)?;
    let mut message =
        format!("Changes by agent {name}\n\nMade by `agentbox apply --branch` from its workspace.\n");
    let subjects = agentbox_core::termfilter::escape_for_terminal(subjects.trim());
    if !subjects.is_empty() {
        message.push_str(&format!("\nIts commits:\n{subjects}\n"));
    }
    let mut commit_args = vec!["commit-tree", tree.as_str(), "-p", base, "-F", "-"];
    // Who made it, where the repository says nothing.
    let named = host_git(repo, None, &["config", "user.email"], None).is_ok();
    let fallback = ["-c", "user.name=agentbox", "-c", "user.email=agentbox@localhost"];
    let mut full_args: Vec<&str> = Vec::new();
    if !named {
        full_args.extend(fallback);
    }
    full_args.append(&mut commit_args);
    host_git(repo, None, &full_args, Some(message.as_bytes()))
}
