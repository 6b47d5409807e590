//! Tests of the text path (each value hashed once, counted in a table
//! keyed by that hash) against the dictionary path, and of the profile
//! format check that keeps sketches of different hashes apart.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use proptest::prelude::*;

use super::tests::{TAGS, batch, key, rules};
use super::*;
use crate::rules::{ColumnKind, ColumnRule, Rules};

/// A profile of another format (its sketches hash values differently) is
/// refused on either side of a merge: merging it would count a value once
/// per format.
#[test]
fn merging_other_formats_is_refused_on_either_side() {
    let r = rules();
    let current = profile_batches(&r, &key(), [&batch(&[])]).unwrap();
    let mut old = current.clone();
    old.format = PROFILE_FORMAT - 1;
    let mut left = old.clone();
    assert!(matches!(
        left.merge(&current),
        Err(ProfileError::Format { found }) if found == PROFILE_FORMAT - 1
    ));
    let mut right = current.clone();
    assert!(matches!(
        right.merge(&old),
        Err(ProfileError::Format { found }) if found == PROFILE_FORMAT - 1
    ));
    let mut same = current.clone();
    same.merge(&current).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A text column profiles the same whether it arrives as plain strings
    /// (`Utf8`, `LargeUtf8`, `Utf8View`: hashed once per value and counted
    /// in a table keyed by that hash) or as a dictionary (counted per key):
    /// counts, nulls, exact top values (small vocabulary), the distinct
    /// estimate and the duplicate-row sketch, per trust tag. Values repeat
    /// within and across tags, nulls included.
    #[test]
    fn text_profiles_the_same_in_every_string_layout(
        rows in prop::collection::vec(
            (prop::option::weighted(0.9, 0usize..40), 0usize..TAGS.len()),
            1..600,
        ),
    ) {
        use arrow::array::{DictionaryArray, LargeStringArray, StringViewArray};
        use arrow::datatypes::Int32Type;
        let mut r = Rules::for_tests(
            "t",
            vec![ColumnRule {
                name: "note".into(),
                kind: ColumnKind::Text,
                range: None,
                pii: false,
                nullable: true,
            }],
        );
        r.slices.clear();
        let text: Vec<Option<String>> = rows
            .iter()
            .map(|(v, _)| v.map(|v| format!("note number {v} of a short free text")))
            .collect();
        let tags: ArrayRef = Arc::new(
            rows.iter().map(|(_, t)| Some(TAGS[*t])).collect::<StringArray>(),
        );
        let layouts: Vec<ArrayRef> = vec![
            Arc::new(text.iter().map(|v| v.as_deref()).collect::<StringArray>()),
            Arc::new(text.iter().map(|v| v.as_deref()).collect::<LargeStringArray>()),
            Arc::new(text.iter().map(|v| v.as_deref()).collect::<StringViewArray>()),
            Arc::new(
                text.iter()
                    .map(|v| v.as_deref())
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
        ];
        let profiles: Vec<BatchProfile> = layouts
            .into_iter()
            .map(|note| {
                let schema = Arc::new(Schema::new(vec![
                    Field::new("note", note.data_type().clone(), true),
                    Field::new("trust_tag", DataType::Utf8, true),
                ]));
                let b = RecordBatch::try_new(schema, vec![note, tags.clone()]).unwrap();
                profile_batches(&r, &key(), [&b]).unwrap()
            })
            .collect();
        let plain = &profiles[0];
        for other in &profiles[1..] {
            prop_assert_eq!(
                plain.tags.keys().collect::<Vec<_>>(),
                other.tags.keys().collect::<Vec<_>>()
            );
            for (tag, slice) in &plain.tags {
                let o = &other.tags[tag];
                let (a, b) = (&slice.columns["note"], &o.columns["note"]);
                prop_assert_eq!((a.count, a.nulls), (b.count, b.nulls));
                let (va, vb) = (a.values.as_ref().unwrap(), b.values.as_ref().unwrap());
                prop_assert_eq!(va.top.all(), vb.top.all());
                prop_assert_eq!(va.distinct.estimate(), vb.distinct.estimate());
                prop_assert_eq!(slice.duplicate_share(), o.duplicate_share());
            }
        }
        // and the counts are the true ones
        for (tag, slice) in &plain.tags {
            let t = TAGS.iter().position(|x| x == tag).unwrap();
            let mut want: std::collections::BTreeMap<String, u64> = Default::default();
            for (v, _) in rows.iter().filter(|(_, tt)| *tt == t) {
                if let Some(v) = v {
                    *want.entry(format!("note number {v} of a short free text")).or_default() += 1;
                }
            }
            let got: std::collections::BTreeMap<String, u64> = slice.columns["note"]
                .values
                .as_ref()
                .unwrap()
                .top
                .all()
                .iter()
                .map(|v| (v.value.clone(), v.count))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}

/// Counting a record batch's text values per slice gives what a map from
/// value to (first row, rows) gives, in order of first row: batches of 1
/// to 9,000 rows, vocabularies from 3 values (every bucket shared) to
/// 60,000 (most rows unique, many buckets shared by two values), nulls,
/// one to four slices.
#[test]
fn distinct_values_are_counted_in_order_of_first_row() {
    use super::TextSeen;
    use super::arrays::value_hash;
    use super::profiler::count_distinct;
    use rand::{Rng, SeedableRng, rngs::SmallRng};
    let mut buckets = Vec::new();
    for seed in 0..40u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = rng.random_range(1..9_000usize);
        let vocab = [3u32, 500, 8_000, 60_000][seed as usize % 4];
        let nslices = rng.random_range(1..5usize);
        let text: StringArray = (0..n)
            .map(|_| {
                rng.random_bool(0.95)
                    .then(|| format!("free text {}", rng.random_range(0..vocab)))
            })
            .collect();
        let slice_of_row: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..nslices as u32))
            .collect();
        let hashes: Vec<u64> = (0..n)
            .map(|i| {
                if text.is_valid(i) {
                    value_hash(text.value(i))
                } else {
                    u64::MAX
                }
            })
            .collect();
        let mut rows = vec![0usize; nslices];
        for &s in &slice_of_row {
            rows[s as usize] += 1;
        }
        let mut seen: Vec<TextSeen> = (0..nslices).map(|_| TextSeen::default()).collect();
        let mut tallies = vec![(0u64, 0u64); nslices];
        count_distinct(
            &text,
            &hashes,
            &slice_of_row,
            &rows,
            &mut seen,
            &mut buckets,
            &mut tallies,
        );
        for s in 0..nslices {
            let mut want: Vec<(u32, u64)> = Vec::new();
            let mut at: std::collections::HashMap<&str, usize> = Default::default();
            let (mut count, mut nulls) = (0u64, 0u64);
            for i in (0..n).filter(|&i| slice_of_row[i] as usize == s) {
                if text.is_null(i) {
                    nulls += 1;
                    continue;
                }
                count += 1;
                match at.get(text.value(i)) {
                    Some(&k) => want[k].1 += 1,
                    None => {
                        at.insert(text.value(i), want.len());
                        want.push((i as u32, 1));
                    }
                }
            }
            assert_eq!(seen[s].first, want, "seed {seed}, slice {s}");
            assert_eq!(tallies[s], (count, nulls), "seed {seed}, slice {s}");
        }
    }
}
