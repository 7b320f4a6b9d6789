//! What the plan builder may ask about the host, behind a trait so unit tests can describe a host.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    Dir,
    File,
    CharDevice,
    Symlink(PathBuf),
    Other,
}

pub trait HostFs {
    /// The kind of `path` without following a final symlink; `None` if it does not exist.
    fn entry(&self, path: &Path) -> Option<HostEntry>;
    /// Names in a directory (empty if unreadable).
    fn list(&self, dir: &Path) -> Vec<OsString>;
    /// The canonical form of `path`, if it resolves.
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
    /// The effective uid and gid of the process that will start the sandbox.
    fn caller_ids(&self) -> (u32, u32);
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl HostFs for RealFs {
    fn entry(&self, path: &Path) -> Option<HostEntry> {
        let meta = fs::symlink_metadata(path).ok()?;
        let ft = meta.file_type();
        Some(if ft.is_symlink() {
            HostEntry::Symlink(fs::read_link(path).ok()?)
        } else if ft.is_dir() {
            HostEntry::Dir
        } else if ft.is_file() {
            HostEntry::File
        } else if ft.is_char_device() {
            HostEntry::CharDevice
        } else {
            HostEntry::Other
        })
    }

    fn list(&self, dir: &Path) -> Vec<OsString> {
        fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        fs::canonicalize(path).ok()
    }

    fn caller_ids(&self) -> (u32, u32) {
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    }
}
