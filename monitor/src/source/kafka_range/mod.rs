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
//!
//! Files: this one parses bounds (and holds the types and tests),
//! `resolve.rs` asks the brokers, `plan.rs` cuts segments, `reader.rs`
//! reads them.

mod plan;
mod reader;
mod resolve;

pub use plan::{LiveSpan, Segment, live_spans, plan};
pub use reader::RangeReader;
pub use resolve::replay_group_id;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::error::KafkaError;

use super::kafka::KafkaSourceError;

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
