//! `dqmon baseline ...`: build, approve, list, show, verify baselines.

use std::process::ExitCode;

use anyhow::bail;

use super::{BaselineCommand, baseline_pii_key, expand_paths, load_rules, profile_paths};
use crate::baseline::{Baseline, BatchRef};

/// The id of the key a baseline's `pii` columns are hashed with; none when
/// the rules have no `pii` column (nothing is hashed).
fn pii_key_id(
    rules: &crate::config::model::Rules,
    key: Option<crate::pii::PiiKey>,
) -> Option<String> {
    key.filter(|_| rules.columns.iter().any(|c| c.pii))
        .map(|k| k.id())
}

pub(super) fn baseline(action: BaselineCommand) -> anyhow::Result<ExitCode> {
    match action {
        BaselineCommand::Build {
            config,
            dataset,
            by,
            from_history: true,
            between,
            include_alerted,
            ..
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let from = crate::baseline_history::parse_bound(&between[0])?;
            let to = crate::baseline_history::parse_bound(&between[1])?;
            let chosen = crate::baseline_history::choose(
                crate::app::history_objects(&rules, &rules.state_dir)?.as_ref(),
                from,
                to,
                include_alerted,
            )?;
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let n = chosen.profiles.len();
            let mut b = Baseline::build(&rules, &chosen.profiles, chosen.refs, &by)?;
            // the stored profiles were hashed with the dataset's key
            b.pii_key_id = pii_key_id(
                &rules,
                crate::app::dataset_pii_key(&rules, crate::app::PiiAccess::ReadOnly).ok(),
            );
            let id = crate::app::baseline_store(&rules)?.save(&b)?;
            eprintln!(
                "built candidate baseline of `{}` from {n} stored batches ({} rows) with batch time in [{}, {}); left out {} that raised alerts{}",
                rules.dataset,
                b.profile.rows,
                from.to_rfc3339(),
                to.to_rfc3339(),
                chosen.skipped_alerted,
                if chosen.without_time > 0 {
                    format!(" and {} without an event time", chosen.without_time)
                } else {
                    String::new()
                }
            );
            eprintln!(
                "approve it with: dqmon baseline approve --config {} {id} --by NAME",
                config.display()
            );
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        BaselineCommand::Build {
            config,
            dataset,
            by,
            paths,
            ..
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let pii = baseline_pii_key(&rules)?;
            let files = expand_paths(&paths)?;
            let profiles = profile_paths(&rules, &pii, &files)?;
            let refs = files
                .iter()
                .zip(&profiles)
                .map(|(f, p)| {
                    Ok(BatchRef {
                        origin: f
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        input_sha256: Some(crate::store::sha256_file(f)?),
                        rows: p.rows,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let mut b = Baseline::build(&rules, &profiles, refs, &by)?;
            b.pii_key_id = pii_key_id(&rules, Some(pii));
            let id = crate::app::baseline_store(&rules)?.save(&b)?;
            crate::app::audit_log(&rules, &rules.state_dir)?.append(
                crate::store::audit::AuditKind::BaselineBuilt,
                Some(&id),
                serde_json::json!({
                    "baseline_id": id,
                    "dataset": rules.dataset,
                    "built_by": by,
                    "rules_hash": rules.rules_hash,
                    "batches": b.batches,
                    "rows": b.profile.rows,
                }),
            )?;
            eprintln!(
                "built candidate baseline of `{}` from {} batches ({} rows) into {}",
                rules.dataset,
                profiles.len(),
                b.profile.rows,
                rules.baseline_dir.display()
            );
            eprintln!(
                "approve it with: dqmon baseline approve --config {} {id} --by NAME",
                config.display()
            );
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        BaselineCommand::Approve {
            config,
            dataset,
            id,
            by,
            note,
            sign_key,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let store = crate::app::baseline_store(&rules)?;
            let key = match &sign_key {
                Some(p) => Some(crate::security::read_signing_key(p)?),
                None => None,
            };
            // Refuse now what the daemon would refuse later.
            let policy = crate::security::Policy::load(&rules.security)?;
            let built_by = store.load(&id)?.built_by;
            if policy.require_distinct_approver && built_by == by {
                bail!(crate::security::Refusal::SameApprover { approver: by });
            }
            if let Some(k) = &key
                && !policy.keys.is_empty()
                && !policy
                    .keys
                    .iter()
                    .any(|(n, pk)| *n == by && *pk == k.verifying_key())
            {
                bail!(
                    "the key in {} is not the one security.trusted_keys lists for `{by}`, so the daemon would refuse this approval; sign with `{by}`'s key, or add its public key ({}) to the rules",
                    sign_key.as_ref().expect("key given").display(),
                    crate::security::public_key_text(&k.verifying_key())
                );
            }
            if key.is_none() && policy.require_signed_approval {
                bail!(crate::security::Refusal::Unsigned { approver: by });
            }
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let a = store.approve_with(&id, &by, &now, &note, |a| {
                if let Some(k) = &key {
                    crate::security::sign_approval(a, k);
                }
            })?;
            crate::app::audit_log(&rules, &rules.state_dir)?.append(
                crate::store::audit::AuditKind::BaselineApproved,
                Some(&a.baseline_id),
                serde_json::json!({
                    "baseline_id": a.baseline_id,
                    "dataset": a.dataset,
                    "approved_by": a.approved_by,
                    "approved_at": a.approved_at,
                    "built_by": built_by,
                    "note": a.note,
                    "signature": a.signature,
                    "public_key": a.public_key,
                }),
            )?;
            println!(
                "approved baseline {} of `{}` by {} at {}{}",
                a.baseline_id,
                a.dataset,
                a.approved_by,
                a.approved_at,
                if a.signature.is_some() {
                    " (signed)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        BaselineCommand::Keygen { out } => {
            let (public_path, text) = crate::security::generate_key(&out)?;
            eprintln!(
                "wrote the private key to {} (keep it secret, outside the repository) and the public key to {}",
                out.display(),
                public_path.display()
            );
            eprintln!(
                "trust it in the rules with: security: {{ trusted_keys: [{{ name: NAME, public_key: \"{text}\" }}] }}"
            );
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        BaselineCommand::Verify { config, dataset } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let store = crate::app::baseline_store(&rules)?;
            let results = store.verify_all()?;
            let mut bad = 0;
            for v in &results {
                match &v.mismatch {
                    None => println!(
                        "ok        {}{}",
                        v.id,
                        if v.approved { "  (approved)" } else { "" }
                    ),
                    Some(actual) => {
                        bad += 1;
                        println!(
                            "TAMPERED  {}  {} hashes to {actual}; it will be refused",
                            v.id,
                            v.path.display()
                        );
                    }
                }
            }
            if results.is_empty() {
                println!("no baselines in {}", store.dir().display());
            }
            Ok(if bad > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        BaselineCommand::List { config, dataset } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let store = crate::app::baseline_store(&rules)?;
            let approvals = store.approvals()?;
            for v in store.verify_all()? {
                let a = approvals.iter().rev().find(|a| a.baseline_id == v.id);
                match a {
                    Some(a) => println!(
                        "{}  approved by {} at {}",
                        v.id, a.approved_by, a.approved_at
                    ),
                    None => println!("{}  candidate", v.id),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
