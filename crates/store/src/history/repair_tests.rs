//! A replica's audit chain on a shared history: repaired after a crash
//! between a commit and its entry, checked against the batches the
//! replica committed, and continued from a local log written before
//! chains.

use super::super::tests::manifest;
use crate::audit::{AuditKind, AuditLog, verify_chains};
use crate::backend::{Backend, LocalBackend};
use crate::history::History;

fn chain_of(objects: &LocalBackend) -> crate::audit::ChainVerification {
    let mut chains = verify_chains(objects).unwrap();
    assert_eq!(chains.len(), 1);
    chains.remove(0)
}

fn batches_logged(objects: &LocalBackend) -> Vec<String> {
    AuditLog::open_shared(
        std::path::Path::new("unused"),
        std::sync::Arc::new(objects.clone()),
        "a",
    )
    .unwrap()
    .entries()
    .unwrap()
    .into_iter()
    .filter(|e| e.kind == AuditKind::BatchCommitted.as_str())
    .filter_map(|e| e.key)
    .collect()
}

/// A crash after a batch's manifest but before its audit entry leaves
/// the replica's newest batch unlogged: `verify_chains` says so without a
/// finding, and the replica's next start logs it (the head names the last
/// batch logged, so the start reads no entry). Entries removed from the
/// end with the head rewritten to match are found through the batches:
/// the replica committed them after its chain began, and only its newest
/// may be unlogged.
#[test]
fn a_crash_between_commit_and_entry_is_repaired_and_a_cut_chain_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a");
    let objects = LocalBackend::new(dir.path().join("shared"));
    let mut a = History::open_shared(&state, Box::new(objects.clone()), "a").unwrap();
    let mut heads = Vec::new();
    for i in 0..4u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), None).unwrap();
        heads.push(objects.get("audit/a/head.json").unwrap().unwrap());
    }
    drop(a);
    assert_eq!(batches_logged(&objects), ["x0", "x1", "x2", "x3"]);

    // the crash: x3 is committed, its entry is not written
    objects
        .delete(&crate::audit::chain::entry_key("a", 3))
        .unwrap();
    objects.put("audit/a/head.json", &heads[2]).unwrap();
    let c = chain_of(&objects);
    assert_eq!(c.verification.tampered, None);
    assert_eq!(c.unlogged.as_deref(), Some("x3"));
    let (counting, log) = crate::backend::Counting::new(objects.clone());
    drop(History::open_shared(&state, Box::new(counting), "a").unwrap());
    let audit_gets = log
        .take()
        .iter()
        .filter(|(k, key)| *k == "get" && key.starts_with("audit/"))
        .count();
    assert_eq!(audit_gets, 1, "the head only");
    assert_eq!(batches_logged(&objects), ["x0", "x1", "x2", "x3"]);
    let c = chain_of(&objects);
    assert_eq!((c.verification.tampered, c.unlogged), (None, None));

    // x2's and x3's entries removed, the head rewritten to match
    for seq in [2, 3] {
        objects
            .delete(&crate::audit::chain::entry_key("a", seq))
            .unwrap();
    }
    objects.put("audit/a/head.json", &heads[1]).unwrap();
    let t = chain_of(&objects)
        .verification
        .tampered
        .expect("a cut chain is found");
    assert!(
        t.reason.contains("batch x2") && t.reason.contains("its entry was removed"),
        "{}",
        t.reason
    );
}

/// A replica that logged its batches in its state folder's `audit.jsonl`
/// before its history's chains existed: its first start with a chain
/// does not log them again, its new batches go to the chain, and
/// `verify_chains` asks the chain only for the batches after it began.
#[test]
fn a_chain_continues_a_local_log_written_before_chains() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a");
    let objects = LocalBackend::new(dir.path().join("shared"));
    let mut a = History::open_shared(&state, Box::new(objects.clone()), "a").unwrap();
    for i in 0..2u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), None).unwrap();
    }
    drop(a);
    // as an older dqmon left it: those entries in the local file, no chain
    let local = AuditLog::open(&state).unwrap();
    for e in batches_logged(&objects) {
        local
            .append(AuditKind::BatchCommitted, Some(&e), serde_json::json!({}))
            .unwrap();
    }
    for key in objects.list("audit/a").unwrap() {
        objects.delete(&key).unwrap();
    }

    let mut a = History::open_shared(&state, Box::new(objects.clone()), "a").unwrap();
    assert!(batches_logged(&objects).is_empty(), "nothing logged again");
    a.commit(manifest("x2", 2, "f"), None).unwrap();
    drop(a);
    assert_eq!(batches_logged(&objects), ["x2"]);
    let c = chain_of(&objects);
    assert_eq!((c.verification.tampered, c.unlogged), (None, None));
    // the chain_started entry (after commit 1) and x2
    assert_eq!(c.verification.good_entries, 2);
}

/// A chain whose every batch entry was cut (the head rewritten to its
/// first entry, a config record) is found: the writer's batches must all
/// be in its chain, not only those after its first batch entry.
#[test]
fn a_chain_cut_down_to_its_config_entry_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a");
    let objects = LocalBackend::new(dir.path().join("shared"));
    let log = AuditLog::open_shared(&state, std::sync::Arc::new(objects.clone()), "a").unwrap();
    log.append(
        AuditKind::ConfigChanged,
        None,
        serde_json::json!({ "config_hash": "c" }),
    )
    .unwrap();
    let after_config = objects.get("audit/a/head.json").unwrap().unwrap();
    drop(log);
    let mut a = History::open_shared(&state, Box::new(objects.clone()), "a").unwrap();
    for i in 0..3u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), None).unwrap();
    }
    drop(a);
    assert_eq!(chain_of(&objects).verification.tampered, None);
    for seq in 1..4 {
        objects
            .delete(&crate::audit::chain::entry_key("a", seq))
            .unwrap();
    }
    objects.put("audit/a/head.json", &after_config).unwrap();
    let t = chain_of(&objects)
        .verification
        .tampered
        .expect("a chain cut to its first entry is found");
    assert!(t.reason.contains("batch x0"), "{}", t.reason);
}
