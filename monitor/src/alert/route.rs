//! Routing: which receivers an alert goes to, from the `alerts.routes` of
//! the rules. Pure: no I/O, no clock.

use crate::alert::Alert;
use crate::config::model::AlertRules;

/// One receiver an alert goes to, and the digest interval of the route that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub receiver: String,
    pub digest_secs: Option<u64>,
}

/// The receivers of an alert: routes in order, the first match wins unless
/// it says `continue`; the default route when none matched. Each receiver
/// appears once (the first route that named it decides its digest mode).
pub fn targets(rules: &AlertRules, a: &Alert) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let mut matched = false;
    let push = |out: &mut Vec<Target>, name: &str, digest_secs| {
        if !out.iter().any(|t| t.receiver == name) {
            out.push(Target {
                receiver: name.to_string(),
                digest_secs,
            });
        }
    };
    for r in &rules.routes {
        let column = a.column.as_deref().unwrap_or("");
        let ok = (r.severity.is_empty() || r.severity.contains(&a.severity))
            && (r.dataset.is_empty() || r.dataset.iter().any(|d| d == &a.dataset))
            && (r.check.is_empty() || r.check.iter().any(|c| c == a.check.as_str()))
            && (r.column.is_empty() || r.column.iter().any(|c| c == column))
            && (r.trust_tag.is_empty() || r.trust_tag.iter().any(|t| t == &a.trust_tag));
        if ok {
            matched = true;
            for name in &r.to {
                push(&mut out, name, r.digest_secs);
            }
            if !r.continue_matching {
                break;
            }
        }
    }
    if !matched {
        for name in &rules.default_route {
            push(&mut out, name, None);
        }
    }
    out
}
