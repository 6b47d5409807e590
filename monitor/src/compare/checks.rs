//! The checks of DESIGN.md's table, each producing one [`Test`] per slice,
//! and the grouping of hits into findings. Pure.

use std::collections::BTreeMap;

use super::stats::{self, Band};
use super::{Check, Finding, Severity, Verdict, band, band_key};
use crate::config::model::{ColumnKind, Rules};
use crate::profile::{
    ALL, BatchProfile, ColumnProfile, NumericProfile, SliceProfile, ValuesProfile,
};

/// How a test's numbers read in a message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Unit {
    Share,
    Count,
    Index,
}

/// One statistical test of one metric on one slice.
#[derive(Debug, Clone)]
pub(super) struct Test {
    pub check: Check,
    pub column: Option<String>,
    pub slice: String,
    pub value: Option<String>,
    pub baseline: f64,
    pub observed: f64,
    pub stat_name: &'static str,
    pub statistic: f64,
    pub p: f64,
    pub effect: f64,
    pub threshold: f64,
    /// Signed contribution of this (tag) slice to the whole-batch change.
    pub contribution: f64,
    /// Enough rows on both sides for the test to count.
    pub eligible: bool,
    pub unit: Unit,
}

impl Test {
    pub fn band_key(&self) -> String {
        band_key(self.check, self.column.as_deref(), &self.slice)
    }

    /// The number a baseline's band learns for this metric.
    pub fn band_value(&self) -> f64 {
        match self.check {
            Check::LabelRateVsTrusted => self.observed - self.baseline,
            _ => self.observed,
        }
    }
}

/// Per-slice numeric reference: PSI bin edges with their expected shares,
/// and the range seen in the baseline.
#[derive(Debug, Clone)]
struct NumRef {
    edges: Vec<f64>,
    expected: Vec<f64>,
    lo: f64,
    hi: f64,
}

/// The baseline side of the checks, prepared once per comparison.
pub struct Reference {
    pub profile: BatchProfile,
    slices: BTreeMap<String, SliceProfile>,
    numeric: BTreeMap<(String, String), NumRef>,
    positive: Option<String>,
}

impl Reference {
    pub fn new(profile: &BatchProfile, rules: &Rules) -> Reference {
        let mut slices: BTreeMap<String, SliceProfile> = profile.tags.clone();
        slices.insert(ALL.to_string(), profile.all());
        let mut numeric = BTreeMap::new();
        let bins = rules.thresholds.psi_bins.max(2);
        let (qlo, qhi) = rules.thresholds.range_quantiles;
        for (slice, sp) in &slices {
            for rule in rules
                .columns
                .iter()
                .filter(|c| c.kind == ColumnKind::Numeric)
            {
                let Some(num) = sp.columns.get(&rule.name).and_then(|c| c.numeric.as_ref()) else {
                    continue;
                };
                if num.n == 0 {
                    continue;
                }
                let ranks: Vec<f64> = (1..bins).map(|i| i as f64 / bins as f64).collect();
                let mut edges = num.quantiles.quantiles(&ranks).unwrap_or_default();
                edges.dedup_by(|a, b| (*a - *b).abs() <= f64::EPSILON * a.abs().max(1.0));
                let expected = shares_from_cdf(num.quantiles.cdf(&edges).unwrap_or_default());
                let lo = if qlo <= 0.0 {
                    num.min
                } else {
                    num.quantiles.quantile(qlo).unwrap_or(num.min)
                };
                let hi = if qhi >= 1.0 {
                    num.max
                } else {
                    num.quantiles.quantile(qhi).unwrap_or(num.max)
                };
                numeric.insert(
                    (slice.clone(), rule.name.clone()),
                    NumRef {
                        edges,
                        expected,
                        lo,
                        hi,
                    },
                );
            }
        }
        let positive = rules.label.as_ref().and_then(|l| {
            l.positive.clone().or_else(|| {
                slices
                    .get(ALL)
                    .and_then(|s| {
                        s.labels
                            .iter()
                            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
                    })
                    .map(|(k, _)| k.clone())
            })
        });
        Reference {
            profile: profile.clone(),
            slices,
            numeric,
            positive,
        }
    }

    fn slice(&self, name: &str) -> Option<&SliceProfile> {
        self.slices.get(name)
    }

    fn per_batch_rows(&self, slice: &str) -> f64 {
        let batches = self.profile.batches.max(1) as f64;
        self.slice(slice)
            .map(|s| s.rows as f64 / batches)
            .unwrap_or(0.0)
    }
}

/// Turn cumulative shares at edges into per-bin shares (bins = edges + 1).
fn shares_from_cdf(cdf: Vec<f64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(cdf.len() + 1);
    let mut prev = 0.0;
    for c in cdf {
        let c = c.clamp(prev, 1.0);
        out.push(c - prev);
        prev = c;
    }
    out.push((1.0 - prev).max(0.0));
    out
}

struct Ctx<'a> {
    rules: &'a Rules,
    reference: &'a Reference,
    bands: Option<&'a BTreeMap<String, Band>>,
    batch_slices: BTreeMap<String, SliceProfile>,
    batch_rows: u64,
}

impl Ctx<'_> {
    fn band(&self, check: Check, column: Option<&str>, slice: &str) -> Option<&Band> {
        band(self.bands, &band_key(check, column, slice))
    }

    fn k(&self) -> f64 {
        self.rules.thresholds.k_sigma
    }

    /// Threshold for a deviation |obs - base|: the floor or k·σ of the band.
    fn deviation_threshold(&self, floor: f64, b: Option<&Band>) -> f64 {
        match b {
            Some(b) => floor.max(self.k() * b.std()),
            None => floor,
        }
    }

    /// Threshold for a level (PSI, JS): the floor or mean + k·σ of the band.
    fn level_threshold(&self, floor: f64, b: Option<&Band>) -> f64 {
        match b {
            Some(b) => floor.max(b.mean + self.k() * b.std()),
            None => floor,
        }
    }

    fn eligible(&self, slice: &str) -> bool {
        let min = self.rules.thresholds.min_slice_rows as f64;
        let obs = self.batch_slices.get(slice).map(|s| s.rows).unwrap_or(0) as f64;
        obs >= min && self.reference.slice(slice).map(|s| s.rows).unwrap_or(0) as f64 >= min
    }

    /// Share of the batch's rows in `slice`, observed and in the baseline.
    fn weights(&self, slice: &str) -> (f64, f64) {
        let obs = self.batch_slices.get(slice).map(|s| s.rows).unwrap_or(0) as f64
            / self.batch_rows.max(1) as f64;
        let base_all = self
            .reference
            .slice(ALL)
            .map(|s| s.rows)
            .unwrap_or(0)
            .max(1) as f64;
        let base = self.reference.slice(slice).map(|s| s.rows).unwrap_or(0) as f64 / base_all;
        (obs, base)
    }
}

fn blank(check: Check, column: Option<&str>, slice: &str, unit: Unit) -> Test {
    Test {
        check,
        column: column.map(str::to_string),
        slice: slice.to_string(),
        value: None,
        baseline: 0.0,
        observed: 0.0,
        stat_name: "z",
        statistic: 0.0,
        p: 1.0,
        effect: 0.0,
        threshold: f64::INFINITY,
        contribution: 0.0,
        eligible: false,
        unit,
    }
}

/// Run every check of the rules on every slice.
pub(super) fn run_all(
    profile: &BatchProfile,
    reference: &Reference,
    bands: Option<&BTreeMap<String, Band>>,
    rules: &Rules,
) -> Vec<Test> {
    let mut batch_slices = profile.tags.clone();
    batch_slices.insert(ALL.to_string(), profile.all());
    let ctx = Ctx {
        rules,
        reference,
        bands,
        batch_slices,
        batch_rows: profile.rows,
    };
    let mut names: Vec<String> = ctx.batch_slices.keys().cloned().collect();
    for k in reference.slices.keys() {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    names.sort();
    let mut tests = Vec::new();
    for slice in &names {
        row_count(&ctx, slice, &mut tests);
        if slice != ALL {
            tag_share(&ctx, slice, &mut tests);
        }
        duplicates(&ctx, slice, &mut tests);
        label_rate(&ctx, slice, &mut tests);
        for rule in &rules.columns {
            missing_rate(&ctx, slice, &rule.name, &mut tests);
            match rule.kind {
                ColumnKind::Numeric => {
                    out_of_range(&ctx, slice, &rule.name, &mut tests);
                    psi(&ctx, slice, &rule.name, &mut tests);
                }
                ColumnKind::Categorical => {
                    js(&ctx, slice, &rule.name, &mut tests);
                    top_values(&ctx, slice, &rule.name, &mut tests);
                }
                ColumnKind::Text | ColumnKind::Timestamp => {}
            }
        }
    }
    label_vs_trusted(&ctx, &names, &mut tests);
    tests
}

fn row_count(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let mut t = blank(Check::RowCount, None, slice, Unit::Count);
    t.observed = ctx.batch_slices.get(slice).map(|s| s.rows).unwrap_or(0) as f64;
    let b = ctx.band(Check::RowCount, None, slice);
    let mean = b
        .map(|b| b.mean)
        .unwrap_or_else(|| ctx.reference.per_batch_rows(slice));
    t.baseline = mean;
    t.contribution = t.observed - mean;
    if mean > 0.0 {
        let sd = b.map(|b| b.std()).unwrap_or(0.0).max(mean.sqrt());
        t.statistic = (t.observed - mean) / sd;
        t.p = if b.is_some() {
            stats::p_two_sided(t.statistic)
        } else {
            1.0
        };
        t.effect = (t.observed - mean).abs() / mean;
        t.threshold = ctx
            .rules
            .thresholds
            .row_count_min_rel_change
            .max(b.map(|b| ctx.k() * b.std() / mean).unwrap_or(0.0));
        t.eligible =
            b.is_some() && (t.observed.max(mean) >= ctx.rules.thresholds.min_slice_rows as f64);
    }
    out.push(t);
}

fn tag_share(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let mut t = blank(Check::TagShare, None, slice, Unit::Share);
    let obs_n = ctx.batch_slices.get(slice).map(|s| s.rows).unwrap_or(0);
    let base_n = ctx.reference.slice(slice).map(|s| s.rows).unwrap_or(0);
    let base_total = ctx.reference.slice(ALL).map(|s| s.rows).unwrap_or(0);
    if ctx.batch_rows == 0 || base_total == 0 {
        out.push(t);
        return;
    }
    t.observed = obs_n as f64 / ctx.batch_rows as f64;
    t.baseline = base_n as f64 / base_total as f64;
    t.statistic = stats::two_proportion_z(obs_n, ctx.batch_rows, base_n, base_total);
    t.p = stats::p_two_sided(t.statistic);
    // only a growing share is suspicious; shrinking shares are its mirror image
    t.effect = t.observed - t.baseline;
    let b = ctx.band(Check::TagShare, None, slice);
    t.threshold = ctx.deviation_threshold(ctx.rules.thresholds.tag_share_min_abs_change, b);
    t.contribution = t.effect;
    t.eligible = ctx.batch_rows >= ctx.rules.thresholds.min_slice_rows;
    out.push(t);
}

/// A two-proportion check of a rate in a slice against the baseline.
#[allow(clippy::too_many_arguments)]
fn rate_test(
    ctx: &Ctx,
    check: Check,
    column: Option<&str>,
    slice: &str,
    obs: (u64, u64),
    base: (u64, u64),
    floor: f64,
    out: &mut Vec<Test>,
) {
    let mut t = blank(check, column, slice, Unit::Share);
    if obs.1 == 0 || base.1 == 0 {
        out.push(t);
        return;
    }
    t.observed = obs.0 as f64 / obs.1 as f64;
    t.baseline = base.0 as f64 / base.1 as f64;
    t.statistic = stats::two_proportion_z(obs.0, obs.1, base.0, base.1);
    t.p = stats::p_two_sided(t.statistic);
    t.effect = (t.observed - t.baseline).abs();
    t.threshold = ctx.deviation_threshold(floor, ctx.band(check, column, slice));
    let (wo, wb) = ctx.weights(slice);
    t.contribution = wo * t.observed - wb * t.baseline;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

fn column<'a>(s: Option<&'a SliceProfile>, name: &str) -> Option<&'a ColumnProfile> {
    s.and_then(|s| s.columns.get(name))
}

fn missing_rate(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let (Some(o), Some(b)) = (
        column(ctx.batch_slices.get(slice), name),
        column(ctx.reference.slice(slice), name),
    ) else {
        return;
    };
    rate_test(
        ctx,
        Check::MissingRate,
        Some(name),
        slice,
        (o.nulls, o.nulls + o.count),
        (b.nulls, b.nulls + b.count),
        ctx.rules.thresholds.missing_min_abs_change,
        out,
    );
}

fn label_counts(s: Option<&SliceProfile>, positive: &str) -> (u64, u64) {
    s.map(|s| (s.labels.get(positive).copied().unwrap_or(0), s.labelled()))
        .unwrap_or((0, 0))
}

fn label_rate(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
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
        out,
    );
}

/// Each tag's label rate against the most trusted tag of the same batch,
/// relative to the same gap in the baseline (a difference in differences):
/// catches flips in one tag even while every tag drifts together.
fn label_vs_trusted(ctx: &Ctx, names: &[String], out: &mut Vec<Test>) {
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
            let p = x as f64 / n as f64;
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
        );
        let o = label_counts(ctx.batch_slices.get(tag.as_str()), pos);
        let b = label_counts(ctx.reference.slice(tag), pos);
        if o.1 == 0 || b.1 == 0 || top_o.1 == 0 || top_b.1 == 0 {
            out.push(t);
            continue;
        }
        t.observed = rate(o) - rate(top_o);
        t.baseline = rate(b) - rate(top_b);
        let diff = t.observed - t.baseline;
        let se = (var(o) + var(top_o) + var(b) + var(top_b)).sqrt();
        t.statistic = if se > 0.0 { diff / se } else { 0.0 };
        t.p = stats::p_two_sided(t.statistic);
        t.effect = diff.abs();
        t.threshold = ctx.deviation_threshold(
            ctx.rules.thresholds.label_min_abs_change,
            ctx.band(Check::LabelRateVsTrusted, Some(&label.column), tag),
        );
        t.contribution = diff;
        t.eligible = ctx.eligible(tag);
        out.push(t);
    }
}

/// The batch's and the baseline's numeric statistics of a column in a
/// slice, with the baseline's bins and range.
fn numeric_columns<'a>(
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

fn out_of_range(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((o, b, r)) = numeric_columns(ctx, slice, name) else {
        return;
    };
    let mut t = blank(Check::OutOfRange, Some(name), slice, Unit::Share);
    if o.n == 0 || b.n == 0 {
        out.push(t);
        return;
    }
    let declared_obs = (o.below_range + o.above_range) as f64 / o.n as f64;
    let declared_base = (b.below_range + b.above_range) as f64 / b.n as f64;
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
    }
    t.observed = declared_obs.max(seen);
    t.baseline = declared_base;
    let x_obs = (t.observed * o.n as f64).round() as u64;
    let x_base = b.below_range + b.above_range;
    t.statistic = stats::two_proportion_z(x_obs, o.n, x_base, b.n);
    t.p = stats::p_two_sided(t.statistic);
    t.effect = t.observed - t.baseline;
    t.threshold = ctx.deviation_threshold(
        ctx.rules.thresholds.range_min_share_outside,
        ctx.band(Check::OutOfRange, Some(name), slice),
    );
    let (wo, wb) = ctx.weights(slice);
    t.contribution = wo * t.observed - wb * t.baseline;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

fn psi(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((o, b, r)) = numeric_columns(ctx, slice, name) else {
        return;
    };
    if o.n == 0 || r.edges.is_empty() {
        return;
    }
    let mut t = blank(Check::Distribution, Some(name), slice, Unit::Index);
    let observed = shares_from_cdf(o.quantiles.cdf(&r.edges).unwrap_or_default());
    let value = stats::psi(&r.expected, &observed);
    t.stat_name = "psi";
    t.observed = value;
    t.baseline = 0.0;
    t.statistic = value;
    let n = stats::n_eff(o.n as f64, b.n as f64);
    t.p = stats::p_chi2(n * value, (r.expected.len() - 1) as f64);
    level_test(ctx, t, ctx.rules.thresholds.psi, name, slice, out);
}

/// The batch's and the baseline's value statistics of a column in a slice,
/// when both have values.
fn value_columns<'a>(
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

/// Finish a distribution test whose effect is a divergence level.
fn level_test(ctx: &Ctx, mut t: Test, floor: f64, name: &str, slice: &str, out: &mut Vec<Test>) {
    t.effect = t.observed;
    t.threshold = ctx.level_threshold(floor, ctx.band(Check::Distribution, Some(name), slice));
    t.contribution = ctx.weights(slice).0 * t.observed;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

fn js(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
    let Some((oc, bc, o, b)) = value_columns(ctx, slice, name) else {
        return;
    };
    let k = ctx.rules.thresholds.top_k.max(1) * 2;
    let mut cats: Vec<String> = b.top.top(k).into_iter().map(|v| v.value).collect();
    for v in o.top.top(k) {
        if !cats.contains(&v.value) {
            cats.push(v.value);
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
    let mut t = blank(Check::Distribution, Some(name), slice, Unit::Index);
    t.stat_name = "js";
    t.observed = value;
    t.statistic = value;
    let n = stats::n_eff(on, bn);
    t.p = stats::p_chi2(
        8.0 * n * value * std::f64::consts::LN_2,
        (p.len() - 1) as f64,
    );
    level_test(ctx, t, ctx.rules.thresholds.js, name, slice, out);
}

fn top_values(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
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
        let mut t = blank(check, Some(name), slice, Unit::Share);
        t.value = Some(v.value.clone());
        t.observed = share;
        t.baseline = base_share;
        t.statistic = stats::two_proportion_z(v.count, on, base_count, bn);
        t.p = stats::p_two_sided(t.statistic);
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
        let mut t = blank(Check::TopValueVanished, Some(name), slice, Unit::Share);
        t.value = Some(v.value.clone());
        t.observed = share;
        t.baseline = base_share;
        t.statistic = stats::two_proportion_z(count, on, v.count, bn);
        t.p = stats::p_two_sided(t.statistic);
        t.effect = base_share - share;
        t.threshold = th.top_min_share;
        t.contribution = wb * base_share - wo * share;
        t.eligible = eligible;
        out.push(t);
    }
}

fn duplicates(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
    let Some(s) = ctx.batch_slices.get(slice) else {
        return;
    };
    let mut t = blank(Check::DuplicateRows, None, slice, Unit::Share);
    t.observed = s.duplicate_share();
    let b = ctx.band(Check::DuplicateRows, None, slice);
    if let Some(b) = b {
        t.baseline = b.mean;
        // HyperLogLog's relative standard error bounds how precise the share can be
        let hll_se = 1.04 / ((1u64 << ctx.rules.sketch.hll_lg_k) as f64).sqrt();
        let sd = b.std().max(hll_se);
        t.statistic = (t.observed - b.mean) / sd;
        t.p = stats::p_two_sided(t.statistic);
        t.effect = t.observed - b.mean;
        t.threshold = ctx.deviation_threshold(ctx.rules.thresholds.duplicate_min_share, Some(b));
        let (wo, wb) = ctx.weights(slice);
        t.contribution = wo * t.observed - wb * b.mean;
        t.eligible = s.rows >= ctx.rules.thresholds.min_slice_rows;
    }
    out.push(t);
}

/// Schema changes of the batch against the baseline (always batch level).
fn schema_findings(profile: &BatchProfile, reference: &BatchProfile) -> Vec<Finding> {
    let mut out = Vec::new();
    let mk = |check: Check, col: &str, base: &str, obs: &str, severity: Severity| {
        let message = match check {
            Check::SchemaNewColumn => format!("new column `{col}` ({obs}) is not in the baseline"),
            Check::SchemaMissingColumn => {
                format!("column `{col}` ({base}) is in the baseline but missing from this batch")
            }
            _ => format!("column `{col}` changed type from {base} to {obs}"),
        };
        let mut f = Finding::batch_level(check, Verdict::DataQuality, severity, message);
        f.column = Some(col.to_string());
        f.baseline_value = if base.is_empty() { 0.0 } else { 1.0 };
        f.observed_value = if obs.is_empty() { 0.0 } else { 1.0 };
        f
    };
    for (col, ty) in &profile.schema {
        match reference.schema.get(col) {
            None => out.push(mk(Check::SchemaNewColumn, col, "", ty, Severity::Warning)),
            Some(base) if !base.split(" | ").any(|b| b == ty) => out.push(mk(
                Check::SchemaRetypedColumn,
                col,
                base,
                ty,
                Severity::Critical,
            )),
            _ => {}
        }
    }
    for (col, ty) in &reference.schema {
        if !profile.schema.contains_key(col) {
            out.push(mk(
                Check::SchemaMissingColumn,
                col,
                ty,
                "",
                Severity::Critical,
            ));
        }
    }
    out
}

/// Turn tests into findings: BH significance, effect over threshold,
/// grouping by (check, column, value), attribution and verdicts; schema
/// changes are added as they are.
pub(super) fn findings(
    profile: &BatchProfile,
    reference: &Reference,
    tests: Vec<Test>,
    rules: &Rules,
) -> Vec<Finding> {
    let mut out = schema_findings(profile, &reference.profile);
    let ps: Vec<f64> = tests
        .iter()
        .map(|t| if t.eligible { t.p } else { 1.0 })
        .collect();
    let significant = stats::benjamini_hochberg(&ps, rules.thresholds.fdr);
    let hit: Vec<bool> = tests
        .iter()
        .zip(&significant)
        .map(|(t, &s)| s && t.eligible && t.effect >= t.threshold && t.effect > 0.0)
        .collect();

    // group by (check, column, value)
    let mut groups: BTreeMap<(Check, Option<String>, Option<String>), Vec<usize>> = BTreeMap::new();
    for (i, t) in tests.iter().enumerate() {
        groups
            .entry((t.check, t.column.clone(), t.value.clone()))
            .or_default()
            .push(i);
    }
    for ((check, _column, _value), idx) in groups {
        let all = idx.iter().copied().find(|&i| tests[i].slice == ALL);
        let tag_idx: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| tests[i].slice != ALL)
            .collect();
        let moved: Vec<usize> = tag_idx.iter().copied().filter(|&i| hit[i]).collect();
        let all_hit = all.map(|i| hit[i]).unwrap_or(false);
        if moved.is_empty() && !all_hit {
            continue;
        }
        let eligible_tags = tag_idx.iter().filter(|&&i| tests[i].eligible).count();
        let moved_names: Vec<String> = moved.iter().map(|&i| tests[i].slice.clone()).collect();
        let trusted_moved = moved_names.iter().any(|t| !rules.trust.is_low_trust(t));
        let broad = check != Check::TagShare
            && ((moved.len() >= 2 && trusted_moved && moved.len() * 2 >= eligible_tags)
                || moved.is_empty());
        let attribution = attribution(&tests, &tag_idx);
        if broad {
            let Some(a) = all else { continue };
            let low_share: f64 = attribution
                .iter()
                .filter(|(t, _)| rules.trust.is_low_trust(t))
                .map(|(_, s)| s)
                .sum();
            let verdict = verdict(check, moved.is_empty() && low_share >= 0.8);
            out.push(finding(
                &tests[a],
                verdict,
                moved_names.clone(),
                attribution.clone(),
            ));
        } else {
            for &i in &moved {
                let tag = &tests[i].slice;
                let verdict = verdict(check, rules.trust.is_low_trust(tag));
                out.push(finding(
                    &tests[i],
                    verdict,
                    moved_names.clone(),
                    attribution.clone(),
                ));
            }
        }
    }
    suppress_explained(&mut out);
    out.sort_by(|a, b| {
        (a.check, &a.column, &a.trust_tag, &a.value).cmp(&(
            b.check,
            &b.column,
            &b.trust_tag,
            &b.value,
        ))
    });
    out
}

/// How a hit reads: data-quality checks always as data quality; otherwise a
/// change that sits in low-trust tags as possible poisoning, and a broad one
/// as drift (volume and duplicate changes as data quality).
fn verdict(check: Check, in_low_trust: bool) -> Verdict {
    if check.is_data_quality() {
        Verdict::DataQuality
    } else if in_low_trust {
        Verdict::PossiblePoisoning
    } else if matches!(check, Check::RowCount | Check::DuplicateRows) {
        Verdict::DataQuality
    } else {
        Verdict::Drift
    }
}

/// Share of the change each tag contributes (by absolute contribution).
fn attribution(tests: &[Test], tag_idx: &[usize]) -> BTreeMap<String, f64> {
    let total: f64 = tag_idx.iter().map(|&i| tests[i].contribution.abs()).sum();
    tag_idx
        .iter()
        .map(|&i| {
            let share = if total > 0.0 {
                tests[i].contribution.abs() / total
            } else {
                0.0
            };
            (tests[i].slice.clone(), (share * 1e4).round() / 1e4)
        })
        .collect()
}

/// Drop findings that another finding of the same column and slice explains:
/// a planted or vanished top value explains a categorical distribution shift;
/// a tag's label-rate change explains its gap to the trusted tag.
fn suppress_explained(out: &mut Vec<Finding>) {
    let keys: Vec<(Check, Option<String>, String)> = out
        .iter()
        .map(|f| (f.check, f.column.clone(), f.trust_tag.clone()))
        .collect();
    let has = |check: &[Check], col: &Option<String>, tag: &str| {
        keys.iter()
            .any(|(c, cl, t)| check.contains(c) && cl == col && (t == tag || t == ALL))
    };
    out.retain(|f| match f.check {
        Check::Distribution => !has(
            &[
                Check::TopNewValue,
                Check::TopRareValueCommon,
                Check::TopValueVanished,
            ],
            &f.column,
            &f.trust_tag,
        ),
        Check::LabelRateVsTrusted => !has(&[Check::LabelRate], &f.column, &f.trust_tag),
        _ => true,
    });
}

fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Share => format!("{:.2}%", v * 100.0),
        Unit::Count => format!("{v:.0}"),
        Unit::Index => format!("{v:.3}"),
    }
}

fn finding(
    t: &Test,
    verdict: Verdict,
    moved_tags: Vec<String>,
    attribution: BTreeMap<String, f64>,
) -> Finding {
    let severity = if verdict == Verdict::PossiblePoisoning || t.effect >= 3.0 * t.threshold {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let what = match (&t.column, &t.value) {
        (Some(c), Some(v)) => format!("{} of `{c}` value `{v}`", t.check),
        (Some(c), None) => format!("{} of `{c}`", t.check),
        (None, _) => t.check.to_string(),
    };
    let whose = if t.slice == ALL {
        "across the batch".to_string()
    } else {
        format!("in trust tag `{}`", t.slice)
    };
    let mut top: Vec<(&String, &f64)> = attribution.iter().filter(|(_, s)| **s > 0.0).collect();
    top.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    let attr = top
        .iter()
        .take(3)
        .map(|(t, s)| format!("{t} {:.0}%", **s * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    let threshold = match t.unit {
        Unit::Count => format!("{:.0}%", t.threshold * 100.0),
        u => fmt_value(u, t.threshold),
    };
    let message = format!(
        "{what} {whose} moved from {} to {} (effect {}, threshold {threshold}, {} = {:.2}, p = {:.2e}){}; reads as {}",
        fmt_value(t.unit, t.baseline),
        fmt_value(t.unit, t.observed),
        match t.unit {
            Unit::Count => format!("{:.0}%", t.effect * 100.0),
            u => fmt_value(u, t.effect),
        },
        t.stat_name,
        t.statistic,
        t.p,
        if attr.is_empty() {
            String::new()
        } else {
            format!("; change by tag: {attr}")
        },
        verdict.as_str().replace('_', " "),
    );
    let clean = |x: f64| {
        if x.is_finite() {
            x
        } else {
            f64::MAX.copysign(x)
        }
    };
    Finding {
        check: t.check,
        column: t.column.clone(),
        trust_tag: t.slice.clone(),
        value: t.value.clone(),
        baseline_value: clean(t.baseline),
        observed_value: clean(t.observed),
        statistic_name: t.stat_name.to_string(),
        statistic: clean(t.statistic),
        threshold: clean(t.threshold),
        p_value: t.p,
        effect_size: clean(t.effect),
        moved_tags,
        attribution,
        verdict,
        severity,
        message,
    }
}
