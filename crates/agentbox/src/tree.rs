//! Host-side operations on trees an agent could have written: they never follow a symlink out of
//! the tree and never run anything found in it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Copies `src` into the new directory `dst`: files, directories, and symlinks as symlinks
/// (never followed). Special files are skipped.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src)?;
        std::os::unix::fs::symlink(target, dst).with_context(|| format!("creating {}", dst.display()))?;
    } else if ft.is_dir() {
        std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        std::fs::set_permissions(
            dst,
            std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777 | 0o700),
        )?;
    } else if ft.is_file() {
        std::fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    }
    Ok(())
}

/// Removes a tree an agent may have made hard to remove (directories without write or search
/// permission). Symlinks are removed, never followed.
pub fn remove_tree(root: &Path) -> Result<()> {
    fn open_up(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
        Ok(m) if m.file_type().is_dir() => open_up(root),
        Ok(_) => {}
    }
    std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))
}
