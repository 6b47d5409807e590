//! A backend that passes every request on to another one and records it:
//! what a commit, a poll or a claim costs on an object store, in requests,
//! counted by tests (the README's capacity section quotes their counts).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Backend, Put};

/// One request: its kind (`get`, `head`, `put`, `put_if_absent`, `list`,
/// `list_after`, `delete`) and the key or prefix it named.
pub type Request = (&'static str, String);

/// The requests a [`Counting`] backend passed on, shared with its owner.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Request>>>);

impl RequestLog {
    fn note(&self, kind: &'static str, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((kind, key.to_string()));
    }

    /// The requests so far, oldest first; the log is emptied.
    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// [`Backend`] over `B`, recording each request in a [`RequestLog`].
#[derive(Debug)]
pub struct Counting<B> {
    inner: B,
    log: RequestLog,
}

impl<B: Backend> Counting<B> {
    /// The wrapper and the log it writes.
    pub fn new(inner: B) -> (Counting<B>, RequestLog) {
        let log = RequestLog::default();
        (
            Counting {
                inner,
                log: log.clone(),
            },
            log,
        )
    }
}

impl<B: Backend> Backend for Counting<B> {
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.log.note("get", key);
        self.inner.get(key)
    }
    fn size(&self, key: &str) -> io::Result<Option<u64>> {
        self.log.note("head", key);
        self.inner.size(key)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.log.note("put", key);
        self.inner.put(key, bytes)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<Put> {
        self.log.note("put_if_absent", key);
        self.inner.put_if_absent(key, bytes)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.log.note("list", prefix);
        self.inner.list(prefix)
    }
    fn list_after(&self, prefix: &str, after: &str) -> io::Result<Vec<String>> {
        self.log.note("list_after", prefix);
        self.inner.list_after(prefix, after)
    }
    fn folders(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.log.note("list_folders", prefix);
        self.inner.folders(prefix)
    }
    fn delete(&self, key: &str) -> io::Result<()> {
        self.log.note("delete", key);
        self.inner.delete(key)
    }
    fn locate(&self, key: &str) -> PathBuf {
        self.inner.locate(key)
    }
}
