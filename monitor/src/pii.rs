//! Keyed hashing of `pii` column values: HMAC-SHA256 with a secret key, so
//! that equal values stay comparable across batches while raw values never
//! reach profiles, history, alerts or logs.
//!
//! The key comes from an environment variable (named in the rules, default
//! `DQMON_PII_KEY`) or, when that is unset, from `<state_dir>/pii.key`, which
//! is created with fresh random bytes (mode 0600) on first use. Replays that
//! must reproduce live results use the same key.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of every keyed hash, so a reader can tell it is not a raw value.
pub const PII_PREFIX: &str = "pii:";

/// The key could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum PiiKeyError {
    #[error(
        "the PII key in `{env}` is shorter than 16 bytes; set it to a random secret of at least 32 characters"
    )]
    TooShort { env: String },
    #[error(
        "the PII key file {path} could not be read or created: {source}; make the state folder writable or set the key's environment variable"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A secret HMAC key for pseudonymising `pii` values.
#[derive(Clone)]
pub struct PiiKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKey(<redacted>)")
    }
}

impl PiiKey {
    /// A key from raw bytes (tests and embedding).
    pub fn from_bytes(key: &[u8]) -> PiiKey {
        PiiKey { key: key.to_vec() }
    }

    /// The key from `env` if set, else from `<state_dir>/pii.key` (created if absent).
    pub fn load(env: &str, state_dir: &Path) -> Result<PiiKey, PiiKeyError> {
        if let Ok(v) = std::env::var(env)
            && !v.is_empty()
        {
            if v.len() < 16 {
                return Err(PiiKeyError::TooShort { env: env.into() });
            }
            return Ok(PiiKey::from_bytes(v.as_bytes()));
        }
        let path = state_dir.join("pii.key");
        let io = |source| PiiKeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 16 => return Ok(PiiKey::from_bytes(&bytes)),
            Ok(_) => {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the key file holds fewer than 16 bytes",
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut key = [0u8; 32];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut key)
            .map_err(|e| io(std::io::Error::other(e)))?;
        crate::store::fsutil::write_atomic_mode(&path, &key, 0o600).map_err(io)?;
        Ok(PiiKey::from_bytes(&key))
    }

    /// The keyed hash that stands in for a raw value.
    pub fn hash(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        format!("{PII_PREFIX}{}", hex::encode(&out[..12]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_stable() {
        let a = PiiKey::from_bytes(b"0123456789abcdef0123");
        let b = PiiKey::from_bytes(b"another key of some length");
        assert_eq!(a.hash("alice@example.com"), a.hash("alice@example.com"));
        assert_ne!(a.hash("alice@example.com"), b.hash("alice@example.com"));
        assert!(a.hash("x").starts_with(PII_PREFIX));
        assert!(!format!("{a:?}").contains("0123"));
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = PiiKey::load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap();
        let k2 = PiiKey::load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap();
        assert_eq!(k1.hash("v"), k2.hash("v"));
    }
}
