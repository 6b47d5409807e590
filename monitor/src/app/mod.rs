//! The daemon: wires source → decode → profile → compare → alert → store for
//! every dataset of a config, and owns shutdown.
//!
//! Each dataset has one worker thread that drives its source (a drop folder
//! or a Kafka consumer) through the pipeline, one batch at a time. A batch
//! is acknowledged (a file checkpointed, an offset committed) only after
//! its manifest, profile, metrics and alerts are durably in the history; a
//! crash at any point means the batch is looked at again, and its batch id
//! (dataset, origin, SHA-256 of the bytes) makes that idempotent. Shutdown
//! (SIGINT/SIGTERM) lets the batch in hand finish, then stops.
//!
//! Files: `open.rs` opens a worker (live or replay) and its source; this one
//! holds the run options, errors, the PII key's access and the loop over
//! datasets.

mod open;

pub use open::OpenedSource;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::alert::Alert;
use crate::config::model::{ColumnKind, Rules, SourceRule};
use crate::pii::{PiiKey, PiiKeyError};
use crate::profile::BatchProfile;
use crate::store::baselines::BaselineStoreError;
use crate::store::history::{History, HistoryError};

pub use crate::pipeline::{Batch, BatchOrigin, Input, Outcome, Worker};
pub use crate::shutdown::Shutdown;
pub use crate::source::drop_folder::{UNHASHED, batch_id, identify};
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
    // the mismatch is in the message, not chained as a source (see below)
    #[error("dataset `{dataset}`: {mismatch}")]
    PiiKeyMismatch {
        dataset: String,
        mismatch: Box<PiiKeyMismatch>,
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
    #[error(
        "dataset `{dataset}`: the shared history {url} cannot be used: {reason}; check `shared_history` and the object store's credentials in the environment"
    )]
    SharedHistory {
        dataset: String,
        url: String,
        reason: String,
    },
    #[error("dataset `{dataset}`: {reason}")]
    ReplicaName { dataset: String, reason: String },
    #[error("dataset `{dataset}`: the drop location {url} cannot be used: {reason}")]
    DropLocation {
        dataset: String,
        url: String,
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
    /// A recorded input (replay) could not be read.
    #[error("dataset `{dataset}`: could not read {}: {reason}", path.display())]
    Unread {
        dataset: String,
        path: PathBuf,
        reason: String,
    },
    #[error("dataset `{dataset}`: {source}")]
    Outbox {
        dataset: String,
        #[source]
        source: crate::alert::outbox::OutboxError,
    },
}

/// A PII key other than the baseline's (see [`check_pii_key`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "the approved baseline {} was built with the PII key {expected}, but this process has the key {found} (from ${env}, or else {}): every `pii` value would hash differently and read as never seen. Give every replica, and `dqmon baseline build`, the same key through ${env} (in a fleet: one shared secret), or build and approve a baseline with this key.",
    &baseline_id[..12.min(baseline_id.len())],
    key_file.display()
)]
pub struct PiiKeyMismatch {
    pub baseline_id: String,
    pub expected: String,
    pub found: String,
    pub env: String,
    pub key_file: PathBuf,
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

/// Refuse a PII key other than the one the baseline's `pii` columns were
/// hashed with (see [`crate::baseline::Baseline::pii_key_id`]): every
/// hashed value would read as never seen. `state_dir` names the key file
/// in the message.
pub fn check_pii_key(
    rules: &Rules,
    baseline_id: &str,
    baseline: &crate::baseline::Baseline,
    pii: &PiiKey,
    state_dir: &std::path::Path,
) -> Result<(), AppError> {
    match &baseline.pii_key_id {
        Some(expected) if rules.columns.iter().any(|c| c.pii) && *expected != pii.id() => {
            Err(AppError::PiiKeyMismatch {
                dataset: rules.dataset.clone(),
                mismatch: Box::new(PiiKeyMismatch {
                    baseline_id: baseline_id.to_string(),
                    expected: expected.clone(),
                    found: pii.id(),
                    env: rules.pii_key_env.clone(),
                    key_file: state_dir.join("pii.key"),
                }),
            })
        }
        _ => Ok(()),
    }
}

/// What a dataset reads from, for logs.
fn source_label(source: &SourceRule) -> String {
    match source {
        SourceRule::ParquetDrop { path, .. } => format!("drop folder {}", path.display()),
        SourceRule::ObjectDrop { url, .. } => format!("drop location {url}"),
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
    // The datasets open at the same time: after a crash, each one on a
    // shared history waits for its replica name (up to the heartbeat's
    // TTL), and reads its history; one after the other, a config of N
    // datasets would wait N times.
    let opened: Vec<(Rules, Result<_, AppError>)> = std::thread::scope(|scope| {
        let opening: Vec<_> = datasets
            .into_iter()
            .map(|rules| {
                let (r, opts) = (rules.clone(), opts.clone());
                let h = std::thread::Builder::new()
                    .name(format!("dqmon-open-{}", rules.dataset))
                    .spawn_scoped(scope, move || open_dataset(r, opts))
                    .expect("a thread to open a dataset");
                (rules, h)
            })
            .collect();
        opening
            .into_iter()
            .map(|(rules, h)| (rules, h.join().expect("opening a dataset does not panic")))
            .collect()
    });
    // in the config's order: the first error, refusals aside, is the one
    // reported (the datasets opened are dropped, their names released)
    for (rules, result) in opened {
        match result {
            Ok(pair) => workers.push(pair),
            Err(e @ AppError::BaselineRefused { .. }) => stopped.push(Stopped::start(rules, e)?),
            Err(e) => return Err(e),
        }
    }
    let handles: Vec<_> = workers
        .into_iter()
        .map(|(w, source)| {
            let name = w.rules.dataset.clone();
            let s = shutdown.clone();
            (name, std::thread::spawn(move || w.run(source, s)))
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

/// A dataset's worker and source, opened: baseline verified, history
/// opened (its replica name taken, on a shared history), source open.
fn open_dataset(rules: Rules, opts: RunOptions) -> Result<(Worker, OpenedSource), AppError> {
    let mut w = Worker::open(rules, opts)?;
    let source = w.open_source()?;
    // the start's readers of the history have read it
    w.history.forget_opened();
    // Ready only now: the source's checkpoint was read from the state
    // folder (a probe that passes earlier could turn 503 into a crash
    // instead of a not-ready).
    crate::ops::dataset_opened(&w.rules, &w.baseline_id);
    Ok((w, source))
}

/// Where a dataset's batch history lives when read from `state_dir`: the
/// dataset's prefix of its `shared_history` when `state_dir` is the
/// dataset's own state folder, else that folder (a replay's folder, or
/// any other `--state-dir`, holds its own history).
pub fn history_objects(
    rules: &Rules,
    state_dir: &Path,
) -> Result<Box<dyn crate::store::backend::Backend>, AppError> {
    match &rules.shared_history {
        Some(url) if is_shared(rules, state_dir) => {
            let store = crate::store::object::ObjectBackend::from_url(url).map_err(|e| {
                AppError::SharedHistory {
                    dataset: rules.dataset.clone(),
                    url: url.clone(),
                    reason: e.to_string(),
                }
            })?;
            Ok(Box::new(store))
        }
        _ => Ok(Box::new(crate::store::backend::LocalBackend::new(
            state_dir,
        ))),
    }
}

/// Whether the history read from `state_dir` is the dataset's shared one.
pub fn is_shared(rules: &Rules, state_dir: &Path) -> bool {
    rules.shared_history.is_some() && state_dir == rules.state_dir
}

/// The dataset's baselines and approvals: the folder `baseline_dir`
/// names, or the prefix on an object store it names (`s3://...`), where
/// replicas without a volume read them.
pub fn baseline_store(
    rules: &Rules,
) -> Result<crate::store::baselines::BaselineStore, crate::store::baselines::BaselineStoreError> {
    use crate::store::baselines::{BaselineStore, BaselineStoreError};
    let dir = &rules.baseline_dir;
    match dir.to_str().filter(|d| d.contains("://")) {
        Some(url) => {
            let objects = crate::store::object::ObjectBackend::from_url(url).map_err(|source| {
                BaselineStoreError::Io {
                    path: dir.clone(),
                    source,
                }
            })?;
            Ok(BaselineStore::with_backend(dir, Box::new(objects)))
        }
        None => Ok(BaselineStore::new(dir)),
    }
}

/// The audit log of a dataset's state folder: `audit.jsonl` in it, or,
/// with a shared history, this replica's chain on the shared store (see
/// `store::audit::chain`), which outlives the replica's own folder.
pub fn audit_log(
    rules: &Rules,
    state_dir: &Path,
) -> Result<crate::store::audit::AuditLog, crate::store::audit::AuditError> {
    use crate::store::audit::{AuditError, AuditLog};
    if !is_shared(rules, state_dir) {
        return AuditLog::open(state_dir);
    }
    let objects = history_objects(rules, state_dir).map_err(|e| AuditError::Io {
        path: PathBuf::from(rules.shared_history.clone().unwrap_or_default()),
        source: std::io::Error::other(e.to_string()),
    })?;
    AuditLog::open_shared(
        state_dir,
        std::sync::Arc::from(objects),
        &crate::source::stream::replica(),
    )
}

/// With a shared history, this replica's notification inbox on it (the
/// fleet's one alert stream, see [`crate::alert::fleet`]); `None` otherwise.
pub fn fleet_inbox(
    rules: &Rules,
    state_dir: &Path,
) -> Result<Option<crate::alert::fleet::FleetInbox>, AppError> {
    if !is_shared(rules, state_dir) {
        return Ok(None);
    }
    let objects: std::sync::Arc<dyn crate::store::backend::Backend> =
        std::sync::Arc::from(history_objects(rules, state_dir)?);
    Ok(Some(crate::alert::fleet::FleetInbox::new(
        &crate::source::stream::replica(),
        objects,
    )))
}

/// Open the history a dataset's live run writes: its state folder, with
/// the batch objects on the shared history when there is one (as this
/// replica, see [`crate::source::stream::replica`]).
pub fn open_history(rules: &Rules, state_dir: &Path) -> Result<History, AppError> {
    let history_err = |source| AppError::History {
        dataset: rules.dataset.clone(),
        source,
    };
    if is_shared(rules, state_dir) {
        let replica = crate::source::stream::replica();
        // the name first: opening repairs this replica's own batches
        let keeper =
            crate::store::presence::Keeper::start(history_objects(rules, state_dir)?, &replica)
                .map_err(|e| AppError::ReplicaName {
                    dataset: rules.dataset.clone(),
                    reason: e.to_string(),
                })?;
        let objects = history_objects(rules, state_dir)?;
        let mut history =
            History::open_shared(state_dir, objects, &replica).map_err(history_err)?;
        history.hold_name(keeper);
        Ok(history)
    } else {
        History::open(state_dir).map_err(history_err)
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
                let history = open_history(&rules, &rules.state_dir)?;
                let manifests = history
                    .own_summaries()
                    .map_err(|source| AppError::History {
                        dataset: dataset.clone(),
                        source,
                    })?;
                let n = crate::alert::deliver::Notifier::start(
                    &dataset,
                    &rules.state_dir,
                    a.clone(),
                    &manifests,
                    Arc::new(crate::alert::clock::SystemClock),
                    fleet_inbox(&rules, &rules.state_dir)?,
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
