//! Content-addressed baselines and their approvals.
//!
//! A baseline is stored as `<baseline_dir>/<id>.json` where `id` is the
//! SHA-256 of the file's bytes. Approvals are separate records in
//! `<baseline_dir>/approvals/<id>.json` (who, when, note), so approving never
//! changes a baseline's bytes. Loading always recomputes the hash: a file
//! whose bytes do not match its id is refused, whoever approved it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::{Backend, LocalBackend};
use dqmon_core::baseline::{BASELINE_FORMAT, Baseline};

/// Why a baseline could not be stored, found or trusted.
#[derive(Debug, thiserror::Error)]
pub enum BaselineStoreError {
    #[error("could not access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "baseline {id} is refused: the bytes of {path} hash to {actual}, not to its id; the file was changed after it was built. Rebuild the baseline from known-good batches and approve it again"
    )]
    Tampered {
        id: String,
        path: PathBuf,
        actual: String,
    },
    #[error("baseline {id} is not in {dir}; `dqmon baseline list` shows the ones there")]
    NotFound { id: String, dir: PathBuf },
    #[error(
        "no approved baseline for dataset `{dataset}` in {dir}; build one with `dqmon baseline build` and approve it with `dqmon baseline approve ID --by NAME`"
    )]
    NoneApproved { dataset: String, dir: PathBuf },
    #[error("baseline {id} could not be decoded: {reason}")]
    Decode { id: String, reason: String },
    #[error(
        "baseline {id} was built for dataset `{found}`, not `{expected}`; approve a baseline of this dataset"
    )]
    WrongDataset {
        id: String,
        expected: String,
        found: String,
    },
    #[error(
        "baseline {id} was built with other rules (columns, trust tags, label or sketch sizes changed); rebuild it with the current rules and approve it again"
    )]
    WrongShape { id: String },
    #[error("`{id}` is not a baseline id: ids are 64 lowercase hex characters (a SHA-256)")]
    BadId { id: String },
}

/// Who approved a baseline, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub baseline_id: String,
    pub dataset: String,
    pub approved_by: String,
    /// RFC 3339 UTC time of the approval (wall clock of the approver).
    pub approved_at: String,
    #[serde(default)]
    pub note: String,
    /// Ed25519 signature (base64) over the id, dataset, approver, time and
    /// note (see `dqmon::security::approval_message`), when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The signer's public key (base64), for information: trust comes from
    /// the keys listed in the rules, never from this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Result of verifying one stored baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    pub path: PathBuf,
    /// `None` when the bytes match the id; else what they hash to.
    pub mismatch: Option<String>,
    pub approved: bool,
}

/// The baselines of one folder: `<id>.json` (the id is the SHA-256 of the
/// bytes) and `approvals/<id>.json`, objects of a [`Backend`].
pub struct BaselineStore {
    dir: PathBuf,
    objects: Box<dyn Backend>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn valid_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BaselineStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        BaselineStore {
            objects: Box::new(LocalBackend::new(&dir)),
            dir,
        }
    }

    /// The baselines under `objects` (a prefix on an object store, named
    /// `dir` in messages).
    pub fn with_backend(dir: impl Into<PathBuf>, objects: Box<dyn Backend>) -> Self {
        BaselineStore {
            dir: dir.into(),
            objects,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BaselineStoreError + '_ {
        move |source| BaselineStoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn key_of(id: &str) -> String {
        format!("{id}.json")
    }

    fn approval_key(id: &str) -> String {
        format!("approvals/{id}.json")
    }

    /// Store a candidate; returns its id. Storing the same baseline twice is
    /// a no-op (the key is the content's hash: whoever wrote it first wrote
    /// these bytes).
    pub fn save(&self, baseline: &Baseline) -> Result<String, BaselineStoreError> {
        let bytes = serde_json::to_vec(baseline).expect("baselines serialize");
        let id = sha256_hex(&bytes);
        let key = Self::key_of(&id);
        self.objects
            .put_if_absent(&key, &bytes)
            .map_err(Self::io(&self.objects.locate(&key)))?;
        Ok(id)
    }

    /// Load a baseline by id, verifying that its bytes hash to the id.
    pub fn load(&self, id: &str) -> Result<Baseline, BaselineStoreError> {
        if !valid_id(id) {
            return Err(BaselineStoreError::BadId { id: id.into() });
        }
        let key = Self::key_of(id);
        let path = self.objects.locate(&key);
        let Some(bytes) = self.objects.get(&key).map_err(Self::io(&path))? else {
            return Err(BaselineStoreError::NotFound {
                id: id.into(),
                dir: self.dir.clone(),
            });
        };
        let actual = sha256_hex(&bytes);
        if actual != id {
            return Err(BaselineStoreError::Tampered {
                id: id.into(),
                path,
                actual,
            });
        }
        let b: Baseline =
            serde_json::from_slice(&bytes).map_err(|e| BaselineStoreError::Decode {
                id: id.into(),
                reason: e.to_string(),
            })?;
        if b.format != BASELINE_FORMAT {
            return Err(BaselineStoreError::Decode {
                id: id.into(),
                reason: format!(
                    "format {} is not supported (expected {BASELINE_FORMAT})",
                    b.format
                ),
            });
        }
        Ok(b)
    }

    /// Record an approval of a stored (and verified) baseline.
    pub fn approve(
        &self,
        id: &str,
        approved_by: &str,
        approved_at: &str,
        note: &str,
    ) -> Result<Approval, BaselineStoreError> {
        self.approve_with(id, approved_by, approved_at, note, |_| {})
    }

    /// Record an approval, after `sign` has had it (the daemon's security
    /// module signs it there, when the approver has a key).
    pub fn approve_with(
        &self,
        id: &str,
        approved_by: &str,
        approved_at: &str,
        note: &str,
        sign: impl FnOnce(&mut Approval),
    ) -> Result<Approval, BaselineStoreError> {
        let b = self.load(id)?;
        let mut approval = Approval {
            baseline_id: id.to_string(),
            dataset: b.dataset,
            approved_by: approved_by.to_string(),
            approved_at: approved_at.to_string(),
            note: note.to_string(),
            signature: None,
            public_key: None,
        };
        sign(&mut approval);
        let key = Self::approval_key(id);
        let bytes = serde_json::to_vec_pretty(&approval).expect("approvals serialize");
        self.objects
            .put(&key, &bytes)
            .map_err(Self::io(&self.objects.locate(&key)))?;
        Ok(approval)
    }

    /// Every approval in the folder.
    pub fn approvals(&self) -> Result<Vec<Approval>, BaselineStoreError> {
        let mut out = Vec::new();
        let keys = self
            .objects
            .list("approvals")
            .map_err(Self::io(&self.objects.locate("approvals")))?;
        for key in keys.iter().filter(|k| k.ends_with(".json")) {
            let path = self.objects.locate(key);
            // listed a moment ago: gone now means removed meanwhile
            let Some(bytes) = self.objects.get(key).map_err(Self::io(&path))? else {
                continue;
            };
            let a: Approval =
                serde_json::from_slice(&bytes).map_err(|e| BaselineStoreError::Decode {
                    id: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            out.push(a);
        }
        out.sort_by(|a, b| (&a.approved_at, &a.baseline_id).cmp(&(&b.approved_at, &b.baseline_id)));
        Ok(out)
    }

    /// The baseline monitoring compares against: the pinned id if given
    /// (it must be approved), else the most recently approved one of the dataset.
    pub fn approved(
        &self,
        dataset: &str,
        pin: Option<&str>,
    ) -> Result<(String, Baseline, Approval), BaselineStoreError> {
        let approvals = self.approvals()?;
        let chosen = approvals
            .iter()
            .rev()
            .find(|a| a.dataset == dataset && pin.is_none_or(|p| a.baseline_id == p))
            .cloned()
            .ok_or_else(|| BaselineStoreError::NoneApproved {
                dataset: dataset.into(),
                dir: self.dir.clone(),
            })?;
        let b = self.load(&chosen.baseline_id)?;
        if b.dataset != dataset {
            return Err(BaselineStoreError::WrongDataset {
                id: chosen.baseline_id,
                expected: dataset.into(),
                found: b.dataset,
            });
        }
        Ok((chosen.baseline_id.clone(), b, chosen))
    }

    /// Recompute the hash of every stored baseline.
    pub fn verify_all(&self) -> Result<Vec<Verified>, BaselineStoreError> {
        let approved: Vec<String> = self
            .approvals()?
            .into_iter()
            .map(|a| a.baseline_id)
            .collect();
        let mut out = Vec::new();
        let keys = self.objects.list("").map_err(Self::io(&self.dir))?;
        for key in &keys {
            let Some(stem) = key.strip_suffix(".json").filter(|s| valid_id(s)) else {
                continue;
            };
            let path = self.objects.locate(key);
            let Some(bytes) = self.objects.get(key).map_err(Self::io(&path))? else {
                continue;
            };
            let actual = sha256_hex(&bytes);
            out.push(Verified {
                id: stem.to_string(),
                path: path.clone(),
                mismatch: (actual != stem).then_some(actual),
                approved: approved.iter().any(|a| a == stem),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
