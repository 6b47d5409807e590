//! The checks of DESIGN.md's table, each producing one [`Test`] per slice
//! with its null model; [`super::decide`] turns them into findings. Pure.
//!
//! Each check states its null distribution:
//! - counts (missing values, label classes, rows out of range, rows of a
//!   never-seen value, a tag's rows): [`super::rate`], binomial error at the
//!   batch's own size plus the baseline's between-batch variance, pooled over
//!   windows of batches by [`super::evidence`];
//! - row counts and duplicate shares: a prediction interval from the
//!   baseline's batches (Student-t with `B − 1` degrees of freedom);
//! - distribution shapes: `n·PSI` and the Jensen-Shannon G-statistic are
//!   about χ²(bins − 1) for multinomial samples; the baseline's own batches
//!   (leave-one-out) give the overdispersion factor that divides them;
//! - label gap to the most trusted tag and top-value shares: normal
//!   approximations of differences of proportions.

mod calibration;

use std::collections::BTreeMap;

use super::budget::Family;
use super::evidence::Window;
use super::rate::{Direction, RateNull, RateTest};
use super::stats::{self, Band};
use super::{Check, Finding, Severity, Verdict, band, band_key};
use crate::profile::{
    ALL, BatchProfile, ColumnProfile, NumericProfile, SliceProfile, ValuesProfile,
};
use crate::rules::{ColumnKind, Rules};

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
    /// The smallest effect worth a finding (a floor in the metric's units).
    pub threshold: f64,
    /// Signed contribution of this (tag) slice to the whole-batch change.
    pub contribution: f64,
    /// Enough rows on both sides for the test to count.
    pub eligible: bool,
    pub unit: Unit,
    /// The part of the false-alarm budget the test draws on.
    pub family: Family,
    /// Directions tested (1 or 2), for the budget's multiplicity.
    pub sides: u64,
    /// Count-based tests: this batch's count and its null; these accumulate.
    pub count: Option<CountTest>,
    /// Set by the decision: the p-value threshold the test was held to.
    pub alpha: f64,
    /// Set by the decision: the window of batches the numbers are from.
    pub window: Option<(usize, String)>,
    /// Label calibration: the features the prediction is made from.
    pub given: Option<String>,
}

/// The count behind a count-based test.
#[derive(Debug, Clone, Copy)]
pub(super) struct CountTest {
    pub x: u64,
    pub n: u64,
    pub null: CountNull,
    pub dir: Direction,
    /// A count tested against a per-row prediction: `[expected, binomial
    /// variance, sd of the prediction's error]` of this batch.
    pub predicted: Option<[f64; 3]>,
}

/// The null model of a count.
#[derive(Debug, Clone, Copy)]
pub(super) enum CountNull {
    /// One rate for every trial ([`super::rate`]).
    Rate(RateNull),
    /// A rate per row, predicted from its features ([`calibration`]).
    Predicted(calibration::PredictedNull),
}

impl CountNull {
    /// Test the pooled counts of a window.
    pub fn test(&self, w: &Window, dir: Direction) -> RateTest {
        match self {
            CountNull::Rate(r) => r.test(w.x, w.n, w.n2, dir),
            CountNull::Predicted(p) => p.test(w.x, w.n, w.predicted, dir),
        }
    }
}

impl Test {
    pub fn band_key(&self) -> String {
        match (self.check, &self.column, &self.value) {
            // one metric per value of a slice column
            (Check::SliceLabelRate | Check::SliceShare, Some(c), Some(v)) => {
                band_key(self.check, Some(&format!("{c}={v}")), &self.slice)
            }
            // one residual per label feature, while a baseline is built
            (Check::LabelCalibration, Some(c), Some(f)) => {
                band_key(self.check, Some(&format!("{c} given {f}")), &self.slice)
            }
            _ => band_key(self.check, self.column.as_deref(), &self.slice),
        }
    }

    /// The number a baseline's band learns for this metric.
    pub fn band_value(&self) -> f64 {
        match self.check {
            Check::LabelRateVsTrusted => self.observed - self.baseline,
            // the standardized residual, whose mean square is the overdispersion
            Check::LabelCalibration => self.statistic,
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

    /// Rows of a slice in the baseline.
    pub(super) fn rows(&self, slice: &str) -> u64 {
        self.slice(slice).map(|s| s.rows).unwrap_or(0)
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

    /// Baseline batches behind the reference.
    fn batches(&self) -> f64 {
        self.reference.profile.batches.max(1) as f64
    }

    /// The null of a rate seen `x_base` times in `n_base` baseline trials,
    /// with the overdispersion its band shows.
    fn rate_null(&self, key: (Check, Option<&str>, &str), x_base: f64, n_base: f64) -> RateNull {
        let b = self.band(key.0, key.1, key.2);
        let band = b.map(|b| (b.mean, b.std().powi(2), b.n as f64));
        RateNull::new(x_base, n_base, band, n_base / self.batches())
    }
}

fn blank(check: Check, column: Option<&str>, slice: &str, unit: Unit, family: Family) -> Test {
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
        family,
        sides: 1,
        count: None,
        alpha: 0.0,
        window: None,
        given: None,
    }
}

/// Fill a count-based test from this batch's count alone (the decision
/// may replace the numbers with a longer window's).
fn count_test(t: &mut Test, x: u64, n: u64, null: RateNull, dir: Direction) {
    count_test_with(t, x, n, CountNull::Rate(null), None, dir);
}

/// [`count_test`] for any null, with this batch's prediction if it has one.
fn count_test_with(
    t: &mut Test,
    x: u64,
    n: u64,
    null: CountNull,
    predicted: Option<[f64; 3]>,
    dir: Direction,
) {
    let this = Window {
        batches: 1,
        x: x as f64,
        n: n as f64,
        n2: (n as f64).powi(2),
        predicted: predicted.unwrap_or_default(),
        first_batch: String::new(),
    };
    let r = null.test(&this, dir);
    t.observed = r.observed;
    t.baseline = r.baseline;
    t.statistic = r.z;
    t.p = r.p;
    t.effect = r.effect;
    t.sides = dir.sides();
    t.count = Some(CountTest {
        x,
        n,
        null,
        dir,
        predicted,
    });
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
        calibration::label_calibration(&ctx, slice, &mut tests);
        label_domain(&ctx, slice, &mut tests);
        for rule in &rules.columns {
            unusable_share(
                &ctx,
                slice,
                &rule.name,
                Check::MissingRate,
                nulls,
                &mut tests,
            );
            match rule.kind {
                ColumnKind::Numeric => {
                    out_of_range(&ctx, slice, &rule.name, &mut tests);
                    unusable_share(
                        &ctx,
                        slice,
                        &rule.name,
                        Check::NonFinite,
                        non_finite,
                        &mut tests,
                    );
                    psi(&ctx, slice, &rule.name, &mut tests);
                }
                ColumnKind::Categorical | ColumnKind::Boolean => {
                    js(&ctx, slice, &rule.name, &mut tests);
                    top_values(&ctx, slice, &rule.name, &mut tests);
                    unseen_values(&ctx, slice, &rule.name, &mut tests);
                }
                ColumnKind::Text | ColumnKind::Timestamp => {}
            }
        }
    }
    label_vs_trusted(&ctx, &names, &mut tests);
    for slice in &names {
        for column in &rules.slices {
            slice_values(&ctx, slice, column, &mut tests);
        }
    }
    tests
}

/// Per value of a slice column in a slice: the label rate of its rows
/// (two-sided) and its share of the slice's rows (one-sided, a flood of
/// one value), both counts against the baseline's same cell. Values with
/// fewer than `min_slice_value_rows` baseline rows are not tested: their
/// rate is not known well enough. Attacks confined to one region of the
/// input space (flips only where `merchant_category = X`) show here while
/// the tag's overall rate barely moves.
fn slice_values(ctx: &Ctx, slice: &str, column: &str, out: &mut Vec<Test>) {
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

/// Row count against the baseline's batch-to-batch band: a prediction
/// interval, `(obs − mean) / (sd·√(1 + 1/B)) ~ t(B − 1)`, with `sd` at
/// least the Poisson `√mean`. Two-sided (floods and outages).
fn row_count(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
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
fn tag_share(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
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

/// A count-based check of a rate in a slice against the baseline.
#[allow(clippy::too_many_arguments)]
fn rate_test(
    ctx: &Ctx,
    check: Check,
    column: Option<&str>,
    slice: &str,
    obs: (u64, u64),
    base: (u64, u64),
    floor: f64,
    family: Family,
    dir: Direction,
    out: &mut Vec<Test>,
) {
    let mut t = blank(check, column, slice, Unit::Share, family);
    if obs.1 == 0 || base.1 == 0 {
        out.push(t);
        return;
    }
    let null = ctx.rate_null((check, column, slice), base.0 as f64, base.1 as f64);
    count_test(&mut t, obs.0, obs.1, null, dir);
    t.threshold = floor;
    let (wo, wb) = ctx.weights(slice);
    t.contribution = wo * t.observed - wb * (base.0 as f64 / base.1 as f64);
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

fn column<'a>(s: Option<&'a SliceProfile>, name: &str) -> Option<&'a ColumnProfile> {
    s.and_then(|s| s.columns.get(name))
}

/// A share of a column's values that are not usable, one-sided, with the
/// missing-value floor and family: `missing_rate` (nulls among all rows) and
/// `non_finite` (NaN and ±infinity among the non-null values of a numeric
/// column; they enter no other statistic, as min, max, mean, quantiles and
/// the range check see finite values only, so without this test a column
/// turned to NaN would look merely smaller). `counts` gives (bad, of).
fn unusable_share(
    ctx: &Ctx,
    slice: &str,
    name: &str,
    check: Check,
    counts: fn(&ColumnProfile) -> (u64, u64),
    out: &mut Vec<Test>,
) {
    let (Some(o), Some(b)) = (
        column(ctx.batch_slices.get(slice), name),
        column(ctx.reference.slice(slice), name),
    ) else {
        return;
    };
    rate_test(
        ctx,
        check,
        Some(name),
        slice,
        counts(o),
        counts(b),
        ctx.rules.thresholds.missing_min_abs_change,
        Family::Missing,
        Direction::Up,
        out,
    );
}

fn nulls(c: &ColumnProfile) -> (u64, u64) {
    (c.nulls, c.nulls + c.count)
}

fn non_finite(c: &ColumnProfile) -> (u64, u64) {
    (c.numeric.as_ref().map_or(0, |n| n.non_finite), c.count)
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
fn label_domain(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
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

/// Values outside the declared range or the range the baseline saw: a
/// count (estimated from the batch's quantile sketch for the seen range),
/// one-sided. The null rate is the rate at which the baseline's own batches
/// fall outside the range of the others (leave-one-out bands), so columns
/// with long tails are not flagged for the tail they always had.
fn out_of_range(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
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

/// Overdispersion factor of a χ²(df) statistic: the baseline's batches'
/// mean statistic over its degrees of freedom (at least 1), from a band of
/// the per-batch index `level` whose statistic is `scale · n · level`.
fn dispersion(b: Option<&Band>, scale: f64, n_batch: f64, df: f64) -> f64 {
    match b {
        Some(b) if df > 0.0 => (b.mean * scale * n_batch / df).max(1.0),
        _ => 1.0,
    }
}

/// Numeric distribution: PSI on the baseline's quantile bins. `n·PSI` is
/// about Pearson's χ²(bins − 1) for a multinomial sample; divided by the
/// overdispersion the baseline's batches show (quasi-likelihood).
fn psi(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
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

/// How a divergence level becomes a χ² statistic: `scale · n_eff · level`
/// with `df` degrees of freedom, `n_eff` from the batch's and the
/// baseline's counts.
struct Chi2 {
    scale: f64,
    df: f64,
    n_obs: f64,
    n_base: f64,
}

/// Finish a distribution test whose effect is a divergence level (`t.observed`):
/// its p-value from the χ² statistic divided by the overdispersion the
/// baseline's batches show at their own size.
fn level_test(ctx: &Ctx, mut t: Test, chi2: Chi2, floor: f64, out: &mut Vec<Test>) {
    let slice = t.slice.clone();
    let slice = slice.as_str();
    let per_batch = chi2.n_base / ctx.batches();
    let band = ctx.band(Check::Distribution, t.column.as_deref(), slice);
    let phi = dispersion(
        band,
        chi2.scale,
        stats::n_eff(per_batch, chi2.n_base),
        chi2.df,
    );
    let n = stats::n_eff(chi2.n_obs, chi2.n_base);
    t.p = stats::p_chi2(chi2.scale * n * t.observed / phi, chi2.df);
    t.effect = t.observed;
    t.threshold = floor;
    t.contribution = ctx.weights(slice).0 * t.observed;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

/// Categorical distribution: Jensen-Shannon divergence over the top values
/// and the rest; `8·n·ln2·JS` is about the G-statistic, χ²(categories − 1),
/// divided by the baseline's overdispersion.
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
fn unseen_values(ctx: &Ctx, slice: &str, name: &str, out: &mut Vec<Test>) {
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
    let mut unseen: Vec<(u64, String)> = o
        .top
        .all()
        .into_iter()
        .filter(|v| b.top.estimate(&v.value) == 0)
        .map(|v| (v.count, v.value))
        .collect();
    unseen.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let x: u64 = unseen.iter().map(|u| u.0).sum();
    let mut t = blank(key.0, key.1, slice, Unit::Share, Family::Values);
    let x_base = band.map(|b| b.mean).unwrap_or(0.0) * bc.count as f64;
    let null = ctx.rate_null(key, x_base, bc.count as f64);
    count_test(&mut t, x, oc.count, null, Direction::Up);
    t.value = unseen.first().map(|u| u.1.clone());
    t.threshold = ctx.rules.thresholds.unseen_min_share;
    let (wo, _) = ctx.weights(slice);
    t.contribution = wo * t.observed;
    t.eligible = ctx.eligible(slice);
    out.push(t);
}

/// Duplicate rows against the baseline's band: a prediction interval,
/// Student-t with `B − 1` degrees of freedom; `sd` at least HyperLogLog's
/// relative error. One-sided.
fn duplicates(ctx: &Ctx, slice: &str, out: &mut Vec<Test>) {
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

/// Schema changes of the batch against the baseline (always batch level).
/// Columns named one by one in a schema finding; the rest are counted.
const SCHEMA_LISTED: usize = 10;
/// Characters of a column name quoted in a message (names are untrusted).
const NAME_CHARS: usize = 64;

/// Schema changes: one finding per kind of change (new, missing, retyped)
/// per batch, however many columns it concerns, so a batch with 5,000
/// unexpected columns raises one alert that lists ten of them and counts
/// the rest, not 5,000. A single column keeps the column's name in
/// `column` (routes and fingerprints match it); a group has none.
pub(super) fn schema_findings(profile: &BatchProfile, reference: &BatchProfile) -> Vec<Finding> {
    let (mut new, mut retyped, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (col, ty) in &profile.schema {
        match reference.schema.get(col) {
            None => new.push((col.as_str(), "", ty.as_str())),
            Some(base) if !base.split(" | ").any(|b| b == ty) => {
                retyped.push((col.as_str(), base.as_str(), ty.as_str()))
            }
            _ => {}
        }
    }
    for (col, ty) in &reference.schema {
        if !profile.schema.contains_key(col) {
            missing.push((col.as_str(), ty.as_str(), ""));
        }
    }
    [
        (Check::SchemaNewColumn, new, Severity::Warning),
        (Check::SchemaRetypedColumn, retyped, Severity::Critical),
        (Check::SchemaMissingColumn, missing, Severity::Critical),
    ]
    .into_iter()
    .filter_map(|(check, cols, severity)| schema_group(check, &cols, severity))
    .collect()
}

fn schema_group(check: Check, cols: &[(&str, &str, &str)], severity: Severity) -> Option<Finding> {
    let name = |c: &str| -> String {
        if c.chars().count() > NAME_CHARS {
            format!("{}…", c.chars().take(NAME_CHARS).collect::<String>())
        } else {
            c.to_string()
        }
    };
    let one = |(col, base, obs): &(&str, &str, &str)| match check {
        Check::SchemaNewColumn => format!("`{}` ({obs})", name(col)),
        Check::SchemaMissingColumn => format!("`{}` ({base})", name(col)),
        _ => format!("`{}` from {base} to {obs}", name(col)),
    };
    let message = match cols {
        [] => return None,
        [(col, base, obs)] => match check {
            Check::SchemaNewColumn => {
                format!("new column `{}` ({obs}) is not in the baseline", name(col))
            }
            Check::SchemaMissingColumn => format!(
                "column `{}` ({base}) is in the baseline but missing from this batch",
                name(col)
            ),
            _ => format!("column `{}` changed type from {base} to {obs}", name(col)),
        },
        _ => {
            let listed: Vec<String> = cols.iter().take(SCHEMA_LISTED).map(one).collect();
            let more = match cols.len().saturating_sub(SCHEMA_LISTED) {
                0 => String::new(),
                k => format!(" and {k} more"),
            };
            let what = match check {
                Check::SchemaNewColumn => "new columns are not in the baseline",
                Check::SchemaMissingColumn => "columns of the baseline are missing from this batch",
                _ => "columns changed type",
            };
            format!("{} {what}: {}{more}", cols.len(), listed.join(", "))
        }
    };
    let mut f = Finding::batch_level(check, Verdict::DataQuality, severity, message);
    if let [(col, _, _)] = cols {
        f.column = Some(col.to_string());
    }
    let n = cols.len() as f64;
    (f.baseline_value, f.observed_value) = match check {
        Check::SchemaNewColumn => (0.0, n),
        Check::SchemaMissingColumn => (n, 0.0),
        _ => (n, n),
    };
    Some(f)
}
