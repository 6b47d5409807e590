//! Command-line interface: clap commands and what each one does.
//!
//! This module is the binary's edge (it lives in the library so that the
//! integration tests and the binary share it): library errors become
//! `anyhow` reports and exit codes here, and nowhere else.

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
use crate::pii::PiiKey;
use crate::profile::{ALL, BatchProfile, ProfileSummary};
use crate::store::baselines::BaselineStore;

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
        #[arg(required = true)]
        paths: Vec<PathBuf>,
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
}

/// Set up `tracing` on stderr.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn load_rules(config: &Path, dataset: Option<&str>) -> anyhow::Result<Rules> {
    let cfg = config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
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

fn pii_key(rules: &Rules) -> anyhow::Result<PiiKey> {
    Ok(PiiKey::load(&rules.pii_key_env, &rules.state_dir)?)
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
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
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
        Command::Run {
            config,
            once,
            settle_ms,
            listen,
        } => {
            let cfg = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let opts = crate::app::RunOptions {
                once,
                settle: std::time::Duration::from_millis(settle_ms),
                print_alerts: true,
            };
            let service = crate::ops::service::ServiceOptions {
                config_path: config,
                listen,
                run: opts,
            };
            let summaries = crate::ops::service::run(cfg, service)?;
            for (name, s) in summaries {
                tracing::info!(
                    dataset = %name,
                    processed = s.processed,
                    quarantined = s.quarantined,
                    replayed = s.replayed,
                    alerts = s.alerts,
                    "stopped"
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
            let store = BaselineStore::new(&rules.baseline_dir);
            let pin = baseline.as_deref().or(rules.baseline_id.as_deref());
            let (id, base, _) = store.approved(&rules.dataset, pin)?;
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
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
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
    }
}

fn baseline(action: BaselineCommand) -> anyhow::Result<ExitCode> {
    match action {
        BaselineCommand::Build {
            config,
            dataset,
            by,
            paths,
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let pii = pii_key(&rules)?;
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
        } => {
            let rules = load_rules(&config, dataset.as_deref())?;
            let store = BaselineStore::new(&rules.baseline_dir);
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let a = store.approve(&id, &by, &now, &note)?;
            println!(
                "approved baseline {} of `{}` by {} at {}",
                a.baseline_id, a.dataset, a.approved_by, a.approved_at
            );
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
        writeln!(
            out,
            "\nslice {name}: {} rows; labels {{{}}}; duplicate share {:.2}%",
            slice.rows,
            labels.join(", "),
            slice.duplicate_share * 100.0
        )?;
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
                        .map(|v| format!("{} ({})", v.value, v.count))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            t.add_row([
                col.clone(),
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
    if findings.is_empty() {
        writeln!(out, "{}: no findings", file.display())?;
        return Ok(());
    }
    writeln!(out, "{}: {} finding(s)", file.display(), findings.len())?;
    for f in findings {
        writeln!(
            out,
            "  [{}] {} {} {} {}: {}",
            f.severity.as_str(),
            f.check,
            f.column.as_deref().unwrap_or("-"),
            f.trust_tag,
            f.verdict.as_str(),
            f.message
        )?;
    }
    Ok(())
}
