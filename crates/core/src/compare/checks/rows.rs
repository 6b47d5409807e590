//! Whole-slice checks: the row count against the baseline's batches, a
//! tag's share of the batch's rows, and the share of duplicate rows.

use super::{ALL, Check, Ctx, Direction, Family, Test, Unit, blank, count_test, stats};

/// Row count against the baseline's batch-to-batch band: a prediction
/// interval, `(obs − mean) / (sd·√(1 + 1/B)) ~ t(B − 1)`, with `sd` at
/// least the Poisson `√mean`. Two-sided (floods and outages).
pub(super) fn row_count(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let mut t = blank(Check::RowCount, None, slice, Unit::Count, Family::Volume);
    t.sides = 2;
    t.observed = ctx.batch_slices.get(slice).map(|s| s.rows).unwrap_or(0) as f64;
    let b = ctx.band(Check::RowCount, None, slice);
    let mean = b
        .map(|b| b.mean)
        .unwrap_or_else(|| ctx.reference.per_batch_rows(slice));
    t.baseline = mean;
    t.contribution = t.observed - mean;
    if let Some(b) = b
        && mean > 0.0
    {
        let nb = b.n as f64;
        let sd = b.std().max(mean.sqrt()) * (1.0 + 1.0 / nb).sqrt();
        t.statistic = (t.observed - mean) / sd;
        t.p = (2.0 * stats::p_upper_t(t.statistic.abs(), nb - 1.0)).min(1.0);
        t.effect = (t.observed - mean).abs() / mean;
        t.threshold = ctx.rules.thresholds.row_count_min_rel_change;
        t.eligible = t.observed.max(mean) >= ctx.rules.thresholds.min_slice_rows as f64;
    }
    out.push(t);
}

/// A tag's share of the batch's rows: a count (the tag's rows among the
/// batch's), one-sided (a growing share is a flood; a shrinking one is its
/// mirror image in the other tags).
pub(super) fn tag_share(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let mut t = blank(Check::TagShare, None, slice, Unit::Share, Family::Volume);
    let obs_n = ctx.batch_slices.get(slice).map(|s| s.rows).unwrap_or(0);
    let base_n = ctx.reference.slice(slice).map(|s| s.rows).unwrap_or(0);
    let base_total = ctx.reference.slice(ALL).map(|s| s.rows).unwrap_or(0);
    if ctx.batch_rows == 0 || base_total == 0 {
        out.push(t);
        return;
    }
    let null = ctx.rate_null(
        (Check::TagShare, None, slice),
        base_n as f64,
        base_total as f64,
    );
    count_test(&mut t, obs_n, ctx.batch_rows, null, Direction::Up);
    t.threshold = ctx.rules.thresholds.tag_share_min_abs_change;
    t.contribution = t.effect;
    t.eligible = ctx.batch_rows >= ctx.rules.thresholds.min_slice_rows;
    out.push(t);
}

/// Duplicate rows against the baseline's band: a prediction interval,
/// Student-t with `B − 1` degrees of freedom; `sd` at least HyperLogLog's
/// relative error. One-sided.
pub(super) fn duplicates(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let Some(s) = ctx.batch_slices.get(slice) else {
        return;
    };
    let mut t = blank(
        Check::DuplicateRows,
        None,
        slice,
        Unit::Share,
        Family::Volume,
    );
    t.observed = s.duplicate_share();
    let b = ctx.band(Check::DuplicateRows, None, slice);
    if let Some(b) = b {
        t.baseline = b.mean;
        let hll_se = 1.04 / ((1u64 << ctx.rules.sketch.hll_lg_k) as f64).sqrt();
        let nb = b.n as f64;
        let sd = b.std().max(hll_se) * (1.0 + 1.0 / nb).sqrt();
        t.statistic = (t.observed - b.mean) / sd;
        t.p = stats::p_upper_t(t.statistic, nb - 1.0);
        t.effect = t.observed - b.mean;
        t.threshold = ctx.rules.thresholds.duplicate_min_share;
        let (wo, wb) = ctx.weights(slice);
        t.contribution = wo * t.observed - wb * b.mean;
        t.eligible = s.rows >= ctx.rules.thresholds.min_slice_rows;
    }
    out.push(t);
}
