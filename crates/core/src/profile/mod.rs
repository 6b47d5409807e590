//! Profiles: a pure function of record batches and the rules.
//!
//! A [`BatchProfile`] holds, per trust tag, the row count, the label class
//! counts, and per monitored column the count, nulls and either numeric
//! statistics (min, max, mean, M2, declared-range violations, a t-digest) or
//! value statistics (HyperLogLog distinct estimate, heavy hitters). The
//! whole-batch slice (`all`) is the merge of the tag slices, so that the
//! `all` numbers are exactly consistent with the tags.
//!
//! Profiles are mergeable: `merge(profile(a), profile(b))` equals
//! `profile(a ++ b)` exactly for counts, min, max and label counts, and within
//! the sketches' documented error for quantiles, distinct counts and heavy
//! hitters. Baselines and windows are merges of batch profiles.
//!
//! The hot path works column by column with typed loops and Arrow kernels
//! (casts); dictionary-encoded columns are counted by key and each distinct
//! value is hashed once per record batch. Raw values of `pii` columns never
//! leave this module: only keyed hashes are stored.
//!
//! This module does no I/O and reads no clock.
//!
//! ```text
//! record batch ─▶ profiler.rs ─ slices, numeric / values / text columns, row hashes
//!                  │   (arrays.rs: columns read as f64 or as a Utf8 dictionary;
//!                  │    numeric.rs: moments, runs of values ─▶ runs.rs: a run's t-digest)
//!                  └▶ labels.rs ─ label classes, counts per value × class
//!                      (by_value.rs counters, bins.rs numeric bins)
//!                  ─▶ finish ─▶ BatchProfile (this file: the profile types, merge)
//! ```

mod arrays;
mod bins;
mod by_value;
mod labels;
mod numeric;
mod profiler;
mod runs;
pub mod sketch;
mod summary;

use std::collections::BTreeMap;

use arrow::array::{DictionaryArray, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Int32Type};
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use crate::pii::PiiKey;
use crate::rules::{ColumnKind, Rules};
use bins::Binner;
pub use bins::bin_names;
use by_value::ValueCounter;
pub use labels::ProfilePart;
pub use sketch::{Distinct, Quantiles, SketchError, TopValues, ValueCount};
pub use summary::{ColumnSummary, ProfileSummary, SliceSummary};

/// Version of the serialized profile format. Bump on any incompatible change.
///
/// 2: the distinct-count sketch of a `pii` column takes keyed hashes (format
/// 1 fed it raw values, so a sketch of format 1 and one of format 2 count
/// the same value twice when merged).
///
/// 3: the distinct-count sketch of a string column takes the value's xxh3
/// hash (`arrays::value_hash`, computed once per value for the row hash
/// too) instead of hashing the string again with MurmurHash3: a sketch of
/// format 2 and one of format 3 count the same value twice when merged.
pub const PROFILE_FORMAT: u32 = 3;

/// Name of the slice that holds the rows whose trust tag is null or absent.
pub const UNTAGGED: &str = "untagged";

/// Name of the whole-batch slice in summaries.
pub const ALL: &str = "all";

type FastMap<K, V> = hashbrown::HashMap<K, V, FixedState>;

/// A slice column's values in one record batch, for its joint cells: the
/// column, each row's value as an index into the batch's values (`None`:
/// null), the stable id of each of the batch's values (`None`: the indices
/// are stable ids, bins) and how many values the batch has.
struct SliceKeys {
    column: String,
    /// Per row: the value's index, or `values` for none.
    keys: Vec<u32>,
    stable: Option<Vec<u32>>,
    values: usize,
}

/// Profiling failed: the input does not fit the rules, or profiles do not merge.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Sketch(#[from] SketchError),
    #[error(
        "profiles of different shapes cannot be merged (dataset {left_dataset} shape {left_shape} vs dataset {right_dataset} shape {right_shape}); the rules' columns, trust tags, label or sketch sizes changed: rebuild the baseline with the current rules"
    )]
    Shape {
        left_dataset: String,
        left_shape: String,
        right_dataset: String,
        right_shape: String,
    },
    #[error("column `{column}` could not be read as {kind:?}: {reason}")]
    Column {
        column: String,
        kind: ColumnKind,
        reason: String,
    },
    #[error(
        "profile format {found} is not supported by this dqmon (expects {PROFILE_FORMAT}); profile those batches again with this version (`dqmon replay`) before merging them"
    )]
    Format { found: u32 },
}

/// Numeric statistics of one column in one slice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumericProfile {
    /// Finite values (the ones every other statistic is computed from).
    pub n: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Sum of squared deviations from the mean (Welford/Chan), for the variance.
    pub m2: f64,
    /// Values below / above the declared range (0 when no range is declared).
    pub below_range: u64,
    pub above_range: u64,
    /// NaN and infinite values (counted in the column's `count`, in no other statistic).
    pub non_finite: u64,
    pub quantiles: Quantiles,
}

impl NumericProfile {
    /// Population variance.
    pub fn variance(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.m2 / self.n as f64
        }
    }

    fn merge(&mut self, other: &NumericProfile) -> Result<(), SketchError> {
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        if other.n > 0 && self.n == 0 {
            self.min = other.min;
            self.max = other.max;
            self.mean = other.mean;
            self.m2 = other.m2;
        } else if other.n > 0 {
            let delta = other.mean - self.mean;
            self.mean += delta * nb / n;
            self.m2 += other.m2 + delta * delta * na * nb / n;
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.below_range += other.below_range;
        self.above_range += other.above_range;
        self.n += other.n;
        self.non_finite += other.non_finite;
        self.quantiles.merge(&other.quantiles)
    }
}

/// Value statistics (categorical and text columns) of one column in one slice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValuesProfile {
    pub distinct: Distinct,
    pub top: TopValues,
}

/// Statistics of one column in one slice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// Non-null values.
    pub count: u64,
    pub nulls: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<ValuesProfile>,
}

impl ColumnProfile {
    /// Share of nulls among the slice's rows that had this column.
    pub fn missing_rate(&self) -> f64 {
        let total = self.count + self.nulls;
        if total == 0 {
            0.0
        } else {
            self.nulls as f64 / total as f64
        }
    }

    fn merge(&mut self, other: &ColumnProfile) -> Result<(), SketchError> {
        self.count += other.count;
        self.nulls += other.nulls;
        match (&mut self.numeric, &other.numeric) {
            (Some(a), Some(b)) => a.merge(b)?,
            (None, Some(b)) => self.numeric = Some(b.clone()),
            _ => {}
        }
        match (&mut self.values, &other.values) {
            (Some(a), Some(b)) => {
                a.distinct.merge(&b.distinct)?;
                a.top.merge(&b.top)?;
            }
            (None, Some(b)) => self.values = Some(b.clone()),
            _ => {}
        }
        Ok(())
    }
}

/// Everything profiled about one slice (one trust tag, or the whole batch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SliceProfile {
    pub rows: u64,
    /// Label class (as text) to count; rows with a null label are not counted.
    pub labels: BTreeMap<String, u64>,
    pub columns: BTreeMap<String, ColumnProfile>,
    /// Distinct rows (over the profiled columns), for duplicate detection.
    pub distinct_rows: Distinct,
    /// Per slice column and label feature of the rules (`slices:`,
    /// `label_features:`), per value (or bin): rows and label
    /// classes. At most [`MAX_SLICE_VALUES`] values per column; rows of
    /// values past that count under [`OTHER_VALUES`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_value: BTreeMap<String, BTreeMap<String, ValueLabels>>,
    /// With two or more slice columns: rows and label classes per joint
    /// cell, the combination of the slice columns' values (the first
    /// [`MAX_CELL_COLUMNS`]), its components joined by [`CELL_SEPARATOR`]
    /// (a null component reads [`NULL_VALUE`]). At most
    /// [`MAX_SLICE_VALUES`] cells, the rest under [`OTHER_VALUES`]. What
    /// the label-calibration check learns `p(label | features)` from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_cell: BTreeMap<String, ValueLabels>,
}

/// Slice columns that make a joint cell (the first ones of `slices:`).
pub const MAX_CELL_COLUMNS: usize = 4;
/// Between the components of a joint cell's name.
pub const CELL_SEPARATOR: char = '\u{1f}';
/// A null component of a joint cell.
pub const NULL_VALUE: &str = "(null)";

/// Most distinct values kept per slice column and slice.
pub const MAX_SLICE_VALUES: usize = 4096;
/// Where rows of values past [`MAX_SLICE_VALUES`] are counted.
pub const OTHER_VALUES: &str = "(other values)";

/// Rows and label classes of one value of a slice column.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueLabels {
    pub rows: u64,
    /// Label class (as text) to count; rows with a null label are not counted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
}

impl ValueLabels {
    fn add(&mut self, other: &ValueLabels) {
        self.rows += other.rows;
        for (k, v) in &other.labels {
            // a class is new to a value once: no key copied after that
            match self.labels.get_mut(k) {
                Some(n) => *n += v,
                None => {
                    self.labels.insert(k.clone(), *v);
                }
            }
        }
    }
}

/// Add `v`'s counts under `value`, keeping at most [`MAX_SLICE_VALUES`] values.
fn add_value(map: &mut BTreeMap<String, ValueLabels>, value: &str, v: &ValueLabels) {
    if let Some(mine) = map.get_mut(value) {
        mine.add(v);
    } else if map.len() < MAX_SLICE_VALUES {
        map.insert(value.to_string(), v.clone());
    } else {
        map.entry(OTHER_VALUES.to_string()).or_default().add(v);
    }
}

impl SliceProfile {
    fn empty(rules: &Rules) -> SliceProfile {
        SliceProfile {
            rows: 0,
            labels: BTreeMap::new(),
            columns: BTreeMap::new(),
            distinct_rows: Distinct::new(rules.sketch.hll_lg_k),
            by_value: BTreeMap::new(),
            by_cell: BTreeMap::new(),
        }
    }

    /// Rows with a non-null label.
    pub fn labelled(&self) -> u64 {
        self.labels.values().sum()
    }

    /// Share of rows that duplicate another row of the slice (estimate).
    pub fn duplicate_share(&self) -> f64 {
        if self.rows == 0 {
            return 0.0;
        }
        let distinct = self.distinct_rows.estimate().min(self.rows as f64);
        1.0 - distinct / self.rows as f64
    }

    /// Bring every sketch to its stored form, so that a profile answers the
    /// same whether just computed or read back.
    pub fn canonicalize(&mut self) {
        self.distinct_rows.canonicalize();
        for c in self.columns.values_mut() {
            if let Some(n) = &mut c.numeric {
                n.quantiles.canonicalize();
            }
            if let Some(v) = &mut c.values {
                v.distinct.canonicalize();
                v.top.canonicalize();
            }
        }
    }

    pub fn merge(&mut self, other: &SliceProfile) -> Result<(), SketchError> {
        self.rows += other.rows;
        for (k, v) in &other.labels {
            *self.labels.entry(k.clone()).or_default() += v;
        }
        for (name, col) in &other.columns {
            match self.columns.get_mut(name) {
                Some(mine) => mine.merge(col)?,
                None => {
                    self.columns.insert(name.clone(), col.clone());
                }
            }
        }
        for (column, values) in &other.by_value {
            let mine = self.by_value.entry(column.clone()).or_default();
            for (value, v) in values {
                add_value(mine, value, v);
            }
        }
        for (cell, v) in &other.by_cell {
            add_value(&mut self.by_cell, cell, v);
        }
        self.distinct_rows.merge(&other.distinct_rows)
    }
}

/// The profile of one batch, or the merge of several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchProfile {
    pub format: u32,
    pub dataset: String,
    /// [`Rules::profile_shape`] of the rules that produced it.
    pub shape: String,
    /// How many batch profiles were merged into this one.
    pub batches: u64,
    pub rows: u64,
    /// Column name to logical type, for schema checks (all columns of the input).
    pub schema: BTreeMap<String, String>,
    /// One slice per trust tag seen.
    pub tags: BTreeMap<String, SliceProfile>,
}

impl BatchProfile {
    /// The whole-batch slice: the merge of every tag slice.
    pub fn all(&self) -> SliceProfile {
        let mut iter = self.tags.values();
        let mut all = match iter.next() {
            Some(first) => first.clone(),
            None => {
                return SliceProfile {
                    rows: 0,
                    labels: BTreeMap::new(),
                    columns: BTreeMap::new(),
                    distinct_rows: Distinct::new(12),
                    by_value: BTreeMap::new(),
                    by_cell: BTreeMap::new(),
                };
            }
        };
        for s in iter {
            // slices of one profile always share sketch parameters
            all.merge(s)
                .expect("slices of one profile share parameters");
        }
        all
    }

    /// Merge another profile of the same dataset and rules shape into this one.
    pub fn merge(&mut self, other: &BatchProfile) -> Result<(), ProfileError> {
        // either side: a baseline built from history may start with an old profile
        for found in [self.format, other.format] {
            if found != PROFILE_FORMAT {
                return Err(ProfileError::Format { found });
            }
        }
        if self.shape != other.shape || self.dataset != other.dataset {
            return Err(ProfileError::Shape {
                left_dataset: self.dataset.clone(),
                left_shape: self.shape.clone(),
                right_dataset: other.dataset.clone(),
                right_shape: other.shape.clone(),
            });
        }
        self.batches += other.batches;
        self.rows += other.rows;
        for (name, ty) in &other.schema {
            match self.schema.get_mut(name) {
                Some(mine) if mine != ty && !mine.split(" | ").any(|t| t == ty) => {
                    mine.push_str(" | ");
                    mine.push_str(ty);
                }
                Some(_) => {}
                None => {
                    self.schema.insert(name.clone(), ty.clone());
                }
            }
        }
        for (tag, slice) in &other.tags {
            match self.tags.get_mut(tag) {
                Some(mine) => mine.merge(slice)?,
                None => {
                    self.tags.insert(tag.clone(), slice.clone());
                }
            }
        }
        Ok(())
    }

    /// A compact, readable view (what `dqmon profile --json` prints).
    pub fn summary(&self, top_k: usize) -> ProfileSummary {
        summary::summarize(self, top_k)
    }
}

/// The logical type of a column, ignoring physical encodings (dictionary,
/// views, large offsets) so that the same data from Parquet or Kafka compares equal.
pub fn logical_type(dt: &DataType) -> String {
    match dt {
        DataType::Dictionary(_, v) => logical_type(v),
        DataType::Utf8View | DataType::LargeUtf8 => "Utf8".into(),
        DataType::BinaryView | DataType::LargeBinary => "Binary".into(),
        other => other.to_string(),
    }
}

/// Per-slice accumulator of a numeric column for one record batch.
#[derive(Default)]
struct NumScratch {
    values: Vec<f64>,
    nulls: u64,
}

/// Builds a [`BatchProfile`] from a stream of record batches.
pub struct Profiler<'r> {
    rules: &'r Rules,
    pii: &'r PiiKey,
    profile: BatchProfile,
    /// Tag name to slice index and back.
    slice_names: Vec<String>,
    slices: Vec<SliceProfile>,
    /// Reused buffers.
    slice_of_row: Vec<u32>,
    row_hash: Vec<u64>,
    num_scratch: Vec<NumScratch>,
    /// Per slice and column (index in the rules' columns): order keys of
    /// numeric values not yet in the slice's quantile sketch, which takes
    /// them in bulk runs (see `QUANTILE_RUN`).
    pending_keys: Vec<Vec<Vec<u64>>>,
    /// Keys held in `pending_keys` in all.
    pending_total: usize,
    /// Reused by the runs' digests (cluster sizes, scatter buffer).
    run_buffers: runs::RunBuffers,
    /// A text column's value hashes in this record batch, one per row.
    text_hash: Vec<u64>,
    /// Per slice: a text column's distinct values in this record batch.
    text_seen: Vec<TextSeen>,
    /// A text column's hash buckets met once and more than once in this
    /// record batch (see `profiler::count_distinct`).
    text_buckets: Vec<u64>,
    /// Rows of this record batch per slice.
    batch_slice_rows: Vec<usize>,
    /// This record batch's rows grouped by slice, in row order within a
    /// slice: slice `s` holds the rows of `slice_order` from
    /// `slice_starts[s]` to `slice_starts[s + 1]`. A numeric column without
    /// nulls is gathered through it into its slices (see `numeric`).
    slice_order: Vec<u32>,
    slice_starts: Vec<usize>,
    /// Per binned slice column or label feature: its bins.
    binners: BTreeMap<String, Binner>,
    /// Per slice column or label feature: its counts per value, written
    /// into the slices' `by_value` by [`Profiler::finish`].
    counters: BTreeMap<String, ValueCounter>,
    /// Counts per joint cell of the slice columns (two or more), written
    /// into the slices' `by_cell` by [`Profiler::finish`].
    cells: Option<ValueCounter>,
    /// Label classes as first seen (class slot `1 + i` of the counters).
    class_names: Vec<String>,
}

/// The distinct values of a text column in one slice of one record batch:
/// each as (first row, count), in order of first row, and a table of their
/// positions keyed by the value's hash. Reused from batch to batch.
#[derive(Default)]
struct TextSeen {
    table: hashbrown::HashTable<u32>,
    first: Vec<(u32, u64)>,
}

/// A column as one record batch's profiling read it, kept for counting it
/// per value (a slice column or label feature) without reading it again.
enum Read {
    Floats(Float64Array),
    Dictionary(DictionaryArray<Int32Type>),
}

/// Profile a whole in-memory input: a convenience for tests and small inputs.
pub fn profile_batches<'a>(
    rules: &Rules,
    pii: &PiiKey,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> Result<BatchProfile, ProfileError> {
    let mut p = Profiler::new(rules, pii);
    for b in batches {
        p.update(b)?;
    }
    Ok(p.finish())
}

#[cfg(test)]
mod quantile_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;
