//! `dqmon profile --json` against exact numbers computed independently with
//! DataFusion SQL on the same Parquet file.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use dqmon_fixtures::Scenario;
use serde_json::Value;

use crate::common::*;

/// Run SQL and return rows as strings (NULL as "null").
async fn sql(ctx: &SessionContext, q: &str) -> Vec<Vec<String>> {
    let batches = ctx.sql(q).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        if s.is_null(r) {
                            "null".to_string()
                        } else {
                            s.value(r).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_json_matches_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let rules = fixture_rules(dir.path());
    let file = dir.path().join("batch.parquet");
    // eight row groups: the exact counts hold through the parallel path
    // and the merge of the row groups' profiles
    write_batch_in_row_groups(
        &file,
        30_000,
        3,
        Scenario::MissingJump {
            column: "amount".into(),
            share: 0.1,
        },
        4_000,
    );

    let out = dqmon_with_pii_key(&[
        "profile",
        "--config",
        rules.to_str().unwrap(),
        "--json",
        "--top",
        "5",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("@example.com"),
        "a raw value of the pii column leaked"
    );
    let json: Value = serde_json::from_str(&text).unwrap();
    let slices = json["slices"].as_object().unwrap();

    let ctx = SessionContext::new();
    ctx.register_parquet("t", file.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();

    // rows per slice
    let total = sql(&ctx, "SELECT count(*) FROM t").await;
    assert_eq!(json["rows"].as_u64().unwrap().to_string(), total[0][0]);
    let by_tag = sql(&ctx, "SELECT trust_tag, count(*) FROM t GROUP BY trust_tag").await;
    for r in &by_tag {
        assert_eq!(
            slices[&r[0]]["rows"].as_u64().unwrap().to_string(),
            r[1],
            "rows of {}",
            r[0]
        );
    }

    // numeric columns: count, nulls, min, max, mean per slice
    for col in ["amount", "age"] {
        let q = format!(
            "SELECT coalesce(trust_tag, 'all') AS s, count({col}), count(*) - count({col}), \
             min({col}), max({col}), avg(CAST({col} AS DOUBLE)) FROM t \
             GROUP BY GROUPING SETS ((trust_tag), ())"
        );
        for r in sql(&ctx, &q).await {
            let c = &slices[&r[0]]["columns"][col];
            assert_eq!(
                c["count"].as_u64().unwrap().to_string(),
                r[1],
                "{col} count in {}",
                r[0]
            );
            assert_eq!(
                c["nulls"].as_u64().unwrap().to_string(),
                r[2],
                "{col} nulls in {}",
                r[0]
            );
            for (field, want) in [("min", &r[3]), ("max", &r[4]), ("mean", &r[5])] {
                let got = c[field].as_f64().unwrap();
                let want: f64 = want.parse().unwrap();
                assert!(
                    approx(got, want),
                    "{col} {field} in {}: {got} vs {want}",
                    r[0]
                );
            }
        }
    }

    // label counts per slice
    let q = "SELECT coalesce(trust_tag, 'all'), CAST(label AS VARCHAR), count(*) FROM t \
             WHERE label IS NOT NULL GROUP BY GROUPING SETS ((trust_tag, label), (label))";
    let mut want: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in sql(&ctx, q).await {
        want.insert((r[0].clone(), r[1].clone()), r[2].clone());
    }
    for ((slice, label), n) in &want {
        let got = slices[slice]["label_counts"][label].as_u64().unwrap();
        assert_eq!(got.to_string(), *n, "label {label} in {slice}");
    }

    // categorical: exact top values (500 codes stay under the exact limit)
    let q = "SELECT merchant_category, count(*) AS n FROM t WHERE merchant_category IS NOT NULL \
             GROUP BY merchant_category ORDER BY n DESC, merchant_category ASC LIMIT 5";
    let top: Vec<(String, u64)> = sql(&ctx, q)
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    let got: Vec<(String, u64)> = slices["all"]["columns"]["merchant_category"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, top);
    let nulls = sql(&ctx, "SELECT count(*) - count(merchant_category) FROM t").await;
    assert_eq!(
        slices["all"]["columns"]["merchant_category"]["nulls"]
            .as_u64()
            .unwrap()
            .to_string(),
        nulls[0][0]
    );
    // distinct estimate within HyperLogLog's error (lg_k 12: ~1.6% standard error)
    let distinct: f64 = sql(&ctx, "SELECT count(DISTINCT merchant_category) FROM t").await[0][0]
        .parse()
        .unwrap();
    let est = slices["all"]["columns"]["merchant_category"]["distinct_estimate"]
        .as_f64()
        .unwrap();
    assert!(
        (est - distinct).abs() <= distinct * 0.05,
        "distinct {est} vs {distinct}"
    );
}

#[test]
fn profile_is_deterministic_and_table_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let rules = fixture_rules(dir.path());
    let file = dir.path().join("b.parquet");
    write_batch(&file, 10_000, 1, Scenario::Clean);
    let args = [
        "profile",
        "--config",
        rules.to_str().unwrap(),
        "--json",
        file.to_str().unwrap(),
    ];
    let (a, b) = (dqmon_with_pii_key(&args), dqmon_with_pii_key(&args));
    assert_eq!(a.stdout, b.stdout);
    let table = dqmon_with_pii_key(&[
        "profile",
        "--config",
        rules.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(table.status.success());
    let text = stdout(&table);
    assert!(
        text.contains("slice all")
            && text.contains("slice scraped")
            && text.contains("merchant_category"),
        "{text}"
    );
}

/// A file's profile depends on the file, not on the threads: the same
/// bytes from one thread as from three, for a file of eight row groups.
#[test]
fn a_file_of_many_row_groups_profiles_the_same_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let rules = fixture_rules(dir.path());
    let file = dir.path().join("groups.parquet");
    write_batch_in_row_groups(&file, 30_000, 2, Scenario::Clean, 4_000);
    let run = |threads: &str| {
        let out = dqmon_with_pii_key(&[
            "--threads",
            threads,
            "profile",
            "--config",
            rules.to_str().unwrap(),
            "--json",
            file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let one = run("1");
    assert_eq!(one, run("3"), "three threads changed the profile");
    assert_eq!(one, run("0"), "one thread per core changed the profile");
    let json: Value = serde_json::from_slice(&one).unwrap();
    assert_eq!(json["rows"].as_u64(), Some(30_000));
    assert_eq!(json["batches"].as_u64(), Some(1), "one file is one batch");
}
