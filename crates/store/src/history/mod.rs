//! The history of a dataset: one manifest per batch (the commit point), the
//! batch's profile, its metrics in long format (Parquet, for SQL), and the
//! alerts file. Also the drop-folder checkpoint and the quarantine.
//!
//! Layout under the dataset's state folder:
//!
//! ```text
//! history/batches/<batch_id>.json     manifest: origin, hashes, status, findings, alerts
//! history/profiles/<batch_id>.json    the batch profile (mergeable)
//! history/metrics/<batch_id>.parquet  dataset, batch_id, batch_time, slice, column, metric, value
//! history/streams/<stream>/<seq>.json  the batch at position <seq> of an input stream
//! history/packs/<writer>/<a>-<b>.json copies of a writer's manifests (shared history; see [`packs`])
//! history/pack-summaries/<writer>/<a>-<b>.json   what a start needs of them (see [`summary`])
//! alerts.jsonl                        every alert, one JSON object per line
//! checkpoint.json                     files of the drop folder already handled (snapshot)
//! checkpoint.log                      files handled since the snapshot, one JSON line each
//! quarantine/<file> + <file>.reason   bad inputs and why
//! ```
//!
//! The batch files (manifest, profile, metrics) are objects of a
//! [`Backend`] (the state folder itself, by default). A batch is in the
//! history when its manifest exists; the manifest is written last, and only
//! if absent ([`Backend::put_if_absent`]), so a crash leaves either nothing
//! or a complete batch, and of two writers committing one batch the first
//! wins and the second leaves the history as it was. Alerts are appended after the manifest; on open,
//! alerts of committed batches that are missing from the alerts file (a
//! crash in between) are appended, and a torn last line is cut: each alert
//! id appears exactly once.
//!
//! Opening the history takes the state folder's writer lock
//! ([`super::lock`]) and keeps it while the history is open: a second writer
//! fails at once instead of interleaving sequence numbers and alerts. Under
//! that lock, opening removes what a killed writer left: temporary files of
//! atomic writes in every folder the writer writes, then orphaned profiles
//! and metrics.
//!
//! **Opening** reads a [`BatchSummary`] of every batch (its manifest
//! without the findings and the evidence, a few hundred bytes instead of
//! about 25 KiB), and the manifest of each stream's head only; in a
//! shared history, the summaries of packed batches come from the packs'
//! summary objects ([`summary`]).
//!
//! **Streams.** Evidence accumulates per input stream (what one reader
//! reads in order), in the stream's own order: see [`streams`].
//!
//! **Shared.** [`History::open_shared`] keeps the batch objects (manifests,
//! profiles, metrics, stream index) on a backend that several replicas
//! share (an object store), with the replica's audit chain beside them
//! ([`crate::audit::chain`]), and the rest (lock, alerts file,
//! checkpoint, quarantine) in the replica's own state folder. Each batch is
//! in the shared history once, whichever replica commits it first; a
//! replica's manifests name it ([`Manifest::writer`]), and its repairs on
//! open (alerts, audit entries) take only its own. Orphans are not removed
//! there: a profile without a manifest may be another replica's commit in
//! flight.
//!
//! Every commit is also recorded in the dataset's hash-chained audit log
//! ([`super::audit`]) with the SHA-256 of the manifest's bytes, right after
//! the alerts and before the caller checkpoints. A crash before that entry
//! is repaired on open (module `repair`): committed batches missing from the
//! audit log are appended in commit order, each exactly once (keyed by
//! batch id; on a shared chain, the batches after the last one its head
//! names).

mod checkpoint;
mod error;
pub mod metric_packs;
mod metrics;
pub mod packs;
mod read;
mod repair;
pub mod streams;
pub mod summary;

pub use checkpoint::{CHECKPOINT_COMPACT_MIN, Checkpoint, CheckpointEntry};
pub use error::HistoryError;
use error::io;
pub use metric_packs::read_metrics;
pub use metrics::metric_rows;
use metrics::metrics_parquet;
pub use packs::{PACK_SIZE, packed_copies};
pub use read::{manifest_audit_payload, read_manifests_from, read_summaries_from};
use read::{manifest_key, metrics_key};
use streams::StreamHead;
pub use streams::is_stream_id;
pub use summary::{BatchSummary, summarized};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::audit::{AuditKind, AuditLog};
use super::backend::{Backend, LocalBackend, Put};
use super::fsutil;
use super::lock::WriterLock;
use dqmon_core::alert::Alert;
use dqmon_core::compare::Finding;
use dqmon_core::profile::BatchProfile;

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Profiled and compared.
    Processed,
    /// Bad input, moved to quarantine.
    Quarantined,
    /// Same bytes as a batch already in the history, under another name.
    Replayed,
}

/// The manifest of one batch: the commit record of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Commit order within the dataset's history. In a shared history each
    /// replica numbers its own commits from what it had seen, so two
    /// replicas' batches may share a number: `(seq, batch_id)` orders.
    pub seq: u64,
    pub batch_id: String,
    pub dataset: String,
    pub status: BatchStatus,
    /// File name or topic/partition/offsets.
    pub source: String,
    pub input_sha256: String,
    pub input_bytes: u64,
    pub rows: u64,
    pub rows_by_tag: BTreeMap<String, u64>,
    pub schema_fingerprint: Option<String>,
    pub baseline_id: Option<String>,
    pub rules_hash: String,
    pub dqmon_version: String,
    pub batch_time: Option<String>,
    /// Why the input was quarantined, or which batch it replays.
    pub reason: Option<String>,
    pub findings: Vec<Finding>,
    pub alerts: Vec<Alert>,
    /// The accumulated evidence after this batch (processed batches only):
    /// what the next batch continues from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<dqmon_core::compare::EvidenceState>,
    /// The input stream the batch came from (see the module docs); absent
    /// in manifests written before streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The batch's position in its stream: processed batches only (those
    /// that carry evidence), from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
    /// The replica that committed the batch, in a shared history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// The other streams whose evidence the batch was compared with, each
    /// at its position then (see [`History::fleet_siblings`]): what a
    /// replay pools again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pooled: BTreeMap<String, u64>,
}

/// The history of one dataset.
pub struct History {
    root: PathBuf,
    /// Manifests, profiles and metrics (keys under `history/`).
    objects: std::sync::Arc<dyn Backend>,
    by_sha: HashMap<String, String>,
    ids: HashSet<String>,
    /// Why each quarantined batch was quarantined.
    quarantined: HashMap<String, String>,
    next_seq: u64,
    audit: AuditLog,
    /// Per stream: where it stands (what its next batch continues from).
    streams: HashMap<String, StreamHead>,
    /// The evidence after the last processed batch of the manifests without
    /// a stream (written before streams): where a new stream starts.
    past: Option<dqmon_core::compare::EvidenceState>,
    /// When this replica last saw each stream's head move (pooling).
    moved: HashMap<String, std::time::Instant>,
    /// When the streams were last listed for pooling.
    siblings_listed: Option<std::time::Instant>,
    /// A replay's siblings per batch id ([`History::pin_siblings`]).
    pinned: Option<streams::Pinned>,
    /// This replica's name when the batch objects are shared.
    writer: Option<String>,
    /// The hold on that name ([`History::hold_name`]).
    name: Option<crate::presence::Keeper>,
    /// The summaries of the batches read at open, until the first commit.
    opened: Option<Vec<BatchSummary>>,
    /// This writer's committed manifests that no pack holds yet, in commit
    /// order (a shared history only; see [`packs`]).
    unpacked: Vec<packs::Unpacked>,
    /// Manifests per pack ([`PACK_SIZE`]; smaller in tests).
    pack_size: usize,
    /// After a pack failed to write: the number of unpacked batches at
    /// which packing is tried again.
    pack_retry_at: usize,
    /// The state folder's writer lock, held while the history is open.
    lock: WriterLock,
    /// Alerts of committed batches that open found missing from the alerts
    /// file and appended (a crash between the manifest and the alerts).
    repaired: Vec<Alert>,
}

impl History {
    /// Open (and repair) the history in a dataset's state folder, holding
    /// its writer lock until the history is dropped; fails at once when
    /// another process writes the folder.
    pub fn open(state_dir: &Path) -> Result<History, HistoryError> {
        let objects = Box::new(LocalBackend::new(state_dir));
        History::open_with(state_dir, objects, None)
    }

    /// Open a history whose batch objects live on `objects`, shared with
    /// other replicas (see the module docs), as the replica `writer`; the
    /// rest of its state is in `state_dir`, under its writer lock.
    pub fn open_shared(
        state_dir: &Path,
        objects: Box<dyn Backend>,
        writer: &str,
    ) -> Result<History, HistoryError> {
        History::open_with(state_dir, objects, Some(writer.to_string()))
    }

    fn open_with(
        state_dir: &Path,
        objects: Box<dyn Backend>,
        writer: Option<String>,
    ) -> Result<History, HistoryError> {
        let lock = WriterLock::acquire(state_dir)?;
        let objects: std::sync::Arc<dyn Backend> = std::sync::Arc::from(objects);
        // a shared history's audit entries go to the writer's chain beside
        // it, so that they outlive the replica's own folder
        let audit = match &writer {
            Some(w) => AuditLog::open_shared(state_dir, objects.clone(), w)?,
            None => AuditLog::open(state_dir)?,
        };
        let root = state_dir.to_path_buf();
        for path in lock.remove_temp_files().map_err(io(&root))? {
            tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted write");
        }
        for d in [
            "history/batches",
            "history/profiles",
            "history/metrics",
            "quarantine",
        ] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let mut h = History {
            objects,
            root,
            by_sha: HashMap::new(),
            ids: HashSet::new(),
            quarantined: HashMap::new(),
            next_seq: 0,
            audit,
            streams: HashMap::new(),
            past: None,
            moved: HashMap::new(),
            name: None,
            opened: None,
            unpacked: Vec::new(),
            pack_size: crate::fault::pack_size().unwrap_or(PACK_SIZE),
            pack_retry_at: 0,
            siblings_listed: None,
            pinned: None,
            writer,
            lock,
            repaired: Vec::new(),
        };
        let read = read::read_summaries(h.objects.as_ref(), h.writer.as_deref())?;
        let batches = read.batches;
        for m in &batches {
            h.ids.insert(m.batch_id.clone());
            if m.status == BatchStatus::Quarantined {
                h.quarantined
                    .insert(m.batch_id.clone(), m.reason.clone().unwrap_or_default());
            }
            if m.status != BatchStatus::Replayed {
                h.by_sha
                    .entry(m.input_sha256.clone())
                    .or_insert(m.batch_id.clone());
            }
            h.next_seq = h.next_seq.max(m.seq + 1);
        }
        h.open_streams(&batches, read.heads)?;
        // in a shared history, the repairs take this replica's batches only
        let own = h.own_of(&batches);
        h.repaired = h.repair_alerts(&own)?;
        h.repair_audit(&own)?;
        if h.writer.is_none() {
            h.remove_orphans()?;
        } else {
            h.write_missing_summaries(read.unsummarized);
            h.unpacked = own
                .iter()
                .filter(|m| !read.packed.contains(&m.batch_id))
                .map(|m| packs::Unpacked {
                    batch_id: m.batch_id.clone(),
                    committed: None,
                })
                .collect();
            h.write_full_packs();
        }
        h.opened = Some(batches);
        Ok(h)
    }

    /// The alerts open appended to the alerts file because a crash had
    /// left them out; taken once, so that whoever prints alerts prints them.
    pub fn take_repaired_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.repaired)
    }

    /// This replica's name, when the batch objects are shared.
    pub fn writer(&self) -> Option<&str> {
        self.writer.as_deref()
    }

    /// The state folder's writer lock (held while the history is open).
    pub fn writer_lock(&self) -> &WriterLock {
        &self.lock
    }

    /// The dataset's audit log (shared with the rest of the daemon).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Profiles and metrics written by a batch that crashed before its
    /// manifest: not in the history, so not visible to queries either.
    /// (Temporary files of their interrupted writes went with the lock's
    /// clean-up, before.)
    fn remove_orphans(&self) -> Result<(), HistoryError> {
        for (dir, ext) in [
            ("history/profiles", ".json"),
            ("history/metrics", ".parquet"),
        ] {
            let keys = self
                .objects
                .list(dir)
                .map_err(io(&self.objects.locate(dir)))?;
            for key in keys {
                let orphan = key
                    .strip_prefix(dir)
                    .and_then(|k| k.strip_prefix('/'))
                    .and_then(|name| name.strip_suffix(ext))
                    .is_some_and(|id| !self.ids.contains(id));
                if orphan {
                    self.objects
                        .delete(&key)
                        .map_err(io(&self.objects.locate(&key)))?;
                }
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn alerts_path(&self) -> PathBuf {
        self.root.join("alerts.jsonl")
    }

    /// Whether a batch is in the history.
    pub fn contains(&self, batch_id: &str) -> bool {
        self.ids.contains(batch_id)
    }

    /// Why a batch was quarantined (`None` if it was not).
    pub fn quarantine_reason(&self, batch_id: &str) -> Option<String> {
        self.quarantined.get(batch_id).cloned()
    }

    /// The batch that already holds these input bytes, if any.
    pub fn batch_with_input(&self, sha256: &str) -> Option<&str> {
        self.by_sha.get(sha256).map(String::as_str)
    }

    /// The next commit sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Commit a batch: metrics and profile first, the manifest last (the
    /// commit point), then its alerts. Returns the alerts newly appended.
    pub fn commit(
        &mut self,
        manifest: Manifest,
        profile: Option<&BatchProfile>,
    ) -> Result<Vec<Alert>, HistoryError> {
        Ok(self.commit_new(manifest, profile)?.unwrap_or_default())
    }

    /// [`History::commit`], telling a batch this commit wrote (`Some`, its
    /// alerts) from one already in the history, by this writer or another
    /// (`None`: nothing was written, nothing is to be notified).
    pub fn commit_new(
        &mut self,
        manifest: Manifest,
        profile: Option<&BatchProfile>,
    ) -> Result<Option<Vec<Alert>>, HistoryError> {
        if self.contains(&manifest.batch_id) {
            return Ok(None);
        }
        if let Some(k) = &self.name {
            k.check().map_err(HistoryError::NameLost)?;
        }
        self.opened = None;
        let mut manifest = manifest;
        manifest.writer = self.writer.clone();
        let put = |key: String, bytes: &[u8]| {
            self.objects
                .put(&key, bytes)
                .map_err(io(&self.objects.locate(&key)))
        };
        let mut metrics = None;
        if let Some(p) = profile {
            let bytes = serde_json::to_vec(p).expect("profiles serialize");
            put(
                format!("history/profiles/{}.json", manifest.batch_id),
                &bytes,
            )?;
            let bytes = metrics_parquet(&manifest, p)?;
            put(metrics_key(&manifest.batch_id), &bytes)?;
            metrics = Some(bytes);
        }
        let key = manifest_key(&manifest.batch_id);
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        let outcome = self
            .objects
            .put_if_absent(&key, &manifest_bytes)
            .map_err(io(&self.objects.locate(&key)))?;
        if outcome == Put::Existed {
            // another writer committed this batch between our look and our
            // write: its commit stands, with its alerts and audit entry;
            // its stream moves on from it (and its index entry is written
            // if that writer died before it)
            tracing::info!(batch_id = %manifest.batch_id, "batch already committed by another writer; skipped");
            self.ids.insert(manifest.batch_id.clone());
            if let Some(theirs) = self
                .objects
                .get(&key)
                .map_err(io(&self.objects.locate(&key)))?
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
            {
                self.index_stream(
                    theirs.stream.as_deref(),
                    theirs.stream_seq,
                    &theirs.batch_id,
                )?;
                self.advance(&theirs);
            }
            return Ok(None);
        }
        self.ids.insert(manifest.batch_id.clone());
        if !self.index_stream(
            manifest.stream.as_deref(),
            manifest.stream_seq,
            &manifest.batch_id,
        )? {
            tracing::warn!(
                batch_id = %manifest.batch_id,
                stream = ?manifest.stream,
                position = ?manifest.stream_seq,
                "another batch holds this position of the stream: two writers on one stream (replicas with the same name, or a consumer that lost its partition); the batch is committed, the stream's evidence follows the other"
            );
        }
        if manifest.status == BatchStatus::Quarantined {
            self.quarantined.insert(
                manifest.batch_id.clone(),
                manifest.reason.clone().unwrap_or_default(),
            );
        }
        if manifest.status != BatchStatus::Replayed {
            self.by_sha
                .entry(manifest.input_sha256.clone())
                .or_insert(manifest.batch_id.clone());
        }
        self.next_seq = self.next_seq.max(manifest.seq + 1);
        self.advance(&manifest);
        self.append_alerts(&manifest.alerts)?;
        self.audit.append(
            AuditKind::BatchCommitted,
            Some(&manifest.batch_id),
            manifest_audit_payload(&manifest, &manifest_bytes),
        )?;
        self.queue_for_pack(&manifest.batch_id, &manifest_bytes, metrics);
        Ok(Some(manifest.alerts))
    }

    fn append_alerts(&self, alerts: &[Alert]) -> Result<(), HistoryError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let path = self.alerts_path();
        let mut buf = Vec::new();
        for a in alerts {
            serde_json::to_writer(&mut buf, a).expect("alerts serialize");
            buf.push(b'\n');
        }
        fsutil::append_lines(&path, &buf).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests;
