//! dqmon: a streaming data-quality monitor for ML ingestion.
//!
//! ```text
//!  source ──► decode ──► profile ──► compare ──► alert ──► sinks
//!  (parquet   (Arrow       (per column  (vs approved  (fingerprint,
//!   drop,      RecordBatch   × trust tag, baseline;     stdout, file)
//!   kafka)     + limits)     sketches)    findings)
//!                 │             │            │             │
//!                 └─────────────┴── store ───┴─────────────┘
//!                  (history, baselines, approvals, checkpoints, alerts)
//! ```
//!
//! Data flows one way. `profile` and `compare` are pure functions (no I/O,
//! no clock); `store` is the only stage that writes state.

pub mod alert;
pub mod app;
pub mod backoff;
pub mod baseline_history;
pub mod cli;
pub mod decode;
pub mod ops;
pub mod pii;
pub mod pipeline;
pub mod query;
pub mod replay;
pub mod report;
pub mod security;
pub mod shutdown;
pub mod source;
pub mod store;

// The pure stages live in `dqmon-core` and the rules loader in
// `dqmon-config`; they are re-exported under their old paths, so
// `dqmon::profile`, `dqmon::config` and the rest keep naming the same
// things. The synthetic generator (`dqmon-fixtures`) and the detection
// measurement (`dqmon-eval`) are not part of this crate or its binary.
pub use dqmon_config as config;
pub use dqmon_core::{baseline, compare, escape, profile};
