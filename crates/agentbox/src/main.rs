//! The `agentbox` command line.
//!
//! The binary is single-threaded until a command needs more: `run` must clone its sandbox before
//! any thread exists, so nothing here starts a runtime.

mod cli;
mod cmd_diff;
mod cmd_doctor;
mod cmd_exec;
mod cmd_hitl;
mod cmd_lifecycle;
mod cmd_manage;
mod cmd_net;
mod cmd_profiles;
mod cmd_ps;
mod cmd_query;
mod cmd_run;
mod cmd_session;
mod cmd_spawn;
mod cmd_task;
mod cmd_vm;
mod cmd_watch;
mod exit;
mod remote;
mod remote_tasks;

use clap::Parser;

/// Prints an error the way every agentbox command does and turns it into exit status 1.
fn report(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            // An engine error about one part of a spawn request names it as this CLI spells it.
            match e.downcast_ref::<agentbox_engine::Error>().and_then(|inner| inner.field()) {
                Some(field) => eprintln!("agentbox: {}: {e:#}", field.flag()),
                None => eprintln!("agentbox: {e:#}"),
            }
            1
        }
    }
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // In a VM's initramfs this binary is the kernel's /init: the guest agent.
    if std::process::id() == 1 && args.first().is_some_and(|a| a == "/init") {
        agentbox_vm::guest::run_guest();
    }
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                // `run` reserves its small exit codes for the command, as docker does.
                _ if args.get(1).is_some_and(|a| a == "run") => exit::AGENTBOX_FAILED,
                _ => 2,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if !matches!(cli.command, cli::Command::Supervise { .. }) {
        // A command whose reader went away (`agentbox logs x | head`) ends quietly, like any
        // Unix tool. The supervisor keeps SIGPIPE ignored: a client that disconnects must not
        // kill it.
        let _ = agentbox_sys::default_disposition([nix::sys::signal::Signal::SIGPIPE]);
    }
    // Commands about this machine itself always run here; the rest go to a server if one is
    // selected (--server, --context, AGENTBOX_SERVER, AGENTBOX_CONTEXT, `context use`).
    let local_only = matches!(
        cli.command,
        cli::Command::Run(_)
            | cli::Command::Doctor(_)
            | cli::Command::Supervise { .. }
            | cli::Command::SpawnRole
            | cli::Command::TasksRole
            | cli::Command::CloneRole { .. }
            | cli::Command::VmHostRole
            | cli::Command::VmExecRole { .. }
            | cli::Command::VmForwardRole { .. }
            | cli::Command::Vm(_)
            | cli::Command::Serve(_)
            | cli::Command::Context(_)
            | cli::Command::Version
            | cli::Command::Completion(_)
            | cli::Command::Env(_)
            | cli::Command::Root
    );
    if !local_only {
        match remote::selected(&cli) {
            Ok(Some(server)) => std::process::exit(report(remote::run(&server, cli.command))),
            Ok(None) => {}
            Err(e) => std::process::exit(report(Err(e))),
        }
    }
    let code = match cli.command {
        cli::Command::Run(args) => cmd_run::run(*args),
        cli::Command::Doctor(args) => cmd_doctor::run(args),
        cli::Command::Spawn(args) => report(cmd_spawn::spawn(*args)),
        cli::Command::Swarm(args) => report(cmd_spawn::swarm(*args)),
        cli::Command::Supervise { name } => {
            report(agentbox_engine::spawn::supervise_role(&name).map_err(Into::into))
        }
        cli::Command::SpawnRole => report(agentbox_engine::spawn::spawn_role().map_err(Into::into)),
        cli::Command::TasksRole => report(agentbox_engine::tasks::runner::runner_role().map_err(Into::into)),
        cli::Command::CloneRole { url, dir, git_ref } => report(
            agentbox_engine::tasks::runner::clone_role(&url, &dir, git_ref.as_deref()).map_err(Into::into),
        ),
        cli::Command::VmHostRole => cmd_vm::host_role(),
        cli::Command::VmExecRole { tty, command } => agentbox_vm::exec_client::run_exec(command, tty),
        cli::Command::VmForwardRole { port } => agentbox_vm::fwd::run_forward(port),
        cli::Command::Vm(args) => report(cmd_vm::vm(args)),
        cli::Command::Task(args) => report(cmd_task::task(args)),
        cli::Command::Hitl(args) => report(cmd_hitl::hitl(args)),
        cli::Command::Serve(args) => report(agentbox_server::serve(args.into())),
        cli::Command::Context(args) => report(remote::context(args)),
        cli::Command::List(args) => report(cmd_query::list(args)),
        cli::Command::Info(args) => report(cmd_query::info(args)),
        cli::Command::History(args) => report(cmd_query::history(args)),
        cli::Command::Net(args) => report(cmd_net::net(args)),
        cli::Command::Allow(args) => report(cmd_net::allow(args)),
        cli::Command::Root => report(cmd_query::root()),
        cli::Command::Profiles(args) => report(cmd_profiles::profiles(args)),
        cli::Command::Keys(args) => report(cmd_profiles::keys(args)),
        cli::Command::Env(args) => report(cmd_profiles::env(args)),
        cli::Command::Completion(args) => report(cmd_profiles::completion(args)),
        cli::Command::Logs(args) => report(cmd_session::logs(args)),
        cli::Command::Screen(args) => report(cmd_session::screen(args)),
        cli::Command::Send(args) => report(cmd_session::send(args)),
        cli::Command::Broadcast(args) => report(cmd_session::broadcast(args)),
        cli::Command::Attach(args) => report(cmd_session::attach(args)),
        cli::Command::Restart(args) => report(cmd_manage::restart(args)),
        cli::Command::Clone(args) => report(cmd_manage::clone(args)),
        cli::Command::Rename(args) => report(cmd_manage::rename(args)),
        cli::Command::Exec(args) => report(cmd_exec::exec(args)),
        cli::Command::Diff(args) => report(cmd_diff::diff(args)),
        cli::Command::Verify(args) => report(cmd_diff::verify(args)),
        cli::Command::Grid(args) => report(cmd_watch::grid(args)),
        cli::Command::Watch(args) => report(cmd_watch::watch(args)),
        cli::Command::Ps(args) => report(cmd_ps::ps(args)),
        cli::Command::Stats(args) => report(cmd_ps::stats(args)),
        cli::Command::Kill(args) => report(cmd_lifecycle::kill(args)),
        cli::Command::Killall(args) => report(cmd_lifecycle::killall(args)),
        cli::Command::Wait(args) => report(cmd_lifecycle::wait(args)),
        cli::Command::Rm(args) => report(cmd_lifecycle::rm(args)),
        cli::Command::Clean(args) => report(cmd_lifecycle::clean(args)),
        cli::Command::Purge(args) => report(cmd_lifecycle::purge(args)),
        cli::Command::Version => {
            println!("agentbox {}", env!("CARGO_PKG_VERSION"));
            0
        }
    };
    std::process::exit(code);
}
