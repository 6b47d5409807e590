//! Where the state's objects live: one trait, [`Backend`], with the
//! operations an object store offers (get, put, put-if-absent, list,
//! delete), and [`LocalBackend`], a folder on a local disk, the embedded
//! default.
//!
//! ```text
//! History, BaselineStore ──► dyn Backend ──► LocalBackend (folder; fsync + rename / hard link)
//!                                        └─► ObjectBackend (S3, GCS, Azure; see crate::object)
//! ```
//!
//! Keys are relative, `/`-separated paths (`history/batches/<id>.json`).
//! Every write is atomic and durable when it returns: a reader sees the old
//! object or the new one, never a mix, and a crash after the call cannot
//! lose it. [`Backend::put_if_absent`] is the commit primitive: of two
//! writers of the same key, the first wins and the second is told so and
//! changes nothing — the conditional put (`If-None-Match: *`) object stores
//! offer, and a hard link on a local file system.
//!
//! What is not behind the trait, because it is an append or a lock rather
//! than an object: the alerts file and the drop-folder checkpoint log
//! (appends), a local history's audit log (append under a file lock) and
//! the writer lock of the state folder. They stay local files. On a shared
//! history the audit log is a chain of objects behind this trait
//! ([`crate::audit::chain`]), and the alerts are read from the manifests.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;

mod counting;
pub use counting::{Counting, Request, RequestLog};

/// What [`Backend::put_if_absent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The object is new: this writer won.
    Created,
    /// An object was already there; it was left as it was.
    Existed,
}

/// Objects of the state, by key. See the module docs for the contract.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The object's bytes, `None` when there is none.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;

    /// The object's size in bytes without reading it, `None` when there is none.
    fn size(&self, key: &str) -> io::Result<Option<u64>>;

    /// Write the object, replacing any earlier one.
    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()>;

    /// Write the object only if there is none under the key.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<Put>;

    /// The keys directly under a folder-like prefix (`history/batches`; `""`
    /// for the top), sorted; temporary objects of interrupted writes are not
    /// listed. An absent prefix has none.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// The keys directly under a prefix that sort after `after` (a key),
    /// sorted: what [`Backend::list`] gives, without the ones before. An
    /// object store asks the server for only those (`start-after` on S3),
    /// so reading the tail of a long, ordered series of keys costs one
    /// request, not one per thousand keys.
    fn list_after(&self, prefix: &str, after: &str) -> io::Result<Vec<String>> {
        let mut keys = self.list(prefix)?;
        keys.retain(|k| k.as_str() > after);
        Ok(keys)
    }

    /// The folder-like prefixes directly under a prefix, as keys
    /// (`history/streams` gives `history/streams/kafka.t.0`, …), sorted;
    /// hidden ones (a leading `.`) are not listed. One delimiter listing on
    /// an object store.
    fn folders(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// Remove the object; one already gone is fine.
    fn delete(&self, key: &str) -> io::Result<()>;

    /// Where the object is, for messages (a file path, a URL).
    fn locate(&self, key: &str) -> PathBuf;
}

/// A key is a relative, `/`-separated path without empty, `.` or `..`
/// parts: it can never name something outside the state.
pub(crate) fn check_key(key: &str) -> io::Result<()> {
    let valid = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{key}` is not a state key (a relative path without `.` or `..` parts)"),
        ))
    }
}

/// A folder on a local disk: objects are files under it. Writes go through
/// [`fsutil`] (temporary file, fsync, rename or hard link, fsync of the
/// folder), so the guarantees hold across a crash or a power cut.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files (or the folders) directly under a prefix, as keys, sorted.
    fn entries(&self, prefix: &str, folders: bool) -> io::Result<Vec<String>> {
        let prefix = prefix.trim_end_matches('/');
        let dir = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix)?
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let kind = entry.file_type()?;
            let wanted = if folders {
                kind.is_dir()
            } else {
                kind.is_file()
            };
            if name.starts_with('.') || !wanted {
                continue;
            }
            keys.push(if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            });
        }
        keys.sort();
        Ok(keys)
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

impl Backend for LocalBackend {
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(key)?) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        fsutil::write_atomic(&self.path(key)?, bytes)
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<Put> {
        if fsutil::write_new(&self.path(key)?, bytes)? {
            Ok(Put::Created)
        } else {
            Ok(Put::Existed)
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.entries(prefix, false)
    }

    fn folders(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.entries(prefix, true)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        fsutil::remove_durable(&self.path(key)?)
    }

    fn locate(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

/// The contract every backend keeps, as one suite (it panics on the first
/// breach): the local folder and the object stores run it in this crate's
/// tests, an S3-compatible server in the integration tests, and a new
/// backend should too. Run it on an empty backend: it expects to find
/// nothing, and writes under `a/`, `top.json` and `race/`.
pub fn conformance(b: &dyn Backend) {
    assert_eq!(b.get("a/missing.json").unwrap(), None);
    assert_eq!(b.list("a").unwrap(), Vec::<String>::new());

    b.put("a/one.json", b"1").unwrap();
    b.put("a/one.json", b"one").unwrap();
    assert_eq!(b.get("a/one.json").unwrap().as_deref(), Some(&b"one"[..]));

    assert_eq!(
        b.put_if_absent("a/two.json", b"first").unwrap(),
        Put::Created
    );
    assert_eq!(
        b.put_if_absent("a/two.json", b"second").unwrap(),
        Put::Existed
    );
    assert_eq!(b.get("a/two.json").unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(b.size("a/two.json").unwrap(), Some(5));
    assert_eq!(b.size("a/missing.json").unwrap(), None);

    b.put("a/b/deeper.json", b"x").unwrap();
    b.put("top.json", b"t").unwrap();
    assert_eq!(b.list("a").unwrap(), vec!["a/one.json", "a/two.json"]);
    assert_eq!(b.list("a/").unwrap(), vec!["a/one.json", "a/two.json"]);
    assert_eq!(b.list("").unwrap(), vec!["top.json"]);
    assert_eq!(b.list("a/b").unwrap(), vec!["a/b/deeper.json"]);
    assert_eq!(b.folders("a").unwrap(), vec!["a/b"]);
    assert_eq!(b.folders("a/").unwrap(), vec!["a/b"]);
    assert_eq!(b.folders("").unwrap(), vec!["a"]);
    assert_eq!(b.folders("a/b").unwrap(), Vec::<String>::new());
    assert_eq!(b.folders("nothing").unwrap(), Vec::<String>::new());

    assert_eq!(b.list_after("a", "a/one.json").unwrap(), vec!["a/two.json"]);
    assert_eq!(
        b.list_after("a", "a/").unwrap(),
        vec!["a/one.json", "a/two.json"]
    );
    assert_eq!(
        b.list_after("a", "a/two.json").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(b.list_after("", "top.json").unwrap(), Vec::<String>::new());

    b.delete("a/one.json").unwrap();
    b.delete("a/one.json").unwrap();
    assert_eq!(b.get("a/one.json").unwrap(), None);
    assert_eq!(b.list("a").unwrap(), vec!["a/two.json"]);

    for bad in ["", "/abs", "a/../b", "a//b", "./a"] {
        assert!(b.get(bad).is_err(), "{bad:?} is not a key");
        assert!(b.put(bad, b"x").is_err(), "{bad:?} is not a key");
    }

    // of writers racing for one key, exactly one wins and its bytes stand
    let outcomes: Vec<(u8, Put)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6u8)
            .map(|i| s.spawn(move || (i, b.put_if_absent("race/batch.json", &[i; 4096]).unwrap())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<u8> = outcomes
        .iter()
        .filter(|(_, p)| *p == Put::Created)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(
        b.get("race/batch.json").unwrap(),
        Some(vec![winners[0]; 4096])
    );
    assert_eq!(b.list("race").unwrap(), vec!["race/batch.json"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite, and its race leaves no temporary file behind on disk.
    #[test]
    fn local_backend_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        conformance(&LocalBackend::new(dir.path()));
        let names: Vec<_> = fs::read_dir(dir.path().join("race"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["batch.json"]);
    }
}
