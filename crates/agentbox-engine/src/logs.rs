//! Reading agents' output logs: byte ranges (the API, `logs -f`, task logs), plain text, tails.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use agentbox_store::{AgentRecord, Store};
use agentbox_supervisor::paths;

use crate::agents;
use crate::error::{Context, Result};
use crate::views::{LogBytes, LogChunk, TimeMark};

/// Terminal output as plain text: escape sequences removed, CRLF as LF.
pub fn plain(bytes: &[u8]) -> Vec<u8> {
    let stripped = strip_ansi_escapes::strip(bytes);
    let mut out = Vec::with_capacity(stripped.len());
    for (i, b) in stripped.iter().enumerate() {
        if *b == b'\r' && stripped.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(*b);
    }
    out
}

/// The last `n` lines of `bytes`.
pub fn tail_lines(bytes: &[u8], n: usize) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body
        .iter()
        .rev()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n.saturating_sub(1))
        .map(|(i, _)| body.len() - i);
    match (n, start) {
        (0, _) => &bytes[bytes.len()..],
        (_, Some(s)) => &bytes[s..],
        (_, None) => bytes,
    }
}

pub const MAX_LOG_CHUNK: u64 = 4 << 20;

/// The most `tail` reads back from the end, whatever the lines' length.
pub const MAX_TAIL: u64 = 16 << 20;

/// The last `lines` lines of the agent's log, read backwards from the end in bounded memory (a
/// 2 GiB log costs what its last lines do).
pub fn tail(store: &Store, name: &str, lines: usize, raw: bool) -> Result<Vec<u8>> {
    tail_at(&paths::log(&agents::state_dir(&agents::get(store, name)?)), lines, raw)
}

pub fn tail_at(path: &Path, lines: usize, raw: bool) -> Result<Vec<u8>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let size = file.metadata()?.len();
    const BLOCK: u64 = 64 << 10;
    let mut start = size;
    let mut newlines = 0;
    // One more line than asked: the first may be cut.
    while start > 0 && newlines <= lines && size - start < MAX_TAIL {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        newlines += block.iter().filter(|b| **b == b'\n').count();
        start = from;
    }
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((size - start) as usize);
    file.take(size - start).read_to_end(&mut bytes)?;
    let text = if raw { bytes } else { plain(&bytes) };
    Ok(tail_lines(&text, lines).to_vec())
}

pub fn log_range(
    store: &Store,
    name: &str,
    offset: Option<u64>,
    limit: Option<u64>,
    raw: bool,
) -> Result<LogChunk> {
    log_range_of(&agents::get(store, name)?, offset, limit, raw)
}

/// `log_range` of an agent already looked up.
pub fn log_range_of(
    rec: &AgentRecord,
    offset: Option<u64>,
    limit: Option<u64>,
    raw: bool,
) -> Result<LogChunk> {
    log_range_at(&paths::log(&agents::state_dir(rec)), offset, limit, raw)
}

/// `log_range` of a log file by its path (an agent's, or a log a task kept).
pub fn log_range_at(path: &Path, offset: Option<u64>, limit: Option<u64>, raw: bool) -> Result<LogChunk> {
    let b = read_range_at(path, offset, limit, raw)?;
    Ok(LogChunk {
        offset: b.offset,
        next_offset: b.next_offset,
        size: b.size,
        data: String::from_utf8_lossy(&b.data).into_owned(),
        sizes: b.sizes,
        times: b.times,
    })
}

/// [`log_range`], the bytes as they are (what the CLI prints).
pub fn read_range(store: &Store, name: &str, offset: Option<u64>, raw: bool) -> Result<LogBytes> {
    read_range_at(&paths::log(&agents::state_dir(&agents::get(store, name)?)), offset, None, raw)
}

/// [`log_range_at`], the bytes as they are.
pub fn read_range_at(path: &Path, offset: Option<u64>, limit: Option<u64>, raw: bool) -> Result<LogBytes> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogBytes {
                offset: 0,
                next_offset: 0,
                size: 0,
                data: Vec::new(),
                sizes: Vec::new(),
                times: Vec::new(),
            })
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let size = file.metadata()?.len();
    let limit = limit.unwrap_or(MAX_LOG_CHUNK).min(MAX_LOG_CHUNK);
    let offset = match offset {
        // Without an offset: the last `limit` bytes, like `tail`.
        None => size.saturating_sub(limit),
        // Past the end: the log was rotated since; the new file is read from its start.
        Some(o) if o > size => 0,
        Some(o) => o,
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    let next_offset = offset + bytes.len() as u64;
    let data = if raw { bytes } else { plain(&bytes) };
    let times = marks_within(time_marks(path), offset, next_offset);
    Ok(LogBytes { offset, next_offset, size, data, sizes: size_marks(path), times })
}

/// The time marks the supervisor wrote next to the log file at `log`, in order (none for a log
/// from before them).
pub fn time_marks(log: &Path) -> Vec<TimeMark> {
    let text = std::fs::read_to_string(paths::log_times(log)).unwrap_or_default();
    let mut marks: Vec<TimeMark> = text
        .lines()
        .filter_map(|l| {
            let (offset, ms) = l.split_once(' ')?;
            Some(TimeMark { offset: offset.parse().ok()?, ms: ms.parse().ok()? })
        })
        .collect();
    marks.sort_by_key(|m| m.offset);
    marks
}

/// The marks that date the bytes `from..to`: the last one at or before `from`, and those after.
fn marks_within(marks: Vec<TimeMark>, from: u64, to: u64) -> Vec<TimeMark> {
    let first = marks.iter().rposition(|m| m.offset <= from).unwrap_or(0);
    marks.into_iter().skip(first).take_while(|m| m.offset <= to).collect()
}

/// Where the output written at or after `ms` (Unix milliseconds) starts in the log file at
/// `log`: the first mark that late, else the log's end (nothing was written since). A log
/// without marks starts at 0.
pub fn offset_at(log: &Path, ms: u64) -> u64 {
    let marks = time_marks(log);
    if marks.is_empty() {
        return 0;
    }
    match marks.iter().find(|m| m.ms >= ms) {
        Some(m) => m.offset,
        None => std::fs::metadata(log).map_or(0, |m| m.len()),
    }
}

/// [`offset_at`] for an agent's log.
pub fn agent_offset_at(store: &Store, name: &str, ms: u64) -> Result<u64> {
    Ok(offset_at(&paths::log(&agents::state_dir(&agents::get(store, name)?)), ms))
}

/// A log's bytes as lines, each with the time it began to be written (`logs --timestamps`).
/// Lines are what a line-oriented program wrote: escape sequences dropped, a carriage return
/// or backspace overwrites as on a terminal.
#[derive(Debug, Default)]
pub struct StampedLines {
    /// The bytes of a line not ended yet, and where in the log it began.
    partial: Vec<u8>,
    start: u64,
    /// The marks that can still date a line (the last one dates bytes until the next).
    marks: Vec<TimeMark>,
    /// Where the bytes fed so far end.
    pos: u64,
}

impl StampedLines {
    pub fn new() -> Self {
        Self::default()
    }

    fn stamp(&self, offset: u64) -> Option<u64> {
        self.marks.iter().rfind(|m| m.offset <= offset).or(self.marks.first()).map(|m| m.ms)
    }

    /// Feeds the raw bytes of a chunk read from `offset`, with its marks; returns the lines
    /// it ended, each with its time (None: the log has no marks).
    pub fn feed(&mut self, offset: u64, bytes: &[u8], times: &[TimeMark]) -> Vec<(Option<u64>, String)> {
        // The log was rotated: offsets start again, and so do the marks.
        if offset < self.pos {
            self.marks.clear();
        }
        self.pos = offset + bytes.len() as u64;
        for m in times {
            if self.marks.last().is_none_or(|l| l.offset < m.offset) {
                self.marks.push(*m);
            }
        }
        let mut out = Vec::new();
        let mut at = offset;
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.start = at;
            }
            self.partial.extend_from_slice(piece);
            at += piece.len() as u64;
            if piece.ends_with(b"\n") {
                out.push((self.stamp(self.start), line_text(&std::mem::take(&mut self.partial))));
            }
        }
        // Only the marks that can still date a line are kept.
        if let Some(keep) = self.marks.iter().rposition(|m| m.offset <= self.start.max(offset)) {
            self.marks.drain(..keep);
        }
        out
    }

    /// The last line, if the log does not end with a newline.
    pub fn finish(self) -> Option<(Option<u64>, String)> {
        (!self.partial.is_empty()).then(|| (self.stamp(self.start), line_text(&self.partial)))
    }
}

/// One line of terminal output as the terminal showed it: escape sequences dropped, `\r` back
/// to the start and `\b` back one column, overwriting.
fn line_text(bytes: &[u8]) -> String {
    let mut cells: Vec<char> = Vec::new();
    let mut col: usize = 0;
    // Escape sequences hold no `\r` or `\b`: each run between them is stripped on its own.
    for run in bytes.split_inclusive(|b| matches!(b, b'\r' | 0x08)) {
        let (text, control) = match run.split_last() {
            Some((c @ (b'\r' | 0x08), text)) => (text, Some(*c)),
            _ => (run, None),
        };
        for c in String::from_utf8_lossy(&strip_ansi_escapes::strip(text)).chars() {
            if c.is_control() && c != '\t' {
                continue;
            }
            match cells.get_mut(col) {
                Some(cell) => *cell = c,
                None => cells.push(c),
            }
            col += 1;
        }
        match control {
            Some(b'\r') => col = 0,
            Some(_) => col = col.saturating_sub(1),
            None => {}
        }
    }
    cells.into_iter().collect::<String>().trim_end().to_string()
}

/// An agent's output as the lines its screen showed, in order: the log replayed through a
/// terminal model, each line taken as it scrolls off the top, and the screen's last lines at the
/// end. Cursor movement and redraws are rendered, not stripped (a TUI's log reads as text).
pub struct Transcript {
    parser: vt100::Parser,
    /// Where the terminal changes size, ahead of `pos`, the log offset fed up to.
    marks: std::collections::VecDeque<SizeMark>,
    pos: u64,
    /// A line that wrapped at the screen's edge, waiting for its continuation: a long line is
    /// one line of the transcript, as it was one line of output.
    partial: String,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transcript")
    }
}

/// The size agents' terminals start with (the supervisor's), which their logs are drawn for.
pub const TERMINAL: (u16, u16) = (24, 80);

/// Output is fed in pieces this large, so that the lines one piece scrolls off fit the model's
/// scrollback before they are taken out.
const PIECE: usize = 16 << 10;

pub use crate::views::SizeMark;

/// The size marks the supervisor wrote next to the log file at `log`, in order. None (a log
/// from before marks, or whose marks could not be written) means the default size throughout.
pub fn size_marks(log: &Path) -> Vec<SizeMark> {
    let text = std::fs::read_to_string(paths::log_sizes(log)).unwrap_or_default();
    let mut marks: Vec<SizeMark> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ').map(str::parse::<u64>);
            let (offset, rows, cols) = (f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?);
            let size = |n: u64| u16::try_from(n).ok().filter(|n| *n > 0);
            Some(SizeMark { offset, rows: size(rows)?, cols: size(cols)? })
        })
        .collect();
    marks.sort_by_key(|m| m.offset);
    marks
}

/// The size the agent's terminal has now (the last size mark of its log at `log`).
pub fn terminal_size(log: &Path) -> (u16, u16) {
    size_marks(log).last().map_or(TERMINAL, |m| (m.rows, m.cols))
}

impl Transcript {
    pub fn new(rows: u16, cols: u16) -> Self {
        Self::replaying(rows, cols, &[], 0)
    }

    /// A transcript of a log read from `start`, at the sizes its `marks` give (else
    /// `rows` x `cols`).
    pub fn replaying(rows: u16, cols: u16, marks: &[SizeMark], start: u64) -> Self {
        let nz = |n: u16| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
        let (rows, cols) =
            marks.iter().rfind(|m| m.offset <= start).map_or((rows, cols), |m| (m.rows, m.cols));
        Self {
            parser: vt100::Parser::new(nz(rows), nz(cols), PIECE + 64),
            marks: marks.iter().filter(|m| m.offset > start).copied().collect(),
            pos: start,
            partial: String::new(),
        }
    }

    /// Says where in the log the next bytes fed start (a chunk's offset): a client that got the
    /// bytes as text (invalid UTF-8 replaced) keeps its place among the size marks.
    pub fn at(&mut self, offset: u64) {
        self.pos = offset;
    }

    /// Feeds output; returns the lines that scrolled off the screen meanwhile.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            // Up to the next size change, if it falls in these bytes.
            let until = self.marks.front().map_or(u64::MAX, |m| m.offset);
            let n = usize::try_from(until.saturating_sub(self.pos)).unwrap_or(usize::MAX).min(bytes.len());
            for piece in bytes[..n].chunks(PIECE) {
                self.parser.process(piece);
                self.take_scrolled(&mut out);
            }
            bytes = &bytes[n..];
            self.pos += n as u64;
            while let Some(m) = self.marks.front().copied().filter(|m| m.offset <= self.pos) {
                self.marks.pop_front();
                let nz = |n: u16| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
                self.parser.screen_mut().set_size(nz(m.rows), nz(m.cols));
            }
        }
        out
    }

    /// Takes the first `take` visible rows as lines, joining wrapped ones.
    fn take_rows(screen: &vt100::Screen, partial: &mut String, take: usize, out: &mut Vec<String>) {
        let cols = screen.size().1.get();
        for (i, text) in screen.rows(0, cols).take(take).enumerate() {
            let wrapped = u16::try_from(i).is_ok_and(|i| screen.row_wrapped(i));
            partial.push_str(if wrapped { &text } else { text.trim_end() });
            if !wrapped {
                out.push(std::mem::take(partial));
            }
        }
    }

    fn take_scrolled(&mut self, out: &mut Vec<String>) {
        let screen = self.parser.screen_mut();
        let rows = usize::from(screen.size().0.get());
        let mut left = screen.scrollback_len();
        while left > 0 {
            screen.set_scrollback(left);
            let take = left.min(rows);
            Self::take_rows(screen, &mut self.partial, take, out);
            left -= take;
        }
        screen.set_scrollback(0);
        screen.clear_scrollback();
    }

    /// The lines still on the screen, without the blank ones below the last text.
    pub fn finish(mut self) -> Vec<String> {
        let screen = self.parser.screen_mut();
        screen.set_scrollback(0);
        let mut lines = Vec::new();
        Self::take_rows(screen, &mut self.partial, usize::MAX, &mut lines);
        if !self.partial.is_empty() {
            lines.push(self.partial);
        }
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
}

/// `bytes` rendered as a transcript, one line per line.
pub fn render(bytes: &[u8]) -> Vec<u8> {
    render_with(Transcript::new(TERMINAL.0, TERMINAL.1), bytes)
}

/// A range of a log rendered as a transcript, each part at the size it was drawn for.
pub fn render_bytes(b: &LogBytes) -> Vec<u8> {
    render_with(Transcript::replaying(TERMINAL.0, TERMINAL.1, &b.sizes, b.offset), &b.data)
}

fn render_with(mut t: Transcript, bytes: &[u8]) -> Vec<u8> {
    let mut lines = t.feed(bytes);
    lines.extend(t.finish());
    let mut out = lines.join("\n").into_bytes();
    if !out.is_empty() {
        out.push(b'\n');
    }
    out
}

/// The last `lines` lines of the log as a transcript, rendered from as little of its end as
/// gives them (64 KiB, growing to at most the last 4 MiB).
pub fn render_tail_at(path: &Path, lines: usize) -> Result<Vec<u8>> {
    let mut window = 64 << 10;
    loop {
        let b = read_range_at(path, None, Some(window), true)?;
        let text = render_bytes(&b);
        let enough = text.iter().filter(|c| **c == b'\n').count() > lines;
        if enough || b.offset == 0 || window >= MAX_LOG_CHUNK {
            return Ok(tail_lines(&text, lines).to_vec());
        }
        window *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cursor movement is drawn, not dropped: a redrawn status line reads as its last state, and
    /// lines that scrolled off come first, in order.
    /// Output drawn after the terminal grew (someone attached from a larger one) is replayed
    /// at that size: a 100-column line stays one line, and a redraw at the new width reads as
    /// text. At the old size the same bytes wrap into each other.
    #[test]
    fn each_part_of_a_log_is_drawn_at_the_size_it_had() {
        let before = b"small screen\r\n".to_vec();
        let mut after = b"\x1b[2J\x1b[H".to_vec();
        after.extend(format!("{}|\x1b[2;1H{}#", "a".repeat(99), "b".repeat(99)).as_bytes());
        let bytes = [before.clone(), after].concat();
        let marks = [
            SizeMark { offset: 0, rows: 24, cols: 80 },
            SizeMark { offset: before.len() as u64, rows: 30, cols: 100 },
        ];
        let b = LogBytes {
            offset: 0,
            next_offset: 0,
            size: 0,
            data: bytes.clone(),
            sizes: marks.to_vec(),
            times: Vec::new(),
        };
        let text = String::from_utf8(render_bytes(&b)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, [format!("{}|", "a".repeat(99)), format!("{}#", "b".repeat(99))], "{text}");
        let flat = String::from_utf8(render(&bytes)).unwrap();
        assert_ne!(flat, text);
        // A range read from past the mark starts at the size the mark gave.
        let tail = LogBytes { offset: before.len() as u64, data: bytes[before.len()..].to_vec(), ..b };
        assert_eq!(String::from_utf8(render_bytes(&tail)).unwrap(), text);
    }

    #[test]
    fn transcripts_render_what_the_screen_showed() {
        let out = render(b"Welcome\x1b[1Cto\x1b[1CClaude\r\nstatus: 1%\rstatus: 99%\r\n\x1b[2Aline A\r\n");
        assert_eq!(String::from_utf8(out).unwrap(), "line Ae to Claude\nstatus: 99%\n");
        let long = "x".repeat(200);
        let text = String::from_utf8(render(format!("{long}\r\nend\r\n").as_bytes())).unwrap();
        assert_eq!(text, format!("{long}\nend\n"), "a wrapped line is one line");
        let many: Vec<u8> = (0..100).flat_map(|i| format!("n{i}\r\n").into_bytes()).collect();
        let text = String::from_utf8(render(&many)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        assert_eq!((lines[0], lines[99]), ("n0", "n99"));
    }

    /// Each line carries the time of the mark before its first byte; a progress line redrawn
    /// with `\r` reads as its last state; a line split across chunks is one line.
    #[test]
    fn stamped_lines_take_the_time_their_first_byte_was_written() {
        let mark = |offset, ms| TimeMark { offset, ms };
        let mut s = StampedLines::new();
        let lines = s.feed(0, b"one\r\nprogress 1%\rprogress 99%\r\nhal", &[mark(0, 1000), mark(5, 2000)]);
        assert_eq!(lines, [(Some(1000), "one".into()), (Some(2000), "progress 99%".into())]);
        let lines = s.feed(34, b"f\x1b[1mbold\x1b[0m\nlast", &[mark(30, 2000), mark(40, 3000)]);
        assert_eq!(lines, [(Some(2000), "halfbold".into())]);
        assert_eq!(s.finish(), Some((Some(3000), "last".into())));
        assert_eq!(line_text(b"abc\x08\x08X\r\n"), "aXc");
        // Rotated: the new file's offsets start at 0 with marks of their own.
        let mut s = StampedLines::new();
        s.feed(0, b"old\n", &[mark(0, 1000)]);
        assert_eq!(s.feed(0, b"new\n", &[mark(0, 9000)]), [(Some(9000), "new".into())]);
        // A log without marks: lines without times.
        let mut s = StampedLines::new();
        assert_eq!(s.feed(0, b"x\n", &[]), [(None, "x".into())]);
    }

    #[test]
    fn the_offset_of_a_time_is_the_first_mark_that_late() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        assert_eq!(offset_at(&log, 5), 0, "no log, no marks");
        std::fs::write(&log, b"0123456789").unwrap();
        std::fs::write(paths::log_times(&log), "0 1000\n4 2000\n8 3000\n").unwrap();
        assert_eq!(offset_at(&log, 0), 0);
        assert_eq!(offset_at(&log, 1500), 4);
        assert_eq!(offset_at(&log, 3000), 8);
        assert_eq!(offset_at(&log, 3001), 10, "nothing since: the end");
        let b = read_range_at(&log, Some(5), Some(2), true).unwrap();
        assert_eq!(b.times, [TimeMark { offset: 4, ms: 2000 }], "the mark before the range dates it");
    }

    #[test]
    fn plain_text_and_tail() {
        assert_eq!(plain(b"\x1b[1;31mred\x1b[0m\r\nnext\r\n"), b"red\nnext\n");
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }
}
