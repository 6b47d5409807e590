//! One alert stream for a fleet: with a shared history, the notification
//! lifecycle (cooldown, summaries, resolve, digests) is the dataset's, not
//! a replica's, so one fingerprint pages once per cooldown however many
//! replicas saw it.
//!
//! ```text
//!  replica a ─ commit ─► notify/inbox/a/<seq>.json ─┐
//!  replica b ─ commit ─► notify/inbox/b/<seq>.json ─┼─► the lease holder:
//!  replica c ─ commit ─► notify/inbox/c/<seq>.json ─┘   lifecycle ─► route
//!        ─► notify/state/<version>.json (lease, cursors, lifecycle, pending)
//!        ─► receivers ─► notify/state/<version + 1>.json (delivered out)
//! ```
//!
//! Every replica writes each committed batch's alerts to an inbox of its
//! own on the shared store (the local outbox's inbox, moved: written
//! before the batch is acknowledged). One replica at a time, the holder of
//! a lease, takes the inboxes in, runs the [`Lifecycle`] and delivers.
//!
//! The lease and the lifecycle are one object, written in versions: the
//! state after a step is `notify/state/<n+1>.json`, written
//! create-if-absent by a replica that read version `n`. Of two replicas
//! that read the same version, one writes the next and the other is told
//! so and writes nothing: the state moves on one step at a time, and a
//! replica that lost the lease cannot overwrite its successor's state.
//! This needs nothing from the store beyond the conditional put the
//! history already relies on (no `If-Match`, no lock service).
//!
//! - A replica takes the lease when the newest state's lease has run out
//!   (its holder stopped renewing: it died, or it stopped and released
//!   it) or is its own; the holder renews it by writing a version at least
//!   every half lease ([`lease_ms`]: 15 s, or longer when a receiver may
//!   take longer to answer).
//! - The holder delivers only messages that a written version lists as
//!   pending, and starts a send only when the longest send its receivers
//!   may take ends before its lease does, with [`MARGIN_MS`] to spare
//!   (renewing first if need be); each send's outcome is recorded (and the
//!   lease renewed) by a version of its own. So a successor, which waits
//!   for the lease to run out, never sends while a send of the holder is
//!   still under way. A holder that dies between a send and its record
//!   leaves the message pending for its
//!   successor, which sends it again under the same message id (email
//!   Message-ID, webhook idempotency key): at least once, as the local
//!   outbox. A holder that dies before delivering leaves it to its
//!   successor: nothing is lost.
//! - Lease expiry compares clocks of different machines: a skew of more
//!   than [`MARGIN_MS`] between replicas can let two holders send one
//!   message (still once per id for receivers that deduplicate).
//!
//! What stays local to a replica: its delivered and failed records
//! (`outbox/sent`, `outbox/failed`, for `dqmon outbox`), the audit entries
//! of what it delivered, and messages sent again by `dqmon outbox retry`.
//! A page of a refused baseline is sent from the outbox of the one replica
//! that claims it first (module `pages`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lifecycle::Lifecycle;
use super::outbox::{InboxBatch, Message, MessageStatus, OutboxError};
use crate::config::model::AlertRules;
use crate::store::backend::{Backend, Put};
use crate::store::history::BatchSummary;

/// How long a lease lasts without renewal, at least: the longest a dead
/// holder's pending notifications wait for its successor when its
/// receivers answer fast (see [`lease_ms`]).
pub const LEASE_MS: i64 = 15_000;
/// The least lease a holder must have left when it starts a send, beyond
/// the longest the send may take: room for the replicas' clocks to differ.
pub const MARGIN_MS: i64 = LEASE_MS / 3;
/// How often the holder looks for new inbox entries when nothing wakes it.
pub const POLL_MS: i64 = 2_000;
/// How often a follower reads the newest state before the lease it knows
/// runs out (so a released lease is taken over within this time).
pub const FOLLOW_MS: i64 = 5_000;
/// Versions kept behind the newest.
const KEEP_VERSIONS: u64 = 32;

const INBOX: &str = "notify/inbox";
const STATE: &str = "notify/state";

fn state_key(version: u64) -> String {
    format!("{STATE}/{version:020}.json")
}

fn inbox_key(writer: &str, seq: u64) -> String {
    format!("{INBOX}/{writer}/{seq:020}.json")
}

/// The number in a versioned key (`…/00000000000000000042.json`).
fn number_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// The longest one send may take with these receivers: a webhook's
/// timeout bounds its whole request; an SMTP client's bounds each wait for
/// the server (connect, greeting and TLS, envelope, data), so four times
/// its timeout (a server that stalls at every reply of a long session can
/// take longer: its copy then carries the same Message-ID); a file or
/// stdout, a second.
pub fn send_bound_ms(rules: &AlertRules) -> i64 {
    use crate::config::model::Receiver;
    rules
        .receivers
        .values()
        .map(|r| match r {
            Receiver::Webhook(w) => w.timeout_secs as i64 * 1000,
            Receiver::Email(e) => 4 * e.timeout_secs as i64 * 1000,
            Receiver::Stdout | Receiver::File { .. } => 1000,
        })
        .max()
        .unwrap_or(1000)
}

/// The lease a holder takes: [`LEASE_MS`], or long enough for a send to
/// finish inside it with [`MARGIN_MS`] to spare, twice over, so that a
/// successor can never take over while a send of the holder's is still
/// under way.
pub fn lease_ms(rules: &AlertRules) -> i64 {
    LEASE_MS.max(2 * (send_bound_ms(rules) + MARGIN_MS))
}

/// The fleet's notification state: one version per step of its holder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    /// The replica that holds the lease.
    pub holder: String,
    /// When the lease runs out unless renewed (the holder's clock).
    pub lease_until_ms: i64,
    /// Per writer: the last inbox position taken in.
    pub cursors: BTreeMap<String, u64>,
    pub lifecycle: Lifecycle,
    /// Messages planned and not yet delivered (or given up), by id.
    pub pending: BTreeMap<String, Message>,
}

fn io(objects: &dyn Backend, key: &str) -> impl FnOnce(std::io::Error) -> OutboxError {
    let path = objects.locate(key);
    move |source| OutboxError::Io { path, source }
}

fn parse<T: serde::de::DeserializeOwned>(
    objects: &dyn Backend,
    key: &str,
    bytes: &[u8],
) -> Result<T, OutboxError> {
    serde_json::from_slice(bytes).map_err(|e| OutboxError::Corrupt {
        path: objects.locate(key),
        reason: e.to_string(),
    })
}

/// A replica's inbox on the shared store (the batch thread's side).
#[derive(Debug, Clone)]
pub struct FleetInbox {
    me: String,
    objects: Arc<dyn Backend>,
}

impl FleetInbox {
    pub fn new(me: &str, objects: Arc<dyn Backend>) -> FleetInbox {
        FleetInbox {
            me: me.to_string(),
            objects,
        }
    }

    /// The shared store.
    pub fn objects(&self) -> Arc<dyn Backend> {
        self.objects.clone()
    }

    /// This replica's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The delivery thread's side of the same fleet.
    pub fn fleet(&self) -> Fleet {
        Fleet::new(&self.me, self.objects.clone())
    }

    /// Durably record a committed batch's alerts (idempotent).
    pub fn put(&self, b: &InboxBatch) -> Result<(), OutboxError> {
        let key = inbox_key(&self.me, b.seq);
        let bytes = serde_json::to_vec(b).expect("inbox batches serialize");
        self.objects
            .put_if_absent(&key, &bytes)
            .map_err(io(&*self.objects, &key))?;
        Ok(())
    }

    /// At start: enqueue this replica's batches that a crash left
    /// committed but not in its inbox (after the last position the fleet
    /// took in or the inbox holds). A replica that never wrote to the
    /// inbox starts from now, as a new local outbox does.
    pub fn repair(&self, own: &[BatchSummary]) -> Result<usize, OutboxError> {
        let dir = format!("{INBOX}/{}", self.me);
        let listed = self.objects.list(&dir).map_err(io(&*self.objects, &dir))?;
        let taken = latest(&*self.objects)?.and_then(|(_, s)| s.cursors.get(&self.me).copied());
        let floor = listed.iter().filter_map(|k| number_of(k)).max().max(taken);
        let Some(floor) = floor else { return Ok(0) };
        let mut n = 0;
        for m in own.iter().filter(|m| m.seq > floor) {
            self.put(&InboxBatch {
                seq: m.seq,
                batch_id: m.batch_id.clone(),
                alerts: m.alerts.clone(),
            })?;
            n += 1;
        }
        Ok(n)
    }
}

/// The fleet's messages not yet delivered, as its newest state lists them
/// (for `dqmon outbox list`), and the replica that holds the lease.
pub fn pending_on(objects: &dyn Backend) -> Result<(String, Vec<Message>), OutboxError> {
    Ok(match latest(objects)? {
        Some((_, s)) => (s.holder, s.pending.into_values().collect()),
        None => (String::new(), Vec::new()),
    })
}

/// The newest state version and its state, `None` when there is none.
fn latest(objects: &dyn Backend) -> Result<Option<(u64, FleetState)>, OutboxError> {
    newer_than(objects, None)
}

/// The newest state version after `known` (all when `None`).
fn newer_than(
    objects: &dyn Backend,
    known: Option<u64>,
) -> Result<Option<(u64, FleetState)>, OutboxError> {
    let after = known.map_or_else(|| format!("{STATE}/"), state_key);
    let keys = objects
        .list_after(STATE, &after)
        .map_err(io(objects, STATE))?;
    for key in keys.iter().rev() {
        let Some(v) = number_of(key) else { continue };
        // pruned between the listing and the read: an older one follows
        let Some(bytes) = objects.get(key).map_err(io(objects, key))? else {
            continue;
        };
        return Ok(Some((v, parse(objects, key, &bytes)?)));
    }
    Ok(None)
}

/// The delivery thread's side: the lease, the lifecycle and the pending
/// messages of the fleet.
#[derive(Debug)]
pub struct Fleet {
    me: String,
    objects: Arc<dyn Backend>,
    /// The newest version this replica read or wrote.
    known: Option<(u64, FleetState)>,
    /// When to look at the inboxes (holder) or the state (follower) next.
    next_look_ms: i64,
    /// The receivers' longest send and the lease taken (from the rules).
    bound_ms: i64,
    lease_ms: i64,
}

impl Fleet {
    pub fn new(me: &str, objects: Arc<dyn Backend>) -> Fleet {
        Fleet {
            me: me.to_string(),
            objects,
            known: None,
            next_look_ms: i64::MIN,
            bound_ms: 1000,
            lease_ms: LEASE_MS,
        }
    }

    /// Look at the inboxes at the next step (a batch was committed here).
    pub fn poke(&mut self) {
        if self.holds() {
            self.next_look_ms = i64::MIN;
        }
    }

    /// Whether the newest known state is this replica's.
    fn holds(&self) -> bool {
        self.known
            .as_ref()
            .is_some_and(|(_, s)| s.holder == self.me)
    }

    /// Whether this replica may start a send now: it holds the lease, and
    /// the longest send ends before the lease does, with [`MARGIN_MS`] to
    /// spare.
    pub fn may_deliver(&self, now: i64) -> bool {
        self.known.as_ref().is_some_and(|(_, s)| {
            s.holder == self.me && now + self.bound_ms + MARGIN_MS < s.lease_until_ms
        })
    }

    /// Whether this replica may start a send now, renewing its lease
    /// first (one version) when too little of it is left.
    pub fn ready_to_send(&mut self, now: i64) -> Result<bool, OutboxError> {
        if self.may_deliver(now) {
            return Ok(true);
        }
        Ok(self.renew(now)? && self.may_deliver(now))
    }

    /// Renew the lease now (one version). Returns whether this replica
    /// still holds it.
    pub fn renew(&mut self, now: i64) -> Result<bool, OutboxError> {
        let until = now + self.lease_ms;
        self.as_holder(|next| next.lease_until_ms = until)
    }

    /// Write the next version, `edit` applied to the newest known state,
    /// when this replica holds the lease. Returns whether it was written.
    fn as_holder(&mut self, edit: impl FnOnce(&mut FleetState)) -> Result<bool, OutboxError> {
        let Some((version, mut next)) = self.known.clone() else {
            return Ok(false);
        };
        if next.holder != self.me {
            return Ok(false);
        }
        edit(&mut next);
        self.write(version + 1, next)
    }

    /// The pending messages whose time has come (holder only).
    pub fn due(&self, now: i64) -> Vec<Message> {
        match &self.known {
            Some((_, s)) if s.holder == self.me => s
                .pending
                .values()
                .filter(|m| m.next_attempt_ms <= now)
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// How many of the fleet's messages wait, on the holder (0 on the
    /// others, so that the fleet's outbox depth is counted once).
    pub fn pending(&self) -> usize {
        match &self.known {
            Some((_, s)) if s.holder == self.me => s.pending.len(),
            _ => 0,
        }
    }

    /// When something is due next: a message, a summary, the next look.
    pub fn next_due_ms(&self) -> Option<i64> {
        let (_, s) = self.known.as_ref()?;
        let msg = s
            .pending
            .values()
            .map(|m| m.next_attempt_ms.max(m.digest_until_ms.unwrap_or(i64::MIN)))
            .min();
        [
            Some(self.next_look_ms),
            msg.filter(|_| s.holder == self.me),
            s.lifecycle.next_due_ms().filter(|_| s.holder == self.me),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One step: read the newest state when this replica may have to act,
    /// take the lease if it is free, take in new inbox entries, plan, and
    /// write the next version when anything moved or the lease needs
    /// renewing. Returns whether this replica holds the lease after it.
    pub fn step(&mut self, rules: &AlertRules, now: i64) -> Result<bool, OutboxError> {
        self.bound_ms = send_bound_ms(rules);
        self.lease_ms = lease_ms(rules);
        let look = now >= self.next_look_ms;
        if !self.holds() {
            let live_elsewhere = self
                .known
                .as_ref()
                .is_some_and(|(_, s)| now < s.lease_until_ms);
            if !look && live_elsewhere {
                return Ok(false);
            }
            self.refresh()?;
            self.next_look_ms = now + FOLLOW_MS;
        }
        // A fleet without a state yet: no lease, nothing taken in. Its
        // inboxes hold only batches committed since the fleet began (entries
        // go once taken in), so everything in them is still to notify.
        let (version, state) = match &self.known {
            Some((v, s)) => (Some(*v), s.clone()),
            None => (None, FleetState::default()),
        };
        if state.holder != self.me && now < state.lease_until_ms {
            self.next_look_ms = state.lease_until_ms.min(now + FOLLOW_MS);
            return Ok(false);
        }
        let taking_over = state.holder != self.me || version.is_none();
        let mut next = state.clone();
        next.holder = self.me.clone();
        let mut consumed = Vec::new();
        if look || taking_over {
            consumed = self.take_in(&mut next, rules, now)?;
            self.next_look_ms = now + POLL_MS;
        }
        for p in next.lifecycle.tick(rules, now) {
            let m = Message::planned(p, now);
            next.pending.entry(m.id.clone()).or_insert(m);
        }
        let renew = state.lease_until_ms - now < self.lease_ms / 2;
        if next == state && !renew && !taking_over {
            return Ok(true);
        }
        next.lease_until_ms = now + self.lease_ms;
        if !self.write(version.map_or(0, |v| v + 1), next)? {
            return Ok(false);
        }
        if taking_over {
            tracing::info!(replica = %self.me, previous = %state.holder, "this replica now delivers the fleet's notifications");
        }
        for key in consumed {
            if let Err(e) = self.objects.delete(&key) {
                tracing::warn!(key = %key, error = %e, "could not remove a notification inbox entry that was taken in; it will be skipped");
            }
        }
        Ok(true)
    }

    /// After deliveries: take what was delivered or given up out of the
    /// pending set, keep the retry times of the rest, and renew the lease
    /// (one version). Returns whether the version was written.
    pub fn settle(&mut self, outcomes: &[Message], now: i64) -> Result<bool, OutboxError> {
        let until = now + self.lease_ms;
        self.as_holder(|next| {
            for m in outcomes {
                if m.status == MessageStatus::Pending {
                    next.pending.insert(m.id.clone(), m.clone());
                } else {
                    next.pending.remove(&m.id);
                }
            }
            next.lease_until_ms = until;
        })
    }

    /// Hand the lease on at once (a replica that stops): the next step of
    /// any other replica takes it, without waiting for it to run out.
    pub fn release(&mut self, now: i64) -> Result<(), OutboxError> {
        if self
            .known
            .as_ref()
            .is_some_and(|(_, s)| now < s.lease_until_ms)
        {
            self.as_holder(|next| next.lease_until_ms = now)?;
        }
        Ok(())
    }

    /// Read the newest version, if there is a newer one than known.
    fn refresh(&mut self) -> Result<(), OutboxError> {
        if let Some(newer) = newer_than(&*self.objects, self.known.as_ref().map(|(v, _)| *v))? {
            self.known = Some(newer);
        }
        Ok(())
    }

    /// Take every inbox's new entries into `next` (in each writer's commit
    /// order, writers by name); returns their keys, to remove once `next`
    /// is written.
    fn take_in(
        &self,
        next: &mut FleetState,
        rules: &AlertRules,
        now: i64,
    ) -> Result<Vec<String>, OutboxError> {
        let objects = &*self.objects;
        let mut consumed = Vec::new();
        for dir in objects.folders(INBOX).map_err(io(objects, INBOX))? {
            let Some(writer) = dir.rsplit('/').next().map(str::to_string) else {
                continue;
            };
            let after = match next.cursors.get(&writer) {
                Some(seq) => inbox_key(&writer, *seq),
                None => format!("{dir}/"),
            };
            for key in objects
                .list_after(&dir, &after)
                .map_err(io(objects, &dir))?
            {
                let Some(seq) = number_of(&key) else { continue };
                let Some(bytes) = objects.get(&key).map_err(io(objects, &key))? else {
                    continue;
                };
                let b: InboxBatch = parse(objects, &key, &bytes)?;
                let n = next.lifecycle.ingested_seq.map_or(0, |s| s + 1);
                for p in next.lifecycle.ingest(n, &b.batch_id, &b.alerts, rules, now) {
                    let m = Message::planned(p, now);
                    next.pending.entry(m.id.clone()).or_insert(m);
                }
                next.cursors.insert(writer.clone(), seq);
                consumed.push(key);
            }
        }
        Ok(consumed)
    }

    /// Write `state` as `version` if no replica wrote it first; prune old
    /// versions now and then. Returns whether it was written (if not, the
    /// newest state is read at the next step).
    fn write(&mut self, version: u64, state: FleetState) -> Result<bool, OutboxError> {
        let key = state_key(version);
        let bytes = serde_json::to_vec(&state).expect("fleet state serializes");
        let put = self
            .objects
            .put_if_absent(&key, &bytes)
            .map_err(io(&*self.objects, &key))?;
        if put == Put::Existed {
            tracing::info!(replica = %self.me, version, "another replica moved the fleet's notification state first");
            self.refresh()?;
            self.next_look_ms = i64::MIN;
            return Ok(false);
        }
        self.known = Some((version, state));
        if version.is_multiple_of(KEEP_VERSIONS) && version >= 2 * KEEP_VERSIONS {
            self.prune(version - KEEP_VERSIONS);
        }
        Ok(true)
    }

    /// Remove the versions before `below` (best effort: a version left
    /// over is only read by nobody).
    fn prune(&self, below: u64) {
        let keys = match self.objects.list(STATE) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "could not list old notification state versions");
                return;
            }
        };
        for key in keys {
            if number_of(&key).is_some_and(|v| v < below)
                && let Err(e) = self.objects.delete(&key)
            {
                tracing::warn!(key = %key, error = %e, "could not remove an old notification state version");
            }
        }
    }
}

mod pages;

#[cfg(test)]
pub(crate) mod tests;
