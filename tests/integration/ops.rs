//! `dqmon run` as a service: /metrics counts what was processed, /readyz
//! follows the state folder, SIGHUP reloads a valid config and refuses an
//! invalid one. The real binary, a real socket, real signals.
//!
//! Longer than 600 lines: the service's endpoints and signals are tested on
//! one running binary each, with the helpers that start it and read its
//! endpoints; split, each part would repeat them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dqmon_fixtures::Scenario;
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

    /// The process, for a test that checks how it exits.
    fn into_child(mut self) -> Child {
        self.child.take().unwrap()
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
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
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
        alerts.iter().any(crate::common::is_label_alert),
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

/// A second dataset, `payments`, beside the Setup's `events`, in one
/// include file; its approved baseline is then tampered with, and its
/// rules page a webhook. Returns (the include file, payments' state
/// folder, payments' drop folder, the webhook's hits).
fn with_a_refused_second_dataset(
    s: &Setup,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
    std::sync::Arc<std::sync::Mutex<Vec<crate::alerts::Hit>>>,
) {
    let dir = s.dir.path();
    let (port, hits) = crate::alerts::http_server();
    let text = std::fs::read_to_string(&s.rules).unwrap();
    let second = dir.join("payments.yaml");
    std::fs::write(
        &second,
        text.replace("dataset: events", "dataset: payments")
            .replace("path: drop\n", "path: drop2\n")
            + &format!(
                "alerts:
  retry: {{ max_attempts: 1000, initial_backoff: 100ms, max_backoff: 400ms }}
  receivers:
    hook: {{ type: webhook, url: http://127.0.0.1:{port}/refused }}
  default: [hook]
"
            ),
    )
    .unwrap();
    let id = crate::daemon::build_and_approve(&second, &dir.join("good"));
    let state = dir.join("state/payments");
    let path = state.join("baselines").join(format!("{id}.json"));
    let mut bytes = std::fs::read(&path).unwrap();
    let pos = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[pos] = b'2';
    std::fs::write(&path, bytes).unwrap();
    let drop2 = dir.join("drop2");
    std::fs::create_dir_all(&drop2).unwrap();
    let all = dir.join("all.yaml");
    std::fs::write(&all, "include: [rules.yaml, payments.yaml]\n").unwrap();
    (all, state, drop2, hits)
}

fn refusals(state: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a["check"] == "baseline_refused")
        .collect()
}

/// The most important alert reaches a person, and it stops only its own
/// dataset: a tampered baseline of one dataset of two is refused, its
/// `baseline_refused` alert goes through that dataset's outbox to its
/// webhook (retried past a 500, delivered once however many times the
/// refusal is seen), `/readyz` and `dqmon_dataset_stopped` name it, the
/// run fails, and the other dataset processes its batches meanwhile.
#[test]
fn a_refused_baseline_pages_and_stops_only_its_own_dataset() {
    let mut s = Setup::new();
    let (all, state, drop2, hits) = with_a_refused_second_dataset(&s);
    s.drop_batch("a_clean.parquet", 100, Scenario::Clean);
    write_batch(&drop2.join("p.parquet"), 500, 100, Scenario::Clean);

    // --once: events is monitored, payments is refused, the run fails
    let out = dqmon(&["run", "--config", all.to_str().unwrap(), "--once"]);
    assert!(!out.status.success(), "a dataset was not monitored");
    let err = stderr(&out);
    assert!(
        err.contains("payments") && err.contains("refused") && err.contains("hash"),
        "{err}"
    );
    assert_eq!(s.manifests().len(), 1, "the other dataset ran: {err}");
    let refused = refusals(&state);
    assert_eq!(refused.len(), 1);
    // the page was attempted during the run (the first attempt got a 500;
    // its retry may already have come while the other dataset ran)
    let first: Vec<crate::alerts::Hit> = hits.lock().unwrap().clone();
    assert!(!first.is_empty(), "the page was attempted");
    assert_eq!(first[0].answered, 500);
    assert_eq!(first[0].body["kind"], "trigger");
    assert_eq!(first[0].body["alerts"][0]["check"], "baseline_refused");
    assert_eq!(
        first[0].body["alerts"][0]["alert_id"],
        refused[0]["alert_id"]
    );

    // the daemon: stopped on /readyz and in /metrics, the page retried
    // and delivered, the other dataset keeps processing
    s.rules = all;
    let svc = Service::start(&s);
    let start = Instant::now();
    let ready = loop {
        let (status, body) = svc.get("/readyz");
        let ready: Value = serde_json::from_str(&body).unwrap();
        // both datasets past starting: events ready, payments stopped (the
        // two workers start in no fixed order)
        let stopped = ready["datasets"]["payments"]["baseline"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("STOPPED"));
        if ready["datasets"]["events"]["ready"] == true && stopped {
            assert_eq!(status, 503, "one dataset is stopped: {body}");
            break ready;
        }
        assert!(
            start.elapsed() < WAIT,
            "events never ready, or payments never stopped: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready["ready"], false);
    let detail = ready["datasets"]["payments"]["baseline"]["detail"]
        .as_str()
        .unwrap();
    assert!(
        detail.contains("STOPPED") && detail.contains("hash"),
        "{detail}"
    );
    svc.wait_metrics("payments stopped, events running", |t| {
        series(t, r#"dqmon_dataset_stopped{dataset="payments"}"#) == Some(1.0)
            && series(t, r#"dqmon_dataset_stopped{dataset="events"}"#) == Some(0.0)
    });
    let start = Instant::now();
    while !hits.lock().unwrap().iter().any(|h| h.answered == 200) {
        assert!(start.elapsed() < WAIT, "the page was not retried");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.drop_batch("b_clean.parquet", 101, Scenario::Clean);
    s.wait_for_batches(2, WAIT);
    let out = terminate(svc.into_child());
    assert!(
        !out.status.success(),
        "the run still did not monitor payments"
    );
    let hits = hits.lock().unwrap().clone();
    let delivered: Vec<_> = hits.iter().filter(|h| h.answered == 200).collect();
    assert_eq!(delivered.len(), 1, "paged once");
    assert_eq!(
        delivered[0].key, first[0].key,
        "the retry of the same message"
    );
    // seen again (audited again), but one alert
    assert_eq!(refusals(&state).len(), 1);
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
