//! The daemon: wires source → decode → profile → compare → alert → store for
//! every dataset of a config, and owns shutdown.
//!
//! Each dataset has one worker thread that handles its drop folder's files
//! one at a time, oldest first. A file is acknowledged (checkpointed) only
//! after its manifest, profile, metrics and alerts are durably in the
//! history; a crash at any point means the file is looked at again, and its
//! batch id (dataset, file name, SHA-256 of the bytes) makes that idempotent.
//! Shutdown (SIGINT/SIGTERM) lets the file in hand finish, then stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::alert::Alert;
use crate::compare;
use crate::config::model::{ColumnKind, Rules, SourceRule};
use crate::decode::DecodeError;
use crate::pii::{PiiKey, PiiKeyError};
use crate::profile::BatchProfile;
use crate::source::parquet_drop::{DropFolder, DroppedFile};
use crate::store::baselines::BaselineStoreError;
use crate::store::history::{CheckpointEntry, History, HistoryError};

pub use crate::pipeline::{Batch, BatchOrigin, Input, Outcome, Worker};
use crate::store::lock::WriterLock;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("dataset `{dataset}`: {source}")]
    Baseline {
        dataset: String,
        #[source]
        source: BaselineStoreError,
    },
    #[error("dataset `{dataset}`: {source}")]
    History {
        dataset: String,
        #[source]
        source: HistoryError,
    },
    #[error("dataset `{dataset}`: {source}")]
    PiiKey {
        dataset: String,
        #[source]
        source: PiiKeyError,
    },
    #[error(
        "dataset `{dataset}` has no source to watch; add `source: {{ parquet_drop: {{ path: DIR }} }}` to its rules"
    )]
    NoSource { dataset: String },
    #[error("dataset `{dataset}`: the drop folder {path} cannot be used: {reason}")]
    DropFolder {
        dataset: String,
        path: PathBuf,
        reason: String,
    },
    #[error("dataset `{dataset}`: {source}")]
    Kafka {
        dataset: String,
        #[source]
        source: Box<crate::source::kafka::KafkaSourceError>,
    },
    // The inner error is in the message, not chained as a source, so that
    // `{:#}` reports do not print it twice.
    #[error("dataset `{dataset}`: {error}")]
    ApprovedBaseline {
        dataset: String,
        error: Box<crate::security::ApprovedBaselineError>,
    },
    /// The approved baseline was refused (see [`crate::store::refusal`]):
    /// audited, alerted (`alert`), and the dataset is not monitored.
    #[error("dataset `{dataset}`: {error}")]
    BaselineRefused {
        dataset: String,
        error: Box<crate::security::ApprovedBaselineError>,
        alert: Box<Alert>,
    },
    #[error("dataset `{dataset}`: could not record in the audit log: {error}")]
    Audit {
        dataset: String,
        error: crate::store::audit::AuditError,
    },
    #[error("dataset `{dataset}`: {source}")]
    Outbox {
        dataset: String,
        #[source]
        source: crate::alert::outbox::OutboxError,
    },
}

/// How `run` behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Handle the files present at start, then exit (instead of watching).
    pub once: bool,
    /// How long a file's size and mtime must stay unchanged before it is read.
    pub settle: Duration,
    /// Print alerts to stdout.
    pub print_alerts: bool,
    /// Set by `replay` (see [`Worker::open_replay`]): inputs are recorded
    /// files, not a drop folder's. They are never moved to quarantine and no
    /// drop-folder checkpoint is kept.
    pub recorded_inputs: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            once: false,
            settle: Duration::from_millis(500),
            print_alerts: true,
            recorded_inputs: false,
        }
    }
}

/// What a run did, per dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub processed: u64,
    pub quarantined: u64,
    pub replayed: u64,
    pub skipped: u64,
    pub alerts: u64,
    /// Set when the dataset was not monitored: why (its approved baseline
    /// was refused). The other datasets of the config ran.
    pub stopped: Option<String>,
}

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

    fn register(&self, tx: mpsc::Sender<()>) {
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

/// The batch id of a dropped file.
pub fn batch_id(dataset: &str, name: &str, input_sha256: &str) -> String {
    let key = format!("{dataset}\u{1f}{name}\u{1f}{input_sha256}");
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// What a manifest and its alerts say for the SHA-256 of an input that was
/// refused by its size: its bytes were never read.
pub const UNHASHED: &str = "unhashed";

/// The input hash and batch id of a file of `size` bytes (from its
/// metadata). The size is checked first: a file over
/// `limits.max_file_bytes` is refused without a byte of it read (hashing
/// 2 GiB takes seconds), so its hash is [`UNHASHED`] and its batch id comes
/// from its name and size. Otherwise the id comes from the SHA-256 of the
/// bytes, as always.
pub fn identify(
    rules: &Rules,
    name: &str,
    path: &Path,
    size: u64,
) -> std::io::Result<(String, String)> {
    if size > rules.limits.max_file_bytes {
        let id = batch_id(&rules.dataset, name, &format!("{UNHASHED}:{size}"));
        return Ok((UNHASHED.to_string(), id));
    }
    let sha = crate::store::sha256_file(path)?;
    let id = batch_id(&rules.dataset, name, &sha);
    Ok((sha, id))
}

/// How a command may come by a dataset's PII key.
#[derive(Debug, Clone, Copy)]
pub enum PiiAccess<'a> {
    /// Only read it (`profile`, `compare`, `replay`): never create it.
    ReadOnly,
    /// Create it when it is missing, holding the dataset's writer lock.
    Writer(&'a WriterLock),
}

/// The PII key a dataset's profiles are built with: from `pii_key_env` or
/// the state folder's `pii.key`. Rules without a `pii` column hash nothing,
/// so without a key they get one that is stored nowhere. With a `pii`
/// column and no key, only a writer creates one; a reader fails with a
/// message that says how to make it.
pub fn dataset_pii_key(rules: &Rules, access: PiiAccess<'_>) -> Result<PiiKey, PiiKeyError> {
    if let Some(key) = crate::pii::load_existing(&rules.pii_key_env, &rules.state_dir)? {
        return Ok(key);
    }
    if !rules.columns.iter().any(|c| c.pii) {
        return crate::pii::unstored();
    }
    match access {
        PiiAccess::Writer(lock) => crate::pii::load_or_create(&rules.pii_key_env, lock),
        PiiAccess::ReadOnly => crate::pii::load(&rules.pii_key_env, &rules.state_dir),
    }
}

impl Worker {
    /// Open everything a dataset needs; every problem is an error before any file is touched.
    pub fn open(rules: Rules, opts: RunOptions) -> Result<Worker, AppError> {
        let dataset = rules.dataset.clone();
        if let SourceRule::Kafka(_) = &rules.source {
            let state_dir = rules.state_dir.clone();
            return Self::open_with(rules, opts, None, Duration::ZERO, &state_dir, None, None);
        }
        let (path, poll, pattern) = match &rules.source {
            SourceRule::ParquetDrop {
                path,
                poll_interval_ms,
                pattern,
            } => (
                path.clone(),
                Duration::from_millis(*poll_interval_ms),
                pattern.clone(),
            ),
            SourceRule::None | SourceRule::Kafka(_) => {
                return Err(AppError::NoSource { dataset });
            }
        };
        std::fs::create_dir_all(&path).map_err(|e| AppError::DropFolder {
            dataset: dataset.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let folder =
            DropFolder::new(&path, &pattern, opts.settle).map_err(|e| AppError::DropFolder {
                dataset: dataset.clone(),
                path: path.clone(),
                reason: format!("bad pattern `{pattern}`: {e}"),
            })?;
        let state_dir = rules.state_dir.clone();
        Self::open_with(
            rules,
            opts,
            Some(folder),
            poll,
            &state_dir,
            Some(path),
            None,
        )
    }

    /// A worker that handles recorded files (`replay`): no drop folder, its
    /// history in `history_dir`, sources named `<source_root>/<file name>`
    /// when given. Rules, baseline and PII key (`pii`, read by the caller:
    /// a replay never creates one) are the live dataset's, so a replay
    /// computes exactly what live monitoring computed. It delivers to no
    /// receiver of the rules and records nothing in the live state.
    pub fn open_replay(
        rules: Rules,
        mut opts: RunOptions,
        history_dir: &Path,
        source_root: Option<PathBuf>,
        pii: PiiKey,
    ) -> Result<Worker, AppError> {
        opts.recorded_inputs = true;
        Self::open_with(
            rules,
            opts,
            None,
            Duration::ZERO,
            history_dir,
            source_root,
            Some(pii),
        )
    }

    /// Open the baseline, history and PII key of a dataset (shared by every
    /// source); `pii`: the key when the caller read it (replay), else it is
    /// read, or created under the history's writer lock.
    fn open_with(
        rules: Rules,
        opts: RunOptions,
        folder: Option<DropFolder>,
        poll: Duration,
        history_dir: &Path,
        source_root: Option<PathBuf>,
        pii: Option<PiiKey>,
    ) -> Result<Worker, AppError> {
        let dataset = rules.dataset.clone();
        let (baseline_id, baseline, approval) =
            match crate::security::approved_baseline(&rules, rules.baseline_id.as_deref()) {
                Ok(chosen) => chosen,
                Err(error) => {
                    // A replay only reports it: the live state is live monitoring's.
                    if !opts.recorded_inputs
                        && let Some(alert) = crate::store::refusal::refused_baseline(
                            &rules,
                            &error,
                            opts.print_alerts,
                        )
                        .map_err(|error| AppError::Audit {
                            dataset: dataset.clone(),
                            error,
                        })?
                    {
                        return Err(AppError::BaselineRefused {
                            dataset: dataset.clone(),
                            error: Box::new(error),
                            alert: Box::new(alert),
                        });
                    }
                    return Err(AppError::ApprovedBaseline {
                        dataset: dataset.clone(),
                        error: Box::new(error),
                    });
                }
            };
        if baseline.shape != rules.profile_shape() {
            return Err(AppError::Baseline {
                dataset,
                source: BaselineStoreError::WrongShape { id: baseline_id },
            });
        }
        let mut history = History::open(history_dir).map_err(|source| AppError::History {
            dataset: dataset.clone(),
            source,
        })?;
        let checkpoint = history.checkpoint().map_err(|source| AppError::History {
            dataset: dataset.clone(),
            source,
        })?;
        let pii = match pii {
            Some(key) => key,
            None => dataset_pii_key(&rules, PiiAccess::Writer(history.writer_lock())).map_err(
                |source| AppError::PiiKey {
                    dataset: dataset.clone(),
                    source,
                },
            )?,
        };
        // Receivers are paged by live monitoring only: a replay never
        // delivers to them (its `--deliver` prints, see `crate::replay`).
        let notifier = match rules.alerts.as_ref().filter(|_| !opts.recorded_inputs) {
            Some(a) => {
                let outbox_err = |source| AppError::Outbox {
                    dataset: dataset.clone(),
                    source,
                };
                let manifests = history.manifests().map_err(|source| AppError::History {
                    dataset: dataset.clone(),
                    source,
                })?;
                Some(
                    crate::alert::deliver::Notifier::start(
                        &dataset,
                        history_dir,
                        a.clone(),
                        &manifests,
                        Arc::new(crate::alert::clock::SystemClock),
                    )
                    .map_err(outbox_err)?,
                )
            }
            None => None,
        };
        // Alerts a crash had left out of alerts.jsonl were appended on open.
        // With receivers, the outbox delivers them (it enqueues committed
        // batches it never saw); printing to stdout, print them now.
        let repaired = history.take_repaired_alerts();
        if notifier.is_none() && opts.print_alerts {
            for a in &repaired {
                println!("{}", a.line());
            }
        }
        tracing::info!(
            dataset = %dataset,
            baseline_id = %baseline_id,
            approved_by = %approval.approved_by,
            source = %source_label(&rules.source),
            history = %history_dir.display(),
            "dataset ready"
        );
        crate::ops::dataset_opened(&rules, &baseline_id);
        let evidence = history.last_evidence();
        let reference = compare::Reference::new(&baseline.profile, &rules);
        Ok(Worker {
            rules,
            pii,
            baseline_id,
            baseline,
            reference,
            evidence,
            history,
            checkpoint,
            folder,
            poll,
            opts,
            summary: RunSummary::default(),
            source_root,
            captured: None,
            notifier,
        })
    }

    /// Watch the drop folder until shutdown (or, with `once`, until every
    /// file present has been handled).
    pub fn run(mut self, shutdown: Shutdown) -> Result<RunSummary, AppError> {
        if matches!(self.rules.source, SourceRule::Kafka(_)) {
            return crate::source::kafka::run_worker(self, shutdown);
        }
        let (tx, rx) = mpsc::channel::<()>();
        shutdown.register(tx.clone());
        let _watcher = self.watch(tx);
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let Some(folder) = self.folder.as_mut() else {
                break;
            };
            let ready = match folder.ready(Instant::now()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(dataset = %self.rules.dataset, error = %e, "could not list the drop folder; retrying");
                    Vec::new()
                }
            };
            for r in folder.take_refusals() {
                tracing::warn!(dataset = %self.rules.dataset, file = %r.name, kind = r.kind, "refused a drop-folder entry unread: {}", r.reason);
                crate::ops::metrics::drop_refused(&self.rules.dataset, r.kind);
            }
            for file in ready {
                if shutdown.is_triggered() {
                    break;
                }
                self.handle(&file)?;
            }
            let pending = self
                .folder
                .as_ref()
                .and_then(|f| f.next_check(Instant::now()));
            if self.opts.once && pending.is_none() {
                break;
            }
            let wait = pending
                .map_or(self.poll, |p| p.min(self.poll))
                .max(Duration::from_millis(5));
            let _ = rx.recv_timeout(wait);
        }
        if let Some(n) = self.notifier.take() {
            n.stop();
        }
        Ok(self.summary)
    }

    fn watch(&self, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let mut w = match notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            let _ = tx.send(());
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "file events unavailable; polling the drop folder");
                return None;
            }
        };
        let dir = self.folder.as_ref()?.dir();
        if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, "file events unavailable; polling the drop folder");
            return None;
        }
        Some(w)
    }

    fn history_err(&self, source: HistoryError) -> AppError {
        crate::pipeline::history_err(&self.rules, source)
    }

    /// Handle one complete file: skip, replay, quarantine or process it
    /// ([`Worker::process`]), then acknowledge it: checkpoint it, and move
    /// it to quarantine when it was quarantined.
    pub fn handle(&mut self, file: &DroppedFile) -> Result<(), AppError> {
        crate::ops::metrics::batch_started();
        if !self.opts.recorded_inputs
            && let Some(e) = self.checkpoint.files.get(&file.name)
            && e.size == file.size
            && e.mtime_ns == file.mtime_ns
            && self.history.contains(&e.batch_id)
        {
            return Ok(());
        }
        // The size first, from the metadata: an oversized file is refused
        // before a byte of it is read.
        let size = match std::fs::metadata(&file.path) {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e, "could not read a dropped file; will retry");
                return Ok(());
            }
        };
        let (sha, id) = match identify(&self.rules, &file.name, &file.path, size) {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e, "could not read a dropped file; will retry");
                return Ok(());
            }
        };
        // Already committed as quarantined: a crash may have come between
        // the commit and the move; finish the move now.
        if self.history.contains(&id)
            && !self.opts.recorded_inputs
            && let Some(reason) = self.history.quarantine_reason(&id)
        {
            self.history
                .quarantine(&file.path, &id, &reason)
                .map_err(|e| self.history_err(e))?;
            return Ok(());
        }
        let limit = self.rules.limits.max_file_bytes;
        let input = if size > limit {
            let too_large = DecodeError::TooLarge {
                path: file.path.clone(),
                size,
                limit,
            };
            Input::Refused(
                too_large
                    .to_string()
                    .replace(&file.path.display().to_string(), &self.source_name(file)),
            )
        } else {
            Input::File(file.path.clone())
        };
        let batch = Batch {
            origin: self.origin(file),
            id: id.clone(),
            sha256: sha.clone(),
            input,
        };
        match self.process(batch)? {
            Outcome::Retry(error) => {
                tracing::warn!(file = %file.path.display(), %error, "could not read a dropped file; will retry");
                return Ok(());
            }
            Outcome::Quarantined(reason) => {
                if !self.opts.recorded_inputs {
                    let moved = self
                        .history
                        .quarantine(&file.path, &id, &reason)
                        .map_err(|e| self.history_err(e))?;
                    tracing::info!(to = %moved.display(), "moved to quarantine");
                }
                return Ok(());
            }
            Outcome::Skipped | Outcome::Replayed | Outcome::Processed => {}
        }
        let Some(dir) = self
            .folder
            .as_ref()
            .filter(|_| !self.opts.recorded_inputs)
            .map(|f| f.dir().to_path_buf())
        else {
            return Ok(());
        };
        let entry = CheckpointEntry {
            size: file.size,
            mtime_ns: file.mtime_ns,
            input_sha256: sha,
            batch_id: id,
        };
        self.history
            .record_checkpoint(&mut self.checkpoint, &dir, &file.name, entry)
            .map_err(|e| self.history_err(e))
    }

    /// How a file is named in alerts and manifests.
    fn source_name(&self, file: &DroppedFile) -> String {
        match &self.source_root {
            Some(root) => root.join(&file.name).display().to_string(),
            None => file.path.display().to_string(),
        }
    }

    /// A dropped file's origin, named as alerts name it.
    fn origin(&self, file: &DroppedFile) -> BatchOrigin {
        BatchOrigin {
            source: self.source_name(file),
            ..file.into()
        }
    }
}

impl From<&DroppedFile> for BatchOrigin {
    fn from(f: &DroppedFile) -> BatchOrigin {
        BatchOrigin {
            source: f.path.display().to_string(),
            name: f.name.clone(),
            size: f.size,
        }
    }
}

/// What a dataset reads from, for logs.
fn source_label(source: &SourceRule) -> String {
    match source {
        SourceRule::ParquetDrop { path, .. } => format!("drop folder {}", path.display()),
        SourceRule::Kafka(k) => format!("kafka topics {} at {}", k.topics.join(","), k.brokers),
        SourceRule::None => "none".to_string(),
    }
}

/// The latest event time of a batch (max over its timestamp columns), RFC 3339.
pub fn batch_time(profile: &BatchProfile, rules: &Rules) -> Option<String> {
    let all = profile.all();
    rules
        .columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Timestamp)
        .filter_map(|c| {
            all.columns
                .get(&c.name)?
                .numeric
                .as_ref()
                .filter(|n| n.n > 0)
                .map(|n| n.max)
        })
        .reduce(f64::max)
        .and_then(|us| chrono::DateTime::from_timestamp_micros(us as i64))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Run every dataset of a config until `shutdown` is triggered (or, with
/// `once`, until the files present have been handled).
///
/// A dataset whose approved baseline is refused does not stop the others:
/// its refusal is audited and alerted (and paged through its outbox when
/// the rules have receivers), it is reported stopped on `/readyz` and in
/// `dqmon_dataset_stopped`, and its summary says why
/// ([`RunSummary::stopped`]). Any other error opening a dataset is a setup
/// problem and stops the run before a file is touched.
pub fn run_datasets(
    datasets: Vec<Rules>,
    opts: RunOptions,
    shutdown: Shutdown,
) -> Result<Vec<(String, RunSummary)>, AppError> {
    let mut workers = Vec::new();
    let mut stopped = Vec::new();
    for rules in datasets {
        match Worker::open(rules.clone(), opts.clone()) {
            Ok(w) => workers.push(w),
            Err(e @ AppError::BaselineRefused { .. }) => stopped.push(Stopped::start(rules, e)?),
            Err(e) => return Err(e),
        }
    }
    let handles: Vec<_> = workers
        .into_iter()
        .map(|w| {
            let name = w.rules.dataset.clone();
            let s = shutdown.clone();
            (name, std::thread::spawn(move || w.run(s)))
        })
        .collect();
    if handles.is_empty() && !opts.once {
        // Nothing to monitor, but the refusals' pages are being delivered
        // and /readyz says why: wait for a reload or a stop.
        shutdown.wait();
    }
    let mut out = Vec::new();
    let mut first_err = None;
    for (name, h) in handles {
        match h.join().expect("worker thread does not panic") {
            Ok(s) => out.push((name, s)),
            Err(e) => {
                shutdown.trigger();
                first_err.get_or_insert(e);
            }
        }
    }
    for s in stopped {
        out.push(s.finish());
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A dataset not monitored because its approved baseline was refused: its
/// refusal alert is paged through its outbox (when the rules have
/// receivers), which keeps delivering until the run ends.
struct Stopped {
    dataset: String,
    reason: String,
    notifier: Option<crate::alert::deliver::Notifier>,
}

impl Stopped {
    fn start(rules: Rules, refused: AppError) -> Result<Stopped, AppError> {
        let AppError::BaselineRefused { alert, .. } = &refused else {
            unreachable!("only refusals stop a dataset");
        };
        let dataset = rules.dataset.clone();
        let reason = refused.to_string();
        tracing::error!(dataset = %dataset, "monitoring of this dataset is stopped; the other datasets keep running: {reason}");
        crate::ops::dataset_stopped(&rules, &reason);
        let notifier = match &rules.alerts {
            Some(a) => {
                let outbox_err = |source| AppError::Outbox {
                    dataset: dataset.clone(),
                    source,
                };
                // The dataset's history, for the batches committed but not
                // yet notified before the stop (under the writer lock).
                let history =
                    History::open(&rules.state_dir).map_err(|source| AppError::History {
                        dataset: dataset.clone(),
                        source,
                    })?;
                let manifests = history.manifests().map_err(|source| AppError::History {
                    dataset: dataset.clone(),
                    source,
                })?;
                let n = crate::alert::deliver::Notifier::start(
                    &dataset,
                    &rules.state_dir,
                    a.clone(),
                    &manifests,
                    Arc::new(crate::alert::clock::SystemClock),
                )
                .map_err(outbox_err)?;
                n.page(alert).map_err(outbox_err)?;
                Some(n)
            }
            None => None,
        };
        Ok(Stopped {
            dataset,
            reason,
            notifier,
        })
    }

    /// The run ends: one last delivery attempt (what is not delivered stays
    /// pending in the outbox for the next start).
    fn finish(self) -> (String, RunSummary) {
        if let Some(n) = self.notifier {
            n.stop();
        }
        (
            self.dataset,
            RunSummary {
                stopped: Some(self.reason),
                ..RunSummary::default()
            },
        )
    }
}

/// Where a dataset's alerts file is.
pub fn alerts_file(rules: &Rules) -> PathBuf {
    rules.state_dir.join("alerts.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_input_is_identified_without_being_opened() {
        let mut rules = Rules::for_tests("d", Vec::new());
        rules.limits.max_file_bytes = 1000;
        // the path does not exist: any read of it would fail
        let nowhere = Path::new("/nonexistent/dqmon/huge.parquet");
        let (sha, id) = identify(&rules, "huge.parquet", nowhere, 1001).unwrap();
        assert_eq!(sha, UNHASHED);
        assert_eq!(id, batch_id("d", "huge.parquet", "unhashed:1001"));
        assert!(
            identify(&rules, "huge.parquet", nowhere, 1000).is_err(),
            "within the limit it is read"
        );
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.parquet");
        std::fs::write(&small, b"bytes").unwrap();
        let (sha, id) = identify(&rules, "small.parquet", &small, 5).unwrap();
        assert_eq!(sha, crate::store::sha256_file(&small).unwrap());
        assert_eq!(id, batch_id("d", "small.parquet", &sha));
    }
}
