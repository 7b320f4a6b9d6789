//! What an agent changed in its workspace, path by path.
//!
//! An overlay workspace's changes are its upper layer, read without looking at the rest of the
//! tree: a file there is new or changed, a whiteout (a 0:0 character device) is a deletion, a
//! directory marked opaque replaced the one below. A copied workspace is compared with the
//! manifest taken at spawn. Either way, a deleted file whose content reappears under another
//! name is reported as a rename.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::sys::stat::{FileStat, SFlag};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::tree::{Dir, Kind, MAX_DEPTH};

/// The xattr overlayfs (mounted with `userxattr`) marks a directory with when it hides the
/// directory of the same name below.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Files compared by content up to this size; larger ones count as changed when copied up.
const COMPARE_LIMIT: u64 = 4 << 20;

/// One change: `A`dded, `M`odified, `D`eleted, or `R`enamed (`from` its old path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub change: char,
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PathBuf>,
}

impl Change {
    pub fn new(change: char, path: PathBuf) -> Self {
        Self { change, path, from: None }
    }
}

/// Whether `st` is an overlayfs whiteout.
pub fn is_whiteout(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// The changes an overlay's upper layer holds over its lower directory.
pub fn of_overlay(upper: &Path, lower: &Path) -> Result<Vec<Change>> {
    let up = Dir::open(upper)?;
    let low = Dir::open(lower).ok();
    let mut out = Vec::new();
    scan(&up, low.as_ref(), Path::new(""), 0, &mut out)?;
    Ok(pair_renames(out, |p| hash_file(upper, p), |p| hash_file(lower, p)))
}

fn scan(up: &Dir, low: Option<&Dir>, rel: &Path, depth: usize, out: &mut Vec<Change>) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(crate::tree::TreeError::TooDeep { path: up.path().to_path_buf() }.into());
    }
    for name in up.names()? {
        let Some(st) = up.stat(&name)? else { continue };
        let path = rel.join(&name);
        let below = match low {
            Some(l) => l.stat(&name)?,
            None => None,
        };
        let below_kind = below.as_ref().map(Kind::of);
        if is_whiteout(&st) {
            if below.is_some() {
                out.push(Change::new('D', path));
            }
            continue;
        }
        match Kind::of(&st) {
            Kind::Dir => {
                let Some(sub) = up.subdir(&name)? else { continue };
                let opaque = sub.xattr(OPAQUE_XATTR)?.is_some_and(|v| v == b"y");
                let low_sub = match (low, below_kind) {
                    (Some(l), Some(Kind::Dir)) => l.subdir(&name)?,
                    _ => None,
                };
                match below_kind {
                    None => out.push(Change::new('A', path.clone())),
                    Some(Kind::Dir) => {}
                    Some(_) => out.push(Change::new('M', path.clone())),
                }
                if opaque {
                    // The directory below was removed and this one made in its place: what it
                    // held and this one does not is deleted.
                    if let Some(ls) = &low_sub {
                        let here = sub.names()?;
                        for n in ls.names()? {
                            if !here.contains(&n) {
                                out.push(Change::new('D', path.join(n)));
                            }
                        }
                    }
                    scan(&sub, None, &path, depth + 1, out)?;
                } else {
                    scan(&sub, low_sub.as_ref(), &path, depth + 1, out)?;
                }
            }
            kind => match (below_kind, low) {
                (None, _) | (_, None) => out.push(Change::new('A', path)),
                (Some(bk), Some(l)) => {
                    if bk != kind || !same_entry(up, l, &name, &st, below.as_ref())? {
                        out.push(Change::new('M', path));
                    }
                }
            },
        }
    }
    Ok(())
}

/// Whether a copied-up entry is still what the lower layer has (a `touch` or a `chmod` back
/// copies a file up without changing it).
fn same_entry(up: &Dir, low: &Dir, name: &OsStr, st: &FileStat, below: Option<&FileStat>) -> Result<bool> {
    let Some(b) = below else { return Ok(false) };
    match Kind::of(st) {
        Kind::Symlink => Ok(up.read_link(name)? == low.read_link(name)?),
        Kind::File => {
            if st.st_size != b.st_size || st.st_mode != b.st_mode || st.st_size as u64 > COMPARE_LIMIT {
                return Ok(false);
            }
            let read = |d: &Dir| -> Result<Option<Vec<u8>>> {
                Ok(match d.open_file(name)? {
                    Some((f, _)) => {
                        let mut v = Vec::new();
                        f.take(COMPARE_LIMIT).read_to_end(&mut v)?;
                        Some(v)
                    }
                    None => None,
                })
            };
            Ok(read(up)? == read(low)?)
        }
        _ => Ok(false),
    }
}

/// A file's content hash under `root` (`None`: not a regular file there, or too large).
pub(crate) fn hash_file(root: &Path, rel: &Path) -> Option<(u64, u64)> {
    let dir = Dir::open(root).ok()?;
    let (fd, kind) = dir.open_beneath(rel).ok()??;
    if kind != Kind::File {
        return None;
    }
    let mut f = std::fs::File::from(fd);
    let len = f.metadata().ok()?.len();
    if len > COMPARE_LIMIT {
        return None;
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some((len, h.finish()))
}

/// Pairs each deletion with an addition of the same content as a rename (the first such
/// addition, in path order). `new` hashes an added path, `old` a deleted one.
pub fn pair_renames(
    changes: Vec<Change>,
    new: impl Fn(&Path) -> Option<(u64, u64)>,
    old: impl Fn(&Path) -> Option<(u64, u64)>,
) -> Vec<Change> {
    let deleted: Vec<&Change> = changes.iter().filter(|c| c.change == 'D').collect();
    if deleted.is_empty() {
        return changes;
    }
    let mut by_hash: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for d in deleted {
        if let Some(h) = old(&d.path) {
            by_hash.entry(h).or_default().push(d.path.clone());
        }
    }
    let mut renamed_from: Vec<PathBuf> = Vec::new();
    let mut out: Vec<Change> = Vec::new();
    for c in &changes {
        if c.change == 'A' {
            if let Some(from) = new(&c.path).and_then(|h| by_hash.get_mut(&h)).and_then(|v| v.pop()) {
                renamed_from.push(from.clone());
                out.push(Change { change: 'R', path: c.path.clone(), from: Some(from) });
                continue;
            }
        }
        out.push(c.clone());
    }
    out.retain(|c| !(c.change == 'D' && renamed_from.contains(&c.path)));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}
