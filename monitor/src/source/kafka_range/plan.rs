//! The replay plan: live batches as the history recorded them, and the
//! segments a range is read in (live spans whole, the rest cut like a live
//! run would), in the live commit order.

use super::PartitionRange;
use crate::source::kafka::parse_origin;
use crate::store::history::Manifest;

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
