//! Walking the `alerts:` section of a rules file: receivers, routes and the
//! notification lifecycle, every problem reported with its YAML path.
//!
//! Owns only the reading and checking of that section into
//! [`AlertRules`]; it does not resolve secrets (that happens when a message
//! is sent, so a rotated secret is picked up) and never reads one.

mod receivers;

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{
    Fields, Walker, index_path, is_literal, is_secret_key, key_path, list, resolve, suggest,
};
use crate::model::{
    AlertRoute, AlertRules, ConfigValue, EmailReceiver, Receiver, RetryRules, SecretRef, SmtpTls,
    WebhookFormat, WebhookReceiver,
};
use dqmon_core::compare::Severity;

const ALERTS_KEYS: &[&str] = &[
    "receivers",
    "routes",
    "default",
    "cooldown",
    "resolve_after_batches",
    "retry",
];
const ROUTE_KEYS: &[&str] = &["match", "to", "digest", "continue"];
const MATCH_KEYS: &[&str] = &["severity", "dataset", "check", "column", "trust_tag"];
const RETRY_KEYS: &[&str] = &["max_attempts", "initial_backoff", "max_backoff"];
const SEVERITIES: &[&str] = &["info", "warning", "critical"];
/// The check names a route may match: every check of `compare::Check`.
fn check_names() -> Vec<&'static str> {
    dqmon_core::compare::Check::ALL
        .iter()
        .map(|c| c.as_str())
        .collect()
}

/// Parse a duration such as `250ms`, `30s`, `15m`, `1h`, `2d`, or a whole number of seconds.
pub(crate) fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl Walker {
    /// The `alerts:` section: a map (receivers, routes, lifecycle), or the
    /// short form, a list of receivers that all get every alert.
    pub(super) fn alerts(&mut self, path: &str, v: &Value, base_dir: &Path) -> Option<AlertRules> {
        let before = self.problems.len();
        let mut out = AlertRules::default();
        match v {
            Value::Sequence(items) => {
                out.default_route.clear();
                for (i, item) in items.iter().enumerate() {
                    let p = index_path(path, i);
                    let name = format!("receiver-{i}");
                    if let Some(r) = self.receiver(&p, item, base_dir) {
                        out.receivers.insert(name.clone(), r);
                    }
                    out.default_route.push(name);
                }
            }
            Value::Mapping(m) => self.alerts_map(path, m, base_dir, &mut out),
            other => {
                self.wrong_type(
                    path,
                    "a map",
                    other,
                    "`alerts: { receivers: { oncall: { type: email, ... } }, default: [oncall] }`",
                );
                self.scan_secrets(path, v);
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    fn alerts_map(&mut self, path: &str, m: &Mapping, base_dir: &Path, out: &mut AlertRules) {
        let mut f = Fields::new(path, m, ALERTS_KEYS);
        if let Some((p, v)) = f.get("receivers")
            && let Some(rm) = self.map(&p, v, "`receivers: { oncall: { type: email, ... } }`")
        {
            for (k, item) in rm {
                let Some(name) = k.as_str() else {
                    self.problem(&p, "a receiver name must be text, e.g. `oncall:`.");
                    continue;
                };
                let rp = key_path(&p, name);
                if let Some(r) = self.receiver(&rp, item, base_dir) {
                    out.receivers.insert(name.to_string(), r);
                }
            }
        }
        let names: Vec<String> = out.receivers.keys().cloned().collect();
        let declared: Vec<String> = match f.peek("receivers").map(|(_, v)| v) {
            Some(Value::Mapping(rm)) => rm
                .keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .chain(["stdout".to_string()])
                .collect(),
            _ => names,
        };
        if let Some((p, v)) = f.get("routes")
            && let Some(items) = self.seq(
                &p,
                v,
                "`routes: [{ match: { severity: [critical] }, to: [oncall] }]`",
            )
        {
            for (i, item) in items.iter().enumerate() {
                if let Some(r) = self.route(&index_path(&p, i), item, &declared) {
                    out.routes.push(r);
                }
            }
        }
        if let Some((p, v)) = f.get("default") {
            out.default_route = self.receiver_list(&p, v, &declared).unwrap_or_default();
        }
        if let Some((p, v)) = f.get("cooldown")
            && let Some(ms) = self.duration(&p, v, "`cooldown: 1h`")
        {
            out.cooldown_secs = ms / 1000;
        }
        if let Some((p, v)) = f.get("resolve_after_batches")
            && let Some(n) = self.whole(&p, v, 1, 1_000_000, "`resolve_after_batches: 3`")
        {
            out.resolve_after_batches = n as u32;
        }
        if let Some((p, v)) = f.get("retry") {
            out.retry = self.retry(&p, v);
        }
        f.finish(self);
    }

    fn retry(&mut self, path: &str, v: &Value) -> RetryRules {
        let mut r = RetryRules::default();
        let Some(m) = self.map(
            path,
            v,
            "`retry: { max_attempts: 12, initial_backoff: 2s, max_backoff: 15m }`",
        ) else {
            return r;
        };
        let mut f = Fields::new(path, m, RETRY_KEYS);
        if let Some((p, v)) = f.get("max_attempts")
            && let Some(n) = self.whole(&p, v, 1, 10_000, "`max_attempts: 12`")
        {
            r.max_attempts = n as u32;
        }
        if let Some((p, v)) = f.get("initial_backoff")
            && let Some(ms) = self.duration(&p, v, "`initial_backoff: 2s`")
        {
            r.initial_backoff_ms = ms.max(1);
        }
        let mut max_path = None;
        if let Some((p, v)) = f.get("max_backoff")
            && let Some(ms) = self.duration(&p, v, "`max_backoff: 15m`")
        {
            r.max_backoff_ms = ms.max(1);
            max_path = Some(p);
        }
        if r.max_backoff_ms < r.initial_backoff_ms {
            let p = max_path.unwrap_or_else(|| key_path(path, "max_backoff"));
            self.problem(
                &p,
                format!(
                    "`max_backoff` ({} ms) must not be below `initial_backoff` ({} ms); raise `max_backoff` or lower `initial_backoff`.",
                    r.max_backoff_ms, r.initial_backoff_ms
                ),
            );
        }
        f.finish(self);
        r
    }

    /// A duration: `250ms`, `30s`, `15m`, `1h`, `2d`, or whole seconds.
    fn duration(&mut self, path: &str, v: &Value, example: &str) -> Option<u64> {
        match v {
            Value::Number(_) => self
                .whole(path, v, 0, u64::MAX / 1000, example)
                .map(|s| s * 1000),
            Value::String(s) => match parse_duration_ms(s) {
                Some(ms) => Some(ms),
                None => {
                    self.problem(
                        path,
                        format!("`{s}` is not a duration; write a whole number with a unit (`ms`, `s`, `m`, `h`, `d`), e.g. {example}."),
                    );
                    None
                }
            },
            other => {
                self.wrong_type(path, "a duration", other, example);
                None
            }
        }
    }

    fn receiver_list(&mut self, path: &str, v: &Value, declared: &[String]) -> Option<Vec<String>> {
        let items: Vec<(String, &Value)> = match v {
            Value::Sequence(s) => s
                .iter()
                .enumerate()
                .map(|(i, x)| (index_path(path, i), x))
                .collect(),
            other => vec![(path.to_string(), other)],
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (p, x) in items {
            match self.text(&p, x, "a receiver name such as `oncall`") {
                Some(name) if declared.contains(&name) => out.push(name),
                Some(name) => {
                    ok = false;
                    let mut message = format!(
                        "no receiver is named `{name}`; define it under `alerts.receivers` or use one of {}",
                        declared
                            .iter()
                            .map(|d| format!("`{d}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    match suggest(&name, declared) {
                        Some(s) => message.push_str(&format!(" (did you mean `{s}`?)")),
                        None => message.push('.'),
                    }
                    self.problem(&p, message);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn route(&mut self, path: &str, v: &Value, declared: &[String]) -> Option<AlertRoute> {
        let m = self.map(
            path,
            v,
            "`{ match: { severity: [critical] }, to: [oncall] }`",
        )?;
        let before = self.problems.len();
        let mut f = Fields::new(path, m, ROUTE_KEYS);
        let mut r = AlertRoute {
            severity: Vec::new(),
            dataset: Vec::new(),
            check: Vec::new(),
            column: Vec::new(),
            trust_tag: Vec::new(),
            to: Vec::new(),
            digest_secs: None,
            continue_matching: false,
        };
        if let Some((p, v)) = f.get("match")
            && let Some(mm) = self.map(
                &p,
                v,
                "`match: { severity: [critical], trust_tag: [scraped] }`",
            )
        {
            let mut mf = Fields::new(&p, mm, MATCH_KEYS);
            for key in MATCH_KEYS {
                let Some((kp, kv)) = mf.get(key) else {
                    continue;
                };
                let values = self.words(&kp, kv);
                match *key {
                    "severity" => {
                        for (vp, s) in values {
                            match s.as_str() {
                                "info" => r.severity.push(Severity::Info),
                                "warning" => r.severity.push(Severity::Warning),
                                "critical" => r.severity.push(Severity::Critical),
                                _ => self.problem(
                                    &vp,
                                    format!(
                                        "unknown severity `{s}`; write one of {}.",
                                        list(SEVERITIES)
                                    ),
                                ),
                            }
                        }
                    }
                    "check" => {
                        let names = check_names();
                        for (vp, s) in values {
                            if names.contains(&s.as_str()) {
                                r.check.push(s);
                            } else {
                                let mut message = format!("unknown check `{s}`");
                                match suggest(&s, &names) {
                                    Some(x) => message.push_str(&format!("; did you mean `{x}`?")),
                                    None => message
                                        .push_str(&format!("; write one of {}.", list(&names))),
                                }
                                self.problem(&vp, message);
                            }
                        }
                    }
                    "dataset" => r.dataset = values.into_iter().map(|(_, s)| s).collect(),
                    "column" => r.column = values.into_iter().map(|(_, s)| s).collect(),
                    _ => r.trust_tag = values.into_iter().map(|(_, s)| s).collect(),
                }
            }
            mf.finish(self);
        }
        if let Some((p, v)) = f.required(self, "to", "`to: [oncall]`") {
            r.to = self.receiver_list(&p, v, declared).unwrap_or_default();
        }
        if let Some((p, v)) = f.get("digest")
            && let Some(ms) = self.duration(&p, v, "`digest: 15m`")
        {
            if ms < 1000 {
                self.problem(
                    &p,
                    "a digest interval must be at least one second; write e.g. `digest: 15m`.",
                );
            } else {
                r.digest_secs = Some(ms / 1000);
            }
        }
        if let Some((p, v)) = f.get("continue") {
            r.continue_matching = self.boolean(&p, v, "continue").unwrap_or(false);
        }
        f.finish(self);
        (self.problems.len() == before).then_some(r)
    }

    /// One word or a list of words, each with its YAML path.
    fn words(&mut self, path: &str, v: &Value) -> Vec<(String, String)> {
        let items: Vec<(String, &Value)> = match v {
            Value::Sequence(s) => s
                .iter()
                .enumerate()
                .map(|(i, x)| (index_path(path, i), x))
                .collect(),
            other => vec![(path.to_string(), other)],
        };
        items
            .into_iter()
            .filter_map(|(p, x)| {
                self.text(&p, x, "a name, or a list such as `[a, b]`")
                    .map(|s| (p, s))
            })
            .collect()
    }
}
