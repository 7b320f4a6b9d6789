//! What agents' sandboxes use: processes, CPU, memory, uptime (`ps`, `stats`, the dashboard).

use std::collections::HashMap;
use std::time::Duration;

use agentbox_store::AgentRecord;
use serde::{Deserialize, Serialize};

use crate::agents::{describe_state, is_live_state};

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

/// What one agent's sandbox uses now.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// One process of a sandbox (`top NAME`), as the host sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    /// The host's pid.
    pub pid: i32,
    pub ppid: i32,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    /// The command line (its arguments joined by spaces; the name in brackets if it has none).
    pub command: String,
}

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        format!("[{}]", comm.trim())
    } else {
        args.join(" ")
    }
}

/// The processes of an agent's sandbox (its init first), with CPU% over a short sample.
pub fn processes(agent: &AgentRecord) -> Vec<Process> {
    let Some(root) = agent.sandbox_pid.filter(|_| is_live_state(&agent.state)) else { return Vec::new() };
    let parents = parents();
    let pids = tree(root as i32, &parents);
    const SAMPLE: Duration = Duration::from_millis(250);
    let before: Vec<u64> = pids.iter().map(|p| ticks(*p)).collect();
    std::thread::sleep(SAMPLE);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    pids.iter()
        .zip(before)
        .map(|(pid, b)| Process {
            pid: *pid,
            ppid: parents.get(pid).copied().unwrap_or(0),
            cpu_percent: ticks(*pid).saturating_sub(b) as f64 / hz / SAMPLE.as_secs_f64() * 100.0,
            rss_bytes: rss_kib(*pid) * 1024,
            command: cmdline(*pid),
        })
        .collect()
}

/// Bytes of regular files below `path` (a file: its size), walked through descriptors without
/// following links; a tree deeper or larger than the walk allows counts what was seen.
pub fn disk_bytes(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    let mut total = 0u64;
    let _ = crate::tree::walk(path, crate::tree::Limits::UNLIMITED, &mut |e| {
        if e.kind == crate::tree::Kind::File {
            total += e.stat.st_size as u64;
        }
        Ok(())
    });
    total
}

/// What `stats` shows: agents by state and the disk their workspaces and logs use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub agents: usize,
    pub running: usize,
    pub by_state: std::collections::BTreeMap<String, usize>,
    pub workspace_bytes: u64,
    pub log_bytes: u64,
}

pub fn totals(agents: &[AgentRecord]) -> Totals {
    let mut t = Totals {
        agents: agents.len(),
        running: agents.iter().filter(|a| is_live_state(&a.state)).count(),
        by_state: Default::default(),
        workspace_bytes: 0,
        log_bytes: 0,
    };
    for a in agents {
        *t.by_state.entry(a.state.to_string()).or_default() += 1;
        let dir = crate::agents::state_dir(a);
        t.workspace_bytes += disk_bytes(&agentbox_supervisor::paths::workspace(&dir));
        t.log_bytes += disk_bytes(&agentbox_supervisor::paths::log(&dir));
    }
    t
}
