//! Looking up agents and keeping their recorded state honest.

use std::path::PathBuf;
use std::time::Duration;

use agentbox_store::{AgentRecord, Store};
use anyhow::Result;

/// A state that means the agent may still be running.
pub fn is_live_state(state: &str) -> bool {
    matches!(state, "starting" | "running")
}

/// Whether the recorded supervisor process still exists (and is that agent's supervisor).
fn supervisor_alive(rec: &AgentRecord) -> bool {
    let Some(pid) = rec.supervisor_pid else { return false };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&&b"__supervise"[..]) && args.contains(&rec.name.as_bytes())
}

/// Reconciles a record that says "running" with reality: a supervisor that vanished (killed with
/// SIGKILL, machine rebooted) took its sandbox with it, so the agent is recorded as failed.
pub fn refresh(store: &Store, mut rec: AgentRecord) -> Result<AgentRecord> {
    let stale_start = rec.state == "starting" && agentbox_store::now_ms() - rec.created_at > 60_000;
    if (rec.state == "running" && !supervisor_alive(&rec)) || stale_start {
        store.mark_finished(&rec.name, "failed", None, "the supervisor is gone")?;
        rec = store.get(&rec.name)?;
    }
    Ok(rec)
}

pub fn get(store: &Store, name: &str) -> Result<AgentRecord> {
    agentbox_core::validate_name(name)?;
    refresh(store, store.get(name)?)
}

pub fn all(store: &Store) -> Result<Vec<AgentRecord>> {
    store.list()?.into_iter().map(|r| refresh(store, r)).collect()
}

pub fn state_dir(rec: &AgentRecord) -> PathBuf {
    PathBuf::from(&rec.state_dir)
}

/// Parses `KEY=VALUE` for `--tag`.
/// Control characters are refused in both: tags are printed on terminals (`list`).
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v))
            if !k.is_empty()
                && !k.contains(char::is_whitespace)
                && !k.contains(char::is_control)
                && !v.contains(char::is_control) =>
        {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("invalid tag {s:?}: use KEY=VALUE without spaces in KEY or control characters")),
    }
}

pub fn matches_tags(rec: &AgentRecord, tags: &[(String, String)]) -> bool {
    tags.iter().all(|t| rec.tags.contains(t))
}

/// Waits until the agent is no longer live; `None` on timeout.
pub fn wait_finished(store: &Store, name: &str, timeout: Option<Duration>) -> Result<Option<AgentRecord>> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let rec = get(store, name)?;
        if !is_live_state(&rec.state) {
            return Ok(Some(rec));
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Human form of an agent's state: `running`, `exited (0)`, `killed`, `failed`.
pub fn describe_state(rec: &AgentRecord) -> String {
    describe(&rec.state, rec.exit_code)
}

pub fn describe(state: &str, exit_code: Option<i64>) -> String {
    match (state, exit_code) {
        ("exited", Some(c)) => format!("exited ({c})"),
        (s, _) => s.to_string(),
    }
}

pub fn age(ms: i64) -> String {
    let secs = ((agentbox_store::now_ms() - ms) / 1000).max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
