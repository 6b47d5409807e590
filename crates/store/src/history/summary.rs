//! Batch summaries: what a replica's start keeps of each committed batch,
//! and the summary objects written beside the manifest packs so that a
//! start reads a few hundred bytes per batch instead of the whole
//! manifest.
//!
//! A manifest is about 25 KiB, nearly all of it the findings and the
//! accumulated evidence (a window of counts per test). A start needs
//! neither for most batches: it needs each batch's id, commit number,
//! status, input hash (replays), source (Kafka watermarks), stream
//! position and writer, and its alerts (the alerts file's and the
//! outbox's repairs). The evidence it needs only at each stream's head,
//! one manifest read per stream. So a start keeps a [`BatchSummary`] per
//! batch (a few hundred bytes), and the manifest packs of a shared history
//! get a summary object each:
//!
//! ```text
//! history/packs/<writer>/<first>-<last>.json       copies of the manifests (unchanged)
//! history/pack-summaries/<writer>/<first>-<last>.json   their summaries, in the same order
//! ```
//!
//! A start lists the manifests (the listing is the snapshot, as before),
//! takes the listed batches a summary object holds from it, reads the
//! packs that have no summary object (packs written before summaries, or
//! one whose summary could not be written or read) as before, and the
//! remaining manifests one by one; then the head manifest of each stream.
//! A summary object is written after its pack (derived data, with a
//! create-if-absent, by the pack's writer); a replica's start writes the
//! summaries its own packs lack. `dqmon audit verify` checks every summary
//! against its batch's manifest.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{BatchStatus, HistoryError, Manifest, io, manifest_key};
use crate::backend::{Backend, Put};
use dqmon_core::alert::Alert;

/// Version of the summary objects' format.
const SUMMARY_FORMAT: u32 = 1;

/// Where the summary objects are, one folder per writer.
pub(super) const SUMMARIES: &str = "history/pack-summaries";

/// What a start keeps of a committed batch: its manifest without the
/// findings and the evidence (whether it carries evidence is noted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub seq: u64,
    pub batch_id: String,
    pub status: BatchStatus,
    pub source: String,
    pub input_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Whether the manifest carries evidence (the stream's state after it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evidence: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
}

impl From<&Manifest> for BatchSummary {
    fn from(m: &Manifest) -> BatchSummary {
        BatchSummary {
            seq: m.seq,
            batch_id: m.batch_id.clone(),
            status: m.status,
            source: m.source.clone(),
            input_sha256: m.input_sha256.clone(),
            reason: m.reason.clone(),
            stream: m.stream.clone(),
            stream_seq: m.stream_seq,
            writer: m.writer.clone(),
            evidence: m.evidence.is_some(),
            alerts: m.alerts.clone(),
        }
    }
}

/// One summary object.
#[derive(Debug, Serialize, Deserialize)]
struct Summaries {
    format: u32,
    writer: String,
    batches: Vec<BatchSummary>,
}

/// The key of a pack's summary object, from the pack's name
/// (`<writer>/<first>-<last>`).
pub(super) fn summary_key(pack_name: &str) -> String {
    format!("{SUMMARIES}/{pack_name}.json")
}

/// The pack name (`<writer>/<first>-<last>`) of a pack's or a summary
/// object's key.
pub(super) fn pack_name(key: &str) -> Option<&str> {
    key.strip_prefix(super::packs::PACKS)
        .or_else(|| key.strip_prefix(SUMMARIES))?
        .strip_prefix('/')?
        .strip_suffix(".json")
}

/// Write the summary object of the pack `pack_name` (create-if-absent:
/// one written before holds the same summaries).
pub(super) fn write(
    objects: &dyn Backend,
    pack_name: &str,
    writer: &str,
    batches: Vec<BatchSummary>,
) -> Result<(), HistoryError> {
    let key = summary_key(pack_name);
    let bytes = serde_json::to_vec(&Summaries {
        format: SUMMARY_FORMAT,
        writer: writer.to_string(),
        batches,
    })
    .expect("summaries serialize");
    let path = objects.locate(&key);
    if objects.put_if_absent(&key, &bytes).map_err(io(&path))? == Put::Existed {
        tracing::info!(summary = %path.display(), "pack summary already written");
    }
    Ok(())
}

/// Every summary object (of `writer` only, when given), one at a time, as
/// its pack's name and its
/// summaries. Objects that cannot be read or parsed are skipped with a
/// warning (their pack is read instead).
pub(super) fn each(
    objects: &dyn Backend,
    writer: Option<&str>,
    mut visit: impl FnMut(&str, Vec<BatchSummary>),
) -> Result<(), HistoryError> {
    for folder in super::packs::writer_folders(objects, SUMMARIES, writer)? {
        let keys = objects
            .list(&folder)
            .map_err(io(&objects.locate(&folder)))?;
        for key in &keys {
            let Some(name) = pack_name(key) else { continue };
            let parsed = match objects.get(key) {
                Ok(Some(b)) => serde_json::from_slice::<Summaries>(&b).map_err(|e| e.to_string()),
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            };
            match parsed {
                Ok(s) => visit(name, s.batches),
                Err(error) => {
                    tracing::warn!(summary = %objects.locate(key).display(), %error, "a pack summary is unreadable; its pack is read instead");
                }
            }
        }
    }
    Ok(())
}

/// What [`read`] found: the summaries of the listed batches, unordered;
/// the batch ids a pack (or its summary) holds; and the packs of the
/// writer asked for that were read in full because they had no summary, by
/// name, with their summaries (for that writer to write them).
pub(super) struct Read {
    pub(super) batches: Vec<BatchSummary>,
    pub(super) packed: HashSet<String>,
    pub(super) unsummarized: Vec<(String, Vec<BatchSummary>)>,
    /// Of the manifests read whole (those no summary or pack held), the
    /// furthest one with evidence of each stream, by stream: a stream's
    /// head is most often one of them (the newest batches are not packed
    /// yet), and the start needs its evidence.
    pub(super) heads: HashMap<String, Manifest>,
}

/// The summaries of every batch under `keys` (listed manifest keys): from
/// the summary objects, then from the packs without one, then from the
/// manifests themselves. One read per summary object, per pack without a
/// summary and per manifest that neither holds. The summaries of `writer`'s
/// packs without one are kept ([`Read::unsummarized`]); no other's.
pub(super) fn read(
    objects: &dyn Backend,
    keys: &[String],
    writer: Option<&str>,
) -> Result<Read, HistoryError> {
    let listed: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut found: HashMap<String, BatchSummary> = HashMap::new();
    let take = |found: &mut HashMap<String, BatchSummary>, s: BatchSummary| {
        let key = manifest_key(&s.batch_id);
        if listed.contains(key.as_str()) && !found.contains_key(&key) {
            found.insert(key, s);
        }
    };
    let mut summarized = HashSet::new();
    each(objects, None, |name, batches| {
        summarized.insert(name.to_string());
        for s in batches {
            take(&mut found, s);
        }
    })?;
    let mut unsummarized = Vec::new();
    super::packs::each_pack(
        objects,
        None,
        |key| pack_name(key).is_some_and(|n| !summarized.contains(n)),
        |key, copies| {
            let mut batches = Vec::with_capacity(copies.len());
            for text in copies {
                match serde_json::from_str::<Manifest>(&text) {
                    Ok(m) => batches.push(BatchSummary::from(&m)),
                    Err(e) => {
                        tracing::warn!(pack = %objects.locate(key).display(), error = %e, "a manifest pack's copy is unreadable; the pack's manifests are read one by one");
                        return;
                    }
                }
            }
            for s in &batches {
                take(&mut found, s.clone());
            }
            if let (Some(name), Some(w)) = (pack_name(key), writer)
                && name.split('/').next() == Some(w)
            {
                unsummarized.push((name.to_string(), batches));
            }
        },
    )?;
    let packed: HashSet<String> = found.values().map(|s| s.batch_id.clone()).collect();
    let mut batches = Vec::with_capacity(keys.len());
    let mut heads: HashMap<String, Manifest> = HashMap::new();
    for key in keys {
        if let Some(s) = found.remove(key) {
            batches.push(s);
            continue;
        }
        if let Some((_, m)) = super::read::get_manifest(objects, key)? {
            batches.push(BatchSummary::from(&m));
            if let (Some(stream), Some(seq), true) = (&m.stream, m.stream_seq, m.evidence.is_some())
                && heads.get(stream).is_none_or(|h| h.stream_seq < Some(seq))
            {
                heads.insert(stream.clone(), m);
            }
        }
    }
    Ok(Read {
        batches,
        packed,
        unsummarized,
        heads,
    })
}

/// Every batch's summary held by one writer's summary objects, by batch
/// id, with the object's key: for `dqmon audit verify`, which compares each
/// with the batch's manifest.
pub fn summarized(
    objects: &dyn Backend,
    writer: &str,
) -> Result<HashMap<String, (String, BatchSummary)>, HistoryError> {
    let mut out = HashMap::new();
    each(objects, Some(writer), |name, batches| {
        for s in batches {
            out.entry(s.batch_id.clone())
                .or_insert_with(|| (summary_key(name), s));
        }
    })?;
    Ok(out)
}

impl super::History {
    /// Write the summary objects of this writer's packs that lack one (a
    /// pack written before summaries, or a summary that failed to write),
    /// from its packs a start read in full ([`Read::unsummarized`]). A
    /// summary that cannot be written is tried again at the next start,
    /// with a warning.
    pub(super) fn write_missing_summaries(&self, packs: Vec<(String, Vec<BatchSummary>)>) {
        let Some(writer) = self.writer.as_deref() else {
            return;
        };
        for (name, batches) in packs {
            if let Err(e) = write(self.objects.as_ref(), &name, writer, batches) {
                tracing::warn!(pack = %name, error = %e, "could not write a pack's summary; the pack is read in full until it is");
            }
        }
    }
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
