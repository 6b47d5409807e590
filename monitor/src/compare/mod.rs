//! Compare: a pure function of a batch profile, a baseline and the rules.
//!
//! Every check computes, per slice (`all` and each trust tag), an observed
//! value, the baseline value, a test statistic and p-value, and an effect
//! size. A test becomes a *hit* only when it is significant after
//! Benjamini-Hochberg across all of the batch's tests **and** its effect is
//! over the threshold: the larger of the rules' floor and k·σ of the metric's
//! batch-to-batch band in the baseline. Large clean batches therefore stay
//! quiet: significance alone never raises a finding.
//!
//! Hits are then grouped per (check, column): a change seen in most tags,
//! trusted ones included, becomes one finding on `all`; a change confined to
//! some tags becomes one finding per tag. Each finding carries the share of
//! the change that each tag contributes and a verdict: `data_quality` for
//! missing values, ranges and schema; otherwise `possible_poisoning` when the
//! change sits in low-trust tags and `drift` when it does not.
//!
//! No I/O, no clock: the same inputs give the same findings, in the same order.

mod checks;
pub mod stats;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::config::model::Rules;
use crate::profile::{ALL, BatchProfile};
pub use checks::Reference;
use stats::Band;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    RowCount,
    TagShare,
    MissingRate,
    OutOfRange,
    Distribution,
    TopNewValue,
    TopRareValueCommon,
    TopValueVanished,
    LabelRate,
    LabelRateVsTrusted,
    SchemaNewColumn,
    SchemaMissingColumn,
    SchemaRetypedColumn,
    DuplicateRows,
    MalformedRecords,
    ReplayedBatch,
    /// The approved baseline was refused (tampered, unsigned, wrongly signed, approver = builder).
    BaselineRefused,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::RowCount => "row_count",
            Check::TagShare => "tag_share",
            Check::MissingRate => "missing_rate",
            Check::OutOfRange => "out_of_range",
            Check::Distribution => "distribution",
            Check::TopNewValue => "top_new_value",
            Check::TopRareValueCommon => "top_rare_value_common",
            Check::TopValueVanished => "top_value_vanished",
            Check::LabelRate => "label_rate",
            Check::LabelRateVsTrusted => "label_rate_vs_trusted",
            Check::SchemaNewColumn => "schema_new_column",
            Check::SchemaMissingColumn => "schema_missing_column",
            Check::SchemaRetypedColumn => "schema_retyped_column",
            Check::DuplicateRows => "duplicate_rows",
            Check::MalformedRecords => "malformed_records",
            Check::ReplayedBatch => "replayed_batch",
            Check::BaselineRefused => "baseline_refused",
        }
    }

    /// Checks whose findings are always data-quality problems.
    pub fn is_data_quality(self) -> bool {
        matches!(
            self,
            Check::MissingRate
                | Check::OutOfRange
                | Check::SchemaNewColumn
                | Check::SchemaMissingColumn
                | Check::SchemaRetypedColumn
                | Check::MalformedRecords
        )
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a finding reads to the person triaging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every tag moved together: the world changed.
    Drift,
    /// The change sits in low-trust tags: someone may be pushing data.
    PossiblePoisoning,
    /// Missing values, out-of-range values, schema changes, malformed input.
    DataQuality,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Drift => "drift",
            Verdict::PossiblePoisoning => "possible_poisoning",
            Verdict::DataQuality => "data_quality",
        }
    }
}

/// How urgent a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One suspicious shift, with everything needed to judge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub check: Check,
    /// The column, or `None` for batch-level checks.
    pub column: Option<String>,
    /// `all` when the change spans the batch, else the trust tag that moved.
    pub trust_tag: String,
    /// The value concerned, for top-category checks (a keyed hash for pii columns).
    pub value: Option<String>,
    pub baseline_value: f64,
    pub observed_value: f64,
    /// Name of the statistic (`z`, `psi`, `js`, `count`).
    pub statistic_name: String,
    pub statistic: f64,
    /// The effect threshold that was crossed.
    pub threshold: f64,
    pub p_value: f64,
    pub effect_size: f64,
    /// Tags whose own test was a hit.
    pub moved_tags: Vec<String>,
    /// Share of the change (0..1) each tag contributes.
    pub attribution: BTreeMap<String, f64>,
    pub verdict: Verdict,
    pub severity: Severity,
    pub message: String,
}

impl Finding {
    /// A batch-level finding that no profile comparison produces (a
    /// quarantined input, a replayed batch).
    pub fn batch_level(
        check: Check,
        verdict: Verdict,
        severity: Severity,
        message: String,
    ) -> Finding {
        Finding {
            check,
            column: None,
            trust_tag: ALL.to_string(),
            value: None,
            baseline_value: 0.0,
            observed_value: 1.0,
            statistic_name: "count".into(),
            statistic: 1.0,
            threshold: 0.0,
            p_value: 0.0,
            effect_size: 1.0,
            moved_tags: Vec::new(),
            attribution: BTreeMap::new(),
            verdict,
            severity,
            message,
        }
    }
}

/// Compare a batch profile with an approved baseline.
pub fn compare(profile: &BatchProfile, baseline: &Baseline, rules: &Rules) -> Vec<Finding> {
    let reference = Reference::new(&baseline.profile, rules);
    let tests = checks::run_all(profile, &reference, Some(&baseline.bands), rules);
    checks::findings(profile, &reference, tests, rules)
}

/// Observed value of every metric of `profile` against `reference`, keyed
/// `check|column|slice`: what a baseline learns its bands from.
pub fn metric_values(
    profile: &BatchProfile,
    reference: &BatchProfile,
    rules: &Rules,
) -> Vec<(String, f64)> {
    let reference = Reference::new(reference, rules);
    checks::run_all(profile, &reference, None, rules)
        .into_iter()
        .filter(|t| t.observed.is_finite())
        .map(|t| (t.band_key(), t.band_value()))
        .collect()
}

/// Band key of a metric.
pub fn band_key(check: Check, column: Option<&str>, slice: &str) -> String {
    format!("{}|{}|{}", check.as_str(), column.unwrap_or("-"), slice)
}

fn band<'a>(bands: Option<&'a BTreeMap<String, Band>>, key: &str) -> Option<&'a Band> {
    bands.and_then(|b| b.get(key)).filter(|b| b.usable())
}

/// Shared name of the whole-batch slice.
pub const ALL_SLICE: &str = ALL;
