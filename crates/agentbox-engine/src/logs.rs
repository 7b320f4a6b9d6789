//! Reading agents' output logs: byte ranges (the API, `logs -f`, task logs), plain text, tails.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use agentbox_store::{AgentRecord, Store};
use agentbox_supervisor::paths;

use crate::agents;
use crate::error::{Context, Result};
use crate::views::{LogBytes, LogChunk};

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
            return Ok(LogBytes { offset: 0, next_offset: 0, size: 0, data: Vec::new() })
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
    Ok(LogBytes { offset, next_offset, size, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_tail() {
        assert_eq!(plain(b"\x1b[1;31mred\x1b[0m\r\nnext\r\n"), b"red\nnext\n");
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }
}
