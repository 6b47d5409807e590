//! Keyed hashing of `pii` column values: HMAC-SHA256 with a secret key, so
//! that equal values stay comparable across batches while raw values never
//! reach profiles, history, alerts or logs.
//!
//! The key comes from an environment variable (named in the rules, default
//! `DQMON_PII_KEY`) or, when that is unset, from `<state_dir>/pii.key`. Only
//! the state folder's writer creates that file (fresh random bytes, mode
//! 0600), under the folder's writer lock ([`PiiKey::load_or_create`]):
//! commands that only read ([`PiiKey::load`]: `profile`, `compare`,
//! `replay`) never create it, since a key made up on the spot would hash
//! `pii` values differently from the history and the baseline. Replays that
//! must reproduce live results use the same key.

use std::path::{Path, PathBuf};

use crate::store::lock::WriterLock;

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
    #[error(
        "no PII key: the environment variable `{env}` is not set and {path} does not exist. This command only reads and never creates the key (a new key would hash `pii` values unlike the history and the baseline). Set `{env}` to the key live monitoring uses, or create {path} by running `dqmon run` (or `dqmon baseline build`) on this state folder once"
    )]
    Missing { env: String, path: PathBuf },
    #[error("could not draw random bytes for a PII key: {0}")]
    Random(std::io::Error),
}

/// The key file's name inside a state folder.
pub const KEY_FILE: &str = "pii.key";

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

    /// The key from `env` if set, else from `<state_dir>/pii.key`; `None`
    /// when there is neither. Reads only.
    pub fn load_existing(env: &str, state_dir: &Path) -> Result<Option<PiiKey>, PiiKeyError> {
        if let Ok(v) = std::env::var(env)
            && !v.is_empty()
        {
            if v.len() < 16 {
                return Err(PiiKeyError::TooShort { env: env.into() });
            }
            return Ok(Some(PiiKey::from_bytes(v.as_bytes())));
        }
        let path = state_dir.join(KEY_FILE);
        let io = |source| PiiKeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 16 => Ok(Some(PiiKey::from_bytes(&bytes))),
            Ok(_) => Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the key file holds fewer than 16 bytes",
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// The key from `env` if set, else from `<state_dir>/pii.key`; a missing
    /// key is [`PiiKeyError::Missing`], which says how to make one. Reads only.
    pub fn load(env: &str, state_dir: &Path) -> Result<PiiKey, PiiKeyError> {
        PiiKey::load_existing(env, state_dir)?.ok_or_else(|| PiiKeyError::Missing {
            env: env.into(),
            path: state_dir.join(KEY_FILE),
        })
    }

    /// The key from `env` if set, else from `pii.key` in the state folder
    /// `lock` holds, created with fresh random bytes (mode 0600) when absent.
    /// Holding the writer lock is what makes creating it safe: no other
    /// process can be creating another one at the same time.
    pub fn load_or_create(env: &str, lock: &WriterLock) -> Result<PiiKey, PiiKeyError> {
        let state_dir = lock.dir();
        if let Some(key) = PiiKey::load_existing(env, state_dir)? {
            return Ok(key);
        }
        let path = state_dir.join(KEY_FILE);
        let key = fresh_key().map_err(|source| PiiKeyError::Io {
            path: path.clone(),
            source,
        })?;
        crate::store::fsutil::write_atomic_mode(&path, &key, 0o600)
            .map_err(|source| PiiKeyError::Io { path, source })?;
        Ok(PiiKey::from_bytes(&key))
    }

    /// A fresh random key that is stored nowhere: for rules without a `pii`
    /// column, where no value is ever hashed, so that reading commands need
    /// no key file at all.
    pub fn unstored() -> Result<PiiKey, PiiKeyError> {
        Ok(PiiKey::from_bytes(
            &fresh_key().map_err(PiiKeyError::Random)?,
        ))
    }

    /// The keyed hash that stands in for a raw value.
    pub fn hash(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        format!("{PII_PREFIX}{}", hex::encode(&out[..12]))
    }
}

/// 32 random bytes from the operating system.
fn fresh_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut key)
        .map_err(std::io::Error::other)?;
    Ok(key)
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
    fn key_file_is_created_once_and_only_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let err = PiiKey::load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap_err();
        assert!(matches!(err, PiiKeyError::Missing { .. }), "{err}");
        assert!(
            err.to_string().contains("DQMON_TEST_UNSET_KEY_VAR"),
            "{err}"
        );
        assert!(!dir.path().join(KEY_FILE).exists(), "loading never creates");
        let lock = WriterLock::acquire(dir.path()).unwrap();
        let k1 = PiiKey::load_or_create("DQMON_TEST_UNSET_KEY_VAR", &lock).unwrap();
        let k2 = PiiKey::load_or_create("DQMON_TEST_UNSET_KEY_VAR", &lock).unwrap();
        let k3 = PiiKey::load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap();
        assert_eq!(k1.hash("v"), k2.hash("v"));
        assert_eq!(k1.hash("v"), k3.hash("v"));
    }
}
