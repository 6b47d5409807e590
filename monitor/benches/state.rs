//! State costs that must not grow with history: recording one more handled
//! file in the drop-folder checkpoint, and recording one more delivered
//! message in the audit log exactly once (`append_once`), each with 1,000
//! and with 100,000 entries already there. Flat means the two times of one
//! run are about equal (both are dominated by one fsync); compare them, not
//! absolutes.
//!
//! `cargo bench -p dqmon --bench state`

use std::hint::black_box;
use std::io::Write;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;

use dqmon::store::audit::{AUDIT_FILE, AuditEntry, AuditKind, AuditLog, GENESIS, HEAD_FILE, Head};
use dqmon::store::history::{Checkpoint, CheckpointEntry, History};

const SIZES: [u64; 2] = [1_000, 100_000];

fn entry(i: u64) -> CheckpointEntry {
    CheckpointEntry {
        size: i,
        mtime_ns: i as i128,
        input_sha256: format!("{i:064x}"),
        batch_id: format!("{i:032x}"),
    }
}

/// A valid audit chain of `n` `alert_sent` entries, written directly (the
/// API would fsync every one of them).
fn audit_log_of(dir: &Path, n: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(AUDIT_FILE)).unwrap());
    let mut prev = GENESIS.to_string();
    let mut len = 0u64;
    for seq in 0..n {
        let mut e = AuditEntry {
            seq,
            kind: AuditKind::AlertSent.as_str().to_string(),
            key: Some(format!("m{seq}")),
            at: "2026-12-01T00:00:00.000Z".into(),
            payload: json!({ "receiver": "mail" }),
            prev: prev.clone(),
            hash: String::new(),
        };
        e.hash = e.computed_hash();
        let mut line = serde_json::to_vec(&e).unwrap();
        line.push(b'\n');
        out.write_all(&line).unwrap();
        len += line.len() as u64;
        prev = e.hash;
    }
    out.flush().unwrap();
    let head = Head {
        entries: n,
        hash: prev,
        len,
    };
    std::fs::write(dir.join(HEAD_FILE), serde_json::to_vec(&head).unwrap()).unwrap();
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("checkpoint_one_more_file");
    g.sample_size(20);
    for n in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("drop");
        std::fs::create_dir_all(&folder).unwrap();
        let state = dir.path().join("state");
        let history = History::open(&state).unwrap();
        // every entry's file is still in the folder, as in a folder that
        // keeps its inputs
        for i in 0..n {
            std::fs::File::create(folder.join(format!("f{i}.parquet"))).unwrap();
        }
        let snapshot = Checkpoint {
            files: (0..n)
                .map(|i| (format!("f{i}.parquet"), entry(i)))
                .collect(),
            logged: 0,
        };
        std::fs::write(
            state.join("checkpoint.json"),
            serde_json::to_vec(&snapshot).unwrap(),
        )
        .unwrap();
        let mut cp = history.checkpoint().unwrap();
        let mut i = n;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                history
                    .record_checkpoint(&mut cp, &folder, &format!("new{i}.parquet"), entry(i))
                    .unwrap();
                black_box(cp.files.len())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("audit_append_once_one_more_message");
    g.sample_size(20);
    for n in SIZES {
        let dir = tempfile::tempdir().unwrap();
        audit_log_of(dir.path(), n);
        let log = AuditLog::open(dir.path()).unwrap();
        // the first call of a process reads the log once
        log.append_once(AuditKind::AlertSent, "warm-up", json!({}))
            .unwrap();
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                black_box(
                    log.append_once(AuditKind::AlertSent, &format!("new{i}"), json!({}))
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
