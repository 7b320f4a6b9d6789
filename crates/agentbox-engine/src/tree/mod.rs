//! Host-side work on trees an agent could have written: workspaces, homes, task outputs.
//!
//! The agent controls every name in such a tree and can change it at any moment: a file becomes a
//! symlink to `~/.ssh/id_ed25519` between a check and an open (`renameat2(RENAME_EXCHANGE)` in a
//! loop), a directory becomes a link to `/`, a regular file becomes a FIFO that blocks a reader
//! forever, a 1 TB sparse file waits to be expanded. Every operation here therefore:
//!
//! - works on descriptors, one component at a time: a directory is opened from its parent's
//!   descriptor with `O_NOFOLLOW | O_DIRECTORY`, a file with `O_NOFOLLOW | O_NONBLOCK`, and what
//!   was opened is checked with `fstat` (never `stat` on a path and open later);
//! - treats symlinks as data (their target is copied as text, never followed), and skips sockets,
//!   FIFOs and device nodes;
//! - copies sparse files sparse (`SEEK_DATA`/`SEEK_HOLE`), and stops with a clear error past a
//!   byte or entry bound the caller chose;
//! - never creates set-user-ID or set-group-ID files, whatever the source had.
//!
//! Relative paths given by callers (artifact paths, `cp` paths) are resolved with `openat2`
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` ([`Dir::open_beneath`]): the kernel refuses any path that
//! leaves the tree or passes a link.

mod agent;
mod copy;
mod dir;
mod remove;
mod walk;

use std::path::PathBuf;

use nix::errno::Errno;

pub use agent::{agent_dir, agent_owner, copy_for_agent, give_to_agent};
pub use copy::{copy_file, copy_tree, copy_tree_with, CopyError, CopyOptions, CopyStats};
pub use dir::{check_relative, Dir, Kind};
pub use remove::{chown_tree, remove_tree};
pub use walk::{walk, Entry};

/// The host account that files created by a copy belong to (as root, the agent's host id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Bounds on what one operation may read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file data (holes in sparse files do not count).
    pub max_bytes: u64,
    /// Files, directories and links.
    pub max_entries: u64,
}

impl Limits {
    pub const UNLIMITED: Self = Self { max_bytes: u64::MAX, max_entries: u64::MAX };
}

/// Directories nested deeper than this are refused (each level holds descriptors open).
pub const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{}: {}", path.display(), source.desc())]
    Io { path: PathBuf, source: Errno },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("{} holds more than {limit} bytes of data; the limit keeps an agent from filling the disk", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} holds more than {limit} entries", path.display())]
    TooMany { path: PathBuf, limit: u64 },
    #[error("{} is nested more than {MAX_DEPTH} directories deep", path.display())]
    TooDeep { path: PathBuf },
    #[error("{} is not a path inside the tree (absolute, `..`, or empty)", path.display())]
    NotBeneath { path: PathBuf },
}

impl TreeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(Errno) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// The errno behind an I/O failure, if that is what this is.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Io { source, .. } => Some(*source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
