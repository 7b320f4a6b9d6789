//! `ps` and `stats`: what agents' sandboxes use, as the engine measures it.

use agentbox_engine::agents::{self, age, is_live_state};
use agentbox_engine::measure::{measure, totals};
use agentbox_engine::Home;
use agentbox_store::AgentRecord;
use anyhow::Result;

use crate::cli::{PsArgs, StatsArgs};

pub fn ps(args: PsArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let agents: Vec<AgentRecord> =
        agents::all(&store)?.into_iter().filter(|a| args.all || is_live_state(&a.state)).collect();
    let rows = measure(&agents);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:<20} {:<12} {:>6} {:>7} {:>10} {:>8}", "NAME", "STATE", "PROCS", "CPU%", "RSS", "UPTIME");
    for (r, a) in rows.iter().zip(&agents) {
        let up = if r.processes > 0 { a.started_at.map(age).unwrap_or_default() } else { "-".into() };
        println!(
            "{:<20} {:<12} {:>6} {:>7.1} {:>10} {:>8}",
            r.name,
            r.state,
            r.processes,
            r.cpu_percent,
            agentbox_core::format_size(r.rss_bytes),
            up
        );
    }
    Ok(0)
}

pub fn stats(args: StatsArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let t = totals(&agents::all(&store)?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(0);
    }
    println!("agents:      {} ({} running)", t.agents, t.running);
    for (s, n) in &t.by_state {
        println!("  {s:<10} {n}");
    }
    println!("workspaces:  {}", agentbox_core::format_size(t.workspace_bytes));
    println!("logs:        {}", agentbox_core::format_size(t.log_bytes));
    Ok(0)
}

pub fn top(args: crate::cli::TopArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    if !is_live_state(&rec.state) {
        anyhow::bail!("{} is {}: no processes (see `agentbox logs {}`)", rec.name, rec.state, rec.name);
    }
    let procs = agentbox_engine::measure::processes(&rec);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&procs)?);
        return Ok(0);
    }
    println!("{:<8} {:<8} {:>6} {:>10}  COMMAND", "PID", "PPID", "CPU%", "RSS");
    for p in &procs {
        println!(
            "{:<8} {:<8} {:>6.1} {:>10}  {}",
            p.pid,
            p.ppid,
            p.cpu_percent,
            format!("{} KiB", p.rss_bytes / 1024),
            p.command
        );
    }
    Ok(0)
}
