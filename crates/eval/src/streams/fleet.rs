//! Detection in a fleet: the same data read as [`FLEET_STREAMS`] input
//! streams (a Kafka topic's partitions, each read in order by whichever
//! replica owns it), one batch of each per round. Each stream keeps its
//! own evidence; with pooling, each batch also tests its windows pooled
//! with the other streams' (`compare::evidence`), as the daemon does on a
//! shared history. Measured both ways on the same profiles:
//!
//! - **Clean**: the long clean stream's batches dealt round robin over the
//!   streams: how many raise any finding.
//! - **Campaigns**: the slowest attacks of the ladder on every stream at
//!   once, after [`FLEET_LEAD`] clean rounds: the share of campaigns some
//!   stream notices (the expected finding) within 1, 2, 4 and 8 rounds.

use std::fmt::Write as _;

use dqmon::baseline::Baseline;
use dqmon::compare::{self, EvidenceState, Finding, Position, Reference};
use dqmon::config::model::Rules;
use dqmon::profile::BatchProfile;
use dqmon_fixtures::Scenario;

use super::{Attack, Ctx, StreamError, keys, ladder, pct};
use crate::{detected, expected};

/// Input streams of the fleet.
pub const FLEET_STREAMS: usize = 6;
/// Clean rounds before a campaign's attack starts.
pub const FLEET_LEAD: usize = 4;
/// Attacked rounds per campaign.
pub const FLEET_ATTACKED: usize = 8;
/// Delays reported: noticed within this many attacked rounds.
pub const ROUNDS_WITHIN: [usize; 4] = [1, 2, 4, 8];
/// The attacks measured (the ladder's slowest on one stream).
const ATTACKS: [&str; 2] = [
    "label flips 2% of `scraped` (400 rows)",
    "missing +1 point on `amount` (2% null)",
];
const FLEET_START: u64 = 5_000_000;
const PER_ATTACK: u64 = 100_000;

/// One attack, without and with pooling.
#[derive(Debug, Clone)]
pub struct FleetRow {
    pub label: String,
    pub campaigns: u64,
    /// Campaigns noticed within each of [`ROUNDS_WITHIN`] rounds: each
    /// stream's own windows only.
    pub own: [u64; 4],
    /// The same, with the windows pooled over the fleet.
    pub pooled: [u64; 4],
}

/// The fleet evaluation.
#[derive(Debug, Clone)]
pub struct FleetReport {
    /// Clean batches, and those with any finding: own windows only.
    pub clean_own: (u64, u64),
    /// The same, pooled.
    pub clean_pooled: (u64, u64),
    pub rows: Vec<FleetRow>,
}

/// Deal `profiles` round robin over the fleet's streams.
fn deal(profiles: &[BatchProfile]) -> Vec<Vec<&BatchProfile>> {
    (0..FLEET_STREAMS)
        .map(|i| profiles.iter().skip(i).step_by(FLEET_STREAMS).collect())
        .collect()
}

/// Compare `streams` round by round (stream 0 first in each round), each
/// with its own evidence and, when `pooled`, the other streams' evidence
/// as it stands. Findings per round, per stream.
fn run_fleet(
    streams: &[Vec<&BatchProfile>],
    reference: &Reference,
    baseline: &Baseline,
    rules: &Rules,
    name: &str,
    pooled: bool,
) -> Vec<Vec<Vec<Finding>>> {
    let mut states = vec![EvidenceState::default(); streams.len()];
    let rounds = streams.iter().map(Vec::len).min().unwrap_or(0);
    let mut out = Vec::new();
    for r in 0..rounds {
        let mut round = Vec::new();
        for (i, stream) in streams.iter().enumerate() {
            let id = format!("{name}-{i}-{r:03}");
            let siblings: Vec<&EvidenceState> = if pooled {
                states
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, s)| s)
                    .collect()
            } else {
                Vec::new()
            };
            let at = Position {
                prior: &states[i],
                siblings: &siblings,
                batch_id: &id,
                baseline_id: "evaluation",
            };
            let (f, next) = compare::compare_sequential(stream[r], reference, baseline, rules, at);
            states[i] = next;
            round.push(f);
        }
        out.push(round);
    }
    out
}

pub(super) fn evaluate_fleet(
    ctx: &Ctx,
    clean: &[BatchProfile],
    reference: &Reference,
    baseline: &Baseline,
) -> Result<FleetReport, StreamError> {
    let rules = ctx.rules;
    let count = |found: &[Vec<Vec<Finding>>]| -> (u64, u64) {
        let all = found.iter().flatten();
        let n = all.clone().count() as u64;
        (n, all.filter(|f| !f.is_empty()).count() as u64)
    };
    let streams = deal(clean);
    let clean_own = count(&run_fleet(
        &streams, reference, baseline, rules, "fc", false,
    ));
    let clean_pooled = count(&run_fleet(&streams, reference, baseline, rules, "fc", true));

    let campaigns = (ctx.suite.campaigns / 2).max(1);
    let attacks: Vec<Attack> = ladder()
        .into_iter()
        .filter(|a| ATTACKS.contains(&a.label.as_str()))
        .collect();
    let mut rows = Vec::new();
    for (a, attack) in attacks.iter().enumerate() {
        let exp = expected(&attack.scenario, rules).expect("attacks expect a finding");
        let mut row = FleetRow {
            label: attack.label.clone(),
            campaigns,
            own: [0; 4],
            pooled: [0; 4],
        };
        let per_campaign = (FLEET_STREAMS * (FLEET_LEAD + FLEET_ATTACKED)) as u64;
        for c in 0..campaigns {
            let start = FLEET_START + a as u64 * PER_ATTACK + c * per_campaign;
            // round-major: round r's batches are r * FLEET_STREAMS + stream
            let mut profiles = Vec::new();
            for j in 0..per_campaign {
                let round = j as usize / FLEET_STREAMS;
                let scenario = if round < FLEET_LEAD {
                    Scenario::Clean
                } else {
                    attack.scenario.clone()
                };
                profiles.push(ctx.profile(start + j, &scenario)?);
            }
            let streams = deal(&profiles);
            for (pooled, within) in [(false, &mut row.own), (true, &mut row.pooled)] {
                let name = format!("f{a}-{c}");
                let found = run_fleet(&streams, reference, baseline, rules, &name, pooled);
                let first = found[FLEET_LEAD..].iter().position(|round| {
                    round
                        .iter()
                        .any(|f| detected(&exp, &attack.scenario, &keys(f)))
                });
                for (k, w) in ROUNDS_WITHIN.iter().enumerate() {
                    if first.is_some_and(|i| i < *w) {
                        within[k] += 1;
                    }
                }
            }
        }
        rows.push(row);
    }
    Ok(FleetReport {
        clean_own,
        clean_pooled,
        rows,
    })
}

impl FleetReport {
    /// The fleet table, in Markdown.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let campaigns = self.rows.first().map_or(0, |r| r.campaigns);
        let _ = writeln!(
            out,
            "A fleet: the same batches read as {FLEET_STREAMS} input streams (a batch of each per round), each stream's evidence its own (own) or also pooled over the fleet (pooled); {campaigns} campaigns per attack ({FLEET_LEAD} clean rounds, then {FLEET_ATTACKED} attacked, every stream attacked).\n"
        );
        let _ = writeln!(
            out,
            "| attack | noticed within 1 round, own / pooled | within 2 | within 4 | within 8 |\n|---|---|---|---|---|"
        );
        for r in &self.rows {
            let cell = |k: usize| {
                format!(
                    "{} / {}",
                    pct(r.own[k], r.campaigns),
                    pct(r.pooled[k], r.campaigns)
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.label,
                cell(0),
                cell(1),
                cell(2),
                cell(3)
            );
        }
        let _ = writeln!(
            out,
            "\nClean batches with any finding, the long clean stream dealt over the {FLEET_STREAMS} streams: {} of {} with own windows, {} of {} pooled.",
            self.clean_own.1, self.clean_own.0, self.clean_pooled.1, self.clean_pooled.0
        );
        out
    }
}
