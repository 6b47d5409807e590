//! Candidate baselines from the history (`dqmon baseline build
//! --from-history --between T1 T2`).
//!
//! Owns choosing the stored batches of a time window — processed batches
//! whose batch time (from the data) is in `[T1, T2)`, leaving out batches
//! that raised alerts unless asked — and reading their stored profiles, so
//! that [`crate::baseline::Baseline::build`] merges exactly what live
//! monitoring profiled; no input file is read again.
//!
//! It must not write: storing the candidate is the caller's job (through
//! the baseline store), and approving it stays a separate, explicit step.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};

use crate::baseline::BatchRef;
use crate::profile::BatchProfile;
use crate::store::history::{BatchStatus, Manifest};

/// Choosing or reading the batches failed.
#[derive(Debug, thiserror::Error)]
pub enum FromHistoryError {
    #[error(
        "`{0}` is not a time; give RFC 3339 (2024-06-01T00:00:00Z) or a date (2024-06-01, meaning its midnight UTC)"
    )]
    BadTime(String),
    #[error("the window is empty: {from} is not before {to}")]
    EmptyWindow { from: String, to: String },
    #[error("could not read the history at {path}: {reason}")]
    History { path: PathBuf, reason: String },
    #[error(
        "no stored batch fits: the history holds {processed} processed batches, and {alerted} of those in the window raised alerts{hint}"
    )]
    NoBatches {
        processed: usize,
        alerted: usize,
        hint: &'static str,
    },
}

/// Parse `--between` bounds: RFC 3339, or a date meaning its midnight UTC.
pub fn parse_bound(s: &str) -> Result<DateTime<Utc>, FromHistoryError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| FromHistoryError::BadTime(s.to_string()))
}

/// What was chosen from the history.
#[derive(Debug, Default)]
pub struct Chosen {
    pub profiles: Vec<BatchProfile>,
    pub refs: Vec<BatchRef>,
    /// Batches in the window left out because they raised alerts.
    pub skipped_alerted: usize,
    /// Processed batches without an event time (never in a window).
    pub without_time: usize,
}

/// Pure: which manifests go into the baseline, and how many were left out
/// for their alerts.
pub fn select(
    manifests: &[Manifest],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    include_alerted: bool,
) -> (Vec<&Manifest>, usize, usize) {
    let mut chosen = Vec::new();
    let (mut alerted, mut without_time) = (0, 0);
    for m in manifests
        .iter()
        .filter(|m| m.status == BatchStatus::Processed)
    {
        let Some(t) = m
            .batch_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            without_time += 1;
            continue;
        };
        let t = t.with_timezone(&Utc);
        if t < from || t >= to {
            continue;
        }
        if !m.alerts.is_empty() && !include_alerted {
            alerted += 1;
            continue;
        }
        chosen.push(m);
    }
    (chosen, alerted, without_time)
}

/// Read the manifests and the chosen batches' profiles from a dataset's
/// history (its state folder, or its shared history: the fleet's batches).
pub fn choose(
    objects: &dyn crate::store::backend::Backend,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    include_alerted: bool,
) -> Result<Chosen, FromHistoryError> {
    if from >= to {
        return Err(FromHistoryError::EmptyWindow {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
        });
    }
    let err = |path: &Path, e: &dyn std::fmt::Display| FromHistoryError::History {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let manifests = crate::store::history::read_manifests_from(objects).map_err(|e| match e {
        crate::store::history::HistoryError::Io { path, source } => err(&path, &source),
        crate::store::history::HistoryError::Corrupt { path, reason } => err(&path, &reason),
        other => err(&objects.locate("history/batches"), &other),
    })?;
    let (chosen, skipped_alerted, without_time) = select(&manifests, from, to, include_alerted);
    if chosen.is_empty() {
        let processed = manifests
            .iter()
            .filter(|m| m.status == BatchStatus::Processed)
            .count();
        return Err(FromHistoryError::NoBatches {
            processed,
            alerted: skipped_alerted,
            hint: if skipped_alerted > 0 {
                "; pass --include-alerted to use them anyway"
            } else {
                "; widen --between"
            },
        });
    }
    let mut out = Chosen {
        skipped_alerted,
        without_time,
        ..Default::default()
    };
    for m in chosen {
        let key = format!("history/profiles/{}.json", m.batch_id);
        let path = objects.locate(&key);
        let bytes = objects
            .get(&key)
            .map_err(|e| err(&path, &e))?
            .ok_or_else(|| err(&path, &"the profile of a committed batch is missing"))?;
        let p: BatchProfile = serde_json::from_slice(&bytes).map_err(|e| err(&path, &e))?;
        out.refs.push(BatchRef {
            origin: Path::new(&m.source)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| m.source.clone()),
            input_sha256: Some(m.input_sha256.clone()),
            rows: p.rows,
        });
        out.profiles.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, time: Option<&str>, alerts: usize, status: BatchStatus) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "seq": 0, "batch_id": id, "dataset": "d", "status": "processed",
            "source": format!("/drop/{id}.parquet"), "input_sha256": "00", "input_bytes": 1,
            "rows": 1, "rows_by_tag": {}, "schema_fingerprint": null, "baseline_id": null,
            "rules_hash": "", "dqmon_version": "0", "batch_time": time, "reason": null,
            "findings": [], "alerts": []
        }))
        .unwrap();
        m.status = status;
        if alerts > 0 {
            let a: crate::alert::Alert = serde_json::from_value(serde_json::json!({
                "alert_id": "a", "fingerprint": "f", "dataset": "d", "batch_id": id,
                "source": "s", "input_sha256": "00", "batch_time": time, "check": "label_rate",
                "column": null, "trust_tag": "all", "value": null, "baseline_id": "b",
                "baseline_value": 0.0, "observed_value": 0.0, "statistic_name": "z",
                "statistic": 0.0, "threshold": 0.0, "p_value": 0.0, "effect_size": 0.0,
                "attribution": {}, "severity": "warning", "verdict": "drift", "message": "",
                "rules_hash": "", "dqmon_version": "0"
            }))
            .unwrap();
            m.alerts = vec![a; alerts];
        }
        m
    }

    #[test]
    fn window_is_half_open_and_alerted_batches_are_left_out_unless_asked() {
        let ms = vec![
            manifest(
                "early",
                Some("2024-05-31T23:59:59Z"),
                0,
                BatchStatus::Processed,
            ),
            manifest(
                "start",
                Some("2024-06-01T00:00:00Z"),
                0,
                BatchStatus::Processed,
            ),
            manifest(
                "alerted",
                Some("2024-06-03T12:00:00Z"),
                2,
                BatchStatus::Processed,
            ),
            manifest(
                "bad",
                Some("2024-06-03T13:00:00Z"),
                1,
                BatchStatus::Quarantined,
            ),
            manifest("notime", None, 0, BatchStatus::Processed),
            manifest(
                "end",
                Some("2024-06-08T00:00:00Z"),
                0,
                BatchStatus::Processed,
            ),
        ];
        let (from, to) = (
            parse_bound("2024-06-01").unwrap(),
            parse_bound("2024-06-08T00:00:00Z").unwrap(),
        );
        let (c, alerted, notime) = select(&ms, from, to, false);
        let ids: Vec<_> = c.iter().map(|m| m.batch_id.as_str()).collect();
        assert_eq!(ids, ["start"]);
        assert_eq!((alerted, notime), (1, 1));
        let (c, alerted, _) = select(&ms, from, to, true);
        let ids: Vec<_> = c.iter().map(|m| m.batch_id.as_str()).collect();
        assert_eq!(ids, ["start", "alerted"]);
        assert_eq!(alerted, 0);
    }

    #[test]
    fn bounds_accept_rfc3339_and_dates_and_explain_the_rest() {
        assert_eq!(
            parse_bound("2024-06-01").unwrap(),
            parse_bound("2024-06-01T02:00:00+02:00").unwrap()
        );
        let e = parse_bound("June 1st").unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
    }
}
