//! Words for people: subject lines, plain-text and HTML bodies, terminal
//! lines and the generic JSON document of a notification.
//!
//! Pure formatting of what an alert already holds (which is free of secrets
//! and of raw `pii` values); it reads no state and sends nothing.

use serde_json::{Value, json};

use crate::alert::Alert;
use crate::alert::lifecycle::{Notice, NoticeKind};
use crate::alert::outbox::Message;
use crate::compare::Severity;
use crate::escape::escape;

fn severity_rank(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "1-critical",
        Severity::Warning => "2-warning",
        Severity::Info => "3-info",
    }
}

fn what(a: &Alert) -> String {
    let mut s = a.check.as_str().to_string();
    if let Some(c) = &a.column {
        s.push('/');
        s.push_str(c);
    }
    if let Some(v) = &a.value {
        s.push('=');
        s.push_str(v);
    }
    s
}

/// One line for a terminal.
pub fn line(n: &Notice) -> String {
    // each alert line escapes itself; summaries and resolves name trust
    // tags and values from the data, so they are escaped here
    match n.kind {
        NoticeKind::Trigger => n
            .alerts
            .iter()
            .map(Alert::line)
            .collect::<Vec<_>>()
            .join("\n"),
        NoticeKind::Summary => escape(&format!(
            "SUMMARY [{}] {} {} tag={}: fired {} more time(s) during the cooldown; latest batch={}",
            n.head().severity.as_str(),
            n.head().dataset,
            what(n.head()),
            n.head().trust_tag,
            n.suppressed,
            short(&n.head().batch_id)
        ))
        .into_owned(),
        NoticeKind::Resolve => escape(&format!(
            "RESOLVED [{}] {} {} tag={}: quiet for {} batch(es)",
            n.head().severity.as_str(),
            n.head().dataset,
            what(n.head()),
            n.head().trust_tag,
            n.quiet_batches
        ))
        .into_owned(),
    }
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// A subject that sorts well in an inbox: severity first (ranked so that
/// critical sorts on top), then dataset, check, column and trust tag.
pub fn subject(batch: &[Message]) -> String {
    if batch.len() > 1 {
        let worst = batch
            .iter()
            .map(|m| m.notice.head().severity)
            .max()
            .unwrap_or(Severity::Info);
        let dataset = &batch[0].notice.head().dataset;
        return format!(
            "[dqmon] {} {dataset} digest: {} notification(s)",
            severity_rank(worst),
            batch.len()
        );
    }
    let n = &batch[0].notice;
    let a = n.head();
    let kind = match n.kind {
        NoticeKind::Trigger => String::new(),
        NoticeKind::Summary => format!(" (summary: {} repeat(s) during cooldown)", n.suppressed),
        NoticeKind::Resolve => " RESOLVED".to_string(),
    };
    format!(
        "[dqmon] {} {} {} tag={} verdict={}{kind}",
        severity_rank(a.severity),
        a.dataset,
        what(a),
        a.trust_tag,
        a.verdict.as_str()
    )
}

fn pct_or_num(x: f64) -> String {
    if (0.0..=1.0).contains(&x) && x != 0.0 && x != 1.0 {
        format!("{:.2}%", x * 100.0)
    } else {
        format!("{x}")
    }
}

/// Label/value pairs that a person triages from.
fn facts(a: &Alert) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("What moved", what(a)),
        ("Trust tag", a.trust_tag.clone()),
        ("Verdict", a.verdict.as_str().to_string()),
        ("Severity", a.severity.as_str().to_string()),
        ("Baseline value", pct_or_num(a.baseline_value)),
        ("Observed value", pct_or_num(a.observed_value)),
        (
            "Effect size",
            format!(
                "{} (threshold {})",
                pct_or_num(a.effect_size),
                pct_or_num(a.threshold)
            ),
        ),
        (
            "Test",
            match (a.statistic, a.p_value) {
                (Some(s), Some(p)) => format!(
                    "{} = {s:.4}, {}",
                    a.statistic_name,
                    crate::compare::stats::fmt_p(p)
                ),
                _ => "none (batch-level finding)".to_string(),
            },
        ),
        ("Baseline", a.baseline_id.clone()),
        ("Batch", a.batch_id.clone()),
        ("Source", a.source.clone()),
        ("Input SHA-256", a.input_sha256.clone()),
        (
            "Batch time",
            a.batch_time.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Alert id", a.alert_id.clone()),
        ("Fingerprint", a.fingerprint.clone()),
    ];
    if !a.attribution.is_empty() {
        let mut parts: Vec<(&String, &f64)> = a.attribution.iter().collect();
        parts.sort_by(|x, y| y.1.total_cmp(x.1).then(x.0.cmp(y.0)));
        v.push((
            "Change by tag",
            parts
                .iter()
                .map(|(t, s)| format!("{t} {:.0}%", **s * 100.0))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    v
}

fn headline(n: &Notice) -> String {
    match n.kind {
        NoticeKind::Trigger => n.head().message.clone(),
        NoticeKind::Summary => format!(
            "This alert fired {} more time(s) during its cooldown; the latest occurrence is below.",
            n.suppressed
        ),
        NoticeKind::Resolve => format!(
            "Resolved: the metric stayed within its band for {} batch(es) in a row.",
            n.quiet_batches
        ),
    }
}

/// The plain-text body.
pub fn plain(batch: &[Message]) -> String {
    let mut s = String::new();
    for m in batch {
        let n = &m.notice;
        s.push_str(&format!(
            "{}\n\n{}\n\n",
            subject(std::slice::from_ref(m)),
            headline(n)
        ));
        for a in &n.alerts {
            if n.alerts.len() > 1 {
                s.push_str(&format!("- {}\n", a.message));
            }
            for (k, v) in facts(a) {
                s.push_str(&format!("{k:>15}: {v}\n"));
            }
            s.push('\n');
        }
    }
    s.push_str("-- \ndqmon: the chart (HTML part) shows this metric over recent batches with the baseline's normal band.\n");
    s
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The HTML body; `chart_cid` is the Content-ID of the inline chart, if any.
pub fn html(batch: &[Message], chart_cid: Option<&str>) -> String {
    let mut s =
        String::from("<!DOCTYPE html><html><body style=\"font-family:sans-serif;font-size:14px\">");
    for (i, m) in batch.iter().enumerate() {
        let n = &m.notice;
        s.push_str(&format!(
            "<h2 style=\"font-size:16px\">{}</h2><p>{}</p>",
            esc(&subject(std::slice::from_ref(m))),
            esc(&headline(n))
        ));
        if i == 0
            && let Some(cid) = chart_cid
        {
            s.push_str(&format!(
                "<p><img src=\"cid:{}\" alt=\"{} over recent batches; the shaded band is the baseline's normal range\" width=\"{}\" height=\"{}\"></p>",
                esc(cid),
                esc(&what(n.head())),
                super::chart::WIDTH,
                super::chart::HEIGHT
            ));
        }
        for a in &n.alerts {
            s.push_str("<table style=\"border-collapse:collapse\">");
            for (k, v) in facts(a) {
                s.push_str(&format!(
                    "<tr><th style=\"text-align:right;padding:2px 8px;color:#555\">{}</th><td style=\"padding:2px 8px;font-family:monospace\">{}</td></tr>",
                    esc(k),
                    esc(&v)
                ));
            }
            s.push_str("</table><br>");
        }
    }
    s.push_str("<p style=\"color:#777\">Sent by dqmon. The chart shows the metric over recent batches (dots) with the baseline's normal band (shaded).</p></body></html>");
    s
}

fn alert_json(a: &Alert) -> Value {
    serde_json::to_value(a).expect("alerts serialize")
}

/// The generic JSON document (webhook `generic`, `file` receiver).
pub fn generic(id: &str, batch: &[Message]) -> Value {
    let items: Vec<Value> = batch
        .iter()
        .map(|m| {
            json!({
                "kind": m.notice.kind.as_str(),
                "fingerprint": m.notice.fingerprint,
                "summary": subject(std::slice::from_ref(m)),
                "suppressed": m.notice.suppressed,
                "quiet_batches": m.notice.quiet_batches,
                "alerts": m.notice.alerts.iter().map(alert_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    if batch.len() == 1 {
        let mut v = items.into_iter().next().expect("one item");
        v["id"] = json!(id);
        v["source"] = json!("dqmon");
        v
    } else {
        json!({ "id": id, "source": "dqmon", "kind": "digest", "notifications": items })
    }
}
