//! `apply`: the agent's changes written into a directory of the person's (by default the one
//! its workspace was made from), and `apply --undo`.
//!
//! The changes come from [`crate::diff::changes`] (an overlay's upper layer, or a copy compared
//! with its manifest). Writing them treats both sides as untrusted paths:
//!
//! - the agent's files are read by descriptor with no link followed; a link the agent made is
//!   written as a link (its text), never followed; FIFOs, sockets and devices are skipped, and no
//!   file is created set-user-ID or set-group-ID; sparse files stay sparse;
//! - in the target, every directory on the way is opened one component at a time with
//!   `O_NOFOLLOW`, and a path that passes a link or a file there is skipped and reported;
//!   a file is written under a temporary name and renamed over the old one, so nothing is ever
//!   written through a link that sits where the file goes.
//!
//! A path of the origin directory whose status changed since the agent's workspace was made (and
//! not by an earlier apply) was changed by someone else: it is a conflict, and the apply is
//! refused, listing them all, unless `force`. Into another directory, a conflict is a path that
//! exists there with other content. Whatever an apply overwrites or removes is saved first in
//! the agent's state, and `apply --undo` puts the last apply's paths back.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use agentbox_core::SandboxSpec;
use agentbox_store::Store;
use nix::fcntl::renameat;
use nix::sys::stat::{fchmod, FileStat, Mode};
use nix::unistd::UnlinkatFlags;
use serde::{Deserialize, Serialize};

use super::changes::Change;
use super::origin::Origin;
use crate::error::{Context, Error, Result};
use crate::home::Home;
use crate::tree::{self, copy_file, Dir, Kind};
use crate::{agents, bail};

const APPLIES: &str = "applies";
/// Per path of the origin directory: its change time just after an apply wrote it (a later
/// change is someone else's).
const WRITTEN: &str = "applied.json";
const RECORD: &str = "record.json";
const UNDONE: &str = "undone";

/// What `apply` is asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The directory to write into (default: the one the workspace was made from).
    #[schema(value_type = Option<String>)]
    pub to: Option<PathBuf>,
    /// Say what would be written, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Overwrite paths that changed in the directory since the agent started.
    #[serde(default)]
    pub force: bool,
    /// Only these paths (relative, each with what is below it).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub paths: Vec<PathBuf>,
}

/// A path left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub reason: String,
}

/// What an apply (or an undo) did, or would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Applied {
    #[schema(value_type = String)]
    pub target: PathBuf,
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<Change>,
    pub skipped: Vec<Skipped>,
    /// Paths overwritten although they had changed in the target (with `force`).
    #[schema(value_type = Vec<String>)]
    pub forced: Vec<PathBuf>,
    pub dry_run: bool,
}

/// What one path was before an apply and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Was {
    None,
    File,
    Link,
    Dir,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    path: PathBuf,
    before: Was,
    after: Was,
    /// The path's change time once written (`None` once removed).
    after_ctime: Option<i64>,
    /// It had changed in the target since the agent started (the apply was forced over it).
    #[serde(default)]
    forced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    target: PathBuf,
    steps: Vec<Step>,
}

/// One thing to do to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Write(PathBuf),
    Remove(PathBuf),
}

impl Op {
    fn path(&self) -> &Path {
        match self {
            Op::Write(p) | Op::Remove(p) => p,
        }
    }
}

fn ctime(st: &FileStat) -> i64 {
    st.st_ctime * 1_000_000_000 + st.st_ctime_nsec
}

fn was(st: Option<&FileStat>) -> Was {
    match st.map(Kind::of) {
        None => Was::None,
        Some(Kind::Dir) => Was::Dir,
        Some(Kind::Symlink) => Was::Link,
        Some(_) => Was::File,
    }
}

/// A tree walked by relative paths, its directories opened one component at a time without
/// following a link, and kept open for the paths that follow (an apply's paths are sorted, so
/// siblings share their parent's descriptor).
struct Tree<'a> {
    root: &'a Dir,
    open: HashMap<PathBuf, Rc<Dir>>,
}

impl<'a> Tree<'a> {
    fn new(root: &'a Dir) -> Self {
        Self { root, open: HashMap::new() }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// Forgets the open directories at and below `rel` (it is about to be removed or replaced).
    fn forget(&mut self, rel: &Path) {
        self.open.retain(|k, _| !k.starts_with(rel));
    }

    /// Where a relative path sits: its parent directory and its name; `Err` says why it cannot be
    /// reached (a link or a file on the way). Missing parents are made when `make` is set (and
    /// otherwise reported as missing).
    fn locate(&mut self, rel: &Path, make: bool) -> Result<std::result::Result<(Rc<Dir>, OsString), String>> {
        let mut parts: Vec<&OsStr> = rel.iter().collect();
        let Some(name) = parts.pop() else { return Ok(Err("an empty path".into())) };
        let mut here = PathBuf::new();
        let mut dir: Option<Rc<Dir>> = None;
        for part in parts {
            here.push(part);
            if let Some(d) = self.open.get(&here) {
                dir = Some(d.clone());
                continue;
            }
            let parent: &Dir = dir.as_deref().unwrap_or(self.root);
            let next = match parent.stat(part)?.as_ref().map(Kind::of) {
                Some(Kind::Dir) => match parent.subdir(part)? {
                    Some(d) => d,
                    None => return Ok(Err(format!("{} changed while it was opened", here.display()))),
                },
                None if make => {
                    let d = parent.mkdir(part)?;
                    fchmod(d.fd(), Mode::from_bits_truncate(0o755)).map_err(tree::TreeError::io(d.path()))?;
                    d
                }
                None => return Ok(Err(format!("{} does not exist in the target", here.display()))),
                Some(Kind::Symlink) => {
                    return Ok(Err(format!("{} is a link in the target (not followed)", here.display())))
                }
                Some(_) => return Ok(Err(format!("{} is not a directory in the target", here.display()))),
            };
            let next = Rc::new(next);
            self.open.insert(here.clone(), next.clone());
            dir = Some(next);
        }
        let parent = match (dir, self.open.get(Path::new(""))) {
            (Some(d), _) => d,
            (None, Some(top)) => top.clone(),
            (None, None) => {
                let flags = nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC;
                let fd = nix::fcntl::openat(self.root.fd(), ".", flags, Mode::empty())
                    .map_err(tree::TreeError::io(self.root.path()))?;
                let top = Rc::new(Dir::from_fd(fd, self.root.path().to_path_buf()));
                self.open.insert(PathBuf::new(), top.clone());
                top
            }
        };
        Ok(Ok((parent, name.to_os_string())))
    }
}

fn written(state_dir: &Path) -> BTreeMap<PathBuf, i64> {
    std::fs::read(state_dir.join(WRITTEN))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The agent's changes as steps, limited to `only` (each path with what is below it).
fn ops(changes: &[Change], only: &[PathBuf]) -> Vec<Op> {
    let wanted = |p: &Path| only.is_empty() || only.iter().any(|o| p.starts_with(o));
    let mut out = Vec::new();
    for c in changes {
        match (c.change, &c.from) {
            ('R', Some(from)) => {
                if wanted(from) {
                    out.push(Op::Remove(from.clone()));
                }
                if wanted(&c.path) {
                    out.push(Op::Write(c.path.clone()));
                }
            }
            ('D', _) if wanted(&c.path) => out.push(Op::Remove(c.path.clone())),
            ('A' | 'M', _) if wanted(&c.path) => out.push(Op::Write(c.path.clone())),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out.dedup();
    // What lies below a removed directory goes with it.
    let removed: Vec<PathBuf> =
        out.iter().filter_map(|o| if let Op::Remove(p) = o { Some(p.clone()) } else { None }).collect();
    out.retain(|o| !removed.iter().any(|r| o.path() != r && o.path().starts_with(r)));
    out
}

/// Whether a path lies in a git repository's own directory. Its config, hooks and attributes
/// run code in the person's next git command on the host: never applied (commits come over
/// with `git fetch` from the workspace, which runs none of it).
fn git_dir_of(p: &Path) -> Option<PathBuf> {
    let mut root = PathBuf::new();
    for c in p.components() {
        root.push(c);
        if c.as_os_str() == ".git" {
            return Some(root);
        }
    }
    None
}

/// Writes the agent's changes into the target; see the module's documentation.
pub fn apply(home: &Home, store: &Store, name: &str, req: &ApplyRequest) -> Result<Applied> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    let state_dir = agents::state_dir(&rec);
    let spec = SandboxSpec::decode(&rec.spec)?;
    let origin = Origin::load(&state_dir)?;
    let target = match (&req.to, &origin) {
        (Some(to), _) => std::fs::canonicalize(to)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| Error::invalid(format!("--to {}: not a directory", to.display())))?,
        (None, Some(o)) => o.dir.clone(),
        (None, None) => bail!(Error::invalid(format!(
            "agent '{name}' was not spawned from a directory (--from-dir); say where with --to DIR"
        ))),
    };
    if target.starts_with(&state_dir) {
        bail!(Error::invalid("--to names a directory inside the agent's own state"));
    }
    for p in &req.paths {
        tree::check_relative(p).map_err(|_| {
            Error::invalid(format!("{}: give paths relative to the workspace, without '..'", p.display()))
        })?;
    }
    let into_origin = origin.as_ref().filter(|o| o.dir == target);
    let source = match &spec.overlay {
        Some(o) => o.upper.clone(),
        None => spec.workspace.clone(),
    };
    crate::pause::frozen(&rec, || {
        let changes = crate::diff::changes(&state_dir, &spec, name)?;
        let mut ops = ops(&changes, &req.paths);
        let mut skipped = Vec::new();
        let mut git_dirs: Vec<PathBuf> = Vec::new();
        ops.retain(|o| {
            let Some(root) = git_dir_of(o.path()) else { return true };
            if !git_dirs.contains(&root) {
                git_dirs.push(root);
            }
            false
        });
        for root in git_dirs {
            skipped.push(Skipped {
                path: root,
                reason:
                    "a repository's .git is never applied (its config and hooks would run on this machine): \
                         bring commits over with git fetch"
                        .into(),
            });
        }
        let src_root = Dir::open(&source)?;
        let dst_root = Dir::open(&target).with_context(|| format!("opening {}", target.display()))?;
        let (mut src, mut dst) = (Tree::new(&src_root), Tree::new(&dst_root));
        let before_applies = written(&state_dir);
        let mut conflicts = Vec::new();
        let mut todo = Vec::new();
        // Directories this apply writes: what the target has at their place (a file, a link) is
        // replaced by them, so the paths below them are new there.
        let mut dirs_written: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        for op in ops {
            let rel = op.path().to_path_buf();
            // What the agent has there (a write of something it cannot be given is skipped).
            if let Op::Write(p) = &op {
                match src.locate(p, false)? {
                    Ok((d, n)) => match d.stat(&n)?.as_ref().map(Kind::of) {
                        Some(Kind::Dir) => {
                            dirs_written.insert(rel.clone());
                        }
                        Some(Kind::Other) => {
                            skipped.push(Skipped {
                                path: rel,
                                reason: "a FIFO, socket or device: not created".into(),
                            });
                            continue;
                        }
                        None => {
                            skipped.push(Skipped { path: rel, reason: "gone from the workspace".into() });
                            continue;
                        }
                        _ => {}
                    },
                    Err(why) => {
                        skipped.push(Skipped { path: rel, reason: why });
                        continue;
                    }
                }
            }
            let (here, inside) = match dst.locate(&rel, false)? {
                Ok((d, n)) => (d.stat(&n)?, Some(via_fd(&d, &n))),
                Err(why) if why.ends_with("does not exist in the target") => (None, None),
                // Below a directory this apply puts where the target has a file or a link.
                Err(why)
                    if (why.ends_with("is not a directory in the target")
                        || why.ends_with("is a link in the target (not followed)"))
                        && rel.ancestors().skip(1).any(|a| dirs_written.contains(a)) =>
                {
                    (None, None)
                }
                Err(why) => {
                    skipped.push(Skipped { path: rel, reason: why });
                    continue;
                }
            };
            let conflict = match (&here, into_origin) {
                (None, _) => false,
                (Some(st), Some(o)) => {
                    let changed = ctime(st) >= o.since_ns && before_applies.get(&rel) != Some(&ctime(st));
                    // A directory the agent removed: the person's changes anywhere inside it count.
                    let within = matches!(op, Op::Remove(_))
                        && Kind::of(st) == Kind::Dir
                        && inside.is_some_and(|p| changed_inside(&p, o.since_ns));
                    changed || within
                }
                (Some(st), None) => match &op {
                    Op::Remove(_) => false,
                    Op::Write(p) => Kind::of(st) != Kind::Dir && differs(src.path(), dst.path(), p),
                },
            };
            if conflict {
                conflicts.push(rel.clone());
            }
            todo.push(op);
        }
        if !conflicts.is_empty() && !req.force {
            let list: Vec<String> = conflicts.iter().map(|p| p.display().to_string()).collect();
            bail!(Error::conflict(format!(
                "{} path(s) changed in {} since the agent started: {}; nothing was written \
                 (apply --force overwrites them, and apply --undo puts them back)",
                conflicts.len(),
                target.display(),
                list.join(", ")
            )));
        }
        let shown: Vec<Change> = changes
            .iter()
            .filter(|c| todo.iter().any(|o| o.path() == c.path || c.from.as_deref() == Some(o.path())))
            .cloned()
            .collect();
        let applied = Applied {
            target: target.clone(),
            changes: shown,
            skipped,
            forced: conflicts,
            dry_run: req.dry_run,
        };
        if req.dry_run || todo.is_empty() {
            return Ok(applied);
        }
        write(&state_dir, &mut src, &mut dst, &target, &todo, &applied.forced)?;
        let _ = store.record(name, "apply", &format!("{} path(s) into {}", todo.len(), target.display()));
        Ok(applied)
    })
}

/// Whether anything below the directory `dir` changed at or after `since_ns` (bounded: a tree
/// too large to look through counts as changed).
fn changed_inside(dir: &Path, since_ns: i64) -> bool {
    let mut changed = false;
    let limits = tree::Limits { max_bytes: u64::MAX, max_entries: 1_000_000 };
    let walked = tree::walk(dir, limits, &mut |e| {
        changed |= ctime(&e.stat) >= since_ns;
        Ok(())
    });
    changed || walked.is_err()
}

/// Whether the agent's file at `rel` differs from the target's.
fn differs(src: &Path, dst: &Path, rel: &Path) -> bool {
    let a = super::changes::hash_file(src, rel);
    a.is_none() || a != super::changes::hash_file(dst, rel)
}

/// Performs the steps, saving what each replaces first, and records them for `--undo`.
fn write(
    state_dir: &Path,
    src: &mut Tree<'_>,
    dst: &mut Tree<'_>,
    target: &Path,
    todo: &[Op],
    forced: &[PathBuf],
) -> Result<()> {
    let root = state_dir.join(APPLIES);
    crate::home::private_dir(&root)?;
    let n = next_number(&root)?;
    let dir = root.join(n.to_string());
    let saved = Dir::create(&dir)?;
    let mut steps = Vec::new();
    let mut marks = written(state_dir);
    let mut failure = None;
    for (i, op) in todo.iter().enumerate() {
        match step(src, dst, &saved, i, op) {
            Ok(mut s) => {
                s.forced = forced.contains(&s.path);
                match s.after_ctime {
                    Some(c) => marks.insert(s.path.clone(), c),
                    None => marks.remove(&s.path),
                };
                steps.push(s);
            }
            Err(e) => {
                failure = Some(e.context(format!("applying {}", op.path().display())));
                break;
            }
        }
    }
    // Change times as they are once everything is written (making d/e changes d's).
    for s in &mut steps {
        s.after_ctime = match dst.locate(&s.path, false)? {
            Ok((d, n)) => d.stat(&n)?.as_ref().map(ctime),
            Err(_) => None,
        };
        match s.after_ctime {
            Some(c) => marks.insert(s.path.clone(), c),
            None => marks.remove(&s.path),
        };
    }
    // The record is kept even after a failure: what was done can be undone.
    let record = Record { target: target.to_path_buf(), steps };
    std::fs::write(dir.join(RECORD), serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
    std::fs::write(state_dir.join(WRITTEN), serde_json::to_vec(&marks).map_err(std::io::Error::other)?)?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn next_number(root: &Path) -> Result<u32> {
    let mut max = 0;
    for e in std::fs::read_dir(root)?.flatten() {
        if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            max = max.max(n);
        }
    }
    Ok(max + 1)
}

/// `name` in the opened directory `dir`, as a path that reaches it through the descriptor
/// (`/proc/self/fd/N/name`): no component above it is looked up again, so nothing swapped in
/// since the directory was opened is followed.
fn via_fd(dir: &Dir, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", dir.fd().as_raw_fd())).join(name)
}

/// Saves the target's entry `name` of `dir` as `saved/i` (a file, a link, or a tree).
fn save(dir: &Dir, name: &OsStr, st: &FileStat, saved: &Dir, i: usize) -> Result<()> {
    let as_name = OsString::from(i.to_string());
    match Kind::of(st) {
        Kind::Dir => {
            tree::copy_tree(&via_fd(dir, name), &saved.path().join(&as_name), &tree::CopyOptions::default())?;
        }
        Kind::Symlink => {
            if let Some(t) = dir.read_link(name)? {
                nix::unistd::symlinkat(t.as_os_str(), saved.fd(), as_name.as_os_str())
                    .map_err(tree::TreeError::io(saved.path().join(&as_name)))?;
            }
        }
        Kind::File => {
            if let Some((f, fst)) = dir.open_file(name)? {
                let out = saved.create_file(&as_name)?;
                copy_file(&f, &out, fst.st_size as u64, u64::MAX)?;
                fchmod(out.as_fd(), Mode::from_bits_truncate(fst.st_mode & 0o777))
                    .map_err(tree::TreeError::io(saved.path().join(&as_name)))?;
            }
        }
        Kind::Other => {}
    }
    Ok(())
}

/// Removes the target's entry `name` of `dir`, whatever it is.
fn remove(dir: &Dir, name: &OsStr, st: &FileStat) -> Result<()> {
    if Kind::of(st) == Kind::Dir {
        tree::remove_tree(&via_fd(dir, name))?;
    } else {
        nix::unistd::unlinkat(dir.fd(), name, UnlinkatFlags::NoRemoveDir)
            .map_err(tree::TreeError::io(dir.path().join(name)))?;
    }
    Ok(())
}

/// A name beside `name` to build the new entry under before it is renamed into place.
fn temp_name(name: &OsStr) -> OsString {
    let mut t = OsString::from(".agentbox-apply-");
    t.push(std::process::id().to_string());
    t.push("-");
    t.push(OsStr::from_bytes(&name.as_bytes()[..name.len().min(100)]));
    t
}

/// Puts the agent's entry at `rel` (from `src`) into the target as `name` of `into`.
fn put(src: &mut Tree<'_>, rel: &Path, into: &Dir, name: &OsStr, existing: Option<&FileStat>) -> Result<Was> {
    let (from, from_name) = match src.locate(rel, false)? {
        Ok(x) => x,
        Err(why) => bail!(Error::conflict(why)),
    };
    let Some(st) = from.stat(&from_name)? else { bail!(Error::conflict("it left the workspace meanwhile")) };
    let tmp = temp_name(name);
    let _ = nix::unistd::unlinkat(into.fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    match Kind::of(&st) {
        Kind::Dir => {
            if let Some(e) = existing {
                if Kind::of(e) == Kind::Dir {
                    return Ok(Was::Dir);
                }
                remove(into, name, e)?;
            }
            let made = into.mkdir(name)?;
            fchmod(made.fd(), Mode::from_bits_truncate(st.st_mode & 0o775))
                .map_err(tree::TreeError::io(made.path()))?;
            return Ok(Was::Dir);
        }
        Kind::Symlink => {
            let Some(t) = from.read_link(&from_name)? else { bail!(Error::conflict("it changed meanwhile")) };
            nix::unistd::symlinkat(t.as_os_str(), into.fd(), tmp.as_os_str())
                .map_err(tree::TreeError::io(into.path().join(&tmp)))?;
        }
        Kind::File => {
            let Some((f, fst)) = from.open_file(&from_name)? else {
                bail!(Error::conflict("it changed meanwhile"))
            };
            let out = into.create_file(&tmp)?;
            let copied =
                copy_file(&f, &out, fst.st_size as u64, u64::MAX).map_err(Error::from).and_then(|_| {
                    fchmod(out.as_fd(), Mode::from_bits_truncate(fst.st_mode & 0o775))
                        .map_err(|e| tree::TreeError::io(into.path().join(&tmp))(e).into())
                });
            if let Err(e) = copied {
                let _ = nix::unistd::unlinkat(into.fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                return Err(e);
            }
        }
        Kind::Other => bail!(Error::conflict("a FIFO, socket or device")),
    }
    if let Some(e) = existing.filter(|e| Kind::of(e) == Kind::Dir) {
        remove(into, name, e)?;
    }
    renameat(into.fd(), tmp.as_os_str(), into.fd(), name).map_err(|e| {
        let _ = nix::unistd::unlinkat(into.fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        tree::TreeError::io(into.path().join(name))(e)
    })?;
    Ok(if Kind::of(&st) == Kind::Symlink { Was::Link } else { Was::File })
}

fn step(src: &mut Tree<'_>, dst: &mut Tree<'_>, saved: &Dir, i: usize, op: &Op) -> Result<Step> {
    let rel = op.path();
    let (into, name) = match dst.locate(rel, matches!(op, Op::Write(_)))? {
        Ok(x) => x,
        // Removing what is not there (its directory went first) is done already.
        Err(why) if matches!(op, Op::Remove(_)) && why.ends_with("does not exist in the target") => {
            return Ok(Step {
                path: rel.to_path_buf(),
                before: Was::None,
                after: Was::None,
                after_ctime: None,
                forced: false,
            });
        }
        Err(why) => bail!(Error::conflict(why)),
    };
    // What is there may be removed or replaced: directories opened below it are stale then.
    dst.forget(rel);
    let existing = into.stat(&name)?;
    if let Some(st) = &existing {
        save(&into, &name, st, saved, i)?;
    }
    let after = match op {
        Op::Write(_) => put(src, rel, &into, &name, existing.as_ref())?,
        Op::Remove(_) => {
            if let Some(st) = &existing {
                remove(&into, &name, st)?;
            }
            Was::None
        }
    };
    let after_ctime = into.stat(&name)?.as_ref().map(ctime);
    Ok(Step { path: rel.to_path_buf(), before: was(existing.as_ref()), after, after_ctime, forced: false })
}

/// Puts back what the last apply (not undone yet) overwrote or removed, and removes what it
/// created. A path changed since that apply is a conflict unless `force`.
pub fn undo(home: &Home, store: &Store, name: &str, force: bool) -> Result<Applied> {
    let _turn = agents::lock(home, name)?;
    let rec = agents::get_for_change(store, name)?;
    let state_dir = agents::state_dir(&rec);
    let root = state_dir.join(APPLIES);
    let last = std::fs::read_dir(&root)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|n| !root.join(n.to_string()).join(UNDONE).exists())
        .max();
    let Some(n) = last else {
        bail!(Error::conflict(format!("agent '{name}' has no apply to undo")));
    };
    let dir = root.join(n.to_string());
    let record: Record = serde_json::from_slice(&std::fs::read(dir.join(RECORD))?)
        .map_err(|e| Error::internal(format!("{} is damaged: {e}", dir.join(RECORD).display())))?;
    let dst_root =
        Dir::open(&record.target).with_context(|| format!("opening {}", record.target.display()))?;
    let mut dst = Tree::new(&dst_root);
    let saved = Dir::open(&dir)?;
    let mut changed = Vec::new();
    for s in &record.steps {
        let now = match dst.locate(&s.path, false)? {
            Ok((d, n)) => d.stat(&n)?.as_ref().map(ctime),
            Err(_) => None,
        };
        if now != s.after_ctime {
            changed.push(s.path.clone());
        }
    }
    if !changed.is_empty() && !force {
        let list: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        bail!(Error::conflict(format!(
            "{} path(s) changed in {} since that apply: {}; nothing was undone (--force undoes anyway)",
            changed.len(),
            record.target.display(),
            list.join(", ")
        )));
    }
    let mut marks = written(&state_dir);
    let mut done = Vec::new();
    for (i, s) in record.steps.iter().enumerate().rev() {
        let (into, name) = match dst.locate(&s.path, true)? {
            Ok(x) => x,
            Err(why) => bail!(Error::conflict(why).context(format!("undoing {}", s.path.display()))),
        };
        dst.forget(&s.path);
        if let Some(st) = into.stat(&name)? {
            if !(s.before == Was::Dir && Kind::of(&st) == Kind::Dir && s.after == Was::Dir) {
                remove(&into, &name, &st)?;
            }
        }
        let as_name = OsString::from(i.to_string());
        match s.before {
            Was::None => {}
            Was::Dir => {
                if into.stat(&name)?.is_none() {
                    tree::copy_tree(
                        &saved.path().join(&as_name),
                        &via_fd(&into, &name),
                        &tree::CopyOptions::default(),
                    )?;
                }
            }
            Was::Link | Was::File => {
                if let Some(st) = saved.stat(&as_name)? {
                    let _ = st;
                    put(&mut Tree::new(&saved), Path::new(&as_name), &into, &name, None)?;
                }
            }
        }
        // Put back as it was before the agent's change: unless the person had changed it
        // (the apply was forced over it), it counts as untouched by them again.
        match (s.forced, into.stat(&name)?) {
            (false, Some(st)) => marks.insert(s.path.clone(), ctime(&st)),
            _ => marks.remove(&s.path),
        };
        let what = match (s.before, s.after) {
            (Was::None, _) => 'D',
            (_, Was::None) => 'A',
            _ => 'M',
        };
        done.push(Change::new(what, s.path.clone()));
    }
    std::fs::write(dir.join(UNDONE), b"")?;
    std::fs::write(state_dir.join(WRITTEN), serde_json::to_vec(&marks).map_err(std::io::Error::other)?)?;
    let _ =
        store.record(name, "apply-undo", &format!("{} path(s) in {}", done.len(), record.target.display()));
    done.reverse();
    Ok(Applied { target: record.target, changes: done, skipped: vec![], forced: changed, dry_run: false })
}
