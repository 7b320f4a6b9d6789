//! Removing and re-owning agent-written trees.

use std::ffi::OsStr;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::dir::{Dir, Kind};
use super::{Owner, TreeError, MAX_DEPTH};

/// Removes `path` and everything below it. Symlinks are removed, never followed; directories the
/// agent made unreadable or unwritable are opened up first (the caller owns them). A missing
/// `path` is not an error.
pub fn remove_tree(path: &Path) -> Result<(), TreeError> {
    let st = match nix::sys::stat::lstat(path) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(TreeError::io(path)(e)),
    };
    if Kind::of(&st) != Kind::Dir {
        return nix::unistd::unlink(path).map_err(TreeError::io(path));
    }
    let dir = open_up(path)?;
    empty(&dir, 0)?;
    drop(dir);
    match std::fs::remove_dir(path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
    {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(TreeError::io(path)(e)),
    }
}

/// Opens a directory to empty it, giving its owner full access first if it had less.
fn open_up(path: &Path) -> Result<Dir, TreeError> {
    match Dir::open(path) {
        Ok(d) => {
            fchmod(d.fd(), Mode::from_bits_truncate(0o700)).map_err(TreeError::io(path))?;
            Ok(d)
        }
        Err(e) if e.errno() == Some(Errno::EACCES) => {
            let fd = nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(TreeError::io(path))?;
            // chmod through the descriptor's magic link: the inode that was opened, whatever
            // happens to the name meanwhile.
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                proc.as_str(),
                Mode::from_bits_truncate(0o700),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(TreeError::io(path))?;
            Dir::open(path)
        }
        Err(e) => Err(e),
    }
}

fn empty(dir: &Dir, depth: usize) -> Result<(), TreeError> {
    if depth >= MAX_DEPTH {
        return Err(TreeError::TooDeep { path: dir.path().to_path_buf() });
    }
    for name in dir.names()? {
        let Some(st) = dir.stat(&name)? else { continue };
        if Kind::of(&st) == Kind::Dir {
            if let Some(sub) = subdir_opened_up(dir, &name)? {
                empty(&sub, depth + 1)?;
            }
            match nix::unistd::unlinkat(dir.fd(), name.as_os_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(TreeError::io(dir.child_path(&name))(e)),
            }
        } else {
            match nix::unistd::unlinkat(dir.fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(TreeError::io(dir.child_path(&name))(e)),
            }
        }
    }
    Ok(())
}

fn subdir_opened_up(dir: &Dir, name: &OsStr) -> Result<Option<Dir>, TreeError> {
    match dir.subdir(name) {
        Ok(Some(d)) => {
            let _ = fchmod(d.fd(), Mode::from_bits_truncate(0o700));
            Ok(Some(d))
        }
        Ok(None) => Ok(None),
        Err(e) if e.errno() == Some(Errno::EACCES) => {
            // No read permission: give it back through the parent's descriptor. fchmodat follows a
            // final symlink, so check the name is still a directory on an O_PATH descriptor first
            // and chmod that very inode.
            let fd = nix::fcntl::openat(
                dir.fd(),
                name,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(TreeError::io(dir.child_path(name)))?;
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                proc.as_str(),
                Mode::from_bits_truncate(0o700),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(TreeError::io(dir.child_path(name)))?;
            dir.subdir(name)
        }
        Err(e) => Err(e),
    }
}

/// Gives `path` and everything below it to `owner` (symlinks themselves, never their targets).
pub fn chown_tree(path: &Path, owner: Owner) -> Result<(), TreeError> {
    let dir = Dir::open(path)?;
    let (uid, gid) = (Some(Uid::from_raw(owner.uid)), Some(Gid::from_raw(owner.gid)));
    nix::unistd::fchown(dir.fd(), uid, gid).map_err(TreeError::io(path))?;
    chown_below(&dir, owner, 0)
}

fn chown_below(dir: &Dir, owner: Owner, depth: usize) -> Result<(), TreeError> {
    if depth >= MAX_DEPTH {
        return Err(TreeError::TooDeep { path: dir.path().to_path_buf() });
    }
    let (uid, gid) = (Some(Uid::from_raw(owner.uid)), Some(Gid::from_raw(owner.gid)));
    for name in dir.names()? {
        match nix::unistd::fchownat(dir.fd(), name.as_os_str(), uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(TreeError::io(dir.child_path(&name))(e)),
        }
        if let Some(sub) = dir.subdir(&name)? {
            chown_below(&sub, owner, depth + 1)?;
        }
    }
    Ok(())
}
