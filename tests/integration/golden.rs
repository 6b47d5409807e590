//! Golden detection cases: every scenario of the synthetic suite (clean
//! controls, natural drift, attacks at several strengths) against a
//! baseline of clean batches. Expected findings live in
//! `fixtures/<case>/expected.json`; `BLESS=1 cargo test` rewrites them.
//! The test also prints the detection table (scenario → found or missed;
//! clean controls → findings) and writes it to `target/detection.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dqmon_eval::{EvalRow, FindingKey, evaluate};
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

/// Markers of the README's detection section, which this test keeps equal
/// to the measured tables (`BLESS=1` rewrites it).
const README_BEGIN: &str =
    "<!-- detection-streams:begin (written by BLESS=1 cargo test golden) -->";
const README_END: &str = "<!-- detection-streams:end -->";

/// Detection over streams of 2,000-row batches: campaigns with evidence
/// carried across batches, a long clean stream, the budget trade-off, and
/// the same data read as a fleet's streams, with and without pooling.
/// The table is the README's; independent of it, the clean stream must keep
/// the promise of the budget and the campaigns must be found.
#[test]
fn detection_over_streams_of_small_batches() {
    use dqmon_eval::streams::{StreamSuite, evaluate_streams};
    let rules = dqmon::config::load(&repo_root().join("rules/fixtures.yaml"))
        .unwrap()
        .datasets
        .remove(0);
    let report = evaluate_streams(&rules, StreamSuite::default()).unwrap();
    let table = report.table(&rules);
    eprintln!("{table}");
    crate::common::readme_section(
        "detection-streams.md",
        README_BEGIN,
        README_END,
        &table,
        "BLESS=1 cargo test golden",
    );

    // The budget's promise, independent of the README: at the default of
    // 2 per 1,000, a clean stream of 300 batches expects at most 0.6 false
    // alarms (Bonferroni: fewer); 2 or more would happen by chance under
    // the bound with probability below 13%, 3 or more below 2.5%.
    let budget = rules.thresholds.false_alarms_per_1000_batches / 1000.0;
    let (n, alarms) = report.clean;
    assert!(
        (alarms as f64) <= (budget * n as f64 * 4.0).max(2.0),
        "{alarms} of {n} clean batches raised findings: {:?}",
        report.clean_checks
    );
    let (n, alarms) = report.lead_in;
    assert!(
        (alarms as f64) <= (budget * n as f64 * 3.0).max(2.0),
        "{alarms} of {n} campaign lead-in batches raised findings: {:?}",
        report.clean_checks
    );
    // A fleet: pooling the streams' evidence keeps the clean stream's
    // promise, and notices a campaign on every stream no later.
    let (n, alarms) = report.fleet.clean_pooled;
    assert!(
        (alarms as f64) <= (budget * n as f64 * 4.0).max(2.0),
        "pooled over the fleet, {alarms} of {n} clean batches raised findings"
    );
    for r in &report.fleet.rows {
        assert!(
            r.pooled.iter().zip(&r.own).all(|(p, o)| p >= o),
            "{}: pooled {:?}, own windows {:?}",
            r.label,
            r.pooled,
            r.own
        );
    }
    // The trade-off is monotone: a larger budget never finds less.
    for w in report.tradeoff.windows(2) {
        assert!(w[1].found.1 >= w[0].found.1, "{:?}", report.tradeoff);
    }
}
