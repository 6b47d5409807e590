//! The object-store drop source: Parquet objects dropped under a prefix of
//! an object store (`parquet_drop: { path: s3://bucket/incoming/ }`),
//! watched by any number of replicas, each object handled by one of them.
//!
//! ```text
//!  list prefix ─► not done, not claimed ─► claim (create-if-absent) ─► download ─► next()
//!                                            │ lost the race: skip          (spool file)
//!  ack() ─► done marker (create-if-absent) ─► spool file removed
//! ```
//!
//! - **Complete objects.** An object store writes an object atomically: it
//!   is listed only once complete, so there is no settle time. Names a
//!   writer uses for temporary objects (a leading `.`, `.tmp`, `.part`,
//!   ...) are ignored as in a drop folder, and so are objects in deeper
//!   "folders" of the prefix.
//! - **Claims.** Before reading an object a replica creates
//!   `.dqmon-claims/<dataset>/<object>/<generation>` with the store's
//!   conditional put (`If-None-Match: *` on S3): of replicas racing for an
//!   object exactly one creates generation 0 and handles it. The claim
//!   holds its replica's name and an expiry (`claim_lease_ms` from when it
//!   was made, wall clock): when a replica dies holding a claim, the next
//!   replica that lists the object after the expiry creates the next
//!   generation and takes the object over. While its object is in the
//!   pipeline, a replica renews its claim every third of the lease, so a
//!   batch longer than the lease is not taken over from a live replica;
//!   keep the clocks of the replicas within a small part of the lease
//!   (default 10 minutes).
//! - **Done.** After the pipeline's commit, `ack` creates
//!   `.dqmon-claims/<dataset>/<object>/done` (holding the batch id): no
//!   replica claims the object again. Objects are never moved or deleted
//!   (the bucket is ingestion's); a quarantined object is marked done too,
//!   its reason in the history. An object whose name was already handled
//!   is not read again even if it is replaced: write new data under a new
//!   name, as ingestion into object stores does.
//! - **Retry.** An object that cannot be read now has its claim removed,
//!   so any replica may try it at its next listing.
//!
//! The batch id is the drop folder's (dataset, object name, SHA-256 of the
//! bytes), so the same file dropped in a folder or on a bucket is the same
//! batch.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::model::Rules;
use crate::decode::DecodeError;
use crate::shutdown::Shutdown;
use crate::store::backend::{Backend, Put};

use super::drop_folder::{UNHASHED, batch_id};
use super::parquet_drop::is_temporary;
use super::{Batch, BatchOrigin, Input, Outcome, Source, SourceCtx, SourceError};

/// The prefix, under the drop location, of every dataset's claims.
pub const CLAIMS: &str = ".dqmon-claims";

/// The marker of an object handled and committed.
const DONE: &str = "done";

/// A replica's claim on an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Which replica holds it (host, process, a random part).
    pub holder: String,
    /// Until when, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// The marker of an object done.
#[derive(Debug, Serialize, Deserialize)]
struct Done {
    batch_id: String,
    holder: String,
}

/// What became of an attempt to claim an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This replica holds the object, under this generation.
    Ours(u64),
    /// Another replica holds it (its claim has not expired).
    Theirs,
    /// It was handled already.
    Done,
}

/// A drop location on an object store (see the module docs).
pub struct ObjectDropSource {
    rules: Rules,
    store: Arc<dyn Backend>,
    url: String,
    pattern: glob::Pattern,
    poll: Duration,
    once: bool,
    lease: Duration,
    holder: String,
    /// This replica's stream (`drop.<replica>`, see [`super::stream`]).
    stream: String,
    /// Where an object is downloaded to be read (in the state folder).
    spool: PathBuf,
    /// Objects of the last listing not yet tried.
    queue: VecDeque<String>,
    /// Objects known to be done (by any replica): never asked about again.
    done: HashSet<String>,
    listed: bool,
    wake: Option<mpsc::Receiver<()>>,
    /// Keeps the claim of the object in the pipeline alive.
    renewal: Option<Renewal>,
}

/// A thread that extends a claim's expiry every third of the lease while
/// its object is in the pipeline; it stops when the object is acknowledged
/// (or the source dropped: its channel closes).
struct Renewal {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Renewal {
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// What acknowledging an object needs.
pub struct ObjectAck {
    name: String,
    generation: u64,
    batch_id: String,
    spooled: Option<PathBuf>,
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ObjectDropSource {
    /// A source over `store` (the drop location), named `url` in alerts
    /// and manifests; objects are downloaded into `<state_dir>/spool`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rules: &Rules,
        store: Box<dyn Backend>,
        url: &str,
        pattern: &str,
        poll: Duration,
        lease: Duration,
        once: bool,
    ) -> Result<ObjectDropSource, glob::PatternError> {
        let replica = super::stream::replica();
        let holder = format!(
            "{}/{}/{:08x}",
            replica,
            std::process::id(),
            rand::random::<u32>()
        );
        Ok(ObjectDropSource {
            rules: rules.clone(),
            store: Arc::from(store),
            url: url.trim_end_matches('/').to_string(),
            pattern: glob::Pattern::new(pattern)?,
            poll,
            once,
            lease,
            holder,
            stream: super::stream::object_drop(&replica),
            spool: rules.state_dir.join("spool"),
            queue: VecDeque::new(),
            done: HashSet::new(),
            listed: false,
            wake: None,
            renewal: None,
        })
    }

    /// This replica's name in its claims.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn claims(&self, name: &str) -> String {
        format!("{CLAIMS}/{}/{name}", self.rules.dataset)
    }

    /// The objects directly under the prefix that match the pattern, not
    /// temporary and not done, by name.
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for key in self.store.list("")? {
            if is_temporary(&key) || !self.pattern.matches(&key) || self.done.contains(&key) {
                continue;
            }
            names.push(key);
        }
        Ok(names)
    }

    /// Claim an object for this replica (see the module docs).
    pub fn claim(&self, name: &str) -> io::Result<Claimed> {
        let prefix = self.claims(name);
        let entries = self.store.list(&prefix)?;
        let mut generations = BTreeSet::new();
        for key in &entries {
            let last = key.rsplit('/').next().unwrap_or_default();
            if last == DONE {
                return Ok(Claimed::Done);
            }
            if let Ok(g) = last.parse::<u64>() {
                generations.insert(g);
            }
        }
        let next = match generations.last() {
            None => 0,
            Some(&g) => {
                let key = format!("{prefix}/{g}");
                let held = match self.store.get(&key)? {
                    Some(bytes) => serde_json::from_slice::<Claim>(&bytes).ok(),
                    // removed since the listing (a retry): take the next one
                    None => None,
                };
                if let Some(c) = &held
                    && c.expires_ms > now_ms()
                {
                    return Ok(Claimed::Theirs);
                }
                if let Some(c) = held {
                    tracing::warn!(dataset = %self.rules.dataset, object = %name, holder = %c.holder, "taking over an object whose claim expired (its replica died, or took longer than claim_lease_ms)");
                }
                g + 1
            }
        };
        let claim = Claim {
            holder: self.holder.clone(),
            expires_ms: now_ms().saturating_add(self.lease.as_millis() as u64),
        };
        let bytes = serde_json::to_vec(&claim).expect("a claim serializes");
        match self
            .store
            .put_if_absent(&format!("{prefix}/{next}"), &bytes)?
        {
            Put::Created => Ok(Claimed::Ours(next)),
            Put::Existed => Ok(Claimed::Theirs),
        }
    }

    /// Keep this replica's claim on `name` alive until [`Renewal::stop`]:
    /// a batch that takes longer than the lease is not taken over while
    /// its replica still works on it. Only the holder writes its own
    /// generation (others create the next one), so a plain put renews it.
    fn renew(&self, name: &str, generation: u64) -> Renewal {
        let (stop, rx) = mpsc::channel::<()>();
        let store = self.store.clone();
        let key = format!("{}/{generation}", self.claims(name));
        let (holder, lease) = (self.holder.clone(), self.lease);
        let dataset = self.rules.dataset.clone();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(lease / 3) {
                let claim = Claim {
                    holder: holder.clone(),
                    expires_ms: now_ms().saturating_add(lease.as_millis() as u64),
                };
                let bytes = serde_json::to_vec(&claim).expect("a claim serializes");
                if let Err(e) = store.put(&key, &bytes) {
                    tracing::warn!(dataset = %dataset, claim = %key, error = %e, "could not renew a claim; another replica may take the object when it expires");
                }
            }
        });
        Renewal { stop, thread }
    }

    /// Give a claim up (the object could not be read): any replica may
    /// claim it again at its next listing.
    fn release(&self, name: &str, generation: u64) {
        let key = format!("{}/{generation}", self.claims(name));
        if let Err(e) = self.store.delete(&key) {
            tracing::warn!(dataset = %self.rules.dataset, object = %name, error = %e, "could not remove a claim; the object is tried again when it expires");
        }
    }

    /// The batch of an object this replica claimed: refused unread when
    /// oversized, else downloaded to the spool folder. `Err` with a reason
    /// when it cannot be read now.
    fn batch(&self, name: &str) -> Result<(Batch, Option<PathBuf>), String> {
        let limit = self.rules.limits.max_file_bytes;
        let size = self
            .store
            .size(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the object is gone".to_string())?;
        let source = format!("{}/{name}", self.url);
        let origin = BatchOrigin {
            source: source.clone(),
            name: name.to_string(),
            size,
            stream: self.stream.clone(),
        };
        if size > limit {
            let id = batch_id(&self.rules.dataset, name, &format!("{UNHASHED}:{size}"));
            let refused = DecodeError::TooLarge {
                path: PathBuf::from(&source),
                size,
                limit,
            };
            let batch = Batch {
                origin,
                id,
                sha256: UNHASHED.to_string(),
                input: Input::Refused(refused.to_string()),
            };
            return Ok((batch, None));
        }
        let bytes = self
            .store
            .get(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the object is gone".to_string())?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let id = batch_id(&self.rules.dataset, name, &sha);
        std::fs::create_dir_all(&self.spool).map_err(|e| e.to_string())?;
        let path = self.spool.join(format!("{id}.parquet"));
        std::fs::write(&path, &bytes)
            .map_err(|e| format!("could not spool it to {}: {e}", path.display()))?;
        let batch = Batch {
            origin: BatchOrigin {
                size: bytes.len() as u64,
                ..origin
            },
            id,
            sha256: sha,
            input: Input::File(path.clone()),
        };
        Ok((batch, Some(path)))
    }

    fn wait(&mut self, shutdown: &Shutdown) {
        let rx = self.wake.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            shutdown.register(tx);
            rx
        });
        let _ = rx.recv_timeout(self.poll.max(Duration::from_millis(5)));
    }
}

impl Source for ObjectDropSource {
    type Ack = ObjectAck;

    fn next(&mut self, ctx: &SourceCtx<'_>) -> Result<Option<(Batch, ObjectAck)>, SourceError> {
        loop {
            if ctx.shutdown.is_triggered() {
                return Ok(None);
            }
            while let Some(name) = self.queue.pop_front() {
                let generation = match self.claim(&name) {
                    Ok(Claimed::Ours(g)) => g,
                    Ok(Claimed::Theirs) => continue,
                    Ok(Claimed::Done) => {
                        self.done.insert(name);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(dataset = %self.rules.dataset, object = %name, error = %e, "could not claim a dropped object; will retry");
                        continue;
                    }
                };
                crate::ops::metrics::batch_started();
                match self.batch(&name) {
                    Ok((batch, spooled)) => {
                        self.renewal = Some(self.renew(&name, generation));
                        let ack = ObjectAck {
                            name,
                            generation,
                            batch_id: batch.id.clone(),
                            spooled,
                        };
                        return Ok(Some((batch, ack)));
                    }
                    Err(reason) => {
                        tracing::warn!(dataset = %self.rules.dataset, object = %name, %reason, "could not read a dropped object; will retry");
                        self.release(&name, generation);
                    }
                }
            }
            if self.listed {
                if self.once {
                    return Ok(None);
                }
                self.wait(ctx.shutdown);
                if ctx.shutdown.is_triggered() {
                    return Ok(None);
                }
            }
            let health = crate::ops::health::global();
            match self.list() {
                Ok(names) => {
                    health.source_status(
                        &self.rules.dataset,
                        true,
                        &format!("listing {}", self.url),
                    );
                    self.queue.extend(names);
                }
                Err(e) => {
                    tracing::error!(dataset = %self.rules.dataset, url = %self.url, error = %e, "could not list the drop location; retrying");
                    health.source_status(&self.rules.dataset, false, &e.to_string());
                }
            }
            self.listed = true;
        }
    }

    fn ack(
        &mut self,
        ack: ObjectAck,
        outcome: &Outcome,
        _ctx: &SourceCtx<'_>,
    ) -> Result<(), SourceError> {
        if let Some(r) = self.renewal.take() {
            r.stop();
        }
        if let Some(path) = &ack.spooled {
            let _ = std::fs::remove_file(path);
        }
        if let Outcome::Retry(error) = outcome {
            tracing::warn!(dataset = %self.rules.dataset, object = %ack.name, %error, "could not read a dropped object; will retry");
            self.release(&ack.name, ack.generation);
            return Ok(());
        }
        let done = Done {
            batch_id: ack.batch_id,
            holder: self.holder.clone(),
        };
        let key = format!("{}/{DONE}", self.claims(&ack.name));
        let bytes = serde_json::to_vec(&done).expect("a done marker serializes");
        // The batch is in the history; without the marker another replica
        // would take the object again when the claim expires, so this is
        // the source's own commit and its failure stops the worker.
        self.store
            .put_if_absent(&key, &bytes)
            .map_err(|e| SourceError::Store {
                url: format!("{}/{key}", self.url),
                reason: e.to_string(),
            })?;
        self.done.insert(ack.name);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
