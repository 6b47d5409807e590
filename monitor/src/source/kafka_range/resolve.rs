//! Range bounds resolved against the brokers: watermarks, offsets for
//! times, and the replay's own consumer (assign only, never commits).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    Bound, KafkaRange, KafkaRangeError, PartitionRange, REQUEST_TIMEOUT, STALL_TIMEOUT, Tp,
};
use crate::config::model::KafkaSource;
use crate::source::kafka::{KafkaSourceError, client_config};

/// The replay consumer: the dataset's client settings, a group id that is
/// not the live one, no commits, no offset store, errors instead of resets.
pub(super) fn replay_consumer(cfg: &KafkaSource) -> Result<BaseConsumer, KafkaRangeError> {
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
pub(super) fn resolve(
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
pub(super) fn fetched_ends(
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
pub(super) fn fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OffsetOutOfRange
                | RDKafkaErrorCode::AutoOffsetReset
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}
