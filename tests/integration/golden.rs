//! Golden detection cases: every scenario of the synthetic suite (clean
//! controls, natural drift, attacks at several strengths) against a
//! baseline of clean batches. Expected findings live in
//! `fixtures/<case>/expected.json`; `BLESS=1 cargo test` rewrites them.
//! The test also prints the detection table (scenario → found or missed;
//! clean controls → findings) and writes it to `target/detection.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dqmon::evaluate::{EvalRow, FindingKey, evaluate};
use serde::{Deserialize, Serialize};

use crate::common::repo_root;

/// Rows per clean batch in the golden suite.
const ROWS: usize = 20_000;
const SEED: u64 = 20_240_611;

/// Attacks weaker than what the default thresholds are meant to catch: their
/// golden files still pin what is (not) found, but missing them is no failure.
const BELOW_FLOOR: &[&str] = &[
    "label_flip_scraped_0.01",
    "planted_category_merchant_category_mcc_9999_user_reported_0.01",
    "natural_drift_0.1",
];

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Golden {
    group: String,
    scenario: String,
    findings: Vec<FindingKey>,
}

fn golden_path(row: &EvalRow) -> PathBuf {
    repo_root()
        .join("fixtures")
        .join(&row.name)
        .join("expected.json")
}

#[test]
fn golden_scenarios_raise_expected_findings() {
    let rules = dqmon::config::load(&repo_root().join("rules/fixtures.yaml"))
        .unwrap()
        .datasets
        .remove(0);
    let dir = tempfile::tempdir().unwrap();
    let eval = evaluate(&rules, dir.path(), ROWS, SEED).unwrap();
    let table = eval.table();
    eprintln!("{table}");
    let target = repo_root().join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("detection.md"), &table);

    let bless = std::env::var("BLESS").is_ok_and(|v| v == "1");
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for row in &eval.rows {
        assert!(
            seen.insert(row.name.clone(), ()).is_none(),
            "duplicate case name {}",
            row.name
        );
        let mut findings = row.findings.clone();
        findings.sort();
        let got = Golden {
            group: row.group.clone(),
            scenario: row.name.clone(),
            findings,
        };
        let path = golden_path(row);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        } else {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let want: Golden = serde_json::from_str(&text).unwrap();
                    if want != got {
                        problems.push(format!(
                            "{}: findings differ from {}\n  want {:?}\n  got  {:?}",
                            row.name,
                            path.display(),
                            want.findings,
                            got.findings
                        ));
                    }
                }
                Err(_) => problems.push(format!(
                    "{}: no golden file {} (run with BLESS=1)",
                    row.name,
                    path.display()
                )),
            }
        }
        // Independent of the golden files: clean controls are quiet, and
        // every attack over the floor is found with the right column, tag and verdict.
        if row.group == "clean" && !row.findings.is_empty() {
            problems.push(format!(
                "clean control {} raised {:?}",
                row.name, row.findings
            ));
        }
        if row.detected == Some(false) && !BELOW_FLOOR.contains(&row.name.as_str()) {
            problems.push(format!(
                "{} was not detected; findings: {:?}",
                row.name, row.findings
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
