//! The command line as clap parses it: commands, flags, their help.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::outbox;

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
