//! A run of numeric values (as order keys, unsorted) into one compressed
//! t-digest, without sorting the run.
//!
//! One compression pass of the t-digest over `n` values that each weigh
//! one makes clusters whose sizes depend on `n` and `k` only, never on
//! the values: the pass merges the next value into the open cluster while
//! the cluster's rank interval stays under K_2's weight limit, and ranks
//! are counts. So the clusters of a run are known before its values are
//! looked at ([`ClusterSizes`]), and all a cluster needs is *which* values
//! have its ranks: a multi-way partition ([`partition_at`]) puts each
//! cluster's values in their own segment, in any order. It spreads the run
//! into 2,048 buckets by the keys' leading bits (a counting pass and a
//! scatter) and goes on only in the buckets a cluster boundary falls in,
//! so most values are moved twice instead of compared `log2(n)` times by a
//! sort. Each segment's mean is its centroid.
//!
//! ```text
//!   run of keys (unsorted) ─┬─ n, k ─► cluster sizes
//!                           └─ partition at the cumulative sizes ─► segments
//!                              (buckets by leading bits; selection inside)
//!   segments ─► (mean, size) per cluster ─► Quantiles::from_centroids
//! ```
//!
//! The result has the clusters (weights) of the one-pass compression of
//! the sorted run, exactly, so its error is that compression's; a mean is
//! summed in segment order, so its last bits may differ from the sum in
//! sorted order (`runs_tests` checks both). The same run in the same order
//! gives the same bytes: the partition is deterministic.

use super::Quantiles;
use super::bins::from_order_key;

/// The sizes of the clusters that one compression pass of the t-digest
/// (the `datasketches` crate's, K_2 scale function, forward scan) makes
/// of `n` values of weight one, and where they start; computed for each
/// run (runs end after the record batch that fills them, so their lengths
/// differ), into buffers reused from run to run.
#[derive(Debug, Default)]
struct ClusterSizes {
    sizes: Vec<u32>,
    /// Cumulative sizes: the ranks where a cluster starts, after the first.
    cuts: Vec<usize>,
}

impl ClusterSizes {
    /// The cluster sizes and cuts for `n` values at `k`.
    fn get(&mut self, n: usize, k: u16) -> (&[u32], &[usize]) {
        one_pass_sizes(n, k, &mut self.sizes);
        self.cuts.clear();
        let mut at = 0usize;
        for &s in &self.sizes[..self.sizes.len().saturating_sub(1)] {
            at += s as usize;
            self.cuts.push(at);
        }
        (&self.sizes, &self.cuts)
    }
}

/// The compression pass of `TDigestMut::compress_sorted_centroids` for
/// `n` unit weights, forward (a fresh digest's first compression): the
/// first and the last value stay alone; value `i` joins the open cluster
/// while the cluster's weight stays within `n × min(f(q_start), f(q_end))`,
/// `f(q) = q (1 − q) / normalizer`, `normalizer = 2k / (4 ln(n / 2k) + 24)`.
/// The same arithmetic in the same order, so the same decisions.
///
/// Within one cluster `q_start` is fixed and a larger cluster only moves
/// `q_end` further from the middle or past it, where `f` falls: once a
/// value cannot join, no later one can. So each cluster's size is found by
/// galloping and bisecting on that test (a few dozen evaluations per
/// cluster) rather than by testing every value in turn.
fn one_pass_sizes(n: usize, k: u16, out: &mut Vec<u32>) {
    out.clear();
    let k = k.max(10);
    if n == 0 {
        return;
    }
    if n as u64 <= u64::from(k) / 2 {
        out.resize(n, 1);
        return;
    }
    let total = n as f64;
    let compression = 2.0 * f64::from(k);
    let normalizer = compression / (4.0 * (total / compression).ln() + 24.0);
    let limit = |q: f64| q * (1. - q) / normalizer;
    // may the open cluster, `before` values after the first, grow to `weight`?
    let joins = |before: f64, weight: u64| {
        let proposed = weight as f64;
        let q_start = before / total;
        let q_end = (before + proposed) / total;
        proposed <= total * limit(q_start).min(limit(q_end))
    };
    let mut open = 1u64;
    let mut before = 0.0f64;
    // value 0 opened the first cluster; value `current` is the next to place
    let mut current = 1usize;
    while current < n {
        // value 1 and the last value never join (the pass keeps the
        // extremes alone)
        if current == 1 || current == n - 1 || !joins(before, open + 1) {
            before += open as f64;
            out.push(open as u32);
            open = 1;
            current += 1;
            continue;
        }
        // values current .. current + m join, for the largest such m
        // (values up to n - 2 may join; the test holds at m = 1)
        let most = (n - 1 - current) as u64;
        let (mut yes, mut no) = (1u64, most + 1);
        let mut step = 2u64;
        while step <= most {
            if joins(before, open + step) {
                yes = step;
                step *= 2;
            } else {
                no = step;
                break;
            }
        }
        while no - yes > 1 {
            let mid = yes + (no - yes) / 2;
            if joins(before, open + mid) {
                yes = mid;
            } else {
                no = mid;
            }
        }
        open += yes;
        current += yes as usize;
    }
    out.push(open as u32);
}

/// What building run digests reuses from run to run: the buffers of the
/// cluster sizes and of the partition's scatter.
#[derive(Debug, Default)]
pub(super) struct RunBuffers {
    sizes: ClusterSizes,
    scratch: Vec<u64>,
}

/// Segments up to this length are sorted rather than partitioned.
const SMALL: usize = 48;
/// Segments up to this length are partitioned by selection; longer ones
/// are first spread into buckets by their keys' leading bits.
const SELECT: usize = 1_024;
/// Bits of the key (above the segment's smallest) that pick a bucket.
const BUCKET_BITS: u32 = 11;

/// Rearrange `keys` so that, for every cut `c` (increasing, each in
/// `offset + 1 .. offset + keys.len()`), the keys before `c` are no greater
/// than those from `c` on. Within a segment between two cuts the order is
/// left as the partition leaves it (deterministically).
///
/// A long segment is spread into `2^11` buckets by the bits of `key −
/// smallest` below the highest set bit of the span (a counting pass and a
/// scatter through `scratch`), which orders the buckets; only a bucket
/// with a cut inside goes on (recursively: a bucket spans fewer bits). Its
/// other buckets are whole clusters' parts and are never touched again.
/// Order keys keep a float's order in their bits, so buckets follow the
/// values' exponent and leading mantissa bits: an outlier leaves the rest
/// in few buckets for one level, and the next level spans only them.
pub(super) fn partition_at(
    keys: &mut [u64],
    offset: usize,
    cuts: &[usize],
    scratch: &mut Vec<u64>,
) {
    if cuts.is_empty() {
        return;
    }
    if keys.len() <= SMALL {
        keys.sort_unstable();
        return;
    }
    if keys.len() <= SELECT {
        let mid = cuts.len() / 2;
        let at = cuts[mid] - offset;
        keys.select_nth_unstable(at);
        let (left, right) = keys.split_at_mut(at);
        partition_at(left, offset, &cuts[..mid], scratch);
        // right[0] holds its final rank: the rest of it is the next segment's
        partition_at(right, offset + at, &cuts[mid + 1..], scratch);
        return;
    }
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for &key in keys.iter() {
        lo = lo.min(key);
        hi = hi.max(key);
    }
    if lo == hi {
        return; // all equal: partitioned at every cut already
    }
    let span_bits = 64 - (hi - lo).leading_zeros();
    let shift = span_bits.saturating_sub(BUCKET_BITS);
    let mut starts = vec![0usize; (1 << BUCKET_BITS) + 1];
    for &key in keys.iter() {
        starts[((key - lo) >> shift) as usize + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    scratch.clear();
    scratch.resize(keys.len(), 0);
    let mut next = starts.clone();
    for &key in keys.iter() {
        let b = ((key - lo) >> shift) as usize;
        scratch[next[b]] = key;
        next[b] += 1;
    }
    keys.copy_from_slice(scratch);
    // the cuts inside each bucket, bucket by bucket
    let mut c = 0;
    for b in 0..(1 << BUCKET_BITS) {
        let (from, to) = (offset + starts[b], offset + starts[b + 1]);
        while c < cuts.len() && cuts[c] <= from {
            c += 1;
        }
        let first = c;
        while c < cuts.len() && cuts[c] < to {
            c += 1;
        }
        if c > first {
            partition_at(
                &mut keys[starts[b]..starts[b + 1]],
                from,
                &cuts[first..c],
                scratch,
            );
        }
    }
}

/// The digest of one run of order keys (finite values, any order): its
/// clusters partitioned, not sorted. `keys` is left partitioned.
pub(super) fn digest_of_keys(keys: &mut [u64], k: u16, buffers: &mut RunBuffers) -> Quantiles {
    let n = keys.len();
    let (sizes, cuts) = buffers.sizes.get(n, k);
    partition_at(keys, 0, cuts, &mut buffers.scratch);
    let (min, max) = match (keys.first(), keys.last()) {
        (Some(&lo), Some(&hi)) => (from_order_key(lo), from_order_key(hi)),
        _ => return Quantiles::new(k),
    };
    let mut centroids = Vec::with_capacity(sizes.len());
    let mut start = 0usize;
    let mut floor = min;
    for &size in sizes {
        let segment = &keys[start..start + size as usize];
        start += size as usize;
        // never below the mean before, nor above the largest value: the
        // exact means never decrease, rounded ones must not either
        let mean = segment_mean(segment).clamp(floor, max);
        centroids.push((mean, u64::from(size)));
        floor = mean;
    }
    Quantiles::from_centroids(k, min, max, &centroids)
}

/// The mean of a segment's values: its first value plus the mean distance
/// from it, so that the sum rounds relative to the segment's spread, not
/// to the values' size (timestamps in nanoseconds).
fn segment_mean(segment: &[u64]) -> f64 {
    let base = from_order_key(segment[0]);
    if segment.len() == 1 {
        return base;
    }
    let mut sum = 0.0f64;
    for &key in &segment[1..] {
        sum += from_order_key(key) - base;
    }
    base + sum / segment.len() as f64
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
