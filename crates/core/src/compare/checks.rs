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
//!
//! This file holds the test record, the baseline reference, the shared
//! count and level tests and the missing/non-finite checks; the rest by
//! family: `rows.rs` (row count, tag share, duplicate rows), `labels.rs` (label
//! rate and classes, gap to the trusted tag, slice values),
//! `calibration.rs` (labels given the features), `numeric.rs` (range, PSI),
//! `values.rs` (JS, top values, never-seen values), `schema.rs`.

mod calibration;
mod labels;
mod numeric;
mod rows;
mod schema;
mod values;

use std::collections::BTreeMap;

use labels::{label_domain, label_rate, label_vs_trusted, slice_values};
use numeric::{out_of_range, psi};
use rows::{duplicates, row_count, tag_share};
pub(super) use schema::schema_findings;
use values::{js, top_values, unseen_values};

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
    /// The window of the evidence: batches, the first of them, streams.
    pub window: Option<(usize, String, usize)>,
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
        streams: 1,
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

/// Overdispersion factor of a χ²(df) statistic: the baseline's batches'
/// mean statistic over its degrees of freedom (at least 1), from a band of
/// the per-batch index `level` whose statistic is `scale · n · level`.
fn dispersion(b: Option<&Band>, scale: f64, n_batch: f64, df: f64) -> f64 {
    match b {
        Some(b) if df > 0.0 => (b.mean * scale * n_batch / df).max(1.0),
        _ => 1.0,
    }
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
