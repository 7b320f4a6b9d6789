//! `kill`, `killall`, `wait`, `rm`, `clean`.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::{CleanArgs, KillAllArgs, KillArgs, PurgeArgs, RmArgs, WaitArgs};
use crate::exit;
use agentbox_engine::agents::{self, is_live_state, matches_tags, wait_finished};
use agentbox_engine::lifecycle;
use agentbox_engine::Home;

pub fn kill(args: KillArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    if !is_live_state(&rec.state) {
        eprintln!("agent '{}' is already {}", rec.name, rec.state);
        return Ok(0);
    }
    lifecycle::kill(&store, &rec.name)?;
    println!("{}", rec.name);
    Ok(0)
}

/// Asks "question [y/N]" on the terminal; false without a terminal.
fn confirm(question: &str) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub fn killall(args: KillAllArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let targets: Vec<_> = agents::all(&store)?
        .into_iter()
        .filter(|a| is_live_state(&a.state) && matches_tags(a, &args.tags))
        .collect();
    // On a terminal, killing everything is confirmed first (scripts are not asked).
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    if !targets.is_empty()
        && args.tags.is_empty()
        && !args.force
        && interactive
        && !confirm(&format!("kill all {} running agents?", targets.len()))?
    {
        eprintln!("nothing killed");
        return Ok(1);
    }
    for rec in &targets {
        lifecycle::kill(&store, &rec.name)?;
        println!("{}", rec.name);
    }
    Ok(0)
}

pub fn wait(args: WaitArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    match wait_finished(&store, &args.name, args.timeout.map(Duration::from_secs))? {
        Some(rec) => Ok(rec.exit_code.map(|c| c as i32).unwrap_or(match rec.state.as_str() {
            "killed" => 137,
            _ => 1,
        })),
        None => {
            eprintln!("agentbox: '{}' still running after {}s", args.name, args.timeout.unwrap_or(0));
            Ok(exit::TIMED_OUT)
        }
    }
}

pub fn rm(args: RmArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    for name in &args.names {
        lifecycle::remove(&store, name, args.force)?;
        println!("{name}");
    }
    Ok(0)
}

pub fn purge(args: PurgeArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let all = agents::all(&store)?;
    if all.is_empty() {
        return Ok(0);
    }
    if !args.force && !confirm(&format!("kill and remove all {} agents, workspaces included?", all.len()))? {
        bail!("purge removes every agent and its workspace; confirm on a terminal or use --force");
    }
    for rec in &all {
        // Killed first if it runs.
        lifecycle::remove(&store, &rec.name, true)?;
        println!("{}", rec.name);
    }
    Ok(0)
}

pub fn clean(_args: CleanArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    for rec in agents::all(&store)?.into_iter().filter(|a| !is_live_state(&a.state)) {
        lifecycle::remove(&store, &rec.name, false)?;
        println!("{}", rec.name);
    }
    Ok(0)
}
