//! `kill`, `killall`, `wait`, `rm`, `purge`, `clean`, here or on a server.

use std::time::{Duration, Instant};

use agentbox_core::AgentState;
use agentbox_engine::control::Control;
use agentbox_engine::views::Filter;
use anyhow::{bail, Result};

use crate::cli::{CleanArgs, KillAllArgs, KillArgs, PurgeArgs, RmArgs, WaitArgs};
use crate::exit;

pub fn kill(c: &dyn Control, args: KillArgs) -> Result<i32> {
    let a = c.get(&args.name)?;
    if !a.is_live() {
        eprintln!("agent '{}' is already {}", a.name, a.state);
        return Ok(0);
    }
    c.kill(&a.name)?;
    println!("{}", a.name);
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

pub fn killall(c: &dyn Control, args: KillAllArgs) -> Result<i32> {
    let targets = c.list(&Filter { tags: args.tags.clone(), status: Some("running".into()) })?;
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
    for a in &targets {
        c.kill(&a.name)?;
        println!("{}", a.name);
    }
    Ok(0)
}

pub fn wait(c: &dyn Control, args: WaitArgs) -> Result<i32> {
    let deadline = args.timeout.and_then(|t| Instant::now().checked_add(Duration::from_secs(t)));
    loop {
        let a = c.get(&args.name)?;
        if !a.is_live() {
            return Ok(a.exit_code.map(|c| c as i32).unwrap_or(match a.state {
                AgentState::Killed => 137,
                _ => 1,
            }));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!("agentbox: '{}' still running after {}s", args.name, args.timeout.unwrap_or(0));
            return Ok(exit::TIMED_OUT);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn rm(c: &dyn Control, args: RmArgs) -> Result<i32> {
    for name in &args.names {
        c.remove(name, args.force)?;
        println!("{name}");
    }
    Ok(0)
}

pub fn purge(c: &dyn Control, args: PurgeArgs) -> Result<i32> {
    let all = c.list(&Filter::default())?;
    if all.is_empty() {
        return Ok(0);
    }
    if !args.force && !confirm(&format!("kill and remove all {} agents, workspaces included?", all.len()))? {
        bail!("purge removes every agent and its workspace; confirm on a terminal or use --force");
    }
    for a in &all {
        // Killed first if it runs.
        c.remove(&a.name, true)?;
        println!("{}", a.name);
    }
    Ok(0)
}

pub fn clean(c: &dyn Control, _args: CleanArgs) -> Result<i32> {
    for removed in c.clean()? {
        println!("{removed}");
    }
    Ok(0)
}
