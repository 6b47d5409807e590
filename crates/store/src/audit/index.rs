//! The keys of a local audit log's entries, kept up to date by reading
//! only what was appended since (for [`super::AuditLog::append_once`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::{AuditError, AuditKind, Head, io, parse_lines};

/// Keys per entry kind of the log's first `covered` bytes.
#[derive(Default)]
pub(super) struct KeyIndex {
    pub(super) covered: u64,
    /// Bytes of the log read to build it, over its life (tests look).
    pub(super) read: u64,
    /// The head hash when `covered` was reached: a log that is not the one
    /// indexed (rewritten, cut) is indexed again from its start.
    pub(super) hash: String,
    pub(super) keys: HashMap<String, HashSet<String>>,
}

impl KeyIndex {
    /// Bring the index up to `head` (reading only the new bytes).
    pub(super) fn catch_up(
        &mut self,
        file: &mut File,
        head: &Head,
        path: &Path,
    ) -> Result<(), AuditError> {
        if self.covered > head.len || (self.covered == head.len && self.hash != head.hash) {
            *self = KeyIndex {
                read: self.read,
                ..KeyIndex::default()
            };
        }
        if self.covered < head.len {
            file.seek(SeekFrom::Start(self.covered)).map_err(io(path))?;
            let mut bytes = Vec::with_capacity((head.len - self.covered) as usize);
            file.take(head.len - self.covered)
                .read_to_end(&mut bytes)
                .map_err(io(path))?;
            self.read += bytes.len() as u64;
            for e in parse_lines(&bytes, path)? {
                if let Some(k) = e.key {
                    self.keys.entry(e.kind).or_default().insert(k);
                }
            }
            self.covered = head.len;
            self.hash = head.hash.clone();
        }
        Ok(())
    }

    pub(super) fn contains(&self, kind: AuditKind, key: &str) -> bool {
        self.keys
            .get(kind.as_str())
            .is_some_and(|k| k.contains(key))
    }
}
