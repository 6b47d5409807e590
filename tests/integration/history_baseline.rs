//! `dqmon baseline build --from-history --between T1 T2`: a candidate from
//! the stored profiles of a time window, without the batches that alerted.

use std::fs;

use serde_json::Value;

use crate::common::*;
use crate::daemon::Setup;

fn build(s: &Setup, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "baseline",
        "build",
        "--config",
        s.rules.to_str().unwrap(),
        "--by",
        "analyst",
        "--from-history",
    ];
    args.extend_from_slice(extra);
    dqmon(&args)
}

fn stored(s: &Setup, id: &str) -> Value {
    let p = s.state.join("baselines").join(format!("{id}.json"));
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

#[test]
fn baseline_from_history_leaves_out_alerted_batches_unless_asked() {
    let s = Setup::new();
    crate::replay::incident(&s);
    let o = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifests = s.manifests();
    let processed: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["status"] == "processed")
        .collect();
    let clean: Vec<&Value> = processed
        .iter()
        .copied()
        .filter(|m| m["alerts"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!((processed.len(), clean.len()), (5, 2));

    let o = build(&s, &["--between", "2000-01-01", "2100-01-01"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(
        stderr(&o).contains("left out 3 that raised alerts"),
        "{}",
        stderr(&o)
    );
    let b = stored(&s, &id);
    let shas: Vec<&str> = b["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input_sha256"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = clean
        .iter()
        .map(|m| m["input_sha256"].as_str().unwrap())
        .collect();
    assert_eq!(shas, want);
    let rows: u64 = clean.iter().map(|m| m["rows"].as_u64().unwrap()).sum();
    assert_eq!(b["profile"]["rows"].as_u64().unwrap(), rows);
    assert_eq!(b["built_by"], "analyst");

    // a candidate only: approving stays a separate step
    let list = stdout(&dqmon(&[
        "baseline",
        "list",
        "--config",
        s.rules.to_str().unwrap(),
    ]));
    assert!(list.contains(&format!("{id}  candidate")), "{list}");

    let o = build(
        &s,
        &["--between", "2000-01-01", "2100-01-01", "--include-alerted"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b = stored(&s, stdout(&o).trim());
    assert_eq!(b["batches"].as_array().unwrap().len(), 5);

    // a window with nothing in it says what to do
    let o = build(&s, &["--between", "1990-01-01", "1990-01-02"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("widen --between"), "{}", stderr(&o));
    let o = build(&s, &["--between", "2000-01-01", "yesterday"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("RFC 3339"), "{}", stderr(&o));
}
