//! The live consumer loop: poll, cut windows, dead-letter bad messages,
//! hand each window to the pipeline, commit offsets after the commit.

mod dead_letter;

use dead_letter::{Parked, dlq_send_timeout_ms};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::app::{AppError, RunSummary, Shutdown};
use crate::config::model::{KafkaSource, SourceRule};
use crate::pipeline::Worker;

use super::{Batcher, OwnedMsg, Prepared, Window, WindowDecoder, WindowLimits, own_message};
use super::{
    DLQ_DATASET, DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, KafkaSourceError, client_config,
    consumer_config, parse_origin,
};

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

    fn done(&mut self, topic: &str, partition: i32, last: i64) {
        let key = (topic.to_string(), partition);
        let wm = self.watermarks.entry(key).or_insert(last);
        *wm = (*wm).max(last);
        self.commit_offset(topic, partition, last);
    }
}
