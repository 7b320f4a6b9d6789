use std::marker::PhantomData;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// Proof that the process has one thread, which `fork` and `clone` require: only the calling
/// thread exists in the child, so a lock another thread held (the allocator's, stdio's) would
/// stay locked there forever.
///
/// [`SingleThreaded::check`] counts the process's threads when the proof is made; the proof is
/// neither `Send`, `Sync` nor `Clone`, so it stays on the thread that checked, and it is made right
/// before the fork it is for. A child made with it has one thread too, so it can carry the proof
/// on for its own forks.
#[derive(Debug)]
pub struct SingleThreaded {
    _not_send: PhantomData<*const ()>,
}

impl SingleThreaded {
    /// Counts the threads (`/proc/self/stat`); `EDEADLK` when there is more than one.
    pub fn check() -> nix::Result<Self> {
        match thread_count()? {
            1 => Ok(Self { _not_send: PhantomData }),
            _ => Err(Errno::EDEADLK),
        }
    }
}

/// The number of threads of this process (field 20 of `/proc/self/stat`).
pub fn thread_count() -> nix::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or(Errno::EINVAL)?;
    after.split_whitespace().nth(17).and_then(|n| n.parse().ok()).ok_or(Errno::EINVAL)
}

/// Which side of a fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Parent(Pid),
    Child,
}

/// `clone(2)` with fork semantics (SIGCHLD on exit, no new stack: the child continues on a copy of
/// the caller's stack) plus namespace `flags`. With `CLONE_NEWPID` the child is pid 1 of the new
/// namespace.
///
/// `_one` proves the caller is single-threaded (see [`SingleThreaded`]).
pub fn clone_process(_one: &SingleThreaded, flags: CloneFlags) -> nix::Result<Child> {
    let raw = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with a null stack duplicates the address space like
    // fork(2), so the child's stack is its own copy. The caller guarantees a single thread, so no
    // lock can be held by a thread that does not exist in the child (`_one`). The remaining pointer
    // arguments (parent/child tid, tls) are null and unused without the matching flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            raw,
            std::ptr::null_mut::<u8>(),
            std::ptr::null_mut::<i32>(),
            std::ptr::null_mut::<i32>(),
            0usize,
        )
    };
    match Errno::result(rc)? {
        0 => Ok(Child::Child),
        pid => Ok(Child::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Plain `fork(2)`; `_one` proves the caller is single-threaded.
pub fn fork_process(_one: &SingleThreaded) -> nix::Result<Child> {
    // SAFETY: the caller is single-threaded (`_one`), which is the condition under which the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Child::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Child::Child),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proof is refused once a second thread exists, and given again when it has gone.
    #[test]
    fn the_proof_counts_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert_eq!(SingleThreaded::check().unwrap_err(), Errno::EDEADLK);
        assert!(thread_count().unwrap() >= 2);
        drop(tx);
        let _ = t.join();
    }
}
