//! `pause --after IDLE`: the supervisor pauses its agent once nothing has happened on its
//! terminal (no output, no input) for that long, and input arriving for a paused agent resumes
//! it, so a person or a script that sends it something never finds it asleep.
//!
//! The pause is the engine's own (`crate::pause_sandbox`, the state `paused` in the store, the
//! journal), taken under the same per-agent lock. The lock is only ever tried, never waited for:
//! whoever holds it may be waiting on this supervisor's answer, so a busy lock means "again in a
//! moment".

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentbox_core::AgentState;
use agentbox_jail::SandboxTree;
use agentbox_store::Store;

/// How soon a pause or resume that found the lock taken is tried again.
const RETRY: Duration = Duration::from_millis(50);

/// Which agent, and where its record and lock are.
pub(crate) struct Agent {
    pub(crate) name: String,
    pub(crate) generation: i64,
    pub(crate) store_path: PathBuf,
    pub(crate) lock_path: PathBuf,
    /// A VM agent: paused through QEMU's monitor.
    pub(crate) vm: bool,
}

pub(crate) struct IdlePause {
    agent: Agent,
    after: Option<Duration>,
    last_activity: Instant,
    /// Input arrived while the agent may be paused: resume it (again at `retry` if the lock
    /// was taken).
    resume_wanted: bool,
    retry: Option<Instant>,
    store: Option<Store>,
}

/// What the agent's record says now, with its lock held.
enum Seen {
    Running,
    Paused,
    /// Ended, or another run of it.
    Gone,
}

impl IdlePause {
    pub(crate) fn new(agent: Agent, after: Option<Duration>) -> Self {
        Self { agent, after, last_activity: Instant::now(), resume_wanted: false, retry: None, store: None }
    }

    pub(crate) fn set(&mut self, after: Option<Duration>) {
        self.after = after;
        self.last_activity = Instant::now();
    }

    /// Output was written or input typed.
    pub(crate) fn activity(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Input arrived for the agent: if it is paused, it is resumed.
    pub(crate) fn input(&mut self) {
        self.activity();
        if self.after.is_some() {
            self.resume_wanted = true;
        }
    }

    /// When [`IdlePause::tick`] has something to do.
    pub(crate) fn due(&self) -> Option<Instant> {
        if self.resume_wanted {
            return Some(self.retry.unwrap_or_else(Instant::now));
        }
        let at = self.last_activity + self.after?;
        Some(self.retry.map_or(at, |r| r.max(at)))
    }

    /// Pauses the idle agent, or resumes one input arrived for, as due.
    pub(crate) fn tick(&mut self, tree: SandboxTree) {
        if self.due().is_none_or(|at| at > Instant::now()) {
            return;
        }
        let resume = self.resume_wanted;
        let Some(_lock) = self.try_lock() else {
            self.retry = Some(Instant::now() + RETRY);
            return;
        };
        self.retry = None;
        let seen = self.seen();
        if resume {
            self.resume_wanted = false;
            if matches!(seen, Seen::Paused) {
                self.thaw(tree);
            }
            return;
        }
        match seen {
            Seen::Running => self.freeze(tree),
            // Paused by someone else, or over: idle time counts again from now.
            Seen::Paused | Seen::Gone => self.activity(),
        }
    }

    fn try_lock(&self) -> Option<nix::fcntl::Flock<std::fs::File>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.agent.lock_path)
            .ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
    }

    fn store(&mut self) -> Option<&Store> {
        if self.store.is_none() {
            self.store = Store::open(&self.agent.store_path).ok();
        }
        self.store.as_ref()
    }

    fn seen(&mut self) -> Seen {
        let (name, generation) = (self.agent.name.clone(), self.agent.generation);
        match self.store().and_then(|s| s.get(&name).ok()) {
            Some(r) if r.generation != generation => Seen::Gone,
            Some(r) if r.state == AgentState::Running => Seen::Running,
            Some(r) if r.state == AgentState::Paused => Seen::Paused,
            _ => Seen::Gone,
        }
    }

    fn freeze(&mut self, tree: SandboxTree) {
        let idle = self.after.unwrap_or_default();
        self.activity();
        let how = match crate::pause_sandbox(tree, self.agent.vm) {
            Ok(how) => how,
            Err(e) => {
                agentbox_core::note(format_args!("pausing the idle agent: {e}"));
                return;
            }
        };
        let (name, generation) = (self.agent.name.clone(), self.agent.generation);
        let detail = format!("idle for {}s: {how}", idle.as_secs());
        let marked = self.store().map(|s| s.mark_paused(&name, generation, true, &detail));
        if !matches!(marked, Some(Ok(()))) {
            let _ = crate::resume_sandbox(tree, self.agent.vm);
        }
    }

    fn thaw(&mut self, tree: SandboxTree) {
        match crate::resume_sandbox(tree, self.agent.vm) {
            Ok(how) => {
                let (name, generation) = (self.agent.name.clone(), self.agent.generation);
                let detail = format!("input arrived: {how}");
                if let Some(Err(e)) = self.store().map(|s| s.mark_paused(&name, generation, false, &detail)) {
                    agentbox_core::note(format_args!("recording the resume: {e}"));
                }
            }
            Err(e) => agentbox_core::note(format_args!("resuming the agent for its input: {e}")),
        }
        self.activity();
    }
}
