//! Detection over streams of small batches: campaigns and long clean runs.
//!
//! What a user meets, measured the way they meet it: batches of about 2,000
//! rows over four trust tags, compared one after the other with the
//! evidence of the previous batches carried along, exactly as the daemon
//! does ([`dqmon::compare::compare_sequential`]).
//!
//! - **Clean stream**: hundreds of clean batches in a row: how many raise
//!   any finding (the false-alarm rate the budget promises to bound).
//! - **Campaigns**: per attack and strength, independent campaigns of
//!   [`CLEAN_LEAD`] clean batches then [`ATTACKED`] attacked ones; each is
//!   its own stream (fresh evidence). Reported: the share of attacked
//!   batches that raise the expected finding judged alone (per-batch
//!   recall), and the share of campaigns noticed within 1, 3, 8 and 16
//!   attacked batches, with the expected check, column, trust tag and
//!   verdict. The clean lead-in batches count as clean batches too.
//! - **Budget trade-off**: per-batch recall of 5% label flips and the clean
//!   stream's false-alarm rate at several budgets, so a user can choose.
//! - **A fleet** ([`fleet`]): the same data read as several input streams,
//!   with each stream's own evidence and with evidence pooled over them.
//!
//! Everything is seeded: the same suite gives the same table.

use std::fmt::Write as _;

use dqmon::baseline::{Baseline, BatchRef};
use dqmon::compare::{self, EvidenceState, Finding, Position, Reference};
use dqmon::config::model::Rules;
use dqmon::pii::PiiKey;
use dqmon::profile::{BatchProfile, ProfileError, profile_batches};
use dqmon_fixtures::{BatchSpec, Scenario, generate};

use super::{FindingKey, detected, expected};

pub mod fleet;

/// Clean batches before each campaign's attack starts.
pub const CLEAN_LEAD: usize = 8;
/// Attacked batches per campaign.
pub const ATTACKED: usize = 16;
/// Delays reported: noticed within this many attacked batches.
pub const WITHIN: [usize; 4] = [1, 3, 8, 16];
/// Budgets of the trade-off table (false alarms per 1,000 clean batches).
pub const BUDGETS: [f64; 4] = [1.0, 4.0, 20.0, 50.0];

/// The size of a stream evaluation.
#[derive(Debug, Clone, Copy)]
pub struct StreamSuite {
    /// Rows per batch (before a scenario adds any).
    pub rows: usize,
    pub seed: u64,
    /// Clean batches the baseline is built from.
    pub baseline_batches: u64,
    /// Clean batches in the long clean stream.
    pub clean_batches: u64,
    /// Campaigns per attack and strength.
    pub campaigns: u64,
}

impl Default for StreamSuite {
    fn default() -> Self {
        StreamSuite {
            rows: 2_000,
            seed: 20_261_201,
            baseline_batches: 20,
            clean_batches: 300,
            campaigns: 20,
        }
    }
}

/// One attack of the ladder.
#[derive(Debug, Clone)]
pub struct Attack {
    /// What the table calls it.
    pub label: String,
    pub scenario: Scenario,
}

/// The attacks at their strength ladder.
pub fn ladder() -> Vec<Attack> {
    let mut v = Vec::new();
    for s in [0.02, 0.05, 0.1] {
        v.push(Attack {
            label: format!("label flips {:.0}% of `scraped` (400 rows)", s * 100.0),
            scenario: Scenario::LabelFlip {
                tag: "scraped".into(),
                strength: s,
            },
        });
    }
    for (value, share) in [("US", "about 25%"), ("DE", "about 8%")] {
        v.push(Attack {
            label: format!(
                "targeted flips: 30% of `scraped` rows with country `{value}` ({share} of the tag)"
            ),
            scenario: Scenario::TargetedFlip {
                tag: "scraped".into(),
                column: "country".into(),
                value: value.into(),
                strength: 0.3,
            },
        });
    }
    v.push(Attack {
        label: "label flips 5% of `vendor` (600 rows, trusted)".into(),
        scenario: Scenario::LabelFlip {
            tag: "vendor".into(),
            strength: 0.05,
        },
    });
    for s in [0.005, 0.01, 0.03] {
        v.push(Attack {
            label: format!(
                "never-seen `merchant_category` in {}% of `scraped`",
                s * 100.0
            ),
            scenario: Scenario::PlantedCategory {
                column: "merchant_category".into(),
                value: "mcc_9999".into(),
                share: s,
                tag: Some("scraped".into()),
            },
        });
    }
    for (col, base, plus) in [
        ("country", 0.0, 0.01),
        ("country", 0.0, 0.03),
        ("amount", 0.02, 0.01),
        ("amount", 0.02, 0.03),
    ] {
        v.push(Attack {
            label: format!(
                "missing +{:.0} point{} on `{col}` ({:.0}% null)",
                plus * 100.0,
                if plus > 0.015 { "s" } else { "" },
                base * 100.0
            ),
            scenario: Scenario::MissingJump {
                column: col.into(),
                share: base + plus,
            },
        });
    }
    v.push(Attack {
        label: "natural drift 0.3 (every tag)".into(),
        scenario: Scenario::NaturalDrift { strength: 0.3 },
    });
    v
}

/// The measured detection of one attack.
#[derive(Debug, Clone)]
pub struct AttackRow {
    pub label: String,
    /// Attacked batches judged alone that raised the expected finding.
    pub per_batch: (u64, u64),
    /// Campaigns noticed within each of [`WITHIN`] attacked batches.
    pub within: [u64; 4],
    pub campaigns: u64,
}

/// One budget of the trade-off table.
#[derive(Debug, Clone)]
pub struct Tradeoff {
    /// False alarms per 1,000 batches.
    pub budget: f64,
    /// Clean-stream batches, and those with any finding.
    pub clean: (u64, u64),
    /// Attacked batches (5% flips), and those found judged alone.
    pub found: (u64, u64),
}

/// The whole stream evaluation.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub suite: StreamSuite,
    /// Long clean stream: batches, and batches with any finding.
    pub clean: (u64, u64),
    /// Campaign lead-in clean batches: batches, and batches with any finding.
    pub lead_in: (u64, u64),
    /// The checks that fired on clean batches, with counts.
    pub clean_checks: Vec<(String, u64)>,
    pub attacks: Vec<AttackRow>,
    /// Per budget: clean-stream batches with a finding, and per-batch recall of 5% flips.
    pub tradeoff: Vec<Tradeoff>,
    /// The same data read as a fleet's input streams.
    pub fleet: fleet::FleetReport,
}

/// The stream evaluation failed to run.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Baseline(#[from] dqmon::baseline::BaselineError),
}

const BASELINE_START: u64 = 0;
const CLEAN_START: u64 = 1_000_000;
const CAMPAIGN_START: u64 = 2_000_000;
/// Batch indices reserved per attack.
const PER_ATTACK: u64 = 100_000;

struct Ctx<'a> {
    rules: &'a Rules,
    pii: PiiKey,
    suite: StreamSuite,
}

impl Ctx<'_> {
    fn profile(&self, index: u64, scenario: &Scenario) -> Result<BatchProfile, ProfileError> {
        let batch = generate(&BatchSpec {
            rows: self.suite.rows,
            seed: self.suite.seed,
            batch_index: index,
            scenario: scenario.clone(),
        });
        profile_batches(self.rules, &self.pii, [&batch])
    }
}

/// Compare a stream of profiles in order, carrying the evidence.
fn run_stream<'p>(
    profiles: impl IntoIterator<Item = &'p BatchProfile>,
    reference: &Reference,
    baseline: &Baseline,
    rules: &Rules,
    stream: &str,
) -> Vec<Vec<Finding>> {
    let mut evidence = EvidenceState::default();
    let mut out = Vec::new();
    for (i, p) in profiles.into_iter().enumerate() {
        let id = format!("{stream}-{i:03}");
        let at = Position {
            prior: &evidence,
            siblings: &[],
            batch_id: &id,
            baseline_id: "evaluation",
        };
        let (f, next) = compare::compare_sequential(p, reference, baseline, rules, at);
        evidence = next;
        out.push(f);
    }
    out
}

fn keys(f: &[Finding]) -> Vec<FindingKey> {
    f.iter().map(FindingKey::from).collect()
}

/// Run the stream evaluation.
pub fn evaluate_streams(rules: &Rules, suite: StreamSuite) -> Result<StreamReport, StreamError> {
    let ctx = Ctx {
        rules,
        pii: PiiKey::from_bytes(b"dqmon-evaluation-key-not-secret"),
        suite,
    };
    let mut profiles = Vec::new();
    for i in 0..suite.baseline_batches {
        profiles.push(ctx.profile(BASELINE_START + i, &Scenario::Clean)?);
    }
    let refs = profiles
        .iter()
        .enumerate()
        .map(|(i, p)| BatchRef {
            origin: format!("baseline-{i:03}"),
            input_sha256: None,
            rows: p.rows,
        })
        .collect();
    let baseline = Baseline::build(rules, &profiles, refs, "evaluation")?;
    let reference = Reference::new(&baseline.profile, rules);

    let clean: Vec<BatchProfile> = (0..suite.clean_batches)
        .map(|i| ctx.profile(CLEAN_START + i, &Scenario::Clean))
        .collect::<Result<_, _>>()?;
    let clean_findings = run_stream(&clean, &reference, &baseline, rules, "clean");
    let mut clean_checks = std::collections::BTreeMap::<String, u64>::new();
    let mut note = |fs: &[Finding]| {
        for f in fs {
            let key = format!(
                "{} {} {}",
                f.check,
                f.column.as_deref().unwrap_or("-"),
                f.trust_tag
            );
            *clean_checks.entry(key).or_default() += 1;
        }
    };
    clean_findings.iter().for_each(|f| note(f));
    let clean_hits = clean_findings.iter().filter(|f| !f.is_empty()).count() as u64;

    let mut attacks = Vec::new();
    let mut lead_in = (0u64, 0u64);
    let mut flips5: Vec<BatchProfile> = Vec::new();
    for (a, attack) in ladder().into_iter().enumerate() {
        let exp = expected(&attack.scenario, rules).expect("attacks expect a finding");
        let mut row = AttackRow {
            label: attack.label.clone(),
            per_batch: (0, 0),
            within: [0; 4],
            campaigns: suite.campaigns,
        };
        for c in 0..suite.campaigns {
            let start = CAMPAIGN_START + a as u64 * PER_ATTACK + c * (CLEAN_LEAD + ATTACKED) as u64;
            let mut stream = Vec::new();
            for j in 0..(CLEAN_LEAD + ATTACKED) as u64 {
                let scenario = if (j as usize) < CLEAN_LEAD {
                    Scenario::Clean
                } else {
                    attack.scenario.clone()
                };
                stream.push(ctx.profile(start + j, &scenario)?);
            }
            let found = run_stream(&stream, &reference, &baseline, rules, &format!("c{a}-{c}"));
            for f in &found[..CLEAN_LEAD] {
                lead_in.0 += 1;
                lead_in.1 += u64::from(!f.is_empty());
                note(f);
            }
            let first = found[CLEAN_LEAD..]
                .iter()
                .position(|f| detected(&exp, &attack.scenario, &keys(f)));
            for (k, w) in WITHIN.iter().enumerate() {
                if first.is_some_and(|i| i < *w) {
                    row.within[k] += 1;
                }
            }
            for p in &stream[CLEAN_LEAD..] {
                let alone = compare::compare(p, &baseline, rules);
                row.per_batch.0 += u64::from(detected(&exp, &attack.scenario, &keys(&alone)));
                row.per_batch.1 += 1;
            }
            if is_flips5(&attack.scenario) {
                flips5.extend(stream.drain(CLEAN_LEAD..));
            }
        }
        attacks.push(row);
    }

    let mut tradeoff = Vec::new();
    let flip_exp = ladder()
        .into_iter()
        .find(|a| is_flips5(&a.scenario))
        .expect("the ladder has 5% flips in `scraped`");
    let flip_expected = expected(&flip_exp.scenario, rules).expect("flips expect a finding");
    for budget in BUDGETS {
        let mut r = rules.clone();
        r.thresholds.false_alarms_per_1000_batches = budget;
        let fs = run_stream(&clean, &reference, &baseline, &r, "clean");
        let alarms = fs.iter().filter(|f| !f.is_empty()).count() as u64;
        let found = flips5
            .iter()
            .filter(|p| {
                let alone = compare::compare(p, &baseline, &r);
                detected(&flip_expected, &flip_exp.scenario, &keys(&alone))
            })
            .count() as u64;
        tradeoff.push(Tradeoff {
            budget,
            clean: (clean.len() as u64, alarms),
            found: (flips5.len() as u64, found),
        });
    }

    let fleet = fleet::evaluate_fleet(&ctx, &clean, &reference, &baseline)?;
    Ok(StreamReport {
        suite,
        clean: (clean.len() as u64, clean_hits),
        lead_in,
        clean_checks: clean_checks.into_iter().collect(),
        attacks,
        tradeoff,
        fleet,
    })
}

/// The attack of the budget trade-off: 5% label flips in `scraped`.
fn is_flips5(s: &Scenario) -> bool {
    matches!(s, Scenario::LabelFlip { tag, strength } if tag == "scraped" && *strength == 0.05)
}

fn pct(x: u64, n: u64) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * x as f64 / n as f64)
    }
}

impl StreamReport {
    /// The detection tables, in Markdown.
    pub fn table(&self, rules: &Rules) -> String {
        let s = &self.suite;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Batches of {} rows over four trust tags; baseline of {} clean batches; false-alarm budget {} per 1,000 batches; {} campaigns per attack ({} clean batches, then {} attacked), each its own stream.\n",
            s.rows,
            s.baseline_batches,
            rules.thresholds.false_alarms_per_1000_batches,
            s.campaigns,
            CLEAN_LEAD,
            ATTACKED
        );
        let _ = writeln!(
            out,
            "| attack | per-batch recall | noticed within 1 | within 3 | within 8 | within 16 |\n|---|---|---|---|---|---|"
        );
        for a in &self.attacks {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                a.label,
                pct(a.per_batch.0, a.per_batch.1),
                pct(a.within[0], a.campaigns),
                pct(a.within[1], a.campaigns),
                pct(a.within[2], a.campaigns),
                pct(a.within[3], a.campaigns),
            );
        }
        let _ = writeln!(
            out,
            "\nClean batches with any finding: {} of {} in one long stream, {} of {} campaign lead-in batches.",
            self.clean.1, self.clean.0, self.lead_in.1, self.lead_in.0
        );
        if !self.clean_checks.is_empty() {
            let list: Vec<String> = self
                .clean_checks
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            let _ = writeln!(out, "Findings on clean batches: {}.", list.join(", "));
        }
        let _ = writeln!(
            out,
            "\n| budget (false alarms per 1,000 batches) | clean batches with a finding | per-batch recall, 5% flips |\n|---|---|---|"
        );
        for t in &self.tradeoff {
            let _ = writeln!(
                out,
                "| {} | {} of {} | {} |",
                t.budget,
                t.clean.1,
                t.clean.0,
                pct(t.found.1, t.found.0)
            );
        }
        out.push('\n');
        out.push_str(&self.fleet.table());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dqmon::compare::{Check, Verdict};

    fn fixture_rules() -> Rules {
        dqmon::config::load(std::path::Path::new("../../rules/fixtures.yaml"))
            .unwrap()
            .datasets
            .remove(0)
    }

    fn test_ctx(rules: &Rules) -> Ctx<'_> {
        Ctx {
            rules,
            pii: PiiKey::from_bytes(b"x"),
            suite: StreamSuite::default(),
        }
    }

    /// A baseline of 20 clean 2,000-row batches.
    fn clean_baseline(ctx: &Ctx) -> Baseline {
        let profiles: Vec<_> = (0..20)
            .map(|i| ctx.profile(i, &Scenario::Clean).unwrap())
            .collect();
        Baseline::build(ctx.rules, &profiles, Vec::new(), "e").unwrap()
    }

    /// A value no baseline batch ever had, planted in 3% of one low-trust
    /// tag's rows of a 2,000-row batch, is named on that tag as possible
    /// poisoning (its leave-one-out null rate is tiny, unlike the merchant
    /// codes' Zipf tail, which brings codes new to one tag all the time).
    #[test]
    fn a_planted_never_seen_value_is_named_on_its_tag() {
        let rules = fixture_rules();
        let ctx = test_ctx(&rules);
        let b = clean_baseline(&ctx);
        assert!(
            b.bands
                .contains_key("unseen_values|merchant_category|scraped")
        );
        let planted = Scenario::PlantedCategory {
            column: "merchant_category".into(),
            value: "mcc_9999".into(),
            share: 0.03,
            tag: Some("scraped".into()),
        };
        let found = compare::compare(&ctx.profile(5000, &planted).unwrap(), &b, &rules);
        let f = found
            .iter()
            .find(|f| f.check == Check::UnseenValues)
            .unwrap_or_else(|| panic!("{found:#?}"));
        assert_eq!(f.trust_tag, "scraped");
        assert_eq!(f.value.as_deref(), Some("mcc_9999"));
        assert_eq!(f.verdict, Verdict::PossiblePoisoning);
        // its own numbers pass its own thresholds
        assert!(f.p_value.unwrap() <= f.p_threshold.unwrap());
        assert!(f.effect_size >= f.threshold);
        let clean = compare::compare(&ctx.profile(5001, &Scenario::Clean).unwrap(), &b, &rules);
        assert!(clean.is_empty(), "{clean:#?}");
    }

    /// Labels outside the baseline's classes (a `2` in a 0/1 label) in 2%
    /// of one tag's rows are a data-quality finding naming the class.
    #[test]
    fn labels_outside_the_baseline_classes_are_found() {
        use arrow::array::{Array, AsArray, Int8Array};
        let rules = fixture_rules();
        let ctx = test_ctx(&rules);
        let b = clean_baseline(&ctx);
        let batch = generate(&BatchSpec {
            rows: 2_000,
            seed: ctx.suite.seed,
            batch_index: 7_000,
            scenario: Scenario::Clean,
        });
        let tags = batch
            .column_by_name("trust_tag")
            .unwrap()
            .as_string::<i32>();
        let labels = batch
            .column_by_name("label")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int8Type>();
        let mut planted = 0;
        let relabelled: Int8Array = (0..batch.num_rows())
            .map(|i| {
                if tags.value(i) == "scraped" && labels.is_valid(i) && planted < 8 {
                    planted += 1;
                    Some(2)
                } else {
                    labels.is_valid(i).then(|| labels.value(i))
                }
            })
            .collect();
        let idx = batch.schema().index_of("label").unwrap();
        let mut cols = batch.columns().to_vec();
        cols[idx] = std::sync::Arc::new(relabelled);
        let batch = arrow::array::RecordBatch::try_new(batch.schema(), cols).unwrap();
        let p = profile_batches(&rules, &ctx.pii, [&batch]).unwrap();
        let found = compare::compare(&p, &b, &rules);
        let f = found
            .iter()
            .find(|f| f.check == Check::LabelOutOfDomain)
            .unwrap_or_else(|| panic!("{found:#?}"));
        assert_eq!(f.value.as_deref(), Some("2"));
        assert_eq!(f.verdict, Verdict::DataQuality);
        assert_eq!(f.trust_tag, "scraped");
    }
}
