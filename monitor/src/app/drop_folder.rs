//! The drop folder driven by its worker: wait for files (a watcher, or the
//! poll interval), hand each complete file to the pipeline as a batch, and
//! acknowledge what it answers: checkpoint, or quarantine.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::model::SourceRule;
use crate::decode::DecodeError;
use crate::source::parquet_drop::DroppedFile;
use crate::store::history::{CheckpointEntry, HistoryError};

use crate::pipeline::{Batch, BatchOrigin, Input, Outcome, Worker};

use super::{AppError, RunSummary, Shutdown, identify};

impl Worker {
    /// Watch the drop folder until shutdown (or, with `once`, until every
    /// file present has been handled).
    pub fn run(mut self, shutdown: Shutdown) -> Result<RunSummary, AppError> {
        if matches!(self.rules.source, SourceRule::Kafka(_)) {
            return crate::source::kafka::run_worker(self, shutdown);
        }
        let (tx, rx) = mpsc::channel::<()>();
        shutdown.register(tx.clone());
        let _watcher = self.watch(tx);
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let Some(folder) = self.folder.as_mut() else {
                break;
            };
            let ready = match folder.ready(Instant::now()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(dataset = %self.rules.dataset, error = %e, "could not list the drop folder; retrying");
                    Vec::new()
                }
            };
            for r in folder.take_refusals() {
                tracing::warn!(dataset = %self.rules.dataset, file = %r.name, kind = r.kind, "refused a drop-folder entry unread: {}", r.reason);
                crate::ops::metrics::drop_refused(&self.rules.dataset, r.kind);
            }
            for file in ready {
                if shutdown.is_triggered() {
                    break;
                }
                self.handle(&file)?;
            }
            let pending = self
                .folder
                .as_ref()
                .and_then(|f| f.next_check(Instant::now()));
            if self.opts.once && pending.is_none() {
                break;
            }
            let wait = pending
                .map_or(self.poll, |p| p.min(self.poll))
                .max(Duration::from_millis(5));
            let _ = rx.recv_timeout(wait);
        }
        if let Some(n) = self.notifier.take() {
            n.stop();
        }
        Ok(self.summary)
    }

    fn watch(&self, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
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

    fn history_err(&self, source: HistoryError) -> AppError {
        crate::pipeline::history_err(&self.rules, source)
    }

    /// Handle one complete file: skip, replay, quarantine or process it
    /// ([`Worker::process`]), then acknowledge it: checkpoint it, and move
    /// it to quarantine when it was quarantined.
    pub fn handle(&mut self, file: &DroppedFile) -> Result<(), AppError> {
        crate::ops::metrics::batch_started();
        if !self.opts.recorded_inputs
            && let Some(e) = self.checkpoint.files.get(&file.name)
            && e.size == file.size
            && e.mtime_ns == file.mtime_ns
            && self.history.contains(&e.batch_id)
        {
            return Ok(());
        }
        // The size first, from the metadata: an oversized file is refused
        // before a byte of it is read.
        let size = match std::fs::metadata(&file.path) {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e, "could not read a dropped file; will retry");
                return Ok(());
            }
        };
        let (sha, id) = match identify(&self.rules, &file.name, &file.path, size) {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e, "could not read a dropped file; will retry");
                return Ok(());
            }
        };
        // Already committed as quarantined: a crash may have come between
        // the commit and the move; finish the move now.
        if self.history.contains(&id)
            && !self.opts.recorded_inputs
            && let Some(reason) = self.history.quarantine_reason(&id)
        {
            self.history
                .quarantine(&file.path, &id, &reason)
                .map_err(|e| self.history_err(e))?;
            return Ok(());
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
        let batch = Batch {
            origin: self.origin(file),
            id: id.clone(),
            sha256: sha.clone(),
            input,
        };
        match self.process(batch)? {
            Outcome::Retry(error) => {
                tracing::warn!(file = %file.path.display(), %error, "could not read a dropped file; will retry");
                return Ok(());
            }
            Outcome::Quarantined(reason) => {
                if !self.opts.recorded_inputs {
                    let moved = self
                        .history
                        .quarantine(&file.path, &id, &reason)
                        .map_err(|e| self.history_err(e))?;
                    tracing::info!(to = %moved.display(), "moved to quarantine");
                }
                return Ok(());
            }
            Outcome::Skipped | Outcome::Replayed | Outcome::Processed => {}
        }
        let Some(dir) = self
            .folder
            .as_ref()
            .filter(|_| !self.opts.recorded_inputs)
            .map(|f| f.dir().to_path_buf())
        else {
            return Ok(());
        };
        let entry = CheckpointEntry {
            size: file.size,
            mtime_ns: file.mtime_ns,
            input_sha256: sha,
            batch_id: id,
        };
        self.history
            .record_checkpoint(&mut self.checkpoint, &dir, &file.name, entry)
            .map_err(|e| self.history_err(e))
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

impl From<&DroppedFile> for BatchOrigin {
    fn from(f: &DroppedFile) -> BatchOrigin {
        BatchOrigin {
            source: f.path.display().to_string(),
            name: f.name.clone(),
            size: f.size,
        }
    }
}
