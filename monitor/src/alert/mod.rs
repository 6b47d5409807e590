//! Alerts: findings of a batch become alerts with a stable fingerprint
//! (dataset, check, column, trust tag) and an id that is unique per batch
//! and finding, so that reprocessing a batch after a crash can never look
//! like a new alert. Everything in an alert comes from the data, the rules
//! and the baseline — never from the wall clock — so replays reproduce it
//! byte for byte.
//!
//! Sinks only see alerts after they are durably stored. With an `alerts:`
//! section in the rules, delivery goes through the outbox:
//!
//! ```text
//! batch thread: commit (alerts.jsonl) ─► outbox inbox ─► checkpoint
//!                                            │
//! delivery thread:            lifecycle (cooldown, resolve) ─► route
//!                                 ─► outbox message per receiver ─► sink (retries)
//! ```
//!
//! With a shared history the inbox is on the shared store and one replica
//! at a time runs the lifecycle for the fleet ([`fleet`]).
//!
//! Dedup, cooldown, resolve and routing govern notifications only; the
//! alerts file keeps one line per finding.

pub mod clock;
pub mod deliver;
pub mod fleet;
pub mod lifecycle;
pub mod outbox;
pub mod route;
pub mod sink;

pub use dqmon_core::alert::{Alert, BatchContext, fingerprint};
