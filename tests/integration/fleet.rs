//! A fleet on Kafka with one history on object storage: three `dqmon run`
//! processes in one consumer group on a 6-partition topic, their batch
//! history shared on a real S3-compatible server (moto). One replica is
//! SIGKILLed mid-stream; once the group has handed its partitions to the
//! others, it is started again on its state folder. The replicas pack
//! their manifests two at a time (`DQMON_TEST_PACK_SIZE`, a test build's
//! setting; 128 otherwise), so that packs, metric packs and pack summaries
//! are written and read (the restart reads the summaries) across the kill.
//!
//! The broker is librdkafka's mock cluster (a Kafka-protocol server on
//! loopback, with the group coordinator librdkafka tests itself against),
//! not tansu: tansu 0.6.0 kept the killed member in the group's assignment
//! after its session expired, so its partitions stayed unassigned for the
//! rest of the run (2 to 5 minutes; 4 of 5 runs here; the tansu tests in
//! `kafka.rs` kill their only consumer, where this does not arise).
//!
//! The replica killed is the one that holds the lease of the fleet's
//! notifications (`monitor/src/alert/fleet.rs`), once it has committed:
//! another replica takes the lease over when it runs out.
//!
//! What it checks is the fleet's history, read from the store itself: every
//! batch once (offsets without gap or overlap per partition), every
//! partition one stream whose positions are contiguous whichever replica
//! wrote them, each batch's evidence continuing from the batch before it in
//! its stream (across owners) and pooled with the other partitions'
//! streams, the poisoned batches alerted, and `dqmon
//! query` and `dqmon audit verify` from every replica agreeing with it,
//! and a replay of the whole topic raising exactly the fleet's alerts. And
//! the pages a real webhook received: one per fingerprint that any replica
//! alerted (a one-hour cooldown, no resolve in the run), across the kill.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dqmon::store::backend::Backend;
use dqmon_fixtures::Scenario;
use serde_json::Value;

use super::alerts::http_server;
use super::daemon::{terminate, unsafe_kill};
use super::kafka::{
    Broker, DLQ, KafkaSetup, ROWS, TOPIC, flip, produce_batch, producer, rows_of, span,
};
use super::object_store::{
    S3Server, assert_fleet_view, notification_holder, s3_env, shared_manifests,
};
use super::ops::http_get;
use crate::common::{dqmon_bin, is_label_alert, stderr};

const PARTITIONS: i32 = 6;
/// Four batches per partition.
const BATCHES: u64 = 24;
const REPLICAS: [&str; 3] = ["a", "b", "c"];

/// Whether batch `b` has its `scraped` labels flipped: one in eight, on
/// three different partitions.
fn poisoned(b: u64) -> bool {
    b % 8 == 5
}

struct Fleet {
    setup: KafkaSetup,
    s3: S3Server,
    logs: PathBuf,
    /// The port of the webhook every replica's rules page.
    hook: u16,
    /// Each replica's /metrics port (of its latest start).
    ports: std::cell::RefCell<BTreeMap<String, u16>>,
}

impl Fleet {
    /// The rules of a replica, as pods of one StatefulSet have them: the
    /// same file (so the same rules hash in every alert) in a folder of
    /// the replica's own, where its state folder is; the baseline the
    /// setup approved, and the fleet's shared history.
    fn rules(&self, name: &str) -> PathBuf {
        let text = fs::read_to_string(&self.setup.rules).unwrap();
        let own = "state_dir: state-a\nbaseline_dir: baselines\n";
        assert!(text.contains(own), "{text}");
        let mut text = text.replace(own, "state_dir: state\nbaseline_dir: ../baselines\n");
        text.push_str("shared_history: s3://history/fleet\n");
        text.push_str(&format!(
            "alerts:
  cooldown: 1h
  resolve_after_batches: 1000
  retry: {{ max_attempts: 1000, initial_backoff: 100ms, max_backoff: 400ms }}
  receivers:
    hook: {{ type: webhook, url: http://127.0.0.1:{}/fleet }}
  default: [hook]
",
            self.hook
        ));
        let dir = self.setup.rules.with_file_name(format!("replica-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.yaml");
        fs::write(&path, text).unwrap();
        path
    }

    /// `dqmon run` of a replica (its stderr appended to a log file).
    fn spawn(&self, name: &str) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.ports.borrow_mut().insert(name.to_string(), port);
        Command::new(dqmon_bin())
            .args(["run", "--config", self.rules(name).to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .envs(s3_env(&self.s3))
            .env("DQMON_REPLICA", name)
            // packs of two, so that each replica's few batches fill packs
            // and their summaries, and the restart reads them
            .env("DQMON_TEST_PACK_SIZE", "2")
            .env("RUST_LOG", "warn,dqmon=info,librdkafka=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn logs(&self) -> String {
        REPLICAS
            .iter()
            .map(|r| {
                let text =
                    fs::read_to_string(self.logs.join(format!("{r}.log"))).unwrap_or_default();
                format!("--- replica {r}\n{text}")
            })
            .collect()
    }
}

/// The replicas still running, killed if the test fails half-way (a
/// `Child` dropped is not stopped).
struct Running(BTreeMap<&'static str, Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in self.0.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three replicas, one shared history, one SIGKILL and restart mid-stream.
#[test]
fn kafka_fleet_with_a_shared_history_survives_a_killed_replica() {
    let broker = Broker::mock();
    broker.create_topic(TOPIC, PARTITIONS);
    broker.create_topic(DLQ, 1);
    let addr = broker.addr();
    let s3 = S3Server::start();
    s3.create_bucket("history");
    let setup = KafkaSetup::new(&addr, "dqmon-fleet", "state-a");
    let logs = tempfile::tempdir().unwrap();
    let (hook, hits) = http_server();
    let fleet = Fleet {
        setup,
        s3,
        logs: logs.path().to_path_buf(),
        hook,
        ports: Default::default(),
    };

    let staged: Vec<Vec<Vec<u8>>> = (0..BATCHES)
        .map(|b| rows_of(500 + b, if poisoned(b) { flip() } else { Scenario::Clean }))
        .collect();
    let paddr = addr.clone();
    let producing = std::thread::spawn(move || {
        let p = producer(&paddr);
        for (b, rows) in staged.iter().enumerate() {
            produce_batch(&p, b as i32 % PARTITIONS, &format!("fleet-{b}"), rows);
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let mut running = Running(REPLICAS.iter().map(|r| (*r, fleet.spawn(r))).collect());

    // wait until the shared history satisfies `done`
    let wait_until = |done: &dyn Fn(&[Value]) -> bool, what: &str| {
        let start = Instant::now();
        loop {
            let shared = shared_manifests(&fleet.s3);
            if done(&shared) {
                return shared;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{what}: {} batches in the shared history: {:?}\n{}",
                shared.len(),
                shared
                    .iter()
                    .map(|m| (span(m), m["writer"].as_str().unwrap().to_string()))
                    .collect::<Vec<_>>(),
                fleet.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let by = |m: &Value, r: &str| m["writer"] == r;
    // the holder of the notification lease dies mid-stream, once it has
    // committed, without a chance to commit its offsets, leave the group
    // or hand the lease on; the group hands its partitions to the others
    // once its session times out, and they continue its streams (and one
    // of them the notifications, once the lease runs out); then it comes
    // back on its own state folder
    let mut victim = String::new();
    let before = wait_until(
        &|s| {
            s.len() >= 6
                && notification_holder(&fleet.s3).is_some_and(|h| s.iter().any(|m| by(m, &h)))
        },
        "before the kill",
    );
    victim.push_str(&notification_holder(&fleet.s3).unwrap());
    let victim: &str = REPLICAS.iter().find(|r| **r == victim).unwrap();
    let c_partitions: BTreeSet<i32> = before
        .iter()
        .filter(|m| by(m, victim))
        .map(|m| span(m).0)
        .collect();
    let c = running.0.remove(victim).unwrap();
    unsafe_kill(c.id(), "KILL");
    let _ = c.wait_with_output();
    wait_until(
        &|s| {
            s.iter()
                .any(|m| c_partitions.contains(&span(m).0) && !by(m, victim))
        },
        "a partition of the killed replica taken over",
    );
    wait_until(
        &|_| notification_holder(&fleet.s3).is_some_and(|h| h != victim),
        "the notification lease taken over",
    );
    running.0.insert(victim, fleet.spawn(victim));
    producing.join().unwrap();
    wait_until(&|s| s.len() >= BATCHES as usize, "after the restart");
    // every fingerprint alerted is paged, by whichever replica holds the
    // lease (a takeover waits for the dead holder's lease to run out)
    let fingerprints = |shared: &[Value]| -> BTreeSet<String> {
        shared
            .iter()
            .flat_map(|m| m["alerts"].as_array().unwrap().iter())
            .map(|a| a["fingerprint"].as_str().unwrap().to_string())
            .collect()
    };
    // (fingerprint, kind, idempotency key) of every request answered 200
    let paged = || -> Vec<(String, String, String)> {
        hits.lock()
            .unwrap()
            .iter()
            .filter(|h| h.answered == 200)
            .map(|h| {
                (
                    h.body["fingerprint"].as_str().unwrap_or("").to_string(),
                    h.body["kind"].as_str().unwrap_or("").to_string(),
                    h.key.clone(),
                )
            })
            .collect()
    };
    wait_until(
        &|s| {
            let got: BTreeSet<String> = paged().into_iter().map(|(f, ..)| f).collect();
            fingerprints(s).is_subset(&got)
        },
        "every alerted fingerprint paged",
    );
    // give a late duplicate the time to show up before checking
    std::thread::sleep(Duration::from_secs(4));
    // /metrics: exactly one replica holds the notification lease
    let holding: Vec<String> = fleet
        .ports
        .borrow()
        .iter()
        .filter(|(_, port)| {
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let (status, text) = http_get(addr, "/metrics");
            assert_eq!(status, 200);
            text.lines()
                .any(|l| l.starts_with("dqmon_notification_lease_held{") && l.ends_with(" 1"))
        })
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(
        holding,
        vec![notification_holder(&fleet.s3).unwrap()],
        "the lease holder, as /metrics shows it"
    );
    for (r, child) in std::mem::take(&mut running.0) {
        let out = terminate(child);
        assert!(
            out.status.success(),
            "replica {r} stopped badly\n{}",
            fleet.logs()
        );
    }

    let shared = shared_manifests(&fleet.s3);
    assert_eq!(
        shared.len(),
        BATCHES as usize,
        "each batch once\n{}",
        fleet.logs()
    );
    // every partition's offsets, once, without gap: 4 whole batches each
    let mut spans: Vec<(i32, i64, i64)> = shared.iter().map(span).collect();
    spans.sort();
    for p in 0..PARTITIONS {
        let mine: Vec<_> = spans.iter().filter(|s| s.0 == p).collect();
        assert_eq!(mine.len(), 4, "partition {p}: {spans:?}");
        assert_eq!(mine[0].1, 0, "partition {p} starts at its first offset");
        for w in mine.windows(2) {
            assert_eq!(w[0].2 + 1, w[1].1, "gap or overlap: {spans:?}");
        }
    }
    assert!(
        shared
            .iter()
            .all(|m| m["rows"].as_u64() == Some(ROWS as u64))
    );

    // each partition is one stream with positions 0..4 whoever wrote
    // them, and each batch's evidence continues from the one before it
    let writers: BTreeSet<&str> = shared
        .iter()
        .map(|m| m["writer"].as_str().unwrap())
        .collect();
    assert!(
        writers.len() >= 2 && writers.iter().all(|w| REPLICAS.contains(w)),
        "the partitions were spread over the replicas: {writers:?}"
    );
    let crossed = c_partitions.iter().any(|p| {
        let w: BTreeSet<&str> = shared
            .iter()
            .filter(|m| span(m).0 == *p)
            .map(|m| m["writer"].as_str().unwrap())
            .collect();
        w.len() >= 2
    });
    assert!(
        crossed,
        "a stream of the killed replica went on under another"
    );
    for p in 0..PARTITIONS {
        let stream = format!("kafka.{TOPIC}.{p}");
        let mut mine: Vec<&Value> = shared.iter().filter(|m| m["stream"] == stream).collect();
        mine.sort_by_key(|m| m["stream_seq"].as_u64());
        let positions: Vec<u64> = mine
            .iter()
            .map(|m| m["stream_seq"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, vec![0, 1, 2, 3], "stream {stream}");
        for w in mine.windows(2) {
            let window = w[1]["evidence"]["batches"].as_array().unwrap();
            let n = window.len();
            assert!(n >= 2, "{}", w[1]);
            assert_eq!(window[n - 1], w[1]["batch_id"]);
            assert_eq!(
                window[n - 2],
                w[0]["batch_id"],
                "the evidence of {} (by {}) continues from {} (by {})",
                w[1]["batch_id"],
                w[1]["writer"],
                w[0]["batch_id"],
                w[0]["writer"]
            );
        }
    }

    // each batch's sequential tests pooled its stream's evidence with the
    // other partitions' streams its replica saw (at the positions its
    // manifest records, which the replay below pools again)
    let pooled = shared
        .iter()
        .filter(|m| m["pooled"].as_object().is_some_and(|p| !p.is_empty()))
        .count();
    assert!(
        pooled >= BATCHES as usize / 2,
        "{pooled} of {BATCHES} batches pooled with other streams"
    );

    // one page per fingerprint: a trigger, whichever replicas alerted it
    // and whoever held the lease, under one idempotency key (one outbox
    // message). A receiver may see that key twice, never more: when the
    // kill lands between the holder's send being answered and its record
    // of it, its successor sends the message again under the same key
    // (at least once; see `alert::fleet`), and a receiver that
    // deduplicates by key shows one page
    let pages = paged();
    // distinct (fingerprint, kind, key), sorted: a fingerprint paged under
    // two keys appears twice
    let keyed: Vec<(String, String)> = pages
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|(f, kind, _)| (f, kind))
        .collect();
    let expected: Vec<(String, String)> = fingerprints(&shared)
        .into_iter()
        .map(|f| (f, "trigger".to_string()))
        .collect();
    assert!(!expected.is_empty());
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, key) in &pages {
        assert!(!key.is_empty(), "every page has an idempotency key");
        *per_key.entry(key.as_str()).or_default() += 1;
    }
    assert!(
        per_key.values().all(|&n| n <= 2) && per_key.values().filter(|&&n| n == 2).count() <= 1,
        "a key delivered twice at most, once, across the one kill: {pages:?}\n{}",
        fleet.logs()
    );
    assert_eq!(
        keyed,
        expected,
        "pages per fingerprint, one key each: {pages:?}\n{}",
        fleet.logs()
    );
    // `dqmon outbox list` on any replica: nothing left pending in the
    // fleet; each page recorded as sent by the one replica that sent it
    let mut sent: Vec<String> = Vec::new();
    for r in REPLICAS {
        let rules = fleet.rules(r);
        let o = fleet.s3.dqmon(&[
            "outbox",
            "list",
            "--all",
            "--json",
            "--config",
            rules.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "outbox list: {}", stderr(&o));
        for l in String::from_utf8(o.stdout).unwrap().lines() {
            let m: Value = serde_json::from_str(l).unwrap();
            assert_eq!(m["status"], "sent", "{m}");
            sent.push(m["id"].as_str().unwrap().to_string());
        }
    }
    let distinct: BTreeSet<&String> = sent.iter().collect();
    assert_eq!(distinct.len(), sent.len(), "one record per page: {sent:?}");
    assert_eq!(sent.len(), expected.len(), "{sent:?}");

    // the poisoned batches are alerted, whoever processed them
    for m in &shared {
        let (p, first, _) = span(m);
        let b = first as u64 / ROWS as u64 * PARTITIONS as u64 + p as u64;
        if poisoned(b) {
            assert!(
                m["alerts"].as_array().unwrap().iter().any(is_label_alert),
                "poisoned batch {b} not alerted: {m}"
            );
        }
    }

    // packs of two: each replica's packs have their summaries (what the
    // restarted replica's start read), and `audit verify` below checks
    // each summary against its manifest; the clean stop packed the rest,
    // so every batch is in a pack
    let history = fleet.s3.backend("history", "fleet/events");
    let mut summaries = 0;
    for r in REPLICAS {
        let own = shared.iter().filter(|m| m["writer"] == r).count();
        let packs = history.list(&format!("history/packs/{r}")).unwrap();
        let summarized = history
            .list(&format!("history/pack-summaries/{r}"))
            .unwrap();
        assert_eq!(packs.len(), own.div_ceil(2), "replica {r}: {packs:?}");
        let packed: usize = packs
            .iter()
            .map(|k| {
                let p: serde_json::Value =
                    serde_json::from_slice(&history.get(k).unwrap().unwrap()).unwrap();
                p["manifests"].as_array().unwrap().len()
            })
            .sum();
        assert_eq!(packed, own, "replica {r}: every batch packed");
        assert_eq!(summarized.len(), packs.len(), "replica {r}: {summarized:?}");
        summaries += summarized.len();
    }
    assert!(summaries >= 10, "{summaries} summary objects");

    // one view of the fleet from every replica
    for r in REPLICAS {
        assert_fleet_view(&fleet.s3, &fleet.rules(r), &shared);
    }

    // an analyst's replay of the whole topic gets the fleet's alerts,
    // exactly, takeovers and all: a partition's evidence is its stream's,
    // whichever replica processed each of its batches
    let out = fleet.setup._dir.path().join("replay.jsonl");
    let rules = fleet.rules("a");
    let o = fleet.s3.dqmon(&[
        "replay",
        "--config",
        rules.to_str().unwrap(),
        "--alerts-out",
        out.to_str().unwrap(),
        "--kafka-from",
        "earliest",
    ]);
    assert!(o.status.success(), "replay: {}", stderr(&o));
    let line = |a: &Value| serde_json::to_string(a).unwrap();
    let mut replayed: Vec<String> = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| line(&serde_json::from_str(l).unwrap()))
        .collect();
    let mut live: Vec<String> = shared
        .iter()
        .flat_map(|m| m["alerts"].as_array().unwrap().iter().map(line))
        .collect();
    replayed.sort();
    live.sort();
    assert!(!live.is_empty());
    assert_eq!(replayed, live, "replayed alerts differ from the fleet's");
}
