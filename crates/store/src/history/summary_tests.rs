//! Pack summaries: what a start reads instead of the packs, what it knows
//! after, packs written before summaries, and `audit verify` on an edited
//! summary.

use super::super::tests::{counted_store, in_stream, manifest};
use super::*;
use crate::history::{History, read_manifests_from, read_summaries_from};

/// Where a's summary objects are.
const A: &str = "history/pack-summaries/a";

fn gets(log: &[crate::backend::Request], under: &str) -> usize {
    log.iter()
        .filter(|(k, key)| *k == "get" && key.starts_with(under))
        .count()
}

/// Replica a commits 14 batches over two streams with packs of 4 (three
/// packs, two batches unpacked), one of them quarantined; replica b
/// commits 2, in one pack.
fn two_writers(dir: &std::path::Path, objects: Box<dyn Backend>, b_objects: Box<dyn Backend>) {
    let mut a = History::open_shared(&dir.join("a"), objects, "a").unwrap();
    a.pack_size = 4;
    let mut b = History::open_shared(&dir.join("b"), b_objects, "b").unwrap();
    b.pack_size = 2;
    let mut seq = 0;
    let (mut p0, mut p1) = (Vec::new(), Vec::new());
    for i in 0..14u64 {
        let id = format!("x{i:02}");
        let m = if i == 5 {
            let mut m = manifest(&id, seq, "bad.parquet");
            m.status = BatchStatus::Quarantined;
            m.reason = Some("not parquet".into());
            m
        } else {
            let (stream, seen) = if i % 2 == 0 {
                ("p0", &mut p0)
            } else {
                ("p1", &mut p1)
            };
            seen.push(id.clone());
            let names: Vec<&str> = seen.iter().map(String::as_str).collect();
            in_stream(&id, seq, stream, seen.len() as u64 - 1, &names)
        };
        a.commit(m, None).unwrap();
        seq += 1;
    }
    for i in 0..2u64 {
        b.commit(in_stream(&format!("y{i}"), seq, "q", i, &["y"]), None)
            .unwrap();
        seq += 1;
    }
}

/// What an open history knows of the batches, to compare two starts.
fn known(h: &History, all: &[Manifest]) -> String {
    let mut out = format!("next {}\n", h.next_seq());
    for m in all {
        out += &format!(
            "{} contains={} quarantined={:?} input={:?}\n",
            m.batch_id,
            h.contains(&m.batch_id),
            h.quarantine_reason(&m.batch_id),
            h.batch_with_input(&m.input_sha256),
        );
    }
    for s in ["p0", "p1", "q", "new"] {
        out += &format!(
            "{s}: next {} evidence {:?}\n",
            h.next_stream_seq(s),
            h.stream_evidence(s)
        );
    }
    out
}

/// A start reads the four summary objects, not the four packs, and of
/// the manifests only the two unpacked ones and each stream's head (the
/// evidence). It knows what a start that read every manifest knew: the
/// batches, the quarantined one, the inputs, each stream's position and
/// evidence; its summaries are the manifests' own.
#[test]
fn a_start_reads_the_summaries_not_the_packs() {
    let dir = tempfile::tempdir().unwrap();
    let counted = counted_store();
    two_writers(dir.path(), Box::new(counted().0), Box::new(counted().0));
    let (backend, _) = counted();
    assert_eq!(backend.list(A).unwrap().len(), 3);
    let all = read_manifests_from(&backend).unwrap();
    assert_eq!(all.len(), 16);

    let (backend, log) = counted();
    let a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    let reqs = log.take();
    assert_eq!(gets(&reqs, "history/packs/"), 0, "{reqs:?}");
    assert_eq!(gets(&reqs, "history/pack-summaries/"), 4, "{reqs:?}");
    // x12, x13 unpacked, the heads of p0 and p1 (read once); the head of
    // q (y1), packed, read for its evidence
    assert_eq!(gets(&reqs, "history/batches/"), 2 + 1, "{reqs:?}");
    let summaries: Vec<BatchSummary> = all.iter().map(BatchSummary::from).collect();
    assert_eq!(a.summaries().unwrap(), summaries);
    let with_summaries = known(&a, &all);
    drop(a);

    // the same start when every manifest is read one by one
    let (backend, _) = counted();
    for key in backend.list(A).unwrap() {
        backend.delete(&key).unwrap();
    }
    for key in [
        "history/packs/a",
        "history/packs/b",
        "history/pack-summaries/b",
    ] {
        for key in backend.list(key).unwrap() {
            backend.delete(&key).unwrap();
        }
    }
    let a = History::open_shared(&dir.path().join("a2"), Box::new(backend), "a").unwrap();
    assert_eq!(known(&a, &all), with_summaries);
    assert!(with_summaries.contains("x05 contains=true quarantined=Some(\"not parquet\")"));
    assert!(with_summaries.contains("p1: next 6"), "{with_summaries}");
}

/// Packs written before summaries (or whose summary failed to write) are
/// read in full, as before; the start of the pack's writer then writes
/// their summaries, so that its next start reads those instead. An
/// unreadable summary sends the reader back to its pack.
#[test]
fn packs_without_summaries_are_read_and_then_summarized() {
    let dir = tempfile::tempdir().unwrap();
    let counted = counted_store();
    two_writers(dir.path(), Box::new(counted().0), Box::new(counted().0));
    let (backend, _) = counted();
    let keys = backend.list(A).unwrap();
    let written: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| backend.get(k).unwrap().unwrap())
        .collect();
    for key in &keys {
        backend.delete(key).unwrap();
    }

    // b's start reads the packs, and leaves a's summaries to a
    let (backend, log) = counted();
    drop(History::open_shared(&dir.path().join("b"), Box::new(backend), "b").unwrap());
    let reqs = log.take();
    assert_eq!(gets(&reqs, "history/packs/"), 3, "{reqs:?}");
    assert!(counted().0.list(A).unwrap().is_empty());

    // a's start reads them too, and writes the same summaries as its packs did
    let (backend, log) = counted();
    drop(History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap());
    assert_eq!(gets(&log.take(), "history/packs/"), 3);
    let (backend, _) = counted();
    assert_eq!(backend.list(A).unwrap(), keys);
    for (key, bytes) in keys.iter().zip(&written) {
        assert_eq!(&backend.get(key).unwrap().unwrap(), bytes, "{key}");
    }
    let (backend, log) = counted();
    drop(History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap());
    assert_eq!(gets(&log.take(), "history/packs/"), 0);

    // an unreadable summary: its pack is read, and the history is whole
    let (backend, log) = counted();
    backend.put(&keys[1], b"{not json").unwrap();
    log.take();
    assert_eq!(read_summaries_from(&backend).unwrap().len(), 16);
    let reqs = log.take();
    assert_eq!(gets(&reqs, "history/packs/"), 1, "{reqs:?}");
}

/// `audit verify` compares every summary of a replica's batches with
/// the batch's manifest, reading each chain's writer's packs and
/// summaries for its entries: an edited summary (here, a quarantined
/// batch shown as processed, which a start would then read as a batch to
/// compare again) is named, in the chain of the replica that wrote it.
#[test]
fn audit_verify_names_an_edited_summary() {
    let dir = tempfile::tempdir().unwrap();
    let objects = crate::backend::LocalBackend::new(dir.path().join("shared"));
    two_writers(
        dir.path(),
        Box::new(objects.clone()),
        Box::new(objects.clone()),
    );
    let (counting, log) = crate::backend::Counting::new(objects.clone());
    let chains = crate::audit::verify_chains(&counting).unwrap();
    let good: Vec<(&str, u64, bool)> = chains
        .iter()
        .map(|c| {
            (
                c.writer.as_str(),
                c.verification.good_entries,
                c.verification.tampered.is_none() && c.unlogged.is_none(),
            )
        })
        .collect();
    assert_eq!(good, [("a", 14, true), ("b", 2, true)]);
    // the batches once (for the check that each is logged), then each
    // chain's writer's packs and summaries once
    let reqs = log.take();
    assert_eq!(gets(&reqs, "history/pack-summaries/a/"), 3 + 3, "{reqs:?}");
    assert_eq!(gets(&reqs, "history/packs/a/"), 3, "{reqs:?}");
    assert_eq!(gets(&reqs, "history/pack-summaries/b/"), 1 + 1, "{reqs:?}");
    assert_eq!(gets(&reqs, "history/packs/b/"), 1, "{reqs:?}");

    let key = &objects.list(A).unwrap()[1];
    let mut s: serde_json::Value =
        serde_json::from_slice(&objects.get(key).unwrap().unwrap()).unwrap();
    assert_eq!(s["batches"][1]["batch_id"], "x05");
    s["batches"][1]["status"] = "processed".into();
    objects.put(key, &serde_json::to_vec(&s).unwrap()).unwrap();
    let chains = crate::audit::verify_chains(&objects).unwrap();
    assert_eq!(chains[1].verification.tampered, None, "b's chain is intact");
    let tampered = chains[0]
        .verification
        .tampered
        .clone()
        .expect("an edited summary is found");
    assert_eq!(tampered.seq, 5);
    assert!(
        tampered.reason.contains("x05") && tampered.reason.contains("the summary was edited"),
        "{}",
        tampered.reason
    );
}
