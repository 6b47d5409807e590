//! A broken batch pages once, not thousands of times: schema changes of
//! one batch are one finding per kind of change, and past
//! `max_findings_per_batch` the rest are counted in one summary.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

use dqmon_core::baseline::Baseline;
use dqmon_core::compare::{Check, Severity, compare};
use dqmon_core::pii::PiiKey;
use dqmon_core::profile::profile_batches;
use dqmon_core::rules::Rules;
use dqmon_fixtures::Scenario;

mod common;

const SEED: u64 = 5;

fn batch(i: u64, scenario: Scenario) -> RecordBatch {
    common::batch(SEED, i, scenario)
}

fn baseline(rules: &Rules, pii: &PiiKey) -> Baseline {
    common::baseline(rules, pii, SEED)
}

#[test]
fn five_thousand_new_columns_are_one_finding() {
    let rules = common::rules();
    let pii = PiiKey::from_bytes(b"floods-test-key");
    let baseline = baseline(&rules, &pii);
    let b = batch(100, Scenario::Clean);
    let mut fields: Vec<Arc<Field>> = b.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = b.columns().to_vec();
    let extra: ArrayRef = Arc::new(Int32Array::from(vec![1; b.num_rows()]));
    for k in 0..5_000 {
        fields.push(Arc::new(Field::new(
            format!("x{k:04}"),
            DataType::Int32,
            true,
        )));
        columns.push(extra.clone());
    }
    let wide = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let p = profile_batches(&rules, &pii, [&wide]).unwrap();
    let findings = compare(&p, &baseline, &rules);
    let schema: Vec<_> = findings
        .iter()
        .filter(|f| f.check == Check::SchemaNewColumn)
        .collect();
    assert_eq!(schema.len(), 1, "{findings:#?}");
    let f = schema[0];
    assert_eq!(f.observed_value, 5_000.0);
    assert_eq!(f.column, None, "a group names no single column");
    assert!(
        f.message
            .starts_with("5000 new columns are not in the baseline: `x0000` (Int32)")
            && f.message.ends_with("and 4990 more"),
        "{}",
        f.message
    );
    assert!(findings.len() <= rules.thresholds.max_findings_per_batch);
}

#[test]
fn one_dropped_column_keeps_its_name() {
    let rules = common::rules();
    let pii = PiiKey::from_bytes(b"floods-test-key");
    let baseline = baseline(&rules, &pii);
    let b = batch(
        100,
        Scenario::DropColumn {
            column: "age".into(),
        },
    );
    let p = profile_batches(&rules, &pii, [&b]).unwrap();
    let findings = compare(&p, &baseline, &rules);
    let f = findings
        .iter()
        .find(|f| f.check == Check::SchemaMissingColumn)
        .expect("a missing-column finding");
    assert_eq!(f.column.as_deref(), Some("age"));
    assert_eq!(
        f.message,
        "column `age` (Int32) is in the baseline but missing from this batch"
    );
}

#[test]
fn past_the_cap_the_rest_is_one_summary_with_the_worst_severity() {
    let mut rules = common::rules();
    let pii = PiiKey::from_bytes(b"floods-test-key");
    let baseline = baseline(&rules, &pii);
    let b = batch(100, Scenario::NaturalDrift { strength: 0.6 });
    let p = profile_batches(&rules, &pii, [&b]).unwrap();
    let all = compare(&p, &baseline, &rules);
    assert!(all.len() >= 3, "drift moves several metrics: {all:#?}");
    rules.thresholds.max_findings_per_batch = 2;
    let capped = compare(&p, &baseline, &rules);
    assert_eq!(capped.len(), 2);
    let summary = capped.last().unwrap();
    assert_eq!(summary.check, Check::TooManyFindings);
    let rest = all.len() - 1;
    assert!(
        summary
            .message
            .starts_with(&format!("{rest} more findings in this batch")),
        "{}",
        summary.message
    );
    assert_eq!(summary.observed_value, all.len() as f64);
    // the most severe are the ones kept
    let worst_dropped = all
        .iter()
        .filter(|f| !capped[..1].contains(f))
        .map(|f| f.severity)
        .max()
        .unwrap();
    assert_eq!(summary.severity, worst_dropped);
    let least_kept = capped[..1].iter().map(|f| f.severity).min().unwrap();
    assert!(least_kept >= worst_dropped);
    assert!(Severity::Critical >= least_kept);
}
