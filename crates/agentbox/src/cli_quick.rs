//! The verbs whose start-up time is the product's (`run` and `spawn`: a sandbox per call),
//! parsed by a command that knows only them. Building the whole command tree, some 90 verbs with
//! their options, costs about half a millisecond: a tenth of a whole `run`. Only a parse that
//! succeeds is taken from here, into the same [`Cli`] the whole tree gives; help, errors and
//! every other verb go to the whole tree, so what a person sees does not change.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::cli::{Cli, Command, Globals, RunArgs, SpawnArgs};

#[derive(Debug, Parser)]
#[command(name = "agentbox")]
struct QuickCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: QuickCommand,
}

#[derive(Debug, Subcommand)]
enum QuickCommand {
    Run(Box<RunArgs>),
    Spawn(Box<SpawnArgs>),
}

/// `args` parsed as the whole tree would, when they name `run` or `spawn` first and parse
/// cleanly; `None` otherwise (the whole tree then parses them, and says what is wrong).
pub fn parse(args: &[OsString]) -> Option<Cli> {
    if !matches!(args.get(1).and_then(|a| a.to_str()), Some("run" | "spawn")) {
        return None;
    }
    let quick = QuickCli::try_parse_from(args).ok()?;
    let command = match quick.command {
        QuickCommand::Run(a) => Command::Run(a),
        QuickCommand::Spawn(a) => Command::Spawn(a),
    };
    Some(Cli { globals: quick.globals, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    /// What parses here parses to what the whole tree gives, options, globals and trailing
    /// command included.
    #[test]
    fn the_same_cli_as_the_whole_tree() {
        for line in [
            "agentbox run -- true",
            "agentbox run -w /tmp/p --network none --memory 1G -e A=1 -- sh -c x",
            "agentbox run --backend vm --uid 0 -v /a:/b:ro -- true",
            "agentbox run --server http://h:1 -- true",
            "agentbox spawn a1 -- sleep 1",
            "agentbox spawn a1 --profile claude --allow example.com --context prod",
            "agentbox spawn a1 --publish 8080 -w /tmp/p -- sh -c x --not-ours",
        ] {
            let whole = Cli::try_parse_from(args(line)).unwrap_or_else(|e| panic!("{line}: {e}"));
            let quick = parse(&args(line)).unwrap_or_else(|| panic!("{line}: not parsed quickly"));
            assert_eq!(format!("{quick:?}"), format!("{whole:?}"), "{line}");
        }
    }

    /// Help, errors and the other verbs are the whole tree's.
    #[test]
    fn the_rest_goes_to_the_whole_tree() {
        for line in [
            "agentbox run --help",
            "agentbox run -h",
            "agentbox spawn",
            "agentbox run --no-such-flag -- true",
            "agentbox run --server a --context b -- true",
            "agentbox --server http://h:1 run -- true",
            "agentbox ls",
            "agentbox",
        ] {
            assert!(parse(&args(line)).is_none(), "{line}");
        }
    }
}
