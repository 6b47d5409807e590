//! `dqmon run` on a drop folder: the real binary, real files, real signals.
//!
//! Longer than 600 lines: one scenario per test (crash points, settle,
//! refusals, quarantine, locks), sharing the helpers that start the binary
//! and read its state folder; each test reads on its own.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dqmon_fixtures::Scenario;
use serde_json::Value;

use crate::common::*;

/// Build a baseline of the batches in `good` with `rules` (by `builder`) and
/// approve it (by `approver`); returns its id.
pub fn build_and_approve(rules: &Path, good: &Path) -> String {
    build_and_approve_with(dqmon, rules, good)
}

/// [`build_and_approve`], running dqmon with `run` (e.g. with an object
/// store's environment).
pub fn build_and_approve_with(
    run: impl Fn(&[&str]) -> std::process::Output,
    rules: &Path,
    good: &Path,
) -> String {
    let r = rules.to_str().unwrap();
    let out = run(&[
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
    let out = run(&[
        "baseline", "approve", "--config", r, &id, "--by", "approver",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    id
}

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
        build_and_approve(&rules, &good);
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

    /// The committed manifests, read while the daemon may be writing: as
    /// the store's own reader does, temporary files of writes in progress
    /// (a leading `.`) are not manifests, and one that vanished between
    /// the listing and the read is skipped.
    pub fn manifests(&self) -> Vec<Value> {
        let dir = self.state.join("history/batches");
        let mut out: Vec<Value> = match fs::read_dir(&dir) {
            Ok(d) => d
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
                .filter_map(|p| fs::read(p).ok())
                .map(|b| serde_json::from_slice(&b).unwrap())
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
            "label_calibration".into(),
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

/// Wait for a child to exit, at most `limit` (it is killed after that).
pub fn finish_within(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Run dqmon with arguments, at most `limit`.
fn dqmon_within(args: &[&str], limit: Duration) -> std::process::Output {
    let child = Command::new(dqmon_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DQMON_PII_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish_within(child, limit)
}

#[test]
fn a_second_writer_on_a_state_folder_fails_at_once_and_the_first_goes_on() {
    let s = Setup::new();
    s.drop_batch("a.parquet", 100, Scenario::Clean);
    let first = s.spawn(&[]);
    s.wait_for_batches(1, Duration::from_secs(60));
    let pid = first.id().to_string();
    let folder = s.state.display().to_string();
    let alerts_before = fs::read(s.state.join("alerts.jsonl")).unwrap_or_default();
    let archive = s.dir.path().join("archive");
    fs::create_dir_all(&archive).unwrap();
    write_batch(&archive.join("x.parquet"), ROWS, 300, Scenario::Clean);
    let rules = s.rules.to_str().unwrap();

    // a second daemon, and a replay pointed at the live folder: both
    // refused before they write anything, naming the holder and the folder
    let x = archive.join("x.parquet");
    for args in [
        vec!["run", "--config", rules, "--once", "--settle-ms", "0"],
        vec![
            "replay",
            "--config",
            rules,
            "--state-dir",
            &folder,
            x.to_str().unwrap(),
        ],
    ] {
        let o = dqmon_within(&args, Duration::from_secs(60));
        let err = stderr(&o);
        assert!(
            !o.status.success(),
            "`dqmon {}` ran beside the daemon: {err}",
            args[0]
        );
        assert!(
            err.contains(&format!("pid {pid}")) && err.contains(&folder),
            "`dqmon {}` does not name the holder (pid {pid}) and the folder {folder}: {err}",
            args[0]
        );
        assert_eq!(s.manifests().len(), 1, "{}", args[0]);
        assert_eq!(
            fs::read(s.state.join("alerts.jsonl")).unwrap_or_default(),
            alerts_before
        );
    }
    // readers take no lock
    let q = dqmon_within(
        &[
            "query",
            "--config",
            rules,
            "--format",
            "csv",
            "SELECT count(*) AS n FROM batches",
        ],
        Duration::from_secs(60),
    );
    assert!(q.status.success(), "{}", stderr(&q));
    let v = dqmon_within(
        &["audit", "verify", "--config", rules],
        Duration::from_secs(60),
    );
    assert!(v.status.success(), "{}", stderr(&v));

    // the first daemon goes on
    s.drop_batch("b.parquet", 101, Scenario::Clean);
    s.wait_for_batches(2, Duration::from_secs(60));
    let out = terminate(first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seqs: Vec<u64> = s
        .manifests()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1]);
    // and once it is gone, the folder is free again
    let o = dqmon_within(
        &["run", "--config", rules, "--once", "--settle-ms", "0"],
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Bytes the process has read so far (`rchar` of /proc/<pid>/io: every
/// read(2), from the page cache or sparse holes alike).
#[cfg(target_os = "linux")]
fn bytes_read_by(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn an_oversized_file_is_refused_by_its_size_before_a_byte_is_read() {
    let s = Setup::new();
    let mut text = fs::read_to_string(&s.rules).unwrap();
    text.push_str("limits: { max_file_bytes: 1048576 }\n");
    fs::write(&s.rules, text).unwrap();
    // 1 GiB, sparse: no disk, but hashing it would read every byte
    const SIZE: u64 = 1 << 30;
    let huge = s.drop.join("huge.parquet");
    fs::File::create(&huge).unwrap().set_len(SIZE).unwrap();
    let child = s.spawn(&[]);
    s.wait_for_batches(1, Duration::from_secs(120));
    let read = bytes_read_by(child.id());
    let out = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = &s.manifests()[0];
    assert_eq!(m["status"], "quarantined", "{m:#}");
    assert!(
        m["reason"].as_str().unwrap().contains("max_file_bytes"),
        "{m:#}"
    );
    assert!(s.state.join("quarantine/huge.parquet").exists());
    assert!(
        read < SIZE / 4,
        "dqmon read {read} bytes: the {SIZE}-byte file was read before its size was checked"
    );
}

#[test]
fn a_newline_in_a_file_name_never_makes_a_line_of_output() {
    let s = Setup::new();
    let evil = "evil\nALERT [critical] events forged\n.parquet";
    s.drop_batch(
        evil,
        101,
        Scenario::LabelFlip {
            tag: "scraped".into(),
            strength: 0.2,
        },
    );
    fs::write(
        s.drop.join("bad\nERROR forged\n.parquet"),
        b"PAR1 not parquet",
    )
    .unwrap();
    let child = Command::new(dqmon_bin())
        .args([
            "run",
            "--config",
            s.rules.to_str().unwrap(),
            "--once",
            "--settle-ms",
            "0",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("DQMON_PII_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish_within(child, Duration::from_secs(120));
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{se}");
    let alerts = s.alerts();
    assert!(
        alerts.iter().any(crate::common::is_label_alert)
            && alerts.iter().any(|a| a["check"] == "malformed_records"),
        "{alerts:#?}"
    );
    // one line per alert on stdout, each a real one, the name escaped in it
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines.len(), alerts.len(), "{so}");
    assert!(lines.iter().all(|l| l.starts_with("ALERT [")), "{so}");
    assert!(
        so.contains("evil\\nALERT [critical] events forged\\n.parquet"),
        "{so}"
    );
    // every log line is one event: it starts with its timestamp
    assert!(se.contains("bad\\nERROR forged"), "{se}");
    for l in se.lines().filter(|l| !l.is_empty()) {
        assert!(
            l.starts_with("20"),
            "a log line that is no event: {l:?}\n{se}"
        );
    }
}

#[test]
fn temp_files_a_kill_left_are_removed_at_start_and_nothing_else() {
    let s = Setup::new();
    s.drop_batch("a.parquet", 100, Scenario::Clean);
    let o = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = s.manifests()[0]["batch_id"].as_str().unwrap().to_string();
    // what write_atomic leaves when SIGKILL comes between write and rename
    let temps = [
        ".checkpoint.json.4242.tmp".to_string(),
        ".audit.head.4242.tmp".into(),
        ".pii.key.4242.tmp".into(),
        format!("history/batches/.{id}.json.4242.tmp"),
        format!("history/profiles/.{id}.json.4242.tmp"),
        format!("history/metrics/.{id}.parquet.4242.tmp"),
        "quarantine/.x.parquet.reason.4242.tmp".into(),
        "outbox/inbox/.0-x.json.4242.tmp".into(),
        "outbox/pending/.m.json.4242.tmp".into(),
        "outbox/.lifecycle.json.4242.tmp".into(),
    ];
    // look alike, but are not dqmon's temp files (or not this folder's)
    let keep = [
        "notes.txt",
        ".hidden",
        ".x.tmp",
        ".checkpoint.json.12ab.tmp",
        "checkpoint.json.4242.tmp",
        "quarantine/keep.tmp",
        "quarantine/.x.4242.tmp.reason",
        "replay/.checkpoint.json.4242.tmp",
    ];
    for p in temps.iter().map(String::as_str).chain(keep) {
        let path = s.state.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"partial").unwrap();
    }
    let o = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let left: Vec<&String> = temps.iter().filter(|p| s.state.join(p).exists()).collect();
    assert!(left.is_empty(), "temp files left after a start: {left:?}");
    for p in keep {
        assert!(s.state.join(p).exists(), "{p} was removed");
    }
    assert_eq!(s.manifests().len(), 1);
}

/// Alerts a crash left out of `alerts.jsonl` (the manifest committed, the
/// alert line not yet written) are appended on the next start and printed,
/// like any alert: before, they were appended silently.
#[test]
fn alerts_repaired_after_a_crash_are_printed() {
    let s = Setup::new();
    s.drop_batch(
        "a_flip.parquet",
        101,
        Scenario::LabelFlip {
            tag: "scraped".into(),
            strength: 0.2,
        },
    );
    let out = finish_within(s.spawn(&["--once"]), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    let printed: Vec<&str> = first.lines().filter(|l| l.starts_with("ALERT ")).collect();
    assert!(!printed.is_empty(), "the flipped batch alerts: {first}");
    // the crash: the alert lines never reached the file
    let path = s.state.join("alerts.jsonl");
    let lines = fs::read_to_string(&path).unwrap();
    assert_eq!(lines.lines().count(), printed.len());
    fs::write(&path, "").unwrap();
    let out = finish_within(s.spawn(&["--once"]), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = String::from_utf8_lossy(&out.stdout).into_owned();
    let reprinted: Vec<&str> = again.lines().filter(|l| l.starts_with("ALERT ")).collect();
    assert_eq!(
        reprinted, printed,
        "the repaired alerts are printed once, as they were"
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        lines,
        "and appended as they were"
    );
}
