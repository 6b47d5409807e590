//! Alert delivery end to end: the real `dqmon run` binary sends email to a
//! real SMTP server on loopback (mailin-embedded) and posts webhooks to a
//! real HTTP server (tiny_http), through the durable outbox with retries.
//!
//! Longer than 600 lines: each test is one delivery scenario (routes,
//! cooldown, digests, retries, crash and resume) against the same SMTP and
//! HTTP servers, whose helpers are at the top.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dqmon_fixtures::Scenario;
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::Value;

use crate::common::*;
use crate::daemon::{Setup, terminate};

const LONG: Duration = Duration::from_secs(120);

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`] while a daemon runs: if it exits or the time runs out, the
/// panic shows its stderr and the outbox's folders.
fn wait_for_daemon(
    child: &mut std::process::Child,
    state: &Path,
    what: &str,
    mut cond: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !cond() {
        let exited = child.try_wait().unwrap();
        if exited.is_some() || start.elapsed() > LONG {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let folders: Vec<String> = ["pending", "sent", "failed", "retry"]
                .iter()
                .map(|d| format!("{d}: {:?}", outbox_messages(state, d)))
                .collect();
            panic!(
                "waiting for {what}: the daemon {} after {:?}\n{}\nstderr:\n{err}",
                match exited {
                    Some(status) => format!("exited ({status})"),
                    None => "still runs".to_string(),
                },
                start.elapsed(),
                folders.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Raw messages received by the test SMTP server.
type Mailbox = Arc<Mutex<Vec<Vec<u8>>>>;

#[derive(Clone)]
struct Capture {
    current: Vec<u8>,
    mails: Mailbox,
}

impl mailin_embedded::Handler for Capture {
    fn data_start(&mut self, _: &str, _: &str, _: bool, _: &[String]) -> mailin_embedded::Response {
        self.current.clear();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        self.mails
            .lock()
            .unwrap()
            .push(std::mem::take(&mut self.current));
        mailin_embedded::response::OK
    }
}

/// Start a real SMTP server on `listener` (runs until the test process ends).
fn smtp_server(listener: TcpListener) -> Mailbox {
    smtp_server_with(listener, mailin_embedded::SslConfig::None)
}

/// The same, offering STARTTLS when `ssl` holds a certificate.
fn smtp_server_with(listener: TcpListener, ssl: mailin_embedded::SslConfig) -> Mailbox {
    let mails: Mailbox = Arc::default();
    let handler = Capture {
        current: Vec::new(),
        mails: mails.clone(),
    };
    let mut server = mailin_embedded::Server::new(handler);
    server
        .with_name("localhost")
        .with_ssl(ssl)
        .unwrap()
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        if let Err(e) = server.serve() {
            eprintln!("test SMTP server stopped: {e}");
        }
    });
    mails
}

fn email_rules(s: &Setup, port: u16) {
    email_rules_with(s, "127.0.0.1", port, 1000, "tls: none");
}

/// Email rules for `host:port` with the given TLS lines (indented 6).
fn email_rules_with(s: &Setup, host: &str, port: u16, attempts: u32, tls: &str) {
    let mut text = fs::read_to_string(&s.rules).unwrap();
    text.push_str(&format!(
        "alerts:
  cooldown: 0s
  retry: {{ max_attempts: {attempts}, initial_backoff: 100ms, max_backoff: 400ms }}
  receivers:
    mail:
      type: email
      host: {host}
      port: {port}
      {tls}
      from: dqmon <dqmon@example.com>
      to: [oncall@example.com]
      timeout: 5s
  default: [mail]
"
    ));
    fs::write(&s.rules, text).unwrap();
}

fn outbox_ids(state: &Path, status: &str) -> BTreeSet<String> {
    match fs::read_dir(state.join("outbox").join(status)) {
        Ok(d) => d
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")
                    .filter(|_| !name.starts_with('.'))
                    .map(str::to_string)
            })
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn outbox_messages(state: &Path, status: &str) -> Vec<Value> {
    outbox_ids(state, status)
        .iter()
        // A file may move to another status folder between listing and reading.
        .filter_map(|id| {
            fs::read(state.join("outbox").join(status).join(format!("{id}.json"))).ok()
        })
        .map(|b| serde_json::from_slice(&b).unwrap())
        .collect()
}

/// The alert ids listed in a plain-text body ("Alert id: ...").
fn alert_ids_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("Alert id: ")
                .map(|s| s.trim().to_string())
        })
        .collect()
}

fn flip() -> Scenario {
    Scenario::LabelFlip {
        tag: "scraped".into(),
        strength: 0.2,
    }
}

fn planted() -> Scenario {
    Scenario::PlantedCategory {
        column: "merchant_category".into(),
        value: "mcc_9999".into(),
        share: 0.2,
        tag: Some("user_reported".into()),
    }
}

#[test]
fn email_goes_to_a_real_smtp_server_with_both_bodies_chart_and_message_id() {
    let s = Setup::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = smtp_server(listener);
    email_rules(&s, port);
    let out = run_once_with_flip(&s);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "",
        "with `alerts:` set, lines go to receivers only"
    );
    let alerts = s.alerts();
    assert!(!alerts.is_empty(), "the label flip raises alerts");
    let sent = outbox_ids(&s.state, "sent");
    assert!(
        outbox_ids(&s.state, "pending").is_empty() && outbox_ids(&s.state, "failed").is_empty()
    );
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), sent.len(), "one email per sent outbox message");

    let mut seen_alert_ids = Vec::new();
    let mut label_mail = None;
    for raw in &mails {
        let m = MessageParser::default()
            .parse(raw)
            .expect("a parseable email");
        let mid = m.message_id().expect("Message-ID header");
        let id = mid.strip_suffix("@dqmon").expect("dqmon Message-ID");
        assert!(
            sent.contains(id),
            "Message-ID {mid} is the outbox message id"
        );
        let subject = m.subject().unwrap().to_string();
        assert!(subject.starts_with("[dqmon] "), "{subject}");
        let plain = m.body_text(0).unwrap().into_owned();
        seen_alert_ids.extend(alert_ids_in(&plain));
        if subject.contains("label_calibration/label") && subject.contains("tag=scraped") {
            label_mail = Some((
                subject,
                plain,
                m.body_html(0).unwrap().into_owned(),
                raw.clone(),
            ));
        }
    }
    let mut expected: Vec<String> = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    seen_alert_ids.sort();
    assert_eq!(
        seen_alert_ids, expected,
        "every alert of alerts.jsonl is in exactly one email"
    );

    let (subject, plain, html, raw) = label_mail.expect("an email about the scraped label rate");
    assert!(
        subject.starts_with("[dqmon] 1-critical events label_calibration/label"),
        "{subject}"
    );
    let a = alerts
        .iter()
        .find(|a| a["check"] == "label_calibration" && a["trust_tag"] == "scraped")
        .unwrap();
    for needle in [
        a["message"].as_str().unwrap(),
        a["input_sha256"].as_str().unwrap(),
        a["baseline_id"].as_str().unwrap(),
        a["batch_id"].as_str().unwrap(),
        "possible_poisoning",
    ] {
        assert!(
            plain.contains(needle),
            "plain body lacks {needle}:\n{plain}"
        );
    }
    assert!(html.contains("<table") && html.contains(a["input_sha256"].as_str().unwrap()));
    let cid = html
        .split("src=\"cid:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the HTML shows an inline image");
    let m = MessageParser::default().parse(&raw).unwrap();
    let png = m
        .parts
        .iter()
        .find(|p| p.content_id() == Some(cid))
        .expect("the inline chart part with the Content-ID the HTML refers to");
    assert_eq!(
        png.content_type().map(|c| (c.ctype(), c.subtype())),
        Some(("image", Some("png")))
    );
    assert_eq!(&png.contents()[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn smtp_down_at_first_queues_then_every_alert_is_delivered_exactly_once() {
    let s = Setup::new();
    // Reserve a port, then close it: nothing listens there at first.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    email_rules(&s, port);
    let child = s.spawn(&[]);
    s.drop_batch("a_flip.parquet", 101, flip());
    s.drop_batch("b_planted.parquet", 102, planted());
    s.wait_for_batches(2, LONG);
    let last_seq = s
        .manifests()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .max();
    wait_for("failed attempts while the server is down", LONG, || {
        let taken_in = fs::read(s.state.join("outbox/lifecycle.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|l| l["ingested_seq"].as_u64() == last_seq);
        let p = outbox_messages(&s.state, "pending");
        taken_in
            && outbox_ids(&s.state, "inbox").is_empty()
            && !p.is_empty()
            && p.iter().all(|m| m["attempts"].as_u64().unwrap() >= 2)
    });
    assert!(outbox_ids(&s.state, "sent").is_empty());
    let queued = outbox_ids(&s.state, "pending");
    assert!(
        outbox_messages(&s.state, "pending")[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("SMTP")
    );

    // The server comes up on that port.
    let listener = {
        let start = Instant::now();
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(start.elapsed() < LONG, "cannot bind port {port}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    };
    let mails = smtp_server(listener);
    wait_for("every queued message to be sent", LONG, || {
        outbox_ids(&s.state, "sent") == queued
    });
    let out = terminate(child);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        outbox_ids(&s.state, "pending").is_empty() && outbox_ids(&s.state, "failed").is_empty()
    );

    let mails = mails.lock().unwrap().clone();
    let mut ids = BTreeSet::new();
    let mut alert_ids = Vec::new();
    for raw in &mails {
        let m = MessageParser::default().parse(raw).unwrap();
        let id = m
            .message_id()
            .unwrap()
            .strip_suffix("@dqmon")
            .unwrap()
            .to_string();
        assert!(ids.insert(id.clone()), "message {id} delivered twice");
        alert_ids.extend(alert_ids_in(&m.body_text(0).unwrap()));
    }
    assert_eq!(ids, queued, "exactly the queued messages, each once");
    let mut expected: Vec<String> = s
        .alerts()
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    alert_ids.sort();
    assert_eq!(
        alert_ids, expected,
        "every alert delivered exactly once, none lost"
    );

    // Each delivered message is in the audit log once, and the chain verifies.
    let audit = fs::read_to_string(s.state.join("audit.jsonl")).unwrap();
    let recorded: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "alert_sent")
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        recorded.iter().cloned().collect::<BTreeSet<_>>(),
        queued,
        "one alert_sent audit entry per delivered message"
    );
    assert_eq!(recorded.len(), queued.len(), "no message recorded twice");
    let verify = dqmon(&["audit", "verify", "--config", s.rules.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

/// One request received by the test HTTP server.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub path: String,
    pub key: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub answered: u16,
}

/// A real HTTP server that answers 500 to the first request on each path, then 200.
pub(crate) fn http_server() -> (u16, Arc<Mutex<Vec<Hit>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            let headers: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|x| {
                    (
                        x.field.as_str().as_str().to_ascii_lowercase(),
                        x.value.as_str().to_string(),
                    )
                })
                .collect();
            let path = req.url().to_string();
            let mut hits = h.lock().unwrap();
            let first = !hits.iter().any(|x| x.path == path);
            let status = if first { 500 } else { 200 };
            hits.push(Hit {
                path,
                key: headers.get("idempotency-key").cloned().unwrap_or_default(),
                headers,
                body: serde_json::from_str(&body).unwrap_or(Value::Null),
                answered: status,
            });
            drop(hits);
            let _ = req.respond(tiny_http::Response::empty(status));
        }
    });
    (port, hits)
}

#[test]
fn webhooks_retry_after_500_and_deliver_generic_slack_and_pagerduty_once() {
    let s = Setup::new();
    let (port, hits) = http_server();
    let token = "tok-7f3a9c-secret";
    let pd_key = "pdkey-0b1c2d-secret";
    let slack_url = format!("http://127.0.0.1:{port}/slack/T000/B000/xyzSECRET");
    let mut text = fs::read_to_string(&s.rules).unwrap();
    text.push_str(&format!(
        "alerts:
  resolve_after_batches: 1
  retry: {{ max_attempts: 1000, initial_backoff: 100ms, max_backoff: 400ms }}
  receivers:
    gen:
      type: webhook
      url: http://127.0.0.1:{port}/generic
      headers: {{ X-Source: dqmon, X-Token_env: DQMON_TEST_HOOK_TOKEN }}
    chat: {{ type: webhook, format: slack, url_env: DQMON_TEST_SLACK_URL }}
    pd:
      type: webhook
      format: pagerduty
      url: http://127.0.0.1:{port}/pd
      routing_key_env: DQMON_TEST_PD_KEY
  routes:
    - match: {{ trust_tag: scraped }}
      to: [gen, chat, pd]
  default: [gen]
"
    ));
    fs::write(&s.rules, text).unwrap();
    let child = Command::new(dqmon_bin())
        .args([
            "run",
            "--settle-ms",
            "200",
            "--config",
            s.rules.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .env("DQMON_TEST_HOOK_TOKEN", token)
        .env("DQMON_TEST_PD_KEY", pd_key)
        .env("DQMON_TEST_SLACK_URL", &slack_url)
        .env_remove("DQMON_PII_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.drop_batch("a_flip.parquet", 101, flip());
    s.wait_for_batches(1, LONG);
    let accepted = |path: &str| -> Vec<Hit> {
        hits.lock()
            .unwrap()
            .iter()
            .filter(|h| h.path.starts_with(path) && h.answered == 200)
            .cloned()
            .collect()
    };
    // the alerts are appended just after the batch's manifest: wait for them
    let scraped_alerts = || -> Vec<Value> {
        s.alerts()
            .into_iter()
            .filter(|a| a["trust_tag"] == "scraped")
            .collect()
    };
    wait_for("the flipped batch's alerts", LONG, || {
        !scraped_alerts().is_empty()
    });
    let scraped = scraped_alerts();
    assert!(!scraped.is_empty());
    let fingerprints: BTreeSet<String> = scraped
        .iter()
        .map(|a| a["fingerprint"].as_str().unwrap().to_string())
        .collect();
    let n = fingerprints.len();
    wait_for("the triggers", LONG, || {
        accepted("/pd").len() >= n
            && accepted("/slack").len() >= n
            && accepted("/generic").len() >= n
    });
    // A clean batch: the scraped fingerprints are back within band -> resolve.
    s.drop_batch("b_clean.parquet", 102, Scenario::Clean);
    s.wait_for_batches(2, LONG);
    wait_for("the resolves", LONG, || {
        accepted("/pd").len() >= 2 * n && accepted("/slack").len() >= 2 * n
    });
    let out = terminate(child);
    assert!(out.status.success(), "{}", stderr(&out));

    let hits = hits.lock().unwrap().clone();
    for path in ["/generic", "/slack", "/pd"] {
        let mine: Vec<&Hit> = hits.iter().filter(|h| h.path.starts_with(path)).collect();
        assert_eq!(mine[0].answered, 500);
        // The failed request is retried with the same idempotency key...
        assert!(
            mine[1..]
                .iter()
                .any(|h| h.key == mine[0].key && h.answered == 200),
            "{path}: retry of {}",
            mine[0].key
        );
        // ...and nothing is accepted twice.
        let mut keys = BTreeSet::new();
        for h in mine.iter().filter(|h| h.answered == 200) {
            assert!(
                keys.insert(h.key.clone()),
                "{path}: {} delivered twice",
                h.key
            );
            assert_eq!(h.headers["content-type"], "application/json");
        }
    }
    let ok = |path: &str| -> Vec<Hit> {
        hits.iter()
            .filter(|h| h.path.starts_with(path) && h.answered == 200)
            .cloned()
            .collect()
    };

    // Generic: dqmon's JSON document with the alert, custom headers from env.
    let generic = ok("/generic");
    let triggers: Vec<&Hit> = generic
        .iter()
        .filter(|h| h.body["kind"] == "trigger")
        .collect();
    assert!(!triggers.is_empty());
    for h in &triggers {
        assert_eq!(h.headers["x-token"], token);
        assert_eq!(h.headers["x-source"], "dqmon");
        assert_eq!(h.body["id"], h.key.as_str());
        let a = &h.body["alerts"][0];
        assert!(s.alerts().iter().any(|x| x["alert_id"] == a["alert_id"]));
        assert!(a["input_sha256"].as_str().unwrap().len() == 64);
    }
    assert!(
        generic.iter().any(|h| h.body["kind"] == "resolve"),
        "resolve sent to the generic hook too"
    );

    // Slack: text + blocks, at the URL from the environment.
    for h in ok("/slack") {
        assert!(h.body["text"].as_str().unwrap().starts_with("[dqmon] "));
        assert!(h.body["blocks"].as_array().unwrap().len() >= 2);
        assert_eq!(h.path, "/slack/T000/B000/xyzSECRET");
    }

    // PagerDuty Events v2: trigger then resolve, fingerprint as dedup key.
    let pd = ok("/pd");
    let mut actions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in &pd {
        assert_eq!(h.body["routing_key"], pd_key);
        let dedup = h.body["dedup_key"].as_str().unwrap().to_string();
        assert!(
            fingerprints.contains(&dedup),
            "dedup_key {dedup} is an alert fingerprint"
        );
        let action = h.body["event_action"].as_str().unwrap().to_string();
        if action == "trigger" {
            let p = &h.body["payload"];
            assert!(p["summary"].as_str().unwrap().starts_with("[dqmon] "));
            assert_eq!(p["source"], "dqmon/events");
            assert!(["critical", "warning", "info"].contains(&p["severity"].as_str().unwrap()));
        }
        actions.entry(dedup).or_default().push(action);
    }
    for fp in &fingerprints {
        assert_eq!(actions[fp], vec!["trigger", "resolve"], "{fp}");
    }

    // No secret in any file of the state folder (outbox included) or in the logs.
    let err = stderr(&out);
    for secret in [token, pd_key, "xyzSECRET"] {
        assert!(!err.contains(secret), "secret in the log");
        for entry in walk(&s.state) {
            let bytes = fs::read(&entry).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "secret in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A private CA and a server certificate for `localhost` signed by it, as
/// PEM files: (ca.pem, server.pem, server.key).
fn test_pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dqmon test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    fs::write(&paths.0, ca.pem()).unwrap();
    fs::write(&paths.1, cert.pem()).unwrap();
    fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Run `dqmon run --once` over a clean and a poisoned drop.
fn run_once_with_flip(s: &Setup) -> std::process::Output {
    s.drop_batch("a_clean.parquet", 100, Scenario::Clean);
    s.drop_batch("b_flip.parquet", 101, flip());
    dqmon(&[
        "run",
        "--once",
        "--settle-ms",
        "0",
        "--config",
        s.rules.to_str().unwrap(),
    ])
}

/// STARTTLS with a private CA: the server's certificate is verified against
/// the receiver's `ca_file` and the mail goes through the encrypted session;
/// without `ca_file` the same server is not trusted and nothing is sent in
/// clear: the message fails with the certificate error and stays visible.
#[test]
fn starttls_verifies_the_server_against_ca_file_and_never_falls_back_to_clear_text() {
    // The test's SMTP server uses rustls' process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(pki.path());
    let tls = || mailin_embedded::SslConfig::SelfSigned {
        cert_path: cert.to_str().unwrap().to_string(),
        key_path: key.to_str().unwrap().to_string(),
    };

    // Trusted through ca_file: delivered.
    let s = Setup::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = smtp_server_with(listener, tls());
    email_rules_with(
        &s,
        "localhost",
        port,
        3,
        &format!("tls: starttls\n      ca_file: {}", ca.display()),
    );
    let out = run_once_with_flip(&s);
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = outbox_ids(&s.state, "sent");
    assert!(!sent.is_empty(), "the label flip is delivered");
    assert!(
        outbox_ids(&s.state, "pending").is_empty() && outbox_ids(&s.state, "failed").is_empty(),
        "{:?}",
        outbox_messages(&s.state, "failed")
    );
    assert_eq!(mails.lock().unwrap().len(), sent.len());

    // Not trusted (no ca_file): refused, nothing reaches the server.
    let s = Setup::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = smtp_server_with(listener, tls());
    email_rules_with(&s, "localhost", port, 1, "tls: starttls");
    let out = run_once_with_flip(&s);
    assert!(out.status.success(), "{}", stderr(&out));
    let failed = outbox_messages(&s.state, "failed");
    assert!(!failed.is_empty(), "the untrusted server gets nothing");
    for m in &failed {
        let e = m["last_error"].as_str().unwrap_or_default().to_lowercase();
        assert!(e.contains("certificate"), "{e}");
    }
    assert!(outbox_ids(&s.state, "sent").is_empty());
    assert!(mails.lock().unwrap().is_empty(), "no mail in clear text");
}

#[test]
fn a_replay_delivers_to_stdout_or_a_file_and_never_pages_the_rules_receivers() {
    let s = Setup::new();
    let (port, hits) = http_server();
    let mut text = fs::read_to_string(&s.rules).unwrap();
    text.push_str(&format!(
        "alerts:
  cooldown: 0s
  retry: {{ max_attempts: 1000, initial_backoff: 100ms, max_backoff: 400ms }}
  receivers:
    hook: {{ type: webhook, url: \"http://127.0.0.1:{port}/hook\" }}
  default: [hook]
"
    ));
    fs::write(&s.rules, text).unwrap();
    let archive = s.dir.path().join("archive");
    fs::create_dir_all(&archive).unwrap();
    let file = archive.join("b_flip.parquet");
    write_batch(&file, crate::daemon::ROWS, 101, flip());
    let rules = s.rules.to_str().unwrap();

    let o = dqmon(&[
        "replay",
        "--config",
        rules,
        "--deliver",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(
        hits.lock().unwrap().is_empty(),
        "a replay paged the webhook: {:?}",
        hits.lock().unwrap()
    );
    assert!(
        printed.lines().count() >= 1 && printed.lines().all(|l| l.starts_with("ALERT [")),
        "--deliver prints each alert on stdout: {printed}"
    );
    assert!(
        !s.state.join("replay/outbox").exists(),
        "a replay keeps no outbox"
    );

    let to = s.dir.path().join("delivered.txt");
    let o = dqmon(&[
        "replay",
        "--config",
        rules,
        "--deliver-to",
        to.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "--deliver-to writes the file, not stdout");
    assert_eq!(fs::read_to_string(&to).unwrap(), printed);
    // give a late delivery thread every chance to show itself
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        hits.lock().unwrap().is_empty(),
        "{:?}",
        hits.lock().unwrap()
    );
}

/// Notifications that exhausted their retries are listed and sent again:
/// `dqmon outbox retry ID` with no daemon running moves one back to
/// pending (the next run delivers it), `retry --all` with the daemon
/// running leaves it a request that its delivery thread takes in. Bad and
/// unknown ids are refused. Every message is delivered exactly once.
#[test]
fn failed_notifications_are_listed_and_sent_again_by_outbox_retry() {
    let s = Setup::new();
    // nothing listens on the port yet: the one attempt allowed fails
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    email_rules_with(&s, "127.0.0.1", port, 1, "tls: none");
    let out = run_once_with_flip(&s);
    assert!(out.status.success(), "{}", stderr(&out));
    let failed = outbox_ids(&s.state, "failed");
    assert!(!failed.is_empty() && outbox_ids(&s.state, "pending").is_empty());
    let r = s.rules.to_str().unwrap();

    let out = dqmon(&["outbox", "list", "--config", r]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for id in &failed {
        let line = text.lines().find(|l| l.contains(id.as_str())).unwrap();
        assert!(
            line.starts_with("failed") && line.contains("last error"),
            "{line}"
        );
    }
    let out = dqmon(&["outbox", "list", "--config", r, "--json"]);
    let listed: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), failed.len());
    assert!(
        listed
            .iter()
            .all(|m| m["status"] == "failed" && m["attempts"] == 1)
    );

    let out = dqmon(&["outbox", "retry", "--config", r, "../../etc"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a message id"),
        "{}",
        stderr(&out)
    );
    let out = dqmon(&["outbox", "retry", "--config", r, "abc123"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no failed message"),
        "{}",
        stderr(&out)
    );
    let out = dqmon(&["outbox", "retry", "--config", r]);
    assert!(!out.status.success(), "neither ids nor --all");

    // the server comes up on that port
    let mails = smtp_server(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let first = failed.iter().next().unwrap().clone();
    let out = dqmon(&["outbox", "retry", "--config", r, &first]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("back to pending"), "{}", stdout(&out));
    assert!(outbox_ids(&s.state, "pending").contains(&first));
    assert!(!outbox_ids(&s.state, "failed").contains(&first));

    let mut child = s.spawn(&[]);
    wait_for_daemon(&mut child, &s.state, "the retried message", || {
        outbox_ids(&s.state, "sent").contains(&first)
    });
    let out = dqmon(&["outbox", "retry", "--config", r, "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    if failed.len() > 1 {
        assert!(
            stdout(&out).contains("asked the running daemon"),
            "{}",
            stdout(&out)
        );
    }
    wait_for_daemon(
        &mut child,
        &s.state,
        "every failed message delivered",
        || outbox_ids(&s.state, "sent") == failed,
    );
    let out = terminate(child);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(outbox_ids(&s.state, "failed").is_empty());
    assert!(outbox_ids(&s.state, "pending").is_empty());
    assert!(
        fs::read_dir(s.state.join("outbox/retry"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(mails.lock().unwrap().len(), failed.len(), "each once");
}
