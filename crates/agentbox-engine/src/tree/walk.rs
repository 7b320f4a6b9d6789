//! Walking an agent-written tree (for `diff`'s manifest): every entry with its `lstat`, files
//! opened only through their directory's descriptor.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;

use super::dir::{Dir, Kind};
use super::{Limits, TreeError, MAX_DEPTH};

/// One name met by [`walk`].
#[derive(Debug)]
pub struct Entry<'a> {
    /// Relative to the walked root.
    pub rel: PathBuf,
    pub kind: Kind,
    pub stat: FileStat,
    dir: &'a Dir,
    name: OsString,
}

impl Entry<'_> {
    /// Opens the entry for reading if it is (still) a regular file.
    pub fn open(&self) -> Result<Option<File>, TreeError> {
        Ok(self.dir.open_file(&self.name)?.map(|(f, _)| f))
    }

    /// A symlink's target (never followed).
    pub fn link_target(&self) -> Result<Option<OsString>, TreeError> {
        self.dir.read_link(&self.name)
    }
}

/// Calls `visit` for every entry below `root`, parents before children, names sorted. Directories
/// that are swapped for something else while the walk runs are not entered.
pub fn walk(
    root: &Path,
    limits: Limits,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<(), TreeError>,
) -> Result<(), TreeError> {
    let dir = Dir::open(root)?;
    let mut count = 0u64;
    walk_dir(&dir, Path::new(""), 0, limits, &mut count, visit)
}

fn walk_dir(
    dir: &Dir,
    rel: &Path,
    depth: usize,
    limits: Limits,
    count: &mut u64,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<(), TreeError>,
) -> Result<(), TreeError> {
    if depth >= MAX_DEPTH {
        return Err(TreeError::TooDeep { path: dir.path().to_path_buf() });
    }
    for name in dir.names()? {
        *count += 1;
        if *count > limits.max_entries {
            return Err(TreeError::TooMany { path: dir.path().to_path_buf(), limit: limits.max_entries });
        }
        let Some(stat) = dir.stat(&name)? else { continue };
        let kind = Kind::of(&stat);
        let entry = Entry { rel: rel.join(&name), kind, stat, dir, name: name.clone() };
        visit(&entry)?;
        if kind == Kind::Dir {
            if let Some(sub) = dir.subdir(&name)? {
                walk_dir(&sub, &entry.rel, depth + 1, limits, count, visit)?;
            }
        }
    }
    Ok(())
}
