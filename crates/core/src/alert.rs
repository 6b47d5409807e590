//! Alerts: findings of a batch become alerts with a stable fingerprint
//! (dataset, check, column, trust tag) and an id that is unique per batch
//! and finding, so that reprocessing a batch after a crash can never look
//! like a new alert. Everything in an alert comes from the data, the rules
//! and the baseline — never from the wall clock — so replays reproduce it
//! byte for byte. Delivery (outbox, lifecycle, sinks) is the daemon's.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compare::{Check, Finding, Severity, Verdict};

/// Context of the batch an alert is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchContext {
    pub dataset: String,
    pub batch_id: String,
    /// Where the batch came from (file path, or topic/partition/offsets).
    pub source: String,
    pub input_sha256: String,
    pub baseline_id: String,
    pub rules_hash: String,
    /// Latest event time in the batch (RFC 3339), when a timestamp column has one.
    pub batch_time: Option<String>,
    pub rows: u64,
}

/// One alert, as written to the alerts file (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub fingerprint: String,
    pub dataset: String,
    pub batch_id: String,
    pub source: String,
    pub input_sha256: String,
    pub batch_time: Option<String>,
    pub check: Check,
    pub column: Option<String>,
    pub trust_tag: String,
    pub value: Option<String>,
    pub baseline_id: String,
    pub baseline_value: f64,
    pub observed_value: f64,
    pub statistic_name: String,
    /// `None` for batch-level alerts that test nothing.
    pub statistic: Option<f64>,
    pub threshold: f64,
    /// `None` for batch-level alerts that test nothing.
    pub p_value: Option<f64>,
    pub effect_size: f64,
    pub attribution: std::collections::BTreeMap<String, f64>,
    pub severity: Severity,
    pub verdict: Verdict,
    pub message: String,
    pub rules_hash: String,
    pub dqmon_version: String,
}

/// Stable identity of what an alert is about, across batches.
pub fn fingerprint(dataset: &str, check: Check, column: Option<&str>, trust_tag: &str) -> String {
    let key = format!(
        "{dataset}\u{1f}{}\u{1f}{}\u{1f}{trust_tag}",
        check.as_str(),
        column.unwrap_or("-")
    );
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl Alert {
    /// The alert for a finding of a batch.
    pub fn new(ctx: &BatchContext, f: &Finding) -> Alert {
        let fp = fingerprint(&ctx.dataset, f.check, f.column.as_deref(), &f.trust_tag);
        let id_key = format!(
            "{}\u{1f}{fp}\u{1f}{}",
            ctx.batch_id,
            f.value.as_deref().unwrap_or("")
        );
        Alert {
            alert_id: hex::encode(&Sha256::digest(id_key.as_bytes())[..16]),
            fingerprint: fp,
            dataset: ctx.dataset.clone(),
            batch_id: ctx.batch_id.clone(),
            source: ctx.source.clone(),
            input_sha256: ctx.input_sha256.clone(),
            batch_time: ctx.batch_time.clone(),
            check: f.check,
            column: f.column.clone(),
            trust_tag: f.trust_tag.clone(),
            value: f.value.clone(),
            baseline_id: ctx.baseline_id.clone(),
            baseline_value: f.baseline_value,
            observed_value: f.observed_value,
            statistic_name: f.statistic_name.clone(),
            statistic: f.statistic,
            threshold: f.threshold,
            p_value: f.p_value,
            effect_size: f.effect_size,
            attribution: f.attribution.clone(),
            severity: f.severity,
            verdict: f.verdict,
            message: f.message.clone(),
            rules_hash: ctx.rules_hash.clone(),
            dqmon_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// One readable line for a terminal. Sources, values, trust tags,
    /// columns and messages carry untrusted text (a file's name, a data
    /// value), so the line is escaped: whatever they hold, it stays one line.
    pub fn line(&self) -> String {
        let line = format!(
            "ALERT [{}] {} {}/{}{} tag={} verdict={} batch={} ({}): {}",
            self.severity.as_str(),
            self.dataset,
            self.check,
            self.column.as_deref().unwrap_or("-"),
            self.value
                .as_deref()
                .map(|v| format!("={v}"))
                .unwrap_or_default(),
            self.trust_tag,
            self.verdict.as_str(),
            &self.batch_id[..12.min(self.batch_id.len())],
            self.source,
            self.message
        );
        crate::escape::escape(&line).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_specific() {
        let a = fingerprint("d", Check::LabelRate, Some("label"), "scraped");
        assert_eq!(
            a,
            fingerprint("d", Check::LabelRate, Some("label"), "scraped")
        );
        assert_ne!(
            a,
            fingerprint("d", Check::LabelRate, Some("label"), "vendor")
        );
        assert_ne!(
            a,
            fingerprint("e", Check::LabelRate, Some("label"), "scraped")
        );
        assert_eq!(a.len(), 16);
    }
}
