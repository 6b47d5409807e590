//! The README's quickstart: `dqmon run --config rules/quickstart.yaml` on the
//! committed batches and approved baseline prints alerts for the poisoned
//! batches and none for the clean ones. `BLESS=1` regenerates the committed
//! quickstart files (deterministically); without it, a test checks that
//! they are what it would build.

use std::fs;
use std::path::Path;

use dqmon::baseline::{Baseline, BatchRef};
use dqmon::pii::PiiKey;
use dqmon::store::baselines::BaselineStore;
use dqmon_fixtures::{BatchSpec, Scenario, generate, write_parquet};

use crate::common::*;

const ROWS: usize = 4_000;
const SEED: u64 = 42;

/// Which quickstart batch carries which scenario.
fn drops() -> Vec<(&'static str, u64, Scenario)> {
    vec![
        ("2024-06-02T10.parquet", 30, Scenario::Clean),
        ("2024-06-02T11.parquet", 31, Scenario::Clean),
        (
            "2024-06-02T12.parquet",
            32,
            Scenario::LabelFlip {
                tag: "scraped".into(),
                strength: 0.2,
            },
        ),
        (
            "2024-06-02T13.parquet",
            33,
            Scenario::PlantedCategory {
                column: "merchant_category".into(),
                value: "mcc_9999".into(),
                share: 0.2,
                tag: Some("user_reported".into()),
            },
        ),
        ("2024-06-02T14.parquet", 34, Scenario::Clean),
    ]
}

/// Keep only the quickstart's columns, so the committed files stay small.
fn write_small(path: &Path, index: u64, scenario: Scenario) {
    let batch = generate(&BatchSpec {
        rows: ROWS,
        seed: SEED,
        batch_index: index,
        scenario,
    });
    let keep = [
        "event_time",
        "amount",
        "age",
        "country",
        "device",
        "merchant_category",
        "trust_tag",
        "label",
    ];
    let idx: Vec<usize> = keep
        .iter()
        .map(|c| batch.schema().index_of(c).unwrap())
        .collect();
    write_parquet(&batch.project(&idx).unwrap(), path).unwrap();
}

fn bless(root: &Path) {
    let q = root.join("fixtures/quickstart");
    let _ = fs::remove_dir_all(&q);
    build_quickstart(root, &q);
}

/// The quickstart's drop folder and approved baseline, built into `q`
/// from the fixture generator and `rules/quickstart.yaml`.
fn build_quickstart(root: &Path, q: &Path) {
    fs::create_dir_all(q.join("drop")).unwrap();
    for (name, index, scenario) in drops() {
        write_small(&q.join("drop").join(name), index, scenario);
    }
    let rules = dqmon::config::load(&root.join("rules/quickstart.yaml"))
        .unwrap()
        .datasets
        .remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let pii = PiiKey::from_bytes(b"quickstart has no pii columns");
    let mut profiles = Vec::new();
    let mut refs = Vec::new();
    for i in 0..12 {
        let p = tmp.path().join(format!("clean_{i:02}.parquet"));
        write_small(&p, i, Scenario::Clean);
        let prof = dqmon::decode::parquet::profile_file(&p, &rules, &pii).unwrap();
        refs.push(BatchRef {
            origin: format!("clean_{i:02}.parquet"),
            input_sha256: Some(dqmon::store::sha256_file(&p).unwrap()),
            rows: prof.rows,
        });
        profiles.push(prof);
    }
    let b = Baseline::build(&rules, &profiles, refs, "dqmon-quickstart").unwrap();
    let store = BaselineStore::new(q.join("baselines"));
    let id = store.save(&b).unwrap();
    store
        .approve(
            &id,
            "quickstart-approver",
            "2024-06-02T00:00:00Z",
            "12 clean hourly batches of 2024-06-01",
        )
        .unwrap();
}

/// The committed quickstart folder; with `BLESS=1`, rebuilt first, once
/// for both tests (the other waits, so neither reads a half-written one).
fn quickstart_fixtures(root: &Path) -> std::path::PathBuf {
    static BLESSED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BLESSED.get_or_init(|| {
        if std::env::var("BLESS").is_ok_and(|v| v == "1") {
            bless(root);
        }
    });
    root.join("fixtures/quickstart")
}

/// Every file under `dir`, by its path relative to `dir`.
fn files_under(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The committed quickstart files are what `BLESS=1` builds today, byte
/// for byte: the drop files (their hashes are the batch ids the README
/// quotes) and the approved baseline, whose profile follows the code's
/// profile format and sketches. A change to either, or to
/// `rules/quickstart.yaml`, fails here until the files are re-blessed
/// (`BLESS=1 tests/run quickstart`) and the README's quoted ids checked.
#[test]
fn committed_quickstart_files_are_what_bless_builds() {
    let root = repo_root();
    let fresh = tempfile::tempdir().unwrap();
    build_quickstart(&root, fresh.path());
    let want = files_under(fresh.path());
    let have = files_under(&quickstart_fixtures(&root));
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "fixtures/quickstart holds other files than BLESS=1 builds: re-bless"
    );
    for (path, bytes) in &want {
        assert!(
            have[path] == *bytes,
            "fixtures/quickstart/{path} is not what BLESS=1 builds today: re-bless \
             (BLESS=1 tests/run quickstart) and check the ids the README quotes"
        );
    }
}

#[test]
fn quickstart_prints_alerts_for_poisoned_batches_only() {
    let root = repo_root();
    let fixtures = quickstart_fixtures(&root);
    // the README command, with the state in a temp folder instead of ./state
    let dir = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(root.join("rules/quickstart.yaml")).unwrap();
    let text = text
        .replace(
            "path: ../fixtures/quickstart/drop",
            &format!("path: {}", fixtures.join("drop").display()),
        )
        .replace(
            "baseline_dir: ../fixtures/quickstart/baselines",
            &format!("baseline_dir: {}", fixtures.join("baselines").display()),
        )
        .replace(
            "state_dir: ../state",
            &format!("state_dir: {}", dir.path().join("state").display()),
        );
    let rules = dir.path().join("quickstart.yaml");
    fs::write(&rules, text).unwrap();
    let out = dqmon(&["run", "--config", rules.to_str().unwrap(), "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let alerts: Vec<&str> = printed.lines().filter(|l| l.starts_with("ALERT")).collect();
    assert!(
        alerts.iter().any(|l| l.contains("label_rate/label")
            && l.contains("tag=scraped")
            && l.contains("2024-06-02T12")),
        "{printed}"
    );
    assert!(
        alerts
            .iter()
            .any(|l| l.contains("merchant_category=mcc_9999")
                && l.contains("tag=user_reported")
                && l.contains("2024-06-02T13")),
        "{printed}"
    );
    for clean in ["2024-06-02T10", "2024-06-02T11", "2024-06-02T14"] {
        assert!(
            !alerts.iter().any(|l| l.contains(clean)),
            "clean batch {clean} alerted:\n{printed}"
        );
    }
    // the committed drop folder is left as it was
    assert_eq!(
        fs::read_dir(fixtures.join("drop")).unwrap().count(),
        drops().len()
    );
}
