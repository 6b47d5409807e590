//! Opening a dataset's worker: its state folder and writer lock, the
//! approved baseline, the history and the evidence after its last commit,
//! the PII key, the drop folder; for a live run or a replay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::compare;
use crate::config::model::{Rules, SourceRule};
use crate::pii::PiiKey;
use crate::source::parquet_drop::DropFolder;
use crate::store::baselines::BaselineStoreError;
use crate::store::history::History;

use crate::pipeline::Worker;

use super::{AppError, PiiAccess, RunOptions, RunSummary, dataset_pii_key, source_label};

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
}
