//! What a source hands the pipeline ([`Batch`]) and what the pipeline
//! answers ([`Outcome`]), for the source to acknowledge.

use std::path::PathBuf;

use crate::compare::Finding;
use crate::decode::json::Decoded;

/// Where a batch came from, as its manifest and alerts record it: a dropped
/// file or a Kafka topic/partition/offset range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOrigin {
    /// The full origin (file path, or `kafka:topic/partition@first-last`).
    pub source: String,
    /// A short name for logs and messages (file name, or the same as `source`).
    pub name: String,
    /// Input bytes.
    pub size: u64,
    /// The input stream it belongs to, along which evidence accumulates
    /// (see [`super::stream`]).
    pub stream: String,
}

/// One batch as a source hands it over.
pub struct Batch {
    pub origin: BatchOrigin,
    /// The batch id (dataset, origin, SHA-256 of the bytes; see [`super::drop_folder::batch_id`] and [`super::kafka::batch_id`]).
    pub id: String,
    /// SHA-256 of the input bytes, hex.
    pub sha256: String,
    pub input: Input,
}

/// What a batch holds, as far as its source read it.
pub enum Input {
    /// A Parquet file, read and profiled here (row groups in parallel).
    File(PathBuf),
    /// Record batches a message source decoded. `rejected`: the messages
    /// it could not use (index, reason); `extra`: findings the source made
    /// (a malformed share), added when the batch is processed.
    Decoded {
        decoded: Decoded,
        rejected: Vec<(usize, String)>,
        extra: Vec<Finding>,
    },
    /// Refused before a byte was read (an oversized file): why.
    Refused(String),
    /// Not read: the source found the batch id in the history already (a
    /// Kafka window committed before a crash, read again). The pipeline
    /// counts it skipped.
    Committed,
}

/// What [`crate::pipeline::Worker::process`] did with a batch, for its source to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already in the history: nothing done.
    Skipped,
    /// Committed as the same bytes as an earlier batch.
    Replayed,
    /// Profiled, compared and committed with its findings.
    Processed,
    /// Committed as quarantined, for this reason (a file source moves the
    /// file aside).
    Quarantined(String),
    /// Could not be read now (an I/O error, given): nothing committed; the
    /// source tries again later.
    Retry(String),
}
