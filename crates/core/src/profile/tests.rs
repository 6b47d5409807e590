//! Unit and property tests of profiling and merging.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use proptest::prelude::*;

use super::labels::{RowCodes, count_hashed, value_counts};
use super::*;
use crate::rules::{ColumnKind, ColumnRule, Rules};

pub(super) fn rules() -> Rules {
    let col = |name: &str, kind, pii| ColumnRule {
        name: name.into(),
        kind,
        range: if kind == ColumnKind::Numeric {
            Some((0.0, 100.0))
        } else {
            None
        },
        pii,
        nullable: true,
    };
    let mut r = Rules::for_tests(
        "t",
        vec![
            col("x", ColumnKind::Numeric, false),
            col("n", ColumnKind::Numeric, false),
            col("cat", ColumnKind::Categorical, false),
            col("mail", ColumnKind::Text, true),
        ],
    );
    r.slices = vec!["cat".into()];
    r
}

pub(super) const TAGS: [&str; 4] = ["human_reviewed", "vendor", "user_reported", "scraped"];
const CATS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

#[derive(Debug, Clone)]
pub(super) struct Row {
    x: Option<f64>,
    n: Option<i64>,
    cat: Option<usize>,
    tag: Option<usize>,
    label: Option<i8>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.9, -50.0f64..150.0),
        prop::option::weighted(0.8, -1000i64..1000),
        prop::option::weighted(0.9, 0usize..CATS.len()),
        prop::option::weighted(0.95, 0usize..TAGS.len()),
        prop::option::weighted(0.9, 0i8..2),
    )
        .prop_map(|(x, n, cat, tag, label)| Row {
            x,
            n,
            cat,
            tag,
            label,
        })
}

pub(super) fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("n", DataType::Int64, true),
        Field::new("cat", DataType::Utf8, true),
        Field::new("mail", DataType::Utf8, true),
        Field::new("trust_tag", DataType::Utf8, true),
        Field::new("label", DataType::Int8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| r.x).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.n).collect::<Int64Array>()),
        Arc::new(
            rows.iter()
                .map(|r| r.cat.map(|c| CATS[c]))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.cat.map(|c| format!("{}@example.com", CATS[c])))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.tag.map(|t| TAGS[t]))
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.label).collect::<Int8Array>()),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

pub(super) fn key() -> PiiKey {
    PiiKey::from_bytes(b"unit-test-key-0123456789")
}

fn assert_exact_parts_equal(a: &SliceProfile, b: &SliceProfile) {
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.labels, b.labels);
    // rows and label classes per value of the slice column, exactly
    assert_eq!(a.by_value, b.by_value);
    assert_eq!(
        a.columns.keys().collect::<Vec<_>>(),
        b.columns.keys().collect::<Vec<_>>()
    );
    for (name, ca) in &a.columns {
        let cb = &b.columns[name];
        assert_eq!((ca.count, ca.nulls), (cb.count, cb.nulls), "column {name}");
        match (&ca.numeric, &cb.numeric) {
            (Some(x), Some(y)) => {
                assert_eq!((x.n, x.min, x.max), (y.n, y.min, y.max), "column {name}");
                assert_eq!(
                    (x.below_range, x.above_range),
                    (y.below_range, y.above_range)
                );
                let tol = 1e-9 * (1.0 + x.mean.abs());
                assert!(
                    (x.mean - y.mean).abs() <= tol,
                    "mean {} vs {}",
                    x.mean,
                    y.mean
                );
                assert!(
                    (x.m2 - y.m2).abs() <= 1e-6 * (1.0 + x.m2.abs()),
                    "m2 {} vs {}",
                    x.m2,
                    y.m2
                );
                assert_eq!(x.quantiles.weight(), y.quantiles.weight());
                // documented t-digest rank error: well under 2% of rank at k=100
                if x.n > 20 {
                    let (qa, qb) = (
                        x.quantiles.quantile(0.5).unwrap(),
                        y.quantiles.quantile(0.5).unwrap(),
                    );
                    // with ties the median value spans a range of ranks:
                    // 0.5 must fall in it, give or take the error
                    let below = y.quantiles.cdf(&[qa.next_down()]).unwrap()[0];
                    let at = y.quantiles.cdf(&[qa]).unwrap()[0];
                    assert!(
                        below - 0.05 < 0.5 && 0.5 < at + 0.05,
                        "median {qa} vs {qb}: ranks {below}..{at}"
                    );
                }
            }
            (None, None) => {}
            other => panic!("numeric presence differs for {name}: {other:?}"),
        }
        match (&ca.values, &cb.values) {
            (Some(x), Some(y)) => {
                // few distinct values: the heavy-hitters sketch is exact, HLL unions are exact
                assert_eq!(x.top.all(), y.top.all(), "column {name}");
                assert_eq!(
                    x.distinct.estimate(),
                    y.distinct.estimate(),
                    "column {name}"
                );
            }
            (None, None) => {}
            other => panic!("values presence differs for {name}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// merge(profile(a), profile(b)) == profile(a ++ b): exactly for counts,
    /// min, max, label counts and small-vocabulary top values; within float
    /// error for mean and M2; within the sketch error for quantiles.
    #[test]
    fn merge_equals_profile_of_concatenation(rows in prop::collection::vec(row(), 1..400), cut in 0usize..400) {
        let rules = rules();
        let cut = cut.min(rows.len());
        let (left, right) = rows.split_at(cut);
        let pii = key();
        let whole = profile_batches(&rules, &pii, [&batch(&rows)]).unwrap();
        let mut merged = profile_batches(&rules, &pii, [&batch(left)]).unwrap();
        let b = profile_batches(&rules, &pii, [&batch(right)]).unwrap();
        merged.merge(&b).unwrap();
        prop_assert_eq!(merged.rows, whole.rows);
        prop_assert_eq!(merged.batches, 2);
        let tags: Vec<_> = whole.tags.keys().collect();
        prop_assert_eq!(merged.tags.keys().collect::<Vec<_>>(), tags);
        for (tag, slice) in &whole.tags {
            assert_exact_parts_equal(&merged.tags[tag], slice);
        }
        assert_exact_parts_equal(&merged.all(), &whole.all());
    }

    /// Profiling in several record batches gives the same as one record batch.
    #[test]
    fn streaming_equals_one_shot(rows in prop::collection::vec(row(), 2..300), cut in 1usize..300) {
        let rules = rules();
        let cut = cut.min(rows.len() - 1);
        let pii = key();
        let whole = profile_batches(&rules, &pii, [&batch(&rows)]).unwrap();
        let (a, b) = rows.split_at(cut);
        let streamed = profile_batches(&rules, &pii, [&batch(a), &batch(b)]).unwrap();
        for (tag, slice) in &whole.tags {
            assert_exact_parts_equal(&streamed.tags[tag], slice);
        }
    }
}

#[test]
fn counts_by_tag_and_pii_never_raw() {
    let rows = vec![
        Row {
            x: Some(1.0),
            n: Some(5),
            cat: Some(0),
            tag: Some(0),
            label: Some(1),
        },
        Row {
            x: None,
            n: Some(7),
            cat: Some(1),
            tag: Some(0),
            label: Some(0),
        },
        Row {
            x: Some(300.0),
            n: None,
            cat: None,
            tag: Some(3),
            label: Some(1),
        },
        Row {
            x: Some(-2.0),
            n: Some(1),
            cat: Some(0),
            tag: None,
            label: None,
        },
    ];
    let p = profile_batches(&rules(), &key(), [&batch(&rows)]).unwrap();
    assert_eq!(p.rows, 4);
    let hr = &p.tags["human_reviewed"];
    assert_eq!(hr.rows, 2);
    assert_eq!(
        hr.labels,
        BTreeMap::from([("0".into(), 1), ("1".into(), 1)])
    );
    let x = &hr.columns["x"];
    assert_eq!((x.count, x.nulls), (1, 1));
    let scraped_x = p.tags["scraped"].columns["x"].numeric.as_ref().unwrap();
    assert_eq!(scraped_x.above_range, 1);
    assert_eq!(p.tags[UNTAGGED].rows, 1);
    let all = p.all();
    let xa = all.columns["x"].numeric.as_ref().unwrap();
    assert_eq!((xa.min, xa.max, xa.below_range), (-2.0, 300.0, 1));
    let json = serde_json::to_string(&p).unwrap();
    let summary = serde_json::to_string(&p.summary(10)).unwrap();
    for text in [&json, &summary] {
        assert!(!text.contains("example.com"), "raw pii value leaked");
    }
    let mail = all.columns["mail"].values.as_ref().unwrap();
    assert!(
        mail.top
            .all()
            .iter()
            .all(|v| v.value.starts_with(crate::pii::PII_PREFIX))
    );
}

#[test]
fn profile_roundtrips_through_json_and_is_deterministic() {
    let rows: Vec<Row> = (0..500)
        .map(|i| Row {
            x: Some((i % 97) as f64),
            n: Some(i),
            cat: Some((i % 6) as usize),
            tag: Some((i % 4) as usize),
            label: Some((i % 7 == 0) as i8),
        })
        .collect();
    let a = profile_batches(&rules(), &key(), [&batch(&rows)]).unwrap();
    let b = profile_batches(&rules(), &key(), [&batch(&rows)]).unwrap();
    let (ja, jb) = (
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap(),
    );
    assert!(ja == jb, "same input, same bytes");
    let back: BatchProfile = serde_json::from_slice(&ja).unwrap();
    let summary = |p: &BatchProfile| serde_json::to_string(&p.summary(10)).unwrap();
    let (sb, sa) = (summary(&back), summary(&a));
    if sb != sa {
        let i = sb
            .bytes()
            .zip(sa.bytes())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        panic!(
            "summaries differ at {i}: {} | {}",
            &sb[i.saturating_sub(80)..(i + 40).min(sb.len())],
            &sa[i.saturating_sub(80)..(i + 40).min(sa.len())]
        );
    }
    // after one round trip the stored form is stable
    let once = serde_json::to_vec(&back).unwrap();
    let again: BatchProfile = serde_json::from_slice(&once).unwrap();
    let twice = serde_json::to_vec(&again).unwrap();
    if twice != once {
        let (x, y) = (
            String::from_utf8(once).unwrap(),
            String::from_utf8(twice).unwrap(),
        );
        let i = x
            .bytes()
            .zip(y.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "stored form is not stable at {i}: {}",
            &x[i.saturating_sub(150)..i + 10]
        );
    }
}

#[test]
fn merging_other_shapes_is_refused() {
    let r = rules();
    let p = profile_batches(&r, &key(), [&batch(&[])]).unwrap();
    let mut other_rules = r.clone();
    other_rules.sketch.tdigest_k = 50;
    let mut q = profile_batches(&other_rules, &key(), [&batch(&[])]).unwrap();
    assert!(matches!(q.merge(&p), Err(ProfileError::Shape { .. })));
}

/// `kind: boolean` counts an Arrow Boolean column as the values `true` and
/// `false` (nulls as missing), per tag, like a two-value categorical column.
#[test]
fn boolean_columns_count_true_and_false() {
    use arrow::array::BooleanArray;
    let mut rules = Rules::for_tests(
        "t",
        vec![ColumnRule {
            name: "flag".into(),
            kind: ColumnKind::Boolean,
            range: None,
            pii: false,
            nullable: true,
        }],
    );
    rules.label = None;
    let schema = Arc::new(Schema::new(vec![
        Field::new("flag", DataType::Boolean, true),
        Field::new("trust_tag", DataType::Utf8, true),
    ]));
    let flags = BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(true)]);
    let tags = StringArray::from(vec!["vendor", "vendor", "vendor", "scraped", "vendor"]);
    let b = RecordBatch::try_new(schema, vec![Arc::new(flags), Arc::new(tags)]).unwrap();
    let p = profile_batches(&rules, &key(), [&b]).unwrap();
    let vendor = &p.tags["vendor"].columns["flag"];
    assert_eq!((vendor.count, vendor.nulls), (3, 1));
    let top = vendor.values.as_ref().unwrap().top.all();
    let counts: Vec<(&str, u64)> = top.iter().map(|v| (v.value.as_str(), v.count)).collect();
    assert_eq!(counts, vec![("true", 2), ("false", 1)]);
    assert_eq!(p.tags["scraped"].columns["flag"].count, 1);
}

/// A numeric slice column is counted per bin of its cut points.
#[test]
fn numeric_slice_columns_count_rows_and_labels_per_bin() {
    let mut rules = rules();
    rules.slices = vec!["x".into()];
    rules.slice_bins = BTreeMap::from([("x".to_string(), vec![0.0, 50.0])]);
    let rows: Vec<Row> = [(-5.0, 1), (0.0, 0), (49.9, 1), (50.0, 0), (75.0, 1)]
        .iter()
        .map(|&(x, l)| Row {
            x: Some(x),
            n: None,
            cat: None,
            tag: Some(1),
            label: Some(l),
        })
        .collect();
    let p = profile_batches(&rules, &key(), [&batch(&rows)]).unwrap();
    let bins = &p.tags["vendor"].by_value["x"];
    let got: Vec<(&str, u64, u64)> = bins
        .iter()
        .map(|(k, v)| (k.as_str(), v.rows, v.labels.get("1").copied().unwrap_or(0)))
        .collect();
    assert_eq!(got, vec![("< 0", 1, 1), (">= 50", 2, 1), ("[0, 50)", 2, 1)]);
}

/// A stored profile must not let anyone who lacks the key test a guessed
/// value of a `pii` column: every sketch of that column (distinct count and
/// top values) is fed keyed values only. Checked on the serialized sketch,
/// for plain and dictionary-encoded strings: a sketch fed the raw guess
/// would match it exactly.
#[test]
fn pii_sketches_are_keyed_in_their_serialized_form() {
    use arrow::array::DictionaryArray;
    use arrow::datatypes::Int32Type;

    let guess = "alice@example.com";
    let rows = 64;
    let schema = |mail: DataType| {
        Arc::new(Schema::new(vec![
            Field::new("mail", mail, true),
            Field::new("trust_tag", DataType::Utf8, true),
        ]))
    };
    let tags: ArrayRef = Arc::new(StringArray::from(vec![Some("vendor"); rows]));
    let plain: ArrayRef = Arc::new(StringArray::from(vec![Some(guess); rows]));
    let dict: ArrayRef = Arc::new(
        vec![Some(guess); rows]
            .into_iter()
            .collect::<DictionaryArray<Int32Type>>(),
    );
    let mut r = rules();
    r.slices.clear();
    let mut raw = Distinct::new(r.sketch.hll_lg_k);
    raw.update_hash(super::arrays::value_hash(guess));
    let raw = serde_json::to_value(&raw).unwrap();
    for (mail, dt) in [
        (plain, DataType::Utf8),
        (
            dict,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        ),
    ] {
        let b = RecordBatch::try_new(schema(dt.clone()), vec![mail, tags.clone()]).unwrap();
        let p = profile_batches(&r, &key(), [&b]).unwrap();
        let values = p.tags["vendor"].columns["mail"].values.as_ref().unwrap();
        assert_eq!(values.distinct.estimate().round(), 1.0, "{dt}");
        let stored = serde_json::to_value(&values.distinct).unwrap();
        assert_ne!(
            stored, raw,
            "{dt}: the distinct-count sketch holds the raw value's hash"
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains(guess), "{dt}");
        assert!(
            values
                .top
                .all()
                .iter()
                .all(|v| v.value.starts_with(crate::pii::PII_PREFIX)),
            "{dt}"
        );
        // and the same key gives the same sketch, so batches stay mergeable
        let again = profile_batches(&r, &key(), [&b]).unwrap();
        assert_eq!(
            serde_json::to_value(
                &again.tags["vendor"].columns["mail"]
                    .values
                    .as_ref()
                    .unwrap()
                    .distinct
            )
            .unwrap(),
            stored
        );
    }
}

proptest! {
    /// The dense and the hashed count of (slice, value, class) agree, with
    /// and without a label, nulls in keys and labels included.
    #[test]
    fn value_counts_dense_and_hashed_agree(
        rows in proptest::collection::vec((0u32..3, proptest::option::of(0u32..7), 0u32..4), 0..300),
        labelled in any::<bool>(),
    ) {
        let slice_of_row: Vec<u32> = rows.iter().map(|r| r.0).collect();
        // value 7 stands for none
        let keys: Vec<u32> = rows.iter().map(|r| r.1.unwrap_or(7)).collect();
        // class 3 stands for a null label
        let classes = (
            rows.iter().map(|r| if r.2 == 3 { u32::MAX } else { r.2 }).collect::<Vec<u32>>(),
            vec!["a".to_string(), "b".to_string(), "c".to_string()],
        );
        let classes = labelled.then_some(&classes);
        let codes = RowCodes::new(&slice_of_row, classes, 3);
        // 3 slices x 8 values x 4 classes is within the dense bound
        let mut dense = value_counts(&codes, &keys, 7);
        let mut hashed = count_hashed(&codes, &keys, 7);
        dense.sort_unstable();
        hashed.sort_unstable();
        prop_assert_eq!(&dense, &hashed);
        // and both agree with counting row by row
        let mut naive: Vec<((u32, u32, u32), u64)> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let Some(v) = r.1 else { continue };
            let class = classes.map_or(u32::MAX, |c| c.0[i]);
            match naive.iter_mut().find(|(k, _)| *k == (r.0, v, class)) {
                Some((_, n)) => *n += 1,
                None => naive.push(((r.0, v, class), 1)),
            }
        }
        naive.sort_unstable();
        prop_assert_eq!(&dense, &naive);
        let total: u64 = dense.iter().map(|(_, c)| c).sum();
        prop_assert_eq!(total as usize, keys.iter().filter(|k| **k != 7).count());
    }
}

proptest! {
    /// Rules with label features keep rows and label classes per value of
    /// a categorical one and per default bin of a numeric one, and the
    /// profile of two halves merges into exactly the profile of the whole.
    #[test]
    fn label_features_are_counted_per_value_and_bin_and_merge_exactly(
        rows in proptest::collection::vec(row(), 1..200),
        cut in 0usize..200,
    ) {
        let mut r = rules();
        r.slices.clear();
        r.label_features = vec!["x".into(), "cat".into()];
        r.slice_bins = BTreeMap::from([("x".to_string(), crate::rules::default_feature_bins())]);
        let pii = PiiKey::from_bytes(b"k");
        let cut = cut.min(rows.len());
        let whole = profile_batches(&r, &pii, [&batch(&rows)]).unwrap();
        let mut merged = profile_batches(&r, &pii, [&batch(&rows[..cut])]).unwrap();
        merged.merge(&profile_batches(&r, &pii, [&batch(&rows[cut..])]).unwrap()).unwrap();
        for (tag, s) in &whole.tags {
            prop_assert_eq!(&s.by_value, &merged.tags[tag].by_value);
            let xs = s.by_value.get("x").map_or(0, |c| c.values().map(|v| v.rows).sum::<u64>());
            let finite = s.columns.get("x").and_then(|c| c.numeric.as_ref()).map_or(0, |n| n.n);
            prop_assert_eq!(xs, finite);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Parts of an input merged as counters ([`ProfilePart`]) give exactly
    /// the bytes of the parts' written profiles merged, slice columns,
    /// their joint cells and label features included (below the value
    /// cap), whatever order each part first saw its tags and classes in.
    #[test]
    fn parts_merged_as_counters_equal_profiles_merged(
        rows in proptest::collection::vec(row(), 1..240),
        cuts in (0usize..240, 0usize..240),
    ) {
        let mut r = rules();
        r.slices = vec!["cat".into(), "x".into()];
        r.label_features = vec!["n".into()];
        r.slice_bins = BTreeMap::from([
            ("x".to_string(), vec![0.0, 50.0]),
            ("n".to_string(), crate::rules::default_feature_bins()),
        ]);
        let pii = key();
        let (a, b) = (cuts.0.min(cuts.1).min(rows.len()), cuts.0.max(cuts.1).min(rows.len()));
        let parts = [&rows[..a], &rows[a..b], &rows[b..]];
        let part = |rows: &[Row]| {
            let mut p = Profiler::new(&r, &pii);
            p.update(&batch(rows)).unwrap();
            p
        };
        let mut written = part(parts[0]).finish();
        let mut counted = part(parts[0]).finish_part();
        for rows in &parts[1..] {
            written.merge(&part(rows).finish()).unwrap();
            counted.merge(&part(rows).finish_part()).unwrap();
        }
        let counted = counted.finish();
        // the joint cells are exercised whenever a row has both slice values
        if rows.iter().any(|r| r.x.is_some() && r.cat.is_some()) {
            prop_assert!(counted.tags.values().any(|s| !s.by_cell.is_empty()));
        }
        prop_assert_eq!(
            serde_json::to_string(&counted).unwrap(),
            serde_json::to_string(&written).unwrap()
        );
    }
}
