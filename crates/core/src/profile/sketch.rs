//! Mergeable sketches used by profiles, wrapped so that they serialize as
//! versioned bytes (base64 in JSON) and refuse to merge with sketches built
//! with other parameters.
//!
//! The sketches are Apache DataSketches' (the `datasketches` crate): a
//! t-digest for quantiles, HyperLogLog for distinct counts (fed 64-bit
//! hashes: a string by the xxh3 hash profiling computes once per value, see
//! profile format 3) and the frequent-items (Misra-Gries) sketch for heavy
//! hitters. All three are
//! deterministic: the same updates in the same order give the same bytes.
//! (DataSketches' KLL is not used because it draws random bits.)
//!
//! This module owns sketch state only; it does no I/O and reads no clock.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};
use datasketches::tdigest::TDigestMut;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Sketches of different parameters cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SketchError {
    #[error(
        "cannot merge {kind} sketches built with different parameters ({left} vs {right}); rebuild the baseline with the current rules"
    )]
    Mismatch {
        kind: &'static str,
        left: String,
        right: String,
    },
    #[error("a stored {kind} sketch could not be decoded: {reason}")]
    Decode { kind: &'static str, reason: String },
}

fn b64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(bytes))
}

fn unb64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    B64.decode(text.as_bytes()).map_err(D::Error::custom)
}

/// HLL bytes with the coupons of list and set modes sorted: the sketch
/// writes them in hash-table order, which depends on insertion history, so
/// equal sketches could otherwise serialize differently. (Dense HLL images
/// are already canonical.) Readers rebuild the table from any order.
fn canonical_hll(mut bytes: Vec<u8>) -> Vec<u8> {
    let start = match bytes.get(7).map(|m| m & 0x3) {
        Some(0) => 8,
        Some(1) => 12,
        _ => return bytes,
    };
    if bytes.len() > start {
        let mut coupons: Vec<u32> = bytes[start..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        coupons.sort_unstable();
        for (i, c) in coupons.iter().enumerate() {
            bytes[start + 4 * i..start + 4 * i + 4].copy_from_slice(&c.to_le_bytes());
        }
    }
    bytes
}

/// Frequent-items bytes with the (count, item) pairs sorted by item, for
/// the same reason as [`canonical_hll`].
fn canonical_frequent_items(bytes: Vec<u8>) -> Vec<u8> {
    const HEADER: usize = 32;
    if bytes.first() != Some(&4) || bytes.len() < HEADER {
        return bytes;
    }
    let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let counts_end = HEADER + 8 * n;
    if bytes.len() < counts_end {
        return bytes;
    }
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(n);
    let mut at = counts_end;
    for i in 0..n {
        let Some(len) = bytes.get(at..at + 4) else {
            return bytes;
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(item) = bytes.get(at..at + 4 + len) else {
            return bytes;
        };
        pairs.push((item, &bytes[HEADER + 8 * i..HEADER + 8 * i + 8]));
        at += 4 + len;
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..HEADER]);
    for (_, count) in &pairs {
        out.extend_from_slice(count);
    }
    for (item, _) in &pairs {
        out.extend_from_slice(item);
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// Preamble longs of a t-digest image holding two or more values.
const PREAMBLE_LONGS_MULTIPLE: u8 = 2;
/// The flag of a t-digest image whose next compression scans in reverse.
const FLAGS_REVERSE_MERGE: u8 = 1 << 2;

/// The first bytes of the crate's own t-digest image (preamble longs,
/// serial version, family id, ...), so that `Quantiles::from_centroids`
/// writes the serial version and family the crate reads.
fn tdigest_header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    HEADER.get_or_init(|| TDigestMut::new(10).expect("k >= 10").serialize())
}

/// Quantile sketch (t-digest) over f64 values.
#[derive(Clone, Debug)]
pub struct Quantiles {
    digest: TDigestMut,
}

impl Quantiles {
    pub fn new(k: u16) -> Self {
        Quantiles {
            digest: TDigestMut::new(k.max(10)).expect("k >= 10"),
        }
    }

    #[inline]
    pub fn update(&mut self, value: f64) {
        self.digest.update(value);
    }

    /// A compressed digest from its centroids, `(mean, weight)` with
    /// means nondecreasing and within `[min, max]` (the extremes of the
    /// values they summarize), as one compression pass leaves them: see
    /// `profile::runs`, which computes the centroids of a run of values
    /// without sorting it.
    ///
    /// The image is the DataSketches serial format's "multiple values"
    /// layout: the 8-byte header (preamble longs, serial version, family,
    /// k, flags, two unused bytes), the counts of centroids and of buffered
    /// values (none), min, max, then each centroid's mean and weight,
    /// little-endian. The flags say the next compression scans in reverse,
    /// as the crate's own after a compression pass.
    pub(crate) fn from_centroids(k: u16, min: f64, max: f64, centroids: &[(f64, u64)]) -> Self {
        let k = k.max(10);
        let weight: u64 = centroids.iter().map(|c| c.1).sum();
        if weight < 2 {
            let mut q = Quantiles::new(k);
            if weight == 1 {
                q.update(centroids[0].0);
            }
            q.canonicalize();
            return q;
        }
        let header = tdigest_header();
        let mut bytes = Vec::with_capacity(32 + 16 * centroids.len());
        bytes.extend_from_slice(&[PREAMBLE_LONGS_MULTIPLE, header[1], header[2]]);
        bytes.extend_from_slice(&k.to_le_bytes());
        bytes.extend_from_slice(&[FLAGS_REVERSE_MERGE, 0, 0]); // flags, unused
        let count = u32::try_from(centroids.len()).expect("fewer than 2^32 centroids");
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&min.to_le_bytes());
        bytes.extend_from_slice(&max.to_le_bytes());
        for &(mean, weight) in centroids {
            bytes.extend_from_slice(&mean.to_le_bytes());
            bytes.extend_from_slice(&weight.to_le_bytes());
        }
        let digest = TDigestMut::deserialize(&bytes)
            .expect("nondecreasing finite means within the extremes make a valid t-digest image");
        Quantiles { digest }
    }

    pub fn k(&self) -> u16 {
        self.digest.k()
    }

    pub fn weight(&self) -> u64 {
        self.digest.total_weight()
    }

    pub fn merge(&mut self, other: &Quantiles) -> Result<(), SketchError> {
        if self.k() != other.k() {
            return Err(SketchError::Mismatch {
                kind: "t-digest",
                left: format!("k={}", self.k()),
                right: format!("k={}", other.k()),
            });
        }
        if other.weight() == 0 {
            // nothing to add: a numeric part's sketch before its run of
            // values arrives (the digest would not change either)
            return Ok(());
        }
        self.digest.merge(&other.digest);
        self.canonicalize();
        Ok(())
    }

    /// Bring the digest to its stored form (compressed, as a serialize and
    /// deserialize round trip leaves it), so that answers are the same
    /// whether a profile was just computed or read back from the history.
    pub fn canonicalize(&mut self) {
        let bytes = self.digest.clone().serialize();
        self.digest = TDigestMut::deserialize(&bytes).expect("a t-digest reads back its own bytes");
    }

    /// Value at rank `q` in [0, 1]; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut d = self.digest.clone();
        d.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }

    /// Values at several ranks.
    pub fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        let mut d = self.digest.clone();
        d.quantiles(qs).ok().flatten()
    }

    /// Share of values at or below each split point (strictly increasing).
    pub fn cdf(&self, split_points: &[f64]) -> Option<Vec<f64>> {
        let mut d = self.digest.clone();
        // the sketch returns one more entry (the total, 1.0); keep one per point
        d.cdf(split_points).ok().flatten().map(|mut v| {
            v.truncate(split_points.len());
            v
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.digest.clone().serialize()
    }
}

impl PartialEq for Quantiles {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Serialize for Quantiles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        b64(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for Quantiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = unb64(d)?;
        let digest = TDigestMut::deserialize(&bytes).map_err(|e| {
            D::Error::custom(SketchError::Decode {
                kind: "t-digest",
                reason: e.to_string(),
            })
        })?;
        Ok(Quantiles { digest })
    }
}

/// Distinct-count sketch (HyperLogLog, 8 bits per register).
#[derive(Clone, Debug)]
pub struct Distinct {
    sketch: HllSketch,
}

impl Distinct {
    pub fn new(lg_k: u8) -> Self {
        Distinct {
            sketch: HllSketch::new(lg_k.clamp(4, 21), HllType::Hll8).expect("lg_k in 4..=21"),
        }
    }

    /// Count a value by its 64-bit hash: a string's `value_hash` (xxh3,
    /// the one hash profiling computes per value), a row's hash, a pii
    /// value's keyed hash. The sketch spreads it again (MurmurHash3 of the
    /// 8 bytes), so the hash need only be collision-free, not uniform.
    #[inline]
    pub fn update_hash(&mut self, hash: u64) {
        self.sketch.update_with_coupon(Coupon::from_value(hash));
    }

    pub fn lg_k(&self) -> u8 {
        self.sketch.lg_config_k()
    }

    /// The distinct-count estimate. It uses the composite estimator, a
    /// function of the registers only, so that a sketch, its serialized copy
    /// and a union with the same registers all give the same number (the
    /// default HIP estimator depends on update history).
    pub fn estimate(&self) -> f64 {
        self.sketch.composite_estimate()
    }

    pub fn merge(&mut self, other: &Distinct) -> Result<(), SketchError> {
        if self.lg_k() != other.lg_k() {
            return Err(SketchError::Mismatch {
                kind: "HyperLogLog",
                left: format!("lg_k={}", self.lg_k()),
                right: format!("lg_k={}", other.lg_k()),
            });
        }
        let mut union = HllUnion::new(self.lg_k()).expect("lg_k in range");
        union.update(&self.sketch);
        union.update(&other.sketch);
        self.sketch = union.to_sketch(HllType::Hll8);
        self.canonicalize();
        Ok(())
    }

    /// Bring the sketch to its stored form (see [`Quantiles::canonicalize`]).
    pub fn canonicalize(&mut self) {
        self.sketch = HllSketch::deserialize(&self.to_bytes())
            .expect("an HLL sketch reads back its own bytes");
    }

    fn to_bytes(&self) -> Vec<u8> {
        canonical_hll(self.sketch.serialize())
    }
}

impl PartialEq for Distinct {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Serialize for Distinct {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        b64(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for Distinct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = unb64(d)?;
        let sketch = HllSketch::deserialize(&bytes).map_err(|e| {
            D::Error::custom(SketchError::Decode {
                kind: "HyperLogLog",
                reason: e.to_string(),
            })
        })?;
        Ok(Distinct { sketch })
    }
}

/// Heavy-hitters sketch over string values. Counts are exact while fewer
/// than 3/4 of `map_size` distinct values were seen.
///
/// Its hash table's order is the one thing a stored copy does not keep, and
/// only a purge (dropping the smallest counts once the table is full) looks
/// at it: which counts a purge samples depends on where they sit. So the
/// sketch is brought to its stored order ([`TopValues::canonicalize`])
/// before any update or merge that may purge, and after one that did; a
/// merge that cannot purge (the two tables together fit) leaves the same
/// values, counts and error in any order and skips the round trip. Answers
/// and bytes are the same as with a round trip after every merge.
#[derive(Clone, Debug)]
pub struct TopValues {
    sketch: FrequentItemsSketch<String>,
    /// False after a merge that skipped the round trip to the stored order.
    canonical: bool,
    /// [`TopValues::all`], computed on first use and dropped by any change:
    /// a baseline's sketches answer every batch's checks from it.
    sorted: OnceLock<Vec<ValueCount>>,
}

/// One value of a [`TopValues`] sketch with its estimated count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueCount {
    pub value: String,
    pub count: u64,
}

impl TopValues {
    pub fn new(map_size: usize) -> Self {
        TopValues {
            sketch: FrequentItemsSketch::new(map_size.next_power_of_two().max(8))
                .expect("power of two >= 8"),
            canonical: true,
            sorted: OnceLock::new(),
        }
    }

    #[inline]
    pub fn update_with_count(&mut self, value: &str, count: u64) {
        if count > 0 {
            if !self.canonical {
                self.canonicalize();
            }
            self.sorted.take();
            self.sketch.update_with_count_ref(value, count);
        }
    }

    pub fn map_size(&self) -> usize {
        self.sketch.max_map_size()
    }

    /// Upper bound of the counting error of any value (0 while exact).
    pub fn max_error(&self) -> u64 {
        self.sketch.maximum_error()
    }

    pub fn total(&self) -> u64 {
        self.sketch.total_weight()
    }

    /// Estimated count of one value (0 if not tracked).
    pub fn estimate(&self, value: &str) -> u64 {
        self.sketch.estimate(value)
    }

    /// Every tracked value, most frequent first, ties by value: deterministic.
    pub fn all(&self) -> &[ValueCount] {
        self.sorted.get_or_init(|| {
            let mut rows: Vec<ValueCount> = self
                .sketch
                .frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0)
                .into_iter()
                .map(|r| ValueCount {
                    value: r.item().clone(),
                    count: r.estimate(),
                })
                .collect();
            rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            rows
        })
    }

    /// The `k` most frequent values.
    pub fn top(&self, k: usize) -> &[ValueCount] {
        let all = self.all();
        &all[..k.min(all.len())]
    }

    pub fn merge(&mut self, other: &TopValues) -> Result<(), SketchError> {
        if self.map_size() != other.map_size() {
            return Err(SketchError::Mismatch {
                kind: "frequent-items",
                left: format!("map_size={}", self.map_size()),
                right: format!("map_size={}", other.map_size()),
            });
        }
        let may_purge = self.sketch.num_active_items() + other.sketch.num_active_items()
            > self.sketch.maximum_map_capacity();
        self.sorted.take();
        if !may_purge {
            self.sketch.merge(&other.sketch);
            self.canonical = false;
            return Ok(());
        }
        // the merge inserts the other's values in its table order, and a
        // purge part-way depends on both orders: use the stored ones
        if !self.canonical {
            self.canonicalize();
        }
        if other.canonical {
            self.sketch.merge(&other.sketch);
        } else {
            let mut other = other.clone();
            other.canonicalize();
            self.sketch.merge(&other.sketch);
        }
        self.canonicalize();
        Ok(())
    }

    /// Bring the sketch to its stored form (see [`Quantiles::canonicalize`]).
    pub fn canonicalize(&mut self) {
        self.sketch = FrequentItemsSketch::deserialize(&self.to_bytes())
            .expect("a frequent-items sketch reads back its own bytes");
        self.canonical = true;
    }

    fn to_bytes(&self) -> Vec<u8> {
        canonical_frequent_items(self.sketch.serialize())
    }

    /// A copy where every value is replaced by `f(value)` (used for PII).
    pub fn map_values(&self, f: impl Fn(&str) -> String) -> TopValues {
        let mut out = TopValues::new(self.map_size());
        for vc in self.all() {
            out.update_with_count(&f(&vc.value), vc.count);
        }
        out
    }
}

impl PartialEq for TopValues {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Serialize for TopValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        b64(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for TopValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = unb64(d)?;
        let sketch = FrequentItemsSketch::<String>::deserialize(&bytes).map_err(|e| {
            D::Error::custom(SketchError::Decode {
                kind: "frequent-items",
                reason: e.to_string(),
            })
        })?;
        Ok(TopValues {
            sketch,
            canonical: true,
            sorted: OnceLock::new(),
        })
    }
}

#[cfg(test)]
#[path = "sketch_tests.rs"]
mod tests;
