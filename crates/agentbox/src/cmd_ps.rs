//! `ps` and `stats`: what the agents' processes use, and what agents occupy on disk.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use agentbox_store::AgentRecord;
use agentbox_supervisor::paths;
use anyhow::Result;
use serde::Serialize;

use crate::agents::{self, age, describe_state, is_live_state};
use crate::cli::{PsArgs, StatsArgs};
use crate::home::Home;

/// Every process's parent, from /proc.
fn parents() -> HashMap<i32, i32> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(ppid) =
                stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            {
                out.insert(pid, ppid);
            }
        }
    }
    out
}

/// `root` and all its descendants.
fn tree(root: i32, parents: &HashMap<i32, i32>) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// CPU ticks (user + system) of a process.
fn ticks(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[derive(Serialize)]
pub struct Usage {
    pub name: String,
    pub state: String,
    pub processes: usize,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub uptime_seconds: i64,
}

/// Processes, CPU% (over a short sample, like top), RSS and uptime of each agent's sandbox.
pub fn measure(agents: &[AgentRecord]) -> Vec<Usage> {
    let parents = parents();
    let trees: Vec<Vec<i32>> = agents
        .iter()
        .map(|a| match (is_live_state(&a.state), a.sandbox_pid) {
            (true, Some(p)) => tree(p as i32, &parents),
            _ => vec![],
        })
        .collect();
    // CPU% over a short sample, like top.
    const SAMPLE: Duration = Duration::from_millis(250);
    let before: Vec<u64> = trees.iter().map(|t| t.iter().map(|p| ticks(*p)).sum()).collect();
    std::thread::sleep(SAMPLE);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    agents
        .iter()
        .zip(&trees)
        .zip(before)
        .map(|((a, t), b)| {
            let after: u64 = t.iter().map(|p| ticks(*p)).sum();
            Usage {
                name: a.name.clone(),
                state: describe_state(a),
                processes: t.len(),
                cpu_percent: (after.saturating_sub(b)) as f64 / hz / SAMPLE.as_secs_f64() * 100.0,
                rss_bytes: t.iter().map(|p| rss_kib(*p)).sum::<u64>() * 1024,
                uptime_seconds: a
                    .started_at
                    .filter(|_| !t.is_empty())
                    .map(|s| (agentbox_store::now_ms() - s) / 1000)
                    .unwrap_or(0),
            }
        })
        .collect()
}

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

/// Bytes of regular files below `dir`, never following symlinks.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| disk_bytes(&e.path())).sum()
}

pub fn stats(args: StatsArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let agents = agents::all(&store)?;
    let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut ws, mut logs) = (0u64, 0u64);
    for a in &agents {
        *by_state.entry(a.state.to_string()).or_default() += 1;
        let dir = agents::state_dir(a);
        ws += disk_bytes(&paths::workspace(&dir));
        logs += disk_bytes(&paths::log(&dir));
    }
    let running = agents.iter().filter(|a| is_live_state(&a.state)).count();
    if args.json {
        let v = serde_json::json!({
            "agents": agents.len(), "running": running, "by_state": by_state,
            "workspace_bytes": ws, "log_bytes": logs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("agents:      {} ({} running)", agents.len(), running);
    for (s, n) in &by_state {
        println!("  {s:<10} {n}");
    }
    println!("workspaces:  {}", agentbox_core::format_size(ws));
    println!("logs:        {}", agentbox_core::format_size(logs));
    Ok(0)
}
