//! dqmon-store: the only stage that writes state.
//!
//! ```text
//!  source ──► decode ──► profile ──► compare ──► alert ──► outbox ──► sinks
//!                                                  │
//!                                 ┌────────── dqmon-store ──────────┐
//!                                 │ history   baselines   audit     │
//!                                 │ checkpoint  lock   ─► Backend   │
//!                                 └─────────────────────────────────┘
//! ```
//!
//! What this crate owns, per dataset state folder:
//!
//! - [`history`]: one manifest per batch (the commit point), its profile and
//!   metrics, the alerts file, the drop-folder checkpoint and quarantine;
//! - [`baselines`]: baselines by content hash and their approvals;
//! - [`audit`]: the hash-chained log of everything committed or approved;
//! - [`lock`]: the writer lock (one writer per state folder);
//! - [`backend`]: where objects live ([`backend::Backend`]; the local folder
//!   is the embedded default), and [`object`], the same on an object store
//!   (S3 and S3-compatible, GCS, Azure);
//! - [`presence`]: one process per replica name on a shared history;
//! - [`fsutil`], [`fault`]: durable writes, and the faults the tests inject
//!   into them.
//!
//! What it must not do: decide anything. What to commit comes from the
//! pipeline (the pure stages of `dqmon-core` and the daemon that drives
//! them); the store makes it durable, in order, exactly once. It has no
//! Kafka, DataFusion or sink (checked by `tests/integration/crate_graph.rs`).

pub mod audit;
pub mod backend;
pub mod baselines;
pub mod fault;
pub mod fsutil;
pub mod history;
pub mod lock;
pub mod object;
pub mod presence;

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// SHA-256 (hex) of a file's bytes, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
