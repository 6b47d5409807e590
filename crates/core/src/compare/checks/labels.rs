//! Label checks: a tag's label rate and label classes against the
//! baseline, its rate against the most trusted tag's, and per value of a
//! `slices:` column the label rate and row share of its rows.

use super::{
    ALL, Check, Ctx, Direction, Family, SliceProfile, Test, Unit, blank, count_test, rate_test,
    stats,
};

/// Per value of a slice column in a slice: the label rate of its rows
/// (two-sided) and its share of the slice's rows (one-sided, a flood of
/// one value), both counts against the baseline's same cell. Values with
/// fewer than `min_slice_value_rows` baseline rows are not tested: their
/// rate is not known well enough. Attacks confined to one region of the
/// input space (flips only where `merchant_category = X`) show here while
/// the tag's overall rate barely moves.
pub(super) fn slice_values(ctx: &Ctx, slice: &str, column: &str, out: &mut Vec<Test>) {
    let (Some(o), Some(b)) = (ctx.batch_slices.get(slice), ctx.reference.slice(slice)) else {
        return;
    };
    let (Some(ov), Some(bv)) = (o.by_value.get(column), b.by_value.get(column)) else {
        return;
    };
    let th = &ctx.rules.thresholds;
    let positive = ctx.reference.positive.as_deref();
    for (value, base) in bv {
        if value == crate::profile::OTHER_VALUES || base.rows < th.min_slice_value_rows {
            continue;
        }
        let obs = ov.get(value).cloned().unwrap_or_default();
        let eligible = o.rows >= th.min_slice_rows;
        let mut share = blank(
            Check::SliceShare,
            Some(column),
            slice,
            Unit::Share,
            Family::Slices,
        );
        share.value = Some(value.clone());
        let null = ctx.rate_null(
            (Check::SliceShare, Some(&format!("{column}={value}")), slice),
            base.rows as f64,
            b.rows as f64,
        );
        count_test(&mut share, obs.rows, o.rows, null, Direction::Up);
        share.threshold = th.tag_share_min_abs_change;
        share.contribution = share.effect;
        share.eligible = eligible;
        out.push(share);
        let Some(pos) = positive else { continue };
        let labelled = |v: &crate::profile::ValueLabels| v.labels.values().sum::<u64>();
        let (x, n) = (obs.labels.get(pos).copied().unwrap_or(0), labelled(&obs));
        let (xb, nb) = (base.labels.get(pos).copied().unwrap_or(0), labelled(base));
        if n == 0 || nb < th.min_slice_value_rows {
            continue;
        }
        let mut t = blank(
            Check::SliceLabelRate,
            ctx.rules.label.as_ref().map(|l| l.column.as_str()),
            slice,
            Unit::Share,
            Family::Slices,
        );
        // the finding names the slice column and value; the label is implied
        t.column = Some(column.to_string());
        t.value = Some(value.clone());
        let null = ctx.rate_null(
            (
                Check::SliceLabelRate,
                Some(&format!("{column}={value}")),
                slice,
            ),
            xb as f64,
            nb as f64,
        );
        count_test(&mut t, x, n, null, Direction::Both);
        t.threshold = th.label_min_abs_change;
        let (wo, wb) = ctx.weights(slice);
        t.contribution = wo * t.observed - wb * (xb as f64 / nb as f64);
        t.eligible = eligible;
        out.push(t);
    }
}

pub(super) fn label_counts(s: Option<&SliceProfile>, positive: &str) -> (u64, u64) {
    s.map(|s| (s.labels.get(positive).copied().unwrap_or(0), s.labelled()))
        .unwrap_or((0, 0))
}

pub(super) fn label_rate(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let (Some(label), Some(pos)) = (&ctx.rules.label, &ctx.reference.positive) else {
        return;
    };
    let obs = label_counts(ctx.batch_slices.get(slice), pos);
    let base = label_counts(ctx.reference.slice(slice), pos);
    rate_test(
        ctx,
        Check::LabelRate,
        Some(&label.column),
        slice,
        obs,
        base,
        ctx.rules.thresholds.label_min_abs_change,
        Family::Labels,
        Direction::Both,
        out,
    );
}

/// Labelled rows whose class is none of the baseline's classes (a `2`, a
/// `-1` in a 0/1 label): a count, one-sided, against the rate at which the
/// baseline's own batches brought classes the others lacked (leave-one-out
/// band; no band: none, Jeffreys-smoothed). Any such row is a change, so
/// the floor is zero; the budget decides. It does not accumulate: a class
/// that does not exist is plain in one batch, and windows would only take
/// budget from the label-rate tests.
pub(super) fn label_domain(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let Some(label) = &ctx.rules.label else {
        return;
    };
    let (Some(o), Some(all)) = (ctx.batch_slices.get(slice), ctx.reference.slice(ALL)) else {
        return;
    };
    let n = o.labelled();
    let n_base = ctx.reference.slice(slice).map_or(0, |s| s.labelled());
    if n == 0 || n_base == 0 {
        return;
    }
    let mut outside: Vec<(u64, &String)> = o
        .labels
        .iter()
        .filter(|(class, _)| !all.labels.contains_key(*class))
        .map(|(class, c)| (*c, class))
        .collect();
    outside.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let x: u64 = outside.iter().map(|o| o.0).sum();
    let key = (Check::LabelOutOfDomain, Some(label.column.as_str()), slice);
    let x_base = ctx
        .band(key.0, key.1, key.2)
        .map_or(0.0, |b| b.mean * n_base as f64);
    let mut t = blank(key.0, key.1, slice, Unit::Share, Family::Labels);
    let null = ctx.rate_null(key, x_base, n_base as f64);
    count_test(&mut t, x, n, null, Direction::Up);
    t.count = None;
    t.value = outside.first().map(|o| o.1.clone());
    t.threshold = 0.0;
    t.contribution = ctx.weights(slice).0 * t.observed;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

/// Each tag's label rate against the most trusted tag of the same batch,
/// relative to the same gap in the baseline (a difference in differences):
/// catches flips in one tag even while every tag drifts together. Normal
/// approximation with the four binomial variances plus the between-batch
/// variance of the gap that the baseline's batches show beyond them (two
/// sources rarely move in lockstep: their own weather, their own
/// schedules), Student-t with `B − 1` degrees of freedom when that part is
/// there; two-sided.
pub(super) fn label_vs_trusted(ctx: &Ctx, names: &[String], out: &mut Vec<Test>) {
    let (Some(label), Some(pos)) = (&ctx.rules.label, &ctx.reference.positive) else {
        return;
    };
    let mut tags: Vec<&String> = names.iter().filter(|n| n.as_str() != ALL).collect();
    tags.sort_by_key(|t| (ctx.rules.trust.rank(t), t.to_string()));
    let Some(top) = tags.iter().find(|t| ctx.eligible(t)).copied() else {
        return;
    };
    let rate = |(x, n): (u64, u64)| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    let var = |(x, n): (u64, u64)| {
        if n == 0 {
            0.0
        } else {
            // Jeffreys-smoothed so that a zero count still has a variance
            let p = (x as f64 + 0.5) / (n as f64 + 1.0);
            p * (1.0 - p) / n as f64
        }
    };
    let top_o = label_counts(ctx.batch_slices.get(top.as_str()), pos);
    let top_b = label_counts(ctx.reference.slice(top), pos);
    for tag in tags.iter().filter(|t| **t != top) {
        let mut t = blank(
            Check::LabelRateVsTrusted,
            Some(&label.column),
            tag,
            Unit::Share,
            Family::Labels,
        );
        t.sides = 2;
        let o = label_counts(ctx.batch_slices.get(tag.as_str()), pos);
        let b = label_counts(ctx.reference.slice(tag), pos);
        if o.1 == 0 || b.1 == 0 || top_o.1 == 0 || top_b.1 == 0 {
            out.push(t);
            continue;
        }
        t.observed = rate(o) - rate(top_o);
        t.baseline = rate(b) - rate(top_b);
        let diff = t.observed - t.baseline;
        // binomial variance of one baseline batch's gap, at the baseline's batch sizes
        let per_batch = |(x, n): (u64, u64)| (x, (n as f64 / ctx.batches()).max(1.0) as u64);
        let band = ctx.band(Check::LabelRateVsTrusted, Some(&label.column), tag);
        let tau2 = band.map_or(0.0, |bd| {
            (bd.std().powi(2) - var(per_batch(b)) - var(per_batch(top_b))).max(0.0)
        });
        let se = (var(o) + var(top_o) + var(b) + var(top_b) + tau2).sqrt();
        t.statistic = if se > 0.0 { diff / se } else { 0.0 };
        t.p = match band.filter(|_| tau2 > 0.0) {
            Some(bd) => (2.0 * stats::p_upper_t(t.statistic.abs(), bd.n as f64 - 1.0)).min(1.0),
            None => stats::p_two_sided(t.statistic),
        };
        t.effect = diff.abs();
        t.threshold = ctx.rules.thresholds.label_min_abs_change;
        t.contribution = diff;
        t.eligible = ctx.eligible(tag);
        out.push(t);
    }
}
