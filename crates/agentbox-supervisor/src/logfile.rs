//! The agent's output log: every byte the terminal gave, appended; capped by rotation; and a
//! full disk makes the agent wait instead of losing its output.
//!
//! When the current file reaches half the cap it becomes `log.1` (replacing the one before) and
//! a new file starts, so the two hold at most the cap and the newest output is always kept.
//! When a write fails because the disk is full, the bytes stay here and the supervisor stops
//! reading the terminal: the agent blocks on its next write once the terminal's buffer is full,
//! nothing it wrote is lost, and it carries on when space returns.
//!
//! Next to the log, `log.sizes` says at which offsets the terminal changed size (`OFFSET ROWS
//! COLS` per line): a TUI redraws for the size it has, and its log reads as text only when it
//! is replayed at that size (`agentbox logs` after someone attached from a larger terminal).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The default cap: days of a busy agent's output.
pub const DEFAULT_LIMIT: u64 = 512 << 20;

/// A rotated log is at least this large (a tiny cap would rotate on every write).
const MIN_HALF: u64 = 64 << 10;

pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    /// Rotate at this size.
    half: u64,
    /// Bytes read from the terminal but not yet written (the disk is full).
    pending: Vec<u8>,
    /// The terminal's size (rows, columns), as the last mark in `log.sizes` says.
    term: (u16, u16),
}

use crate::paths::log_sizes as sizes_path;

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl LogFile {
    /// Opens (appends to) the log of a terminal of size `term`.
    pub(crate) fn open(path: &Path, limit: u64, term: (u16, u16)) -> std::io::Result<Self> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        let half = (limit / 2).max(MIN_HALF);
        let log = Self { path: path.to_path_buf(), file, size, half, pending: Vec::new(), term };
        log.mark(size);
        Ok(log)
    }

    /// The terminal is now `rows` x `cols`: output from here on is drawn for that size.
    pub(crate) fn resize(&mut self, rows: u16, cols: u16) {
        if self.term != (rows, cols) {
            self.term = (rows, cols);
            self.mark(self.size + self.pending.len() as u64);
        }
    }

    /// Appends a size mark. Best effort: without it the log is replayed at the size before,
    /// which loses no byte of it.
    fn mark(&self, offset: u64) {
        let line = format!("{offset} {} {}\n", self.term.0, self.term.1);
        let _ = open(&sizes_path(&self.path)).and_then(|mut f| f.write_all(line.as_bytes()));
    }

    /// Whether output waits for disk space.
    pub(crate) fn blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends `data` (after anything still pending). Returns whether the log is now blocked by
    /// a full disk.
    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<bool> {
        self.pending.extend_from_slice(data);
        self.flush()
    }

    /// Writes what is pending. Returns whether it is still blocked (disk full); other errors
    /// are returned.
    pub(crate) fn flush(&mut self) -> std::io::Result<bool> {
        while !self.pending.is_empty() {
            if self.size >= self.half {
                self.rotate()?;
            }
            let room = (self.half - self.size.min(self.half)).max(1) as usize;
            let n = self.pending.len().min(room);
            match self.file.write(&self.pending[..n]) {
                Ok(0) => return Ok(true),
                Ok(w) => {
                    self.pending.drain(..w);
                    self.size += w as u64;
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let old = PathBuf::from(format!("{}.1", self.path.display()));
        std::fs::rename(&self.path, &old)?;
        let _ = std::fs::rename(sizes_path(&self.path), sizes_path(&old));
        self.file = open(&self.path)?;
        self.size = 0;
        self.mark(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_half_the_cap_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = LogFile::open(&path, 256 << 10, (24, 80)).unwrap();
        let line = [b'x'; 1000];
        for _ in 0..1000 {
            assert!(!log.write(&line).unwrap());
        }
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("log.1")).unwrap().len();
        assert!(cur <= 128 << 10 && old == 128 << 10, "{cur} {old}");
        // Whole rotated files were dropped; nothing else was.
        assert_eq!((1_000_000 - cur - old) % (128 << 10), 0);
        // Each file has the size marks of its own offsets.
        log.resize(50, 200);
        let marks = std::fs::read_to_string(sizes_path(&path)).unwrap();
        assert_eq!(marks, format!("0 24 80\n{cur} 50 200\n"));
        assert_eq!(std::fs::read_to_string(dir.path().join("log.1.sizes")).unwrap(), "0 24 80\n");
    }
}
