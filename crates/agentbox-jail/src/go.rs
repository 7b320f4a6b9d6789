//! The launcher's "go" to its child: the child waits for it before it builds anything (its uid
//! and gid maps must be written, and its cgroup joined, first). End-of-file instead of the go
//! tells the child that the launcher is gone (the child also asks for SIGKILL at its parent's
//! death, but cannot ask before it runs).
//!
//! A pipe, on purpose: a pipe write wakes its reader *synchronously*, on the writer's CPU, so the
//! child starts on caches its launcher just warmed, and runs once the launcher waits for it. An
//! eventfd, whose wakeup puts the child on an idle CPU at once, alongside the launcher's own
//! work, made spawns about 20% slower here (60 spawns interleaved with the pipe's): on a virtual
//! machine, waking an idle virtual CPU costs more than the overlap saves.

use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;

use crate::JailError;

/// The launcher's side. Dropping it without [`GoSender::send`] tells the child to give up.
#[derive(Debug)]
pub(crate) struct GoSender {
    write: OwnedFd,
}

/// The child's side. The child drops its copy of the [`GoSender`] first thing, so that the
/// launcher's is the last write end, whose closing the child sees.
#[derive(Debug)]
pub(crate) struct GoReceiver {
    read: OwnedFd,
}

/// A new go channel; both ends are close-on-exec.
pub(crate) fn channel() -> Result<(GoSender, GoReceiver), JailError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(JailError::sys("pipe"))?;
    Ok((GoSender { write }, GoReceiver { read }))
}

impl GoSender {
    pub(crate) fn send(&self) -> nix::Result<()> {
        nix::unistd::write(&self.write, b"g").map(drop)
    }
}

impl GoReceiver {
    /// Waits for the go: `true` once it came, `false` if the launcher went away first.
    pub(crate) fn wait(&self) -> bool {
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&self.read, &mut byte) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other == Ok(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_arrives_and_a_launcher_gone_is_seen() {
        let (tx, rx) = channel().unwrap();
        tx.send().unwrap();
        assert!(rx.wait());
        // No go, and no write end left: the child gives up instead of waiting forever.
        let (tx, rx) = channel().unwrap();
        drop(tx);
        assert!(!rx.wait());
    }
}
