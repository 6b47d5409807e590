//! `dqmon outbox list` and `dqmon outbox retry`: the way back for
//! notifications that exhausted their retries (`outbox/failed/`).
//!
//! `list` only reads (with a shared history, also the fleet's pending
//! messages, from its shared state; failed and sent messages stay in the
//! outbox of the replica that tried them). `retry` sends failed messages back to pending with
//! their attempts at zero: directly when no daemon writes the dataset's
//! state folder (the next `dqmon run` delivers them), or, while one does,
//! by leaving it a request (`outbox/retry/<id>`) that its delivery thread
//! takes in within a second, so the daemon stays the only writer of its
//! messages.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::alert::outbox::{Message, MessageStatus, Outbox};
use crate::config::{self, model::Rules};
use crate::escape::escape;
use crate::store::lock::{LockError, WriterLock};

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List the notifications not delivered yet (pending) and those that
    /// exhausted their retries (failed); `--all` adds the sent ones.
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Sent messages too.
        #[arg(long)]
        all: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send failed notifications again (their attempts start over): the
    /// ids `list` shows, or every failed one with `--all`.
    Retry {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Every failed message of the dataset(s).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Message ids (as `dqmon outbox list` prints them).
        ids: Vec<String>,
    },
}

pub fn run(action: OutboxCommand) -> anyhow::Result<ExitCode> {
    match action {
        OutboxCommand::List {
            config,
            dataset,
            all,
            json,
        } => {
            let statuses: &[MessageStatus] = if all {
                &[
                    MessageStatus::Pending,
                    MessageStatus::Failed,
                    MessageStatus::Sent,
                ]
            } else {
                &[MessageStatus::Pending, MessageStatus::Failed]
            };
            let mut out = std::io::stdout().lock();
            let mut n = 0;
            for r in datasets(&config, dataset.as_deref())? {
                // with a shared history, the fleet's pending messages are in
                // its shared state, whichever replica will deliver them
                if r.shared_history.is_some() {
                    let objects = crate::app::history_objects(&r, &r.state_dir)?;
                    let (holder, pending) = crate::alert::fleet::pending_on(&*objects)?;
                    for m in pending {
                        n += 1;
                        if json {
                            let mut v = summary(&r.dataset, &m);
                            v["fleet_holder"] = serde_json::json!(holder);
                            serde_json::to_writer(&mut out, &v)?;
                            writeln!(out)?;
                        } else {
                            writeln!(
                                out,
                                "{}  (fleet; replica {} delivers)",
                                line(&r.dataset, &m),
                                escape(&holder)
                            )?;
                        }
                    }
                }
                let Some(outbox) = existing(&r) else { continue };
                for &status in statuses {
                    for m in outbox.messages(status)? {
                        n += 1;
                        if json {
                            serde_json::to_writer(&mut out, &summary(&r.dataset, &m))?;
                            writeln!(out)?;
                        } else {
                            writeln!(out, "{}", line(&r.dataset, &m))?;
                        }
                    }
                }
            }
            if n == 0 && !json {
                writeln!(out, "no notification waiting or failed")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        OutboxCommand::Retry {
            config,
            dataset,
            all,
            ids,
        } => {
            if !all && ids.is_empty() {
                bail!(
                    "name the message ids to retry (as `dqmon outbox list` prints them), or give --all"
                );
            }
            for id in &ids {
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                    bail!(
                        "`{}` is not a message id: ids are hexadecimal, as `dqmon outbox list` prints them",
                        escape(id)
                    );
                }
            }
            let mut unknown: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
            let now = chrono::Utc::now().timestamp_millis();
            for r in datasets(&config, dataset.as_deref())? {
                let Some(outbox) = existing(&r) else { continue };
                let failed: Vec<String> = outbox
                    .messages(MessageStatus::Failed)?
                    .into_iter()
                    .map(|m| m.id)
                    .filter(|id| all || unknown.contains(id.as_str()))
                    .collect();
                if failed.is_empty() {
                    continue;
                }
                for id in &failed {
                    unknown.remove(id.as_str());
                }
                match WriterLock::acquire(&r.state_dir) {
                    Ok(_lock) => {
                        for id in &failed {
                            outbox.retry(id, now)?;
                        }
                        println!(
                            "{}: {} message(s) back to pending; the next `dqmon run` delivers them",
                            r.dataset,
                            failed.len()
                        );
                    }
                    Err(LockError::Held { pid, .. }) => {
                        for id in &failed {
                            outbox.request_retry(id)?;
                        }
                        println!(
                            "{}: asked the running daemon (pid {pid}) to send {} message(s) again",
                            r.dataset,
                            failed.len()
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !unknown.is_empty() {
                bail!(
                    "no failed message with id {}; `dqmon outbox list` shows the ids",
                    unknown.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn datasets(config: &std::path::Path, dataset: Option<&str>) -> anyhow::Result<Vec<Rules>> {
    let cfg = config::load(config)?;
    Ok(match dataset {
        Some(name) => vec![
            cfg.dataset(name)
                .with_context(|| format!("dataset `{name}` is not in {}", config.display()))?
                .clone(),
        ],
        None => cfg.datasets,
    })
}

/// The dataset's outbox, when it has one (never created here).
fn existing(r: &Rules) -> Option<Outbox> {
    let root = r.state_dir.join("outbox");
    root.join("pending").is_dir().then(|| Outbox::at(root))
}

fn line(dataset: &str, m: &Message) -> String {
    let head = m.notice.alerts.first();
    format!(
        "{:<8} {}  {}  to {}  {} {}  attempts {}{}",
        m.status.dir(),
        m.id,
        dataset,
        escape(&m.receiver),
        m.notice.kind.as_str(),
        head.map_or("", |a| a.check.as_str()),
        m.attempts,
        m.last_error
            .as_deref()
            .map(|e| format!("  last error: {}", escape(e)))
            .unwrap_or_default()
    )
}

fn summary(dataset: &str, m: &Message) -> serde_json::Value {
    let head = m.notice.alerts.first();
    serde_json::json!({
        "dataset": dataset,
        "id": m.id,
        "status": m.status,
        "receiver": m.receiver,
        "kind": m.notice.kind.as_str(),
        "check": head.map(|a| a.check.as_str()),
        "alert_id": head.map(|a| a.alert_id.as_str()),
        "attempts": m.attempts,
        "last_error": m.last_error,
    })
}
