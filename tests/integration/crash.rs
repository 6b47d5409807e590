//! Crash safety: SIGKILL the daemon at random points while files are being
//! dropped, restart it each time; every batch ends up in the history exactly
//! once and no alert id appears twice.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use dqmon_fixtures::Scenario;

use super::daemon::{Setup, unsafe_kill};

/// A small deterministic generator for kill delays (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let s = Setup::new();
    const FILES: u64 = 24;
    // pre-generate the batches so that dropping is just a rename
    let staged: Vec<(String, std::path::PathBuf)> = (0..FILES)
        .map(|i| {
            let scenario = if i % 4 == 3 {
                Scenario::LabelFlip {
                    tag: "scraped".into(),
                    strength: 0.2,
                }
            } else {
                Scenario::Clean
            };
            let name = format!("batch_{i:03}.parquet");
            let path = s.dir.path().join(format!("{name}.staged"));
            crate::common::write_batch(&path, super::daemon::ROWS, 200 + i, scenario);
            (name, path)
        })
        .collect();
    let drop = s.drop.clone();
    let producer = std::thread::spawn(move || {
        for (name, path) in staged {
            std::fs::rename(&path, drop.join(&name)).unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
    });

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut kills = 0;
    while kills < 12 || !producer.is_finished() {
        let mut child = s.spawn(&[]);
        std::thread::sleep(Duration::from_millis(150 + rng.next() % 600));
        unsafe_kill(child.id(), "KILL");
        let _ = child.wait();
        kills += 1;
    }
    producer.join().unwrap();
    assert!(kills >= 10);

    // drain what is left, then check
    let out = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifests = s.manifests();
    let mut per_source: BTreeMap<String, usize> = BTreeMap::new();
    for m in &manifests {
        assert_eq!(m["status"], "processed", "{m}");
        *per_source
            .entry(m["source"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_source.len() as u64, FILES, "{per_source:#?}");
    assert!(per_source.values().all(|&n| n == 1), "{per_source:#?}");
    let alerts = s.alerts();
    let ids: HashSet<_> = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), alerts.len(), "duplicate alert ids");
    // every committed alert is in the alerts file
    let committed: usize = manifests
        .iter()
        .map(|m| m["alerts"].as_array().unwrap().len())
        .sum();
    assert_eq!(committed, alerts.len());
    assert!(
        alerts.len() >= (FILES / 4) as usize,
        "the label flips were alerted"
    );
    // no orphan profile or metrics file
    let metrics = std::fs::read_dir(s.state.join("history/metrics"))
        .unwrap()
        .count();
    assert_eq!(metrics as u64, FILES);
}
