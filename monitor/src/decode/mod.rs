//! Decode: input bytes to Arrow record batches. It checks the input limits
//! and reports malformed input with a reason; it never computes statistics.

pub mod ipc;
pub mod json;
mod ordered;
pub mod parquet;

pub use self::parquet::{DecodeError, ParquetInput};
