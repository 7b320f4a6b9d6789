//! The guest kernel's random generator after a VM snapshot is restored, and the memory of the
//! QEMU that runs it.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Mixes `entropy` into the kernel's input pool (credited as `entropy.len() * 8` bits) and makes
/// the generator reseed from it now, through `/dev/urandom` opened as `urandom`.
///
/// Every VM restored from one snapshot starts with the same generator state; without a reseed
/// they would hand out the same "random" numbers (TLS keys, UUIDs) until the kernel's own
/// schedule reseeds them. Needs CAP_SYS_ADMIN (the guest agent is pid 1, root).
pub fn reseed_random(urandom: BorrowedFd<'_>, entropy: &[u8]) -> nix::Result<()> {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let words = entropy.len().div_ceil(4);
    let mut info: Vec<u32> = vec![0; 2 + words];
    info[0] = (entropy.len() * 8) as u32;
    info[1] = entropy.len() as u32;
    for (i, chunk) in entropy.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = u32::from_ne_bytes(w);
    }
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203; // _IOW('R', 0x03, int[2])
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207; // _IO('R', 0x07)
                                                 // SAFETY: `info` is a live, properly aligned buffer laid out as struct rand_pool_info, with
                                                 // `buf_size` bytes of payload after the two header words; the kernel only reads it.
    Errno::result(unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument and touches no memory of ours.
    Errno::result(unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG) }).map(drop)
}

/// Turns transparent huge pages off for this process and the programs it starts
/// (PR_SET_THP_DISABLE is inherited over fork and kept over execve).
///
/// QEMU asks for huge pages for guest memory; a restored snapshot writes scattered 4 KiB pages,
/// and each write would then fill a whole 2 MiB page: a restored VM took 150 MiB more.
pub fn disable_transparent_huge_pages() -> nix::Result<()> {
    // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) takes integers only and changes a flag of
    // this process.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) }).map(drop)
}

/// Takes ownership of descriptor `fd`, which this process was told (by the program that exec'd
/// it) is its own; `None` if no such descriptor is open.
pub fn inherited_fd(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    nix::fcntl::fcntl(
        // SAFETY: only borrowed for the F_GETFD check below, which reads no memory of ours.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .ok()?;
    // SAFETY: the descriptor is open (checked above) and was handed to this process across
    // execve for it alone to use; nothing else in this fresh process image refers to it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
