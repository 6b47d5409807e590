//! Input streams: the sequences along which evidence accumulates.
//!
//! A stream is what one writer reads in order: a drop folder, a Kafka
//! consumer's partitions (in commit order) or, in a fleet, one Kafka
//! partition, or this replica's share of an object-store drop location.
//! The sequential tests of [`crate::compare::evidence`] follow each stream
//! on its own (see `store::history`), so the evidence of a batch depends
//! on the batches before it in its stream only: live and a replay agree,
//! and in a fleet a replica that takes a Kafka partition over continues
//! where the last owner stopped.
//!
//! | source | stream id |
//! |---|---|
//! | drop folder | `drop` |
//! | Kafka, history in `state_dir` | `kafka` (every partition, in commit order: a campaign spread over partitions adds up in one window, and a replay follows live's commit order) |
//! | Kafka, `shared_history` | `kafka.<topic>.<partition>` (a partition moves between replicas; the commit order of the whole fleet is no one's to follow) |
//! | object-store drop | `drop.<replica>` (replicas claim objects in no set order, so each replica's batches are its own stream) |
//!
//! The replica's name is `$DQMON_REPLICA`, else the host name (a
//! StatefulSet pod's name, stable across restarts).

/// The stream of a local drop folder (one per dataset).
pub const DROP: &str = "drop";

/// The stream of a Kafka consumer whose history is its own: every
/// partition, in commit order.
pub const KAFKA: &str = "kafka";

/// The stream of a Kafka partition (a fleet's, on a shared history).
pub fn kafka(topic: &str, partition: i32) -> String {
    sanitize(&format!("kafka.{topic}.{partition}"))
}

/// The stream of this replica's objects of an object-store drop location.
pub fn object_drop(replica: &str) -> String {
    sanitize(&format!("drop.{replica}"))
}

/// This replica's name: `$DQMON_REPLICA`, else the host name.
pub fn replica() -> String {
    let name = std::env::var("DQMON_REPLICA")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    sanitize(name.trim())
}

/// A name as a stream id: characters a key may not hold become `_`, and
/// a leading dot is dropped (see `store::history::is_stream_id`).
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        "_".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::is_stream_id;

    #[test]
    fn every_stream_id_is_a_valid_key_part() {
        for id in [
            DROP.to_string(),
            KAFKA.to_string(),
            kafka("orders.v2", 11),
            object_drop("dqmon-0"),
            object_drop("host name/with slash"),
            object_drop(""),
            sanitize("..x"),
            replica(),
        ] {
            assert!(is_stream_id(&id), "{id}");
        }
        assert_eq!(kafka("orders", 3), "kafka.orders.3");
        assert_eq!(object_drop("a b"), "drop.a_b");
    }
}
