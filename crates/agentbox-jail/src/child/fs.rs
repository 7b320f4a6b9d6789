//! Builds the sandbox's root filesystem from the plan's mount steps, then pivots into it.
//!
//! Steps, in order (all inside the child's new mount namespace):
//! 1. make every inherited mount private, so nothing propagates back to the host;
//! 2. mount a tmpfs on the old root's `/tmp` as the staging root (pivot_root later reveals whatever
//!    it covers, so a workspace under the host's /tmp stays reachable through its opened fd);
//! 0. open every bind source with `openat2(RESOLVE_NO_SYMLINKS)`: sources are canonical paths, so a
//!    symlink in one means the path changed after agentbox checked it, and the open fails; all
//!    sources are opened before step 2 hides the host's /tmp;
//! 3. run each [`MountOp`]; targets are reached by walking one component at a time with
//!    `O_PATH|O_NOFOLLOW` from the staging root, and both ends are mounted through
//!    `/proc/self/fd/N`, so a symlink planted in a workspace can never redirect a mount;
//! 4. pivot_root into the staging root and detach the old root;
//! 5. make `/` itself read-only.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use agentbox_sys::{mount_setattr, MountAttr};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use nix::unistd::{fchdir, pivot_root, symlinkat, unlinkat, UnlinkatFlags};

use super::Failure;
use crate::plan::{MountOp, NodeKind};

/// Where the new root is assembled: any directory of the old root works, because pivot_root moves
/// the tmpfs away and the old root is detached.
const STAGING: &str = "/tmp";
const HIDDEN_FILE: &str = ".agentbox-hidden";
const HIDDEN_DIR: &str = ".agentbox-hidden.d";

fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn step(what: &str, target: &Path) -> String {
    format!("{what} {}", target.display())
}

const O_PATH_NOFOLLOW: OFlag = OFlag::O_PATH.union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

/// An opened mount target: the directory that holds it and the node itself.
struct Node {
    /// `None`: the staging root.
    parent: Option<OwnedFd>,
    name: OsString,
    fd: OwnedFd,
}

impl Node {
    /// Opens the node again by name: after something was mounted on it, this yields the new
    /// mount's root, where `fd` still refers to the covered node.
    fn reopen(&self, root: &OwnedFd) -> Result<OwnedFd, Errno> {
        let dir = self.parent.as_ref().unwrap_or(root);
        openat(dir.as_fd(), self.name.as_os_str(), O_PATH_NOFOLLOW, Mode::empty())
    }
}

fn is_symlink(fd: &OwnedFd) -> Result<bool, Errno> {
    Ok(SFlag::from_bits_truncate(fstat(fd.as_fd())?.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK)
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr, create: bool) -> Result<OwnedFd, Errno> {
    let flags = O_PATH_NOFOLLOW | OFlag::O_DIRECTORY;
    let opened = match openat(dir, name, flags, Mode::empty()) {
        Err(Errno::ENOENT) if create => match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => openat(dir, name, flags, Mode::empty()),
            Err(e) => Err(e),
        },
        other => other,
    };
    // O_DIRECTORY fails with ENOTDIR on a symlink: the path crosses something that is not a
    // directory, and agentbox does not follow links while building the root.
    opened.map_err(|e| if e == Errno::ENOTDIR { Errno::ELOOP } else { e })
}

/// Opens `target` below `root` one component at a time without following symlinks, creating
/// missing directories (and the final node, as `create`) when asked.
fn walk(root: &OwnedFd, target: &Path, create: Option<NodeKind>) -> Result<Node, Errno> {
    let comps: Vec<&OsStr> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let Some((leaf, dirs)) = comps.split_last() else {
        return Err(Errno::EINVAL);
    };
    let mut parent: Option<OwnedFd> = None;
    for comp in dirs {
        let dir = parent.as_ref().unwrap_or(root).as_fd();
        parent = Some(open_dir(dir, comp, create.is_some())?);
    }
    let dir = parent.as_ref().unwrap_or(root).as_fd();
    let fd = match create {
        Some(NodeKind::Dir) => open_dir(dir, leaf, true)?,
        Some(NodeKind::File) => {
            let created =
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match openat(dir, *leaf, created, Mode::from_bits_truncate(0o644)) {
                Ok(_) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            let fd = openat(dir, *leaf, O_PATH_NOFOLLOW, Mode::empty())?;
            if is_symlink(&fd)? {
                return Err(Errno::ELOOP);
            }
            fd
        }
        None => {
            let fd = openat(dir, *leaf, O_PATH_NOFOLLOW, Mode::empty())?;
            if is_symlink(&fd)? {
                return Err(Errno::ELOOP);
            }
            fd
        }
    };
    Ok(Node { parent, name: leaf.into(), fd })
}

fn explain(e: Errno) -> String {
    match e {
        Errno::ELOOP => {
            "the path crosses a symlink or a non-directory; agentbox does not follow links when mounting"
                .into()
        }
        other => other.desc().into(),
    }
}

fn fail(what: &str, target: &Path) -> impl Fn(Errno) -> Failure {
    let s = step(what, target);
    move |e| Failure { step: s.clone(), errno: e, message: explain(e) }
}

/// Sets nosuid/nodev (and read-only) on what was just mounted on `node`.
fn set_attrs(
    root: &OwnedFd,
    node: &Node,
    target: &Path,
    writable: bool,
    recursive: bool,
) -> Result<(), Failure> {
    let mut attrs = MountAttr::NOSUID.union(MountAttr::NODEV);
    if !writable {
        attrs = attrs.union(MountAttr::RDONLY);
    }
    apply_attrs(root, node, target, attrs, recursive)
}

fn apply_attrs(
    root: &OwnedFd,
    node: &Node,
    target: &Path,
    attrs: MountAttr,
    recursive: bool,
) -> Result<(), Failure> {
    let fd = node.reopen(root).map_err(fail("reopen", target))?;
    mount_setattr(fd.as_fd(), recursive, attrs).map_err(fail("mount_setattr", target))
}

fn new_fs(root: &OwnedFd, target: &Path, fstype: &str, flags: MsFlags, data: &str) -> Result<(), Failure> {
    let node = walk(root, target, Some(NodeKind::Dir)).map_err(fail("mkdir", target))?;
    let what = format!("mount {fstype} on");
    mount(Some(fstype), fd_path(node.fd.as_fd()).as_str(), Some(fstype), flags, Some(data))
        .map_err(fail(&what, target))
}

fn bind(root: &OwnedFd, source: BorrowedFd<'_>, target: &Path, kind: NodeKind) -> Result<Node, Failure> {
    let node = walk(root, target, Some(kind)).map_err(fail("create mount point", target))?;
    let flags = match kind {
        NodeKind::Dir => MsFlags::MS_BIND | MsFlags::MS_REC,
        NodeKind::File => MsFlags::MS_BIND,
    };
    let (src, dst) = (fd_path(source), fd_path(node.fd.as_fd()));
    mount(Some(src.as_str()), dst.as_str(), None::<&str>, flags, None::<&str>)
        .map_err(fail("bind mount", target))?;
    Ok(node)
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a mount step was given to mount, opened before the staging root hides the host's /tmp.
pub(super) enum Source {
    None,
    One(OwnedFd),
    Layers { lower: OwnedFd, upper: OwnedFd, work: OwnedFd },
}

fn source<'a>(sources: &'a [Source], i: usize, target: &Path) -> Result<BorrowedFd<'a>, Failure> {
    match sources.get(i) {
        Some(Source::One(fd)) => Ok(fd.as_fd()),
        _ => Err(Failure {
            step: step("bind mount", target),
            errno: Errno::EBADF,
            message: "source was not opened".into(),
        }),
    }
}

pub(super) fn open_sources(ops: &[MountOp]) -> Result<Vec<Source>, Failure> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let open = |what: &str, path: &Path| openat2(AT_FDCWD, path, how).map_err(fail(what, path));
    ops.iter()
        .map(|op| match op {
            MountOp::Bind { source, .. } | MountOp::Device { source, .. } => {
                open("open bind source", source).map(Source::One)
            }
            MountOp::Overlay { lower, upper, work, .. } => Ok(Source::Layers {
                lower: open("open overlay lower layer", lower)?,
                upper: open("open overlay upper layer", upper)?,
                work: open("open overlay work dir", work)?,
            }),
            _ => Ok(Source::None),
        })
        .collect()
}

/// Mounts an overlayfs on `target`, its layers named through their opened descriptors.
/// `userxattr` keeps overlayfs's own marks (opaque directories) in `user.` xattrs, which a
/// user namespace may write; no metacopy and no redirects are made, so every changed file is whole
/// in the upper layer and a renamed directory is copied, not redirected.
fn overlay(
    root: &OwnedFd,
    sources: &[Source],
    i: usize,
    target: &Path,
    writable: bool,
) -> Result<Node, Failure> {
    let Some(Source::Layers { lower, upper, work }) = sources.get(i) else {
        return Err(Failure {
            step: step("mount overlay on", target),
            errno: Errno::EBADF,
            message: "its layers were not opened".into(),
        });
    };
    let node = walk(root, target, Some(NodeKind::Dir)).map_err(fail("create mount point", target))?;
    let (data, flags) = if writable {
        let data = format!(
            "lowerdir={},upperdir={},workdir={},userxattr,metacopy=off,redirect_dir=nofollow",
            fd_path(lower.as_fd()),
            fd_path(upper.as_fd()),
            fd_path(work.as_fd())
        );
        (data, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
    } else {
        // The upper layer as the top lower layer: its whiteouts and opaque marks still hide
        // what they hide, and nothing is written to either.
        let data = format!("lowerdir={}:{},userxattr", fd_path(upper.as_fd()), fd_path(lower.as_fd()));
        (data, MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY)
    };
    mount(Some("overlay"), fd_path(node.fd.as_fd()).as_str(), Some("overlay"), flags, Some(data.as_str()))
        .map_err(fail("mount overlay on", target))?;
    Ok(node)
}

/// Staging name of the `n`th [`MountOp::File`] source.
fn file_name(n: usize) -> String {
    format!("file-{n}")
}

/// Where the nodes that [`MountOp::Hide`] and [`MountOp::File`] bind live: a small tmpfs in the
/// staging root, made read-only once filled.
const SOURCES: &str = ".agentbox-sources";
const SOURCES_PATH: &str = "/.agentbox-sources";

/// Creates the sources tmpfs: the covers (mode 000: unreadable even to their owner) and each
/// file's contents; then makes it read-only, so that nothing bound from it can be written or
/// chmod-ed back.
fn file_sources(root: &OwnedFd, ops: &[MountOp], owned: &str) -> Result<OwnedFd, Failure> {
    let here = Path::new(SOURCES);
    mkdirat(root.as_fd(), SOURCES, Mode::from_bits_truncate(0o755)).map_err(fail("create", here))?;
    let dir = openat(root.as_fd(), SOURCES, O_PATH_NOFOLLOW | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(fail("open", here))?;
    mount(
        Some("tmpfs"),
        fd_path(dir.as_fd()).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=0755,size=1m,{owned}").as_str()),
    )
    .map_err(fail("mount tmpfs on", here))?;
    let dir = openat(
        root.as_fd(),
        SOURCES,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open", here))?;
    let create = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    drop(
        openat(dir.as_fd(), HIDDEN_FILE, create, Mode::empty())
            .map_err(fail("create", Path::new(HIDDEN_FILE)))?,
    );
    mkdirat(dir.as_fd(), HIDDEN_DIR, Mode::empty()).map_err(fail("create", Path::new(HIDDEN_DIR)))?;
    let contents = ops.iter().filter_map(|op| match op {
        MountOp::File { contents, .. } => Some(contents),
        _ => None,
    });
    for (n, text) in contents.enumerate() {
        let name = file_name(n);
        let fd = openat(dir.as_fd(), name.as_str(), create, Mode::from_bits_truncate(0o644))
            .map_err(fail("create", Path::new(&name)))?;
        write_all(&fd, text.as_bytes()).map_err(fail("write", Path::new(&name)))?;
    }
    mount_setattr(dir.as_fd(), false, MountAttr::RDONLY).map_err(fail("mount_setattr", here))?;
    Ok(dir)
}

/// Binds `name` of the sources tmpfs onto `target`.
fn bind_source(root: &OwnedFd, sources: &OwnedFd, name: &str, target: &Path) -> Result<(), Failure> {
    let src = openat(sources.as_fd(), name, O_PATH_NOFOLLOW, Mode::empty())
        .map_err(fail("open", Path::new(name)))?;
    let dst = walk(root, target, None).map_err(fail("open", target))?;
    mount(
        Some(fd_path(src.as_fd()).as_str()),
        fd_path(dst.fd.as_fd()).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(fail("bind mount", target))
}

/// Builds the root and pivots into it. Every tmpfs (and so everything agentbox creates in the
/// sandbox) belongs to `owner`, the sandbox's uid and gid.
/// `sources` come from [`open_sources`], opened with the launcher's credentials before the child
/// took the sandbox's ids.
pub(super) fn build_root(ops: &[MountOp], sources: Vec<Source>, owner: (u32, u32)) -> Result<(), Failure> {
    let owned = format!("uid={},gid={}", owner.0, owner.1);
    let root_path = Path::new("/");
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(fail("make mounts private", root_path))?;
    mount(
        Some("tmpfs"),
        STAGING,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=0755,{owned}").as_str()),
    )
    .map_err(fail("mount staging root on", Path::new(STAGING)))?;
    let root = nix::fcntl::open(STAGING, O_PATH_NOFOLLOW | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(fail("open", Path::new(STAGING)))?;
    let sources_dir = file_sources(&root, ops, &owned)?;
    let mut files = 0;
    for (i, op) in ops.iter().enumerate() {
        match op {
            MountOp::Tmpfs { target, mode } => new_fs(
                &root,
                target,
                "tmpfs",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                &format!("mode={mode:o},{owned}"),
            )?,
            MountOp::Proc { target } => new_fs(
                &root,
                target,
                "proc",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                "",
            )?,
            MountOp::Devpts { target } => new_fs(
                &root,
                target,
                "devpts",
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620",
            )?,
            MountOp::Bind { target, kind, writable, .. } => {
                let node = bind(&root, source(&sources, i, target)?, target, *kind)?;
                set_attrs(&root, &node, target, *writable, *kind == NodeKind::Dir)?;
            }
            MountOp::Overlay { target, writable, .. } => {
                let node = overlay(&root, &sources, i, target, *writable)?;
                set_attrs(&root, &node, target, *writable, false)?;
            }
            MountOp::Device { target, .. } => {
                let node = bind(&root, source(&sources, i, target)?, target, NodeKind::File)?;
                apply_attrs(&root, &node, target, MountAttr::NOSUID.union(MountAttr::NOEXEC), false)?;
            }
            MountOp::ReadonlyRebind { target } => match walk(&root, target, None) {
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(fail("open", target)(e)),
                Ok(node) => {
                    let p = fd_path(node.fd.as_fd());
                    mount(
                        Some(p.as_str()),
                        p.as_str(),
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(fail("bind mount", target))?;
                    set_attrs(&root, &node, target, false, true)?;
                }
            },
            MountOp::Symlink { target, points_to } => {
                let parent = target.parent().unwrap_or(root_path);
                let name = target.file_name().unwrap_or_default();
                let dir = if parent == root_path {
                    None
                } else {
                    Some(walk(&root, parent, Some(NodeKind::Dir)).map_err(fail("mkdir", parent))?.fd)
                };
                symlinkat(points_to.as_path(), dir.as_ref().unwrap_or(&root).as_fd(), name)
                    .map_err(fail("symlink", target))?;
            }
            // Both bind a node of the read-only sources tmpfs: the bind is read-only, nosuid,
            // nodev and noexec from birth (a bind copies its source mount's flags).
            MountOp::File { target, .. } => {
                let name = file_name(files);
                files += 1;
                bind_source(&root, &sources_dir, &name, target)?;
            }
            MountOp::Hide { target, kind } => {
                let cover = if *kind == NodeKind::Dir { HIDDEN_DIR } else { HIDDEN_FILE };
                bind_source(&root, &sources_dir, cover, target)?;
            }
        }
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the
    // new root (the technique from pivot_root(2), NOTES).
    fchdir(root.as_fd()).map_err(fail("chdir", Path::new(STAGING)))?;
    pivot_root(".", ".").map_err(fail("pivot_root", Path::new(STAGING)))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("detach old root", root_path))?;
    nix::unistd::chdir("/").map_err(fail("chdir", root_path))?;
    drop(root);
    let new_root = nix::fcntl::open("/", O_PATH_NOFOLLOW | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(fail("open", root_path))?;
    // The covers and files stay alive through their binds; the sources tmpfs itself goes.
    drop(sources_dir);
    umount2(SOURCES_PATH, MntFlags::MNT_DETACH).map_err(fail("detach", Path::new(SOURCES_PATH)))?;
    unlinkat(new_root.as_fd(), SOURCES, UnlinkatFlags::RemoveDir)
        .map_err(fail("rmdir", Path::new(SOURCES)))?;
    mount_setattr(new_root.as_fd(), false, MountAttr::RDONLY.union(MountAttr::NOSUID).union(MountAttr::NODEV))
        .map_err(fail("mount_setattr", root_path))
}
