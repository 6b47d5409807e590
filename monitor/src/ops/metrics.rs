//! The daemon's Prometheus metrics: every metric name, its help text and
//! its labels are defined here and nowhere else, with the small functions
//! the pipeline calls to record them.
//!
//! Metrics are observations of the process, not results: nothing recorded
//! here feeds back into profiles, findings or alerts, so the wall-clock
//! latencies measured here cannot break determinism. Labels carry names
//! only (dataset, trust tag, check, severity, sink, topic, partition,
//! baseline id), never a data value, so no raw `pii` value can leak through
//! them.
//!
//! The recorder is process-global (the `metrics` facade). Until
//! [`install`] is called every function here is a cheap no-op, so the
//! library and the other commands can call them freely.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `dqmon_batches_total` | counter | dataset, status | batches committed to the history, by `processed`, `quarantined`, `replayed` |
//! | `dqmon_tag_batches_total` | counter | dataset, trust_tag | processed batches that held rows of the tag |
//! | `dqmon_rows_total` | counter | dataset, trust_tag | rows of processed batches |
//! | `dqmon_findings_total` | counter | dataset, check, severity | findings of committed batches |
//! | `dqmon_alerts_total` | counter | dataset, check, severity | alerts appended to the alerts file |
//! | `dqmon_quarantined_total` | counter | dataset | inputs moved to quarantine |
//! | `dqmon_dead_lettered_total` | counter | dataset | records or messages set aside as undecodable by a streaming source |
//! | `dqmon_outbox_depth` | gauge | dataset | alerts in the outbox not yet delivered to every sink |
//! | `dqmon_delivery_failures_total` | counter | dataset, sink | failed delivery attempts of a sink |
//! | `dqmon_kafka_consumer_lag` | gauge | dataset, topic, partition | messages behind the partition's high watermark |
//! | `dqmon_batch_processing_seconds` | histogram | dataset | from picking up a batch to its commit |
//! | `dqmon_dataset_stopped` | gauge | dataset | 1 while monitoring of the dataset is stopped (its approved baseline was refused), 0 while it runs |
//! | `dqmon_baseline_info` | gauge | dataset, baseline_id | 1 for the approved baseline in use, 0 for one used before |
//! | `dqmon_config_reloads_total` | counter | result | SIGHUP reloads, by `applied`, `refused` |
//! | `dqmon_config_info` | gauge | config_hash | 1 for the configuration running now |
//! | `dqmon_build_info` | gauge | version | always 1 |

use std::cell::Cell;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::alert::Alert;
use crate::store::history::{BatchStatus, Manifest};

pub const BATCHES: &str = "dqmon_batches_total";
pub const TAG_BATCHES: &str = "dqmon_tag_batches_total";
pub const ROWS: &str = "dqmon_rows_total";
pub const FINDINGS: &str = "dqmon_findings_total";
pub const ALERTS: &str = "dqmon_alerts_total";
pub const QUARANTINED: &str = "dqmon_quarantined_total";
pub const DROP_REFUSED: &str = "dqmon_drop_refused_total";
pub const DEAD_LETTERED: &str = "dqmon_dead_lettered_total";
pub const OUTBOX_DEPTH: &str = "dqmon_outbox_depth";
pub const NOTIFICATION_LEASE: &str = "dqmon_notification_lease_held";
pub const DELIVERY_FAILURES: &str = "dqmon_delivery_failures_total";
pub const KAFKA_LAG: &str = "dqmon_kafka_consumer_lag";
pub const PROCESSING_SECONDS: &str = "dqmon_batch_processing_seconds";
pub const DATASET_STOPPED: &str = "dqmon_dataset_stopped";
pub const BASELINE_INFO: &str = "dqmon_baseline_info";
pub const CONFIG_RELOADS: &str = "dqmon_config_reloads_total";
pub const CONFIG_INFO: &str = "dqmon_config_info";
pub const BUILD_INFO: &str = "dqmon_build_info";

/// Histogram buckets of the processing latency, in seconds: from a small
/// file (milliseconds) to a 2 GiB one (minutes).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Every batch status, for registering the counters at zero.
const STATUSES: &[&str] = &["processed", "quarantined", "replayed"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The baseline in use per dataset, to set the previous one to 0 on change.
static BASELINES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// The configuration hash in use.
static CONFIG: Mutex<Option<String>> = Mutex::new(None);

/// Install the process-wide Prometheus recorder (once; later calls return
/// the same handle) and describe every metric.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(PROCESSING_SECONDS.to_string()),
                LATENCY_BUCKETS,
            )
            .expect("the latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when another recorder is installed: then ours stays
        // empty, which the tests of this module would show.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only what it records"
            );
        }
        describe();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        counter!(CONFIG_RELOADS, "result" => "applied").increment(0);
        counter!(CONFIG_RELOADS, "result" => "refused").increment(0);
        handle
    })
}

/// The metrics in the Prometheus text format (version 0.0.4).
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    describe_counter!(
        BATCHES,
        "Batches committed to the history, by status (processed, quarantined, replayed)."
    );
    describe_counter!(
        TAG_BATCHES,
        "Processed batches that held rows of the trust tag."
    );
    describe_counter!(ROWS, "Rows of processed batches, by trust tag.");
    describe_counter!(
        FINDINGS,
        "Findings of committed batches, by check and severity."
    );
    describe_counter!(
        ALERTS,
        "Alerts appended to the alerts file, by check and severity."
    );
    describe_counter!(QUARANTINED, "Inputs moved to quarantine.");
    describe_counter!(
        DROP_REFUSED,
        "Drop-folder entries refused unread (symlink, directory, special file, non-UTF-8 name), by kind."
    );
    describe_counter!(
        DEAD_LETTERED,
        "Records or messages a streaming source set aside as undecodable."
    );
    describe_gauge!(
        OUTBOX_DEPTH,
        "Alerts in the outbox not yet delivered to every sink."
    );
    describe_gauge!(
        NOTIFICATION_LEASE,
        "1 while this replica holds the lease of a dataset's fleet notifications (it delivers them), else 0."
    );
    describe_counter!(DELIVERY_FAILURES, "Failed delivery attempts, by sink.");
    describe_gauge!(
        KAFKA_LAG,
        "Messages between the committed offset and the high watermark, per partition."
    );
    describe_histogram!(
        PROCESSING_SECONDS,
        Unit::Seconds,
        "Seconds from picking up a batch to its commit in the history."
    );
    describe_gauge!(
        BASELINE_INFO,
        "1 for the approved baseline a dataset compares against now, 0 for one it used before."
    );
    describe_gauge!(
        DATASET_STOPPED,
        "1 while monitoring of the dataset is stopped because its approved baseline was refused; 0 while it runs."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads on SIGHUP: applied, or refused (invalid; the old one keeps running)."
    );
    describe_gauge!(CONFIG_INFO, "1 for the configuration running now.");
    describe_gauge!(BUILD_INFO, "The dqmon version; always 1.");
}

/// Register a dataset's series at zero, so that dashboards and alert rules
/// see them before the first batch arrives.
pub fn register_dataset(dataset: &str) {
    let d = dataset.to_string();
    for s in STATUSES {
        counter!(BATCHES, "dataset" => d.clone(), "status" => *s).increment(0);
    }
    counter!(QUARANTINED, "dataset" => d.clone()).increment(0);
    counter!(DROP_REFUSED, "dataset" => d.clone(), "kind" => "symlink").increment(0);
    counter!(DEAD_LETTERED, "dataset" => d.clone()).increment(0);
    gauge!(OUTBOX_DEPTH, "dataset" => d.clone()).increment(0.0);
    // Creating the handle registers the histogram with empty buckets.
    let _ = histogram!(PROCESSING_SECONDS, "dataset" => d);
}

/// Register a sink of a dataset, so that its delivery failures show at 0.
/// (For the outbox: call it once per configured sink at start.)
pub fn register_sink(dataset: &str, sink: &str) {
    counter!(DELIVERY_FAILURES, "dataset" => dataset.to_string(), "sink" => sink.to_string())
        .increment(0);
}

thread_local! {
    /// When the batch in hand on this worker thread was picked up.
    static BATCH_START: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A worker thread picks up a batch: the latency of its commit is measured
/// from here (see [`Committed::record`]).
pub fn batch_started() {
    BATCH_START.with(|s| s.set(Some(Instant::now())));
}

/// What a manifest about to be committed contributes to the metrics; taken
/// before the commit (which consumes the manifest) and recorded after it
/// succeeded, so that a failed commit counts nothing.
#[derive(Debug)]
pub struct Committed {
    dataset: String,
    status: BatchStatus,
    rows_by_tag: Vec<(String, u64)>,
    findings: Vec<(&'static str, &'static str)>,
}

impl Committed {
    /// Take what counts from a manifest (its findings already set).
    pub fn of(m: &Manifest) -> Committed {
        Committed {
            dataset: m.dataset.clone(),
            status: m.status,
            rows_by_tag: m.rows_by_tag.iter().map(|(t, n)| (t.clone(), *n)).collect(),
            findings: m
                .findings
                .iter()
                .map(|f| (f.check.as_str(), f.severity.as_str()))
                .collect(),
        }
    }

    /// The batch is committed and `alerts` were newly appended.
    pub fn record(self, alerts: &[Alert]) {
        let d = self.dataset;
        let status = match self.status {
            BatchStatus::Processed => "processed",
            BatchStatus::Quarantined => "quarantined",
            BatchStatus::Replayed => "replayed",
        };
        counter!(BATCHES, "dataset" => d.clone(), "status" => status).increment(1);
        if self.status == BatchStatus::Quarantined {
            counter!(QUARANTINED, "dataset" => d.clone()).increment(1);
        }
        for (tag, rows) in self.rows_by_tag {
            if rows > 0 {
                counter!(TAG_BATCHES, "dataset" => d.clone(), "trust_tag" => tag.clone())
                    .increment(1);
            }
            counter!(ROWS, "dataset" => d.clone(), "trust_tag" => tag).increment(rows);
        }
        for (check, severity) in self.findings {
            counter!(FINDINGS, "dataset" => d.clone(), "check" => check, "severity" => severity)
                .increment(1);
        }
        for a in alerts {
            counter!(
                ALERTS,
                "dataset" => d.clone(),
                "check" => a.check.as_str(),
                "severity" => a.severity.as_str()
            )
            .increment(1);
        }
        if let Some(start) = BATCH_START.with(|s| s.take()) {
            histogram!(PROCESSING_SECONDS, "dataset" => d).record(start.elapsed().as_secs_f64());
        }
    }
}

/// The approved baseline a dataset compares against from now on.
pub fn baseline_in_use(dataset: &str, baseline_id: &str) {
    let mut in_use = BASELINES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = in_use.iter_mut().find(|(d, _)| d == dataset) {
        if entry.1 == baseline_id {
            return;
        }
        gauge!(BASELINE_INFO, "dataset" => dataset.to_string(), "baseline_id" => entry.1.clone())
            .set(0.0);
        entry.1 = baseline_id.to_string();
    } else {
        in_use.push((dataset.to_string(), baseline_id.to_string()));
    }
    gauge!(BASELINE_INFO, "dataset" => dataset.to_string(), "baseline_id" => baseline_id.to_string())
        .set(1.0);
}

/// Whether monitoring of a dataset is stopped (its baseline refused).
pub fn dataset_stopped(dataset: &str, stopped: bool) {
    gauge!(DATASET_STOPPED, "dataset" => dataset.to_string()).set(if stopped { 1.0 } else { 0.0 });
}

/// The configuration whose hash is `hash` runs from now on.
pub fn config_in_use(hash: &str) {
    let mut current = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = current.as_deref() {
        if old == hash {
            return;
        }
        gauge!(CONFIG_INFO, "config_hash" => old.to_string()).set(0.0);
    }
    gauge!(CONFIG_INFO, "config_hash" => hash.to_string()).set(1.0);
    *current = Some(hash.to_string());
}

/// A SIGHUP reload was decided: `applied` or `refused` (the new file is
/// invalid or could not start; the old one keeps running).
pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS, "result" => result).increment(1);
}

/// The number of messages of a dataset waiting in the
/// outbox for at least one sink.
pub fn outbox_depth(dataset: &str, depth: u64) {
    gauge!(OUTBOX_DEPTH, "dataset" => dataset.to_string()).set(depth as f64);
}

/// Whether this replica holds the lease of a dataset's fleet
/// notifications (with a shared history).
pub fn notification_lease(dataset: &str, held: bool) {
    gauge!(NOTIFICATION_LEASE, "dataset" => dataset.to_string()).set(if held { 1.0 } else { 0.0 });
}

/// One failed delivery attempt of a sink.
pub fn delivery_failure(dataset: &str, sink: &str) {
    counter!(DELIVERY_FAILURES, "dataset" => dataset.to_string(), "sink" => sink.to_string())
        .increment(1);
}

/// Kafka messages sent to the dead-letter topic as undecodable.
pub fn dead_lettered(dataset: &str, n: u64) {
    counter!(DEAD_LETTERED, "dataset" => dataset.to_string()).increment(n);
}

/// The Kafka consumer lag of one partition.
pub fn kafka_lag(dataset: &str, topic: &str, partition: i32, lag: i64) {
    gauge!(
        KAFKA_LAG,
        "dataset" => dataset.to_string(),
        "topic" => topic.to_string(),
        "partition" => partition.to_string()
    )
    .set(lag as f64);
}

/// A drop-folder entry was refused unread.
pub fn drop_refused(dataset: &str, kind: &'static str) {
    counter!(DROP_REFUSED, "dataset" => dataset.to_string(), "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one series in rendered text, e.g. `name{a="b"}`.
    pub fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    #[test]
    fn registered_series_show_at_zero_and_hooks_count() {
        install();
        register_dataset("m_unit");
        register_sink("m_unit", "webhook");
        let text = render();
        for series in [
            r#"dqmon_batches_total{dataset="m_unit",status="processed"}"#,
            r#"dqmon_batches_total{dataset="m_unit",status="quarantined"}"#,
            r#"dqmon_quarantined_total{dataset="m_unit"}"#,
            r#"dqmon_dead_lettered_total{dataset="m_unit"}"#,
            r#"dqmon_outbox_depth{dataset="m_unit"}"#,
            r#"dqmon_delivery_failures_total{dataset="m_unit",sink="webhook"}"#,
            r#"dqmon_batch_processing_seconds_count{dataset="m_unit"}"#,
        ] {
            assert_eq!(value(&text, series), Some(0.0), "{series} in\n{text}");
        }
        assert!(text.contains("# TYPE dqmon_batch_processing_seconds histogram"));

        outbox_depth("m_unit", 3);
        delivery_failure("m_unit", "webhook");
        dead_lettered("m_unit", 2);
        kafka_lag("m_unit", "events", 1, 42);
        let text = render();
        assert_eq!(
            value(&text, r#"dqmon_outbox_depth{dataset="m_unit"}"#),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"dqmon_delivery_failures_total{dataset="m_unit",sink="webhook"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"dqmon_dead_lettered_total{dataset="m_unit"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"dqmon_kafka_consumer_lag{dataset="m_unit",topic="events",partition="1"}"#
            ),
            Some(42.0)
        );
    }

    #[test]
    fn baseline_change_keeps_one_series_at_one() {
        install();
        baseline_in_use("m_base", "aaa");
        baseline_in_use("m_base", "bbb");
        let text = render();
        assert_eq!(
            value(
                &text,
                r#"dqmon_baseline_info{dataset="m_base",baseline_id="aaa"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                r#"dqmon_baseline_info{dataset="m_base",baseline_id="bbb"}"#
            ),
            Some(1.0)
        );
    }
}
