//! The notification lifecycle of each fingerprint: trigger, cooldown with a
//! count of repeats, one summary when the cooldown ends, and resolve after N
//! quiet batches, sent to the receivers that got the trigger.
//!
//! Pure state machine: it is given the batches (in commit order) and the
//! time, and returns the notifications to send. It does no I/O and reads no
//! clock itself (the caller passes `now_ms`), so tests drive it with a
//! manual clock. It governs notifications only, never the alerts file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Alert;
use super::route::{Target, targets};
use crate::config::model::AlertRules;

/// How many recent batch ids are remembered (for the email chart).
pub const RECENT_BATCHES: usize = 30;

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The fingerprint fired (first time, or again after its cooldown).
    Trigger,
    /// The cooldown ended and the fingerprint fired again meanwhile.
    Summary,
    /// The fingerprint stayed quiet for `resolve_after_batches` batches.
    Resolve,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Trigger => "trigger",
            NoticeKind::Summary => "summary",
            NoticeKind::Resolve => "resolve",
        }
    }
}

/// One notification about one fingerprint, independent of the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub fingerprint: String,
    /// Trigger: the alerts of that batch for the fingerprint. Summary and
    /// resolve: the latest alert of the fingerprint.
    pub alerts: Vec<Alert>,
    /// Repeats that were counted, not sent (summary, resolve).
    pub suppressed: u64,
    /// Quiet batches before a resolve.
    pub quiet_batches: u32,
    /// The batches that the dataset had most recently (oldest first), for charts.
    pub recent_batches: Vec<String>,
    /// Key of the episode (alert id of the trigger that opened it): stable across retries.
    pub episode: String,
}

impl Notice {
    /// The alert a person reads first.
    pub fn head(&self) -> &Alert {
        &self.alerts[0]
    }

    /// A stable id of this notice for one receiver.
    pub fn message_id(&self, receiver: &str, extra: &str) -> String {
        let first = self.alerts.first().map_or("", |a| a.alert_id.as_str());
        let key = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{first}\u{1f}{receiver}\u{1f}{extra}",
            self.kind.as_str(),
            self.fingerprint,
            self.episode
        );
        hex::encode(&Sha256::digest(key.as_bytes())[..16])
    }
}

/// A notice for one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub notice: Notice,
    pub target: Target,
    /// Distinguishes summaries of the same episode.
    pub id_extra: String,
}

/// The notices of an alert that belongs to no batch (a refused baseline:
/// the dataset stops, so no later batch could summarize or resolve it): a
/// trigger to every receiver its route names, outside any episode. Its
/// message ids derive from the alert id, so the same refusal seen again
/// after a restart is not sent twice. It is never held for a digest.
pub fn unbatched(alert: &Alert, rules: &AlertRules) -> Vec<Planned> {
    let notice = Notice {
        kind: NoticeKind::Trigger,
        fingerprint: alert.fingerprint.clone(),
        alerts: vec![alert.clone()],
        suppressed: 0,
        quiet_batches: 0,
        recent_batches: Vec::new(),
        episode: alert.alert_id.clone(),
    };
    targets(rules, alert)
        .into_iter()
        .map(|target| Planned {
            notice: notice.clone(),
            target: Target {
                digest_secs: None,
                ..target
            },
            id_extra: String::new(),
        })
        .collect()
}

/// One open fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub episode: String,
    pub last_alert: Alert,
    /// Receivers that got the trigger: summaries and the resolve go there.
    pub receivers: BTreeSet<String>,
    pub quiet_batches: u32,
    pub cooldown_until_ms: i64,
    pub suppressed: u64,
    /// How many summaries went out in this episode.
    pub summaries: u64,
}

/// The lifecycle state of a dataset (kept in the outbox folder).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The commit sequence number of the last batch taken in.
    pub ingested_seq: Option<u64>,
    pub open: BTreeMap<String, Episode>,
    pub recent_batches: VecDeque<String>,
}

impl Lifecycle {
    /// Take in one committed batch (with its alerts, possibly none).
    pub fn ingest(
        &mut self,
        seq: u64,
        batch_id: &str,
        alerts: &[Alert],
        rules: &AlertRules,
        now_ms: i64,
    ) -> Vec<Planned> {
        let mut out = self.tick(rules, now_ms);
        if self.ingested_seq.is_some_and(|s| seq <= s) {
            return out;
        }
        self.ingested_seq = Some(seq);
        self.recent_batches.push_back(batch_id.to_string());
        while self.recent_batches.len() > RECENT_BATCHES {
            self.recent_batches.pop_front();
        }
        let recent: Vec<String> = self.recent_batches.iter().cloned().collect();
        let mut by_fp: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
        for a in alerts {
            by_fp.entry(a.fingerprint.as_str()).or_default().push(a);
        }
        let cooldown_ms = (rules.cooldown_secs as i64).saturating_mul(1000);
        for (fp, group) in &by_fp {
            let last = (*group.last().expect("non-empty group")).clone();
            match self.open.get_mut(*fp) {
                Some(ep) if now_ms < ep.cooldown_until_ms => {
                    ep.suppressed += group.len() as u64;
                    ep.quiet_batches = 0;
                    ep.last_alert = last;
                }
                existing => {
                    let receivers_before = existing.map(|e| e.receivers.clone());
                    let notice = Notice {
                        kind: NoticeKind::Trigger,
                        fingerprint: fp.to_string(),
                        alerts: group.iter().map(|a| (*a).clone()).collect(),
                        suppressed: 0,
                        quiet_batches: 0,
                        recent_batches: recent.clone(),
                        episode: group[0].alert_id.clone(),
                    };
                    let mut receivers = receivers_before.unwrap_or_default();
                    for t in targets(rules, group[0]) {
                        receivers.insert(t.receiver.clone());
                        out.push(Planned {
                            notice: notice.clone(),
                            target: t,
                            id_extra: String::new(),
                        });
                    }
                    let episode = match self.open.get(*fp) {
                        Some(e) => e.episode.clone(),
                        None => group[0].alert_id.clone(),
                    };
                    self.open.insert(
                        fp.to_string(),
                        Episode {
                            episode,
                            last_alert: last,
                            receivers,
                            quiet_batches: 0,
                            cooldown_until_ms: now_ms.saturating_add(cooldown_ms),
                            suppressed: 0,
                            summaries: 0,
                        },
                    );
                }
            }
        }
        let resolve_after = rules.resolve_after_batches;
        let quiet: Vec<String> = self
            .open
            .keys()
            .filter(|fp| !by_fp.contains_key(fp.as_str()))
            .cloned()
            .collect();
        for fp in quiet {
            let ep = self.open.get_mut(&fp).expect("open episode");
            ep.quiet_batches += 1;
            if ep.quiet_batches >= resolve_after {
                let ep = self.open.remove(&fp).expect("open episode");
                let notice = Notice {
                    kind: NoticeKind::Resolve,
                    fingerprint: fp.clone(),
                    alerts: vec![ep.last_alert.clone()],
                    suppressed: ep.suppressed,
                    quiet_batches: ep.quiet_batches,
                    recent_batches: recent.clone(),
                    episode: ep.episode.clone(),
                };
                for r in &ep.receivers {
                    out.push(Planned {
                        notice: notice.clone(),
                        target: Target {
                            receiver: r.clone(),
                            digest_secs: None,
                        },
                        id_extra: String::new(),
                    });
                }
            }
        }
        out
    }

    /// Summaries of cooldowns that ended with repeats counted.
    pub fn tick(&mut self, rules: &AlertRules, now_ms: i64) -> Vec<Planned> {
        let mut out = Vec::new();
        let cooldown_ms = (rules.cooldown_secs as i64).saturating_mul(1000);
        let recent: Vec<String> = self.recent_batches.iter().cloned().collect();
        for (fp, ep) in self.open.iter_mut() {
            if now_ms < ep.cooldown_until_ms || ep.suppressed == 0 {
                continue;
            }
            ep.summaries += 1;
            let notice = Notice {
                kind: NoticeKind::Summary,
                fingerprint: fp.clone(),
                alerts: vec![ep.last_alert.clone()],
                suppressed: ep.suppressed,
                quiet_batches: ep.quiet_batches,
                recent_batches: recent.clone(),
                episode: ep.episode.clone(),
            };
            for r in &ep.receivers {
                out.push(Planned {
                    notice: notice.clone(),
                    target: Target {
                        receiver: r.clone(),
                        digest_secs: None,
                    },
                    id_extra: ep.summaries.to_string(),
                });
            }
            ep.suppressed = 0;
            // Repeats after a summary are counted into the next one.
            ep.cooldown_until_ms = now_ms.saturating_add(cooldown_ms);
        }
        out
    }

    /// When the next summary may be due (for the delivery loop's sleep).
    pub fn next_due_ms(&self) -> Option<i64> {
        self.open
            .values()
            .filter(|e| e.suppressed > 0)
            .map(|e| e.cooldown_until_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{BatchContext, clock::Clock, clock::ManualClock};
    use crate::compare::{Check, Finding, Severity, Verdict};

    fn alert(batch: &str, check: Check, tag: &str) -> Alert {
        let ctx = BatchContext {
            dataset: "d".into(),
            batch_id: batch.into(),
            source: format!("{batch}.parquet"),
            input_sha256: "ab".repeat(32),
            baseline_id: "cd".repeat(32),
            rules_hash: "ef".repeat(32),
            batch_time: None,
            rows: 1000,
        };
        let mut f = Finding::batch_level(check, Verdict::Drift, Severity::Critical, "moved".into());
        f.trust_tag = tag.into();
        f.column = Some("label".into());
        Alert::new(&ctx, &f)
    }

    fn kinds(p: &[Planned]) -> Vec<(NoticeKind, String)> {
        p.iter()
            .map(|p| (p.notice.kind, p.target.receiver.clone()))
            .collect()
    }

    #[test]
    fn cooldown_counts_repeats_then_one_summary_then_resolve() {
        let rules = AlertRules {
            cooldown_secs: 3600,
            resolve_after_batches: 2,
            ..AlertRules::default()
        };
        let clock = ManualClock::new(1_000_000);
        let mut lc = Lifecycle::default();
        let a1 = alert("b1", Check::LabelRate, "scraped");
        let out = lc.ingest(0, "b1", std::slice::from_ref(&a1), &rules, clock.now_ms());
        assert_eq!(
            kinds(&out),
            vec![(NoticeKind::Trigger, "stdout".to_string())]
        );
        // Same fingerprint twice within the hour: counted, not sent.
        clock.advance_ms(10 * 60 * 1000);
        assert!(
            lc.ingest(
                1,
                "b2",
                &[alert("b2", Check::LabelRate, "scraped")],
                &rules,
                clock.now_ms()
            )
            .is_empty()
        );
        clock.advance_ms(10 * 60 * 1000);
        assert!(
            lc.ingest(
                2,
                "b3",
                &[alert("b3", Check::LabelRate, "scraped")],
                &rules,
                clock.now_ms()
            )
            .is_empty()
        );
        assert!(
            lc.tick(&rules, clock.now_ms()).is_empty(),
            "cooldown not over yet"
        );
        // The hour ends: one summary with the count, once.
        clock.advance_ms(41 * 60 * 1000);
        let out = lc.tick(&rules, clock.now_ms());
        assert_eq!(
            kinds(&out),
            vec![(NoticeKind::Summary, "stdout".to_string())]
        );
        assert_eq!(out[0].notice.suppressed, 2);
        assert_eq!(out[0].notice.alerts[0].batch_id, "b3");
        assert!(lc.tick(&rules, clock.now_ms() + 10).is_empty());
        // Two quiet batches resolve it, to the receiver of the trigger.
        assert!(lc.ingest(3, "b4", &[], &rules, clock.now_ms()).is_empty());
        let out = lc.ingest(4, "b5", &[], &rules, clock.now_ms());
        assert_eq!(
            kinds(&out),
            vec![(NoticeKind::Resolve, "stdout".to_string())]
        );
        assert_eq!(out[0].notice.quiet_batches, 2);
        assert_eq!(out[0].notice.episode, a1.alert_id);
        assert!(lc.open.is_empty());
        // Firing again later opens a new episode with a new trigger.
        let out = lc.ingest(
            5,
            "b6",
            &[alert("b6", Check::LabelRate, "scraped")],
            &rules,
            clock.now_ms(),
        );
        assert_eq!(
            kinds(&out),
            vec![(NoticeKind::Trigger, "stdout".to_string())]
        );
    }

    #[test]
    fn a_batch_seen_twice_is_taken_in_once() {
        let rules = AlertRules::default();
        let mut lc = Lifecycle::default();
        let a = alert("b1", Check::RowCount, "__all__");
        assert_eq!(
            lc.ingest(7, "b1", std::slice::from_ref(&a), &rules, 0)
                .len(),
            1
        );
        assert!(lc.ingest(7, "b1", &[a], &rules, 0).is_empty());
        assert_eq!(lc.ingested_seq, Some(7));
    }

    #[test]
    fn a_firing_batch_resets_the_quiet_count() {
        let rules = AlertRules {
            cooldown_secs: 0,
            resolve_after_batches: 2,
            ..AlertRules::default()
        };
        let mut lc = Lifecycle::default();
        lc.ingest(
            0,
            "b0",
            &[alert("b0", Check::TagShare, "vendor")],
            &rules,
            0,
        );
        assert!(lc.ingest(1, "b1", &[], &rules, 0).is_empty());
        // Fires again (cooldown 0: a trigger again), then needs 2 more quiet batches.
        let out = lc.ingest(
            2,
            "b2",
            &[alert("b2", Check::TagShare, "vendor")],
            &rules,
            0,
        );
        assert_eq!(out.len(), 1);
        assert!(lc.ingest(3, "b3", &[], &rules, 0).is_empty());
        assert_eq!(
            lc.ingest(4, "b4", &[], &rules, 0)[0].notice.kind,
            NoticeKind::Resolve
        );
    }
}
