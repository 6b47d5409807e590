//! Recording a refused baseline: when the daemon will not use the approved
//! baseline (its bytes do not match its id, its approval is unsigned or
//! wrongly signed, or its approver built it), the refusal goes into the
//! audit log and becomes a `baseline_refused` alert in `alerts.jsonl` (and on
//! stdout), so that a person sees it and not only the process's exit.
//!
//! It owns only that recording; the decision is [`crate::security`]'s. It
//! must not record anything for errors that are not refusals (no approved
//! baseline yet, an unreadable key file): those are setup problems that the
//! error message explains.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::audit::{AuditError, AuditKind};
use crate::alert::{Alert, BatchContext};
use crate::compare::{Check, Finding, Severity, Verdict};
use crate::config::model::Rules;
use crate::security::ApprovedBaselineError;
use crate::store::baselines::BaselineStoreError;

/// Record a refusal (audit entry, alert). Returns the alert when `err` was a
/// refusal, `None` otherwise. The same refusal seen again (a restart) is
/// audited again but alerted once: its alert id is derived from the
/// dataset, the baseline id, the reason and the refused approval record
/// (or the tampered bytes' hash).
pub fn refused_baseline(
    rules: &Rules,
    err: &ApprovedBaselineError,
    print: bool,
) -> Result<Option<Alert>, AuditError> {
    // `seen` tells this refusal from an earlier one of the same baseline
    // and reason (another approval record, other bytes).
    let (id, kind, reason, seen) = match err {
        ApprovedBaselineError::Refused {
            id,
            refusal,
            approval,
            ..
        } => (
            id.clone(),
            "approval",
            refusal.to_string(),
            serde_json::to_string(approval).expect("approvals serialize"),
        ),
        ApprovedBaselineError::Store(BaselineStoreError::Tampered { id, actual, .. }) => (
            id.clone(),
            "tampered",
            format!(
                "its bytes hash to {actual}, not to its id: the file was changed after it was built"
            ),
            actual.clone(),
        ),
        _ => return Ok(None),
    };
    let audit = crate::app::audit_log(rules, &rules.state_dir)?;
    audit.append(
        AuditKind::BaselineRefused,
        Some(&id),
        json!({ "baseline_id": id, "dataset": rules.dataset, "why": kind, "reason": reason }),
    )?;
    let key = format!("{}\u{1f}{id}\u{1f}{reason}\u{1f}{seen}", rules.dataset);
    let ctx = BatchContext {
        dataset: rules.dataset.clone(),
        batch_id: format!(
            "baseline-{}",
            hex::encode(&Sha256::digest(key.as_bytes())[..12])
        ),
        source: rules
            .baseline_dir
            .join(format!("{id}.json"))
            .display()
            .to_string(),
        input_sha256: id.clone(),
        baseline_id: id.clone(),
        rules_hash: rules.rules_hash.clone(),
        batch_time: None,
        rows: 0,
    };
    let finding = Finding::batch_level(
        Check::BaselineRefused,
        Verdict::PossiblePoisoning,
        Severity::Critical,
        format!(
            "baseline {id} of `{}` was refused and monitoring of this dataset is stopped: {reason}",
            rules.dataset
        ),
    );
    let alert = Alert::new(&ctx, &finding);
    let path = rules.state_dir.join("alerts.jsonl");
    let present = std::fs::read_to_string(&path)
        .map(|t| t.contains(&format!("\"alert_id\":\"{}\"", alert.alert_id)))
        .unwrap_or(false);
    if !present {
        let line = serde_json::to_vec(&alert).expect("alerts serialize");
        super::fsutil::append_line(&path, &line).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        if print {
            println!("{}", alert.line());
        }
    }
    tracing::error!(dataset = %rules.dataset, baseline_id = %id, reason = %reason, "baseline refused");
    Ok(Some(alert))
}
