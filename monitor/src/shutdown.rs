//! Shutdown, shared by the daemon, the pipeline's driver and the sources:
//! a flag any thread may set, and wakers so that a source blocked waiting
//! for input (the drop folder's watcher) stops waiting at once.
//!
//! A source checks it between batches: the batch in hand is finished and
//! acknowledged, the next one is never started.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A handle to stop a running daemon.
#[derive(Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    wakers: Arc<std::sync::Mutex<Vec<mpsc::Sender<()>>>>,
}

impl Shutdown {
    /// Ask every worker to finish the file in hand and stop.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        for w in self.wakers.lock().expect("wakers lock").iter() {
            let _ = w.send(());
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub(crate) fn register(&self, tx: mpsc::Sender<()>) {
        self.wakers.lock().expect("wakers lock").push(tx);
    }

    /// Block until [`trigger`](Shutdown::trigger) is called.
    pub fn wait(&self) {
        let (tx, rx) = mpsc::channel();
        self.register(tx);
        while !self.is_triggered() {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }
}
