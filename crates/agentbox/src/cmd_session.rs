//! `logs`, `screen`, `send`, `broadcast` (here or on a server) and `attach` (here; see
//! `remote_attach` for a server).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::Duration;

use agentbox_engine::agents::{self, is_live_state};
use agentbox_engine::control::Control;
use agentbox_engine::logs::{StampedLines, Transcript, TERMINAL};
use agentbox_engine::views::Filter;
use agentbox_engine::Home;
use agentbox_supervisor::{attach as attach_agent, AttachEnd, AttachOptions};
use anyhow::{bail, Context, Result};

use crate::cli::{AttachArgs, BroadcastArgs, LogsArgs, ScreenArgs, SendArgs};

pub fn logs(c: &dyn Control, args: LogsArgs) -> Result<i32> {
    // Raw bytes are the agent's: on a terminal they pass the same filter as attach.
    let mut out = agentbox_sys::SandboxOutput::new(std::io::stdout().lock(), std::io::stdout().is_terminal());
    let window = args.since.is_some() || args.until.is_some() || args.timestamps;
    let mut stamped = args.timestamps.then(StampedLines::new);
    let mut offset = match args.lines {
        // The last lines (as the screen showed them, or as bytes), read from the end: a huge log
        // costs what its end does.
        Some(n) if !window => {
            let (tail, end) = c.log_tail(&args.name, n, args.raw)?;
            out.write(&tail)?;
            end
        }
        // Everything logged in the window, chunk by chunk as it is read.
        _ => {
            let start = args.since.map(|ms| c.log_offset(&args.name, ms)).transpose()?.unwrap_or(0);
            let end = args.until.map(|ms| c.log_offset(&args.name, ms.saturating_add(1))).transpose()?;
            let mut sink = Sink { out: &mut out, keep: args.lines, kept: VecDeque::new(), raw: Vec::new() };
            let offset = read_window(c, &args, start, end, stamped.as_mut(), &mut sink)?;
            sink.finish()?;
            offset
        }
    };
    if !args.follow {
        return Ok(0);
    }
    loop {
        let live = c.get(&args.name)?.is_live();
        let chunk = c.log_range(&args.name, Some(offset), args.raw || stamped.is_some())?;
        offset = chunk.next_offset;
        if !chunk.data.is_empty() {
            match stamped.as_mut() {
                Some(s) => {
                    for line in s.feed(chunk.offset, &chunk.data, &chunk.times) {
                        out.write(stamp_line(line).as_bytes())?;
                    }
                }
                None => out.write(&chunk.data)?,
            }
        } else if !live {
            if let Some(last) = stamped.and_then(StampedLines::finish) {
                out.write(stamp_line(last).as_bytes())?;
            }
            return Ok(0);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where `logs` output goes: straight out, or (with `-n` and a window) only the last lines.
struct Sink<'a, W: std::io::Write> {
    out: &'a mut agentbox_sys::SandboxOutput<W>,
    keep: Option<usize>,
    kept: VecDeque<String>,
    /// Raw bytes kept for `-n` (their last lines).
    raw: Vec<u8>,
}

impl<W: std::io::Write> Sink<'_, W> {
    fn line(&mut self, line: String) -> Result<()> {
        match self.keep {
            None => self.out.write(format!("{line}\n").as_bytes())?,
            Some(n) => {
                self.kept.push_back(line);
                while self.kept.len() > n {
                    self.kept.pop_front();
                }
            }
        }
        Ok(())
    }

    fn bytes(&mut self, data: &[u8]) -> Result<()> {
        match self.keep {
            None => self.out.write(data)?,
            Some(n) => {
                self.raw.extend_from_slice(data);
                self.raw = agentbox_engine::logs::tail_lines(&self.raw, n + 1).to_vec();
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        if let Some(n) = self.keep {
            self.out.write(agentbox_engine::logs::tail_lines(&self.raw, n))?;
            for line in self.kept {
                self.out.write(format!("{line}\n").as_bytes())?;
            }
        }
        Ok(())
    }
}

/// Reads the log from `start` to `end` (or its end) into `sink`: rendered through a terminal
/// model (cursor movement drawn, not dropped, each part at the size the terminal had), as
/// bytes, or as stamped lines. Returns where it stopped (for a follower to go on from).
fn read_window<W: std::io::Write>(
    c: &dyn Control,
    args: &LogsArgs,
    start: u64,
    end: Option<u64>,
    mut stamped: Option<&mut StampedLines>,
    sink: &mut Sink<'_, W>,
) -> Result<u64> {
    let mut transcript: Option<Transcript> = None;
    let mut offset = start;
    while end.is_none_or(|e| offset < e) {
        let mut chunk = c.log_range(&args.name, Some(offset), true)?;
        if let Some(e) = end {
            chunk.data.truncate(usize::try_from(e.saturating_sub(chunk.offset)).unwrap_or(usize::MAX));
        }
        let at = chunk.offset;
        if args.raw {
            sink.bytes(&chunk.data)?;
        } else if let Some(s) = stamped.as_deref_mut() {
            for line in s.feed(at, &chunk.data, &chunk.times) {
                sink.line(stamp_line(line).trim_end().to_string())?;
            }
        } else {
            let t = transcript
                .get_or_insert_with(|| Transcript::replaying(TERMINAL.0, TERMINAL.1, &chunk.sizes, at));
            t.at(at);
            for line in t.feed(&chunk.data) {
                sink.line(line)?;
            }
        }
        offset = at + chunk.data.len() as u64;
        if chunk.data.is_empty() || offset >= chunk.size {
            break;
        }
    }
    if let Some(t) = transcript {
        for line in t.finish() {
            sink.line(line)?;
        }
    }
    // Unless a follower goes on with it, a last unended line is the window's.
    if let (true, Some(s)) = (end.is_some() || !args.follow, stamped) {
        if let Some(last) = std::mem::take(s).finish() {
            sink.line(stamp_line(last).trim_end().to_string())?;
        }
    }
    Ok(offset)
}

/// A line as `logs --timestamps` prints it: its time (UTC, to the second), a space, the text.
fn stamp_line((ms, text): (Option<u64>, String)) -> String {
    let time = match ms {
        Some(ms) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        // A log from before agentbox kept times.
        None => " ".repeat(20),
    };
    format!("{time} {text}\n")
}

pub fn screen(c: &dyn Control, args: ScreenArgs) -> Result<i32> {
    let s = c.screen(&args.name, args.ansi)?;
    print_screen(&args, &s.name, &s.state, &s.screen);
    Ok(0)
}

/// Prints a screen the way `screen` does, whether it came from a supervisor or a server.
pub fn print_screen(args: &ScreenArgs, name: &str, state: &str, text: &str) {
    if args.json {
        println!("{}", serde_json::json!({ "name": name, "state": state, "screen": text }));
    } else {
        let mut out =
            agentbox_sys::SandboxOutput::new(std::io::stdout().lock(), std::io::stdout().is_terminal());
        let _ = out.write(text.as_bytes());
        if !args.ansi && !text.ends_with('\n') {
            let _ = out.write(b"\n");
        }
    }
}

fn input(text: &[String], file: Option<&std::path::Path>, enter: bool) -> Result<Vec<u8>> {
    let mut bytes = match file {
        Some(f) => std::fs::read(f).with_context(|| format!("--file {}", f.display()))?,
        None => text.join(" ").into_bytes(),
    };
    if enter {
        bytes.push(b'\r');
    }
    Ok(bytes)
}

pub fn send(c: &dyn Control, args: SendArgs) -> Result<i32> {
    if args.text.is_empty() && args.file.is_none() {
        bail!("nothing to send: give TEXT or --file FILE");
    }
    c.send(&args.name, &input(&args.text, args.file.as_deref(), !args.no_enter)?)?;
    Ok(0)
}

pub fn broadcast(c: &dyn Control, args: BroadcastArgs) -> Result<i32> {
    let bytes = input(&args.text, None, !args.no_enter)?;
    let mut sent = 0;
    let running = Filter { tags: args.tags.clone(), status: Some("running".into()) };
    for a in c.list(&running)? {
        match c.send(&a.name, &bytes) {
            Ok(()) => sent += 1,
            Err(e) => eprintln!("agentbox: {}: {e}", a.name),
        }
    }
    eprintln!("sent to {sent} agent(s)");
    Ok(0)
}

/// `ctrl-]`, `ctrl-a` ... `ctrl-z`, `ctrl-\`, `ctrl-^`, `ctrl-_` -> the control byte.
pub fn parse_detach_key(s: &str) -> Result<u8, String> {
    let lower = s.to_ascii_lowercase();
    let key = lower.strip_prefix("ctrl-").or_else(|| lower.strip_prefix('^'));
    match key.map(str::as_bytes) {
        Some([c @ b'a'..=b'z']) => Ok(c - b'a' + 1),
        Some([b'[']) => Err("ctrl-[ is Escape, which programs need; choose another key".into()),
        Some([c @ (b'\\' | b']' | b'^' | b'_')]) => Ok(c - b'@'),
        _ => Err(format!("invalid detach key '{s}': use ctrl-<letter> or ctrl-], ctrl-\\, ctrl-^, ctrl-_")),
    }
}

/// The detach byte: --detach-key, else AGENTBOX_DETACH_KEY, else Ctrl-].
pub fn detach_key(args: &AttachArgs) -> Result<u8> {
    match args.detach_key.clone().or_else(|| std::env::var("AGENTBOX_DETACH_KEY").ok()) {
        Some(k) => parse_detach_key(&k).map_err(anyhow::Error::msg),
        None => Ok(0x1d),
    }
}

pub fn attach(args: AttachArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    if !is_live_state(&rec.state) {
        bail!("agent '{}' is {}; see its output with `agentbox logs {}`", rec.name, rec.state, rec.name);
    }
    let detach_key = detach_key(&args)?;
    let end = attach_agent(
        &agents::state_dir(&rec),
        AttachOptions { read_only: args.read_only, keep_size: args.keep_size, detach_key },
    )?;
    match end {
        AttachEnd::Detached => {
            // On the terminal, like tmux's "[detached]": attach's output is the terminal.
            println!("\r\n[detached from {}]", rec.name);
            Ok(0)
        }
        AttachEnd::Exited(code) => {
            println!("\r\n[{} exited with status {code}]", rec.name);
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_key("ctrl-]"), Ok(0x1d));
        assert_eq!(parse_detach_key("ctrl-a"), Ok(1));
        assert_eq!(parse_detach_key("^Q"), Ok(17));
        assert_eq!(parse_detach_key("ctrl-\\"), Ok(0x1c));
        assert!(parse_detach_key("ctrl-[").is_err());
        assert!(parse_detach_key("x").is_err());
    }
}
