//! Cutting a partition's messages into windows (batch-id header, records,
//! bytes, time), on an injectable clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// One consumed message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMsg {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Trust tag from a header or the topic.
    pub tag: Option<String>,
    /// Value of the batch-id header.
    pub batch_key: Option<String>,
}

/// The messages of one partition that form one batch.
#[derive(Debug, Clone)]
pub struct Window {
    pub topic: String,
    pub partition: i32,
    pub msgs: Vec<OwnedMsg>,
    pub bytes: u64,
    pub opened: Instant,
    /// When its last message arrived.
    pub touched: Instant,
}

impl Window {
    pub fn first(&self) -> i64 {
        self.msgs.first().map_or(-1, |m| m.offset)
    }
    pub fn last(&self) -> i64 {
        self.msgs.last().map_or(-1, |m| m.offset)
    }
    /// SHA-256 of the payloads, each prefixed with its length.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for m in &self.msgs {
            h.update((m.payload.len() as u64).to_le_bytes());
            h.update(&m.payload);
        }
        hex::encode(h.finalize())
    }
}

/// Limits that close a window.
#[derive(Debug, Clone, Copy)]
pub struct WindowLimits {
    pub max_records: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// Cuts each partition's messages into batches. Pure: the caller passes the time.
#[derive(Debug)]
pub struct Batcher {
    limits: WindowLimits,
    pub(super) open: BTreeMap<(String, i32), Window>,
}

impl Batcher {
    pub fn new(limits: WindowLimits) -> Batcher {
        Batcher {
            limits,
            open: BTreeMap::new(),
        }
    }

    /// Add a message; returns the windows this closes (at most two: the
    /// previous batch when the batch id changed, and this one when full).
    pub fn push(
        &mut self,
        topic: &str,
        partition: i32,
        msg: OwnedMsg,
        now: Instant,
    ) -> Vec<Window> {
        let mut closed = Vec::new();
        let key = (topic.to_string(), partition);
        if let Some(w) = self.open.get(&key) {
            if msg.offset <= w.last() {
                // The partition was rewound (seek or re-fetch): start over.
                self.open.remove(&key);
            } else if w.msgs.last().map(|m| &m.batch_key) != Some(&msg.batch_key) {
                closed.extend(self.open.remove(&key));
            }
        }
        let w = self.open.entry(key.clone()).or_insert_with(|| Window {
            topic: topic.to_string(),
            partition,
            msgs: Vec::new(),
            bytes: 0,
            opened: now,
            touched: now,
        });
        w.touched = now;
        w.bytes += msg.payload.len() as u64;
        w.msgs.push(msg);
        if w.msgs.len() as u64 >= self.limits.max_records || w.bytes >= self.limits.max_bytes {
            closed.extend(self.open.remove(&key));
        }
        closed
    }

    /// When a window closes by time. A window of a batch-id batch closes
    /// `max_age` after its last message (the batch is still arriving while
    /// messages come, however slowly); any other window `max_age` after its
    /// first message.
    fn deadline(&self, w: &Window) -> Instant {
        if w.msgs.last().is_some_and(|m| m.batch_key.is_some()) {
            w.touched + self.limits.max_age
        } else {
            w.opened + self.limits.max_age
        }
    }

    /// Windows whose time limit has passed.
    pub fn due(&mut self, now: Instant) -> Vec<Window> {
        let keys: Vec<_> = self
            .open
            .iter()
            .filter(|(_, w)| now >= self.deadline(w))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.open.remove(&k))
            .collect()
    }

    /// The worker was busy for `by` (processing a batch) and read nothing:
    /// that time does not count toward any open window's time limit, or a
    /// window would be cut while the rest of it waits in the consumer's queue.
    pub fn postpone(&mut self, by: Duration) {
        for w in self.open.values_mut() {
            w.opened += by;
            w.touched += by;
        }
    }

    /// When the oldest open window falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|w| self.deadline(w)).min()
    }

    /// Close a partition's window now (end of partition in `--once` mode).
    pub fn flush(&mut self, topic: &str, partition: i32) -> Option<Window> {
        self.open.remove(&(topic.to_string(), partition))
    }

    /// Drop a partition's window without closing it (revoked on a rebalance).
    pub fn drop_partition(&mut self, topic: &str, partition: i32) -> Option<usize> {
        self.open
            .remove(&(topic.to_string(), partition))
            .map(|w| w.msgs.len())
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}
