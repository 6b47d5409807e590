//! Evidence that accumulates across consecutive batches: a window-limited
//! generalized likelihood ratio (scan) test on counts.
//!
//! Poisoning is a campaign, not one batch: a 5% label flip in a 500-row tag
//! is about 2.5 standard errors in one batch and about 4 over three. For
//! every count-based test (label rate, missing rate, out-of-range share,
//! never-seen values, a tag's share) the state keeps this dataset's last
//! [`MAX_WINDOW`] batches' counts `(x, n)`, in commit order. Each batch then
//! tests every window that ends with it, `w ∈` [`WINDOWS`], pooling the
//! window's counts under the null model of [`super::rate`] (whose variance
//! counts the baseline's uncertainty once for the whole window, not once per
//! batch, so a slightly wrong baseline rate does not add up to a false
//! alarm). The smallest p-value over the windows is compared with the
//! test's share of the false-alarm budget divided by `|WINDOWS|`
//! (Bonferroni over the windows: the windows overlap, so the true rate is
//! lower; simulation puts the max over these six windows at about 4 to 5
//! times a single look's tail at the thresholds used).
//!
//! ```text
//!   batches:  … b₋₁₅ … b₋₇ … b₋₄ b₋₂ b₋₁ b₀ (this batch)
//!   windows:                          [b₀]          w = 1
//!                                 [b₋₁ b₀]          w = 2
//!                            [b₋₂ b₋₁ b₀]           w = 3
//!                   …   5, 8 and 16 batches ending at b₀
//! ```
//!
//! **A fleet.** When a dataset's batches come in over several input
//! streams (the partitions of a Kafka topic read by a fleet, each replica's
//! share of a drop location), each stream keeps its own state, and a
//! campaign spread over K streams shows in each of them K times slower.
//! So a batch also scans its windows pooled over the fleet
//! ([`EvidenceState::fleet_windows`]): each of its own windows plus, from
//! every other stream gathered against the same baseline, that stream's
//! last batches, as many, at the position the store had when the batch
//! was compared (the manifest records it, so a replay pools the same).
//! The pooled counts go through the same null model (the baseline's
//! uncertainty counted once for the pooled total, so a fleet of streams
//! does not multiply a slightly wrong baseline rate into an alarm), with
//! one change: the between-batch variance of the streams' parts adds as
//! standard deviations (Minkowski), not as variances, because the streams
//! may move together (a time-of-day swing every partition sees at once);
//! within a stream batches still vary independently, as in its own
//! windows. The Bonferroni split covers both scans (2 × `|WINDOWS|` looks
//! per test). Simulated in `crates/core/tests/fleet_evidence.rs`: clean
//! fleets of 6 streams keep the rate at most α, with independent streams
//! and with a deviation shared by all of them (adding variances instead
//! gave 3.3% against α = 1% there); a campaign on every stream is noticed
//! sooner (medians), and one on a single stream no later; on fixture
//! profiles, the fleet table of `dqmon-eval`'s streams. A stream
//! that raises a finding forgets its own counts only; the others' windows
//! still hold theirs, so one campaign can raise a finding in each stream
//! (the fleet's notifications page one fingerprint once per cooldown).
//!
//! The state is an input and an output of the pure compare stage: read from
//! the previous batch's manifest, written with this one by the store, so a
//! restart, a replay and a second replay see the same evidence. It is tied
//! to one approved baseline (a new baseline starts afresh), one dataset
//! (each dataset has its own history), and a test's counts are cleared
//! when it raises a finding, so one campaign pages once and then starts
//! gathering anew.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Windows (in batches) that every accumulating test scans.
pub const WINDOWS: [usize; 6] = [1, 2, 3, 5, 8, 16];
/// The longest window: how many batches the state remembers.
pub const MAX_WINDOW: usize = 16;
/// Version of the serialized evidence.
pub const EVIDENCE_FORMAT: u32 = 1;

/// Counts of the last batches, per accumulating test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvidenceState {
    pub format: u32,
    /// The baseline the evidence was gathered against.
    pub baseline_id: String,
    /// The last batch ids, oldest first (at most [`MAX_WINDOW`]).
    pub batches: Vec<String>,
    /// Per test key (`check|column|slice`): the [`Counts`] of every batch
    /// of `batches`, aligned with it; zero where the test did not run.
    /// Stored as one line per key, `"x/n x/n …"` (`x/n/e/v/s` for a
    /// predicted count), since every manifest carries it.
    #[serde(with = "compact_counts")]
    pub counts: BTreeMap<String, Vec<Counts>>,
}

/// One batch's count of one test: `x` events in `n` trials and, for a count
/// tested against a per-row prediction (the label given the features), the
/// prediction `[expected, binomial variance, sd of the baseline's error]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub x: u64,
    pub n: u64,
    pub predicted: Option<[f64; 3]>,
}

impl Counts {
    pub fn new(x: u64, n: u64) -> Counts {
        Counts {
            x,
            n,
            predicted: None,
        }
    }
}

/// [`Counts`] as `"x/n x/n …"` (or `x/n/e/v/s`): exact (integers, and
/// floats in their shortest round-trip form), and one line per test key in
/// a pretty-printed manifest instead of four per batch.
mod compact_counts {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Counts;

    pub fn serialize<S: Serializer>(
        counts: &BTreeMap<String, Vec<Counts>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&String, String> = counts
            .iter()
            .map(|(k, v)| {
                let line: Vec<String> = v
                    .iter()
                    .map(|c| match c.predicted {
                        None => format!("{}/{}", c.x, c.n),
                        Some([e, v, sd]) => format!("{}/{}/{e}/{v}/{sd}", c.x, c.n),
                    })
                    .collect();
                (k, line.join(" "))
            })
            .collect();
        text.serialize(s)
    }

    fn parse_one(p: &str) -> Result<Counts, String> {
        let bad = |why: String| format!("bad evidence count `{p}`: {why}");
        let parts: Vec<&str> = p.split('/').collect();
        let int = |v: &str| v.parse::<u64>().map_err(|e| bad(e.to_string()));
        let real = |v: &str| {
            v.parse::<f64>()
                .map_err(|e| bad(e.to_string()))
                .and_then(|f| {
                    if f.is_finite() {
                        Ok(f)
                    } else {
                        Err(bad("not finite".into()))
                    }
                })
        };
        match parts.as_slice() {
            [x, n] => Ok(Counts::new(int(x)?, int(n)?)),
            [x, n, e, v, sd] => Ok(Counts {
                x: int(x)?,
                n: int(n)?,
                predicted: Some([real(e)?, real(v)?, real(sd)?]),
            }),
            _ => Err(bad("expected x/n or x/n/e/v/s".into())),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<Counts>>, D::Error> {
        let text = BTreeMap::<String, String>::deserialize(d)?;
        text.into_iter()
            .map(|(k, line)| {
                let pairs = line
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(|p| parse_one(p).map_err(D::Error::custom))
                    .collect::<Result<Vec<_>, D::Error>>()?;
                Ok((k, pairs))
            })
            .collect()
    }
}

impl EvidenceState {
    /// The state to continue from for a batch compared with `baseline_id`:
    /// `self` when it was gathered against the same baseline, else empty.
    pub fn continue_for(&self, baseline_id: &str) -> EvidenceState {
        if self.format == EVIDENCE_FORMAT && self.baseline_id == baseline_id {
            self.clone()
        } else {
            EvidenceState {
                format: EVIDENCE_FORMAT,
                baseline_id: baseline_id.to_string(),
                ..EvidenceState::default()
            }
        }
    }

    /// Append a batch: every key gets this batch's counts (or `[0, 0]`),
    /// windows past [`MAX_WINDOW`] fall off, keys with no counts left go.
    pub fn push(&mut self, batch_id: &str, now: &BTreeMap<String, Counts>) {
        self.batches.push(batch_id.to_string());
        let overflow = self.batches.len().saturating_sub(MAX_WINDOW);
        self.batches.drain(..overflow);
        let len = self.batches.len();
        for key in now.keys() {
            self.counts.entry(key.clone()).or_default();
        }
        for (key, v) in self.counts.iter_mut() {
            // align a key first seen now (or after a reset) with the batches
            while v.len() + 1 < len {
                v.insert(0, Counts::default());
            }
            v.push(now.get(key).copied().unwrap_or_default());
            let extra = v.len().saturating_sub(len);
            v.drain(..extra);
        }
        self.counts.retain(|_, v| v.iter().any(|c| c.n > 0));
    }

    /// Forget a test's counts (after it raised a finding).
    pub fn reset(&mut self, key: &str) {
        self.counts.remove(key);
    }

    /// The pooled counts of the windows ending at the newest batch, for
    /// windows the state covers and whose newest batch ran the test.
    pub fn windows(&self, key: &str) -> Vec<Window> {
        let Some(v) = self.counts.get(key) else {
            return Vec::new();
        };
        if v.last().is_none_or(|c| c.n == 0) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for w in WINDOWS {
            if w > v.len() {
                break;
            }
            let part = &v[v.len() - w..];
            let x: u64 = part.iter().map(|c| c.x).sum();
            let n: u64 = part.iter().map(|c| c.n).sum();
            let n2: f64 = part.iter().map(|c| (c.n as f64).powi(2)).sum();
            let mut predicted = [0.0f64; 3];
            for c in part {
                for (sum, v) in predicted.iter_mut().zip(c.predicted.unwrap_or_default()) {
                    *sum += v;
                }
            }
            // the window starts at its oldest batch that ran the test
            let first = part.iter().position(|c| c.n > 0).unwrap_or(0);
            out.push(Window {
                batches: w - first,
                x: x as f64,
                n: n as f64,
                n2,
                predicted,
                first_batch: self.batches[self.batches.len() - w + first].clone(),
                streams: 1,
            });
        }
        // a window that adds only batches without the test repeats a shorter one
        out.dedup_by(|b, a| b.batches == a.batches);
        out
    }

    /// The windows of `key` pooled over the fleet (see the module docs):
    /// each of this stream's windows plus, for every sibling stream
    /// (gathered against the same baseline, see [`SiblingCounts`]) that ran
    /// the test in its last `w` batches, those batches' counts. Empty when
    /// no sibling adds counts (then the stream's own windows say it all).
    pub fn fleet_windows(&self, siblings: &SiblingCounts<'_>, key: &str) -> Vec<Window> {
        pool_windows(&self.windows(key), siblings, key)
    }

    /// Whether a sibling's counts pool with this stream's: gathered
    /// against the same approved baseline, in this format.
    pub fn pools_with(&self, sibling: &EvidenceState) -> bool {
        sibling.format == EVIDENCE_FORMAT
            && self.format == EVIDENCE_FORMAT
            && sibling.baseline_id == self.baseline_id
    }
}

/// [`EvidenceState::fleet_windows`] from the stream's own windows of `key`.
pub fn pool_windows(own: &[Window], siblings: &SiblingCounts<'_>, key: &str) -> Vec<Window> {
    let Some(theirs) = siblings.by_key.get(key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for own in own {
        // the sibling windows span as many batches as the stream's own
        // window does, counted back from its newest batch
        let span = WINDOWS
            .iter()
            .copied()
            .find(|&w| w >= own.batches)
            .unwrap_or(MAX_WINDOW);
        // the between-batch variance of the pooled count: within a stream
        // batches vary independently (as in its own windows), across the
        // streams they may move together (a swing that every partition
        // sees at once), so the streams' parts add as standard deviations
        // (Minkowski), not as variances: n2 = (Σ_s √(Σ_b n²))²
        let (mut x, mut n, mut n2_sd, mut predicted, mut streams) =
            (own.x, own.n, own.n2.sqrt(), own.predicted, own.streams);
        for v in theirs {
            let mut ran = false;
            let mut n2 = 0.0;
            for c in v[v.len().saturating_sub(span)..].iter().filter(|c| c.n > 0) {
                ran = true;
                x += c.x as f64;
                n += c.n as f64;
                n2 += (c.n as f64).powi(2);
                let p = c.predicted.unwrap_or_default();
                for (sum, a) in predicted.iter_mut().zip(p) {
                    *sum += a;
                }
            }
            n2_sd += n2.sqrt();
            streams += usize::from(ran);
        }
        if streams > 1 {
            out.push(Window {
                batches: own.batches,
                x,
                n,
                n2: n2_sd * n2_sd,
                predicted,
                first_batch: own.first_batch.clone(),
                streams,
            });
        }
    }
    out
}

/// The counts of a batch's sibling streams, by test key: gathered once
/// per batch from the siblings that pool with its stream
/// ([`EvidenceState::pools_with`]), in their order, so that each test
/// looks its key up once.
#[derive(Debug, Default)]
pub struct SiblingCounts<'a> {
    by_key: hashbrown::HashMap<&'a str, Vec<&'a [Counts]>>,
}

impl<'a> SiblingCounts<'a> {
    /// The counts of the `siblings` that pool with `own`.
    pub fn new(own: &EvidenceState, siblings: &[&'a EvidenceState]) -> SiblingCounts<'a> {
        let mut by_key: hashbrown::HashMap<&'a str, Vec<&'a [Counts]>> = hashbrown::HashMap::new();
        for s in siblings.iter().filter(|s| own.pools_with(s)) {
            for (k, v) in &s.counts {
                by_key.entry(k.as_str()).or_default().push(v.as_slice());
            }
        }
        SiblingCounts { by_key }
    }

    /// Whether no sibling pools with the stream.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Pooled counts of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Batches from the first that ran the test to the newest.
    pub batches: usize,
    pub x: f64,
    pub n: f64,
    pub n2: f64,
    /// Sums over the window of the batches' predictions (see [`Counts`]):
    /// expected count, binomial variance, and the baseline error's sd (a
    /// sum of sds: the batches share the baseline's error, so the window's
    /// is at most this, by Minkowski's inequality).
    pub predicted: [f64; 3],
    pub first_batch: String,
    /// How many input streams the counts come from: 1 for a stream's own
    /// windows, more for a window pooled over the fleet (the stream's own
    /// `batches` plus the siblings' last batches, as many).
    pub streams: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, x: u64, n: u64) -> BTreeMap<String, Counts> {
        BTreeMap::from([(key.to_string(), Counts::new(x, n))])
    }

    #[test]
    fn windows_pool_the_newest_batches_and_forget_the_oldest() {
        let mut s = EvidenceState::default().continue_for("b1");
        for i in 0..20u64 {
            s.push(&format!("batch{i}"), &one("k", i, 100));
        }
        assert_eq!(s.batches.len(), MAX_WINDOW);
        assert_eq!(s.batches[0], "batch4");
        let w = s.windows("k");
        assert_eq!(w.iter().map(|w| w.batches).collect::<Vec<_>>(), WINDOWS);
        assert_eq!((w[0].x, w[0].n), (19.0, 100.0));
        assert_eq!(
            (w[2].x, w[2].n, w[2].first_batch.as_str()),
            (54.0, 300.0, "batch17")
        );
        assert_eq!(w[5].x, (4..20).sum::<u64>() as f64);
    }

    #[test]
    fn a_key_seen_late_or_reset_starts_its_windows_there() {
        let mut s = EvidenceState::default().continue_for("b1");
        for i in 0..5 {
            s.push(&format!("batch{i}"), &BTreeMap::new());
        }
        s.push("batch5", &one("k", 3, 100));
        s.push("batch6", &one("k", 4, 100));
        let w = s.windows("k");
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            (w[1].batches, w[1].x, w[1].first_batch.as_str()),
            (2, 7.0, "batch5")
        );
        s.reset("k");
        assert!(s.windows("k").is_empty());
        s.push("batch7", &one("k", 1, 100));
        assert_eq!(s.windows("k").len(), 1);
        // a batch without the test ends no window
        s.push("batch8", &BTreeMap::new());
        assert!(s.windows("k").is_empty());
    }

    /// The false-alarm rate of the scan, by simulation on clean streams:
    /// per-batch rates that vary between batches (overdispersion), a
    /// baseline of 20 such batches from which the null (rate, τ²) is
    /// learned as the daemon learns it, then 400 clean batches scanned over
    /// every window, repeated over 150 baselines (60,000 decisions). With the
    /// budget split over the windows (Bonferroni), the rate of batches with
    /// any window below `α / |WINDOWS|` must stay at most `α`.
    #[test]
    fn the_window_scan_keeps_its_false_alarm_rate_on_clean_streams() {
        use crate::compare::rate::{Direction, RateNull};
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        use rand_distr::{Binomial, Distribution, Normal};

        let alpha = 0.01;
        let per_look = alpha / WINDOWS.len() as f64;
        let mut rng = SmallRng::seed_from_u64(7);
        for (p_true, tau) in [(0.03f64, 0.0f64), (0.03, 0.004), (0.3, 0.01)] {
            let (mut alarms, mut decisions) = (0u64, 0u64);
            for _ in 0..150 {
                let draw = |rng: &mut SmallRng, n: u64| -> u64 {
                    let p: f64 = (p_true + Normal::new(0.0, tau).unwrap().sample(rng))
                        .clamp(1e-6, 1.0 - 1e-6);
                    Binomial::new(n, p).unwrap().sample(rng)
                };
                let n_batch = 400u64;
                let base: Vec<u64> = (0..20).map(|_| draw(&mut rng, n_batch)).collect();
                let x_base: u64 = base.iter().sum();
                let rates: Vec<f64> = base.iter().map(|&x| x as f64 / n_batch as f64).collect();
                let mean = rates.iter().sum::<f64>() / 20.0;
                let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 19.0;
                let null = RateNull::new(
                    x_base as f64,
                    (20 * n_batch) as f64,
                    Some((mean, var, 20.0)),
                    n_batch as f64,
                );
                let mut s = EvidenceState::default().continue_for("b");
                for i in 0..400 {
                    let n = n_batch + rng.random_range(0..50);
                    let x = draw(&mut rng, n);
                    s.push(
                        &format!("b{i}"),
                        &BTreeMap::from([("k".to_string(), Counts::new(x, n))]),
                    );
                    let alarm = s
                        .windows("k")
                        .iter()
                        .any(|w| null.test(w.x, w.n, w.n2, Direction::Both).p <= per_look);
                    decisions += 1;
                    if alarm {
                        alarms += 1;
                        s.reset("k");
                    }
                }
            }
            let rate = alarms as f64 / decisions as f64;
            // 60,000 decisions: the binomial error of a rate of 0.01 is 0.0004
            assert!(
                rate <= alpha * 1.15,
                "p={p_true} tau={tau}: {alarms} alarms in {decisions} clean batches ({rate:.4} > {alpha})"
            );
        }
    }

    #[test]
    fn a_new_baseline_starts_afresh_and_the_state_round_trips() {
        let mut s = EvidenceState::default().continue_for("b1");
        s.push("batch0", &one("k", 3, 100));
        let bytes = serde_json::to_vec(&s).unwrap();
        assert!(
            String::from_utf8_lossy(&bytes).contains(r#""counts":{"k":"3/100"}"#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let back: EvidenceState = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, s);
        // predicted counts round-trip exactly, floats included
        let predicted = Counts {
            x: 7,
            n: 500,
            predicted: Some([1.0 / 3.0, 2.718281828459045e-7, 12.5]),
        };
        s.push("batch1", &BTreeMap::from([("p".to_string(), predicted)]));
        let bytes = serde_json::to_vec(&s).unwrap();
        let back: EvidenceState = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.counts["p"][1], predicted);
        for bad in [r#""1/2/3""#, r#""1/2/x/1/1""#, r#""1/2/NaN/1/1""#] {
            let text = format!(
                r#"{{"format":1,"baseline_id":"b","batches":["a"],"counts":{{"k":{bad}}}}}"#
            );
            assert!(
                serde_json::from_str::<EvidenceState>(&text).is_err(),
                "{bad}"
            );
        }
        assert_eq!(s.continue_for("b1"), s);
        assert!(s.continue_for("b2").counts.is_empty());
    }
}
