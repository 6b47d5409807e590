//! A batch's metrics in long format (one row per slice × column × metric),
//! written beside its manifest as Parquet for `dqmon query`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use dqmon_core::profile::{ALL, BatchProfile, SliceProfile};

use super::{HistoryError, Manifest};

/// The long-format metrics of a batch as Parquet bytes.
pub(super) fn metrics_parquet(m: &Manifest, p: &BatchProfile) -> Result<Vec<u8>, HistoryError> {
    let rows = metric_rows(p);
    let n = rows.len();
    let time = m
        .batch_time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros());
    let schema = Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("batch_id", DataType::Utf8, false),
        Field::new(
            "batch_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("slice", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![m.dataset.as_str(); n])),
        Arc::new(StringArray::from(vec![m.batch_id.as_str(); n])),
        Arc::new(TimestampMicrosecondArray::from(vec![time; n]).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.as_deref()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| parquet::errors::ParquetError::General(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_created_by("dqmon".into())
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(buf)
}

type MetricRow = (String, Option<String>, &'static str, f64);

/// Metrics of every slice and column, long format.
pub fn metric_rows(p: &BatchProfile) -> Vec<MetricRow> {
    let mut out = Vec::new();
    let all = p.all();
    let total = all.rows.max(1) as f64;
    let mut slices: Vec<(&str, &SliceProfile)> = vec![(ALL, &all)];
    slices.extend(p.tags.iter().map(|(k, v)| (k.as_str(), v)));
    for (name, s) in slices {
        let mut push = |col: Option<&str>, metric: &'static str, v: f64| {
            if v.is_finite() {
                out.push((name.to_string(), col.map(str::to_string), metric, v));
            }
        };
        push(None, "rows", s.rows as f64);
        push(None, "tag_share", s.rows as f64 / total);
        push(None, "duplicate_share", s.duplicate_share());
        let labelled = s.labelled();
        for (class, c) in &s.labels {
            if labelled > 0 {
                let metric: &'static str = "label_rate";
                out.push((
                    name.to_string(),
                    Some(format!("label={class}")),
                    metric,
                    *c as f64 / labelled as f64,
                ));
            }
        }
        for (col, c) in &s.columns {
            let mut push = |metric: &'static str, v: f64| {
                if v.is_finite() {
                    out.push((name.to_string(), Some(col.clone()), metric, v));
                }
            };
            push("count", c.count as f64);
            push("nulls", c.nulls as f64);
            push("missing_rate", c.missing_rate());
            if let Some(n) = c.numeric.as_ref().filter(|n| n.n > 0) {
                push("min", n.min);
                push("max", n.max);
                push("mean", n.mean);
                push("stddev", n.variance().sqrt());
                if let Some(q) = n.quantiles.quantiles(&[0.01, 0.5, 0.99]) {
                    push("p01", q[0]);
                    push("p50", q[1]);
                    push("p99", q[2]);
                }
                push("out_of_range", (n.below_range + n.above_range) as f64);
            }
            if let Some(n) = &c.numeric {
                push("non_finite", n.non_finite as f64);
            }
            if let Some(v) = &c.values {
                push("distinct_estimate", v.distinct.estimate().round());
            }
        }
    }
    out
}
