//! Categorical columns: the shape of the value distribution
//! (Jensen-Shannon), the shares of the top values, and rows of values the
//! baseline never saw.

use super::{
    ALL, Check, Chi2, ColumnProfile, Ctx, Direction, Family, Test, Unit, ValuesProfile, blank,
    column, count_test, level_test, stats,
};

/// The batch's and the baseline's value statistics of a column in a slice,
/// when both have values.
pub(super) fn value_columns<'a>(
    ctx: &'a Ctx,
    slice: &str,
    name: &str,
) -> Option<(
    &'a ColumnProfile,
    &'a ColumnProfile,
    &'a ValuesProfile,
    &'a ValuesProfile,
)> {
    let oc = column(ctx.batch_slices.get(slice), name)?;
    let bc = column(ctx.reference.slice(slice), name)?;
    let (o, b) = (oc.values.as_ref()?, bc.values.as_ref()?);
    (oc.count > 0 && bc.count > 0).then_some((oc, bc, o, b))
}

/// Categorical distribution: Jensen-Shannon divergence over the top values
/// and the rest; `8·n·ln2·JS` is about the G-statistic, χ²(categories − 1),
/// divided by the baseline's overdispersion.
pub(super) fn js(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((oc, bc, o, b)) = value_columns(ctx, slice, name) else {
        return;
    };
    let k = ctx.rules.thresholds.top_k.max(1) * 2;
    let mut cats: Vec<&str> = b.top.top(k).iter().map(|v| v.value.as_str()).collect();
    for v in o.top.top(k) {
        if !cats.contains(&v.value.as_str()) {
            cats.push(&v.value);
        }
    }
    let (on, bn) = (oc.count as f64, bc.count as f64);
    let mut p: Vec<f64> = cats.iter().map(|c| b.top.estimate(c) as f64 / bn).collect();
    let mut q: Vec<f64> = cats.iter().map(|c| o.top.estimate(c) as f64 / on).collect();
    p.push((1.0 - p.iter().sum::<f64>()).max(0.0));
    q.push((1.0 - q.iter().sum::<f64>()).max(0.0));
    let norm = |v: &mut Vec<f64>| {
        let s: f64 = v.iter().sum();
        if s > 0.0 {
            v.iter_mut().for_each(|x| *x /= s);
        }
    };
    norm(&mut p);
    norm(&mut q);
    let value = stats::jensen_shannon(&p, &q);
    let mut t = blank(
        Check::Distribution,
        Some(name),
        slice,
        Unit::Index,
        Family::Distribution,
    );
    t.stat_name = "js";
    t.observed = value;
    t.statistic = value;
    let chi2 = Chi2 {
        scale: 8.0 * std::f64::consts::LN_2,
        df: (p.len() - 1) as f64,
        n_obs: on,
        n_base: bn,
    };
    level_test(ctx, t, chi2, ctx.rules.thresholds.js, out);
}

/// Top values: a value new to the baseline or rare there that is now a top
/// value, and a top value that vanished. Shares compared with a one-sided
/// two-proportion z-test; the share floors say what "top" means.
pub(super) fn top_values(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((oc, bc, o, b)) = value_columns(ctx, slice, name) else {
        return;
    };
    let th = &ctx.rules.thresholds;
    let (on, bn) = (oc.count, bc.count);
    let (wo, wb) = ctx.weights(slice);
    let eligible = ctx.eligible(slice);
    for v in o.top.top(th.top_k) {
        let share = v.count as f64 / on as f64;
        if share < th.top_min_share {
            continue;
        }
        let base_count = b.top.estimate(&v.value);
        let base_upper = (base_count + b.top.max_error()) as f64 / bn as f64;
        let base_share = base_count as f64 / bn as f64;
        let check = if base_count == 0 && b.top.max_error() == 0 {
            Check::TopNewValue
        } else if base_upper < th.rare_share {
            Check::TopRareValueCommon
        } else {
            continue;
        };
        let mut t = blank(check, Some(name), slice, Unit::Share, Family::Values);
        t.value = Some(v.value.clone());
        t.observed = share;
        t.baseline = base_share;
        t.statistic = stats::two_proportion_z(v.count, on, base_count, bn);
        t.p = stats::p_upper(t.statistic);
        t.effect = share - base_share;
        t.threshold = th.top_min_share;
        t.contribution = wo * share - wb * base_share;
        t.eligible = eligible;
        out.push(t);
    }
    for v in b.top.top(th.top_k) {
        let base_share = v.count as f64 / bn as f64;
        if base_share < th.top_min_share || base_share * on as f64 * 0.25 < 5.0 {
            continue;
        }
        let count = o.top.estimate(&v.value);
        let share = count as f64 / on as f64;
        if share >= base_share / 4.0 {
            continue;
        }
        let mut t = blank(
            Check::TopValueVanished,
            Some(name),
            slice,
            Unit::Share,
            Family::Values,
        );
        t.value = Some(v.value.clone());
        t.observed = share;
        t.baseline = base_share;
        t.statistic = -stats::two_proportion_z(count, on, v.count, bn);
        t.p = stats::p_upper(t.statistic);
        t.effect = base_share - share;
        t.threshold = th.top_min_share;
        t.contribution = wb * base_share - wo * share;
        t.eligible = eligible;
        out.push(t);
    }
}

/// Rows whose value the baseline never saw (in any tag), in a categorical
/// column: a count, one-sided. Needs exact value counts on both sides (fewer distinct
/// values than the top-values sketch keeps exactly), else it is not run.
/// The null rate is how often the baseline's own batches bring values that
/// the other baseline batches never had (a leave-one-out band): code-like
/// columns almost never do, so a handful of rows of a new code is a
/// finding; free-form ones always do, so it is not. No band, no test: the
/// rate cannot be guessed.
pub(super) fn unseen_values(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((oc, bc, o, _)) = value_columns(ctx, slice, name) else {
        return;
    };
    // never seen in the baseline at all (any tag): a code common elsewhere
    // but new to one tag is a shift, which the distribution checks see
    let Some(b) = column(ctx.reference.slice(ALL), name).and_then(|c| c.values.as_ref()) else {
        return;
    };
    if o.top.max_error() != 0 || b.top.max_error() != 0 {
        return;
    }
    let key = (Check::UnseenValues, Some(name), slice);
    let band = ctx.band(key.0, key.1, key.2);
    if ctx.bands.is_some() && band.is_none() {
        return;
    }
    let mut unseen: Vec<(u64, &str)> = o
        .top
        .all()
        .iter()
        .filter(|v| b.top.estimate(&v.value) == 0)
        .map(|v| (v.count, v.value.as_str()))
        .collect();
    unseen.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let x: u64 = unseen.iter().map(|u| u.0).sum();
    let mut t = blank(key.0, key.1, slice, Unit::Share, Family::Values);
    let x_base = band.map(|b| b.mean).unwrap_or(0.0) * bc.count as f64;
    let null = ctx.rate_null(key, x_base, bc.count as f64);
    count_test(&mut t, x, oc.count, null, Direction::Up);
    t.value = unseen.first().map(|u| u.1.to_string());
    t.threshold = ctx.rules.thresholds.unseen_min_share;
    let (wo, _) = ctx.weights(slice);
    t.contribution = wo * t.observed;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}
