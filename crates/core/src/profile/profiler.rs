//! The [`Profiler`]'s main path: each record batch's rows assigned to
//! their trust-tag slices, then every monitored column profiled per slice
//! with typed loops (numeric: moments, declared-range violations, the
//! quantile sketch; categorical and text: distinct count and heavy
//! hitters), and each row's hash for duplicates. Counting per value and
//! label class is in [`super::labels`]; reading arrays in [`super::arrays`].

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayAccessor, ArrayRef, AsArray, DictionaryArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type};

use super::arrays::{NULL_HASH, fold_hashes, hash_column, to_dictionary, value_hash};
use super::bins::Binner;
use super::by_value::ValueCounter;
use super::labels::{ProfilePart, RowCodes, label_classes};
use super::{
    BatchProfile, Distinct, MAX_CELL_COLUMNS, PROFILE_FORMAT, ProfileError, Profiler, Read,
    SliceProfile, TextSeen, TopValues, UNTAGGED, ValuesProfile, bin_names, logical_type,
};
use crate::pii::PiiKey;
use crate::rules::{ColumnKind, ColumnRule, Rules, TrustSource};

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
            pending_keys: Vec::new(),
            pending_total: 0,
            run_buffers: Default::default(),
            text_hash: Vec::new(),
            text_seen: Vec::new(),
            text_buckets: Vec::new(),
            batch_slice_rows: Vec::new(),
            slice_order: Vec::new(),
            slice_starts: Vec::new(),
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
        self.batch_slice_rows.clear();
        self.batch_slice_rows.resize(nslices, 0);
        for &s in &self.slice_of_row {
            self.batch_slice_rows[s as usize] += 1;
        }
        for (s, &c) in self.batch_slice_rows.iter().enumerate() {
            self.slices[s].rows += c as u64;
        }
        self.group_rows_by_slice();

        self.row_hash.clear();
        self.row_hash.resize(n, 0x9E37_79B9_7F4A_7C15);

        let rules = self.rules;
        let valued = rules.valued_columns();
        let mut read: Vec<(&str, Read)> = Vec::with_capacity(valued.len());
        for rule in &rules.columns {
            let Some(array) = batch.column_by_name(&rule.name) else {
                continue;
            };
            let as_read = if rule.kind.is_numeric_like() {
                hash_column(array, &mut self.row_hash);
                Some(Read::Floats(self.update_numeric(rule, array)?))
            } else if rule.kind == ColumnKind::Text && self.update_plain_text(rule, array) {
                None
            } else {
                hash_column(array, &mut self.row_hash);
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
                .update_hash(h);
        }
        Ok(())
    }

    /// Fill `slice_order` and `slice_starts` from `slice_of_row` and
    /// `batch_slice_rows` (a counting sort: stable, so row order is kept
    /// within each slice).
    fn group_rows_by_slice(&mut self) {
        self.slice_starts.clear();
        self.slice_starts.push(0);
        let mut at = 0;
        for &c in &self.batch_slice_rows {
            at += c;
            self.slice_starts.push(at);
        }
        self.slice_order.clear();
        self.slice_order.resize(at, 0);
        let mut next = self.slice_starts.clone();
        for (i, &s) in self.slice_of_row.iter().enumerate() {
            let to = &mut next[s as usize];
            self.slice_order[*to] = i as u32;
            *to += 1;
        }
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

    /// A text column read as plain strings (not a dictionary): profiled,
    /// and folded into the row hashes. False for any other array type.
    ///
    /// Free text rarely repeats: interning it would copy every value for
    /// nothing, so plain text goes straight into the sketches.
    fn update_plain_text(&mut self, rule: &ColumnRule, array: &ArrayRef) -> bool {
        match array.data_type() {
            DataType::Utf8 => self.update_text(rule, array.as_string::<i32>()),
            DataType::LargeUtf8 => self.update_text(rule, array.as_string::<i64>()),
            DataType::Utf8View => self.update_text(rule, array.as_string_view()),
            _ => return false,
        }
        true
    }

    /// The column as a dictionary, for a caller that counts it per value.
    fn update_values(
        &mut self,
        rule: &ColumnRule,
        array: &ArrayRef,
    ) -> Result<Option<DictionaryArray<Int32Type>>, ProfileError> {
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
            let col = self.slices[s].columns.entry(rule.name.clone()).or_default();
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
                    vp.distinct.update_hash(self.pii.hash64(v));
                    vp.top.update_with_count(&self.pii.hash(v), c);
                } else {
                    vp.distinct.update_hash(value_hash(v));
                    vp.top.update_with_count(v, c);
                }
            }
        }
        Ok(Some(dict))
    }

    /// Value statistics of a text column. Each value is hashed once
    /// ([`value_hash`]): the hashes go into the row hashes, key the count
    /// of each distinct value per slice in this record batch (a table of
    /// positions, reused from batch to batch; values are compared only when
    /// hashes are equal, never copied), and feed the column's
    /// distinct-count sketch once per distinct value, directly: a sketch per
    /// record batch merged into it gave the same estimate, bit for bit, at
    /// the cost of a promotion from list to array and a union per batch
    /// (see the sketch tests). The top values are still counted per record
    /// batch and then merged, so that a purge sees whole batches. When a
    /// record batch holds more
    /// distinct values than the top-values sketch keeps exactly, only values
    /// seen at least twice update that sketch: a value seen once in
    /// a record batch of `decode::parquet::BATCH_ROWS` (the `dqmon` crate) rows can never
    /// reach a top share, so skipping it changes a count by at most one per
    /// record batch while sparing a heap copy per unique string. Raw values of
    /// pii columns reach no sketch: the distinct count takes their keyed
    /// 64-bit hash, the top values their keyed text hash. Distinct values
    /// reach the sketches in order of first row, whatever the table's
    /// history.
    fn update_text<'a, A>(&mut self, rule: &ColumnRule, values: A)
    where
        A: ArrayAccessor<Item = &'a str> + Copy,
    {
        let n = values.len();
        let nslices = self.slices.len();
        let sketch = &self.rules.sketch;
        self.text_hash.clear();
        self.text_hash.extend((0..n).map(|i| {
            if values.is_valid(i) {
                value_hash(values.value(i))
            } else {
                NULL_HASH
            }
        }));
        fold_hashes(&self.text_hash, &mut self.row_hash);
        if self.text_seen.len() < nslices {
            self.text_seen.resize_with(nslices, TextSeen::default);
        }
        let hashes = &self.text_hash;
        let mut tallies = vec![(0u64, 0u64); nslices];
        count_distinct(
            values,
            hashes,
            &self.slice_of_row,
            &self.batch_slice_rows,
            &mut self.text_seen[..nslices],
            &mut self.text_buckets,
            &mut tallies,
        );
        let lg_k = sketch.hll_lg_k;
        let map_size = sketch.frequent_items_map;
        for (s, (count, nulls)) in tallies.into_iter().enumerate() {
            let seen = &self.text_seen[s];
            let col = self.slices[s].columns.entry(rule.name.clone()).or_default();
            col.count += count;
            col.nulls += nulls;
            let had_values = col.values.is_some();
            let vp = col.values.get_or_insert_with(|| ValuesProfile {
                distinct: Distinct::new(lg_k),
                top: TopValues::new(map_size),
            });
            let mut top = TopValues::new(map_size);
            // few distinct values: the top-values sketch stays exact, feed it all
            let all = seen.first.len() * 4 <= map_size * 3;
            for &(j, c) in &seen.first {
                let v = values.value(j as usize);
                vp.distinct.update_hash(if rule.pii {
                    self.pii.hash64(v)
                } else {
                    hashes[j as usize]
                });
                if all || c >= 2 {
                    top.update_with_count(v, c);
                }
            }
            if rule.pii {
                top = top.map_values(|v| self.pii.hash(v));
            }
            if had_values {
                vp.top.merge(&top).expect("same sketch parameters");
            } else {
                vp.top = top;
            }
        }
    }
}

/// Bits of a value hash that pick its bucket in [`count_distinct`]'s
/// filter: 2^16 buckets, two bitmaps of 8 KiB.
const TEXT_BUCKET_BITS: u32 = 16;

/// Each distinct non-null value of a text column in this record batch,
/// per slice: `seen[s].first` lists (first row, rows) in order of first
/// row; `tallies[s]` counts the slice's (non-null, null) rows. `hashes`
/// holds every row's [`value_hash`], `rows` every slice's rows.
///
/// Values are counted in a table keyed by their hash, compared only when
/// hashes are equal. Most free text is unique within a record batch, so a
/// first pass marks each hash's bucket (its top [`TEXT_BUCKET_BITS`] bits)
/// as met once or more than once: a row whose bucket no other row meets
/// holds a value no other row holds, and is listed without a table lookup
/// (about 88% of the rows of 8,192 unique values; a bucket shared by two
/// values only sends both to the table).
pub(super) fn count_distinct<'a, A>(
    values: A,
    hashes: &[u64],
    slice_of_row: &[u32],
    rows: &[usize],
    seen: &mut [TextSeen],
    buckets: &mut Vec<u64>,
    tallies: &mut [(u64, u64)],
) where
    A: ArrayAccessor<Item = &'a str> + Copy,
{
    for (seen, &rows) in seen.iter_mut().zip(rows) {
        seen.table.clear();
        seen.first.clear();
        // at most one entry per row: no rehash while counting
        let TextSeen { table, first } = seen;
        table.reserve(rows, |&at| hashes[first[at as usize].0 as usize]);
    }
    let words = 1usize << (TEXT_BUCKET_BITS - 6);
    buckets.clear();
    buckets.resize(2 * words, 0);
    let (once, again) = buckets.split_at_mut(words);
    // nulls mark their hash's bucket too: harmless, they are skipped below
    for &h in hashes {
        let b = (h >> (64 - TEXT_BUCKET_BITS)) as usize;
        let (w, bit) = (b >> 6, 1u64 << (b & 63));
        again[w] |= once[w] & bit;
        once[w] |= bit;
    }
    for (i, &h) in hashes.iter().enumerate() {
        let s = slice_of_row[i] as usize;
        if values.is_null(i) {
            tallies[s].1 += 1;
            continue;
        }
        tallies[s].0 += 1;
        let TextSeen { table, first } = &mut seen[s];
        let b = (h >> (64 - TEXT_BUCKET_BITS)) as usize;
        if again[b >> 6] & (1u64 << (b & 63)) == 0 {
            first.push((i as u32, 1));
            continue;
        }
        let same = |&at: &u32| {
            let j = first[at as usize].0 as usize;
            hashes[j] == h && values.value(j) == values.value(i)
        };
        match table.find(h, same) {
            Some(&at) => first[at as usize].1 += 1,
            None => {
                table.insert_unique(h, first.len() as u32, |&at| {
                    hashes[first[at as usize].0 as usize]
                });
                first.push((i as u32, 1));
            }
        }
    }
}

impl<'r> Profiler<'r> {
    /// Finish: the profile of everything seen.
    pub fn finish(self) -> BatchProfile {
        self.finish_part().finish()
    }

    /// Finish as one part of a larger input (a row group of a file), to be
    /// merged with the other parts before its counts per value are written
    /// (see [`ProfilePart`]).
    pub fn finish_part(mut self) -> ProfilePart {
        self.flush_quantiles()
            .expect("pending values merge into sketches of their own parameters");
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
