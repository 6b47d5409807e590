//! JSON messages (one object per message, or JSON lines) to Arrow record
//! batches, decoded with arrow-json's streaming decoder against the schema
//! that the rules declare.
//!
//! Owns: the Arrow schema of a dataset's records ([`record_schema`]), the
//! split of a batch of messages into decoded rows and rejected messages with
//! their reasons, and the trust-tag column filled from message headers or
//! topics. It never computes statistics and does no I/O.
//!
//! A batch is decoded in one pass when every message is good (the common
//! case); when any message fails, each message is decoded alone to find the
//! bad ones, and the good ones are decoded again together. A message is
//! rejected when it is not JSON, when a value does not fit the declared type
//! (schema violation), when a `json` message does not hold exactly one
//! object, or when a string is over `limits.max_string_len`. Reasons never
//! quote the offending value (it may be a `pii` column).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::json::ReaderBuilder;

use crate::config::model::{ColumnKind, MessageFormat, Rules, TrustSource};

/// Rows per decoded record batch.
pub const DECODE_ROWS: usize = 65_536;

/// The Arrow schema records of a dataset are decoded into: every monitored
/// column with the type of its kind, plus the trust and label columns as text.
/// Columns absent from a record are null; fields the rules do not name are ignored.
pub fn record_schema(rules: &Rules) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    let mut push = |name: &str, dt: DataType| {
        if !fields.iter().any(|f| f.name() == name) {
            fields.push(Field::new(name, dt, true));
        }
    };
    for c in &rules.columns {
        let dt = match c.kind {
            ColumnKind::Numeric => DataType::Float64,
            ColumnKind::Categorical | ColumnKind::Text => DataType::Utf8,
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        };
        push(&c.name, dt);
    }
    if let TrustSource::Column(t) = &rules.trust.source {
        push(t, DataType::Utf8);
    }
    if let Some(l) = &rules.label {
        push(&l.column, DataType::Utf8);
    }
    Arc::new(Schema::new(fields))
}

/// One message to decode: its payload and, when the trust tag comes from a
/// header or the topic, that tag.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub payload: &'a [u8],
    pub tag: Option<&'a str>,
}

/// The outcome of decoding a batch of messages.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Record batches of the good messages, in message order.
    pub batches: Vec<RecordBatch>,
    /// Rows decoded.
    pub rows: u64,
    /// Index (into the input) and reason of each rejected message.
    pub rejected: Vec<(usize, String)>,
}

/// Decodes batches of JSON messages for one dataset.
pub struct JsonDecoder {
    schema: SchemaRef,
    format: MessageFormat,
    /// The column that header/topic tags are written into, if they are.
    tag_column: Option<String>,
    max_string_len: usize,
}

impl JsonDecoder {
    /// `tags_fill_column`: whether message tags (header or topic) fill the
    /// rules' trust column instead of the records carrying it.
    pub fn new(rules: &Rules, format: MessageFormat, tags_fill_column: bool) -> JsonDecoder {
        let full = record_schema(rules);
        let tag_column = match (&rules.trust.source, tags_fill_column) {
            (TrustSource::Column(c), true) => Some(c.clone()),
            _ => None,
        };
        // The tag column is not read from the records when tags fill it.
        let schema = match &tag_column {
            Some(c) => Arc::new(Schema::new(
                full.fields()
                    .iter()
                    .filter(|f| f.name() != c)
                    .cloned()
                    .collect::<Vec<_>>(),
            )),
            None => full,
        };
        JsonDecoder {
            schema,
            format,
            tag_column,
            max_string_len: rules.limits.max_string_len,
        }
    }

    /// Decode a batch of messages; bad messages are rejected with a reason,
    /// never fatal.
    pub fn decode(&self, messages: &[Message<'_>]) -> Decoded {
        let all: Vec<usize> = (0..messages.len()).collect();
        if let Ok(d) = self.decode_together(messages, &all) {
            return d;
        }
        let mut good = Vec::new();
        let mut rejected = Vec::new();
        for i in 0..messages.len() {
            match self.decode_together(messages, &[i]) {
                Ok(_) => good.push(i),
                Err(reason) => rejected.push((i, reason)),
            }
        }
        let mut out = match self.decode_together(messages, &good) {
            Ok(d) => d,
            // Every message decoded alone; together they must too. Should
            // this ever fail, reject them all rather than lose the reason.
            Err(reason) => Decoded {
                rejected: good.iter().map(|&i| (i, reason.clone())).collect(),
                ..Decoded::default()
            },
        };
        out.rejected.extend(rejected);
        out.rejected.sort_by_key(|(i, _)| *i);
        out
    }

    fn decode_together(
        &self,
        messages: &[Message<'_>],
        which: &[usize],
    ) -> Result<Decoded, String> {
        let mut decoder = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(DECODE_ROWS)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| redact(&e.to_string()))?;
        let mut batches = Vec::new();
        let mut flushed = 0usize;
        let mut row_tags: Vec<Option<&str>> = Vec::new();
        for &i in which {
            let m = &messages[i];
            let before = flushed + decoder.len();
            let mut buf = m.payload;
            while !buf.is_empty() {
                let n = decoder
                    .decode(buf)
                    .map_err(|e| format!("not valid JSON: {}", redact(&e.to_string())))?;
                buf = &buf[n..];
                if n == 0 || decoder.len() >= DECODE_ROWS {
                    if decoder.has_partial_record() {
                        // A record straddles the flush; keep feeding.
                        if n == 0 {
                            return Err("a record does not fit in one decode buffer".into());
                        }
                        continue;
                    }
                    flushed += decoder.len();
                    if let Some(b) = decoder.flush().map_err(schema_reason)? {
                        batches.push(b);
                    }
                }
            }
            if decoder.has_partial_record() {
                return Err("not valid JSON: the message ends inside a record".into());
            }
            let rows = flushed + decoder.len() - before;
            match self.format {
                MessageFormat::Json if rows != 1 => {
                    return Err(format!(
                        "a `json` message holds exactly one JSON object, this one holds {rows}"
                    ));
                }
                _ if rows == 0 => return Err("the message holds no record".into()),
                _ => {}
            }
            row_tags.extend(std::iter::repeat_n(m.tag, rows));
        }
        if let Some(b) = decoder.flush().map_err(schema_reason)? {
            batches.push(b);
        }
        let mut offset = 0;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            self.check_strings(&b)?;
            let n = b.num_rows();
            let b = match &self.tag_column {
                Some(col) => with_tags(&b, col, &row_tags[offset..offset + n])?,
                None => b,
            };
            offset += n;
            out.push(b);
        }
        Ok(Decoded {
            rows: offset as u64,
            batches: out,
            rejected: Vec::new(),
        })
    }

    fn check_strings(&self, b: &RecordBatch) -> Result<(), String> {
        check_string_lengths(b, self.max_string_len)
    }
}

/// Reject a batch holding a string longer than `limit` bytes.
pub fn check_string_lengths(b: &RecordBatch, limit: usize) -> Result<(), String> {
    for (field, col) in b.schema().fields().iter().zip(b.columns()) {
        if let DataType::Utf8 = col.data_type() {
            let longest = col
                .as_string::<i32>()
                .value_offsets()
                .windows(2)
                .map(|w| (w[1] - w[0]) as usize)
                .max()
                .unwrap_or(0);
            if longest > limit {
                return Err(format!(
                    "column `{}` holds a string of {longest} bytes, over the limit of {limit} (limits.max_string_len)",
                    field.name()
                ));
            }
        }
    }
    Ok(())
}

fn schema_reason(e: arrow::error::ArrowError) -> String {
    format!(
        "a value does not fit the declared column type (schema violation): {}",
        redact(&e.to_string())
    )
}

/// Append the trust column filled from message tags (null where a message had none).
fn with_tags(b: &RecordBatch, column: &str, tags: &[Option<&str>]) -> Result<RecordBatch, String> {
    let tags: ArrayRef = Arc::new(StringArray::from(tags.to_vec()));
    let mut fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(column, DataType::Utf8, true));
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols.push(tags);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| e.to_string())
}

/// Remove quoted text from an error message: decoders quote the offending
/// value, which may be a raw `pii` value.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{ColumnRule, Rules};

    fn rules() -> Rules {
        let col = |name: &str, kind| ColumnRule {
            name: name.into(),
            kind,
            range: None,
            pii: false,
            nullable: true,
        };
        Rules::for_tests(
            "t",
            vec![
                col("amount", ColumnKind::Numeric),
                col("country", ColumnKind::Categorical),
                col("ts", ColumnKind::Timestamp),
            ],
        )
    }

    fn msgs<'a>(payloads: &'a [&'a str]) -> Vec<Message<'a>> {
        payloads
            .iter()
            .map(|p| Message {
                payload: p.as_bytes(),
                tag: None,
            })
            .collect()
    }

    #[test]
    fn good_json_messages_decode_in_one_pass() {
        let d = JsonDecoder::new(&rules(), MessageFormat::Json, false);
        let out = d.decode(&msgs(&[
            r#"{"amount": 3, "country": "DE", "trust_tag": "vendor", "label": 1, "ts": "2024-06-01T00:00:00Z"}"#,
            r#"{"amount": 4.5, "country": "FR", "trust_tag": "scraped", "label": "0", "extra": [1]}"#,
        ]));
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(out.rows, 2);
        let b = &out.batches[0];
        assert_eq!(
            b.column_by_name("label")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "1"
        );
        assert!(b.column_by_name("ts").unwrap().is_null(1));
    }

    #[test]
    fn bad_messages_are_rejected_and_good_ones_kept() {
        let d = JsonDecoder::new(&rules(), MessageFormat::Json, false);
        let out = d.decode(&msgs(&[
            r#"{"amount": 1, "country": "DE"}"#,
            r#"{"amount": "secret-abc", "country": "DE"}"#,
            r#"{"amount": 2, "#,
            r#"{"amount": 3}{"amount": 4}"#,
            r#"{"amount": 5, "country": "FR"}"#,
            "",
        ]));
        let bad: Vec<usize> = out.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 2, 3, 5], "{:?}", out.rejected);
        assert_eq!(out.rows, 2);
        assert!(
            out.rejected[0].1.contains("schema violation"),
            "{}",
            out.rejected[0].1
        );
        assert!(
            !out.rejected[0].1.contains("secret-abc"),
            "value leaked: {}",
            out.rejected[0].1
        );
        let amounts = out.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(amounts.values().to_vec(), vec![1.0, 5.0]);
    }

    #[test]
    fn json_lines_messages_carry_many_records_and_header_tags() {
        let d = JsonDecoder::new(&rules(), MessageFormat::JsonLines, true);
        let payloads = ["{\"amount\": 1}\n{\"amount\": 2}\n", "{\"amount\": 3}"];
        let m = vec![
            Message {
                payload: payloads[0].as_bytes(),
                tag: Some("vendor"),
            },
            Message {
                payload: payloads[1].as_bytes(),
                tag: Some("scraped"),
            },
        ];
        let out = d.decode(&m);
        assert!(out.rejected.is_empty());
        assert_eq!(out.rows, 3);
        let tags = out.batches[0]
            .column_by_name("trust_tag")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(
            tags.iter().collect::<Vec<_>>(),
            vec![Some("vendor"), Some("vendor"), Some("scraped")]
        );
    }

    #[test]
    fn long_strings_are_rejected() {
        let mut r = rules();
        r.limits.max_string_len = 4;
        let d = JsonDecoder::new(&r, MessageFormat::Json, false);
        let out = d.decode(&msgs(&[
            r#"{"country": "DE"}"#,
            r#"{"country": "GERMANY"}"#,
        ]));
        assert_eq!(out.rows, 1);
        assert_eq!(out.rejected.len(), 1);
        assert!(out.rejected[0].1.contains("max_string_len"));
    }

    #[test]
    fn redact_removes_quoted_values() {
        assert_eq!(
            redact(r#"cannot parse "bob@x" as Float64"#),
            "cannot parse \"…\" as Float64"
        );
        assert_eq!(redact("unterminated 'abc"), "unterminated '…");
    }
}
