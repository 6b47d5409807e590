//! The Kafka source: a consumer group of dqmon's own on the ingestion
//! topics, cutting the message stream into batches and acknowledging each
//! batch only once it is durably in the history.
//!
//! Owns: the librdkafka consumer (a `StreamConsumer` on a current-thread
//! tokio runtime inside the dataset's worker thread), batch boundaries,
//! batch ids, the offset discipline, rebalances, and the dead-letter topic.
//! It must not profile, compare or write state itself: decoding goes through
//! [`crate::decode::json`] / [`crate::decode::ipc`], and every batch goes
//! through the one per-batch path, [`Worker::process`] ([`crate::pipeline`]).
//! A closed window becomes a pipeline batch in `WindowDecoder` (decode,
//! reject oversized and malformed messages, the malformed share), which
//! `dqmon replay` runs too on the windows of a topic range
//! ([`super::kafka_range`]); dead-lettering and offsets stay here, live only.
//!
//! ```text
//!  recv ─► window per partition ─► closed batch ─► DLQ bad messages (awaited)
//!          (batch-id header, or       │               ─► decode + profile ─► compare
//!           records / bytes / time)   │               ─► history commit (manifest, alerts)
//!                                     └──────────────────► store + commit offset (sync)
//! ```
//!
//! Offsets: `enable.auto.offset.store=false` and `enable.auto.commit=false`;
//! the offset after a batch's last message is stored and committed
//! synchronously after the batch's manifest and alerts are in the history.
//! Rebalance callbacks run inside `recv`, so they never interleave with a
//! batch between its history commit and its offset commit. On a rebalance
//! the open windows of revoked and newly assigned partitions are dropped
//! without commit: the new owner reads them again from the committed offset.
//! A crash between the history commit and the offset commit is covered by
//! the history itself: each manifest records `kafka:topic/partition@first-last`
//! and messages at or below a partition's last committed offset are skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::Message as _;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

use crate::app::{AppError, RunSummary, Shutdown};
use crate::compare::{Check, Finding, Severity, Verdict};
use crate::config::model::{KafkaSource, KafkaTrust, MessageFormat, SecretRef, SourceRule};
use crate::decode::ipc::IpcDecoder;
use crate::decode::json::{Decoded, JsonDecoder, Message};
use crate::pipeline::{Batch, BatchOrigin, Input, Outcome, Worker};

/// The longest one dead-letter send may wait for the broker
/// (`message.timeout.ms` of the dead-letter producer, unless the rules set
/// it); never more than a third of the group's `max.poll.interval.ms`
/// (300 s by default), so an outage of the dead-letter topic never keeps
/// the consumer from polling long enough to be evicted.
const DLQ_SEND_TIMEOUT_MS: u64 = 10_000;

/// `message.timeout.ms` of the dead-letter producer (see [`DLQ_SEND_TIMEOUT_MS`]).
fn dlq_send_timeout_ms(k: &KafkaSource) -> u64 {
    let poll = k
        .properties
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    DLQ_SEND_TIMEOUT_MS.min(poll / 3).max(1)
}

/// The retry schedule of a parked window's dead letters.
const DLQ_BACKOFF: crate::backoff::Backoff = crate::backoff::Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

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

/// One consumed message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMsg {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Trust tag from a header or the topic.
    pub tag: Option<String>,
    /// Value of the batch-id header.
    pub batch_key: Option<String>,
}

/// The messages of one partition that form one batch.
#[derive(Debug, Clone)]
pub struct Window {
    pub topic: String,
    pub partition: i32,
    pub msgs: Vec<OwnedMsg>,
    pub bytes: u64,
    pub opened: Instant,
    /// When its last message arrived.
    pub touched: Instant,
}

impl Window {
    pub fn first(&self) -> i64 {
        self.msgs.first().map_or(-1, |m| m.offset)
    }
    pub fn last(&self) -> i64 {
        self.msgs.last().map_or(-1, |m| m.offset)
    }
    /// SHA-256 of the payloads, each prefixed with its length.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for m in &self.msgs {
            h.update((m.payload.len() as u64).to_le_bytes());
            h.update(&m.payload);
        }
        hex::encode(h.finalize())
    }
}

/// Limits that close a window.
#[derive(Debug, Clone, Copy)]
pub struct WindowLimits {
    pub max_records: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// Cuts each partition's messages into batches. Pure: the caller passes the time.
#[derive(Debug)]
pub struct Batcher {
    limits: WindowLimits,
    open: BTreeMap<(String, i32), Window>,
}

impl Batcher {
    pub fn new(limits: WindowLimits) -> Batcher {
        Batcher {
            limits,
            open: BTreeMap::new(),
        }
    }

    /// Add a message; returns the windows this closes (at most two: the
    /// previous batch when the batch id changed, and this one when full).
    pub fn push(
        &mut self,
        topic: &str,
        partition: i32,
        msg: OwnedMsg,
        now: Instant,
    ) -> Vec<Window> {
        let mut closed = Vec::new();
        let key = (topic.to_string(), partition);
        if let Some(w) = self.open.get(&key) {
            if msg.offset <= w.last() {
                // The partition was rewound (seek or re-fetch): start over.
                self.open.remove(&key);
            } else if w.msgs.last().map(|m| &m.batch_key) != Some(&msg.batch_key) {
                closed.extend(self.open.remove(&key));
            }
        }
        let w = self.open.entry(key.clone()).or_insert_with(|| Window {
            topic: topic.to_string(),
            partition,
            msgs: Vec::new(),
            bytes: 0,
            opened: now,
            touched: now,
        });
        w.touched = now;
        w.bytes += msg.payload.len() as u64;
        w.msgs.push(msg);
        if w.msgs.len() as u64 >= self.limits.max_records || w.bytes >= self.limits.max_bytes {
            closed.extend(self.open.remove(&key));
        }
        closed
    }

    /// When a window closes by time. A window of a batch-id batch closes
    /// `max_age` after its last message (the batch is still arriving while
    /// messages come, however slowly); any other window `max_age` after its
    /// first message.
    fn deadline(&self, w: &Window) -> Instant {
        if w.msgs.last().is_some_and(|m| m.batch_key.is_some()) {
            w.touched + self.limits.max_age
        } else {
            w.opened + self.limits.max_age
        }
    }

    /// Windows whose time limit has passed.
    pub fn due(&mut self, now: Instant) -> Vec<Window> {
        let keys: Vec<_> = self
            .open
            .iter()
            .filter(|(_, w)| now >= self.deadline(w))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.open.remove(&k))
            .collect()
    }

    /// The worker was busy for `by` (processing a batch) and read nothing:
    /// that time does not count toward any open window's time limit, or a
    /// window would be cut while the rest of it waits in the consumer's queue.
    pub fn postpone(&mut self, by: Duration) {
        for w in self.open.values_mut() {
            w.opened += by;
            w.touched += by;
        }
    }

    /// When the oldest open window falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|w| self.deadline(w)).min()
    }

    /// Close a partition's window now (end of partition in `--once` mode).
    pub fn flush(&mut self, topic: &str, partition: i32) -> Option<Window> {
        self.open.remove(&(topic.to_string(), partition))
    }

    /// Drop a partition's window without closing it (revoked on a rebalance).
    pub fn drop_partition(&mut self, topic: &str, partition: i32) -> Option<usize> {
        self.open
            .remove(&(topic.to_string(), partition))
            .map(|w| w.msgs.len())
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// A topic and partition.
type Tp = (String, i32);

/// Rebalance events seen inside `recv` (assigned?, partitions), handled by
/// the loop after it returns.
#[derive(Default)]
struct RebalanceLog {
    events: Mutex<Vec<(bool, Vec<Tp>)>>,
}

struct Ctx {
    dataset: String,
    log: Arc<RebalanceLog>,
    /// Whether `/readyz` was last told that the source is connected.
    connected: AtomicBool,
}

impl Ctx {
    /// Tell `/readyz` about the connection, only when it changes.
    fn connected(&self, up: bool, detail: &str) {
        if self.connected.swap(up, Ordering::SeqCst) != up {
            crate::ops::health::global().source_status(&self.dataset, up, detail);
        }
    }
}

impl ClientContext for Ctx {
    /// Consumer lag per partition, from librdkafka's statistics
    /// (`statistics.interval.ms`, 5 s unless set in `properties`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal UA partition; -1 lag is "unknown".
                if *partition >= 0 && p.consumer_lag >= 0 {
                    crate::ops::metrics::kafka_lag(
                        &self.dataset,
                        topic,
                        *partition,
                        p.consumer_lag,
                    );
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(dataset = %self.dataset, error = %error, reason, "kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.connected(false, &format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let (assigned, tpl) = match r {
            Rebalance::Assign(t) => (true, *t),
            Rebalance::Revoke(t) => (false, *t),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "kafka rebalance error");
                return;
            }
        };
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        tracing::info!(
            assigned,
            partitions = ?parts,
            "kafka rebalance"
        );
        self.log
            .events
            .lock()
            .expect("rebalance log lock")
            .push((assigned, parts));
    }
}

/// A consumed message, owned, with its trust tag and batch-id header read
/// as the rules say (live runs and replays read messages the same way).
pub(crate) fn own_message(
    cfg: &KafkaSource,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> (String, i32, OwnedMsg) {
    let header = |name: &str| -> Option<String> {
        m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    let tag = match &cfg.trust {
        KafkaTrust::Records => None,
        KafkaTrust::Header(h) => header(h),
        KafkaTrust::Topics(map) => map.get(m.topic()).cloned(),
    };
    let batch_key = cfg.batch_id_header.as_deref().and_then(header);
    (
        m.topic().to_string(),
        m.partition(),
        OwnedMsg {
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            tag,
            batch_key,
        },
    )
}

/// A closed window decoded and ready to commit: what [`WindowDecoder::prepare`]
/// found, before the dead-letter step (live only) and the history commit.
pub(crate) struct Prepared {
    origin: BatchOrigin,
    id: String,
    sha: String,
    decoded: Decoded,
    /// Messages that could not be used (index in the window, reason).
    pub rejected: Vec<(usize, String)>,
    messages: u64,
}

impl Prepared {
    /// Rows decoded from the good messages.
    pub fn rows(&self) -> u64 {
        self.decoded.rows
    }
}

/// What `run` and `replay` on Kafka share: decode a closed window
/// (rejecting oversized and malformed messages) and hand it to the
/// pipeline ([`Worker::process`]). It never talks to Kafka: dead-lettering
/// and offsets are the live run's business.
pub(crate) struct WindowDecoder {
    cfg: KafkaSource,
    json: Option<JsonDecoder>,
    ipc: Option<IpcDecoder>,
}

impl WindowDecoder {
    pub fn new(worker: &Worker, cfg: &KafkaSource) -> WindowDecoder {
        let tags_fill = cfg.trust != KafkaTrust::Records;
        let (json, ipc) = match cfg.format {
            MessageFormat::ArrowIpc => (None, Some(IpcDecoder::new(worker.rules(), tags_fill))),
            f => (Some(JsonDecoder::new(worker.rules(), f, tags_fill)), None),
        };
        WindowDecoder {
            cfg: cfg.clone(),
            json,
            ipc,
        }
    }

    /// Decode a window; `None` when its batch is already in the history.
    pub fn prepare(&self, worker: &Worker, w: &Window) -> Option<Prepared> {
        let (first, last) = (w.first(), w.last());
        let sha = w.sha256();
        let dataset = &worker.rules().dataset;
        let id = batch_id(dataset, &w.topic, w.partition, first, last, &sha);
        if worker.history().contains(&id) {
            return None;
        }
        let origin = BatchOrigin {
            source: origin_label(&w.topic, w.partition, first, last),
            name: origin_label(&w.topic, w.partition, first, last),
            size: w.bytes,
        };
        // Oversized messages are rejected unread; the rest are decoded.
        let limit = self.cfg.max_message_bytes;
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut keep: Vec<usize> = Vec::new();
        for (i, m) in w.msgs.iter().enumerate() {
            if m.payload.len() as u64 > limit {
                rejected.push((
                    i,
                    format!(
                        "the message is {} bytes, over the limit of {limit} (source.kafka.max_message_bytes)",
                        m.payload.len()
                    ),
                ));
            } else {
                keep.push(i);
            }
        }
        let msgs: Vec<Message<'_>> = keep
            .iter()
            .map(|&i| Message {
                payload: &w.msgs[i].payload,
                tag: w.msgs[i].tag.as_deref(),
            })
            .collect();
        let decoded: Decoded = match (&self.json, &self.ipc) {
            (Some(j), _) => j.decode(&msgs),
            (None, Some(d)) => d.decode(&msgs),
            (None, None) => Decoded::default(),
        };
        rejected.extend(decoded.rejected.iter().map(|(i, r)| (keep[*i], r.clone())));
        rejected.sort_by_key(|(i, _)| *i);
        Some(Prepared {
            origin,
            id,
            sha,
            decoded,
            rejected,
            messages: w.msgs.len() as u64,
        })
    }

    /// Hand a prepared batch to the pipeline ([`Worker::process`]), with a
    /// malformed-share finding when too many messages were bad: processed,
    /// the same bytes as an earlier batch, or quarantined when no message
    /// could be used.
    pub fn commit(&self, worker: &mut Worker, p: Prepared) -> Result<Outcome, AppError> {
        let Prepared {
            origin,
            id,
            sha,
            decoded,
            rejected,
            messages: n,
        } = p;
        let bad = rejected.len() as u64;
        let share = bad as f64 / n as f64;
        let threshold = worker.rules().thresholds.malformed_max_share;
        let extra = if bad > 0 && share > threshold {
            vec![malformed_finding(
                &self.cfg, bad, n, share, threshold, &rejected,
            )]
        } else {
            Vec::new()
        };
        worker.process(Batch {
            origin,
            id,
            sha256: sha,
            input: Input::Decoded {
                decoded,
                rejected,
                extra,
            },
        })
    }
}

/// A Kafka dataset's run: the consumer, batcher, decoders and DLQ producer.
struct KafkaRun {
    cfg: KafkaSource,
    consumer: StreamConsumer<Ctx>,
    log: Arc<RebalanceLog>,
    producer: Option<FutureProducer>,
    batcher: Batcher,
    pipeline: WindowDecoder,
    /// Last offset in the history, per partition.
    watermarks: HashMap<(String, i32), i64>,
    /// Next offset committed to Kafka, per partition (as far as we know).
    committed: HashMap<(String, i32), i64>,
    /// Partitions at their end (for `--once`).
    at_eof: HashMap<(String, i32), bool>,
    assigned: bool,
    /// Windows waiting for the dead-letter topic, their partitions paused.
    parked: BTreeMap<(String, i32), Parked>,
    rng: rand::rngs::SmallRng,
}

/// A closed window whose rejected messages could not all be written to the
/// dead-letter topic. Its partition is paused (the consumer keeps polling,
/// so the group keeps it and no other replica takes the batch), nothing of
/// it is committed, and the dead-letter step is tried again on
/// [`DLQ_BACKOFF`]; when it succeeds the batch is committed, the partition
/// resumed, and reading goes on right after the window (messages that were
/// fetched meanwhile are read again, never skipped).
struct Parked {
    window: Window,
    prepared: Prepared,
    /// Rejected messages already written, in order.
    sent: usize,
    attempts: u32,
    next_try: Instant,
}

fn kerr(dataset: &str, e: KafkaSourceError) -> AppError {
    AppError::Kafka {
        dataset: dataset.to_string(),
        source: Box::new(e),
    }
}

/// Run a Kafka dataset's worker until shutdown (or, with `once`, until every
/// assigned partition has been read to its end).
pub fn run_worker(worker: Worker, shutdown: Shutdown) -> Result<RunSummary, AppError> {
    let dataset = worker.rules().dataset.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| kerr(&dataset, KafkaSourceError::Runtime(e)))?;
    rt.block_on(run_async(worker, shutdown))
}

async fn run_async(mut worker: Worker, shutdown: Shutdown) -> Result<RunSummary, AppError> {
    let dataset = worker.rules().dataset.clone();
    let SourceRule::Kafka(cfg) = worker.rules().source.clone() else {
        return Err(AppError::NoSource { dataset });
    };
    let once = worker.once();
    let log = Arc::new(RebalanceLog::default());
    let consumer: StreamConsumer<Ctx> = consumer_config(&cfg)
        .and_then(|c| {
            c.create_with_context(Ctx {
                dataset: dataset.clone(),
                log: log.clone(),
                connected: AtomicBool::new(false),
            })
            .map_err(KafkaSourceError::Client)
        })
        .map_err(|e| kerr(&dataset, e))?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|source| {
        kerr(
            &dataset,
            KafkaSourceError::Subscribe {
                topics: cfg.topics.join(","),
                source,
            },
        )
    })?;
    let producer = match &cfg.dead_letter_topic {
        Some(_) => Some(
            client_config(&cfg)
                .and_then(|mut c| {
                    c.set("enable.idempotence", "true");
                    if !cfg.properties.contains_key("message.timeout.ms") {
                        c.set("message.timeout.ms", dlq_send_timeout_ms(&cfg).to_string());
                    }
                    c.create::<FutureProducer>()
                        .map_err(KafkaSourceError::Client)
                })
                .map_err(|e| kerr(&dataset, e))?,
        ),
        None => None,
    };
    let pipeline = WindowDecoder::new(&worker, &cfg);
    let mut watermarks = HashMap::new();
    for m in worker
        .history()
        .manifests()
        .map_err(|source| AppError::History {
            dataset: dataset.clone(),
            source,
        })?
    {
        if let Some((t, p, _, last)) = parse_origin(&m.source) {
            let w = watermarks.entry((t, p)).or_insert(last);
            *w = (*w).max(last);
        }
    }
    let mut run = KafkaRun {
        batcher: Batcher::new(WindowLimits {
            max_records: cfg.max_records,
            max_bytes: cfg.max_bytes,
            max_age: Duration::from_millis(cfg.max_ms),
        }),
        cfg,
        consumer,
        log,
        producer,
        pipeline,
        watermarks,
        committed: HashMap::new(),
        at_eof: HashMap::new(),
        assigned: false,
        parked: BTreeMap::new(),
        rng: rand::SeedableRng::from_os_rng(),
    };
    tracing::info!(dataset = %dataset, topics = %run.cfg.topics.join(","), group = %run.cfg.group_id, "kafka consumer started");
    let connected_detail = format!(
        "consuming {} as group {}",
        run.cfg.topics.join(","),
        run.cfg.group_id
    );
    loop {
        if shutdown.is_triggered() {
            break;
        }
        let deadline = run
            .batcher
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(250))
            .min(Instant::now() + Duration::from_millis(250));
        let got = tokio::select! {
            m = run.consumer.recv() => Some(m.map(|m| run.own(&m))),
            _ = tokio::time::sleep_until(deadline.into()) => None,
        };
        run.apply_rebalances();
        if matches!(got, Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_)))) {
            run.consumer.context().connected(true, &connected_detail);
        }
        match got {
            Some(Ok((topic, partition, msg))) => {
                let key = (topic.clone(), partition);
                if run.parked.contains_key(&key) {
                    // fetched before the pause: read again after the resume
                    continue;
                }
                run.at_eof.insert(key.clone(), false);
                if run.watermarks.get(&key).is_some_and(|&w| msg.offset <= w) {
                    // Already in the history (a crash before the offset commit).
                    let w = run.watermarks[&key];
                    run.commit_offset(&topic, partition, w);
                    continue;
                }
                for w in run.batcher.push(&topic, partition, msg, Instant::now()) {
                    if !run.handle(&mut worker, w, &shutdown).await? {
                        return Ok(worker.summary.clone());
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // rdkafka does not say which topic reached its end: with
                // several topics, each topic's partition `p` is checked
                // against its own high watermark before its window closes.
                for t in run.cfg.topics.clone() {
                    let key = (t.clone(), p);
                    if run.is_assigned(&t, p) && run.at_end(&t, p) {
                        run.at_eof.insert(key, true);
                        if once
                            && let Some(w) = run.batcher.flush(&t, p)
                            && !run.handle(&mut worker, w, &shutdown).await?
                        {
                            return Ok(worker.summary.clone());
                        }
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(dataset = %dataset, error = %e, "kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => {}
        }
        for w in run.batcher.due(Instant::now()) {
            if !run.handle(&mut worker, w, &shutdown).await? {
                return Ok(worker.summary.clone());
            }
        }
        run.retry_parked(&mut worker, &shutdown).await?;
        if once
            && run.assigned
            && run.batcher.is_empty()
            && run.parked.is_empty()
            && run.all_at_eof()
        {
            break;
        }
    }
    if !run.parked.is_empty() {
        tracing::warn!(dataset = %dataset, windows = run.parked.len(), "stopping with batches still waiting for the dead-letter topic; they are uncommitted and will be read again");
    }
    let dropped = run.batcher.open.len();
    if dropped > 0 {
        tracing::info!(dataset = %dataset, windows = dropped, "stopping; open windows are left uncommitted and will be read again");
    }
    Ok(worker.summary.clone())
}

impl KafkaRun {
    fn own(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> (String, i32, OwnedMsg) {
        own_message(&self.cfg, m)
    }

    fn apply_rebalances(&mut self) {
        let events = std::mem::take(&mut *self.log.events.lock().expect("rebalance log lock"));
        for (assigned, parts) in events {
            if assigned {
                self.assigned = true;
            }
            for (t, p) in parts {
                if self.parked.remove(&(t.clone(), p)).is_some() {
                    tracing::info!(topic = %t, partition = p, "rebalance: dropped a batch waiting for the dead-letter topic; it is uncommitted and will be read again");
                }
                if let Some(n) = self.batcher.drop_partition(&t, p) {
                    tracing::info!(topic = %t, partition = p, messages = n, "rebalance: dropped an uncommitted window; it will be read again");
                }
                self.committed.remove(&(t.clone(), p));
                self.at_eof.remove(&(t, p));
            }
        }
    }

    fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.consumer.assignment().is_ok_and(|a| {
            a.elements()
                .iter()
                .any(|e| e.topic() == topic && e.partition() == partition)
        })
    }

    /// Whether `topic`'s `partition` has been read to its end. With one
    /// topic the end-of-partition event says so; with several, the next
    /// offset to read (the position, else the group's committed offset) is
    /// compared with the partition's high watermark. A partition with no
    /// committed offset and nothing read is at its end when it is empty, or
    /// when the consumer starts at the end (`auto.offset.reset: latest`).
    fn at_end(&self, topic: &str, partition: i32) -> bool {
        if self.cfg.topics.len() == 1 {
            return true;
        }
        let wait = Duration::from_secs(5);
        let Ok((low, high)) = self.consumer.fetch_watermarks(topic, partition, wait) else {
            return false;
        };
        let offset_in = |list: &TopicPartitionList| {
            list.find_partition(topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        };
        let next = self
            .consumer
            .position()
            .ok()
            .and_then(|l| offset_in(&l))
            .or_else(|| {
                let mut one = TopicPartitionList::new();
                one.add_partition(topic, partition);
                self.consumer
                    .committed_offsets(one, wait)
                    .ok()
                    .and_then(|l| offset_in(&l))
            });
        match next {
            Some(o) => o >= high,
            None => {
                let reset = self.cfg.properties.get("auto.offset.reset");
                let from_end =
                    reset.is_some_and(|r| matches!(r.as_str(), "latest" | "largest" | "end"));
                low >= high || from_end
            }
        }
    }

    fn all_at_eof(&self) -> bool {
        match self.consumer.assignment() {
            Ok(a) if a.count() > 0 => a.elements().iter().all(|e| {
                self.at_eof
                    .get(&(e.topic().to_string(), e.partition()))
                    .copied()
                    .unwrap_or(false)
            }),
            _ => false,
        }
    }

    /// Store and synchronously commit the offset after `last`.
    fn commit_offset(&mut self, topic: &str, partition: i32, last: i64) {
        let key = (topic.to_string(), partition);
        if self.committed.get(&key).is_some_and(|&c| c > last) {
            return;
        }
        let r = self
            .consumer
            .store_offset(topic, partition, last)
            .and_then(|()| self.consumer.commit_consumer_state(CommitMode::Sync));
        match r {
            Ok(()) => {
                self.committed.insert(key, last + 1);
            }
            Err(e) => {
                // The batch is in the history: a later commit, or the
                // history's own offsets after a restart, cover it.
                tracing::warn!(topic, partition, offset = last + 1, error = %e, "could not commit the offset; the batch is in the history and will not be counted twice");
            }
        }
    }

    /// Handle a closed window end to end. Returns `false` when shutdown
    /// interrupted it before its commit (nothing was committed).
    async fn handle(
        &mut self,
        worker: &mut Worker,
        w: Window,
        shutdown: &Shutdown,
    ) -> Result<bool, AppError> {
        let started = Instant::now();
        let handled = self.handle_window(worker, w, shutdown).await;
        self.batcher.postpone(started.elapsed());
        handled
    }

    /// [`KafkaRun::handle`] without the bookkeeping of time.
    async fn handle_window(
        &mut self,
        worker: &mut Worker,
        w: Window,
        shutdown: &Shutdown,
    ) -> Result<bool, AppError> {
        crate::ops::metrics::batch_started();
        let last = w.last();
        let dataset = worker.rules().dataset.clone();
        let Some(prepared) = self.pipeline.prepare(worker, &w) else {
            worker.summary.skipped += 1;
            self.done(&w.topic, w.partition, last);
            return Ok(true);
        };
        let bad = prepared.rejected.len();
        if bad > 0 {
            let sent = self.dead_letter(&dataset, &w, &prepared.rejected, 0).await;
            if sent < bad {
                if shutdown.is_triggered() {
                    return Ok(false);
                }
                self.park(&dataset, w, prepared, sent);
                return Ok(true);
            }
        }
        self.commit_window(worker, &w, prepared)
    }

    /// Commit a window whose dead letters are all written, and its offset.
    fn commit_window(
        &mut self,
        worker: &mut Worker,
        w: &Window,
        prepared: Prepared,
    ) -> Result<bool, AppError> {
        let bad = prepared.rejected.len() as u64;
        self.pipeline.commit(worker, prepared)?;
        if bad > 0 && self.producer.is_some() && self.cfg.dead_letter_topic.is_some() {
            crate::ops::metrics::dead_lettered(&worker.rules().dataset, bad);
        }
        self.done(&w.topic, w.partition, w.last());
        Ok(true)
    }

    /// Set a window aside until the dead-letter topic takes its rejected
    /// messages, pausing its partition (see [`Parked`]).
    fn park(&mut self, dataset: &str, w: Window, prepared: Prepared, sent: usize) {
        let key = (w.topic.clone(), w.partition);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&w.topic, w.partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(dataset, topic = %w.topic, partition = w.partition, error = %e, "could not pause the partition; its messages are set aside until the batch is committed");
        }
        // what was read after the window is read again after the resume
        self.batcher.drop_partition(&w.topic, w.partition);
        let wait = DLQ_BACKOFF.delay(1, &mut self.rng);
        tracing::warn!(dataset, topic = %w.topic, partition = w.partition, first_offset = w.first(), last_offset = w.last(), dead_letters_left = prepared.rejected.len() - sent, retry_in_ms = wait.as_millis() as u64, "the dead-letter topic does not take the batch's rejected messages: the partition is paused and the batch waits, uncommitted (the consumer keeps polling, so the group keeps the partition)");
        self.parked.insert(
            key,
            Parked {
                window: w,
                prepared,
                sent,
                attempts: 1,
                next_try: Instant::now() + wait,
            },
        );
    }

    /// Try the dead-letter step of every parked window that is due again;
    /// commit and resume those that get through.
    async fn retry_parked(
        &mut self,
        worker: &mut Worker,
        shutdown: &Shutdown,
    ) -> Result<(), AppError> {
        let now = Instant::now();
        let due: Vec<(String, i32)> = self
            .parked
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let dataset = worker.rules().dataset.clone();
        for key in due {
            if shutdown.is_triggered() {
                return Ok(());
            }
            let Some(mut p) = self.parked.remove(&key) else {
                continue;
            };
            p.sent = self
                .dead_letter(&dataset, &p.window, &p.prepared.rejected, p.sent)
                .await;
            if p.sent < p.prepared.rejected.len() {
                p.attempts += 1;
                let wait = DLQ_BACKOFF.delay(p.attempts, &mut self.rng);
                p.next_try = Instant::now() + wait;
                tracing::warn!(dataset = %dataset, topic = %key.0, partition = key.1, attempts = p.attempts, retry_in_ms = wait.as_millis() as u64, "the dead-letter topic is still unavailable; the partition stays paused");
                self.parked.insert(key, p);
                continue;
            }
            let Parked {
                window, prepared, ..
            } = p;
            self.commit_window(worker, &window, prepared)?;
            // read on right after the window, then resume
            let next = Offset::Offset(window.last() + 1);
            if let Err(e) = self
                .consumer
                .seek(&key.0, key.1, next, Duration::from_secs(5))
            {
                tracing::warn!(dataset = %dataset, topic = %key.0, partition = key.1, error = %e, "could not seek after the committed batch; the group's committed offset is used instead");
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&key.0, key.1);
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(dataset = %dataset, topic = %key.0, partition = key.1, error = %e, "could not resume the partition");
            }
            tracing::info!(dataset = %dataset, topic = %key.0, partition = key.1, "the dead-letter topic took the batch's rejected messages: batch committed, partition resumed");
        }
        Ok(())
    }

    fn done(&mut self, topic: &str, partition: i32, last: i64) {
        let key = (topic.to_string(), partition);
        let wm = self.watermarks.entry(key).or_insert(last);
        *wm = (*wm).max(last);
        self.commit_offset(topic, partition, last);
    }

    /// Produce the rejected messages from `from` on to the dead-letter
    /// topic, each waiting at most [`dlq_send_timeout_ms`] for the broker;
    /// stops at the first that fails. Returns how many of `rejected` are
    /// written (all of them when there is no dead-letter topic: they are
    /// logged by offset and counted).
    async fn dead_letter(
        &self,
        dataset: &str,
        w: &Window,
        rejected: &[(usize, String)],
        from: usize,
    ) -> usize {
        let (Some(producer), Some(dlq)) = (&self.producer, &self.cfg.dead_letter_topic) else {
            for (i, reason) in rejected {
                tracing::warn!(dataset, topic = %w.topic, partition = w.partition, offset = w.msgs[*i].offset, reason = %reason, "bad message skipped (no dead_letter_topic configured)");
            }
            return rejected.len();
        };
        for (n, (i, reason)) in rejected.iter().enumerate().skip(from) {
            let m = &w.msgs[*i];
            let partition = w.partition.to_string();
            let offset = m.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: DLQ_REASON,
                    value: Some(reason.as_str()),
                })
                .insert(Header {
                    key: DLQ_TOPIC,
                    value: Some(w.topic.as_str()),
                })
                .insert(Header {
                    key: DLQ_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: DLQ_OFFSET,
                    value: Some(offset.as_str()),
                })
                .insert(Header {
                    key: DLQ_DATASET,
                    value: Some(dataset),
                });
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq)
                .payload(m.payload.as_slice())
                .headers(headers);
            if let Some(k) = &m.key {
                rec = rec.key(k.as_slice());
            }
            if let Err((e, _)) = producer.send(rec, Duration::from_secs(1)).await {
                tracing::warn!(dataset, topic = %dlq, error = %e, "could not write to the dead-letter topic (the batch is not committed until it succeeds)");
                return n;
            }
            tracing::info!(dataset, topic = %w.topic, partition = w.partition, offset = m.offset, dead_letter_topic = %dlq, reason = %reason, "bad message sent to the dead-letter topic");
        }
        rejected.len()
    }
}

fn malformed_finding(
    cfg: &KafkaSource,
    bad: u64,
    n: u64,
    share: f64,
    threshold: f64,
    rejected: &[(usize, String)],
) -> Finding {
    let whereto = match &cfg.dead_letter_topic {
        Some(t) => format!("sent to the dead-letter topic `{t}`"),
        None => "skipped (no dead-letter topic)".to_string(),
    };
    let mut f = Finding::batch_level(
        Check::MalformedRecords,
        Verdict::DataQuality,
        Severity::Warning,
        format!(
            "{bad} of {n} messages ({:.2}%) could not be used and were {whereto}, above the tolerated {:.2}% (thresholds.malformed_max_share); the first: {}",
            share * 100.0,
            threshold * 100.0,
            rejected.first().map_or("", |(_, r)| r.as_str())
        ),
    );
    f.baseline_value = threshold;
    f.observed_value = share;
    f.statistic = Some(bad as f64);
    f.threshold = threshold;
    f.effect_size = share;
    f
}

#[cfg(test)]
mod tests {
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
