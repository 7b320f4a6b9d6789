//! Handles to a running sandbox: descriptors of its namespaces and its root directory.
//!
//! The sandbox's init opens them itself and hands them to the launcher (the supervisor keeps them):
//! init is not dumpable, so its /proc/PID/ns files are closed to anyone without CAP_SYS_PTRACE.
//! Whoever holds these can join the sandbox, so they travel only over owner-only sockets.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sched::CloneFlags;

use crate::child::NAMESPACES;

#[derive(Debug)]
pub struct SandboxHandles {
    /// In joining order: user first.
    pub(crate) namespaces: Vec<(OwnedFd, CloneFlags)>,
    pub(crate) root: OwnedFd,
}

impl SandboxHandles {
    /// Number of descriptors in the wire form.
    pub const COUNT: usize = NAMESPACES.len() + 1;

    /// Rebuilds handles from descriptors in wire order (namespaces, then root).
    pub fn from_fds(fds: Vec<OwnedFd>) -> Option<Self> {
        if fds.len() != Self::COUNT {
            return None;
        }
        let mut it = fds.into_iter();
        let namespaces =
            NAMESPACES.iter().map(|(_, kind)| it.next().map(|fd| (fd, *kind))).collect::<Option<Vec<_>>>()?;
        Some(Self { namespaces, root: it.next()? })
    }

    /// The descriptor of one of the sandbox's namespaces.
    pub fn namespace(&self, kind: CloneFlags) -> Option<BorrowedFd<'_>> {
        self.namespaces.iter().find(|(_, k)| *k == kind).map(|(fd, _)| fd.as_fd())
    }

    /// Moves this process into the sandbox's user and network namespaces, and nothing else: its
    /// files, processes and mounts stay the host's. Sockets it creates from then on are on the
    /// sandbox's network, so a connection to 127.0.0.1 reaches the agent's own loopback (ports).
    /// Joining a user namespace needs a single-threaded process (`_one`).
    pub fn join_network(&self, _one: &agentbox_sys::SingleThreaded) -> Result<(), crate::JailError> {
        for kind in [CloneFlags::CLONE_NEWUSER, CloneFlags::CLONE_NEWNET] {
            if let Some(fd) = self.namespace(kind) {
                nix::sched::setns(fd, kind).map_err(crate::JailError::sys("join the sandbox's network"))?;
            }
        }
        Ok(())
    }

    /// Raw descriptors in wire order, to send with SCM_RIGHTS.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.namespaces
            .iter()
            .map(|(fd, _)| fd.as_raw_fd())
            .chain(std::iter::once(self.root.as_raw_fd()))
            .collect()
    }
}
