//! Pausing an agent's sandbox, whichever its backend. An `ns` sandbox is frozen by the jail
//! (`agentbox_jail::freeze`). A VM's guest is stopped through QEMU's monitor: its vCPUs halt
//! while QEMU itself (its 9p server, its channel to the host) keeps answering; a VM without a
//! monitor socket (started by an older agentbox) is frozen like any sandbox. Resuming does both
//! undoings, so an agent paused either way (by `pause`, or by its supervisor when idle) resumes.

use agentbox_jail::{JailError, SandboxTree};

/// Pauses the sandbox; says how.
pub fn pause_sandbox(tree: SandboxTree, vm: bool) -> Result<String, JailError> {
    if vm {
        match agentbox_vm::monitor::command(tree.root, "stop") {
            Ok(()) => return Ok("guest stopped through QEMU's monitor".into()),
            Err(agentbox_vm::monitor::MonitorError::Missing(_)) => {}
            Err(e) => return Err(JailError::Freeze(e.to_string())),
        }
    }
    agentbox_jail::freeze(tree).map(|how| format!("frozen: {how}"))
}

/// Resumes the sandbox; says how.
pub fn resume_sandbox(tree: SandboxTree, vm: bool) -> Result<String, JailError> {
    let thawed = agentbox_jail::thaw(tree)?;
    if vm {
        match agentbox_vm::monitor::command(tree.root, "cont") {
            Ok(()) => return Ok("guest continued through QEMU's monitor".into()),
            Err(agentbox_vm::monitor::MonitorError::Missing(_)) => {}
            Err(e) => return Err(JailError::Freeze(e.to_string())),
        }
    }
    Ok(format!("thawed: {thawed}"))
}
