//! The channel protocol between the host side (`agentbox __vmm`) and the guest agent, carried by
//! one virtio-serial port; `agentbox exec` clients speak the same frames to the host side.
//!
//! A frame is `kind: u8, session: u32 LE, length: u32 LE, payload`. Session 0 is the agent; each
//! `exec` gets its own. Payloads are raw bytes for terminal data and JSON for the rest. Either end
//! may be hostile to the other's parser (the guest runs the agent as root), so lengths are bounded
//! and every decode error ends the connection instead of panicking.

use std::os::fd::{AsFd, BorrowedFd};

use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::{GuestSetup, ProcSpec};

/// Largest payload either side accepts.
pub const MAX_PAYLOAD: usize = 1 << 20;
const HEADER: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Guest: the agent runs and reads the channel.
    Hello,
    /// Host: what to mount and configure.
    Setup(Box<GuestSetup>),
    /// Guest: set up; processes may start.
    Ready,
    /// Guest: setup failed, with why; the guest powers off.
    SetupFailed(String),
    /// Host: start a process as `session`.
    Start(u32, Box<ProcSpec>),
    /// Host: bytes for a session's stdin or terminal.
    Input(u32, Vec<u8>),
    /// Host: the session's stdin ended.
    InputEnd(u32),
    Resize {
        session: u32,
        rows: u16,
        cols: u16,
    },
    Signal {
        session: u32,
        signal: i32,
    },
    /// Guest: bytes a session wrote (`stream` 1 is stdout or the terminal, 2 is stderr).
    Output {
        session: u32,
        stream: u8,
        data: Vec<u8>,
    },
    /// Guest: a session's process ended with `code`, or was killed by `signal` (then nonzero).
    Exited {
        session: u32,
        code: i32,
        signal: i32,
    },
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const SETUP: u8 = 2;
    pub const READY: u8 = 3;
    pub const SETUP_FAILED: u8 = 4;
    pub const START: u8 = 5;
    pub const INPUT: u8 = 6;
    pub const INPUT_END: u8 = 7;
    pub const RESIZE: u8 = 8;
    pub const SIGNAL: u8 = 9;
    pub const STDOUT: u8 = 10;
    pub const STDERR: u8 = 11;
    pub const EXITED: u8 = 12;
}

fn header(out: &mut Vec<u8>, kind: u8, session: u32, len: usize) {
    out.push(kind);
    out.extend_from_slice(&session.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Frame {
    /// Appends the encoded frame to `out`. Data longer than [`MAX_PAYLOAD`] is split.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (k, session, payload): (u8, u32, Vec<u8>) = match self {
            Self::Hello => (kind::HELLO, 0, Vec::new()),
            Self::Setup(s) => (kind::SETUP, 0, json(s)),
            Self::Ready => (kind::READY, 0, Vec::new()),
            Self::SetupFailed(m) => (kind::SETUP_FAILED, 0, m.as_bytes().to_vec()),
            Self::Start(id, p) => (kind::START, *id, json(p)),
            Self::Input(id, d) => {
                for chunk in d.chunks(MAX_PAYLOAD) {
                    header(out, kind::INPUT, *id, chunk.len());
                    out.extend_from_slice(chunk);
                }
                return;
            }
            Self::InputEnd(id) => (kind::INPUT_END, *id, Vec::new()),
            Self::Resize { session, rows, cols } => {
                let mut p = rows.to_le_bytes().to_vec();
                p.extend_from_slice(&cols.to_le_bytes());
                (kind::RESIZE, *session, p)
            }
            Self::Signal { session, signal } => (kind::SIGNAL, *session, signal.to_le_bytes().to_vec()),
            Self::Output { session, stream, data } => {
                let k = if *stream == 2 { kind::STDERR } else { kind::STDOUT };
                for chunk in data.chunks(MAX_PAYLOAD) {
                    header(out, k, *session, chunk.len());
                    out.extend_from_slice(chunk);
                }
                return;
            }
            Self::Exited { session, code, signal } => {
                let mut p = code.to_le_bytes().to_vec();
                p.extend_from_slice(&signal.to_le_bytes());
                (kind::EXITED, *session, p)
            }
        };
        header(out, k, session, payload.len());
        out.extend_from_slice(&payload);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    fn decode(k: u8, session: u32, p: &[u8]) -> Result<Self, String> {
        let int = |b: &[u8]| -> Result<i32, String> {
            b.try_into().map(i32::from_le_bytes).map_err(|_| "short integer".to_string())
        };
        Ok(match k {
            kind::HELLO => Self::Hello,
            kind::SETUP => Self::Setup(Box::new(serde_json::from_slice(p).map_err(|e| e.to_string())?)),
            kind::READY => Self::Ready,
            kind::SETUP_FAILED => Self::SetupFailed(String::from_utf8_lossy(p).into_owned()),
            kind::START => {
                Self::Start(session, Box::new(serde_json::from_slice(p).map_err(|e| e.to_string())?))
            }
            kind::INPUT => Self::Input(session, p.to_vec()),
            kind::INPUT_END => Self::InputEnd(session),
            kind::RESIZE if p.len() == 4 => Self::Resize {
                session,
                rows: u16::from_le_bytes([p[0], p[1]]),
                cols: u16::from_le_bytes([p[2], p[3]]),
            },
            kind::SIGNAL => Self::Signal { session, signal: int(p)? },
            kind::STDOUT | kind::STDERR => {
                Self::Output { session, stream: if k == kind::STDERR { 2 } else { 1 }, data: p.to_vec() }
            }
            kind::EXITED if p.len() == 8 => {
                Self::Exited { session, code: int(&p[..4])?, signal: int(&p[4..])? }
            }
            other => return Err(format!("unknown or malformed frame kind {other}")),
        })
    }
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let k = self.buf[0];
        let session = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = u32::from_le_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("frame of {len} bytes exceeds the limit of {MAX_PAYLOAD}"));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let frame = Frame::decode(k, session, &self.buf[HEADER..HEADER + len]);
        self.buf.drain(..HEADER + len);
        frame.map(Some)
    }
}

/// A nonblocking byte stream with a frame decoder and an output queue: neither end ever blocks on
/// the other, so a guest that stops reading cannot stall the host's loop (or the reverse).
#[derive(Debug)]
pub struct Conn<F> {
    pub fd: F,
    decoder: Decoder,
    out: Vec<u8>,
    sent: usize,
}

/// What a read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Data,
    WouldBlock,
    Closed,
}

impl<F: AsFd> Conn<F> {
    pub fn new(fd: F) -> Self {
        Self { fd, decoder: Decoder::default(), out: Vec::new(), sent: 0 }
    }

    /// The descriptor itself (to hand it to another program).
    pub fn inner(&self) -> &F {
        &self.fd
    }

    pub fn send(&mut self, frame: &Frame) {
        frame.encode_into(&mut self.out);
    }

    /// Drops whatever is queued (the peer is gone).
    pub fn discard(&mut self) {
        self.out.clear();
        self.sent = 0;
    }

    /// What to poll the descriptor for: input always, output while some is queued.
    pub fn interest(&self) -> PollFlags {
        if self.pending() > 0 {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        }
    }

    /// Writes everything queued, waiting for the peer until `deadline`. `Ok(false)`: the deadline
    /// passed with bytes still queued; `Err`: the peer is gone.
    pub fn flush_until(&mut self, deadline: Instant) -> nix::Result<bool> {
        loop {
            self.flush()?;
            if self.pending() == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
            let _ = poll(&mut fds, PollTimeout::from(100u16));
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes what the descriptor takes now. `Err` means the peer is gone.
    pub fn flush(&mut self) -> nix::Result<()> {
        while self.sent < self.out.len() {
            match nix::unistd::write(self.fd.as_fd(), &self.out[self.sent..]) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => self.sent += n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > (1 << 20) {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Reads what is available into the decoder.
    pub fn read(&mut self) -> ReadOutcome {
        let mut buf = [0u8; 65536];
        loop {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    self.decoder.push(&buf[..n]);
                    return ReadOutcome::Data;
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return ReadOutcome::WouldBlock,
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        self.decoder.next_frame()
    }

    pub fn raw_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Sets O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: impl AsFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn all() -> Vec<Frame> {
        vec![
            Frame::Hello,
            Frame::Ready,
            Frame::SetupFailed("no 9p".into()),
            Frame::Start(
                3,
                Box::new(ProcSpec {
                    argv: vec!["sh".into(), "-c".into()],
                    env: vec![("A".into(), "b".into())],
                    cwd: PathBuf::from("/w"),
                    uid: 1000,
                    gid: 1000,
                    tty: true,
                    rows: 24,
                    cols: 80,
                }),
            ),
            Frame::Input(0, b"ls\r".to_vec()),
            Frame::InputEnd(2),
            Frame::Resize { session: 0, rows: 50, cols: 132 },
            Frame::Signal { session: 4, signal: 15 },
            Frame::Output { session: 1, stream: 2, data: vec![0, 255, 10] },
            Frame::Exited { session: 0, code: 0, signal: 9 },
        ]
    }

    #[test]
    fn round_trips_byte_by_byte() {
        let mut bytes = Vec::new();
        for f in all() {
            f.encode_into(&mut bytes);
        }
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all());
    }

    #[test]
    fn large_data_is_split_and_oversized_frames_refused() {
        let data = vec![7u8; MAX_PAYLOAD + 10];
        let mut d = Decoder::default();
        d.push(&Frame::Input(1, data.clone()).encode());
        let mut joined = Vec::new();
        while let Some(Frame::Input(1, part)) = d.next_frame().unwrap() {
            joined.extend(part);
        }
        assert_eq!(joined, data);
        let mut bad = vec![kind::INPUT, 0, 0, 0, 0];
        bad.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        d.push(&bad);
        assert!(d.next_frame().unwrap_err().contains("exceeds"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut d = Decoder::default();
            let len = (seed % 40) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            // Keep lengths small so the decoder reaches the payload parsers.
            if bytes.len() >= HEADER {
                let len = (bytes.len() - HEADER) as u32;
                bytes[5..9].copy_from_slice(&len.to_le_bytes());
            }
            d.push(&bytes);
            let _ = d.next_frame();
        }
    }
}
