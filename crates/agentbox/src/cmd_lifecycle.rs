//! `kill`, `killall`, `wait`, `rm`, `purge`, `clean`, here or on a server.

use std::time::{Duration, Instant};

use agentbox_core::AgentState;
use agentbox_engine::control::Control;
use agentbox_engine::views::Filter;
use anyhow::{bail, Result};

use crate::cli::{
    CleanArgs, KillAllArgs, KillArgs, PurgeArgs, RmArgs, StartArgs, StopArgs, Targets, WaitArgs,
};
use crate::exit;

/// Runs `act` on every agent of `targets` (names in order, then those the tags select), printing
/// each name done on stdout and each failure on stderr; goes on past failures. Exit status 1 if
/// any failed, as docker's verbs do.
pub fn each(
    c: &dyn Control,
    targets: &Targets,
    mut act: impl FnMut(&dyn Control, &str) -> agentbox_engine::Result<()>,
) -> Result<i32> {
    let mut names = targets.names.clone();
    if !targets.tags.is_empty() {
        for a in c.list(&Filter { tags: targets.tags.clone(), status: None })? {
            if !names.contains(&a.name) {
                names.push(a.name);
            }
        }
    }
    let mut failed = 0;
    for name in &names {
        match act(c, name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("agentbox: {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 1 {
        eprintln!("agentbox: {failed} of {} failed", names.len());
    }
    Ok(i32::from(failed > 0))
}

pub fn kill(c: &dyn Control, args: KillArgs) -> Result<i32> {
    each(c, &args.targets, |c, name| {
        let a = c.get(name)?;
        if !a.is_live() {
            eprintln!("agentbox: {name} is already {}", a.state);
            return Ok(());
        }
        c.kill(name).map(drop)
    })
}

pub fn stop(c: &dyn Control, args: StopArgs) -> Result<i32> {
    let grace = Duration::from_secs(args.time);
    each(c, &args.targets, |c, name| {
        let a = c.get(name)?;
        // Also for one that is not running: one waiting to be restarted (`--restart`) is not.
        c.stop(name, grace)?;
        if !a.is_live() {
            eprintln!("agentbox: {name} is already {}", a.state);
        }
        Ok(())
    })
}

/// `pause` (or `resume`): the agents named, and with `--tag` the tagged ones that are running
/// (paused), so a tag does not name stopped agents as failures.
pub fn pause(c: &dyn Control, mut targets: Targets, pause: bool) -> Result<i32> {
    if !targets.tags.is_empty() {
        let status = Some(if pause { "running" } else { "paused" }.to_string());
        for a in c.list(&Filter { tags: std::mem::take(&mut targets.tags), status })? {
            let wanted = !pause || a.state == AgentState::Running;
            if wanted && !targets.names.contains(&a.name) {
                targets.names.push(a.name);
            }
        }
    }
    each(c, &targets, |c, name| match pause {
        true => c.pause(name).map(drop),
        false => c.resume(name).map(drop),
    })
}

/// `pause --after IDLE`: each agent named (or tagged) pauses whenever it has been idle that long.
pub fn pause_when_idle(c: &dyn Control, mut targets: Targets, after: Option<Duration>) -> Result<i32> {
    if !targets.tags.is_empty() {
        for a in c.list(&Filter { tags: std::mem::take(&mut targets.tags), status: None })? {
            if !targets.names.contains(&a.name) {
                targets.names.push(a.name);
            }
        }
    }
    each(c, &targets, |c, name| c.pause_when_idle(name, after).map(drop))
}

pub fn start(c: &dyn Control, args: StartArgs) -> Result<i32> {
    each(c, &args.targets, |c, name| {
        let a = c.get(name)?;
        if a.is_live() {
            return Err(agentbox_engine::Error::conflict(format!(
                "it is {} already (restart it with `agentbox restart {name}`)",
                a.state
            )));
        }
        c.restart(name).map(drop)
    })
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
    let targets = Targets { names: args.names, tags: Vec::new() };
    each(c, &targets, |c, name| c.remove(name, args.force))
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
