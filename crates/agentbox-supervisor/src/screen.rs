//! The agent's screen: a vt100 terminal model fed on a helper thread.
//!
//! Parsing terminal output costs about as much as relaying it, so the supervisor's loop only hands
//! each chunk over and moves on; the model catches up on the second core. A snapshot first waits
//! until every byte handed over so far has been parsed, so it never misses output that is already
//! in the log. The thread is started after the sandbox was cloned (clone needs a single thread).

use std::num::NonZeroU16;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

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

pub(crate) struct Screen {
    shared: Arc<(Mutex<Model>, Condvar)>,
    tx: Option<Sender<Msg>>,
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
        let (tx, rx) = channel::<Msg>();
        let worker_shared = Arc::clone(&shared);
        let worker =
            std::thread::Builder::new().name("screen".into()).stack_size(256 << 10).spawn(move || {
                let (lock, cond) = &*worker_shared;
                for msg in rx {
                    let mut m = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    match msg {
                        Msg::Output(bytes) => m.parser.process(&bytes),
                        Msg::Resize(r, c) => m.parser.screen_mut().set_size(r, c),
                    }
                    m.applied += 1;
                    cond.notify_all();
                }
            })?;
        Ok(Self { shared, tx: Some(tx), sent: 0, worker: Some(worker) })
    }

    fn send(&mut self, msg: Msg) {
        if let Some(tx) = &self.tx {
            if tx.send(msg).is_ok() {
                self.sent += 1;
            }
        }
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
        self.tx = None;
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
