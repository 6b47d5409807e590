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

/// Every command that reads a configuration exits 2 when it is invalid,
/// as `check` does (not 1, which means a runtime failure).
#[test]
fn every_command_exits_2_on_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "dataset: ../evil\n").unwrap();
    let cfg = path.to_str().unwrap();
    let drop = dir.path().join("x.parquet");
    std::fs::write(&drop, b"not parquet").unwrap();
    let file = drop.to_str().unwrap();
    for args in [
        vec!["check", "--config", cfg],
        vec!["run", "--config", cfg, "--once"],
        vec!["profile", "--config", cfg, file],
        vec!["compare", "--config", cfg, file],
    ] {
        let out = dqmon(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("dataset"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
