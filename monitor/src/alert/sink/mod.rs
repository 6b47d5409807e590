//! Sinks: turn a notification into bytes for one receiver and hand them
//! over (stdout, a file, SMTP, an HTTP webhook).
//!
//! A sink only delivers: it never decides what to send or when to retry
//! (that is the delivery loop's job), and never writes state. Secrets are
//! read here, at send time, from the environment or a secret file, and never
//! appear in an error message, a log line or a record.

pub mod chart;
pub mod email;
pub mod render;
pub mod webhook;

use std::io::Write;
use std::path::PathBuf;

use super::outbox::Message;
use crate::config::model::{ConfigValue, Receiver, SecretRef};

/// Why a delivery failed (the message is retried, then marked failed).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "the secret for {what} is not available: {reason}; set it in the environment or the secret file named in the rules"
    )]
    Secret { what: String, reason: String },
    #[error("SMTP delivery failed: {0}")]
    Smtp(String),
    #[error("the email could not be built: {0}")]
    Email(String),
    #[error("the webhook answered HTTP {status}{detail}")]
    HttpStatus { status: u16, detail: String },
    #[error("the webhook could not be reached: {0}")]
    Http(String),
    #[error("could not write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a sink needs besides the message.
pub struct SendContext<'a> {
    /// The dataset's history objects (its metrics, for charts): the state
    /// folder, or the fleet's shared history.
    pub history: &'a dyn crate::store::backend::Backend,
    /// The receiver's name (for error messages).
    pub receiver: &'a str,
}

/// Read a secret from the environment or its file.
pub fn resolve_secret(s: &SecretRef, what: &str) -> Result<String, SinkError> {
    match s {
        SecretRef::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(SinkError::Secret {
                what: what.to_string(),
                reason: format!("environment variable `{var}` is not set"),
            }),
        },
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| SinkError::Secret {
                what: what.to_string(),
                reason: format!("cannot read {}: {}", path.display(), e.kind()),
            }),
    }
}

/// A config value, resolving it when it is a secret.
pub fn resolve_value(v: &ConfigValue, what: &str) -> Result<String, SinkError> {
    match v {
        ConfigValue::Literal(s) => Ok(s.clone()),
        ConfigValue::Secret(s) => resolve_secret(s, what),
    }
}

/// Deliver one (possibly digest) message to its receiver. `batch` holds the
/// messages that go out together (one, or a digest's items).
pub fn deliver(
    receiver: &Receiver,
    id: &str,
    batch: &[Message],
    ctx: &SendContext<'_>,
) -> Result<(), SinkError> {
    match receiver {
        Receiver::Stdout => {
            let mut out = std::io::stdout().lock();
            for m in batch {
                let _ = writeln!(out, "{}", render::line(&m.notice));
            }
            let _ = out.flush();
            Ok(())
        }
        Receiver::File { path } => {
            let mut buf = Vec::new();
            for m in batch {
                serde_json::to_writer(&mut buf, &render::generic(id, std::slice::from_ref(m)))
                    .expect("json serializes");
                buf.push(b'\n');
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(&buf).map(|_| f))
                .map_err(|source| SinkError::Io {
                    path: path.clone(),
                    source,
                })?;
            f.flush()
                .and_then(|_| f.sync_data())
                .map_err(|source| SinkError::Io {
                    path: path.clone(),
                    source,
                })
        }
        Receiver::Email(e) => email::send(e, id, batch, ctx),
        Receiver::Webhook(w) => webhook::send(w, id, batch, ctx),
    }
}
