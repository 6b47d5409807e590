//! `dqmon check`: every problem at once, with YAML paths; exit code 2.

use crate::common::*;

#[test]
fn check_accepts_the_shipped_rules() {
    for f in ["rules/fixtures.yaml", "rules/quickstart.yaml"] {
        let path = repo_root().join(f);
        let out = dqmon(&["check", "--config", path.to_str().unwrap()]);
        assert!(out.status.success(), "{f}: {}", stderr(&out));
    }
}

#[test]
fn check_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"
dataset: events
trust:
  column: trust_tag
  levels: [human_reviewed, vendor]
  low_trust: [scraped]
columns:
  amount: { kind: numbr, range: [10, 1] }
  country: { kind: categorical, range: [0, 1] }
thresholds:
  fdr: 0.001
  treshold: 1
"#,
    )
    .unwrap();
    let out = dqmon(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "trust.low_trust",
        "columns.amount.kind",
        "columns.country.range",
        "thresholds.fdr",
        "thresholds.treshold",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}
