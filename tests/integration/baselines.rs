//! Baselines through the binary: build, approve, compare, and refuse a
//! tampered baseline.

use std::fs;

use dqmon_fixtures::Scenario;

use crate::common::*;

#[test]
fn build_approve_compare_and_refuse_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let rules = fixture_rules(dir.path());
    let rules = rules.to_str().unwrap();
    let good = dir.path().join("good");
    fs::create_dir_all(&good).unwrap();
    for i in 0..5 {
        write_batch(
            &good.join(format!("b{i}.parquet")),
            5_000,
            i,
            Scenario::Clean,
        );
    }
    let out = dqmon(&[
        "baseline",
        "build",
        "--config",
        rules,
        "--by",
        "builder",
        good.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 64);

    // not approved yet: compare refuses with advice
    let probe = dir.path().join("probe.parquet");
    write_batch(&probe, 5_000, 50, Scenario::Clean);
    let out = dqmon(&["compare", "--config", rules, probe.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no approved baseline"),
        "{}",
        stderr(&out)
    );

    let out = dqmon(&[
        "baseline", "approve", "--config", rules, &id, "--by", "approver",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dqmon(&[
        "compare",
        "--config",
        rules,
        "--json",
        probe.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = dqmon(&["baseline", "verify", "--config", rules]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains(&id));

    // tamper: change one byte of the stored baseline
    let path = dir
        .path()
        .join("state/events/baselines")
        .join(format!("{id}.json"));
    let mut bytes = fs::read(&path).unwrap();
    let pos = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[pos] = b'2';
    fs::write(&path, bytes).unwrap();

    let out = dqmon(&["baseline", "verify", "--config", rules]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("TAMPERED"), "{}", stdout(&out));
    let out = dqmon(&["compare", "--config", rules, probe.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("refused") && err.contains(&id), "{err}");
}
