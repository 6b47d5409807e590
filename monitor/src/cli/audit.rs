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
                // the replica's own chain; its manifests where they live
                let objects = crate::app::history_objects(r, &r.state_dir)?;
                let v = crate::store::audit::verify_with(&r.state_dir, objects.as_ref())?;
                let path = r.state_dir.join(crate::store::audit::AUDIT_FILE);
                match &v.tampered {
                    None => println!(
                        "ok        {}: {} entries in {}, head {}",
                        r.dataset,
                        v.good_entries,
                        path.display(),
                        v.head_hash
                    ),
                    Some(t) => {
                        bad += 1;
                        println!(
                            "TAMPERED  {}: first bad entry {} (line {} of {}): {}",
                            r.dataset,
                            t.seq,
                            t.line,
                            path.display(),
                            t.reason
                        );
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
