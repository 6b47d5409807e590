//! Delivery: the handle the batch thread uses to enqueue a committed batch's
//! alerts (a durable write, nothing more), and the delivery thread that
//! takes them through the lifecycle and routing into outbox messages and
//! delivers those with retries (exponential backoff with jitter).
//!
//! The batch thread never waits on a receiver: a dead SMTP server or webhook
//! only delays messages, which stay pending in the outbox across restarts.
//! This module must not touch the alerts file or the history; it reads the
//! history's metrics only to draw charts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::SeedableRng;
use sha2::{Digest, Sha256};

use super::Alert;
use super::clock::Clock;
use super::lifecycle::{Lifecycle, Planned};
use super::outbox::{InboxBatch, Message, MessageStatus, Outbox, OutboxError};
use super::sink::{self, SendContext};
use crate::config::model::AlertRules;
use crate::store::audit::{AuditKind, AuditLog};
use crate::store::history::Manifest;

/// The longest the delivery thread sleeps before looking again.
const MAX_IDLE: Duration = Duration::from_millis(500);

/// Handle of a dataset's delivery: enqueue batches, stop the thread.
pub struct Notifier {
    outbox: Outbox,
    dataset: String,
    rules: AlertRules,
    clock: Arc<dyn Clock>,
    wake: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Everything the delivery thread owns.
struct Deliverer {
    dataset: String,
    state_dir: PathBuf,
    rules: AlertRules,
    outbox: Outbox,
    lifecycle: Lifecycle,
    clock: Arc<dyn Clock>,
    rng: rand::rngs::SmallRng,
    /// The dataset's audit log: every delivered message is recorded there
    /// (`alert_sent`). `None` when it could not be opened (logged at start).
    audit: Option<AuditLog>,
    /// Messages whose attempt is over (delivered, or a failure counted) but
    /// whose new state could not be written (a full disk, a read-only
    /// folder): kept here and written first at every step, and never
    /// attempted again meanwhile, so a disk that cannot take the record
    /// does not make the receiver get the same message at every step. Lost
    /// with the process: the next start finds them pending and sends them
    /// once more (delivery is at least once).
    unrecorded: BTreeMap<String, Message>,
}

impl Notifier {
    /// Open the outbox, reconcile it with the history (batches committed but
    /// not yet enqueued because of a crash are enqueued now) and start the
    /// delivery thread.
    pub fn start(
        dataset: &str,
        state_dir: &std::path::Path,
        rules: AlertRules,
        manifests: &[Manifest],
        clock: Arc<dyn Clock>,
    ) -> Result<Notifier, OutboxError> {
        let outbox = Outbox::open(state_dir)?;
        let lifecycle = match outbox.lifecycle()? {
            Some(l) => l,
            None => {
                // A new outbox on an existing history: start from now, do not
                // notify the whole past again.
                let l = Lifecycle {
                    ingested_seq: manifests.iter().map(|m| m.seq).max(),
                    ..Lifecycle::default()
                };
                outbox.save_lifecycle(&l)?;
                if let Some(seq) = l.ingested_seq {
                    tracing::info!(dataset = %dataset, last_seq = seq, "alert outbox created; earlier batches are not notified");
                }
                l
            }
        };
        for m in manifests {
            if lifecycle.ingested_seq.is_none_or(|s| m.seq > s) {
                outbox.put_inbox(&InboxBatch {
                    seq: m.seq,
                    batch_id: m.batch_id.clone(),
                    alerts: m.alerts.clone(),
                })?;
            }
        }
        let audit = match AuditLog::open(state_dir) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(dataset = %dataset, error = %e, "could not open the audit log; delivered alerts will not be recorded in it");
                None
            }
        };
        for name in rules.receivers.keys() {
            crate::ops::metrics::register_sink(dataset, name);
        }
        let (wake, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut d = Deliverer {
            dataset: dataset.to_string(),
            state_dir: state_dir.to_path_buf(),
            rules: rules.clone(),
            outbox: outbox.clone(),
            lifecycle,
            clock: clock.clone(),
            rng: rand::rngs::SmallRng::from_os_rng(),
            audit,
            unrecorded: BTreeMap::new(),
        };
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dqmon-alerts-{dataset}"))
            .spawn(move || d.run(rx, stop2))
            .map_err(|source| OutboxError::Io {
                path: state_dir.join("outbox"),
                source,
            })?;
        Ok(Notifier {
            outbox,
            dataset: dataset.to_string(),
            rules,
            clock,
            wake,
            stop,
            thread: Some(thread),
        })
    }

    /// Durably enqueue a committed batch's alerts (call before the batch is
    /// acknowledged). Idempotent per batch.
    pub fn enqueue(&self, seq: u64, batch_id: &str, alerts: &[Alert]) -> Result<(), OutboxError> {
        self.outbox.put_inbox(&InboxBatch {
            seq,
            batch_id: batch_id.to_string(),
            alerts: alerts.to_vec(),
        })?;
        let _ = self.wake.send(());
        Ok(())
    }

    /// Durably queue the notices of an alert that belongs to no batch (a
    /// refused baseline, see [`super::lifecycle::unbatched`]) and wake the
    /// delivery thread. Idempotent per alert id.
    pub fn page(&self, alert: &Alert) -> Result<(), OutboxError> {
        let planned = super::lifecycle::unbatched(alert, &self.rules);
        queue(&self.outbox, &self.dataset, planned, self.clock.now_ms())?;
        let _ = self.wake.send(());
        Ok(())
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Stop the delivery thread: it takes in what is enqueued, makes one
    /// last delivery attempt of what is due, and leaves the rest pending
    /// in the outbox for the next start.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(t) = self.thread.take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
        let _ = t.join();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Write planned notices as pending messages of `outbox` (known ids are
/// no-ops): the one place a message is made.
fn queue(
    outbox: &Outbox,
    dataset: &str,
    planned: Vec<Planned>,
    now: i64,
) -> Result<(), OutboxError> {
    for p in planned {
        let digest_until_ms = p.target.digest_secs.map(|s| {
            let w = (s as i64).max(1) * 1000;
            (now.div_euclid(w) + 1) * w
        });
        let m = Message {
            id: p.notice.message_id(&p.target.receiver, &p.id_extra),
            receiver: p.target.receiver.clone(),
            notice: p.notice,
            digest_until_ms,
            status: MessageStatus::Pending,
            attempts: 0,
            created_ms: now,
            next_attempt_ms: digest_until_ms.unwrap_or(now),
            last_error: None,
            delivered_in: None,
        };
        if outbox.add(&m)? {
            tracing::debug!(dataset = %dataset, message_id = %m.id, receiver = %m.receiver, kind = m.notice.kind.as_str(), "notification queued");
        }
    }
    Ok(())
}

impl Deliverer {
    fn run(&mut self, rx: mpsc::Receiver<()>, stop: Arc<AtomicBool>) {
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let next = match self.step() {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(dataset = %self.dataset, error = %e, "alert outbox error; retrying");
                    Some(self.clock.now_ms() + 1000)
                }
            };
            if stopping {
                break;
            }
            let wait = next
                .map(|t| Duration::from_millis((t - self.clock.now_ms()).clamp(1, 500) as u64))
                .unwrap_or(MAX_IDLE)
                .min(MAX_IDLE);
            let _ = rx.recv_timeout(wait);
        }
    }

    /// Take in the inbox, plan summaries, deliver what is due. Returns when
    /// something is due next.
    fn step(&mut self) -> Result<Option<i64>, OutboxError> {
        self.record_unrecorded()?;
        let retried = self.outbox.take_retry_requests(self.clock.now_ms())?;
        if retried > 0 {
            tracing::info!(dataset = %self.dataset, messages = retried, "failed notifications sent back to pending by `dqmon outbox retry`");
        }
        // The lifecycle moves on only once what it planned is written: a
        // write that fails (a full disk) leaves it as it was, and the next
        // step plans the same messages again (same ids, so nothing doubles).
        for b in self.outbox.inbox()? {
            let now = self.clock.now_ms();
            let mut next = self.lifecycle.clone();
            let planned = next.ingest(b.seq, &b.batch_id, &b.alerts, &self.rules, now);
            self.add(planned, now)?;
            self.outbox.save_lifecycle(&next)?;
            self.lifecycle = next;
            self.outbox.remove_inbox(&b)?;
        }
        let now = self.clock.now_ms();
        let mut next = self.lifecycle.clone();
        let planned = next.tick(&self.rules, now);
        if !planned.is_empty() {
            self.add(planned, now)?;
            self.outbox.save_lifecycle(&next)?;
        }
        self.lifecycle = next;
        self.deliver_due()?;
        let pending = self.outbox.messages(MessageStatus::Pending)?;
        crate::ops::metrics::outbox_depth(&self.dataset, pending.len() as u64);
        let next_msg = pending
            .iter()
            .map(|m| m.next_attempt_ms.max(m.digest_until_ms.unwrap_or(i64::MIN)))
            .min();
        Ok([next_msg, self.lifecycle.next_due_ms()]
            .into_iter()
            .flatten()
            .min())
    }

    /// Write planned notices as pending messages (known ids are no-ops).
    fn add(&self, planned: Vec<Planned>, now: i64) -> Result<(), OutboxError> {
        queue(&self.outbox, &self.dataset, planned, now)
    }

    /// Write the states that an earlier step could not write, oldest first;
    /// stops at the first that still fails.
    fn record_unrecorded(&mut self) -> Result<(), OutboxError> {
        while let Some((id, m)) = self.unrecorded.pop_first() {
            if let Err(e) = self.outbox.write(&m) {
                self.unrecorded.insert(id, m);
                return Err(e);
            }
            tracing::info!(dataset = %self.dataset, message_id = %id, status = ?m.status, "notification state recorded after a failed write");
        }
        Ok(())
    }

    /// Deliver every pending message whose time has come; digest items of
    /// one receiver and window go out as one message.
    fn deliver_due(&mut self) -> Result<(), OutboxError> {
        let now = self.clock.now_ms();
        let due: Vec<Message> = self
            .outbox
            .messages(MessageStatus::Pending)?
            .into_iter()
            .filter(|m| m.next_attempt_ms <= now && !self.unrecorded.contains_key(&m.id))
            .collect();
        // Group: a single message, or the digest items of (receiver, window).
        let mut groups: Vec<(String, Vec<Message>)> = Vec::new();
        for m in due {
            match m.digest_until_ms {
                Some(w) => {
                    let key = format!("digest-{}-{w}", m.receiver);
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, g)) => g.push(m),
                        None => groups.push((key, vec![m])),
                    }
                }
                None => groups.push((m.id.clone(), vec![m])),
            }
        }
        for (key, mut group) in groups {
            let receiver_name = group[0].receiver.clone();
            let id = if group[0].digest_until_ms.is_some() {
                hex::encode(
                    &Sha256::digest(format!("{}\u{1f}{key}", self.dataset).as_bytes())[..16],
                )
            } else {
                key
            };
            let result = match self.rules.receivers.get(&receiver_name) {
                Some(r) => sink::deliver(
                    r,
                    &id,
                    &group,
                    &SendContext {
                        state_dir: &self.state_dir,
                        receiver: &receiver_name,
                    },
                )
                .map_err(|e| e.to_string()),
                None => Err(format!(
                    "no receiver is named `{receiver_name}` in the rules any more; add it back or move this message out of {}",
                    self.outbox.root().join("pending").display()
                )),
            };
            let now = self.clock.now_ms();
            // One retry time for the whole group, so a digest stays together.
            let retry_at = now + self.backoff_ms(group[0].attempts + 1);
            let mut write_error = None;
            for m in group.iter_mut() {
                m.attempts += 1;
                match &result {
                    Ok(()) => {
                        m.status = MessageStatus::Sent;
                        m.last_error = None;
                        if m.digest_until_ms.is_some() {
                            m.delivered_in = Some(id.clone());
                        }
                    }
                    Err(e) => {
                        m.last_error = Some(e.clone());
                        if m.attempts >= self.rules.retry.max_attempts {
                            m.status = MessageStatus::Failed;
                        } else {
                            m.next_attempt_ms = retry_at;
                        }
                    }
                }
                // After a failed write, the rest of the group is not tried:
                // its attempt is over all the same, so it waits in memory.
                if write_error.is_some() {
                    self.unrecorded.insert(m.id.clone(), m.clone());
                } else if let Err(e) = self.outbox.write(m) {
                    self.unrecorded.insert(m.id.clone(), m.clone());
                    write_error = Some(e);
                }
            }
            if result.is_err() {
                crate::ops::metrics::delivery_failure(&self.dataset, &receiver_name);
            }
            match &result {
                Ok(()) => {
                    self.record_sent(&id, &group);
                    tracing::info!(dataset = %self.dataset, message_id = %id, receiver = %receiver_name, notifications = group.len(), "notification delivered")
                }
                Err(e) if group[0].status == MessageStatus::Failed => tracing::error!(
                    dataset = %self.dataset, message_id = %id, receiver = %receiver_name, attempts = group[0].attempts, error = %e,
                    "notification FAILED after the retry limit; it stays in the outbox's failed/ folder"
                ),
                Err(e) => {
                    tracing::warn!(dataset = %self.dataset, message_id = %id, receiver = %receiver_name, attempts = group[0].attempts, error = %e, "notification not delivered; will retry")
                }
            }
            // Nothing more goes out while its state cannot be written.
            if let Some(e) = write_error {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Record a delivered message in the audit log, once per message id
    /// (a crash between delivery and this record leaves it unrecorded, never
    /// doubled). Ids only: alert bodies stay out of the audit log.
    fn record_sent(&self, delivered_as: &str, group: &[Message]) {
        let Some(audit) = &self.audit else { return };
        for m in group {
            let payload = serde_json::json!({
                "receiver": m.receiver,
                "kind": m.notice.kind.as_str(),
                "fingerprint": m.notice.fingerprint,
                "alert_ids": m.notice.alerts.iter().map(|a| a.alert_id.as_str()).collect::<Vec<_>>(),
                "delivered_as": delivered_as,
                "attempts": m.attempts,
            });
            if let Err(e) = audit.append_once(AuditKind::AlertSent, &m.id, payload) {
                tracing::error!(dataset = %self.dataset, message_id = %m.id, error = %e, "could not record the delivered alert in the audit log");
            }
        }
    }

    /// Exponential backoff with jitter: half fixed, half random.
    fn backoff_ms(&mut self, attempts: u32) -> i64 {
        let r = &self.rules.retry;
        let schedule = crate::backoff::Backoff {
            initial: Duration::from_millis(r.initial_backoff_ms),
            max: Duration::from_millis(r.max_backoff_ms),
        };
        schedule.delay(attempts, &mut self.rng).as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::alert::BatchContext;
    use crate::alert::clock::ManualClock;
    use crate::compare::{Check, Finding, Severity, Verdict};
    use crate::config::model::{ConfigValue, Receiver, RetryRules, WebhookFormat, WebhookReceiver};

    fn alert(batch: &str) -> Alert {
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

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
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
        let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone())).unwrap();
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
        let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone())).unwrap();
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
        let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone())).unwrap();
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
        use crate::store::history::{BatchStatus, MANIFEST_FORMAT, Manifest};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("notes.jsonl");
        let mut rules = AlertRules::default();
        rules
            .receivers
            .insert("log".into(), Receiver::File { path: out.clone() });
        rules.default_route = vec!["log".into()];
        let manifest = |seq: u64, id: &str, alerts: Vec<Alert>| Manifest {
            format: MANIFEST_FORMAT,
            seq,
            batch_id: id.into(),
            dataset: "d".into(),
            status: BatchStatus::Processed,
            source: String::new(),
            input_sha256: String::new(),
            input_bytes: 0,
            rows: 0,
            rows_by_tag: Default::default(),
            schema_fingerprint: None,
            baseline_id: None,
            rules_hash: String::new(),
            dqmon_version: String::new(),
            batch_time: None,
            reason: None,
            findings: Vec::new(),
            alerts,
            evidence: None,
        };
        // First start: one batch already in the history is not notified.
        let n = Notifier::start(
            "d",
            dir.path(),
            rules.clone(),
            &[manifest(0, "b0", vec![alert("b0")])],
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        n.stop();
        // A crash after committing b1 and before its enqueue: the next start finds it.
        let ms = [
            manifest(0, "b0", vec![alert("b0")]),
            manifest(1, "b1", vec![alert("b1")]),
        ];
        let n = Notifier::start(
            "d",
            dir.path(),
            rules.clone(),
            &ms,
            Arc::new(ManualClock::new(0)),
        )
        .unwrap();
        wait_for("b1's trigger", || lines(&out).len() == 1);
        n.stop();
        // And once more: nothing is sent twice.
        let n =
            Notifier::start("d", dir.path(), rules, &ms, Arc::new(ManualClock::new(0))).unwrap();
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
        let n = Notifier::start("d", dir.path(), rules, &[], Arc::new(clock.clone())).unwrap();
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
}
