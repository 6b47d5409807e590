//! Reading manifests: every one of a history's batch objects, in commit
//! order, or every batch's summary (what a start keeps; see
//! [`super::summary`]); one manifest by key; and what the audit log
//! records of one.

use std::borrow::Cow;

use super::summary::BatchSummary;
use super::{Backend, History, HistoryError, Manifest, io};

impl History {
    /// Every batch's summary, in commit order. Until the first commit (or
    /// [`History::forget_opened`]), the ones open read: a start reads the
    /// history once, however many parts of the daemon look at it (the
    /// outbox's catch-up, the Kafka partitions' watermarks).
    pub fn summaries(&self) -> Result<Cow<'_, [BatchSummary]>, HistoryError> {
        match &self.opened {
            Some(s) => Ok(Cow::Borrowed(s)),
            None => Ok(Cow::Owned(read_summaries_from(self.objects.as_ref())?)),
        }
    }

    /// The summaries of the batches this writer committed, in commit
    /// order: every one in a history of one writer, this replica's in a
    /// shared one.
    pub fn own_summaries(&self) -> Result<Vec<BatchSummary>, HistoryError> {
        match &self.opened {
            Some(s) => Ok(self.own_of(s)),
            None => Ok(self.own_of(&read_summaries_from(self.objects.as_ref())?)),
        }
    }

    /// This writer's batches among `all`: every one in a history of one
    /// writer.
    pub(super) fn own_of(&self, all: &[BatchSummary]) -> Vec<BatchSummary> {
        all.iter()
            .filter(|m| self.writer.is_none() || m.writer == self.writer)
            .cloned()
            .collect()
    }

    /// Drop the summaries read at open (kept for the start's other
    /// readers, see [`History::summaries`]).
    pub fn forget_opened(&mut self) {
        self.opened = None;
    }
}

/// The key of a batch's manifest.
pub(super) fn manifest_key(batch_id: &str) -> String {
    format!("history/batches/{batch_id}.json")
}

/// A manifest's bytes and what they say, `None` when it is not there (a
/// reader of a live folder must not fail on a manifest listed a moment
/// ago and gone since; manifests are never removed, but a folder may be
/// edited).
pub(super) fn get_manifest(
    objects: &dyn Backend,
    key: &str,
) -> Result<Option<(Vec<u8>, Manifest)>, HistoryError> {
    let path = objects.locate(key);
    let Some(bytes) = objects.get(key).map_err(io(&path))? else {
        return Ok(None);
    };
    let m = serde_json::from_slice(&bytes).map_err(|e| HistoryError::Corrupt {
        path,
        reason: e.to_string(),
    })?;
    Ok(Some((bytes, m)))
}

/// A committed batch's manifest, which must be there: its bytes and what
/// they say.
pub(super) fn committed_manifest(
    objects: &dyn Backend,
    batch_id: &str,
) -> Result<(Vec<u8>, Manifest), HistoryError> {
    let key = manifest_key(batch_id);
    get_manifest(objects, &key)?
        .ok_or_else(|| io(&objects.locate(&key))(std::io::ErrorKind::NotFound.into()))
}

/// The key of a batch's metrics file.
pub(super) fn metrics_key(batch_id: &str) -> String {
    format!("history/metrics/{batch_id}.parquet")
}

/// Every manifest of a history's batch objects (a state folder's
/// `LocalBackend`, or a shared history's backend), in commit order, read
/// without opening the history (nothing is repaired or written: safe on a
/// live daemon's folder). A folder without a history has none. Manifests
/// that a pack holds come from the pack ([`super::packs`]).
pub fn read_manifests_from(objects: &dyn Backend) -> Result<Vec<Manifest>, HistoryError> {
    let mut out = super::packs::read_listed(objects, &manifest_keys(objects)?)?;
    out.sort_by(|a, b| (a.seq, &a.batch_id).cmp(&(b.seq, &b.batch_id)));
    Ok(out)
}

/// Every batch's summary, in commit order, read without opening the
/// history (see [`read_manifests_from`]); summaries of packed batches come
/// from the packs' summary objects ([`super::summary`]).
pub fn read_summaries_from(objects: &dyn Backend) -> Result<Vec<BatchSummary>, HistoryError> {
    Ok(read_summaries(objects, None)?.batches)
}

/// [`read_summaries_from`], with what else the summary objects told
/// (the packed batches, `writer`'s packs without a summary).
pub(super) fn read_summaries(
    objects: &dyn Backend,
    writer: Option<&str>,
) -> Result<super::summary::Read, HistoryError> {
    let mut read = super::summary::read(objects, &manifest_keys(objects)?, writer)?;
    read.batches
        .sort_by(|a, b| (a.seq, &a.batch_id).cmp(&(b.seq, &b.batch_id)));
    Ok(read)
}

/// The keys of every manifest (one listing per thousand).
fn manifest_keys(objects: &dyn Backend) -> Result<Vec<String>, HistoryError> {
    let dir = "history/batches";
    let mut keys = objects.list(dir).map_err(io(&objects.locate(dir)))?;
    keys.retain(|k| k.ends_with(".json"));
    Ok(keys)
}

/// What the audit log records of a committed batch: the manifest's hash
/// (so that a later edit of the manifest file is caught) and its summary.
pub fn manifest_audit_payload(m: &Manifest, manifest_bytes: &[u8]) -> serde_json::Value {
    use sha2::Digest;
    serde_json::json!({
        "manifest_sha256": hex::encode(sha2::Sha256::digest(manifest_bytes)),
        "batch_id": m.batch_id,
        "history_seq": m.seq,
        "status": m.status,
        "source": m.source,
        "input_sha256": m.input_sha256,
        "input_bytes": m.input_bytes,
        "rows": m.rows,
        "rows_by_tag": m.rows_by_tag,
        "schema_fingerprint": m.schema_fingerprint,
        "rules_hash": m.rules_hash,
        "baseline_id": m.baseline_id,
        "dqmon_version": m.dqmon_version,
        "alert_ids": m.alerts.iter().map(|a| a.alert_id.as_str()).collect::<Vec<_>>(),
    })
}
