//! `exec`: run another command inside a running agent's sandbox, like `docker exec`.

use agentbox_core::{default_env, SandboxSpec, SANDBOX_HOME};
use agentbox_jail::{build_plan, exec_in, wait_foreground, RealFs, Stdio};
use anyhow::{bail, Result};
use nix::unistd::Pid;

use crate::agents::{self, is_live_state};
use crate::cli::ExecArgs;
use crate::cmd_run;
use crate::home::Home;

pub fn exec(args: ExecArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    let pid = match (is_live_state(&rec.state), rec.sandbox_pid) {
        (true, Some(p)) => Pid::from_raw(p as i32),
        _ => bail!("agent '{}' is {}; start it with `agentbox restart {}`", rec.name, rec.state, rec.name),
    };
    let spec = SandboxSpec::decode(&rec.spec)?;
    let mut plan = build_plan(&spec, &RealFs);
    plan.process.argv = match spec.backend {
        agentbox_core::Backend::Ns => args.command,
        // In a VM agent, the command joins QEMU's sandbox as a client that asks the guest agent to
        // run it (same environment, directory and user as it would have in an `ns` sandbox).
        agentbox_core::Backend::Vm => {
            let mut argv: Vec<std::ffi::OsString> =
                vec![std::path::Path::new(agentbox_vm::INFRA_DIR).join("agentbox").into(), "__vmexec".into()];
            if args.tty {
                argv.push("--tty".into());
            }
            argv.push("--".into());
            argv.extend(args.command);
            argv
        }
    };
    if let Some(dir) = args.workdir {
        plan.process.cwd = agentbox_core::normalize_absolute(&spec.workspace.join(dir))?;
    }
    // The agent's environment, plus -e for this command only.
    let host: Vec<(String, String)> = std::env::vars().collect();
    let extra = default_env(SANDBOX_HOME, &host, &args.env)?;
    for (k, v) in extra.into_iter().filter(|(k, _)| args.env.iter().any(|e| env_key(e) == k)) {
        plan.process.env.retain(|(ek, _)| *ek != k);
        plan.process.env.push((k, v));
    }
    if !args.interactive {
        // Without -i the command reads nothing, like docker exec.
        let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty())?;
        nix::unistd::dup2_stdin(&null)?;
    }
    // Like `docker exec`: a terminal inside the sandbox with -t, pipes relayed by agentbox
    // without. The caller's own descriptors never enter a sandbox that outlives this command.
    let stdio = if args.tty { cmd_run::pty_stdio() } else { Stdio::Pipes };
    let handles = agentbox_supervisor::sandbox_handles(&agents::state_dir(&rec))?;
    let running = match exec_in(pid, handles, &plan, stdio) {
        Ok(r) => r,
        Err(e) => return Ok(cmd_run::fail(&e)),
    };
    Ok(cmd_run::exit_code(wait_foreground(running, None), None))
}

fn env_key(e: &agentbox_core::EnvArg) -> &str {
    match e {
        agentbox_core::EnvArg::Set(k, _) | agentbox_core::EnvArg::Inherit(k) => k,
    }
}
