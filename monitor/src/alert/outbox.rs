//! The durable outbox of a dataset, in `<state_dir>/outbox/`:
//!
//! ```text
//! inbox/<seq>-<batch_id>.json   a committed batch's alerts, written by the batch
//!                               thread before the batch is acknowledged
//! lifecycle.json                cooldowns, open fingerprints, last batch taken in
//! pending/<message_id>.json     a notification for one receiver, not yet delivered
//! sent/<message_id>.json        delivered (with the attempt count)
//! failed/<message_id>.json      gave up after the retry limit (stays visible)
//! ```
//!
//! Owns these files and nothing else: it never talks to a receiver and never
//! decides what to send. Every write is atomic and durable (temp file, fsync,
//! rename). Records hold alerts (whose `pii` values are already keyed
//! hashes) and receiver names, never a secret or a resolved URL.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Alert;
use super::lifecycle::{Lifecycle, Notice, Planned};
use crate::store::fsutil;

/// Outbox I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "could not write the alert outbox at {path}: {source}; check that the state folder is writable and has space"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "outbox record {path} is unreadable: {reason}; move it aside (its alert is still in alerts.jsonl) and restart"
    )]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The alerts of one committed batch, waiting to be taken in by the lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxBatch {
    pub seq: u64,
    pub batch_id: String,
    pub alerts: Vec<Alert>,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Pending,
    Sent,
    Failed,
}

impl MessageStatus {
    pub fn dir(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Failed => "failed",
        }
    }
}

/// One notification for one receiver, with its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Stable across retries and restarts: the email Message-ID and the
    /// webhook idempotency key are made from it.
    pub id: String,
    pub receiver: String,
    pub notice: Notice,
    /// End of the digest window this message waits for (digest routes only).
    pub digest_until_ms: Option<i64>,
    pub status: MessageStatus,
    pub attempts: u32,
    pub created_ms: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// Id of the digest it was delivered in, if it went out in one.
    pub delivered_in: Option<String>,
}

impl Message {
    /// The message of a planned notice: pending, due now, or at the end of
    /// its digest window on a digest route.
    pub fn planned(p: Planned, now: i64) -> Message {
        let digest_until_ms = p.target.digest_secs.map(|s| {
            let w = (s as i64).max(1) * 1000;
            (now.div_euclid(w) + 1) * w
        });
        Message {
            id: p.notice.message_id(&p.target.receiver, &p.id_extra),
            receiver: p.target.receiver.clone(),
            notice: p.notice,
            digest_until_ms,
            status: MessageStatus::Pending,
            attempts: 0,
            created_ms: now,
            next_attempt_ms: digest_until_ms.unwrap_or(now),
            last_error: None,
            delivered_in: None,
        }
    }
}

/// The outbox folder of one dataset.
#[derive(Debug, Clone)]
pub struct Outbox {
    root: PathBuf,
}

impl Outbox {
    /// Open (create) the outbox under a dataset's state folder.
    pub fn open(state_dir: &Path) -> Result<Outbox, OutboxError> {
        let root = state_dir.join("outbox");
        for d in ["inbox", "pending", "sent", "failed", "retry"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Outbox { root })
    }

    /// The outbox at `root` (`<state_dir>/outbox`) as it is: nothing is
    /// created (for commands that only read, or act on what exists).
    pub fn at(root: PathBuf) -> Outbox {
        Outbox { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn inbox_path(&self, seq: u64, batch_id: &str) -> PathBuf {
        self.root
            .join("inbox")
            .join(format!("{seq:020}-{batch_id}.json"))
    }

    /// Durably record a committed batch's alerts (idempotent).
    pub fn put_inbox(&self, b: &InboxBatch) -> Result<(), OutboxError> {
        let path = self.inbox_path(b.seq, &b.batch_id);
        if path.exists() {
            return Ok(());
        }
        fsutil::write_atomic(&path, &serde_json::to_vec(b).expect("inbox serializes"))
            .map_err(io(&path))
    }

    /// Inbox batches in commit order.
    pub fn inbox(&self) -> Result<Vec<InboxBatch>, OutboxError> {
        let mut paths = json_files(&self.root.join("inbox"))?;
        paths.sort();
        paths.iter().map(|p| read_json(p)).collect()
    }

    pub fn remove_inbox(&self, b: &InboxBatch) -> Result<(), OutboxError> {
        let path = self.inbox_path(b.seq, &b.batch_id);
        crate::store::fsutil::remove_durable(&path).map_err(io(&path))
    }

    fn lifecycle_path(&self) -> PathBuf {
        self.root.join("lifecycle.json")
    }

    /// The lifecycle state, or `None` when this outbox is new.
    pub fn lifecycle(&self) -> Result<Option<Lifecycle>, OutboxError> {
        let path = self.lifecycle_path();
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    pub fn save_lifecycle(&self, l: &Lifecycle) -> Result<(), OutboxError> {
        let path = self.lifecycle_path();
        fsutil::write_atomic(
            &path,
            &serde_json::to_vec_pretty(l).expect("lifecycle serializes"),
        )
        .map_err(io(&path))
    }

    fn message_path(&self, status: MessageStatus, id: &str) -> PathBuf {
        self.root.join(status.dir()).join(format!("{id}.json"))
    }

    /// Whether a message id is known in any state.
    pub fn contains(&self, id: &str) -> bool {
        [
            MessageStatus::Pending,
            MessageStatus::Sent,
            MessageStatus::Failed,
        ]
        .iter()
        .any(|s| self.message_path(*s, id).exists())
    }

    /// Add a new message; a message id already known is left alone.
    /// Returns whether it was added.
    pub fn add(&self, m: &Message) -> Result<bool, OutboxError> {
        if self.contains(&m.id) {
            return Ok(false);
        }
        self.write(m)?;
        Ok(true)
    }

    /// Write a message in its status folder and remove it from the others.
    pub fn write(&self, m: &Message) -> Result<(), OutboxError> {
        let path = self.message_path(m.status, &m.id);
        fsutil::write_atomic(
            &path,
            &serde_json::to_vec_pretty(m).expect("messages serialize"),
        )
        .map_err(io(&path))?;
        for s in [
            MessageStatus::Pending,
            MessageStatus::Sent,
            MessageStatus::Failed,
        ] {
            if s != m.status {
                let old = self.message_path(s, &m.id);
                crate::store::fsutil::remove_durable(&old).map_err(io(&old))?;
            }
        }
        Ok(())
    }

    /// A failed message (`failed/<id>`) starts over: pending, due now, its
    /// attempts at zero (its last error kept until the next attempt).
    /// Returns whether it was there.
    pub fn retry(&self, id: &str, now_ms: i64) -> Result<bool, OutboxError> {
        let path = self.message_path(MessageStatus::Failed, id);
        if !path.exists() {
            return Ok(false);
        }
        let mut m: Message = read_json(&path)?;
        m.status = MessageStatus::Pending;
        m.attempts = 0;
        m.next_attempt_ms = now_ms;
        m.digest_until_ms = None;
        self.write(&m)?;
        Ok(true)
    }

    /// Ask the process that delivers this outbox (a running daemon, which
    /// holds the state folder) to [`retry`](Outbox::retry) a message: a
    /// request file `retry/<id>`, taken in at its next step. The daemon is
    /// the only writer of the messages; a request is not one.
    pub fn request_retry(&self, id: &str) -> Result<(), OutboxError> {
        let path = self.root.join("retry").join(id);
        fsutil::write_atomic(&path, b"").map_err(io(&path))
    }

    /// Retry the messages asked for with [`request_retry`](Outbox::request_retry)
    /// and remove the requests; returns how many messages went back to pending.
    pub fn take_retry_requests(&self, now_ms: i64) -> Result<usize, OutboxError> {
        let dir = self.root.join("retry");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let name = entry.map_err(io(&dir))?.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with('.') {
                ids.push(name.into_owned());
            }
        }
        ids.sort();
        let mut n = 0;
        for id in ids {
            if self.retry(&id, now_ms)? {
                n += 1;
            }
            let path = dir.join(&id);
            fsutil::remove_durable(&path).map_err(io(&path))?;
        }
        Ok(n)
    }

    /// Messages in one state, oldest first.
    pub fn messages(&self, status: MessageStatus) -> Result<Vec<Message>, OutboxError> {
        let mut out: Vec<Message> = json_files(&self.root.join(status.dir()))?
            .iter()
            .map(|p| read_json(p))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, OutboxError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json") && !name.starts_with('.') {
            out.push(path);
        }
    }
    Ok(out)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, OutboxError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| OutboxError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
