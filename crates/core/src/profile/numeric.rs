//! The numeric path of the [`Profiler`]: a column's values scattered to
//! their trust-tag slices, the moments and declared-range violations of
//! each slice ([`numeric_part`]), and the values' order keys held per
//! slice and column until a run of [`QUANTILE_RUN`] becomes one bulk
//! digest (see [`super::runs`]) of the column's quantile sketch.
//!
//! ```text
//!   record batch ──► per-slice values ──► moments, range (merged per batch)
//!                                  └────► order keys ──► pending run
//!          run full / 2^18 pending / end of part ──► digest_of_keys ──► merge
//! ```

use arrow::array::{Array, ArrayRef, Float64Array};

use super::arrays::to_f64;
use super::bins::{from_order_key, order_key};
use super::runs::{RunBuffers, digest_of_keys};
use super::{ColumnProfile, NumScratch, NumericProfile, ProfileError, Profiler, Quantiles};
use crate::rules::ColumnRule;

impl<'r> Profiler<'r> {
    /// The column's values as floats, as read, for a caller that bins them.
    pub(super) fn update_numeric(
        &mut self,
        rule: &ColumnRule,
        array: &ArrayRef,
    ) -> Result<Float64Array, ProfileError> {
        let floats = to_f64(array).map_err(|reason| ProfileError::Column {
            column: rule.name.clone(),
            kind: rule.kind,
            reason,
        })?;
        let nslices = self.slices.len();
        if self.num_scratch.len() < nslices {
            self.num_scratch.resize_with(nslices, NumScratch::default);
        }
        for s in &mut self.num_scratch {
            s.values.clear();
            s.nulls = 0;
        }
        let values = floats.values();
        match floats.nulls() {
            // gathered slice by slice in row order: the same values in the
            // same order as a scatter row by row, with no per-row push
            None => {
                for (s, scratch) in self.num_scratch.iter_mut().enumerate().take(nslices) {
                    let rows = &self.slice_order[self.slice_starts[s]..self.slice_starts[s + 1]];
                    scratch
                        .values
                        .extend(rows.iter().map(|&i| values[i as usize]));
                }
            }
            Some(nulls) => {
                for (i, &v) in values.iter().enumerate() {
                    let s = &mut self.num_scratch[self.slice_of_row[i] as usize];
                    if nulls.is_valid(i) {
                        s.values.push(v);
                    } else {
                        s.nulls += 1;
                    }
                }
            }
        }
        let column = self
            .rules
            .columns
            .iter()
            .position(|c| std::ptr::eq(c, rule))
            .expect("a rule of this profiler's rules");
        if self.pending_keys.len() < nslices {
            self.pending_keys.resize_with(nslices, Vec::new);
        }
        for (s, scratch) in self.num_scratch.iter().enumerate().take(nslices) {
            let col = self.slices[s].columns.entry(rule.name.clone()).or_default();
            col.nulls += scratch.nulls;
            if scratch.values.is_empty() {
                continue;
            }
            col.count += scratch.values.len() as u64;
            let pending = &mut self.pending_keys[s];
            if pending.len() <= column {
                pending.resize_with(column + 1, Vec::new);
            }
            let keys = &mut pending[column];
            let before = keys.len();
            let part = numeric_part(
                &scratch.values,
                rule.range,
                self.rules.sketch.tdigest_k,
                keys,
            );
            self.pending_total += keys.len() - before;
            match &mut col.numeric {
                Some(existing) => existing.merge(&part)?,
                None => col.numeric = Some(part),
            }
            if keys.len() >= QUANTILE_RUN {
                let run = std::mem::take(keys);
                self.pending_total -= run.len();
                add_run(col, run, self.rules.sketch.tdigest_k, &mut self.run_buffers)?;
            }
        }
        if self.pending_total > PENDING_LIMIT {
            self.flush_quantiles()?;
        }
        Ok(floats)
    }

    /// Every pending run into its quantile sketch, in slice and column
    /// order.
    pub(super) fn flush_quantiles(&mut self) -> Result<(), ProfileError> {
        let k = self.rules.sketch.tdigest_k;
        for (s, pending) in self.pending_keys.iter_mut().enumerate() {
            for (c, keys) in pending.iter_mut().enumerate() {
                if keys.is_empty() {
                    continue;
                }
                let col = self.slices[s]
                    .columns
                    .get_mut(&self.rules.columns[c].name)
                    .expect("a column with pending values was profiled");
                add_run(col, std::mem::take(keys), k, &mut self.run_buffers)?;
            }
        }
        self.pending_total = 0;
        Ok(())
    }
}

/// Values of one slice and column that enter its quantile sketch as one
/// bulk digest ([`digest_of_keys`]): about eight record batches of
/// one tag. One compression per run instead of one per 840 values plus a
/// merge per record batch; and a run's digest, merged into the sketch,
/// is at least as accurate as a record batch's (see the sketch tests).
pub(super) const QUANTILE_RUN: usize = 16_384;

/// Pending values of all slices and columns (8 bytes each) past which
/// every run is flushed after a column, so that memory stays bounded with
/// many tags and columns: 2 MiB.
pub(super) const PENDING_LIMIT: usize = 1 << 18;

/// A run of order keys into the column's quantile sketch, as one digest
/// whose clusters are partitioned, not sorted ([`digest_of_keys`]).
fn add_run(
    col: &mut ColumnProfile,
    mut run: Vec<u64>,
    k: u16,
    buffers: &mut RunBuffers,
) -> Result<(), ProfileError> {
    let digest = digest_of_keys(&mut run, k, buffers);
    col.numeric
        .as_mut()
        .expect("values with order keys were profiled")
        .quantiles
        .merge(&digest)?;
    Ok(())
}

/// Numeric statistics of a slice's non-null values (non-finite ones only
/// counted); the finite values' order keys are appended to `keys`, for the
/// quantile sketch, which is left empty.
///
/// The extremes are read from the order keys (integer minimum and maximum,
/// which vectorize; a float's `min` must mind NaN and does not). The sums
/// of the moments are taken in [`LANES`] interleaved partial sums
/// ([`lane_sum`], [`lane_m2`]): a single running sum waits for each
/// addition to finish before the next (about four cycles a value), and
/// the bound on its rounding error grows with the count, where lanes take
/// eight values at a time and their bound grows an eighth as fast (each
/// lane adds an eighth of the values). A slice whose values
/// are all finite, the usual case, is summed in place; otherwise its
/// finite values are copied first, so both paths give the same bits.
fn numeric_part(
    values: &[f64],
    range: Option<(f64, f64)>,
    k: u16,
    keys: &mut Vec<u64>,
) -> NumericProfile {
    let first = keys.len();
    let copied: Vec<f64>;
    let finite: &[f64] = if values.iter().all(|v| v.is_finite()) {
        values
    } else {
        copied = values.iter().copied().filter(|v| v.is_finite()).collect();
        &copied
    };
    // as order-preserving integer keys, which partition fast (see `runs`)
    keys.extend(finite.iter().map(|&v| order_key(v)));
    let added = &keys[first..];
    let n = added.len() as u64;
    let non_finite = values.len() as u64 - n;
    let (min, max) = match (added.iter().min(), added.iter().max()) {
        (Some(&lo), Some(&hi)) => (from_order_key(lo), from_order_key(hi)),
        _ => (0.0, 0.0),
    };
    let mean = if n == 0 {
        0.0
    } else {
        lane_sum(finite) / n as f64
    };
    let (lo, hi) = range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let (m2, below, above) = lane_m2(finite, mean, lo, hi);
    let quantiles = Quantiles::new(k);
    NumericProfile {
        n,
        min,
        max,
        mean,
        m2,
        below_range: below,
        above_range: above,
        non_finite,
        quantiles,
    }
}

/// Partial sums per moment: value `i` goes to lane `i % LANES`, and the
/// lanes are added pairwise at the end, so the result is a fixed function
/// of the values in row order.
const LANES: usize = 8;

/// The lanes added pairwise: ((0+1)+(2+3))+((4+5)+(6+7)).
#[inline]
fn fold_lanes(acc: [f64; LANES]) -> f64 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// The sum of `xs` in [`LANES`] lanes.
fn lane_sum(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        acc[l] += x;
    }
    fold_lanes(acc)
}

/// The sum of squared deviations from `mean` in [`LANES`] lanes, and the
/// counts below `lo` and above `hi`.
fn lane_m2(xs: &[f64], mean: f64, lo: f64, hi: f64) -> (f64, u64, u64) {
    let mut acc = [0.0f64; LANES];
    let (mut below, mut above) = (0u64, 0u64);
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] += d * d;
            below += (c[l] < lo) as u64;
            above += (c[l] > hi) as u64;
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        let d = x - mean;
        acc[l] += d * d;
        below += (x < lo) as u64;
        above += (x > hi) as u64;
    }
    (fold_lanes(acc), below, above)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths of `numeric_part` (all finite; some not) give the
    /// moments of the finite values summed in lanes in row order, bit for
    /// bit, the extremes and range counts, and one key per finite value.
    #[test]
    fn moments_are_the_finite_values_in_row_order() {
        let clean: Vec<f64> = (0..5_003)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 90.0)
            .collect();
        let mut dirty = clean.clone();
        for i in (0..dirty.len()).step_by(97) {
            dirty[i] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][i % 3];
        }
        for values in [clean, dirty] {
            let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            // the reference: value i of the finite ones in lane i % 8
            let mut lanes = [0.0f64; 8];
            for (i, &v) in finite.iter().enumerate() {
                lanes[i % 8] += v;
            }
            let pairwise =
                |l: [f64; 8]| ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
            let mean = pairwise(lanes) / finite.len() as f64;
            let mut lanes = [0.0f64; 8];
            for (i, &v) in finite.iter().enumerate() {
                lanes[i % 8] += (v - mean) * (v - mean);
            }
            let m2 = pairwise(lanes);
            let mut keys = vec![7];
            let p = numeric_part(&values, Some((-50.0, 200.0)), 100, &mut keys);
            assert_eq!(p.n, finite.len() as u64);
            assert_eq!(p.non_finite, (values.len() - finite.len()) as u64);
            assert_eq!(p.mean.to_bits(), mean.to_bits());
            assert_eq!(p.m2.to_bits(), m2.to_bits());
            assert_eq!(p.min, finite.iter().copied().fold(f64::INFINITY, f64::min));
            assert_eq!(
                p.max,
                finite.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            );
            assert_eq!(
                p.below_range,
                finite.iter().filter(|&&v| v < -50.0).count() as u64
            );
            assert_eq!(
                p.above_range,
                finite.iter().filter(|&&v| v > 200.0).count() as u64
            );
            assert_eq!(keys.len(), 1 + finite.len());
            assert_eq!(keys[0], 7, "keys are appended");
        }
        let none = numeric_part(&[f64::NAN], None, 100, &mut Vec::new());
        assert_eq!(
            (none.n, none.min, none.max, none.non_finite),
            (0, 0.0, 0.0, 1)
        );
    }
}
