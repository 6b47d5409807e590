//! History commits, repairs after a crash, checkpoint and quarantine.

use super::*;
use std::io::Write;

fn entry(i: u64) -> CheckpointEntry {
    CheckpointEntry {
        size: i,
        mtime_ns: i as i128 * 1_000,
        input_sha256: format!("{i:064x}"),
        batch_id: format!("{i:032x}"),
    }
}

#[test]
fn the_checkpoint_survives_a_reopen_and_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("drop");
    fs::create_dir_all(&folder).unwrap();
    let state = dir.path().join("state");
    let h = History::open(&state).unwrap();
    let mut c = h.checkpoint().unwrap();
    for i in 0..5 {
        h.record_checkpoint(&mut c, &folder, &format!("f{i}.parquet"), entry(i))
            .unwrap();
    }
    let again = h.checkpoint().unwrap();
    assert_eq!(again, c);
    assert_eq!(again.logged, 5);
    // a crash in the middle of an append: the torn line is cut
    let log = state.join("checkpoint.log");
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"{\"name\":\"f9.parq").unwrap();
    drop(f);
    assert_eq!(h.checkpoint().unwrap(), c);
    assert!(fs::read(&log).unwrap().ends_with(b"\n"));
    h.record_checkpoint(&mut c, &folder, "f5.parquet", entry(5))
        .unwrap();
    assert_eq!(h.checkpoint().unwrap().files.len(), 6);
}

/// Recording one more file appends one line, whatever the checkpoint
/// holds: with 100,000 entries it writes as many bytes as with 10 (the
/// full rewrite it replaced wrote every entry for every file), and the
/// snapshot is rewritten only when the log has outgrown it, forgetting
/// the files gone from the folder.
#[test]
fn recording_a_file_costs_the_same_with_100_000_entries() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("drop");
    fs::create_dir_all(&folder).unwrap();
    let state = dir.path().join("state");
    let h = History::open(&state).unwrap();
    let snapshot = state.join("checkpoint.json");
    let log = state.join("checkpoint.log");
    let mut written = Vec::new();
    for n in [10u64, 100_000] {
        let mut c = Checkpoint {
            files: (0..n)
                .map(|i| (format!("old{i}.parquet"), entry(i)))
                .collect(),
            logged: 0,
        };
        fs::write(&snapshot, serde_json::to_vec(&c).unwrap()).unwrap();
        let _ = fs::remove_file(&log);
        let before = fs::metadata(&snapshot).unwrap().len();
        h.record_checkpoint(&mut c, &folder, "new.parquet", entry(7))
            .unwrap();
        assert_eq!(fs::metadata(&snapshot).unwrap().len(), before, "no rewrite");
        written.push(fs::metadata(&log).unwrap().len());
    }
    assert_eq!(written[0], written[1], "one line either way: {written:?}");
    assert!(written[1] < 300, "{written:?}");

    // compaction: past max(CHECKPOINT_COMPACT_MIN, entries) lines, a
    // snapshot of the files still present, and an empty log
    let mut c = Checkpoint::default();
    fs::write(folder.join("kept.parquet"), b"x").unwrap();
    h.record_checkpoint(&mut c, &folder, "kept.parquet", entry(1))
        .unwrap();
    for i in 1..CHECKPOINT_COMPACT_MIN {
        h.record_checkpoint(&mut c, &folder, &format!("gone{i}.parquet"), entry(i))
            .unwrap();
    }
    assert_eq!(c.logged, 0, "compacted");
    assert_eq!(fs::metadata(&log).unwrap().len(), 0);
    assert_eq!(
        c.files.keys().collect::<Vec<_>>(),
        vec!["kept.parquet"],
        "files gone from the folder are forgotten"
    );
    assert_eq!(h.checkpoint().unwrap(), c);
}

pub(super) fn manifest(batch_id: &str, seq: u64, source: &str) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        seq,
        batch_id: batch_id.into(),
        dataset: "d".into(),
        status: BatchStatus::Processed,
        source: source.into(),
        input_sha256: format!("{seq:064x}"),
        input_bytes: 10,
        rows: 0,
        rows_by_tag: BTreeMap::new(),
        schema_fingerprint: None,
        baseline_id: None,
        rules_hash: "r".into(),
        dqmon_version: "test".into(),
        batch_time: None,
        reason: None,
        findings: Vec::new(),
        alerts: Vec::new(),
        evidence: None,
        stream: None,
        stream_seq: None,
        writer: None,
        pooled: Default::default(),
    }
}

/// An in-memory object store, and a maker of backends over it that count
/// their requests (each with its own log).
pub(super) fn counted_store() -> impl Fn() -> (
    crate::backend::Counting<crate::object::ObjectBackend>,
    crate::backend::RequestLog,
) {
    let store: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::memory::InMemory::new());
    move || {
        crate::backend::Counting::new(
            crate::object::ObjectBackend::new(store.clone(), "d".into(), "memory:///d").unwrap(),
        )
    }
}

/// A profile of no rows (its metrics: the rows, tag share and duplicate
/// share of the whole batch).
pub(super) fn empty_profile() -> BatchProfile {
    BatchProfile {
        format: 1,
        dataset: "d".into(),
        shape: String::new(),
        batches: 1,
        rows: 0,
        schema: BTreeMap::new(),
        tags: BTreeMap::new(),
    }
}

/// Evidence that names the batches it has seen.
fn evidence(batches: &[&str]) -> dqmon_core::compare::EvidenceState {
    dqmon_core::compare::EvidenceState {
        format: 1,
        baseline_id: "base".into(),
        batches: batches.iter().map(|b| b.to_string()).collect(),
        counts: BTreeMap::new(),
    }
}

/// A processed batch at a position of a stream, with the evidence after it.
pub(super) fn in_stream(id: &str, seq: u64, stream: &str, pos: u64, seen: &[&str]) -> Manifest {
    Manifest {
        stream: Some(stream.into()),
        stream_seq: Some(pos),
        evidence: Some(evidence(seen)),
        ..manifest(id, seq, id)
    }
}

/// Commit order interleaves two streams; each stream's next batch
/// continues from its own last batch, before and after a reopen, and the
/// index holds one entry per position.
#[test]
fn evidence_follows_each_stream_not_the_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut h = History::open(&state).unwrap();
    assert_eq!(h.next_stream_seq("p0"), 0);
    assert_eq!(h.stream_evidence("p0"), Default::default());
    h.commit(in_stream("a1", 0, "p0", 0, &["a1"]), None)
        .unwrap();
    h.commit(in_stream("b1", 1, "p1", 0, &["b1"]), None)
        .unwrap();
    h.commit(in_stream("a2", 2, "p0", 1, &["a1", "a2"]), None)
        .unwrap();
    let check = |h: &History| {
        assert_eq!(h.stream_evidence("p0"), evidence(&["a1", "a2"]));
        assert_eq!(h.stream_evidence("p1"), evidence(&["b1"]));
        assert_eq!(h.next_stream_seq("p0"), 2);
        assert_eq!(h.next_stream_seq("p1"), 1);
        assert_eq!(h.next_stream_seq("p2"), 0);
    };
    check(&h);
    drop(h);
    let h = History::open(&state).unwrap();
    check(&h);
    let index = LocalBackend::new(&state)
        .list("history/streams/p0")
        .unwrap();
    assert_eq!(
        index,
        vec![
            "history/streams/p0/00000000000000000000.json",
            "history/streams/p0/00000000000000000001.json"
        ]
    );
}

/// Manifests written before streams (none named) are every stream's past:
/// a stream without a batch of its own starts from their last evidence.
#[test]
fn a_new_stream_continues_from_the_manifests_written_before_streams() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut h = History::open(&state).unwrap();
    for (i, id) in ["old1", "old2"].iter().enumerate() {
        let m = Manifest {
            evidence: Some(evidence(&[id])),
            ..manifest(id, i as u64, id)
        };
        h.commit(m, None).unwrap();
    }
    drop(h);
    let mut h = History::open(&state).unwrap();
    assert_eq!(h.stream_evidence("p0"), evidence(&["old2"]));
    h.commit(in_stream("new", 2, "p0", 0, &["old2", "new"]), None)
        .unwrap();
    assert_eq!(h.stream_evidence("p0"), evidence(&["old2", "new"]));
    assert_eq!(h.stream_evidence("p1"), evidence(&["old2"]));
}

/// A crash between a batch's manifest and its stream index entry: the
/// reopen writes the entry.
#[test]
fn a_missing_stream_entry_is_written_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut h = History::open(&state).unwrap();
    h.commit(in_stream("a1", 0, "p0", 0, &["a1"]), None)
        .unwrap();
    drop(h);
    let entry = state.join("history/streams/p0/00000000000000000000.json");
    fs::remove_file(&entry).unwrap();
    let _h = History::open(&state).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&fs::read(&entry).unwrap()).unwrap();
    assert_eq!(body["batch_id"], "a1");
}

#[test]
fn stream_ids_are_key_parts_a_listing_shows() {
    for ok in ["drop", "kafka.orders.3", "drop.dqmon-0", "a_b"] {
        assert!(is_stream_id(ok), "{ok}");
    }
    for bad in ["", ".hidden", "a/b", "a b", "ä"] {
        assert!(!is_stream_id(bad), "{bad}");
    }
}

/// Two writers that both opened the history before either committed the
/// same batch (two handles here; two replicas on one store in a fleet):
/// the first commit stands, the second changes nothing and appends no
/// audit entry, and the history holds the batch once.
#[test]
fn of_two_writers_committing_one_batch_the_first_wins() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut first = History::open(&state).unwrap();
    let mut second = History::open(&state).unwrap();
    first
        .commit(manifest("b1", 0, "from the first"), None)
        .unwrap();
    assert!(
        !second.contains("b1"),
        "the second opened before the commit"
    );
    second
        .commit(manifest("b1", 0, "from the second"), None)
        .unwrap();
    assert!(second.contains("b1"));
    let all = read_manifests_from(&LocalBackend::new(&state)).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].source, "from the first");
    let committed = first.audit().keys(AuditKind::BatchCommitted).unwrap();
    assert_eq!(committed.len(), 1);
    drop((first, second));
    // a reopen finds nothing to repair and the same one batch
    let h = History::open(&state).unwrap();
    let summaries: Vec<BatchSummary> = all.iter().map(BatchSummary::from).collect();
    assert_eq!(h.summaries().unwrap(), summaries);
    assert_eq!(
        h.audit().keys(AuditKind::BatchCommitted).unwrap(),
        committed
    );
}

/// Two replicas on one shared store (each with its own state folder),
/// as a fleet runs: a batch both commit is in the history once, a stream
/// one replica took over continues from the other's commits, each
/// replica's repairs take its own batches only, and a profile without a
/// manifest (possibly another replica's commit in flight) is left alone.
#[test]
fn replicas_on_a_shared_store_share_batches_and_streams() {
    use crate::object::ObjectBackend;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let backend = || -> Box<dyn Backend> {
        Box::new(ObjectBackend::new(store.clone(), "d".into(), "memory:///d").unwrap())
    };
    let mut a = History::open_shared(&dir.path().join("a"), backend(), "a").unwrap();
    let mut b = History::open_shared(&dir.path().join("b"), backend(), "b").unwrap();

    // a holds partition p0 for two batches; then b takes it over
    a.commit(in_stream("x1", 0, "p0", 0, &["x1"]), None)
        .unwrap();
    a.commit(in_stream("x2", 1, "p0", 1, &["x1", "x2"]), None)
        .unwrap();
    assert_eq!(
        b.stream_evidence("p0"),
        Default::default(),
        "not yet looked"
    );
    b.follow_stream("p0").unwrap();
    assert_eq!(b.stream_evidence("p0"), evidence(&["x1", "x2"]));
    assert_eq!(b.next_stream_seq("p0"), 2);
    assert_eq!(b.next_seq(), 2, "commit numbers go on past the stream's");
    b.commit(in_stream("x3", 0, "p0", 2, &["x1", "x2", "x3"]), None)
        .unwrap();
    // and a, given the partition back, continues from b's batch
    a.follow_stream("p0").unwrap();
    assert_eq!(a.next_stream_seq("p0"), 3);

    // a window both read (a died after its commit, before its offset
    // commit, and b read it again): once in the history; b moves on from it
    let mut dup = in_stream("x4", 2, "p0", 3, &["x4"]);
    dup.alerts = Vec::new();
    a.commit(dup.clone(), None).unwrap();
    b.commit(in_stream("x4", 1, "p0", 3, &["other"]), None)
        .unwrap();
    assert_eq!(b.stream_evidence("p0"), evidence(&["x4"]));
    let all = read_manifests_from(backend().as_ref()).unwrap();
    let ids: Vec<&str> = all.iter().map(|m| m.batch_id.as_str()).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    let x4 = all.iter().find(|m| m.batch_id == "x4").unwrap();
    assert_eq!(x4.writer.as_deref(), Some("a"));

    // a profile left by a commit in flight survives another replica's open
    backend()
        .put("history/profiles/inflight.json", b"{}")
        .unwrap();
    drop(a);
    let a = History::open_shared(&dir.path().join("a"), backend(), "a").unwrap();
    assert!(
        backend()
            .get("history/profiles/inflight.json")
            .unwrap()
            .is_some()
    );
    // each replica's audit log holds its own commits only
    let mut logged = a
        .audit()
        .keys(AuditKind::BatchCommitted)
        .unwrap()
        .into_iter()
        .collect::<Vec<_>>();
    logged.sort();
    assert_eq!(logged, vec!["x1", "x2", "x4"]);
    let logged = b.audit().keys(AuditKind::BatchCommitted).unwrap();
    assert_eq!(logged.len(), 1);
}

/// The object store requests of a batch on a shared history, counted: a
/// replica that owns its stream pays one listing (`start-after` its last
/// position: has another replica moved the stream on?) and six writes
/// (profile, metrics, the manifest, the stream index entry, the audit
/// entry, the last three create-if-absent, and the audit chain's head);
/// a replica taking a stream over reads the newest index entry and its
/// manifest once. The README's capacity section quotes these counts.
#[test]
fn a_batch_on_a_shared_history_costs_one_listing_and_six_writes() {
    const WRITES: [&str; 6] = [
        "put",
        "put",
        "put",
        "put_if_absent",
        "put_if_absent",
        "put_if_absent",
    ];
    let dir = tempfile::tempdir().unwrap();
    let counted = counted_store();
    let profile = empty_profile();
    let kinds = |log: Vec<crate::backend::Request>| {
        let mut k: Vec<&str> = log.iter().map(|(kind, _)| *kind).collect();
        k.sort();
        k
    };

    // two replicas up; a owns the stream first
    let (backend, log) = counted();
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    let (backend, log_b) = counted();
    let mut b = History::open_shared(&dir.path().join("b"), Box::new(backend), "b").unwrap();
    let mut seen = Vec::new();
    for i in 0..3u64 {
        let id = format!("x{i}");
        seen.push(id.clone());
        let refs: Vec<&str> = seen.iter().map(String::as_str).collect();
        log.take();
        a.follow_stream("p0").unwrap();
        a.commit(in_stream(&id, i, "p0", i, &refs), Some(&profile))
            .unwrap();
        let mut expected = vec!["list_after"];
        expected.extend(WRITES);
        assert_eq!(kinds(log.take()), expected, "batch {i}");
    }

    // b takes the stream over: it reads where a left it (the newest index
    // entry and its manifest), once
    log_b.take();
    b.follow_stream("p0").unwrap();
    assert_eq!(kinds(log_b.take()), ["get", "get", "list_after"]);
    assert_eq!(b.next_stream_seq("p0"), 3);
    b.commit(in_stream("x3", 3, "p0", 3, &["x3"]), Some(&profile))
        .unwrap();
    assert_eq!(kinds(log_b.take()), WRITES);
}

/// The streams a batch pools its evidence with: in a shared history, the
/// other streams with a position, each at its newest one, listed at most
/// every `SIBLING_REFRESH` (a delimiter listing and a listing per stream;
/// a stream another replica moved costs its index entry and manifest),
/// but not one whose head stood still for `SIBLING_IDLE`; in a history of
/// one writer, none; in a replay, the ones pinned for the batch.
#[test]
fn a_batch_pools_with_the_other_streams_of_a_shared_history() {
    let dir = tempfile::tempdir().unwrap();
    let counted = counted_store();
    let (backend, log) = counted();
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    let (backend, _) = counted();
    let mut b = History::open_shared(&dir.path().join("b"), Box::new(backend), "b").unwrap();
    assert!(a.fleet_siblings("p0", "x").unwrap().is_empty());
    b.commit(in_stream("y0", 0, "p1", 0, &["y0"]), None)
        .unwrap();
    b.commit(in_stream("y1", 1, "p1", 1, &["y0", "y1"]), None)
        .unwrap();
    a.commit(in_stream("x0", 2, "p0", 0, &["x0"]), None)
        .unwrap();
    // a listed before b wrote: it sees b's stream at the next refresh
    log.take();
    assert!(a.fleet_siblings("p0", "x1").unwrap().is_empty());
    assert!(
        log.take().is_empty(),
        "no listing within the refresh interval"
    );
    a.siblings_listed = None; // the interval has passed
    let s = a.fleet_siblings("p0", "x1").unwrap();
    assert_eq!(s, vec![("p1".to_string(), 1, evidence(&["y0", "y1"]))]);
    let mut kinds: Vec<&str> = log.take().iter().map(|(k, _)| *k).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["get", "get", "list_after", "list_after", "list_folders"]
    );
    // b sees a's stream; its own is never a sibling
    let s = b.fleet_siblings("p1", "y2").unwrap();
    assert_eq!(s, vec![("p0".to_string(), 0, evidence(&["x0"]))]);

    // a stream whose head has not moved for SIBLING_IDLE is left out
    let long_ago = std::time::Instant::now()
        .checked_sub(super::streams::SIBLING_IDLE + std::time::Duration::from_secs(1));
    if let Some(t) = long_ago {
        b.moved.insert("p0".into(), t);
        assert!(b.fleet_siblings("p1", "y3").unwrap().is_empty());
    }

    // one writer: no siblings, whatever the streams
    let mut one = History::open(&dir.path().join("one")).unwrap();
    one.commit(in_stream("z0", 0, "p0", 0, &["z0"]), None)
        .unwrap();
    one.commit(in_stream("z1", 1, "p1", 0, &["z1"]), None)
        .unwrap();
    assert!(one.fleet_siblings("p0", "z2").unwrap().is_empty());
    // a replay: what live pooled
    let pinned = super::streams::Pinned {
        cuts: HashMap::from([(
            "z2".to_string(),
            vec![("p9".to_string(), 4), ("p8".to_string(), 1)],
        )]),
        evidence: HashMap::from([(("p9".to_string(), 4), evidence(&["q"]))]),
    };
    one.pin_siblings(pinned);
    // a position live no longer holds is left out
    assert_eq!(
        one.fleet_siblings("p0", "z2").unwrap(),
        vec![("p9".to_string(), 4, evidence(&["q"]))]
    );
    assert!(one.fleet_siblings("p0", "other").unwrap().is_empty());
}

/// A history that holds its replica name stops committing once another
/// process takes the name (its heartbeat finds the next version written
/// by someone else); a history dropped with its name releases it.
#[test]
fn a_history_whose_replica_name_was_taken_commits_nothing_more() {
    use crate::presence::{Beat, HEARTBEAT_MS, Keeper};

    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let objects = || -> Box<dyn Backend> { Box::new(LocalBackend::new(&shared)) };
    let keeper = Keeper::start(objects(), "a").unwrap();
    let mut h = History::open_shared(&dir.path().join("a"), objects(), "a").unwrap();
    h.hold_name(keeper);
    h.commit(in_stream("x0", 0, "p0", 0, &["x0"]), None)
        .unwrap();
    // another process writes the name's next version
    let versions = objects().list("replicas/a").unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let next = versions[0].replace("00000000000000000000.json", "00000000000000000001.json");
    let intruder = Beat {
        instance: "intruder".into(),
        at_ms: 0,
        released: false,
    };
    objects()
        .put(&next, &serde_json::to_vec(&intruder).unwrap())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(
        HEARTBEAT_MS as u64 + 1_000,
    ));
    let err = h
        .commit(in_stream("x1", 1, "p0", 1, &["x0", "x1"]), None)
        .unwrap_err();
    assert!(
        matches!(&err, HistoryError::NameLost(why) if why.contains("intruder")),
        "{err}"
    );
    assert!(!h.contains("x1"));
    // it does not release what is no longer its own
    drop(h);
    assert_eq!(objects().list("replicas/a").unwrap().len(), 2);

    // a clean stop releases the name
    let keeper = Keeper::start(objects(), "b").unwrap();
    drop(keeper);
    let versions = objects().list("replicas/b").unwrap();
    let last: Beat =
        serde_json::from_slice(&objects().get(versions.last().unwrap()).unwrap().unwrap()).unwrap();
    assert!(last.released, "{versions:?}");
}

/// A start reads the history once: the manifests open read serve the
/// start's other readers (the outbox's catch-up, the Kafka watermarks)
/// until the first commit, after which a reader reads the store again.
#[test]
fn a_start_reads_the_manifests_once() {
    let dir = tempfile::tempdir().unwrap();
    let counted = counted_store();
    let (backend, _) = counted();
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    a.commit(in_stream("x0", 0, "p0", 0, &["x0"]), None)
        .unwrap();
    a.commit(in_stream("x1", 1, "p0", 1, &["x0", "x1"]), None)
        .unwrap();
    let (backend, _) = counted();
    let mut b = History::open_shared(&dir.path().join("b"), Box::new(backend), "b").unwrap();
    b.commit(in_stream("y0", 2, "p1", 0, &["y0"]), None)
        .unwrap();
    drop((a, b));

    let (backend, log) = counted();
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    let at_open = log.take();
    assert!(
        at_open.iter().filter(|(k, _)| *k == "get").count() >= 3,
        "open reads every manifest: {at_open:?}"
    );
    let ids = |ms: Vec<BatchSummary>| ms.into_iter().map(|m| m.batch_id).collect::<Vec<_>>();
    assert_eq!(ids(a.summaries().unwrap().into_owned()), ["x0", "x1", "y0"]);
    assert_eq!(ids(a.own_summaries().unwrap()), ["x0", "x1"]);
    assert!(log.take().is_empty(), "read again after open");
    a.commit(in_stream("x2", 3, "p0", 2, &["x1", "x2"]), None)
        .unwrap();
    log.take();
    assert_eq!(ids(a.own_summaries().unwrap()), ["x0", "x1", "x2"]);
    assert!(!log.take().is_empty(), "after a commit, the store is read");
    a.forget_opened();
}
