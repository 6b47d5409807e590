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

fn manifest(batch_id: &str, seq: u64, source: &str) -> Manifest {
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
    let all = read_manifests(&state).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].source, "from the first");
    let committed = first.audit().keys(AuditKind::BatchCommitted).unwrap();
    assert_eq!(committed.len(), 1);
    drop((first, second));
    // a reopen finds nothing to repair and the same one batch
    let h = History::open(&state).unwrap();
    assert_eq!(h.manifests().unwrap(), all);
    assert_eq!(
        h.audit().keys(AuditKind::BatchCommitted).unwrap(),
        committed
    );
}
