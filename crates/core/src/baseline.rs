//! Baselines: the approved, known-good reference a batch is compared with.
//!
//! A baseline is the merge of the profiles of known-good batches plus, for
//! every metric the checks compute, its batch-to-batch distribution (a
//! [`Band`]) so that thresholds follow normal variability. Building is a pure
//! function of batch profiles and rules; storing, hashing and approval live
//! in the `dqmon` crate's `store::baselines`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compare::{self, stats::Band};
use crate::profile::{BatchProfile, ProfileError};
use crate::rules::Rules;

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
    /// The id of the PII key its `pii` columns were hashed with
    /// ([`crate::pii::PiiKey::id`]), when the rules have any: a process with
    /// another key would hash every value differently, so it is refused.
    /// Absent in baselines built before it was recorded (not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_key_id: Option<String>,
}

/// Building a baseline failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("a baseline needs at least one batch; pass the files of known-good batches")]
    Empty,
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// For every batch, the merge of all the *other* batches: a batch is never
/// compared with a reference that contains itself, so bands of metrics that
/// depend on the reference (distribution shapes, the range seen, values
/// never seen) show what a new batch will show. Prefix and suffix merges:
/// about three merges per batch. A baseline of one batch has no others and
/// is compared with itself.
fn leave_one_out(
    profiles: &[BatchProfile],
    merged: &BatchProfile,
) -> Result<Vec<BatchProfile>, ProfileError> {
    let n = profiles.len();
    if n < 2 {
        return Ok(vec![merged.clone(); n]);
    }
    let mut suffix: Vec<BatchProfile> = Vec::with_capacity(n);
    suffix.push(profiles[n - 1].clone());
    for p in profiles[..n - 1].iter().rev() {
        let mut s = p.clone();
        s.merge(suffix.last().expect("suffix has a first merge"))?;
        suffix.push(s);
    }
    suffix.reverse();
    let mut out = Vec::with_capacity(n);
    let mut prefix: Option<BatchProfile> = None;
    for (i, profile) in profiles.iter().enumerate() {
        let mut loo = match (&prefix, suffix.get(i + 1)) {
            (Some(pre), Some(suf)) => {
                let mut m = pre.clone();
                m.merge(suf)?;
                m
            }
            (Some(pre), None) => pre.clone(),
            (None, Some(suf)) => suf.clone(),
            (None, None) => merged.clone(),
        };
        for slice in loo.tags.values_mut() {
            slice.canonicalize();
        }
        out.push(loo);
        match &mut prefix {
            Some(pre) => pre.merge(profile)?,
            None => prefix = Some(profile.clone()),
        }
    }
    Ok(out)
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
        for (p, reference) in profiles.iter().zip(leave_one_out(profiles, &merged)?) {
            for (key, value) in compare::metric_values(p, &reference, rules) {
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
            pii_key_id: None,
        })
    }
}
