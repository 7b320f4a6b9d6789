//! The supervisor's writes to the store, made on a thread of their own.
//!
//! The poll loop relays the agent's output to attached people; it must never wait for the
//! database. Another writer can hold SQLite's write lock for a while (the store waits up to its
//! busy timeout), so the loop hands each write to this thread and goes on. The thread also sends
//! the notices that follow a write (a request opened, the agent ended). The loop waits for it only
//! when the agent has ended, so that its last state is recorded before the supervisor exits.
//!
//! The thread exists only while there are writes: it ends after [`IDLE`] without any, leaving the
//! store's connection for the next one (as the screen model's thread does: an idle agent's
//! supervisor has no thread but its own, which each new sandbox's `pivot_root` no longer walks).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// How long the writing thread waits for another write before it ends.
const IDLE: Duration = Duration::from_secs(1);

/// The writes waiting, and what a thread writes them with while none holds it.
struct Pending {
    records: VecDeque<Record>,
    /// The store's connection and the notifier; taken by the thread that writes.
    held: Option<(Store, Option<Notifier>)>,
    /// A thread writes: it has taken on everything in `records`.
    serving: bool,
    closed: bool,
}

type Queue = Arc<(Mutex<Pending>, Condvar)>;

pub(crate) struct Recorder {
    queue: Option<Queue>,
    name: String,
    generation: i64,
    thread: Option<JoinHandle<()>>,
    /// How long a thread waits for another write before it ends ([`IDLE`]; shorter in tests).
    idle: Duration,
}

impl Recorder {
    /// Writes for start `generation` of agent `name`: once the agent was started again, this
    /// supervisor's end is not recorded over the new start's.
    pub(crate) fn start(store: Store, name: String, generation: i64, notify: Option<Notifier>) -> Self {
        let pending =
            Pending { records: VecDeque::new(), held: Some((store, notify)), serving: false, closed: false };
        let queue = Some(Arc::new((Mutex::new(pending), Condvar::new())));
        Self { queue, name, generation, thread: None, idle: IDLE }
    }

    /// A recorder that writes nothing (what is left once [`Recorder::finish`] took the real one).
    pub(crate) fn none() -> Self {
        Self { queue: None, name: String::new(), generation: 0, thread: None, idle: IDLE }
    }

    pub(crate) fn send(&mut self, record: Record) {
        let Some(queue) = self.queue.clone() else { return };
        let (lock, cond) = &*queue;
        let mut p = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if p.closed {
            return;
        }
        p.records.push_back(record);
        if std::mem::replace(&mut p.serving, true) {
            cond.notify_one();
            return;
        }
        drop(p);
        // The last thread left the queue and is returning, if it has not yet.
        if let Some(old) = self.thread.take() {
            let _ = old.join();
        }
        let (theirs, name, generation, idle) =
            (Arc::clone(&queue), self.name.clone(), self.generation, self.idle);
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_queued(&theirs, &name, generation, idle));
        match spawned {
            Ok(t) => self.thread = Some(t),
            // No thread to be had: written here.
            Err(_) => write_queued(&queue, &self.name, self.generation, Duration::ZERO),
        }
    }

    /// Waits until everything sent has been written.
    pub(crate) fn finish(mut self) {
        if let Some(queue) = &self.queue {
            let (lock, cond) = &**queue;
            lock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
            cond.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // A thread that ended for want of work handed the connection back: closed now.
        if let Some(queue) = &self.queue {
            drop(queue.0.lock().unwrap_or_else(PoisonError::into_inner).held.take());
        }
    }
}

/// Writes the queued records until the queue is closed, or empty for `idle`; then hands the
/// connection back for the next thread `send` starts.
fn write_queued(queue: &Queue, name: &str, generation: i64, idle: Duration) {
    let (lock, cond) = &**queue;
    let Some((store, notify)) = lock.lock().unwrap_or_else(PoisonError::into_inner).held.take() else {
        return;
    };
    loop {
        let record = {
            let mut p = lock.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(r) = p.records.pop_front() {
                    break Some(r);
                }
                if p.closed {
                    break None;
                }
                let (guard, waited) = cond.wait_timeout(p, idle).unwrap_or_else(PoisonError::into_inner);
                p = guard;
                if waited.timed_out() && p.records.is_empty() && !p.closed {
                    p.held = Some((store, notify));
                    p.serving = false;
                    return;
                }
            }
        };
        let Some(record) = record else { return };
        write(&store, name, generation, notify.as_ref(), record);
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
            Err(e) if e.is_full() => std::thread::sleep(Duration::from_millis(500)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(detail: &str) -> Record {
        Record::Journal { event: "allow", detail: detail.into() }
    }

    #[test]
    fn writes_after_the_thread_ended_for_want_of_work_are_written_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentbox.db");
        let mut r = Recorder::start(Store::open(&path).unwrap(), "a".into(), 1, None);
        r.idle = Duration::from_millis(20);
        assert!(r.thread.is_none(), "a thread before any write");
        r.send(journal("one"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !r.thread.as_ref().is_some_and(|t| t.is_finished()) {
            assert!(std::time::Instant::now() < deadline, "the thread did not end once idle");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Its connection was handed back, for the next thread.
        let queue = r.queue.clone().unwrap();
        assert!(queue.0.lock().unwrap().held.is_some());
        for i in 0..50 {
            r.send(journal(&format!("burst-{i}")));
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(19 + i % 3));
            }
        }
        r.finish();
        let details: Vec<String> = Store::open(&path)
            .unwrap()
            .events(100, Some("allow"))
            .unwrap()
            .into_iter()
            .map(|e| e.detail)
            .collect();
        let mut want = vec!["one".to_string()];
        want.extend((0..50).map(|i| format!("burst-{i}")));
        assert_eq!(details, want, "every write, in order");
        // Finished with it: the connection is closed, not handed back.
        assert!(queue.0.lock().unwrap().held.is_none());
    }
}
