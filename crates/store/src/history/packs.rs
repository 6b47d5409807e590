//! Manifest packs: a shared history's manifests copied, [`PACK_SIZE`] at a
//! time, into one object, so that reading the history (a replica's start,
//! `dqmon query`, `report`, a replay) costs a request per pack instead of
//! one per batch.
//!
//! ```text
//! history/batches/<batch_id>.json                 the commit points (unchanged)
//! history/packs/<writer>/<first>-<last>.json      copies of <writer>'s manifests
//!                                                 with commit seqs first..=last
//! history/metric-packs/<writer>/<first>-<last>.parquet   their metrics, in one file
//! history/pack-summaries/<writer>/<first>-<last>.json    what a start needs of them
//! ```
//!
//! Manifests stay the commit points: a batch is in the history when its
//! manifest exists, whether or not a pack holds a copy, and the
//! create-if-absent of the manifest is still what keeps a batch once
//! across the fleet. A pack is derived data, written by the replica that
//! committed the batches it holds (a replica's name is held by one process
//! at a time, so no two processes write one writer's packs), with a
//! create-if-absent: a pack that failed to write is written again by the
//! next commit, and one written twice (a put that succeeded but reported an
//! error) holds the same manifests. Readers list the manifests as before
//! (a listing per thousand keys), take the listed ones a pack holds from
//! the pack, and read only the others one by one; a pack that cannot be
//! read or parsed is skipped with a warning (its manifests are read
//! directly). A pack holds each manifest's committed bytes (as text), so
//! `dqmon audit verify` can check that every copy still hashes to what the
//! batch's audit entry recorded (an edited pack would otherwise change what `query`
//! shows while the manifests and the audit chain stay intact).
//!
//! A replica's start reads the packs' summaries instead of the packs
//! ([`super::summary`]): a few hundred bytes per batch instead of the
//! whole manifest.
//!
//! The batches' metrics are packed the same way, into one Parquet file per
//! pack ([`super::metric_packs`]), so that `dqmon query` over a shared
//! history reads a file per 128 batches.
//!
//! Only a shared history packs (a local folder's reads are cheap). At a
//! clean stop a replica packs the rest, however few ([`History::pack_rest`]),
//! so that a replica whose name is never used again (a pod replaced, a
//! replica removed) leaves no manifest to be read one by one; only one that
//! was killed does.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::summary::BatchSummary;
use super::{History, HistoryError, Manifest, io, manifest_key};
use crate::backend::{Backend, Put};

/// Manifests per pack: a start reads one object per 128 batches. The
/// replica holds at most this many committed manifests in memory until
/// they are packed (about 25 KiB each).
pub const PACK_SIZE: usize = 128;

/// Version of the pack format.
const PACK_FORMAT: u32 = 1;

pub(super) const PACKS: &str = "history/packs";

/// One pack object.
#[derive(Debug, Serialize, Deserialize)]
struct Pack {
    format: u32,
    writer: String,
    /// Each manifest's committed bytes (JSON text), in commit order: what
    /// its audit entry hashed.
    manifests: Vec<String>,
}

/// The batch id of a manifest's text (the rest is not parsed).
#[derive(Deserialize)]
struct BatchId {
    batch_id: String,
}

/// A committed batch of this writer that no pack holds yet.
#[derive(Debug)]
pub(super) struct Unpacked {
    pub(super) batch_id: String,
    /// Its manifest's and metrics' bytes (no metrics: a batch without a
    /// profile) when this process committed it; `None` when committed
    /// before this start, read back from the store when packed.
    pub(super) committed: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Every pack of a history (of `writer` only, when given) whose key
/// `wanted` accepts, one at a time, each as its key and its manifests'
/// texts. Packs that cannot be read are skipped with a warning. One folder
/// listing, a listing per writer and a read per pack wanted.
pub(super) fn each_pack(
    objects: &dyn Backend,
    writer: Option<&str>,
    wanted: impl Fn(&str) -> bool,
    mut visit: impl FnMut(&str, Vec<String>),
) -> Result<(), HistoryError> {
    for folder in writer_folders(objects, PACKS, writer)? {
        let keys = objects
            .list(&folder)
            .map_err(io(&objects.locate(&folder)))?;
        for key in keys.iter().filter(|k| k.ends_with(".json") && wanted(k)) {
            let bytes = match objects.get(key) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(pack = %objects.locate(key).display(), error = %e, "a manifest pack could not be read; its manifests are read one by one");
                    continue;
                }
            };
            let pack: Pack = match serde_json::from_slice(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(pack = %objects.locate(key).display(), error = %e, "a manifest pack is unreadable; its manifests are read one by one");
                    continue;
                }
            };
            visit(key, pack.manifests);
        }
    }
    Ok(())
}

/// The folders of every writer under `root`, or of `writer` only.
pub(super) fn writer_folders(
    objects: &dyn Backend,
    root: &str,
    writer: Option<&str>,
) -> Result<Vec<String>, HistoryError> {
    match writer {
        Some(w) => Ok(vec![format!("{root}/{w}")]),
        None => objects.folders(root).map_err(io(&objects.locate(root))),
    }
}

/// Every manifest under `keys` (listed manifest keys), from the packs
/// that hold a copy and, for the rest, from the manifests themselves.
/// Unordered.
pub(super) fn read_listed(
    objects: &dyn Backend,
    keys: &[String],
) -> Result<Vec<Manifest>, HistoryError> {
    let listed: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut found: HashMap<String, Manifest> = HashMap::new();
    each_pack(
        objects,
        None,
        |_| true,
        |key, copies| {
            for text in copies {
                match serde_json::from_str::<Manifest>(&text) {
                    Ok(m) => {
                        let mkey = manifest_key(&m.batch_id);
                        if listed.contains(mkey.as_str()) && !found.contains_key(&mkey) {
                            found.insert(mkey, m);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pack = %objects.locate(key).display(), error = %e, "a manifest pack's copy is unreadable; its manifest is read instead");
                    }
                }
            }
        },
    )?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(m) = found.remove(key) {
            out.push(m);
            continue;
        }
        if let Some((_, m)) = super::read::get_manifest(objects, key)? {
            out.push(m);
        }
    }
    Ok(out)
}

/// Every copy of a manifest held by one writer's packs, by batch id: the
/// pack's key and the SHA-256 of the copy (hex), to compare with the hash
/// the batch's audit entry recorded. For `dqmon audit verify`: packs are
/// read one at a time, and only the hashes are kept. A copy whose batch id
/// cannot be read is listed under the pack's key, so that it is named too.
pub fn packed_copies(
    objects: &dyn Backend,
    writer: &str,
) -> Result<HashMap<String, (String, String)>, HistoryError> {
    use sha2::Digest;
    let mut out = HashMap::new();
    each_pack(
        objects,
        Some(writer),
        |_| true,
        |key, copies| {
            for text in copies {
                let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
                let id = serde_json::from_str::<BatchId>(&text)
                    .map(|b| b.batch_id)
                    .unwrap_or_else(|_| format!("(unreadable copy in {key})"));
                out.entry(id).or_insert_with(|| (key.to_string(), hash));
            }
        },
    )?;
    Ok(out)
}

impl History {
    /// A batch this writer committed, with its manifest's and metrics'
    /// bytes, for its next pack (a shared history only); writes the packs
    /// that are full.
    pub(super) fn queue_for_pack(
        &mut self,
        batch_id: &str,
        manifest: &[u8],
        metrics: Option<Vec<u8>>,
    ) {
        if self.writer.is_none() {
            return;
        }
        self.unpacked.push(Unpacked {
            batch_id: batch_id.to_string(),
            committed: Some((manifest.to_vec(), metrics)),
        });
        self.write_full_packs();
    }

    /// Write a pack of the first [`PACK_SIZE`] unpacked manifests while
    /// there are that many. A pack that cannot be written is tried again
    /// after [`PACK_SIZE`] more commits, with a warning (the batches are
    /// committed either way); meanwhile only the first pack's and the new
    /// commits' bytes are kept, the others are read back when packed, so
    /// that a store refusing packs for good costs one try per pack's worth
    /// of commits and bounded memory.
    pub(super) fn write_full_packs(&mut self) {
        if self.unpacked.len() < self.pack_retry_at {
            return;
        }
        while self.unpacked.len() >= self.pack_size {
            match self.write_pack(self.pack_size) {
                Ok(()) => {
                    self.unpacked.drain(..self.pack_size);
                }
                Err(e) => {
                    tracing::warn!(error = %e, after = self.pack_size, "could not write a manifest pack; tried again after this many more commits (the batches are committed)");
                    for u in &mut self.unpacked[self.pack_size..] {
                        u.committed = None;
                    }
                    self.pack_retry_at = self.unpacked.len() + self.pack_size;
                    return;
                }
            }
        }
        self.pack_retry_at = 0;
    }

    /// At a clean stop: pack this writer's committed manifests that no
    /// pack holds yet, however few, so that a replica whose name does not
    /// come back (a pod replaced by one with another name, a replica
    /// removed) leaves none to be read one by one. Not after the name was
    /// lost (its packs are another process's to write); a failure is
    /// logged, and the next start with this name packs them as usual.
    pub fn pack_rest(&mut self) {
        if self.writer.is_none() || self.unpacked.is_empty() {
            return;
        }
        if let Some(k) = &self.name
            && k.check().is_err()
        {
            return;
        }
        let n = self.unpacked.len();
        match self.write_pack(n) {
            Ok(()) => self.unpacked.clear(),
            Err(e) => {
                tracing::warn!(error = %e, batches = n, "could not pack the last manifests at stop; they stay unpacked until this replica name starts again (the batches are committed)")
            }
        }
    }

    /// Write a pack of the first `n` unpacked manifests.
    fn write_pack(&mut self, n: usize) -> Result<(), HistoryError> {
        let writer = self.writer.clone().expect("only a shared history packs");
        let mut manifests = Vec::with_capacity(n);
        let mut summaries = Vec::with_capacity(n);
        for u in &self.unpacked[..n] {
            let key = manifest_key(&u.batch_id);
            let path = self.objects.locate(&key);
            let bytes = match &u.committed {
                Some((b, _)) => std::borrow::Cow::Borrowed(b),
                None => std::borrow::Cow::Owned(
                    self.objects
                        .get(&key)
                        .map_err(io(&path))?
                        .ok_or_else(|| io(&path)(std::io::ErrorKind::NotFound.into()))?,
                ),
            };
            let text =
                String::from_utf8(bytes.into_owned()).map_err(|e| HistoryError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let m: Manifest = serde_json::from_str(&text).map_err(|e| HistoryError::Corrupt {
                path,
                reason: e.to_string(),
            })?;
            summaries.push(BatchSummary::from(&m));
            manifests.push(text);
        }
        let name = format!(
            "{writer}/{:012}-{:012}",
            summaries[0].seq,
            summaries[summaries.len() - 1].seq
        );
        // the metrics first: a manifest pack is written only once its
        // batches' metrics are packed too
        super::metric_packs::write(self.objects.as_ref(), &name, &self.unpacked[..n])?;
        let key = format!("{PACKS}/{name}.json");
        let pack = Pack {
            format: PACK_FORMAT,
            writer: writer.clone(),
            manifests,
        };
        let bytes = serde_json::to_vec(&pack).expect("packs serialize");
        let path = self.objects.locate(&key);
        if self
            .objects
            .put_if_absent(&key, &bytes)
            .map_err(io(&path))?
            == Put::Existed
        {
            // an earlier try wrote it and reported an error: the same
            // manifests (this writer's first unpacked ones)
            tracing::info!(pack = %path.display(), "manifest pack already written");
        }
        // the summaries last: a summary object names a pack that exists
        super::summary::write(self.objects.as_ref(), &name, &writer, summaries)
    }
}

#[cfg(test)]
#[path = "packs_tests.rs"]
mod tests;
