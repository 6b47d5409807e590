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
//! alerts.jsonl                        every alert, one JSON object per line
//! checkpoint.json                     files of the drop folder already handled (snapshot)
//! checkpoint.log                      files handled since the snapshot, one JSON line each
//! quarantine/<file> + <file>.reason   bad inputs and why
//! ```
//!
//! A batch is in the history when its manifest exists; the manifest is
//! written last (temp file, fsync, rename), so a crash leaves either nothing
//! or a complete batch. Alerts are appended after the manifest; on open,
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
//! Every commit is also recorded in the dataset's hash-chained audit log
//! ([`super::audit`]) with the SHA-256 of the manifest's bytes, right after
//! the alerts and before the caller checkpoints. A crash before that entry
//! is repaired on open: committed batches missing from the audit log are
//! appended in commit order, each exactly once (keyed by batch id).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::audit::{AuditError, AuditKind, AuditLog};
use super::fsutil;
use super::lock::{LockError, WriterLock};
use crate::alert::Alert;
use crate::compare::Finding;
use crate::profile::{ALL, BatchProfile, SliceProfile};

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
    /// Commit order within the dataset's history.
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
    pub evidence: Option<crate::compare::EvidenceState>,
}

/// History I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "could not write the history at {path}: {source}; check that the state folder is writable and has space"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history record {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("could not write metrics: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file of the drop folder already handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    pub size: u64,
    pub mtime_ns: i128,
    pub input_sha256: String,
    pub batch_id: String,
}

/// The drop folder's checkpoint: file name to what was handled.
///
/// Stored as a snapshot (`checkpoint.json`) and the entries recorded since
/// (`checkpoint.log`, one line per handled file, appended and synced), so
/// recording a file costs one short append however many files the folder
/// has seen. When the log has grown past the snapshot (and
/// [`CHECKPOINT_COMPACT_MIN`] lines), the files no longer in the folder
/// are dropped (one listing) and a new snapshot replaces both: amortized,
/// a constant cost per file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub files: BTreeMap<String, CheckpointEntry>,
    /// Lines in `checkpoint.log` (not stored).
    #[serde(skip)]
    pub logged: u64,
}

/// The fewest log lines that make a new checkpoint snapshot.
pub const CHECKPOINT_COMPACT_MIN: u64 = 1024;

/// One line of `checkpoint.log`.
#[derive(Serialize, Deserialize)]
struct CheckpointLine {
    name: String,
    entry: CheckpointEntry,
}

/// The history of one dataset.
pub struct History {
    root: PathBuf,
    by_sha: HashMap<String, String>,
    ids: HashSet<String>,
    /// Why each quarantined batch was quarantined.
    quarantined: HashMap<String, String>,
    next_seq: u64,
    audit: AuditLog,
    /// The evidence after the last processed batch (what the next continues from).
    evidence: Option<crate::compare::EvidenceState>,
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
        let lock = WriterLock::acquire(state_dir)?;
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
            root,
            by_sha: HashMap::new(),
            ids: HashSet::new(),
            quarantined: HashMap::new(),
            next_seq: 0,
            audit: AuditLog::open(state_dir)?,
            evidence: None,
            lock,
            repaired: Vec::new(),
        };
        let manifests = h.manifests()?;
        for m in &manifests {
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
        // manifests come in commit order: the last one with evidence wins
        h.evidence = manifests.iter().rev().find_map(|m| m.evidence.clone());
        h.repaired = h.repair_alerts(&manifests)?;
        h.repair_audit(&manifests)?;
        h.remove_orphans()?;
        Ok(h)
    }

    /// The alerts open appended to the alerts file because a crash had
    /// left them out; taken once, so that whoever prints alerts prints them.
    pub fn take_repaired_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.repaired)
    }

    /// The state folder's writer lock (held while the history is open).
    pub fn writer_lock(&self) -> &WriterLock {
        &self.lock
    }

    /// The dataset's audit log (shared with the rest of the daemon).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Append the audit entries of committed batches that a crash kept out
    /// of the audit log, in commit order.
    fn repair_audit(&self, manifests: &[Manifest]) -> Result<(), HistoryError> {
        let logged = self.audit.keys(AuditKind::BatchCommitted)?;
        for m in manifests.iter().filter(|m| !logged.contains(&m.batch_id)) {
            let path = self.manifest_path(&m.batch_id);
            let bytes = fs::read(&path).map_err(io(&path))?;
            tracing::info!(batch_id = %m.batch_id, "recording a committed batch missing from the audit log");
            self.audit.append(
                AuditKind::BatchCommitted,
                Some(&m.batch_id),
                manifest_audit_payload(m, &bytes),
            )?;
        }
        Ok(())
    }

    /// Profiles and metrics written by a batch that crashed before its
    /// manifest: not in the history, so not visible to queries either.
    fn remove_orphans(&self) -> Result<(), HistoryError> {
        for (dir, ext) in [("history/profiles", "json"), ("history/metrics", "parquet")] {
            let d = self.root.join(dir);
            for entry in fs::read_dir(&d).map_err(io(&d))? {
                let path = entry.map_err(io(&d))?.path();
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let is_tmp = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                let orphan = path.extension().and_then(|e| e.to_str()) == Some(ext)
                    && !self.ids.contains(stem);
                if is_tmp || orphan {
                    fs::remove_file(&path).map_err(io(&path))?;
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

    fn manifest_path(&self, batch_id: &str) -> PathBuf {
        self.root
            .join("history/batches")
            .join(format!("{batch_id}.json"))
    }

    /// Every manifest, in commit order.
    pub fn manifests(&self) -> Result<Vec<Manifest>, HistoryError> {
        read_manifests(&self.root)
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

    /// The evidence after the last processed batch (empty when none).
    pub fn last_evidence(&self) -> crate::compare::EvidenceState {
        self.evidence.clone().unwrap_or_default()
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
        if self.contains(&manifest.batch_id) {
            return Ok(Vec::new());
        }
        if let Some(p) = profile {
            let path = self
                .root
                .join("history/profiles")
                .join(format!("{}.json", manifest.batch_id));
            fsutil::write_atomic(&path, &serde_json::to_vec(p).expect("profiles serialize"))
                .map_err(io(&path))?;
            let path = self
                .root
                .join("history/metrics")
                .join(format!("{}.parquet", manifest.batch_id));
            let bytes = metrics_parquet(&manifest, p)?;
            fsutil::write_atomic(&path, &bytes).map_err(io(&path))?;
        }
        let path = self.manifest_path(&manifest.batch_id);
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        fsutil::write_atomic(&path, &manifest_bytes).map_err(io(&path))?;
        self.ids.insert(manifest.batch_id.clone());
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
        if manifest.evidence.is_some() {
            self.evidence = manifest.evidence.clone();
        }
        self.append_alerts(&manifest.alerts)?;
        self.audit.append(
            AuditKind::BatchCommitted,
            Some(&manifest.batch_id),
            manifest_audit_payload(&manifest, &manifest_bytes),
        )?;
        Ok(manifest.alerts)
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

    /// Cut a torn last line and append alerts of committed batches that are
    /// missing from the alerts file; returns those alerts.
    fn repair_alerts(&self, manifests: &[Manifest]) -> Result<Vec<Alert>, HistoryError> {
        let path = self.alerts_path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if complete < text.len() {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(complete as u64).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
        }
        let mut present = HashSet::new();
        for line in text[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
                && let Some(id) = v.get("alert_id").and_then(|v| v.as_str())
            {
                present.insert(id.to_string());
            }
        }
        let missing: Vec<Alert> = manifests
            .iter()
            .flat_map(|m| m.alerts.iter())
            .filter(|a| !present.contains(&a.alert_id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                alerts = missing.len(),
                "appended alerts of committed batches that a crash had left out of alerts.jsonl"
            );
        }
        self.append_alerts(&missing)?;
        Ok(missing)
    }

    /// Read the checkpoint: the snapshot, then the lines logged since (a
    /// torn last line, from a crash during its append, is cut).
    pub fn checkpoint(&self) -> Result<Checkpoint, HistoryError> {
        let path = self.root.join("checkpoint.json");
        let mut c: Checkpoint = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| HistoryError::Corrupt {
                path,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        let log = self.root.join("checkpoint.log");
        let bytes = match fs::read(&log) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(c),
            Err(e) => return Err(io(&log)(e)),
        };
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let l: CheckpointLine =
                serde_json::from_slice(line).map_err(|e| HistoryError::Corrupt {
                    path: log.clone(),
                    reason: format!("line {}: {e}", i + 1),
                })?;
            c.files.insert(l.name, l.entry);
            c.logged += 1;
        }
        if complete < bytes.len() {
            tracing::warn!(path = %log.display(), bytes = bytes.len() - complete, "cutting an unfinished checkpoint line left by a crash");
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .map_err(io(&log))?;
            f.set_len(complete as u64).map_err(io(&log))?;
            f.sync_all().map_err(io(&log))?;
        }
        Ok(c)
    }

    /// Record that the drop folder's file `name` was handled: in `c`, and
    /// durably (one appended line). Compacts when the log has outgrown the
    /// snapshot: the files no longer in `folder` are forgotten.
    pub fn record_checkpoint(
        &self,
        c: &mut Checkpoint,
        folder: &Path,
        name: &str,
        entry: CheckpointEntry,
    ) -> Result<(), HistoryError> {
        let log = self.root.join("checkpoint.log");
        let line = serde_json::to_vec(&CheckpointLine {
            name: name.to_string(),
            entry: entry.clone(),
        })
        .expect("checkpoint lines serialize");
        fsutil::append_line(&log, &line).map_err(io(&log))?;
        c.files.insert(name.to_string(), entry);
        c.logged += 1;
        if c.logged >= CHECKPOINT_COMPACT_MIN.max(c.files.len() as u64) {
            self.compact_checkpoint(c, folder)?;
        }
        Ok(())
    }

    /// A new snapshot of `c` without the files gone from `folder`, then an
    /// empty log. A crash in between only replays lines already in the
    /// snapshot.
    fn compact_checkpoint(&self, c: &mut Checkpoint, folder: &Path) -> Result<(), HistoryError> {
        let present: HashSet<String> = fs::read_dir(folder)
            .map_err(io(folder))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        c.files.retain(|name, _| present.contains(name));
        let path = self.root.join("checkpoint.json");
        fsutil::write_atomic(
            &path,
            &serde_json::to_vec(c).expect("checkpoints serialize"),
        )
        .map_err(io(&path))?;
        let log = self.root.join("checkpoint.log");
        match fs::OpenOptions::new().write(true).open(&log) {
            Ok(f) => {
                f.set_len(0).map_err(io(&log))?;
                f.sync_all().map_err(io(&log))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&log)(e)),
        }
        c.logged = 0;
        Ok(())
    }

    /// Move a bad input into quarantine with a `.reason` file beside it.
    /// Idempotent: a file already moved is left alone.
    pub fn quarantine(
        &self,
        file: &Path,
        batch_id: &str,
        reason: &str,
    ) -> Result<PathBuf, HistoryError> {
        let dir = self.root.join("quarantine");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut target = dir.join(&name);
        if target.exists() {
            target = dir.join(format!("{}-{name}", &batch_id[..12.min(batch_id.len())]));
        }
        let reason_path = PathBuf::from(format!("{}.reason", target.display()));
        fsutil::write_atomic(&reason_path, format!("{reason}\n").as_bytes())
            .map_err(io(&reason_path))?;
        if file.exists() {
            if fs::rename(file, &target).is_err() {
                // another filesystem: copy, sync, then remove
                fs::copy(file, &target).map_err(io(&target))?;
                fs::File::open(&target)
                    .and_then(|f| f.sync_all())
                    .map_err(io(&target))?;
                fs::remove_file(file).map_err(io(file))?;
            }
            // both folders: the file's new name and its old one's removal
            fsutil::sync_dir(&dir).map_err(io(&dir))?;
            if let Some(from) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsutil::sync_dir(from).map_err(io(from))?;
            }
        }
        Ok(target)
    }
}

/// Every manifest of a state folder, in commit order, read without opening
/// the history (nothing is repaired or written: safe on a live daemon's
/// folder). A folder without a history has none.
pub fn read_manifests(state_dir: &Path) -> Result<Vec<Manifest>, HistoryError> {
    let dir = state_dir.join("history/batches");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io(&dir))? {
        let path = entry.map_err(io(&dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = fs::read(&path).map_err(io(&path))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| HistoryError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        out.push(m);
    }
    out.sort_by(|a, b| (a.seq, &a.batch_id).cmp(&(b.seq, &b.batch_id)));
    Ok(out)
}

/// What the audit log records of a committed batch: the manifest's hash
/// (so that a later edit of the manifest file is caught) and its summary.
pub fn manifest_audit_payload(m: &Manifest, manifest_bytes: &[u8]) -> serde_json::Value {
    use sha2::Digest;
    serde_json::json!({
        "manifest_sha256": hex::encode(sha2::Sha256::digest(manifest_bytes)),
        "batch_id": m.batch_id,
        "history_seq": m.seq,
        "status": m.status,
        "source": m.source,
        "input_sha256": m.input_sha256,
        "input_bytes": m.input_bytes,
        "rows": m.rows,
        "rows_by_tag": m.rows_by_tag,
        "schema_fingerprint": m.schema_fingerprint,
        "rules_hash": m.rules_hash,
        "baseline_id": m.baseline_id,
        "dqmon_version": m.dqmon_version,
        "alert_ids": m.alerts.iter().map(|a| a.alert_id.as_str()).collect::<Vec<_>>(),
    })
}

/// The long-format metrics of a batch as Parquet bytes.
fn metrics_parquet(m: &Manifest, p: &BatchProfile) -> Result<Vec<u8>, HistoryError> {
    let rows = metric_rows(p);
    let n = rows.len();
    let time = m
        .batch_time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros());
    let schema = Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("batch_id", DataType::Utf8, false),
        Field::new(
            "batch_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("slice", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![m.dataset.as_str(); n])),
        Arc::new(StringArray::from(vec![m.batch_id.as_str(); n])),
        Arc::new(TimestampMicrosecondArray::from(vec![time; n]).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.as_deref()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| parquet::errors::ParquetError::General(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_created_by("dqmon".into())
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(buf)
}

type MetricRow = (String, Option<String>, &'static str, f64);

/// Metrics of every slice and column, long format.
pub fn metric_rows(p: &BatchProfile) -> Vec<MetricRow> {
    let mut out = Vec::new();
    let all = p.all();
    let total = all.rows.max(1) as f64;
    let mut slices: Vec<(&str, &SliceProfile)> = vec![(ALL, &all)];
    slices.extend(p.tags.iter().map(|(k, v)| (k.as_str(), v)));
    for (name, s) in slices {
        let mut push = |col: Option<&str>, metric: &'static str, v: f64| {
            if v.is_finite() {
                out.push((name.to_string(), col.map(str::to_string), metric, v));
            }
        };
        push(None, "rows", s.rows as f64);
        push(None, "tag_share", s.rows as f64 / total);
        push(None, "duplicate_share", s.duplicate_share());
        let labelled = s.labelled();
        for (class, c) in &s.labels {
            if labelled > 0 {
                let metric: &'static str = "label_rate";
                out.push((
                    name.to_string(),
                    Some(format!("label={class}")),
                    metric,
                    *c as f64 / labelled as f64,
                ));
            }
        }
        for (col, c) in &s.columns {
            let mut push = |metric: &'static str, v: f64| {
                if v.is_finite() {
                    out.push((name.to_string(), Some(col.clone()), metric, v));
                }
            };
            push("count", c.count as f64);
            push("nulls", c.nulls as f64);
            push("missing_rate", c.missing_rate());
            if let Some(n) = c.numeric.as_ref().filter(|n| n.n > 0) {
                push("min", n.min);
                push("max", n.max);
                push("mean", n.mean);
                push("stddev", n.variance().sqrt());
                if let Some(q) = n.quantiles.quantiles(&[0.01, 0.5, 0.99]) {
                    push("p01", q[0]);
                    push("p50", q[1]);
                    push("p99", q[2]);
                }
                push("out_of_range", (n.below_range + n.above_range) as f64);
            }
            if let Some(n) = &c.numeric {
                push("non_finite", n.non_finite as f64);
            }
            if let Some(v) = &c.values {
                push("distinct_estimate", v.distinct.estimate().round());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(i: u64) -> CheckpointEntry {
        CheckpointEntry {
            size: i,
            mtime_ns: i as i128 * 1_000,
            input_sha256: format!("{i:064x}"),
            batch_id: format!("{i:032x}"),
        }
    }

    #[test]
    fn the_checkpoint_survives_a_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("drop");
        fs::create_dir_all(&folder).unwrap();
        let state = dir.path().join("state");
        let h = History::open(&state).unwrap();
        let mut c = h.checkpoint().unwrap();
        for i in 0..5 {
            h.record_checkpoint(&mut c, &folder, &format!("f{i}.parquet"), entry(i))
                .unwrap();
        }
        let again = h.checkpoint().unwrap();
        assert_eq!(again, c);
        assert_eq!(again.logged, 5);
        // a crash in the middle of an append: the torn line is cut
        let log = state.join("checkpoint.log");
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"name\":\"f9.parq").unwrap();
        drop(f);
        assert_eq!(h.checkpoint().unwrap(), c);
        assert!(fs::read(&log).unwrap().ends_with(b"\n"));
        h.record_checkpoint(&mut c, &folder, "f5.parquet", entry(5))
            .unwrap();
        assert_eq!(h.checkpoint().unwrap().files.len(), 6);
    }

    /// Recording one more file appends one line, whatever the checkpoint
    /// holds: with 100,000 entries it writes as many bytes as with 10 (the
    /// full rewrite it replaced wrote every entry for every file), and the
    /// snapshot is rewritten only when the log has outgrown it, forgetting
    /// the files gone from the folder.
    #[test]
    fn recording_a_file_costs_the_same_with_100_000_entries() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("drop");
        fs::create_dir_all(&folder).unwrap();
        let state = dir.path().join("state");
        let h = History::open(&state).unwrap();
        let snapshot = state.join("checkpoint.json");
        let log = state.join("checkpoint.log");
        let mut written = Vec::new();
        for n in [10u64, 100_000] {
            let mut c = Checkpoint {
                files: (0..n)
                    .map(|i| (format!("old{i}.parquet"), entry(i)))
                    .collect(),
                logged: 0,
            };
            fs::write(&snapshot, serde_json::to_vec(&c).unwrap()).unwrap();
            let _ = fs::remove_file(&log);
            let before = fs::metadata(&snapshot).unwrap().len();
            h.record_checkpoint(&mut c, &folder, "new.parquet", entry(7))
                .unwrap();
            assert_eq!(fs::metadata(&snapshot).unwrap().len(), before, "no rewrite");
            written.push(fs::metadata(&log).unwrap().len());
        }
        assert_eq!(written[0], written[1], "one line either way: {written:?}");
        assert!(written[1] < 300, "{written:?}");

        // compaction: past max(CHECKPOINT_COMPACT_MIN, entries) lines, a
        // snapshot of the files still present, and an empty log
        let mut c = Checkpoint::default();
        fs::write(folder.join("kept.parquet"), b"x").unwrap();
        h.record_checkpoint(&mut c, &folder, "kept.parquet", entry(1))
            .unwrap();
        for i in 1..CHECKPOINT_COMPACT_MIN {
            h.record_checkpoint(&mut c, &folder, &format!("gone{i}.parquet"), entry(i))
                .unwrap();
        }
        assert_eq!(c.logged, 0, "compacted");
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(
            c.files.keys().collect::<Vec<_>>(),
            vec!["kept.parquet"],
            "files gone from the folder are forgotten"
        );
        assert_eq!(h.checkpoint().unwrap(), c);
    }
}
