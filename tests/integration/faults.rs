//! Write faults, not only kills: the real binary (built with the
//! `fault-injection` feature, see `crates/store/src/fault.rs`) meets a full
//! disk, a failing device and a read-only state folder at each step of a
//! commit. After each fault the run stops (or, in the delivery thread,
//! retries) with an error that names the path and the cause; once the fault
//! clears, every batch is in the history exactly once, no alert is lost or
//! doubled in `alerts.jsonl` or in the notifications, no temporary file is
//! left, and `dqmon audit verify` passes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dqmon_fixtures::Scenario;
use serde_json::Value;

use crate::alerts::wait_for;
use crate::common::*;
use crate::daemon::{Setup, terminate};

/// The steps of one commit, in the order they are written, and the fault
/// struck at each: (fault, path part, the error's text).
const STEPS: &[(&str, &str, &str)] = &[
    ("full", "history/profiles", "No space left on device"),
    ("full", "history/metrics", "No space left on device"),
    ("io", "history/batches", "Input/output error"),
    ("full", "alerts.jsonl", "No space left on device"),
    ("full", "audit.jsonl", "No space left on device"),
    ("full", "audit.head", "No space left on device"),
    ("full", "outbox/inbox", "No space left on device"),
    ("full", "checkpoint.log", "No space left on device"),
    ("full", "quarantine", "No space left on device"),
    ("read-only", "/", "Read-only file system"),
];

fn flip() -> Scenario {
    Scenario::LabelFlip {
        tag: "scraped".into(),
        strength: 0.2,
    }
}

/// Rules with a file receiver (outside the state folder, so no fault
/// reaches it) and no cooldown: every alert is notified.
fn with_file_receiver(s: &Setup) -> PathBuf {
    let notifications = s.dir.path().join("notifications.jsonl");
    let mut text = fs::read_to_string(&s.rules).unwrap();
    text.push_str(&format!(
        "alerts:\n  cooldown: 0s\n  receivers:\n    log: {{ type: file, path: {} }}\n  default: [log]\n",
        notifications.display()
    ));
    fs::write(&s.rules, text).unwrap();
    notifications
}

fn run_once(s: &Setup, faults: &Path) -> Output {
    Command::new(dqmon_bin())
        .args(["run", "--once", "--settle-ms", "0", "--config"])
        .arg(&s.rules)
        .env("RUST_LOG", "warn")
        .env_remove("DQMON_PII_KEY")
        .env("DQMON_FAULT_FILE", faults)
        .output()
        .unwrap()
}

/// Every file under `dir` whose name is a temporary write's.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
        {
            out.push(p);
        }
    }
    out
}

/// What the state says after the faults: (batches, lost, duplicated),
/// asserting that nothing was lost or doubled.
fn check_state(s: &Setup, notifications: &Path, dropped: usize) -> (usize, usize, usize) {
    let manifests = s.manifests();
    let mut sources = BTreeMap::<String, usize>::new();
    for m in &manifests {
        *sources
            .entry(m["source"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let doubled_batches = sources.values().filter(|&&n| n > 1).count();
    let lost_batches = dropped - sources.len();

    let committed: BTreeSet<String> = manifests
        .iter()
        .flat_map(|m| m["alerts"].as_array().unwrap().iter())
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let lines: Vec<String> = s
        .alerts()
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let in_file: BTreeSet<String> = lines.iter().cloned().collect();
    let doubled_lines = lines.len() - in_file.len();
    let lost_lines = committed.difference(&in_file).count();

    let sent: Vec<Value> = fs::read_to_string(notifications)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = sent.iter().map(|n| n["id"].as_str().unwrap()).collect();
    let doubled_sends = ids.len() - ids.iter().collect::<BTreeSet<_>>().len();
    let notified: BTreeSet<String> = sent
        .iter()
        .flat_map(|n| n["alerts"].as_array().unwrap().iter())
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let lost_sends = committed.difference(&notified).count();

    assert_eq!(
        (lost_batches, doubled_batches),
        (0, 0),
        "every dropped file once in the history: {sources:?}"
    );
    assert_eq!(
        (lost_lines, doubled_lines),
        (0, 0),
        "alerts.jsonl holds each committed alert once"
    );
    assert_eq!(
        (lost_sends, doubled_sends),
        (0, 0),
        "each committed alert notified, each message once"
    );
    assert!(!committed.is_empty(), "the poisoned batches raised alerts");
    let temps = temp_files(&s.state);
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    let out = dqmon(&["audit", "verify", "--config", s.rules.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    (
        manifests.len(),
        lost_batches + lost_lines + lost_sends,
        doubled_batches + doubled_lines + doubled_sends,
    )
}

/// A fault at each write step of a commit stops `run --once` with an error
/// naming the cause and the path; the next run (fault cleared) finishes the
/// batch. Null: none, this is a fault-tolerance check, and each assertion is
/// exact (counts of batches, alert ids and message ids).
#[test]
fn a_fault_at_each_write_step_stops_the_run_and_the_next_run_loses_and_doubles_nothing() {
    let s = Setup::new();
    let notifications = with_file_receiver(&s);
    let faults = s.dir.path().join("faults");
    let mut dropped = 0;
    for (i, (fault, part, cause)) in STEPS.iter().enumerate() {
        if *part == "quarantine" {
            fs::write(
                s.drop.join(format!("{i:02}-broken.parquet")),
                b"not parquet",
            )
            .unwrap();
        } else {
            s.drop_batch(&format!("{i:02}-batch.parquet"), 100 + i as u64, flip());
        }
        dropped += 1;
        fs::write(&faults, format!("{fault} {part}\n")).unwrap();
        let out = run_once(&s, &faults);
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "`{fault} {part}` did not stop the run (a dqmon binary built without the \
             `fault-injection` feature injects nothing: build it with `cargo test --workspace`):\n{err}"
        );
        assert!(
            err.contains(cause),
            "`{fault} {part}`: the error says why:\n{err}"
        );
        if *part != "/" {
            assert!(
                err.contains(part),
                "`{fault} {part}`: the error names the path:\n{err}"
            );
        }
        fs::remove_file(&faults).unwrap();
        let out = run_once(&s, &faults);
        assert!(
            out.status.success(),
            "after `{fault} {part}` cleared:\n{}",
            stderr(&out)
        );
    }
    let (batches, lost, doubled) = check_state(&s, &notifications, dropped);
    eprintln!(
        "faults injected: {}, batches: {batches}, lost: {lost}, duplicated: {doubled}",
        STEPS.len()
    );
}

/// While the daemon runs: a full disk under the outbox makes the delivery
/// thread retry (the batch is committed, its notification waits), and the
/// notification goes out once the disk has room, without a restart; a
/// state folder that turns read-only stops the daemon with the cause, and
/// the next run takes the batch in once.
#[test]
fn the_daemon_retries_delivery_through_a_full_disk_and_stops_on_a_read_only_folder() {
    let s = Setup::new();
    let notifications = with_file_receiver(&s);
    let faults = s.dir.path().join("faults");
    let spawn = || {
        Command::new(dqmon_bin())
            .args(["run", "--settle-ms", "200", "--config"])
            .arg(&s.rules)
            .env("RUST_LOG", "warn")
            .env_remove("DQMON_PII_KEY")
            .env("DQMON_FAULT_FILE", &faults)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let sent = || {
        fs::read_to_string(&notifications)
            .unwrap_or_default()
            .lines()
            .count()
    };

    fs::write(&faults, "full outbox/pending\n").unwrap();
    let mut child = spawn();
    s.drop_batch("a.parquet", 200, flip());
    s.wait_for_batches(1, Duration::from_secs(120));
    // the delivery thread tries every second meanwhile
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    assert_eq!(sent(), 0, "nothing can be queued while the disk is full");
    assert_eq!(
        fs::read_dir(s.state.join("outbox/inbox")).unwrap().count(),
        1,
        "the committed batch waits in the inbox"
    );
    fs::remove_file(&faults).unwrap();
    // Sent, and its delivery recorded: a fault between the two would make
    // the next start send it once more (delivery is at least once, see the
    // README), which this test is not about.
    let recorded = || {
        fs::read_dir(s.state.join("outbox/sent"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_for(
        "the notification once the disk has room, and its record",
        Duration::from_secs(120),
        || {
            sent() > 0
                && recorded() > 0
                && fs::read_dir(s.state.join("outbox/pending"))
                    .unwrap()
                    .count()
                    == 0
        },
    );

    fs::write(&faults, "read-only /\n").unwrap();
    s.drop_batch("b.parquet", 201, flip());
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the daemon did not stop on a read-only state folder"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = terminate(child);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(s.manifests().len(), 1, "b.parquet is not committed");

    fs::remove_file(&faults).unwrap();
    let out = run_once(&s, &faults);
    assert!(out.status.success(), "{}", stderr(&out));
    let (batches, lost, doubled) = check_state(&s, &notifications, 2);
    eprintln!(
        "daemon: faults injected: 2, batches: {batches}, lost: {lost}, duplicated: {doubled}"
    );
}
