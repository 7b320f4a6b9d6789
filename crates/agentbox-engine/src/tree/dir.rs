//! An open directory of an agent-written tree and the descriptor-relative steps on it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};

use super::TreeError;

/// What a name in a tree is, as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Sockets, FIFOs, device nodes: never read, copied or created.
    Other,
}

impl Kind {
    pub fn of(st: &FileStat) -> Self {
        let t = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if t == SFlag::S_IFREG {
            Self::File
        } else if t == SFlag::S_IFDIR {
            Self::Dir
        } else if t == SFlag::S_IFLNK {
            Self::Symlink
        } else {
            Self::Other
        }
    }
}

const DIR_FLAGS: OFlag =
    OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);
/// Regular files are opened non-blocking (a FIFO swapped in must not block the reader) and
/// without becoming a controlling terminal.
const FILE_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// Permission bits a created entry may have: never set-user-ID or set-group-ID.
pub(crate) const SAFE_MODE_BITS: u32 = 0o1777;

/// An open directory and the path it was reached by (for messages only: nothing is ever looked up
/// by that path again).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens a directory whose path agentbox chose (a state directory); its last component must
    /// not be a symlink.
    pub fn open(path: &Path) -> Result<Self, TreeError> {
        let fd = nix::fcntl::open(path, DIR_FLAGS, Mode::empty()).map_err(TreeError::io(path))?;
        Ok(Self { fd, path: path.to_path_buf() })
    }

    /// Creates the directory `path` (which must not exist yet, so nothing an agent made is reused)
    /// with mode 0700, and opens it.
    pub fn create(path: &Path) -> Result<Self, TreeError> {
        match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o700)) {
            Ok(()) => Self::open(path),
            Err(Errno::EEXIST) => Err(TreeError::Exists { path: path.to_path_buf() }),
            Err(e) => Err(TreeError::io(path)(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// The names in this directory, sorted (no `.` and `..`).
    pub fn names(&self) -> Result<Vec<OsString>, TreeError> {
        // A descriptor of its own: reading entries moves the file offset.
        let fd = openat(self.fd.as_fd(), ".", DIR_FLAGS, Mode::empty()).map_err(TreeError::io(&self.path))?;
        let mut d = nix::dir::Dir::from_fd(fd).map_err(TreeError::io(&self.path))?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(TreeError::io(&self.path))?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// `lstat` of a name in this directory; `None` if it has gone.
    pub fn stat(&self, name: &OsStr) -> Result<Option<FileStat>, TreeError> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(TreeError::io(self.child_path(name))(e)),
        }
    }

    /// Opens a subdirectory; `None` if the name is no longer a directory (it was swapped for a
    /// link or a file) or has gone.
    pub fn subdir(&self, name: &OsStr) -> Result<Option<Dir>, TreeError> {
        match openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir { fd, path: self.child_path(name) })),
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => Ok(None),
            Err(e) => Err(TreeError::io(self.child_path(name))(e)),
        }
    }

    /// Opens a regular file for reading; `None` if the name is no longer a regular file or has
    /// gone. The returned status is the opened file's own.
    pub fn open_file(&self, name: &OsStr) -> Result<Option<(File, FileStat)>, TreeError> {
        let fd = match openat(self.fd.as_fd(), name, FILE_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOENT | Errno::ENXIO | Errno::EISDIR) => return Ok(None),
            Err(e) => return Err(TreeError::io(self.child_path(name))(e)),
        };
        let st = fstat(fd.as_fd()).map_err(TreeError::io(self.child_path(name)))?;
        if Kind::of(&st) != Kind::File {
            return Ok(None);
        }
        Ok(Some((File::from(fd), st)))
    }

    /// The target of a symlink, as bytes (never followed).
    pub fn read_link(&self, name: &OsStr) -> Result<Option<OsString>, TreeError> {
        match nix::fcntl::readlinkat(self.fd.as_fd(), name) {
            Ok(t) => Ok(Some(t)),
            Err(Errno::EINVAL | Errno::ENOENT) => Ok(None),
            Err(e) => Err(TreeError::io(self.child_path(name))(e)),
        }
    }

    /// Creates a new directory here (mode 0700 until the caller sets the final mode).
    pub fn mkdir(&self, name: &OsStr) -> Result<Dir, TreeError> {
        match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Err(TreeError::Exists { path: self.child_path(name) }),
            Err(e) => return Err(TreeError::io(self.child_path(name))(e)),
        }
        self.subdir(name)?.ok_or_else(|| TreeError::io(self.child_path(name))(Errno::ENOTDIR))
    }

    /// Creates a new regular file here, never through a link and never over an existing name.
    pub fn create_file(&self, name: &OsStr) -> Result<File, TreeError> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::EEXIST) => Err(TreeError::Exists { path: self.child_path(name) }),
            Err(e) => Err(TreeError::io(self.child_path(name))(e)),
        }
    }

    /// Opens `rel` (a relative path, possibly of several components) beneath this directory with
    /// `openat2`: the kernel refuses `..` out of it, absolute paths, and any symlink on the way.
    /// `None` when it is missing, crosses a link, or is neither a file nor a directory.
    pub fn open_beneath(&self, rel: &Path) -> Result<Option<(OwnedFd, Kind)>, TreeError> {
        check_relative(rel)?;
        let how = OpenHow::new()
            .flags(
                OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            )
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let fd = match openat2(self.fd.as_fd(), rel, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP | Errno::EXDEV | Errno::ENXIO | Errno::ENOTDIR) => {
                return Ok(None)
            }
            Err(e) => return Err(TreeError::io(self.path.join(rel))(e)),
        };
        let st = fstat(fd.as_fd()).map_err(TreeError::io(self.path.join(rel)))?;
        match Kind::of(&st) {
            k @ (Kind::File | Kind::Dir) => Ok(Some((fd, k))),
            _ => Ok(None),
        }
    }

    /// An extended attribute of this directory itself (`None`: it has none of that name).
    pub fn xattr(&self, name: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let mut buf = vec![0u8; 256];
        match rustix::fs::fgetxattr(self.fd.as_fd(), name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
            // Longer than any mark agentbox reads: present, and not one of them.
            Err(rustix::io::Errno::RANGE) => Ok(Some(Vec::new())),
            Err(e) => Err(TreeError::io(&self.path)(Errno::from_raw(e.raw_os_error()))),
        }
    }

    /// Sets an extended attribute of this directory itself.
    pub fn set_xattr(&self, name: &str, value: &[u8]) -> Result<(), TreeError> {
        rustix::fs::fsetxattr(self.fd.as_fd(), name, value, rustix::fs::XattrFlags::empty())
            .map_err(|e| TreeError::io(&self.path)(Errno::from_raw(e.raw_os_error())))
    }

    /// Creates an overlayfs whiteout (a character device 0:0: it hides the lower layer's
    /// entry of that name). The kernel lets any user make this one device.
    pub fn whiteout(&self, name: &OsStr) -> Result<(), TreeError> {
        nix::sys::stat::mknodat(self.fd.as_fd(), name, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(TreeError::io(self.child_path(name)))
    }

    /// Wraps a directory descriptor obtained from [`Dir::open_beneath`].
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Self {
        Self { fd, path }
    }
}

/// A relative path with only normal components (`.` allowed): what callers may ask for beneath a
/// tree.
pub fn check_relative(rel: &Path) -> Result<(), TreeError> {
    let ok = !rel.as_os_str().is_empty()
        && rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && rel.components().any(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(TreeError::NotBeneath { path: rel.to_path_buf() })
    }
}
