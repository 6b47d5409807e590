//! Metric packs: the metrics of a manifest pack's batches in one Parquet
//! file (`history/metric-packs/<writer>/<first>-<last>.parquet`, the rows
//! of each batch's `history/metrics/<batch_id>.parquet`, in commit order),
//! and the reader that gives every batch's metrics of a shared history
//! once: from the packs, and from the per-batch files of the batches no
//! pack holds.
//!
//! ```text
//!   listed per-batch files ─┬─ batch in a pack? ── yes ─▶ skipped (the pack has its rows)
//!                           └───────────────────── no ──▶ read
//!   packs ─▶ read whole (one unreadable: skipped, its batches' files are read)
//! ```
//!
//! A batch's rows come from exactly one place, so none is lost or counted
//! twice, whatever the replicas write meanwhile: a pack is written (with
//! a create-if-absent) only after its batches' files, a file is skipped
//! only for a pack that was read whole, and a batch two packs hold (a
//! partial pack written at a stop whose manifest pack failed, then a full
//! pack over the same batches) is taken from the first one read.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use super::packs::Unpacked;
use super::read::metrics_key;
use super::{HistoryError, io};
use crate::backend::{Backend, Put};

const METRIC_PACKS: &str = "history/metric-packs";
const METRICS: &str = "history/metrics";

/// A Parquet file's record batches.
fn parquet_batches(bytes: Vec<u8>) -> Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?.build()?;
    reader
        .map(|b| b.map_err(|e| parquet::errors::ParquetError::General(e.to_string())))
        .collect()
}

/// Write the metrics pack `name` (`<writer>/<first>-<last>`) of `batches`:
/// their metrics as committed, or read back from the store for the ones
/// committed before this start (a batch without metrics, one without a
/// profile, has no rows). Nothing is written when none has metrics.
pub(super) fn write(
    objects: &dyn Backend,
    name: &str,
    batches: &[Unpacked],
) -> Result<(), HistoryError> {
    let mut rows = Vec::new();
    for u in batches {
        let key = metrics_key(&u.batch_id);
        let path = objects.locate(&key);
        let bytes = match &u.committed {
            Some((_, metrics)) => metrics.clone(),
            None => objects.get(&key).map_err(io(&path))?,
        };
        let Some(bytes) = bytes else { continue };
        rows.extend(parquet_batches(bytes).map_err(|e| HistoryError::Corrupt {
            path,
            reason: e.to_string(),
        })?);
    }
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let props = WriterProperties::builder()
        .set_created_by("dqmon".into())
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, first.schema(), Some(props))?;
    for b in &rows {
        w.write(b)?;
    }
    w.close()?;
    let key = format!("{METRIC_PACKS}/{name}.parquet");
    let path = objects.locate(&key);
    if objects.put_if_absent(&key, &buf).map_err(io(&path))? == Put::Existed {
        tracing::info!(pack = %path.display(), "metrics pack already written");
    }
    Ok(())
}

/// Every batch's metrics of a history's batch objects, each batch's rows
/// once: the packs', then the per-batch files of the batches no pack
/// holds. A file removed since it was listed (an orphan) is skipped. One
/// listing per thousand files, a folder listing and one per writer, a
/// read per pack and per unpacked batch.
pub fn read_metrics(objects: &dyn Backend) -> Result<Vec<RecordBatch>, HistoryError> {
    let keys = objects
        .list(METRICS)
        .map_err(io(&objects.locate(METRICS)))?;
    let mut out = Vec::new();
    let mut packed: HashSet<String> = HashSet::new();
    let writers = objects
        .folders(METRIC_PACKS)
        .map_err(io(&objects.locate(METRIC_PACKS)))?;
    for folder in writers {
        let packs = objects
            .list(&folder)
            .map_err(io(&objects.locate(&folder)))?;
        for key in packs.iter().filter(|k| k.ends_with(".parquet")) {
            let whole = objects
                .get(key)
                .map_err(|e| e.to_string())
                .and_then(|b| b.ok_or_else(|| "gone".to_string()))
                .and_then(|b| parquet_batches(b).map_err(|e| e.to_string()));
            let rows = match whole {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(pack = %objects.locate(key).display(), error = %e, "a metrics pack could not be read; its batches' files are read one by one");
                    continue;
                }
            };
            // a batch an earlier pack held (two packs over one batch: a
            // partial pack whose manifest pack failed, then a full one) is
            // taken from that pack only
            let mut held = HashSet::new();
            for b in rows {
                let Some(ids) = b
                    .column_by_name("batch_id")
                    .and_then(|c| c.as_string_opt::<i32>())
                else {
                    out.push(b);
                    continue;
                };
                let keep: BooleanArray = (0..ids.len())
                    .map(|i| Some(ids.is_null(i) || !packed.contains(ids.value(i))))
                    .collect();
                for i in 0..ids.len() {
                    if !ids.is_null(i) {
                        held.insert(ids.value(i).to_string());
                    }
                }
                out.push(if keep.true_count() == b.num_rows() {
                    b
                } else {
                    arrow::compute::filter_record_batch(&b, &keep)
                        .map_err(parquet::errors::ParquetError::from)?
                });
            }
            packed.extend(held);
        }
    }
    for key in keys.iter().filter(|k| k.ends_with(".parquet")) {
        let id = key
            .strip_prefix(&format!("{METRICS}/"))
            .and_then(|k| k.strip_suffix(".parquet"))
            .unwrap_or(key);
        if packed.contains(id) {
            continue;
        }
        let path = objects.locate(key);
        let Some(bytes) = objects.get(key).map_err(io(&path))? else {
            continue;
        };
        out.extend(parquet_batches(bytes).map_err(|e| HistoryError::Corrupt {
            path,
            reason: e.to_string(),
        })?);
    }
    Ok(out)
}

/// The distinct batch ids of record batches' `batch_id` column, for tests.
#[cfg(test)]
pub(super) fn batch_ids(rows: &[RecordBatch]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .flat_map(|b| {
            let s = b
                .column_by_name("batch_id")
                .expect("a batch_id column")
                .as_string::<i32>()
                .clone();
            (0..s.len()).map(move |i| s.value(i).to_string())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The record batches of one metrics file, for tests.
#[cfg(test)]
pub(super) fn batch_rows(objects: &dyn Backend, key: &str) -> Vec<RecordBatch> {
    parquet_batches(objects.get(key).unwrap().unwrap()).unwrap()
}
