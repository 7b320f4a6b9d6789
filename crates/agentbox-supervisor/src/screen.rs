//! The agent's screen: a vt100 terminal model fed on a helper thread.
//!
//! Parsing terminal output costs about as much as relaying it, so the supervisor's loop only hands
//! each chunk over and moves on; the model catches up on the second core. A snapshot first waits
//! until every byte handed over so far has been parsed, so it never misses output that is already
//! in the log. The thread is started after the sandbox was cloned (clone needs a single thread).
//!
//! The queue between them is bounded: when a flood gets more than [`BEHIND`] bytes ahead of the
//! model, the oldest queued output is dropped (the screen shows the newest output; the log keeps
//! every byte), so neither the supervisor's memory nor the wait for a snapshot grows with it.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// How far the model may fall behind before the oldest queued output is dropped.
const BEHIND: usize = 4 << 20;

use agentbox_sys::WinSize;

enum Msg {
    Output(Vec<u8>),
    Resize(NonZeroU16, NonZeroU16),
}

struct Model {
    parser: vt100::Parser,
    /// Messages applied so far.
    applied: u64,
}

/// What waits for the model.
#[derive(Default)]
struct Queue {
    msgs: VecDeque<Msg>,
    bytes: usize,
    closed: bool,
}

pub(crate) struct Screen {
    shared: Arc<(Mutex<Model>, Condvar)>,
    queue: Arc<(Mutex<Queue>, Condvar)>,
    /// Messages queued so far (dropped ones count as applied).
    sent: u64,
    worker: Option<JoinHandle<()>>,
}

fn new_parser(size: WinSize) -> vt100::Parser {
    let rows = NonZeroU16::new(size.rows).unwrap_or(NonZeroU16::MIN);
    let cols = NonZeroU16::new(size.cols).unwrap_or(NonZeroU16::MIN);
    vt100::Parser::new(rows, cols, 0)
}

impl Screen {
    pub(crate) fn new(size: WinSize) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(Model { parser: new_parser(size), applied: 0 }), Condvar::new()));
        let queue: Arc<(Mutex<Queue>, Condvar)> = Arc::default();
        let (worker_shared, worker_queue) = (Arc::clone(&shared), Arc::clone(&queue));
        let worker =
            std::thread::Builder::new().name("screen".into()).stack_size(256 << 10).spawn(move || {
                let (lock, cond) = &*worker_shared;
                let (qlock, qcond) = &*worker_queue;
                loop {
                    let msg = {
                        let mut q = qlock.lock().unwrap_or_else(PoisonError::into_inner);
                        loop {
                            if let Some(m) = q.msgs.pop_front() {
                                if let Msg::Output(b) = &m {
                                    q.bytes -= b.len();
                                }
                                break Some(m);
                            }
                            if q.closed {
                                break None;
                            }
                            q = qcond.wait(q).unwrap_or_else(PoisonError::into_inner);
                        }
                    };
                    let Some(msg) = msg else { break };
                    let mut m = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    match msg {
                        Msg::Output(bytes) => m.parser.process(&bytes),
                        Msg::Resize(r, c) => m.parser.screen_mut().set_size(r, c),
                    }
                    m.applied += 1;
                    cond.notify_all();
                }
            })?;
        Ok(Self { shared, queue, sent: 0, worker: Some(worker) })
    }

    fn send(&mut self, msg: Msg) {
        let (qlock, qcond) = &*self.queue;
        let mut q = qlock.lock().unwrap_or_else(PoisonError::into_inner);
        if q.closed {
            return;
        }
        if let Msg::Output(b) = &msg {
            q.bytes += b.len();
        }
        q.msgs.push_back(msg);
        self.sent += 1;
        // Behind by too much: drop the oldest output (never a resize) down to a quarter.
        if q.bytes > BEHIND {
            let mut dropped = 0u64;
            let mut i = 0;
            while q.bytes > BEHIND / 4 && i < q.msgs.len() {
                if let Some(Msg::Output(b)) = q.msgs.get(i) {
                    let n = b.len();
                    q.msgs.remove(i);
                    q.bytes -= n;
                    dropped += 1;
                } else {
                    i += 1;
                }
            }
            drop(q);
            if dropped > 0 {
                // Dropped messages count as applied, so a snapshot does not wait for them.
                let (lock, cond) = &*self.shared;
                lock.lock().unwrap_or_else(PoisonError::into_inner).applied += dropped;
                cond.notify_all();
            }
        }
        qcond.notify_one();
    }

    pub(crate) fn feed(&mut self, bytes: Vec<u8>) {
        self.send(Msg::Output(bytes));
    }

    pub(crate) fn resize(&mut self, rows: NonZeroU16, cols: NonZeroU16) {
        self.send(Msg::Resize(rows, cols));
    }

    /// Runs `f` on the screen once everything sent so far has been applied.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&vt100::Screen) -> T) -> T {
        let (lock, cond) = &*self.shared;
        let mut m = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while m.applied < self.sent && self.worker.as_ref().is_some_and(|w| !w.is_finished()) {
            m = cond.wait(m).unwrap_or_else(PoisonError::into_inner);
        }
        f(m.parser.screen())
    }

    /// Stops the helper thread after it has applied everything.
    pub(crate) fn finish(&mut self) {
        let (qlock, qcond) = &*self.queue;
        qlock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        qcond.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.finish();
    }
}
