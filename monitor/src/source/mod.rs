//! Sources: where batches come from, and how they are acknowledged. A
//! source yields batches; the pipeline drives.
//!
//! ```text
//!            ┌──────────── Source ─────────────┐        ┌──── pipeline ────┐
//!  files ───▶│ drop_folder: settle, identify,  │ next() │ Worker::process  │
//!            │   checkpoint skip               ├───────▶│ decode, profile, │
//!  objects ─▶│ object_drop: claim, download    │        │                  │
//!  Kafka ───▶│ kafka: windows, decode, dead    │ Batch  │ compare, commit  │
//!            │   letters, watermarks           │◀───────┤                  │
//!            └─────────────────────────────────┘ ack()  └──────────────────┘
//!                                               Outcome
//! ```
//!
//! [`Source::next`] blocks until a batch is ready (or the source is done:
//! shutdown, or a `--once` run that handled what was there), and
//! [`Source::ack`] is called with the pipeline's [`Outcome`] after the
//! batch's commit. Acknowledging is the source's own business: a drop
//! folder checkpoints the file (or moves a quarantined one aside), Kafka
//! stores and commits the window's offsets. A source reads the history
//! (to skip what is committed without reading it again, and to move
//! quarantined files where the history says) but never writes a batch to
//! it, and never imports the pipeline: the driver
//! ([`crate::pipeline::Worker::drive`]) owns the order next → process → ack
//! and the shutdown between batches.
//!
//! Files: `batch.rs` (what a source hands over and what it is answered),
//! `drop_folder.rs` (the drop-folder source, live or over recorded files),
//! `parquet_drop.rs` (the folder listing and its complete-file rule),
//! `object_drop.rs` (a drop location on an object store, shared by
//! replicas through claims),
//! `kafka/` (the consumer source), `kafka_range/` (a topic range read for
//! `replay`).

pub mod batch;
pub mod drop_folder;
pub mod kafka;
pub mod kafka_range;
pub mod object_drop;
pub mod parquet_drop;
pub mod stream;

use std::path::PathBuf;

pub use batch::{Batch, BatchOrigin, Input, Outcome};

use crate::shutdown::Shutdown;
use crate::store::history::{History, HistoryError};

/// What a source sees while it works: the dataset's history, read only, and
/// the shutdown signal.
pub struct SourceCtx<'a> {
    pub history: &'a History,
    pub shutdown: &'a Shutdown,
}

/// A source of batches (see the module's diagram).
pub trait Source {
    /// What the source needs back to acknowledge one batch.
    type Ack;

    /// The next batch and its acknowledgement token; `None` when the source
    /// is done (shutdown, or a `--once` run with nothing left).
    fn next(&mut self, ctx: &SourceCtx<'_>) -> Result<Option<(Batch, Self::Ack)>, SourceError>;

    /// Acknowledge a batch after the pipeline answered `outcome` (its commit,
    /// when there was one, is durable).
    fn ack(
        &mut self,
        ack: Self::Ack,
        outcome: &Outcome,
        ctx: &SourceCtx<'_>,
    ) -> Result<(), SourceError>;
}

/// Why a source had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSourceError),
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A recorded input (replay) that could not be read: a replay has no
    /// later to retry it, and must not drop a batch silently.
    #[error("could not read {}: {reason}", path.display())]
    Unread { path: PathBuf, reason: String },
    /// A source's own record (an object store drop's done marker) could
    /// not be written.
    #[error("could not write {url}: {reason}")]
    Store { url: String, reason: String },
}
