//! A fleet's shared history on a real S3-compatible server (moto, as in
//! `object_store.rs`): replicas on one drop prefix, as pods without
//! volumes run them, with the history, the audit chains and the approved
//! baseline on the server.

use crate::common::stdout;
use crate::object_store::{DropFleet, assert_fleet_view, shared_manifests, wait_ok};
use dqmon::store::backend::Backend;

/// The positions of a replica's stream in the shared history's manifests.
fn stream_positions(manifests: &[serde_json::Value], stream: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = manifests
        .iter()
        .filter(|m| m["stream"] == stream)
        .map(|m| m["stream_seq"].as_u64().unwrap())
        .collect();
    seqs.sort();
    seqs
}

/// Two replicas on one drop prefix with one shared history on the S3
/// server, and their approved baseline there too (pods without volumes):
/// every batch is in that history once, named by the replica that
/// committed it and placed in that replica's stream; `dqmon query` from
/// either replica sees the fleet's batches; `dqmon audit verify` checks
/// every replica's audit chain, which is on the shared history, not in
/// the state folders. A replica restarted on an empty state folder (a new
/// pod) continues its stream, positions and evidence, and its audit
/// chain, from the shared history, and a replica with an empty folder
/// verifies the whole fleet's chains.
#[test]
fn replicas_with_a_shared_history_write_each_batch_once_and_continue_streams() {
    let fleet = DropFleet::without_volumes();
    assert!(!fleet.dir().join("baselines").exists());
    let n = 8;
    // a alone first (so that its stream has batches whatever the race
    // below), then a and b racing for the rest
    fleet.drop_parts(0..3, 300);
    wait_ok(fleet.replica("a"));
    fleet.drop_parts(3..n, 300);
    let (a, b) = (fleet.replica("a"), fleet.replica("b"));
    wait_ok(a);
    wait_ok(b);

    // the batch objects are on the shared history, not in the state folders
    assert!(fleet.manifests("a").is_empty() && fleet.manifests("b").is_empty());
    let shared = shared_manifests(&fleet.s3);
    assert_eq!(shared.len(), n as usize, "each batch once: {shared:#?}");
    let ids: std::collections::BTreeSet<&str> = shared
        .iter()
        .map(|m| m["batch_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), n as usize);
    for m in &shared {
        let writer = m["writer"].as_str().unwrap();
        assert!(writer == "a" || writer == "b", "{m}");
        assert_eq!(m["stream"], format!("drop.{writer}"), "{m}");
    }
    let (pa, pb) = (
        stream_positions(&shared, "drop.a"),
        stream_positions(&shared, "drop.b"),
    );
    assert_eq!(pa, (0..pa.len() as u64).collect::<Vec<_>>());
    assert_eq!(pb, (0..pb.len() as u64).collect::<Vec<_>>());
    assert_eq!(pa.len() + pb.len(), n as usize);
    let flipped = shared
        .iter()
        .find(|m| m["source"] == "s3://ingest/incoming/part-005.parquet")
        .unwrap();
    assert!(
        !flipped["alerts"].as_array().unwrap().is_empty(),
        "the label flip is alerted: {flipped}"
    );

    // one view of the fleet from either replica: every batch, every alert once
    for r in ["a", "b"] {
        assert_fleet_view(&fleet.s3, &fleet.rules(r), &shared);
    }

    // replica a again, on an empty state folder: its stream goes on
    let last_a = shared
        .iter()
        .filter(|m| m["stream"] == "drop.a")
        .max_by_key(|m| m["stream_seq"].as_u64().unwrap())
        .cloned();
    fleet.drop_parts(n..n + 3, 300);
    wait_ok(fleet.replica_in("a", "a-restarted"));
    let shared = shared_manifests(&fleet.s3);
    assert_eq!(shared.len(), n as usize + 3);
    let pa2 = stream_positions(&shared, "drop.a");
    assert_eq!(pa2, (0..pa.len() as u64 + 3).collect::<Vec<_>>());
    {
        let last = last_a.expect("a committed the first objects");
        // the first new batch's evidence continued from a's last one: its
        // window is a's window and then itself
        let first_new = shared
            .iter()
            .find(|m| m["stream"] == "drop.a" && m["stream_seq"] == pa.len() as u64)
            .unwrap();
        let window = |m: &serde_json::Value| m["evidence"]["batches"].as_array().unwrap().clone();
        let mut expected = window(&last);
        expected.push(first_new["batch_id"].clone());
        assert_eq!(
            window(first_new),
            expected,
            "evidence continues from {last}"
        );
    }

    // the audit chains: on the shared history, each batch in its writer's
    // chain, a's continued by the restarted replica; verified from a
    // state folder that never held anything
    for state in ["a", "b", "a-restarted"] {
        assert!(
            !fleet
                .dir()
                .join(format!("state-{state}/events/audit.jsonl"))
                .exists()
        );
    }
    let history = fleet.s3.backend("history", "fleet/events");
    for writer in ["a", "b"] {
        let entries = history
            .list(&format!("audit/{writer}"))
            .unwrap()
            .into_iter()
            .filter(|k| !k.ends_with("head.json"))
            .map(|k| {
                serde_json::from_slice::<serde_json::Value>(&history.get(&k).unwrap().unwrap())
                    .unwrap()
            })
            .collect::<Vec<_>>();
        let mut logged: Vec<&str> = entries
            .iter()
            .filter(|e| e["kind"] == "batch_committed")
            .map(|e| e["key"].as_str().unwrap())
            .collect();
        logged.sort();
        let mut committed: Vec<&str> = shared
            .iter()
            .filter(|m| m["writer"] == writer)
            .map(|m| m["batch_id"].as_str().unwrap())
            .collect();
        committed.sort();
        assert_eq!(logged, committed, "{writer}'s chain");
    }
    assert_fleet_view(&fleet.s3, &fleet.rules("empty"), &shared);
    let out = fleet.s3.dqmon(&[
        "audit",
        "verify",
        "--config",
        fleet.rules("empty").to_str().unwrap(),
    ]);
    let text = stdout(&out);
    for writer in ["a", "b"] {
        let chain = format!("{writer}'s chain at s3://history/fleet/events/audit/{writer}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(&chain)),
            "{text}"
        );
    }
    assert!(!text.contains("not in its chain"), "{text}");
}
