//! Copy-on-write workspaces: `spawn --from-dir DIR` mounts an overlayfs inside the sandbox with
//! DIR read-only below and the agent's writes in its own state above. Making one costs the same
//! for ten files or a million; DIR is never written (overlayfs writes only the upper layer).
//!
//! The overlay is mounted by the sandbox's own user namespace, so it needs no privilege; in
//! exchange every file of DIR must belong to an id that namespace maps (the caller's own). When
//! that does not hold (agentbox runs as root, and the sandbox runs as a host id of its own that
//! owns nothing of DIR), the workspace is a copy instead, and spawn says why.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use agentbox_core::{Backend, Overlay};

use crate::error::Result;
use crate::tree;

/// Where an agent's layers live in its state directory.
const LAYERS: &str = "layers";

pub fn upper(state_dir: &Path) -> PathBuf {
    state_dir.join(LAYERS).join("upper")
}

fn work(state_dir: &Path) -> PathBuf {
    state_dir.join(LAYERS).join("work")
}

/// Why DIR cannot be overlaid for this agent (`None`: it can).
pub fn refusal(dir: &Path, backend: Backend) -> Option<String> {
    if backend != Backend::Ns {
        return Some("a VM agent sees its workspace through a share of one host directory".into());
    }
    let has_overlay = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|s| s.lines().any(|l| l.split_whitespace().last() == Some("overlay")));
    if !has_overlay {
        return Some("this kernel has no overlayfs".into());
    }
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let (sandbox_uid, _) = agentbox_core::host_ids_for(uid, gid);
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.uid() == sandbox_uid => None,
        Ok(m) => Some(format!(
            "{} belongs to uid {}, and the sandbox runs as uid {sandbox_uid}, which could not change \
             its files through an overlay",
            dir.display(),
            m.uid()
        )),
        Err(e) => Some(format!("{}: {e}", dir.display())),
    }
}

/// Makes the (empty) layers of a new overlay on `lower` in `state_dir`.
pub fn make(state_dir: &Path, lower: &Path) -> Result<Overlay> {
    tree::agent_dir(&state_dir.join(LAYERS))?;
    let (upper, work) = (upper(state_dir), work(state_dir));
    tree::agent_dir(&upper)?;
    tree::agent_dir(&work)?;
    Ok(Overlay { lower: lower.to_path_buf(), upper, work, read_only: false })
}

/// Empties overlayfs's scratch directory (after a rollback replaced the upper layer). The
/// agent must not be running.
pub fn clear_work(o: &Overlay) -> Result<()> {
    if std::fs::symlink_metadata(&o.work).is_ok() {
        tree::remove_tree(&o.work)?;
    }
    tree::agent_dir(&o.work)
}
