//! Signed baseline approvals: Ed25519 key files, the signature of an
//! approval, and the approval policy of a dataset (its `security:` rules).
//!
//! It owns the meaning of "this approval may be trusted": the signature
//! covers the baseline id, the dataset, the approver, the approval time and
//! the note; a signature counts only when it verifies under a public key that
//! the rules list under the approver's name. It must not write state (the
//! store records approvals; the daemon records refusals) and never logs or
//! prints private key material.
//!
//! # Key files
//!
//! - private (signing) keys: PKCS#8 PEM (what `dqmon baseline keygen` and
//!   `openssl genpkey -algorithm ed25519` write),
//!   or the raw 32-byte seed as 64 hex characters or base64. Keep them
//!   out of the repository and readable by the approver only (keygen writes
//!   mode 0600).
//! - public keys: SPKI PEM (a `PUBLIC KEY` block), or the raw 32
//!   bytes as 64 hex characters or base64 (what keygen prints). Public keys
//!   are not secrets: they may be written inline in the rules.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

pub use dqmon_config::keys::parse_public_key;
use dqmon_config::keys::raw_32;

use crate::baseline::Baseline;
use crate::config::model::{PublicKeySource, Rules, SecurityRules};
use crate::store::baselines::{Approval, BaselineStoreError};

/// A key could not be read, written or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read or write the key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold an Ed25519 {what} key ({reason}); use a PEM file written by `dqmon baseline keygen` (or `openssl genpkey -algorithm ed25519`), or the 32 key bytes as hex or base64"
    )]
    Format {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path} already exists; choose another --out or remove the old key first")]
    Exists { path: PathBuf },
}

/// Why a baseline's approval is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "its approval by `{approver}` is not signed, and the rules require signed approvals (security.require_signed_approval); approve it again with `dqmon baseline approve ID --by NAME --sign-key KEYFILE`"
    )]
    Unsigned { approver: String },
    #[error(
        "its approval by `{approver}` has a signature that does not verify under the key the rules list for `{approver}`: the approval record was changed, or signed with another key. Approve it again with the key listed in security.trusted_keys"
    )]
    BadSignature { approver: String },
    #[error(
        "its approval is signed by `{approver}`, who is not listed in security.trusted_keys; add their public key there (after checking it out of band) or have a listed approver sign"
    )]
    UnknownApprover { approver: String },
    #[error(
        "it was built and approved by the same person (`{approver}`), and the rules require a different approver (security.require_distinct_approver); have someone else review and approve it"
    )]
    SameApprover { approver: String },
}

/// The approved baseline could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ApprovedBaselineError {
    #[error(transparent)]
    Store(#[from] BaselineStoreError),
    #[error("baseline {id} is refused: {refusal}")]
    Refused {
        id: String,
        dataset: String,
        refusal: Refusal,
        /// The refused approval record, as found.
        approval: Box<Approval>,
    },
    #[error(
        "security.trusted_keys[{index}] (`{name}`) cannot be used: {source}; fix the key or its path in the rules"
    )]
    TrustedKey {
        index: usize,
        name: String,
        #[source]
        source: KeyError,
    },
}

/// The text form of a public key for the rules: base64 of its 32 bytes.
pub fn public_key_text(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Read a public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.into(),
        source,
    })?;
    parse_public_key(&text).map_err(|reason| KeyError::Format {
        path: path.into(),
        what: "public",
        reason,
    })
}

/// Read a private (signing) key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text =
        zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| KeyError::Io {
                path: path.into(),
                source,
            })?,
        );
    let t = text.trim();
    let format = |reason: String| KeyError::Format {
        path: path.into(),
        what: "private",
        reason,
    };
    if t.starts_with("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(t).map_err(|e| format(e.to_string()));
    }
    let seed = raw_32(t).ok_or_else(|| {
        format("expected a PEM private key, or 32 bytes as 64 hex characters or base64".into())
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Generate a key pair: the private key as PKCS#8 PEM at `out` (mode 0600,
/// never overwritten), the public key as SPKI PEM at `out.pub`. Returns the
/// public key file and the public key's text form.
pub fn generate_key(out: &Path) -> Result<(PathBuf, String), KeyError> {
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [out, public_path.as_path()] {
        if p.exists() {
            return Err(KeyError::Exists { path: p.into() });
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, seed.as_mut())
        .map_err(|e| io(out)(std::io::Error::other(e)))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| io(out)(std::io::Error::other(e)))?;
    crate::store::fsutil::write_atomic_mode(out, pem.as_bytes(), 0o600).map_err(io(out))?;
    let public = key.verifying_key();
    let pub_pem = public
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| io(&public_path)(std::io::Error::other(e)))?;
    crate::store::fsutil::write_atomic(&public_path, pub_pem.as_bytes())
        .map_err(io(&public_path))?;
    Ok((public_path, public_key_text(&public)))
}

/// The bytes an approval's signature covers: baseline id, dataset, approver,
/// approval time and note, as an unambiguous JSON array.
pub fn approval_message(a: &Approval) -> Vec<u8> {
    serde_json::to_vec(&[
        "dqmon-baseline-approval-v1",
        &a.baseline_id,
        &a.dataset,
        &a.approved_by,
        &a.approved_at,
        &a.note,
    ])
    .expect("strings serialize")
}

/// Sign an approval in place (sets `signature` and `public_key`).
pub fn sign_approval(a: &mut Approval, key: &SigningKey) {
    let sig = key.sign(&approval_message(a));
    a.signature = Some(B64.encode(sig.to_bytes()));
    a.public_key = Some(public_key_text(&key.verifying_key()));
}

/// The trusted approvers of a dataset, keys loaded.
#[derive(Debug, Clone)]
pub struct Policy {
    pub require_signed_approval: bool,
    pub require_distinct_approver: bool,
    pub keys: Vec<(String, VerifyingKey)>,
}

impl Policy {
    /// Load the keys the rules list (files are read now).
    pub fn load(rules: &SecurityRules) -> Result<Policy, ApprovedBaselineError> {
        let mut keys = Vec::new();
        for (index, k) in rules.trusted_keys.iter().enumerate() {
            let key = match &k.key {
                PublicKeySource::Inline(text) => {
                    parse_public_key(text).map_err(|reason| KeyError::Format {
                        path: PathBuf::from("(inline public_key)"),
                        what: "public",
                        reason,
                    })
                }
                PublicKeySource::File(path) => read_public_key(path),
            }
            .map_err(|source| ApprovedBaselineError::TrustedKey {
                index,
                name: k.name.clone(),
                source,
            })?;
            keys.push((k.name.clone(), key));
        }
        Ok(Policy {
            require_signed_approval: rules.require_signed_approval,
            require_distinct_approver: rules.require_distinct_approver,
            keys,
        })
    }

    /// Whether an approval of a baseline may be trusted. Returns whether it
    /// carries a verified signature.
    /// `built_by` is the baseline's builder.
    pub fn check(&self, approval: &Approval, built_by: &str) -> Result<bool, Refusal> {
        let approver = approval.approved_by.clone();
        if self.require_distinct_approver && approver == built_by {
            return Err(Refusal::SameApprover { approver });
        }
        let Some(sig_text) = &approval.signature else {
            return if self.require_signed_approval {
                Err(Refusal::Unsigned { approver })
            } else {
                Ok(false)
            };
        };
        if self.keys.is_empty() && !self.require_signed_approval {
            // nothing to verify against; the signature is informative only
            return Ok(false);
        }
        let listed: Vec<&VerifyingKey> = self
            .keys
            .iter()
            .filter(|(n, _)| *n == approver)
            .map(|(_, k)| k)
            .collect();
        if listed.is_empty() {
            return Err(Refusal::UnknownApprover { approver });
        }
        let sig = B64
            .decode(sig_text)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok());
        let msg = approval_message(approval);
        let ok = sig.is_some_and(|s| listed.iter().any(|k| k.verify_strict(&msg, &s).is_ok()));
        if ok {
            Ok(true)
        } else {
            Err(Refusal::BadSignature { approver })
        }
    }
}

/// The baseline monitoring compares against, after the rules' approval
/// policy: the pinned or latest approved baseline, its hash verified, its
/// approval checked against `security:`.
pub fn approved_baseline(
    rules: &Rules,
    pin: Option<&str>,
) -> Result<(String, Baseline, Approval), ApprovedBaselineError> {
    let policy = Policy::load(&rules.security)?;
    let store = crate::app::baseline_store(rules)?;
    let (id, baseline, approval) = store.approved(&rules.dataset, pin)?;
    policy
        .check(&approval, &baseline.built_by)
        .map_err(|refusal| ApprovedBaselineError::Refused {
            id: id.clone(),
            dataset: rules.dataset.clone(),
            refusal,
            approval: Box::new(approval.clone()),
        })?;
    Ok((id, baseline, approval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(built_by: &str) -> &str {
        built_by
    }

    fn approval(by: &str) -> Approval {
        Approval {
            baseline_id: "ab".repeat(32),
            dataset: "d".into(),
            approved_by: by.into(),
            approved_at: "2026-11-25T23:00:00Z".into(),
            note: "reviewed".into(),
            signature: None,
            public_key: None,
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn policy(keys: &[(&str, &SigningKey)]) -> Policy {
        Policy {
            require_signed_approval: true,
            require_distinct_approver: true,
            keys: keys
                .iter()
                .map(|(n, k)| (n.to_string(), k.verifying_key()))
                .collect(),
        }
    }

    #[test]
    fn a_signed_approval_by_a_listed_key_is_trusted() {
        let bob = key(1);
        let mut a = approval("bob");
        sign_approval(&mut a, &bob);
        assert_eq!(
            policy(&[("bob", &bob)]).check(&a, baseline("alice")),
            Ok(true)
        );
    }

    #[test]
    fn unsigned_wrongly_signed_and_tampered_approvals_are_refused() {
        let bob = key(1);
        let mallory = key(2);
        let p = policy(&[("bob", &bob)]);
        let b = baseline("alice");
        assert!(matches!(
            p.check(&approval("bob"), b),
            Err(Refusal::Unsigned { .. })
        ));

        let mut forged = approval("bob");
        sign_approval(&mut forged, &mallory);
        assert!(matches!(
            p.check(&forged, b),
            Err(Refusal::BadSignature { .. })
        ));

        let mut changed = approval("bob");
        sign_approval(&mut changed, &bob);
        changed.baseline_id = "cd".repeat(32);
        assert!(matches!(
            p.check(&changed, b),
            Err(Refusal::BadSignature { .. })
        ));

        let mut unknown = approval("mallory");
        sign_approval(&mut unknown, &mallory);
        assert!(matches!(
            p.check(&unknown, b),
            Err(Refusal::UnknownApprover { .. })
        ));
    }

    #[test]
    fn the_builder_cannot_approve_when_distinct_approvers_are_required() {
        let alice = key(3);
        let mut a = approval("alice");
        sign_approval(&mut a, &alice);
        let r = policy(&[("alice", &alice)]).check(&a, baseline("alice"));
        assert!(matches!(r, Err(Refusal::SameApprover { .. })), "{r:?}");
    }

    #[test]
    fn key_files_round_trip_in_every_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bob.key");
        let (pub_path, text) = generate_key(&out).unwrap();
        assert!(generate_key(&out).is_err(), "never overwrites a key");
        let sk = read_signing_key(&out).unwrap();
        assert_eq!(read_public_key(&pub_path).unwrap(), sk.verifying_key());
        assert_eq!(parse_public_key(&text).unwrap(), sk.verifying_key());
        let hex_text = hex::encode(sk.verifying_key().as_bytes());
        assert_eq!(parse_public_key(&hex_text).unwrap(), sk.verifying_key());
        let seed = dir.path().join("seed.hex");
        std::fs::write(&seed, hex::encode(sk.to_bytes())).unwrap();
        assert_eq!(read_signing_key(&seed).unwrap(), sk);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key readable by others: {mode:o}");
        }
        let err = read_signing_key(&pub_path).unwrap_err().to_string();
        assert!(err.contains("private"), "{err}");
        assert!(parse_public_key("not a key").is_err());
    }
}
