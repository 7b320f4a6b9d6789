//! Copies of an agent's layers (an overlay's upper layer, a copied workspace, a home), as
//! checkpoints keep them and as rollback and fork lay them back.
//!
//! The source is the agent's, so it is read as the `tree` module reads: by descriptor, one
//! component at a time, links as text. Overlayfs's own marks are kept, because they are the
//! agent's deletions: a whiteout is made again, an opaque directory marked again. Nothing else
//! but files, directories and links is copied; set-id bits are dropped; sparse files stay sparse.
//!
//! A checkpoint's copy of a file that has not changed since the previous checkpoint (same inode,
//! size, modification and change time) is a hard link to that checkpoint's copy: checkpoints are
//! never written once made, so sharing is safe, and a checkpoint costs what changed since the
//! last one. Copies laid back for an agent to write are always whole copies.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, FileStat, Mode};
use serde::{Deserialize, Serialize};

use super::changes::{is_whiteout, OPAQUE_XATTR};
use crate::error::Result;
use crate::tree::{copy_file, Dir, Kind, MAX_DEPTH};

/// What identifies a version of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    ino: u64,
    size: i64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Stamp {
    fn of(st: &FileStat) -> Self {
        Self {
            ino: st.st_ino,
            size: st.st_size,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        }
    }
}

/// The stamps of a copy's source files, by path.
pub type Stamps = BTreeMap<PathBuf, Stamp>;

/// What a copy cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copied {
    pub entries: u64,
    /// Bytes of file data written (hard-linked files write none).
    pub bytes: u64,
    /// Files shared with the previous copy.
    pub linked: u64,
}

/// A previous copy to share unchanged files with.
pub struct Previous<'a> {
    pub root: &'a Path,
    pub stamps: &'a Stamps,
}

/// Copies the tree `src` into the new directory `dst` (made here, mode 0700).
pub fn copy(src: &Path, dst: &Path, prev: Option<Previous<'_>>) -> Result<(Stamps, Copied)> {
    let from = Dir::open(src)?;
    let to = Dir::create(dst)?;
    let prev_root = match &prev {
        Some(p) => Dir::open(p.root).ok(),
        None => None,
    };
    let mut job =
        Job { prev: prev.as_ref().zip(prev_root.as_ref()), stamps: Stamps::new(), copied: Copied::default() };
    own_like(&to, &from_stat(&from)?)?;
    job.dir(&from, &to, Path::new(""), 0)?;
    Ok((job.stamps, job.copied))
}

fn from_stat(d: &Dir) -> Result<FileStat> {
    Ok(nix::sys::stat::fstat(d.fd()).map_err(crate::tree::TreeError::io(d.path()))?)
}

struct Job<'a> {
    prev: Option<(&'a Previous<'a>, &'a Dir)>,
    stamps: Stamps,
    copied: Copied,
}

impl Job<'_> {
    fn dir(&mut self, from: &Dir, to: &Dir, rel: &Path, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(crate::tree::TreeError::TooDeep { path: from.path().to_path_buf() }.into());
        }
        if from.xattr(OPAQUE_XATTR)?.is_some_and(|v| v == b"y") {
            to.set_xattr(OPAQUE_XATTR, b"y")?;
        }
        for name in from.names()? {
            let Some(st) = from.stat(&name)? else { continue };
            let path = rel.join(&name);
            self.copied.entries += 1;
            if is_whiteout(&st) {
                to.whiteout(&name)?;
                continue;
            }
            match Kind::of(&st) {
                Kind::Dir => {
                    let Some(sub) = from.subdir(&name)? else { continue };
                    let made = to.mkdir(&name)?;
                    own_like(&made, &st)?;
                    self.dir(&sub, &made, &path, depth + 1)?;
                    set_mode(&made, &st)?;
                }
                Kind::Symlink => {
                    let Some(target) = from.read_link(&name)? else { continue };
                    nix::unistd::symlinkat(target.as_os_str(), to.fd(), name.as_os_str())
                        .map_err(crate::tree::TreeError::io(to.path().join(&name)))?;
                    if nix::unistd::geteuid().is_root() {
                        let _ = nix::unistd::fchownat(
                            to.fd(),
                            name.as_os_str(),
                            Some(st.st_uid.into()),
                            Some(st.st_gid.into()),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        );
                    }
                }
                Kind::File => self.file(from, to, &name, &path, &st)?,
                Kind::Other => {}
            }
        }
        Ok(())
    }

    fn file(&mut self, from: &Dir, to: &Dir, name: &OsStr, path: &Path, st: &FileStat) -> Result<()> {
        let stamp = Stamp::of(st);
        if let Some((prev, root)) = self.prev {
            if prev.stamps.get(path) == Some(&stamp) {
                let linked = nix::unistd::linkat(root.fd(), path, to.fd(), name, AtFlags::empty());
                if linked.is_ok() {
                    self.stamps.insert(path.to_path_buf(), stamp);
                    self.copied.linked += 1;
                    return Ok(());
                }
            }
        }
        let Some((src, st)) = from.open_file(name)? else { return Ok(()) };
        let out = to.create_file(name)?;
        let bytes = copy_file(&src, &out, st.st_size as u64, u64::MAX).map_err(|e| {
            crate::error::Error::from(e).context(format!("copying {}", from.path().join(name).display()))
        })?;
        if nix::unistd::geteuid().is_root() {
            nix::unistd::fchown(out.as_fd(), Some(st.st_uid.into()), Some(st.st_gid.into()))
                .map_err(crate::tree::TreeError::io(to.path().join(name)))?;
        }
        fchmod(out.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o777))
            .map_err(crate::tree::TreeError::io(to.path().join(name)))?;
        self.stamps.insert(path.to_path_buf(), Stamp::of(&st));
        self.copied.bytes += bytes;
        Ok(())
    }
}

/// As root, gives a copied directory its source's owner (the agent's host id); otherwise the
/// copy is the caller's, as its source was.
fn own_like(d: &Dir, st: &FileStat) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        nix::unistd::fchown(d.fd(), Some(st.st_uid.into()), Some(st.st_gid.into()))
            .map_err(crate::tree::TreeError::io(d.path()))?;
    }
    Ok(())
}

fn set_mode(d: &Dir, st: &FileStat) -> Result<()> {
    fchmod(d.fd(), Mode::from_bits_truncate(st.st_mode & 0o1777))
        .map_err(crate::tree::TreeError::io(d.path()))?;
    Ok(())
}
