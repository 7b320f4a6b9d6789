use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Restores the default action of each signal.
///
/// Ignored signals stay ignored across `execve`; Rust ignores SIGPIPE at start-up, so without this
/// a program started by agentbox would get EPIPE errors instead of the quiet death pipelines
/// expect (`yes | head` would print "Broken pipe").
pub fn default_disposition(signals: impl IntoIterator<Item = Signal>) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in signals {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code of ours, so no handler can run with broken
        // invariants.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// Ignores `sig` in this process: a write to a pipe whose reader went away (SIGPIPE) then
/// fails with EPIPE instead of killing it, for a process that handles that itself.
pub fn ignore(sig: Signal) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN installs no handler code of ours, so no handler can run with broken
    // invariants.
    unsafe { sigaction(sig, &action) }.map(drop)
}

/// Restores the default action of every ignored signal, real-time ones included (glibc's wrapper
/// refuses to touch the two it reserves, so this uses the raw system call). Used right before
/// `execve`: handlers are reset by exec itself, but ignored signals stay ignored, and a caller
/// may have left any signal ignored. Only the signals /proc/self/status lists in `SigIgn` are
/// touched, which is usually one or two.
pub fn default_disposition_all() -> nix::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|_| nix::errno::Errno::EIO)?;
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or(nix::errno::Errno::EIO)?;
    // struct sigaction for the kernel, all zero: SIG_DFL, no flags, no restorer, empty mask.
    let action = [0u64; 4];
    for bit in 0..64 {
        let sig = bit + 1;
        if ignored & (1 << bit) == 0 || sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `action` is a zeroed kernel sigaction (SIG_DFL) that outlives the call; the old
        // action pointer is null; 8 is the size of the kernel's signal set.
        let rc = unsafe {
            libc::syscall(libc::SYS_rt_sigaction, sig, action.as_ptr(), std::ptr::null_mut::<u8>(), 8usize)
        };
        nix::errno::Errno::result(rc)?;
    }
    Ok(())
}
