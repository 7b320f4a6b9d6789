//! Restart on failure, and crash loops.
//!
//! An agent spawned with `--restart on-failure[:N[:WINDOW]]` is started again by its own
//! supervisor process when it exits non-zero (not when it is killed). Each failure is journaled
//! as a `crash` event; the N-th failure within WINDOW (default 5 in 60s) stops the restarts: the
//! agent is left in state `crashloop`, journaled, and people are notified.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::home::Home;
use crate::notify::Notifier;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_failures: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self { max_failures: 5, window: Duration::from_secs(60) }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let help = || {
            format!("invalid restart policy '{s}': use on-failure, on-failure:N or on-failure:N:WINDOW (e.g. on-failure:5:60s)")
        };
        let mut parts = s.split(':');
        if parts.next() != Some("on-failure") {
            return Err(help());
        }
        let mut p = Self::default();
        if let Some(n) = parts.next() {
            p.max_failures = n.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(help)?;
        }
        if let Some(w) = parts.next() {
            let secs = agentbox_core::parse_duration(w).ok().filter(|s| *s > 0).ok_or_else(help)?;
            p.window = Duration::from_secs(secs);
        }
        if parts.next().is_some() {
            return Err(help());
        }
        Ok(p)
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "on-failure:{}:{}s", self.max_failures, self.window.as_secs())
    }
}

/// The first restart waits this long; each further one twice as long, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Called by the supervisor role once its agent ended: restarts it, or flags a crash loop.
pub fn after_exit(home: &Home, name: &str, policy: RestartPolicy, notifier: &Notifier) -> Result<()> {
    let store = home.store()?;
    let rec = store.get(name)?;
    // Killed, removed or exited cleanly: nothing to restart.
    let code = match (rec.state.as_str(), rec.exit_code) {
        ("exited", Some(c)) if c != 0 => c,
        _ => return Ok(()),
    };
    store.record(name, "crash", &format!("exit code {code}"))?;
    let since = agentbox_store::now_ms() - policy.window.as_millis() as i64;
    let failures = u32::try_from(store.count_events_since(name, "crash", since)?).unwrap_or(u32::MAX);
    if failures >= policy.max_failures {
        let why = format!("{failures} failures within {}s; not restarted again", policy.window.as_secs());
        store.mark_finished(name, agentbox_core::AgentState::Crashloop, Some(code), &why)?;
        notifier.send(
            "agent.crashloop",
            &format!("{name} is in a crash loop"),
            &why,
            json!({"agent": name, "exit_code": code, "failures": failures}),
        );
        return Ok(());
    }
    let backoff = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    std::thread::sleep(backoff);
    // Someone may have removed or restarted it meanwhile.
    match store.get(name) {
        Ok(r) if r.state == agentbox_core::AgentState::Exited => {
            crate::service::restart(home, &store, name)?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!("on-failure".parse::<RestartPolicy>().unwrap(), RestartPolicy::default());
        let p: RestartPolicy = "on-failure:3:30s".parse().unwrap();
        assert_eq!((p.max_failures, p.window), (3, Duration::from_secs(30)));
        assert_eq!(p.to_string().parse::<RestartPolicy>().unwrap(), p);
        for bad in ["always", "on-failure:0", "on-failure:x", "on-failure:3:0", "on-failure:3:5s:1", ""] {
            assert!(bad.parse::<RestartPolicy>().is_err(), "{bad}");
        }
    }
}
