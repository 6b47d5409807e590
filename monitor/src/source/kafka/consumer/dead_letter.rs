//! Dead letters: the rejected messages of a window produced to the
//! dead-letter topic with their reason and source position; when the topic
//! does not take them, the window is parked (its partition paused, nothing
//! committed) and tried again on a backoff.

use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::shutdown::Shutdown;

use super::{
    DLQ_DATASET, DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, KafkaRun, KafkaSource, Prepared,
    Window,
};

/// The longest one dead-letter send may wait for the broker
/// (`message.timeout.ms` of the dead-letter producer, unless the rules set
/// it); never more than a third of the group's `max.poll.interval.ms`
/// (300 s by default), so an outage of the dead-letter topic never keeps
/// the consumer from polling long enough to be evicted.
const DLQ_SEND_TIMEOUT_MS: u64 = 10_000;

/// `message.timeout.ms` of the dead-letter producer (see [`DLQ_SEND_TIMEOUT_MS`]).
pub(super) fn dlq_send_timeout_ms(k: &KafkaSource) -> u64 {
    let poll = k
        .properties
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    DLQ_SEND_TIMEOUT_MS.min(poll / 3).max(1)
}

/// The retry schedule of a parked window's dead letters.
const DLQ_BACKOFF: crate::backoff::Backoff = crate::backoff::Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// A closed window whose rejected messages could not all be written to the
/// dead-letter topic. Its partition is paused (the consumer keeps polling,
/// so the group keeps it and no other replica takes the batch), nothing of
/// it is committed, and the dead-letter step is tried again on
/// [`DLQ_BACKOFF`]; when it succeeds the batch is committed, the partition
/// resumed, and reading goes on right after the window (messages that were
/// fetched meanwhile are read again, never skipped).
pub(super) struct Parked {
    pub(super) window: Window,
    pub(super) prepared: Prepared,
    /// Rejected messages already written, in order.
    pub(super) sent: usize,
    pub(super) attempts: u32,
    pub(super) next_try: Instant,
}

impl KafkaRun {
    /// Set a window aside until the dead-letter topic takes its rejected
    /// messages, pausing its partition (see [`Parked`]).
    pub(super) fn park(&mut self, dataset: &str, w: Window, prepared: Prepared, sent: usize) {
        let key = (w.topic.clone(), w.partition);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&w.topic, w.partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(dataset, topic = %w.topic, partition = w.partition, error = %e, "could not pause the partition; its messages are set aside until the batch is committed");
        }
        // what was read after the window is read again after the resume
        self.batcher.drop_partition(&w.topic, w.partition);
        let wait = DLQ_BACKOFF.delay(1, &mut self.rng);
        tracing::warn!(dataset, topic = %w.topic, partition = w.partition, first_offset = w.first(), last_offset = w.last(), dead_letters_left = prepared.rejected.len() - sent, retry_in_ms = wait.as_millis() as u64, "the dead-letter topic does not take the batch's rejected messages: the partition is paused and the batch waits, uncommitted (the consumer keeps polling, so the group keeps the partition)");
        self.parked.insert(
            key,
            Parked {
                window: w,
                prepared,
                sent,
                attempts: 1,
                next_try: Instant::now() + wait,
            },
        );
    }

    /// Try the dead-letter step of every parked window that is due again;
    /// queue those that get through for the pipeline (their partitions are
    /// resumed when the batch is acknowledged).
    pub(super) async fn retry_parked(&mut self, shutdown: &Shutdown) {
        let now = Instant::now();
        let due: Vec<(String, i32)> = self
            .parked
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let dataset = self.dataset.clone();
        for key in due {
            if shutdown.is_triggered() {
                return;
            }
            let Some(mut p) = self.parked.remove(&key) else {
                continue;
            };
            p.sent = self
                .dead_letter(&dataset, &p.window, &p.prepared.rejected, p.sent)
                .await;
            if p.sent < p.prepared.rejected.len() {
                p.attempts += 1;
                let wait = DLQ_BACKOFF.delay(p.attempts, &mut self.rng);
                p.next_try = Instant::now() + wait;
                tracing::warn!(dataset = %dataset, topic = %key.0, partition = key.1, attempts = p.attempts, retry_in_ms = wait.as_millis() as u64, "the dead-letter topic is still unavailable; the partition stays paused");
                self.parked.insert(key, p);
                continue;
            }
            let Parked {
                window, prepared, ..
            } = p;
            let dead_lettered = prepared.rejected.len() as u64;
            self.queue(&window, prepared, dead_lettered, true);
        }
    }

    /// Produce the rejected messages from `from` on to the dead-letter
    /// topic, each waiting at most [`dlq_send_timeout_ms`] for the broker;
    /// stops at the first that fails. Returns how many of `rejected` are
    /// written (all of them when there is no dead-letter topic: they are
    /// logged by offset and counted).
    pub(super) async fn dead_letter(
        &self,
        dataset: &str,
        w: &Window,
        rejected: &[(usize, String)],
        from: usize,
    ) -> usize {
        let (Some(producer), Some(dlq)) = (&self.producer, &self.cfg.dead_letter_topic) else {
            for (i, reason) in rejected {
                tracing::warn!(dataset, topic = %w.topic, partition = w.partition, offset = w.msgs[*i].offset, reason = %reason, "bad message skipped (no dead_letter_topic configured)");
            }
            return rejected.len();
        };
        for (n, (i, reason)) in rejected.iter().enumerate().skip(from) {
            let m = &w.msgs[*i];
            let partition = w.partition.to_string();
            let offset = m.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: DLQ_REASON,
                    value: Some(reason.as_str()),
                })
                .insert(Header {
                    key: DLQ_TOPIC,
                    value: Some(w.topic.as_str()),
                })
                .insert(Header {
                    key: DLQ_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: DLQ_OFFSET,
                    value: Some(offset.as_str()),
                })
                .insert(Header {
                    key: DLQ_DATASET,
                    value: Some(dataset),
                });
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq)
                .payload(m.payload.as_slice())
                .headers(headers);
            if let Some(k) = &m.key {
                rec = rec.key(k.as_slice());
            }
            if let Err((e, _)) = producer.send(rec, Duration::from_secs(1)).await {
                tracing::warn!(dataset, topic = %dlq, error = %e, "could not write to the dead-letter topic (the batch is not committed until it succeeds)");
                return n;
            }
            tracing::info!(dataset, topic = %w.topic, partition = w.partition, offset = m.offset, dead_letter_topic = %dlq, reason = %reason, "bad message sent to the dead-letter topic");
        }
        rejected.len()
    }
}
