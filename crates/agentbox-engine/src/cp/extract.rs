//! Unpacking a tar stream an agent's sandbox produced into a host directory, as a hostile
//! input: only directories and regular files are made; every name is a plain relative path under
//! the one top entry; every step goes through a directory descriptor without following a link;
//! a file is written to a new temporary name and renamed into place (so an existing link there is
//! replaced, never written through); set-id and sticky bits are dropped; links, devices and
//! FIFOs are skipped and reported.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{fchmod, Mode};
use nix::sys::time::TimeSpec;

use super::{shown, Report};
use crate::error::{Error, Result};
use crate::tree::Dir;

/// Where the archive's top entry goes: into `dir`, named `name` whatever the stream calls it
/// (the stream is the agent's: it does not choose what lands in the person's directory).
#[derive(Debug)]
pub(crate) struct Target {
    pub dir: PathBuf,
    pub name: Option<OsString>,
}

/// Whether the path names the top entry itself or something below it, as plain components.
fn components(path: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Opens the directory `parts` below `root`, making what is missing, one descriptor step at a
/// time; a name that is a link or a file on the way is a conflict (nothing goes through it).
fn open_dir(root: &Dir, parts: &[&OsStr]) -> Result<Dir> {
    let mut cur: Option<Dir> = None;
    for part in parts {
        let here = cur.as_ref().unwrap_or(root);
        let next = match here.subdir(part)? {
            Some(d) => d,
            None if here.stat(part)?.is_none() => here.mkdir(part)?,
            None => {
                return Err(Error::conflict(format!(
                    "{} is not a directory (a link or a file is there); nothing is written through it",
                    shown(&here.path().join(part))
                )))
            }
        };
        cur = Some(next);
    }
    cur.ok_or_else(|| Error::internal("an empty path"))
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes `data` as the regular file `name` in `dir`: a new temporary file, renamed over the name.
fn write_file(dir: &Dir, name: &OsStr, data: &mut dyn Read, mode: u32, mtime: u64) -> Result<u64> {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = OsString::from(format!(".agentbox-cp-{}-{n}", std::process::id()));
    let mut file = dir.create_file(&tmp)?;
    let written = (|| -> Result<u64> {
        let written = std::io::copy(data, &mut file)?;
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode & 0o777))?;
        let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
        nix::sys::stat::futimens(file.as_fd(), &t, &t)?;
        nix::fcntl::renameat(dir.fd(), tmp.as_os_str(), dir.fd(), name)?;
        Ok(written)
    })();
    if written.is_err() {
        let _ = nix::unistd::unlinkat(dir.fd(), tmp.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// Unpacks `archive` into `target`.
pub(crate) fn extract(archive: &mut dyn Read, target: &Target) -> Result<Report> {
    let root = Dir::open(&target.dir)?;
    let mut report = Report::default();
    let mut top: Option<OsString> = None;
    // Directory modes are set last: an agent's read-only directory still gets its files.
    let mut modes: Vec<(Vec<OsString>, u32)> = Vec::new();
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        // Names and link targets are the agent's: said with their control characters escaped.
        let said = shown(&raw);
        let Some(parts) = components(&raw) else {
            report.skipped.push(format!("{said}: not a plain relative name"));
            continue;
        };
        // One top entry, renamed as asked.
        match &top {
            None => top = Some(parts[0].to_os_string()),
            Some(t) if t.as_os_str() == parts[0] => {}
            Some(_) => {
                report.skipped.push(format!("{said}: outside the copied entry"));
                continue;
            }
        }
        let mut names: Vec<OsString> = parts.iter().map(|p| p.to_os_string()).collect();
        if let Some(new) = &target.name {
            names[0] = new.clone();
        }
        let refs: Vec<&OsStr> = names.iter().map(OsString::as_os_str).collect();
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        let placed = match kind {
            tar::EntryType::Directory => open_dir(&root, &refs).map(|_| {
                modes.push((names.clone(), mode));
                report.dirs += 1;
            }),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let (name, parents) = refs.split_last().ok_or_else(|| Error::internal("an empty path"))?;
                let below = match parents.is_empty() {
                    true => Ok(None),
                    false => open_dir(&root, parents).map(Some),
                };
                below
                    .and_then(|below| {
                        let dir = below.as_ref().unwrap_or(&root);
                        match dir.subdir(name)? {
                            Some(_) => Err(Error::conflict(format!(
                                "{} is a directory; a file is not copied over it",
                                shown(&dir.path().join(name))
                            ))),
                            None => write_file(dir, name, &mut entry, mode, mtime),
                        }
                    })
                    .map(|n| {
                        report.bytes += n;
                        report.files += 1;
                    })
            }
            _ => Ok(()),
        };
        // A link or a file in the way is said and passed over; anything else ends the copy.
        match placed {
            // The top entry itself cannot land: the copy as a whole cannot.
            Err(e) if e.kind() == crate::error::Kind::Conflict && parts.len() == 1 => return Err(e),
            Err(e) if e.kind() == crate::error::Kind::Conflict => {
                report.skipped.push(format!("{said}: {}", e.root_message()));
                continue;
            }
            other => other?,
        }
        match kind {
            tar::EntryType::Directory
            | tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse => {}
            tar::EntryType::Symlink => {
                let to = entry.link_name().ok().flatten().map(|l| shown(&l)).unwrap_or_default();
                report
                    .skipped
                    .push(format!("{said}: a link (to {to}); agentbox does not make links an agent made"));
            }
            tar::EntryType::Link => report.skipped.push(format!("{said}: a hard link")),
            tar::EntryType::Char | tar::EntryType::Block => report.skipped.push(format!("{said}: a device")),
            tar::EntryType::Fifo => report.skipped.push(format!("{said}: a FIFO")),
            // Extended headers are read by the archive itself; anything else is not a file.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => report.skipped.push(format!("{said}: not a file or directory ({other:?})")),
        }
    }
    if top.is_none() {
        return Err(Error::not_found("the copy held nothing (is the path there?)"));
    }
    for (names, mode) in modes.iter().rev() {
        let refs: Vec<&OsStr> = names.iter().map(OsString::as_os_str).collect();
        if let Ok(d) = open_dir(&root, &refs) {
            let _ = fchmod(d.fd(), Mode::from_bits_truncate(mode & 0o777));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    /// What a hostile sandbox could send: names out of the tree, a link and then a file through
    /// it, a set-id file, a device, a second top entry. Only the plain files and directories
    /// land, inside the target; nothing is written through the link.
    #[test]
    fn a_hostile_stream_lands_only_plain_files_inside_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let into = dir.path().join("into");
        std::fs::create_dir(&into).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), "top", std::io::empty()).unwrap();
        b.append_data(&mut header(tar::EntryType::Regular, 0o4755, 3), "top/suid", &b"abc"[..]).unwrap();
        let mut link = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut link, "top/ln", &outside).unwrap();
        // A name written raw, past the builder's own checks.
        let mut evil = header(tar::EntryType::Regular, 0o644, 4);
        evil.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"top/ln/x\0");
        evil.set_cksum();
        b.append(&evil, &b"pwnd"[..]).unwrap();
        let mut up = header(tar::EntryType::Regular, 0o644, 4);
        up.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"top/../escape");
        up.set_cksum();
        b.append(&up, &b"pwnd"[..]).unwrap();
        b.append_data(&mut header(tar::EntryType::Fifo, 0o644, 0), "top/fifo", std::io::empty()).unwrap();
        b.append_data(&mut header(tar::EntryType::Fifo, 0o644, 0), "top/\x1b]0;owned\x07", std::io::empty())
            .unwrap();
        b.append_data(&mut header(tar::EntryType::Regular, 0o644, 2), "other", &b"no"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let target = Target { dir: into.clone(), name: Some("copy".into()) };
        let report = extract(&mut &bytes[..], &target).unwrap();
        let suid = std::fs::metadata(into.join("copy/suid")).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&suid.permissions()) & 0o7777, 0o755);
        assert_eq!(std::fs::read(into.join("copy/suid")).unwrap(), b"abc");
        // The link was never made: the file below its name landed in a directory of the copy.
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "written through the link");
        assert_eq!(std::fs::read(into.join("copy/ln/x")).unwrap(), b"pwnd");
        assert!(!dir.path().join("escape").exists() && !into.join("escape").exists());
        assert!(std::fs::symlink_metadata(into.join("copy/ln"))
            .map(|m| !m.file_type().is_symlink())
            .unwrap_or(true));
        assert!(!into.join("copy/fifo").exists() && !into.join("other").exists());
        let said = report.skipped.join("\n");
        assert!(!said.contains('\x1b') && said.contains("top/\\x1b]0;owned\\x07: a FIFO"), "{said}");
        for what in [
            "top/ln: a link",
            "top/../escape: not a plain relative name",
            "top/fifo: a FIFO",
            "other: outside",
        ] {
            assert!(said.contains(what), "{what} not in:\n{said}");
        }
    }

    /// An existing link at a file's name is replaced, not written through.
    #[test]
    fn a_link_in_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let into = dir.path().join("into");
        std::fs::create_dir(&into).unwrap();
        std::os::unix::fs::symlink(&victim, into.join("f")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(tar::EntryType::Regular, 0o644, 3), "f", &b"new"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        extract(&mut &bytes[..], &Target { dir: into.clone(), name: None }).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // A link where a directory of the copy goes: what would go below it is passed over;
        // a link where the copy itself goes ends the copy.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::create_dir(into.join("top")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, into.join("top/d")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, into.join("d")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), "top", std::io::empty()).unwrap();
        b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), "top/d", std::io::empty()).unwrap();
        b.append_data(&mut header(tar::EntryType::Regular, 0o644, 3), "top/d/x", &b"new"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let report = extract(&mut &bytes[..], &Target { dir: into.clone(), name: None }).unwrap();
        let whole = extract(&mut &bytes[..], &Target { dir: into.clone(), name: Some("d".into()) });
        assert!(whole.is_err_and(|e| e.to_string().contains("nothing is written through it")));
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none(), "written through a link");
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
        assert_eq!(std::fs::read_to_string(into.join("f")).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(into.join("f")).unwrap().file_type().is_symlink());
    }
}
