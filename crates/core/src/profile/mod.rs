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

mod bins;
mod by_value;
pub mod sketch;
mod summary;

use std::collections::BTreeMap;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int64Array,
    PrimitiveArray, RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowPrimitiveType, DataType, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use crate::pii::PiiKey;
use crate::rules::{ColumnKind, ColumnRule, Rules, TrustSource};
use bins::{Binner, order_key};
use by_value::ValueCounter;
pub use sketch::{Distinct, Quantiles, SketchError, TopValues, ValueCount};
pub use summary::{ColumnSummary, ProfileSummary, SliceSummary};

/// Version of the serialized profile format. Bump on any incompatible change.
///
/// 2: the distinct-count sketch of a `pii` column takes keyed hashes (format
/// 1 fed it raw values, so a sketch of format 1 and one of format 2 count
/// the same value twice when merged).
pub const PROFILE_FORMAT: u32 = 2;

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        if other.format != PROFILE_FORMAT {
            return Err(ProfileError::Format {
                found: other.format,
            });
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

/// A column as one record batch's profiling read it, kept for counting it
/// per value (a slice column or label feature) without reading it again.
enum Read {
    Floats(Float64Array),
    Dictionary(DictionaryArray<Int32Type>),
}

impl<'r> Profiler<'r> {
    pub fn new(rules: &'r Rules, pii: &'r PiiKey) -> Self {
        Profiler {
            rules,
            pii,
            profile: BatchProfile {
                format: PROFILE_FORMAT,
                dataset: rules.dataset.clone(),
                shape: rules.profile_shape(),
                batches: 1,
                rows: 0,
                schema: BTreeMap::new(),
                tags: BTreeMap::new(),
            },
            slice_names: Vec::new(),
            slices: Vec::new(),
            slice_of_row: Vec::new(),
            row_hash: Vec::new(),
            num_scratch: Vec::new(),
            binners: rules
                .slice_bins
                .iter()
                .map(|(c, edges)| (c.clone(), Binner::new(edges)))
                .collect(),
            counters: rules
                .slice_bins
                .iter()
                .map(|(c, edges)| (c.clone(), ValueCounter::binned(bin_names(edges))))
                .collect(),
            cells: None,
            class_names: Vec::new(),
        }
    }

    fn slice_index(&mut self, tag: &str) -> u32 {
        if let Some(i) = self.slice_names.iter().position(|n| n == tag) {
            return i as u32;
        }
        self.slice_names.push(tag.to_string());
        self.slices.push(SliceProfile::empty(self.rules));
        (self.slice_names.len() - 1) as u32
    }

    /// The columns (by name) that profiling reads: monitored columns, the
    /// trust-tag column and the label column. Readers may project to these.
    pub fn needed_columns(rules: &Rules) -> Vec<String> {
        let mut names: Vec<String> = rules.columns.iter().map(|c| c.name.clone()).collect();
        if let TrustSource::Column(c) = &rules.trust.source {
            names.push(c.clone());
        }
        if let Some(l) = &rules.label {
            names.push(l.column.clone());
        }
        names.sort();
        names.dedup();
        names
    }

    /// Record the full schema of the input (including unread columns).
    pub fn observe_schema(&mut self, schema: &arrow::datatypes::Schema) {
        for f in schema.fields() {
            self.profile
                .schema
                .entry(f.name().clone())
                .or_insert_with(|| logical_type(f.data_type()));
        }
    }

    /// Profile one record batch.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<(), ProfileError> {
        let n = batch.num_rows();
        if n == 0 {
            self.observe_schema(batch.schema().as_ref());
            return Ok(());
        }
        self.observe_schema(batch.schema().as_ref());
        self.profile.rows += n as u64;
        self.assign_slices(batch)?;
        let nslices = self.slices.len();
        let mut counts = vec![0u64; nslices];
        for &s in &self.slice_of_row {
            counts[s as usize] += 1;
        }
        for (s, c) in counts.iter().enumerate() {
            self.slices[s].rows += c;
        }

        self.row_hash.clear();
        self.row_hash.resize(n, 0x9E37_79B9_7F4A_7C15);

        let rules = self.rules;
        let valued = rules.valued_columns();
        let mut read: Vec<(&str, Read)> = Vec::with_capacity(valued.len());
        for rule in &rules.columns {
            let Some(array) = batch.column_by_name(&rule.name) else {
                continue;
            };
            hash_column(array, &mut self.row_hash);
            let as_read = if rule.kind.is_numeric_like() {
                Some(Read::Floats(self.update_numeric(rule, array)?))
            } else {
                self.update_values(rule, array)?.map(Read::Dictionary)
            };
            if let Some(r) = as_read
                && valued.contains(&rule.name.as_str())
            {
                read.push((&rule.name, r));
            }
        }
        // every row's label class, read once: for the label counts and
        // for the counters per value
        let mut classes = None;
        if let Some(label) = &rules.label
            && let Some(array) = batch.column_by_name(&label.column)
        {
            if rules.column(&label.column).is_none() {
                hash_column(array, &mut self.row_hash);
            }
            let read = label_classes(array).map_err(|reason| ProfileError::Column {
                column: label.column.clone(),
                kind: ColumnKind::Categorical,
                reason,
            })?;
            self.update_labels(&read);
            classes = Some(read);
        }
        if let TrustSource::Column(c) = &rules.trust.source
            && rules.column(c).is_none()
            && let Some(array) = batch.column_by_name(c)
        {
            hash_column(array, &mut self.row_hash);
        }
        if !valued.is_empty() {
            let codes = RowCodes::new(&self.slice_of_row, classes.as_ref(), nslices);
            // this record batch's label classes as the counters number them
            let slots = self.class_slots(classes.as_ref());
            let mut keyed = Vec::with_capacity(rules.slices.len());
            for column in valued {
                if let Some(array) = batch.column_by_name(column) {
                    let already = read.iter().find(|(c, _)| *c == column).map(|(_, r)| r);
                    let cell = rules.slices.iter().any(|s| s == column);
                    let keys =
                        self.update_by_value(column, array, already, &codes, &slots, cell)?;
                    keyed.extend(keys);
                }
            }
            if rules.slices.len() >= 2 && keyed.len() == rules.slices.len() {
                keyed.truncate(MAX_CELL_COLUMNS);
                self.update_cells(&keyed, classes.as_ref(), &slots);
            }
        }
        for (i, &h) in self.row_hash.iter().enumerate() {
            self.slices[self.slice_of_row[i] as usize]
                .distinct_rows
                .update_u64(h);
        }
        Ok(())
    }

    /// Fill `slice_of_row` with the slice index of every row.
    fn assign_slices(&mut self, batch: &RecordBatch) -> Result<(), ProfileError> {
        let n = batch.num_rows();
        self.slice_of_row.clear();
        let column = match &self.rules.trust.source {
            TrustSource::Fixed(tag) => {
                let tag = tag.clone();
                let s = self.slice_index(&tag);
                self.slice_of_row.resize(n, s);
                return Ok(());
            }
            TrustSource::Column(c) => c.clone(),
        };
        let Some(array) = batch.column_by_name(&column) else {
            let s = self.slice_index(UNTAGGED);
            self.slice_of_row.resize(n, s);
            return Ok(());
        };
        let dict = to_dictionary(array).map_err(|reason| ProfileError::Column {
            column: column.clone(),
            kind: ColumnKind::Categorical,
            reason,
        })?;
        let values = dict.values().as_string::<i32>();
        let mut map: Vec<u32> = Vec::with_capacity(values.len() + 1);
        for k in 0..values.len() {
            let idx = if values.is_null(k) {
                self.slice_index(UNTAGGED)
            } else {
                self.slice_index(values.value(k))
            };
            map.push(idx);
        }
        let keys = dict.keys();
        if keys.null_count() == 0 {
            self.slice_of_row
                .extend(keys.values().iter().map(|&k| map[k as usize]));
        } else {
            let untagged = self.slice_index(UNTAGGED);
            self.slice_of_row.extend(
                keys.iter()
                    .map(|k| k.map(|k| map[k as usize]).unwrap_or(untagged)),
            );
        }
        Ok(())
    }

    /// The column's values as floats, as read, for a caller that bins them.
    fn update_numeric(
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
            None => {
                for (i, &v) in values.iter().enumerate() {
                    self.num_scratch[self.slice_of_row[i] as usize]
                        .values
                        .push(v);
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
        let sketch = &self.rules.sketch;
        for (s, scratch) in self.num_scratch.iter().enumerate().take(nslices) {
            let col = self.slices[s]
                .columns
                .entry(rule.name.clone())
                .or_insert_with(|| ColumnProfile {
                    count: 0,
                    nulls: 0,
                    numeric: None,
                    values: None,
                });
            col.nulls += scratch.nulls;
            if scratch.values.is_empty() {
                continue;
            }
            col.count += scratch.values.len() as u64;
            let part = numeric_part(&scratch.values, rule.range, sketch.tdigest_k);
            match &mut col.numeric {
                Some(existing) => existing.merge(&part)?,
                None => col.numeric = Some(part),
            }
        }
        Ok(floats)
    }

    /// The column as a dictionary, when it was read as one (plain text is
    /// not), for a caller that counts it per value.
    fn update_values(
        &mut self,
        rule: &ColumnRule,
        array: &ArrayRef,
    ) -> Result<Option<DictionaryArray<Int32Type>>, ProfileError> {
        // Free text rarely repeats: interning it would hash and copy every
        // value for nothing, so plain text goes straight into the sketches.
        if rule.kind == ColumnKind::Text {
            match array.data_type() {
                DataType::Utf8 => {
                    self.update_text(rule, array.as_string::<i32>().iter());
                    return Ok(None);
                }
                DataType::LargeUtf8 => {
                    self.update_text(rule, array.as_string::<i64>().iter());
                    return Ok(None);
                }
                DataType::Utf8View => {
                    self.update_text(rule, array.as_string_view().iter());
                    return Ok(None);
                }
                _ => {}
            }
        }
        let dict = to_dictionary(array).map_err(|reason| ProfileError::Column {
            column: rule.name.clone(),
            kind: rule.kind,
            reason,
        })?;
        let nslices = self.slices.len();
        let values = dict.values().as_string::<i32>();
        let nd = values.len();
        let mut counts = vec![0u64; nslices * nd];
        let mut nulls = vec![0u64; nslices];
        let keys = dict.keys();
        match keys.nulls() {
            None => {
                for (i, &k) in keys.values().iter().enumerate() {
                    counts[self.slice_of_row[i] as usize * nd + k as usize] += 1;
                }
            }
            Some(valid) => {
                for (i, &k) in keys.values().iter().enumerate() {
                    let s = self.slice_of_row[i] as usize;
                    if valid.is_valid(i) {
                        counts[s * nd + k as usize] += 1;
                    } else {
                        nulls[s] += 1;
                    }
                }
            }
        }
        let sketch = &self.rules.sketch;
        for s in 0..nslices {
            let col = self.slices[s]
                .columns
                .entry(rule.name.clone())
                .or_insert_with(|| ColumnProfile {
                    count: 0,
                    nulls: 0,
                    numeric: None,
                    values: None,
                });
            col.nulls += nulls[s];
            let vp = col.values.get_or_insert_with(|| ValuesProfile {
                distinct: Distinct::new(sketch.hll_lg_k),
                top: TopValues::new(sketch.frequent_items_map),
            });
            let row = &counts[s * nd..(s + 1) * nd];
            for (k, &c) in row.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                if values.is_null(k) {
                    col.nulls += c;
                    continue;
                }
                col.count += c;
                let v = values.value(k);
                if rule.pii {
                    vp.distinct.update_u64(self.pii.hash64(v));
                    vp.top.update_with_count(&self.pii.hash(v), c);
                } else {
                    vp.distinct.update_str(v);
                    vp.top.update_with_count(v, c);
                }
            }
        }
        Ok(Some(dict))
    }

    /// Value statistics of a text column. Values are counted per record
    /// batch in a hash map (no copy, no dictionary); each distinct value then
    /// updates the distinct-count sketch once. When a record batch holds more
    /// distinct values than the top-values sketch keeps exactly, only values
    /// seen at least twice update that sketch: a value seen once in
    /// a record batch of `decode::parquet::BATCH_ROWS` (the `dqmon` crate) rows can never
    /// reach a top share, so skipping it changes a count by at most one per
    /// record batch while sparing a heap copy per unique string. Raw values of
    /// pii columns reach no sketch: the distinct count takes their keyed
    /// 64-bit hash, the top values their keyed text hash.
    fn update_text<'a>(
        &mut self,
        rule: &ColumnRule,
        values: impl Iterator<Item = Option<&'a str>>,
    ) {
        let nslices = self.slices.len();
        let sketch = &self.rules.sketch;
        let (rows, _) = values.size_hint();
        let mut counts: Vec<FastMap<&'a str, u64>> = (0..nslices)
            .map(|_| {
                FastMap::with_capacity_and_hasher(rows / nslices.max(1) + 16, FixedState::default())
            })
            .collect();
        let mut tallies = vec![(0u64, 0u64); nslices];
        for (i, v) in values.enumerate() {
            let s = self.slice_of_row[i] as usize;
            match v {
                Some(v) => {
                    tallies[s].0 += 1;
                    *counts[s].entry(v).or_default() += 1;
                }
                None => tallies[s].1 += 1,
            }
        }
        let parts: Vec<(u64, u64, ValuesProfile)> = counts
            .into_iter()
            .zip(tallies)
            .map(|(map, (count, nulls))| {
                let mut part = ValuesProfile {
                    distinct: Distinct::new(sketch.hll_lg_k),
                    top: TopValues::new(sketch.frequent_items_map),
                };
                // few distinct values: the top-values sketch stays exact, feed it all
                let all = map.len() * 4 <= sketch.frequent_items_map * 3;
                for (v, c) in map {
                    if rule.pii {
                        part.distinct.update_u64(self.pii.hash64(v));
                    } else {
                        part.distinct.update_str(v);
                    }
                    if all || c >= 2 {
                        part.top.update_with_count(v, c);
                    }
                }
                (count, nulls, part)
            })
            .collect();
        for (s, (count, nulls, mut part)) in parts.into_iter().enumerate() {
            let col = self.slices[s]
                .columns
                .entry(rule.name.clone())
                .or_insert_with(|| ColumnProfile {
                    count: 0,
                    nulls: 0,
                    numeric: None,
                    values: None,
                });
            col.count += count;
            col.nulls += nulls;
            if rule.pii {
                part.top = part.top.map_values(|v| self.pii.hash(v));
            }
            match &mut col.values {
                Some(existing) => {
                    existing
                        .distinct
                        .merge(&part.distinct)
                        .expect("same sketch parameters");
                    existing
                        .top
                        .merge(&part.top)
                        .expect("same sketch parameters");
                }
                None => col.values = Some(part),
            }
        }
    }

    /// Rows per label class and slice, from every row's class (see
    /// [`label_classes`]).
    fn update_labels(&mut self, classes: &(Vec<u32>, Vec<String>)) {
        let (of_row, names) = classes;
        let nclasses = names.len();
        let nslices = self.slices.len();
        let pairs: Vec<((u32, u32), u64)> =
            if nslices.saturating_mul(nclasses) <= 4 * of_row.len() + 1024 {
                let mut counts = vec![0u64; nslices * nclasses];
                for (&s, &c) in self.slice_of_row.iter().zip(of_row) {
                    if c != u32::MAX {
                        counts[s as usize * nclasses + c as usize] += 1;
                    }
                }
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(at, n)| (((at / nclasses) as u32, (at % nclasses) as u32), *n))
                    .collect()
            } else {
                let mut hashed: FastMap<(u32, u32), u64> = FastMap::default();
                for (&s, &c) in self.slice_of_row.iter().zip(of_row) {
                    if c != u32::MAX {
                        *hashed.entry((s, c)).or_default() += 1;
                    }
                }
                hashed.into_iter().collect()
            };
        for ((s, c), n) in pairs {
            let labels = &mut self.slices[s as usize].labels;
            match labels.get_mut(&names[c as usize]) {
                Some(have) => *have += n,
                None => {
                    labels.insert(names[c as usize].clone(), n);
                }
            }
        }
    }

    /// Rows and label classes per value (or bin) of a slice column or
    /// label feature, per slice. `read`: the column as this record batch's
    /// profiling already read it. With `keep`, also every row's value as an
    /// index into the names (the number of names: null, or not finite for
    /// a binned numeric column), for the joint cells.
    fn update_by_value(
        &mut self,
        column: &str,
        array: &ArrayRef,
        read: Option<&Read>,
        codes: &RowCodes,
        slots: &[u32],
        keep: bool,
    ) -> Result<Option<SliceKeys>, ProfileError> {
        let nslices = self.slices.len();
        let counter = self
            .counters
            .entry(column.to_string())
            .or_insert_with(ValueCounter::named);
        let (keys, stable, nv) = match self.binners.get(column) {
            Some(binner) => {
                let converted;
                let floats = match read {
                    Some(Read::Floats(f)) => f,
                    _ => {
                        converted = to_f64(array).map_err(|reason| ProfileError::Column {
                            column: column.to_string(),
                            kind: ColumnKind::Numeric,
                            reason,
                        })?;
                        &converted
                    }
                };
                let nv = counter.bin_names().len();
                let none = nv as u32;
                let mut keys: Vec<u32> = floats
                    .values()
                    .iter()
                    .map(|&v| if v.is_finite() { binner.bin(v) } else { none })
                    .collect();
                if let Some(nulls) = floats.nulls() {
                    for (k, valid) in keys.iter_mut().zip(nulls.iter()) {
                        if !valid {
                            *k = none;
                        }
                    }
                }
                (keys, None, nv)
            }
            None => {
                let converted;
                let dict = match read {
                    Some(Read::Dictionary(d)) => d,
                    _ => {
                        converted =
                            to_dictionary(array).map_err(|reason| ProfileError::Column {
                                column: column.to_string(),
                                kind: ColumnKind::Categorical,
                                reason,
                            })?;
                        &converted
                    }
                };
                let values = dict.values().as_string::<i32>();
                let names: Vec<String> = (0..values.len())
                    .map(|k| values.value(k).to_string())
                    .collect();
                let nv = names.len();
                let none = nv as u32;
                let stable = counter.stable_ids(&names);
                // a dictionary key to its value index, a null value to none
                let index: Vec<u32> = (0..nv)
                    .map(|k| if values.is_null(k) { none } else { k as u32 })
                    .collect();
                let dkeys = dict.keys();
                let mut keys: Vec<u32> = dkeys
                    .values()
                    .iter()
                    .map(|&k| index.get(k as usize).copied().unwrap_or(none))
                    .collect();
                if let Some(nulls) = dkeys.nulls() {
                    for (k, valid) in keys.iter_mut().zip(nulls.iter()) {
                        if !valid {
                            *k = none;
                        }
                    }
                }
                (keys, stable, nv)
            }
        };
        let rows = value_counts(codes, &keys, nv);
        counter.add(&rows, stable.as_deref(), slots, nslices);
        Ok(keep.then(|| SliceKeys {
            column: column.to_string(),
            keys,
            stable,
            values: nv,
        }))
    }

    /// The profiler's class slot (see [`ValueCounter`]) of each of one
    /// record batch's label classes; classes are numbered as first seen.
    fn class_slots(&mut self, classes: Option<&(Vec<u32>, Vec<String>)>) -> Vec<u32> {
        let Some((_, names)) = classes else {
            return Vec::new();
        };
        names
            .iter()
            .map(|name| index_of(&mut self.class_names, name) as u32 + 1)
            .collect()
    }

    /// Rows and label classes per joint cell of the slice columns, per
    /// slice. A row's cell is one mixed-radix number over the columns'
    /// indices (null is one more index per column): at most
    /// [`MAX_CELL_COLUMNS`] radices below 2³², so it fits in a `u128`.
    fn update_cells(
        &mut self,
        keyed: &[SliceKeys],
        classes: Option<&(Vec<u32>, Vec<String>)>,
        slots: &[u32],
    ) {
        let radix: Vec<u128> = keyed.iter().map(|k| k.values as u128 + 1).collect();
        let mut counts: FastMap<(u32, u128, u32), u64> = FastMap::default();
        for i in 0..self.slice_of_row.len() {
            let mut cell = 0u128;
            for (k, r) in keyed.iter().zip(&radix) {
                let v = k.keys[i];
                cell = cell * r + v as u128;
            }
            let class = classes.map_or(u32::MAX, |c| c.0[i]);
            *counts
                .entry((self.slice_of_row[i], cell, class))
                .or_default() += 1;
        }
        // each of the batch's cells to its stable id: its components'
        // stable ids (null: u32::MAX), 32 bits each; named when first seen
        let counters = &self.counters;
        let cells = self.cells.get_or_insert_with(ValueCounter::cells);
        let mut ids: FastMap<u128, u32> = FastMap::default();
        let mut rows: Vec<((u32, u32, u32), u64)> = Vec::with_capacity(counts.len());
        for ((s, cell, class), c) in counts {
            let id = *ids.entry(cell).or_insert_with(|| {
                let mut rest = cell;
                let mut parts: Vec<Option<u32>> = vec![None; keyed.len()];
                for (at, (k, r)) in keyed.iter().zip(&radix).enumerate().rev() {
                    let v = (rest % r) as usize;
                    rest /= r;
                    parts[at] =
                        (v < k.values).then(|| k.stable.as_ref().map_or(v as u32, |m| m[v]));
                }
                let key = parts
                    .iter()
                    .fold(0u128, |key, p| (key << 32) | p.unwrap_or(u32::MAX) as u128);
                cells.cell_id(key, || {
                    let names: Vec<&str> = keyed
                        .iter()
                        .zip(&parts)
                        .map(|(k, p)| p.map_or(NULL_VALUE, |id| counters[&k.column].name(id)))
                        .collect();
                    names.join(&CELL_SEPARATOR.to_string())
                })
            });
            rows.push(((s, id, class), c));
        }
        cells.add(&rows, None, slots, self.slices.len());
    }

    /// Finish: the profile of everything seen.
    pub fn finish(self) -> BatchProfile {
        self.finish_part().finish()
    }

    /// Finish as one part of a larger input (a row group of a file), to be
    /// merged with the other parts before its counts per value are written
    /// (see [`ProfilePart`]).
    pub fn finish_part(mut self) -> ProfilePart {
        for (name, mut slice) in self.slice_names.iter().cloned().zip(self.slices) {
            slice.canonicalize();
            self.profile.tags.insert(name, slice);
        }
        ProfilePart {
            profile: self.profile,
            slice_names: self.slice_names,
            counters: self.counters,
            cells: self.cells,
            class_names: self.class_names,
        }
    }
}

/// The profile of part of an input, its counts per value (slice columns,
/// label features, joint cells) still in counters by value id (`by_value::ValueCounter`).
///
/// The parts of a file are merged counter by counter and the maps by name
/// written once, by [`ProfilePart::finish`]; merging written profiles
/// instead rebuilt and re-merged those maps once per part (about a third of
/// what the label features cost on a file of 39 row groups). Below the
/// value cap both give the same counts; at the cap, each part's new values
/// are admitted in name order, as a record batch's are within a part.
///
/// ```text
/// row group 0 ─ Profiler ─ finish_part ─┐
/// row group 1 ─ Profiler ─ finish_part ─┤ merge, in row-group order
/// row group 2 ─ Profiler ─ finish_part ─┘  ─ finish ─▶ BatchProfile
/// ```
pub struct ProfilePart {
    /// Everything but `by_value` and `by_cell`, canonical.
    profile: BatchProfile,
    /// The counters' slice `i` is tag `slice_names[i]`.
    slice_names: Vec<String>,
    counters: BTreeMap<String, ValueCounter>,
    cells: Option<ValueCounter>,
    /// The counters' class slot `1 + i` is class `class_names[i]`.
    class_names: Vec<String>,
}

impl ProfilePart {
    /// Merge a later part of the same input into this one.
    pub fn merge(&mut self, other: &ProfilePart) -> Result<(), ProfileError> {
        self.profile.merge(&other.profile)?;
        let slice_of: Vec<usize> = other
            .slice_names
            .iter()
            .map(|name| index_of(&mut self.slice_names, name))
            .collect();
        let slot_of: Vec<usize> = std::iter::once(0)
            .chain(
                other
                    .class_names
                    .iter()
                    .map(|name| 1 + index_of(&mut self.class_names, name)),
            )
            .collect();
        for (column, theirs) in &other.counters {
            self.counters
                .entry(column.clone())
                .or_insert_with(|| theirs.empty_like())
                .merge(theirs, &slice_of, &slot_of);
        }
        if let Some(theirs) = &other.cells {
            self.cells
                .get_or_insert_with(|| theirs.empty_like())
                .merge(theirs, &slice_of, &slot_of);
        }
        Ok(())
    }

    /// The profile, its counts per value written as maps by name.
    pub fn finish(mut self) -> BatchProfile {
        for (s, name) in self.slice_names.iter().enumerate() {
            let slice = self
                .profile
                .tags
                .get_mut(name)
                .expect("every counted slice is a tag of the profile");
            for (column, counter) in &self.counters {
                let map = counter.write(s, &self.class_names);
                if !map.is_empty() {
                    slice.by_value.insert(column.clone(), map);
                }
            }
            if let Some(cells) = &self.cells {
                slice.by_cell = cells.write(s, &self.class_names);
            }
        }
        self.profile
    }
}

/// The position of `name` in `names`, appended if absent.
fn index_of(names: &mut Vec<String>, name: &str) -> usize {
    match names.iter().position(|n| n == name) {
        Some(at) => at,
        None => {
            names.push(name.to_string());
            names.len() - 1
        }
    }
}

/// Numeric statistics of a slice's non-null values (non-finite ones only counted).
fn numeric_part(values: &[f64], range: Option<(f64, f64)>, k: u16) -> NumericProfile {
    let mut n = 0u64;
    let mut sum = 0.0f64;
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    for &v in values {
        if v.is_finite() {
            n += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
    }
    let non_finite = values.len() as u64 - n;
    let mean = if n == 0 { 0.0 } else { sum / n as f64 };
    let mut m2 = 0.0;
    let mut quantiles = Quantiles::new(k);
    let (mut below, mut above) = (0u64, 0u64);
    let (lo, hi) = range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    // Sorting the values first (as order-preserving integer keys, which sort
    // fast) lets the t-digest merge its buffer as sorted runs instead of
    // sorting it: the same digest, a fraction of the work.
    let mut keys: Vec<u64> = Vec::with_capacity(n as usize);
    for &v in values {
        if v.is_finite() {
            let d = v - mean;
            m2 += d * d;
            below += (v < lo) as u64;
            above += (v > hi) as u64;
            keys.push(order_key(v));
        }
    }
    keys.sort_unstable();
    for key in keys {
        quantiles.update(from_order_key(key));
    }
    if n == 0 {
        (min, max) = (0.0, 0.0);
    }
    quantiles.canonicalize();
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

#[inline]
fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Any numeric, temporal or boolean array as f64 (timestamps as epoch microseconds).
fn to_f64(array: &ArrayRef) -> Result<Float64Array, String> {
    let dt = array.data_type();
    let arr: ArrayRef = match dt {
        DataType::Float64 => array.clone(),
        DataType::Timestamp(unit, _) => {
            let micros = if *unit == TimeUnit::Microsecond {
                array.clone()
            } else {
                cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
                    .map_err(|e| e.to_string())?
            };
            let ints = cast(&micros, &DataType::Int64).map_err(|e| e.to_string())?;
            cast(&ints, &DataType::Float64).map_err(|e| e.to_string())?
        }
        DataType::Date32 | DataType::Date64 => {
            let ts = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| e.to_string())?;
            let ints = cast(&ts, &DataType::Int64).map_err(|e| e.to_string())?;
            cast(&ints, &DataType::Float64).map_err(|e| e.to_string())?
        }
        DataType::Dictionary(_, _) => {
            let plain = cast(array, dict_value_type(dt)).map_err(|e| e.to_string())?;
            return to_f64(&plain);
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            return Err(format!(
                "it holds text ({dt}); declare it `kind: categorical` or `kind: text`"
            ));
        }
        _ => cast(array, &DataType::Float64).map_err(|e| e.to_string())?,
    };
    Ok(arr.as_primitive::<arrow::datatypes::Float64Type>().clone())
}

fn dict_value_type(dt: &DataType) -> &DataType {
    match dt {
        DataType::Dictionary(_, v) => v,
        other => other,
    }
}

/// Any array as a dictionary of Utf8 values with i32 keys (dictionaries are
/// re-keyed without touching rows; plain strings are interned once).
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

/// Label types whose classes are named by their integer value (`0`, `1`).
fn is_int_like(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// One record batch's rows as the counters per value see them: each row's
/// slice and label class as one code, `slice × classes + class`, where the
/// last class stands for no label. Computed once per record batch, shared
/// by every slice column and label feature.
struct RowCodes {
    codes: Vec<u64>,
    slices: usize,
    classes: usize,
}

impl RowCodes {
    fn new(
        slice_of_row: &[u32],
        classes: Option<&(Vec<u32>, Vec<String>)>,
        nslices: usize,
    ) -> RowCodes {
        let nclasses = classes.map_or(0, |c| c.1.len()) + 1;
        let (width, no_label) = (nclasses as u64, nclasses as u64 - 1);
        let codes = match classes {
            None => slice_of_row
                .iter()
                .map(|&s| s as u64 * width + no_label)
                .collect(),
            Some((of_row, _)) => slice_of_row
                .iter()
                .zip(of_row)
                .map(|(&s, &c)| s as u64 * width + if c == u32::MAX { no_label } else { c as u64 })
                .collect(),
        };
        RowCodes {
            codes,
            slices: nslices,
            classes: nclasses,
        }
    }

    /// A code's slice and class (`u32::MAX`: no label).
    fn split(&self, code: u64) -> (u32, u32) {
        let width = self.classes as u64;
        let class = code % width;
        let class = if class == width - 1 {
            u32::MAX
        } else {
            class as u32
        };
        ((code / width) as u32, class)
    }
}

/// Rows per (slice, value, label class) of a slice or feature column:
/// `((slice, value, class), rows)` for every non-zero count, in no order
/// (class `u32::MAX`: no label). `keys`: each row's value index, `nvalues`
/// for none. Counted in a dense array when that space is small next to the
/// rows (bins, codes, a dictionary page), else in a hash map
/// ([`count_hashed`]); both give the same counts.
fn value_counts(rows: &RowCodes, keys: &[u32], nvalues: usize) -> Vec<((u32, u32, u32), u64)> {
    let ncodes = rows.slices * rows.classes;
    let dense = ncodes.saturating_mul(nvalues + 1) <= 4 * keys.len() + 1024;
    if !dense {
        return count_hashed(rows, keys, nvalues);
    }
    // one row of codes per value, the last one for none
    let mut counts = vec![0u64; (nvalues + 1) * ncodes];
    for (&k, &code) in keys.iter().zip(&rows.codes) {
        counts[k as usize * ncodes + code as usize] += 1;
    }
    counts[..nvalues * ncodes]
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(at, c)| {
            let (slice, class) = rows.split((at % ncodes) as u64);
            ((slice, (at / ncodes) as u32, class), *c)
        })
        .collect()
}

/// [`value_counts`] in a hash map, for value spaces too large for an array.
fn count_hashed(rows: &RowCodes, keys: &[u32], nvalues: usize) -> Vec<((u32, u32, u32), u64)> {
    let mut counts: FastMap<(u64, u32), u64> = FastMap::default();
    for (&k, &code) in keys.iter().zip(&rows.codes) {
        if k as usize != nvalues {
            *counts.entry((code, k)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((code, k), c)| {
            let (slice, class) = rows.split(code);
            ((slice, k, class), c)
        })
        .collect()
}

/// The label class of every row (`u32::MAX` for a null label) and the
/// class names, named as [`Profiler`] names them in `labels`.
fn label_classes(array: &ArrayRef) -> Result<(Vec<u32>, Vec<String>), String> {
    let int_like = is_int_like(array.data_type());
    let mut names: Vec<String> = Vec::new();
    let mut ids: Vec<u32> = Vec::with_capacity(array.len());
    if int_like {
        let ints = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
        let ints: &Int64Array = ints.as_primitive();
        let mut seen: FastMap<i64, u32> = FastMap::default();
        for v in ints.iter() {
            ids.push(match v {
                Some(v) => *seen.entry(v).or_insert_with(|| {
                    names.push(v.to_string());
                    (names.len() - 1) as u32
                }),
                None => u32::MAX,
            });
        }
    } else {
        let dict = to_dictionary(array)?;
        let values = dict.values().as_string::<i32>();
        let map: Vec<u32> = (0..values.len())
            .map(|k| {
                if values.is_null(k) {
                    u32::MAX
                } else {
                    names.push(values.value(k).to_string());
                    (names.len() - 1) as u32
                }
            })
            .collect();
        for k in dict.keys().iter() {
            ids.push(k.map_or(u32::MAX, |k| map[k as usize]));
        }
    }
    Ok((ids, names))
}

fn to_dictionary(array: &ArrayRef) -> Result<DictionaryArray<Int32Type>, String> {
    match array.data_type() {
        DataType::Dictionary(k, v) if **v == DataType::Utf8 => match **k {
            DataType::Int32 => Ok(array.as_dictionary::<Int32Type>().clone()),
            DataType::Int8 => rekey(array.as_dictionary::<Int8Type>()),
            DataType::Int16 => rekey(array.as_dictionary::<Int16Type>()),
            DataType::Int64 => rekey(array.as_dictionary::<Int64Type>()),
            DataType::UInt8 => rekey(array.as_dictionary::<UInt8Type>()),
            DataType::UInt16 => rekey(array.as_dictionary::<UInt16Type>()),
            DataType::UInt32 => rekey(array.as_dictionary::<UInt32Type>()),
            DataType::UInt64 => rekey(array.as_dictionary::<UInt64Type>()),
            _ => Err(format!("unsupported dictionary key type {k}")),
        },
        DataType::Utf8 => Ok(intern(array.as_string::<i32>().iter())),
        DataType::LargeUtf8 => Ok(intern(array.as_string::<i64>().iter())),
        DataType::Utf8View => Ok(intern(array.as_string_view().iter())),
        _ => {
            let text = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
            Ok(intern(text.as_string::<i32>().iter()))
        }
    }
}

fn rekey<K: ArrowDictionaryKeyType>(
    d: &DictionaryArray<K>,
) -> Result<DictionaryArray<Int32Type>, String>
where
    K::Native: TryInto<i32>,
{
    let keys: PrimitiveArray<Int32Type> = d
        .keys()
        .iter()
        .map(|k| k.and_then(|k| k.try_into().ok()))
        .collect();
    let values = cast(d.values(), &DataType::Utf8).map_err(|e| e.to_string())?;
    DictionaryArray::try_new(keys, values).map_err(|e| e.to_string())
}

/// Build a dictionary from a string iterator with a deterministic hash map.
fn intern<'a>(iter: impl Iterator<Item = Option<&'a str>>) -> DictionaryArray<Int32Type> {
    let (lower, _) = iter.size_hint();
    let mut index: FastMap<&'a str, i32> =
        FastMap::with_capacity_and_hasher(lower, FixedState::default());
    let mut values: Vec<&'a str> = Vec::new();
    let keys: PrimitiveArray<Int32Type> = iter
        .map(|v| {
            v.map(|s| {
                *index.entry(s).or_insert_with(|| {
                    values.push(s);
                    (values.len() - 1) as i32
                })
            })
        })
        .collect();
    let values = StringArray::from(values);
    DictionaryArray::try_new(keys, std::sync::Arc::new(values)).expect("keys index values")
}

#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x5851_F42D_4C95_7F2D)
}

/// Fold one column into the per-row hashes used for duplicate detection.
fn hash_column(array: &ArrayRef, row_hash: &mut [u64]) {
    const NULL: u64 = 0xA5A5_5A5A_0F0F_F0F0;
    fn prim<T: ArrowPrimitiveType>(
        a: &PrimitiveArray<T>,
        out: &mut [u64],
        f: impl Fn(T::Native) -> u64,
    ) {
        match a.nulls() {
            None => {
                for (h, &v) in out.iter_mut().zip(a.values().iter()) {
                    *h = mix(*h, f(v));
                }
            }
            Some(n) => {
                for (i, (h, &v)) in out.iter_mut().zip(a.values().iter()).enumerate() {
                    *h = mix(*h, if n.is_valid(i) { f(v) } else { NULL });
                }
            }
        }
    }
    fn strs<'a>(it: impl Iterator<Item = Option<&'a str>>, out: &mut [u64]) {
        for (h, v) in out.iter_mut().zip(it) {
            let x = match v {
                Some(s) => twox_hash::XxHash3_64::oneshot(s.as_bytes()),
                None => NULL,
            };
            *h = mix(*h, x);
        }
    }
    use arrow::datatypes as t;
    match array.data_type() {
        DataType::Int8 => prim(array.as_primitive::<t::Int8Type>(), row_hash, |v| v as u64),
        DataType::Int16 => prim(array.as_primitive::<t::Int16Type>(), row_hash, |v| v as u64),
        DataType::Int32 => prim(array.as_primitive::<t::Int32Type>(), row_hash, |v| v as u64),
        DataType::Int64 => prim(array.as_primitive::<t::Int64Type>(), row_hash, |v| v as u64),
        DataType::UInt8 => prim(array.as_primitive::<t::UInt8Type>(), row_hash, |v| v as u64),
        DataType::UInt16 => prim(array.as_primitive::<t::UInt16Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::UInt32 => prim(array.as_primitive::<t::UInt32Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::UInt64 => prim(array.as_primitive::<t::UInt64Type>(), row_hash, |v| v),
        DataType::Float32 => prim(array.as_primitive::<t::Float32Type>(), row_hash, |v| {
            v.to_bits() as u64
        }),
        DataType::Float64 => prim(array.as_primitive::<t::Float64Type>(), row_hash, |v| {
            v.to_bits()
        }),
        DataType::Date32 => prim(array.as_primitive::<t::Date32Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::Date64 => prim(array.as_primitive::<t::Date64Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::Timestamp(TimeUnit::Second, _) => prim(
            array.as_primitive::<t::TimestampSecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => prim(
            array.as_primitive::<t::TimestampMillisecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => prim(
            array.as_primitive::<t::TimestampMicrosecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => prim(
            array.as_primitive::<t::TimestampNanosecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Boolean => {
            let b: &BooleanArray = array.as_boolean();
            for (h, v) in row_hash.iter_mut().zip(b.iter()) {
                *h = mix(*h, v.map(|v| v as u64 + 1).unwrap_or(NULL));
            }
        }
        DataType::Utf8 => strs(array.as_string::<i32>().iter(), row_hash),
        DataType::LargeUtf8 => strs(array.as_string::<i64>().iter(), row_hash),
        DataType::Utf8View => strs(array.as_string_view().iter(), row_hash),
        DataType::Dictionary(_, _) => {
            if let Ok(dict) = to_dictionary(array) {
                let values = dict.values().as_string::<i32>();
                let hashes: Vec<u64> = (0..values.len())
                    .map(|k| {
                        if values.is_null(k) {
                            NULL
                        } else {
                            twox_hash::XxHash3_64::oneshot(values.value(k).as_bytes())
                        }
                    })
                    .collect();
                for (h, k) in row_hash.iter_mut().zip(dict.keys().iter()) {
                    *h = mix(*h, k.map(|k| hashes[k as usize]).unwrap_or(NULL));
                }
            }
        }
        _ => {
            if let Ok(text) = cast(array, &DataType::Utf8) {
                strs(text.as_string::<i32>().iter(), row_hash);
            }
        }
    }
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
mod tests;
