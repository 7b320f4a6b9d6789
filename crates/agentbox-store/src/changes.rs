//! Whether anything was committed to a store since a reader last looked, for a reader that keeps
//! a copy of the data (the server's agent list), checked on every request.
//!
//! In WAL mode every commit changes the WAL-index header at the start of the `-shm` file (its
//! change counter, frame count and salts; SQLite's documented file format, and the counter
//! `PRAGMA data_version` reports). Reading those 48 bytes is one `pread`: no lock and no
//! statement, where the pragma takes a read transaction each time. A read that races a commit
//! sees bytes that differ from the last ones, which only makes the reader look again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first copy of the WAL-index header.
const HEADER: usize = 48;

/// A stamp of the store's last commit; equal stamps mean nothing was committed in between.
pub type Stamp = [u8; HEADER];

#[derive(Debug)]
pub struct ChangeWatch {
    shm: File,
    /// A connection held open for as long as the watch lives: SQLite removes the `-shm` file
    /// when the last connection closes, and a new one would not be this file.
    /// (In a mutex only so that the watch can be shared between threads; it is never used.)
    _open: std::sync::Mutex<crate::Store>,
}

impl ChangeWatch {
    /// Watches the store at `db` (opening it, in WAL mode, if needed).
    pub fn open(db: &Path) -> crate::Result<Self> {
        let open = crate::Store::open(db)?;
        let mut name = db.as_os_str().to_owned();
        name.push("-shm");
        let shm = File::open(PathBuf::from(name)).map_err(crate::StoreError::Watch)?;
        Ok(Self { shm, _open: std::sync::Mutex::new(open) })
    }

    /// The stamp of the last commit now.
    pub fn stamp(&self) -> std::io::Result<Stamp> {
        let mut buf = [0u8; HEADER];
        self.shm.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> crate::NewAgent<'_> {
        crate::NewAgent {
            name,
            spec_json: "{}",
            state_dir: "/x",
            tags: &[],
            profile: None,
            prompt: None,
            state: None,
            restart: None,
        }
    }

    /// Every commit, from this connection or another, changes the stamp; reads do not.
    #[test]
    fn commits_change_the_stamp_and_reads_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let watch = ChangeWatch::open(&path).unwrap();
        let mut a = crate::Store::open(&path).unwrap();
        let b = crate::Store::open(&path).unwrap();
        let mut last = watch.stamp().unwrap();
        for i in 0..50 {
            let name = format!("a{i}");
            a.create_agent(&agent(&name)).unwrap();
            let now = watch.stamp().unwrap();
            assert_ne!(now, last, "commit {i} left the stamp as it was");
            last = now;
            b.list().unwrap();
            assert_eq!(watch.stamp().unwrap(), last, "a read changed the stamp");
            b.record(&name, "note", "from the other connection").unwrap();
            let now = watch.stamp().unwrap();
            assert_ne!(now, last, "the other connection's commit left the stamp as it was");
            last = now;
        }
        // The other connections close; the watched file stays the store's.
        drop((a, b));
        let mut c = crate::Store::open(&path).unwrap();
        c.create_agent(&agent("late")).unwrap();
        assert_ne!(watch.stamp().unwrap(), last, "a commit after the others closed went unseen");
    }
}
