//! `dqmon audit verify`: the chain read back from the first line, every
//! link and hash recomputed, the head compared, and each committed batch's
//! manifest compared with the hash its entry recorded, with its copy in a
//! manifest pack if one holds it, and with its pack summary if one holds
//! it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::backend::{Backend, LocalBackend};

use super::chain::{CHAINS, ChainHead, HEAD_OBJECT, entry_seq};
use super::{AUDIT_FILE, AuditEntry, AuditError, AuditKind, GENESIS, HEAD_FILE, Head, io};

/// The first problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered {
    /// 1-based line of the log where it shows (0 in a shared chain, whose
    /// entries are objects).
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
    let mut walk = Walk::new(state_dir, objects);
    let bad = |line: usize, seq: u64, reason: String| Tampered { line, seq, reason };
    let mut tampered = None;
    let mut line_no = 0;
    for raw in bytes.split_inclusive(|&b| b == b'\n') {
        line_no += 1;
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let expected = walk.expected;
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
        if let Some((seq, reason)) = walk.step(&e, &format!("line {line_no}"))? {
            tampered = Some(bad(line_no, seq, reason));
            break;
        }
    }
    let expected = walk.expected;
    let prev = walk.prev;
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

/// What [`verify_chains`] found in one writer's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerification {
    /// The writer (replica name) whose chain it is.
    pub writer: String,
    /// Where the chain is.
    pub location: PathBuf,
    pub verification: Verification,
    /// A batch the writer committed just before it stopped that its chain
    /// does not log: a crash between the commit and the entry, which the
    /// writer's next start repairs. Only the writer's newest batch can be
    /// in that state (it commits one batch at a time); any other batch of
    /// the writer's missing from its chain is a finding.
    pub unlogged: Option<String>,
}

/// Check every writer's chain on a shared history (see [`super::chain`]),
/// each like [`verify`] checks `audit.jsonl`: entries in order without a
/// gap, each chained to the one before and hashing as recorded, the head
/// not ahead of the last entry, each logged manifest (and its pack's copy
/// and summary) as logged. And the other way round: every batch a writer
/// committed is in its chain (but those its own `audit.jsonl` logged
/// before the chain began, which a `chain_started` entry names), so a
/// removed entry is found even at the end of a chain. Reads every entry:
/// one request each.
pub fn verify_chains(objects: &dyn Backend) -> Result<Vec<ChainVerification>, AuditError> {
    let io_at = |key: &str| {
        let path = objects.locate(key);
        move |source| AuditError::Io { path, source }
    };
    let writers = objects.folders(CHAINS).map_err(io_at(CHAINS))?;
    if writers.is_empty() {
        return Ok(Vec::new());
    }
    let batches =
        crate::history::read_summaries_from(objects).map_err(|e| AuditError::Damaged {
            path: objects.locate("history"),
            reason: format!("its batches could not be read to check the chains against: {e}"),
        })?;
    let mut out = Vec::new();
    for folder in writers {
        let writer = folder.rsplit('/').next().unwrap_or(&folder).to_string();
        let location = objects.locate(&folder);
        // a missing head is a chain's start (or a crash before its first
        // head): the entries say where it ends; an unreadable one is a
        // finding, since it is what tells entries cut from the end
        let head_key = format!("{folder}/{HEAD_OBJECT}");
        let head_bytes = objects.get(&head_key).map_err(io_at(&head_key))?;
        let head: Option<Result<ChainHead, _>> =
            head_bytes.map(|b| serde_json::from_slice::<ChainHead>(&b));
        let mut walk = Walk::new(&location, objects);
        let mut logged = HashSet::new();
        // the writer's batches up to this commit are in its own audit.jsonl
        let mut started_after: Option<u64> = None;
        let mut tampered = None;
        let bad = |seq: u64, reason: String| Tampered {
            line: 0,
            seq,
            reason,
        };
        for key in objects.list(&folder).map_err(io_at(&folder))? {
            let Some(seq) = entry_seq(&key) else { continue };
            let at = format!("object {}", objects.locate(&key).display());
            let parsed = objects
                .get(&key)
                .map_err(io_at(&key))?
                .map(|b| serde_json::from_slice::<AuditEntry>(&b));
            let e = match parsed {
                Some(Ok(e)) => e,
                Some(Err(err)) => {
                    tampered = Some(bad(
                        seq,
                        format!(
                            "{at}, entry {seq}, is not a valid audit entry ({err}): it was edited"
                        ),
                    ));
                    break;
                }
                None => continue,
            };
            if let Some((seq, reason)) = walk.step(&e, &at)? {
                tampered = Some(bad(seq, reason));
                break;
            }
            if e.kind == AuditKind::BatchCommitted.as_str()
                && let Some(batch) = e.key
            {
                logged.insert(batch);
            } else if e.kind == AuditKind::ChainStarted.as_str()
                && let Some(after) = e.payload.get("after_history_seq").and_then(|v| v.as_u64())
            {
                started_after = started_after.max(Some(after));
            }
        }
        if tampered.is_none()
            && let Some(Err(e)) = &head
        {
            tampered = Some(bad(
                walk.expected,
                format!(
                    "its head {} is not a chain head ({e}): it was edited",
                    objects.locate(&head_key).display()
                ),
            ));
        }
        if tampered.is_none()
            && let Some(Ok(h)) = &head
            && h.entries > walk.expected
        {
            tampered = Some(bad(
                walk.expected,
                format!(
                    "the chain ends after entry {} but its head records {} entries: entries were removed from the end",
                    walk.expected as i64 - 1,
                    h.entries
                ),
            ));
        }
        let mut unlogged = None;
        if tampered.is_none() {
            let first = started_after.map_or(0, |s| s + 1);
            let own: Vec<&crate::history::BatchSummary> = batches
                .iter()
                .filter(|b| b.writer.as_deref() == Some(writer.as_str()))
                .collect();
            let newest = own
                .iter()
                .max_by_key(|b| (b.seq, &b.batch_id))
                .map(|b| b.batch_id.as_str());
            let missing: Vec<&&crate::history::BatchSummary> = own
                .iter()
                .filter(|b| b.seq >= first && !logged.contains(&b.batch_id))
                .collect();
            match missing.as_slice() {
                [] => {}
                [only] if Some(only.batch_id.as_str()) == newest => {
                    unlogged = Some(only.batch_id.clone());
                }
                [..] => {
                    let b = missing
                        .iter()
                        .find(|b| Some(b.batch_id.as_str()) != newest)
                        .unwrap_or(&missing[0]);
                    tampered = Some(bad(
                        walk.expected,
                        format!(
                            "batch {} (commit {}), committed by {writer}, is not in its chain, and it is not {writer}'s newest batch (the only one a crash can leave unlogged): its entry was removed",
                            b.batch_id, b.seq
                        ),
                    ));
                }
            }
        }
        let verification = Verification {
            good_entries: walk.expected,
            head_hash: walk.prev,
            tampered,
        };
        out.push(ChainVerification {
            writer,
            location,
            verification,
            unlogged,
        });
    }
    Ok(out)
}

/// The checks of one entry after another, whatever holds them (the lines
/// of `audit.jsonl`, the objects of a shared chain).
struct Walk<'a> {
    state_dir: &'a Path,
    objects: &'a dyn Backend,
    derived: HashMap<String, Derived>,
    /// Hash of the last good entry.
    prev: String,
    /// Sequence number of the next entry.
    expected: u64,
}

impl<'a> Walk<'a> {
    fn new(state_dir: &'a Path, objects: &'a dyn Backend) -> Walk<'a> {
        Walk {
            state_dir,
            objects,
            derived: HashMap::new(),
            prev: GENESIS.to_string(),
            expected: 0,
        }
    }

    /// Check the next entry, found at `at` (for messages); the first bad
    /// entry's number and what is wrong, or `None` and the walk moves on.
    fn step(&mut self, e: &AuditEntry, at: &str) -> Result<Option<(u64, String)>, AuditError> {
        let expected = self.expected;
        if e.seq != expected {
            let what = if e.seq > expected {
                format!(
                    "entry {expected} is missing: {at} holds entry {} instead; entries were removed or reordered",
                    e.seq
                )
            } else {
                format!(
                    "{at} holds entry {} where entry {expected} was expected; entries were reordered or copied",
                    e.seq
                )
            };
            return Ok(Some((expected, what)));
        }
        if e.prev != self.prev {
            let before = expected.saturating_sub(1);
            return Ok(Some((
                before,
                format!(
                    "entry {expected} ({at}) does not chain to the entry before it: entry {before} was changed (its hash is no longer {}) or replaced",
                    e.prev
                ),
            )));
        }
        let computed = e.computed_hash();
        if computed != e.hash {
            return Ok(Some((
                expected,
                format!(
                    "entry {expected} ({at}, {}) was edited: its content hashes to {computed}, not to its recorded hash {}",
                    e.kind, e.hash
                ),
            )));
        }
        if let Some(reason) = manifest_changed(self.state_dir, self.objects, &mut self.derived, e)?
        {
            return Ok(Some((expected, reason)));
        }
        self.prev = e.hash.clone();
        self.expected += 1;
        Ok(None)
    }
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
