//! One process per replica name on a shared history (see
//! `dqmon_store::presence`), with real `dqmon run` processes on a real
//! S3-compatible server (moto).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dqmon::store::backend::Backend;

use super::object_store::{DropFleet, s3_env, wait_ok};
use crate::common::{dqmon_bin, stderr};

/// One process per replica name: a second `dqmon run` started with the
/// name of a running replica (a copied config) watches the name's
/// heartbeat for one TTL, sees it move, and refuses to start, naming
/// `DQMON_REPLICA`; the running one goes on. Once that one stops cleanly
/// (it releases the name), the next process with the name starts at once.
#[test]
fn a_second_process_with_a_running_replicas_name_is_refused() {
    let fleet = DropFleet::with_rules("shared_history: s3://history/fleet\n");
    let rules = fleet.rules("a");
    let first = Command::new(dqmon_bin())
        .args(["run", "--config", rules.to_str().unwrap()])
        .envs(s3_env(&fleet.s3))
        .env("DQMON_REPLICA", "a")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record = fleet.s3.backend("history", "fleet/events");
    let start = Instant::now();
    while record.list("replicas/a").unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first process never took its name"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let started = Instant::now();
    let second = fleet.replica_in("a", "a-copy").wait_with_output().unwrap();
    assert!(!second.status.success(), "a second `a` ran");
    let err = stderr(&second);
    assert!(
        err.contains("`a` is in use by another running process") && err.contains("DQMON_REPLICA"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(dqmon::store::presence::TTL_MS as u64),
        "it watched the heartbeat for a TTL first"
    );

    let out = crate::daemon::terminate(first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    wait_ok(fleet.replica_in("a", "a-copy"));
    assert!(
        started.elapsed() < Duration::from_millis(dqmon::store::presence::TTL_MS as u64),
        "a released name is taken at once"
    );
}

/// A restart after a crash waits for the names of all its datasets at the
/// same time, not one after the other. A crashed process's last heartbeats
/// are written for both datasets of a two-dataset config (`events` and
/// `events_copy`, taken by an instance that then never beats); `dqmon run`
/// as that replica logs that it waits for each name (one TTL, 15 s) before
/// it logs taking either: one dataset did not wait for the other to open.
#[test]
fn a_restart_waits_for_every_datasets_name_at_once() {
    let fleet = DropFleet::with_rules("shared_history: s3://history/fleet\n");
    let config = two_datasets(&fleet, "a");
    for dataset in ["events", "events_copy"] {
        let objects = fleet.s3.backend("history", &format!("fleet/{dataset}"));
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        };
        // the crashed process: it took the name and died before its next beat
        dqmon::store::presence::Presence::take(&objects, "a", "crashed", &now, &|_| {}).unwrap();
    }
    let started = Instant::now();
    let run = Command::new(dqmon_bin())
        .args(["run", "--once", "--config", config.to_str().unwrap()])
        .envs(s3_env(&fleet.s3))
        .env("DQMON_REPLICA", "a")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(dqmon::store::presence::TTL_MS as u64),
        "it waited for the crashed process's names"
    );
    let lines: Vec<&str> = err.lines().collect();
    let at = |what: &str| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(what))
            .map(|(i, _)| i)
            .collect()
    };
    let waits = at("the replica name was in use moments ago");
    let takes = at("took the replica name on the shared history");
    assert_eq!((waits.len(), takes.len()), (2, 2), "{err}");
    assert!(
        waits[1] < takes[0],
        "both datasets waited for their names at once:\n{err}"
    );
}

/// A config of two datasets for replica state `state`: the fleet's
/// `events` and `events_copy` (the same rules under another name, with
/// a baseline of its own, state in `state-<state>-copy`), included by
/// one top-level file, which is returned.
fn two_datasets(fleet: &DropFleet, state: &str) -> PathBuf {
    let events = fleet.rules(state);
    let copy = fleet.dir().join(format!("rules-{state}-copy.yaml"));
    let text = std::fs::read_to_string(&events).unwrap();
    std::fs::write(
        &copy,
        text.replace("dataset: events", "dataset: events_copy")
            .replace(
                &format!("state_dir: state-{state}"),
                &format!("state_dir: state-{state}-copy"),
            ),
    )
    .unwrap();
    let good = fleet.dir().join("good");
    crate::daemon::build_and_approve_with(|a| fleet.s3.dqmon(a), &copy, &good);
    let top = fleet.dir().join(format!("datasets-{state}.yaml"));
    std::fs::write(
        &top,
        format!(
            "include: [{}, {}]\n",
            events.file_name().unwrap().to_str().unwrap(),
            copy.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    top
}
