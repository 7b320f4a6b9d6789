//! One store connection per blocking thread, opened on first use.

use std::cell::RefCell;
use std::path::PathBuf;

use agentbox_engine::{Error, Home, Result};
use agentbox_store::Store;

thread_local! {
    /// One store connection per blocking thread, opened on first use.
    static STORE: RefCell<Option<(PathBuf, Store)>> = const { RefCell::new(None) };
}

/// Runs `f` with a store connection on the calling (blocking) thread.
pub fn with_store<T>(home: &Home, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let path = home.store_path();
        if slot.as_ref().is_none_or(|(p, _)| *p != path) {
            *slot = Some((path.clone(), home.store()?));
        }
        match slot.as_mut() {
            Some((_, store)) => f(store),
            None => Err(Error::internal("no store connection")),
        }
    })
}
