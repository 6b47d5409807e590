//! `dqmon replay --kafka-from`: a range of a Kafka dataset's topics through
//! the live pipeline code, against a real tansu broker. A replay of what
//! live monitoring consumed gives its alerts byte for byte, never moves the
//! live group's offsets and never writes to the dead-letter topic.

use std::fs;
use std::path::Path;
use std::time::Duration;

use dqmon_fixtures::Scenario;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::common::*;
use crate::kafka::{
    Broker, DLQ, KafkaSetup, ROWS, TOPIC, flip, manifests, produce_batch,
    produce_clean_and_poisoned, producer, rows_of, span, wait_exit,
};

/// Run `dqmon replay` with the setup's rules; returns stderr (the summary).
fn kafka_replay(s: &KafkaSetup, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "replay",
        "--config",
        s.rules.to_str().unwrap(),
        "--alerts-out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = dqmon(&args);
    assert!(o.status.success(), "replay failed: {}", stderr(&o));
    assert!(
        stdout(&o).is_empty(),
        "a replay delivers nothing unless asked, but printed: {}",
        stdout(&o)
    );
    stderr(&o)
}

/// The offsets a consumer group has committed on the topic (-1: none).
fn committed(addr: &str, group: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(TOPIC, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(30)).unwrap();
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// The high watermark (next offset) of a topic's partition.
fn end_offset(addr: &str, topic: &str, partition: i32) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "watermark-reader")
        .create()
        .unwrap();
    c.fetch_watermarks(topic, partition, Duration::from_secs(30))
        .unwrap()
        .1
}

/// (partition, first, last) of every batch in a state folder, sorted.
fn spans_in(state: &Path) -> Vec<(i32, i64, i64)> {
    let mut v: Vec<_> = manifests(state).iter().map(span).collect();
    v.sort();
    v
}

fn alerts_in(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The first offset of every label-rate alert's batch: (partition, first).
fn label_rate_batches(alerts: &[Value]) -> Vec<(i32, i64)> {
    let mut v: Vec<(i32, i64)> = alerts
        .iter()
        .filter(|a| crate::common::is_label_alert(a))
        .map(|a| {
            let (_, p, f, _) =
                dqmon::source::kafka::parse_origin(a["source"].as_str().unwrap()).unwrap();
            (p, f)
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn kafka_replay_of_the_live_range_is_byte_identical_and_leaves_live_offsets_alone() {
    const GROUP: &str = "dqmon-live";
    let broker = Broker::tansu();
    broker.create_topic(TOPIC, 4);
    broker.create_topic(DLQ, 1);
    let addr = broker.addr();
    let s = KafkaSetup::new(&addr, GROUP, "state");
    let p = producer(&addr);
    produce_clean_and_poisoned(&p);

    let mut child = s.spawn(&["--once"]);
    let status = wait_exit(&mut child, Duration::from_secs(240));
    let err = child.wait_with_output().unwrap().stderr;
    assert!(status.success(), "{}", String::from_utf8_lossy(&err));
    let live = fs::read(s.state.join("alerts.jsonl")).unwrap();
    let live_text = String::from_utf8_lossy(&live).into_owned();
    assert!(
        live_text.contains("\"label_rate\"") || live_text.contains("\"label_calibration\""),
        "live raised no label alert"
    );
    assert!(
        live_text.contains("\"malformed_records\""),
        "live raised no malformed_records"
    );
    assert_eq!(s.manifests().len(), 12);
    let offsets = committed(&addr, GROUP, 4);
    // 12 batches of ROWS good messages and 83 bad ones, all consumed live
    assert_eq!(
        offsets.iter().sum::<i64>(),
        12 * ROWS as i64 + 83,
        "{offsets:?}"
    );
    let dead_letters = end_offset(&addr, DLQ, 0);
    assert_eq!(dead_letters, 83);

    // a poisoned batch live monitoring has not seen (yet)
    produce_batch(&p, 1, "batch-late", &rows_of(150, flip()));

    // exactly the range live consumed: up to the live group's committed offsets
    let to = offsets
        .iter()
        .enumerate()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",");
    let out1 = s._dir.path().join("replay1.jsonl");
    let log = kafka_replay(&s, &out1, &["--kafka-from", "earliest", "--kafka-to", &to]);
    assert!(log.contains("replayed 12 batches"), "{log}");
    assert!(log.contains("12 cut at live boundaries"), "{log}");
    let r1 = fs::read(&out1).unwrap();
    assert!(
        r1 == live,
        "replay alerts differ from live alerts\nlive:\n{live_text}\nreplay:\n{}",
        String::from_utf8_lossy(&r1)
    );
    assert_eq!(
        fs::read(s.state.join("replay/alerts.jsonl")).unwrap(),
        live,
        "the replay's own alerts file"
    );
    // the replay's history records the bad messages as live did
    let rows = |state: &Path| -> Vec<(String, u64)> {
        let mut v: Vec<_> = manifests(state)
            .iter()
            .map(|m| {
                (
                    m["source"].as_str().unwrap().to_string(),
                    m["rows"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(rows(&s.state.join("replay")), rows(&s.state));

    let out2 = s._dir.path().join("replay2.jsonl");
    kafka_replay(&s, &out2, &["--kafka-from", "earliest", "--kafka-to", &to]);
    assert_eq!(fs::read(&out2).unwrap(), r1, "two replays differ");

    // the whole topic (the end defaults to the end of each partition): the
    // live batches in the live order, then the late one, cut by its header
    let out3 = s._dir.path().join("replay3.jsonl");
    let log = kafka_replay(&s, &out3, &["--kafka-from", "earliest"]);
    assert!(log.contains("replayed 13 batches"), "{log}");
    assert!(log.contains("12 cut at live boundaries"), "{log}");
    let r3 = fs::read(&out3).unwrap();
    assert!(
        r3.starts_with(&live),
        "the live alerts come first, unchanged"
    );
    let late = format!("kafka:{TOPIC}/1@{}-{}", 3 * ROWS, 4 * ROWS - 1);
    let extra = alerts_in(&out3).split_off(live_text.lines().count());
    assert!(
        !extra.is_empty() && extra.iter().all(|a| a["source"] == late.as_str()),
        "{extra:?}"
    );
    assert!(extra.iter().any(crate::common::is_label_alert), "{extra:?}");

    // nothing of the live side moved: group offsets, dead letters, state
    assert_eq!(
        committed(&addr, GROUP, 4),
        offsets,
        "a replay moved the live group's offsets"
    );
    assert_eq!(
        end_offset(&addr, DLQ, 0),
        dead_letters,
        "a replay wrote to the dead-letter topic"
    );
    assert_eq!(fs::read(s.state.join("alerts.jsonl")).unwrap(), live);
    assert_eq!(s.manifests().len(), 12);
}

#[test]
fn kafka_replay_of_a_time_or_offset_range_reads_only_that_part() {
    let broker = Broker::tansu();
    broker.create_topic(TOPIC, 2);
    broker.create_topic(DLQ, 1);
    let addr = broker.addr();
    let s = KafkaSetup::new(&addr, "dqmon-range", "state");
    let p = producer(&addr);
    // batch b on partition b % 2; 5 and 6 poisoned. `at[b]` is a time
    // after every message of batch b - 1 was written and before batch b.
    let mut at = Vec::new();
    for b in 0..8u64 {
        let scenario = if b == 5 || b == 6 {
            flip()
        } else {
            Scenario::Clean
        };
        // spacing in time between batches, so that a time falls between them
        std::thread::sleep(Duration::from_millis(150));
        at.push(chrono::Utc::now());
        std::thread::sleep(Duration::from_millis(150));
        produce_batch(
            &p,
            (b % 2) as i32,
            &format!("range-{b}"),
            &rows_of(400 + b, scenario),
        );
    }
    let rfc3339 = |t: chrono::DateTime<chrono::Utc>, east_secs: i32| {
        t.with_timezone(&chrono::FixedOffset::east_opt(east_secs).unwrap())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, east_secs == 0)
    };
    let r = ROWS as i64;
    // the k-th batch of a partition holds offsets k*ROWS to (k+1)*ROWS-1
    let batch = |p: i32, k: i64| (p, k * r, (k + 1) * r - 1);
    let state = s.state.join("replay");

    // by time: from before batch 2 to before batch 6 is batches 2 to 5
    let out = s._dir.path().join("time.jsonl");
    let log = kafka_replay(
        &s,
        &out,
        &[
            "--kafka-from",
            &rfc3339(at[2], 0),
            "--kafka-to",
            &rfc3339(at[6], 2 * 3600),
        ],
    );
    assert!(log.contains("replayed 4 batches"), "{log}");
    assert!(log.contains("0 cut at live boundaries"), "{log}");
    assert_eq!(
        spans_in(&state),
        vec![batch(0, 1), batch(0, 2), batch(1, 1), batch(1, 2)]
    );
    assert_eq!(label_rate_batches(&alerts_in(&out)), vec![(1, 2 * r)]);

    // by offsets, on one partition: batch 5 only
    let out = s._dir.path().join("offsets.jsonl");
    let log = kafka_replay(
        &s,
        &out,
        &[
            "--kafka-from",
            &format!("1:{}", 2 * r),
            "--kafka-to",
            &format!("1:{}", 3 * r),
        ],
    );
    assert!(log.contains("replayed 1 batches"), "{log}");
    assert_eq!(spans_in(&state), vec![batch(1, 2)]);
    assert_eq!(label_rate_batches(&alerts_in(&out)), vec![(1, 2 * r)]);

    // from an offset to the end of that partition: batches 2, 4 and 6
    let out = s._dir.path().join("tail.jsonl");
    kafka_replay(&s, &out, &["--kafka-from", &format!("{TOPIC}/0:{r}")]);
    assert_eq!(
        spans_in(&state),
        vec![batch(0, 1), batch(0, 2), batch(0, 3)]
    );
    assert_eq!(label_rate_batches(&alerts_in(&out)), vec![(0, 3 * r)]);
}

#[test]
fn kafka_replay_arguments_are_checked_with_clear_errors() {
    // no broker is contacted for any of these
    let s = KafkaSetup::new("127.0.0.1:9", "dqmon-args", "state");
    let rules = s.rules.to_str().unwrap();
    let some_file = s._dir.path().join("a.parquet");
    fs::write(&some_file, b"x").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--kafka-from", "earliest", some_file.to_str().unwrap()],
            "not both",
        ),
        (vec![], "nothing to replay"),
        (vec!["--kafka-from", "0=5"], "not a Kafka range bound"),
        (
            vec!["--kafka-from", "earliest", "--kafka-to", "2024-06-01 10:00"],
            "not RFC 3339",
        ),
        (vec!["--kafka-to", "latest"], "--kafka-from"),
        (
            vec!["--kafka-from", "earliest", "--keep-paths"],
            "cannot be used with",
        ),
        (
            vec!["--kafka-from", "earliest", "--order", "mtime"],
            "cannot be used with",
        ),
    ];
    for (extra, says) in cases {
        let mut args = vec!["replay", "--config", rules];
        args.extend(extra.iter().copied());
        let o = dqmon(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    // a Parquet dataset has no topic range
    let p = crate::daemon::Setup::new();
    let o = dqmon(&[
        "replay",
        "--config",
        p.rules.to_str().unwrap(),
        "--kafka-from",
        "earliest",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not read Kafka"), "{}", stderr(&o));
}
