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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::BatchContext;
    use crate::compare::{Check, Finding, Severity, Verdict};
    use crate::config::model::AlertRoute;

    fn route(to: &[&str], f: impl FnOnce(&mut AlertRoute)) -> AlertRoute {
        let mut r = AlertRoute {
            severity: Vec::new(),
            dataset: Vec::new(),
            check: Vec::new(),
            column: Vec::new(),
            trust_tag: Vec::new(),
            to: to.iter().map(|s| s.to_string()).collect(),
            digest_secs: None,
            continue_matching: false,
        };
        f(&mut r);
        r
    }

    fn alert(check: Check, tag: &str, severity: Severity) -> Alert {
        let ctx = BatchContext {
            dataset: "payments".into(),
            batch_id: "b".into(),
            source: String::new(),
            input_sha256: String::new(),
            baseline_id: String::new(),
            rules_hash: String::new(),
            batch_time: None,
            rows: 0,
        };
        let mut f = Finding::batch_level(check, Verdict::Drift, severity, String::new());
        f.trust_tag = tag.into();
        f.column = Some("amount".into());
        Alert::new(&ctx, &f)
    }

    fn names(t: Vec<Target>) -> Vec<String> {
        t.into_iter().map(|t| t.receiver).collect()
    }

    #[test]
    fn first_match_wins_continue_goes_on_default_catches_the_rest() {
        let rules = AlertRules {
            routes: vec![
                route(&["pager", "mail"], |r| {
                    r.severity = vec![Severity::Critical];
                    r.trust_tag = vec!["scraped".into()];
                    r.continue_matching = true;
                }),
                route(&["chat", "mail"], |r| {
                    r.check = vec!["missing_rate".into()];
                    r.column = vec!["amount".into()];
                    r.dataset = vec!["payments".into()];
                    r.digest_secs = Some(900);
                }),
                route(&["never"], |r| r.check = vec!["missing_rate".into()]),
            ],
            default_route: vec!["stdout".into()],
            ..AlertRules::default()
        };
        let t = targets(
            &rules,
            &alert(Check::MissingRate, "scraped", Severity::Critical),
        );
        assert_eq!(names(t.clone()), vec!["pager", "mail", "chat"]);
        assert_eq!(t[2].digest_secs, Some(900));
        assert_eq!(
            t[1].digest_secs, None,
            "the first route naming a receiver decides"
        );
        let t = targets(
            &rules,
            &alert(Check::MissingRate, "vendor", Severity::Warning),
        );
        assert_eq!(names(t), vec!["chat", "mail"]);
        let t = targets(
            &rules,
            &alert(Check::RowCount, "vendor", Severity::Critical),
        );
        assert_eq!(names(t), vec!["stdout"]);
    }
}
