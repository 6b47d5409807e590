//! `dqmon-eval`: writes dqmon's synthetic suite and measures detection on
//! it. A tool for the people who change dqmon's checks, not part of the
//! monitor: the production `dqmon` binary does not carry the generator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dqmon-eval",
    version,
    about = "Measure dqmon's detection on its synthetic suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
            let rules = dqmon::cli::load_rules(&config, dataset.as_deref())?;
            if streams {
                let mut suite = dqmon_eval::streams::StreamSuite {
                    campaigns,
                    ..Default::default()
                };
                if rows != 20_000 {
                    suite.rows = rows;
                }
                let report = dqmon_eval::streams::evaluate_streams(&rules, suite)?;
                print!("{}", report.table(&rules));
                return Ok(());
            }
            let tmp;
            let dir = match out {
                Some(d) => d,
                None => {
                    tmp = tempfile::tempdir()?;
                    tmp.path().to_path_buf()
                }
            };
            let eval = dqmon_eval::evaluate(&rules, &dir, rows, seed)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&eval)?);
            } else {
                print!("{}", eval.table());
            }
        }
        Command::Fixtures { out, rows, seed } => {
            let files = dqmon_fixtures::write_suite(&out, rows, seed)?;
            println!("wrote {} files under {}", files.len(), out.display());
        }
    }
    Ok(())
}
