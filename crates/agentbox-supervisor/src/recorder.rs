//! The supervisor's writes to the store, made on a thread of their own.
//!
//! The poll loop relays the agent's output to attached people; it must never wait for the
//! database. Another writer can hold SQLite's write lock for a while (the store waits up to its
//! busy timeout), so the loop hands each write to this thread and goes on. The thread also sends
//! the notices that follow a write (a request opened, the agent ended). The loop waits for it only
//! when the agent has ended, so that its last state is recorded before the supervisor exits.

use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;

use agentbox_core::{AgentState, HitlKind, HitlState};
use agentbox_store::Store;

/// Something worth telling a person about.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A HITL request opened.
    Hitl { id: i64, kind: String, prompt: String },
    /// The agent ended: `exited` or `killed`, with its exit status.
    Ended { state: String, code: i32 },
}

/// A notice handler: the agent's name and what happened.
pub type NoticeFn = dyn Fn(&str, &Notice) + Send;

/// Who hears about notices (`SupervisorConfig::notify`).
pub struct Notifier(pub Box<NoticeFn>);

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

/// One write of the loop's.
pub(crate) enum Record {
    /// A prompt waits on a person: open a request (unless one is open) and tell people.
    OpenHitl { kind: HitlKind, score: f64, prompt: String, screen: String },
    /// The prompt left the screen: close the agent's open request, if any.
    CloseHitl { why: &'static str },
    /// A host was allowed while the agent runs.
    Journal { event: &'static str, detail: String },
    /// The agent ended.
    Finished { state: AgentState, code: i32 },
}

pub(crate) struct Recorder {
    tx: Option<Sender<Record>>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Writes for start `generation` of agent `name`: once the agent was started again, this
    /// supervisor's end is not recorded over the new start's.
    pub(crate) fn start(store: Store, name: String, generation: i64, notify: Option<Notifier>) -> Self {
        let (tx, rx) = channel::<Record>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                for record in rx {
                    write(&store, &name, generation, notify.as_ref(), record);
                }
            })
            .ok();
        Self { tx: Some(tx), thread }
    }

    /// A recorder that writes nothing (what is left once [`Recorder::finish`] took the real one).
    pub(crate) fn none() -> Self {
        Self { tx: None, thread: None }
    }

    pub(crate) fn send(&self, record: Record) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(record);
        }
    }

    /// Waits until everything sent has been written.
    pub(crate) fn finish(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn close_open(store: &Store, name: &str, why: &str) {
    if let Ok(Some(req)) = store.open_hitl_of(name) {
        let _ = store.close_hitl(req.id, HitlState::Gone, None, why);
    }
}

/// Runs a store write again while the disk is full: the write is the record of what happened
/// (an exit code), so it waits for space rather than being lost.
fn retrying<T>(mut f: impl FnMut() -> agentbox_store::Result<T>) -> agentbox_store::Result<T> {
    loop {
        match f() {
            Err(e) if e.is_full() => std::thread::sleep(std::time::Duration::from_millis(500)),
            other => return other,
        }
    }
}

fn write(store: &Store, name: &str, generation: i64, notify: Option<&Notifier>, record: Record) {
    match record {
        Record::OpenHitl { kind, score, prompt, screen } => {
            if let Ok(Some(id)) = retrying(|| store.open_hitl(name, kind, score, &prompt, &screen)) {
                if let Some(n) = notify {
                    (n.0)(name, &Notice::Hitl { id, kind: kind.to_string(), prompt });
                }
            }
        }
        Record::CloseHitl { why } => close_open(store, name, why),
        Record::Journal { event, detail } => {
            let _ = retrying(|| store.record(name, event, &detail));
        }
        Record::Finished { state, code } => {
            let finished = store.mark_finished(
                name,
                Some(generation),
                state,
                Some(i64::from(code)),
                &format!("exit code {code}"),
            );
            if finished.is_err() {
                // Started again since (or removed): the row is another start's now.
                return;
            }
            close_open(store, name, "the agent ended");
            if let Some(n) = notify {
                (n.0)(name, &Notice::Ended { state: state.to_string(), code });
            }
        }
    }
}
