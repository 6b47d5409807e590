//! What a start repairs after a crash between a batch's commit (its
//! manifest) and the records that follow it: the alerts file and the
//! audit log. Both take the opening writer's own batches only.

use std::collections::HashSet;
use std::fs;

use super::error::io;
use super::{BatchSummary, History, HistoryError, manifest_audit_payload, read};
use crate::audit::{AuditKind, AuditLog};
use dqmon_core::alert::Alert;

impl History {
    /// Append the audit entries of committed batches that a crash kept out
    /// of the audit log, in commit order. A shared chain's head names the
    /// last batch it logged: the writer's batches after that one are the
    /// missing ones (it commits one at a time, in order), found without
    /// reading the chain.
    pub(super) fn repair_audit(&self, batches: &[BatchSummary]) -> Result<(), HistoryError> {
        let shared_last = self.audit.shared().map(|c| c.head().last_batch);
        let after_last = match &shared_last {
            Some(Some(last)) => batches.iter().position(|b| &b.batch_id == last),
            _ => None,
        };
        let missing: Vec<&BatchSummary> = match after_last {
            Some(i) => batches[i + 1..].iter().collect(),
            None => {
                let logged = match shared_last {
                    // a shared chain without a batch yet: the batches a
                    // replica committed before its chain existed are in
                    // its own `audit.jsonl`, if it kept one
                    Some(None) if self.root.join(crate::audit::AUDIT_FILE).exists() => {
                        let local = AuditLog::open(&self.root)?.keys(AuditKind::BatchCommitted)?;
                        // the chain says where the local log ends, so that
                        // verify asks it only for the batches after
                        let after = batches
                            .iter()
                            .filter(|b| local.contains(&b.batch_id))
                            .map(|b| b.seq)
                            .max();
                        if let Some(after) = after {
                            self.audit.append(
                                AuditKind::ChainStarted,
                                None,
                                serde_json::json!({
                                    "after_history_seq": after,
                                    "logged_in": crate::audit::AUDIT_FILE,
                                }),
                            )?;
                        }
                        local
                    }
                    Some(None) => HashSet::new(),
                    // a local log; or a chain whose last batch is not one
                    // of this writer's batches read (read the chain)
                    _ => self.audit.keys(AuditKind::BatchCommitted)?,
                };
                batches
                    .iter()
                    .filter(|b| !logged.contains(&b.batch_id))
                    .collect()
            }
        };
        for b in missing {
            let (bytes, m) = read::committed_manifest(self.objects.as_ref(), &b.batch_id)?;
            tracing::info!(batch_id = %m.batch_id, "recording a committed batch missing from the audit log");
            self.audit.append(
                AuditKind::BatchCommitted,
                Some(&m.batch_id),
                manifest_audit_payload(&m, &bytes),
            )?;
        }
        Ok(())
    }

    /// Cut a torn last line and append alerts of committed batches that are
    /// missing from the alerts file; returns those alerts.
    pub(super) fn repair_alerts(
        &self,
        batches: &[BatchSummary],
    ) -> Result<Vec<Alert>, HistoryError> {
        let path = self.alerts_path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if complete < text.len() {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(complete as u64).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
        }
        let mut present = HashSet::new();
        for line in text[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
                && let Some(id) = v.get("alert_id").and_then(|v| v.as_str())
            {
                present.insert(id.to_string());
            }
        }
        let missing: Vec<Alert> = batches
            .iter()
            .flat_map(|m| m.alerts.iter())
            .filter(|a| !present.contains(&a.alert_id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                alerts = missing.len(),
                "appended alerts of committed batches that a crash had left out of alerts.jsonl"
            );
        }
        self.append_alerts(&missing)?;
        Ok(missing)
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
