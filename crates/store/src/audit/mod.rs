//! The audit log of a dataset: an append-only, hash-chained record of what
//! happened to its state — every committed batch (its manifest), baseline
//! builds, approvals and refusals, alerts sent, and the config in force.
//!
//! It owns `<state_dir>/audit.jsonl` (one JSON entry per line), its head
//! file `audit.head` (sequence number, hash and byte length of the last
//! entry) and the lock file `audit.lock`. It must not interpret batches or
//! decide anything: callers say what happened, this module records it so
//! that any later edit, removal or reordering is detected.
//!
//! # Format
//!
//! ```text
//! {"seq":0,"kind":"config_loaded","key":null,"at":"2026-…Z","payload":{…},"prev":"000…0","hash":"9f2c…"}
//! {"seq":1,"kind":"batch_committed","key":"<batch id>","at":"…","payload":{…},"prev":"9f2c…","hash":"…"}
//! ```
//!
//! `hash` is the SHA-256 of the entry's JSON without the `hash` field (fields
//! in the order above), and `prev` is the `hash` of the entry before (64
//! zeros for the first). Changing any byte of an entry changes its hash;
//! removing or reordering entries breaks `seq` and `prev`; removing entries
//! from the end is caught by `audit.head`. [`verify()`] names the first bad
//! entry. This is tamper-*evidence* against edits that do not recompute the
//! chain: someone who can rewrite the whole folder can rebuild a consistent
//! chain, which is why `dqmon audit verify` prints the head hash for
//! copying somewhere else (a ticket, another system).
//!
//! # Crash safety and concurrency
//!
//! An append takes an exclusive lock on `audit.lock` (so the daemon and a
//! CLI command can append to the same log), writes and fsyncs the line, then
//! rewrites the head atomically. A crash after the line but before the head
//! leaves a longer log than the head: the next append or [`AuditLog::open`]
//! adopts the complete entry; a torn (incomplete) last line is cut. Entries
//! that must appear exactly once (one per committed batch) carry a `key`
//! and are appended with [`AuditLog::append_once`].
//!
//! # On a shared history
//!
//! When the dataset's history is shared by a fleet, the log is not a file
//! of the replica's folder but the replica's chain on the shared store,
//! `audit/<replica>/<seq>.json`, one object per entry, written
//! create-if-absent, with a head object beside it ([`chain`];
//! [`AuditLog::open_shared`]). Entries and hashes are the same; the chain
//! outlives the replica's folder (a pod without a volume), and
//! [`verify_chains`] checks every replica's chain from anywhere.
//!
//! # For other modules
//!
//! `AuditLog::open(state_dir)?.append(AuditKind::AlertSent, Some(&alert_id),
//! json!({...}))` records an event; the log is safe to share between threads
//! (`&self` methods) and processes (file lock). Payloads must never hold a
//! secret or a raw value of a `pii` column.

pub mod chain;
mod index;
mod verify;

use index::KeyIndex;
pub use verify::{ChainVerification, Tampered, Verification, verify, verify_chains, verify_with};

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fsutil;

/// The audit log's file name inside a dataset's state folder.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The head file: where the log must end.
pub const HEAD_FILE: &str = "audit.head";
const LOCK_FILE: &str = "audit.lock";
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A batch was committed to the history; key = batch id, payload = its manifest's summary and hash.
    BatchCommitted,
    /// A candidate baseline was built; key = baseline id.
    BaselineBuilt,
    /// A baseline was approved; key = baseline id.
    BaselineApproved,
    /// The daemon refused a baseline (unsigned, wrongly signed, approver = builder, tampered).
    BaselineRefused,
    /// An alert was handed to a sink; key = alert id (issue 4's delivery calls this).
    AlertSent,
    /// The config was loaded at start and its hash is the same as the last one recorded.
    ConfigLoaded,
    /// The config's hash differs from the last one recorded (at start or on reload).
    ConfigChanged,
    /// A shared history's chain continues the replica's `audit.jsonl`,
    /// which logs its batches up to commit `after_history_seq` (payload).
    ChainStarted,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::BatchCommitted => "batch_committed",
            AuditKind::BaselineBuilt => "baseline_built",
            AuditKind::BaselineApproved => "baseline_approved",
            AuditKind::BaselineRefused => "baseline_refused",
            AuditKind::AlertSent => "alert_sent",
            AuditKind::ConfigLoaded => "config_loaded",
            AuditKind::ConfigChanged => "config_changed",
            AuditKind::ChainStarted => "chain_started",
        }
    }
}

/// One entry of the log, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// An [`AuditKind`] name (kept as text so that a newer log stays readable).
    pub kind: String,
    /// What the entry is about (batch id, baseline id, alert id), when it has one.
    pub key: Option<String>,
    /// When it was recorded (wall clock, RFC 3339 UTC). Audit entries are
    /// not results, so they may carry the time; profiles and alerts never do.
    pub at: String,
    pub payload: serde_json::Value,
    pub prev: String,
    pub hash: String,
}

/// The hashed part of an entry (every field but `hash`, in order).
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    kind: &'a str,
    key: Option<&'a str>,
    at: &'a str,
    payload: &'a serde_json::Value,
    prev: &'a str,
}

impl AuditEntry {
    /// The hash this entry's content gives.
    pub fn computed_hash(&self) -> String {
        let body = Body {
            seq: self.seq,
            kind: &self.kind,
            key: self.key.as_deref(),
            at: &self.at,
            payload: &self.payload,
            prev: &self.prev,
        };
        hex::encode(Sha256::digest(
            serde_json::to_vec(&body).expect("audit entries serialize"),
        ))
    }
}

/// Where the log ends: written after every append.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last entry ([`GENESIS`] when empty).
    pub hash: String,
    /// Byte length of the log up to the end of the last entry.
    pub len: u64,
}

/// The audit log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "could not write the audit log at {path}: {source}; check that the state folder is writable and has space (or, for a shared history, that its object store is reachable with the credentials given)"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the audit log {path} is damaged: {reason}. Run `dqmon audit verify` to find the first bad entry; do not edit the log by hand"
    )]
    Damaged { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The audit log of one dataset.
pub struct AuditLog {
    dir: PathBuf,
    /// Serialises appends within the process (the file lock does it across processes).
    guard: Mutex<()>,
    /// The keys of the entries read so far, for [`AuditLog::append_once`]:
    /// each append reads only what was appended since (by any process), so
    /// its cost does not grow with the log.
    index: Mutex<KeyIndex>,
    /// In a shared history: the writer's chain on the object store, which
    /// takes every entry instead of the file (see [`chain`]).
    shared: Option<chain::Chain>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("dir", &self.dir).finish()
    }
}

impl AuditLog {
    /// Open the log in a dataset's state folder (created if absent), repairing
    /// the effects of a crash during an append: a torn last line is cut, and
    /// the temporary file of a head rewrite that was killed is removed
    /// (under the audit lock, so no other appender is writing it).
    pub fn open(state_dir: &Path) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let log = AuditLog {
            dir: state_dir.to_path_buf(),
            guard: Mutex::new(()),
            index: Mutex::new(KeyIndex::default()),
            shared: None,
        };
        log.locked(|_, _| {
            fsutil::remove_temp_files(state_dir, |target| target == HEAD_FILE)
                .map_err(io(state_dir))?;
            Ok(())
        })?;
        Ok(log)
    }

    /// The log of a dataset whose history is shared: `writer`'s chain on
    /// `objects` (the shared history's store), not a file of `state_dir`
    /// (see [`chain`]).
    pub fn open_shared(
        state_dir: &Path,
        objects: Arc<dyn crate::backend::Backend>,
        writer: &str,
    ) -> Result<AuditLog, AuditError> {
        Ok(AuditLog {
            dir: state_dir.to_path_buf(),
            guard: Mutex::new(()),
            index: Mutex::new(KeyIndex::default()),
            shared: Some(chain::Chain::open(objects, writer)?),
        })
    }

    /// The writer's chain, when the log is on a shared history.
    pub fn shared(&self) -> Option<&chain::Chain> {
        self.shared.as_ref()
    }

    /// Where the log is: `audit.jsonl`, or the chain's prefix on the store.
    pub fn path(&self) -> PathBuf {
        match &self.shared {
            Some(c) => c.location(),
            None => self.dir.join(AUDIT_FILE),
        }
    }

    /// Append an entry; returns it.
    pub fn append(
        &self,
        kind: AuditKind,
        key: Option<&str>,
        payload: serde_json::Value,
    ) -> Result<AuditEntry, AuditError> {
        if let Some(c) = &self.shared {
            let e = c.append(fresh(kind, key, payload), false)?;
            return Ok(e.expect("an append that is not once-only always writes"));
        }
        self.locked(|file, head| write_entry(file, head, &self.path(), kind, key, payload))
    }

    /// Append an entry unless one of the same kind and key is already in the
    /// log (for events that must be recorded exactly once, such as a batch
    /// commit replayed after a crash). Returns `None` when it was present.
    pub fn append_once(
        &self,
        kind: AuditKind,
        key: &str,
        payload: serde_json::Value,
    ) -> Result<Option<AuditEntry>, AuditError> {
        if let Some(c) = &self.shared {
            // the keys this process read or wrote (see [`chain`])
            return c.append(fresh(kind, Some(key), payload), true);
        }
        let path = self.path();
        self.locked(|file, head| {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            index.catch_up(file, head, &path)?;
            if index.contains(kind, key) {
                return Ok(None);
            }
            let e = write_entry(file, head, &path, kind, Some(key), payload)?;
            // what was just written is known: no need to read it back
            index
                .keys
                .entry(e.kind.clone())
                .or_default()
                .insert(key.to_string());
            index.covered = head.len;
            index.hash = head.hash.clone();
            Ok(Some(e))
        })
    }

    /// The keys of every entry of a kind (read once, e.g. at start; a
    /// shared chain reads every entry for it).
    pub fn keys(&self, kind: AuditKind) -> Result<HashSet<String>, AuditError> {
        if self.shared.is_some() {
            return Ok(self
                .entries()?
                .into_iter()
                .filter(|e| e.kind == kind.as_str())
                .filter_map(|e| e.key)
                .collect());
        }
        let path = self.path();
        self.locked(|file, head| keys_of(file, head.len, &path, kind))
    }

    /// Every entry, in order (does not verify the chain: see [`verify()`]).
    pub fn entries(&self) -> Result<Vec<AuditEntry>, AuditError> {
        if let Some(c) = &self.shared {
            return c.entries();
        }
        let path = self.path();
        self.locked(|file, head| {
            let bytes = read_prefix(file, head.len, &path)?;
            parse_lines(&bytes, &path)
        })
    }

    /// The last entry of a kind, if any.
    pub fn last_of(&self, kinds: &[AuditKind]) -> Result<Option<AuditEntry>, AuditError> {
        Ok(self
            .entries()?
            .into_iter()
            .rev()
            .find(|e| kinds.iter().any(|k| k.as_str() == e.kind)))
    }

    /// `config_hash` of the last config entry (`config_loaded`,
    /// `config_changed`), if any: a shared chain's head names it, a file
    /// is read back.
    pub fn last_config_hash(&self) -> Result<Option<String>, AuditError> {
        if let Some(c) = &self.shared {
            return Ok(c.head().last_config_hash);
        }
        Ok(self
            .last_of(&[AuditKind::ConfigLoaded, AuditKind::ConfigChanged])?
            .as_ref()
            .and_then(|e| e.payload.get("config_hash"))
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    /// Run `f` with the log open for appending, under the process and file
    /// locks, after repairing an unfinished append.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut File, &mut Head) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let _g = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        let lock_path = self.dir.join(LOCK_FILE);
        super::fault::check(&lock_path, super::fault::Op::Write).map_err(io(&lock_path))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        fs4::fs_std::FileExt::lock_exclusive(&lock).map_err(io(&lock_path))?;
        let path = self.path();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut head = self.read_head()?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len < head.len {
            return Err(AuditError::Damaged {
                path,
                reason: format!(
                    "it is {len} bytes long but {HEAD_FILE} records {} bytes ({} entries): entries were removed",
                    head.len, head.entries
                ),
            });
        }
        if len > head.len {
            self.adopt_tail(&mut file, &mut head, len)?;
        }
        let out = f(&mut file, &mut head);
        // the lock is released when `lock` is closed
        drop(lock);
        out
    }

    /// Complete entries after the head (a crash after the line, before the
    /// head) are adopted; a torn last line is cut.
    fn adopt_tail(&self, file: &mut File, head: &mut Head, len: u64) -> Result<(), AuditError> {
        let path = self.path();
        file.seek(SeekFrom::Start(head.len)).map_err(io(&path))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).map_err(io(&path))?;
        let mut pos = 0usize;
        let mut adopted = head.clone();
        while let Some(nl) = tail[pos..].iter().position(|&b| b == b'\n') {
            let line = &tail[pos..pos + nl];
            let Ok(e) = serde_json::from_slice::<AuditEntry>(line) else {
                break;
            };
            if e.seq != adopted.entries || e.prev != adopted.hash || e.computed_hash() != e.hash {
                break;
            }
            pos += nl + 1;
            adopted = Head {
                entries: e.seq + 1,
                hash: e.hash,
                len: head.len + pos as u64,
            };
        }
        if adopted.len < len {
            if pos < tail.len() && tail[pos..].contains(&b'\n') {
                return Err(AuditError::Damaged {
                    path,
                    reason: format!(
                        "the bytes after entry {} are not a valid next entry",
                        adopted.entries
                    ),
                });
            }
            tracing::warn!(path = %path.display(), bytes = len - adopted.len, "cutting an unfinished audit entry left by a crash");
            file.set_len(adopted.len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        if adopted != *head {
            self.write_head(&adopted)?;
            *head = adopted;
        }
        Ok(())
    }

    fn read_head(&self) -> Result<Head, AuditError> {
        let path = self.dir.join(HEAD_FILE);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AuditError::Damaged {
                path,
                reason: format!("the head file is unreadable ({e})"),
            }),
            // no head yet: a new log, or a crash before the first head
            // write; entries present are adopted (and verified) from the start
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Head {
                entries: 0,
                hash: GENESIS.into(),
                len: 0,
            }),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn write_head(&self, head: &Head) -> Result<(), AuditError> {
        let path = self.dir.join(HEAD_FILE);
        fsutil::write_atomic(&path, &serde_json::to_vec(head).expect("heads serialize"))
            .map_err(io(&path))
    }
}

/// An entry recorded now, before it is placed in a chain (`seq`, `prev`
/// and `hash` are set where it is appended).
fn fresh(kind: AuditKind, key: Option<&str>, payload: serde_json::Value) -> AuditEntry {
    AuditEntry {
        seq: 0,
        kind: kind.as_str().to_string(),
        key: key.map(str::to_string),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        payload,
        prev: String::new(),
        hash: String::new(),
    }
}

fn write_entry(
    file: &mut File,
    head: &mut Head,
    path: &Path,
    kind: AuditKind,
    key: Option<&str>,
    payload: serde_json::Value,
) -> Result<AuditEntry, AuditError> {
    let mut e = fresh(kind, key, payload);
    e.seq = head.entries;
    e.prev = head.hash.clone();
    e.hash = e.computed_hash();
    let mut line = serde_json::to_vec(&e).expect("audit entries serialize");
    line.push(b'\n');
    file.seek(SeekFrom::Start(head.len)).map_err(io(path))?;
    fsutil::write_all_faultable(file, path, &line)
        .and_then(|_| file.sync_data())
        .map_err(io(path))?;
    let new = Head {
        entries: e.seq + 1,
        hash: e.hash.clone(),
        len: head.len + line.len() as u64,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let head_path = dir.join(HEAD_FILE);
    fsutil::write_atomic(
        &head_path,
        &serde_json::to_vec(&new).expect("heads serialize"),
    )
    .map_err(io(&head_path))?;
    *head = new;
    Ok(e)
}

fn read_prefix(file: &mut File, len: u64, path: &Path) -> Result<Vec<u8>, AuditError> {
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes).map_err(io(path))?;
    Ok(bytes)
}

fn parse_lines(bytes: &[u8], path: &Path) -> Result<Vec<AuditEntry>, AuditError> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l).map_err(|e| AuditError::Damaged {
                path: path.to_path_buf(),
                reason: format!("line {} is not an audit entry ({e})", i + 1),
            })
        })
        .collect()
}

fn keys_of(
    file: &mut File,
    len: u64,
    path: &Path,
    kind: AuditKind,
) -> Result<HashSet<String>, AuditError> {
    let bytes = read_prefix(file, len, path)?;
    Ok(parse_lines(&bytes, path)?
        .into_iter()
        .filter(|e| e.kind == kind.as_str())
        .filter_map(|e| e.key)
        .collect())
}

/// Record the config in force (at daemon start, and on reload): a
/// `config_changed` entry when its hash differs from the last config entry
/// of the log (or there is none yet), else `config_loaded`. Returns the kind
/// recorded. The payload holds hashes and the file name, never contents.
pub fn record_config(
    log: &AuditLog,
    config_path: &Path,
    config_hash: &str,
    rules_hash: &str,
    trigger: &str,
) -> Result<AuditKind, AuditError> {
    let previous = log.last_config_hash()?;
    let kind = if previous.as_deref() == Some(config_hash) {
        AuditKind::ConfigLoaded
    } else {
        AuditKind::ConfigChanged
    };
    log.append(
        kind,
        None,
        serde_json::json!({
            "config_path": config_path.display().to_string(),
            "config_hash": config_hash,
            "rules_hash": rules_hash,
            "previous_config_hash": previous,
            "trigger": trigger,
            "dqmon_version": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    if kind == AuditKind::ConfigChanged {
        tracing::info!(config = %config_path.display(), config_hash, previous = ?previous, "config changed since the last recorded one");
    }
    Ok(kind)
}

#[cfg(test)]
mod tests;
