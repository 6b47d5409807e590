//! `dqmon audit verify`: the chain read back from the first line, every
//! link and hash recomputed, the head compared, and each committed batch's
//! manifest compared with the hash its entry recorded, with its copy in a
//! manifest pack if one holds it, and with its pack summary if one holds
//! it.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::backend::{Backend, LocalBackend};

use super::{AUDIT_FILE, AuditEntry, AuditError, AuditKind, GENESIS, HEAD_FILE, Head, io};

/// The first problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered {
    /// 1-based line of the log where it shows.
    pub line: usize,
    /// The sequence number of the first bad entry.
    pub seq: u64,
    /// A sentence saying what is wrong.
    pub reason: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries that chain correctly, from the start.
    pub good_entries: u64,
    /// Hash of the last good entry (copy it elsewhere to anchor the log).
    pub head_hash: String,
    /// `None` when the whole log is intact.
    pub tampered: Option<Tampered>,
}

/// Check the whole chain of a dataset's audit log, read-only, and name the
/// first entry that was edited, removed or moved. Also checks that every
/// committed batch's manifest still has the bytes whose hash was logged
/// (and that a pack's copy of it is the same manifest).
pub fn verify(state_dir: &Path) -> Result<Verification, AuditError> {
    verify_with(state_dir, &LocalBackend::new(state_dir))
}

/// [`verify`], with the manifests read from `objects` (a shared history's
/// backend; the log itself is the replica's, in `state_dir`).
pub fn verify_with(state_dir: &Path, objects: &dyn Backend) -> Result<Verification, AuditError> {
    let path = state_dir.join(AUDIT_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&path)(e)),
    };
    let head: Option<Head> = match fs::read(state_dir.join(HEAD_FILE)) {
        Ok(b) => serde_json::from_slice(&b).ok(),
        Err(_) => None,
    };
    let mut derived = HashMap::new();
    let mut prev = GENESIS.to_string();
    let mut expected = 0u64;
    let bad = |line: usize, seq: u64, reason: String| Tampered { line, seq, reason };
    let mut tampered = None;
    let mut line_no = 0;
    for raw in bytes.split_inclusive(|&b| b == b'\n') {
        line_no += 1;
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let e: AuditEntry = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(err) => {
                tampered = Some(bad(
                    line_no,
                    expected,
                    format!(
                        "line {line_no}, where entry {expected} should be, is not a valid audit entry ({err}): it was edited or cut"
                    ),
                ));
                break;
            }
        };
        if e.seq != expected {
            let what = if e.seq > expected {
                format!(
                    "entry {expected} is missing: line {line_no} holds entry {} instead; entries were removed or reordered",
                    e.seq
                )
            } else {
                format!(
                    "line {line_no} holds entry {} where entry {expected} was expected; entries were reordered or copied",
                    e.seq
                )
            };
            tampered = Some(bad(line_no, expected, what));
            break;
        }
        if e.prev != prev {
            let before = expected.saturating_sub(1);
            tampered = Some(bad(
                line_no,
                before,
                format!(
                    "entry {expected} (line {line_no}) does not chain to the entry before it: entry {before} was changed (its hash is no longer {}) or replaced",
                    e.prev
                ),
            ));
            break;
        }
        let computed = e.computed_hash();
        if computed != e.hash {
            tampered = Some(bad(
                line_no,
                expected,
                format!(
                    "entry {expected} (line {line_no}, {}) was edited: its content hashes to {computed}, not to its recorded hash {}",
                    e.kind, e.hash
                ),
            ));
            break;
        }
        if let Some(reason) = manifest_changed(state_dir, objects, &mut derived, &e)? {
            tampered = Some(bad(line_no, expected, reason));
            break;
        }
        prev = e.hash;
        expected += 1;
    }
    if tampered.is_none()
        && let Some(h) = &head
        && h.entries > expected
    {
        tampered = Some(bad(
            line_no + 1,
            expected,
            format!(
                "the log ends after entry {} but {HEAD_FILE} records {} entries: entries were removed from the end",
                expected as i64 - 1,
                h.entries
            ),
        ));
    }
    Ok(Verification {
        good_entries: expected,
        head_hash: prev,
        tampered,
    })
}

/// What a writer's part of a shared history holds besides its manifests,
/// derived from them.
struct Derived {
    /// A pack's copy of a manifest, by batch id: the pack's key and the
    /// copy's SHA-256.
    copies: HashMap<String, (String, String)>,
    /// A summary object's record of a batch, by batch id, with its key.
    summaries: HashMap<String, (String, crate::history::BatchSummary)>,
}

impl Derived {
    /// The packs' copies and the summaries of `writer`'s batches: read once
    /// per writer the log names (a replica's own, in a shared history),
    /// not every writer's.
    fn read(state_dir: &Path, objects: &dyn Backend, writer: &str) -> Result<Derived, AuditError> {
        let history_error = |e| match e {
            crate::history::HistoryError::Io { path, source } => AuditError::Io { path, source },
            other => AuditError::Damaged {
                path: state_dir.to_path_buf(),
                reason: other.to_string(),
            },
        };
        Ok(Derived {
            copies: crate::history::packed_copies(objects, writer).map_err(history_error)?,
            summaries: crate::history::summarized(objects, writer).map_err(history_error)?,
        })
    }
}

/// For a batch entry: whether the manifest, and its pack's copy if a pack
/// holds one, still hash as logged, and whether a summary of it still
/// says what the manifest says (a manifest that cannot be read now is an
/// error, not a finding). The packs and summaries looked at are those of
/// the manifest's writer, read on first need into `derived`.
fn manifest_changed(
    state_dir: &Path,
    objects: &dyn Backend,
    derived: &mut HashMap<String, Derived>,
    e: &AuditEntry,
) -> Result<Option<String>, AuditError> {
    if e.kind != AuditKind::BatchCommitted.as_str() {
        return Ok(None);
    }
    let (Some(batch), Some(logged)) = (
        e.key.as_deref(),
        e.payload.get("manifest_sha256").and_then(|v| v.as_str()),
    ) else {
        return Ok(None);
    };
    let key = format!("history/batches/{batch}.json");
    let path = objects.locate(&key);
    Ok(match objects.get(&key).map_err(io(&path))? {
        Some(b) => {
            let actual = hex::encode(Sha256::digest(&b));
            if actual != logged {
                return Ok(Some(format!(
                    "the manifest of batch {batch} ({}) was changed after entry {} logged it: it hashes to {actual}, not {logged}",
                    path.display(),
                    e.seq
                )));
            }
            // the manifest is as logged, so its writer is the one that
            // committed it: only that writer's packs can hold it
            let Ok(m) = serde_json::from_slice::<crate::history::Manifest>(&b) else {
                return Ok(None);
            };
            let Some(writer) = m.writer.as_deref() else {
                return Ok(None);
            };
            if !derived.contains_key(writer) {
                derived.insert(
                    writer.to_string(),
                    Derived::read(state_dir, objects, writer)?,
                );
            }
            let derived = &derived[writer];
            if let Some((pack, copy)) = derived.copies.get(batch)
                && copy != logged
            {
                return Ok(Some(format!(
                    "the copy of batch {batch}'s manifest in the pack {} was changed after entry {} logged the manifest: it hashes to {copy}, not {logged}; the pack was edited",
                    objects.locate(pack).display(),
                    e.seq
                )));
            }
            derived.summaries.get(batch).and_then(|(key, summary)| {
                (crate::history::BatchSummary::from(&m) != *summary).then(|| {
                    format!(
                        "the summary of batch {batch} in {} does not say what its manifest (logged by entry {}) says; the summary was edited",
                        objects.locate(key).display(),
                        e.seq
                    )
                })
            })
        }
        None => Some(format!(
            "the manifest of batch {batch} ({}), logged by entry {}, was removed",
            path.display(),
            e.seq
        )),
    })
}
