//! Tests of how numeric values reach the quantile sketch: as runs of
//! sorted values (`QUANTILE_RUN`), flushed early when many tags and
//! columns hold too many at once (`PENDING_LIMIT`), and at the end.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::numeric::{PENDING_LIMIT, QUANTILE_RUN};
use super::tests::key;
use super::*;
use crate::rules::{ColumnKind, ColumnRule, Rules};

/// Record batches of `rows` each: an `amount` column (log-normal-ish,
/// 1% nulls) and a trust tag out of `tags`.
fn batches(seed: u64, total: usize, rows: usize, tags: usize) -> Vec<RecordBatch> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let schema = Arc::new(Schema::new(vec![
        Field::new("amount", DataType::Float64, true),
        Field::new("trust_tag", DataType::Utf8, true),
    ]));
    let names: Vec<String> = (0..tags).map(|t| format!("tag{t:02}")).collect();
    (0..total.div_ceil(rows))
        .map(|b| {
            let n = rows.min(total - b * rows);
            let amount: ArrayRef = Arc::new(
                (0..n)
                    .map(|_| {
                        (rng.random::<f64>() > 0.01).then(|| (rng.random::<f64>() * 6.0).exp())
                    })
                    .collect::<Float64Array>(),
            );
            let tag: ArrayRef = Arc::new(
                (0..n)
                    .map(|_| Some(names[rng.random_range(0..tags)].as_str()))
                    .collect::<StringArray>(),
            );
            RecordBatch::try_new(schema.clone(), vec![amount, tag]).unwrap()
        })
        .collect()
}

fn rules() -> Rules {
    let mut r = Rules::for_tests(
        "q",
        vec![ColumnRule {
            name: "amount".into(),
            kind: ColumnKind::Numeric,
            range: None,
            pii: false,
            nullable: true,
        }],
    );
    r.label = None;
    r
}

/// Each tag's sketch holds every non-null value once (its weight is the
/// count), its min and max are the data's, its median is within 1% of
/// rank of the data's, and the same input profiles to the same bytes, also
/// when the many-tags flush (`PENDING_LIMIT`) cuts the runs: 60 tags hold
/// more than 2^18 pending values before any reaches a run of 16,384.
#[test]
fn runs_hold_every_value_once_whatever_cuts_them() {
    let r = rules();
    for (tags, total) in [(4usize, 200_000usize), (60, 600_000)] {
        // 4 tags: runs fill and the limit is never reached; 60 tags: the
        // limit is reached before any run fills
        let runs_fill = total / tags > QUANTILE_RUN && tags * QUANTILE_RUN < PENDING_LIMIT;
        let limit_first = total / tags < QUANTILE_RUN && total > PENDING_LIMIT;
        assert!(if tags == 4 { runs_fill } else { limit_first });
        let input = batches(tags as u64, total, 8_192, tags);
        let profile = profile_batches(&r, &key(), &input).unwrap();
        let again = profile_batches(&r, &key(), &input).unwrap();
        assert_eq!(
            serde_json::to_string(&profile).unwrap(),
            serde_json::to_string(&again).unwrap(),
            "{tags} tags: the same bytes"
        );
        assert_eq!(profile.tags.len(), tags);
        for (tag, slice) in &profile.tags {
            let mut values: Vec<f64> = input
                .iter()
                .flat_map(|b| {
                    let a = b.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
                    let t = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                    (0..b.num_rows())
                        .filter(|&i| t.value(i) == tag && a.is_valid(i))
                        .map(|i| a.value(i))
                        .collect::<Vec<_>>()
                })
                .collect();
            values.sort_by(f64::total_cmp);
            let col = &slice.columns["amount"];
            let num = col.numeric.as_ref().unwrap();
            assert_eq!(num.quantiles.weight(), values.len() as u64, "{tag}");
            assert_eq!(col.count, values.len() as u64, "{tag}");
            assert_eq!(num.quantiles.quantile(0.0), Some(values[0]), "{tag}");
            assert_eq!(
                num.quantiles.quantile(1.0),
                Some(*values.last().unwrap()),
                "{tag}"
            );
            let median = num.quantiles.quantile(0.5).unwrap();
            let rank = values.partition_point(|&v| v < median) as f64 / values.len() as f64;
            assert!(
                (rank - 0.5).abs() < 0.01,
                "{tag}: median {median} at rank {rank}"
            );
        }
    }
}
