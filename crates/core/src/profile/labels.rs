//! Counts per value and label class: rows per label class and slice, rows
//! per (slice, value, class) of every slice column and label feature, and
//! the joint cells of the slice columns. Counts stay in [`ValueCounter`]s,
//! by stable value id, until a profile is written: the parts of a file
//! merge as counters ([`ProfilePart`]) and the maps by name are written once.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use super::arrays::{to_dictionary, to_f64};
use super::by_value::ValueCounter;
use super::{
    BatchProfile, CELL_SEPARATOR, FastMap, NULL_VALUE, ProfileError, Profiler, Read, SliceKeys,
};
use crate::rules::ColumnKind;

impl<'r> Profiler<'r> {
    /// Rows per label class and slice, from every row's class (see
    /// [`label_classes`]).
    pub(super) fn update_labels(&mut self, classes: &(Vec<u32>, Vec<String>)) {
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
    pub(super) fn update_by_value(
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
    pub(super) fn class_slots(&mut self, classes: Option<&(Vec<u32>, Vec<String>)>) -> Vec<u32> {
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
    /// [`MAX_CELL_COLUMNS`](super::MAX_CELL_COLUMNS) radices below 2³², so it fits in a `u128`.
    pub(super) fn update_cells(
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
    pub(super) profile: BatchProfile,
    /// The counters' slice `i` is tag `slice_names[i]`.
    pub(super) slice_names: Vec<String>,
    pub(super) counters: BTreeMap<String, ValueCounter>,
    pub(super) cells: Option<ValueCounter>,
    /// The counters' class slot `1 + i` is class `class_names[i]`.
    pub(super) class_names: Vec<String>,
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
pub(super) struct RowCodes {
    codes: Vec<u64>,
    slices: usize,
    classes: usize,
}

impl RowCodes {
    pub(super) fn new(
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
pub(super) fn value_counts(
    rows: &RowCodes,
    keys: &[u32],
    nvalues: usize,
) -> Vec<((u32, u32, u32), u64)> {
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
pub(super) fn count_hashed(
    rows: &RowCodes,
    keys: &[u32],
    nvalues: usize,
) -> Vec<((u32, u32, u32), u64)> {
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
pub(super) fn label_classes(array: &ArrayRef) -> Result<(Vec<u32>, Vec<String>), String> {
    let int_like = is_int_like(array.data_type());
    let mut names: Vec<String> = Vec::new();
    let mut ids: Vec<u32> = Vec::with_capacity(array.len());
    if int_like {
        let ints = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
        let ints: &Int64Array = ints.as_primitive();
        // a label usually has few classes: found by a scan of those seen
        // (in order of first row, so a class's id is its index), faster
        // than a hash; past `SCANNED` classes, by a map
        const SCANNED: usize = 16;
        let mut seen: Vec<i64> = Vec::new();
        let mut many: FastMap<i64, u32> = FastMap::default();
        let mut id_of = |v: i64| {
            let found = if seen.len() <= SCANNED {
                seen.iter().position(|&s| s == v).map(|at| at as u32)
            } else {
                many.get(&v).copied()
            };
            found.unwrap_or_else(|| {
                let id = seen.len() as u32;
                seen.push(v);
                names.push(v.to_string());
                if seen.len() > SCANNED {
                    if many.is_empty() {
                        many.extend(seen.iter().enumerate().map(|(i, &s)| (s, i as u32)));
                    } else {
                        many.insert(v, id);
                    }
                }
                id
            })
        };
        match ints.nulls() {
            None => ids.extend(ints.values().iter().map(|&v| id_of(v))),
            Some(_) => ids.extend(ints.iter().map(|v| v.map_or(u32::MAX, &mut id_of))),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    /// Integer labels get ids in order of first row, nulls `u32::MAX`,
    /// whether the classes are few (scanned) or many (mapped): the same
    /// ids a map from value to first-seen index gives.
    #[test]
    fn integer_classes_are_numbered_in_order_of_first_row() {
        for classes in [2i64, 16, 17, 40] {
            let rows: Vec<Option<i64>> = (0..500i64)
                .map(|i| (i % 7 != 3).then_some((i * 7919 + 13) % classes - 5))
                .collect();
            let array: ArrayRef = Arc::new(Int64Array::from(rows.clone()));
            let (ids, names) = label_classes(&array).unwrap();
            let mut first: Vec<i64> = Vec::new();
            for (row, id) in rows.iter().zip(&ids) {
                match row {
                    None => assert_eq!(*id, u32::MAX),
                    Some(v) => {
                        let at = first.iter().position(|f| f == v).unwrap_or_else(|| {
                            first.push(*v);
                            first.len() - 1
                        });
                        assert_eq!(*id as usize, at, "{classes} classes");
                    }
                }
            }
            let expected: Vec<String> = first.iter().map(i64::to_string).collect();
            assert_eq!(names, expected);
            assert_eq!(names.len() as i64, classes);
        }
    }
}
