//! Alert delivery (the `alerts:` section): receivers, routes, lifecycle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::SecretRef;

/// How alerts reach people: receivers, the routes that pick them, and the
/// notification lifecycle (cooldown, resolve, retries). `None` in
/// [`Rules::alerts`](super::Rules::alerts) keeps the plain behaviour: alert lines on stdout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRules {
    /// Named receivers. A receiver named `stdout` always exists.
    pub receivers: BTreeMap<String, Receiver>,
    /// Routes, tried in order; the first that matches wins unless it says `continue`.
    pub routes: Vec<AlertRoute>,
    /// Receivers of alerts that no route matched (default `[stdout]`).
    pub default_route: Vec<String>,
    /// A fingerprint that fires again within this many seconds of its last
    /// notification is counted, not sent; a summary goes out when it ends.
    pub cooldown_secs: u64,
    /// An open alert resolves after this many later batches in which its
    /// fingerprint did not fire.
    pub resolve_after_batches: u32,
    pub retry: RetryRules,
}

impl Default for AlertRules {
    fn default() -> Self {
        let mut receivers = BTreeMap::new();
        receivers.insert("stdout".to_string(), Receiver::Stdout);
        AlertRules {
            receivers,
            routes: Vec::new(),
            default_route: vec!["stdout".to_string()],
            cooldown_secs: 3600,
            resolve_after_batches: 3,
            retry: RetryRules::default(),
        }
    }
}

/// Delivery retries: exponential backoff with jitter, up to a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryRules {
    /// Attempts before a message is marked failed.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryRules {
    fn default() -> Self {
        RetryRules {
            max_attempts: 12,
            initial_backoff_ms: 2_000,
            max_backoff_ms: 15 * 60 * 1000,
        }
    }
}

/// A setting that may be written in the config or, when it is a secret
/// (a Slack webhook URL, an `Authorization` header), read from env or a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigValue {
    Literal(String),
    Secret(SecretRef),
}

/// One receiver of notifications.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Receiver {
    /// One line per alert on standard output.
    Stdout,
    /// One JSON object per notification appended to a file.
    File {
        path: PathBuf,
    },
    Email(EmailReceiver),
    Webhook(WebhookReceiver),
}

/// TLS mode of an SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// No TLS: only for a relay on loopback or inside a trusted network.
    None,
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    Starttls,
    /// TLS from the first byte ("SMTPS"), usually port 465.
    Tls,
}

/// Email over SMTP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmailReceiver {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<ConfigValue>,
    pub password: Option<SecretRef>,
    pub timeout_secs: u64,
    /// PEM certificates (e.g. a private CA) trusted for this server's TLS
    /// certificate, in addition to the built-in web PKI roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The payload shape of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// dqmon's own JSON document.
    Generic,
    /// A Slack incoming-webhook message (`text` + `blocks`).
    Slack,
    /// A PagerDuty Events API v2 event (trigger / resolve).
    Pagerduty,
}

/// An HTTP POST of JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookReceiver {
    pub url: ConfigValue,
    pub format: WebhookFormat,
    /// Extra headers, in config order.
    pub headers: Vec<(String, ConfigValue)>,
    /// PagerDuty integration (routing) key.
    pub routing_key: Option<SecretRef>,
    pub timeout_secs: u64,
}

/// A route: which alerts (every listed condition must hold; an empty list
/// matches anything) go to which receivers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRoute {
    pub severity: Vec<crate::compare::Severity>,
    pub dataset: Vec<String>,
    pub check: Vec<String>,
    pub column: Vec<String>,
    pub trust_tag: Vec<String>,
    pub to: Vec<String>,
    /// Collect this route's triggers and send one digest per receiver every this many seconds.
    pub digest_secs: Option<u64>,
    /// Also try the routes after this one when it matches.
    pub continue_matching: bool,
}
