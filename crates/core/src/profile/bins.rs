//! The bin of a number among sorted cut points, in constant time.
//!
//! A numeric slice column or label feature puts every row in a bin:
//! `edges.partition_point(|e| *e <= v)`, the number of cut points at or
//! below the value. With the 241 default cut points
//! ([`crate::rules::default_feature_bins`]) a binary search takes eight
//! unpredictable branches per row; [`Binner`] first looks the value's
//! order key up in a table of 2¹⁴ buckets (sign, exponent and the top two
//! mantissa bits: each bucket spans a factor of at most 2^¼ ≈ 1.19), which
//! says how many cut points lie below the bucket and how many inside it,
//! then compares with those inside (none or one for the default cuts,
//! whose neighbours differ by a factor of 1.25 or more). Same answer as the
//! binary search for every finite value (a property test checks it).
//!
//! None and one cut inside take the same branch-free step: `lo + (cut ≤
//! v)` with `cut` the first cut point from the bucket on (an infinite
//! sentinel past the last). With no cut inside, that point lies in a
//! later bucket, above `v`, so the comparison adds nothing. Values of one
//! column fall into buckets with and without a cut at random, and a
//! branch on it was mispredicted about as often as not.

/// Bits of the order key that index the table.
const TABLE_BITS: u32 = 14;

/// Bins of one column's cut points.
#[derive(Debug, Clone)]
pub(super) struct Binner {
    /// The cut points, then `+∞` (so `edges[below[t]]` always exists).
    edges: Vec<f64>,
    /// `below[t]`: cut points whose order key is below bucket `t`'s first
    /// key (`1 + 2^TABLE_BITS` entries: the last one counts them all).
    below: Vec<u32>,
}

/// An f64 as a u64 whose integer order is the float's total order.
#[inline]
pub(super) fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// The float of an order key ([`order_key`]'s inverse).
#[inline]
pub(super) fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

impl Binner {
    /// `edges` sorted ascending, finite (the config checks both).
    pub(super) fn new(edges: &[f64]) -> Binner {
        let keys: Vec<u64> = edges.iter().map(|e| order_key(*e)).collect();
        let buckets = 1usize << TABLE_BITS;
        let mut below = Vec::with_capacity(buckets + 1);
        let mut at = 0usize;
        for t in 0..buckets {
            let first = (t as u64) << (64 - TABLE_BITS);
            while at < keys.len() && keys[at] < first {
                at += 1;
            }
            below.push(at as u32);
        }
        below.push(keys.len() as u32);
        let mut edges = edges.to_vec();
        edges.push(f64::INFINITY);
        Binner { edges, below }
    }

    /// The number of cut points at or below `v` (finite).
    #[inline]
    pub(super) fn bin(&self, v: f64) -> u32 {
        // -0.0 + 0.0 is +0.0: the float order treats the zeros as equal,
        // the key order does not
        let v = v + 0.0;
        let t = (order_key(v) >> (64 - TABLE_BITS)) as usize;
        let (lo, hi) = (self.below[t] as usize, self.below[t + 1] as usize);
        if hi - lo >= 2 {
            return (lo + self.edges[lo..hi].partition_point(|e| *e <= v)) as u32;
        }
        // none or one cut inside (the default cuts): the first cut from
        // the bucket on decides, a later bucket's never counts
        lo as u32 + (self.edges[lo] <= v) as u32
    }
}

/// Names of the bins that cut points make: `< a`, `[a, b)`, …, `>= z`.
pub fn bin_names(edges: &[f64]) -> Vec<String> {
    let mut out = Vec::with_capacity(edges.len() + 1);
    if let Some(first) = edges.first() {
        out.push(format!("< {first}"));
    }
    for w in edges.windows(2) {
        out.push(format!("[{}, {})", w[0], w[1]));
    }
    if let Some(last) = edges.last() {
        out.push(format!(">= {last}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(edges: &[f64], v: f64) -> u32 {
        edges.partition_point(|e| *e <= v) as u32
    }

    #[test]
    fn the_default_cuts_bin_like_a_binary_search() {
        let edges = crate::rules::default_feature_bins();
        let b = Binner::new(&edges);
        let mut probes = vec![0.0, -0.0, f64::MIN_POSITIVE, -f64::MIN_POSITIVE, 1e-320];
        probes.extend([f64::MAX, f64::MIN, 1e300, -1e300]);
        for e in &edges {
            for d in [-1e-9, 0.0, 1e-9] {
                probes.push(e * (1.0 + d));
                probes.push(e + d);
            }
            probes.push(f64::from_bits(e.to_bits() + 1));
            probes.push(f64::from_bits(e.to_bits().saturating_sub(1)));
        }
        for v in probes.into_iter().filter(|v| v.is_finite()) {
            assert_eq!(b.bin(v), reference(&edges, v), "value {v:e}");
        }
    }

    proptest! {
        #[test]
        fn any_cuts_bin_like_a_binary_search(
            mut edges in proptest::collection::vec(
                prop_oneof![-1e6f64..1e6, Just(0.0), Just(-0.0), -1.0f64..1.0],
                0..40,
            ),
            values in proptest::collection::vec(
                prop_oneof![-2e6f64..2e6, Just(0.0), Just(-0.0), -1.0f64..1.0,
                    proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL],
                1..200,
            ),
        ) {
            edges.sort_by(f64::total_cmp);
            let b = Binner::new(&edges);
            for v in values {
                prop_assert_eq!(b.bin(v), reference(&edges, v), "value {:e}", v);
            }
        }
    }
}
