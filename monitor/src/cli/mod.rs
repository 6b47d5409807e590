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
use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::baseline::{Baseline, BatchRef};
use crate::compare::{self, Finding};
use crate::config::{self, model::Rules};
use crate::decode::parquet::profile_file;
use crate::escape::escape;
use crate::pii::PiiKey;
use crate::profile::{ALL, BatchProfile, ProfileSummary};
use crate::store::baselines::BaselineStore;

mod outbox;

/// dqmon: per-trust-tag data-quality monitoring of ML ingestion batches.
#[derive(Debug, Parser)]
#[command(name = "dqmon", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "DQMON_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Threads that profile a file's row groups, shared by every dataset
    /// (0: one per core). Profiles and alerts are the same for any number.
    #[arg(long, global = true, default_value_t = 0, env = "DQMON_THREADS")]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file; report every problem with its YAML path (exit 2 when invalid).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Profile Parquet files (merged into one profile) and print it.
    Profile {
        #[arg(long, short)]
        config: PathBuf,
        /// Dataset to use when the config holds several.
        #[arg(long)]
        dataset: Option<String>,
        /// Print the JSON document instead of tables.
        #[arg(long)]
        json: bool,
        /// How many top values to show per column.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Parquet files or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// The daemon: watch the drop folders of every dataset in the config, check
    /// each complete file against the approved baseline, print and store alerts.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Handle the files present now, then exit instead of watching.
        #[arg(long)]
        once: bool,
        /// Milliseconds a file's size and mtime must stay unchanged before it is read.
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
        /// Serve /healthz, /readyz and /metrics on this address (e.g.
        /// 127.0.0.1:9464); overrides `server.listen` of the config.
        #[arg(long, env = "DQMON_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Build, approve, verify and list baselines.
    Baseline {
        #[command(subcommand)]
        action: BaselineCommand,
    },
    /// Compare each Parquet file with the approved baseline and print findings.
    Compare {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Compare with this baseline (it must be approved) instead of the latest approved one.
        #[arg(long)]
        baseline: Option<String>,
        /// Print findings as JSON lines.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Measure detection: write the synthetic suite, build a baseline from its
    /// clean batches, compare every attack, drift and clean control, print a table.
    Evaluate {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Folder for the generated suite (default: a temporary folder).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        #[arg(long, default_value_t = 20_240_611)]
        seed: u64,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
        /// Measure over streams of small batches instead: campaigns of
        /// attacked batches with evidence carried across batches, a long
        /// clean stream, and the budget trade-off (`--rows` is then the
        /// batch size, 2,000 unless given).
        #[arg(long)]
        streams: bool,
        /// Campaigns per attack and strength (with `--streams`).
        #[arg(long, default_value_t = 20)]
        campaigns: u64,
    },
    /// Verify the hash-chained audit log.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Alert delivery: list the notifications not delivered, send failed ones again.
    Outbox {
        #[command(subcommand)]
        action: outbox::OutboxCommand,
    },
    /// Write a deterministic evaluation suite of synthetic batches (clean, drift, attacks).
    Fixtures {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Rows per clean batch.
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        #[arg(long, default_value_t = 20_240_611)]
        seed: u64,
    },
    /// Replay recorded Parquet files, or a range of a Kafka dataset's
    /// topics, through the daemon's pipeline into a separate state folder;
    /// alerts are byte-identical to the live ones.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Also write the replay's alerts here (JSON lines, same bytes as the live alerts file).
        #[arg(long)]
        alerts_out: Option<PathBuf>,
        /// History folder of the replay (default: <state>/replay, recreated on each replay).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Replay order of files: `name` (file name, stable across copies) or
        /// `mtime` (the daemon's order). A Kafka range replays in the live order.
        #[arg(
            long,
            value_enum,
            default_value = "name",
            conflicts_with = "kafka_from"
        )]
        order: ReplayOrderArg,
        /// Name sources by the paths given instead of the live drop folder (files only).
        #[arg(long, conflicts_with = "kafka_from")]
        keep_paths: bool,
        /// Print each alert on stdout, as `run` does; by default a replay
        /// delivers nothing. Never to the receivers of the rules' `alerts:`
        /// section: a replay pages no one.
        #[arg(long)]
        deliver: bool,
        /// Deliver to this file instead of stdout (the same lines, appended).
        #[arg(long, value_name = "FILE")]
        deliver_to: Option<PathBuf>,
        /// No progress bar (it is never drawn when stderr is not a terminal).
        #[arg(long)]
        no_progress: bool,
        /// Replay the dataset's Kafka topics from here (inclusive): `earliest`,
        /// offsets per partition such as `0:120,1:95` (`topic/0:120` for
        /// several topics; only these partitions are replayed), or an RFC 3339
        /// time such as 2024-06-01T10:00:00Z (offsets_for_times). Instead of
        /// Parquet inputs.
        #[arg(long, value_name = "OFFSETS|TIME")]
        kafka_from: Option<String>,
        /// End of the Kafka range (exclusive: the first offset not replayed,
        /// like a committed offset): `latest`, offsets per partition, or an
        /// RFC 3339 time. Default: the end of each partition at start.
        #[arg(long, value_name = "OFFSETS|TIME", requires = "kafka_from")]
        kafka_to: Option<String>,
        /// Parquet files, folders of them, or globs.
        inputs: Vec<String>,
    },
    /// Run SQL over the history. Tables: metrics (batch_id, batch_time, slice,
    /// column, metric, value), batches, findings, alerts, baselines.
    Query {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Query this state folder (e.g. a replay's) instead of the dataset's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: QueryFormatArg,
        /// One SQL statement.
        sql: String,
    },
    /// Write a self-contained HTML report: alerts, and each metric over time
    /// per trust tag with the baseline's normal band and alert markers.
    Report {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Report on this state folder (e.g. a replay's) instead of the dataset's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `--format` of `query`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueryFormatArg {
    Table,
    Csv,
    Json,
}

/// `--order` of `replay`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReplayOrderArg {
    Name,
    Mtime,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Merge the profiles of known-good batches into a candidate baseline; prints its id.
    Build {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Who builds it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Parquet files or folders of known-good batches.
        #[arg(
            required_unless_present = "from_history",
            conflicts_with = "from_history"
        )]
        paths: Vec<PathBuf>,
        /// Build from the stored profiles of the history instead of files (needs --between).
        #[arg(long, requires = "between")]
        from_history: bool,
        /// Batch-time window [T1, T2) for --from-history: RFC 3339 or dates (midnight UTC).
        #[arg(long, num_args = 2, value_names = ["T1", "T2"])]
        between: Vec<String>,
        /// With --from-history, also use batches that raised alerts.
        #[arg(long, requires = "from_history")]
        include_alerted: bool,
    },
    /// Approve a candidate: from now on monitoring compares against it.
    Approve {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// The baseline id (SHA-256 printed by `build`).
        id: String,
        /// Who approves (recorded).
        #[arg(long)]
        by: String,
        /// Why it is approved.
        #[arg(long, default_value = "")]
        note: String,
        /// Sign the approval with this Ed25519 private key file (PEM from
        /// `dqmon baseline keygen`, or 32 bytes as hex/base64).
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
    },
    /// Recompute the hash of every stored baseline; exit 1 if any does not match its id.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// List stored baselines and approvals.
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Create an Ed25519 key pair for signing approvals: FILE (private, mode
    /// 0600) and FILE.pub; prints the public key for `security.trusted_keys`.
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of every dataset's audit log (or one); names the
    /// first edited, removed or reordered entry; exit 1 if one is found.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
    },
}

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

fn load_rules(config: &Path, dataset: Option<&str>) -> anyhow::Result<Rules> {
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
                let log = crate::store::audit::AuditLog::open(&r.state_dir)?;
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
        Command::Evaluate {
            config,
            dataset,
            out,
            rows,
            seed,
            json,
            streams,
            campaigns,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            if streams {
                let mut suite = crate::evaluate::streams::StreamSuite {
                    campaigns,
                    ..Default::default()
                };
                if rows != 20_000 {
                    suite.rows = rows;
                }
                let report = crate::evaluate::streams::evaluate_streams(&rules, suite)?;
                print!("{}", report.table(&rules));
                return Ok(ExitCode::SUCCESS);
            }
            let tmp;
            let dir = match out {
                Some(d) => d,
                None => {
                    tmp = tempfile::tempdir()?;
                    tmp.path().to_path_buf()
                }
            };
            let eval = crate::evaluate::evaluate(&rules, &dir, rows, seed)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&eval)?);
            } else {
                print!("{}", eval.table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fixtures { out, rows, seed } => {
            let files = crate::fixtures::write_suite(&out, rows, seed)?;
            println!("wrote {} files under {}", files.len(), out.display());
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

fn baseline(action: BaselineCommand) -> anyhow::Result<ExitCode> {
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
            let chosen =
                crate::baseline_history::choose(&rules.state_dir, from, to, include_alerted)?;
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let n = chosen.profiles.len();
            let b = Baseline::build(&rules, &chosen.profiles, chosen.refs, &by)?;
            let id = BaselineStore::new(&rules.baseline_dir).save(&b)?;
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
            let b = Baseline::build(&rules, &profiles, refs, &by)?;
            let id = BaselineStore::new(&rules.baseline_dir).save(&b)?;
            crate::store::audit::AuditLog::open(&rules.state_dir)?.append(
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
            let store = BaselineStore::new(&rules.baseline_dir);
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
            let a = store.approve_signed(&id, &by, &now, &note, key.as_ref())?;
            crate::store::audit::AuditLog::open(&rules.state_dir)?.append(
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
            let store = BaselineStore::new(&rules.baseline_dir);
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
            let store = BaselineStore::new(&rules.baseline_dir);
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

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => String::new(),
        Some(x) if x.abs() >= 1e6 || (x != 0.0 && x.abs() < 1e-3) => format!("{x:.4e}"),
        Some(x) => format!("{x:.4}"),
    }
}

fn print_summary(out: &mut impl Write, s: &ProfileSummary, rules: &Rules) -> anyhow::Result<()> {
    writeln!(
        out,
        "dataset {}: {} rows in {} batch(es)",
        s.dataset, s.rows, s.batches
    )?;
    let mut names: Vec<&String> = s.slices.keys().collect();
    names.sort_by_key(|n| (n.as_str() != ALL, rules.trust.rank(n), n.to_string()));
    for name in names {
        let slice = &s.slices[name];
        let labels: Vec<String> = slice
            .label_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        // trust tags, labels, column names and values come from the data
        let line = format!(
            "slice {name}: {} rows; labels {{{}}}; duplicate share {:.2}%",
            slice.rows,
            labels.join(", "),
            slice.duplicate_share * 100.0
        );
        writeln!(out, "\n{}", escape(&line))?;
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header([
            "column", "count", "nulls", "missing", "min", "max", "mean", "stddev", "distinct",
            "top",
        ]);
        for (col, c) in &slice.columns {
            let top = c
                .top
                .as_ref()
                .map(|t| {
                    t.iter()
                        .map(|v| format!("{} ({})", escape(&v.value), v.count))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            t.add_row([
                escape(col).into_owned(),
                c.count.to_string(),
                c.nulls.to_string(),
                format!("{:.2}%", c.missing_rate * 100.0),
                fmt_num(c.min),
                fmt_num(c.max),
                fmt_num(c.mean),
                fmt_num(c.stddev),
                c.distinct_estimate
                    .map(|d| format!("{d:.0}"))
                    .unwrap_or_default(),
                top,
            ]);
        }
        writeln!(out, "{t}")?;
    }
    Ok(())
}

fn print_findings(out: &mut impl Write, file: &Path, findings: &[Finding]) -> anyhow::Result<()> {
    // file names, columns, trust tags and the values in messages are untrusted
    let name = file.display().to_string();
    let name = escape(&name);
    if findings.is_empty() {
        writeln!(out, "{name}: no findings")?;
        return Ok(());
    }
    writeln!(out, "{name}: {} finding(s)", findings.len())?;
    for f in findings {
        let line = format!(
            "  [{}] {} {} {} {}: {}",
            f.severity.as_str(),
            f.check,
            f.column.as_deref().unwrap_or("-"),
            f.trust_tag,
            f.verdict.as_str(),
            f.message
        );
        writeln!(out, "{}", escape(&line))?;
    }
    Ok(())
}

fn audit(action: AuditCommand) -> anyhow::Result<ExitCode> {
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
                let v = crate::store::audit::verify(&r.state_dir)?;
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
