//! What can go wrong reading and writing the history.

use std::path::{Path, PathBuf};

use crate::audit::AuditError;
use crate::lock::LockError;

/// History I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "could not write the history at {path}: {source}; check that the state folder is writable and has space"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history record {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("could not write metrics: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Another process took this replica's name (see [`crate::presence`]):
    /// nothing more is committed under it.
    #[error("{0}")]
    NameLost(String),
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}
