//! Packing a host path into a tar stream for an agent's sandbox: the person's files, read
//! through directory descriptors without following links (a link is sent as a link, as
//! `docker cp` does), so a tree an agent can change while it is read (its own workspace) cannot
//! turn the copy into a read of some other host file. Devices and FIFOs are left out.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Report;
use crate::error::{Context, Error, Result};
use crate::tree::{self, Dir, Kind, Limits};

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o777);
    h.set_size(size);
    h.set_mtime(u64::try_from(mtime).unwrap_or(0));
    h
}

/// Writes `src` (a file, directory or link) into `out` as a tar stream whose top entry is named
/// `top`.
pub(crate) fn pack(src: &Path, top: &OsStr, out: &mut dyn Write) -> Result<Report> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let mut b = tar::Builder::new(out);
    let mut report = Report::default();
    let top = PathBuf::from(top);
    let ft = meta.file_type();
    if ft.is_symlink() {
        let to = std::fs::read_link(src)?;
        b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0, meta.mtime()), &top, &to)?;
        report.links += 1;
    } else if ft.is_file() {
        let parent = src.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name =
            src.file_name().ok_or_else(|| Error::invalid(format!("{}: not a file name", src.display())))?;
        let dir = Dir::open(parent)?;
        let (file, st) = dir
            .open_file(name)?
            .ok_or_else(|| Error::conflict(format!("{} changed while it was read", src.display())))?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        b.append_data(&mut header(tar::EntryType::Regular, st.st_mode, size, st.st_mtime), &top, file)?;
        report.files += 1;
        report.bytes += size;
    } else if ft.is_dir() {
        b.append_data(
            &mut header(tar::EntryType::Directory, meta.mode(), 0, meta.mtime()),
            &top,
            std::io::empty(),
        )?;
        report.dirs += 1;
        let mut failure: Option<Error> = None;
        tree::walk(src, Limits::UNLIMITED, &mut |e| {
            let name = top.join(&e.rel);
            let (mode, mtime) = (e.stat.st_mode, e.stat.st_mtime);
            let done = match e.kind {
                Kind::Dir => b
                    .append_data(
                        &mut header(tar::EntryType::Directory, mode, 0, mtime),
                        &name,
                        std::io::empty(),
                    )
                    .map(|()| report.dirs += 1),
                Kind::File => match e.open()? {
                    Some(f) => {
                        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        // The size read now: a file that grows meanwhile is cut there.
                        b.append_data(
                            &mut header(tar::EntryType::Regular, mode, size, mtime),
                            &name,
                            std::io::Read::take(f, size),
                        )
                        .map(|()| {
                            report.files += 1;
                            report.bytes += size;
                        })
                    }
                    None => {
                        report.skipped.push(format!("{}: changed while it was read", name.display()));
                        Ok(())
                    }
                },
                Kind::Symlink => match e.link_target()? {
                    Some(to) => b
                        .append_link(&mut header(tar::EntryType::Symlink, 0o777, 0, mtime), &name, &to)
                        .map(|()| report.links += 1),
                    None => Ok(()),
                },
                _ => {
                    report.skipped.push(format!("{}: not a file, directory or link", name.display()));
                    Ok(())
                }
            };
            if let Err(err) = done {
                failure.get_or_insert(Error::from(err));
            }
            Ok(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
    } else {
        return Err(Error::invalid(format!("{}: not a file, directory or link", src.display())));
    }
    b.finish()?;
    Ok(report)
}
