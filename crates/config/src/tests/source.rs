//! The `source:` section: Kafka, its defaults and secret references; a drop
//! location on an object store.

use super::*;

const KAFKA: &str = "\
dataset: payments
trust:
  column: trust_tag
  levels: [human_reviewed, vendor, user_reported, scraped]
columns:
  amount: numeric
source:
  kafka:
    brokers: [kafka-1:9092, kafka-2:9092]
    topics: [payments, payments-vendor]
    group_id: dqmon-payments
    format: json_lines
    trust_topics: { payments: user_reported, payments-vendor: vendor }
    batch_id_header: batch-id
    window: { max_records: 5000, max_ms: 2000 }
    dead_letter_topic: payments-dlq
    properties: { security.protocol: SASL_SSL, sasl.mechanism: PLAIN, sasl.username: dqmon, fetch.max.bytes: 1048576 }
    secret_properties_env: { sasl.password: KAFKA_PASSWORD }
    secret_properties_file: { ssl.key.password: secrets/key-pass }
";

#[test]
fn kafka_source_loads_with_defaults_and_secret_references() {
    use crate::model::{KafkaTrust, MessageFormat, SecretRef};
    let r = parse_rules(KAFKA, Path::new("/cfg"), "test.yaml").unwrap();
    let SourceRule::Kafka(k) = r.source else {
        panic!("not a kafka source: {:?}", r.source)
    };
    assert_eq!(k.brokers, "kafka-1:9092,kafka-2:9092");
    assert_eq!(k.topics, vec!["payments", "payments-vendor"]);
    assert_eq!(k.group_id, "dqmon-payments");
    assert_eq!(k.format, MessageFormat::JsonLines);
    assert_eq!(
        k.trust,
        KafkaTrust::Topics(
            [
                ("payments".to_string(), "user_reported".to_string()),
                ("payments-vendor".to_string(), "vendor".to_string())
            ]
            .into()
        )
    );
    assert_eq!(k.batch_id_header.as_deref(), Some("batch-id"));
    assert_eq!(
        (k.max_records, k.max_bytes, k.max_ms),
        (5000, 64 << 20, 2000)
    );
    assert_eq!(k.max_message_bytes, 1 << 20);
    assert_eq!(k.dead_letter_topic.as_deref(), Some("payments-dlq"));
    assert_eq!(k.properties["fetch.max.bytes"], "1048576");
    assert_eq!(
        k.secret_properties["sasl.password"],
        SecretRef::Env("KAFKA_PASSWORD".into())
    );
    assert_eq!(
        k.secret_properties["ssl.key.password"],
        SecretRef::File(PathBuf::from("/cfg/secrets/key-pass"))
    );
}

#[test]
fn kafka_source_mistakes_are_all_reported_and_secrets_refused() {
    let yaml = "\
dataset: payments
trust:
  fixed: vendor
columns:
  amount: numeric
source:
  parquet_drop: { path: drop }
  kafka:
    brokers: []
    topics: [payments, \"bad topic\"]
    format: avro
    trust_header: trust
    dead_letter_topic: payments
    window: { max_recs: 10 }
    properties: { sasl.password: hunter2, enable.auto.commit: true, ssl.key.pem: PEM }
";
    let p = parse_err(yaml);
    let got = paths(&p);
    for path in [
        "source.kafka",
        "source.kafka.brokers",
        "source.kafka.topics[1]",
        "source.kafka.group_id",
        "source.kafka.format",
        "source.kafka.dead_letter_topic",
        "source.kafka.window.max_recs",
        "source.kafka.properties[\"sasl.password\"]",
        "source.kafka.properties[\"enable.auto.commit\"]",
        "source.kafka.properties[\"ssl.key.pem\"]",
    ] {
        assert!(got.contains(&path), "no problem at {path}: {p:#?}");
    }
    let m = message(&p, "source.kafka.properties[\"sasl.password\"]");
    assert!(m.contains("secret_properties_env"), "{m}");
    assert!(
        !p.iter().any(|(_, m)| m.contains("hunter2")),
        "secret echoed"
    );
    assert!(message(&p, "source.kafka.format").contains("json_lines"));
    assert!(message(&p, "source.kafka.dead_letter_topic").contains("loop"));
}

#[test]
fn a_drop_location_on_an_object_store_is_read_with_its_defaults() {
    let yaml = format!("{MINIMAL}source:\n  parquet_drop:\n    path: s3://ingest/incoming/\n");
    let r = parse_rules(&yaml, Path::new("/cfg"), "test.yaml").unwrap();
    assert_eq!(
        r.source,
        SourceRule::ObjectDrop {
            url: "s3://ingest/incoming/".into(),
            poll_interval_ms: 5_000,
            pattern: "*.parquet".into(),
            claim_lease_ms: 600_000,
        }
    );
    let yaml = format!(
        "{MINIMAL}source:\n  parquet_drop:\n    path: gs://b/p\n    poll_interval_ms: 200\n    claim_lease_ms: 60000\n    pattern: \"*.pq\"\n"
    );
    let r = parse_rules(&yaml, Path::new("/cfg"), "test.yaml").unwrap();
    assert_eq!(
        r.source,
        SourceRule::ObjectDrop {
            url: "gs://b/p".into(),
            poll_interval_ms: 200,
            pattern: "*.pq".into(),
            claim_lease_ms: 60_000,
        }
    );
}

#[test]
fn drop_location_mistakes_are_reported_with_their_paths() {
    let found = parse_err(&format!(
        "{MINIMAL}source:\n  parquet_drop:\n    path: ftp://host/incoming/\n"
    ));
    assert_eq!(
        paths(&found),
        vec!["source.parquet_drop.path"],
        "{found:#?}"
    );
    let m = message(&found, "source.parquet_drop.path");
    assert!(
        m.contains("`ftp://` is not an object store") && m.contains("`s3://`"),
        "{m}"
    );
    // a lease is for claims between replicas: not for a folder
    let found = parse_err(&format!(
        "{MINIMAL}source:\n  parquet_drop:\n    path: drop\n    claim_lease_ms: 60000\n"
    ));
    assert_eq!(
        paths(&found),
        vec!["source.parquet_drop.claim_lease_ms"],
        "{found:#?}"
    );
    // a lease under a second is refused: a batch takes longer than that
    let found = parse_err(&format!(
        "{MINIMAL}source:\n  parquet_drop:\n    path: s3://b/p\n    claim_lease_ms: 10\n"
    ));
    assert_eq!(
        paths(&found),
        vec!["source.parquet_drop.claim_lease_ms"],
        "{found:#?}"
    );
}

/// `shared_history`: a prefix on an object store, the dataset's part
/// under it; a folder, an unknown scheme or a bucket-less URL is refused.
#[test]
fn a_shared_history_is_a_prefix_on_an_object_store() {
    let yaml = format!("{MINIMAL}shared_history: s3://fleet/dqmon/\n");
    let r = parse_rules(&yaml, Path::new("/cfg"), "test.yaml").unwrap();
    assert_eq!(
        r.shared_history.as_deref(),
        Some("s3://fleet/dqmon/payments")
    );
    let r = parse_rules(MINIMAL, Path::new("/cfg"), "test.yaml").unwrap();
    assert_eq!(r.shared_history, None);
    for bad in ["history", "ftp://host/h", "s3://", "memory:///x"] {
        let found = parse_err(&format!("{MINIMAL}shared_history: {bad}\n"));
        assert_eq!(paths(&found), vec!["shared_history"], "{bad}: {found:#?}");
        assert!(
            message(&found, "shared_history").contains("`s3://`"),
            "{found:#?}"
        );
    }
}

/// `baseline_dir`: a folder relative to the rules file, or a prefix on an
/// object store kept as written (what pods without volumes read); an
/// unknown scheme or a bucket-less URL is refused.
#[test]
fn a_baseline_dir_is_a_folder_or_a_prefix_on_an_object_store() {
    let r = parse_rules(
        &format!("{MINIMAL}baseline_dir: baselines\n"),
        Path::new("/cfg"),
        "test.yaml",
    )
    .unwrap();
    assert_eq!(r.baseline_dir, Path::new("/cfg/baselines"));
    let r = parse_rules(
        &format!("{MINIMAL}baseline_dir: s3://fleet/baselines/\n"),
        Path::new("/cfg"),
        "test.yaml",
    )
    .unwrap();
    assert_eq!(r.baseline_dir, Path::new("s3://fleet/baselines"));
    for bad in ["ftp://host/b", "s3://", "memory:///x"] {
        let found = parse_err(&format!("{MINIMAL}baseline_dir: {bad}\n"));
        assert_eq!(paths(&found), vec!["baseline_dir"], "{bad}: {found:#?}");
        assert!(
            message(&found, "baseline_dir").contains("`s3://`"),
            "{found:#?}"
        );
    }
}
