//! Baselines: the approved, known-good reference a batch is compared with.
//!
//! A baseline is the merge of the profiles of known-good batches plus, for
//! every metric the checks compute, its batch-to-batch distribution (a
//! [`Band`]) so that thresholds follow normal variability. Building is a pure
//! function of batch profiles and rules; storing, hashing and approval live
//! in [`crate::store::baselines`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compare::{self, stats::Band};
use crate::config::model::Rules;
use crate::profile::{BatchProfile, ProfileError};

/// Version of the serialized baseline format.
pub const BASELINE_FORMAT: u32 = 1;

/// A batch that went into a baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRef {
    /// File name or topic/partition/offsets.
    pub origin: String,
    /// SHA-256 of the input bytes (hex), when known.
    pub input_sha256: Option<String>,
    pub rows: u64,
}

/// A candidate or approved baseline (approval is recorded beside it, not in it,
/// so that approving never changes its bytes or its id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub format: u32,
    pub dataset: String,
    /// Profile shape of the rules it was built with; batches must match.
    pub shape: String,
    /// Hash of the rules file it was built with.
    pub rules_hash: String,
    /// Who built it (recorded so that approval by the same person can be refused).
    pub built_by: String,
    pub batches: Vec<BatchRef>,
    /// Every batch profile merged.
    pub profile: BatchProfile,
    /// Batch-to-batch distribution of each metric, keyed `check|column|slice`.
    pub bands: BTreeMap<String, Band>,
}

/// Building a baseline failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("a baseline needs at least one batch; pass the files of known-good batches")]
    Empty,
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

impl Baseline {
    /// Merge known-good batch profiles into a candidate baseline.
    pub fn build(
        rules: &Rules,
        profiles: &[BatchProfile],
        batches: Vec<BatchRef>,
        built_by: &str,
    ) -> Result<Baseline, BaselineError> {
        let (first, rest) = profiles.split_first().ok_or(BaselineError::Empty)?;
        let mut merged = first.clone();
        for p in rest {
            merged.merge(p)?;
        }
        let mut bands: BTreeMap<String, Band> = BTreeMap::new();
        for p in profiles {
            for (key, value) in compare::metric_values(p, &merged, rules) {
                bands.entry(key).or_default().push(value);
            }
        }
        Ok(Baseline {
            format: crate::baseline::BASELINE_FORMAT,
            dataset: rules.dataset.clone(),
            shape: rules.profile_shape(),
            rules_hash: rules.rules_hash.clone(),
            built_by: built_by.to_string(),
            batches,
            profile: merged,
            bands,
        })
    }
}
