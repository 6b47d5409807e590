//! NaN and ±infinity in a numeric column are findings: they enter no other
//! statistic, so before `non_finite` a column a third NaN, all NaN, or 5%
//! `+inf` against a declared range of [0, 1e6] compared as "no findings".
//!
//! Null: the baseline's rate of non-finite values (0 in 20 clean 2,000-row
//! batches, Jeffreys-smoothed), binomial at the batch's size; one-sided; the
//! missing-value family's share of the budget and its floor (0.5 points).
//! The clean control below checks the same batches give no such finding.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use dqmon_core::baseline::Baseline;
use dqmon_core::compare::{Check, Verdict, compare};
use dqmon_core::pii::PiiKey;
use dqmon_core::profile::profile_batches;
use dqmon_core::rules::Rules;
use dqmon_fixtures::Scenario;

mod common;

const SEED: u64 = 11;

fn batch(i: u64) -> RecordBatch {
    common::batch(SEED, i, Scenario::Clean)
}

/// `amount` of the rows of `tag` replaced, every `every`-th of them, by what
/// `bad` gives for that row's position among them.
fn spoil(b: &RecordBatch, tag: &str, every: usize, bad: impl Fn(usize) -> f64) -> RecordBatch {
    let schema = b.schema();
    let tags = b.column(schema.index_of("trust_tag").unwrap());
    let tags = cast(tags, &DataType::Utf8).unwrap();
    let tags = tags.as_any().downcast_ref::<StringArray>().unwrap();
    let at = schema.index_of("amount").unwrap();
    let amount = cast(b.column(at), &DataType::Float64).unwrap();
    let amount = amount.as_any().downcast_ref::<Float64Array>().unwrap();
    let mut seen = 0;
    let spoiled: Float64Array = (0..b.num_rows())
        .map(|i| {
            if amount.is_null(i) {
                return None;
            }
            if tags.is_valid(i) && tags.value(i) == tag {
                seen += 1;
                if seen % every == 0 {
                    return Some(bad(seen / every));
                }
            }
            Some(amount.value(i))
        })
        .collect();
    let mut columns: Vec<ArrayRef> = b.columns().to_vec();
    let typed = cast(&spoiled, schema.field(at).data_type()).unwrap();
    columns[at] = Arc::new(typed);
    RecordBatch::try_new(schema.clone(), columns).unwrap()
}

fn setup() -> (Rules, PiiKey, Baseline) {
    let rules = common::rules();
    let pii = PiiKey::from_bytes(b"non-finite-test-key");
    let baseline = common::baseline(&rules, &pii, SEED);
    (rules, pii, baseline)
}

#[test]
fn nan_and_infinity_are_reported_on_the_column_and_tag() {
    let (rules, pii, baseline) = setup();
    assert!(
        rules.columns.iter().any(|c| c.name == "amount"),
        "the fixture rules monitor amount"
    );
    type Bad = fn(usize) -> f64;
    let cases: [(&str, usize, Bad); 3] = [
        ("a third NaN or ±inf", 3, |k| {
            [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][k % 3]
        }),
        ("all NaN", 1, |_| f64::NAN),
        ("5% +inf", 20, |_| f64::INFINITY),
    ];
    for (name, every, bad) in cases {
        let b = spoil(&batch(100), "scraped", every, bad);
        let p = profile_batches(&rules, &pii, [&b]).unwrap();
        let findings = compare(&p, &baseline, &rules);
        let f = findings
            .iter()
            .find(|f| f.check == Check::NonFinite)
            .unwrap_or_else(|| panic!("{name}: no non_finite finding in {findings:#?}"));
        assert_eq!(f.column.as_deref(), Some("amount"), "{name}");
        assert_eq!(f.trust_tag, "scraped", "{name}");
        assert_eq!(f.verdict, Verdict::DataQuality, "{name}");
        assert!(
            f.observed_value > f.baseline_value + f.threshold,
            "{name}: {f:?}"
        );
        assert!(
            f.p_value.unwrap() <= f.p_threshold.unwrap(),
            "{name}: {f:?}"
        );
    }
}

#[test]
fn clean_batches_raise_no_non_finite_finding() {
    let (rules, pii, baseline) = setup();
    for i in 100..140 {
        let p = profile_batches(&rules, &pii, [&batch(i)]).unwrap();
        let findings = compare(&p, &baseline, &rules);
        assert!(
            findings.iter().all(|f| f.check != Check::NonFinite),
            "clean batch {i}: {findings:#?}"
        );
    }
}
