//! `dqmon run` as a long-running service: starts the HTTP listener, runs
//! the workers of every dataset, stops them on SIGINT/SIGTERM and reloads
//! the configuration on SIGHUP.
//!
//! A reload is validated before anything stops: the file is loaded and
//! checked like `dqmon check` does, and every dataset must have a source
//! and an approved baseline that verifies and fits its rules. An invalid
//! file is refused (every problem is logged) and the running configuration
//! goes on untouched. A valid one is applied by letting every worker finish
//! the batch in hand and commit it, then starting the workers again with the
//! new rules. A SIGHUP with an unchanged file still restarts the workers,
//! which is how a newly approved baseline is picked up without a restart.
//!
//! The supervisor owns no pipeline logic: the workers are
//! [`crate::app::run_datasets`], exactly as without it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::app::{AppError, RunOptions, RunSummary, Shutdown};
use crate::config::{self, Config, model::SourceRule};
use crate::store::baselines::BaselineStoreError;

use super::{health, metrics, server};

/// How `dqmon run` is run.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The configuration file, read again on SIGHUP.
    pub config_path: PathBuf,
    /// The listener address; overrides `server.listen` of the config.
    pub listen: Option<SocketAddr>,
    /// How the workers behave.
    pub run: RunOptions,
}

/// Why `dqmon run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot install the signal handlers (SIGINT, SIGTERM, SIGHUP): {0}")]
    Signals(#[source] std::io::Error),
}

/// What a reload request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration is valid; the workers restart with it.
    Applied { old_hash: String, new_hash: String },
    /// The new configuration is invalid; the old one keeps running.
    Refused { old_hash: String, problems: String },
}

/// State shared between the supervisor loop and the signal thread.
struct Control {
    stop: AtomicBool,
    /// The running generation's shutdown handle.
    current: Mutex<Shutdown>,
    /// A validated configuration waiting to be applied.
    pending: Mutex<Option<Config>>,
    /// The hash of the configuration running now.
    running_hash: Mutex<String>,
    /// The listener address in use (to warn when a reload changes it).
    listen: Option<SocketAddr>,
    listen_from_flag: bool,
}

impl Control {
    fn trigger_current(&self) {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trigger();
    }
}

/// Run every dataset of `config` until SIGINT/SIGTERM (or, with `once`,
/// until the files present are handled), reloading on SIGHUP. Returns what
/// each dataset did, summed over reloads.
pub fn run(
    config: Config,
    opts: ServiceOptions,
) -> Result<Vec<(String, RunSummary)>, ServiceError> {
    let listen = opts.listen.or(config.server.as_ref().map(|s| s.listen));
    let _server = match listen {
        Some(addr) => Some(server::start(addr, health::global())?),
        None => None,
    };
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        current: Mutex::new(Shutdown::default()),
        pending: Mutex::new(None),
        running_hash: Mutex::new(config.hash.clone()),
        listen,
        listen_from_flag: opts.listen.is_some(),
    });
    spawn_signal_thread(Arc::clone(&control), opts.config_path.clone())?;

    let mut running = config;
    let mut totals: Vec<(String, RunSummary)> = Vec::new();
    loop {
        let generation = Shutdown::default();
        *control.current.lock().unwrap_or_else(|e| e.into_inner()) = generation.clone();
        // A signal that came between two generations is not lost.
        if control.stop.load(Ordering::SeqCst)
            || control
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        {
            generation.trigger();
        }
        health::global().expect(&running.datasets);
        metrics::config_in_use(&running.hash);
        *control
            .running_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = running.hash.clone();

        let summaries =
            crate::app::run_datasets(running.datasets.clone(), opts.run.clone(), generation)?;
        add(&mut totals, summaries);

        if opts.run.once || control.stop.load(Ordering::SeqCst) {
            return Ok(totals);
        }
        let next = control
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match next {
            Some(cfg) => {
                tracing::info!(
                    config = %cfg.path.display(),
                    config_hash = %cfg.hash,
                    datasets = cfg.datasets.len(),
                    "the workers finished their batches in hand; starting them with the new configuration"
                );
                running = cfg;
            }
            // Every worker stopped on its own (only `once` does that).
            None => return Ok(totals),
        }
    }
}

fn add(totals: &mut Vec<(String, RunSummary)>, more: Vec<(String, RunSummary)>) {
    for (name, s) in more {
        match totals.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => {
                t.processed += s.processed;
                t.quarantined += s.quarantined;
                t.replayed += s.replayed;
                t.skipped += s.skipped;
                t.alerts += s.alerts;
                // the latest generation says whether the dataset runs
                t.stopped = s.stopped;
            }
            None => totals.push((name, s)),
        }
    }
}

/// Check what starting the workers of `cfg` needs and can be checked while
/// other workers run (read-only): a source per dataset and an approved
/// baseline that verifies and fits the rules. Every problem is returned.
pub fn preflight(cfg: &Config) -> Result<(), Vec<AppError>> {
    let mut problems = Vec::new();
    for r in &cfg.datasets {
        if matches!(r.source, SourceRule::None) {
            problems.push(AppError::NoSource {
                dataset: r.dataset.clone(),
            });
        }
        let approved = crate::app::baseline_store(r)
            .and_then(|store| store.approved(&r.dataset, r.baseline_id.as_deref()));
        match approved {
            Ok((id, b, _)) if b.shape != r.profile_shape() => problems.push(AppError::Baseline {
                dataset: r.dataset.clone(),
                source: BaselineStoreError::WrongShape { id },
            }),
            Ok(_) => {}
            Err(source) => problems.push(AppError::Baseline {
                dataset: r.dataset.clone(),
                source,
            }),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Load and validate the file again; queue it or refuse it.
fn reload(control: &Control, path: &Path) -> ReloadOutcome {
    let old_hash = control
        .running_hash
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let checked = config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|cfg| match preflight(&cfg) {
            Ok(()) => Ok(cfg),
            Err(problems) => Err(problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")),
        });
    let outcome = match checked {
        Err(problems) => ReloadOutcome::Refused { old_hash, problems },
        Ok(cfg) => {
            let new_listen = cfg.server.as_ref().map(|s| s.listen);
            if !control.listen_from_flag && new_listen != control.listen {
                tracing::warn!(
                    running = ?control.listen,
                    configured = ?new_listen,
                    "`server.listen` changed; the listener keeps its address until dqmon restarts"
                );
            }
            let new_hash = cfg.hash.clone();
            record_reload_in_audit_logs(&cfg);
            *control.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg);
            control.trigger_current();
            ReloadOutcome::Applied { old_hash, new_hash }
        }
    };
    reload_decided(path, &outcome);
    outcome
}

/// Each dataset's audit log records the configuration it runs with from now
/// on (`config_changed`, or `config_loaded` when only the file was touched).
fn record_reload_in_audit_logs(cfg: &config::Config) {
    for r in &cfg.datasets {
        let recorded = crate::app::audit_log(r, &r.state_dir).and_then(|log| {
            crate::store::audit::record_config(&log, &cfg.path, &cfg.hash, &r.rules_hash, "reload")
        });
        if let Err(e) = recorded {
            tracing::error!(dataset = %r.dataset, error = %e, "could not record the reloaded configuration in the audit log");
        }
    }
}

/// The one place where every reload decision is reported: log line and
/// metric. (The audit log records reloads here too.)
fn reload_decided(path: &Path, outcome: &ReloadOutcome) {
    match outcome {
        ReloadOutcome::Applied { old_hash, new_hash } => {
            metrics::config_reload("applied");
            tracing::info!(
                config = %path.display(),
                old_config_hash = %old_hash,
                new_config_hash = %new_hash,
                "the new configuration is valid; applying it once the batches in hand are committed"
            );
        }
        ReloadOutcome::Refused { old_hash, problems } => {
            metrics::config_reload("refused");
            tracing::error!(
                config = %path.display(),
                running_config_hash = %old_hash,
                problems = %problems,
                "the new configuration is refused; the running one goes on unchanged. Fix the problems and send SIGHUP again"
            );
        }
    }
}

/// SIGINT and SIGTERM stop after the batch in hand; SIGHUP reloads. The
/// handlers are installed before this returns, so an early SIGHUP never
/// kills the process.
fn spawn_signal_thread(control: Arc<Control>, path: PathBuf) -> Result<(), ServiceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServiceError::Signals)?;
    #[cfg(unix)]
    let (mut term, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate()).map_err(ServiceError::Signals)?,
            signal(SignalKind::hangup()).map_err(ServiceError::Signals)?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    #[cfg(unix)]
                    {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => break,
                            _ = term.recv() => break,
                            _ = hup.recv() => {
                                tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
                                reload(&control, &path);
                            }
                        }
                    }
                    #[cfg(not(unix))]
                    {
                        let _ = tokio::signal::ctrl_c().await;
                        break;
                    }
                }
                tracing::info!("shutdown requested; finishing the batch in hand");
                control.stop.store(true, Ordering::SeqCst);
                control.trigger_current();
            })
        })
        .map_err(ServiceError::Signals)?;
    Ok(())
}
