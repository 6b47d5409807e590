//! Where the PII key lives. The keyed hash itself is `dqmon_core::pii`.
//!
//! The key comes from an environment variable (named in the rules, default
//! `DQMON_PII_KEY`) or, when that is unset, from `<state_dir>/pii.key`, which
//! is created with fresh random bytes (mode 0600) on first use. Replays that
//! must reproduce live results use the same key.

use std::path::{Path, PathBuf};

pub use dqmon_core::pii::{PII_PREFIX, PiiKey};

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

#[cfg(test)]
mod tests {
    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = super::load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap();
        let k2 = super::load("DQMON_TEST_UNSET_KEY_VAR", dir.path()).unwrap();
        assert_eq!(k1.hash("v"), k2.hash("v"));
    }
}
