//! Webhooks: an HTTP POST of JSON in one of three shapes: dqmon's generic
//! document, a Slack incoming-webhook message, or a PagerDuty Events API v2
//! event (trigger / resolve, with the alert fingerprint as `dedup_key`).
//!
//! Owns building the payload and one POST. Every request carries the
//! outbox message id as `Idempotency-Key` (and `X-Dqmon-Message-Id`), so a
//! retry is recognisable as the same notification. Custom header values and
//! secret URLs are read from the environment at send time and never logged.

use std::time::Duration;

use serde_json::{Value, json};

use super::{SendContext, SinkError, render, resolve_secret, resolve_value};
use crate::alert::lifecycle::NoticeKind;
use crate::alert::outbox::Message;
use crate::compare::Severity;
use crate::config::model::{WebhookFormat, WebhookReceiver};

/// The Slack message of a notification (or digest).
pub fn slack(batch: &[Message]) -> Value {
    let text = render::subject(batch);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": truncate(&text, 150) }
    })];
    for m in batch {
        let a = m.notice.head();
        let mut body = match m.notice.kind {
            NoticeKind::Trigger => a.message.clone(),
            NoticeKind::Summary => format!(
                "Fired {} more time(s) during the cooldown. Latest: {}",
                m.notice.suppressed, a.message
            ),
            NoticeKind::Resolve => {
                format!("Resolved after {} quiet batch(es).", m.notice.quiet_batches)
            }
        };
        body.push_str(&format!(
            "\n*dataset* `{}` · *tag* `{}` · *verdict* `{}` · *batch* `{}` · *baseline* `{}`",
            a.dataset,
            a.trust_tag,
            a.verdict.as_str(),
            &a.batch_id[..12.min(a.batch_id.len())],
            &a.baseline_id[..12.min(a.baseline_id.len())]
        ));
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(&body, 2900) }
        }));
    }
    json!({ "text": text, "blocks": blocks })
}

/// The PagerDuty Events v2 event of one message.
pub fn pagerduty(m: &Message, routing_key: &str) -> Value {
    let a = m.notice.head();
    if m.notice.kind == NoticeKind::Resolve {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": m.notice.fingerprint,
        });
    }
    let severity = match a.severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": m.notice.fingerprint,
        "payload": {
            "summary": truncate(&render::subject(std::slice::from_ref(m)), 1024),
            "source": format!("dqmon/{}", a.dataset),
            "severity": severity,
            "component": a.dataset,
            "group": a.check.as_str(),
            "class": a.verdict.as_str(),
            "custom_details": {
                "message": a.message,
                "column": a.column,
                "trust_tag": a.trust_tag,
                "baseline_value": a.baseline_value,
                "observed_value": a.observed_value,
                "effect_size": a.effect_size,
                "threshold": a.threshold,
                "p_value": a.p_value,
                "baseline_id": a.baseline_id,
                "batch_id": a.batch_id,
                "input_sha256": a.input_sha256,
                "alert_id": a.alert_id,
                "suppressed_repeats": m.notice.suppressed,
            }
        },
        "client": "dqmon",
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn post(
    r: &WebhookReceiver,
    url: &str,
    idempotency_key: &str,
    body: &Value,
    ctx: &SendContext<'_>,
) -> Result<(), SinkError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(r.timeout_secs)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", idempotency_key)
        .header("X-Dqmon-Message-Id", idempotency_key)
        .header(
            "User-Agent",
            &format!("dqmon/{}", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in &r.headers {
        let v = resolve_value(
            value,
            &format!("header `{name}` of receiver `{}`", ctx.receiver),
        )?;
        let v = if name.eq_ignore_ascii_case("authorization") && !v.contains(' ') {
            format!("Bearer {v}")
        } else {
            v
        };
        req = req.header(name.as_str(), &v);
    }
    let bytes = serde_json::to_vec(body).expect("json serializes");
    // Never put the URL in an error: it may hold a secret (Slack's do).
    let resp = req
        .send(&bytes[..])
        .map_err(|e| SinkError::Http(strip_url(&e.to_string(), url)))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(SinkError::HttpStatus {
            status,
            detail: String::new(),
        })
    }
}

fn strip_url(text: &str, url: &str) -> String {
    text.replace(url, "<webhook url>")
}

/// POST one message (or a digest) to the webhook.
pub fn send(
    r: &WebhookReceiver,
    id: &str,
    batch: &[Message],
    ctx: &SendContext<'_>,
) -> Result<(), SinkError> {
    let url = resolve_value(&r.url, &format!("the URL of receiver `{}`", ctx.receiver))?;
    match r.format {
        WebhookFormat::Generic => post(r, &url, id, &render::generic(id, batch), ctx),
        WebhookFormat::Slack => post(r, &url, id, &slack(batch), ctx),
        WebhookFormat::Pagerduty => {
            let key = match &r.routing_key {
                Some(k) => resolve_secret(
                    k,
                    &format!("the PagerDuty routing key of receiver `{}`", ctx.receiver),
                )?,
                None => {
                    return Err(SinkError::Secret {
                        what: format!("the PagerDuty routing key of receiver `{}`", ctx.receiver),
                        reason: "no `routing_key_env` or `routing_key_file` is set".into(),
                    });
                }
            };
            // One event per notification: PagerDuty takes one per request.
            for m in batch {
                post(r, &url, &m.id, &pagerduty(m, &key), ctx)?;
            }
            Ok(())
        }
    }
}
