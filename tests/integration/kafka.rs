//! `dqmon run` on Kafka topics: the real binary against a real
//! Kafka-protocol broker (tansu, started per test on a free loopback port),
//! with rdkafka on the producer side. One quick test uses rdkafka's
//! in-process mock cluster instead (it listens on loopback too).
//!
//! tansu comes from `tests/run` (DQMON_TEST_TANSU), `TANSU_BIN`, `PATH` or
//! `.tools/bin/tansu`; without it the broker tests fail and say how to get it.
//!
//! Longer than 600 lines: each test is one scenario against a live broker
//! (offsets, rebalances, dead letters, replay of a range), sharing the
//! broker, producer and binary helpers at the top.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use dqmon::config::model::MessageFormat;
use dqmon::decode::json::{JsonDecoder, Message};
use dqmon_fixtures::{BatchSpec, Scenario};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::daemon::{terminate, unsafe_kill};
use crate::common::*;

/// Rows per batch: enough for every trust tag to be tested.
pub const ROWS: usize = 4_000;
pub const TOPIC: &str = "events";
pub const DLQ: &str = "events-dlq";

/// Where tansu is, or a clear failure.
fn tansu_bin() -> PathBuf {
    for var in ["DQMON_TEST_TANSU", "TANSU_BIN"] {
        if let Ok(p) = std::env::var(var)
            && Path::new(&p).is_file()
        {
            return PathBuf::from(p);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("tansu");
            if p.is_file() {
                return p;
            }
        }
    }
    let local = repo_root().join(".tools/bin/tansu");
    assert!(
        local.is_file(),
        "the Kafka broker tests need the `tansu` broker binary and found none (DQMON_TEST_TANSU, TANSU_BIN, PATH, .tools/bin/tansu); \
         run the suite with `tests/run`, which installs it, or install it yourself with \
         `cargo install tansu --locked --features dynostore --root .tools`"
    );
    local
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker for one test.
pub enum Broker {
    Tansu { child: Child, addr: String },
    Mock(rdkafka::mocking::MockCluster<'static, DefaultProducerContext>),
}

impl Broker {
    /// A fresh tansu broker with in-memory storage on a free port.
    pub fn tansu() -> Broker {
        let bin = tansu_bin();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = fs::File::create(std::env::temp_dir().join(format!("tansu-{port}.log"))).unwrap();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "tansu did not listen on {addr} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Broker::Tansu { child, addr }
    }

    pub fn mock() -> Broker {
        Broker::Mock(rdkafka::mocking::MockCluster::new(1).unwrap())
    }

    pub fn addr(&self) -> String {
        match self {
            Broker::Tansu { addr, .. } => addr.clone(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Broker::Tansu { addr, .. } => {
                let out = Command::new(tansu_bin())
                    .args([
                        "topic",
                        "create",
                        name,
                        "--partitions",
                        &partitions.to_string(),
                        "--broker",
                        &format!("tcp://{addr}"),
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "tansu topic create {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Broker::Mock(m) => m.create_topic(name, partitions, 1).unwrap(),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The JSON rows of a generated batch, one object per message.
fn json_rows(batch: &RecordBatch) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(batch).unwrap();
        w.finish().unwrap();
    }
    buf.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

pub fn rows_of(index: u64, scenario: Scenario) -> Vec<Vec<u8>> {
    json_rows(&dqmon_fixtures::generate(&BatchSpec {
        rows: ROWS,
        seed: 7,
        batch_index: index,
        scenario,
    }))
}

const RULES: &str = "\
dataset: events
trust:
  column: trust_tag
  levels: [human_reviewed, vendor, user_reported, scraped]
  low_trust: [user_reported, scraped]
label:
  column: label
  positive: \"1\"
columns:
  event_time: timestamp
  amount: { kind: numeric, range: [0, 1000000] }
  age: { kind: numeric, range: [0, 120] }
  country: categorical
  device: categorical
  merchant_category: categorical
";

/// A folder with Kafka rules and an approved baseline built from JSON
/// records decoded the way the daemon decodes them.
pub struct KafkaSetup {
    /// Keeps the folder alive for the test.
    pub _dir: tempfile::TempDir,
    pub rules: PathBuf,
    pub state: PathBuf,
}

impl KafkaSetup {
    pub fn new(broker: &str, group: &str, state_dir: &str) -> KafkaSetup {
        KafkaSetup::with_properties(broker, group, state_dir, "")
    }

    /// [`KafkaSetup::new`] with more client properties (`, key: value` ...).
    pub fn with_properties(broker: &str, group: &str, state_dir: &str, more: &str) -> KafkaSetup {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.yaml");
        let text = format!(
            "{RULES}state_dir: {state_dir}\nbaseline_dir: baselines\nsource:\n  kafka:\n    brokers: [\"{broker}\"]\n    topics: [{TOPIC}]\n    group_id: {group}\n    format: json\n    batch_id_header: batch-id\n    window: {{ max_records: 100000, max_ms: 3000 }}\n    max_message_bytes: 4096\n    dead_letter_topic: {DLQ}\n    properties: {{ session.timeout.ms: 6000, heartbeat.interval.ms: 500, topic.metadata.refresh.interval.ms: 1000{more} }}\n"
        );
        fs::write(&rules, text).unwrap();
        let cfg = dqmon::config::load(&rules).unwrap();
        let r = cfg.datasets.into_iter().next().unwrap();
        // the baseline is built before any daemon ran: as `baseline build`
        // does, create the key holding the state folder's writer lock
        let pii = {
            let lock = dqmon::store::lock::WriterLock::acquire(&r.state_dir).unwrap();
            dqmon::app::dataset_pii_key(&r, dqmon::app::PiiAccess::Writer(&lock)).unwrap()
        };
        let decoder = JsonDecoder::new(&r, MessageFormat::Json, false);
        let mut profiles = Vec::new();
        let mut refs = Vec::new();
        for i in 0..8 {
            let rows = rows_of(i, Scenario::Clean);
            let msgs: Vec<Message<'_>> = rows
                .iter()
                .map(|p| Message {
                    payload: p,
                    tag: None,
                })
                .collect();
            let d = decoder.decode(&msgs);
            assert!(d.rejected.is_empty(), "{:?}", d.rejected.first());
            profiles.push(dqmon::profile::profile_batches(&r, &pii, &d.batches).unwrap());
            refs.push(dqmon::baseline::BatchRef {
                origin: format!("clean {i}"),
                input_sha256: None,
                rows: d.rows,
            });
        }
        let b = dqmon::baseline::Baseline::build(&r, &profiles, refs, "builder").unwrap();
        let store = dqmon::store::baselines::BaselineStore::new(&r.baseline_dir);
        let id = store.save(&b).unwrap();
        store
            .approve(&id, "approver", "2024-06-01T00:00:00Z", "test")
            .unwrap();
        KafkaSetup {
            state: r.state_dir.clone(),
            _dir: dir,
            rules,
        }
    }

    pub fn spawn(&self, extra: &[&str]) -> Child {
        Command::new(dqmon_bin())
            .args(["run", "--config", self.rules.to_str().unwrap()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("DQMON_PII_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn manifests(&self) -> Vec<Value> {
        manifests(&self.state)
    }

    pub fn alerts(&self) -> Vec<Value> {
        match fs::read_to_string(self.state.join("alerts.jsonl")) {
            Ok(t) => t
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

pub fn manifests(state: &Path) -> Vec<Value> {
    let dir = state.join("history/batches");
    let mut out: Vec<Value> = match fs::read_dir(&dir) {
        Ok(d) => d
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension().and_then(|e| e.to_str()) == Some("json"))
                    .then(|| serde_json::from_slice(&fs::read(p).unwrap()).unwrap())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_by_key(|m: &Value| m["seq"].as_u64());
    out
}

/// (partition, first offset, last offset) of a manifest.
pub fn span(m: &Value) -> (i32, i64, i64) {
    let (_, p, f, l) = dqmon::source::kafka::parse_origin(m["source"].as_str().unwrap())
        .unwrap_or_else(|| panic!("not a kafka origin: {}", m["source"]));
    (p, f, l)
}

pub fn producer(broker: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "5")
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap()
}

/// Produce one batch (all messages with one batch-id header) to a partition and flush.
pub fn produce_batch(
    p: &ThreadedProducer<DefaultProducerContext>,
    partition: i32,
    batch: &str,
    payloads: &[Vec<u8>],
) {
    produce_batch_to(p, TOPIC, partition, batch, payloads)
}

/// [`produce_batch`] to another topic.
pub fn produce_batch_to(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    batch: &str,
    payloads: &[Vec<u8>],
) {
    for payload in payloads {
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(payload.as_slice())
            .headers(OwnedHeaders::new().insert(Header {
                key: "batch-id",
                value: Some(batch),
            }));
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// Every message of the dead-letter topic: (reason, source partition, source offset).
fn dead_letters(broker: &str, partitions: i32, expect: usize) -> Vec<(String, i32, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(DLQ, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < expect && start.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let h = |k: &str| -> String {
                m.headers()
                    .and_then(|h| h.iter().find(|x| x.key == k).and_then(|x| x.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            assert_eq!(h("dqmon.source.topic"), TOPIC);
            out.push((
                h("dqmon.reason"),
                h("dqmon.source.partition").parse().unwrap(),
                h("dqmon.source.offset").parse().unwrap(),
            ));
        }
    }
    out
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            panic!("dqmon did not finish within {timeout:?}: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn flip() -> Scenario {
    Scenario::LabelFlip {
        tag: "scraped".into(),
        strength: 0.3,
    }
}

/// Batches (of [`produce_clean_and_poisoned`]) with poisoned labels.
pub const POISONED: [u64; 2] = [5, 10];

/// Produce 12 batches, batch b to partition b % 4: clean ones, label flips
/// in [`POISONED`], 3 bad messages in batch 2 (below the malformed
/// threshold) and 80 in batch 7 (above it). Returns the good rows per batch.
pub fn produce_clean_and_poisoned(
    p: &ThreadedProducer<DefaultProducerContext>,
) -> BTreeMap<u64, u64> {
    let poisoned: HashSet<u64> = POISONED.into();
    let mut expected_rows = BTreeMap::new();
    for b in 0..12u64 {
        let mut rows = rows_of(
            100 + b,
            if poisoned.contains(&b) {
                flip()
            } else {
                Scenario::Clean
            },
        );
        let good = rows.len() as u64;
        if b == 2 {
            // a few bad messages amid good ones: below the malformed threshold
            rows.insert(10, b"{\"amount\": 12, \"country\": ".to_vec());
            rows.insert(
                20,
                b"{\"amount\": \"twelve\", \"country\": \"DE\"}".to_vec(),
            );
            rows.insert(
                30,
                format!("{{\"free_text\": \"{}\"}}", "x".repeat(5000)).into_bytes(),
            );
        }
        if b == 7 {
            // 2% bad: the malformed share is itself a finding
            for i in 0..80 {
                rows.insert(i * 40, b"not json at all".to_vec());
            }
        }
        expected_rows.insert(b, good);
        produce_batch(p, (b % 4) as i32, &format!("batch-{b}"), &rows);
    }
    expected_rows
}

/// Clean and poisoned batches on a 4-partition topic, with bad messages in
/// two of them: the history holds every batch once, alerts fire on the
/// poisoned ones only, bad messages land in the dead-letter topic with
/// their reasons, and a second run finds nothing new (offsets committed).
fn clean_and_poisoned(broker: Broker) {
    broker.create_topic(TOPIC, 4);
    broker.create_topic(DLQ, 1);
    let addr = broker.addr();
    let s = KafkaSetup::new(&addr, "dqmon-e2e", "state");
    let p = producer(&addr);
    let poisoned: HashSet<u64> = POISONED.into();
    let expected_rows = produce_clean_and_poisoned(&p);

    let mut child = s.spawn(&["--once"]);
    let status = wait_exit(&mut child, Duration::from_secs(240));
    let err = child.wait_with_output().unwrap().stderr;
    assert!(
        status.success(),
        "dqmon failed: {}",
        String::from_utf8_lossy(&err)
    );

    let ms = s.manifests();
    assert_eq!(
        ms.len(),
        12,
        "one history entry per batch: {:#?}",
        ms.iter().map(|m| &m["source"]).collect::<Vec<_>>()
    );
    // one consumer with its own history: its partitions are one stream of
    // evidence, in commit order (a campaign over partitions adds up)
    let positions: Vec<(String, u64)> = ms
        .iter()
        .map(|m| {
            let stream = m["stream"].as_str().unwrap_or_default().to_string();
            (stream, m["stream_seq"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        positions,
        (0..12u64)
            .map(|i| ("kafka".to_string(), i))
            .collect::<Vec<_>>()
    );
    // batches per partition are contiguous and cover every offset once
    let mut by_part: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for m in &ms {
        assert_eq!(m["status"], "processed", "{m}");
        let (p, f, l) = span(m);
        by_part.entry(p).or_default().push((f, l));
    }
    for (p, spans) in &mut by_part {
        spans.sort();
        assert_eq!(spans[0].0, 0, "partition {p} starts at 0");
        for w in spans.windows(2) {
            assert_eq!(
                w[0].1 + 1,
                w[1].0,
                "partition {p}: gap or overlap {spans:?}"
            );
        }
    }
    // rows: every good record, none of the bad ones
    let total: u64 = ms.iter().map(|m| m["rows"].as_u64().unwrap()).sum();
    assert_eq!(total, expected_rows.values().sum::<u64>());

    // alerts: label flips in the poisoned batches, the malformed share in batch 7, nothing else
    let alerts = s.alerts();
    let ids: HashSet<&str> = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), alerts.len(), "no duplicate alert id");
    let mut checks_by_batch: BTreeMap<(i32, i64), Vec<String>> = BTreeMap::new();
    for a in &alerts {
        let m = ms.iter().find(|m| m["batch_id"] == a["batch_id"]).unwrap();
        let (p, f, _) = span(m);
        checks_by_batch.entry((p, f)).or_default().push(format!(
            "{}/{}",
            a["check"].as_str().unwrap(),
            a["trust_tag"].as_str().unwrap()
        ));
    }
    // batch b is the (b / 4)-th batch of partition b % 4
    let key_of = |b: u64| {
        let p = (b % 4) as i32;
        let mut spans = by_part[&p].clone();
        spans.sort();
        (p, spans[(b / 4) as usize].0)
    };
    for b in 0..12u64 {
        let got = checks_by_batch.get(&key_of(b)).cloned().unwrap_or_default();
        if poisoned.contains(&b) {
            assert!(
                got.iter()
                    .any(|c| c == "label_rate/scraped" || c == "label_calibration/scraped"),
                "batch {b}: {got:?}"
            );
        } else if b == 7 {
            assert_eq!(got, vec!["malformed_records/all".to_string()], "batch {b}");
        } else {
            assert!(got.is_empty(), "clean batch {b} raised {got:?}");
        }
    }

    // the dead-letter topic holds every bad message with its reason
    let dl = dead_letters(&addr, 1, 83);
    assert_eq!(dl.len(), 83, "{dl:?}");
    let reasons = |needle: &str| dl.iter().filter(|(r, _, _)| r.contains(needle)).count();
    assert_eq!(reasons("not valid JSON"), 81, "{dl:?}");
    assert_eq!(reasons("schema violation"), 1, "{dl:?}");
    assert_eq!(reasons("max_message_bytes"), 1, "{dl:?}");
    assert!(dl.iter().all(|(_, p, _)| *p == 2 || *p == 3));

    // a second run: offsets were committed, nothing is read twice
    let mut child = s.spawn(&["--once"]);
    let status = wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success());
    assert_eq!(s.manifests().len(), 12);
}

#[test]
fn kafka_mock_cluster_clean_and_poisoned_batches() {
    clean_and_poisoned(Broker::mock());
}

#[test]
fn kafka_tansu_clean_and_poisoned_batches_on_four_partitions() {
    clean_and_poisoned(Broker::tansu());
}

/// SIGKILL at random points while batches are produced; after the last
/// restart every batch is in the history exactly once, no alert id twice.
#[test]
fn kafka_tansu_sigkill_loses_and_duplicates_nothing() {
    let broker = Broker::tansu();
    broker.create_topic(TOPIC, 4);
    broker.create_topic(DLQ, 1);
    let addr = broker.addr();
    let s = KafkaSetup::new(&addr, "dqmon-crash", "state");
    const BATCHES: u64 = 16;
    let staged: Vec<Vec<Vec<u8>>> = (0..BATCHES)
        .map(|b| rows_of(200 + b, if b % 5 == 4 { flip() } else { Scenario::Clean }))
        .collect();
    let paddr = addr.clone();
    let producing = std::thread::spawn(move || {
        let p = producer(&paddr);
        for (b, rows) in staged.iter().enumerate() {
            produce_batch(&p, (b % 4) as i32, &format!("crash-{b}"), rows);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut kills = 0;
    while kills < 10 || !producing.is_finished() {
        let mut child = s.spawn(&[]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 2500));
        unsafe_kill(child.id(), "KILL");
        let _ = child.wait();
        kills += 1;
    }
    producing.join().unwrap();
    let child = s.spawn(&[]);
    let start = Instant::now();
    while s.manifests().len() < BATCHES as usize {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "only {} of {BATCHES} batches after the last restart",
            s.manifests().len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // give a late duplicate a chance to show up before checking
    std::thread::sleep(Duration::from_secs(4));
    let out = terminate(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms = s.manifests();
    assert_eq!(
        ms.len(),
        BATCHES as usize,
        "every batch exactly once after {kills} kills"
    );
    let mut spans: Vec<(i32, i64, i64)> = ms.iter().map(span).collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[0].0 == w[1].0 {
            assert_eq!(w[0].2 + 1, w[1].1, "gap or overlap: {spans:?}");
        }
    }
    assert!(
        ms.iter().all(|m| m["rows"].as_u64() == Some(ROWS as u64)),
        "whole batches only"
    );
    let alerts = s.alerts();
    let ids: HashSet<&str> = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), alerts.len(), "no duplicate alert id");
    assert!(
        alerts.iter().any(crate::common::is_label_alert),
        "the poisoned batches were alerted"
    );
}

/// Two dqmon processes in one consumer group share a 4-partition topic;
/// every batch is processed by exactly one of them.
#[test]
fn kafka_tansu_two_processes_share_the_partitions() {
    let broker = Broker::tansu();
    broker.create_topic(TOPIC, 4);
    broker.create_topic(DLQ, 1);
    let addr = broker.addr();
    let a = KafkaSetup::new(&addr, "dqmon-pair", "state-a");
    let b = KafkaSetup::new(&addr, "dqmon-pair", "state-b");
    let ca = a.spawn(&[]);
    let cb = b.spawn(&[]);
    const BATCHES: u64 = 12;
    let p = producer(&addr);
    for i in 0..BATCHES {
        produce_batch(
            &p,
            (i % 4) as i32,
            &format!("pair-{i}"),
            &rows_of(300 + i, Scenario::Clean),
        );
    }
    let start = Instant::now();
    let count = || a.manifests().len() + b.manifests().len();
    while count() < BATCHES as usize {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "only {} of {BATCHES} batches",
            count()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(4));
    let oa = terminate(ca);
    let ob = terminate(cb);
    assert!(oa.status.success() && ob.status.success());
    let (ma, mb) = (a.manifests(), b.manifests());
    assert_eq!(
        ma.len() + mb.len(),
        BATCHES as usize,
        "each batch once in total"
    );
    let spans: HashSet<(i32, i64)> = ma
        .iter()
        .chain(&mb)
        .map(|m| {
            let (p, f, _) = span(m);
            (p, f)
        })
        .collect();
    assert_eq!(spans.len(), BATCHES as usize, "no batch in both histories");
    assert!(
        !ma.is_empty() && !mb.is_empty(),
        "both members took partitions ({} / {})",
        ma.len(),
        mb.len()
    );
}

/// Two topics: rdkafka's end-of-partition event names the partition, not
/// the topic. A short topic that reaches its end first must not close the
/// other topic's window on the same partition number, nor end `--once`
/// early: every batch of both topics is one manifest holding all its rows.
/// On librdkafka's mock cluster, which honours `max.partition.fetch.bytes`
/// (tansu answered each fetch with the whole topic, so the short topic's end
/// never came mid-batch there and the test passed without the fix).
#[test]
fn kafka_two_topics_close_each_partition_at_its_own_end() {
    const OTHER: &str = "events2";
    let broker = Broker::mock();
    broker.create_topic(TOPIC, 1);
    broker.create_topic(OTHER, 1);
    broker.create_topic(DLQ, 1);
    let addr = broker.addr();
    let s = KafkaSetup::new(&addr, "dqmon-two-topics", "state");
    let text = fs::read_to_string(&s.rules).unwrap();
    // small fetches, so the long topic arrives in many responses and the
    // short one reaches its end while the long one is mid-batch
    let two = text
        .replace(
            &format!("topics: [{TOPIC}]"),
            &format!("topics: [{TOPIC}, {OTHER}]"),
        )
        .replace(
            "properties: {",
            "properties: { max.partition.fetch.bytes: 16384,",
        );
    assert_ne!(text, two, "the rules name the topic");
    fs::write(&s.rules, two).unwrap();
    let p = producer(&addr);
    // partition 0 of both topics: one batch on the short one, three on the
    // long one (librdkafka's mock cluster keeps about 16,000 messages of a
    // partition's log)
    // (the short batch is half a batch, so its topic ends mid-way through
    // the long topic's first batch)
    produce_batch(&p, 0, "short-0", &rows_of(300, Scenario::Clean)[..ROWS / 2]);
    for b in 0..3u64 {
        produce_batch_to(
            &p,
            OTHER,
            0,
            &format!("long-{b}"),
            &rows_of(310 + b, Scenario::Clean),
        );
    }
    let mut child = s.spawn(&["--once"]);
    let status = wait_exit(&mut child, Duration::from_secs(240));
    let err = child.wait_with_output().unwrap().stderr;
    assert!(
        status.success(),
        "dqmon failed: {}",
        String::from_utf8_lossy(&err)
    );
    let ms = s.manifests();
    let sources: Vec<String> = ms
        .iter()
        .map(|m| format!("{} ({} rows)", m["source"].as_str().unwrap(), m["rows"]))
        .collect();
    assert_eq!(ms.len(), 4, "one manifest per batch: {sources:#?}");
    for m in &ms {
        let short = m["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("kafka:{TOPIC}/"));
        let rows = if short { ROWS / 2 } else { ROWS };
        assert_eq!(
            m["rows"].as_u64(),
            Some(rows as u64),
            "a whole batch: {sources:#?}"
        );
    }
    let long = ms
        .iter()
        .filter(|m| {
            m["source"]
                .as_str()
                .unwrap()
                .starts_with(&format!("kafka:{OTHER}/"))
        })
        .count();
    assert_eq!(long, 3, "{sources:#?}");
}

/// The dead-letter topic down for longer than the group's poll interval
/// (7 s here): the replica that owns the partition pauses it and keeps
/// polling, so the group keeps it there; the other replica of the group
/// never takes the batch. When the topic is back, the batch is committed
/// once, the partition resumes, and the batch behind it follows: across
/// both histories every batch is there exactly once and every bad message
/// is in the dead-letter topic. (Before the fix the owner retried inside
/// the batch without polling, was evicted after 7 s, and the other replica
/// processed the same batch.) On librdkafka's mock cluster with two
/// brokers: the topic and the group on broker 1, the dead-letter topic on
/// broker 2, which is taken down.
#[test]
fn kafka_dead_letter_outage_longer_than_the_poll_interval_pauses_the_partition() {
    let cluster = rdkafka::mocking::MockCluster::new(2).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    cluster.partition_leader(TOPIC, 0, Some(1)).unwrap();
    cluster.partition_leader(DLQ, 0, Some(2)).unwrap();
    const GROUP: &str = "dqmon-dlq-outage";
    cluster
        .coordinator(rdkafka::mocking::MockCoordinator::Group(GROUP.into()), 1)
        .unwrap();
    let addr = cluster.bootstrap_servers();
    let poll = ", max.poll.interval.ms: 7000";
    let a = KafkaSetup::with_properties(&addr, GROUP, "state-a", poll);
    let b = KafkaSetup::with_properties(&addr, GROUP, "state-b", poll);
    let ca = a.spawn(&[]);
    let cb = b.spawn(&[]);
    let p = producer(&addr);
    let count = || a.manifests().len() + b.manifests().len();
    let wait_for = |n: usize, what: &str| {
        let start = Instant::now();
        while count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "{what}: only {} of {n} batches",
                count()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    produce_batch(&p, 0, "outage-0", &rows_of(400, Scenario::Clean));
    wait_for(1, "before the outage");

    cluster.broker_down(2).unwrap();
    let mut bad = rows_of(401, Scenario::Clean);
    for i in 0..5 {
        bad.insert(i * 100, b"not json at all".to_vec());
    }
    produce_batch(&p, 0, "outage-1", &bad);
    produce_batch(&p, 0, "outage-2", &rows_of(402, Scenario::Clean));
    // three poll intervals with the dead-letter topic down
    std::thread::sleep(Duration::from_secs(21));
    assert_eq!(
        count(),
        1,
        "nothing is committed while its dead letters wait"
    );
    cluster.broker_up(2).unwrap();
    wait_for(3, "after the outage");
    std::thread::sleep(Duration::from_secs(4));
    let oa = terminate(ca);
    let ob = terminate(cb);
    assert!(oa.status.success() && ob.status.success());
    let (ma, mb) = (a.manifests(), b.manifests());
    let spans: HashSet<(i32, i64)> = ma
        .iter()
        .chain(&mb)
        .map(|m| {
            let (p, f, _) = span(m);
            (p, f)
        })
        .collect();
    assert_eq!(ma.len() + mb.len(), 3, "each batch once in total");
    assert_eq!(spans.len(), 3, "no batch in both histories");
    let dl = dead_letters(&addr, 1, 5);
    let offsets: HashSet<i64> = dl.iter().map(|(_, _, o)| *o).collect();
    assert_eq!(offsets.len(), 5, "every bad message dead-lettered: {dl:?}");
    let logs =
        String::from_utf8_lossy(&oa.stderr).into_owned() + &String::from_utf8_lossy(&ob.stderr);
    assert!(
        logs.contains("partition is paused"),
        "the owner paused the partition: {logs}"
    );
}
