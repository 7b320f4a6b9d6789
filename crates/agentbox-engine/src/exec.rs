//! Another command in a running agent's sandbox (`agentbox exec`), like `docker exec`: the
//! process joins the sandbox's namespaces, root, cgroup and restrictions (see
//! `agentbox_jail::exec_in`). The caller relays its stdio.

use std::ffi::OsString;
use std::path::PathBuf;

use agentbox_core::{default_env, EnvArg, SandboxSpec, SANDBOX_HOME};
use agentbox_jail::{build_plan, exec_in, JailError, RealFs, Running, Stdio};
use nix::unistd::Pid;

use crate::agents::{self, is_live_state};
use crate::bail;
use crate::error::{Error, Result};
use crate::home::Home;

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: Vec<OsString>,
    /// A terminal for it (for a VM agent, the guest side needs to know too).
    pub tty: bool,
    /// Variables for this command only, on top of the agent's environment.
    pub env: Vec<EnvArg>,
    /// Working directory, relative to the workspace.
    pub workdir: Option<PathBuf>,
}

fn env_key(e: &EnvArg) -> &str {
    match e {
        EnvArg::Set(k, _) | EnvArg::Inherit(k) => k,
    }
}

/// Starts `req` in agent `name`'s sandbox; the command runs once this returns. The inner result
/// is the sandbox's own answer (a command that cannot run, with what the exit status should say).
pub fn start(home: &Home, name: &str, req: ExecRequest, stdio: Stdio) -> Result<Result<Running, JailError>> {
    let store = home.store()?;
    let rec = agents::get(&store, name)?;
    let pid = match (is_live_state(&rec.state), rec.sandbox_pid) {
        // Its processes are stopped: a command run beside them would run alone.
        _ if rec.state == agentbox_core::AgentState::Paused => bail!(Error::conflict(format!(
            "agent '{}' is paused; `agentbox resume {}` first",
            rec.name, rec.name
        ))),
        (true, Some(p)) => Pid::from_raw(p as i32),
        _ => bail!(Error::conflict(format!(
            "agent '{}' is {}; start it with `agentbox restart {}`",
            rec.name, rec.state, rec.name
        ))),
    };
    let spec = SandboxSpec::decode(&rec.spec)?;
    let mut plan = build_plan(&spec, &RealFs);
    plan.process.argv = match spec.backend {
        agentbox_core::Backend::Ns => req.command,
        // In a VM agent, the command joins QEMU's sandbox as a client that asks the guest agent to
        // run it (same environment, directory and user as it would have in an `ns` sandbox).
        agentbox_core::Backend::Vm => {
            let mut argv: Vec<OsString> =
                vec![std::path::Path::new(agentbox_vm::INFRA_DIR).join("agentbox").into(), "__vmexec".into()];
            if req.tty {
                argv.push("--tty".into());
            }
            argv.push("--".into());
            argv.extend(req.command);
            argv
        }
    };
    if let Some(dir) = req.workdir {
        plan.process.cwd = agentbox_core::normalize_absolute(&spec.workspace.join(dir))?;
    }
    // The agent's environment, plus the request's for this command only.
    let host: Vec<(String, String)> = std::env::vars().collect();
    let extra = default_env(SANDBOX_HOME, &host, &req.env)?;
    for (k, v) in extra.into_iter().filter(|(k, _)| req.env.iter().any(|e| env_key(e) == k)) {
        plan.process.env.retain(|(ek, _)| *ek != k);
        plan.process.env.push((k, v));
    }
    let handles = agentbox_supervisor::sandbox_handles(&agents::state_dir(&rec))?;
    Ok(exec_in(pid, handles, &plan, stdio))
}
