//! Evidence pooled over a fleet's input streams: what it pools, its
//! false-alarm rate on clean streams, and how much sooner it notices a
//! campaign spread over the streams (both by simulation).
//!
//! Null model of the simulations: every stream's batches are independent
//! binomial counts whose rate varies from batch to batch (overdispersion
//! τ, independent between batches and between streams; in one test shared
//! by every stream of a round instead), the null (rate, τ²) learned from
//! 20 baseline batches as the daemon learns it.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, rngs::SmallRng};
use rand_distr::{Binomial, Distribution, Normal};

use dqmon_core::compare::evidence::{Counts, EvidenceState, SiblingCounts, WINDOWS};
use dqmon_core::compare::rate::{Direction, RateNull};

fn one(key: &str, x: u64, n: u64) -> BTreeMap<String, Counts> {
    BTreeMap::from([(key.to_string(), Counts::new(x, n))])
}

#[test]
fn fleet_windows_add_the_siblings_last_batches_on_the_same_baseline() {
    let mut own = EvidenceState::default().continue_for("b1");
    let mut sib = EvidenceState::default().continue_for("b1");
    let other = {
        let mut o = EvidenceState::default().continue_for("b2");
        o.push("o0", &one("k", 50, 100));
        o
    };
    // no sibling counts yet: nothing pooled
    own.push("a0", &one("k", 3, 100));
    assert!(
        own.fleet_windows(&SiblingCounts::new(&own, &[&sib]), "k")
            .is_empty()
    );
    for i in 0..4u64 {
        sib.push(&format!("s{i}"), &one("k", i, 200));
    }
    sib.push("s4", &BTreeMap::new()); // a batch without the test
    own.push("a1", &one("k", 4, 100));
    let w = own.fleet_windows(&SiblingCounts::new(&own, &[&sib, &other]), "k");
    // own windows of 1 and 2 batches; the sibling's last batch ran no test,
    // so only the 2-batch window pools (with the sibling's 3/200); the
    // stream of another baseline pools with nothing
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].batches, w[0].streams), (2, 2));
    // the streams' between-batch parts add as standard deviations: the
    // own two 100-row batches, the sibling's one 200-row batch
    let n2 = (2e4f64.sqrt() + 4e4f64.sqrt()).powi(2);
    assert_eq!((w[0].x, w[0].n, w[0].n2), (7.0 + 3.0, 400.0, n2));
    assert_eq!(w[0].first_batch, "a0");
    assert!(
        own.fleet_windows(&SiblingCounts::new(&own, &[&other]), "k")
            .is_empty()
    );
    // a window of the stream's own batches only is not repeated
    let own_only = own.windows("k");
    assert!(own_only.iter().all(|w| w.streams == 1));
}

/// A clean fleet: `k` streams in round robin, each batch looking at its
/// own windows and at the windows pooled over the fleet.
struct Fleet {
    states: Vec<EvidenceState>,
    null: RateNull,
}

fn draw(rng: &mut SmallRng, p: f64, tau: f64, n: u64) -> u64 {
    let p = (p + Normal::new(0.0, tau).unwrap().sample(rng)).clamp(1e-6, 1.0 - 1e-6);
    Binomial::new(n, p).unwrap().sample(rng)
}

impl Fleet {
    /// `k` streams against a baseline of `b` batches of `n_batch` rows.
    fn new(rng: &mut SmallRng, k: usize, b: u64, p: f64, tau: f64, n_batch: u64) -> Fleet {
        let base: Vec<u64> = (0..b).map(|_| draw(rng, p, tau, n_batch)).collect();
        let rates: Vec<f64> = base.iter().map(|&x| x as f64 / n_batch as f64).collect();
        let mean = rates.iter().sum::<f64>() / b as f64;
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (b - 1) as f64;
        let null = RateNull::new(
            base.iter().sum::<u64>() as f64,
            (b * n_batch) as f64,
            Some((mean, var, b as f64)),
            n_batch as f64,
        );
        Fleet {
            states: vec![EvidenceState::default().continue_for("b"); k],
            null,
        }
    }

    /// Push stream `i`'s batch and decide it at level `alpha` per batch
    /// (Bonferroni over the looks: the own windows, and as many pooled
    /// ones when `pooled`); an alarm resets the stream's own counts.
    fn decide(&mut self, i: usize, id: &str, x: u64, n: u64, alpha: f64, pooled: bool) -> bool {
        self.states[i].push(id, &one("k", x, n));
        let looks = WINDOWS.len() * if pooled { 2 } else { 1 };
        let per_look = alpha / looks as f64;
        let mut windows = self.states[i].windows("k");
        if pooled {
            let siblings: Vec<&EvidenceState> = self
                .states
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| s)
                .collect();
            let siblings = SiblingCounts::new(&self.states[i], &siblings);
            windows.extend(self.states[i].fleet_windows(&siblings, "k"));
        }
        let alarm = windows
            .iter()
            .any(|w| self.null.test(w.x, w.n, w.n2, Direction::Both).p <= per_look);
        if alarm {
            self.states[i].reset("k");
        }
        alarm
    }
}

/// 6 streams × 100 rounds × 100 baselines = 60,000 clean decisions per
/// case, each looking at its 6 own and 6 pooled windows, at level α:
/// the share of batches with an alarm. The rate's batch-to-batch deviation
/// (sd `tau`) is drawn per batch, or, when `shared`, once per round for
/// every stream.
fn clean_alarm_rate(rng: &mut SmallRng, p: f64, tau: f64, shared: bool, alpha: f64) -> (u64, u64) {
    let (mut alarms, mut decisions) = (0u64, 0u64);
    for _ in 0..100 {
        let mut fleet = Fleet::new(rng, 6, 20, p, tau, 400);
        for round in 0..100 {
            let now = shared
                .then(|| (p + Normal::new(0.0, tau).unwrap().sample(rng)).clamp(1e-6, 1.0 - 1e-6));
            for i in 0..6 {
                let n = 400 + rng.random_range(0..50);
                let x = match now {
                    Some(rate) => Binomial::new(n, rate).unwrap().sample(rng),
                    None => draw(rng, p, tau, n),
                };
                decisions += 1;
                if fleet.decide(i, &format!("{i}.{round}"), x, n, alpha, true) {
                    alarms += 1;
                }
            }
        }
    }
    (alarms, decisions)
}

/// Independent streams: the share of clean batches with an alarm stays at
/// most α (the binomial error at 0.01 is 0.0004; the bound allows 15%).
#[test]
fn pooled_windows_keep_the_false_alarm_rate_on_clean_streams() {
    let alpha = 0.01;
    let mut rng = SmallRng::seed_from_u64(11);
    for (p, tau) in [(0.03f64, 0.0f64), (0.03, 0.004), (0.3, 0.01)] {
        let (alarms, decisions) = clean_alarm_rate(&mut rng, p, tau, false, alpha);
        let rate = alarms as f64 / decisions as f64;
        assert!(
            rate <= alpha * 1.15,
            "p={p} tau={tau}: {alarms} alarms in {decisions} clean batches ({rate:.4} > {alpha})"
        );
    }
}

/// A campaign in a 6-stream fleet (rate 3% → 3.6% or 4%, τ = 0.002, a
/// baseline of 100 batches of 400 rows): the rounds (one batch per stream
/// each) until some stream raises it, with and without the pooled
/// windows, over 300 campaigns. Spread over every stream, pooling notices
/// it sooner (median; 6 → 5 rounds at 400 rows per batch, where the
/// streams' between-batch variance, added as standard deviations, weighs
/// more, and 8 → 5 at 100 rows); on one stream only, where pooling
/// dilutes it and the doubled looks cost a little, at most 5/4 as late.
#[test]
fn pooling_notices_a_campaign_spread_over_the_streams_sooner() {
    let alpha = 0.01;
    // (rows per batch, streams poisoned, rate under attack)
    for (n, hit, p1) in [(400u64, 6usize, 0.036f64), (100, 6, 0.04), (400, 1, 0.04)] {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut rounds = [Vec::new(), Vec::new()];
        for _ in 0..300 {
            for (pooled, out) in [false, true].into_iter().zip(rounds.iter_mut()) {
                let mut fleet = Fleet::new(&mut rng, 6, 100, 0.03, 0.002, 400);
                let mut found = 64;
                'campaign: for round in 0..64 {
                    for i in 0..6 {
                        let x = draw(&mut rng, if i < hit { p1 } else { 0.03 }, 0.002, n);
                        if fleet.decide(i, &format!("{i}.{round}"), x, n, alpha, pooled) {
                            found = round + 1;
                            break 'campaign;
                        }
                    }
                }
                out.push(found);
            }
        }
        let median = |v: &mut Vec<usize>| {
            v.sort_unstable();
            v[v.len() / 2] as f64
        };
        let (own, pooled) = (median(&mut rounds[0]), median(&mut rounds[1]));
        eprintln!(
            "{hit} of 6 streams at {p1}, {n} rows per batch: median rounds to notice, own windows {own}, with pooled {pooled}"
        );
        let sooner = if hit == 6 {
            pooled < own
        } else {
            pooled <= own * 1.25
        };
        assert!(
            sooner,
            "{hit} of 6 streams at {p1}: pooled {pooled} rounds, own windows only {own}"
        );
    }
}

/// Streams that move together: every round shares one deviation of the
/// rate (a time-of-day swing in every partition), learned into the
/// baseline's band as batch-to-batch variance. The pooled windows must keep
/// the budget under it too.
#[test]
fn pooled_windows_keep_the_false_alarm_rate_when_the_streams_move_together() {
    let alpha = 0.01;
    let mut rng = SmallRng::seed_from_u64(13);
    for (p, shared) in [(0.03f64, 0.004f64), (0.03, 0.008), (0.3, 0.02)] {
        let (alarms, decisions) = clean_alarm_rate(&mut rng, p, shared, true, alpha);
        let rate = alarms as f64 / decisions as f64;
        assert!(
            rate <= alpha * 1.15,
            "p={p} shared={shared}: {alarms} alarms in {decisions} clean batches ({rate:.4} > {alpha})"
        );
    }
}
