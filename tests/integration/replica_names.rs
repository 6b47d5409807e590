//! One process per replica name on a shared history (see
//! `dqmon_store::presence`), with real `dqmon run` processes on a real
//! S3-compatible server (moto).

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
    fleet.s3.create_bucket("history");
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
