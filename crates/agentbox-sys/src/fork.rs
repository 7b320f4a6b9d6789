use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};

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

/// `clone3(2)` like [`clone_process`], with the child started in the cgroup v2 directory open at
/// `cgroup` (`CLONE_INTO_CGROUP`, Linux 5.7).
///
/// Why: moving a process by writing its pid to `cgroup.procs` takes the kernel's global
/// threadgroup lock for writing, which waits for an RCU grace period (about 5 ms on an idle
/// 2-core machine, for every sandbox). A child created inside its cgroup takes that lock for
/// reading only. Callers fall back to [`clone_process`] and a write when this fails: clone3 may be
/// missing (ENOSYS, also what container seccomp profiles return for it) or the directory not be a
/// v2 cgroup this process may enter.
pub fn clone_process_into(
    _one: &SingleThreaded,
    flags: CloneFlags,
    cgroup: BorrowedFd<'_>,
) -> nix::Result<Child> {
    /// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let fd = u64::try_from(cgroup.as_raw_fd()).map_err(|_| Errno::EBADF)?;
    let args = CloneArgs {
        // Through u32: the flags are a C int, whose top bit (CLONE_IO) must not sign-extend.
        flags: u64::from(flags.bits() as u32) | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd,
        ..CloneArgs::default()
    };
    // SAFETY: as for `clone_process`: no CLONE_VM and a zero stack and stack size give fork(2)
    // semantics (the child runs on its own copy of the caller's stack), and the caller is
    // single-threaded (`_one`). The kernel reads `args` (a live local of the size passed) during
    // the call only; no flag that writes through a pointer (PIDFD, *_SETTID) is set.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) };
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
    use std::os::fd::AsFd;

    /// A child cloned into a cgroup is in it from its first instruction: it reads its own
    /// /proc/self/cgroup before anything else could have moved it. Needs a v2 directory this
    /// process may create (root on a machine with the unified hierarchy); skipped elsewhere.
    #[test]
    fn a_child_cloned_into_a_cgroup_starts_there() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(v2) = text.lines().find(|l| l.contains(" - cgroup2 ")).and_then(|l| l.split(' ').nth(4))
        else {
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(rel) = own.lines().find_map(|l| l.strip_prefix("0::")) else { return };
        let dir = std::path::Path::new(v2)
            .join(rel.trim_start_matches('/'))
            .join(format!("clone-into-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return;
        }
        let fd = std::fs::File::open(&dir).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        // The test harness runs tests on threads: the proof is made without the count here, and
        // the child does nothing but read a file, write a pipe and _exit.
        let one = SingleThreaded { _not_send: PhantomData };
        let pid = match clone_process_into(&one, CloneFlags::empty(), fd.as_fd()).unwrap() {
            Child::Child => {
                // No allocation here: another thread of the harness may hold the allocator's lock.
                let mut buf = [0u8; 1024];
                let flags = nix::fcntl::OFlag::O_RDONLY;
                if let Ok(f) = nix::fcntl::open("/proc/self/cgroup", flags, nix::sys::stat::Mode::empty()) {
                    if let Ok(n) = nix::unistd::read(&f, &mut buf) {
                        let _ = nix::unistd::write(&w, &buf[..n]);
                    }
                }
                crate::exit_now(0)
            }
            Child::Parent(pid) => pid,
        };
        drop(w);
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut seen).unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap();
        let _ = std::fs::remove_dir(&dir);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            seen.lines().any(|l| l.starts_with("0::") && l.ends_with(&name)),
            "the child started outside {}: {seen}",
            dir.display()
        );
    }

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
