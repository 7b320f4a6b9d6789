//! `agentbox __vmexec`: the `exec` command's side inside QEMU's sandbox. `agentbox exec` joins
//! the sandbox and runs this, which asks the host side for a new session in the guest and relays
//! its own stdio, window size and signals to it.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::{ProcSpec, EXEC_SOCKET};
use crate::frame::{Conn, Frame, ReadOutcome};
use crate::host::{exit_like, VM_FAILED};

/// Runs `argv` in the guest; returns its exit status.
pub fn run_exec(argv: Vec<std::ffi::OsString>, tty: bool) -> i32 {
    match relay(argv, tty) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentbox: {e}");
            VM_FAILED
        }
    }
}

fn relay(argv: Vec<std::ffi::OsString>, tty: bool) -> Result<i32, String> {
    let stream = UnixStream::connect(EXEC_SOCKET)
        .map_err(|e| format!("the VM is not accepting commands yet ({e})"))?;
    let stdin = std::io::stdin();
    let tty = tty && nix::unistd::isatty(stdin.as_fd()).unwrap_or(false);
    let (rows, cols) = agentbox_sys::get_winsize(stdin.as_fd()).map(|w| (w.rows, w.cols)).unwrap_or((24, 80));
    let spec = ProcSpec {
        argv,
        env: std::env::vars().collect(),
        cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        tty,
        rows,
        cols,
    };
    let mut mask = SigSet::empty();
    for s in [Signal::SIGWINCH, Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| e.to_string())?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(|e| e.to_string())?;
    let mut conn = Conn::new(stream);
    conn.send(&Frame::Start(0, Box::new(spec)));
    conn.flush().map_err(|e| e.to_string())?;
    let raw = if tty { agentbox_sys::RawTerminal::enter(stdin.as_fd()) } else { None };
    let mut stdin_open = true;
    let result = loop {
        let mut fds = [
            PollFd::new(conn.raw_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdin.as_fd(), if stdin_open { PollFlags::POLLIN } else { PollFlags::empty() }),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => break Err(e.to_string()),
        }
        let ev: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
        // A pipe at end-of-file reports POLLHUP whatever was asked: only an open stdin is read.
        if stdin_open && ev[2].intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            let mut buf = [0u8; 16384];
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    conn.send(&Frame::InputEnd(0));
                }
                Ok(n) => conn.send(&Frame::Input(0, buf[..n].to_vec())),
            }
        }
        if ev[1].contains(PollFlags::POLLIN) {
            if let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == Signal::SIGWINCH as i32 {
                    if let Ok(w) = agentbox_sys::get_winsize(stdin.as_fd()) {
                        conn.send(&Frame::Resize { session: 0, rows: w.rows, cols: w.cols });
                    }
                } else {
                    conn.send(&Frame::Signal { session: 0, signal: sig });
                }
            }
        }
        let _ = conn.flush();
        let closed =
            ev[0].intersects(PollFlags::POLLIN | PollFlags::POLLHUP) && conn.read() == ReadOutcome::Closed;
        let mut done = None;
        while let Some(f) = conn.next_frame()? {
            match f {
                Frame::Output { stream, data, .. } => {
                    let _ = if stream == 2 {
                        std::io::stderr().write_all(&data)
                    } else {
                        std::io::stdout().write_all(&data).and_then(|_| std::io::stdout().flush())
                    };
                }
                Frame::Exited { code, signal, .. } => done = Some((code, signal)),
                _ => {}
            }
        }
        if let Some((code, signal)) = done {
            break Ok((code, signal));
        }
        if closed {
            break Err("the VM went away before the command ended".into());
        }
    };
    drop(raw);
    let (code, signal) = result?;
    Ok(exit_like(code, signal))
}
