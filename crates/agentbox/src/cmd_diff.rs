//! `diff` and `verify`: the engine's answers, printed. Paths and subjects are the agent's, so
//! everything printed is escaped for the terminal.

use std::path::Path;

use agentbox_core::termfilter::escape_for_terminal;
use agentbox_engine::snapshot::escape;
use agentbox_engine::{diff, Home};
use anyhow::Result;

use crate::cli::{DiffArgs, VerifyArgs};

pub fn diff(args: DiffArgs) -> Result<i32> {
    let home = Home::open()?;
    let found = diff::diff(&home, &args.name, !args.no_git && !args.json)?;
    if args.json {
        let v: Vec<_> = found
            .changes
            .iter()
            .map(|c| serde_json::json!({ "change": c.change.to_string(), "path": c.path, "from": c.from }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    for c in &found.changes {
        match &c.from {
            Some(from) => println!("{} {} -> {}", c.change, escape(from), escape(&c.path)),
            None => println!("{} {}", c.change, escape(&c.path)),
        }
    }
    if let Some(lines) = found.git_status {
        println!("\ngit status (run in a sandbox):");
        for line in lines {
            println!("{}", escape_for_terminal(&line));
        }
    }
    Ok(0)
}

pub fn verify(args: VerifyArgs) -> Result<i32> {
    let home = Home::open()?;
    let found = diff::verify(&home, &args.name)?;
    let mut bad = 0;
    for c in &found.commits {
        let short = &c.hash[..c.hash.len().min(12)];
        let subject = escape(Path::new(&c.subject));
        match c.why {
            None => println!("ok        {short} {subject}"),
            Some(why) => {
                bad += 1;
                println!("NOT OURS  {short} {subject} ({why})");
            }
        }
    }
    let good = found.commits.len() - bad;
    println!("{good} commit(s) signed by {} ({}), {bad} not", args.name, found.did);
    Ok(if bad == 0 { 0 } else { 1 })
}
