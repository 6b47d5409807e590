//! Command-line interface: clap commands and what each one does.
//!
//! This module is the binary's edge (it lives in the library so that the
//! integration tests and the binary share it): library errors become
//! `anyhow` reports and exit codes here, and nowhere else.

// The doc comments below are clap's help texts, whose `<placeholders>`
// read as HTML to rustdoc.
#![allow(rustdoc::invalid_html_tags)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::compare::{self};
use crate::config::{self, model::Rules};
use crate::decode::parquet::profile_file;
use crate::pii::PiiKey;
use crate::profile::BatchProfile;

mod args;
mod audit;
mod baseline;
mod outbox;
mod print;

pub use args::{
    AuditCommand, BaselineCommand, Cli, Command, LogFormat, QueryFormatArg, ReplayOrderArg,
};
use audit::audit;
use baseline::baseline;
use print::{print_findings, print_summary};

/// Set up `tracing` on stderr. In the text format every field (the
/// message too) goes through [`crate::escape::escape`]: file names, values,
/// column names and Kafka keys in log lines are untrusted, and a newline in
/// one must not start a line of its own. (JSON escapes by itself.)
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::field::MakeExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                let text = format!("{value:?}");
                let text = crate::escape::escape(&text);
                if field.name() == "message" {
                    write!(w, "{text}")
                } else {
                    write!(w, "{field}={text}")
                }
            })
            .delimited(" ");
            builder.fmt_fields(fields).try_init()
        }
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The rules of `dataset` in `config`, or of its only dataset.
pub fn load_rules(config: &Path, dataset: Option<&str>) -> anyhow::Result<Rules> {
    let cfg = config::load(config)?;
    match dataset {
        Some(name) => cfg
            .datasets
            .into_iter()
            .find(|r| r.dataset == name)
            .with_context(|| format!("dataset `{name}` is not in {}", config.display())),
        None => {
            let mut all = cfg.datasets;
            if all.len() == 1 {
                Ok(all.remove(0))
            } else {
                let names: Vec<_> = all.iter().map(|r| r.dataset.clone()).collect();
                bail!(
                    "{} holds {} datasets ({}); choose one with --dataset",
                    config.display(),
                    names.len(),
                    names.join(", ")
                )
            }
        }
    }
}

/// Files named by the arguments: files as given, folders expanded to their
/// `*.parquet` files; sorted by path so that results are deterministic.
pub fn expand_paths(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("could not list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().and_then(|e| e.to_str()) == Some("parquet"))
                .collect();
            files.sort();
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no Parquet files found in the given paths");
    }
    Ok(out)
}

/// The PII key of a command that only reads: never created (see
/// [`crate::app::dataset_pii_key`]).
fn pii_key(rules: &Rules) -> anyhow::Result<PiiKey> {
    Ok(crate::app::dataset_pii_key(
        rules,
        crate::app::PiiAccess::ReadOnly,
    )?)
}

/// The PII key of `baseline build`, which writes: a baseline of `pii`
/// columns holds keyed hashes, so before the first `run` it is the one
/// that creates the key, holding the state folder's writer lock.
fn baseline_pii_key(rules: &Rules) -> anyhow::Result<PiiKey> {
    match crate::app::dataset_pii_key(rules, crate::app::PiiAccess::ReadOnly) {
        Err(crate::pii::PiiKeyError::Missing { path, .. }) => {
            let lock =
                crate::store::lock::WriterLock::acquire(&rules.state_dir).with_context(|| {
                    format!(
                        "there is no PII key yet, and creating {} needs the state folder to itself",
                        path.display()
                    )
                })?;
            Ok(crate::app::dataset_pii_key(
                rules,
                crate::app::PiiAccess::Writer(&lock),
            )?)
        }
        other => Ok(other?),
    }
}

fn profile_paths(
    rules: &Rules,
    pii: &PiiKey,
    files: &[PathBuf],
) -> anyhow::Result<Vec<BatchProfile>> {
    files
        .iter()
        .map(|f| {
            profile_file(f, rules, pii)
                .with_context(|| format!("could not profile {}", f.display()))
        })
        .collect()
}

/// The whole program: parse arguments, set up logs, run, map errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // the one pool every dataset's profiling shares; built once per process
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads)
        .thread_name(|i| format!("dqmon-profile-{i}"))
        .build_global()
    {
        eprintln!("error: cannot start {} profiling threads: {e}", cli.threads);
        return ExitCode::from(1);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // an invalid configuration exits 2 from every command, as from `check`
            if e.chain().any(|c| c.is::<config::ConfigError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                let names: Vec<_> = cfg.datasets.iter().map(|r| r.dataset.as_str()).collect();
                println!(
                    "{} is valid: datasets {}",
                    config.display(),
                    names.join(", ")
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Profile {
            config,
            dataset,
            json,
            top,
            paths,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let pii = pii_key(&rules)?;
            let files = expand_paths(&paths)?;
            let mut profiles = profile_paths(&rules, &pii, &files)?.into_iter();
            let mut merged = profiles.next().expect("at least one file");
            for p in profiles {
                merged.merge(&p)?;
            }
            let summary = merged.summary(top);
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &summary)?;
                writeln!(out)?;
            } else {
                print_summary(&mut out, &summary, &rules)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Baseline { action } => baseline(action),
        Command::Audit { action } => audit(action),
        Command::Outbox { action } => outbox::run(action),
        Command::Run {
            config,
            once,
            settle_ms,
            listen,
        } => {
            let cfg = config::load(&config)?;
            // One writer per state folder: held until the daemon exits (the
            // workers share it across reloads), taken before anything is written.
            let _writer_locks = cfg
                .datasets
                .iter()
                .map(|r| crate::store::lock::WriterLock::acquire(&r.state_dir))
                .collect::<Result<Vec<_>, _>>()?;
            for r in &cfg.datasets {
                let log = crate::app::audit_log(r, &r.state_dir)?;
                crate::store::audit::record_config(
                    &log,
                    &cfg.path,
                    &cfg.hash,
                    &r.rules_hash,
                    "start",
                )?;
            }
            let opts = crate::app::RunOptions {
                once,
                settle: std::time::Duration::from_millis(settle_ms),
                print_alerts: true,
                ..Default::default()
            };
            let service = crate::ops::service::ServiceOptions {
                config_path: config,
                listen,
                run: opts,
            };
            let summaries = crate::ops::service::run(cfg, service)?;
            let mut not_monitored = Vec::new();
            for (name, s) in summaries {
                tracing::info!(
                    dataset = %name,
                    processed = s.processed,
                    quarantined = s.quarantined,
                    replayed = s.replayed,
                    alerts = s.alerts,
                    "stopped"
                );
                not_monitored.extend(s.stopped);
            }
            // A dataset whose baseline was refused did not stop the others,
            // but the run did not do what it was asked: fail it.
            if !not_monitored.is_empty() {
                bail!(
                    "{} dataset(s) were not monitored:\n  {}",
                    not_monitored.len(),
                    not_monitored.join("\n  ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            config,
            dataset,
            baseline,
            json,
            paths,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let pii = pii_key(&rules)?;
            let pin = baseline.as_deref().or(rules.baseline_id.as_deref());
            let (id, base, _) = crate::security::approved_baseline(&rules, pin)?;
            if base.shape != rules.profile_shape() {
                bail!(crate::store::baselines::BaselineStoreError::WrongShape { id });
            }
            crate::app::check_pii_key(&rules, &id, &base, &pii, &rules.state_dir)?;
            let mut out = std::io::stdout().lock();
            for file in expand_paths(&paths)? {
                let profile = profile_file(&file, &rules, &pii)
                    .with_context(|| format!("could not profile {}", file.display()))?;
                let findings = compare::compare(&profile, &base, &rules);
                if json {
                    for f in &findings {
                        let mut v = serde_json::to_value(f)?;
                        v["source"] = file.display().to_string().into();
                        v["baseline_id"] = id.clone().into();
                        writeln!(out, "{v}")?;
                    }
                } else {
                    print_findings(&mut out, &file, &findings)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Query {
            config,
            dataset,
            state_dir,
            format,
            sql,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let dir = state_dir.unwrap_or_else(|| rules.state_dir.clone());
            let batches = crate::query::query(&rules, &dir, &sql)?;
            let format = match format {
                QueryFormatArg::Table => crate::query::OutputFormat::Table,
                QueryFormatArg::Csv => crate::query::OutputFormat::Csv,
                QueryFormatArg::Json => crate::query::OutputFormat::Json,
            };
            let mut out = std::io::stdout().lock();
            crate::query::write(&mut out, &batches, format)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            config,
            dataset,
            state_dir,
            out,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let dir = state_dir.unwrap_or_else(|| rules.state_dir.clone());
            let html = crate::report::build(&rules, &dir)?;
            crate::store::fsutil::write_atomic(&out, html.as_bytes())
                .with_context(|| format!("could not write {}", out.display()))?;
            eprintln!("wrote {} ({} bytes)", out.display(), html.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            dataset,
            alerts_out,
            state_dir,
            order,
            keep_paths,
            deliver,
            deliver_to,
            no_progress,
            kafka_from,
            kafka_to,
            inputs,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let kafka = match &kafka_from {
                Some(from) => Some(crate::source::kafka_range::KafkaRange {
                    from: from.parse().context("--kafka-from")?,
                    to: kafka_to
                        .as_deref()
                        .map(str::parse)
                        .transpose()
                        .context("--kafka-to")?,
                }),
                None => None,
            };
            let opts = crate::replay::ReplayOptions {
                state_dir,
                alerts_out: alerts_out.clone(),
                order: match order {
                    ReplayOrderArg::Name => crate::replay::ReplayOrder::Name,
                    ReplayOrderArg::Mtime => crate::replay::ReplayOrder::Mtime,
                },
                keep_paths,
                deliver: match (deliver_to, deliver) {
                    (Some(file), _) => Some(crate::replay::Delivery::File(file)),
                    (None, true) => Some(crate::replay::Delivery::Stdout),
                    (None, false) => None,
                },
                progress: !no_progress,
            };
            let s = crate::replay::replay_inputs(rules, &inputs, kafka.as_ref(), &opts)?;
            if kafka.is_some() {
                eprintln!(
                    "replayed {} batches ({} messages, {} rows; {} cut at live boundaries): {} processed, {} quarantined, {} same bytes as an earlier batch, {} already in the history; {} alerts{}; history in {}",
                    s.batches,
                    s.messages,
                    s.rows,
                    s.live_boundaries,
                    s.run.processed,
                    s.run.quarantined,
                    s.run.replayed,
                    s.run.skipped,
                    s.run.alerts,
                    alerts_out
                        .as_ref()
                        .map(|p| format!(" written to {}", p.display()))
                        .unwrap_or_default(),
                    s.state_dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "replayed {} files ({} rows): {} processed, {} quarantined, {} same bytes as an earlier file, {} already in the history; {} alerts{}; history in {}",
                s.files,
                s.rows,
                s.run.processed,
                s.run.quarantined,
                s.run.replayed,
                s.run.skipped,
                s.run.alerts,
                alerts_out
                    .map(|p| format!(" written to {}", p.display()))
                    .unwrap_or_default(),
                s.state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
