//! The store: the only stage that writes state (baselines, approvals, and in
//! the daemon history, checkpoints and alerts). Everything it writes is
//! written durably (see [`fsutil`]).

pub mod audit;
pub mod baselines;
pub mod fault;
pub mod fsutil;
pub mod history;
pub mod lock;
pub mod refusal;

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
