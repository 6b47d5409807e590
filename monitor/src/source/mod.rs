//! Sources: where raw batches come from, with what is needed to acknowledge
//! them. A source knows nothing of Arrow or statistics.

pub mod kafka;
pub mod kafka_range;
pub mod parquet_drop;
