//! Where the PII key lives. The keyed hash itself is `dqmon_core::pii`.
//!
//! The key comes from an environment variable (named in the rules, default
//! `DQMON_PII_KEY`) or, when that is unset, from `<state_dir>/pii.key`. Only
//! the state folder's writer creates that file (fresh random bytes, mode
//! 0600), under the folder's writer lock ([`load_or_create`]): commands that
//! only read ([`load`]: `profile`, `compare`, `replay`) never create it,
//! since a key made up on the spot would hash `pii` values differently from
//! the history and the baseline. Replays that must reproduce live results
//! use the same key.

use std::path::{Path, PathBuf};

pub use dqmon_core::pii::{PII_PREFIX, PiiKey};

use crate::store::lock::WriterLock;

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

/// The key from `env` if set, else from `<state_dir>/pii.key`; `None` when
/// there is neither. Reads only.
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
    load_existing(env, state_dir)?.ok_or_else(|| PiiKeyError::Missing {
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
    if let Some(key) = load_existing(env, state_dir)? {
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
/// column, where no value is ever hashed, so that reading commands need no
/// key file at all.
pub fn unstored() -> Result<PiiKey, PiiKeyError> {
    Ok(PiiKey::from_bytes(
        &fresh_key().map_err(PiiKeyError::Random)?,
    ))
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
    fn key_file_is_created_once_and_only_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let err = load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap_err();
        assert!(matches!(err, PiiKeyError::Missing { .. }), "{err}");
        assert!(
            err.to_string().contains("DQMON_TEST_UNSET_KEY_VAR"),
            "{err}"
        );
        assert!(!dir.path().join(KEY_FILE).exists(), "loading never creates");
        let lock = WriterLock::acquire(dir.path()).unwrap();
        let k1 = load_or_create("DQMON_TEST_UNSET_KEY_VAR", &lock).unwrap();
        let k2 = load_or_create("DQMON_TEST_UNSET_KEY_VAR", &lock).unwrap();
        let k3 = load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap();
        assert_eq!(k1.hash("v"), k2.hash("v"));
        assert_eq!(k1.hash("v"), k3.hash("v"));
    }
}
