//! Labels given the features: a tag's labels against what its rows' slice
//! values predict (the calibration residual).
//!
//! Cells: with `slices:` declared, the joint cells of the slice columns
//! (one column: its values, several: the combinations of their values, see
//! [`crate::profile::SliceProfile::by_cell`]). Without, the values (or
//! bins) of one `label_features:` column, by default any declared column:
//! while a baseline is built every feature's residual is computed for each
//! baseline batch against the others (its band), and a comparison uses,
//! per tag, the feature whose prediction leaves the least variance for a
//! batch of the baseline's size, counting that band's overdispersion (see
//! [`best_feature`]); none, when no feature cuts the tag rate's own
//! variance by a fifth, and the label-rate test is left to do the work.
//!
//! The baseline gives, per trust tag and cell `c`, `Y_c`
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

/// Smallest share of the tag rate's own variance a feature's prediction
/// must cut to be used instead of the rate: a feature that barely predicts
/// the label would only restate the `label_rate` test under another name.
pub(super) const FEATURE_GAIN: f64 = 0.8;

/// The calibration test of one slice (a tag, or `all`): given the joint
/// cells of the declared `slices:`, or else the one `label_features:`
/// column that predicts this slice's label best in the baseline.
pub(super) fn label_calibration(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let (Some(label), Some(pos)) = (&ctx.rules.label, &ctx.reference.positive) else {
        return;
    };
    let (Some(o), Some(b)) = (ctx.batch_slices.get(slice), ctx.reference.slice(slice)) else {
        return;
    };
    let side = Side {
        label: &label.column,
        pos,
        o,
        b,
    };
    let slices = &ctx.rules.slices;
    if !slices.is_empty() {
        let (Some(oc), Some(bc)) = (cells(o, slices), cells(b, slices)) else {
            return;
        };
        let null =
            PredictedNull::from_band(ctx.band(Check::LabelCalibration, Some(side.label), slice));
        out.push(residual_test(
            ctx,
            slice,
            &side,
            oc,
            bc,
            null,
            features(slices),
        ));
        return;
    }
    if ctx.bands.is_none() {
        // Building a baseline: every feature's standardized residual, so
        // that each has its band (its overdispersion) to be chosen by.
        for f in &ctx.rules.label_features {
            if let Some((oc, bc)) = feature_cells(ctx, f, o, b) {
                let null = PredictedNull::from_band(None);
                let mut t = residual_test(ctx, slice, &side, &oc, &bc, null, format!("`{f}`"));
                t.value = Some(f.clone());
                out.push(t);
            }
        }
        return;
    }
    let Some((f, null)) = best_feature(ctx, slice, &side) else {
        return;
    };
    let Some((oc, bc)) = feature_cells(ctx, f, o, b) else {
        return;
    };
    out.push(residual_test(
        ctx,
        slice,
        &side,
        &oc,
        &bc,
        null,
        format!("`{f}`"),
    ));
}

/// Fewest labelled baseline rows of a cell of a numeric feature: adjacent
/// bins are merged up to it. Fine default bins leave many cells of a few
/// rows, whose predictions lean on the tag's rate (its pseudo-rows) and so
/// are biased wherever the label depends on the feature; neighbouring
/// bins are the better company. At 200 rows the pseudo-rows weigh under 5%.
pub(super) const MIN_BIN_ROWS: u64 = 200;

/// The cells of feature `f` in a batch slice `o` and its baseline `b`: a
/// categorical feature's values, or a numeric feature's bins merged in
/// their order until each cell holds [`MIN_BIN_ROWS`] labelled rows of the
/// baseline (the last short run joins the cell before it). The merge reads
/// the baseline only.
fn feature_cells(
    ctx: &Ctx,
    f: &str,
    o: &SliceProfile,
    b: &SliceProfile,
) -> Option<(BTreeMap<String, ValueLabels>, BTreeMap<String, ValueLabels>)> {
    let (oc, bc) = (o.by_value.get(f)?, b.by_value.get(f)?);
    let Some(edges) = ctx.rules.slice_bins.get(f) else {
        return Some((oc.clone(), bc.clone()));
    };
    let names = crate::profile::bin_names(edges);
    // each bin's cell: the name of the first bin of its run
    let mut cell_of: Vec<usize> = Vec::with_capacity(names.len());
    let (mut start, mut held) = (0usize, 0u64);
    let mut last_full: Option<usize> = None;
    for (i, name) in names.iter().enumerate() {
        cell_of.push(start);
        held += bc.get(name).map_or(0, labelled);
        if held >= MIN_BIN_ROWS {
            last_full = Some(start);
            start = i + 1;
            held = 0;
        }
    }
    if let Some(prev) = last_full
        && start < names.len()
    {
        for c in &mut cell_of[start..] {
            *c = prev;
        }
    }
    let merge = |cells: &BTreeMap<String, ValueLabels>| {
        let mut out: BTreeMap<String, ValueLabels> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            if let Some(v) = cells.get(name) {
                let m = out.entry(names[cell_of[i]].clone()).or_default();
                m.rows += v.rows;
                for (k, c) in &v.labels {
                    *m.labels.entry(k.clone()).or_default() += c;
                }
            }
        }
        out
    };
    Some((merge(oc), merge(bc)))
}

/// The label column, its positive class, and a slice's batch and baseline
/// profiles.
struct Side<'a> {
    label: &'a str,
    pos: &'a str,
    o: &'a SliceProfile,
    b: &'a SliceProfile,
}

impl Side<'_> {
    fn positives(&self, v: &ValueLabels) -> u64 {
        v.labels.get(self.pos).copied().unwrap_or(0)
    }

    /// The slice's baseline rate, Jeffreys-smoothed.
    fn p_tag(&self) -> f64 {
        let (yb, nb) = (
            self.b.labels.get(self.pos).copied().unwrap_or(0),
            self.b.labelled(),
        );
        (yb as f64 + 0.5) / (nb as f64 + 1.0)
    }
}

fn labelled(v: &ValueLabels) -> u64 {
    v.labels.values().sum::<u64>()
}

/// The `label_features` column whose cells predict this slice's label
/// best, with its null: the least variance of the residual for a batch of
/// the baseline's mean size, `φ_f · Var_f`, where `φ_f` is the
/// overdispersion the baseline's own batches showed for that feature
/// (leave-one-out, so a feature of many small cells that fits the
/// baseline's noise pays for it). Only features with a band count, and
/// only when the best cuts the tag rate's own variance `n̄·p̄(1 − p̄)` to
/// [`FEATURE_GAIN`] or less. The choice reads the baseline alone, never
/// this batch's labels, so each feature's null holds for the chosen one,
/// and it is the same for every batch of a stream (its evidence pools one
/// prediction).
fn best_feature<'a>(ctx: &'a Ctx, slice: &str, side: &Side) -> Option<(&'a String, PredictedNull)> {
    let nb = side.b.labelled() as f64;
    if nb == 0.0 {
        return None;
    }
    let nbar = nb / ctx.batches();
    let p_tag = side.p_tag();
    let rate_var = nbar * p_tag * (1.0 - p_tag);
    let mut best: Option<(f64, &String, PredictedNull)> = None;
    for f in &ctx.rules.label_features {
        let Some((_, bc)) = feature_cells(ctx, f, side.o, side.b) else {
            continue;
        };
        let key = format!("{} given {f}", side.label);
        let Some(band) = ctx.band(Check::LabelCalibration, Some(&key), slice) else {
            continue;
        };
        if band.n < 3 {
            continue;
        }
        let null = PredictedNull::from_band(Some(band));
        let (mut expected, mut var_bin, mut var_base) = (0.0, 0.0, 0.0);
        for w in bc.values() {
            let nbc = labelled(w) as f64;
            if nbc == 0.0 {
                continue;
            }
            add_cell(
                nbar * nbc / nb,
                side.positives(w) as f64,
                nbc,
                p_tag,
                &mut expected,
                &mut var_bin,
                &mut var_base,
            );
        }
        let crit = null.phi * (var_bin + var_base);
        if crit <= FEATURE_GAIN * rate_var && best.as_ref().is_none_or(|(c, _, _)| crit < *c) {
            best = Some((crit, f, null));
        }
    }
    best.map(|(_, f, null)| (f, null))
}

/// The residual test of a slice given cells `oc` (the batch's) and `bc`
/// (the baseline's) of the same features.
fn residual_test(
    ctx: &Ctx,
    slice: &str,
    side: &Side,
    oc: &BTreeMap<String, ValueLabels>,
    bc: &BTreeMap<String, ValueLabels>,
    null: PredictedNull,
    given: String,
) -> Test {
    let mut t = blank(
        Check::LabelCalibration,
        Some(side.label),
        slice,
        Unit::Share,
        Family::Labels,
    );
    t.given = Some(given);
    let nb = side.b.labelled();
    let (x, n) = (
        side.o.labels.get(side.pos).copied().unwrap_or(0),
        side.o.labelled(),
    );
    if n == 0 || nb == 0 {
        return t;
    }
    let p_tag = side.p_tag();
    let (mut expected, mut var_bin, mut var_base) = (0.0f64, 0.0f64, 0.0f64);
    let mut covered = 0u64;
    for (cell, v) in oc {
        let nc = labelled(v);
        if nc == 0 {
            continue;
        }
        covered += nc;
        let (ybc, nbc) = bc.get(cell).map_or((0.0, 0.0), |w| {
            (side.positives(w) as f64, labelled(w) as f64)
        });
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
    t
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
