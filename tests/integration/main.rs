//! dqmon's integration tests: one test binary, one module per capability.
//! They run the real `dqmon` binary (built by `cargo test --workspace`) on
//! temporary state folders.

mod common;

mod alerts;
mod baselines;
mod capacity;
mod config_errors;
mod crash;
mod crate_graph;
mod daemon;
mod faults;
mod fleet;
mod golden;
mod history_baseline;
mod kafka;
mod kafka_replay;
mod object_store;
mod ops;
mod profile_exact;
mod query;
mod quickstart;
mod real_data;
mod replay;
mod replica_names;
mod report;
mod security;
mod shared_history;
