//! Process descriptors (pidfd_open(2), pidfd_send_signal(2)): a signal sent through one reaches
//! the process it was opened on or none, never another that got its pid since.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

/// A descriptor of one process.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens the process that has `pid` now.
    pub fn open(pid: i32) -> nix::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it reads
        // or writes no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
        let fd = nix::errno::Errno::result(fd)?;
        let fd = i32::try_from(fd).map_err(|_| nix::errno::Errno::EBADF)?;
        // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `signal` to the process (ESRCH once it has ended).
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        // SAFETY: the descriptor is ours and open; the siginfo pointer is null (the kernel fills
        // in a default one); no memory of ours is touched.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        nix::errno::Errno::result(rc).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_reach_the_process_opened_and_none_after_it_ended() {
        let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        let fd = PidFd::open(child.id() as i32).unwrap();
        fd.signal(Signal::SIGSTOP).unwrap();
        fd.signal(Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        assert_eq!(fd.signal(Signal::SIGCONT), Err(nix::errno::Errno::ESRCH));
    }
}
