//! A readable view of a profile: what `dqmon profile` prints (table or JSON).
//! Derived from a [`BatchProfile`]; never stored, never merged.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ALL, BatchProfile, SliceProfile, ValueCount};

/// The JSON document of `dqmon profile --json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProfileSummary {
    pub dataset: String,
    pub rows: u64,
    pub batches: u64,
    /// Column name to logical Arrow type.
    pub schema: BTreeMap<String, String>,
    /// `all` (the whole batch) and one entry per trust tag.
    pub slices: BTreeMap<String, SliceSummary>,
}

/// One slice of a [`ProfileSummary`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SliceSummary {
    pub rows: u64,
    /// Label class to count (rows with a null label are not counted).
    pub label_counts: BTreeMap<String, u64>,
    /// Estimated share of rows that repeat another row of the slice.
    pub duplicate_share: f64,
    pub columns: BTreeMap<String, ColumnSummary>,
}

/// One column of a [`SliceSummary`]. Numeric fields are absent for value
/// columns and the other way round.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnSummary {
    /// Non-null values.
    pub count: u64,
    pub nulls: u64,
    pub missing_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stddev: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_range: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_estimate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<ValueCount>>,
}

fn slice_summary(s: &SliceProfile, top_k: usize) -> SliceSummary {
    let columns = s
        .columns
        .iter()
        .map(|(name, c)| {
            let num = c.numeric.as_ref().filter(|n| n.n > 0);
            let vals = c.values.as_ref();
            (
                name.clone(),
                ColumnSummary {
                    count: c.count,
                    nulls: c.nulls,
                    missing_rate: c.missing_rate(),
                    min: num.map(|n| n.min),
                    max: num.map(|n| n.max),
                    mean: num.map(|n| n.mean),
                    stddev: num.map(|n| n.variance().sqrt()),
                    median: num.and_then(|n| n.quantiles.quantile(0.5)),
                    out_of_range: c.numeric.as_ref().map(|n| n.below_range + n.above_range),
                    distinct_estimate: vals.map(|v| v.distinct.estimate().round()),
                    top: vals.map(|v| v.top.top(top_k).to_vec()),
                },
            )
        })
        .collect();
    SliceSummary {
        rows: s.rows,
        label_counts: s.labels.clone(),
        duplicate_share: s.duplicate_share(),
        columns,
    }
}

pub(super) fn summarize(p: &BatchProfile, top_k: usize) -> ProfileSummary {
    let mut slices = BTreeMap::new();
    slices.insert(ALL.to_string(), slice_summary(&p.all(), top_k));
    for (tag, s) in &p.tags {
        slices.insert(tag.clone(), slice_summary(s, top_k));
    }
    ProfileSummary {
        dataset: p.dataset.clone(),
        rows: p.rows,
        batches: p.batches,
        schema: p.schema.clone(),
        slices,
    }
}
