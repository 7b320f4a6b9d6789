//! `grid` (a tmux session of tiled panes, one per running agent, each attached) and `watch` (a live
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
        // `=`: this session exactly, not one whose name starts the same.
        .args(["kill-session", "-t", &format!("={GRID_SESSION}")])
        .stderr(std::process::Stdio::null())
        .status();
    // Tiled panes, `per_window` to a window; each pane a live attach that leaves the agent's
    // size alone (a pane is smaller than the agent's terminal; others see it whole).
    let made = |args: &[&str]| -> Result<String> {
        // `-P -F` go right after the verb: what follows the shell command is its arguments.
        let (verb, rest) = args.split_first().context("a tmux verb")?;
        let out = Command::new("tmux")
            .arg(verb)
            .args(["-P", "-F", "#{pane_id}"])
            .args(rest)
            .env("AGENTBOX_HOME", &home.root)
            .output()
            .context("running tmux (agentbox grid needs tmux: apt-get install tmux)")?;
        if !out.status.success() {
            bail!(
                "tmux {} failed: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let per = usize::from(args.per_window);
    for (i, a) in running.iter().enumerate() {
        // The home goes with the command: a tmux server that already runs has its own
        // environment.
        let attach = format!(
            "env AGENTBOX_HOME={} {} attach --keep-size {}",
            shell_quote(&home.root.to_string_lossy()),
            shell_quote(&exe.to_string_lossy()),
            a.name
        );
        let window = format!("agents-{}", i / per + 1);
        let target = format!("{GRID_SESSION}:{window}");
        let pane = match (i, i % per) {
            (0, _) => {
                let p = made(&[
                    "new-session",
                    "-d",
                    "-s",
                    GRID_SESSION,
                    "-n",
                    &window,
                    "-x",
                    "240",
                    "-y",
                    "60",
                    &attach,
                ])?;
                // A bell in any agent's pane shows in the status bar (an agent waiting for you).
                tmux(&["set-option", "-t", GRID_SESSION, "monitor-bell", "on"])?;
                p
            }
            (_, 0) => made(&["new-window", "-d", "-t", GRID_SESSION, "-n", &window, &attach])?,
            _ => {
                let p = made(&["split-window", "-d", "-t", &target, &attach])?;
                tmux(&["select-layout", "-t", &target, "tiled"])?;
                p
            }
        };
        // Each window's borders name the pane's agent from an option of the pane's own, which
        // the agent's output cannot change (a title it prints would be taken for another's).
        // A pane whose agent ended at once stays, saying so, instead of taking the layout down.
        if i % per == 0 {
            for (opt, value) in [("pane-border-status", "top"), ("pane-border-format", " #{@agent} ")] {
                tmux(&["set-option", "-w", "-t", &target, opt, value])?;
            }
            tmux(&["set-option", "-w", "-t", &target, "remain-on-exit", "on"])?;
        }
        let _ = tmux(&["set-option", "-p", "-t", &pane, "@agent", &a.name]);
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

/// The table; the agent at `selected` (if any) marked. Returns it and the agents' names in
/// order.
fn frame(home: &Home, lines: usize, selected: Option<usize>) -> Result<(String, Vec<String>)> {
    let store = home.store()?;
    let all = agents::all(&store)?;
    let usage = measure(&all);
    let mut out = format!("  {:<20} {:<12} {:>6} {:>10}  LAST OUTPUT\n", "NAME", "STATE", "CPU%", "RSS");
    for (i, (a, u)) in all.iter().zip(usage).enumerate() {
        let rss = if u.processes > 0 { agentbox_core::format_size(u.rss_bytes) } else { "-".into() };
        let row = format!("{:<20} {:<12} {:>6.1} {:>10}", a.name, u.state, u.cpu_percent, rss);
        if selected == Some(i) {
            out.push_str(&format!("\x1b[7m> {row}\x1b[0m\n"));
        } else {
            out.push_str(&format!("  {row}\n"));
        }
        for l in last_lines(&paths::log(&agents::state_dir(a)), lines) {
            out.push_str(&format!("      | {l}\n"));
        }
    }
    Ok((out, all.into_iter().map(|a| a.name).collect()))
}

/// A key of `watch`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Quit,
    Up,
    Down,
    Attach,
}

/// The keys in what the terminal sent: q (or Ctrl-C) quits, arrows or k/j select, Enter attaches.
fn keys(bytes: &[u8]) -> Vec<Key> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match &bytes[i..] {
            [0x1b, b'[', b'A', ..] | [0x1b, b'O', b'A', ..] => {
                out.push(Key::Up);
                i += 3;
                continue;
            }
            [0x1b, b'[', b'B', ..] | [0x1b, b'O', b'B', ..] => {
                out.push(Key::Down);
                i += 3;
                continue;
            }
            [b'q' | b'Q' | 0x03, ..] => out.push(Key::Quit),
            [b'k', ..] => out.push(Key::Up),
            [b'j', ..] => out.push(Key::Down),
            [b'\r' | b'\n', ..] => out.push(Key::Attach),
            _ => {}
        }
        i += 1;
    }
    out
}

pub fn watch(args: WatchArgs) -> Result<i32> {
    let home = Home::open()?;
    let interval = Duration::from_secs_f64(args.interval.max(0.2));
    let mut stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let interactive = !args.once && stdin.is_terminal();
    let mut selected = 0usize;
    // Raw for as long as it runs (keys typed while a frame is drawn are not echoed nor lost),
    // cooked only while a person is attached to an agent; the guard restores the terminal
    // however this ends.
    let mut raw = interactive.then(|| agentbox_sys::RawTerminal::enter(std::os::fd::AsFd::as_fd(&stdin)));
    let mut note = String::new();
    loop {
        let (f, names) = frame(&home, args.lines, interactive.then_some(selected))?;
        selected = selected.min(names.len().saturating_sub(1));
        if !interactive {
            stdout.write_all(f.as_bytes())?;
            if args.once {
                return Ok(0);
            }
            stdout.write_all(format!("\n(every {:.1}s)\n", interval.as_secs_f64()).as_bytes())?;
            stdout.flush()?;
            std::thread::sleep(interval);
            continue;
        }
        // Home the cursor and clear, then draw: no flicker from a blank screen in between.
        stdout.write_all(
            format!(
                "\x1b[H\x1b[2J{}\r\n{note}(every {:.1}s; arrows select, Enter attaches, q quits)",
                f.replace('\n', "\r\n"),
                interval.as_secs_f64()
            )
            .as_bytes(),
        )?;
        stdout.flush()?;
        let mut fds =
            [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&stdin), nix::poll::PollFlags::POLLIN)];
        let ms = u16::try_from(interval.as_millis()).unwrap_or(u16::MAX);
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0);
        let mut buf = [0u8; 64];
        let n = if ready > 0 { nix::unistd::read(&stdin, &mut buf).unwrap_or(0) } else { 0 };
        for key in keys(&buf[..n]) {
            match key {
                Key::Quit => {
                    stdout.write_all(b"\r\n")?;
                    return Ok(0);
                }
                Key::Up => selected = selected.saturating_sub(1),
                Key::Down => selected = (selected + 1).min(names.len().saturating_sub(1)),
                Key::Attach => {
                    if let Some(name) = names.get(selected) {
                        stdout.write_all(b"\x1b[H\x1b[2J")?;
                        stdout.flush()?;
                        drop(raw.take());
                        let exe = std::env::current_exe().context("locating the agentbox binary")?;
                        let out = Command::new(exe)
                            .args(["attach", name])
                            .stderr(std::process::Stdio::piped())
                            .spawn();
                        note = match out.and_then(|c| c.wait_with_output()) {
                            Ok(o) if o.status.success() => String::new(),
                            Ok(o) => format!("{}\r\n", String::from_utf8_lossy(&o.stderr).trim()),
                            Err(e) => format!("agentbox: attach {name}: {e}\r\n"),
                        };
                        raw = Some(agentbox_sys::RawTerminal::enter(std::os::fd::AsFd::as_fd(&stdin)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_reads_its_keys() {
        assert_eq!(
            keys(b"\x1b[B\x1b[Bj\x1b[Ak\r"),
            [Key::Down, Key::Down, Key::Down, Key::Up, Key::Up, Key::Attach]
        );
        assert_eq!(keys(b"xq"), [Key::Quit]);
        assert_eq!(keys(b"\x03"), [Key::Quit]);
        assert!(keys(b"\x1b").is_empty());
    }
}
