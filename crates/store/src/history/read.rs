//! Reading manifests: every one of a history's batch objects, in commit
//! order, and what the audit log records of one.

use std::collections::HashSet;

use super::{Backend, History, HistoryError, Manifest, io};

impl History {
    /// Every manifest, in commit order. Until the first commit (or
    /// [`History::forget_opened`]), the ones open read: a start reads the
    /// history once, however many parts of the daemon look at it (the
    /// outbox's catch-up, the Kafka partitions' watermarks).
    pub fn manifests(&self) -> Result<Vec<Manifest>, HistoryError> {
        match &self.opened {
            Some(m) => Ok(m.clone()),
            None => read_manifests_from(self.objects.as_ref()),
        }
    }

    /// The manifests this writer committed, in commit order: every one in
    /// a history of one writer, this replica's in a shared one.
    pub fn own_manifests(&self) -> Result<Vec<Manifest>, HistoryError> {
        match &self.opened {
            Some(m) => Ok(self.own_of(m)),
            None => Ok(self.own_of(&read_manifests_from(self.objects.as_ref())?)),
        }
    }

    /// This writer's manifests among `all`: every one in a history of one
    /// writer.
    pub(super) fn own_of(&self, all: &[Manifest]) -> Vec<Manifest> {
        all.iter()
            .filter(|m| self.writer.is_none() || m.writer == self.writer)
            .cloned()
            .collect()
    }

    /// Drop the manifests read at open (kept for the start's other readers,
    /// see [`History::manifests`]).
    pub fn forget_opened(&mut self) {
        self.opened = None;
    }
}

/// The key of a batch's manifest.
pub(super) fn manifest_key(batch_id: &str) -> String {
    format!("history/batches/{batch_id}.json")
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
    Ok(read_manifests_and_packed(objects)?.0)
}

/// [`read_manifests_from`], and the batch ids whose manifests came from a
/// pack.
pub(super) fn read_manifests_and_packed(
    objects: &dyn Backend,
) -> Result<(Vec<Manifest>, HashSet<String>), HistoryError> {
    let dir = "history/batches";
    let mut keys = objects.list(dir).map_err(io(&objects.locate(dir)))?;
    keys.retain(|k| k.ends_with(".json"));
    let (mut out, packed) = super::packs::read_listed(objects, &keys)?;
    out.sort_by(|a, b| (a.seq, &a.batch_id).cmp(&(b.seq, &b.batch_id)));
    Ok((out, packed))
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
