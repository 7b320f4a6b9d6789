//! `exec`: run another command inside a running agent's sandbox, like `docker exec`.

use agentbox_engine::exec::{self, ExecRequest};
use agentbox_engine::Home;
use agentbox_jail::{wait_foreground, AfterEnd, Stdio};
use anyhow::Result;

use crate::cli::ExecArgs;
use crate::cmd_run;

pub fn exec(args: ExecArgs) -> Result<i32> {
    let home = Home::open()?;
    if !args.interactive {
        // Without -i the command reads nothing, like docker exec.
        let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty())?;
        nix::unistd::dup2_stdin(&null)?;
    }
    // Like `docker exec`: a terminal inside the sandbox with -t, pipes relayed by agentbox
    // without. The caller's own descriptors never enter a sandbox that outlives this command.
    let stdio = if args.tty { cmd_run::pty_stdio() } else { Stdio::Pipes };
    let req = ExecRequest { command: args.command, tty: args.tty, env: args.env, workdir: args.workdir };
    match exec::start(&home, &args.name, req, stdio)? {
        Ok(running) => Ok(cmd_run::exit_code(wait_foreground(running, None, AfterEnd::Reap), None)),
        Err(e) => Ok(cmd_run::fail(&e)),
    }
}
