//! `dqmon run` on a drop folder: the real binary, real files, real signals.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dqmon::fixtures::Scenario;
use serde_json::Value;

use crate::common::*;

/// A temp folder with rules, a drop folder and an approved baseline.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub rules: PathBuf,
    pub drop: PathBuf,
    pub state: PathBuf,
}

pub const ROWS: usize = 4_000;

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let rules = fixture_rules(dir.path());
        let mut text = fs::read_to_string(&rules).unwrap();
        text.push_str("source:\n  parquet_drop:\n    path: drop\n    poll_interval_ms: 100\n");
        fs::write(&rules, text).unwrap();
        let good = dir.path().join("good");
        fs::create_dir_all(&good).unwrap();
        for i in 0..8 {
            write_batch(
                &good.join(format!("b{i}.parquet")),
                ROWS,
                i,
                Scenario::Clean,
            );
        }
        let r = rules.to_str().unwrap();
        let out = dqmon(&[
            "baseline",
            "build",
            "--config",
            r,
            "--by",
            "builder",
            good.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id = stdout(&out).trim().to_string();
        let out = dqmon(&[
            "baseline", "approve", "--config", r, &id, "--by", "approver",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let drop = dir.path().join("drop");
        fs::create_dir_all(&drop).unwrap();
        let state = dir.path().join("state/events");
        Setup {
            dir,
            rules,
            drop,
            state,
        }
    }

    pub fn spawn(&self, extra: &[&str]) -> Child {
        Command::new(dqmon_bin())
            .args([
                "run",
                "--config",
                self.rules.to_str().unwrap(),
                "--settle-ms",
                "200",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("DQMON_PII_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Write a batch into the drop folder the usual way: temp name, then rename.
    pub fn drop_batch(&self, name: &str, index: u64, scenario: Scenario) -> PathBuf {
        let tmp = self.dir.path().join(format!("{name}.staging"));
        write_batch(&tmp, ROWS, index, scenario);
        let target = self.drop.join(name);
        fs::rename(&tmp, &target).unwrap();
        target
    }

    pub fn alerts(&self) -> Vec<Value> {
        match fs::read_to_string(self.state.join("alerts.jsonl")) {
            Ok(t) => t
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn manifests(&self) -> Vec<Value> {
        let dir = self.state.join("history/batches");
        let mut out: Vec<Value> = match fs::read_dir(&dir) {
            Ok(d) => d
                .map(|e| serde_json::from_slice(&fs::read(e.unwrap().path()).unwrap()).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort_by_key(|m: &Value| m["seq"].as_u64());
        out
    }

    /// Wait until `n` batches are in the history.
    pub fn wait_for_batches(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        while self.manifests().len() < n {
            assert!(
                start.elapsed() < timeout,
                "only {} of {n} batches after {timeout:?}",
                self.manifests().len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn terminate(mut child: Child) -> std::process::Output {
    unsafe_kill(child.id(), "TERM");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "dqmon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Send a signal ("TERM" or "KILL") to a process.
pub fn unsafe_kill(pid: u32, signal: &str) {
    let sig = match signal {
        "KILL" => libc::SIGKILL,
        _ => libc::SIGTERM,
    };
    // SAFETY: kill(2) on a child process id we spawned; no memory is touched.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn by_source(alerts: &[Value]) -> BTreeMap<String, Vec<(String, String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for a in alerts {
        let src = Path::new(a["source"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.entry(src).or_default().push((
            a["check"].as_str().unwrap().to_string(),
            a["trust_tag"].as_str().unwrap().to_string(),
            a["verdict"].as_str().unwrap().to_string(),
        ));
    }
    out
}

#[test]
fn daemon_alerts_on_poisoned_files_only() {
    let s = Setup::new();
    // one file present before start
    s.drop_batch("a_clean.parquet", 100, Scenario::Clean);
    let child = s.spawn(&[]);
    s.wait_for_batches(1, Duration::from_secs(30));

    // renamed into place
    s.drop_batch(
        "b_flip.parquet",
        101,
        Scenario::LabelFlip {
            tag: "scraped".into(),
            strength: 0.2,
        },
    );
    // written slowly in place: must not be read before it is complete
    let tmp = s.dir.path().join("slow.bytes");
    write_batch(
        &tmp,
        ROWS,
        102,
        Scenario::PlantedCategory {
            column: "merchant_category".into(),
            value: "mcc_9999".into(),
            share: 0.2,
            tag: Some("user_reported".into()),
        },
    );
    let bytes = fs::read(&tmp).unwrap();
    let mut f = fs::File::create(s.drop.join("c_planted.parquet")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 8 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(120));
    }
    drop(f);
    s.drop_batch("d_clean.parquet", 103, Scenario::Clean);
    s.wait_for_batches(4, Duration::from_secs(30));
    let out = terminate(child);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // nothing quarantined: the slow file was read only once complete
    let manifests = s.manifests();
    assert!(
        manifests.iter().all(|m| m["status"] == "processed"),
        "{manifests:#?}"
    );
    let alerts = s.alerts();
    let got = by_source(&alerts);
    assert!(
        !got.contains_key("a_clean.parquet") && !got.contains_key("d_clean.parquet"),
        "{got:#?}"
    );
    assert!(
        got["b_flip.parquet"].contains(&(
            "label_rate".into(),
            "scraped".into(),
            "possible_poisoning".into()
        )),
        "{got:#?}"
    );
    assert!(
        got["c_planted.parquet"]
            .iter()
            .any(|(c, t, v)| (c.starts_with("top_") || c == "unseen_values")
                && t == "user_reported"
                && v == "possible_poisoning"),
        "{got:#?}"
    );
    // every alert carries the documented fields
    for a in &alerts {
        for k in [
            "alert_id",
            "fingerprint",
            "dataset",
            "batch_id",
            "source",
            "input_sha256",
            "check",
            "column",
            "trust_tag",
            "baseline_id",
            "baseline_value",
            "observed_value",
            "statistic",
            "threshold",
            "p_value",
            "effect_size",
            "severity",
            "verdict",
            "message",
        ] {
            assert!(a.get(k).is_some(), "alert lacks `{k}`: {a}");
        }
    }
    // printed to stdout too
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.lines().filter(|l| l.starts_with("ALERT")).count(),
        alerts.len(),
        "{printed}"
    );
    // the metrics history is there, one Parquet file per processed batch
    let metrics = fs::read_dir(s.state.join("history/metrics"))
        .unwrap()
        .count();
    assert_eq!(metrics, 4);
}

#[test]
fn restarts_touches_and_replays_never_double_count() {
    let s = Setup::new();
    let a = s.drop_batch("a.parquet", 100, Scenario::Clean);
    s.drop_batch(
        "b.parquet",
        101,
        Scenario::LabelFlip {
            tag: "scraped".into(),
            strength: 0.2,
        },
    );
    let out = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.manifests().len(), 2);
    let alerts_before = s.alerts().len();
    assert!(alerts_before >= 1);

    // restart: nothing new
    let out = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(s.manifests().len(), 2);
    assert_eq!(s.alerts().len(), alerts_before);

    // touch a file (new mtime, same bytes): not processed again
    let bytes = fs::read(&a).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&a, &bytes).unwrap();
    // the same bytes under another name: a replayed batch, itself a finding
    fs::write(s.drop.join("a_again.parquet"), &bytes).unwrap();
    let out = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(out.status.success());
    let manifests = s.manifests();
    assert_eq!(manifests.len(), 3, "{manifests:#?}");
    assert_eq!(manifests[2]["status"], "replayed");
    let alerts = s.alerts();
    assert_eq!(alerts.len(), alerts_before + 1);
    assert_eq!(alerts.last().unwrap()["check"], "replayed_batch");
    let ids: HashSet<_> = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), alerts.len());
}

#[test]
fn bad_inputs_are_quarantined_with_reasons_and_good_files_go_on() {
    let s = Setup::new();
    let good = s.dir.path().join("good.bytes");
    write_batch(&good, ROWS, 100, Scenario::Clean);
    let bytes = fs::read(&good).unwrap();
    fs::write(s.drop.join("empty.parquet"), b"").unwrap();
    fs::write(s.drop.join("text.parquet"), b"id,amount\n1,2\n").unwrap();
    fs::write(s.drop.join("truncated.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 3;
    for b in &mut corrupt[mid..mid + 2000] {
        *b ^= 0x5a;
    }
    fs::write(s.drop.join("corrupt.parquet"), &corrupt).unwrap();
    // schema violation: `age` holds text
    {
        use arrow::array::{ArrayRef, RecordBatch, StringArray};
        use std::sync::Arc;
        let b = RecordBatch::try_from_iter([(
            "age",
            Arc::new(StringArray::from(vec!["old", "young"])) as ArrayRef,
        )])
        .unwrap();
        let f = fs::File::create(s.drop.join("schema.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }
    fs::write(s.drop.join("zz_good.parquet"), &bytes).unwrap();

    let out = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = s.state.join("quarantine");
    for (name, needle) in [
        ("empty.parquet", "empty"),
        ("text.parquet", "not a readable Parquet"),
        ("truncated.parquet", "Parquet"),
        ("corrupt.parquet", "corrupt"),
        ("schema.parquet", "age"),
    ] {
        assert!(q.join(name).exists(), "{name} not quarantined");
        assert!(
            !s.drop.join(name).exists(),
            "{name} still in the drop folder"
        );
        let reason = fs::read_to_string(q.join(format!("{name}.reason"))).unwrap();
        assert!(reason.contains(needle), "{name}: {reason}");
    }
    let manifests = s.manifests();
    let processed: Vec<_> = manifests
        .iter()
        .filter(|m| m["status"] == "processed")
        .collect();
    assert_eq!(processed.len(), 1);
    assert!(
        processed[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("zz_good.parquet")
    );
    let malformed = s
        .alerts()
        .iter()
        .filter(|a| a["check"] == "malformed_records")
        .count();
    assert_eq!(malformed, 5);
}

#[test]
fn input_limits_quarantine_oversized_files() {
    let s = Setup::new();
    let mut text = fs::read_to_string(&s.rules).unwrap();
    text.push_str("limits: { max_rows: 3000, max_string_len: 100000 }\n");
    fs::write(&s.rules, text).unwrap();
    s.drop_batch("big.parquet", 100, Scenario::Clean); // 4,000 rows > 3,000
    let out = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reason = fs::read_to_string(s.state.join("quarantine/big.parquet.reason")).unwrap();
    assert!(reason.contains("max_rows"), "{reason}");

    let mut text = fs::read_to_string(&s.rules).unwrap();
    text = text.replace(
        "max_rows: 3000, max_string_len: 100000",
        "max_rows: 100000, max_string_len: 10",
    );
    fs::write(&s.rules, text).unwrap();
    s.drop_batch("long_strings.parquet", 101, Scenario::Clean); // free_text is longer than 10 bytes
    let out = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reason =
        fs::read_to_string(s.state.join("quarantine/long_strings.parquet.reason")).unwrap();
    assert!(reason.contains("max_string_len"), "{reason}");
}
