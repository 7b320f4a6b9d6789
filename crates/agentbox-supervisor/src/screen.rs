//! The agent's screen: a vt100 terminal model fed on a helper thread.
//!
//! Parsing terminal output costs about as much as relaying it, so the supervisor's loop only hands
//! each chunk over and moves on; the model catches up on the second core. A snapshot first waits
//! until every byte handed over so far has been parsed, so it never misses output that is already
//! in the log.
//!
//! The thread exists only while there is output to parse: it ends after [`IDLE`] without any, and
//! the next output starts another (never before the sandbox is cloned, which needs a single
//! thread). An idle agent's supervisor thus has no thread for its screen, and the kernel walks
//! every thread on the machine in each new sandbox's `pivot_root`: with a thousand idle agents,
//! a thousand fewer threads.
//!
//! The queue between them is bounded: when a flood gets more than [`BEHIND`] bytes ahead of the
//! model, the oldest queued output is dropped (the screen shows the newest output; the log keeps
//! every byte), so neither the supervisor's memory nor the wait for a snapshot grows with it.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How far the model may fall behind before the oldest queued output is dropped.
const BEHIND: usize = 4 << 20;
/// How long the helper thread waits for more output before it ends.
const IDLE: Duration = Duration::from_secs(1);

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
    /// A thread serves the queue: it has taken on everything in it.
    serving: bool,
}

type Shared = Arc<(Mutex<Model>, Condvar)>;
type Waiting = Arc<(Mutex<Queue>, Condvar)>;

pub(crate) struct Screen {
    shared: Arc<(Mutex<Model>, Condvar)>,
    queue: Arc<(Mutex<Queue>, Condvar)>,
    /// Messages queued so far (dropped ones count as applied).
    sent: u64,
    worker: Option<JoinHandle<()>>,
    /// How long a thread waits for output before it ends ([`IDLE`]; shorter in tests).
    idle: Duration,
}

fn new_parser(size: WinSize) -> vt100::Parser {
    let rows = NonZeroU16::new(size.rows).unwrap_or(NonZeroU16::MIN);
    let cols = NonZeroU16::new(size.cols).unwrap_or(NonZeroU16::MIN);
    vt100::Parser::new(rows, cols, 0)
}

impl Screen {
    pub(crate) fn new(size: WinSize) -> Self {
        let shared = Arc::new((Mutex::new(Model { parser: new_parser(size), applied: 0 }), Condvar::new()));
        Self { shared, queue: Arc::default(), sent: 0, worker: None, idle: IDLE }
    }

    /// A thread for the queue, which has none. Without one to be had, the model is brought up to
    /// date on this thread.
    fn serve(&mut self) {
        // The last thread left the queue and is returning, if it has not yet.
        if let Some(old) = self.worker.take() {
            let _ = old.join();
        }
        let (shared, queue, idle) = (Arc::clone(&self.shared), Arc::clone(&self.queue), self.idle);
        let spawned = std::thread::Builder::new()
            .name("screen".into())
            .stack_size(256 << 10)
            .spawn(move || apply_queued(&shared, &queue, idle));
        match spawned {
            Ok(worker) => self.worker = Some(worker),
            Err(_) => apply_queued(&self.shared, &self.queue, Duration::ZERO),
        }
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
        let start = !std::mem::replace(&mut q.serving, true);
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
        } else {
            drop(q);
        }
        if start {
            self.serve();
        } else {
            qcond.notify_one();
        }
    }

    pub(crate) fn feed(&mut self, bytes: Vec<u8>) {
        self.send(Msg::Output(bytes));
    }

    pub(crate) fn resize(&mut self, rows: NonZeroU16, cols: NonZeroU16) {
        self.send(Msg::Resize(rows, cols));
    }

    /// Runs `f` on the screen once everything sent so far has been applied. (What was sent and
    /// not applied is a running thread's: one that ended for want of output had applied all.)
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

/// Applies queued messages to the model until the queue is closed, or empty for `idle`; then
/// leaves the queue to the next thread `send` starts.
fn apply_queued(shared: &Shared, queue: &Waiting, idle: Duration) {
    let (lock, cond) = &**shared;
    let (qlock, qcond) = &**queue;
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
                let (guard, waited) = qcond.wait_timeout(q, idle).unwrap_or_else(PoisonError::into_inner);
                q = guard;
                if waited.timed_out() && q.msgs.is_empty() && !q.closed {
                    q.serving = false;
                    break None;
                }
            }
        };
        let Some(msg) = msg else { return };
        let mut m = lock.lock().unwrap_or_else(PoisonError::into_inner);
        match msg {
            Msg::Output(bytes) => m.parser.process(&bytes),
            Msg::Resize(r, c) => m.parser.screen_mut().set_size(r, c),
        }
        m.applied += 1;
        cond.notify_all();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(idle: Duration) -> Screen {
        let mut s = Screen::new(WinSize { rows: 24, cols: 80 });
        s.idle = idle;
        s
    }

    fn ended(s: &Screen) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !s.worker.as_ref().is_some_and(|w| w.is_finished()) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn no_thread_before_output_and_none_left_once_idle() {
        let mut s = screen(Duration::from_millis(20));
        assert!(s.worker.is_none(), "a thread before any output");
        s.feed(b"one".to_vec());
        assert!(s.with(|x| x.contents()).contains("one"));
        assert!(ended(&s), "the thread did not end once idle");
        // Output after the thread ended starts another, and nothing is missed.
        s.feed(b" two".to_vec());
        s.resize(NonZeroU16::new(10).unwrap(), NonZeroU16::new(40).unwrap());
        s.feed(b" three".to_vec());
        let (text, size) = s.with(|x| (x.contents(), x.size()));
        assert!(text.contains("one two three"), "{text:?}");
        assert_eq!((size.0.get(), size.1.get()), (10, 40));
        s.finish();
    }

    #[test]
    fn output_racing_the_end_of_idle_threads_is_all_applied() {
        // Output arriving as a thread times out: either that thread takes it, or the next one.
        let mut s = screen(Duration::from_millis(1));
        for i in 0..300 {
            s.feed(b"a".to_vec());
            if i % 3 == 0 {
                std::thread::sleep(Duration::from_micros(900 + (i % 7) * 50));
            }
        }
        let text = s.with(|x| x.contents());
        assert_eq!(text.matches('a').count(), 300, "{text:?}");
        s.finish();
    }
}
