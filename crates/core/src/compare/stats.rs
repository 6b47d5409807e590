//! Statistical tests used by the checks, each stating its assumptions.
//! Pure functions of numbers; statrs supplies the distributions.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};
use statrs::function::beta::beta_reg;

/// Two-sided p-value of a standard-normal z statistic.
pub fn p_two_sided(z: f64) -> f64 {
    if !z.is_finite() {
        return if z.is_nan() { 1.0 } else { 0.0 };
    }
    let n = Normal::new(0.0, 1.0).expect("standard normal");
    (2.0 * n.sf(z.abs())).clamp(0.0, 1.0)
}

/// Upper-tail p-value of a chi-square statistic with `df` degrees of freedom.
pub fn p_chi2(stat: f64, df: f64) -> f64 {
    if !stat.is_finite() || stat <= 0.0 || df <= 0.0 {
        return if stat.is_finite() && stat <= 0.0 {
            1.0
        } else {
            0.0
        };
    }
    ChiSquared::new(df).map(|c| c.sf(stat)).unwrap_or(1.0)
}

/// Two-proportion z-test (pooled variance).
///
/// Assumes independent Bernoulli trials in both samples and enough trials for
/// the normal approximation (n·p and n·(1-p) of a few at least); returns z.
/// The baseline is usually far larger than the batch, so this behaves like a
/// one-sample test against the baseline rate.
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 0.0;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let p = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return if p1 == p2 {
            0.0
        } else {
            f64::INFINITY.copysign(p1 - p2)
        };
    }
    (p1 - p2) / se
}

/// Upper-tail p-value of a standard-normal statistic.
pub fn p_upper(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    if z == f64::INFINITY {
        return 0.0;
    }
    Normal::new(0.0, 1.0).expect("standard normal").sf(z)
}

/// Upper-tail p-value of a Student-t statistic with `df` degrees of freedom
/// (the standard normal when `df` is infinite or very large).
pub fn p_upper_t(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return 1.0;
    }
    if !df.is_finite() || df > 1e6 || t.is_infinite() {
        return p_upper(t);
    }
    StudentsT::new(0.0, 1.0, df.max(1.0))
        .map(|d| d.sf(t))
        .unwrap_or_else(|_| p_upper(t))
}

/// Upper tail `P(X >= x)` of a negative binomial with shape `r` and mean
/// `mean`: the Poisson count whose rate is Gamma distributed (the rate's
/// uncertainty, and between-batch overdispersion, widen the tail).
///
/// Used for counts whose expectation is small (a few nulls in a column that
/// is almost never null, values never seen in the baseline), where the
/// normal approximation of the binomial is far too light in the tail.
pub fn nb_upper(x: f64, r: f64, mean: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if mean <= 0.0 || r <= 0.0 {
        return 0.0;
    }
    // NB(r, p) counts failures before r successes; mean = r (1 - p) / p
    let p = r / (r + mean);
    // P(X >= x) = P(X > x - 1) = I_{1-p}(x, r)
    beta_reg(x.ceil(), r, 1.0 - p).clamp(0.0, 1.0)
}

/// A p-value as a person reads it: `p < 1e-300` when it underflowed.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-300 {
        "p < 1e-300".to_string()
    } else {
        format!("p = {p:.2e}")
    }
}

/// Population Stability Index between expected shares `e` and observed
/// shares `o` of the same bins. Empty bins are smoothed with `eps` so the
/// index stays finite. Common reading: < 0.1 stable, 0.1–0.25 moderate,
/// > 0.25 large shift.
pub fn psi(e: &[f64], o: &[f64]) -> f64 {
    const EPS: f64 = 1e-4;
    e.iter()
        .zip(o)
        .map(|(&e, &o)| {
            let (e, o) = (e.max(EPS), o.max(EPS));
            (o - e) * (o / e).ln()
        })
        .sum()
}

/// Jensen-Shannon divergence (base 2, in [0, 1]) of two distributions over
/// the same categories (each summing to 1).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    fn kl(a: &[f64], m: &[f64]) -> f64 {
        a.iter()
            .zip(m)
            .filter(|(a, m)| **a > 0.0 && **m > 0.0)
            .map(|(a, m)| a * (a / m).log2())
            .sum()
    }
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| 0.5 * (a + b)).collect();
    (0.5 * kl(p, &m) + 0.5 * kl(q, &m)).clamp(0.0, 1.0)
}

/// Effective sample size of two samples for homogeneity tests.
pub fn n_eff(n1: f64, n2: f64) -> f64 {
    if n1 <= 0.0 || n2 <= 0.0 {
        0.0
    } else {
        n1 * n2 / (n1 + n2)
    }
}

/// Benjamini-Hochberg: which of the p-values are discoveries at false
/// discovery rate `q`. Valid under independence or positive dependence of
/// the tests, which holds well enough for the per-column, per-tag tests of a
/// batch (they share rows, and share them positively).
pub fn benjamini_hochberg(p: &[f64], q: f64) -> Vec<bool> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut cutoff = None;
    for (rank, &i) in order.iter().enumerate() {
        if p[i] <= q * (rank + 1) as f64 / m as f64 {
            cutoff = Some(rank);
        }
    }
    let mut out = vec![false; m];
    if let Some(c) = cutoff {
        for &i in &order[..=c] {
            out[i] = true;
        }
    }
    out
}

/// Running mean and variance of a metric across baseline batches (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Band {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Band {
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.n == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Sample standard deviation (0 with fewer than two batches).
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }

    /// Whether there are enough batches to learn a band from.
    pub fn usable(&self) -> bool {
        self.n >= 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_and_chi2_p_values() {
        assert!((p_two_sided(1.959964) - 0.05).abs() < 1e-4);
        assert!((p_chi2(3.841459, 1.0) - 0.05).abs() < 1e-4);
        assert_eq!(p_two_sided(f64::INFINITY), 0.0);
    }

    #[test]
    fn proportion_test_detects_a_real_difference_only() {
        assert!(two_proportion_z(300, 10_000, 3_000, 100_000).abs() < 1e-9);
        let z = two_proportion_z(500, 10_000, 3_000, 100_000);
        assert!(z > 10.0, "{z}");
    }

    #[test]
    fn psi_and_js_are_zero_on_identity_and_grow_with_shift() {
        let e = [0.25, 0.25, 0.25, 0.25];
        assert!(psi(&e, &e).abs() < 1e-12);
        assert!(psi(&e, &[0.4, 0.3, 0.2, 0.1]) > 0.1);
        assert!(jensen_shannon(&e, &e).abs() < 1e-12);
        assert!((jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bh_matches_hand_computation() {
        // sorted p: 0.001 0.008 0.039 0.041 0.2; q=0.05, m=5 → thresholds 0.01 0.02 0.03 0.04 0.05
        let p = [0.039, 0.001, 0.2, 0.008, 0.041];
        assert_eq!(
            benjamini_hochberg(&p, 0.05),
            vec![false, true, false, true, false]
        );
    }

    #[test]
    fn band_mean_and_std() {
        let mut b = Band::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            b.push(x);
        }
        assert_eq!(b.mean, 2.5);
        assert!((b.std() - 1.2909944).abs() < 1e-6);
        assert_eq!((b.min, b.max), (1.0, 4.0));
    }
}
