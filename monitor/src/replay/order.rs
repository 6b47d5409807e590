//! The order of a drop-folder replay, and where each stream's evidence
//! starts.
//!
//! Evidence accumulates per stream in commit order. Files whose batch the
//! live history holds go first, in live's commit order, each in the stream
//! live gave it; each such stream starts from the evidence live had just
//! before its first replayed batch (in that stream, or in the manifests
//! written before streams). The other files follow in the order they came
//! in, in the drop folder's stream. Pure: the caller reads the history and
//! identifies the files.

use std::collections::{BTreeMap, HashMap};

use crate::compare::EvidenceState;
use crate::source::parquet_drop::DroppedFile;
use crate::source::stream;
use crate::store::history::Manifest;
use crate::store::history::streams::Pinned;

/// A replay's files in order, with the stream of each batch live holds
/// (by batch id) and the evidence each of those streams starts from.
pub(super) struct LiveOrder {
    pub files: Vec<DroppedFile>,
    pub streams: HashMap<String, String>,
    pub priors: Vec<(String, EvidenceState)>,
}

/// Order `files` (each with its batch id) against the live history `live`.
pub(super) fn live_order(live: &[Manifest], files: Vec<(String, DroppedFile)>) -> LiveOrder {
    let live_by_id: HashMap<&str, &Manifest> =
        live.iter().map(|m| (m.batch_id.as_str(), m)).collect();
    let stream_of = |m: &Manifest| m.stream.clone().unwrap_or_else(|| stream::DROP.to_string());
    let mut keyed: Vec<(Option<&Manifest>, String, DroppedFile)> = files
        .into_iter()
        .map(|(id, f)| (live_by_id.get(id.as_str()).copied(), id, f))
        .collect();
    // a stable sort: files live never saw keep their order, after the rest
    keyed.sort_by_key(|(seen, ..)| seen.map_or(u64::MAX, |m| m.seq));
    let streams = keyed
        .iter()
        .filter_map(|(seen, id, _)| seen.map(|m| (id.clone(), stream_of(m))))
        .collect();
    let mut first: BTreeMap<String, u64> = BTreeMap::new();
    for m in keyed.iter().filter_map(|(seen, ..)| *seen) {
        first.entry(stream_of(m)).or_insert(m.seq);
    }
    let priors = first
        .iter()
        .filter_map(|(stream, first)| {
            live.iter()
                .rev()
                .filter(|m| m.seq < *first)
                .filter(|m| m.stream.is_none() || m.stream.as_deref() == Some(stream))
                .find_map(|m| m.evidence.clone())
                .map(|e| (stream.clone(), e))
        })
        .collect();
    LiveOrder {
        files: keyed.into_iter().map(|(.., f)| f).collect(),
        streams,
        priors,
    }
}

/// The evidence each live batch pooled with (its manifest's `pooled`: the
/// fleet's other streams at their positions then), read back from the live
/// manifests at those positions: a replay pools the same. Each position's
/// evidence is kept once, however many batches pooled it.
pub(super) fn pooled_siblings(live: &[Manifest]) -> Pinned {
    let mut pinned = Pinned::default();
    for m in live.iter().filter(|m| !m.pooled.is_empty()) {
        let cut = m.pooled.iter().map(|(s, seq)| (s.clone(), *seq)).collect();
        pinned.cuts.insert(m.batch_id.clone(), cut);
    }
    let wanted: std::collections::HashSet<(&str, u64)> = live
        .iter()
        .flat_map(|m| m.pooled.iter().map(|(s, seq)| (s.as_str(), *seq)))
        .collect();
    for m in live {
        if let (Some(stream), Some(seq), Some(e)) = (&m.stream, m.stream_seq, &m.evidence)
            && wanted.contains(&(stream.as_str(), seq))
        {
            pinned.evidence.insert((stream.clone(), seq), e.clone());
        }
    }
    pinned
}
