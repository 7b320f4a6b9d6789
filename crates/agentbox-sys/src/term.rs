//! The person's terminal while a sandbox's output is shown on it.

use std::io::Write;
use std::os::fd::{BorrowedFd, OwnedFd};

use agentbox_core::termfilter::{FilterOptions, TermFilter};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// Raw mode on a terminal, undone when dropped (also when the code that set it returns early with
/// an error or panics). It holds a duplicate of the descriptor: terminal settings belong to the
/// terminal, not to one descriptor of it.
#[derive(Debug)]
pub struct RawTerminal {
    fd: OwnedFd,
    saved: Termios,
}

impl RawTerminal {
    /// Puts `fd` in raw mode; `None` if it is not a terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> Option<Self> {
        let saved = tcgetattr(fd).ok()?;
        let fd = fd.try_clone_to_owned().ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&fd, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.fd, SetArg::TCSAFLUSH, &self.saved);
    }
}

/// The person's choice about clipboard writes (`AGENTBOX_CLIPBOARD=write`).
pub fn filter_options() -> FilterOptions {
    FilterOptions::from_env_value(std::env::var("AGENTBOX_CLIPBOARD").ok().as_deref())
}

/// A sandbox's output on its way to `out`: when `out` is a terminal, filtered
/// ([`TermFilter`]: no clipboard access, file transfers or answered queries), and the modes the
/// sandbox set are undone when this is dropped (detach, exit, error).
#[derive(Debug)]
pub struct SandboxOutput<W: Write> {
    out: W,
    filter: Option<TermFilter>,
    scratch: Vec<u8>,
}

impl<W: Write> SandboxOutput<W> {
    /// `is_terminal`: whether `out` is a terminal (only then is anything filtered or restored).
    pub fn new(out: W, is_terminal: bool) -> Self {
        Self { out, filter: is_terminal.then(|| TermFilter::new(filter_options())), scratch: Vec::new() }
    }

    /// Writes (and flushes) a chunk of the sandbox's output.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.filter {
            Some(f) => {
                self.scratch.clear();
                f.feed(data, &mut self.scratch);
                self.out.write_all(&self.scratch)?;
            }
            None => self.out.write_all(data)?,
        }
        self.out.flush()
    }

    /// Writes text of agentbox's own (a status line), not the sandbox's.
    pub fn note(&mut self, text: &str) -> std::io::Result<()> {
        self.restore();
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    /// Undoes what the sandbox did to the terminal so far.
    pub fn restore(&mut self) {
        if let Some(f) = &mut self.filter {
            let _ = self.out.write_all(&f.restore());
            let _ = self.out.flush();
        }
    }
}

impl<W: Write> Drop for SandboxOutput<W> {
    fn drop(&mut self) {
        self.restore();
    }
}
