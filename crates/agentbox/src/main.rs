//! The `agentbox` command line.
//!
//! The binary is single-threaded until a command needs more: `run` must clone its sandbox before
//! any thread exists, so nothing here starts a runtime.

mod cli;
mod cmd_doctor;
mod cmd_run;
mod exit;

use clap::Parser;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
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
    let code = match cli.command {
        cli::Command::Run(args) => cmd_run::run(*args),
        cli::Command::Doctor(args) => cmd_doctor::run(args),
        cli::Command::Version => {
            println!("agentbox {}", env!("CARGO_PKG_VERSION"));
            0
        }
    };
    std::process::exit(code);
}
