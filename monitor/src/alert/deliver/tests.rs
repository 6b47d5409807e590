//! Delivery from the outbox on a paused clock: lifecycle, retries and
//! backoff, a record that fails after sending, recovery after a crash, digests.

use std::time::Instant;

use super::*;
use crate::alert::BatchContext;
use crate::alert::clock::ManualClock;
use crate::compare::{Check, Finding, Severity, Verdict};
use crate::config::model::{ConfigValue, Receiver, RetryRules, WebhookFormat, WebhookReceiver};
use crate::store::history::BatchStatus;

pub(crate) fn alert(batch: &str) -> Alert {
    let ctx = BatchContext {
        dataset: "d".into(),
        batch_id: batch.into(),
        source: format!("{batch}.parquet"),
        input_sha256: "ab".repeat(32),
        baseline_id: "cd".repeat(32),
        rules_hash: "ef".repeat(32),
        batch_time: None,
        rows: 1000,
    };
    let f = Finding::batch_level(
        Check::RowCount,
        Verdict::DataQuality,
        Severity::Warning,
        "rows moved".into(),
    );
    Alert::new(&ctx, &f)
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The summary of a committed batch of the history with these alerts.
pub(crate) fn summary(seq: u64, id: &str, alerts: Vec<Alert>) -> BatchSummary {
    BatchSummary {
        seq,
        batch_id: id.into(),
        status: BatchStatus::Processed,
        source: String::new(),
        input_sha256: String::new(),
        reason: None,
        stream: None,
        stream_seq: None,
        writer: None,
        evidence: false,
        alerts,
    }
}

#[test]
fn paused_clock_drives_trigger_cooldown_summary_and_resolve_through_the_thread() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("notes.jsonl");
    let mut rules = AlertRules {
        cooldown_secs: 60,
        resolve_after_batches: 2,
        ..AlertRules::default()
    };
    rules
        .receivers
        .insert("log".into(), Receiver::File { path: out.clone() });
    rules.default_route = vec!["log".into()];
    let clock = ManualClock::new(1_700_000_000_000);
    let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone()), None).unwrap();
    n.enqueue(0, "b0", &[alert("b0")]).unwrap();
    wait_for("the trigger", || lines(&out).len() == 1);
    assert_eq!(lines(&out)[0]["kind"], "trigger");
    // Fires again 10 s later: counted, not sent.
    clock.advance_ms(10_000);
    n.enqueue(1, "b1", &[alert("b1")]).unwrap();
    wait_for("the repeat to be taken in", || {
        n.outbox().inbox().unwrap().is_empty()
            && n.outbox().lifecycle().unwrap().unwrap().ingested_seq == Some(1)
    });
    assert_eq!(
        lines(&out).len(),
        1,
        "a repeat within the cooldown is not sent"
    );
    // The cooldown ends: exactly one summary, with the count.
    clock.advance_ms(51_000);
    wait_for("the summary", || lines(&out).len() == 2);
    assert_eq!(lines(&out)[1]["kind"], "summary");
    assert_eq!(lines(&out)[1]["suppressed"], 1);
    // Two quiet batches resolve it.
    n.enqueue(2, "b2", &[]).unwrap();
    n.enqueue(3, "b3", &[]).unwrap();
    wait_for("the resolve", || lines(&out).len() == 3);
    assert_eq!(lines(&out)[2]["kind"], "resolve");
    clock.advance_ms(3_600_000);
    n.stop();
    assert_eq!(lines(&out).len(), 3, "nothing else goes out");
    let sent = Outbox::open(dir.path())
        .unwrap()
        .messages(MessageStatus::Sent)
        .unwrap();
    assert_eq!(sent.len(), 3);
}

/// A delivered message whose `sent` record cannot be written (here the
/// `sent` folder is a plain file, so every write into it fails) is not
/// sent again at each step while the process runs: one notification,
/// recorded once the folder can take it.
#[test]
fn a_delivered_message_whose_record_fails_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("notes.jsonl");
    let mut rules = AlertRules::default();
    rules
        .receivers
        .insert("log".into(), Receiver::File { path: out.clone() });
    rules.default_route = vec!["log".into()];
    let sent_dir = dir.path().join("outbox/sent");
    let clock = ManualClock::new(1_700_000_000_000);
    let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone()), None).unwrap();
    std::fs::remove_dir(&sent_dir).unwrap();
    std::fs::write(&sent_dir, b"not a folder").unwrap();
    n.enqueue(0, "b0", &[alert("b0")]).unwrap();
    wait_for("the trigger", || lines(&out).len() == 1);
    // The thread steps at least every 500 ms: give it several steps,
    // with the clock far past any retry time.
    for _ in 0..4 {
        clock.advance_ms(60_000);
        std::thread::sleep(Duration::from_millis(600));
    }
    assert_eq!(lines(&out).len(), 1, "sent again while unrecorded");
    assert_eq!(
        n.outbox().messages(MessageStatus::Pending).unwrap().len(),
        1,
        "still pending on disk: a restart now would send it once more"
    );
    std::fs::remove_file(&sent_dir).unwrap();
    std::fs::create_dir(&sent_dir).unwrap();
    wait_for("the record", || {
        n.outbox().messages(MessageStatus::Sent).unwrap().len() == 1
    });
    n.stop();
    assert_eq!(lines(&out).len(), 1);
    assert!(pending_is_empty(dir.path()));
}

#[test]
fn retries_back_off_then_the_message_is_marked_failed_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    // A port that refuses connections: bind, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut rules = AlertRules {
        retry: RetryRules {
            max_attempts: 3,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 4_000,
        },
        ..AlertRules::default()
    };
    rules.receivers.insert(
        "hook".into(),
        Receiver::Webhook(WebhookReceiver {
            url: ConfigValue::Literal(format!("http://127.0.0.1:{port}/x")),
            format: WebhookFormat::Generic,
            headers: Vec::new(),
            routing_key: None,
            timeout_secs: 2,
        }),
    );
    rules.default_route = vec!["hook".into()];
    let clock = ManualClock::new(0);
    let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone()), None).unwrap();
    n.enqueue(0, "b0", &[alert("b0")]).unwrap();
    let pending = |n: &Notifier| n.outbox().messages(MessageStatus::Pending).unwrap();
    wait_for("the first attempt", || {
        pending(&n).first().is_some_and(|m| m.attempts == 1)
    });
    let m = &pending(&n)[0];
    // Backoff of attempt 1: between half and all of 1 s.
    assert!(
        (500..=1_000).contains(&m.next_attempt_ms),
        "{}",
        m.next_attempt_ms
    );
    assert!(
        m.last_error
            .as_deref()
            .unwrap()
            .contains("could not be reached")
    );
    clock.advance_ms(1_000);
    wait_for("the second attempt", || {
        pending(&n).first().is_some_and(|m| m.attempts == 2)
    });
    let m = &pending(&n)[0];
    assert!(
        (1_000 + 1_000..=1_000 + 2_000).contains(&m.next_attempt_ms),
        "{}",
        m.next_attempt_ms
    );
    clock.advance_ms(2_000);
    wait_for("the message to fail", || {
        n.outbox().messages(MessageStatus::Failed).unwrap().len() == 1
    });
    n.stop();
    let failed = Outbox::open(dir.path())
        .unwrap()
        .messages(MessageStatus::Failed)
        .unwrap();
    assert_eq!(failed[0].attempts, 3);
    assert!(pending_is_empty(dir.path()));
}

fn pending_is_empty(state: &std::path::Path) -> bool {
    Outbox::open(state)
        .unwrap()
        .messages(MessageStatus::Pending)
        .unwrap()
        .is_empty()
}

#[test]
fn a_batch_committed_but_not_enqueued_before_a_crash_is_enqueued_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("notes.jsonl");
    let mut rules = AlertRules::default();
    rules
        .receivers
        .insert("log".into(), Receiver::File { path: out.clone() });
    rules.default_route = vec!["log".into()];
    // First start: one batch already in the history is not notified.
    let n = Notifier::start(
        "d",
        dir.path(),
        rules.clone(),
        &[summary(0, "b0", vec![alert("b0")])],
        Arc::new(ManualClock::new(0)),
        None,
    )
    .unwrap();
    n.stop();
    // A crash after committing b1 and before its enqueue: the next start finds it.
    let ms = [
        summary(0, "b0", vec![alert("b0")]),
        summary(1, "b1", vec![alert("b1")]),
    ];
    let n = Notifier::start(
        "d",
        dir.path(),
        rules.clone(),
        &ms,
        Arc::new(ManualClock::new(0)),
        None,
    )
    .unwrap();
    wait_for("b1's trigger", || lines(&out).len() == 1);
    n.stop();
    // And once more: nothing is sent twice.
    let n = Notifier::start(
        "d",
        dir.path(),
        rules,
        &ms,
        Arc::new(ManualClock::new(0)),
        None,
    )
    .unwrap();
    n.enqueue(1, "b1", &[alert("b1")]).unwrap();
    n.stop();
    let got = lines(&out);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["alerts"][0]["batch_id"], "b1");
}

#[test]
fn a_digest_route_sends_one_message_per_window() {
    use crate::config::model::AlertRoute;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digest.jsonl");
    let mut rules = AlertRules::default();
    rules
        .receivers
        .insert("log".into(), Receiver::File { path: out.clone() });
    rules.routes.push(AlertRoute {
        severity: Vec::new(),
        dataset: Vec::new(),
        check: Vec::new(),
        column: Vec::new(),
        trust_tag: Vec::new(),
        to: vec!["log".into()],
        digest_secs: Some(60),
        continue_matching: false,
    });
    let clock = ManualClock::new(10_000);
    let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone()), None).unwrap();
    let mut other = alert("b1");
    other.fingerprint = "0123456789abcdef".into();
    other.alert_id = "ff".repeat(16);
    n.enqueue(0, "b0", &[alert("b0")]).unwrap();
    n.enqueue(1, "b1", &[other]).unwrap();
    wait_for("both to be queued", || {
        n.outbox().messages(MessageStatus::Pending).unwrap().len() == 2
    });
    assert!(lines(&out).is_empty(), "nothing before the window ends");
    clock.set_ms(60_000);
    wait_for("the digest", || !lines(&out).is_empty());
    n.stop();
    let got = lines(&out);
    // The file receiver writes one line per notification of the digest,
    // all under the digest's id.
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0]["id"], got[1]["id"]);
    let sent = Outbox::open(dir.path())
        .unwrap()
        .messages(MessageStatus::Sent)
        .unwrap();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|m| m.delivered_in.as_deref() == got[0]["id"].as_str())
    );
}
