//! `dqmon run` as a service: /metrics counts what was processed, /readyz
//! follows the state folder, SIGHUP reloads a valid config and refuses an
//! invalid one. The real binary, a real socket, real signals.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dqmon::fixtures::Scenario;
use serde_json::Value;

use crate::common::*;
use crate::daemon::{Setup, terminate};

/// Generous: the machine is small and shared.
const WAIT: Duration = Duration::from_secs(90);

/// A daemon with its listener on a free loopback port and JSON logs.
struct Service {
    child: Option<Child>,
    addr: SocketAddr,
    /// stderr log lines (JSON), as they come.
    logs: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Service {
    fn start(s: &Setup) -> Service {
        Service::start_with_log_filter(s, "info")
    }

    fn start_with_log_filter(s: &Setup, rust_log: &str) -> Service {
        let mut child = Command::new(dqmon_bin())
            .args([
                "--log-format",
                "json",
                "run",
                "--config",
                s.rules.to_str().unwrap(),
                "--settle-ms",
                "200",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", rust_log)
            .env_remove("DQMON_PII_KEY")
            .env_remove("DQMON_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("a log line is not JSON ({e}) although --log-format json: {line}")
                });
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut svc = Service {
            child: Some(child),
            addr: "127.0.0.1:1".parse().unwrap(),
            logs: rx,
            seen: Vec::new(),
        };
        let line = svc.wait_log(|l| l["fields"]["address"].is_string());
        svc.addr = line["fields"]["address"].as_str().unwrap().parse().unwrap();
        svc
    }

    /// Wait for a log line matching `pred`; keeps every line seen.
    fn wait_log(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let start = Instant::now();
        loop {
            let left = WAIT.saturating_sub(start.elapsed());
            match self.logs.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no matching log line after {WAIT:?}; lines seen:\n{:#?}",
                    self.seen
                ),
            }
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Poll until `cond` holds on the metrics text; returns that text.
    fn wait_metrics(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.metrics();
            if cond(&text) {
                return text;
            }
            assert!(
                start.elapsed() < WAIT,
                "{what}: not seen in /metrics after {WAIT:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll /readyz until its status is `want`; returns the body.
    fn wait_ready(&self, want: u16) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.get("/readyz");
            if status == want {
                return serde_json::from_str(&body).unwrap();
            }
            assert!(
                start.elapsed() < WAIT,
                "/readyz still {status} (want {want}) after {WAIT:?}: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: kill(2) on a child process id we spawned; no memory is touched.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }

    fn assert_running(&mut self) {
        let child = self.child.as_mut().unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "dqmon exited; logs:\n{:#?}",
            self.seen
        );
    }

    fn stop(mut self) {
        let out = terminate(self.child.take().unwrap());
        assert!(out.status.success(), "dqmon run failed: {:?}", out.status);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP/1.1 GET (the listener answers with a Content-Length body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, body.to_string())
}

/// The value of one series, e.g. `dqmon_rows_total{dataset="events",trust_tag="vendor"}`.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Sum of a metric's series whose labels include every `(label, value)`.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_count_what_was_processed() {
    let s = Setup::new();
    let mut svc = Service::start(&s);
    svc.wait_ready(200);

    // Before any batch: the dataset's series exist at zero, the baseline is named.
    let text = svc.metrics();
    assert_eq!(
        series(
            &text,
            r#"dqmon_batches_total{dataset="events",status="processed"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(&text, r#"dqmon_outbox_depth{dataset="events"}"#),
        Some(0.0)
    );
    let baseline_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("dqmon_baseline_info{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(baseline_lines.len(), 1, "{text}");

    s.drop_batch("a_clean.parquet", 100, Scenario::Clean);
    s.drop_batch(
        "b_flip.parquet",
        101,
        Scenario::LabelFlip {
            tag: "scraped".into(),
            strength: 0.2,
        },
    );
    std::fs::write(s.drop.join("c_broken.parquet"), b"PAR1 this is not parquet").unwrap();
    s.wait_for_batches(3, WAIT);
    let text = svc.wait_metrics("three committed batches", |t| {
        sum(t, "dqmon_batches_total", &[("dataset", "events")]) == 3.0
    });

    // Everything /metrics says, recomputed from the history and the alerts file.
    let manifests = s.manifests();
    let status_count = |st: &str| manifests.iter().filter(|m| m["status"] == st).count() as f64;
    for st in ["processed", "quarantined", "replayed"] {
        let labels = format!(r#"dqmon_batches_total{{dataset="events",status="{st}"}}"#);
        assert_eq!(series(&text, &labels), Some(status_count(st)), "{st}");
    }
    assert_eq!(status_count("processed"), 2.0);
    assert_eq!(
        series(&text, r#"dqmon_quarantined_total{dataset="events"}"#),
        Some(1.0)
    );

    let mut rows: BTreeMap<String, f64> = BTreeMap::new();
    let mut findings: BTreeMap<(String, String), f64> = BTreeMap::new();
    for m in &manifests {
        for (tag, n) in m["rows_by_tag"].as_object().unwrap() {
            *rows.entry(tag.clone()).or_default() += n.as_f64().unwrap();
        }
        for f in m["findings"].as_array().unwrap() {
            let key = (
                f["check"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            );
            *findings.entry(key).or_default() += 1.0;
        }
    }
    assert!(rows.len() >= 4, "{rows:?}");
    for (tag, n) in &rows {
        assert_eq!(
            sum(
                &text,
                "dqmon_rows_total",
                &[("dataset", "events"), ("trust_tag", tag)]
            ),
            *n,
            "rows of {tag}"
        );
        assert_eq!(
            sum(
                &text,
                "dqmon_tag_batches_total",
                &[("dataset", "events"), ("trust_tag", tag)]
            ),
            2.0,
            "batches with {tag}"
        );
    }
    assert_eq!(
        sum(&text, "dqmon_rows_total", &[("dataset", "events")]),
        2.0 * ROWS_F
    );
    assert!(findings.len() >= 2, "{findings:?}");
    for ((check, severity), n) in &findings {
        assert_eq!(
            sum(
                &text,
                "dqmon_findings_total",
                &[("check", check), ("severity", severity)]
            ),
            *n,
            "findings {check}/{severity}"
        );
    }
    let alerts = s.alerts();
    assert!(
        alerts.iter().any(|a| a["check"] == "label_rate"),
        "{alerts:?}"
    );
    assert!(alerts.iter().any(|a| a["check"] == "malformed_records"));
    for a in &alerts {
        let (check, severity) = (
            a["check"].as_str().unwrap(),
            a["severity"].as_str().unwrap(),
        );
        let expected = alerts
            .iter()
            .filter(|b| b["check"] == check && b["severity"] == severity)
            .count() as f64;
        assert_eq!(
            sum(
                &text,
                "dqmon_alerts_total",
                &[("check", check), ("severity", severity)]
            ),
            expected,
            "alerts {check}/{severity}"
        );
    }
    assert_eq!(
        sum(&text, "dqmon_alerts_total", &[("dataset", "events")]),
        alerts.len() as f64
    );
    assert_eq!(
        series(
            &text,
            r#"dqmon_batch_processing_seconds_count{dataset="events"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(text.contains("# TYPE dqmon_batch_processing_seconds histogram"));
    let baseline = manifests[0]["baseline_id"].as_str().unwrap();
    assert_eq!(
        series(
            &text,
            &format!(r#"dqmon_baseline_info{{dataset="events",baseline_id="{baseline}"}}"#)
        ),
        Some(1.0)
    );
    svc.assert_running();
    svc.stop();
}

const ROWS_F: f64 = crate::daemon::ROWS as f64;

#[test]
fn readyz_follows_the_state_folder() {
    let s = Setup::new();
    let svc = Service::start(&s);
    let (status, body) = svc.get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let ready = svc.wait_ready(200);
    assert_eq!(ready["datasets"]["events"]["state_dir"]["ok"], true);
    assert_eq!(ready["datasets"]["events"]["baseline"]["ok"], true);
    assert_eq!(ready["datasets"]["events"]["source"]["ok"], true);

    // Make the state folder unwritable in a way that holds even for root
    // (chmod does not stop root): put a plain file where the folder was.
    let moved = s.dir.path().join("state-moved-away");
    std::fs::rename(&s.state, &moved).unwrap();
    std::fs::write(&s.state, b"not a folder").unwrap();
    let body = svc.wait_ready(503);
    assert_eq!(body["ready"], false);
    let check = &body["datasets"]["events"]["state_dir"];
    assert_eq!(check["ok"], false, "{body}");
    assert!(
        check["detail"].as_str().unwrap().contains("not writable"),
        "{body}"
    );
    // Liveness is not readiness: the process is alive.
    assert_eq!(svc.get("/healthz").0, 200);

    std::fs::remove_file(&s.state).unwrap();
    std::fs::rename(&moved, &s.state).unwrap();
    svc.wait_ready(200);
    svc.stop();
}

#[test]
fn sighup_refuses_an_invalid_config_and_applies_a_valid_one() {
    let s = Setup::new();
    let original = std::fs::read_to_string(&s.rules).unwrap();
    let mut svc = Service::start(&s);
    svc.wait_ready(200);
    let old_hash = sha256(original.as_bytes());
    svc.wait_metrics("the running config's hash", |t| {
        series(
            t,
            &format!(r#"dqmon_config_info{{config_hash="{old_hash}"}}"#),
        ) == Some(1.0)
    });

    // Invalid: refused, every problem logged, the old config keeps running.
    std::fs::write(
        &s.rules,
        format!("{original}thresholds: {{ psi: -1 }}\nbogus_key: 1\n"),
    )
    .unwrap();
    svc.signal(libc::SIGHUP);
    svc.wait_metrics("one refused reload", |t| {
        series(t, r#"dqmon_config_reloads_total{result="refused"}"#) == Some(1.0)
    });
    let refused = svc.wait_log(|l| l["level"] == "ERROR");
    let problems = refused["fields"]["problems"].as_str().unwrap();
    assert!(
        problems.contains("thresholds.psi") && problems.contains("bogus_key"),
        "{refused}"
    );
    svc.assert_running();
    s.drop_batch("a_clean.parquet", 100, Scenario::Clean);
    s.wait_for_batches(1, WAIT);
    assert_eq!(s.manifests()[0]["rules_hash"], old_hash.as_str());

    // Valid (a changed threshold): applied after the batch in hand.
    let changed = format!("{original}thresholds: {{ psi: 0.2 }}\n");
    std::fs::write(&s.rules, &changed).unwrap();
    let new_hash = sha256(changed.as_bytes());
    svc.signal(libc::SIGHUP);
    svc.wait_metrics("the new config applied", |t| {
        series(t, r#"dqmon_config_reloads_total{result="applied"}"#) == Some(1.0)
            && series(
                t,
                &format!(r#"dqmon_config_info{{config_hash="{new_hash}"}}"#),
            ) == Some(1.0)
    });
    svc.wait_ready(200);
    s.drop_batch("b_clean.parquet", 101, Scenario::Clean);
    s.wait_for_batches(2, WAIT);
    assert_eq!(s.manifests()[1]["rules_hash"], new_hash.as_str());
    svc.assert_running();
    svc.stop();
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The raw values of a string column of a Parquet file.
fn string_values(path: &std::path::Path, column: &str) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = arrow::compute::cast(
            batch.column_by_name(column).unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let strings = col.as_string::<i32>();
        out.extend(
            (0..strings.len())
                .filter(|&i| strings.is_valid(i))
                .map(|i| strings.value(i).to_string()),
        );
    }
    out
}

#[test]
fn debug_logs_hold_no_raw_pii_value() {
    let s = Setup::new();
    // A copy of the batch outside the drop folder: its `email` values (pii).
    let probe = s.dir.path().join("probe.parquet");
    write_batch(&probe, crate::daemon::ROWS, 100, Scenario::Clean);
    let mut emails = string_values(&probe, "email");
    emails.sort();
    emails.dedup();
    assert!(emails.len() > 100, "{}", emails.len());

    let mut svc = Service::start_with_log_filter(&s, "dqmon=trace,info");
    svc.wait_ready(200);
    s.drop_batch("a_clean.parquet", 100, Scenario::Clean);
    s.wait_for_batches(1, WAIT);
    svc.wait_log(|l| l["fields"]["message"] == "batch processed");
    let _ = svc.metrics();
    svc.assert_running();
    let seen = svc.seen.clone();
    svc.stop();

    let mut texts: Vec<(String, String)> = seen
        .iter()
        .map(|l| ("a log line".to_string(), l.to_string()))
        .collect();
    texts.push((
        "alerts.jsonl".into(),
        std::fs::read_to_string(s.state.join("alerts.jsonl")).unwrap_or_default(),
    ));
    for m in s.manifests() {
        texts.push(("a manifest".into(), m.to_string()));
    }
    assert!(
        texts.len() > 5,
        "too few log lines to mean anything: {texts:?}"
    );
    for (what, text) in &texts {
        for e in &emails {
            assert!(
                !text.contains(e.as_str()),
                "{what} holds the raw pii value {e:?}: {text}"
            );
        }
    }
}
