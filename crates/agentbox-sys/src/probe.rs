//! Calls into kernel interfaces that a sandbox must refuse, with harmless arguments.
//!
//! `agentbox doctor` and the attack suite use these to check that a call is refused inside a
//! sandbox; each returns `Ok` if the kernel accepted the call (and releases whatever it created).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

fn fd_result(rc: libc::c_long) -> nix::Result<()> {
    let fd = Errno::result(rc)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create=1).
pub fn keyctl_session_keyring() -> nix::Result<()> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: all arguments are integers; the kernel reads no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1) };
    Errno::result(rc).map(drop)
}

/// add_key("user", "agentbox-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING).
pub fn add_key_user() -> nix::Result<()> {
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    // SAFETY: the strings are NUL-terminated literals and the payload pointer/length pair is valid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"agentbox-probe".as_ptr(),
            c"x".as_ptr(),
            1usize,
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    Errno::result(rc).map(drop)
}

/// bpf(BPF_MAP_CREATE) of a one-element array map.
pub fn bpf_map_create() -> nix::Result<()> {
    // union bpf_attr for BPF_MAP_CREATE starts with map_type, key_size, value_size, max_entries.
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: `attr` is a zero-padded buffer at least as large as the size we pass; the kernel only
    // reads it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), size_of_val(&attr)) };
    fd_result(rc)
}

/// perf_event_open of a software CPU clock counter on the calling thread.
pub fn perf_event_open_sw() -> nix::Result<()> {
    // struct perf_event_attr: u32 type, u32 size, u64 config, ...; 128 bytes is PERF_ATTR_SIZE_VER7.
    let mut attr = [0u64; 16];
    attr[0] = 1 | (128u64 << 32); // type = PERF_TYPE_SOFTWARE, size = 128
    attr[1] = 0; // PERF_COUNT_SW_CPU_CLOCK
                 // SAFETY: `attr` is a zeroed 128-byte buffer matching the size field; the kernel only reads it.
    let rc = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
    fd_result(rc)
}

/// userfaultfd(O_CLOEXEC).
pub fn userfaultfd() -> nix::Result<()> {
    // SAFETY: integer flags only.
    fd_result(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) })
}

/// init_module with an empty image (the kernel checks CAP_SYS_MODULE first).
pub fn init_module_empty() -> nix::Result<()> {
    let image = [0u8; 16];
    // SAFETY: the image pointer/length pair and the parameter string are valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_init_module, image.as_ptr(), image.len(), c"".as_ptr()) };
    Errno::result(rc).map(drop)
}

/// kexec_load with no segments.
pub fn kexec_load_empty() -> nix::Result<()> {
    // SAFETY: zero segments and a null segment pointer; the kernel reads nothing.
    let rc = unsafe { libc::syscall(libc::SYS_kexec_load, 0usize, 0usize, std::ptr::null::<u8>(), 0usize) };
    Errno::result(rc).map(drop)
}

/// open_by_handle_at with an empty handle, the call behind the "shocker" container escape.
pub fn open_by_handle_at() -> nix::Result<()> {
    // struct file_handle { u32 handle_bytes; int handle_type; unsigned char f_handle[]; }
    let handle = [8u32, 1, 0, 0];
    // SAFETY: `handle` is a valid file_handle header followed by the 8 bytes it declares.
    let rc = unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, libc::AT_FDCWD, handle.as_ptr(), libc::O_RDONLY)
    };
    fd_result(rc)
}

/// io_uring_setup with one entry.
pub fn io_uring_setup() -> nix::Result<()> {
    let mut params = [0u32; 30]; // struct io_uring_params is 120 bytes
                                 // SAFETY: `params` is a zeroed buffer of the size of struct io_uring_params that the kernel may
                                 // write into; it lives until the call returns.
    fd_result(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) })
}

/// TIOCSTI: pushes `byte` into the input queue of the terminal behind `fd`.
pub fn tiocsti(fd: BorrowedFd<'_>, byte: u8) -> nix::Result<()> {
    // SAFETY: TIOCSTI reads one byte from the pointer, which points at a live local.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSTI, &byte as *const u8) }).map(drop)
}

/// TIOCSTI with bits set above the 32-bit command: the kernel ignores them, so a filter that
/// compares the full 64-bit value would miss this form.
pub fn tiocsti_high_bits(fd: BorrowedFd<'_>, byte: u8) -> nix::Result<()> {
    let cmd = (1u64 << 32) | libc::TIOCSTI;
    // SAFETY: as for `tiocsti`; the request value is passed through a raw syscall unchanged.
    let rc = unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), cmd, &byte as *const u8) };
    Errno::result(rc).map(drop)
}

/// TIOCLINUX subcode 6 (get shift state): harmless on a console, refused elsewhere.
pub fn tioclinux(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let mut arg = [6u8, 0];
    // SAFETY: TIOCLINUX reads the subcode byte and may write one byte back into `arg`.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCLINUX, arg.as_mut_ptr()) }).map(drop)
}

/// clone3 asking for a new user namespace. A child that is created exits at once.
pub fn clone3_newuser() -> nix::Result<()> {
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls
    let args: [u64; 8] = [libc::CLONE_NEWUSER as u64, 0, 0, 0, libc::SIGCHLD as u64, 0, 0, 0];
    // SAFETY: without CLONE_VM and with no stack this behaves like fork: the child runs on a copy
    // of our memory and immediately calls _exit, which is async-signal-safe.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), size_of_val(&args)) };
    match Errno::result(rc)? {
        // SAFETY: _exit in the child skips destructors and atexit handlers, as needed after fork.
        0 => unsafe { libc::_exit(0) },
        pid => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            Ok(())
        }
    }
}

/// Invokes syscall number `nr | 0x4000_0000` (the x32 ABI) with no arguments. Used to check that
/// the x32 syscall table cannot be used to step around a filter written for x86_64 numbers.
#[cfg(target_arch = "x86_64")]
pub fn x32_syscall(nr: libc::c_long) -> nix::Result<()> {
    // SAFETY: the probe is only called with numbers of calls that take no pointer arguments
    // (getpid in tests); the kernel reads no memory of ours.
    let rc = unsafe { libc::syscall(nr | 0x4000_0000) };
    Errno::result(rc).map(drop)
}

/// `fchmodat2(AT_FDCWD, path, mode, 0)` (Linux 6.6+; ENOSYS before).
pub fn fchmodat2(path: &std::path::Path, mode: u32) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the path is a NUL-terminated string that outlives the call; the kernel only reads it.
    Errno::result(unsafe { libc::syscall(libc::SYS_fchmodat2, libc::AT_FDCWD, c.as_ptr(), mode, 0) })
        .map(drop)
}
