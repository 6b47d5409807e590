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
pub mod baseline;
pub mod baseline_history;
pub mod cli;
pub mod compare;
pub mod config;
pub mod decode;
pub mod escape;
pub mod evaluate;
pub mod fixtures;
pub mod ops;
pub mod pii;
pub mod profile;
pub mod query;
pub mod replay;
pub mod report;
pub mod security;
pub mod source;
pub mod store;
