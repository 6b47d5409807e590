//! Counts per value of a slice column or label feature, kept across record
//! batches in arrays.
//!
//! A profile keeps, per slice and column, rows and label classes per value
//! (`SliceProfile::by_value`, a map by name). Filling that map record batch
//! by record batch cost a sort and a string-keyed map update per (slice,
//! value, class) of every record batch: two thirds of what the features
//! cost. [`ValueCounter`] gives each value a stable integer id the first
//! time it is seen (a bin is its own id), adds each record batch's counts
//! into dense arrays by id, and writes the map once, in
//! [`ValueCounter::write`].
//!
//! ```text
//! record batch ──value_counts──▶ (slice, local value, local class) → rows
//!                                   │ ids: name → stable id (bins: itself)
//!                                   ▼
//!                 per slice: rows[class slot][stable id], admitted ids
//!                                   │ write (once, at finish)
//!                                   ▼
//!                 SliceProfile::by_value[column][name] = ValueLabels
//! ```
//!
//! The value cap is applied exactly as the map-by-map version applied it:
//! per slice, a value is kept if fewer than [`MAX_SLICE_VALUES`] values were
//! kept before it, values new in a record batch taken in name order; the
//! rows of the others count under [`OTHER_VALUES`].

use std::collections::BTreeMap;

use super::{FastMap, MAX_SLICE_VALUES, OTHER_VALUES, ValueLabels};

/// What one slice knows about a value id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admission {
    Unseen,
    Kept,
    Other,
}

/// One slice's counts of one column.
#[derive(Default)]
struct SliceCounts {
    /// Per class slot (0: no label; `1 + c`: the profiler's class `c`),
    /// per value id: rows.
    rows: Vec<Vec<u64>>,
    /// Per value id.
    admitted: Vec<Admission>,
    kept: usize,
    /// Per class slot: rows of values past the cap.
    other: Vec<u64>,
}

impl SliceCounts {
    fn add(&mut self, id: usize, slot: usize, c: u64) {
        if self.rows.len() <= slot {
            self.rows.resize_with(slot + 1, Vec::new);
        }
        let row = &mut self.rows[slot];
        if row.len() <= id {
            row.resize(id + 1, 0);
        }
        row[id] += c;
    }

    fn add_other(&mut self, slot: usize, c: u64) {
        if self.other.len() <= slot {
            self.other.resize(slot + 1, 0);
        }
        self.other[slot] += c;
    }
}

/// How a counter's values get their stable ids.
enum Ids {
    /// Value `i` is bin `i`.
    Bins,
    /// By name, as the record batches' dictionaries name them.
    Names(FastMap<String, u32>),
    /// By the joint cell's components' stable ids, 32 bits each.
    Cells(FastMap<u128, u32>),
}

/// Counts per value of one column (or per joint cell of the slice
/// columns), per slice, over a profiler's record batches.
pub(super) struct ValueCounter {
    /// Stable id to name.
    names: Vec<String>,
    ids: Ids,
    slices: Vec<SliceCounts>,
}

impl ValueCounter {
    /// A column whose values are named by the record batches' dictionaries.
    pub(super) fn named() -> ValueCounter {
        ValueCounter {
            names: Vec::new(),
            ids: Ids::Names(FastMap::default()),
            slices: Vec::new(),
        }
    }

    /// A binned column: value `i` is bin `i`, named `names[i]`.
    pub(super) fn binned(names: Vec<String>) -> ValueCounter {
        ValueCounter {
            names,
            ids: Ids::Bins,
            slices: Vec::new(),
        }
    }

    /// The joint cells of the slice columns.
    pub(super) fn cells() -> ValueCounter {
        ValueCounter {
            names: Vec::new(),
            ids: Ids::Cells(FastMap::default()),
            slices: Vec::new(),
        }
    }

    /// A counter of the same kind with no counts.
    pub(super) fn empty_like(&self) -> ValueCounter {
        match self.ids {
            Ids::Bins => ValueCounter::binned(self.names.clone()),
            Ids::Names(_) => ValueCounter::named(),
            Ids::Cells(_) => ValueCounter::cells(),
        }
    }

    /// The bins' names (empty for a named column).
    pub(super) fn bin_names(&self) -> &[String] {
        match self.ids {
            Ids::Bins => &self.names,
            _ => &[],
        }
    }

    /// The name of stable id `id`.
    pub(super) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// The stable ids of one record batch's value names (`None` for bins,
    /// which are their own ids).
    pub(super) fn stable_ids(&mut self, local: &[String]) -> Option<Vec<u32>> {
        let Ids::Names(ids) = &mut self.ids else {
            return None;
        };
        let names = &mut self.names;
        Some(
            local
                .iter()
                .map(|n| match ids.get(n.as_str()) {
                    Some(&id) => id,
                    None => {
                        let id = names.len() as u32;
                        names.push(n.clone());
                        ids.insert(n.clone(), id);
                        id
                    }
                })
                .collect(),
        )
    }

    /// The stable id of the joint cell whose components' stable ids make
    /// `key`; `name` names it the first time.
    pub(super) fn cell_id(&mut self, key: u128, name: impl FnOnce() -> String) -> u32 {
        let Ids::Cells(ids) = &mut self.ids else {
            unreachable!("cell ids of a column counter");
        };
        *ids.entry(key).or_insert_with(|| {
            self.names.push(name());
            (self.names.len() - 1) as u32
        })
    }

    /// Add one record batch's counts: `rows` as [`super::labels::value_counts`]
    /// returns them, `stable` the stable id of each of the batch's values
    /// (`None`: the values are stable ids already), `slot_of_class` the
    /// class slot of each of the batch's label classes.
    pub(super) fn add(
        &mut self,
        rows: &[((u32, u32, u32), u64)],
        stable: Option<&[u32]>,
        slot_of_class: &[u32],
        nslices: usize,
    ) {
        if self.slices.len() < nslices {
            self.slices.resize_with(nslices, SliceCounts::default);
        }
        let id_of = |v: u32| -> usize { stable.map_or(v, |m| m[v as usize]) as usize };
        // values new to a slice in this batch, admitted in name order
        let mut new: Vec<(u32, u32)> = Vec::new();
        for &((s, v, _), _) in rows {
            let id = id_of(v);
            let slice = &mut self.slices[s as usize];
            if slice.admitted.len() <= id {
                slice.admitted.resize(id + 1, Admission::Unseen);
            }
            if slice.admitted[id] == Admission::Unseen {
                // marked Other until admitted below, so it is listed once
                slice.admitted[id] = Admission::Other;
                new.push((s, id as u32));
            }
        }
        if !new.is_empty() {
            new.sort_unstable_by(|a, b| {
                (a.0, self.names[a.1 as usize].as_str())
                    .cmp(&(b.0, self.names[b.1 as usize].as_str()))
            });
            for (s, id) in new {
                let slice = &mut self.slices[s as usize];
                if slice.kept < MAX_SLICE_VALUES {
                    slice.kept += 1;
                    slice.admitted[id as usize] = Admission::Kept;
                }
            }
        }
        for &((s, v, class), c) in rows {
            let id = id_of(v);
            let slot = if class == u32::MAX {
                0
            } else {
                slot_of_class[class as usize] as usize
            };
            let slice = &mut self.slices[s as usize];
            match slice.admitted[id] {
                Admission::Kept => slice.add(id, slot, c),
                _ => slice.add_other(slot, c),
            }
        }
    }

    /// Add another profiler's counts of the same column (a later part of
    /// the same file): `slice_of[s]` is this counter's slice for the
    /// other's slice `s`, `slot_of[k]` this counter's class slot for the
    /// other's slot `k`. Values are matched by name. Per slice, the
    /// other's kept values that are new here are admitted in name order
    /// while fewer than [`MAX_SLICE_VALUES`] are kept, as a record batch's
    /// are; the rest, and the other's rows past its own cap, count under
    /// [`OTHER_VALUES`]. Below the cap, the result is the sum of the two.
    ///
    /// A merged counter is keyed by name: it is written, or merged again,
    /// never updated with a record batch.
    pub(super) fn merge(&mut self, other: &ValueCounter, slice_of: &[usize], slot_of: &[usize]) {
        if let Ids::Cells(_) = self.ids {
            let mut by_name = FastMap::default();
            for (id, n) in self.names.iter().enumerate() {
                by_name.entry(n.clone()).or_insert(id as u32);
            }
            self.ids = Ids::Names(by_name);
        }
        // bins are their own ids; names get this counter's stable ids
        let id_of: Vec<u32> = self
            .stable_ids(&other.names)
            .unwrap_or_else(|| (0..other.names.len() as u32).collect());
        for (s, theirs) in other.slices.iter().enumerate() {
            let at = slice_of[s];
            if self.slices.len() <= at {
                self.slices.resize_with(at + 1, SliceCounts::default);
            }
            let mine = &mut self.slices[at];
            let mut new: Vec<u32> = Vec::new();
            for (id, a) in theirs.admitted.iter().enumerate() {
                if *a != Admission::Kept {
                    continue;
                }
                let id = id_of[id] as usize;
                if mine.admitted.len() <= id {
                    mine.admitted.resize(id + 1, Admission::Unseen);
                }
                if mine.admitted[id] == Admission::Unseen {
                    mine.admitted[id] = Admission::Other;
                    new.push(id as u32);
                }
            }
            new.sort_unstable_by(|a, b| self.names[*a as usize].cmp(&self.names[*b as usize]));
            for id in new {
                if mine.kept < MAX_SLICE_VALUES {
                    mine.kept += 1;
                    mine.admitted[id as usize] = Admission::Kept;
                }
            }
            for (slot, row) in theirs.rows.iter().enumerate() {
                let to = slot_of[slot];
                for (id, &c) in row.iter().enumerate() {
                    if c == 0 {
                        continue;
                    }
                    let id = id_of[id] as usize;
                    match mine.admitted[id] {
                        Admission::Kept => mine.add(id, to, c),
                        _ => mine.add_other(to, c),
                    }
                }
            }
            for (slot, &c) in theirs.other.iter().enumerate() {
                if c > 0 {
                    mine.add_other(slot_of[slot], c);
                }
            }
        }
    }

    /// Slice `s`'s counts as a map by value name (empty if it counted no
    /// row); `class_names[c]` names class slot `1 + c`.
    pub(super) fn write(&self, s: usize, class_names: &[String]) -> BTreeMap<String, ValueLabels> {
        let mut map: BTreeMap<String, ValueLabels> = BTreeMap::new();
        let Some(slice) = self.slices.get(s) else {
            return map;
        };
        let labels_of = |counts: &dyn Fn(usize) -> u64| -> ValueLabels {
            let mut v = ValueLabels::default();
            for slot in 0..slice.rows.len().max(slice.other.len()) {
                let c = counts(slot);
                if c == 0 {
                    continue;
                }
                v.rows += c;
                if slot > 0 {
                    v.labels.insert(class_names[slot - 1].clone(), c);
                }
            }
            v
        };
        for (id, a) in slice.admitted.iter().enumerate() {
            if *a != Admission::Kept {
                continue;
            }
            let v = labels_of(&|slot| {
                slice
                    .rows
                    .get(slot)
                    .and_then(|r| r.get(id))
                    .copied()
                    .unwrap_or(0)
            });
            map.entry(self.names[id].clone()).or_default().add(&v);
        }
        let other = labels_of(&|slot| slice.other.get(slot).copied().unwrap_or(0));
        if other.rows > 0 {
            map.entry(OTHER_VALUES.to_string()).or_default().add(&other);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("v{i:05}")).collect()
    }

    #[test]
    fn values_past_the_cap_count_as_other_values_new_ones_taken_in_name_order() {
        let mut counter = ValueCounter::named();
        let cap = MAX_SLICE_VALUES;
        // batch 1: cap - 2 values in slice 0, one row each, class 0
        let first = names(10..10 + cap - 2);
        let rows: Vec<_> = (0..first.len() as u32).map(|v| ((0, v, 0), 1)).collect();
        let ids = counter.stable_ids(&first);
        counter.add(&rows, ids.as_deref(), &[1], 1);
        // batch 2, its dictionary in another order: two known values and
        // four new ones, of which the two first by name are kept
        let second: Vec<String> = ["v99999", "v00010", "v00003", "v00001", "v00011", "v00002"]
            .map(String::from)
            .to_vec();
        let rows: Vec<_> = (0..second.len() as u32)
            .map(|v| ((0, v, u32::MAX), 2))
            .collect();
        let ids = counter.stable_ids(&second);
        counter.add(&rows, ids.as_deref(), &[1], 1);
        let map = counter.write(0, &["1".to_string()]);
        assert_eq!(map.len(), cap + 1);
        assert!(map.contains_key("v00001") && map.contains_key("v00002"));
        assert!(!map.contains_key("v00003") && !map.contains_key("v99999"));
        let other = &map[OTHER_VALUES];
        assert_eq!((other.rows, other.labels.len()), (4, 0));
        let known = &map["v00010"];
        assert_eq!(known.rows, 3);
        assert_eq!(known.labels.get("1"), Some(&1));
        let total: u64 = map.values().map(|v| v.rows).sum();
        assert_eq!(total, (cap - 2) as u64 + 12);
    }

    #[test]
    fn bins_are_their_own_ids_and_classes_their_slots() {
        let mut counter = ValueCounter::binned(vec!["< 1".into(), ">= 1".into()]);
        counter.add(
            &[((1, 1, 0), 5), ((1, 1, 1), 2), ((0, 0, u32::MAX), 1)],
            None,
            &[2, 1],
            2,
        );
        let classes = ["1".to_string(), "0".to_string()];
        let one = counter.write(1, &classes);
        assert_eq!(one.len(), 1);
        assert_eq!(one[">= 1"].rows, 7);
        assert_eq!(one[">= 1"].labels["0"], 5);
        assert_eq!(one[">= 1"].labels["1"], 2);
        let zero = counter.write(0, &classes);
        assert_eq!((zero["< 1"].rows, zero["< 1"].labels.len()), (1, 0));
        assert!(counter.write(2, &classes).is_empty());
    }

    #[test]
    fn a_merge_admits_new_values_in_name_order_up_to_the_cap_and_keeps_every_row() {
        let cap = MAX_SLICE_VALUES;
        let part = |values: Vec<String>, class: u32| {
            let mut c = ValueCounter::named();
            let rows: Vec<_> = (0..values.len() as u32).map(|v| ((0, v, 0), 1)).collect();
            let ids = c.stable_ids(&values);
            c.add(&rows, ids.as_deref(), &[class], 1);
            c
        };
        // part one: cap - 1 values, class "a"; part two, its first slice
        // being part one's slice 0: one known value and three new ones,
        // of which the first by name is kept, class "b"
        let mut one = part(names(100..100 + cap - 1), 1);
        let two = part(
            ["v99999", "v00100", "v00002", "v00001"]
                .map(String::from)
                .to_vec(),
            1,
        );
        one.merge(&two, &[0], &[0, 2]);
        let map = one.write(0, &["a".to_string(), "b".to_string()]);
        assert_eq!(map.len(), cap + 1);
        assert!(map.contains_key("v00001"));
        assert!(!map.contains_key("v00002") && !map.contains_key("v99999"));
        assert_eq!(map[OTHER_VALUES].rows, 2);
        assert_eq!(map[OTHER_VALUES].labels["b"], 2);
        let known = &map["v00100"];
        assert_eq!(
            (known.rows, known.labels["a"], known.labels["b"]),
            (2, 1, 1)
        );
        let total: u64 = map.values().map(|v| v.rows).sum();
        assert_eq!(total, (cap - 1) as u64 + 4);
    }
}
