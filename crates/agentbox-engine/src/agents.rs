//! Looking up agents and keeping their recorded state honest.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use agentbox_core::AgentState;
use agentbox_store::{AgentRecord, Store};

/// A state that means the agent may still be running.
pub fn is_live_state(state: &AgentState) -> bool {
    state.is_live()
}

/// Whether the recorded supervisor process still exists (and is that agent's supervisor).
pub(crate) fn supervisor_alive(rec: &AgentRecord) -> bool {
    let Some(pid) = rec.supervisor_pid else { return false };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&&b"__supervise"[..]) && args.contains(&rec.name.as_bytes())
}

/// The start time of process `pid` (field 22 of its stat, in clock ticks since boot): with the
/// pid it names one process for good, where a pid alone may be reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// This process, as `PID:START` (what a claim on a name records as its owner).
pub fn me() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

/// Whether the process a `PID:START` token names still runs.
pub fn alive(token: &str) -> bool {
    let Some((pid, start)) = token.split_once(':') else { return false };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Whether a record that says the agent runs is stale: its supervisor vanished (killed with
/// SIGKILL, machine rebooted) and took the sandbox with it, it never got past starting, or the
/// spawn that claimed its name died before it was made.
fn is_stale(rec: &AgentRecord) -> bool {
    match rec.state {
        AgentState::Running | AgentState::Paused => !supervisor_alive(rec),
        AgentState::Starting => agentbox_store::now_ms() - rec.created_at > 60_000 && !supervisor_alive(rec),
        AgentState::Creating => !rec.owner.as_deref().is_some_and(alive),
        _ => false,
    }
}

/// Whether a row is a claim whose spawn died (a crash's leftover, to be removed).
pub fn is_dead_claim(rec: &AgentRecord) -> bool {
    rec.state == AgentState::Creating && is_stale(rec)
}

/// The record as it really is: an agent whose supervisor is gone is shown as failed. Reading
/// never writes; the next operation that changes the agent records it ([`reconcile`]).
pub fn refresh(mut rec: AgentRecord) -> AgentRecord {
    if is_stale(&rec) {
        rec.state = AgentState::Failed;
    }
    rec
}

/// Records a stale agent as failed (an operation that is about to change it calls this first).
/// A dead claim is left as it is: removing it is `rm`'s, `clean`'s and the next spawn's.
pub fn reconcile(store: &Store, rec: AgentRecord) -> Result<AgentRecord> {
    if !is_stale(&rec) || rec.state == AgentState::Creating {
        return Ok(rec);
    }
    // What the dead supervisor made for its sandbox and could not remove: its cgroups.
    if let Some(pid) = rec.supervisor_pid.and_then(|p| u32::try_from(p).ok()) {
        agentbox_jail::remove_leftover_cgroups(pid);
    }
    match store.mark_finished(
        &rec.name,
        Some(rec.generation),
        AgentState::Failed,
        None,
        "the supervisor is gone",
    ) {
        // Someone else recorded its end, or started it again, meanwhile.
        Ok(())
        | Err(agentbox_store::StoreError::WrongState { .. })
        | Err(agentbox_store::StoreError::Superseded { .. }) => Ok(refresh(store.get(&rec.name)?)),
        Err(e) => Err(e.into()),
    }
}

pub fn get(store: &Store, name: &str) -> Result<AgentRecord> {
    agentbox_core::validate_name(name)?;
    Ok(refresh(store.get(name)?))
}

/// [`get`], with a stale record corrected in the store first (for operations that change it).
pub fn get_for_change(store: &Store, name: &str) -> Result<AgentRecord> {
    agentbox_core::validate_name(name)?;
    reconcile(store, store.get(name)?)
}

pub fn all(store: &Store) -> Result<Vec<AgentRecord>> {
    Ok(store.list()?.into_iter().map(refresh).collect())
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

pub fn describe(state: &AgentState, exit_code: Option<i64>) -> String {
    match (state, exit_code) {
        (AgentState::Exited, Some(c)) => format!("exited ({c})"),
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

/// Holds an agent's lock: `kill`, `restart`, `rm`, `clone` and `rename` of one agent take turns,
/// so two of them never act on the state the other is changing. The lock files live in
/// `AGENTBOX_HOME/locks/`, beside (not in) the agents' directories, which `rm` removes.
#[derive(Debug)]
pub struct AgentLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The file whose lock serializes the changes to agent `name` (its directory is made).
pub fn lock_path(home: &crate::home::Home, name: &str) -> Result<PathBuf> {
    agentbox_core::validate_name(name)?;
    let dir = home.root.join("locks");
    crate::home::private_dir(&dir)?;
    Ok(dir.join(name))
}

/// Takes agent `name`'s lock, waiting for whoever holds it.
pub fn lock(home: &crate::home::Home, name: &str) -> Result<AgentLock> {
    let path = lock_path(home, name)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| crate::Error::from(e).context(format!("opening {}", path.display())))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| crate::Error::from(e).context(format!("locking {}", path.display())))?;
    Ok(AgentLock { _lock: lock })
}
