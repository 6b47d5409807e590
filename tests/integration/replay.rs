//! `dqmon replay`: the live daemon over a set of drops, then replays of the
//! same files; the alerts files must be byte-identical.

use std::fs;
use std::path::{Path, PathBuf};

use dqmon_fixtures::Scenario;

use crate::common::*;
use crate::daemon::Setup;

/// The drops of an incident: clean batches, poison in a low-trust tag, a
/// planted value, a broken file and the same bytes under a second name.
/// Returns the archive folder holding a copy of every drop.
pub fn incident(s: &Setup) -> PathBuf {
    let archive = s.dir.path().join("archive");
    fs::create_dir_all(&archive).unwrap();
    let drops: Vec<(&str, u64, Scenario)> = vec![
        ("2024-06-01T10.parquet", 100, Scenario::Clean),
        (
            "2024-06-01T11.parquet",
            101,
            Scenario::LabelFlip {
                tag: "scraped".into(),
                strength: 0.2,
            },
        ),
        ("2024-06-01T12.parquet", 102, Scenario::Clean),
        (
            "2024-06-01T13.parquet",
            103,
            Scenario::PlantedCategory {
                column: "merchant_category".into(),
                value: "mcc_9999".into(),
                share: 0.2,
                tag: Some("user_reported".into()),
            },
        ),
        (
            "2024-06-01T14.parquet",
            104,
            Scenario::MissingJump {
                column: "amount".into(),
                share: 0.3,
            },
        ),
    ];
    for (name, index, scenario) in drops {
        let p = s.drop_batch(name, index, scenario);
        fs::copy(&p, archive.join(name)).unwrap();
    }
    // the same bytes as the first batch under another name, and a broken file
    let again = s.drop.join("2024-06-01T15.parquet");
    fs::copy(s.drop.join("2024-06-01T10.parquet"), &again).unwrap();
    fs::copy(&again, archive.join("2024-06-01T15.parquet")).unwrap();
    let broken = s.drop.join("2024-06-01T16.parquet");
    fs::write(&broken, b"PAR1 this is not parquet").unwrap();
    fs::copy(&broken, archive.join("2024-06-01T16.parquet")).unwrap();
    archive
}

pub fn replay(s: &Setup, out: &Path, extra: &[&str], inputs: &[&str]) -> String {
    let mut args = vec![
        "replay",
        "--config",
        s.rules.to_str().unwrap(),
        "--alerts-out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(inputs);
    let o = dqmon(&args);
    assert!(o.status.success(), "replay failed: {}", stderr(&o));
    assert!(
        stdout(&o).is_empty(),
        "a replay delivers nothing unless asked, but printed: {}",
        stdout(&o)
    );
    stderr(&o)
}

#[test]
fn replay_alerts_are_byte_identical_to_live_and_to_each_other() {
    let s = Setup::new();
    let archive = incident(&s);
    let o = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let live = fs::read(s.state.join("alerts.jsonl")).unwrap();
    let live_text = String::from_utf8_lossy(&live);
    for check in [
        "\"label_calibration\"",
        "\"unseen_values\"",
        "\"missing_rate\"",
        "\"replayed_batch\"",
        "\"malformed_records\"",
    ] {
        assert!(
            live_text.contains(check),
            "live run raised no {check}: {live_text}"
        );
    }
    let live_metrics = fs::read_dir(s.state.join("history/metrics"))
        .unwrap()
        .count();

    // replay 1: from the archive folder (the files live monitoring saw)
    let out1 = s.dir.path().join("replay1.jsonl");
    let log = replay(&s, &out1, &[], &[archive.to_str().unwrap()]);
    assert!(log.contains("replayed 7 files"), "{log}");
    let r1 = fs::read(&out1).unwrap();
    assert!(
        r1 == live,
        "replay alerts differ from live alerts\nlive:\n{live_text}\nreplay:\n{}",
        String::from_utf8_lossy(&r1)
    );
    // replay 2: the same files given as a glob; byte-identical again
    let out2 = s.dir.path().join("replay2.jsonl");
    let glob = format!("{}/2024-06-01T1*.parquet", archive.display());
    replay(&s, &out2, &[], &[&glob]);
    assert_eq!(fs::read(&out2).unwrap(), r1, "two replays differ");

    // the live state is untouched; the replay kept its own history
    assert_eq!(fs::read(s.state.join("alerts.jsonl")).unwrap(), live);
    assert_eq!(
        fs::read_dir(s.state.join("history/metrics"))
            .unwrap()
            .count(),
        live_metrics
    );
    let replay_state = s.state.join("replay");
    assert_eq!(
        fs::read(replay_state.join("alerts.jsonl")).unwrap(),
        live,
        "the replay's own alerts file"
    );
    // inputs are never moved to quarantine by a replay
    assert!(archive.join("2024-06-01T16.parquet").exists());
}

#[test]
fn replay_into_a_chosen_state_folder_continues_it_and_can_deliver() {
    let s = Setup::new();
    let archive = incident(&s);
    let state = s.dir.path().join("replay-state");
    let out = s.dir.path().join("a.jsonl");
    let first = archive.join("2024-06-01T11.parquet");
    replay(
        &s,
        &out,
        &["--state-dir", state.to_str().unwrap()],
        &[first.to_str().unwrap()],
    );
    let one = fs::read_to_string(&out).unwrap();
    assert!(one.contains("\"label_calibration\""), "{one}");
    // again into the same folder: already in its history, no new alert
    let o = dqmon(&[
        "replay",
        "--config",
        s.rules.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--alerts-out",
        out.to_str().unwrap(),
        "--deliver",
        archive.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let more = fs::read_to_string(&out).unwrap();
    assert!(
        !more.contains("\"label_rate\"") && !more.contains("\"label_calibration\""),
        "{more}"
    );
    assert!(more.contains("\"unseen_values\""), "{more}");
    // --deliver prints each alert to the stdout sink
    assert_eq!(
        stdout(&o).lines().count(),
        more.lines().count(),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("ALERT"), "{}", stdout(&o));
}

#[test]
fn replay_of_nothing_says_what_to_give() {
    let s = Setup::new();
    let o = dqmon(&[
        "replay",
        "--config",
        s.rules.to_str().unwrap(),
        &format!("{}/none-*.parquet", s.dir.path().display()),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("matches no Parquet file"),
        "{}",
        stderr(&o)
    );
}
