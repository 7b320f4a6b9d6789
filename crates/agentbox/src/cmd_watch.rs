//! `grid` (a tmux session with one window per running agent, each attached) and `watch` (a live
//! table of every agent with the last lines of its output).

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::time::Duration;

use agentbox_supervisor::paths;
use anyhow::{bail, Context, Result};

use crate::cli::{GridArgs, WatchArgs};
use agentbox_engine::agents::{self, is_live_state};
use agentbox_engine::measure::measure;
use agentbox_engine::Home;

pub const GRID_SESSION: &str = "agentbox-grid";

pub fn grid(args: GridArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let running: Vec<_> = agents::all(&store)?.into_iter().filter(|a| is_live_state(&a.state)).collect();
    if running.is_empty() {
        bail!("no running agents (see `agentbox list`)");
    }
    let exe = std::env::current_exe().context("locating the agentbox binary")?;
    let tmux = |args: &[&str]| -> Result<()> {
        let st = Command::new("tmux")
            .args(args)
            .env("AGENTBOX_HOME", &home.root)
            .status()
            .context("running tmux (agentbox grid needs tmux: apt-get install tmux)")?;
        if !st.success() {
            bail!("tmux {} failed ({st})", args.first().copied().unwrap_or(""));
        }
        Ok(())
    };
    // A fresh session each time, so it shows the agents running now.
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", GRID_SESSION])
        .stderr(std::process::Stdio::null())
        .status();
    for (i, a) in running.iter().enumerate() {
        let attach = format!("{} attach {}", shell_quote(&exe.to_string_lossy()), a.name);
        if i == 0 {
            tmux(&["new-session", "-d", "-s", GRID_SESSION, "-n", &a.name, &attach])?;
            // A bell in any agent's window shows in the status bar (an agent waiting for you).
            tmux(&["set-option", "-t", GRID_SESSION, "monitor-bell", "on"])?;
        } else {
            tmux(&["new-window", "-d", "-t", GRID_SESSION, "-n", &a.name, &attach])?;
        }
    }
    if args.no_attach || !std::io::stdin().is_terminal() {
        println!("{GRID_SESSION}");
        return Ok(0);
    }
    let st = Command::new("tmux")
        .args(["attach-session", "-t", GRID_SESSION])
        .status()
        .context("attaching to tmux")?;
    Ok(st.code().unwrap_or(1))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The last `n` lines of an agent's log as plain text (reads only the end of the file).
fn last_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return vec![] };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&agentbox_engine::logs::plain(&buf)).replace('\r', "");
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.chars().filter(|c| !c.is_control()).take(120).collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn frame(home: &Home, lines: usize) -> Result<String> {
    let store = home.store()?;
    let all = agents::all(&store)?;
    let usage = measure(&all);
    let mut out = format!("{:<20} {:<12} {:>6} {:>10}  LAST OUTPUT\n", "NAME", "STATE", "CPU%", "RSS");
    for (a, u) in all.iter().zip(usage) {
        let rss = if u.processes > 0 { agentbox_core::format_size(u.rss_bytes) } else { "-".into() };
        out.push_str(&format!("{:<20} {:<12} {:>6.1} {:>10}\n", a.name, u.state, u.cpu_percent, rss));
        for l in last_lines(&paths::log(&agents::state_dir(a)), lines) {
            out.push_str(&format!("    | {l}\n"));
        }
    }
    Ok(out)
}

pub fn watch(args: WatchArgs) -> Result<i32> {
    let home = Home::open()?;
    let interval = Duration::from_secs_f64(args.interval.max(0.2));
    let mut stdout = std::io::stdout();
    loop {
        let f = frame(&home, args.lines)?;
        if args.once {
            stdout.write_all(f.as_bytes())?;
            return Ok(0);
        }
        // Home the cursor and clear, then draw: no flicker from a blank screen in between.
        stdout.write_all(
            format!("\x1b[H\x1b[2J{f}\n(every {:.1}s; Ctrl-C to quit)", interval.as_secs_f64()).as_bytes(),
        )?;
        stdout.flush()?;
        std::thread::sleep(interval);
    }
}
