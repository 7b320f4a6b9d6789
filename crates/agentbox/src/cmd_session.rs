//! `logs`, `screen`, `send`, `broadcast` (here or on a server) and `attach` (here; see
//! `remote_attach` for a server).

use std::io::IsTerminal;
use std::time::Duration;

use agentbox_engine::agents::{self, is_live_state};
use agentbox_engine::control::Control;
use agentbox_engine::logs::{Transcript, TERMINAL};
use agentbox_engine::views::Filter;
use agentbox_engine::Home;
use agentbox_supervisor::{attach as attach_agent, AttachEnd, AttachOptions};
use anyhow::{bail, Context, Result};

use crate::cli::{AttachArgs, BroadcastArgs, LogsArgs, ScreenArgs, SendArgs};

pub fn logs(c: &dyn Control, args: LogsArgs) -> Result<i32> {
    // Raw bytes are the agent's: on a terminal they pass the same filter as attach.
    let mut out = agentbox_sys::SandboxOutput::new(std::io::stdout().lock(), std::io::stdout().is_terminal());
    let mut offset = match (args.lines, args.raw) {
        // The last lines (as the screen showed them, or as bytes), read from the end: a huge log
        // costs what its end does.
        (Some(n), raw) => {
            let (tail, end) = c.log_tail(&args.name, n, raw)?;
            out.write(&tail)?;
            end
        }
        // Everything logged so far, chunk by chunk as it is read: rendered through a terminal
        // model (cursor movement drawn, not dropped), or as bytes.
        (None, raw) => {
            let mut transcript: Option<Transcript> = None;
            let mut offset = 0;
            loop {
                let chunk = c.log_range(&args.name, Some(offset), true)?;
                // Drawn at the sizes the terminal had (marks in the log's first chunk).
                let transcript = transcript.get_or_insert_with(|| {
                    Transcript::replaying(TERMINAL.0, TERMINAL.1, &chunk.sizes, chunk.offset)
                });
                transcript.at(chunk.offset);
                if raw {
                    out.write(&chunk.data)?;
                } else {
                    for line in transcript.feed(&chunk.data) {
                        out.write(format!("{line}\n").as_bytes())?;
                    }
                }
                offset = chunk.next_offset;
                if chunk.data.is_empty() || offset >= chunk.size {
                    break;
                }
            }
            if let (false, Some(transcript)) = (raw, transcript) {
                for line in transcript.finish() {
                    out.write(format!("{line}\n").as_bytes())?;
                }
            }
            offset
        }
    };
    if !args.follow {
        return Ok(0);
    }
    loop {
        let live = c.get(&args.name)?.is_live();
        let chunk = c.log_range(&args.name, Some(offset), args.raw)?;
        offset = chunk.next_offset;
        if !chunk.data.is_empty() {
            out.write(&chunk.data)?;
        } else if !live {
            return Ok(0);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
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
