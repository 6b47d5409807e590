//! The audit chain: appends, crashes between line and head, tampering found.

use super::*;
use serde_json::json;
use std::io::Write;

fn log_with(n: u64) -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    for i in 0..n {
        log.append(
            AuditKind::AlertSent,
            Some(&format!("a{i}")),
            json!({ "i": i }),
        )
        .unwrap();
    }
    (dir, log)
}

fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(AUDIT_FILE))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    fs::write(dir.join(AUDIT_FILE), s).unwrap();
}

#[test]
fn intact_log_verifies_and_chains() {
    let (dir, log) = log_with(5);
    let v = verify(dir.path()).unwrap();
    assert_eq!(v.tampered, None);
    assert_eq!(v.good_entries, 5);
    let entries = log.entries().unwrap();
    assert_eq!(entries[0].prev, GENESIS);
    assert_eq!(entries[3].prev, entries[2].hash);
    assert_eq!(v.head_hash, entries[4].hash);
}

#[test]
fn an_edited_entry_is_named() {
    let (dir, _log) = log_with(5);
    let mut l = lines(dir.path());
    l[2] = l[2].replace("\"i\":2", "\"i\":7");
    write_lines(dir.path(), &l);
    let t = verify(dir.path()).unwrap().tampered.unwrap();
    assert_eq!((t.seq, t.line), (2, 3), "{t:?}");
    assert!(t.reason.contains("was edited"), "{}", t.reason);
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let (dir, _log) = log_with(5);
    let mut l = lines(dir.path());
    let mut e: AuditEntry = serde_json::from_str(&l[1]).unwrap();
    e.payload = json!({ "i": 99 });
    e.hash = e.computed_hash();
    l[1] = serde_json::to_string(&e).unwrap();
    write_lines(dir.path(), &l);
    let t = verify(dir.path()).unwrap().tampered.unwrap();
    assert_eq!(t.seq, 1, "{t:?}");
    assert!(t.reason.contains("entry 1 was changed"), "{}", t.reason);
}

#[test]
fn a_removed_entry_is_named() {
    let (dir, _log) = log_with(5);
    let mut l = lines(dir.path());
    l.remove(3);
    write_lines(dir.path(), &l);
    let t = verify(dir.path()).unwrap().tampered.unwrap();
    assert_eq!((t.seq, t.line), (3, 4), "{t:?}");
    assert!(t.reason.contains("entry 3 is missing"), "{}", t.reason);
}

#[test]
fn reordered_entries_are_named() {
    let (dir, _log) = log_with(5);
    let mut l = lines(dir.path());
    l.swap(1, 2);
    write_lines(dir.path(), &l);
    let t = verify(dir.path()).unwrap().tampered.unwrap();
    assert_eq!((t.seq, t.line), (1, 2), "{t:?}");
    assert!(t.reason.contains("reordered"), "{}", t.reason);
}

#[test]
fn entries_removed_from_the_end_are_caught_by_the_head() {
    let (dir, log) = log_with(5);
    let mut l = lines(dir.path());
    l.truncate(3);
    write_lines(dir.path(), &l);
    let t = verify(dir.path()).unwrap().tampered.unwrap();
    assert_eq!(t.seq, 3, "{t:?}");
    assert!(t.reason.contains("removed from the end"), "{}", t.reason);
    // and the writer refuses to go on from a shortened log
    let err = log
        .append(AuditKind::AlertSent, None, json!({}))
        .unwrap_err();
    assert!(err.to_string().contains("entries were removed"), "{err}");
}

#[test]
fn a_crash_between_line_and_head_is_adopted_and_a_torn_line_cut() {
    let (dir, log) = log_with(3);
    let head_before = fs::read(dir.path().join(HEAD_FILE)).unwrap();
    log.append(AuditKind::AlertSent, Some("a3"), json!({}))
        .unwrap();
    // simulate the crash: the head still says 3 entries
    fs::write(dir.path().join(HEAD_FILE), &head_before).unwrap();
    // and a torn fifth line
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.path().join(AUDIT_FILE))
        .unwrap();
    f.write_all(b"{\"seq\":4,\"kind\":\"al").unwrap();
    drop(f);
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.entries().unwrap().len(), 4);
    log.append(AuditKind::AlertSent, Some("a4"), json!({}))
        .unwrap();
    let v = verify(dir.path()).unwrap();
    assert_eq!((v.tampered, v.good_entries), (None, 5));
}

/// `append_once` reads the log once, then only what was appended since
/// (here by another process's handle): its cost per message stays flat
/// however long the log is.
#[test]
fn append_once_reads_only_what_was_appended_since() {
    let (dir, log) = log_with(300);
    let read = |l: &AuditLog| l.index.lock().unwrap().read;
    assert!(
        log.append_once(AuditKind::AlertSent, "m0", json!({}))
            .unwrap()
            .is_some()
    );
    let whole = fs::metadata(dir.path().join(AUDIT_FILE)).unwrap().len();
    assert!(read(&log) + 400 >= whole, "the first call reads the log");
    let before = read(&log);
    // another writer appends two entries
    let other = AuditLog::open(dir.path()).unwrap();
    other
        .append(AuditKind::AlertSent, Some("x1"), json!({}))
        .unwrap();
    assert!(
        other
            .append_once(AuditKind::AlertSent, "m1", json!({}))
            .unwrap()
            .is_some()
    );
    let foreign = fs::metadata(dir.path().join(AUDIT_FILE)).unwrap().len() - whole;
    // seen by the first handle (no duplicate), reading only those bytes
    assert!(
        log.append_once(AuditKind::AlertSent, "m1", json!({}))
            .unwrap()
            .is_none()
    );
    assert_eq!(read(&log) - before, foreign);
    let before = read(&log);
    assert!(
        log.append_once(AuditKind::AlertSent, "m2", json!({}))
            .unwrap()
            .is_some()
    );
    assert!(
        log.append_once(AuditKind::AlertSent, "m2", json!({}))
            .unwrap()
            .is_none()
    );
    assert_eq!(read(&log), before, "its own appends are not read back");
    assert_eq!(lines(dir.path()).len(), 304);
}

#[test]
fn append_once_is_idempotent_by_key() {
    let (dir, log) = log_with(0);
    assert!(
        log.append_once(AuditKind::BatchCommitted, "b1", json!({}))
            .unwrap()
            .is_some()
    );
    assert!(
        log.append_once(AuditKind::BatchCommitted, "b1", json!({}))
            .unwrap()
            .is_none()
    );
    assert_eq!(lines(dir.path()).len(), 1);
    assert!(log.keys(AuditKind::BatchCommitted).unwrap().contains("b1"));
}

#[test]
fn config_changes_are_told_apart_from_reloads_of_the_same_config() {
    let (_dir, log) = log_with(0);
    let p = Path::new("rules.yaml");
    assert_eq!(
        record_config(&log, p, "h1", "r1", "start").unwrap(),
        AuditKind::ConfigChanged
    );
    assert_eq!(
        record_config(&log, p, "h1", "r1", "start").unwrap(),
        AuditKind::ConfigLoaded
    );
    assert_eq!(
        record_config(&log, p, "h2", "r2", "reload").unwrap(),
        AuditKind::ConfigChanged
    );
    let last = log.entries().unwrap().pop().unwrap();
    assert_eq!(last.payload["previous_config_hash"], "h1");
}

#[test]
fn two_handles_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = AuditLog::open(dir.path()).unwrap();
    let b = AuditLog::open(dir.path()).unwrap();
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|log| {
            std::thread::spawn(move || {
                for i in 0..20 {
                    log.append(AuditKind::AlertSent, None, json!({ "i": i }))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = verify(dir.path()).unwrap();
    assert_eq!((v.tampered, v.good_entries), (None, 40));
}
