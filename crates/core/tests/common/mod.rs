//! What the core's tests on generated batches share: the shipped fixture
//! rules, 2,000-row batches of the generator, and a baseline of 20 clean
//! ones.

use std::path::Path;

use arrow::array::RecordBatch;

use dqmon_core::baseline::Baseline;
use dqmon_core::pii::PiiKey;
use dqmon_core::profile::{BatchProfile, profile_batches};
use dqmon_core::rules::Rules;
use dqmon_fixtures::{BatchSpec, Scenario, generate};

/// `rules/fixtures.yaml`, as the daemon loads it.
pub fn rules() -> Rules {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../rules/fixtures.yaml"
    ))
    .unwrap();
    dqmon_config::parse_rules(&text, Path::new("."), "fixtures.yaml").unwrap()
}

/// Batch `i` of the stream `seed`: 2,000 rows over four trust tags.
pub fn batch(seed: u64, i: u64, scenario: Scenario) -> RecordBatch {
    generate(&BatchSpec {
        rows: 2_000,
        seed,
        batch_index: i,
        scenario,
    })
}

/// A baseline of the stream's first 20 clean batches.
pub fn baseline(rules: &Rules, pii: &PiiKey, seed: u64) -> Baseline {
    let base: Vec<BatchProfile> = (0..20)
        .map(|i| profile_batches(rules, pii, [&batch(seed, i, Scenario::Clean)]).unwrap())
        .collect();
    Baseline::build(rules, &base, Vec::new(), "t").unwrap()
}
