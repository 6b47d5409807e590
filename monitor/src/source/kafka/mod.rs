//! The Kafka source: a consumer group of dqmon's own on the ingestion
//! topics, cutting the message stream into batches and acknowledging each
//! batch only once it is durably in the history.
//!
//! Owns: the librdkafka consumer (a `StreamConsumer` on a current-thread
//! tokio runtime inside the dataset's worker thread), batch boundaries,
//! batch ids, the offset discipline, rebalances, and the dead-letter topic.
//! It must not profile, compare or write state itself: decoding goes through
//! [`crate::decode::json`] / [`crate::decode::ipc`], and [`KafkaStream`] is a
//! [`Source`](super::Source): it yields each batch to the pipeline that
//! drives it ([`crate::pipeline::Worker::drive`]) and commits the offset when
//! the batch is acknowledged. A closed window becomes a pipeline batch in
//! `WindowDecoder` (decode, reject oversized and malformed messages, the
//! malformed share), which `dqmon replay` runs too on the windows of a topic
//! range ([`super::kafka_range`]); dead-lettering and offsets stay here,
//! live only.
//!
//! ```text
//!  recv ─► window per partition ─► closed window ─► decode ─► DLQ bad messages (awaited)
//!          (batch-id header, or                            ─► next(): batch to the pipeline
//!           records / bytes / time)                           (profile, compare, history commit)
//!                                                          ─► ack(): store + commit offset (sync)
//! ```
//!
//! Offsets: `enable.auto.offset.store=false` and `enable.auto.commit=false`;
//! the offset after a batch's last message is stored and committed
//! synchronously after the batch's manifest and alerts are in the history.
//! Rebalance callbacks run inside `recv`, which only `next()` calls once the
//! windows already decoded are handed over and acknowledged, so they never
//! interleave with a batch between its history commit and its offset commit. On a rebalance
//! the open windows of revoked and newly assigned partitions are dropped
//! without commit: the new owner reads them again from the committed offset.
//! A crash between the history commit and the offset commit is covered by
//! the history itself: each manifest records `kafka:topic/partition@first-last`
//! and messages at or below a partition's last committed offset are skipped.
//!
//! Files: `mod.rs` (client configuration and secrets, batch ids and
//! origins, the shared imports), `batcher.rs` (windows per partition),
//! `window.rs` (a closed window into a pipeline batch, shared with
//! replay), `consumer.rs` (the live source: rebalances, dead letters,
//! offsets after the acknowledgement).

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use sha2::{Digest, Sha256};

use crate::config::model::{KafkaSource, SecretRef};

mod batcher;
mod consumer;
mod window;

pub use batcher::{Batcher, OwnedMsg, Window, WindowLimits};
pub use consumer::{KafkaAck, KafkaStream};
pub(crate) use window::{Prepared, WindowDecoder, own_message};

/// Header names on dead-letter messages.
pub const DLQ_REASON: &str = "dqmon.reason";
pub const DLQ_TOPIC: &str = "dqmon.source.topic";
pub const DLQ_PARTITION: &str = "dqmon.source.partition";
pub const DLQ_OFFSET: &str = "dqmon.source.offset";
pub const DLQ_DATASET: &str = "dqmon.dataset";

/// Why the Kafka source could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error(
        "the secret property `{property}` is read from the environment variable {var}, which is not set; export it before starting dqmon"
    )]
    MissingEnv { property: String, var: String },
    #[error(
        "the secret property `{property}` is read from {path}, which cannot be read: {source}; check the path and that this user may read it"
    )]
    SecretFile {
        property: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "could not create the Kafka client: {0}; check `source.kafka.brokers` and `properties` against librdkafka's CONFIGURATION.md"
    )]
    Client(#[source] KafkaError),
    #[error("could not subscribe to the topics {topics}: {source}")]
    Subscribe {
        topics: String,
        #[source]
        source: KafkaError,
    },
    #[error("could not start the Kafka runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The client configuration of a Kafka source (secrets resolved), shared by
/// the consumer and the dead-letter producer.
pub fn client_config(k: &KafkaSource) -> Result<ClientConfig, KafkaSourceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    for (key, secret) in &k.secret_properties {
        let value = match secret {
            SecretRef::Env(var) => {
                std::env::var(var).map_err(|_| KafkaSourceError::MissingEnv {
                    property: key.clone(),
                    var: var.clone(),
                })?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|source| KafkaSourceError::SecretFile {
                    property: key.clone(),
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        c.set(key, value);
    }
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    Ok(c)
}

/// The consumer configuration: the client config plus dqmon's offset discipline.
pub fn consumer_config(k: &KafkaSource) -> Result<ClientConfig, KafkaSourceError> {
    let mut c = client_config(k)?;
    c.set("group.id", &k.group_id);
    c.set("enable.auto.offset.store", "false");
    c.set("enable.auto.commit", "false");
    c.set("enable.partition.eof", "true");
    if !k.properties.contains_key("statistics.interval.ms") {
        c.set("statistics.interval.ms", "5000");
    }
    if !k.properties.contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    Ok(c)
}

/// A batch id: dataset, topic, partition, first and last offset, content hash.
pub fn batch_id(
    dataset: &str,
    topic: &str,
    partition: i32,
    first: i64,
    last: i64,
    sha: &str,
) -> String {
    let key = format!(
        "{dataset}\u{1f}kafka\u{1f}{topic}\u{1f}{partition}\u{1f}{first}\u{1f}{last}\u{1f}{sha}"
    );
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// The origin of a batch as the manifest records it.
pub fn origin_label(topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("kafka:{topic}/{partition}@{first}-{last}")
}

/// Parse an origin written by [`origin_label`]: (topic, partition, first, last).
pub fn parse_origin(s: &str) -> Option<(String, i32, i64, i64)> {
    let rest = s.strip_prefix("kafka:")?;
    let (tp, range) = rest.rsplit_once('@')?;
    let (topic, partition) = tp.rsplit_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((
        topic.to_string(),
        partition.parse().ok()?,
        first.parse().ok()?,
        last.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use crate::config::model::{KafkaTrust, MessageFormat};

    use super::*;

    fn msg(offset: i64, key: Option<&str>) -> OwnedMsg {
        OwnedMsg {
            offset,
            key: None,
            payload: b"{}".to_vec(),
            tag: None,
            batch_key: key.map(str::to_string),
        }
    }

    fn limits() -> WindowLimits {
        WindowLimits {
            max_records: 3,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(5),
        }
    }

    #[test]
    fn windows_close_by_records_batch_id_and_time() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits());
        assert!(b.push("t", 0, msg(0, None), t0).is_empty());
        assert!(b.push("t", 1, msg(0, None), t0).is_empty());
        assert!(b.push("t", 0, msg(1, None), t0).is_empty());
        let closed = b.push("t", 0, msg(2, None), t0);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].first(), closed[0].last()), (0, 2));
        // batch-id change closes the previous batch
        assert!(b.push("t", 2, msg(5, Some("a")), t0).is_empty());
        let closed = b.push("t", 2, msg(6, Some("b")), t0);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].last(), 5);
        // time
        assert!(b.due(t0 + Duration::from_secs(1)).is_empty());
        let due = b.due(t0 + Duration::from_secs(5));
        assert_eq!(due.len(), 2, "partition 1 and partition 2 windows");
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_id_batch_closes_after_it_went_quiet_not_after_it_began() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Batcher::new(limits());
        b.push("t", 0, msg(0, Some("a")), t0);
        b.push("t", 0, msg(1, Some("a")), t0 + s(4));
        b.push("t", 1, msg(0, None), t0 + s(4));
        // 6 s after its first message but 2 s after its last: still open
        assert!(b.due(t0 + s(6)).is_empty());
        assert_eq!(b.next_deadline(), Some(t0 + s(9)));
        let due = b.due(t0 + s(9));
        assert_eq!(due.len(), 2);
        assert!(due.iter().any(|w| w.partition == 0 && w.msgs.len() == 2));
    }

    #[test]
    fn time_spent_processing_does_not_count_toward_the_time_limit() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Batcher::new(limits());
        b.push("t", 0, msg(0, Some("a")), t0);
        b.push("t", 1, msg(0, None), t0);
        // the worker then spent 10 s on another batch
        b.postpone(s(10));
        assert!(b.due(t0 + s(12)).is_empty());
        assert_eq!(b.due(t0 + s(15)).len(), 2);
    }

    #[test]
    fn a_rewind_or_a_revoke_drops_the_open_window() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits());
        b.push("t", 0, msg(10, None), t0);
        b.push("t", 0, msg(11, None), t0);
        assert!(b.push("t", 0, msg(10, None), t0).is_empty());
        assert_eq!(b.flush("t", 0).unwrap().msgs.len(), 1);
        b.push("t", 0, msg(12, None), t0);
        assert_eq!(b.drop_partition("t", 0), Some(1));
        assert!(b.is_empty());
    }

    #[test]
    fn batch_ids_and_origins_are_stable() {
        let w = Window {
            topic: "t".into(),
            partition: 3,
            msgs: vec![msg(7, None), msg(8, None)],
            bytes: 4,
            opened: Instant::now(),
            touched: Instant::now(),
        };
        let a = batch_id("d", "t", 3, w.first(), w.last(), &w.sha256());
        let b = batch_id("d", "t", 3, 7, 8, &w.clone().sha256());
        assert_eq!(a, b);
        assert_ne!(a, batch_id("d", "t", 3, 7, 9, &w.sha256()));
        let o = origin_label("pay.ments-1", 3, 7, 8);
        assert_eq!(parse_origin(&o), Some(("pay.ments-1".into(), 3, 7, 8)));
        assert_eq!(parse_origin("/data/x.parquet"), None);
    }

    #[test]
    fn inline_secret_env_is_required() {
        let k = KafkaSource {
            brokers: "127.0.0.1:1".into(),
            topics: vec!["t".into()],
            group_id: "g".into(),
            format: MessageFormat::Json,
            trust: KafkaTrust::Records,
            batch_id_header: None,
            max_records: 1,
            max_bytes: 1,
            max_ms: 1,
            max_message_bytes: 1,
            dead_letter_topic: None,
            properties: BTreeMap::new(),
            secret_properties: [(
                "sasl.password".to_string(),
                SecretRef::Env("DQMON_TEST_SURELY_UNSET_VAR".into()),
            )]
            .into(),
        };
        let e = client_config(&k).unwrap_err().to_string();
        assert!(e.contains("DQMON_TEST_SURELY_UNSET_VAR"), "{e}");
    }
}
