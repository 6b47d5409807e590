//! Opening a dataset's worker: its state folder and writer lock, the
//! approved baseline, the history and the evidence after its last commit,
//! the PII key, for a live run or a replay; and its source (drop folder
//! or Kafka consumer) for a live run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::compare;
use crate::config::model::{Rules, SourceRule};
use crate::pii::PiiKey;
use crate::shutdown::Shutdown;
use crate::source::drop_folder::DropSource;
use crate::source::kafka::KafkaStream;
use crate::source::object_drop::ObjectDropSource;
use crate::source::parquet_drop::DropFolder;
use crate::store::baselines::BaselineStoreError;
use crate::store::history::History;
use crate::store::object::ObjectBackend;

use crate::pipeline::Worker;

use super::{
    AppError, PiiAccess, RunOptions, RunSummary, check_pii_key, dataset_pii_key, source_label,
};

/// A dataset's source, opened (its folder made, its consumer subscribed).
pub enum OpenedSource {
    Drop(Box<DropSource>),
    Objects(Box<ObjectDropSource>),
    Kafka(Box<KafkaStream>),
}

impl Worker {
    /// Open everything a dataset needs; every problem is an error before any file is touched.
    pub fn open(rules: Rules, opts: RunOptions) -> Result<Worker, AppError> {
        if let SourceRule::None = &rules.source {
            return Err(AppError::NoSource {
                dataset: rules.dataset,
            });
        }
        let state_dir = rules.state_dir.clone();
        Self::open_with(rules, opts, &state_dir, None)
    }

    /// Open the worker's source as its rules say: the drop folder (made
    /// when missing) or the Kafka consumer (subscribed).
    pub fn open_source(&self) -> Result<OpenedSource, AppError> {
        let dataset = self.rules.dataset.clone();
        let (path, poll, pattern) = match &self.rules.source {
            SourceRule::Kafka(cfg) => {
                return KafkaStream::open(&self.rules, cfg, &self.history, self.opts.once)
                    .map(|k| OpenedSource::Kafka(Box::new(k)))
                    .map_err(|e| self.source_err(e));
            }
            SourceRule::ObjectDrop {
                url,
                poll_interval_ms,
                pattern,
                claim_lease_ms,
            } => {
                let unusable = |reason: String| AppError::DropLocation {
                    dataset: dataset.clone(),
                    url: url.clone(),
                    reason,
                };
                let store = ObjectBackend::from_url(url).map_err(|e| unusable(e.to_string()))?;
                let source = ObjectDropSource::new(
                    &self.rules,
                    Box::new(store),
                    url,
                    pattern,
                    Duration::from_millis(*poll_interval_ms),
                    Duration::from_millis(*claim_lease_ms),
                    self.opts.once,
                )
                .map_err(|e| unusable(format!("bad pattern `{pattern}`: {e}")))?;
                tracing::info!(dataset = %dataset, url = %url, holder = %source.holder(), "watching a drop location on an object store");
                return Ok(OpenedSource::Objects(Box::new(source)));
            }
            SourceRule::ParquetDrop {
                path,
                poll_interval_ms,
                pattern,
            } => (
                path.clone(),
                Duration::from_millis(*poll_interval_ms),
                pattern.clone(),
            ),
            SourceRule::None => return Err(AppError::NoSource { dataset }),
        };
        std::fs::create_dir_all(&path).map_err(|e| AppError::DropFolder {
            dataset: dataset.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let folder = DropFolder::new(&path, &pattern, self.opts.settle).map_err(|e| {
            AppError::DropFolder {
                dataset: dataset.clone(),
                path: path.clone(),
                reason: format!("bad pattern `{pattern}`: {e}"),
            }
        })?;
        DropSource::watch(&self.rules, folder, poll, self.opts.once, &self.history)
            .map(|s| OpenedSource::Drop(Box::new(s)))
            .map_err(|e| self.source_err(e))
    }

    /// Drive the source until shutdown (or, with `once`, until what was
    /// there is handled).
    pub fn run(self, source: OpenedSource, shutdown: Shutdown) -> Result<RunSummary, AppError> {
        match source {
            OpenedSource::Drop(s) => self.drive(*s, &shutdown),
            OpenedSource::Objects(s) => self.drive(*s, &shutdown),
            OpenedSource::Kafka(k) => self.drive(*k, &shutdown),
        }
    }

    /// A worker that handles recorded files (`replay`): its history in
    /// `history_dir`; its source is the caller's (recorded files, or a
    /// topic range). Rules, baseline and PII key (`pii`, read by the caller:
    /// a replay never creates one) are the live dataset's, so a replay
    /// computes exactly what live monitoring computed. It delivers to no
    /// receiver of the rules and records nothing in the live state.
    pub fn open_replay(
        rules: Rules,
        mut opts: RunOptions,
        history_dir: &Path,
        pii: PiiKey,
    ) -> Result<Worker, AppError> {
        opts.recorded_inputs = true;
        Self::open_with(rules, opts, history_dir, Some(pii))
    }

    /// Open the baseline, history and PII key of a dataset (shared by every
    /// source); `pii`: the key when the caller read it (replay), else it is
    /// read, or created under the history's writer lock.
    fn open_with(
        rules: Rules,
        opts: RunOptions,
        history_dir: &Path,
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
        // a replay writes a history of its own, never the shared one
        let mut history = if opts.recorded_inputs {
            History::open(history_dir).map_err(|source| AppError::History {
                dataset: dataset.clone(),
                source,
            })?
        } else {
            super::open_history(&rules, history_dir)?
        };
        let pii = match pii {
            Some(key) => key,
            None => dataset_pii_key(&rules, PiiAccess::Writer(history.writer_lock())).map_err(
                |source| AppError::PiiKey {
                    dataset: dataset.clone(),
                    source,
                },
            )?,
        };
        check_pii_key(&rules, &baseline_id, &baseline, &pii, history_dir)?;
        // Receivers are paged by live monitoring only: a replay never
        // delivers to them (its `--deliver` prints, see `crate::replay`).
        let notifier = match rules.alerts.as_ref().filter(|_| !opts.recorded_inputs) {
            Some(a) => {
                let outbox_err = |source| AppError::Outbox {
                    dataset: dataset.clone(),
                    source,
                };
                let manifests = history
                    .own_summaries()
                    .map_err(|source| AppError::History {
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
                        super::fleet_inbox(&rules, history_dir)?,
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
        let reference = compare::Reference::new(&baseline.profile, &rules);
        Ok(Worker {
            rules,
            pii,
            baseline_id,
            baseline,
            reference,
            history,
            opts,
            summary: RunSummary::default(),
            captured: None,
            notifier,
        })
    }
}
