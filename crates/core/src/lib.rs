//! dqmon-core: the pure middle of dqmon's pipeline.
//!
//! ```text
//!  source ──► decode ──► profile ──► compare ──► alert ──► outbox ──► sinks
//!  (dqmon)    (dqmon)   ┌──────── dqmon-core ────────┐   (dqmon)
//!                       │ profile   compare  baseline │
//!                       │ rules  alert  pii  escape   │
//!                       └─────────────────────────────┘
//! ```
//!
//! What this crate owns:
//!
//! - [`rules`]: the typed, validated rules every stage reads (the YAML
//!   loader that builds them lives in `dqmon::config`);
//! - [`profile`]: record batches → a mergeable per-trust-tag profile;
//! - [`baseline`]: approved batch profiles → a baseline with its
//!   batch-to-batch bands;
//! - [`compare`]: profile + baseline + the evidence of earlier batches →
//!   findings + the evidence after this batch, with the statistics and the
//!   false-alarm budget behind every decision;
//! - [`alert`]: a finding of a batch → an alert with its fingerprint and
//!   id (delivery is the daemon's);
//! - [`pii`]: the keyed hash that replaces raw values of `pii` columns;
//! - [`escape`]: untrusted text made safe for one line of output.
//!
//! What it must not do: I/O of any kind (files, network, environment),
//! read a clock, or spawn threads. Every function here is a function of its
//! inputs, so a replay gives the bytes live gave. The dependency list is
//! checked by a test (`tests/integration/crate_graph.rs`): adding tokio,
//! rdkafka, datafusion or parquet here fails it.

pub mod alert;
pub mod baseline;
pub mod compare;
pub mod escape;
pub mod pii;
pub mod profile;
pub mod rules;
