//! Profile speed in memory, and what the rules' `slices:` and the
//! automatic `label_features` cost.
//!
//! A 1M-row batch of the fixture generator (11 columns, four trust tags),
//! already decoded into record batches of 8,192 rows (the Parquet
//! reader's size), profiled with
//! `rules/fixtures.yaml` twice in the same run: as shipped (two slice
//! columns, `country` and `device`, counted per value × tag) and with the
//! slices removed (so also without label features), and with the slices
//! removed and the label features automatic (as rules without `slices:`
//! get them: every declared column). The ratios to the second are the
//! price of slices and of the features on the
//! profile alone; against decode + profile (`cargo bench -p dqmon --bench
//! profile`) it is smaller still, since decoding is the same in both.
//!
//! `cargo bench -p dqmon-core --bench profile` (set `DQMON_BENCH_ROWS` to
//! change the size, `DQMON_BENCH_BATCH_ROWS` the record batches').

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use dqmon_core::pii::PiiKey;
use dqmon_core::profile::profile_batches;
use dqmon_fixtures::{BatchSpec, Scenario, generate};

fn bench(c: &mut Criterion) {
    let rows: usize = std::env::var("DQMON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../rules/fixtures.yaml"
    ))
    .unwrap();
    let sliced = dqmon_config::parse_rules(&text, Path::new("."), "fixtures.yaml").unwrap();
    assert!(
        !sliced.slices.is_empty(),
        "the fixture rules declare slices"
    );
    let mut plain = sliced.clone();
    plain.slices.clear();
    plain.slice_bins.clear();
    // the same rules as a user without `slices:` gets them: automatic label
    // features (every declared column; numeric ones in the default bins)
    let unsliced_text: String = text
        .lines()
        .filter(|l| !l.starts_with("slices:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let auto = dqmon_config::parse_rules(&unsliced_text, Path::new("."), "fixtures.yaml").unwrap();
    assert!(!auto.label_features.is_empty(), "automatic label features");
    let whole = generate(&BatchSpec {
        rows,
        seed: 1,
        batch_index: 0,
        scenario: Scenario::Clean,
    });
    let per: usize = std::env::var("DQMON_BENCH_BATCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_192);
    let batches: Vec<_> = (0..rows)
        .step_by(per)
        .map(|at| whole.slice(at, per.min(rows - at)))
        .collect();
    let pii = PiiKey::from_bytes(b"bench-key-0123456789abcdef");

    let mut g = c.benchmark_group("profile_in_memory");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("without_slices", |b| {
        b.iter(|| {
            let p = profile_batches(&plain, &pii, &batches).unwrap();
            assert_eq!(black_box(p).rows as usize, rows);
        })
    });
    g.bench_function("with_automatic_label_features", |b| {
        b.iter(|| {
            let p = profile_batches(&auto, &pii, &batches).unwrap();
            assert_eq!(black_box(p).rows as usize, rows);
        })
    });
    g.bench_function("with_two_slice_columns", |b| {
        b.iter(|| {
            let p = profile_batches(&sliced, &pii, &batches).unwrap();
            assert_eq!(black_box(p).rows as usize, rows);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
