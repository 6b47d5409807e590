//! The store: the only stage that writes state. It is its own crate,
//! `dqmon-store` (history, baselines and approvals, the audit chain,
//! checkpoints, the writer lock, the storage backend), re-exported here;
//! what stays in the daemon is [`refusal`], the record of a batch the
//! security policy refused.

pub use dqmon_store::{
    audit, backend, baselines, fault, fsutil, history, lock, object, presence, sha256_file,
};

pub mod refusal;
