//! Walking `source: { kafka: ... }` of a rules file into a [`KafkaSource`].
//!
//! Owns the validation of the Kafka source only: brokers, topics, group,
//! message format, trust-tag origin, batch windows, the dead-letter topic and
//! librdkafka properties. Secrets are never accepted inline: secret
//! properties are named in `secret_properties_env` / `secret_properties_file`
//! and read at start. It does no I/O and never connects to a broker.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::{Fields, Walker, key_path, resolve};
use crate::model::{KafkaSource, KafkaTrust, MessageFormat, SecretRef, SourceRule};

const KAFKA_KEYS: &[&str] = &[
    "brokers",
    "topics",
    "group_id",
    "format",
    "trust_header",
    "trust_topics",
    "batch_id_header",
    "window",
    "max_message_bytes",
    "dead_letter_topic",
    "properties",
    "secret_properties_env",
    "secret_properties_file",
];
const WINDOW_KEYS: &[&str] = &["max_records", "max_bytes", "max_ms"];
const FORMATS: &[&str] = &["json", "json_lines", "arrow_ipc"];
const EXAMPLE: &str =
    "`kafka: { brokers: [kafka:9092], topics: [payments], group_id: dqmon-payments }`";

/// Properties that dqmon sets itself: the offset discipline depends on them.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `brokers`"),
    ("metadata.broker.list", "use `brokers`"),
    ("group.id", "use `group_id`"),
    (
        "enable.auto.offset.store",
        "dqmon stores an offset only after its batch is in the history",
    ),
    (
        "enable.auto.commit",
        "dqmon commits offsets itself after each batch is in the history",
    ),
];

/// librdkafka properties whose values are secrets even though their names
/// hold none of the usual secret words.
const SECRET_PROPERTIES: &[&str] = &[
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.location",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
];

/// Whether a librdkafka property holds a secret value.
pub(crate) fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_PROPERTIES.contains(&k.as_str())
        || ["password", "secret", "token", "private"]
            .iter()
            .any(|w| k.contains(w))
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Walker {
    pub(super) fn kafka(&mut self, path: &str, v: &Value, base_dir: &Path) -> Option<SourceRule> {
        let m = self.map(path, v, EXAMPLE)?;
        let mut f = Fields::new(path, m, KAFKA_KEYS);
        let brokers = f
            .required(self, "brokers", "`brokers: [kafka-1:9092, kafka-2:9092]`")
            .and_then(|(p, v)| self.text_list(&p, v, "`brokers: [kafka-1:9092]`"))
            .map(|b| b.join(","));
        let mut written_topics: Vec<String> = Vec::new();
        let topics = f
            .required(self, "topics", "`topics: [payments]`")
            .and_then(|(p, v)| {
                let list = self.text_list(&p, v, "`topics: [payments]`")?;
                written_topics = list.clone();
                let mut ok = true;
                for (i, t) in list.iter().enumerate() {
                    if !valid_topic(t) {
                        ok = false;
                        self.problem(
                            &format!("{p}[{i}]"),
                            format!(
                                "`{t}` is not a valid Kafka topic name (letters, digits, `.`, `_` and `-`, at most 249); write the topic's exact name."
                            ),
                        );
                    }
                }
                ok.then_some(list)
            });
        let group_id = f
            .required(self, "group_id", "`group_id: dqmon-payments`")
            .and_then(|(p, v)| self.text(&p, v, "`group_id: dqmon-payments`"));
        let format = match f.get("format") {
            Some((p, v)) => self.text(&p, v, "`format: json`").and_then(|s| {
                match s.as_str() {
                    "json" => Some(MessageFormat::Json),
                    "json_lines" => Some(MessageFormat::JsonLines),
                    "arrow_ipc" => Some(MessageFormat::ArrowIpc),
                    other => {
                        let hint = super::suggestion_suffix(
                            other,
                            &FORMATS.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                        );
                        self.problem(
                            &p,
                            format!(
                                "unknown message format `{other}`{hint}; write one of `json` (one object per message), `json_lines` (one object per line) or `arrow_ipc` (an Arrow IPC stream per message)."
                            ),
                        );
                        None
                    }
                }
            }),
            None => Some(MessageFormat::Json),
        };
        let header = f
            .get("trust_header")
            .map(|(p, v)| (self.text(&p, v, "`trust_header: trust-tag`"), p));
        let per_topic = f.get("trust_topics").map(|(p, v)| {
            let tags = self
                .map(&p, v, "`trust_topics: { payments-vendor: vendor }`")
                .map(|m| {
                    let mut out = BTreeMap::new();
                    for (k, tv) in m {
                        let Some(k) = k.as_str() else { continue };
                        let kp = key_path(&p, k);
                        if let Some(tag) = self.text(&kp, tv, "`payments-vendor: vendor`") {
                            out.insert(k.to_string(), tag);
                        }
                    }
                    out
                });
            (tags, p)
        });
        let trust = match (header, per_topic) {
            (Some(_), Some((_, p))) => {
                self.problem(
                    &p,
                    "the trust tag comes from one place; keep either `trust_header` or `trust_topics`.",
                );
                None
            }
            (Some((h, _)), None) => h.map(KafkaTrust::Header),
            (None, Some((t, _))) => t.map(KafkaTrust::Topics),
            (None, None) => Some(KafkaTrust::Records),
        };
        if let (Some(KafkaTrust::Topics(map)), Some(topics)) = (&trust, &topics) {
            for t in topics {
                if !map.contains_key(t) {
                    self.problem(
                        &key_path(path, "trust_topics"),
                        format!(
                            "topic `{t}` has no trust tag; add `{t}: TAG` under `trust_topics`."
                        ),
                    );
                }
            }
            for k in map.keys() {
                if !topics.contains(k) {
                    self.problem(
                        &key_path(&key_path(path, "trust_topics"), k),
                        format!("`{k}` is not one of `topics`; add it there or remove it here."),
                    );
                }
            }
        }
        let batch_id_header = match f.get("batch_id_header") {
            Some((p, v)) => self.text(&p, v, "`batch_id_header: batch-id`").map(Some),
            None => Some(None),
        };
        let (mut max_records, mut max_bytes, mut max_ms) =
            (Some(100_000), Some(64 << 20), Some(10_000));
        if let Some((p, v)) = f.get("window")
            && let Some(wm) = self.map(&p, v, "`window: { max_records: 100000, max_ms: 10000 }`")
        {
            let mut wf = Fields::new(&p, wm, WINDOW_KEYS);
            if let Some((p, v)) = wf.get("max_records") {
                max_records = self.whole(&p, v, 1, u64::MAX, "`max_records: 100000`");
            }
            if let Some((p, v)) = wf.get("max_bytes") {
                max_bytes = self.whole(&p, v, 1, u64::MAX, "`max_bytes: 67108864`");
            }
            if let Some((p, v)) = wf.get("max_ms") {
                max_ms = self.whole(&p, v, 1, u64::MAX, "`max_ms: 10000`");
            }
            wf.finish(self);
        }
        let max_message_bytes = match f.get("max_message_bytes") {
            Some((p, v)) => self.whole(&p, v, 1, u64::MAX, "`max_message_bytes: 1048576`"),
            None => Some(1 << 20),
        };
        let dead_letter_topic = match f.get("dead_letter_topic") {
            Some((p, v)) => self.text(&p, v, "`dead_letter_topic: payments-dlq`").and_then(|t| {
                if !valid_topic(&t) {
                    self.problem(
                        &p,
                        format!("`{t}` is not a valid Kafka topic name (letters, digits, `.`, `_` and `-`); write e.g. `dead_letter_topic: payments-dlq`."),
                    );
                    return None;
                }
                if written_topics.contains(&t) {
                    self.problem(
                        &p,
                        format!("the dead-letter topic `{t}` is also read as input, so bad messages would loop; use a topic of its own such as `{t}-dlq`."),
                    );
                    return None;
                }
                Some(Some(t))
            }),
            None => Some(None),
        };
        let mut properties = Some(BTreeMap::new());
        if let Some((p, v)) = f.get("properties") {
            properties = self.properties(&p, v);
        }
        let mut secret_properties = BTreeMap::new();
        let mut secrets_ok = true;
        for (key, is_env) in [
            ("secret_properties_env", true),
            ("secret_properties_file", false),
        ] {
            let Some((p, v)) = f.get(key) else { continue };
            let example = if is_env {
                "`secret_properties_env: { sasl.password: KAFKA_PASSWORD }`"
            } else {
                "`secret_properties_file: { sasl.password: /run/secrets/kafka }`"
            };
            let Some(m) = self.map(&p, v, example) else {
                secrets_ok = false;
                continue;
            };
            for (k, sv) in m {
                let Some(k) = k.as_str() else { continue };
                let kp = key_path(&p, k);
                if let Some(reason) = reserved(k) {
                    secrets_ok = false;
                    self.problem(&kp, reason);
                    continue;
                }
                let r = if is_env {
                    self.env_var_name(&kp, sv).map(SecretRef::Env)
                } else {
                    self.text(&kp, sv, "`sasl.password: /run/secrets/kafka`")
                        .map(|s| SecretRef::File(resolve(base_dir, &s)))
                };
                match r {
                    Some(r) => {
                        if secret_properties.insert(k.to_string(), r).is_some() {
                            secrets_ok = false;
                            self.problem(
                                &kp,
                                format!("`{k}` is given both as an environment variable and as a file; keep one."),
                            );
                        }
                    }
                    None => secrets_ok = false,
                }
            }
        }
        if let Some(props) = &properties {
            for k in props.keys() {
                if secret_properties.contains_key(k) {
                    self.problem(
                        &key_path(&key_path(path, "properties"), k),
                        format!("`{k}` is also a secret property; remove it here."),
                    );
                }
            }
        }
        f.finish(self);
        Some(SourceRule::Kafka(KafkaSource {
            brokers: brokers?,
            topics: topics?,
            group_id: group_id?,
            format: format?,
            trust: trust?,
            batch_id_header: batch_id_header?,
            max_records: max_records?,
            max_bytes: max_bytes?,
            max_ms: max_ms?,
            max_message_bytes: max_message_bytes?,
            dead_letter_topic: dead_letter_topic?,
            properties: properties?,
            secret_properties: secrets_ok.then_some(secret_properties)?,
        }))
    }

    /// A list of non-empty texts (a single text is accepted as a list of one).
    fn text_list(&mut self, path: &str, v: &Value, example: &str) -> Option<Vec<String>> {
        if let Value::String(_) = v {
            return self.text(path, v, example).map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            });
        }
        let items = self.seq(path, v, example)?;
        if items.is_empty() {
            self.problem(path, format!("the list is empty; write {example}."));
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.text(&format!("{path}[{i}]"), item, example) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn properties(&mut self, path: &str, v: &Value) -> Option<BTreeMap<String, String>> {
        let m = self.map(path, v, "`properties: { security.protocol: SASL_SSL }`")?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, pv) in m {
            let Some(k) = k.as_str() else {
                ok = false;
                self.problem(path, "a property name must be text.");
                continue;
            };
            let kp = key_path(path, k);
            if let Some(reason) = reserved(k) {
                ok = false;
                self.problem(&kp, reason);
                continue;
            }
            if is_secret_property(k) {
                ok = false;
                self.problem(
                    &kp,
                    format!(
                        "secrets are never written in config files; move it to `secret_properties_env: {{ {k}: VAR_NAME }}` (an environment variable) or `secret_properties_file: {{ {k}: /path }}`."
                    ),
                );
                continue;
            }
            let value = match pv {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                other => {
                    self.wrong_type(
                        &kp,
                        "text, a number or a boolean",
                        other,
                        "`security.protocol: SASL_SSL`",
                    );
                    None
                }
            };
            match value {
                Some(s) => {
                    out.insert(k.to_string(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

fn reserved(key: &str) -> Option<String> {
    RESERVED.iter().find(|(k, _)| *k == key).map(|(k, why)| {
        format!("`{k}` is set by dqmon and cannot be overridden ({why}); remove it.")
    })
}

/// Cross-field check: a trust tag from a header or per topic is written into
/// the rules' trust column, so the rules must name one.
pub(super) fn check_trust(w: &mut Walker, source: Option<&SourceRule>, trust_is_fixed: bool) {
    if let Some(SourceRule::Kafka(k)) = source
        && trust_is_fixed
        && k.trust != KafkaTrust::Records
    {
        w.problem(
            "source.kafka",
            "`trust_header` and `trust_topics` fill the trust column, but `trust` has `fixed:`; write `trust: { column: trust_tag, ... }` or remove them.",
        );
    }
}
