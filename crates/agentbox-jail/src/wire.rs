//! The one-way report from the sandbox child to the launcher.
//!
//! The child writes at most one record into a close-on-exec pipe: the step that failed and why.
//! A successful `execve` closes the pipe with nothing written, so end-of-file with no data means
//! "the command is running". The record is `step \0 errno \0 message`.

use std::io::Read;
use std::os::fd::OwnedFd;

use nix::errno::Errno;

/// A failure inside the sandbox child before the command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFailure {
    pub step: String,
    pub errno: i32,
    pub message: String,
}

/// Step name used when `execve` of the command itself fails.
pub const EXEC_STEP: &str = "exec";

pub fn encode(f: &ChildFailure) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.step.len() + f.message.len() + 16);
    out.extend_from_slice(f.step.as_bytes());
    out.push(0);
    out.extend_from_slice(f.errno.to_string().as_bytes());
    out.push(0);
    out.extend_from_slice(f.message.as_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Option<ChildFailure> {
    let mut parts = bytes.splitn(3, |b| *b == 0);
    let step = String::from_utf8_lossy(parts.next()?).into_owned();
    let errno = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let message = String::from_utf8_lossy(parts.next()?).into_owned();
    Some(ChildFailure { step, errno, message })
}

/// Writes a failure record (best effort: if the launcher is gone there is nobody to tell).
pub fn report(pipe: &OwnedFd, step: &str, errno: Errno, message: &str) {
    let mut record =
        encode(&ChildFailure { step: step.into(), errno: errno as i32, message: message.into() });
    // One write of at most PIPE_BUF bytes is atomic, so the launcher never sees half a record.
    record.truncate(libc::PIPE_BUF);
    let _ = nix::unistd::write(pipe, &record);
}

/// Reads the pipe to end-of-file: `None` if the child exec'd the command, else its failure.
pub fn read_outcome(pipe: OwnedFd) -> std::io::Result<Option<ChildFailure>> {
    let mut buf = Vec::new();
    std::fs::File::from(pipe).read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    Ok(Some(decode(&buf).unwrap_or(ChildFailure {
        step: "setup".into(),
        errno: 0,
        message: String::from_utf8_lossy(&buf).into_owned(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_decode() {
        let mut rng = agentbox_core::testing::XorShift::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let len = rng.below(40);
            // Biased toward separators and digits, the interesting bytes.
            let bytes: Vec<u8> = (0..len).map(|_| rng.pick(b"\x001-x\xff")).collect();
            if let Some(f) = decode(&bytes) {
                assert_eq!(decode(&encode(&f)), Some(f));
            }
        }
    }

    #[test]
    fn round_trip() {
        let f = ChildFailure { step: "mount /usr".into(), errno: 13, message: "Permission denied".into() };
        assert_eq!(decode(&encode(&f)), Some(f));
        assert_eq!(decode(b"garbage"), None);
    }
}
