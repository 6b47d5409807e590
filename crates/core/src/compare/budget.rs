//! The false-alarm budget: how the user's `false_alarms_per_1000_batches`
//! becomes a p-value threshold for every test of a batch.
//!
//! ```text
//!  budget F per 1,000 clean batches
//!     │  α_batch = F / 1000      (chance that a clean batch raises anything)
//!     ▼
//!  split by family weight        labels 3 · values 2 · slices 2 · missing 1 · range 1 · volume 1 · distribution 1
//!     │  α_family = α_batch · w / Σw     (Σ over the families that tested anything in the batch)
//!     ▼
//!  Bonferroni inside the family  α_test = α_family / Σ(sides × windows) over the family's eligible tests
//! ```
//!
//! Bonferroni holds under any dependence between the tests (tags share rows
//! with `all`, windows share batches), so the realised false-alarm rate is
//! at most the budget; the clean-stream simulations in the tests and in
//! `dqmon-eval evaluate` measure how far below it lands. Families keep the label
//! and unseen-value tests (few, and the ones that matter against poisoning)
//! from being drowned by a hundred distribution and missing-value tests.
//!
//! Pure: numbers in, numbers out.

use serde::{Deserialize, Serialize};

/// A family of checks sharing one part of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Label rate per tag, against the most trusted tag, and given the features.
    Labels,
    /// Values never seen in the baseline, new, rare-now-common and vanished top values.
    Values,
    /// Missing values.
    Missing,
    /// Values outside the declared or the baseline's range.
    Range,
    /// Row counts, trust-tag shares, duplicate rows.
    Volume,
    /// Shape of numeric (PSI) and categorical (Jensen-Shannon) distributions.
    Distribution,
    /// Label rate and row share per value of the rules' slice columns.
    Slices,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Labels,
        Family::Values,
        Family::Missing,
        Family::Range,
        Family::Volume,
        Family::Distribution,
        Family::Slices,
    ];

    /// Share weight of the family in the budget.
    pub fn weight(self) -> f64 {
        match self {
            Family::Labels => 3.0,
            Family::Values | Family::Slices => 2.0,
            _ => 1.0,
        }
    }

    /// The family's share of a per-batch false-alarm probability, among
    /// the families that tested anything in the batch (`active`).
    pub fn alpha(self, alpha_batch: f64, active: &[Family]) -> f64 {
        let total: f64 = active.iter().map(|f| f.weight()).sum();
        if total <= 0.0 {
            return 0.0;
        }
        alpha_batch * self.weight() / total
    }
}

/// Per-batch false-alarm probability of a budget stated per 1,000 batches.
pub fn alpha_batch(false_alarms_per_1000_batches: f64) -> f64 {
    (false_alarms_per_1000_batches / 1000.0).clamp(0.0, 1.0)
}

/// The p-value threshold of one test: its family's share of the batch's
/// budget, split evenly over the `looks` (tests × sides × windows) that the
/// family made in this batch.
pub fn alpha_test(alpha_batch: f64, family: Family, active: &[Family], looks: u64) -> f64 {
    family.alpha(alpha_batch, active) / looks.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_shares_add_up_to_the_budget() {
        let a = alpha_batch(4.0);
        let all = Family::ALL;
        let sum: f64 = all.iter().map(|f| f.alpha(a, &all)).sum();
        assert!((sum - 0.004).abs() < 1e-15);
        // without slices, six families: labels get 3 of 9
        let six = &all[..6];
        assert!((Family::Labels.alpha(a, six) - 0.004 / 3.0).abs() < 1e-15);
        assert!((alpha_test(a, Family::Missing, six, 10) - 0.004 / 9.0 / 10.0).abs() < 1e-18);
    }
}
