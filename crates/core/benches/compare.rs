//! Compare speed: one 2,000-row batch (four trust tags, the fixture rules
//! with their slices) against a baseline of 20 such batches, with the
//! evidence of 16 earlier batches carried in, as the daemon compares every
//! batch; and the same in a fleet of 6 input streams, pooling the evidence
//! of 5 others. The target is well under 5 ms per batch.
//!
//! `cargo bench -p dqmon-core --bench compare` (builds only the core, the
//! rules loader and the generator: minutes, not the whole daemon).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

use dqmon_core::baseline::Baseline;
use dqmon_core::compare::{self, EvidenceState, Position, Reference};
use dqmon_core::pii::PiiKey;
use dqmon_core::profile::{BatchProfile, profile_batches};
use dqmon_fixtures::{BatchSpec, Scenario, generate};

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../rules/fixtures.yaml"
    ))
    .unwrap();
    let rules = dqmon_config::parse_rules(&text, Path::new("."), "fixtures.yaml").unwrap();
    let pii = PiiKey::from_bytes(b"bench");
    let profile = |i: u64| -> BatchProfile {
        let b = generate(&BatchSpec {
            rows: 2_000,
            seed: 3,
            batch_index: i,
            scenario: Scenario::Clean,
        });
        profile_batches(&rules, &pii, [&b]).unwrap()
    };
    let base: Vec<BatchProfile> = (0..20).map(profile).collect();
    let baseline = Baseline::build(&rules, &base, Vec::new(), "bench").unwrap();
    let reference = Reference::new(&baseline.profile, &rules);
    // evidence after 16 earlier batches
    let mut evidence = EvidenceState::default();
    for i in 0..16 {
        let id = format!("b{i}");
        let at = Position {
            prior: &evidence,
            siblings: &[],
            batch_id: &id,
            baseline_id: "bench",
        };
        evidence =
            compare::compare_sequential(&profile(100 + i), &reference, &baseline, &rules, at).1;
    }
    // a fleet: five sibling streams with evidence of 16 batches each (the
    // stream's own, under other batch ids: the same counts, as pooling
    // reads them)
    let siblings: Vec<EvidenceState> = (0..5)
        .map(|s| {
            let mut e = evidence.clone();
            for b in e.batches.iter_mut() {
                *b = format!("s{s}-{b}");
            }
            e
        })
        .collect();
    let sibling_refs: Vec<&EvidenceState> = siblings.iter().collect();
    let batch = profile(200);
    let cases: [(&str, &[&EvidenceState]); 2] = [
        (
            "compare 2,000-row batch with evidence pooled over 6 streams",
            &sibling_refs,
        ),
        ("compare 2,000-row batch with evidence", &[]),
    ];
    for (name, siblings) in cases {
        c.bench_function(name, |b| {
            b.iter(|| {
                let at = Position {
                    prior: &evidence,
                    siblings,
                    batch_id: "now",
                    baseline_id: "bench",
                };
                black_box(compare::compare_sequential(
                    black_box(&batch),
                    &reference,
                    &baseline,
                    &rules,
                    at,
                ))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
