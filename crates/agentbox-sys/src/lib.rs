//! Safe wrappers over the Linux calls that `nix` does not cover safely.
//!
//! This is the only agentbox crate that may contain `unsafe`. Each wrapper is small, takes typed
//! arguments, and states in a `// SAFETY:` comment why the call cannot break Rust's invariants.
//! Everything here returns `nix::Result` so callers map each failure to their own error variant.
#![allow(unsafe_code)]

mod alloc;
mod cmdline;
mod entropy;
mod fork;
mod mount;
mod net;
mod pidfd;
pub mod probe;
mod signal;
mod term;
mod tty;

pub use alloc::LineAligned;
pub use cmdline::{cmdline_fits, set_cmdline};
pub use entropy::{disable_transparent_huge_pages, inherited_fd, reseed_random};
pub use fork::{clone_process, clone_process_into, fork_process, thread_count, Child, SingleThreaded};
pub use mount::{mount_setattr, MountAttr};
pub use net::{bring_loopback_up, configure_ipv4};
pub use pidfd::PidFd;
pub use signal::{default_disposition, default_disposition_all, ignore as ignore_signal};
pub use term::{filter_options, RawTerminal, SandboxOutput};
pub use tty::{get_winsize, new_session_on_spawn, set_controlling_tty, set_winsize, WinSize};

/// Marks every descriptor from `first` upwards close-on-exec (close_range(2), Linux 5.11+).
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags; it touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Clears close-on-exec on descriptor `fd` (after [`cloexec_from`] marked them all), so that the
/// program exec'd next inherits it: the one descriptor a sandbox's launcher hands its command.
pub fn keep_on_exec(fd: std::os::fd::RawFd) -> nix::Result<()> {
    // SAFETY: fcntl(F_SETFD) changes a descriptor flag and reads no memory; a descriptor that is
    // not open gives EBADF.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Closes every descriptor from `first` upwards (close_range(2)) but `keep`, in a process that
/// will not use any of the closed ones again. `_one` proves no other thread uses them.
pub fn close_from(_one: &SingleThreaded, first: u32, keep: Option<std::os::fd::RawFd>) -> nix::Result<()> {
    let close_range = |from: u32, to: u32| {
        // SAFETY: closing descriptors cannot violate memory safety; no other thread exists to use
        // one (`_one`), and the caller uses none of the closed ones again (it is a sandbox's init
        // about to wait for its command until it exits).
        let rc = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
        nix::errno::Errno::result(rc).map(drop)
    };
    match keep.and_then(|k| u32::try_from(k).ok()).filter(|&k| k >= first) {
        Some(k) => {
            if k > first {
                close_range(first, k - 1)?;
            }
            match k.checked_add(1) {
                Some(next) => close_range(next, libc::c_uint::MAX),
                None => Ok(()),
            }
        }
        None => close_range(first, libc::c_uint::MAX),
    }
}

/// The Landlock ABI version the running kernel offers, or the errno (ENOSYS, EOPNOTSUPP) saying
/// why there is none.
pub fn landlock_abi_version() -> nix::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the kernel reads no memory
    // and returns the ABI version instead of a descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    nix::errno::Errno::result(rc).map(|v| v as i32)
}

/// Takes ownership of a descriptor received through SCM_RIGHTS.
///
/// The kernel installs a received descriptor in our table and hands over its number; nothing else
/// owns it, so wrapping it is the only way it gets closed.
pub fn own_received_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was just installed by the kernel for this process by recvmsg and no other
    // object refers to it.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Ends the calling process at once: no destructors, no atexit handlers, no stdio flushing.
/// The right exit for a forked child, which must not flush buffers it shares with its parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns; skipping destructors is the intent.
    unsafe { libc::_exit(code) }
}

/// Replaces the calling process's command line as seen in /proc/PID/cmdline with `title`.
///
/// /proc/PID/cmdline is readable by every process that can see PID, dumpable or not. The
/// sandbox's init is a fork of the launcher, so without this its cmdline would show the
/// launcher's arguments (host paths) to the sandboxed command. The kernel reads cmdline from the
/// argument area of the process's memory (`arg_start`..`arg_end` in /proc/self/stat); this writes
/// `title` there through /proc/self/mem and zero-fills the rest. The process must not read its
/// own argv afterwards.
pub fn overwrite_cmdline(title: &[u8]) -> std::io::Result<()> {
    // arg_start and arg_end are fields 48 and 49 of /proc/self/stat.
    overwrite_area(48, title)
}

/// Zeroes this process's initial environment strings in place. A process cloned from a launcher
/// (the sandbox's init) carries a copy of the launcher's environment, which may hold the caller's
/// secrets; nothing reads them after the clone.
pub fn clear_environ_area() -> std::io::Result<()> {
    // env_start and env_end are fields 50 and 51 of /proc/self/stat.
    overwrite_area(50, b"")
}

/// Overwrites the memory between the addresses in /proc/self/stat fields `field` and `field + 1`
/// with `text`, then zeroes.
fn overwrite_area(field: usize, text: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // Fields after comm start at field 3.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let get = |n: usize| -> std::io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc/self/stat"))
    };
    let (start, end) = (get(field)?, get(field + 1)?);
    let len = end.saturating_sub(start) as usize;
    if len == 0 {
        return Ok(());
    }
    let mut area = vec![0u8; len];
    let n = text.len().min(len.saturating_sub(1));
    area[..n].copy_from_slice(&text[..n]);
    let mut mem = std::fs::OpenOptions::new().write(true).open("/proc/self/mem")?;
    mem.seek(SeekFrom::Start(start))?;
    mem.write_all(&area)
}

/// Drops every capability from the calling thread's bounding set: PR_CAPBSET_DROP for 0, 1, ...
/// until the kernel says the number is past its last capability (EINVAL).
pub fn drop_bounding_set() -> nix::Result<()> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        match nix::errno::Errno::result(rc) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINVAL) if cap > 0 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
