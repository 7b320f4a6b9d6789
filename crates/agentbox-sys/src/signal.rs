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

/// Restores the default action of every signal, real-time ones included (glibc's wrapper refuses
/// to touch the two it reserves, so this uses the raw system call). Used right before `execve`:
/// a caller may have left any signal ignored.
pub fn default_disposition_all() -> nix::Result<()> {
    // struct sigaction for the kernel, all zero: SIG_DFL, no flags, no restorer, empty mask.
    let action = [0u64; 4];
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
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
