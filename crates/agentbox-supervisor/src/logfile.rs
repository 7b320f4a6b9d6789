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
//! `log.times` says when output was written (`OFFSET UNIX_MS`, at most one mark a second, so
//! its cost does not grow with how often the agent writes; it rotates the log when it reaches a
//! 64th of the cap): `logs --since` and `--timestamps`.

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
    /// When the last time mark was written (Unix ms).
    marked_at: u64,
    /// The size of `log.times`: it rotates the log too when it grows past a 64th of the cap (an
    /// agent that writes a byte a second would otherwise grow it past the log itself).
    times_size: u64,
}

/// A mark at most this often: the timestamps are to the second.
const TIME_MARK_EVERY_MS: u64 = 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

use crate::paths::{log_sizes as sizes_path, log_times as times_path};

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl LogFile {
    /// Opens (appends to) the log of a terminal of size `term`.
    pub(crate) fn open(path: &Path, limit: u64, term: (u16, u16)) -> std::io::Result<Self> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        let half = (limit / 2).max(MIN_HALF);
        let times_size = std::fs::metadata(times_path(path)).map_or(0, |m| m.len());
        let log = Self {
            path: path.to_path_buf(),
            file,
            size,
            half,
            pending: Vec::new(),
            term,
            marked_at: 0,
            times_size,
        };
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

    /// Appends a time mark: the bytes from `offset` on were written now. Best effort, as a size
    /// mark is: without it they count as written at the mark before.
    fn mark_time(&mut self, offset: u64) {
        self.marked_at = now_ms();
        let line = format!("{offset} {}\n", self.marked_at);
        self.times_size += line.len() as u64;
        let _ = open(&times_path(&self.path)).and_then(|mut f| f.write_all(line.as_bytes()));
    }

    /// Whether output waits for disk space.
    pub(crate) fn blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends `data` (after anything still pending). Returns whether the log is now blocked by
    /// a full disk.
    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<bool> {
        if !data.is_empty() && now_ms().saturating_sub(self.marked_at) >= TIME_MARK_EVERY_MS {
            self.mark_time(self.size + self.pending.len() as u64);
        }
        self.pending.extend_from_slice(data);
        self.flush()
    }

    /// Writes what is pending. Returns whether it is still blocked (disk full); other errors
    /// are returned.
    pub(crate) fn flush(&mut self) -> std::io::Result<bool> {
        while !self.pending.is_empty() {
            if self.size >= self.half || self.times_size >= (self.half / 64).max(4096) {
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
        let _ = std::fs::rename(times_path(&self.path), times_path(&old));
        self.file = open(&self.path)?;
        self.size = 0;
        self.times_size = 0;
        self.mark(0);
        // What is flushed into the new file was read from the terminal just now.
        self.mark_time(0);
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
        // Time marks: each file starts with one, at most one a second follows.
        for p in [times_path(&path), dir.path().join("log.1.times")] {
            let marks = std::fs::read_to_string(&p).unwrap();
            let first = marks.lines().next().unwrap_or_default();
            assert!(first.starts_with("0 ") && marks.lines().count() <= 3, "{}: {marks}", p.display());
        }
    }

    /// An agent that writes a byte a second grows the marks faster than the log: the marks
    /// rotate the log too, so they stay bounded by the cap.
    #[test]
    fn time_marks_stay_bounded_by_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = LogFile::open(&path, 256 << 10, (24, 80)).unwrap();
        for _ in 0..2000 {
            log.marked_at = 0; // as if a second had passed
            log.write(b".").unwrap();
        }
        let marks = std::fs::metadata(times_path(&path)).unwrap().len();
        assert!(marks <= 4096 + 64, "{marks} bytes of marks");
        assert!(dir.path().join("log.1").exists(), "the marks did not rotate the log");
    }

    /// A write after a quiet second gets a mark at its first byte, with the time it came.
    #[test]
    fn output_after_a_pause_is_marked_with_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = LogFile::open(&path, 1 << 20, (24, 80)).unwrap();
        log.write(b"one\n").unwrap();
        log.write(b"two\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let before = now_ms();
        log.write(b"three\n").unwrap();
        let marks: Vec<(u64, u64)> = std::fs::read_to_string(times_path(&path))
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())).unwrap())
            .collect();
        assert_eq!(marks.len(), 2, "{marks:?}");
        assert_eq!(marks[0].0, 0);
        assert_eq!(marks[1].0, 8, "the mark is at the first byte of the later write");
        assert!(marks[1].1 >= before && marks[1].1 - marks[0].1 >= 1000, "{marks:?}");
    }
}
