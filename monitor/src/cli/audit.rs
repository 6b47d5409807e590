//! `dqmon audit ...`: verify and show the audit chain.

use std::process::ExitCode;

use anyhow::Context;

use super::AuditCommand;
use crate::config::{self, model::Rules};

pub(super) fn audit(action: AuditCommand) -> anyhow::Result<ExitCode> {
    match action {
        AuditCommand::Verify { config, dataset } => {
            let cfg = config::load(&config)?;
            let datasets: Vec<&Rules> =
                match &dataset {
                    Some(name) => vec![cfg.dataset(name).with_context(|| {
                        format!("dataset `{name}` is not in {}", config.display())
                    })?],
                    None => cfg.datasets.iter().collect(),
                };
            let mut bad = 0;
            for r in datasets {
                // the replica's own file, if it has one; its manifests
                // where they live
                let objects = crate::app::history_objects(r, &r.state_dir)?;
                let shared = crate::app::is_shared(r, &r.state_dir);
                let path = r.state_dir.join(crate::store::audit::AUDIT_FILE);
                if !shared || path.exists() {
                    let v = crate::store::audit::verify_with(&r.state_dir, objects.as_ref())?;
                    bad += print_verification(&r.dataset, &path.display().to_string(), &v);
                }
                if shared {
                    // every replica's chain on the shared history
                    let chains = crate::store::audit::verify_chains(objects.as_ref())?;
                    if chains.is_empty() {
                        println!(
                            "ok        {}: no chain on the shared history yet",
                            r.dataset
                        );
                    }
                    for c in chains {
                        let place = format!("{}'s chain at {}", c.writer, c.location.display());
                        bad += print_verification(&r.dataset, &place, &c.verification);
                        if let Some(batch) = c.unlogged {
                            println!(
                                "          {}: batch {batch}, {}'s newest, is committed but not in its chain yet: {} stopped between the two (its next start logs it)",
                                r.dataset, c.writer, c.writer
                            );
                        }
                    }
                }
            }
            Ok(if bad > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Print one chain's verification; 1 if it was tampered with, else 0.
fn print_verification(dataset: &str, place: &str, v: &crate::store::audit::Verification) -> usize {
    match &v.tampered {
        None => {
            println!(
                "ok        {dataset}: {} entries in {place}, head {}",
                v.good_entries, v.head_hash
            );
            0
        }
        Some(t) if t.line > 0 => {
            println!(
                "TAMPERED  {dataset}: first bad entry {} (line {} of {place}): {}",
                t.seq, t.line, t.reason
            );
            1
        }
        Some(t) => {
            println!(
                "TAMPERED  {dataset}: first bad entry {} of {place}: {}",
                t.seq, t.reason
            );
            1
        }
    }
}
