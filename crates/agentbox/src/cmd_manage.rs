//! `restart`, `clone`, `rename`: agents as things you keep, not only processes.

use std::path::{Path, PathBuf};

use agentbox_core::{validate_name, HomeSpec, SandboxSpec};
use agentbox_store::NewAgent;
use agentbox_supervisor::paths;
use anyhow::{bail, Context, Result};

use crate::agents::{self, is_live_state};
use crate::cli::{CloneArgs, RenameArgs, RestartArgs};
use crate::home::{private_dir, Home};
use crate::tree::{copy_tree, remove_tree};

fn spec_of(rec: &agentbox_store::AgentRecord) -> Result<SandboxSpec> {
    Ok(SandboxSpec::decode(&rec.spec)?)
}

/// `p` with the prefix `from` replaced by `to` (unchanged when it is not under `from`).
fn rebase(p: &Path, from: &Path, to: &Path) -> PathBuf {
    match p.strip_prefix(from) {
        Ok(rest) => to.join(rest),
        Err(_) => p.to_path_buf(),
    }
}

/// The spec of an agent whose state directory moved from `from` to `to`, named `name`.
fn moved_spec(mut spec: SandboxSpec, from: &Path, to: &Path, name: &str) -> SandboxSpec {
    let old_ws = spec.workspace.clone();
    spec.workspace = rebase(&spec.workspace, from, to);
    spec.workdir = rebase(&spec.workdir, &old_ws, &spec.workspace);
    if let HomeSpec::Bind(h) = &spec.home {
        spec.home = HomeSpec::Bind(rebase(h, from, to));
    }
    for m in &mut spec.mounts {
        m.source = rebase(&m.source, from, to);
    }
    spec.hostname = name.to_string();
    spec
}

pub fn restart(args: RestartArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = crate::service::restart(&home, &store, &args.name)?;
    println!("{}", rec.name);
    Ok(0)
}

pub fn clone(args: CloneArgs) -> Result<i32> {
    validate_name(&args.dst)?;
    let home = Home::open()?;
    let mut store = home.store()?;
    let src = agents::get(&store, &args.src)?;
    if store.get(&args.dst).is_ok() {
        return Err(agentbox_store::StoreError::Exists(args.dst.clone()).into());
    }
    let spec = spec_of(&src)?;
    let (src_dir, dst_dir) = (agents::state_dir(&src), home.agent_dir(&args.dst));
    anyhow::ensure!(!dst_dir.exists(), "{} already exists; move it away first", dst_dir.display());
    let result = (|| -> Result<()> {
        private_dir(&dst_dir)?;
        copy_tree(&spec.workspace, &paths::workspace(&dst_dir))?;
        match &spec.home {
            HomeSpec::Bind(h) => copy_tree(h, &paths::home(&dst_dir))?,
            HomeSpec::Tmpfs => crate::tree::agent_dir(&paths::home(&dst_dir))?,
        }
        let dst_dir_canon = std::fs::canonicalize(&dst_dir)?;
        let mut new_spec = moved_spec(spec.clone(), &src_dir, &dst_dir_canon, &args.dst);
        // A workspace that was a host directory (--mount) is copied into the clone's own.
        let ws = paths::workspace(&dst_dir_canon);
        new_spec.workdir = rebase(&new_spec.workdir, &new_spec.workspace, &ws);
        new_spec.workspace = ws;
        new_spec.home = HomeSpec::Bind(paths::home(&dst_dir_canon));
        crate::cmd_diff::record_snapshot(&dst_dir, &new_spec.workspace)?;
        let spec_json = new_spec.encode()?;
        let state_dir = dst_dir.to_string_lossy();
        store.create_agent(&NewAgent {
            name: &args.dst,
            spec_json: &spec_json,
            state_dir: &state_dir,
            tags: &src.tags,
            profile: src.profile.as_deref(),
            prompt: src.prompt.as_deref(),
            state: Some(agentbox_core::AgentState::Created),
            restart: src.restart.as_deref(),
        })?;
        store.record(&args.dst, "clone", &format!("from {}", src.name))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = remove_tree(&dst_dir);
        return Err(e);
    }
    println!("{}", args.dst);
    Ok(0)
}

pub fn rename(args: RenameArgs) -> Result<i32> {
    validate_name(&args.new)?;
    let home = Home::open()?;
    let mut store = home.store()?;
    let rec = agents::get_for_change(&store, &args.old)?;
    if is_live_state(&rec.state) {
        bail!("agent '{}' is running; stop it with `agentbox kill {}` first", rec.name, rec.name);
    }
    if store.get(&args.new).is_ok() {
        return Err(agentbox_store::StoreError::Exists(args.new.clone()).into());
    }
    let (from, to) = (agents::state_dir(&rec), home.agent_dir(&args.new));
    anyhow::ensure!(!to.exists(), "{} already exists; move it away first", to.display());
    let spec = spec_of(&rec)?;
    let from_canon = std::fs::canonicalize(&from).unwrap_or(from.clone());
    std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    let to_canon = std::fs::canonicalize(&to).unwrap_or(to.clone());
    let new_spec = moved_spec(spec, &from_canon, &to_canon, &args.new);
    if let Err(e) = store.rename(&rec.name, &args.new, &new_spec.encode()?, &to.to_string_lossy()) {
        let _ = std::fs::rename(&to, &from);
        return Err(e.into());
    }
    println!("{}", args.new);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebasing() {
        assert_eq!(
            rebase(Path::new("/h/agents/a/workspace/x"), Path::new("/h/agents/a"), Path::new("/h/agents/b")),
            PathBuf::from("/h/agents/b/workspace/x")
        );
        assert_eq!(
            rebase(Path::new("/srv/proj"), Path::new("/h/agents/a"), Path::new("/h/agents/b")),
            PathBuf::from("/srv/proj")
        );
    }
}
