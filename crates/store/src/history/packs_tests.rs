//! Manifest packs: what a start reads, what a reader sees, and what
//! `audit verify` says of an edited pack; metrics read once.

use super::super::tests::{counted_store, empty_profile, in_stream, manifest};
use super::*;
use crate::backend::Counting;
use crate::history::read_manifests_from;
use arrow::array::RecordBatch;
use std::sync::Arc;

fn ids(ms: &[Manifest]) -> Vec<String> {
    ms.iter().map(|m| m.batch_id.clone()).collect()
}

/// Replace `from` by `to` in the text of a pack's `i`-th copy.
fn edit_copy(objects: &dyn Backend, pack: &str, i: usize, from: &str, to: &str) {
    let mut p: serde_json::Value =
        serde_json::from_slice(&objects.get(pack).unwrap().unwrap()).unwrap();
    let text = p["manifests"][i].as_str().unwrap().to_string();
    assert!(text.contains(from), "{text}");
    p["manifests"][i] = text.replacen(from, to, 1).into();
    objects.put(pack, &serde_json::to_vec(&p).unwrap()).unwrap();
}

fn gets(log: &[crate::backend::Request], under: &str) -> usize {
    log.iter()
        .filter(|(k, key)| *k == "get" && key.starts_with(under))
        .count()
}

/// Two replicas commit 11 and 3 batches with packs of 4: a packs 8 of its
/// manifests in two packs, b none. A start then reads the two packs and
/// the 6 other manifests instead of 14 manifests, and sees the same
/// history, byte for byte, as reading every manifest; a's next start goes
/// on from its unpacked three, and its next commit writes the third pack.
#[test]
fn a_start_reads_packs_instead_of_each_packed_manifest() {
    assert_eq!(PACK_SIZE, 128, "the README's capacity section quotes 128");
    let dir = tempfile::tempdir().unwrap();
    let counted = counted_store();
    let (backend, log) = counted();
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    a.pack_size = 4;
    let (backend, _) = counted();
    let mut b = History::open_shared(&dir.path().join("b"), Box::new(backend), "b").unwrap();
    b.pack_size = 4;
    let mut seq = 0;
    for i in 0..11u64 {
        log.take();
        a.commit(in_stream(&format!("x{i:02}"), seq, "p0", i, &["x"]), None)
            .unwrap();
        let packs_written = log
            .take()
            .iter()
            .filter(|(_, key)| key.starts_with(PACKS))
            .count();
        assert_eq!(packs_written, usize::from(i % 4 == 3), "batch {i}");
        seq += 1;
        if i < 3 {
            b.commit(in_stream(&format!("y{i}"), seq, "p1", i, &["y"]), None)
                .unwrap();
            seq += 1;
        }
    }
    drop((a, b));
    let (backend, _) = counted();
    let packs = backend.list("history/packs/a").unwrap();
    assert_eq!(
        packs,
        [
            "history/packs/a/000000000000-000000000006.json",
            "history/packs/a/000000000007-000000000010.json"
        ]
    );
    assert!(backend.list("history/packs/b").unwrap().is_empty());

    // every manifest read one by one, as before packs
    let (plain, _) = counted();
    let mut expected = Vec::new();
    for key in plain.list("history/batches").unwrap() {
        let bytes = plain.get(&key).unwrap().unwrap();
        expected.push(serde_json::from_slice::<Manifest>(&bytes).unwrap());
    }
    expected.sort_by(|x, y| (x.seq, &x.batch_id).cmp(&(y.seq, &y.batch_id)));

    let (backend, log) = counted();
    let read = read_manifests_from(&backend).unwrap();
    assert_eq!(read, expected);
    assert_eq!(read.len(), 14);
    let reqs = log.take();
    assert_eq!(gets(&reqs, "history/packs/"), 2, "{reqs:?}");
    assert_eq!(gets(&reqs, "history/batches/"), 6, "{reqs:?}");

    // a's start: the same listings, and it knows its three unpacked ones
    let (backend, log) = counted();
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    a.pack_size = 4;
    let summaries: Vec<BatchSummary> = expected.iter().map(BatchSummary::from).collect();
    assert_eq!(a.summaries().unwrap(), summaries);
    let reqs = log.take();
    // the 6 unpacked, among them the heads of p0 and p1, whose evidence
    // the start keeps from that read (it reads the packs' summaries: see
    // `summary_tests.rs`)
    assert_eq!(gets(&reqs, "history/batches/"), 6, "{reqs:?}");
    assert_eq!(
        a.unpacked
            .iter()
            .map(|u| u.batch_id.as_str())
            .collect::<Vec<_>>(),
        ["x08", "x09", "x10"]
    );
    a.commit(in_stream("x11", seq, "p0", 11, &["x"]), None)
        .unwrap();
    let reqs = log.take();
    // the three committed before the start are read back for the pack
    assert_eq!(gets(&reqs, "history/batches/x"), 3, "{reqs:?}");
    assert!(a.unpacked.is_empty());
    let (backend, log) = counted();
    assert_eq!(read_manifests_from(&backend).unwrap().len(), 15);
    assert_eq!(gets(&log.take(), "history/batches/"), 3);
}

/// A pack that cannot be parsed is skipped: its manifests are read one by
/// one; so is a copy that is not a manifest. A listed manifest is read whatever the packs say, and a pack's copy
/// of a batch that is not listed is not taken (the listing is the
/// snapshot).
#[test]
fn an_unreadable_pack_falls_back_to_the_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a");
    let objects = crate::backend::LocalBackend::new(dir.path().join("shared"));
    let mut a = History::open_shared(&state, Box::new(objects.clone()), "a").unwrap();
    a.pack_size = 2;
    for i in 0..4u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), None).unwrap();
    }
    drop(a);
    let packs = objects.list("history/packs/a").unwrap();
    assert_eq!(packs.len(), 2);
    objects.put(&packs[0], b"{not json").unwrap();
    let (counted, log) = Counting::new(objects.clone());
    let read = read_manifests_from(&counted).unwrap();
    assert_eq!(ids(&read), ["x0", "x1", "x2", "x3"]);
    assert_eq!(gets(&log.take(), "history/batches/"), 2);
    // a copy that is JSON but not a manifest: that manifest is read
    edit_copy(&objects, &packs[1], 0, "\"rows\": 0", "\"rows\": \"many\"");
    let read = read_manifests_from(&counted).unwrap();
    assert_eq!(ids(&read), ["x0", "x1", "x2", "x3"]);
    assert_eq!(read[2].rows, 0);
    let reqs = log.take();
    assert_eq!(gets(&reqs, "history/batches/"), 3, "{reqs:?}");
    assert_eq!(gets(&reqs, "history/batches/x2"), 1, "{reqs:?}");
    // a pack copy of a batch never listed (its manifest removed) is not
    // taken
    std::fs::remove_file(objects.locate("history/batches/x3.json")).unwrap();
    assert_eq!(
        ids(&read_manifests_from(&objects).unwrap()),
        ["x0", "x1", "x2"]
    );
}

/// `audit verify` checks every pack's copy of a batch against the batch's
/// manifest: an edited copy (here, its row count) would change
/// what `dqmon query` shows while manifests and chain stay intact.
#[test]
fn audit_verify_names_an_edited_pack() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a");
    let objects = crate::backend::LocalBackend::new(dir.path().join("shared"));
    let mut a = History::open_shared(&state, Box::new(objects.clone()), "a").unwrap();
    a.pack_size = 2;
    for i in 0..2u64 {
        let mut m = manifest(&format!("x{i}"), i, "f");
        m.rows = 10 + i;
        a.commit(m, None).unwrap();
    }
    drop(a);
    let verify = || {
        crate::audit::verify_chains(&objects)
            .unwrap()
            .remove(0)
            .verification
    };
    let verified = verify();
    assert_eq!(verified.tampered, None);
    assert_eq!(verified.good_entries, 2);

    let key = &objects.list("history/packs/a").unwrap()[0];
    edit_copy(&objects, key, 1, "\"rows\": 11", "\"rows\": 0");
    let tampered = verify().tampered.expect("an edited pack is found");
    assert_eq!(tampered.seq, 1);
    assert!(
        tampered.reason.contains("x1") && tampered.reason.contains("the pack was edited"),
        "{}",
        tampered.reason
    );
}

/// Metrics are packed with their manifests: `read_metrics` gives every
/// batch's rows once (as many rows as the per-batch files hold together),
/// reading a pack per two batches here and the files of the batches no
/// pack holds, also after a restart (a batch committed before it is read
/// back for its pack) and when a pack is unreadable (its batches' files
/// are read instead).
#[test]
fn metrics_are_read_once_from_packs_and_unpacked_files() {
    use super::super::metric_packs::{batch_ids, read_metrics};
    let dir = tempfile::tempdir().unwrap();
    let objects = crate::backend::LocalBackend::new(dir.path().join("shared"));
    let profile = empty_profile();
    let open = |name: &str| {
        let mut h =
            History::open_shared(&dir.path().join(name), Box::new(objects.clone()), name).unwrap();
        h.pack_size = 2;
        h
    };
    let mut a = open("a");
    let mut b = open("b");
    for i in 0..3u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), Some(&profile))
            .unwrap();
    }
    b.commit(manifest("y0", 10, "f"), Some(&profile)).unwrap();
    drop(a);
    let mut a = open("a");
    // x2's metrics are read back for its pack; a batch without a profile
    // (x3) has none
    a.commit(manifest("x3", 3, "f"), None).unwrap();
    a.commit(manifest("x4", 4, "f"), Some(&profile)).unwrap();
    a.commit(manifest("x5", 5, "f"), Some(&profile)).unwrap();
    drop((a, b));

    let per_file: usize = objects
        .list("history/metrics")
        .unwrap()
        .iter()
        .map(|k| {
            let rows = super::super::metric_packs::batch_rows(&objects, k);
            rows.iter().map(RecordBatch::num_rows).sum::<usize>()
        })
        .sum();
    let packs = objects.list("history/metric-packs/a").unwrap();
    assert_eq!(
        packs.len(),
        3,
        "x0-x1, x2-x3 (x3 without metrics), x4-x5: {packs:?}"
    );
    let all = ["x0", "x1", "x2", "x4", "x5", "y0"];
    let (counted, log) = Counting::new(objects.clone());
    let rows = read_metrics(&counted).unwrap();
    assert_eq!(batch_ids(&rows), all);
    assert_eq!(
        rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
        per_file
    );
    let reqs = log.take();
    assert_eq!(gets(&reqs, "history/metric-packs/"), 3, "{reqs:?}");
    assert_eq!(gets(&reqs, "history/metrics/"), 1, "{reqs:?}");

    objects.put(&packs[0], b"not parquet").unwrap();
    let rows = read_metrics(&objects).unwrap();
    assert_eq!(batch_ids(&rows), all);
    assert_eq!(
        rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
        per_file
    );
}

/// A backend that refuses the writes of packs while `deny` is set (a store
/// whose policy forbids the prefix, an outage).
#[derive(Debug)]
struct DenyPacks {
    inner: crate::backend::LocalBackend,
    deny: Arc<std::sync::atomic::AtomicBool>,
    tries: Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend for DenyPacks {
    fn get(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn size(&self, key: &str) -> std::io::Result<Option<u64>> {
        self.inner.size(key)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.put(key, bytes)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> std::io::Result<Put> {
        use std::sync::atomic::Ordering;
        if key.starts_with("history/metric-packs/") {
            self.tries.fetch_add(1, Ordering::SeqCst);
            if self.deny.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("access denied"));
            }
        }
        self.inner.put_if_absent(key, bytes)
    }
    fn list(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn folders(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        self.inner.folders(prefix)
    }
    fn delete(&self, key: &str) -> std::io::Result<()> {
        self.inner.delete(key)
    }
    fn locate(&self, key: &str) -> std::path::PathBuf {
        self.inner.locate(key)
    }
}

/// A store that refuses packs: the batches are committed; packing is tried
/// once per pack's worth of commits, not at every commit, and the bytes
/// held stay within two packs' worth. Once the store takes packs again,
/// everything waiting is packed, and a reader reads no manifest alone.
#[test]
fn refused_packs_are_retried_once_per_pack_and_hold_bounded_memory() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let shared = crate::backend::LocalBackend::new(dir.path().join("shared"));
    let deny = Arc::new(AtomicBool::new(true));
    let tries = Arc::new(AtomicUsize::new(0));
    let backend = DenyPacks {
        inner: shared.clone(),
        deny: deny.clone(),
        tries: tries.clone(),
    };
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(backend), "a").unwrap();
    a.pack_size = 2;
    let profile = empty_profile();
    for i in 0..7u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), Some(&profile))
            .unwrap();
        let held = a.unpacked.iter().filter(|u| u.committed.is_some()).count();
        assert!(held <= 4, "batch {i}: {held} held");
    }
    assert_eq!(a.unpacked.len(), 7);
    // tried at 2, 4 and 6 unpacked batches
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    deny.store(false, Ordering::SeqCst);
    a.commit(manifest("x7", 7, "f"), Some(&profile)).unwrap();
    assert!(a.unpacked.is_empty());
    assert_eq!(shared.list("history/packs/a").unwrap().len(), 4);
    let (counted, log) = Counting::new(shared.clone());
    assert_eq!(read_manifests_from(&counted).unwrap().len(), 8);
    assert_eq!(gets(&log.take(), "history/batches/"), 0);
    let rows = super::super::metric_packs::read_metrics(&counted).unwrap();
    assert_eq!(super::super::metric_packs::batch_ids(&rows).len(), 8);
    assert_eq!(gets(&log.take(), "history/metrics/"), 0);
}

/// A clean stop packs the rest (`pack_rest`): a replica that stops after
/// 5 batches with packs of 4 leaves a second pack of one, with its
/// summary and metrics, so a start reads no manifest one by one; the
/// next start with that name packs from the batch after it. And a batch
/// that two metric packs hold (a partial pack whose manifest pack failed,
/// then a full one over the same batches) is read once, from the first.
#[test]
fn a_clean_stop_packs_the_rest_and_a_batch_in_two_metric_packs_is_read_once() {
    use super::super::metric_packs::read_metrics;
    let dir = tempfile::tempdir().unwrap();
    let objects = crate::backend::LocalBackend::new(dir.path().join("shared"));
    let profile = empty_profile();
    let open = || {
        let mut h =
            History::open_shared(&dir.path().join("a"), Box::new(objects.clone()), "a").unwrap();
        h.pack_size = 4;
        h
    };
    let mut a = open();
    for i in 0..5u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), Some(&profile))
            .unwrap();
    }
    a.pack_rest();
    assert!(a.unpacked.is_empty());
    drop(a);
    let names = |folder: &str| -> Vec<String> {
        objects
            .list(folder)
            .unwrap()
            .iter()
            .map(|k| k.rsplit('/').next().unwrap().to_string())
            .collect()
    };
    let pack = |a: u64, b: u64, ext: &str| format!("{a:012}-{b:012}.{ext}");
    assert_eq!(
        names("history/packs/a"),
        [pack(0, 3, "json"), pack(4, 4, "json")]
    );
    assert_eq!(
        names("history/pack-summaries/a"),
        [pack(0, 3, "json"), pack(4, 4, "json")]
    );
    assert_eq!(
        names("history/metric-packs/a"),
        [pack(0, 3, "parquet"), pack(4, 4, "parquet")]
    );
    let (counted, log) = Counting::new(objects.clone());
    let mut a = History::open_shared(&dir.path().join("a"), Box::new(counted), "a").unwrap();
    assert_eq!(
        gets(&log.take(), "history/batches/"),
        0,
        "only the stream head"
    );
    assert!(a.unpacked.is_empty());
    a.pack_size = 4;
    for i in 5..9u64 {
        a.commit(manifest(&format!("x{i}"), i, "f"), Some(&profile))
            .unwrap();
    }
    drop(a);
    assert_eq!(names("history/packs/a")[2], pack(5, 8, "json"));

    // the partial pack of x4 again, as if a stop had packed x4..x5 in
    // metrics but failed before its manifest pack
    let rows_before = read_metrics(&objects).unwrap();
    let copy = objects
        .get(&format!("history/metric-packs/a/{}", pack(5, 8, "parquet")))
        .unwrap()
        .unwrap();
    objects
        .put(
            &format!("history/metric-packs/a/{}", pack(4, 6, "parquet")),
            &copy,
        )
        .unwrap();
    let rows_after = read_metrics(&objects).unwrap();
    let count = |rows: &[RecordBatch]| rows.iter().map(RecordBatch::num_rows).sum::<usize>();
    assert!(count(&rows_before) > 0);
    assert_eq!(count(&rows_after), count(&rows_before));
}
