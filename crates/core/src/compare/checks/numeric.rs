//! Numeric columns: rows outside the range the baseline saw, and the
//! shape of the distribution (PSI over the baseline's quantile bins).

use super::{
    Check, Chi2, Ctx, Direction, Family, NumRef, NumericProfile, Test, Unit, blank, column,
    count_test, level_test, shares_from_cdf, stats,
};

/// The batch's and the baseline's numeric statistics of a column in a
/// slice, with the baseline's bins and range.
pub(super) fn numeric_columns<'a>(
    ctx: &'a Ctx,
    slice: &str,
    name: &str,
) -> Option<(&'a NumericProfile, &'a NumericProfile, &'a NumRef)> {
    let o = column(ctx.batch_slices.get(slice), name)?
        .numeric
        .as_ref()?;
    let b = column(ctx.reference.slice(slice), name)?.numeric.as_ref()?;
    let r = ctx
        .reference
        .numeric
        .get(&(slice.to_string(), name.to_string()))?;
    Some((o, b, r))
}

/// Values outside the declared range or the range the baseline saw: a
/// count (estimated from the batch's quantile sketch for the seen range),
/// one-sided. The null rate is the rate at which the baseline's own batches
/// fall outside the range of the others (leave-one-out bands), so columns
/// with long tails are not flagged for the tail they always had.
pub(super) fn out_of_range(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((o, b, r)) = numeric_columns(ctx, slice, name) else {
        return;
    };
    let mut t = blank(
        Check::OutOfRange,
        Some(name),
        slice,
        Unit::Share,
        Family::Range,
    );
    if o.n == 0 || b.n == 0 {
        out.push(t);
        return;
    }
    let declared_obs = (o.below_range + o.above_range) as f64 / o.n as f64;
    let mut seen = 0.0;
    if o.min < r.lo || o.max > r.hi {
        let cdf = o
            .quantiles
            .cdf(&[r.lo, r.hi])
            .unwrap_or_else(|| vec![0.0, 1.0]);
        if o.min < r.lo {
            seen += cdf[0];
        }
        if o.max > r.hi {
            seen += 1.0 - cdf[1];
        }
        // at least the extreme value itself lies outside
        seen = seen.max(1.0 / o.n as f64);
    }
    let share = declared_obs.max(seen).min(1.0);
    let x_obs = (share * o.n as f64).round() as u64;
    let key = (Check::OutOfRange, Some(name), slice);
    let x_base = match ctx.band(key.0, key.1, key.2) {
        // the leave-one-out rate of the baseline's batches
        Some(band) => band.mean * b.n as f64,
        None => (b.below_range + b.above_range) as f64,
    };
    let null = ctx.rate_null(key, x_base, b.n as f64);
    count_test(&mut t, x_obs, o.n, null, Direction::Up);
    t.observed = share;
    t.threshold = ctx.rules.thresholds.range_min_share_outside;
    let (wo, wb) = ctx.weights(slice);
    t.contribution = wo * t.observed - wb * null.p0;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

/// Numeric distribution: PSI on the baseline's quantile bins. `n·PSI` is
/// about Pearson's χ²(bins − 1) for a multinomial sample; divided by the
/// overdispersion the baseline's batches show (quasi-likelihood).
pub(super) fn psi(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((o, b, r)) = numeric_columns(ctx, slice, name) else {
        return;
    };
    if o.n == 0 || r.edges.is_empty() {
        return;
    }
    let mut t = blank(
        Check::Distribution,
        Some(name),
        slice,
        Unit::Index,
        Family::Distribution,
    );
    let observed = shares_from_cdf(o.quantiles.cdf(&r.edges).unwrap_or_default());
    let value = stats::psi(&r.expected, &observed);
    t.stat_name = "psi";
    t.observed = value;
    t.baseline = 0.0;
    t.statistic = value;
    let chi2 = Chi2 {
        scale: 1.0,
        df: (r.expected.len() - 1) as f64,
        n_obs: o.n as f64,
        n_base: b.n as f64,
    };
    level_test(ctx, t, chi2, ctx.rules.thresholds.psi, out);
}
