//! The `source:` section: Kafka, its defaults and secret references.

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
