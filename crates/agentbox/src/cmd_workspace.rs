//! `fork`, `checkpoint`, `checkpoints`, `rollback` and `apply`, here or on a server. Paths are
//! the agent's, so everything printed is escaped for the terminal.

use agentbox_core::termfilter::escape_for_terminal;
use agentbox_engine::control::Control;
use agentbox_engine::snapshot::escape;
use agentbox_engine::workspace::apply::{Applied, ApplyRequest};
use agentbox_engine::workspace::changes::Change;
use anyhow::Result;

use crate::cli::{ApplyArgs, CheckpointArgs, CheckpointCommand, CheckpointsArgs, ForkArgs, RollbackArgs};

pub fn fork(c: &dyn Control, args: ForkArgs) -> Result<i32> {
    let made = c.fork(&args.src, &args.dst, args.at.as_deref(), args.stopped)?;
    println!("{}", made.name);
    Ok(0)
}

pub fn checkpoint(c: &dyn Control, args: CheckpointArgs) -> Result<i32> {
    match (args.command, args.name) {
        (Some(CheckpointCommand::Rm { name, ids }), _) => {
            let mut failed = 0;
            for id in &ids {
                match c.checkpoint_remove(&name, id) {
                    Ok(()) => println!("{id}"),
                    Err(e) => {
                        eprintln!("agentbox: {name} checkpoint {id}: {e}");
                        failed += 1;
                    }
                }
            }
            Ok(i32::from(failed > 0))
        }
        (None, Some(name)) => {
            let made = c.checkpoint(&name, &args.message)?;
            // The id alone on stdout, for scripts: `id=$(agentbox checkpoint NAME)`.
            println!("{}", made.id);
            Ok(0)
        }
        (None, None) => anyhow::bail!("name the agent: agentbox checkpoint NAME [-m MSG]"),
    }
}

pub fn checkpoints(c: &dyn Control, args: CheckpointsArgs) -> Result<i32> {
    let all = c.checkpoints(&args.name)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    println!("{:<4} {:<8} {:>10} {:>8}  MESSAGE", "ID", "AGE", "WRITTEN", "SHARED");
    for k in all {
        println!(
            "{:<4} {:<8} {:>6} KiB {:>8}  {}",
            k.id,
            agentbox_engine::agents::age(k.created_ms),
            k.bytes.div_ceil(1024),
            k.shared,
            escape_for_terminal(&k.message)
        );
    }
    Ok(0)
}

pub fn rollback(c: &dyn Control, args: RollbackArgs) -> Result<i32> {
    let rec = c.rollback(&args.name, &args.checkpoint)?;
    println!("{}", rec.name);
    Ok(0)
}

fn line(c: &Change) -> String {
    match &c.from {
        Some(from) => format!("{} {} -> {}", c.change, escape(from), escape(&c.path)),
        None => format!("{} {}", c.change, escape(&c.path)),
    }
}

pub fn apply(c: &dyn Control, args: ApplyArgs) -> Result<i32> {
    if args.patch {
        use std::io::Write;
        let patch = c.git_patch(&args.name)?;
        std::io::stdout().write_all(&patch)?;
        return Ok(0);
    }
    if let Some(branch) = args.branch {
        let req =
            agentbox_engine::workspace::gitapply::BranchRequest { branch, to: args.to, force: args.force };
        let made = c.git_branch(&args.name, &req)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&made)?);
        } else {
            println!("{}", made.commit);
            eprintln!(
                "branch {} made in {} on {}",
                made.branch,
                made.repository.display(),
                &made.base[..made.base.len().min(12)]
            );
        }
        return Ok(0);
    }
    let done: Applied = if args.undo {
        c.apply_undo(&args.name, args.force)?
    } else {
        let req = ApplyRequest { to: args.to, dry_run: args.dry_run, force: args.force, paths: args.paths };
        c.apply(&args.name, &req)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(0);
    }
    for ch in &done.changes {
        println!("{}", line(ch));
    }
    for s in &done.skipped {
        eprintln!("agentbox: skipped {}: {}", escape(&s.path), escape_for_terminal(&s.reason));
    }
    let verb = match (args.undo, done.dry_run) {
        (true, _) => "undone in",
        (false, true) => "would be written to",
        (false, false) => "written to",
    };
    eprintln!("{} path(s) {verb} {}", done.changes.len(), done.target.display());
    Ok(0)
}
