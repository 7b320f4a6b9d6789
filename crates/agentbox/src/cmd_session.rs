//! `logs`, `screen`, `send`, `broadcast`, `attach`.

use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::time::Duration;

use agentbox_supervisor::{attach as attach_agent, paths, AttachEnd, AttachOptions};
use anyhow::{bail, Context, Result};

use agentbox_engine::agents::{self, is_live_state, matches_tags};
use agentbox_engine::logs::{plain, tail_lines};

use crate::cli::{AttachArgs, BroadcastArgs, LogsArgs, ScreenArgs, SendArgs};
use agentbox_engine::Home;

pub fn logs(args: LogsArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let rec = agents::get(&store, &args.name)?;
    let path = paths::log(&agents::state_dir(&rec));
    let mut file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut all = Vec::new();
    file.read_to_end(&mut all)?;
    let text = if args.raw { all } else { plain(&all) };
    let shown = match args.lines {
        Some(n) => tail_lines(&text, n),
        None => &text[..],
    };
    // Raw bytes are the agent's: on a terminal they pass the same filter as attach.
    let mut out = agentbox_sys::SandboxOutput::new(std::io::stdout().lock(), std::io::stdout().is_terminal());
    out.write(shown)?;
    if !args.follow {
        return Ok(0);
    }
    let mut offset = file.stream_position()?;
    let mut buf = Vec::new();
    loop {
        let live = is_live_state(&agents::get(&store, &args.name)?.state);
        file.seek(SeekFrom::Start(offset))?;
        buf.clear();
        file.read_to_end(&mut buf)?;
        offset += buf.len() as u64;
        if !buf.is_empty() {
            out.write(&if args.raw { buf.clone() } else { plain(&buf) })?;
        } else if !live {
            return Ok(0);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn screen(args: ScreenArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let (rec, text) = agentbox_engine::session::screen(&store, &args.name, args.ansi)?;
    print_screen(&args, &rec.name, rec.state.as_str(), &text);
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

pub fn send(args: SendArgs) -> Result<i32> {
    if args.text.is_empty() && args.file.is_none() {
        bail!("nothing to send: give TEXT or --file FILE");
    }
    let home = Home::open()?;
    let store = home.store()?;
    agentbox_engine::session::send(
        &store,
        &args.name,
        &input(&args.text, args.file.as_deref(), !args.no_enter)?,
    )?;
    Ok(0)
}

pub fn broadcast(args: BroadcastArgs) -> Result<i32> {
    let home = Home::open()?;
    let store = home.store()?;
    let bytes = input(&args.text, None, !args.no_enter)?;
    let mut sent = 0;
    for rec in
        agents::all(&store)?.into_iter().filter(|a| is_live_state(&a.state) && matches_tags(a, &args.tags))
    {
        match agentbox_supervisor::send_input(&agents::state_dir(&rec), &bytes) {
            Ok(()) => sent += 1,
            Err(e) => eprintln!("agentbox: {}: {e}", rec.name),
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
    let end =
        attach_agent(&agents::state_dir(&rec), AttachOptions { read_only: args.read_only, detach_key })?;
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
