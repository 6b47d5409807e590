//! What one batch costs the history, measured on a real `dqmon run`: the
//! bytes of its manifest, profile and metrics (the three objects a commit
//! writes, so three requests on an object store), for small and larger
//! batches of the fixture feed (11 columns, four trust tags), and of the
//! manifest's summary (what a replica's start reads). The README's
//! capacity section quotes this table (`BLESS=1 cargo test capacity`
//! rewrites it) and extrapolates from it.

use std::fs;
use std::path::Path;

use dqmon::store::history::{BatchSummary, Manifest};
use dqmon_fixtures::Scenario;

use crate::common::*;
use crate::daemon::build_and_approve;

/// Bytes of one file, 0 when it is missing.
fn size(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn history_bytes_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let rules = fixture_rules(dir.path());
    let mut text = fs::read_to_string(&rules).unwrap();
    text.push_str("source:\n  parquet_drop:\n    path: drop\n");
    fs::write(&rules, text).unwrap();
    let good = dir.path().join("good");
    fs::create_dir_all(&good).unwrap();
    for i in 0..6 {
        write_batch(
            &good.join(format!("b{i}.parquet")),
            2_000,
            i,
            Scenario::Clean,
        );
    }
    build_and_approve(&rules, &good);
    let drop = dir.path().join("drop");
    fs::create_dir_all(&drop).unwrap();
    let sizes = [2_000usize, 20_000, 200_000];
    for (i, &rows) in sizes.iter().enumerate() {
        for j in 0..2u64 {
            let index = 100 + 10 * i as u64 + j;
            write_batch(
                &drop.join(format!("rows{rows:06}-{j}.parquet")),
                rows,
                index,
                Scenario::Clean,
            );
        }
    }
    let out = dqmon(&[
        "run",
        "--once",
        "--settle-ms",
        "0",
        "--config",
        rules.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let state = dir.path().join("state/events/history");
    let mut table = String::from(
        "| rows per batch | input Parquet | manifest | its summary (what a start reads) | profile | metrics | history per batch | history per million rows |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &rows in &sizes {
        // the mean of the two batches of this size
        let mut sums = [0u64; 6];
        let mut n = 0;
        for e in fs::read_dir(state.join("batches")).unwrap() {
            let path = e.unwrap().path();
            let m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            if m["rows"].as_u64() != Some(rows as u64) {
                continue;
            }
            assert_eq!(m["status"], "processed", "{m}");
            let id = m["batch_id"].as_str().unwrap();
            let manifest: Manifest = serde_json::from_value(m.clone()).unwrap();
            let summary = serde_json::to_vec(&BatchSummary::from(&manifest)).unwrap();
            let parts = [
                m["input_bytes"].as_u64().unwrap(),
                size(&path),
                summary.len() as u64,
                size(&state.join(format!("profiles/{id}.json"))),
                size(&state.join(format!("metrics/{id}.parquet"))),
            ];
            assert!(parts.iter().all(|&b| b > 0), "{parts:?}");
            for (s, p) in sums.iter_mut().zip(parts) {
                *s += p;
            }
            sums[5] += parts[1] + parts[3] + parts[4];
            n += 1;
        }
        assert_eq!(n, 2, "two committed batches of {rows} rows");
        let kib = |b: u64| format!("{:.0} KiB", b as f64 / n as f64 / 1024.0);
        let bytes = |b: u64| format!("{:.0} B", b as f64 / n as f64);
        let per_million = sums[5] as f64 / n as f64 / rows as f64 * 1e6 / (1024.0 * 1024.0);
        table.push_str(&format!(
            "| {rows} | {} | {} | {} | {} | {} | {} | {per_million:.1} MiB |\n",
            kib(sums[0]),
            kib(sums[1]),
            bytes(sums[2]),
            kib(sums[3]),
            kib(sums[4]),
            kib(sums[5]),
        ));
    }
    readme_section(
        "capacity_storage.md",
        "<!-- capacity-storage:begin (written by BLESS=1 cargo test capacity) -->",
        "<!-- capacity-storage:end -->",
        &table,
        "`BLESS=1 tests/run capacity`",
    );
}
