//! Profiling speed: decode + profile of a 1,000,000-row, 11-column Parquet
//! batch, on one thread and on every core, next to the bare decode of the
//! same file with the parquet crate on one thread (the floor). Compare the
//! numbers of one run, not absolutes.
//!
//! `cargo bench -p dqmon --bench profile` (set `DQMON_BENCH_ROWS` to change the size).

use std::fs::File;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use dqmon::decode::parquet::profile_file;
use dqmon::pii::PiiKey;
use dqmon_fixtures::{BatchSpec, Scenario, generate, write_parquet};

fn rules(dir: &Path) -> dqmon::config::model::Rules {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules/fixtures.yaml"
    ))
    .unwrap();
    dqmon::config::parse_rules(&text, dir, "fixtures.yaml").unwrap()
}

fn bench(c: &mut Criterion) {
    let rows: usize = std::env::var("DQMON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.parquet");
    let batch = generate(&BatchSpec {
        rows,
        seed: 1,
        batch_index: 0,
        scenario: Scenario::Clean,
    });
    write_parquet(&batch, &path).unwrap();
    drop(batch);
    let rules = rules(dir.path());
    let pii = PiiKey::from_bytes(b"bench-key-0123456789abcdef");

    let mut g = c.benchmark_group("profile_1m");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("decode_only_parquet_crate", |b| {
        b.iter(|| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                .unwrap()
                .with_batch_size(65_536)
                .build()
                .unwrap();
            let mut n = 0;
            for batch in reader {
                n += black_box(batch.unwrap()).num_rows();
            }
            assert_eq!(n, rows);
        })
    });
    // the file has 8 row groups (the fixture writer's 131,072 rows each):
    // one thread profiles them in turn, all cores side by side
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    g.bench_function("dqmon_decode_and_profile_one_thread", |b| {
        b.iter(|| {
            let p = one.install(|| profile_file(&path, &rules, &pii)).unwrap();
            assert_eq!(black_box(p).rows as usize, rows);
        })
    });
    g.bench_function("dqmon_decode_and_profile_all_cores", |b| {
        b.iter(|| {
            let p = profile_file(&path, &rules, &pii).unwrap();
            assert_eq!(black_box(p).rows as usize, rows);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
