//! Copying an agent-written tree: descriptor by descriptor, links as links, sparse files sparse.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, futimens, utimensat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, Whence};

use super::dir::{Dir, Kind, SAFE_MODE_BITS};
use super::{Limits, Owner, TreeError, MAX_DEPTH};

/// How a tree is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Who the copies belong to (default: whoever runs agentbox).
    pub owner: Option<Owner>,
    /// Recreate symlinks (their target text, never followed); otherwise they are skipped.
    pub symlinks: bool,
    /// Keep access and modification times.
    pub preserve_times: bool,
    pub limits: Limits,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self { owner: None, symlinks: true, preserve_times: true, limits: Limits::UNLIMITED }
    }
}

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// Entries left out: special files, and names that changed kind or vanished while copying.
    pub skipped: u64,
    /// Bytes of file data written (holes excluded).
    pub bytes: u64,
}

struct Copier<'a> {
    opts: &'a CopyOptions,
    stats: CopyStats,
    entries: u64,
    keep: &'a dyn Fn(&Path) -> bool,
    /// The directory being copied, relative to the source root.
    rel: PathBuf,
}

/// Copies the directory `src` to `dst`, which must not exist. Set-id bits are dropped from every
/// mode; special files are skipped; a name that is swapped for something else while the copy runs
/// is copied as what it is when opened, or skipped, never followed.
pub fn copy_tree(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<CopyStats, TreeError> {
    copy_tree_with(src, dst, opts, &|_| true)
}

/// [`copy_tree`] of the entries for which `keep` (given the path relative to `src`) is true; a
/// directory left out is not entered.
pub fn copy_tree_with(
    src: &Path,
    dst: &Path,
    opts: &CopyOptions,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<CopyStats, TreeError> {
    let from = Dir::open(src)?;
    let top = nix::sys::stat::fstat(from.fd()).map_err(TreeError::io(src))?;
    let to = Dir::create(dst)?;
    let mut c = Copier { opts, stats: CopyStats::default(), entries: 0, keep, rel: PathBuf::new() };
    c.dir(&from, &to, 0)?;
    c.finish_dir(&to, &top)?;
    Ok(c.stats)
}

impl Copier<'_> {
    fn count(&mut self, path: &Path) -> Result<(), TreeError> {
        self.entries += 1;
        if self.entries > self.opts.limits.max_entries {
            return Err(TreeError::TooMany { path: path.to_path_buf(), limit: self.opts.limits.max_entries });
        }
        Ok(())
    }

    fn dir(&mut self, from: &Dir, to: &Dir, depth: usize) -> Result<(), TreeError> {
        if depth >= MAX_DEPTH {
            return Err(TreeError::TooDeep { path: from.path().to_path_buf() });
        }
        for name in from.names()? {
            let rel = self.rel.join(&name);
            if !(self.keep)(&rel) {
                self.stats.skipped += 1;
                continue;
            }
            self.count(&from.child_path(&name))?;
            let Some(st) = from.stat(&name)? else {
                self.stats.skipped += 1;
                continue;
            };
            match Kind::of(&st) {
                Kind::Dir => match from.subdir(&name)? {
                    Some(sub) => {
                        let st = nix::sys::stat::fstat(sub.fd()).map_err(TreeError::io(sub.path()))?;
                        let made = to.mkdir(&name)?;
                        let parent = std::mem::replace(&mut self.rel, rel);
                        let copied = self.dir(&sub, &made, depth + 1);
                        self.rel = parent;
                        copied?;
                        self.finish_dir(&made, &st)?;
                        self.stats.dirs += 1;
                    }
                    None => self.stats.skipped += 1,
                },
                Kind::File => match from.open_file(&name)? {
                    Some((file, st)) => {
                        let out = to.create_file(&name)?;
                        let budget = self.opts.limits.max_bytes.saturating_sub(self.stats.bytes);
                        self.stats.bytes +=
                            copy_file(&file, &out, st.st_size as u64, budget).map_err(|e| match e {
                                CopyError::Budget => TreeError::TooLarge {
                                    path: from.child_path(&name),
                                    limit: self.opts.limits.max_bytes,
                                },
                                CopyError::Io(errno) => TreeError::io(from.child_path(&name))(errno),
                            })?;
                        self.finish_file(&out, &st, &to.child_path(&name))?;
                        self.stats.files += 1;
                    }
                    None => self.stats.skipped += 1,
                },
                Kind::Symlink if self.opts.symlinks => match from.read_link(&name)? {
                    Some(target) => {
                        self.link(to, &name, &target, &st)?;
                        self.stats.links += 1;
                    }
                    None => self.stats.skipped += 1,
                },
                Kind::Symlink | Kind::Other => self.stats.skipped += 1,
            }
        }
        Ok(())
    }

    fn link(&self, to: &Dir, name: &OsStr, target: &OsStr, st: &FileStat) -> Result<(), TreeError> {
        let path = to.child_path(name);
        nix::unistd::symlinkat(target, to.fd(), name).map_err(|e| match e {
            Errno::EEXIST => TreeError::Exists { path: path.clone() },
            e => TreeError::io(path.clone())(e),
        })?;
        if let Some(o) = self.opts.owner {
            nix::unistd::fchownat(
                to.fd(),
                name,
                Some(Uid::from_raw(o.uid)),
                Some(Gid::from_raw(o.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(TreeError::io(&path))?;
        }
        if self.opts.preserve_times {
            let (a, m) = times(st);
            utimensat(to.fd(), name, &a, &m, UtimensatFlags::NoFollowSymlink)
                .map_err(TreeError::io(&path))?;
        }
        Ok(())
    }

    fn finish_file(&self, out: &File, st: &FileStat, path: &Path) -> Result<(), TreeError> {
        self.finish(out.as_fd(), st, st.st_mode & 0o777, path)
    }

    /// A copied directory gets its source's mode (the owner keeps full access, so agentbox can
    /// always remove it), owner and times once its contents are in place.
    fn finish_dir(&self, dir: &Dir, st: &FileStat) -> Result<(), TreeError> {
        self.finish(dir.fd(), st, (st.st_mode & SAFE_MODE_BITS) | 0o700, dir.path())
    }

    fn finish(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        st: &FileStat,
        mode: u32,
        path: &Path,
    ) -> Result<(), TreeError> {
        if let Some(o) = self.opts.owner {
            nix::unistd::fchown(fd, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid)))
                .map_err(TreeError::io(path))?;
        }
        // After chown, which clears set-id bits; the mode never has them anyway.
        fchmod(fd, Mode::from_bits_truncate(mode & SAFE_MODE_BITS)).map_err(TreeError::io(path))?;
        if self.opts.preserve_times {
            let (a, m) = times(st);
            futimens(fd, &a, &m).map_err(TreeError::io(path))?;
        }
        Ok(())
    }
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (TimeSpec::new(st.st_atime, st.st_atime_nsec), TimeSpec::new(st.st_mtime, st.st_mtime_nsec))
}

/// Why [`copy_file`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// More data than the budget allowed.
    #[error("more data than allowed")]
    Budget,
    #[error("{}", .0.desc())]
    Io(Errno),
}

/// Copies the first `len` bytes of `src` into the empty file `dst`, data segments only: holes
/// stay holes (`SEEK_DATA`/`SEEK_HOLE`), so a 1 TB sparse file costs what it holds. Returns the
/// bytes of data written; fails with [`CopyError::Budget`] past `budget` bytes of data.
pub fn copy_file(src: &File, dst: &File, len: u64, budget: u64) -> Result<u64, CopyError> {
    let end = len as i64;
    let mut written = 0u64;
    let mut off = 0i64;
    while off < end {
        let data = match nix::unistd::lseek(src.as_fd(), off, Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => break,                    // only a hole is left
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => off, // no hole support: all data
            Err(e) => return Err(CopyError::Io(e)),
        };
        if data >= end {
            break;
        }
        let hole = match nix::unistd::lseek(src.as_fd(), data, Whence::SeekHole) {
            Ok(h) => h.min(end),
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => end,
            Err(e) => return Err(CopyError::Io(e)),
        };
        let segment = (hole - data) as u64;
        if written.saturating_add(segment) > budget {
            return Err(CopyError::Budget);
        }
        copy_range(src, dst, data, hole)?;
        written += segment;
        off = hole;
    }
    // The length, trailing hole included.
    nix::unistd::ftruncate(dst.as_fd(), end).map_err(CopyError::Io)?;
    Ok(written)
}

/// Copies bytes `[from, to)` to the same offsets: `copy_file_range` (reflinks where the filesystem
/// has them), or reads and writes where it cannot be used.
fn copy_range(src: &File, dst: &File, from: i64, to: i64) -> Result<(), CopyError> {
    use std::os::unix::fs::FileExt;
    let (mut off_in, mut off_out) = (from, from);
    while off_in < to {
        let want = (to - off_in).min(1 << 30) as usize;
        match nix::fcntl::copy_file_range(
            src.as_fd(),
            Some(&mut off_in),
            dst.as_fd(),
            Some(&mut off_out),
            want,
        ) {
            Ok(0) => return Ok(()), // the file shrank meanwhile
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EINVAL | Errno::EOPNOTSUPP) => {
                let mut buf = vec![0u8; 1 << 16];
                while off_in < to {
                    let n = ((to - off_in) as usize).min(buf.len());
                    let got = src.read_at(&mut buf[..n], off_in as u64).map_err(io_errno)?;
                    if got == 0 {
                        return Ok(());
                    }
                    dst.write_all_at(&buf[..got], off_in as u64).map_err(io_errno)?;
                    off_in += got as i64;
                }
                return Ok(());
            }
            Err(e) => return Err(CopyError::Io(e)),
        }
    }
    Ok(())
}

fn io_errno(e: std::io::Error) -> CopyError {
    CopyError::Io(Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
}
