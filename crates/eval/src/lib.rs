//! Detection quality on the synthetic suite: how many attacks and drifts are
//! found (with the right check, column, trust tag and verdict) and how many
//! findings the clean controls raise. Used by `dqmon-eval evaluate`, by the golden
//! tests; [`streams`] measures the same over streams of small batches
//! (campaigns, long clean runs).

pub mod streams;

use std::path::Path;

use serde::{Deserialize, Serialize};

use dqmon::baseline::{Baseline, BatchRef};
use dqmon::compare::{self, Check, Finding, Verdict};
use dqmon::config::model::Rules;
use dqmon::decode::parquet::{ProfileFileError, profile_file};
use dqmon::pii::PiiKey;
use dqmon::profile::ALL;
use dqmon_fixtures::{self as fixtures, Scenario, SuiteFile};

/// The identity of a finding, as golden files record it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FindingKey {
    pub check: Check,
    pub column: Option<String>,
    pub trust_tag: String,
    pub verdict: Verdict,
}

impl From<&Finding> for FindingKey {
    fn from(f: &Finding) -> Self {
        FindingKey {
            check: f.check,
            column: f.column.clone(),
            trust_tag: f.trust_tag.clone(),
            verdict: f.verdict,
        }
    }
}

/// What a scenario should raise: any of `checks` on `column` in `trust_tag`
/// with `verdict`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub checks: Vec<Check>,
    pub column: Option<String>,
    pub trust_tag: String,
    pub verdict: Verdict,
}

impl Expected {
    pub fn matches(&self, f: &FindingKey) -> bool {
        self.checks.contains(&f.check)
            && self.column == f.column
            && self.trust_tag == f.trust_tag
            && self.verdict == f.verdict
    }
}

/// The finding a scenario is expected to raise (`None` for clean batches).
pub fn expected(scenario: &Scenario, rules: &Rules) -> Option<Expected> {
    let label = rules.label.as_ref().map(|l| l.column.clone());
    // a change confined to one tag: possible poisoning in a low-trust tag,
    // a source change in a trusted one
    let poison_or_drift = |tag: &str| {
        if rules.trust.is_low_trust(tag) {
            Verdict::PossiblePoisoning
        } else {
            Verdict::SourceChange
        }
    };
    Some(match scenario {
        Scenario::Clean => return None,
        Scenario::LabelFlip { tag, .. } => Expected {
            checks: vec![
                Check::LabelRate,
                Check::LabelRateVsTrusted,
                Check::LabelCalibration,
            ],
            column: label,
            trust_tag: tag.clone(),
            verdict: poison_or_drift(tag),
        },
        Scenario::TargetedFlip { tag, column, .. } => Expected {
            checks: vec![Check::SliceLabelRate],
            column: Some(column.clone()),
            trust_tag: tag.clone(),
            verdict: poison_or_drift(tag),
        },
        Scenario::PlantedCategory { column, tag, .. } => Expected {
            checks: vec![
                Check::UnseenValues,
                Check::TopNewValue,
                Check::TopRareValueCommon,
            ],
            column: Some(column.clone()),
            trust_tag: tag.clone().unwrap_or_else(|| ALL.into()),
            verdict: tag
                .as_deref()
                .map(poison_or_drift)
                .unwrap_or(Verdict::Drift),
        },
        Scenario::MissingJump { column, .. } => Expected {
            checks: vec![Check::MissingRate],
            column: Some(column.clone()),
            trust_tag: ALL.into(),
            verdict: Verdict::DataQuality,
        },
        Scenario::OutOfRange { column, .. } => Expected {
            checks: vec![Check::OutOfRange],
            column: Some(column.clone()),
            trust_tag: ALL.into(),
            verdict: Verdict::DataQuality,
        },
        Scenario::TagFlood { tag, .. } => Expected {
            checks: vec![Check::TagShare],
            column: None,
            trust_tag: tag.clone(),
            verdict: poison_or_drift(tag),
        },
        Scenario::RowSpike { .. } => Expected {
            checks: vec![Check::RowCount],
            column: None,
            trust_tag: ALL.into(),
            verdict: Verdict::DataQuality,
        },
        Scenario::DuplicateBurst { .. } => Expected {
            checks: vec![Check::DuplicateRows],
            column: None,
            trust_tag: ALL.into(),
            verdict: Verdict::DataQuality,
        },
        Scenario::NaturalDrift { .. } => Expected {
            checks: vec![
                Check::Distribution,
                Check::LabelRate,
                Check::LabelCalibration,
                Check::SliceShare,
                Check::SliceLabelRate,
            ],
            column: None,
            trust_tag: ALL.into(),
            verdict: Verdict::Drift,
        },
        Scenario::DropColumn { column } => Expected {
            checks: vec![Check::SchemaMissingColumn],
            column: Some(column.clone()),
            trust_tag: ALL.into(),
            verdict: Verdict::DataQuality,
        },
    })
}

/// One evaluated batch.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub group: String,
    pub name: String,
    pub findings: Vec<FindingKey>,
    /// For attacks and drifts: whether the expected finding was raised.
    pub detected: Option<bool>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub baseline_batches: usize,
    pub rows: Vec<EvalRow>,
}

/// Evaluation failed to run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Fixtures(#[from] fixtures::FixtureError),
    #[error(transparent)]
    Profile(#[from] ProfileFileError),
    #[error(transparent)]
    Baseline(#[from] dqmon::baseline::BaselineError),
}

/// Natural-drift findings may come from any column: match on check, tag and verdict only.
pub(crate) fn detected(exp: &Expected, scenario: &Scenario, keys: &[FindingKey]) -> bool {
    match scenario {
        Scenario::NaturalDrift { .. } => keys.iter().any(|k| {
            exp.checks.contains(&k.check)
                && k.trust_tag == exp.trust_tag
                && k.verdict == exp.verdict
        }),
        _ => keys.iter().any(|k| exp.matches(k)),
    }
}

/// Write the suite to `dir`, build a baseline from its baseline batches,
/// and compare every other batch with it.
pub fn evaluate(
    rules: &Rules,
    dir: &Path,
    rows: usize,
    seed: u64,
) -> Result<Evaluation, EvalError> {
    let files = fixtures::write_suite(dir, rows, seed)?;
    evaluate_files(rules, &files)
}

/// Evaluate an already written suite.
pub fn evaluate_files(rules: &Rules, files: &[SuiteFile]) -> Result<Evaluation, EvalError> {
    let pii = PiiKey::from_bytes(b"dqmon-evaluation-key-not-secret");
    let mut profiles = Vec::new();
    let mut refs = Vec::new();
    for f in files.iter().filter(|f| f.group == "baseline") {
        let p = profile_file(&f.path, rules, &pii)?;
        refs.push(BatchRef {
            origin: f
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            input_sha256: None,
            rows: p.rows,
        });
        profiles.push(p);
    }
    let baseline = Baseline::build(rules, &profiles, refs, "evaluation")?;
    let mut rows = Vec::new();
    for f in files.iter().filter(|f| f.group != "baseline") {
        let p = profile_file(&f.path, rules, &pii)?;
        let findings = compare::compare(&p, &baseline, rules);
        let keys: Vec<FindingKey> = findings.iter().map(FindingKey::from).collect();
        let det = expected(&f.scenario, rules).map(|e| detected(&e, &f.scenario, &keys));
        let name = match f.scenario {
            // clean controls share a scenario; the file names tell them apart
            Scenario::Clean => f
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            _ => f.scenario.name(),
        };
        rows.push(EvalRow {
            group: f.group.to_string(),
            name,
            findings: keys,
            detected: det,
        });
    }
    Ok(Evaluation {
        baseline_batches: profiles.len(),
        rows,
    })
}

impl Evaluation {
    /// A Markdown table: scenario × strength → found or not; clean → findings.
    pub fn table(&self) -> String {
        let mut s =
            String::from("| group | batch | expected finding | findings |\n|---|---|---|---|\n");
        for r in &self.rows {
            let found = match r.detected {
                Some(true) => "found",
                Some(false) => "MISSED",
                None => "-",
            };
            let list: Vec<String> = r
                .findings
                .iter()
                .map(|k| {
                    format!(
                        "{} {} {} ({})",
                        k.check,
                        k.column.as_deref().unwrap_or("-"),
                        k.trust_tag,
                        k.verdict.as_str()
                    )
                })
                .collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.group,
                r.name,
                found,
                if list.is_empty() {
                    "none".into()
                } else {
                    list.join("; ")
                }
            ));
        }
        let attacks: Vec<&EvalRow> = self.rows.iter().filter(|r| r.detected.is_some()).collect();
        let found = attacks.iter().filter(|r| r.detected == Some(true)).count();
        let clean: Vec<&EvalRow> = self.rows.iter().filter(|r| r.group == "clean").collect();
        let clean_alarms = clean.iter().filter(|r| !r.findings.is_empty()).count();
        let clean_findings: usize = clean.iter().map(|r| r.findings.len()).sum();
        s.push_str(&format!(
            "\ndetected {found}/{} attack and drift batches; clean controls: {clean_alarms}/{} batches with findings ({clean_findings} findings); baseline of {} batches\n",
            attacks.len(),
            clean.len(),
            self.baseline_batches
        ));
        s
    }
}
