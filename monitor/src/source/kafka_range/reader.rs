//! Reading a plan: one partition at a time from an explicit offset, cut
//! into the plan's windows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::plan::{LiveSpan, Segment, plan};
use super::resolve::{fatal, replay_consumer, resolve};
use super::{KafkaRange, KafkaRangeError, PartitionRange, STALL_TIMEOUT, Tp};
use crate::config::model::KafkaSource;
use crate::source::kafka::{Batcher, OwnedMsg, Window, WindowLimits, own_message};

/// Reads a planned range one segment at a time and yields its batches.
pub struct RangeReader {
    consumer: BaseConsumer,
    cfg: KafkaSource,
    /// The resolved range, per partition.
    pub ranges: Vec<PartitionRange>,
    segments: VecDeque<Segment>,
    /// Messages the plan covers (for a progress bar).
    pub planned_messages: u64,
    /// Segments that are live batches.
    pub live_segments: usize,
    current: Option<Segment>,
    live_window: Option<Window>,
    batcher: Batcher,
    ready: VecDeque<Window>,
    /// The partition assigned, and the offset at which a segment continues
    /// it without a new assignment (where the previous segment ended).
    assigned: Option<(Tp, i64)>,
    /// The lowest offset still expected from the assigned partition
    /// (anything lower is stale).
    expected: i64,
    peeked: Option<OwnedMsg>,
    /// The time every window is opened at (windows never close by time here).
    epoch: Instant,
}

impl RangeReader {
    /// Connect, resolve the range and plan its batches from the live spans.
    pub fn open(
        cfg: &KafkaSource,
        range: &KafkaRange,
        live: &[LiveSpan],
    ) -> Result<RangeReader, KafkaRangeError> {
        let consumer = replay_consumer(cfg)?;
        let ranges = resolve(&consumer, &cfg.topics, range)?;
        let (segments, notes) = plan(&ranges, live);
        for n in &notes {
            tracing::info!(note = %n, "replay range widened");
        }
        let planned_messages = segments.iter().map(|s| (s.end - s.from) as u64).sum();
        let live_segments = segments.iter().filter(|s| s.live).count();
        Ok(RangeReader {
            consumer,
            cfg: cfg.clone(),
            ranges,
            segments: segments.into(),
            planned_messages,
            live_segments,
            current: None,
            live_window: None,
            batcher: Batcher::new(WindowLimits {
                max_records: cfg.max_records,
                max_bytes: cfg.max_bytes,
                // never by time: the batcher is never asked what is due
                max_age: Duration::from_secs(u32::MAX as u64),
            }),
            ready: VecDeque::new(),
            assigned: None,
            expected: 0,
            peeked: None,
            epoch: Instant::now(),
        })
    }

    /// The next batch of the range, in plan order; `None` at the end.
    pub fn next_window(&mut self) -> Result<Option<Window>, KafkaRangeError> {
        loop {
            if let Some(w) = self.ready.pop_front() {
                return Ok(Some(w));
            }
            let seg = match &self.current {
                Some(s) => s.clone(),
                None => {
                    let Some(s) = self.segments.pop_front() else {
                        return Ok(None);
                    };
                    self.position(&s)?;
                    self.current = Some(s.clone());
                    s
                }
            };
            match self.next_message(&seg)? {
                Some(m) if m.offset < seg.end => {
                    let done = m.offset + 1 >= seg.end;
                    self.add(&seg, m);
                    if done {
                        self.finish(&seg);
                    }
                }
                Some(m) => {
                    self.peeked = Some(m);
                    self.finish(&seg);
                }
                None => self.finish(&seg),
            }
        }
    }

    /// Assign the segment's partition at its first offset, unless the
    /// consumer is there already (the previous segment ended where it starts).
    fn position(&mut self, s: &Segment) -> Result<(), KafkaRangeError> {
        let tp = (s.topic.clone(), s.partition);
        if self.assigned.as_ref() == Some(&(tp.clone(), s.from)) {
            return Ok(());
        }
        self.peeked = None;
        let mut tpl = TopicPartitionList::new();
        let assign_err = |source| KafkaRangeError::Assign {
            topic: s.topic.clone(),
            partition: s.partition,
            offset: s.from,
            source,
        };
        tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.from))
            .map_err(assign_err)?;
        self.consumer.assign(&tpl).map_err(assign_err)?;
        self.assigned = Some((tp, s.from));
        self.expected = s.from;
        Ok(())
    }

    /// The next message of the segment's partition, or `None` at its end.
    fn next_message(&mut self, s: &Segment) -> Result<Option<OwnedMsg>, KafkaRangeError> {
        if let Some(m) = self.peeked.take() {
            return Ok(Some(m));
        }
        let expected = self.expected;
        let started = Instant::now();
        loop {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let (t, p, msg) = own_message(&self.cfg, &m);
                    // anything from an earlier assignment is stale
                    if t != s.topic || p != s.partition || msg.offset < expected {
                        continue;
                    }
                    self.expected = msg.offset + 1;
                    return Ok(Some(msg));
                }
                // an end of partition counts once the position is past the
                // segment (one seen before is stale)
                Some(Err(KafkaError::PartitionEOF(p)))
                    if p == s.partition && self.at_or_past(s) =>
                {
                    return Ok(None);
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) if fatal(&e) => {
                    return Err(KafkaRangeError::Consume {
                        topic: s.topic.clone(),
                        partition: s.partition,
                        offset: expected,
                        source: e,
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %s.topic, partition = s.partition, error = %e, "kafka consumer error during replay; retrying");
                }
                None => {}
            }
            if started.elapsed() > STALL_TIMEOUT {
                return Err(KafkaRangeError::Stalled {
                    topic: s.topic.clone(),
                    partition: s.partition,
                    offset: expected,
                    end: s.end,
                    secs: STALL_TIMEOUT.as_secs(),
                });
            }
        }
    }

    /// Whether the consumer's position on the segment's partition is at or
    /// past the segment's end (or unknown: nothing was read since the
    /// assignment, so the end came right at the segment's start).
    fn at_or_past(&self, s: &Segment) -> bool {
        self.consumer.position().is_ok_and(|tpl| {
            tpl.elements().iter().any(|e| {
                e.topic() == s.topic
                    && e.partition() == s.partition
                    && match e.offset() {
                        Offset::Offset(o) => o >= s.end,
                        _ => true,
                    }
            })
        })
    }

    fn add(&mut self, s: &Segment, m: OwnedMsg) {
        if s.live {
            let w = self.live_window.get_or_insert_with(|| Window {
                topic: s.topic.clone(),
                partition: s.partition,
                msgs: Vec::new(),
                bytes: 0,
                opened: self.epoch,
                touched: self.epoch,
            });
            w.bytes += m.payload.len() as u64;
            w.msgs.push(m);
        } else {
            let closed = self.batcher.push(&s.topic, s.partition, m, self.epoch);
            self.ready.extend(closed);
        }
    }

    fn finish(&mut self, s: &Segment) {
        if s.live {
            self.ready.extend(self.live_window.take());
        } else {
            self.ready.extend(self.batcher.flush(&s.topic, s.partition));
        }
        if let Some((tp, next)) = self.assigned.as_mut()
            && tp.0 == s.topic
            && tp.1 == s.partition
        {
            *next = s.end;
        }
        self.current = None;
    }
}
