//! The null model of a count: `x` events (nulls, positive labels, rows out
//! of range, rows of a never-seen value, rows of one tag) in `n` trials of a
//! batch, or of a window of consecutive batches.
//!
//! Null distribution. Under the baseline, `x` is binomial with rate `p0`
//! around a rate that itself varies from batch to batch (overdispersion,
//! variance `τ²`), and `p0` is only known from `N` baseline trials. For a
//! window of batches with `n = Σ nᵢ` trials,
//!
//! ```text
//!   E[x]   = n·p0
//!   Var[x] = n·p0(1-p0)  +  Σ nᵢ²·τ²  +  n²·p0(1-p0)/N
//!            binomial       between      uncertainty of p0, shared by
//!            error          batches      every batch of the window
//! ```
//!
//! - `p0 = (x_base + ½) / (N + 1)` (Jeffreys): never exactly 0, so a column
//!   that was never null in the baseline still has a finite null.
//! - `τ²` is what the baseline's batch-to-batch variance of the rate shows
//!   beyond the binomial error (`s² − p̄(1−p̄)/n̄`, floored at 0), learned
//!   from `B` batches.
//! - Large expected counts: `z = (x − n·p0)/√Var`, Student-t with
//!   Satterthwaite's degrees of freedom when `τ²` (estimated from `B − 1`
//!   degrees of freedom) carries part of the variance, the normal otherwise.
//! - Small expected counts (`n·p0 < 30`, upper tail): a negative binomial
//!   with the same mean and variance (a Poisson count whose rate is Gamma
//!   distributed), whose tail is far heavier than the normal's: one null in
//!   a never-null column is no finding, twenty are.
//!
//! Assumptions: trials independent within a batch given the batch's rate;
//! batches exchangeable under the null (no trend, no seasonality the
//! baseline does not show). Pure.

use super::stats;

/// Which direction of change a test looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only a growing rate is suspicious (nulls, out-of-range, unseen values, a tag's share).
    Up,
    /// Either way (label rates: flips go both ways).
    Both,
}

impl Direction {
    pub fn sides(self) -> u64 {
        match self {
            Direction::Up => 1,
            Direction::Both => 2,
        }
    }
}

/// The null model of one rate, learned from the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateNull {
    /// Null rate (Jeffreys-smoothed pooled baseline rate).
    pub p0: f64,
    /// Baseline trials behind `p0`.
    pub n_base: f64,
    /// Between-batch variance of the rate beyond the binomial error.
    pub tau2: f64,
    /// Baseline batches `τ²` was learned from.
    pub batches: f64,
}

/// The outcome of one test of a count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateTest {
    /// Observed rate `x / n`.
    pub observed: f64,
    /// The rate the null expects (`p0`, or a prediction's expected count over `n`).
    pub baseline: f64,
    /// Signed standardized deviation `(x − n·p0) / √Var`.
    pub z: f64,
    /// p-value in the tested direction(s).
    pub p: f64,
    /// Observed minus null rate (its absolute value for two-sided tests).
    pub effect: f64,
}

/// Below this expected count the upper tail uses the negative binomial.
const SMALL_COUNT: f64 = 30.0;

impl RateNull {
    /// The null of a rate seen `x_base` times in `n_base` baseline trials,
    /// with per-batch rates of mean `band_mean` and sample variance
    /// `band_var` over `batches` baseline batches of `n_batch` trials each
    /// on average (no band: no overdispersion is assumed).
    pub fn new(x_base: f64, n_base: f64, band: Option<(f64, f64, f64)>, n_batch: f64) -> RateNull {
        let p0 = (x_base + 0.5) / (n_base + 1.0);
        let (tau2, batches) = match band {
            Some((mean, var, b)) if b >= 2.0 && n_batch > 0.0 => {
                let binomial = mean.clamp(0.0, 1.0) * (1.0 - mean.clamp(0.0, 1.0)) / n_batch;
                ((var - binomial).max(0.0), b)
            }
            _ => (0.0, 0.0),
        };
        RateNull {
            p0,
            n_base,
            tau2,
            batches,
        }
    }

    /// Test `x` events in `n` trials (`n2 = Σ nᵢ²` over the batches pooled).
    pub fn test(&self, x: f64, n: f64, n2: f64, dir: Direction) -> RateTest {
        let observed = if n > 0.0 { x / n } else { 0.0 };
        let mu = n * self.p0;
        let q = self.p0 * (1.0 - self.p0);
        let v_bin = n * q;
        let v_tau = n2 * self.tau2;
        let v_base = n * n * q / self.n_base.max(1.0);
        let var = v_bin + v_tau + v_base;
        let df = if v_tau > 0.0 && self.batches >= 2.0 {
            var * var / (v_tau * v_tau / (self.batches - 1.0))
        } else {
            f64::INFINITY
        };
        let (z, p) = count_tail(x, mu, var, df, dir);
        let effect = match dir {
            Direction::Up => observed - self.p0,
            Direction::Both => (observed - self.p0).abs(),
        };
        RateTest {
            observed,
            baseline: self.p0,
            z,
            p,
            effect,
        }
    }
}

/// The standardized deviation of a count `x` from its null mean `mu` with
/// variance `var`, and its p-value in the tested direction(s): Student-t
/// with `df` degrees of freedom (∞: the normal) when the expected count is
/// large, the negative binomial of the same mean and variance for the upper
/// tail of small expected counts.
pub(super) fn count_tail(x: f64, mu: f64, var: f64, df: f64, dir: Direction) -> (f64, f64) {
    let z = if var > 0.0 {
        (x - mu) / var.sqrt()
    } else {
        0.0
    };
    let upper = if mu < SMALL_COUNT {
        // negative binomial with mean mu and variance var
        let excess = (var - mu).max(mu * 1e-9);
        let r = mu * mu / excess;
        stats::nb_upper(x, r, mu)
    } else {
        stats::p_upper_t(z, df)
    };
    let p = match dir {
        Direction::Up => upper,
        Direction::Both => (2.0 * upper.min(stats::p_upper_t(-z, df))).min(1.0),
    };
    (z, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_never_null_column_tolerates_one_null_and_not_twenty() {
        // 0 nulls in 40,000 baseline rows, a 2,000-row batch
        let null = RateNull::new(0.0, 40_000.0, None, 2_000.0);
        let one = null.test(1.0, 2_000.0, 4e6, Direction::Up);
        let twenty = null.test(20.0, 2_000.0, 4e6, Direction::Up);
        assert!(one.p > 0.01, "{one:?}");
        assert!(twenty.p < 1e-20, "{twenty:?}");
    }

    #[test]
    fn overdispersion_widens_the_null() {
        let tight = RateNull::new(
            4_000.0,
            40_000.0,
            Some((0.1, 0.09 / 2_000.0, 20.0)),
            2_000.0,
        );
        let wide = RateNull::new(4_000.0, 40_000.0, Some((0.1, 4e-4, 20.0)), 2_000.0);
        assert_eq!(tight.tau2, 0.0);
        assert!(wide.tau2 > 0.0);
        let (t, w) = (
            tight.test(260.0, 2_000.0, 4e6, Direction::Both),
            wide.test(260.0, 2_000.0, 4e6, Direction::Both),
        );
        assert!(w.p > t.p * 100.0, "{t:?} {w:?}");
    }

    #[test]
    fn two_sided_tests_see_drops() {
        let null = RateNull::new(4_000.0, 40_000.0, None, 2_000.0);
        let drop = null.test(120.0, 2_000.0, 4e6, Direction::Both);
        assert!(drop.z < -5.0 && drop.p < 1e-6, "{drop:?}");
        let up_only = null.test(120.0, 2_000.0, 4e6, Direction::Up);
        assert!(up_only.p > 0.99, "{up_only:?}");
    }
}
