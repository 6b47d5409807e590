//! From tests to findings: accumulate, decide, group, give a verdict.
//!
//! ```text
//!  tests of the batch ──► count tests: push (x, n) into the evidence, scan windows ──┐
//!                                                                                    ▼
//!  hit = eligible ∧ p ≤ α_test (the family's share of the budget) ∧ effect ≥ floor
//!                                                                                    │
//!  group per (check, column, value) ──► `all` reported only when its own test hit;  ◄┘
//!                                       else one finding per tag that hit
//!                                                                                    │
//!  verdict: data_quality for missing, range, schema, volume and duplicates; ◄────────┘
//!           drift when a strict majority of the eligible tags moved, the most
//!           trusted eligible tag among them; otherwise possible_poisoning for
//!           a low-trust tag and source_change for a trusted one
//! ```
//!
//! Every finding's numbers pass its own thresholds: its p-value is at most
//! the `p_threshold` it carries, and its effect at least its `threshold`.
//! Pure.

use std::collections::BTreeMap;

use super::budget::{self, Family};
use super::checks::{Reference, Test, Unit, schema_findings};
use super::evidence::{Counts, EvidenceState, SiblingCounts, WINDOWS, Window, pool_windows};
use super::stats;
use super::{Check, EvidenceWindow, Finding, Severity, Verdict};
use crate::profile::{ALL, BatchProfile};
use crate::rules::Rules;

/// Accumulate the count tests into the evidence and pick, per test, the
/// shortest window that is a hit (the most specific account of the
/// change), else the one with the strongest evidence among those whose
/// effect reaches the floor (this batch alone when none does).
///
/// With sibling streams (a fleet), each test also scans its windows pooled
/// over the fleet ([`EvidenceState::fleet_windows`]), after its own: a
/// campaign spread over K partitions shows in the pooled counts K times
/// sooner than in any one partition's.
fn accumulate(
    tests: &mut [Test],
    evidence: &mut EvidenceState,
    siblings: &SiblingCounts<'_>,
    batch_id: &str,
) {
    let now: BTreeMap<String, Counts> = tests
        .iter()
        .filter(|t| t.eligible)
        .filter_map(|t| {
            t.count.map(|c| {
                let counts = Counts {
                    x: c.x,
                    n: c.n,
                    predicted: c.predicted,
                };
                (t.band_key(), counts)
            })
        })
        .collect();
    evidence.push(batch_id, &now);
    for t in tests.iter_mut().filter(|t| t.eligible) {
        let Some(c) = t.count else { continue };
        let mut best: Option<(f64, super::rate::RateTest, Window)> = None;
        let key = t.band_key();
        let mut windows = evidence.windows(&key);
        if !siblings.is_empty() {
            let pooled = pool_windows(&windows, siblings, &key);
            windows.extend(pooled);
        }
        for w in windows {
            let r = c.null.test(&w, c.dir);
            if r.effect < t.threshold || r.effect <= 0.0 {
                continue;
            }
            if r.p <= t.alpha {
                best = Some((r.p, r, w));
                break;
            }
            if best.as_ref().is_none_or(|b| r.p < b.0) {
                best = Some((r.p, r, w));
            }
        }
        if let Some((_, r, w)) = best {
            t.observed = r.observed;
            t.baseline = r.baseline;
            t.statistic = r.z;
            t.p = r.p;
            t.effect = r.effect;
            t.window = Some((w.batches, w.first_batch, w.streams));
        }
    }
}

/// How many looks (tests × sides × windows) each family made this batch;
/// in a fleet (`pooled`) a count test looks at its windows twice, its own
/// and pooled over the fleet.
fn looks(tests: &[Test], pooled: bool) -> BTreeMap<Family, u64> {
    let mut out = BTreeMap::new();
    let per_count_test = WINDOWS.len() as u64 * if pooled { 2 } else { 1 };
    for t in tests.iter().filter(|t| t.eligible) {
        let windows = if t.count.is_some() { per_count_test } else { 1 };
        *out.entry(t.family).or_default() += t.sides * windows;
    }
    out
}

/// Decide every test of a batch and turn the hits into findings; the
/// evidence comes in as the state after the previous batch and goes out
/// as the state after this one.
pub(super) fn findings(
    profile: &BatchProfile,
    reference: &Reference,
    mut tests: Vec<Test>,
    rules: &Rules,
    evidence: &mut EvidenceState,
    siblings: &[&EvidenceState],
    batch_id: &str,
) -> Vec<Finding> {
    let mut out = schema_findings(profile, &reference.profile);
    let alpha_batch = budget::alpha_batch(rules.thresholds.false_alarms_per_1000_batches);
    let siblings = SiblingCounts::new(evidence, siblings);
    let looks = looks(&tests, !siblings.is_empty());
    let active: Vec<Family> = looks.keys().copied().collect();
    for t in tests.iter_mut() {
        t.alpha = budget::alpha_test(
            alpha_batch,
            t.family,
            &active,
            looks.get(&t.family).copied().unwrap_or(1),
        );
    }
    accumulate(&mut tests, evidence, &siblings, batch_id);
    let hit: Vec<bool> = tests
        .iter()
        .map(|t| t.eligible && t.p <= t.alpha && t.effect >= t.threshold && t.effect > 0.0)
        .collect();
    for (t, _) in tests
        .iter()
        .zip(&hit)
        .filter(|(t, h)| **h && t.count.is_some())
    {
        evidence.reset(&t.band_key());
    }

    let eligible = eligible_tags(profile, reference, rules);
    let mut groups: BTreeMap<(Check, Option<String>, Option<String>), Vec<usize>> = BTreeMap::new();
    for (i, t) in tests.iter().enumerate() {
        // the most common never-seen value is a detail, not what the test is about
        let value = t
            .value
            .clone()
            .filter(|_| !matches!(t.check, Check::UnseenValues | Check::LabelOutOfDomain));
        groups
            .entry((t.check, t.column.clone(), value))
            .or_default()
            .push(i);
    }
    for ((check, _, _), idx) in groups {
        let all = idx.iter().copied().find(|&i| tests[i].slice == ALL);
        let tag_idx: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| tests[i].slice != ALL)
            .collect();
        let moved: Vec<usize> = tag_idx.iter().copied().filter(|&i| hit[i]).collect();
        let all_hit = all.is_some_and(|i| hit[i]);
        if moved.is_empty() && !all_hit {
            continue;
        }
        let moved_names: Vec<String> = moved.iter().map(|&i| tests[i].slice.clone()).collect();
        let most_trusted = eligible.first();
        let majority = moved.len() * 2 > eligible.len()
            && most_trusted.is_some_and(|m| moved_names.contains(m));
        let attribution = attribution(&tests, &tag_idx);
        let share_of = |pick: &dyn Fn(&str) -> bool| -> f64 {
            attribution
                .iter()
                .filter(|(t, _)| pick(t))
                .map(|(_, s)| s)
                .sum()
        };
        let moved_share = share_of(&|t| moved_names.iter().any(|m| m == t));
        // Is the change carried by the tags that moved? Yes when one of
        // them is stronger evidence than the whole batch (a change diluted
        // by the other tags' rows), or when a minority of the tags carries
        // most of it.
        let p_all = all.map_or(1.0, |a| tests[a].p.max(1e-300));
        let minority = moved.len() * 2 <= eligible.len();
        let carried = !moved.is_empty()
            && (moved.iter().any(|&i| tests[i].p.max(1e-300) < p_all)
                || (minority && moved_share >= 0.8));
        if all_hit && (majority || !carried) {
            // a change across the batch, not carried by the tags that moved alone
            let a = all.expect("all_hit has an `all` test");
            let low_share = share_of(&|t| rules.trust.is_low_trust(t));
            let side = if majority {
                Side::Broad
            } else if low_share >= 0.8 {
                Side::Low
            } else if low_share <= 0.2 {
                Side::Trusted
            } else {
                Side::Broad
            };
            out.push(finding(
                &tests[a],
                verdict(check, side),
                moved_names.clone(),
                attribution,
            ));
            continue;
        }
        for &i in &moved {
            let tag = &tests[i].slice;
            let side = if majority {
                Side::Broad
            } else if rules.trust.is_low_trust(tag) {
                Side::Low
            } else {
                Side::Trusted
            };
            out.push(finding(
                &tests[i],
                verdict(check, side),
                moved_names.clone(),
                attribution.clone(),
            ));
        }
    }
    collapse_slices(&mut out);
    suppress_explained(&mut out);
    out.sort_by(|a, b| {
        (a.check, &a.column, &a.trust_tag, &a.value).cmp(&(
            b.check,
            &b.column,
            &b.trust_tag,
            &b.value,
        ))
    });
    cap(out, rules.thresholds.max_findings_per_batch)
}

/// Keep at most `max` findings, the most severe first (in their order
/// otherwise), and count the rest in one `too_many_findings` finding with
/// the severity of the worst of them.
fn cap(out: Vec<Finding>, max: usize) -> Vec<Finding> {
    if out.len() <= max {
        return out;
    }
    let keep = max.saturating_sub(1);
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(out[i].severity));
    let mut kept = vec![false; out.len()];
    for &i in order.iter().take(keep) {
        kept[i] = true;
    }
    let mut by_check: BTreeMap<Check, usize> = BTreeMap::new();
    let mut worst = Severity::Info;
    let mut rest = 0;
    let mut findings = Vec::with_capacity(max);
    for (f, kept) in out.into_iter().zip(kept) {
        if kept {
            findings.push(f);
        } else {
            *by_check.entry(f.check).or_default() += 1;
            worst = worst.max(f.severity);
            rest += 1;
        }
    }
    let counts: Vec<String> = by_check
        .iter()
        .map(|(c, n)| format!("{} ×{n}", c.as_str()))
        .collect();
    let mut summary = Finding::batch_level(
        Check::TooManyFindings,
        Verdict::DataQuality,
        worst,
        format!(
            "{rest} more findings in this batch are not raised one by one (max_findings_per_batch: {max}): {}",
            counts.join(", ")
        ),
    );
    summary.baseline_value = max as f64;
    summary.observed_value = (findings.len() + rest) as f64;
    findings.push(summary);
    findings
}

/// The tags with enough rows on both sides to be tested, most trusted first.
fn eligible_tags(profile: &BatchProfile, reference: &Reference, rules: &Rules) -> Vec<String> {
    let min = rules.thresholds.min_slice_rows;
    let mut tags: Vec<String> = profile
        .tags
        .iter()
        .filter(|(t, s)| s.rows >= min && reference.rows(t) >= min)
        .map(|(t, _)| t.clone())
        .collect();
    tags.sort_by_key(|t| (rules.trust.rank(t), t.clone()));
    tags
}

/// Where a change sits.
#[derive(Clone, Copy)]
enum Side {
    /// Most tags, the most trusted among them.
    Broad,
    /// Low-trust tags only.
    Low,
    /// A trusted tag, without the majority.
    Trusted,
}

/// How a hit reads.
/// How a hit reads: missing values, ranges, schema and malformed input
/// always as data quality; anything confined to low-trust tags as possible
/// poisoning (a flood of rows in a low-trust tag included); other volume
/// and duplicate changes as data quality; the rest by where it sits.
fn verdict(check: Check, side: Side) -> Verdict {
    if check.is_data_quality() {
        return Verdict::DataQuality;
    }
    match side {
        Side::Low => Verdict::PossiblePoisoning,
        _ if matches!(check, Check::RowCount | Check::DuplicateRows) => Verdict::DataQuality,
        Side::Broad => Verdict::Drift,
        Side::Trusted => Verdict::SourceChange,
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

/// Slice-value findings of one (check, column, tag) become one: the
/// strongest value's, naming the others that moved too (a broad change in a
/// tag moves many values at once; on-call wants one alert, not sixty).
fn collapse_slices(out: &mut Vec<Finding>) {
    let is_slice = |f: &Finding| matches!(f.check, Check::SliceLabelRate | Check::SliceShare);
    let mut groups: BTreeMap<(Check, Option<String>, String), Vec<Finding>> = BTreeMap::new();
    let mut rest = Vec::with_capacity(out.len());
    for f in out.drain(..) {
        if is_slice(&f) {
            groups
                .entry((f.check, f.column.clone(), f.trust_tag.clone()))
                .or_default()
                .push(f);
        } else {
            rest.push(f);
        }
    }
    for (_, mut fs) in groups {
        fs.sort_by(|a, b| {
            a.p_value
                .unwrap_or(1.0)
                .total_cmp(&b.p_value.unwrap_or(1.0))
                .then_with(|| a.value.cmp(&b.value))
        });
        let mut best = fs.remove(0);
        if !fs.is_empty() {
            let others: Vec<&str> = fs.iter().filter_map(|f| f.value.as_deref()).collect();
            let shown = others
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let more = others.len().saturating_sub(5);
            best.message.push_str(&format!(
                "; {} other value{} moved too: {shown}{}",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
            best.slice_values_moved = Some(1 + others.len() as u64);
        }
        rest.push(best);
    }
    *out = rest;
}

/// Drop findings that another finding of the same column and slice explains:
/// a planted or vanished top value explains a categorical distribution shift;
/// rows of a never-seen value explain that value's appearance in the top;
/// a tag's label-rate change explains its gap to the trusted tag; its
/// labels against their features explain its label rate.
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
                Check::UnseenValues,
            ],
            &f.column,
            &f.trust_tag,
        ),
        Check::TopNewValue => !has(&[Check::UnseenValues], &f.column, &f.trust_tag),
        // a change of the tag's whole label rate that moved many values of
        // a slice column is the tag's finding; one or two values that moved
        // stay (a targeted change can also move the tag's rate)
        Check::SliceLabelRate => {
            f.slice_values_moved.unwrap_or(1) <= 2
                || !keys.iter().any(|(c, _, t)| {
                    matches!(c, Check::LabelRate | Check::LabelCalibration)
                        && (*t == f.trust_tag || t == ALL)
                })
        }
        // the labels against their features say more than their rate alone
        Check::LabelRate => !has(&[Check::LabelCalibration], &f.column, &f.trust_tag),
        // a shifted mix of a column's values is its distribution's finding
        Check::SliceShare => !has(&[Check::Distribution], &f.column, &f.trust_tag),
        Check::LabelRateVsTrusted => !has(
            &[Check::LabelRate, Check::LabelCalibration],
            &f.column,
            &f.trust_tag,
        ),
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
    debug_assert!(
        t.p <= t.alpha && t.effect >= t.threshold,
        "a finding must pass its own thresholds: {t:?}"
    );
    let severity = if verdict == Verdict::PossiblePoisoning || t.effect >= 3.0 * t.threshold {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let what = match (&t.column, &t.value) {
        (Some(c), Some(v)) if matches!(t.check, Check::UnseenValues | Check::LabelOutOfDomain) => {
            format!("{} of `{c}` (most common: `{v}`)", t.check)
        }
        (Some(c), Some(v)) => format!("{} of `{c}` value `{v}`", t.check),
        (Some(c), None) if t.given.is_some() => format!(
            "{} of `{c}` given {}",
            t.check,
            t.given.as_deref().unwrap_or_default()
        ),
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
    let window = match &t.window {
        Some((w, first, streams)) if *streams > 1 => format!(
            "; pooled over {streams} input streams, {w} batches of each, first here {first}"
        ),
        Some((w, first, _)) if *w > 1 => format!("; sustained over {w} batches, first {first}"),
        _ => String::new(),
    };
    let predicted = if t.given.is_some() {
        " (what its rows' features predict)"
    } else {
        ""
    };
    let message = format!(
        "{what} {whose} moved from {}{predicted} to {} (effect {}, threshold {threshold}, {} = {:.2}, {} ≤ {:.1e}){window}{}; reads as {}",
        fmt_value(t.unit, t.baseline),
        fmt_value(t.unit, t.observed),
        match t.unit {
            Unit::Count => format!("{:.0}%", t.effect * 100.0),
            u => fmt_value(u, t.effect),
        },
        t.stat_name,
        t.statistic,
        stats::fmt_p(t.p),
        t.alpha,
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
        statistic: Some(clean(t.statistic)),
        threshold: clean(t.threshold),
        p_value: Some(t.p),
        p_threshold: Some(t.alpha),
        slice_values_moved: None,
        window: t.window.as_ref().map(|(w, first, streams)| EvidenceWindow {
            batches: *w as u64,
            first_batch: first.clone(),
            streams: *streams as u64,
        }),
        effect_size: clean(t.effect),
        moved_tags,
        attribution,
        verdict,
        severity,
        message,
    }
}
