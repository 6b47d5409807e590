//! The drop folder's checkpoint (a snapshot and the lines logged since)
//! and the quarantine of inputs that cannot be used.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

use super::{History, HistoryError, io};

/// A file of the drop folder already handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    pub size: u64,
    pub mtime_ns: i128,
    pub input_sha256: String,
    pub batch_id: String,
}

/// The drop folder's checkpoint: file name to what was handled.
///
/// Stored as a snapshot (`checkpoint.json`) and the entries recorded since
/// (`checkpoint.log`, one line per handled file, appended and synced), so
/// recording a file costs one short append however many files the folder
/// has seen. When the log has grown past the snapshot (and
/// [`CHECKPOINT_COMPACT_MIN`] lines), the files no longer in the folder
/// are dropped (one listing) and a new snapshot replaces both: amortized,
/// a constant cost per file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub files: BTreeMap<String, CheckpointEntry>,
    /// Lines in `checkpoint.log` (not stored).
    #[serde(skip)]
    pub logged: u64,
}

/// The fewest log lines that make a new checkpoint snapshot.
pub const CHECKPOINT_COMPACT_MIN: u64 = 1024;

/// One line of `checkpoint.log`.
#[derive(Serialize, Deserialize)]
struct CheckpointLine {
    name: String,
    entry: CheckpointEntry,
}

impl History {
    /// Read the checkpoint: the snapshot, then the lines logged since (a
    /// torn last line, from a crash during its append, is cut).
    pub fn checkpoint(&self) -> Result<Checkpoint, HistoryError> {
        let path = self.root.join("checkpoint.json");
        let mut c: Checkpoint = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| HistoryError::Corrupt {
                path,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        let log = self.root.join("checkpoint.log");
        let bytes = match fs::read(&log) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(c),
            Err(e) => return Err(io(&log)(e)),
        };
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let l: CheckpointLine =
                serde_json::from_slice(line).map_err(|e| HistoryError::Corrupt {
                    path: log.clone(),
                    reason: format!("line {}: {e}", i + 1),
                })?;
            c.files.insert(l.name, l.entry);
            c.logged += 1;
        }
        if complete < bytes.len() {
            tracing::warn!(path = %log.display(), bytes = bytes.len() - complete, "cutting an unfinished checkpoint line left by a crash");
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .map_err(io(&log))?;
            f.set_len(complete as u64).map_err(io(&log))?;
            f.sync_all().map_err(io(&log))?;
        }
        Ok(c)
    }

    /// Record that the drop folder's file `name` was handled: in `c`, and
    /// durably (one appended line). Compacts when the log has outgrown the
    /// snapshot: the files no longer in `folder` are forgotten.
    pub fn record_checkpoint(
        &self,
        c: &mut Checkpoint,
        folder: &Path,
        name: &str,
        entry: CheckpointEntry,
    ) -> Result<(), HistoryError> {
        let log = self.root.join("checkpoint.log");
        let line = serde_json::to_vec(&CheckpointLine {
            name: name.to_string(),
            entry: entry.clone(),
        })
        .expect("checkpoint lines serialize");
        fsutil::append_line(&log, &line).map_err(io(&log))?;
        c.files.insert(name.to_string(), entry);
        c.logged += 1;
        if c.logged >= CHECKPOINT_COMPACT_MIN.max(c.files.len() as u64) {
            self.compact_checkpoint(c, folder)?;
        }
        Ok(())
    }

    /// A new snapshot of `c` without the files gone from `folder`, then an
    /// empty log. A crash in between only replays lines already in the
    /// snapshot.
    fn compact_checkpoint(&self, c: &mut Checkpoint, folder: &Path) -> Result<(), HistoryError> {
        let present: HashSet<String> = fs::read_dir(folder)
            .map_err(io(folder))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        c.files.retain(|name, _| present.contains(name));
        let path = self.root.join("checkpoint.json");
        fsutil::write_atomic(
            &path,
            &serde_json::to_vec(c).expect("checkpoints serialize"),
        )
        .map_err(io(&path))?;
        let log = self.root.join("checkpoint.log");
        match fs::OpenOptions::new().write(true).open(&log) {
            Ok(f) => {
                f.set_len(0).map_err(io(&log))?;
                f.sync_all().map_err(io(&log))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&log)(e)),
        }
        c.logged = 0;
        Ok(())
    }

    /// Move a bad input into quarantine with a `.reason` file beside it.
    /// Idempotent: a file already moved is left alone.
    pub fn quarantine(
        &self,
        file: &Path,
        batch_id: &str,
        reason: &str,
    ) -> Result<PathBuf, HistoryError> {
        let dir = self.root.join("quarantine");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut target = dir.join(&name);
        if target.exists() {
            target = dir.join(format!("{}-{name}", &batch_id[..12.min(batch_id.len())]));
        }
        let reason_path = PathBuf::from(format!("{}.reason", target.display()));
        fsutil::write_atomic(&reason_path, format!("{reason}\n").as_bytes())
            .map_err(io(&reason_path))?;
        if file.exists() {
            if fs::rename(file, &target).is_err() {
                // another filesystem: copy, sync, then remove
                fs::copy(file, &target).map_err(io(&target))?;
                fs::File::open(&target)
                    .and_then(|f| f.sync_all())
                    .map_err(io(&target))?;
                fs::remove_file(file).map_err(io(file))?;
            }
            // both folders: the file's new name and its old one's removal
            fsutil::sync_dir(&dir).map_err(io(&dir))?;
            if let Some(from) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsutil::sync_dir(from).map_err(io(from))?;
            }
        }
        Ok(target)
    }
}
