//! The drop-folder source: wait for complete files (a watcher, or the poll
//! interval), yield each as a batch, and acknowledge what the pipeline
//! answers: checkpoint the file, or move it to quarantine.
//!
//! The same source serves `replay` over recorded files
//! ([`DropSource::recorded`]): no folder is watched, nothing is
//! checkpointed or moved, and a file that cannot be read is an error
//! instead of a later retry.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::model::Rules;
use crate::decode::DecodeError;
use crate::shutdown::Shutdown;
use crate::store::history::{Checkpoint, CheckpointEntry, History};

use super::parquet_drop::{DropFolder, DroppedFile};
use super::{Batch, BatchOrigin, Input, Outcome, Source, SourceCtx, SourceError};

/// The batch id of a dropped file.
pub fn batch_id(dataset: &str, name: &str, input_sha256: &str) -> String {
    let key = format!("{dataset}\u{1f}{name}\u{1f}{input_sha256}");
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// What a manifest and its alerts say for the SHA-256 of an input that was
/// refused by its size: its bytes were never read.
pub const UNHASHED: &str = "unhashed";

/// The input hash and batch id of a file of `size` bytes (from its
/// metadata). The size is checked first: a file over
/// `limits.max_file_bytes` is refused without a byte of it read (hashing
/// 2 GiB takes seconds), so its hash is [`UNHASHED`] and its batch id comes
/// from its name and size. Otherwise the id comes from the SHA-256 of the
/// bytes, as always.
pub fn identify(
    rules: &Rules,
    name: &str,
    path: &Path,
    size: u64,
) -> std::io::Result<(String, String)> {
    if size > rules.limits.max_file_bytes {
        let id = batch_id(&rules.dataset, name, &format!("{UNHASHED}:{size}"));
        return Ok((UNHASHED.to_string(), id));
    }
    let sha = crate::store::sha256_file(path)?;
    let id = batch_id(&rules.dataset, name, &sha);
    Ok((sha, id))
}

/// A watched drop folder, or a list of recorded files (replay).
pub struct DropSource {
    rules: Rules,
    /// The folder watched; `None` for recorded files.
    folder: Option<DropFolder>,
    /// The folder's checkpoint, kept in memory and saved after each file.
    checkpoint: Checkpoint,
    poll: Duration,
    once: bool,
    /// Where sources are said to live in alerts and manifests: the drop
    /// folder live, and the same folder in a replay (so that alerts match).
    source_root: Option<PathBuf>,
    /// Files of the last listing (or the recorded files) not yet yielded.
    queue: VecDeque<DroppedFile>,
    /// Whether the folder was listed and that listing's files all yielded.
    listed: bool,
    /// Woken by the watcher and by shutdown.
    wake: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    watcher: Option<notify::RecommendedWatcher>,
    /// A replay's batches that live took from another stream than the
    /// drop folder's (an object-store drop's replica), by batch id.
    streams: HashMap<String, String>,
}

/// What acknowledging a file needs: the file as listed, its batch id and
/// input hash.
pub struct FileAck {
    file: DroppedFile,
    id: String,
    sha: String,
}

impl DropSource {
    /// Watch `folder` (live): the history's checkpoint says which files are
    /// done. File events are watched from the first [`Source::next`] on.
    pub fn watch(
        rules: &Rules,
        folder: DropFolder,
        poll: Duration,
        once: bool,
        history: &History,
    ) -> Result<DropSource, SourceError> {
        let root = folder.dir().to_path_buf();
        Ok(DropSource {
            checkpoint: history.checkpoint()?,
            folder: Some(folder),
            poll,
            once,
            source_root: Some(root),
            ..DropSource::recorded(rules, Vec::new(), None)
        })
    }

    /// Recorded files, in this order (replay); sources are named
    /// `<source_root>/<file name>` when given, else by their path.
    pub fn recorded(
        rules: &Rules,
        files: Vec<DroppedFile>,
        source_root: Option<PathBuf>,
    ) -> DropSource {
        DropSource {
            rules: rules.clone(),
            folder: None,
            checkpoint: Checkpoint::default(),
            poll: Duration::ZERO,
            once: true,
            source_root,
            queue: files.into(),
            listed: false,
            wake: None,
            watcher: None,
            streams: HashMap::new(),
        }
    }

    /// Give recorded batches the streams live gave them (by batch id);
    /// the others are the drop folder's.
    pub fn with_streams(mut self, streams: HashMap<String, String>) -> DropSource {
        self.streams = streams;
        self
    }

    fn recorded_inputs(&self) -> bool {
        self.folder.is_none()
    }

    /// Start the watcher once, registering its channel with shutdown.
    fn start_watching(&mut self, shutdown: &Shutdown) {
        if self.wake.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        shutdown.register(tx.clone());
        self.watcher = self.file_events(tx.clone());
        self.wake = Some((tx, rx));
    }

    fn file_events(&self, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let mut w = match notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            let _ = tx.send(());
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "file events unavailable; polling the drop folder");
                return None;
            }
        };
        let dir = self.folder.as_ref()?.dir();
        if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, "file events unavailable; polling the drop folder");
            return None;
        }
        Some(w)
    }

    /// List the folder: its complete files join the queue.
    fn list(&mut self) {
        let Some(folder) = self.folder.as_mut() else {
            return;
        };
        match folder.ready(Instant::now()) {
            Ok(r) => self.queue.extend(r),
            Err(e) => {
                tracing::error!(dataset = %self.rules.dataset, error = %e, "could not list the drop folder; retrying");
            }
        }
        for r in folder.take_refusals() {
            tracing::warn!(dataset = %self.rules.dataset, file = %r.name, kind = r.kind, "refused a drop-folder entry unread: {}", r.reason);
            crate::ops::metrics::drop_refused(&self.rules.dataset, r.kind);
        }
        self.listed = true;
    }

    /// A file that cannot be read now: live, it is looked at again at the
    /// next listing; recorded, it is an error.
    fn unread(&self, file: &DroppedFile, error: &dyn std::fmt::Display) -> Result<(), SourceError> {
        if self.recorded_inputs() {
            return Err(SourceError::Unread {
                path: file.path.clone(),
                reason: error.to_string(),
            });
        }
        tracing::warn!(file = %file.path.display(), %error, "could not read a dropped file; will retry");
        Ok(())
    }

    /// The batch of one complete file; `None` when there is nothing to hand
    /// over (checkpointed already, unreadable now, or committed as
    /// quarantined with its move left to finish, which is finished here).
    fn batch(&self, file: &DroppedFile, history: &History) -> Result<Option<Batch>, SourceError> {
        crate::ops::metrics::batch_started();
        let live = !self.recorded_inputs();
        if live
            && let Some(e) = self.checkpoint.files.get(&file.name)
            && e.size == file.size
            && e.mtime_ns == file.mtime_ns
            && history.contains(&e.batch_id)
        {
            return Ok(None);
        }
        // The size first, from the metadata: an oversized file is refused
        // before a byte of it is read.
        let size = match std::fs::metadata(&file.path) {
            Ok(m) => m.len(),
            Err(e) => return self.unread(file, &e).map(|()| None),
        };
        let (sha, id) = match identify(&self.rules, &file.name, &file.path, size) {
            Ok(known) => known,
            Err(e) => return self.unread(file, &e).map(|()| None),
        };
        // Already committed as quarantined: a crash may have come between
        // the commit and the move; finish the move now.
        if live
            && history.contains(&id)
            && let Some(reason) = history.quarantine_reason(&id)
        {
            history.quarantine(&file.path, &id, &reason)?;
            return Ok(None);
        }
        let limit = self.rules.limits.max_file_bytes;
        let input = if size > limit {
            let too_large = DecodeError::TooLarge {
                path: file.path.clone(),
                size,
                limit,
            };
            Input::Refused(
                too_large
                    .to_string()
                    .replace(&file.path.display().to_string(), &self.source_name(file)),
            )
        } else {
            Input::File(file.path.clone())
        };
        let mut origin = self.origin(file);
        if let Some(stream) = self.streams.get(&id) {
            origin.stream = stream.clone();
        }
        Ok(Some(Batch {
            origin,
            id,
            sha256: sha,
            input,
        }))
    }

    /// How a file is named in alerts and manifests.
    fn source_name(&self, file: &DroppedFile) -> String {
        match &self.source_root {
            Some(root) => root.join(&file.name).display().to_string(),
            None => file.path.display().to_string(),
        }
    }

    /// A dropped file's origin, named as alerts name it.
    fn origin(&self, file: &DroppedFile) -> BatchOrigin {
        BatchOrigin {
            source: self.source_name(file),
            ..file.into()
        }
    }
}

impl Source for DropSource {
    type Ack = FileAck;

    fn next(&mut self, ctx: &SourceCtx<'_>) -> Result<Option<(Batch, FileAck)>, SourceError> {
        if self.folder.is_some() {
            self.start_watching(ctx.shutdown);
        }
        loop {
            if ctx.shutdown.is_triggered() {
                return Ok(None);
            }
            if let Some(file) = self.queue.pop_front()
                && let Some(batch) = self.batch(&file, ctx.history)?
            {
                let ack = FileAck {
                    id: batch.id.clone(),
                    sha: batch.sha256.clone(),
                    file,
                };
                return Ok(Some((batch, ack)));
            }
            if !self.queue.is_empty() {
                continue;
            }
            let Some(folder) = self.folder.as_ref() else {
                return Ok(None);
            };
            if self.listed {
                // Every file of the last listing is handled: stop (`once`,
                // nothing about to settle) or wait for a change.
                let pending = folder.next_check(Instant::now());
                if self.once && pending.is_none() {
                    return Ok(None);
                }
                let wait = pending
                    .map_or(self.poll, |p| p.min(self.poll))
                    .max(Duration::from_millis(5));
                if let Some((_, rx)) = &self.wake {
                    let _ = rx.recv_timeout(wait);
                }
                if ctx.shutdown.is_triggered() {
                    return Ok(None);
                }
            }
            self.list();
        }
    }

    fn ack(
        &mut self,
        FileAck { file, id, sha }: FileAck,
        outcome: &Outcome,
        ctx: &SourceCtx<'_>,
    ) -> Result<(), SourceError> {
        match outcome {
            Outcome::Retry(error) => return self.unread(&file, error),
            Outcome::Quarantined(reason) => {
                if !self.recorded_inputs() {
                    let moved = ctx.history.quarantine(&file.path, &id, reason)?;
                    tracing::info!(to = %moved.display(), "moved to quarantine");
                }
                return Ok(());
            }
            Outcome::Skipped | Outcome::Replayed | Outcome::Processed => {}
        }
        let Some(dir) = self.folder.as_ref().map(|f| f.dir().to_path_buf()) else {
            return Ok(());
        };
        let entry = CheckpointEntry {
            size: file.size,
            mtime_ns: file.mtime_ns,
            input_sha256: sha,
            batch_id: id,
        };
        ctx.history
            .record_checkpoint(&mut self.checkpoint, &dir, &file.name, entry)?;
        Ok(())
    }
}

impl From<&DroppedFile> for BatchOrigin {
    fn from(f: &DroppedFile) -> BatchOrigin {
        BatchOrigin {
            source: f.path.display().to_string(),
            name: f.name.clone(),
            size: f.size,
            stream: super::stream::DROP.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_input_is_identified_without_being_opened() {
        let mut rules = Rules::for_tests("d", Vec::new());
        rules.limits.max_file_bytes = 1000;
        // the path does not exist: any read of it would fail
        let nowhere = Path::new("/nonexistent/dqmon/huge.parquet");
        let (sha, id) = identify(&rules, "huge.parquet", nowhere, 1001).unwrap();
        assert_eq!(sha, UNHASHED);
        assert_eq!(id, batch_id("d", "huge.parquet", "unhashed:1001"));
        assert!(
            identify(&rules, "huge.parquet", nowhere, 1000).is_err(),
            "within the limit it is read"
        );
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.parquet");
        std::fs::write(&small, b"bytes").unwrap();
        let (sha, id) = identify(&rules, "small.parquet", &small, 5).unwrap();
        assert_eq!(sha, crate::store::sha256_file(&small).unwrap());
        assert_eq!(id, batch_id("d", "small.parquet", &sha));
    }
}
