//! Running dqmon as a service: health and readiness, Prometheus metrics,
//! the HTTP listener that serves them, and `dqmon run`'s supervisor
//! (signals, config reload on SIGHUP).
//!
//! ```text
//!   signals ──► service (supervisor) ──► app::run_datasets (workers)
//!   (INT/TERM:     │ reload: load + validate     │ hooks: dataset_opened,
//!    stop; HUP:    │ the new file, then restart  │ metrics::batch_started,
//!    reload)       │ the workers                 │ metrics::Committed
//!                  ▼                             ▼
//!               health ◄──────────── server ───► metrics
//!                         /healthz /readyz /metrics
//! ```
//!
//! This module observes the pipeline and restarts it; it must not take
//! part in it: nothing here feeds profiles, findings or alerts (so the
//! wall-clock times it measures cannot break determinism), and nothing it
//! logs or serves holds a data value or a secret.

pub mod health;
pub mod metrics;
pub mod server;
pub mod service;

use crate::config::model::Rules;

/// A dataset's worker is open: its approved baseline `baseline_id` was
/// loaded and verified, and its source opened (the drop folder's
/// checkpoint read). Called by [`crate::app::run_datasets`].
pub fn dataset_opened(rules: &Rules, baseline_id: &str) {
    metrics::register_dataset(&rules.dataset);
    metrics::baseline_in_use(&rules.dataset, baseline_id);
    metrics::dataset_stopped(&rules.dataset, false);
    health::global().opened(&rules.dataset, baseline_id);
}

/// Monitoring of a dataset is stopped: its approved baseline was refused
/// (`reason`). Called by [`crate::app::run_datasets`]; the other datasets
/// keep running.
pub fn dataset_stopped(rules: &Rules, reason: &str) {
    metrics::register_dataset(&rules.dataset);
    metrics::dataset_stopped(&rules.dataset, true);
    health::global().stopped(&rules.dataset, reason);
}
