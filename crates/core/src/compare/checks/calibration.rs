//! Labels given the features: a tag's labels against what its rows' slice
//! values predict (the calibration residual).
//!
//! The baseline gives, per trust tag and joint cell `c` of the slice
//! columns (`slices:`; one column: its values, several: the combinations
//! of their values, see [`crate::profile::SliceProfile::by_cell`]), `Y_c`
//! positive labels among `N_c` labelled rows. For a batch's tag with `y_c`
//! positives among `n_c` labelled rows per cell:
//!
//! ```text
//!   prediction   p̂_c = (Y_c + m·p̄) / (N_c + m)      p̄: the tag's baseline rate (Jeffreys),
//!                                                   m = PRIOR_ROWS pseudo-rows
//!   residual     R   = Σ_c y_c − Σ_c n_c·p̂_c        observed minus predicted positives
//!   Var[R]       = φ · ( Σ_c n_c·p̂_c(1 − p̂_c)  +  Σ_c n_c²·p̂_c(1 − p̂_c) / (N_c + m) )
//!                        binomial error             error of the prediction
//! ```
//!
//! Null distribution: given its cell, each row's label is Bernoulli with
//! the cell's baseline rate, independently of the other rows (the same
//! assumption as the label-rate test, made per cell instead of per tag);
//! `R / √Var` is then about normal, and the small-count upper tail uses the
//! negative binomial of the same mean and variance ([`super::super::rate`]).
//! A cell the baseline barely saw leans on the tag's rate (`m` pseudo-rows),
//! and the second variance term counts the error of every cell's estimate.
//! Overdispersion: `φ` is the mean square of the same standardized residual
//! over the baseline's own batches, each against the merge of the others
//! (leave-one-out band), at least 1; when it is above 1 the statistic is
//! referred to Student-t with Satterthwaite's degrees of freedom for the
//! estimated excess `φ − 1` (the binomial part is known). Cells coarser
//! than what the label really depends on leave variance between batches,
//! which `φ` absorbs.
//!
//! Windows (the evidence): residuals and binomial variances add over the
//! batches of a window; the prediction's error is shared by every batch,
//! so its standard deviations add (an upper bound, by Minkowski).
//!
//! What it sees that the tag's label rate does not: flips on rows whose
//! features say "negative" (a cell at 2% turning positive is many of its
//! own standard errors, while the tag's rate moves by a fraction of its
//! own), and flips confined to a few cells. What it does not see: a shift
//! of the feature mix with the label's dependence on the features
//! unchanged (covariate shift) leaves `R` near zero; that is the
//! distribution and slice-share checks' business.

use std::collections::BTreeMap;

use super::{Check, CountNull, Ctx, Direction, Family, Test, Unit, blank, count_test_with};
use crate::compare::rate::{RateTest, count_tail};
use crate::compare::stats::Band;
use crate::profile::{SliceProfile, ValueLabels};

/// Pseudo-rows of the tag's rate behind every cell's predicted rate.
pub(super) const PRIOR_ROWS: f64 = 10.0;

/// The null of a residual: the baseline's overdispersion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::compare) struct PredictedNull {
    /// Variance factor, at least 1.
    pub phi: f64,
    /// Degrees of freedom of `phi` (∞ when it is 1).
    pub df: f64,
}

impl PredictedNull {
    /// From the band of the baseline batches' standardized residuals: `φ`
    /// is their mean square around 0, at least 1. The binomial part of the
    /// variance is known; only the excess `φ − 1` is estimated (from the
    /// band's `B` batches), so the degrees of freedom are Satterthwaite's,
    /// `(B − 1)·φ² / (φ − 1)²`: close to the normal when the excess is
    /// small, `B − 1` when it is all there is.
    fn from_band(band: Option<&Band>) -> PredictedNull {
        let known = PredictedNull {
            phi: 1.0,
            df: f64::INFINITY,
        };
        let Some(b) = band.filter(|b| b.n >= 2) else {
            return known;
        };
        let n = b.n as f64;
        let phi = b.mean * b.mean + b.std().powi(2) * (n - 1.0) / n;
        if phi <= 1.0 {
            return known;
        }
        PredictedNull {
            phi,
            df: (n - 1.0) * phi * phi / ((phi - 1.0) * (phi - 1.0)),
        }
    }

    /// Test `x` positives among `n` labelled rows against a prediction
    /// `[expected, binomial variance, sd of the prediction's error]`.
    pub fn test(
        &self,
        x: f64,
        n: f64,
        [expected, var_bin, sd_base]: [f64; 3],
        dir: Direction,
    ) -> RateTest {
        let var = self.phi * (var_bin + sd_base * sd_base);
        let (z, p) = count_tail(x, expected, var, self.df, dir);
        let (observed, baseline) = if n > 0.0 {
            (x / n, expected / n)
        } else {
            (0.0, 0.0)
        };
        let effect = match dir {
            Direction::Up => observed - baseline,
            Direction::Both => (observed - baseline).abs(),
        };
        RateTest {
            observed,
            baseline,
            z,
            p,
            effect,
        }
    }
}

/// The cells of a slice: the one slice column's values, or the joint cells.
fn cells<'a>(s: &'a SliceProfile, slices: &[String]) -> Option<&'a BTreeMap<String, ValueLabels>> {
    match slices {
        [] => None,
        [one] => s.by_value.get(one),
        _ => Some(&s.by_cell),
    }
}

/// Features a cell is made of, as a finding names them.
fn features(slices: &[String]) -> String {
    let shown = slices.iter().take(crate::profile::MAX_CELL_COLUMNS);
    shown
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The calibration test of one slice (a tag, or `all`).
pub(super) fn label_calibration(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let (Some(label), Some(pos)) = (&ctx.rules.label, &ctx.reference.positive) else {
        return;
    };
    let slices = &ctx.rules.slices;
    let (Some(o), Some(b)) = (ctx.batch_slices.get(slice), ctx.reference.slice(slice)) else {
        return;
    };
    let (Some(oc), Some(bc)) = (cells(o, slices), cells(b, slices)) else {
        return;
    };
    let mut t = blank(
        Check::LabelCalibration,
        Some(&label.column),
        slice,
        Unit::Share,
        Family::Labels,
    );
    t.given = Some(features(slices));
    let labelled = |v: &ValueLabels| v.labels.values().sum::<u64>();
    let positives = |v: &ValueLabels| v.labels.get(pos).copied().unwrap_or(0);
    let (yb, nb) = (b.labels.get(pos).copied().unwrap_or(0), b.labelled());
    let (x, n) = (o.labels.get(pos).copied().unwrap_or(0), o.labelled());
    if n == 0 || nb == 0 {
        out.push(t);
        return;
    }
    let p_tag = (yb as f64 + 0.5) / (nb as f64 + 1.0);
    let (mut expected, mut var_bin, mut var_base) = (0.0f64, 0.0f64, 0.0f64);
    let mut covered = 0u64;
    for (cell, v) in oc {
        let nc = labelled(v);
        if nc == 0 {
            continue;
        }
        covered += nc;
        let (ybc, nbc) = bc
            .get(cell)
            .map_or((0.0, 0.0), |w| (positives(w) as f64, labelled(w) as f64));
        add_cell(
            nc as f64,
            ybc,
            nbc,
            p_tag,
            &mut expected,
            &mut var_bin,
            &mut var_base,
        );
    }
    // labelled rows outside every cell (a null in a lone slice column):
    // predicted by the tag's rate
    if covered < n {
        add_cell(
            (n - covered) as f64,
            0.0,
            0.0,
            p_tag,
            &mut expected,
            &mut var_bin,
            &mut var_base,
        );
    }
    let predicted = [expected, var_bin, var_base.sqrt()];
    let null =
        PredictedNull::from_band(ctx.band(Check::LabelCalibration, Some(&label.column), slice));
    count_test_with(
        &mut t,
        x,
        n,
        CountNull::Predicted(null),
        Some(predicted),
        Direction::Both,
    );
    t.threshold = ctx.rules.thresholds.label_min_abs_change;
    t.contribution = (x as f64 - expected) / ctx.batch_rows.max(1) as f64;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

/// Add `nc` labelled rows of a cell the baseline saw `ybc` positives of
/// among `nbc` labelled rows.
fn add_cell(
    nc: f64,
    ybc: f64,
    nbc: f64,
    p_tag: f64,
    expected: &mut f64,
    var_bin: &mut f64,
    var_base: &mut f64,
) {
    let p = (ybc + PRIOR_ROWS * p_tag) / (nbc + PRIOR_ROWS);
    let q = p * (1.0 - p);
    *expected += nc * p;
    *var_bin += nc * q;
    *var_base += nc * nc * q / (nbc + PRIOR_ROWS);
}
