//! Artifacts: files the agent leaves for people, collected into the task's output directory and
//! served from there.
//!
//! Both directories are the agent's to shape: it can plant symbolic links to host files
//! (`report.txt -> ~/.ssh/id_ed25519`) or swap a directory for a link while something reads it.
//! Every open here goes through `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from the
//! directory itself, so the kernel refuses any path that leaves it or passes a link; links are
//! skipped, and only regular files and directories are copied or served.

use crate::tree::{copy_file, CopyError};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use crate::bail;
use crate::error::{Context, Result};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, SFlag};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Files holding more data than this are not collected (an agent filling the disk through its
/// output); holes of sparse files do not count, and are not written.
const MAX_ARTIFACT_BYTES: u64 = 1 << 30;
/// Data collected for one task at most.
const MAX_TOTAL_BYTES: u64 = 4 << 30;
/// Entries walked per collected directory at most.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Artifact {
    /// Relative to the task's output directory.
    pub path: String,
    pub size: u64,
}

fn how(dir: bool) -> OpenHow {
    let mut flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

fn open_root(dir: &Path) -> Result<OwnedFd> {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir)
    {
        Ok(f) => Ok(f.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(crate::Error::not_found(format!("{} is gone: the task has no artifacts", dir.display())))
        }
        Err(e) => Err(crate::Error::from(e).context(format!("opening {}", dir.display()))),
    }
}

/// A relative path with no `..`, no root, nothing odd.
pub fn check_rel(rel: &str) -> Result<()> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!(crate::Error::invalid(format!("'{rel}' is not a path inside the output directory")));
    }
    Ok(())
}

enum Kind {
    File(u64),
    Dir,
    Other,
}

fn kind(fd: &OwnedFd) -> Result<Kind> {
    let st = fstat(fd.as_fd()).context("stat")?;
    let t = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    Ok(if t == SFlag::S_IFREG {
        Kind::File(st.st_size as u64)
    } else if t == SFlag::S_IFDIR {
        Kind::Dir
    } else {
        Kind::Other
    })
}

/// Opens `rel` under `root` without leaving it or following a link; `None` when it is missing,
/// a link, or neither a file nor a directory.
fn open_beneath(root: &OwnedFd, rel: &str) -> Result<Option<(OwnedFd, Kind)>> {
    let fd = match openat2(root.as_fd(), rel, how(false)) {
        Ok(fd) => fd,
        // Missing, a link, outside, through a file, too long: not an artifact.
        Err(
            nix::errno::Errno::ENOENT
            | nix::errno::Errno::ELOOP
            | nix::errno::Errno::EXDEV
            | nix::errno::Errno::ENOTDIR
            | nix::errno::Errno::ENAMETOOLONG,
        ) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {rel}")),
    };
    let k = kind(&fd)?;
    if matches!(k, Kind::Other) {
        return Ok(None);
    }
    Ok(Some((fd, k)))
}

/// Creates `rel` as a new file under `root`: each directory on the way made or opened one
/// component at a time, never through a link (the agent shaped the output directory too, and a
/// `dist -> ~/.ssh` planted there must not make the host write into `~/.ssh`). `None` when a link
/// or a non-directory is in the way.
fn create_beneath(root: &OwnedFd, rel: &str) -> Result<Option<File>> {
    use nix::errno::Errno;
    let path = Path::new(rel);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Ok(None) };
    let mut dir = root.try_clone().context("duplicating a descriptor")?;
    for comp in parent.components() {
        let Component::Normal(c) = comp else { continue };
        match nix::sys::stat::mkdirat(dir.as_fd(), c, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", c.to_string_lossy())),
        }
        dir = match openat2(dir.as_fd(), c, how(true)) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", c.to_string_lossy())),
        };
    }
    // A file already there (an earlier collection) is replaced; a link or directory is not.
    let _ = nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    let create = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .mode(nix::sys::stat::Mode::from_bits_truncate(0o600))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(dir.as_fd(), name, create) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(Errno::EEXIST | Errno::ELOOP | Errno::EISDIR) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("writing {rel}")),
    }
}

/// Entry names of an open directory (no `.`/`..`).
fn entries(dir: OwnedFd) -> Result<Vec<String>> {
    let d = nix::dir::Dir::from_fd(dir).context("reading a directory")?;
    let mut out = Vec::new();
    for e in d.into_iter() {
        let e = e.context("reading a directory")?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Copies the manifest's artifact paths from `workspace` into `output`. Returns how many files
/// were copied and which paths were missing (or were links, or too large).
pub fn collect(workspace: &Path, output: &Path, paths: &[String]) -> Result<(usize, Vec<String>)> {
    let src = open_root(workspace)?;
    let dst = open_root(output)?;
    let (mut copied, mut skipped, mut total) = (0, Vec::new(), 0u64);
    for p in paths {
        let rel = p.trim_end_matches('/');
        check_rel(rel)?;
        let mut stack = vec![rel.to_string()];
        let mut walked = 0;
        while let Some(rel) = stack.pop() {
            walked += 1;
            if walked > MAX_ENTRIES {
                skipped.push(format!("{p} (more than {MAX_ENTRIES} entries)"));
                break;
            }
            match open_beneath(&src, &rel)? {
                None => {
                    if rel == p.trim_end_matches('/') {
                        skipped.push(p.clone());
                    }
                }
                Some((fd, Kind::Dir)) => {
                    for name in entries(fd)? {
                        stack.push(format!("{rel}/{name}"));
                    }
                }
                Some((fd, Kind::File(size))) => {
                    let Some(to) = create_beneath(&dst, &rel)? else {
                        skipped.push(format!("{rel} (the output has a link or file in its way)"));
                        continue;
                    };
                    // Sparse files stay sparse; data beyond the budgets is refused, not copied.
                    let budget = MAX_ARTIFACT_BYTES.min(MAX_TOTAL_BYTES.saturating_sub(total));
                    match copy_file(&File::from(fd), &to, size, budget) {
                        Ok(n) => {
                            total += n;
                            copied += 1;
                        }
                        Err(CopyError::Budget) => {
                            drop(to);
                            let _ = nix::unistd::unlinkat(
                                &dst,
                                rel.as_str(),
                                nix::unistd::UnlinkatFlags::NoRemoveDir,
                            );
                            skipped
                                .push(format!("{rel} (more than 1 GiB of data, or past 4 GiB for the task)"));
                        }
                        Err(CopyError::Io(e)) => return Err(e).with_context(|| format!("copying {rel}")),
                    }
                }
                Some((_, Kind::Other)) => {}
            }
        }
    }
    Ok((copied, skipped))
}

/// Regular files under `output`, links and special files left out.
pub fn list(output: &Path) -> Result<Vec<Artifact>> {
    if !output.exists() {
        return Ok(Vec::new());
    }
    let root = open_root(output)?;
    let mut out = Vec::new();
    let mut stack: Vec<String> = entries(open_root(output)?)?;
    while let Some(rel) = stack.pop() {
        if out.len() + stack.len() > MAX_ENTRIES {
            break;
        }
        match open_beneath(&root, &rel)? {
            Some((fd, Kind::Dir)) => {
                for name in entries(fd)? {
                    stack.push(format!("{rel}/{name}"));
                }
            }
            Some((_, Kind::File(size))) => out.push(Artifact { path: rel, size }),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Opens one artifact for reading.
pub fn open(output: &Path, rel: &str) -> Result<(File, u64)> {
    check_rel(rel)?;
    let root = open_root(output)?;
    match open_beneath(&root, rel)? {
        Some((fd, Kind::File(size))) => Ok((File::from(fd), size)),
        _ => bail!(crate::Error::not_found(format!("no artifact '{rel}'"))),
    }
}

/// Copies every artifact into `dest` (created), the same way: no links followed.
pub fn download(output: &Path, dest: &Path) -> Result<Vec<Artifact>> {
    let all = list(output)?;
    for a in &all {
        let (from, size) = open(output, &a.path)?;
        let to = dest.join(&a.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = File::create(&to).with_context(|| format!("writing {}", to.display()))?;
        copy_file(&from, &file, size, MAX_ARTIFACT_BYTES).with_context(|| format!("copying {}", a.path))?;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn links_and_escapes_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let (ws, out, secret) = (t.path().join("ws"), t.path().join("out"), t.path().join("secret"));
        std::fs::create_dir_all(ws.join("dist/sub")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(&secret, "host secret").unwrap();
        std::fs::write(ws.join("report.md"), "ok").unwrap();
        std::fs::write(ws.join("dist/sub/a.bin"), "aa").unwrap();
        std::os::unix::fs::symlink(&secret, ws.join("dist/leak")).unwrap();
        std::os::unix::fs::symlink(&secret, ws.join("link.md")).unwrap();
        std::os::unix::fs::symlink(t.path(), ws.join("up")).unwrap();
        // The agent also shaped the output: a link where an artifact's directory goes.
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::create_dir_all(ws.join("docs")).unwrap();
        std::fs::write(ws.join("docs/.bashrc"), "evil").unwrap();
        std::os::unix::fs::symlink(&victim, out.join("docs")).unwrap();
        let paths: Vec<String> = ["report.md", "dist/", "link.md", "up/secret", "missing", "docs/.bashrc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (copied, skipped) = collect(&ws, &out, &paths).unwrap();
        assert_eq!(copied, 2);
        assert_eq!(
            skipped,
            ["link.md", "up/secret", "missing", "docs/.bashrc (the output has a link or file in its way)"]
        );
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "wrote through a planted link");
        std::fs::remove_file(out.join("docs")).unwrap();
        let listed: Vec<String> = list(&out).unwrap().into_iter().map(|a| a.path).collect();
        assert_eq!(listed, ["dist/sub/a.bin", "report.md"]);
        // A link planted in the output is not served either.
        std::os::unix::fs::symlink(&secret, out.join("planted")).unwrap();
        assert!(open(&out, "planted").is_err());
        assert!(open(&out, "../secret").is_err());
        assert!(open(&out, "/etc/passwd").is_err());
        let mut s = String::new();
        open(&out, "report.md").unwrap().0.read_to_string(&mut s).unwrap();
        assert_eq!(s, "ok");
        let dl = t.path().join("dl");
        assert_eq!(download(&out, &dl).unwrap().len(), 2);
        assert_eq!(std::fs::read_to_string(dl.join("dist/sub/a.bin")).unwrap(), "aa");
        assert!(collect(&ws, &out, &["../x".to_string()]).is_err());
    }
}
