//! The `agentbox` command line: flags in, engine requests out, results printed.
//!
//! The binary is single-threaded until a command needs more: `run` must clone its sandbox before
//! any thread exists, so nothing here starts a runtime. The verbs that mean the same here and on
//! a server are rendered from one [`Control`], the local engine or a server's API, so their
//! output is the same either way.

/// The C library's allocator, with the blocks that get copied in bulk on a cache line (why: see
/// [`agentbox_sys::LineAligned`]).
#[global_allocator]
static ALLOCATOR: agentbox_sys::LineAligned = agentbox_sys::LineAligned;

mod cli;
mod cli_quick;
mod cmd_agents;
mod cmd_cp;
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
mod cmd_store;
mod cmd_task;
mod cmd_vm;
mod cmd_volume;
mod cmd_watch;
mod cmd_workspace;
mod complete;
mod contexts;
mod exit;
mod format;
mod remote;
mod remote_verbs;
mod roles;

use agentbox_engine::control::{Control, Local};
use anyhow::{bail, Result};
use clap::Parser;
use cli::Command;

/// Prints an error the way every agentbox command does and turns it into exit status 1.
fn report(result: Result<i32>) -> i32 {
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
    if let Some(code) = roles::dispatch(&args) {
        std::process::exit(code);
    }
    // Asked by a shell's completion hook (`agentbox completion SHELL`): answers and exits.
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .var(complete::VAR)
        .bin("agentbox")
        .complete();
    let parsed = cli_quick::parse(&args).map(Ok).unwrap_or_else(|| cli::Cli::try_parse_from(&args));
    let cli = match parsed {
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
    // A command whose reader went away (`agentbox logs x | head`) ends quietly, like any Unix
    // tool.
    let _ = agentbox_sys::default_disposition([nix::sys::signal::Signal::SIGPIPE]);
    std::process::exit(run(cli));
}

fn run(cli: cli::Cli) -> i32 {
    let (server, context) = (cli.globals.server, cli.globals.context);
    let command = match about_this_machine(cli.command) {
        Ok(code) => return code,
        Err(command) => command,
    };
    // The rest go to a server if one is selected (--server, --context, AGENTBOX_SERVER,
    // AGENTBOX_CONTEXT, `context use`).
    match contexts::selected(server, context) {
        Ok(Some(remote)) => report(on_server(&remote, command)),
        Ok(None) => report(here(command)),
        Err(e) => report(Err(e)),
    }
}

/// Commands about this machine itself: they always run here.
fn about_this_machine(command: Command) -> Result<i32, Command> {
    Ok(match command {
        Command::Run(args) => cmd_run::run(*args),
        Command::Doctor(args) => cmd_doctor::run(args),
        Command::Vm(args) => report(cmd_vm::vm(args)),
        Command::Store(args) => report(cmd_store::store(args)),
        Command::Agents(args) => report(cmd_agents::agents(args)),
        Command::Serve(args) => {
            // A client or helper that goes away (a copy's `__archive` that ended early) is an
            // error on that request, never the server's death by SIGPIPE.
            let _ = agentbox_sys::ignore_signal(nix::sys::signal::Signal::SIGPIPE);
            report(agentbox_server::serve(args.into()))
        }
        Command::Context(args) => report(contexts::context(args)),
        Command::Completion(args) => report(cmd_profiles::completion(args)),
        Command::Env(args) => report(cmd_profiles::env(args)),
        Command::Root => report(cmd_query::root()),
        Command::Version => {
            println!("agentbox {}", env!("CARGO_PKG_VERSION"));
            0
        }
        other => return Err(other),
    })
}

/// The verbs that mean the same here and on a server; anything else is handed back.
fn shared(c: &dyn Control, command: Command) -> Result<Result<i32>, Command> {
    Ok(match command {
        Command::Spawn(args) => cmd_spawn::spawn(c, *args),
        Command::Swarm(args) => cmd_spawn::swarm(c, *args),
        Command::List(args) => cmd_query::list(c, args),
        Command::History(args) => cmd_query::history(c, args),
        Command::Logs(args) => cmd_session::logs(c, args),
        Command::Screen(args) => cmd_session::screen(c, args),
        Command::Send(args) => cmd_session::send(c, args),
        Command::Broadcast(args) => cmd_session::broadcast(c, args),
        Command::Kill(args) => cmd_lifecycle::kill(c, args),
        Command::Stop(args) => cmd_lifecycle::stop(c, args),
        Command::Start(args) => cmd_lifecycle::start(c, args),
        Command::Pause(args) => match args.after {
            Some(after) => cmd_lifecycle::pause_when_idle(c, args.targets, after.0),
            None => cmd_lifecycle::pause(c, args.targets, true),
        },
        Command::Resume(args) => cmd_lifecycle::pause(c, args.targets, false),
        Command::Killall(args) => cmd_lifecycle::killall(c, args),
        Command::Wait(args) => cmd_lifecycle::wait(c, args),
        Command::Rm(args) => cmd_lifecycle::rm(c, args),
        Command::Clean(args) => cmd_lifecycle::clean(c, args),
        Command::Purge(args) => cmd_lifecycle::purge(c, args),
        Command::Restart(args) => cmd_manage::restart(c, args),
        Command::Net(args) => cmd_net::net(c, args),
        Command::Allow(args) => cmd_net::allow(c, args),
        Command::Deny(args) => cmd_net::allow(
            c,
            cli::AllowArgs {
                name: args.name,
                host: args.host,
                once: false,
                always: args.always,
                remove: true,
            },
        ),
        Command::Hitl(args) => cmd_hitl::hitl(c, args),
        Command::Task(args) => cmd_task::task(c, args),
        Command::Volume(args) => cmd_volume::volume(c, args),
        Command::Cp(args) => cmd_cp::cp(c, args),
        Command::Fork(args) => cmd_workspace::fork(c, args),
        Command::Checkpoint(args) => cmd_workspace::checkpoint(c, args),
        Command::Checkpoints(args) => cmd_workspace::checkpoints(c, args),
        Command::Rollback(args) => cmd_workspace::rollback(c, args),
        Command::Apply(args) => cmd_workspace::apply(c, args),
        other => return Err(other),
    })
}

fn on_server(remote: &remote::Remote, command: Command) -> Result<i32> {
    match shared(remote, command) {
        Ok(result) => result,
        Err(Command::Attach(args)) => remote_verbs::attach(remote, &args),
        Err(Command::Info(args)) => remote_verbs::info(remote, &args),
        Err(other) => {
            let verb = format!("{other:?}");
            let verb = verb.split(['(', ' ', '{']).next().unwrap_or("this").to_lowercase();
            bail!("`{verb}` is not available with --server; run it on the server's machine")
        }
    }
}

fn here(command: Command) -> Result<i32> {
    let command = match command {
        Command::Info(args) => return cmd_query::info(args),
        Command::Attach(args) => return cmd_session::attach(args),
        Command::Exec(args) => return cmd_exec::exec(args),
        Command::Port(args) => return cmd_cp::port(args),
        Command::Diff(args) => return cmd_diff::diff(args),
        Command::Verify(args) => return cmd_diff::verify(args),
        Command::Clone(args) => return cmd_manage::clone(args),
        Command::Rename(args) => return cmd_manage::rename(args),
        Command::Grid(args) => return cmd_watch::grid(args),
        Command::Watch(args) => return cmd_watch::watch(args),
        Command::Ps(args) => return cmd_ps::ps(args),
        Command::Top(args) => return cmd_ps::top(args),
        Command::Stats(args) => return cmd_ps::stats(args),
        Command::Profiles(args) => return cmd_profiles::profiles(args),
        Command::Keys(args) => return cmd_profiles::keys(args),
        Command::Login(args) => return cmd_profiles::login(args),
        Command::Logout(args) => return cmd_profiles::logout(args),
        // Only here does the current directory mean the person's project.
        Command::Spawn(mut args) => {
            args.opts.default_workspace_here();
            Command::Spawn(args)
        }
        Command::Swarm(mut args) => {
            args.opts.default_workspace_here();
            Command::Swarm(args)
        }
        other => other,
    };
    // A local spawn holds no store connection of its own here: with none open while it starts
    // the agent, its supervisor is forked rather than exec'd (see agentbox_engine::start).
    if let Command::Spawn(args) = command {
        let spec = args.opts.to_spec(&args.name)?;
        agentbox_engine::spawn::spawn_one(&agentbox_engine::home::Home::open()?, &spec)?;
        println!("{}", spec.name);
        return Ok(0);
    }
    let local = Local::open()?;
    match shared(&local, command) {
        Ok(result) => result,
        Err(other) => bail!("{other:?} has no local implementation"),
    }
}
