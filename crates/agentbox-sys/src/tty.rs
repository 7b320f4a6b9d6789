use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Reads the window size of the terminal behind `fd`.
pub fn get_winsize(fd: BorrowedFd<'_>) -> nix::Result<WinSize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; `fd` is a live descriptor.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })?;
    Ok(WinSize { rows: ws.ws_row, cols: ws.ws_col })
}

/// Sets the window size of the terminal behind `fd` (the kernel sends SIGWINCH to its foreground
/// process group).
pub fn set_winsize(fd: BorrowedFd<'_>, size: WinSize) -> nix::Result<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ only reads the winsize we pass; `fd` is a live descriptor.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// Makes the terminal behind `fd` the controlling terminal of the calling session leader.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and touches no user memory.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) }).map(drop)
}

/// Makes `cmd` start in a new session; with `controlling_tty`, its stdin (a terminal) becomes the
/// session's controlling terminal, as a login or `ssh -t` gives one.
pub fn new_session_on_spawn(cmd: &mut std::process::Command, controlling_tty: bool) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only setsid(2) and
    // ioctl(2), both async-signal-safe; it allocates nothing and touches no shared state.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
