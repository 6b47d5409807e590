//! The live consumer, a [`Source`]: poll, cut windows, decode them and
//! dead-letter bad messages, yield each window as a batch, commit its
//! offset when the pipeline acknowledges it (after the history commit).

mod dead_letter;

use dead_letter::{Parked, dlq_send_timeout_ms};

use std::collections::{BTreeMap, HashMap, VecDeque};
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

use crate::config::model::{KafkaSource, Rules};
use crate::source::{Batch, Outcome, Source, SourceCtx, SourceError};
use crate::store::history::History;

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
    dataset: String,
    once: bool,
    cfg: KafkaSource,
    consumer: StreamConsumer<Ctx>,
    log: Arc<RebalanceLog>,
    producer: Option<FutureProducer>,
    batcher: Batcher,
    decoder: WindowDecoder,
    /// Closed windows decoded, their dead letters written, in order: the
    /// next batches to yield.
    ready: VecDeque<(Batch, KafkaAck)>,
    /// When the batch in the pipeline was yielded (its processing time does
    /// not count toward the open windows' time limit).
    yielded: Option<Instant>,
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
    connected_detail: String,
}

/// What acknowledging a window needs.
pub struct KafkaAck {
    topic: String,
    partition: i32,
    first: i64,
    last: i64,
    /// Messages of the window written to the dead-letter topic.
    dead_lettered: u64,
    /// The window waited for the dead-letter topic: its partition is
    /// paused until the batch is committed.
    resume: bool,
}

/// The Kafka source: a consumer on its own current-thread tokio runtime,
/// driven by the pipeline through [`Source`].
pub struct KafkaStream {
    rt: tokio::runtime::Runtime,
    run: KafkaRun,
}

impl KafkaStream {
    /// Create the consumer (subscribed) and the dead-letter producer; the
    /// history's manifests say which offsets are committed already.
    pub fn open(
        rules: &Rules,
        cfg: &KafkaSource,
        history: &History,
        once: bool,
    ) -> Result<KafkaStream, SourceError> {
        let dataset = rules.dataset.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KafkaSourceError::Runtime)?;
        let _in_runtime = rt.enter();
        let log = Arc::new(RebalanceLog::default());
        let consumer: StreamConsumer<Ctx> = consumer_config(cfg).and_then(|c| {
            c.create_with_context(Ctx {
                dataset: dataset.clone(),
                log: log.clone(),
                connected: AtomicBool::new(false),
            })
            .map_err(KafkaSourceError::Client)
        })?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| KafkaSourceError::Subscribe {
                topics: cfg.topics.join(","),
                source,
            })?;
        let producer = match &cfg.dead_letter_topic {
            Some(_) => Some(client_config(cfg).and_then(|mut c| {
                c.set("enable.idempotence", "true");
                if !cfg.properties.contains_key("message.timeout.ms") {
                    c.set("message.timeout.ms", dlq_send_timeout_ms(cfg).to_string());
                }
                c.create::<FutureProducer>()
                    .map_err(KafkaSourceError::Client)
            })?),
            None => None,
        };
        let mut watermarks = HashMap::new();
        for m in history.summaries()?.iter() {
            if let Some((t, p, _, last)) = parse_origin(&m.source) {
                let w = watermarks.entry((t, p)).or_insert(last);
                *w = (*w).max(last);
            }
        }
        tracing::info!(dataset = %dataset, topics = %cfg.topics.join(","), group = %cfg.group_id, "kafka consumer started");
        let run = KafkaRun {
            batcher: Batcher::new(WindowLimits {
                max_records: cfg.max_records,
                max_bytes: cfg.max_bytes,
                max_age: Duration::from_millis(cfg.max_ms),
            }),
            connected_detail: format!(
                "consuming {} as group {}",
                cfg.topics.join(","),
                cfg.group_id
            ),
            dataset,
            once,
            cfg: cfg.clone(),
            consumer,
            log,
            producer,
            decoder: WindowDecoder::new(rules, cfg),
            ready: VecDeque::new(),
            yielded: None,
            watermarks,
            committed: HashMap::new(),
            at_eof: HashMap::new(),
            assigned: false,
            parked: BTreeMap::new(),
            rng: rand::SeedableRng::from_os_rng(),
        };
        drop(_in_runtime);
        Ok(KafkaStream { rt, run })
    }
}

impl Source for KafkaStream {
    type Ack = KafkaAck;

    fn next(&mut self, ctx: &SourceCtx<'_>) -> Result<Option<(Batch, KafkaAck)>, SourceError> {
        let next = self.rt.block_on(self.run.next(ctx));
        if next.is_some() {
            crate::ops::metrics::batch_started();
            self.run.yielded = Some(Instant::now());
        }
        Ok(next)
    }

    fn ack(
        &mut self,
        ack: KafkaAck,
        outcome: &Outcome,
        _ctx: &SourceCtx<'_>,
    ) -> Result<(), SourceError> {
        let _in_runtime = self.rt.enter();
        self.run.ack(ack, outcome);
        Ok(())
    }
}

impl KafkaRun {
    /// Poll until a closed window is decoded and its dead letters are
    /// written; `None` at shutdown, or in a `--once` run when every
    /// assigned partition is read to its end and committed.
    async fn next(&mut self, ctx: &SourceCtx<'_>) -> Option<(Batch, KafkaAck)> {
        loop {
            if ctx.shutdown.is_triggered() {
                self.stopping();
                return None;
            }
            if let Some(ready) = self.ready.pop_front() {
                return Some(ready);
            }
            self.retry_parked(ctx.shutdown).await;
            if !self.ready.is_empty() {
                continue;
            }
            if self.once
                && self.assigned
                && self.batcher.is_empty()
                && self.parked.is_empty()
                && self.all_at_eof()
            {
                self.stopping();
                return None;
            }
            self.poll(ctx).await;
        }
    }

    /// One receive (or the next window deadline, or 250 ms), and the windows
    /// it closes.
    async fn poll(&mut self, ctx: &SourceCtx<'_>) {
        let deadline = self
            .batcher
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(250))
            .min(Instant::now() + Duration::from_millis(250));
        let got = tokio::select! {
            m = self.consumer.recv() => Some(m.map(|m| self.own(&m))),
            _ = tokio::time::sleep_until(deadline.into()) => None,
        };
        self.apply_rebalances();
        if matches!(got, Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_)))) {
            self.consumer
                .context()
                .connected(true, &self.connected_detail);
        }
        match got {
            Some(Ok((topic, partition, msg))) => {
                let key = (topic.clone(), partition);
                if self.parked.contains_key(&key) {
                    // fetched before the pause: read again after the resume
                    return;
                }
                self.at_eof.insert(key.clone(), false);
                if self.watermarks.get(&key).is_some_and(|&w| msg.offset <= w) {
                    // Already in the history (a crash before the offset commit).
                    let w = self.watermarks[&key];
                    self.commit_offset(&topic, partition, w);
                    return;
                }
                for w in self.batcher.push(&topic, partition, msg, Instant::now()) {
                    self.close(w, ctx).await;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // rdkafka does not say which topic reached its end: with
                // several topics, each topic's partition `p` is checked
                // against its own high watermark before its window closes.
                for t in self.cfg.topics.clone() {
                    let key = (t.clone(), p);
                    if self.is_assigned(&t, p) && self.at_end(&t, p) {
                        self.at_eof.insert(key, true);
                        if self.once
                            && let Some(w) = self.batcher.flush(&t, p)
                        {
                            self.close(w, ctx).await;
                        }
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(dataset = %self.dataset, error = %e, "kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => {}
        }
        for w in self.batcher.due(Instant::now()) {
            self.close(w, ctx).await;
        }
    }

    /// The run stops: say what is left uncommitted (it is read again).
    fn stopping(&self) {
        if !self.parked.is_empty() {
            tracing::warn!(dataset = %self.dataset, windows = self.parked.len(), "stopping with batches still waiting for the dead-letter topic; they are uncommitted and will be read again");
        }
        let dropped = self.batcher.open.len() + self.ready.len();
        if dropped > 0 {
            tracing::info!(dataset = %self.dataset, windows = dropped, "stopping; open windows are left uncommitted and will be read again");
        }
    }

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

    /// A closed window: decode it and write its dead letters, then queue it
    /// for the pipeline; park it when the dead-letter topic does not take
    /// them. The time spent here does not count toward the open windows'
    /// time limit.
    async fn close(&mut self, w: Window, ctx: &SourceCtx<'_>) {
        if ctx.shutdown.is_triggered() {
            // left uncommitted: read again by the next owner
            return;
        }
        let started = Instant::now();
        let prepared = self.decoder.prepare(ctx.history, &w);
        let bad = prepared.rejected.len();
        let mut dead_lettered = 0;
        if bad > 0 {
            let dataset = self.dataset.clone();
            let sent = self.dead_letter(&dataset, &w, &prepared.rejected, 0).await;
            if sent < bad {
                if !ctx.shutdown.is_triggered() {
                    self.park(&dataset, w, prepared, sent);
                }
                self.batcher.postpone(started.elapsed());
                return;
            }
            dead_lettered = bad as u64;
        }
        self.queue(&w, prepared, dead_lettered, false);
        self.batcher.postpone(started.elapsed());
    }

    /// Queue a window whose dead letters are all written for the pipeline.
    fn queue(&mut self, w: &Window, prepared: Prepared, dead_lettered: u64, resume: bool) {
        let ack = KafkaAck {
            topic: w.topic.clone(),
            partition: w.partition,
            first: w.first(),
            last: w.last(),
            dead_lettered,
            resume,
        };
        self.ready.push_back((self.decoder.batch_of(prepared), ack));
    }

    /// The pipeline answered: store and commit the offset after the batch
    /// (and resume its partition if it waited for the dead-letter topic).
    fn ack(&mut self, ack: KafkaAck, outcome: &Outcome) {
        if let Some(t) = self.yielded.take() {
            self.batcher.postpone(t.elapsed());
        }
        let KafkaAck {
            topic,
            partition,
            first,
            last,
            dead_lettered,
            resume,
        } = ack;
        if let Outcome::Retry(error) = outcome {
            // Nothing was committed: read the window again.
            tracing::warn!(dataset = %self.dataset, topic = %topic, partition, first_offset = first, %error, "the batch could not be handled now; it is read again");
            self.batcher.drop_partition(&topic, partition);
            self.seek(&topic, partition, first);
            if resume {
                self.resume(&topic, partition);
            }
            return;
        }
        if dead_lettered > 0 && self.producer.is_some() && self.cfg.dead_letter_topic.is_some() {
            crate::ops::metrics::dead_lettered(&self.dataset, dead_lettered);
        }
        let key = (topic.clone(), partition);
        let wm = self.watermarks.entry(key).or_insert(last);
        *wm = (*wm).max(last);
        self.commit_offset(&topic, partition, last);
        if resume {
            // read on right after the window, then resume
            self.seek(&topic, partition, last + 1);
            self.resume(&topic, partition);
            tracing::info!(dataset = %self.dataset, topic = %topic, partition, "the dead-letter topic took the batch's rejected messages: batch committed, partition resumed");
        }
    }

    fn seek(&self, topic: &str, partition: i32, offset: i64) {
        if let Err(e) = self.consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(5),
        ) {
            tracing::warn!(dataset = %self.dataset, topic, partition, error = %e, "could not seek; the group's committed offset is used instead");
        }
    }

    fn resume(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(dataset = %self.dataset, topic, partition, error = %e, "could not resume the partition");
        }
    }
}
