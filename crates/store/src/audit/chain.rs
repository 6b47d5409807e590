//! The audit chain of one writer on a shared history's object store: what
//! [`super::AuditLog`] writes instead of `audit.jsonl` when the dataset's
//! history is shared, so that a replica's record survives the replica
//! (a pod without a volume, a machine that is gone).
//!
//! ```text
//! <shared history>/audit/<writer>/0000000000000000.json   entry 0 (the same JSON as a line of audit.jsonl)
//!                                 0000000000000001.json   entry 1, `prev` = entry 0's hash
//!                                 …
//!                                 head.json               entries, last hash, last batch, last config hash
//! ```
//!
//! An entry is written create-if-absent under its sequence number, so two
//! processes appending to one chain (a daemon and a CLI command on the
//! same replica name) cannot both write entry `n`: the loser reads what
//! the winner wrote and appends after it. The head is rewritten after each
//! entry (a plain put, like `audit.head` beside the local log); it is how
//! a start finds the end of the chain without listing it, and what tells a
//! removed last entry. A head behind the entries (a crash between the two
//! writes, or a racing appender) is caught up on the next append or open
//! with one listing after its last entry. A head ahead of the entries
//! means entries were removed: the chain is refused as damaged.
//!
//! Several logs of one chain may be open at once, in one process (the
//! history's, the notifier's, a reload's) or in several (a CLI command on
//! the replica's name): each appends at the end it knows, and one that is
//! behind loses the race for that entry, reads the entries it missed and
//! appends after them. Its head may then be written after a newer one: a
//! head behind, caught up as above.
//!
//! What the chain does not keep is an index of every entry's key, which
//! would cost a read per entry at each start. The head names the last
//! batch logged, which is all the repair after a crash needs (a writer
//! commits one batch at a time, so only its newest can be unlogged); and
//! [`super::AuditLog::append_once`] knows the keys of the entries this
//! process read or wrote. A message that a restarted notifier delivers a
//! second time is recorded a second time: it was delivered twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{AuditEntry, AuditError, AuditKind, GENESIS};
use crate::backend::{Backend, Put};

/// Where the chains live, under the shared history's prefix.
pub const CHAINS: &str = "audit";
/// The head object of a chain.
pub const HEAD_OBJECT: &str = "head.json";
/// Appends that lost the race for the next entry to another process, in
/// a row, before an append gives up.
const MAX_RACES: usize = 16;

/// The key of entry `seq` of `writer`'s chain.
pub fn entry_key(writer: &str, seq: u64) -> String {
    format!("{CHAINS}/{writer}/{seq:016}.json")
}

/// The sequence number an entry key holds (`None` for the head and
/// anything else).
pub fn entry_seq(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    (name.len() == 16 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// The head object: where the chain ends, and what a start needs of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last entry ([`GENESIS`] when empty).
    pub hash: String,
    /// The batch of the last `batch_committed` entry.
    pub last_batch: Option<String>,
    /// `config_hash` of the last `config_loaded` / `config_changed` entry.
    pub last_config_hash: Option<String>,
}

impl Default for ChainHead {
    fn default() -> ChainHead {
        ChainHead {
            entries: 0,
            hash: GENESIS.to_string(),
            last_batch: None,
            last_config_hash: None,
        }
    }
}

impl ChainHead {
    /// The head after `e`, the next entry.
    fn after(&self, e: &AuditEntry) -> ChainHead {
        let mut next = ChainHead {
            entries: e.seq + 1,
            hash: e.hash.clone(),
            ..self.clone()
        };
        if e.kind == AuditKind::BatchCommitted.as_str() {
            next.last_batch = e.key.clone();
        }
        if e.kind == AuditKind::ConfigLoaded.as_str() || e.kind == AuditKind::ConfigChanged.as_str()
        {
            next.last_config_hash = e
                .payload
                .get("config_hash")
                .and_then(|v| v.as_str())
                .map(str::to_string);
        }
        next
    }
}

/// One writer's chain, as one log sees it.
pub struct Chain {
    objects: Arc<dyn Backend>,
    writer: String,
    state: Mutex<State>,
}

struct State {
    head: ChainHead,
    /// Keys per kind of the entries this process read or wrote.
    keys: HashMap<String, HashSet<String>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("at", &self.location())
            .finish()
    }
}

impl Chain {
    /// The chain of `writer` on `objects`: its head read, and the entries
    /// after it (a crash between an entry and its head, another process's
    /// appends) adopted.
    pub fn open(objects: Arc<dyn Backend>, writer: &str) -> Result<Chain, AuditError> {
        let chain = Chain {
            objects,
            writer: writer.to_string(),
            state: Mutex::new(State {
                head: ChainHead::default(),
                keys: HashMap::new(),
            }),
        };
        let head_key = chain.key(HEAD_OBJECT);
        let head = match chain.objects.get(&head_key).map_err(chain.io(&head_key))? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| {
                chain.damaged(format!(
                    "its head {} is unreadable ({e})",
                    chain.objects.locate(&head_key).display()
                ))
            })?,
            None => ChainHead::default(),
        };
        if head.entries > 0 {
            let last = entry_key(writer, head.entries - 1);
            if chain
                .objects
                .size(&last)
                .map_err(chain.io(&last))?
                .is_none()
            {
                return Err(chain.damaged(format!(
                    "its head records {} entries but entry {} is not there: entries were removed",
                    head.entries,
                    head.entries - 1
                )));
            }
        }
        {
            let mut state = chain.lock();
            state.head = head;
            chain.adopt(&mut state)?;
        }
        Ok(chain)
    }

    /// Where the chain is, for messages.
    pub fn location(&self) -> PathBuf {
        self.objects.locate(&format!("{CHAINS}/{}", self.writer))
    }

    /// The head as this process knows it.
    pub fn head(&self) -> ChainHead {
        self.lock().head.clone()
    }

    /// Append `e` (its `seq`, `prev` and `hash` are set here), unless
    /// `once` and an entry of the same kind and key is known; `None` then.
    pub(super) fn append(
        &self,
        mut e: AuditEntry,
        once: bool,
    ) -> Result<Option<AuditEntry>, AuditError> {
        let mut state = self.lock();
        for _ in 0..MAX_RACES {
            if once
                && let Some(k) = &e.key
                && state.keys.get(&e.kind).is_some_and(|keys| keys.contains(k))
            {
                return Ok(None);
            }
            e.seq = state.head.entries;
            e.prev = state.head.hash.clone();
            e.hash = e.computed_hash();
            let key = entry_key(&self.writer, e.seq);
            let bytes = serde_json::to_vec(&e).expect("audit entries serialize");
            match self
                .objects
                .put_if_absent(&key, &bytes)
                .map_err(self.io(&key))?
            {
                Put::Created => {
                    state.head = state.head.after(&e);
                    Self::remember(&mut state, &e);
                    self.write_head(&state.head)?;
                    return Ok(Some(e));
                }
                // another process wrote entry `seq` first: read it (and
                // any after it) and append after them
                Put::Existed => self.adopt(&mut state)?,
            }
        }
        Err(self.damaged(format!(
            "{MAX_RACES} appends in a row lost the race for the next entry to another process writing as `{}`",
            self.writer
        )))
    }

    /// Every entry, read one by one (for tests and `last_of`; a start never
    /// reads them all).
    pub(super) fn entries(&self) -> Result<Vec<AuditEntry>, AuditError> {
        let entries = self.lock().head.entries;
        (0..entries).map(|seq| self.read(seq)).collect()
    }

    /// Entry `seq`, which must exist.
    pub(super) fn read(&self, seq: u64) -> Result<AuditEntry, AuditError> {
        let key = entry_key(&self.writer, seq);
        let bytes = self
            .objects
            .get(&key)
            .map_err(self.io(&key))?
            .ok_or_else(|| self.damaged(format!("entry {seq} is missing")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.damaged(format!("entry {seq} is not an audit entry ({e})")))
    }

    /// Read the entries after the head (written by another process, or
    /// before a crash kept the head behind), check that they chain, and
    /// move the head past them.
    fn adopt(&self, state: &mut State) -> Result<(), AuditError> {
        let after = match state.head.entries {
            0 => String::new(),
            n => entry_key(&self.writer, n - 1),
        };
        let prefix = format!("{CHAINS}/{}", self.writer);
        let keys = self
            .objects
            .list_after(&prefix, &after)
            .map_err(self.io(&prefix))?;
        let mut moved = false;
        for key in keys {
            let Some(seq) = entry_seq(&key) else { continue };
            if seq != state.head.entries {
                return Err(self.damaged(format!(
                    "entry {seq} follows entry {}: the entries between were removed",
                    state.head.entries as i64 - 1
                )));
            }
            let e = self.read(seq)?;
            if e.seq != seq || e.prev != state.head.hash || e.computed_hash() != e.hash {
                return Err(self.damaged(format!(
                    "entry {seq} does not chain to the entry before it or was edited"
                )));
            }
            state.head = state.head.after(&e);
            Self::remember(state, &e);
            moved = true;
        }
        if moved {
            self.write_head(&state.head)?;
        }
        Ok(())
    }

    fn remember(state: &mut State, e: &AuditEntry) {
        if let Some(k) = &e.key {
            state
                .keys
                .entry(e.kind.clone())
                .or_default()
                .insert(k.clone());
        }
    }

    fn write_head(&self, head: &ChainHead) -> Result<(), AuditError> {
        let key = self.key(HEAD_OBJECT);
        self.objects
            .put(&key, &serde_json::to_vec(head).expect("heads serialize"))
            .map_err(self.io(&key))
    }

    fn key(&self, name: &str) -> String {
        format!("{CHAINS}/{}/{name}", self.writer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io<'a>(&'a self, key: &'a str) -> impl FnOnce(std::io::Error) -> AuditError + 'a {
        move |source| AuditError::Io {
            path: self.objects.locate(key),
            source,
        }
    }

    fn damaged(&self, reason: String) -> AuditError {
        AuditError::Damaged {
            path: self.location(),
            reason,
        }
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
