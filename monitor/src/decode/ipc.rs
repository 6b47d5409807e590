//! Arrow IPC stream messages (one stream per message, holding one or more
//! record batches) to record batches in the dataset's record schema.
//!
//! Owns: reading a message as an IPC stream and casting its columns to the
//! types the rules declare (see [`super::json::record_schema`]); a column the
//! rules name but the message lacks becomes nulls, other columns are
//! dropped. A message that is not an IPC stream, or whose column cannot be
//! cast losslessly, is rejected with a reason. No statistics, no I/O.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;

use super::json::{Decoded, Message, check_string_lengths, record_schema, redact};
use crate::config::model::{Rules, TrustSource};

/// Decodes batches of Arrow IPC messages for one dataset.
pub struct IpcDecoder {
    schema: SchemaRef,
    tag_column: Option<String>,
    max_string_len: usize,
    max_rows: u64,
}

impl IpcDecoder {
    /// `tags_fill_column`: whether message tags (header or topic) fill the
    /// rules' trust column instead of the records carrying it.
    pub fn new(rules: &Rules, tags_fill_column: bool) -> IpcDecoder {
        let tag_column = match (&rules.trust.source, tags_fill_column) {
            (TrustSource::Column(c), true) => Some(c.clone()),
            _ => None,
        };
        IpcDecoder {
            schema: record_schema(rules),
            tag_column,
            max_string_len: rules.limits.max_string_len,
            max_rows: rules.limits.max_rows,
        }
    }

    /// Decode every message; bad ones are rejected with a reason.
    pub fn decode(&self, messages: &[Message<'_>]) -> Decoded {
        let mut out = Decoded::default();
        for (i, m) in messages.iter().enumerate() {
            match self.decode_one(m) {
                Ok(batches) => {
                    out.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                    out.batches.extend(batches);
                }
                Err(reason) => out.rejected.push((i, reason)),
            }
        }
        out
    }

    fn decode_one(&self, m: &Message<'_>) -> Result<Vec<RecordBatch>, String> {
        let reader = StreamReader::try_new(Cursor::new(m.payload), None)
            .map_err(|e| format!("not an Arrow IPC stream: {}", redact(&e.to_string())))?;
        let mut out = Vec::new();
        let mut rows = 0u64;
        for b in reader {
            let b =
                b.map_err(|e| format!("corrupt Arrow IPC stream: {}", redact(&e.to_string())))?;
            rows += b.num_rows() as u64;
            if rows > self.max_rows {
                return Err(format!(
                    "the message holds more than {} rows (limits.max_rows)",
                    self.max_rows
                ));
            }
            let b = self.conform(&b, m.tag)?;
            check_string_lengths(&b, self.max_string_len)?;
            out.push(b);
        }
        if rows == 0 {
            return Err("the message holds no record".into());
        }
        Ok(out)
    }

    /// Cast to the record schema; fill the tag column from the message tag.
    fn conform(&self, b: &RecordBatch, tag: Option<&str>) -> Result<RecordBatch, String> {
        let n = b.num_rows();
        let opts = CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for f in self.schema.fields() {
            if self.tag_column.as_deref() == Some(f.name().as_str()) {
                cols.push(Arc::new(StringArray::from(vec![tag; n])));
                continue;
            }
            let col = match b.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => c.clone(),
                Some(c) => cast_with_options(c, f.data_type(), &opts).map_err(|e| {
                    format!(
                        "column `{}` has type {}, which does not fit the declared type {} (schema violation): {}",
                        f.name(),
                        c.data_type(),
                        f.data_type(),
                        redact(&e.to_string())
                    )
                })?,
                None => new_null_array(f.data_type(), n),
            };
            cols.push(col);
        }
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| e.to_string())
    }
}

/// An Arrow IPC stream of `batch` (what a producer of `arrow_ipc` messages sends).
pub fn encode_stream(batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(buf)
}

/// Whether a type is text (for callers choosing what to cast).
pub fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{ColumnKind, ColumnRule};
    use arrow::array::{Array, AsArray, Int64Array};

    #[test]
    fn ipc_messages_are_cast_to_the_rules_schema_and_bad_ones_rejected() {
        let rules = Rules::for_tests(
            "t",
            vec![ColumnRule {
                name: "amount".into(),
                kind: ColumnKind::Numeric,
                range: None,
                pii: false,
                nullable: true,
            }],
        );
        let good = RecordBatch::try_from_iter([
            ("amount", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            (
                "trust_tag",
                Arc::new(StringArray::from(vec!["vendor", "scraped"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let bad_type = RecordBatch::try_from_iter([(
            "amount",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        )])
        .unwrap();
        let g = encode_stream(&good).unwrap();
        let b = encode_stream(&bad_type).unwrap();
        let d = IpcDecoder::new(&rules, false);
        let out = d.decode(&[
            Message {
                payload: &g,
                tag: None,
            },
            Message {
                payload: &b,
                tag: None,
            },
            Message {
                payload: b"{\"amount\": 1}",
                tag: None,
            },
        ]);
        assert_eq!(out.rows, 2);
        let bad: Vec<usize> = out.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 2]);
        assert!(out.rejected[0].1.contains("schema violation"));
        let amount = out.batches[0].column_by_name("amount").unwrap();
        assert_eq!(amount.data_type(), &DataType::Float64);
        assert!(
            out.batches[0]
                .column_by_name("label")
                .unwrap()
                .as_string::<i32>()
                .is_null(0)
        );
    }
}
