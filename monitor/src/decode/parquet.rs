//! Parquet files to a stream of Arrow record batches.
//!
//! Only the columns the rules need are decoded (projection), and string
//! columns that the rules treat as categories (categorical columns, the
//! trust tag, a text label) are read as dictionaries, so that profiling
//! counts keys instead of hashing every string. Large files are streamed
//! record batch by record batch: memory does not grow with rows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};

use crate::config::model::{ColumnKind, Limits, Rules, TrustSource};
use crate::profile::Profiler;

/// Rows per decoded record batch.
pub const BATCH_ROWS: usize = 65_536;

/// Why an input could not be decoded: each is a reason for quarantine.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("could not read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty (0 bytes)")]
    Empty { path: PathBuf },
    #[error("{path} is not a readable Parquet file: {reason}")]
    NotParquet { path: PathBuf, reason: String },
    #[error("{path} is corrupt or truncated: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} is {size} bytes, over the limit of {limit} bytes (limits.max_file_bytes)")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path} has {rows} rows, over the limit of {limit} (limits.max_rows)")]
    TooManyRows {
        path: PathBuf,
        rows: u64,
        limit: u64,
    },
    #[error(
        "{path}: column `{column}` holds a string of {len} bytes, over the limit of {limit} (limits.max_string_len)"
    )]
    StringTooLong {
        path: PathBuf,
        column: String,
        len: usize,
        limit: usize,
    },
    #[error("{path}: column `{column}` has type {found}, which cannot be profiled as {kind:?}")]
    SchemaViolation {
        path: PathBuf,
        column: String,
        found: String,
        kind: ColumnKind,
    },
}

/// An opened Parquet file, ready to stream.
pub struct ParquetInput {
    path: PathBuf,
    /// The file's full Arrow schema (all columns, as stored).
    pub file_schema: SchemaRef,
    /// Rows declared in the file footer.
    pub rows: u64,
    reader: ParquetRecordBatchReader,
    max_string_len: usize,
}

fn wants_dictionary(rules: &Rules, name: &str) -> bool {
    let categorical = rules
        .column(name)
        .is_some_and(|c| c.kind == ColumnKind::Categorical);
    let trust = matches!(&rules.trust.source, TrustSource::Column(c) if c == name);
    let label = rules.label.as_ref().is_some_and(|l| l.column == name);
    categorical || trust || label
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Whether a stored type can be profiled as the declared kind.
fn compatible(kind: ColumnKind, dt: &DataType) -> bool {
    let dt = match dt {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    match kind {
        ColumnKind::Numeric => dt.is_numeric() || matches!(dt, DataType::Boolean),
        ColumnKind::Timestamp => {
            matches!(
                dt,
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
            ) || dt.is_integer()
        }
        ColumnKind::Categorical | ColumnKind::Text => !matches!(
            dt,
            DataType::List(_) | DataType::Struct(_) | DataType::Map(_, _)
        ),
        ColumnKind::Boolean => matches!(dt, DataType::Boolean),
    }
}

impl ParquetInput {
    /// Open `path`, check limits and the schema against the rules.
    pub fn open(path: &Path, rules: &Rules) -> Result<ParquetInput, DecodeError> {
        Self::open_with_limits(path, rules, &rules.limits)
    }

    pub fn open_with_limits(
        path: &Path,
        rules: &Rules,
        limits: &Limits,
    ) -> Result<ParquetInput, DecodeError> {
        let p = path.to_path_buf();
        let file = File::open(path).map_err(|source| DecodeError::Io {
            path: p.clone(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| DecodeError::Io {
                path: p.clone(),
                source,
            })?
            .len();
        if size == 0 {
            return Err(DecodeError::Empty { path: p });
        }
        if size > limits.max_file_bytes {
            return Err(DecodeError::TooLarge {
                path: p,
                size,
                limit: limits.max_file_bytes,
            });
        }
        let probe =
            ParquetRecordBatchReaderBuilder::try_new(file.try_clone().map_err(|source| {
                DecodeError::Io {
                    path: p.clone(),
                    source,
                }
            })?)
            .map_err(|e| classify(&p, size, e))?;
        let file_schema = probe.schema().clone();
        let rows = probe.metadata().file_metadata().num_rows().max(0) as u64;
        if rows > limits.max_rows {
            return Err(DecodeError::TooManyRows {
                path: p,
                rows,
                limit: limits.max_rows,
            });
        }
        for rule in &rules.columns {
            if let Ok(f) = file_schema.field_with_name(&rule.name)
                && !compatible(rule.kind, f.data_type())
            {
                return Err(DecodeError::SchemaViolation {
                    path: p,
                    column: rule.name.clone(),
                    found: f.data_type().to_string(),
                    kind: rule.kind,
                });
            }
        }
        // Read category-like strings as dictionaries.
        let hinted: Vec<Field> = file_schema
            .fields()
            .iter()
            .map(|f| {
                if is_string(f.data_type()) && wants_dictionary(rules, f.name()) {
                    f.as_ref().clone().with_data_type(DataType::Dictionary(
                        Box::new(DataType::Int32),
                        Box::new(DataType::Utf8),
                    ))
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let hinted = Arc::new(Schema::new_with_metadata(
            hinted,
            file_schema.metadata().clone(),
        ));
        let options = ArrowReaderOptions::new().with_schema(hinted);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .map_err(|e| classify(&p, size, e))?;
        let needed = Profiler::needed_columns(rules);
        let indices: Vec<usize> = file_schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| needed.iter().any(|n| n == f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| classify(&p, size, e))?;
        Ok(ParquetInput {
            path: p,
            file_schema,
            rows,
            reader,
            max_string_len: limits.max_string_len,
        })
    }

    fn check_strings(&self, batch: &RecordBatch) -> Result<(), DecodeError> {
        for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
            let max = match col.data_type() {
                DataType::Utf8 => max_len_i32(col.as_string::<i32>()),
                DataType::LargeUtf8 => {
                    let o = col.as_string::<i64>().value_offsets();
                    o.windows(2)
                        .map(|w| (w[1] - w[0]) as usize)
                        .max()
                        .unwrap_or(0)
                }
                DataType::Utf8View => col
                    .as_string_view()
                    .views()
                    .iter()
                    .map(|v| *v as u32 as usize)
                    .max()
                    .unwrap_or(0),
                DataType::Dictionary(_, v) if **v == DataType::Utf8 => {
                    let values = col.as_any_dictionary().values();
                    max_len_i32(values.as_string::<i32>())
                }
                _ => 0,
            };
            if max > self.max_string_len {
                return Err(DecodeError::StringTooLong {
                    path: self.path.clone(),
                    column: field.name().clone(),
                    len: max,
                    limit: self.max_string_len,
                });
            }
        }
        Ok(())
    }
}

fn max_len_i32(a: &arrow::array::StringArray) -> usize {
    a.value_offsets()
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0)
}

fn classify(path: &Path, size: u64, e: parquet::errors::ParquetError) -> DecodeError {
    let reason = e.to_string();
    let magic_problem =
        reason.contains("magic") || reason.contains("Invalid Parquet file") || size < 12;
    if magic_problem {
        DecodeError::NotParquet {
            path: path.to_path_buf(),
            reason,
        }
    } else {
        DecodeError::Corrupt {
            path: path.to_path_buf(),
            reason,
        }
    }
}

impl Iterator for ParquetInput {
    type Item = Result<RecordBatch, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.reader.next()?;
        Some(
            item.map_err(|e| DecodeError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })
            .and_then(|b| {
                self.check_strings(&b)?;
                Ok(b)
            }),
        )
    }
}

/// Decode and profile a Parquet file in one streaming pass.
pub fn profile_file(
    path: &Path,
    rules: &Rules,
    pii: &crate::pii::PiiKey,
) -> Result<crate::profile::BatchProfile, ProfileFileError> {
    let input = ParquetInput::open(path, rules)?;
    let mut profiler = Profiler::new(rules, pii);
    profiler.observe_schema(&input.file_schema);
    for batch in input {
        profiler.update(&batch?)?;
    }
    Ok(profiler.finish())
}

/// Decoding or profiling a file failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileFileError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boolean_column_must_be_stored_as_boolean() {
        assert!(compatible(ColumnKind::Boolean, &DataType::Boolean));
        assert!(!compatible(ColumnKind::Boolean, &DataType::Utf8));
        assert!(!compatible(ColumnKind::Boolean, &DataType::Int8));
        // a categorical column may still hold booleans
        assert!(compatible(ColumnKind::Categorical, &DataType::Boolean));
    }
}
