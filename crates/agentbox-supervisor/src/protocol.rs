//! The attach protocol spoken over an agent's Unix socket.
//!
//! Every message is a frame: one kind byte, a 4-byte big-endian length, the payload. A client
//! either sends one request and reads one reply (`Screen`, `Input`, `Kill`), or says `Attach` /
//! `Observe` and then receives the current screen followed by live `Output`, until `Exit`.

use std::io::{self, Read, Write};

/// Frames larger than this are refused (a malformed or hostile peer cannot make us allocate more).
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client: stream output and accept input/resize from me.
    Attach,
    /// Client: stream output, never take input (`attach --read-only`).
    Observe,
    /// Client: bytes to type into the agent's terminal.
    Input(Vec<u8>),
    /// Client: the terminal size changed.
    Resize { rows: u16, cols: u16 },
    /// Client: send the current screen, as plain text or with escape codes.
    ScreenRequest { formatted: bool },
    /// Client: kill the sandbox.
    Kill,
    /// Client: ask the agent to end (SIGTERM to its command's process group).
    Terminate,
    /// Client: let the agent's proxy reach a host (a host rule), for one connection or from now on.
    Allow { rule: String, once: bool },
    /// Client: take a host rule off the agent's proxy allowlist (new connections are refused).
    Revoke { rule: String },
    /// Client: send me the sandbox's handles (to join it, `agentbox exec`).
    HandlesRequest,
    /// Client: pause the agent once it has been idle this many milliseconds (0: never).
    PauseAfter(u64),
    /// Supervisor: the sandbox's handles travel with this frame as SCM_RIGHTS descriptors.
    Handles,
    /// Supervisor: terminal output.
    Output(Vec<u8>),
    /// Supervisor: a screen snapshot.
    Screen(String),
    /// Supervisor: the agent ended with this exit status.
    Exit(i32),
    /// Supervisor: request done.
    Ack,
    /// Supervisor: the request was refused.
    Error(String),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Self::Attach => b'a',
            Self::Observe => b'o',
            Self::Input(_) => b'i',
            Self::Resize { .. } => b'r',
            Self::ScreenRequest { .. } => b's',
            Self::Kill => b'k',
            Self::Terminate => b't',
            Self::HandlesRequest => b'h',
            Self::Allow { .. } => b'w',
            Self::Revoke { .. } => b'v',
            Self::PauseAfter(_) => b'p',
            Self::Handles => b'H',
            Self::Output(_) => b'O',
            Self::Screen(_) => b'S',
            Self::Exit(_) => b'X',
            Self::Ack => b'A',
            Self::Error(_) => b'E',
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Self::Attach
            | Self::Observe
            | Self::Kill
            | Self::Terminate
            | Self::Ack
            | Self::HandlesRequest
            | Self::Handles => {
                vec![]
            }
            Self::Input(b) | Self::Output(b) => b.clone(),
            Self::Resize { rows, cols } => [rows.to_be_bytes(), cols.to_be_bytes()].concat(),
            Self::ScreenRequest { formatted } => vec![u8::from(*formatted)],
            Self::Screen(s) | Self::Error(s) | Self::Revoke { rule: s } => s.as_bytes().to_vec(),
            Self::Exit(code) => code.to_be_bytes().to_vec(),
            Self::PauseAfter(ms) => ms.to_be_bytes().to_vec(),
            Self::Allow { rule, once } => [&[u8::from(*once)], rule.as_bytes()].concat(),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(kind: u8, p: Vec<u8>) -> io::Result<Self> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("malformed frame of kind {kind:#x}"));
        let text = |p: Vec<u8>| String::from_utf8(p).map_err(|_| bad());
        Ok(match kind {
            // Frames without a payload must not carry one.
            b'a' if p.is_empty() => Self::Attach,
            b'o' if p.is_empty() => Self::Observe,
            b'k' if p.is_empty() => Self::Kill,
            b't' if p.is_empty() => Self::Terminate,
            b'h' if p.is_empty() => Self::HandlesRequest,
            b'H' if p.is_empty() => Self::Handles,
            b'A' if p.is_empty() => Self::Ack,
            b'i' => Self::Input(p),
            b'O' => Self::Output(p),
            b'r' if p.len() == 4 => Self::Resize {
                rows: u16::from_be_bytes([p[0], p[1]]),
                cols: u16::from_be_bytes([p[2], p[3]]),
            },
            b's' if p.len() == 1 && p[0] <= 1 => Self::ScreenRequest { formatted: p[0] == 1 },
            b'S' => Self::Screen(text(p)?),
            b'E' => Self::Error(text(p)?),
            b'w' if p.len() > 1 && p[0] <= 1 => Self::Allow { once: p[0] == 1, rule: text(p[1..].to_vec())? },
            b'v' if !p.is_empty() => Self::Revoke { rule: text(p)? },
            b'p' => Self::PauseAfter(u64::from_be_bytes(p.try_into().map_err(|_| bad())?)),
            b'X' if p.len() == 4 => Self::Exit(i32::from_be_bytes([p[0], p[1], p[2], p[3]])),
            _ => return Err(bad()),
        })
    }
}

/// Incremental decoder for non-blocking readers.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds {MAX_FRAME}"),
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Frame::decode(kind, payload).map(Some)
    }
}

pub fn write_frame(w: &mut impl Write, f: &Frame) -> io::Result<()> {
    w.write_all(&f.encode())?;
    w.flush()
}

/// Reads one frame; `None` at end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Frame::decode(head[0], payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frames = [
            Frame::Attach,
            Frame::Observe,
            Frame::Input(b"ls\r".to_vec()),
            Frame::Resize { rows: 40, cols: 120 },
            Frame::ScreenRequest { formatted: true },
            Frame::Kill,
            Frame::Terminate,
            Frame::Revoke { rule: "*.example.com".into() },
            Frame::Allow { rule: "*.example.com".into(), once: true },
            Frame::HandlesRequest,
            Frame::PauseAfter(90_000),
            Frame::Handles,
            Frame::Output(vec![0, 1, 255]),
            Frame::Screen("hello\n".into()),
            Frame::Exit(-1),
            Frame::Ack,
            Frame::Error("no".into()),
        ];
        let mut dec = Decoder::default();
        let mut all = Vec::new();
        for f in &frames {
            all.extend(f.encode());
        }
        // Byte by byte: frames split anywhere must still decode.
        let mut got = Vec::new();
        for b in all {
            dec.push(&[b]);
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    /// Random bytes, including valid headers with random payloads, never panic the decoder, and
    /// everything it returns re-encodes to the bytes it consumed.
    #[test]
    fn fuzz_decoder() {
        let mut rng = agentbox_core::testing::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let kinds = b"aoirskhpHOSXAEz\0";
        for _ in 0..20_000 {
            let mut bytes = Vec::new();
            for _ in 0..rng.below(4) {
                let len = rng.below(12) as u32;
                let claimed = if rng.below(8) == 0 { rng.next_u64() as u32 } else { len };
                bytes.push(rng.pick(kinds));
                bytes.extend_from_slice(&claimed.to_be_bytes());
                bytes.extend((0..len).map(|_| rng.next_u64() as u8));
            }
            let mut dec = Decoder::default();
            dec.push(&bytes);
            let mut consumed = 0;
            while let Ok(Some(f)) = dec.next_frame() {
                let enc = f.encode();
                assert_eq!(&bytes[consumed..consumed + enc.len()], &enc[..], "{f:?}");
                consumed += enc.len();
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut dec = Decoder::default();
        dec.push(&[b'z', 0, 0, 0, 0]);
        assert!(dec.next_frame().is_err());
        let mut dec = Decoder::default();
        dec.push(&[b'i', 0xff, 0xff, 0xff, 0xff]);
        assert!(dec.next_frame().is_err());
        let mut dec = Decoder::default();
        dec.push(&[b'r', 0, 0, 0, 1, 7]);
        assert!(dec.next_frame().is_err());
        // A payload on a frame that has none (found by fuzz_decoder).
        let mut dec = Decoder::default();
        dec.push(&[b'k', 0, 0, 0, 1, 7]);
        assert!(dec.next_frame().is_err());
    }
}
