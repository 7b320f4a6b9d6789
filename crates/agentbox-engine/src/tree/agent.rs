//! Who the files agentbox makes for an agent belong to, and the tree operations that make them.

use std::path::Path;

use super::{chown_tree, copy_tree, CopyOptions, Owner};
use crate::error::{Context, Result};

/// Whom the files agentbox creates for an agent (its workspace, its home) must belong to: the
/// host id the sandbox runs as when agentbox runs as root; `None` (agentbox's own) otherwise.
pub fn agent_owner() -> Option<Owner> {
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let (auid, agid) = agentbox_core::host_ids_for(uid, gid);
    (auid != uid).then_some(Owner { uid: auid, gid: agid })
}

/// Creates a directory for an agent (mode 0700, and given to the agent's host id as root), and
/// tightens an existing one.
pub fn agent_dir(dir: &Path) -> Result<()> {
    crate::home::private_dir(dir)?;
    if let Some(o) = agent_owner() {
        nix::unistd::chown(dir, Some(o.uid.into()), Some(o.gid.into()))
            .with_context(|| format!("giving {} to the agent's uid {}", dir.display(), o.uid))?;
    }
    Ok(())
}

/// Gives everything below `dir` to the agent's host id (as root; a no-op otherwise).
pub fn give_to_agent(dir: &Path) -> Result<()> {
    match agent_owner() {
        Some(o) => chown_tree(dir, o)
            .with_context(|| format!("giving {} to the agent's uid {}", dir.display(), o.uid)),
        None => Ok(()),
    }
}

/// Copies `src` into the new directory `dst` for an agent: files, directories, and symlinks as
/// symlinks (never followed); special files and set-id bits left out; sparse files kept sparse.
pub fn copy_for_agent(src: &Path, dst: &Path) -> Result<()> {
    let opts = CopyOptions { owner: agent_owner(), ..Default::default() };
    copy_tree(src, dst, &opts).with_context(|| format!("copying {}", src.display()))?;
    Ok(())
}
