//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `dqmon` binary built alongside this test binary.
pub fn dqmon_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("dqmon");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the dqmon binary",
        bin.display()
    );
    bin
}

/// Run dqmon with arguments; returns its output.
pub fn dqmon(args: &[&str]) -> Output {
    Command::new(dqmon_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DQMON_PII_KEY")
        .output()
        .expect("dqmon runs")
}

/// Run dqmon with a PII key in the environment: for commands that only
/// read (`profile`, `compare`) on rules with a `pii` column in a state
/// folder that holds no key, which they never create.
pub fn dqmon_with_pii_key(args: &[&str]) -> Output {
    Command::new(dqmon_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env("DQMON_PII_KEY", "integration-test-pii-key-0123456789")
        .output()
        .expect("dqmon runs")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copy `rules/fixtures.yaml` into `dir` (so state lands in `dir/state`).
pub fn fixture_rules(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("rules/fixtures.yaml")).unwrap();
    let path = dir.join("rules.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Write one generated batch as Parquet.
pub fn write_batch(path: &Path, rows: usize, batch_index: u64, scenario: dqmon_fixtures::Scenario) {
    let batch = dqmon_fixtures::generate(&dqmon_fixtures::BatchSpec {
        rows,
        seed: 7,
        batch_index,
        scenario,
    });
    dqmon_fixtures::write_parquet(&batch, path).unwrap();
}

/// [`write_batch`] in row groups of `group_rows` rows (the fixture writer's
/// other settings), so that a file of a few thousand rows takes the path
/// of a large one: several row groups, profiled in parallel and merged.
pub fn write_batch_in_row_groups(
    path: &Path,
    rows: usize,
    batch_index: u64,
    scenario: dqmon_fixtures::Scenario,
    group_rows: usize,
) {
    let batch = dqmon_fixtures::generate(&dqmon_fixtures::BatchSpec {
        rows,
        seed: 7,
        batch_index,
        scenario,
    });
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A table that a test measures and the README shows: written to
/// `target/<file>`, and checked against the README between the `begin` and
/// `end` markers (`BLESS=1` rewrites that section instead; `how` says how).
pub fn readme_section(file: &str, begin: &str, end: &str, table: &str, how: &str) {
    let target = repo_root().join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join(file), table);
    let readme_path = repo_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (Some(a), Some(b)) = (readme.find(begin), readme.find(end)) else {
        panic!("README.md has no section between {begin} and {end}");
    };
    let want = format!("\n{table}");
    if std::env::var("BLESS").is_ok_and(|v| v == "1") {
        let new = format!("{}{want}{}", &readme[..a + begin.len()], &readme[b..]);
        std::fs::write(&readme_path, new).unwrap();
    } else {
        assert_eq!(
            &readme[a + begin.len()..b],
            want,
            "the README's figures differ from what this build measures; run {how} and review the diff"
        );
    }
}

/// Whether an alert is about a tag's labels as a whole: `label_rate`, or
/// `label_calibration` where the rules declare slices (it then explains the
/// rate, and the rate's finding is folded into it).
pub fn is_label_alert(a: &serde_json::Value) -> bool {
    a["check"] == "label_rate" || a["check"] == "label_calibration"
}
