//! Key text as the rules write it: the public keys of `security.trusted_keys`.
//!
//! Parsing only; reading key files and verifying signatures is the `dqmon`
//! crate's `security` module.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;

/// Parse a public key written inline or in a file: SPKI PEM, or the 32
/// raw bytes as hex or base64.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(t).map_err(|e| e.to_string());
    }
    let bytes = raw_32(t).ok_or_else(|| {
        "expected a PEM public key, or 32 bytes as 64 hex characters or base64".to_string()
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// 32 bytes written as 64 hex characters or as base64.
pub fn raw_32(t: &str) -> Option<[u8; 32]> {
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).ok()?
    } else {
        B64.decode(t).ok()?
    };
    bytes.try_into().ok()
}
