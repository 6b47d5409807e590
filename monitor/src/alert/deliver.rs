//! Delivery: the handle the batch thread uses to enqueue a committed batch's
//! alerts (a durable write, nothing more), and the delivery thread that
//! takes them through the lifecycle and routing into outbox messages and
//! delivers those with retries (exponential backoff with jitter).
//!
//! The batch thread never waits on a receiver: a dead SMTP server or webhook
//! only delays messages, which stay pending in the outbox across restarts.
//! With a shared history the inbox is the replica's on the shared store, and
//! the lifecycle and pending messages are the fleet's, moved on by the
//! replica that holds their lease ([`super::fleet`]); sending is the same.
//! This module must not touch the alerts file or the history; it reads the
//! history's metrics only to draw charts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::SeedableRng;
use sha2::{Digest, Sha256};

use super::Alert;
use super::clock::Clock;
use super::fleet::{Fleet, FleetInbox};
use super::lifecycle::{Lifecycle, Planned};
use super::outbox::{InboxBatch, Message, MessageStatus, Outbox, OutboxError};
use super::sink::{self, SendContext};
use crate::config::model::AlertRules;
use crate::store::audit::{AuditKind, AuditLog};
use crate::store::backend::{Backend, LocalBackend};
use crate::store::history::BatchSummary;

/// The longest the delivery thread sleeps before looking again.
const MAX_IDLE: Duration = Duration::from_millis(500);

/// Handle of a dataset's delivery: enqueue batches, stop the thread.
pub struct Notifier {
    outbox: Outbox,
    /// With a shared history: the replica's inbox on the shared store,
    /// which takes the place of the local one (see [`super::fleet`]).
    fleet: Option<FleetInbox>,
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
    /// The history's objects, where charts read metrics: the state folder,
    /// or the shared history.
    history: Arc<dyn Backend>,
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
    /// With a shared history: the fleet's lifecycle, run while this
    /// replica holds its lease.
    fleet: Option<Fleet>,
}

impl Notifier {
    /// Open the outbox, reconcile it with the history (batches committed but
    /// not yet enqueued because of a crash are enqueued now) and start the
    /// delivery thread. With `fleet` (a shared history), committed batches
    /// go to the replica's inbox on the shared store and the fleet's
    /// lifecycle runs on whichever replica holds its lease.
    pub fn start(
        dataset: &str,
        state_dir: &std::path::Path,
        rules: AlertRules,
        manifests: &[BatchSummary],
        clock: Arc<dyn Clock>,
        fleet: Option<FleetInbox>,
    ) -> Result<Notifier, OutboxError> {
        let outbox = Outbox::open(state_dir)?;
        let lifecycle = match (&fleet, outbox.lifecycle()?) {
            (Some(inbox), local) => {
                let n = inbox.repair(manifests)?;
                if n > 0 {
                    tracing::info!(dataset = %dataset, batches = n, "committed batches added to the fleet's notification inbox after a crash");
                }
                local.unwrap_or_default()
            }
            (None, Some(l)) => l,
            (None, None) => {
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
        if fleet.is_none() {
            for m in manifests {
                if lifecycle.ingested_seq.is_none_or(|s| m.seq > s) {
                    outbox.put_inbox(&InboxBatch {
                        seq: m.seq,
                        batch_id: m.batch_id.clone(),
                        alerts: m.alerts.clone(),
                    })?;
                }
            }
        }
        // a fleet's records go to this replica's chain on the shared store
        let audit = match &fleet {
            Some(inbox) => AuditLog::open_shared(state_dir, inbox.objects(), inbox.me()),
            None => AuditLog::open(state_dir),
        };
        let audit = match audit {
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
            history: match &fleet {
                Some(inbox) => inbox.objects(),
                None => Arc::new(LocalBackend::new(state_dir)),
            },
            rules: rules.clone(),
            outbox: outbox.clone(),
            lifecycle,
            clock: clock.clone(),
            rng: rand::rngs::SmallRng::from_os_rng(),
            audit,
            unrecorded: BTreeMap::new(),
            fleet: fleet.as_ref().map(FleetInbox::fleet),
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
            fleet,
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
        let b = InboxBatch {
            seq,
            batch_id: batch_id.to_string(),
            alerts: alerts.to_vec(),
        };
        match &self.fleet {
            Some(inbox) => inbox.put(&b)?,
            None => self.outbox.put_inbox(&b)?,
        }
        let _ = self.wake.send(());
        Ok(())
    }

    /// Durably queue the notices of an alert that belongs to no batch (a
    /// refused baseline, see [`super::lifecycle::unbatched`]) and wake the
    /// delivery thread. Idempotent per alert id. In a fleet, only the
    /// replica that claims the alert first pages it (see
    /// [`super::fleet`], pages).
    pub fn page(&self, alert: &Alert) -> Result<(), OutboxError> {
        if let Some(inbox) = &self.fleet
            && !inbox.claim_page(&alert.alert_id)?
        {
            tracing::info!(dataset = %self.dataset, alert_id = %alert.alert_id, "another replica of the fleet pages this alert");
            return Ok(());
        }
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
        let m = Message::planned(p, now);
        if outbox.add(&m)? {
            tracing::debug!(dataset = %dataset, message_id = %m.id, receiver = %m.receiver, kind = m.notice.kind.as_str(), "notification queued");
        }
    }
    Ok(())
}

/// Due messages in delivery groups: a message alone (keyed by its id), or
/// the digest items of one receiver and window together.
fn groups(due: Vec<Message>) -> Vec<(String, Vec<Message>)> {
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
    groups
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
                if let Some(fleet) = self.fleet.as_mut()
                    && let Err(e) = fleet.release(self.clock.now_ms())
                {
                    tracing::warn!(dataset = %self.dataset, error = %e, "could not hand the fleet's notifications on; another replica takes them over when the lease runs out");
                }
                break;
            }
            let wait = next
                .map(|t| {
                    Duration::from_millis(t.saturating_sub(self.clock.now_ms()).clamp(1, 500) as u64)
                })
                .unwrap_or(MAX_IDLE)
                .min(MAX_IDLE);
            if rx.recv_timeout(wait).is_ok()
                && let Some(fleet) = self.fleet.as_mut()
            {
                fleet.poke();
            }
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
        let fleet_due = self.step_fleet()?;
        let pending = self.outbox.messages(MessageStatus::Pending)?;
        let fleet_pending = self.fleet.as_ref().map_or(0, Fleet::pending);
        crate::ops::metrics::outbox_depth(&self.dataset, (pending.len() + fleet_pending) as u64);
        let next_msg = pending
            .iter()
            .map(|m| m.next_attempt_ms.max(m.digest_until_ms.unwrap_or(i64::MIN)))
            .min();
        Ok([next_msg, self.lifecycle.next_due_ms(), fleet_due]
            .into_iter()
            .flatten()
            .min())
    }

    /// The fleet's part of a step: move its state on (see
    /// [`Fleet::step`]) and, while this replica holds the lease, deliver
    /// its due messages and record the outcome in the next version.
    /// Returns when the fleet has something due next.
    fn step_fleet(&mut self) -> Result<Option<i64>, OutboxError> {
        let Some(fleet) = self.fleet.as_mut() else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        let held = fleet.step(&self.rules, now)?;
        crate::ops::metrics::notification_lease(&self.dataset, held);
        let due = if held { fleet.due(now) } else { Vec::new() };
        for (key, mut group) in groups(due) {
            // each send starts with the lease long enough to finish it
            let fleet = self.fleet.as_mut().expect("fleet mode");
            let now = self.clock.now_ms();
            if !fleet.ready_to_send(now)? {
                break;
            }
            self.send(&key, &mut group);
            for m in group.iter().filter(|m| m.status != MessageStatus::Pending) {
                // the replica's own record, for `dqmon outbox` (and a retry
                // of a failed one, which this replica then sends itself)
                if let Err(e) = self.outbox.write(m) {
                    tracing::warn!(dataset = %self.dataset, message_id = %m.id, error = %e, "could not record a fleet notification in the local outbox");
                }
            }
            let fleet = self.fleet.as_mut().expect("fleet mode");
            if !fleet.settle(&group, self.clock.now_ms())? {
                tracing::warn!(dataset = %self.dataset, "the fleet's notification lease moved on during a delivery; its successor sends what this delivery did not record (same message ids)");
                break;
            }
        }
        let fleet = self.fleet.as_ref().expect("fleet mode");
        Ok(fleet.next_due_ms())
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
        for (key, mut group) in groups(due) {
            self.send(&key, &mut group);
            let mut write_error = None;
            for m in group.iter_mut() {
                // After a failed write, the rest of the group is not tried:
                // its attempt is over all the same, so it waits in memory.
                if write_error.is_some() {
                    self.unrecorded.insert(m.id.clone(), m.clone());
                } else if let Err(e) = self.outbox.write(m) {
                    self.unrecorded.insert(m.id.clone(), m.clone());
                    write_error = Some(e);
                }
            }
            // Nothing more goes out while its state cannot be written.
            if let Some(e) = write_error {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Send one group (a message, or the digest items of one receiver and
    /// window) and move its messages on: sent, failed for good, or due
    /// again after a backoff. Records a delivery in the audit log.
    fn send(&mut self, key: &str, group: &mut [Message]) {
        let receiver_name = group[0].receiver.clone();
        let id = if group[0].digest_until_ms.is_some() {
            hex::encode(&Sha256::digest(format!("{}\u{1f}{key}", self.dataset).as_bytes())[..16])
        } else {
            key.to_string()
        };
        let result = match self.rules.receivers.get(&receiver_name) {
            Some(r) => sink::deliver(
                r,
                &id,
                group,
                &SendContext {
                    history: &*self.history,
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
        }
        if result.is_err() {
            crate::ops::metrics::delivery_failure(&self.dataset, &receiver_name);
        }
        match &result {
            Ok(()) => {
                self.record_sent(&id, group);
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
    }

    /// Record a delivered message in the audit log, once per message id
    /// (a crash between delivery and this record leaves it unrecorded, never
    /// doubled; a fleet's chain knows the ids of this process's life, so a
    /// message delivered again after a restart is recorded again). Ids
    /// only: alert bodies stay out of the audit log.
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
pub(crate) mod tests;
