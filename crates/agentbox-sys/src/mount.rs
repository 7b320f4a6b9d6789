use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Mount attributes for `mount_setattr(2)` (include/uapi/linux/mount.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountAttr(u64);

impl MountAttr {
    pub const RDONLY: Self = Self(0x1);
    pub const NOSUID: Self = Self(0x2);
    pub const NODEV: Self = Self(0x4);
    pub const NOEXEC: Self = Self(0x8);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

#[repr(C)]
struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets attributes on the mount that `fd` (an `O_PATH` descriptor of a mount's root) refers to,
/// and on every mount below it when `recursive`.
///
/// Unlike a `MS_REMOUNT|MS_BIND` remount, this only adds the given flags, so flags the kernel locks
/// in a user namespace (nosuid, noexec, atime) never need to be restated. Linux 5.12+.
pub fn mount_setattr(fd: BorrowedFd<'_>, recursive: bool, set: MountAttr) -> nix::Result<()> {
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = RawMountAttr { attr_set: set.0, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: the path is an empty NUL-terminated literal (AT_EMPTY_PATH: operate on `fd`), and
    // `attr` is a properly laid out struct whose size we pass; both outlive the call and the kernel
    // only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const RawMountAttr,
            size_of::<RawMountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}
