//! Compare: a pure function of a batch profile, a baseline, the rules and
//! the evidence gathered over the previous batches.
//!
//! ```text
//!  profile ─┐
//!  baseline ├─► checks (one test per metric × slice, each with its null)
//!  rules ───┘          │
//!  evidence(prev) ─────┼─► decide: windows of batches, false-alarm budget,
//!                      │           effect floors, grouping, verdicts
//!                      ▼
//!               findings + evidence(this batch)
//! ```
//!
//! Every check computes, per slice (`all` and each trust tag), an observed
//! value, the baseline value, a test statistic, a p-value under a stated
//! null (`checks`) and an effect size. A test becomes a *hit* when its
//! p-value is within its share of the user's false-alarm budget
//! ([`budget`]) **and** its effect reaches the rules' floor: large clean
//! batches stay quiet because the floor is in units a person reads, small
//! ones because the null is the binomial error at the batch's own size plus
//! the baseline's batch-to-batch variance. Count-based tests also pool the
//! last batches ([`evidence`]), so a campaign too small to see in one batch
//! is seen over several.
//!
//! Hits are grouped per (check, column, value) and given a verdict
//! (`decide`). No I/O, no clock: the same inputs give the same findings,
//! in the same order, and the same evidence out.

pub mod budget;
mod checks;
mod decide;
pub mod evidence;
pub mod rate;
pub mod stats;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::profile::{ALL, BatchProfile};
use crate::rules::Rules;
pub use checks::Reference;
pub use evidence::EvidenceState;
use stats::Band;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    RowCount,
    TagShare,
    MissingRate,
    OutOfRange,
    /// NaN and ±infinity in a numeric column.
    NonFinite,
    Distribution,
    TopNewValue,
    TopRareValueCommon,
    TopValueVanished,
    LabelRate,
    LabelRateVsTrusted,
    /// A tag's labels against what its rows' slice values predict.
    LabelCalibration,
    /// Rows whose value the baseline never saw.
    UnseenValues,
    /// Rows whose label is none of the classes the baseline has.
    LabelOutOfDomain,
    /// Label rate of the rows with one value of a slice column, per tag.
    SliceLabelRate,
    /// Share of a tag's rows with one value of a slice column.
    SliceShare,
    SchemaNewColumn,
    SchemaMissingColumn,
    SchemaRetypedColumn,
    DuplicateRows,
    MalformedRecords,
    ReplayedBatch,
    /// More findings than `max_findings_per_batch`: the rest, counted.
    TooManyFindings,
    /// The approved baseline was refused (tampered, unsigned, wrongly signed, approver = builder).
    BaselineRefused,
}

impl Check {
    /// Every check, in declaration order (the names a route may match).
    pub const ALL: &'static [Check] = &[
        Check::RowCount,
        Check::TagShare,
        Check::MissingRate,
        Check::OutOfRange,
        Check::NonFinite,
        Check::Distribution,
        Check::TopNewValue,
        Check::TopRareValueCommon,
        Check::TopValueVanished,
        Check::LabelRate,
        Check::LabelRateVsTrusted,
        Check::LabelCalibration,
        Check::UnseenValues,
        Check::LabelOutOfDomain,
        Check::SliceLabelRate,
        Check::SliceShare,
        Check::SchemaNewColumn,
        Check::SchemaMissingColumn,
        Check::SchemaRetypedColumn,
        Check::DuplicateRows,
        Check::MalformedRecords,
        Check::ReplayedBatch,
        Check::TooManyFindings,
        Check::BaselineRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::RowCount => "row_count",
            Check::TagShare => "tag_share",
            Check::MissingRate => "missing_rate",
            Check::OutOfRange => "out_of_range",
            Check::NonFinite => "non_finite",
            Check::Distribution => "distribution",
            Check::TopNewValue => "top_new_value",
            Check::TopRareValueCommon => "top_rare_value_common",
            Check::TopValueVanished => "top_value_vanished",
            Check::LabelRate => "label_rate",
            Check::LabelRateVsTrusted => "label_rate_vs_trusted",
            Check::LabelCalibration => "label_calibration",
            Check::UnseenValues => "unseen_values",
            Check::LabelOutOfDomain => "label_out_of_domain",
            Check::SliceLabelRate => "slice_label_rate",
            Check::SliceShare => "slice_share",
            Check::SchemaNewColumn => "schema_new_column",
            Check::SchemaMissingColumn => "schema_missing_column",
            Check::SchemaRetypedColumn => "schema_retyped_column",
            Check::DuplicateRows => "duplicate_rows",
            Check::MalformedRecords => "malformed_records",
            Check::ReplayedBatch => "replayed_batch",
            Check::TooManyFindings => "too_many_findings",
            Check::BaselineRefused => "baseline_refused",
        }
    }

    /// Checks whose findings are always data-quality problems.
    pub fn is_data_quality(self) -> bool {
        matches!(
            self,
            Check::MissingRate
                | Check::LabelOutOfDomain
                | Check::OutOfRange
                | Check::NonFinite
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
    /// A strict majority of the tags moved, the most trusted among them: the world changed.
    Drift,
    /// The change sits in low-trust tags: someone may be pushing data.
    PossiblePoisoning,
    /// The change sits in trusted tags without the majority: one source changed.
    SourceChange,
    /// Missing values, out-of-range values, schema changes, malformed input.
    DataQuality,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Drift => "drift",
            Verdict::PossiblePoisoning => "possible_poisoning",
            Verdict::SourceChange => "source_change",
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
    /// The test statistic; `None` for batch-level findings that test nothing.
    pub statistic: Option<f64>,
    /// The effect threshold (floor) that was crossed.
    pub threshold: f64,
    /// The p-value; `None` for batch-level findings.
    pub p_value: Option<f64>,
    /// The p-value threshold: the test's share of the false-alarm budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_threshold: Option<f64>,
    /// The batches the evidence spans, when more than this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<EvidenceWindow>,
    /// Slice checks: how many values of the slice column moved (this
    /// finding names the strongest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_values_moved: Option<u64>,
    pub effect_size: f64,
    /// Tags whose own test was a hit.
    pub moved_tags: Vec<String>,
    /// Share of the change (0..1) each tag contributes.
    pub attribution: BTreeMap<String, f64>,
    pub verdict: Verdict,
    pub severity: Severity,
    pub message: String,
}

/// The consecutive batches a finding's evidence was pooled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceWindow {
    /// How many batches, this one included.
    pub batches: u64,
    /// The oldest of them.
    pub first_batch: String,
    /// How many input streams the evidence was pooled over: 1 (not
    /// written) for the batch's own stream; more when its windows were
    /// pooled with the other streams of a fleet (`batches` of each).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub streams: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
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
            statistic: None,
            threshold: 0.0,
            p_value: None,
            p_threshold: None,
            window: None,
            slice_values_moved: None,
            effect_size: 1.0,
            moved_tags: Vec::new(),
            attribution: BTreeMap::new(),
            verdict,
            severity,
            message,
        }
    }
}

/// Compare one batch profile with an approved baseline, on its own (no
/// evidence from earlier batches).
pub fn compare(profile: &BatchProfile, baseline: &Baseline, rules: &Rules) -> Vec<Finding> {
    let reference = Reference::new(&baseline.profile, rules);
    let position = Position {
        prior: &EvidenceState::default(),
        siblings: &[],
        batch_id: "-",
        baseline_id: "-",
    };
    compare_sequential(profile, &reference, baseline, rules, position).0
}

/// Where a batch sits in its stream: the evidence after the stream's
/// previous batch, the evidence of the fleet's other streams (each after
/// its last batch the store had when this one was compared: the store
/// records which, so a replay pools the same), the batch's id and the
/// approved baseline's id.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub prior: &'a EvidenceState,
    pub siblings: &'a [&'a EvidenceState],
    pub batch_id: &'a str,
    pub baseline_id: &'a str,
}

/// Compare a batch of a stream against a prepared reference; evidence
/// gathered against another baseline is dropped. Returns the findings and
/// the evidence after this batch.
pub fn compare_sequential(
    profile: &BatchProfile,
    reference: &Reference,
    baseline: &Baseline,
    rules: &Rules,
    at: Position<'_>,
) -> (Vec<Finding>, EvidenceState) {
    let mut evidence = at.prior.continue_for(at.baseline_id);
    let tests = checks::run_all(profile, reference, Some(&baseline.bands), rules);
    let findings = decide::findings(
        profile,
        reference,
        tests,
        rules,
        &mut evidence,
        at.siblings,
        at.batch_id,
    );
    (findings, evidence)
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
