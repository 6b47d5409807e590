//! Keyed hashing of `pii` column values: HMAC-SHA256 with a secret key, so
//! that equal values stay comparable across batches while raw values never
//! reach profiles, history, alerts or logs.
//!
//! Where the key comes from (an environment variable or a key file in the
//! state folder) is the `dqmon` crate's business (`dqmon::pii`); this module
//! only holds the key and hashes with it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use siphasher::sip::SipHasher13;

/// Prefix of every keyed hash, so a reader can tell it is not a raw value.
pub const PII_PREFIX: &str = "pii:";

/// A secret HMAC key for pseudonymising `pii` values.
///
/// Two keyed functions come from it: [`PiiKey::hash`] (HMAC-SHA256, the
/// text that stands in for a value in the top-values sketch and in alerts)
/// and [`PiiKey::hash64`] (SipHash-1-3 under a 128-bit subkey derived from
/// the key with HMAC, the 64 bits the distinct-count sketch takes). Neither
/// can be computed without the key, so a stored profile, baseline or
/// history does not let anyone test a guessed value.
#[derive(Clone)]
pub struct PiiKey {
    key: Vec<u8>,
    sketch: SipHasher13,
}

impl std::fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKey(<redacted>)")
    }
}

impl PiiKey {
    /// A key from raw bytes (the key store, tests and embedding).
    pub fn from_bytes(key: &[u8]) -> PiiKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"dqmon pii: distinct-count sketch subkey");
        let sub: [u8; 16] = mac.finalize().into_bytes()[..16]
            .try_into()
            .expect("SHA-256 has 32 bytes");
        PiiKey {
            key: key.to_vec(),
            sketch: SipHasher13::new_with_key(&sub),
        }
    }

    /// The keyed hash that stands in for a raw value.
    pub fn hash(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        format!("{PII_PREFIX}{}", hex::encode(&out[..12]))
    }

    /// The key's public identifier: 16 hex digits of an HMAC of a fixed
    /// text under the key. It tells two keys apart (a baseline records the
    /// id of the key its profiles were hashed with) and reveals nothing of
    /// the key.
    pub fn id(&self) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"dqmon pii: key id");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The keyed 64-bit hash a distinct-count sketch takes for a value.
    pub fn hash64(&self, value: &str) -> u64 {
        self.sketch.hash(value.as_bytes())
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
        assert_eq!(a.hash64("alice@example.com"), a.hash64("alice@example.com"));
        assert_ne!(a.hash64("alice@example.com"), b.hash64("alice@example.com"));
    }
}
