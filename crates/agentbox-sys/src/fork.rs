use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

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
/// Callers must be single-threaded: only the calling thread exists in the child, so locks held by
/// other threads would stay locked forever. agentbox calls this before any thread is started.
pub fn clone_process(flags: CloneFlags) -> nix::Result<Child> {
    let raw = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with a null stack duplicates the address space like
    // fork(2), so the child's stack is its own copy. The caller guarantees a single thread, so no
    // lock can be held by a thread that does not exist in the child. The remaining pointer
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

/// Plain `fork(2)` for a single-threaded caller.
pub fn fork_process() -> nix::Result<Child> {
    // SAFETY: the caller is single-threaded (agentbox's sandbox init and launcher never start
    // threads), which is the condition under which the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Child::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Child::Child),
    }
}
