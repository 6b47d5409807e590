//! Parquet files to a stream of Arrow record batches.
//!
//! Only the columns the rules need are decoded (projection), and string
//! columns that the rules treat as categories (categorical columns, the
//! trust tag, a text label) are read as dictionaries, so that profiling
//! counts keys instead of hashing every string. Large files are streamed
//! record batch by record batch: memory does not grow with rows.
//!
//! A file of several row groups is profiled one row group per task on the
//! shared thread pool (`--threads`), and the row groups' profiles are
//! merged in row-group order, as they finish, while the other threads go
//! on profiling (see `ordered`):
//!
//! ```text
//!   file ─┬─ row group 0 ─ decode ─ profile ─┐
//!         ├─ row group 1 ─ decode ─ profile ─┤  merge in row-group order
//!         └─ row group 2 ─ decode ─ profile ─┘  ──► the file's profile
//! ```
//!
//! The parts are [`ProfilePart`]s: their counts per value (label features,
//! slice columns) merge as counters and are written as maps once.
//!
//! How the file is cut depends on the file alone, never on the number of
//! threads, so the profile's bytes are the same on one core or on many.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::file::reader::{ChunkReader, Length};

use crate::config::model::{ColumnKind, Limits, Rules, TrustSource};
use crate::profile::{ProfilePart, Profiler};

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

/// An opened and checked Parquet file, ready to stream, whole or one row
/// group at a time (from several threads at once: it is `Sync`).
pub struct ParquetInput {
    path: PathBuf,
    /// The file's full Arrow schema (all columns, as stored).
    pub file_schema: SchemaRef,
    /// Rows declared in the file footer.
    pub rows: u64,
    file: SharedFile,
    metadata: ArrowReaderMetadata,
    mask: ProjectionMask,
    max_string_len: usize,
}

/// Record batches of a [`ParquetInput`], each checked against the string
/// length limit.
pub struct Batches<'a> {
    input: &'a ParquetInput,
    reader: ParquetRecordBatchReader,
}

/// One open file read with positioned reads (`pread`), so that readers of
/// several row groups on several threads share it without sharing a file
/// offset (the parquet crate's `ChunkReader` for `File` seeks a cloned
/// handle, whose offset every clone shares).
#[derive(Clone)]
struct SharedFile {
    file: Arc<File>,
    len: u64,
}

/// A reader at its own position in a [`SharedFile`].
struct ReadAt {
    file: Arc<File>,
    at: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Length for SharedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SharedFile {
    type T = BufReader<ReadAt>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(BufReader::new(ReadAt {
            file: self.file.clone(),
            at: start,
        }))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        // read into spare capacity: no zeroing of a whole column chunk first
        let mut buf = Vec::with_capacity(length);
        let mut at = ReadAt {
            file: self.file.clone(),
            at: start,
        };
        (&mut at).take(length as u64).read_to_end(&mut buf)?;
        if buf.len() != length {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} bytes at offset {start}, {} expected", buf.len(), length),
            )
            .into());
        }
        Ok(Bytes::from(buf))
    }
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
        let file = SharedFile {
            file: Arc::new(file),
            len: size,
        };
        let probe = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
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
        let metadata = ArrowReaderMetadata::try_new(probe.metadata().clone(), options)
            .map_err(|e| classify(&p, size, e))?;
        let needed = Profiler::needed_columns(rules);
        let indices: Vec<usize> = file_schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| needed.iter().any(|n| n == f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(metadata.parquet_schema(), indices);
        Ok(ParquetInput {
            path: p,
            file_schema,
            rows,
            file,
            metadata,
            mask,
            max_string_len: limits.max_string_len,
        })
    }

    /// Row groups in the file.
    pub fn row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    /// Stream the record batches of the row groups `groups` (`None`: every
    /// row group), in file order.
    pub fn batches(&self, groups: Option<Vec<usize>>) -> Result<Batches<'_>, DecodeError> {
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.file.clone(),
            self.metadata.clone(),
        )
        .with_projection(self.mask.clone())
        .with_batch_size(BATCH_ROWS);
        if let Some(groups) = groups {
            builder = builder.with_row_groups(groups);
        }
        let reader = builder
            .build()
            .map_err(|e| classify(&self.path, self.file.len, e))?;
        Ok(Batches {
            input: self,
            reader,
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

impl Iterator for Batches<'_> {
    type Item = Result<RecordBatch, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.reader.next()?;
        Some(
            item.map_err(|e| DecodeError::Corrupt {
                path: self.input.path.clone(),
                reason: e.to_string(),
            })
            .and_then(|b| {
                self.input.check_strings(&b)?;
                Ok(b)
            }),
        )
    }
}

/// Decode and profile a Parquet file: each row group streamed record batch
/// by record batch, row groups profiled in parallel on the shared thread
/// pool (each thread taking the next row group when it finishes one), their
/// profiles merged in row-group order as they finish. The result depends
/// on the file, not on the threads.
pub fn profile_file(
    path: &Path,
    rules: &Rules,
    pii: &crate::pii::PiiKey,
) -> Result<crate::profile::BatchProfile, ProfileFileError> {
    let input = ParquetInput::open(path, rules)?;
    let groups = input.row_groups();
    if groups <= 1 {
        return Ok(profile_groups(&input, None, rules, pii)?.finish());
    }
    // merged in row-group order as they finish (the first error in file
    // order, whatever finished first)
    let whole = super::ordered::fold_in_order(
        groups,
        |g| profile_groups(&input, Some(vec![g]), rules, pii),
        |whole: &mut ProfilePart, part| Ok(whole.merge(&part)?),
    )?;
    let mut whole = whole.expect("a file of two or more row groups").finish();
    // one file is one batch, however many parts it was profiled in
    whole.batches = 1;
    for slice in whole.tags.values_mut() {
        slice.canonicalize();
    }
    Ok(whole)
}

/// The profile of some row groups of a file (`None`: all of them), its
/// counts per value not yet written, so the parts merge counter by counter.
fn profile_groups(
    input: &ParquetInput,
    groups: Option<Vec<usize>>,
    rules: &Rules,
    pii: &crate::pii::PiiKey,
) -> Result<ProfilePart, ProfileFileError> {
    let mut profiler = Profiler::new(rules, pii);
    profiler.observe_schema(&input.file_schema);
    for batch in input.batches(groups)? {
        profiler.update(&batch?)?;
    }
    Ok(profiler.finish_part())
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

    /// Readers on several threads each get their own bytes from one open
    /// file (a shared offset would hand one thread another's position),
    /// and a read past the end is an error, not short data.
    #[test]
    fn positioned_reads_from_many_threads_do_not_disturb_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bytes");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = SharedFile {
            file: Arc::new(File::open(&path).unwrap()),
            len: data.len() as u64,
        };
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (file, data) = (&file, &data);
                s.spawn(move || {
                    for round in 0..200u64 {
                        let start = (t * 211_111 + round * 3_989) % 900_000;
                        let got = file.get_bytes(start, 10_000).unwrap();
                        assert_eq!(&got[..], &data[start as usize..start as usize + 10_000]);
                        let mut r = file.get_read(start).unwrap();
                        let mut buf = vec![0u8; 5_000];
                        r.read_exact(&mut buf).unwrap();
                        assert_eq!(&buf[..], &data[start as usize..start as usize + 5_000]);
                    }
                });
            }
        });
        assert!(file.get_bytes(999_990, 20).is_err());
    }

    #[test]
    fn a_boolean_column_must_be_stored_as_boolean() {
        assert!(compatible(ColumnKind::Boolean, &DataType::Boolean));
        assert!(!compatible(ColumnKind::Boolean, &DataType::Utf8));
        assert!(!compatible(ColumnKind::Boolean, &DataType::Int8));
        // a categorical column may still hold booleans
        assert!(compatible(ColumnKind::Categorical, &DataType::Boolean));
    }
}
