//! Input streams in the history: the sequences along which evidence
//! accumulates.
//!
//! Evidence accumulates per input stream ([`Manifest::stream`]: what one
//! reader reads in order, e.g. a drop location, a Kafka consumer's
//! partitions, or in a fleet one Kafka partition; the sources name
//! them), in the stream's own order: each
//! processed batch takes the next position of its stream and carries the
//! evidence after it. So the evidence of a partition does not depend on how
//! its batches interleaved with other partitions' (live and a replay agree
//! whatever the timing), and a replica that takes a partition over
//! continues the partition's evidence. `history/streams/<stream>/<seq>.json`
//! indexes the positions, so that the head of a stream is one listing
//! (`start-after` the last position known) and one read away, however long
//! the history. Manifests written before streams (no `stream`) are every
//! stream's past: a stream without a position of its own continues from
//! the last of them.
//!
//! ```text
//!   stream kafka.orders.0:  b1 ─ b4 ─ b5 ─▶ evidence after b5
//!   stream kafka.orders.1:  b2 ─ b3 ─ b6 ─▶ evidence after b6
//!   (commit order b1 … b6 interleaves them; the evidence does not)
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dqmon_core::compare::EvidenceState;

use super::summary::BatchSummary;
use super::{History, HistoryError, Manifest, io, manifest_key};
use crate::backend::Put;

/// How often the streams of a shared history are listed again for the
/// evidence a batch pools with.
pub const SIBLING_REFRESH: Duration = Duration::from_secs(5);
/// How long a stream whose head does not move keeps pooling.
pub const SIBLING_IDLE: Duration = Duration::from_secs(15 * 60);

/// Another stream a batch pools its evidence with: its id, its position,
/// and the evidence after that position.
pub type Sibling = (String, u64, EvidenceState);

/// What a replay pools each batch with: per batch id, the streams and
/// positions live pooled it with (`cuts`), and the evidence after each
/// such position, once (`evidence`; many batches share one).
#[derive(Debug, Clone, Default)]
pub struct Pinned {
    pub cuts: HashMap<String, Vec<(String, u64)>>,
    pub evidence: HashMap<(String, u64), EvidenceState>,
}

/// Where a stream stands: its last position, and the evidence after it.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamHead {
    /// `None`: no batch of the stream yet (the evidence is the past's, or a
    /// replay's starting point).
    pub(super) seq: Option<u64>,
    pub(super) evidence: dqmon_core::compare::EvidenceState,
}

/// Whether a name can be a stream id: a key part that listings show
/// (`[A-Za-z0-9._-]`, not starting with a dot).
pub fn is_stream_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The key of a stream's position.
pub(super) fn stream_key(stream: &str, seq: u64) -> String {
    format!("history/streams/{stream}/{seq:020}.json")
}

impl History {
    /// Move a stream's head to a committed batch when it is further on.
    pub(super) fn advance(&mut self, m: &Manifest) {
        let (Some(stream), Some(seq), Some(evidence)) = (&m.stream, m.stream_seq, &m.evidence)
        else {
            return;
        };
        let head = self.streams.entry(stream.clone()).or_default();
        if head.seq.is_none_or(|s| s < seq) {
            *head = StreamHead {
                seq: Some(seq),
                evidence: evidence.clone(),
            };
            self.moved.insert(stream.clone(), Instant::now());
        }
    }

    /// At open: each stream's head (its furthest position that carries
    /// evidence; of two batches at one position, the first committed), read
    /// from its manifest; where new streams start (the evidence of the last
    /// manifest without a stream); and the streams' index repaired. At
    /// most one manifest read per stream, whatever the history's length,
    /// and none for a head the start read whole already (`read`: by
    /// stream, see `summary::Read::heads`).
    pub(super) fn open_streams(
        &mut self,
        batches: &[BatchSummary],
        mut read: HashMap<String, Manifest>,
    ) -> Result<(), HistoryError> {
        let mut heads: HashMap<&str, &BatchSummary> = HashMap::new();
        for b in batches.iter().filter(|b| b.evidence) {
            let (Some(stream), Some(seq)) = (&b.stream, b.stream_seq) else {
                continue;
            };
            let head = heads.entry(stream).or_insert(b);
            if head.stream_seq.is_some_and(|s| s < seq) {
                *head = b;
            }
        }
        let mut heads: Vec<&BatchSummary> = heads.into_values().collect();
        heads.sort_by(|a, b| (a.seq, &a.batch_id).cmp(&(b.seq, &b.batch_id)));
        for b in heads {
            // the head's manifest, unless the start read it already
            let m = match b.stream.as_ref().and_then(|s| read.remove(s)) {
                Some(m) if m.batch_id == b.batch_id => m,
                _ => super::read::committed_manifest(self.objects.as_ref(), &b.batch_id)?.1,
            };
            self.advance(&m);
            // a crash between the manifest and its index entry
            self.index_stream(m.stream.as_deref(), m.stream_seq, &m.batch_id)?;
        }
        self.past = None;
        for b in batches
            .iter()
            .rev()
            .filter(|b| b.stream.is_none() && b.evidence)
        {
            let (_, m) = super::read::committed_manifest(self.objects.as_ref(), &b.batch_id)?;
            if let Some(e) = m.evidence {
                self.past = Some(e);
                break;
            }
        }
        Ok(())
    }

    /// Record a processed batch's position in its stream's index (if
    /// absent). `false` when another batch holds that position: two writers
    /// on one stream.
    pub(super) fn index_stream(
        &self,
        stream: Option<&str>,
        seq: Option<u64>,
        batch_id: &str,
    ) -> Result<bool, HistoryError> {
        let (Some(stream), Some(seq)) = (stream, seq) else {
            return Ok(true);
        };
        let key = stream_key(stream, seq);
        let body = serde_json::to_vec(&serde_json::json!({ "batch_id": batch_id }))
            .expect("index entries serialize");
        let put = self
            .objects
            .put_if_absent(&key, &body)
            .map_err(io(&self.objects.locate(&key)))?;
        if put == Put::Created {
            return Ok(true);
        }
        let held = self
            .objects
            .get(&key)
            .map_err(io(&self.objects.locate(&key)))?
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.get("batch_id")
                    .and_then(|b| b.as_str())
                    .map(str::to_string)
            });
        Ok(held.as_deref() == Some(batch_id))
    }

    /// The evidence a stream's next batch continues from.
    pub fn stream_evidence(&self, stream: &str) -> dqmon_core::compare::EvidenceState {
        match self.streams.get(stream) {
            Some(head) => head.evidence.clone(),
            None => self.past.clone().unwrap_or_default(),
        }
    }

    /// The position a stream's next processed batch takes.
    pub fn next_stream_seq(&self, stream: &str) -> u64 {
        self.streams
            .get(stream)
            .and_then(|h| h.seq)
            .map_or(0, |s| s + 1)
    }

    /// Start a stream that has no batch yet from this evidence (a replay of
    /// a part of the live history continues from what live had before it).
    pub fn seed_stream(&mut self, stream: &str, evidence: dqmon_core::compare::EvidenceState) {
        let head = self.streams.entry(stream.to_string()).or_default();
        if head.seq.is_none() {
            head.evidence = evidence;
        }
    }

    /// Catch up with batches other replicas committed to a stream since
    /// this one last looked (a Kafka partition that moved here): one
    /// listing after the last known position, and the manifest of the
    /// newest. Nothing to do in a history of one writer.
    pub fn follow_stream(&mut self, stream: &str) -> Result<(), HistoryError> {
        if self.writer.is_none() {
            return Ok(());
        }
        if let Some(m) = self.newer_head(stream)? {
            tracing::info!(stream, batch_id = %m.batch_id, position = ?m.stream_seq, "continuing a stream from another replica's commits");
            self.note_head(&m);
        }
        Ok(())
    }

    /// Take a committed batch of another writer as its stream's head.
    fn note_head(&mut self, m: &Manifest) {
        self.ids.insert(m.batch_id.clone());
        // commit numbers go on past the stream's, so that within a
        // stream they keep its order (a replay sorts by them)
        self.next_seq = self.next_seq.max(m.seq + 1);
        self.advance(m);
    }

    /// The manifest of a stream's newest position after the last one this
    /// history knows, if another writer committed one.
    fn newer_head(&self, stream: &str) -> Result<Option<Manifest>, HistoryError> {
        let dir = format!("history/streams/{stream}");
        let after = match self.streams.get(stream).and_then(|h| h.seq) {
            Some(seq) => stream_key(stream, seq),
            None => format!("{dir}/"),
        };
        let keys = self
            .objects
            .list_after(&dir, &after)
            .map_err(io(&self.objects.locate(&dir)))?;
        // newest first: the first entry whose manifest is there and agrees
        for key in keys.iter().rev() {
            let Some(bytes) = self
                .objects
                .get(key)
                .map_err(io(&self.objects.locate(key)))?
            else {
                continue;
            };
            let Some(id) = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("batch_id")
                        .and_then(|b| b.as_str())
                        .map(str::to_string)
                })
            else {
                continue;
            };
            let mkey = manifest_key(&id);
            let Some(mbytes) = self
                .objects
                .get(&mkey)
                .map_err(io(&self.objects.locate(&mkey)))?
            else {
                continue;
            };
            let m: Manifest =
                serde_json::from_slice(&mbytes).map_err(|e| HistoryError::Corrupt {
                    path: self.objects.locate(&mkey),
                    reason: e.to_string(),
                })?;
            if m.stream.as_deref() == Some(stream) && m.evidence.is_some() {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// The other input streams of a shared history whose evidence a batch
    /// of `stream` pools with (see `compare::evidence`): each stream's
    /// newest position and the evidence after it. A stream counts while
    /// it moves: one whose head this replica has not seen move for
    /// [`SIBLING_IDLE`] (a drop replica renamed away, a partition gone
    /// quiet) is left out, so a campaign's evidence in a stream that
    /// stopped does not weigh on every later batch. The streams are listed
    /// again at most every [`SIBLING_REFRESH`] (one delimiter listing and
    /// one listing per stream, and a manifest read per stream that moved).
    /// In a replay, the siblings its batch `batch_id` pooled live
    /// ([`History::pin_siblings`]); in a history of one writer, none.
    pub fn fleet_siblings(
        &mut self,
        stream: &str,
        batch_id: &str,
    ) -> Result<Vec<Sibling>, HistoryError> {
        if let Some(pinned) = &self.pinned {
            let cut = pinned.cuts.get(batch_id).map_or(&[][..], Vec::as_slice);
            return Ok(cut
                .iter()
                .filter_map(|(stream, seq)| {
                    let e = pinned.evidence.get(&(stream.clone(), *seq))?;
                    Some((stream.clone(), *seq, e.clone()))
                })
                .collect());
        }
        if self.writer.is_none() {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        if self
            .siblings_listed
            .is_none_or(|t| now.duration_since(t) >= SIBLING_REFRESH)
        {
            self.siblings_listed = Some(now);
            let dir = "history/streams";
            let names: Vec<String> = self
                .objects
                .folders(dir)
                .map_err(io(&self.objects.locate(dir)))?
                .into_iter()
                .filter_map(|k| k.rsplit('/').next().map(str::to_string))
                .filter(|n| is_stream_id(n))
                .collect();
            for name in names {
                match self.newer_head(&name)? {
                    Some(m) => self.note_head(&m),
                    // first seen: it counts until it has stood still for long
                    None => {
                        self.moved.entry(name).or_insert(now);
                    }
                }
            }
        }
        let mut out: Vec<Sibling> = self
            .streams
            .iter()
            .filter(|(name, _)| name.as_str() != stream)
            .filter(|(name, _)| {
                self.moved
                    .get(*name)
                    .is_some_and(|t| now.duration_since(*t) < SIBLING_IDLE)
            })
            .filter_map(|(name, h)| h.seq.map(|seq| (name.clone(), seq, h.evidence.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Keep the replica name this history writes as ([`crate::presence`]):
    /// once another process takes it, commits fail; dropped with the
    /// history (which releases it).
    pub fn hold_name(&mut self, keeper: crate::presence::Keeper) {
        self.name = Some(keeper);
    }

    /// A replay's siblings: per batch id, the streams (at their positions,
    /// with the evidence after them) that live pooled the batch with.
    pub fn pin_siblings(&mut self, pinned: Pinned) {
        self.pinned = Some(pinned);
    }
}
