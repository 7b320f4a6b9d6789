//! Starting an agent's supervisor (`__supervise`, the same binary, detached) and typing its
//! first keys: shared by spawn and restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use agentbox_core::Field;

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::home::Home;

/// Types the profile's startup keys, then the prompt, into a freshly started agent.
pub fn type_after_start(dir: &Path, startup_keys: &[u8], prompt: Option<&[u8]>) -> Result<()> {
    if !startup_keys.is_empty() {
        agentbox_supervisor::send_input(dir, startup_keys).context("typing the profile's startup keys")?;
    }
    if let Some(p) = prompt {
        agentbox_supervisor::send_input(dir, p).context("typing the prompt")?;
    }
    Ok(())
}

/// Starts the agent's supervisor and waits for its first line: `ok`, or why it could not start.
pub fn start_supervisor(home: &Home, name: &str, dir: &Path) -> Result<()> {
    let log = std::fs::File::create(dir.join("supervisor.log")).context("creating supervisor.log")?;
    let mut child = crate::home::self_command()
        .arg("__supervise")
        .arg(name)
        .env("AGENTBOX_HOME", &home.root)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the supervisor")?;
    let mut line = String::new();
    let mut reader = child.stdout.take().map(BufReader::new);
    if let Some(out) = reader.as_mut() {
        // Notes come first (a VM's snapshot in the making), for the person who waits.
        loop {
            line.clear();
            out.read_line(&mut line).context("waiting for the supervisor")?;
            match line.trim_end().strip_prefix("note: ") {
                Some(note) => eprintln!("agentbox: {note}"),
                None => break,
            }
        }
    }
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ok" => {
            crate::ports::publish_for(home, name, dir);
            Ok(())
        }
        Some(msg) => {
            let mut second = String::new();
            if let Some(out) = reader.as_mut() {
                let _ = out.read_line(&mut second);
            }
            if second.trim_end() == agentbox_supervisor::INVALID_COMMAND {
                bail!(Error::invalid(msg).for_field(Field::Command));
            }
            bail!("{msg}")
        }
        None => {
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            bail!("the supervisor exited before the agent started: {}", log.trim())
        }
    }
}
