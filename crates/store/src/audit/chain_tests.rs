//! A writer's chain on a shared store: appends, two appenders racing, a
//! crash between an entry and its head, and what `verify_chains` finds.

use super::*;
use crate::audit::{AuditLog, verify_chains};
use crate::backend::LocalBackend;
use serde_json::json;

fn store() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("shared")));
    (dir, objects)
}

fn log(dir: &tempfile::TempDir, objects: &Arc<dyn Backend>, writer: &str) -> AuditLog {
    AuditLog::open_shared(&dir.path().join(writer), objects.clone(), writer).unwrap()
}

/// Entries go to `audit/<writer>/`, one object each, chained like the
/// lines of `audit.jsonl`; the head names the chain's end, its last batch
/// and its last config; a reopen continues after the last entry; and
/// nothing is written to the state folder.
#[test]
fn a_shared_chain_is_one_object_per_entry_and_a_head() {
    let (dir, objects) = store();
    let a = log(&dir, &objects, "a");
    a.append(
        AuditKind::ConfigChanged,
        None,
        json!({ "config_hash": "c1" }),
    )
    .unwrap();
    a.append(AuditKind::BatchCommitted, Some("x0"), json!({}))
        .unwrap();
    a.append(AuditKind::AlertSent, Some("m0"), json!({}))
        .unwrap();
    assert_eq!(
        objects.list("audit/a").unwrap(),
        [
            "audit/a/0000000000000000.json",
            "audit/a/0000000000000001.json",
            "audit/a/0000000000000002.json",
            "audit/a/head.json"
        ]
    );
    assert!(!dir.path().join("a").join(super::super::AUDIT_FILE).exists());
    drop(a);
    let a = log(&dir, &objects, "a");
    let head = a.shared().unwrap().head();
    assert_eq!(head.entries, 3);
    assert_eq!(head.last_batch.as_deref(), Some("x0"));
    assert_eq!(a.last_config_hash().unwrap().as_deref(), Some("c1"));
    let e = a
        .append(AuditKind::BatchCommitted, Some("x1"), json!({}))
        .unwrap();
    assert_eq!(e.seq, 3);
    let entries = a.entries().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[3].prev, entries[2].hash);
    let chains = verify_chains(objects.as_ref()).unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].writer, "a");
    assert_eq!(chains[0].verification.tampered, None);
    assert_eq!(chains[0].verification.good_entries, 4);
    assert_eq!(chains[0].verification.head_hash, e.hash);
}

/// Two logs of one chain (a daemon and a CLI command on the same replica
/// name), each behind the other by turns: every append lands, none
/// overwrites another, the chain stays one line; `append_once` sees the
/// keys the other wrote once it has read them.
#[test]
fn two_appenders_of_one_chain_never_fork_it() {
    let (dir, objects) = store();
    let one = log(&dir, &objects, "a");
    let two = log(&dir, &objects, "a");
    for i in 0..5 {
        one.append(AuditKind::AlertSent, Some(&format!("one{i}")), json!({}))
            .unwrap();
        two.append(AuditKind::AlertSent, Some(&format!("two{i}")), json!({}))
            .unwrap();
    }
    // `two` read one4 when it lost the race for entry 9
    assert_eq!(
        two.append_once(AuditKind::AlertSent, "one4", json!({}))
            .unwrap(),
        None
    );
    let entries = log(&dir, &objects, "a").entries().unwrap();
    let keys: Vec<&str> = entries.iter().filter_map(|e| e.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            "one0", "two0", "one1", "two1", "one2", "two2", "one3", "two3", "one4", "two4"
        ]
    );
    let chains = verify_chains(objects.as_ref()).unwrap();
    assert_eq!(chains[0].verification.tampered, None);
    assert_eq!(chains[0].verification.good_entries, 10);
}

/// A crash between an entry and its head leaves the head behind: the
/// next open adopts the entry (and names its batch), and appends go on
/// after it.
#[test]
fn a_head_behind_its_entries_is_caught_up() {
    let (dir, objects) = store();
    let a = log(&dir, &objects, "a");
    a.append(AuditKind::BatchCommitted, Some("x0"), json!({}))
        .unwrap();
    let behind = objects.get("audit/a/head.json").unwrap().unwrap();
    a.append(AuditKind::BatchCommitted, Some("x1"), json!({}))
        .unwrap();
    objects.put("audit/a/head.json", &behind).unwrap();
    drop(a);
    let a = log(&dir, &objects, "a");
    assert_eq!(a.shared().unwrap().head().entries, 2);
    assert_eq!(a.shared().unwrap().head().last_batch.as_deref(), Some("x1"));
    assert_eq!(
        a.append(AuditKind::AlertSent, Some("m"), json!({}))
            .unwrap()
            .seq,
        2
    );
    assert_eq!(
        verify_chains(objects.as_ref()).unwrap()[0]
            .verification
            .tampered,
        None
    );
}

/// What `verify_chains` names: an edited entry, a removed one in the
/// middle (a gap), the last ones removed under the head (the head is
/// ahead, and a start refuses the chain). (Entries removed with the head
/// rewritten to match are found through the writer's batches:
/// `history/repair_tests.rs`.)
#[test]
fn verify_chains_names_edited_and_removed_entries() {
    let (dir, objects) = store();
    let a = log(&dir, &objects, "a");
    for i in 0..4 {
        a.append(
            AuditKind::BatchCommitted,
            Some(&format!("x{i}")),
            json!({ "history_seq": i }),
        )
        .unwrap();
    }
    drop(a);
    let entry = |seq| entry_key("a", seq);
    let first = |objects: &Arc<dyn Backend>| {
        verify_chains(objects.as_ref()).unwrap()[0]
            .verification
            .tampered
            .clone()
            .expect("a finding")
    };

    // edited
    let original = objects.get(&entry(1)).unwrap().unwrap();
    let edited = String::from_utf8(original.clone())
        .unwrap()
        .replace("x1", "x9");
    objects.put(&entry(1), edited.as_bytes()).unwrap();
    let t = first(&objects);
    assert_eq!((t.seq, t.line), (1, 0));
    assert!(t.reason.contains("was edited"), "{}", t.reason);
    objects.put(&entry(1), &original).unwrap();

    // a gap
    objects.delete(&entry(2)).unwrap();
    let t = first(&objects);
    assert_eq!(t.seq, 2);
    assert!(t.reason.contains("entry 2 is missing"), "{}", t.reason);

    // the end removed (entries 2 and 3), the head left: found, and a
    // start refuses the chain
    objects.delete(&entry(3)).unwrap();
    let t = first(&objects);
    assert!(t.reason.contains("removed from the end"), "{}", t.reason);
    let refused = AuditLog::open_shared(dir.path(), objects.clone(), "a").unwrap_err();
    assert!(
        refused.to_string().contains("entries were removed"),
        "{refused}"
    );
    // an edited head: found (it is what tells entries cut from the end)
    objects.put("audit/a/head.json", b"{}").unwrap();
    let t = first(&objects);
    assert!(t.reason.contains("is not a chain head"), "{}", t.reason);
}

#[test]
fn entry_keys_sort_by_sequence_number() {
    assert!(entry_key("a", 9) < entry_key("a", 10));
    assert_eq!(entry_seq(&entry_key("a", 42)), Some(42));
    assert_eq!(entry_seq("audit/a/head.json"), None);
}
