//! The typed, validated rules that every other stage reads.
//!
//! These types are produced only by the `dqmon` crate's `config::load` (or built directly
//! in tests); they are always valid: every default is filled in and every
//! cross-field constraint has been checked. Nothing here does I/O.

mod alerts;

pub use alerts::{
    AlertRoute, AlertRules, ConfigValue, EmailReceiver, Receiver, RetryRules, SmtpTls,
    WebhookFormat, WebhookReceiver,
};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The kind of a monitored column: decides which statistics are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Integers and floats: min, max, mean, variance, quantile sketch.
    Numeric,
    /// A small-to-medium set of values: distinct estimate and top-k counts.
    Categorical,
    /// Free text: distinct estimate and top-k (usually of little use), length not kept.
    Text,
    /// Event times: min, max and a quantile sketch of the epoch microseconds.
    Timestamp,
    /// Arrow `Boolean`: counted as the two values `true` and `false`, with
    /// every check of a categorical column.
    Boolean,
}

impl ColumnKind {
    /// Whether this kind keeps numeric statistics (min/max/mean/quantiles).
    pub fn is_numeric_like(self) -> bool {
        matches!(self, ColumnKind::Numeric | ColumnKind::Timestamp)
    }

    /// Whether values are counted one by one (categorical and boolean):
    /// distribution over values, top values, never-seen values, slices.
    pub fn is_categorical_like(self) -> bool {
        matches!(self, ColumnKind::Categorical | ColumnKind::Boolean)
    }
}

/// One monitored column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnRule {
    pub name: String,
    pub kind: ColumnKind,
    /// Declared valid range (inclusive), numeric and timestamp columns only.
    pub range: Option<(f64, f64)>,
    /// Raw values never leave the process: a keyed hash stands in.
    pub pii: bool,
    /// Whether a null is expected to be rare (missing-rate checks use the baseline anyway).
    pub nullable: bool,
}

/// Where the trust tag of a record comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustSource {
    /// A column of the batch holds the tag.
    Column(String),
    /// Every record of this source carries the same tag.
    Fixed(String),
}

/// Trust tags and their order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrustRules {
    pub source: TrustSource,
    /// Known tags, most trusted first. A tag seen in data but not listed is
    /// profiled under its own name and ranked least trusted.
    pub levels: Vec<String>,
    /// Tags treated as low trust when attributing a change (default: every
    /// level after the first half, rounded up).
    pub low_trust: Vec<String>,
}

impl TrustRules {
    /// Rank of a tag: 0 is the most trusted; unknown tags rank after all known.
    pub fn rank(&self, tag: &str) -> usize {
        self.levels
            .iter()
            .position(|l| l == tag)
            .unwrap_or(self.levels.len())
    }

    /// Whether a tag counts as low trust (unknown tags do).
    pub fn is_low_trust(&self, tag: &str) -> bool {
        self.low_trust.iter().any(|l| l == tag) || !self.levels.iter().any(|l| l == tag)
    }
}

/// The label column, whose class rates are tracked per trust tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelRule {
    pub column: String,
    /// The class whose rate is monitored (the "positive" class), as text.
    /// When absent every class is tracked and the rarest baseline class is monitored.
    pub positive: Option<String>,
}

/// Thresholds of every check. Each has a default (see `Default`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// The false-alarm budget: how many clean batches in 1,000 may raise a
    /// finding. Split across check families, then across each family's tests.
    pub false_alarms_per_1000_batches: f64,
    /// Row count: minimum relative change (|obs-exp|/exp) to report.
    pub row_count_min_rel_change: f64,
    /// Trust-tag share: minimum absolute change of a tag's share.
    pub tag_share_min_abs_change: f64,
    /// Missing rate: minimum absolute change of the null share.
    pub missing_min_abs_change: f64,
    /// Range: minimum share of values outside the baseline/declared range.
    pub range_min_share_outside: f64,
    /// Range: quantiles of the baseline that bound the "seen" range.
    pub range_quantiles: (f64, f64),
    /// Distribution: PSI floor for numeric columns.
    pub psi: f64,
    /// Distribution: number of baseline quantile bins for PSI.
    pub psi_bins: usize,
    /// Distribution: Jensen-Shannon divergence floor (base 2, 0..1) for categorical columns.
    pub js: f64,
    /// Top categories: how many top values are tracked.
    pub top_k: usize,
    /// Top categories: minimum share for a value to count as "common" now.
    pub top_min_share: f64,
    /// Top categories: a value whose baseline share is below this is "rare".
    pub rare_share: f64,
    /// Label rate: minimum absolute change of the monitored class rate.
    pub label_min_abs_change: f64,
    /// Values never seen in the baseline: minimum share of rows carrying them.
    pub unseen_min_share: f64,
    /// Duplicate rows: minimum share of exact duplicate rows to report.
    pub duplicate_min_share: f64,
    /// Malformed: maximum tolerated share of quarantined records.
    pub malformed_max_share: f64,
    /// Minimum rows in a slice before its tests are run at all.
    pub min_slice_rows: u64,
    /// Minimum baseline rows of one value of a slice column (in a tag)
    /// before its label rate and share are tested.
    pub min_slice_value_rows: u64,
    /// Findings raised one by one per batch; past it the least severe are
    /// counted in one `too_many_findings` summary (a broken batch must not
    /// page 5,000 times).
    pub max_findings_per_batch: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            false_alarms_per_1000_batches: 2.0,
            row_count_min_rel_change: 0.25,
            tag_share_min_abs_change: 0.02,
            missing_min_abs_change: 0.005,
            range_min_share_outside: 0.002,
            range_quantiles: (0.0, 1.0),
            psi: 0.1,
            psi_bins: 10,
            js: 0.02,
            top_k: 10,
            top_min_share: 0.02,
            rare_share: 0.001,
            label_min_abs_change: 0.005,
            unseen_min_share: 0.002,
            duplicate_min_share: 0.05,
            malformed_max_share: 0.01,
            min_slice_rows: 200,
            min_slice_value_rows: 50,
            max_findings_per_batch: 50,
        }
    }
}

/// Sketch sizes: fixed per rules so that profiles stay mergeable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SketchParams {
    /// t-digest compression (k).
    pub tdigest_k: u16,
    /// HyperLogLog log2(registers).
    pub hll_lg_k: u8,
    /// Frequent-items sketch map size (power of two); exact below 3/4 of it.
    pub frequent_items_map: usize,
}

impl Default for SketchParams {
    fn default() -> Self {
        SketchParams {
            tdigest_k: 100,
            hll_lg_k: 12,
            frequent_items_map: 1024,
        }
    }
}

/// Input limits: larger inputs are quarantined, never half-read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_rows: u64,
    pub max_string_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            max_rows: 100_000_000,
            max_string_len: 64 * 1024,
        }
    }
}

/// Where batches come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceRule {
    /// A folder where ingestion drops Parquet files.
    ParquetDrop {
        path: PathBuf,
        /// Polling interval when file events are unavailable, in milliseconds.
        poll_interval_ms: u64,
        /// File name glob of files to pick up (default `*.parquet`).
        pattern: String,
    },
    /// Parquet objects dropped under a prefix of an object store, watched
    /// by any number of replicas; each object is claimed by one of them.
    ObjectDrop {
        /// The prefix: `s3://bucket/incoming/`, `gs://...`, `az://...`.
        url: String,
        /// Listing interval, in milliseconds.
        poll_interval_ms: u64,
        /// Object name glob of objects to pick up (default `*.parquet`).
        pattern: String,
        /// How long a claim keeps an object for the replica that made it,
        /// in milliseconds: an object whose replica died is taken by
        /// another one after this.
        claim_lease_ms: u64,
    },
    /// No live source (profile, baseline and replay commands only).
    None,
    /// Kafka topics read as a consumer group of dqmon's own.
    Kafka(KafkaSource),
}

/// One dataset's rules: everything needed to profile and compare its batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rules {
    pub dataset: String,
    pub source: SourceRule,
    /// Folder holding state (history, checkpoints, alerts, quarantine).
    pub state_dir: PathBuf,
    /// The dataset's batch history on an object store shared by replicas
    /// (`<shared_history>/<dataset>`); `None`: in `state_dir`.
    pub shared_history: Option<String>,
    /// Folder holding baselines and approvals (default
    /// `<state_dir>/baselines`), or a prefix on an object store
    /// (`s3://bucket/baselines`, kept as written).
    pub baseline_dir: PathBuf,
    /// Pin a baseline id; otherwise the latest approved baseline of the dataset is used.
    pub baseline_id: Option<String>,
    pub trust: TrustRules,
    pub label: Option<LabelRule>,
    /// Monitored columns in file order of the YAML.
    pub columns: Vec<ColumnRule>,
    /// Categorical columns whose values slice every trust tag further: row
    /// share and label rate per (value × tag), where attacks confined to a
    /// small region of the input space show.
    pub slices: Vec<String>,
    /// Cut points of the numeric slice and label-feature columns (`{ column:
    /// x, bins: [..] }`, or [`default_feature_bins`] for a numeric label
    /// feature chosen automatically): their values are the bins, named
    /// `< a`, `[a, b)`, `>= z`.
    pub slice_bins: BTreeMap<String, Vec<f64>>,
    /// Columns whose values (or bins) the label-calibration check may
    /// predict each row's label from (`label_features:`; by default, with a
    /// label and no `slices:`, every declared categorical, boolean and
    /// numeric column that is not `pii`). The profile keeps rows and label
    /// classes per value of each, per trust tag; the baseline picks, per
    /// tag, the one that predicts the label best.
    pub label_features: Vec<String>,
    pub thresholds: Thresholds,
    pub sketch: SketchParams,
    pub limits: Limits,
    /// Name of the environment variable that holds the PII hashing key.
    pub pii_key_env: String,
    /// SHA-256 of the rules file bytes (hex): recorded with every profile and alert.
    pub rules_hash: String,
    /// Who may approve baselines (`security:`).
    pub security: SecurityRules,
    /// Alert delivery (`alerts:`); `None` prints alert lines on stdout.
    pub alerts: Option<AlertRules>,
}

impl Rules {
    /// The rule of a column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnRule> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// A fingerprint of what shapes a profile (columns, kinds, trust, label,
    /// sketch sizes): profiles merge only when these match.
    pub fn profile_shape(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut shape = serde_json::json!({
            "columns": self.columns,
            "trust": self.trust,
            "label": self.label,
            "sketch": self.sketch,
        });
        // only when set, so that rules without slices keep their shape
        if !self.slices.is_empty() {
            shape["slices"] = serde_json::json!(self.slices);
        }
        if !self.slice_bins.is_empty() {
            shape["slice_bins"] = serde_json::json!(self.slice_bins);
        }
        if !self.label_features.is_empty() {
            shape["label_features"] = serde_json::json!(self.label_features);
        }
        hex::encode(Sha256::digest(shape.to_string().as_bytes()))
    }
}

impl Rules {
    /// The columns whose per-value rows and label classes a profile keeps:
    /// the slice columns, then the label features that are not slices.
    pub fn valued_columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.slices.iter().map(String::as_str).collect();
        for f in &self.label_features {
            if !out.contains(&f.as_str()) {
                out.push(f);
            }
        }
        out
    }
}

/// Cut points of a numeric label feature whose bins are not declared: the
/// R10 preferred numbers (1, 1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8 in each
/// decade) from 0.001 to 8·10⁸, both signs, and 0 (241 cut points). They
/// depend on no data, so profiles stay mergeable; each bin spans a ratio of
/// about 1.26, fine enough that a label which turns at some value of the
/// feature is seen turning there, wherever that is, and the cells that stay
/// empty cost nothing.
pub fn default_feature_bins() -> Vec<f64> {
    let mut positive = Vec::new();
    for exp in -3..=8 {
        for m in ["1", "1.25", "1.6", "2", "2.5", "3.2", "4", "5", "6.3", "8"] {
            // parsed from the decimal, so the cut is the number it names
            let v: f64 = format!("{m}e{exp}").parse().expect("a decimal literal");
            positive.push(v);
        }
    }
    let mut out: Vec<f64> = positive.iter().rev().map(|v| -v).collect();
    out.push(0.0);
    out.extend(positive);
    out
}

/// Allow building rules in tests without YAML.
impl Rules {
    pub fn for_tests(dataset: &str, columns: Vec<ColumnRule>) -> Rules {
        Rules {
            dataset: dataset.to_string(),
            source: SourceRule::None,
            state_dir: PathBuf::from("state"),
            shared_history: None,
            baseline_dir: PathBuf::from("state/baselines"),
            baseline_id: None,
            trust: TrustRules {
                source: TrustSource::Column("trust_tag".into()),
                levels: vec![
                    "human_reviewed".into(),
                    "vendor".into(),
                    "user_reported".into(),
                    "scraped".into(),
                ],
                low_trust: vec!["user_reported".into(), "scraped".into()],
            },
            label: Some(LabelRule {
                column: "label".into(),
                positive: Some("1".into()),
            }),
            columns,
            slices: Vec::new(),
            slice_bins: BTreeMap::new(),
            label_features: Vec::new(),
            thresholds: Thresholds::default(),
            sketch: SketchParams::default(),
            limits: Limits::default(),
            pii_key_env: "DQMON_PII_KEY".into(),
            rules_hash: String::new(),
            security: SecurityRules::default(),
            alerts: None,
        }
    }
}

/// A map from dataset name to its rules, for configs that include several.
pub type RuleSet = BTreeMap<String, Rules>;

/// How the messages of a Kafka topic carry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    /// One JSON object per message.
    Json,
    /// Many JSON objects per message, one per line.
    JsonLines,
    /// An Arrow IPC stream per message (one or more record batches).
    ArrowIpc,
}

/// Where the trust tag of a Kafka record comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaTrust {
    /// From the records themselves (the rules' `trust.column`, or `trust.fixed`).
    Records,
    /// From this message header; the tag is written into the rules' trust column.
    Header(String),
    /// Fixed per topic (topic name to tag); written into the rules' trust column.
    Topics(BTreeMap<String, String>),
}

/// Where a secret comes from (a Kafka client property, an SMTP password, a
/// webhook token): never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file (its content, trailing newline removed).
    File(PathBuf),
}

/// A Kafka source (`source: { kafka: ... }`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KafkaSource {
    /// `bootstrap.servers`, comma separated.
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group (`group.id`); every dqmon replica of a dataset uses the same one.
    pub group_id: String,
    pub format: MessageFormat,
    pub trust: KafkaTrust,
    /// Messages with the same value of this header form one batch.
    pub batch_id_header: Option<String>,
    /// A window (or a batch-id batch) closes at this many records...
    pub max_records: u64,
    /// ...or this many payload bytes...
    pub max_bytes: u64,
    /// ...or this many milliseconds after its first message.
    pub max_ms: u64,
    /// Larger messages go to the dead-letter topic unread.
    pub max_message_bytes: u64,
    /// Bad messages are produced here with their reason in headers.
    pub dead_letter_topic: Option<String>,
    /// librdkafka properties passed through as written (no secrets).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets, read from env vars or files.
    pub secret_properties: BTreeMap<String, SecretRef>,
}
/// `security:`: which baseline approvals the daemon and `compare` accept
/// (see the `dqmon` crate's `security` module). The default accepts any recorded approval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecurityRules {
    /// Refuse a baseline whose approval is not signed by a listed key.
    pub require_signed_approval: bool,
    /// Refuse a baseline approved by the person who built it.
    pub require_distinct_approver: bool,
    /// The approvers whose signatures count: name (as given to `--by`) and public key.
    pub trusted_keys: Vec<TrustedKey>,
}

/// One trusted approver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrustedKey {
    /// The approver's name, as recorded by `dqmon baseline approve --by`.
    pub name: String,
    pub key: PublicKeySource,
}

/// Where a trusted public key is (public keys are not secrets).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicKeySource {
    /// Written in the rules (base64 or hex of the 32 bytes, or PEM); validated at load.
    Inline(String),
    /// A PEM, hex or base64 file, resolved against the rules file's folder; read when used.
    File(PathBuf),
}

/// The HTTP listener of `dqmon run` (`/healthz`, `/readyz`, `/metrics`):
/// the top-level `server:` section. Absent means no listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerSettings {
    /// Address and port to listen on (default `127.0.0.1:9464`, loopback
    /// only; `0.0.0.0:9464` in a container; port 0 picks a free port).
    pub listen: std::net::SocketAddr,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}
