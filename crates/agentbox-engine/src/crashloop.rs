//! Restart on failure, and crash loops.
//!
//! An agent spawned with `--restart on-failure[:N[:WINDOW]]` is started again by its own
//! supervisor process when it exits non-zero (not when it is killed). Each failure is journaled
//! as a `crash` event; the N-th failure within WINDOW (default 5 in 60s) stops the restarts: the
//! agent is left in state `crashloop`, journaled, and people are notified.

use std::time::Duration;

use agentbox_core::RestartPolicy;
use serde_json::json;

use crate::error::Result;

use crate::home::Home;
use crate::notify::Notifier;

/// The first restart waits this long; each further one twice as long, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Called by the supervisor role once its agent ended: restarts it, or flags a crash loop.
/// `generation` is the start that ended: if the agent was started again meanwhile, that start is
/// not this one's to restart.
pub fn after_exit(
    home: &Home,
    name: &str,
    generation: i64,
    policy: RestartPolicy,
    notifier: &Notifier,
) -> Result<()> {
    let store = home.store()?;
    let rec = store.get(name)?;
    // Killed, removed, started again or exited cleanly: nothing to restart.
    let code = match (rec.state, rec.exit_code) {
        (agentbox_core::AgentState::Exited, Some(c)) if c != 0 && rec.generation == generation => c,
        _ => return Ok(()),
    };
    // Stopped on request: ended as asked, not crashed.
    if crate::lifecycle::stop_requested(&store, &rec)? {
        return Ok(());
    }
    store.record(name, "crash", &format!("exit code {code}"))?;
    let since = agentbox_store::now_ms() - policy.window.as_millis() as i64;
    let failures = u32::try_from(store.count_events_since(name, "crash", since)?).unwrap_or(u32::MAX);
    if failures >= policy.max_failures {
        let why = format!("{failures} failures within {}s; not restarted again", policy.window.as_secs());
        store.mark_finished(
            name,
            Some(generation),
            agentbox_core::AgentState::Crashloop,
            Some(code),
            &why,
        )?;
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
    // Someone may have removed, restarted or stopped it meanwhile.
    match store.get(name) {
        Ok(r)
            if r.state == agentbox_core::AgentState::Exited
                && r.generation == generation
                && !crate::lifecycle::stop_requested(&store, &r)? =>
        {
            crate::lifecycle::restart(home, &store, name)?;
        }
        _ => {}
    }
    Ok(())
}
