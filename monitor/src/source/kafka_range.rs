//! Kafka topic ranges for `dqmon replay`: which messages to read again, cut
//! into which batches, in which order.
//!
//! Owns: parsing range bounds (`earliest`, `latest`, per-partition offsets,
//! RFC 3339 times), resolving them against the brokers (watermarks,
//! `offsets_for_times`), planning the batch boundaries, and a consumer that
//! reads the plan. It must not decode, profile or commit: windows go
//! through `super::kafka::WindowDecoder` into the pipeline ([`crate::pipeline`]),
//! as the live run's do, driven by [`crate::replay`].
//!
//! The consumer never joins or commits for the live group: it `assign`s
//! one partition at a time at an explicit offset (never `subscribe`), under
//! a group id of its own (`<group_id>.dqmon-replay`), with
//! `enable.auto.commit=false`, no offset store and no commit call.
//!
//! Batch boundaries are the live ones, so that batch ids, and so alerts,
//! match live monitoring's:
//!
//! ```text
//!  live history (the dataset's state folder, read only)
//!   kafka:t/0@0-3999  seq 1      ──► live segment: exactly those offsets, one batch
//!   kafka:t/1@0-4102  seq 2      ──► ...
//!  offsets of the range that no live manifest covers
//!                                ──► cut segment: batch-id header changes,
//!                                    max_records, max_bytes, end of segment;
//!                                    never time (windows closed by time are
//!                                    not reproducible)
//! ```
//!
//! A range bound inside a live batch is widened to the whole batch. Segments
//! run in the live commit order (`seq`), a cut segment just before the live
//! batch that follows it on its partition, and cut segments after every live
//! one in (topic, partition) order: the replay's alerts come out in the
//! same order as the live `alerts.jsonl`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::{
    Batcher, KafkaSourceError, OwnedMsg, Window, WindowLimits, client_config, own_message,
    parse_origin,
};
use crate::config::model::KafkaSource;
use crate::store::history::Manifest;

/// How long a metadata or offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the reader waits for the next message of a partition before
/// giving up (the message is known to exist: it is below the end offset).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a Kafka range could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaRangeError {
    #[error(
        "`{value}` is not a Kafka range bound: {reason}; give `earliest`, `latest`, offsets per partition such as `0:120,1:95` (`topic/0:120` when the dataset reads several topics), or an RFC 3339 time such as 2024-06-01T10:00:00Z"
    )]
    BadBound { value: String, reason: String },
    #[error(transparent)]
    Client(#[from] KafkaSourceError),
    #[error(
        "could not read the partitions of topic `{topic}`: {source}; check `source.kafka.brokers` and that the topic exists"
    )]
    Metadata {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic `{topic}` has no partition on the brokers; check its name in the rules")]
    NoTopic { topic: String },
    #[error(
        "`{topic}` is not a topic of this dataset (it reads {topics}); name one of them before the partition, such as `{first}/0:120`"
    )]
    UnknownTopic {
        topic: String,
        topics: String,
        first: String,
    },
    #[error(
        "partition {partition} is named without its topic, but the dataset reads several topics ({topics}); write it as `topic/{partition}:OFFSET`"
    )]
    AmbiguousTopic { partition: i32, topics: String },
    #[error(
        "topic `{topic}` has no partition {partition} (it has {count}: 0 to {last})",
        last = .count - 1
    )]
    NoPartition {
        topic: String,
        partition: i32,
        count: i32,
    },
    #[error("partition {topic}/{partition} is given twice in one bound; give each partition once")]
    Duplicate { topic: String, partition: i32 },
    #[error(
        "--kafka-to names {topic}/{partition}, which --kafka-from does not replay; add it to --kafka-from or leave it out"
    )]
    NotInFrom { topic: String, partition: i32 },
    #[error(
        "could not read the offsets of {topic}/{partition}: {source}; check that the brokers are reachable"
    )]
    Watermarks {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error(
        "could not look up offsets by time: {source}; check that the brokers are reachable (Kafka 0.10.1 or later answers time lookups)"
    )]
    Times {
        #[source]
        source: KafkaError,
    },
    #[error(
        "{topic}/{partition} starts at offset {low} now (older messages were deleted by retention), so offset {offset} cannot be replayed; start at {low} or later, or use `earliest`"
    )]
    BeforeRetention {
        topic: String,
        partition: i32,
        offset: i64,
        low: i64,
    },
    #[error(
        "{topic}/{partition} ends at offset {high} (the next offset to be written), so offset {offset} is past its end; give {high} or less, or leave --kafka-to out"
    )]
    PastEnd {
        topic: String,
        partition: i32,
        offset: i64,
        high: i64,
    },
    #[error(
        "the range of {topic}/{partition} ends (offset {end}) before it starts (offset {start}); --kafka-to must not come before --kafka-from"
    )]
    Backwards {
        topic: String,
        partition: i32,
        start: i64,
        end: i64,
    },
    #[error(
        "the end of {topic} partition(s) {partitions} did not come within {secs} s; check the brokers and rerun the replay"
    )]
    EndUnknown {
        topic: String,
        partitions: String,
        secs: u64,
    },
    #[error("could not assign {topic}/{partition} at offset {offset}: {source}")]
    Assign {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: KafkaError,
    },
    #[error(
        "could not read {topic}/{partition} at offset {offset}: {source}; the messages may have been deleted by retention since the replay started, rerun it"
    )]
    Consume {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: KafkaError,
    },
    #[error(
        "no message came from {topic}/{partition} at offset {offset} for {secs} s although the range goes on to offset {end}; check the brokers and rerun the replay"
    )]
    Stalled {
        topic: String,
        partition: i32,
        offset: i64,
        end: i64,
        secs: u64,
    },
}

/// One end of a replayed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The first offset still on the brokers (low watermark).
    Earliest,
    /// The end of each partition when the replay starts (high watermark).
    Latest,
    /// Offsets of some partitions. As a start, only these partitions are
    /// replayed; as an end, unnamed partitions go to their high watermark.
    Offsets(Vec<PartitionOffset>),
    /// The first message at or after this time (`offsets_for_times`).
    Time(DateTime<Utc>),
}

/// `[topic/]partition:offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: Option<String>,
    pub partition: i32,
    pub offset: i64,
}

impl FromStr for Bound {
    type Err = KafkaRangeError;

    fn from_str(s: &str) -> Result<Bound, KafkaRangeError> {
        let value = s.trim();
        let bad = |reason: &str| KafkaRangeError::BadBound {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        match value.to_ascii_lowercase().as_str() {
            "" => return Err(bad("it is empty")),
            "earliest" => return Ok(Bound::Earliest),
            "latest" => return Ok(Bound::Latest),
            _ => {}
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(value) {
            return Ok(Bound::Time(t.with_timezone(&Utc)));
        }
        let looks_like_time = value.len() >= 10
            && value.as_bytes()[4] == b'-'
            && value.as_bytes()[..4].iter().all(u8::is_ascii_digit);
        if looks_like_time {
            return Err(bad(
                "it looks like a time but is not RFC 3339 (a date, `T`, a time and a zone, such as 2024-06-01T10:00:00Z)",
            ));
        }
        let mut out = Vec::new();
        for item in value.split(',') {
            let item = item.trim();
            let Some((tp, offset)) = item.split_once(':') else {
                return Err(bad(&format!(
                    "`{item}` has no `:` between partition and offset"
                )));
            };
            let (topic, partition) = match tp.rsplit_once('/') {
                Some((t, p)) if !t.is_empty() => (Some(t.to_string()), p),
                Some(_) => return Err(bad(&format!("`{item}` has an empty topic"))),
                None => (None, tp),
            };
            let partition: i32 = partition.trim().parse().map_err(|_| {
                bad(&format!(
                    "`{partition}` in `{item}` is not a partition number"
                ))
            })?;
            let offset: i64 = offset
                .trim()
                .parse()
                .map_err(|_| bad(&format!("`{offset}` in `{item}` is not an offset")))?;
            if partition < 0 || offset < 0 {
                return Err(bad(&format!(
                    "`{item}`: partitions and offsets are not negative"
                )));
            }
            out.push(PartitionOffset {
                topic,
                partition,
                offset,
            });
        }
        Ok(Bound::Offsets(out))
    }
}

/// A replayed range: from (inclusive) to (exclusive: the first offset not
/// replayed, as Kafka's committed offsets and high watermarks read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRange {
    pub from: Bound,
    /// `None`: the high watermark of each partition when the replay starts.
    pub to: Option<Bound>,
}

/// A topic and partition.
pub type Tp = (String, i32);

/// One partition's part of a range, resolved against the brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    /// Low and high watermarks when the replay started.
    pub low: i64,
    pub high: i64,
    /// First offset replayed.
    pub start: i64,
    /// First offset not replayed.
    pub end: i64,
}

/// A batch live monitoring recorded (from a manifest's origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSpan {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub seq: u64,
}

/// The live batches of the dataset's topics, from the live history's manifests.
pub fn live_spans(manifests: &[Manifest], topics: &[String]) -> Vec<LiveSpan> {
    manifests
        .iter()
        .filter_map(|m| {
            let (topic, partition, first, last) = parse_origin(&m.source)?;
            topics.contains(&topic).then_some(LiveSpan {
                topic,
                partition,
                first,
                last,
                seq: m.seq,
            })
        })
        .collect()
}

/// Offsets of one partition read as one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub topic: String,
    pub partition: i32,
    /// First offset.
    pub from: i64,
    /// First offset after the segment.
    pub end: i64,
    /// A batch live monitoring recorded: exactly one batch. Otherwise the
    /// segment is cut by batch-id header, `max_records` and `max_bytes`.
    pub live: bool,
}

/// Cut resolved ranges into segments and order them (see the module doc).
/// Pure. Returns the segments and notes for the log (widened bounds).
pub fn plan(ranges: &[PartitionRange], live: &[LiveSpan]) -> (Vec<Segment>, Vec<String>) {
    let mut notes = Vec::new();
    let mut keyed: Vec<((u64, u8), Segment)> = Vec::new();
    for r in ranges {
        let mut spans: Vec<&LiveSpan> = live
            .iter()
            .filter(|s| s.topic == r.topic && s.partition == r.partition)
            .collect();
        spans.sort_by_key(|s| (s.first, s.last, s.seq));
        let (mut start, mut end) = (r.start, r.end);
        if start < end {
            // widen bounds that fall inside a live batch to the whole batch
            if let Some(s) = spans
                .iter()
                .find(|s| s.first < start && start <= s.last && s.first >= r.low)
            {
                notes.push(format!(
                    "{}/{}: the range starts inside the live batch {}-{}; starting at {} to replay it whole",
                    r.topic, r.partition, s.first, s.last, s.first
                ));
                start = s.first;
            }
            if let Some(s) = spans
                .iter()
                .find(|s| s.first < end && end <= s.last && s.last < r.high)
            {
                notes.push(format!(
                    "{}/{}: the range ends inside the live batch {}-{}; ending after {} to replay it whole",
                    r.topic, r.partition, s.first, s.last, s.last
                ));
                end = s.last + 1;
            }
        }
        let mut cursor = start;
        for s in spans {
            if s.first < cursor || s.last >= end {
                // outside the range, or overlapping what is planned already:
                // its offsets (if in the range) are cut like unrecorded ones
                continue;
            }
            if s.first > cursor {
                keyed.push((
                    (s.seq, 0),
                    Segment {
                        topic: r.topic.clone(),
                        partition: r.partition,
                        from: cursor,
                        end: s.first,
                        live: false,
                    },
                ));
            }
            keyed.push((
                (s.seq, 1),
                Segment {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    from: s.first,
                    end: s.last + 1,
                    live: true,
                },
            ));
            cursor = s.last + 1;
        }
        if cursor < end {
            keyed.push((
                (u64::MAX, 0),
                Segment {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    from: cursor,
                    end,
                    live: false,
                },
            ));
        }
    }
    keyed.sort_by(|(ka, a), (kb, b)| {
        (ka, &a.topic, a.partition, a.from).cmp(&(kb, &b.topic, b.partition, b.from))
    });
    (keyed.into_iter().map(|(_, s)| s).collect(), notes)
}

/// The replay consumer: the dataset's client settings, a group id that is
/// not the live one, no commits, no offset store, errors instead of resets.
fn replay_consumer(cfg: &KafkaSource) -> Result<BaseConsumer, KafkaRangeError> {
    let mut c = client_config(cfg)?;
    c.set("group.id", replay_group_id(cfg));
    c.remove("group.instance.id");
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("enable.partition.eof", "true");
    c.set("auto.offset.reset", "error");
    c.create()
        .map_err(|e| KafkaRangeError::Client(KafkaSourceError::Client(e)))
}

/// The group id a replay's consumer uses: never the live group's.
pub fn replay_group_id(cfg: &KafkaSource) -> String {
    format!("{}.dqmon-replay", cfg.group_id)
}

/// Resolve a range against the brokers: partitions, watermarks, times.
fn resolve(
    consumer: &BaseConsumer,
    topics: &[String],
    range: &KafkaRange,
) -> Result<Vec<PartitionRange>, KafkaRangeError> {
    let mut counts: BTreeMap<String, i32> = BTreeMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|source| KafkaRangeError::Metadata {
                topic: topic.clone(),
                source,
            })?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32);
        if n == 0 {
            return Err(KafkaRangeError::NoTopic {
                topic: topic.clone(),
            });
        }
        counts.insert(topic.clone(), n);
    }
    let named = |b: &Bound| -> Result<Option<BTreeMap<Tp, i64>>, KafkaRangeError> {
        let Bound::Offsets(list) = b else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        for po in list {
            let topic = match &po.topic {
                Some(t) if counts.contains_key(t) => t.clone(),
                Some(t) => {
                    return Err(KafkaRangeError::UnknownTopic {
                        topic: t.clone(),
                        topics: topics.join(", "),
                        first: topics.first().cloned().unwrap_or_default(),
                    });
                }
                None if topics.len() == 1 => topics[0].clone(),
                None => {
                    return Err(KafkaRangeError::AmbiguousTopic {
                        partition: po.partition,
                        topics: topics.join(", "),
                    });
                }
            };
            let count = counts[&topic];
            if po.partition >= count {
                return Err(KafkaRangeError::NoPartition {
                    topic,
                    partition: po.partition,
                    count,
                });
            }
            if out
                .insert((topic.clone(), po.partition), po.offset)
                .is_some()
            {
                return Err(KafkaRangeError::Duplicate {
                    topic,
                    partition: po.partition,
                });
            }
        }
        Ok(Some(out))
    };
    let from_named = named(&range.from)?;
    let to = range.to.clone().unwrap_or(Bound::Latest);
    let to_named = named(&to)?;
    let chosen: BTreeSet<Tp> = match &from_named {
        Some(m) => m.keys().cloned().collect(),
        None => counts
            .iter()
            .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
            .collect(),
    };
    if let Some(m) = &to_named
        && let Some((t, p)) = m.keys().find(|k| !chosen.contains(*k))
    {
        return Err(KafkaRangeError::NotInFrom {
            topic: t.clone(),
            partition: *p,
        });
    }
    let mut marks = BTreeMap::new();
    for (t, p) in &chosen {
        let wm = consumer
            .fetch_watermarks(t, *p, REQUEST_TIMEOUT)
            .map_err(|source| KafkaRangeError::Watermarks {
                topic: t.clone(),
                partition: *p,
                source,
            })?;
        marks.insert((t.clone(), *p), wm);
    }
    for topic in topics {
        let parts: Vec<(i32, i64, i64)> = marks
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), (low, high))| (*p, *low, *high))
            .collect();
        if parts.is_empty() {
            continue;
        }
        for (p, end) in fetched_ends(consumer, topic, &parts)? {
            if let Some(m) = marks.get_mut(&(topic.clone(), p)) {
                m.1 = m.1.max(end);
            }
        }
    }
    let by_time = |at: &DateTime<Utc>| -> Result<BTreeMap<Tp, i64>, KafkaRangeError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &chosen {
            tpl.add_partition_offset(t, *p, Offset::Offset(at.timestamp_millis()))
                .map_err(|source| KafkaRangeError::Times { source })?;
        }
        let got = consumer
            .offsets_for_times(tpl, REQUEST_TIMEOUT)
            .map_err(|source| KafkaRangeError::Times { source })?;
        let mut out = BTreeMap::new();
        for e in got.elements() {
            let key = (e.topic().to_string(), e.partition());
            let high = marks.get(&key).map_or(0, |m: &(i64, i64)| m.1);
            if let Err(source) = e.error() {
                return Err(KafkaRangeError::Times { source });
            }
            // no message at or after the time: the end of the partition
            let off = match e.offset() {
                Offset::Offset(o) if o >= 0 => o.min(high),
                _ => high,
            };
            out.insert(key, off);
        }
        Ok(out)
    };
    let from_times = match &range.from {
        Bound::Time(at) => Some(by_time(at)?),
        _ => None,
    };
    let to_times = match &to {
        Bound::Time(at) => Some(by_time(at)?),
        _ => None,
    };
    let mut out = Vec::new();
    for key in &chosen {
        let (low, high) = marks[key];
        let (topic, partition) = key.clone();
        let at =
            |b: &Bound, named: &Option<BTreeMap<Tp, i64>>, times: &Option<BTreeMap<Tp, i64>>| {
                match b {
                    Bound::Earliest => low,
                    Bound::Latest => high,
                    Bound::Offsets(_) => named
                        .as_ref()
                        .and_then(|m| m.get(key).copied())
                        .unwrap_or(high),
                    Bound::Time(_) => times
                        .as_ref()
                        .and_then(|m| m.get(key).copied())
                        .unwrap_or(high),
                }
            };
        let start = at(&range.from, &from_named, &from_times);
        let end = at(&to, &to_named, &to_times);
        for offset in [start, end] {
            if offset > high {
                return Err(KafkaRangeError::PastEnd {
                    topic,
                    partition,
                    offset,
                    high,
                });
            }
        }
        if start < low {
            return Err(KafkaRangeError::BeforeRetention {
                topic,
                partition,
                offset: start,
                low,
            });
        }
        if end < start {
            return Err(KafkaRangeError::Backwards {
                topic,
                partition,
                start,
                end,
            });
        }
        out.push(PartitionRange {
            topic,
            partition,
            low,
            high,
            start,
            end,
        });
    }
    Ok(out)
}

/// The end of each partition (the offset after its last message) as a fetch
/// sees it. On Kafka it is the high watermark the brokers listed, and only
/// the last message is read to confirm it. Some Kafka-compatible brokers
/// (tansu 0.6) list the start of the last record batch plus one instead,
/// and serve fetches only from record-batch starts: reading from the listed
/// watermark minus one reads that last record batch (and drops it), which
/// finds the real end on both.
fn fetched_ends(
    consumer: &BaseConsumer,
    topic: &str,
    parts: &[(i32, i64, i64)],
) -> Result<BTreeMap<i32, i64>, KafkaRangeError> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    let assign_err = |&(partition, offset): &(i32, i64)| {
        move |source| KafkaRangeError::Assign {
            topic: topic.to_string(),
            partition,
            offset,
            source,
        }
    };
    for &(partition, low, high) in parts {
        let at = (partition, (high - 1).max(low));
        tpl.add_partition_offset(topic, partition, Offset::Offset(at.1))
            .map_err(assign_err(&at))?;
        ends.insert(partition, high);
    }
    consumer
        .assign(&tpl)
        .map_err(assign_err(&(parts[0].0, parts[0].2)))?;
    let mut pending: BTreeSet<i32> = ends.keys().copied().collect();
    let started = Instant::now();
    while !pending.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.topic() == topic && pending.contains(&m.partition()) => {
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) if fatal(&e) => {
                return Err(KafkaRangeError::Consume {
                    topic: topic.to_string(),
                    partition: *pending.first().unwrap_or(&0),
                    offset: -1,
                    source: e,
                });
            }
            Some(Err(e)) => {
                tracing::warn!(topic, error = %e, "kafka consumer error while finding the end of partitions; retrying");
            }
            _ => {}
        }
        if started.elapsed() > STALL_TIMEOUT {
            return Err(KafkaRangeError::EndUnknown {
                topic: topic.to_string(),
                partitions: pending
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                secs: STALL_TIMEOUT.as_secs(),
            });
        }
    }
    let _ = consumer.unassign();
    Ok(ends)
}

/// Errors that no retry cures: the offset is gone, or the partition is.
fn fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OffsetOutOfRange
                | RDKafkaErrorCode::AutoOffsetReset
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn po(topic: Option<&str>, partition: i32, offset: i64) -> PartitionOffset {
        PartitionOffset {
            topic: topic.map(str::to_string),
            partition,
            offset,
        }
    }

    #[test]
    fn bounds_parse_offsets_times_and_keywords() {
        assert_eq!("earliest".parse::<Bound>().unwrap(), Bound::Earliest);
        assert_eq!(" Latest ".parse::<Bound>().unwrap(), Bound::Latest);
        assert_eq!(
            "0:120, 1:95".parse::<Bound>().unwrap(),
            Bound::Offsets(vec![po(None, 0, 120), po(None, 1, 95)])
        );
        assert_eq!(
            "pay.ments-1/3:7".parse::<Bound>().unwrap(),
            Bound::Offsets(vec![po(Some("pay.ments-1"), 3, 7)])
        );
        let Bound::Time(t) = "2024-06-01T12:00:00+02:00".parse::<Bound>().unwrap() else {
            panic!("a time");
        };
        assert_eq!(t.timestamp_millis(), 1_717_236_000_000);
        for (bad, says) in [
            ("", "empty"),
            ("0=120", "no `:`"),
            ("x:1", "not a partition"),
            ("0:many", "not an offset"),
            ("0:-5", "not negative"),
            ("/0:1", "empty topic"),
            ("2024-06-01 10:00", "not RFC 3339"),
        ] {
            let e = bad.parse::<Bound>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("give `earliest`"), "{e}");
        }
    }

    fn range(p: i32, start: i64, end: i64) -> PartitionRange {
        PartitionRange {
            topic: "t".into(),
            partition: p,
            low: 0,
            high: 100,
            start,
            end,
        }
    }

    fn span(p: i32, first: i64, last: i64, seq: u64) -> LiveSpan {
        LiveSpan {
            topic: "t".into(),
            partition: p,
            first,
            last,
            seq,
        }
    }

    fn seg(p: i32, from: i64, end: i64, live: bool) -> Segment {
        Segment {
            topic: "t".into(),
            partition: p,
            from,
            end,
            live,
        }
    }

    #[test]
    fn the_plan_follows_live_batches_in_commit_order() {
        let live = [
            span(1, 0, 9, 1),
            span(0, 0, 4, 2),
            span(0, 5, 19, 3),
            span(1, 10, 19, 4),
        ];
        let (segs, notes) = plan(&[range(0, 0, 30), range(1, 0, 20)], &live);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            segs,
            vec![
                seg(1, 0, 10, true),
                seg(0, 0, 5, true),
                seg(0, 5, 20, true),
                seg(1, 10, 20, true),
                // not recorded live: after every live batch
                seg(0, 20, 30, false),
            ]
        );
    }

    #[test]
    fn bounds_inside_a_live_batch_are_widened_and_gaps_are_cut() {
        let live = [span(0, 10, 19, 1), span(0, 30, 39, 2), span(0, 40, 49, 3)];
        let (segs, notes) = plan(&[range(0, 15, 45)], &live);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(
            segs,
            vec![
                seg(0, 10, 20, true),
                // the gap before the next live batch comes right before it
                seg(0, 20, 30, false),
                seg(0, 30, 40, true),
                seg(0, 40, 50, true),
            ]
        );
        // without a live history: one segment, cut by header and size
        let (segs, _) = plan(&[range(0, 15, 45)], &[]);
        assert_eq!(segs, vec![seg(0, 15, 45, false)]);
        // an empty range plans nothing
        assert!(plan(&[range(0, 7, 7)], &live).0.is_empty());
    }

    #[test]
    fn a_live_batch_partly_deleted_by_retention_is_cut_not_widened() {
        let mut r = range(0, 12, 30);
        r.low = 12;
        let (segs, notes) = plan(&[r], &[span(0, 10, 19, 1), span(0, 20, 29, 2)]);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(segs, vec![seg(0, 12, 20, false), seg(0, 20, 30, true)]);
    }
}
