//! Replay: recorded Parquet files, or a Kafka topic range, through the
//! daemon's own per-batch code.
//!
//! `replay` owns choosing and ordering the recorded inputs, the replay's
//! state folder, the `--alerts-out` file and the progress bar. The files
//! are yielded by the drop-folder source over recorded files
//! ([`crate::source::drop_folder::DropSource::recorded`]) and every Kafka
//! window is decoded by the Kafka source's `WindowDecoder`, both into the
//! one per-batch path ([`crate::pipeline::Worker::process`]: profile,
//! compare, history commit), the very code `run` uses, with a capturing
//! sink, so replay is not a second implementation of the pipeline. It must
//! not compute anything a live run would not: the batch id
//! (dataset, file name, SHA-256 of the bytes), the batch time (from the
//! data), the rules, the approved baseline and the PII key are the live
//! dataset's, and sources are named as if the files were in the live drop
//! folder, so alerts come out byte-identical to the live ones. There is no
//! clock: the drop folder's settle logic is not involved.
//!
//! It must not touch the live state: its history goes to a separate folder
//! (`<state>/replay` by default, recreated on each replay) that it holds
//! the writer lock of ([`crate::store::lock`]: a replay pointed at a folder
//! another process writes fails at once), inputs are never moved to
//! quarantine, the PII key is only read (a replay never creates one), and
//! nothing is delivered unless asked; when asked (`--deliver`), alerts go
//! to stdout or a file of the caller's, never to the receivers of the
//! rules' `alerts:` section: a replay never pages anyone.
//!
//! Kafka ranges ([`replay_kafka`]) are read by
//! [`crate::source::kafka_range`]: it assigns partitions itself under a
//! group id that is not the live one and never commits, so the live group's
//! offsets are never touched. Batch boundaries are the live ones where the
//! dataset's live history recorded the range (`kafka:topic/p@first-last`),
//! and batches run in the live commit order, so alerts come out
//! byte-identical to the live `alerts.jsonl`; offsets no live manifest
//! covers are cut by batch-id header, `max_records` and `max_bytes`, never
//! by time. Bad messages are recorded in the history as live does (the
//! malformed-share finding, the rows left out) but never produced to the
//! dead-letter topic.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::alert::Alert;
use crate::app::{AppError, RunOptions, RunSummary, Worker};
use crate::config::model::{Rules, SourceRule};
use crate::shutdown::Shutdown;
use crate::source::drop_folder::DropSource;
use crate::source::kafka::WindowDecoder;
use crate::source::kafka_range::{KafkaRange, KafkaRangeError, RangeReader, live_spans};
use crate::source::parquet_drop::DroppedFile;
use crate::store::lock::{LOCK_FILE, LockError, WriterLock};

/// The marker that says a folder is a disposable replay state folder.
const MARKER: &str = ".dqmon-replay";

/// In which order recorded files are replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayOrder {
    /// By file name, then path: the same order wherever the files are copied.
    #[default]
    Name,
    /// Oldest modification time first, then name: the live daemon's order.
    Mtime,
}

/// How a replay runs.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// History folder of the replay. `None`: `<dataset state>/replay`,
    /// recreated on each replay. When given, an existing history there is
    /// continued (batches already in it are skipped).
    pub state_dir: Option<PathBuf>,
    /// Also write the replay's alerts here, one JSON object per line, in the
    /// same bytes as the live alerts file.
    pub alerts_out: Option<PathBuf>,
    pub order: ReplayOrder,
    /// Name sources by the path given (instead of the live drop folder).
    pub keep_paths: bool,
    /// Deliver alerts, one readable line each, to stdout or a file; never
    /// to the receivers of the rules.
    pub deliver: Option<Delivery>,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// Where a replay delivers its alerts when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One line per alert on stdout, as `run` prints them.
    Stdout,
    /// The same lines, appended to this file.
    File(PathBuf),
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Files replayed (Parquet).
    pub files: u64,
    /// Batches read from Kafka, and their messages.
    pub batches: u64,
    pub messages: u64,
    /// Kafka batches cut at the boundaries the live history recorded.
    pub live_boundaries: u64,
    pub rows: u64,
    pub run: RunSummary,
    pub state_dir: PathBuf,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "`{input}` matches no Parquet file; give files, folders or globs such as 'drops/2024-06-*.parquet'"
    )]
    NoMatch { input: String },
    #[error("`{input}` is not a valid glob: {reason}")]
    BadGlob { input: String, reason: String },
    #[error("could not read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} exists and is not a replay state folder; choose an empty folder with --state-dir, or delete it"
    )]
    NotReplayState { path: PathBuf },
    #[error(
        "could not read {path} (the log above says why); check its permissions and rerun the replay"
    )]
    Unread { path: PathBuf },
    #[error(
        "give either Parquet inputs or a Kafka range (--kafka-from), not both; replay them in two runs"
    )]
    FilesAndKafka,
    #[error(
        "nothing to replay; give Parquet files, folders or globs, or a Kafka range with --kafka-from (for a dataset with a Kafka source)"
    )]
    NoInput,
    #[error(
        "dataset `{dataset}` does not read Kafka (its source is {source_kind}), so there is no topic range to replay; give its recorded Parquet files instead of --kafka-from"
    )]
    NotKafka {
        dataset: String,
        source_kind: &'static str,
    },
    #[error(
        "could not read the live history at {path}, which gives the live batch boundaries: {reason}; make it readable by this user (a replay only reads it) and rerun"
    )]
    LiveHistory { path: PathBuf, reason: String },
    #[error(transparent)]
    Kafka(#[from] KafkaRangeError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    PiiKey(#[from] crate::pii::PiiKeyError),
    #[error(transparent)]
    App(#[from] AppError),
}

/// Batches the worker has accounted for, whatever happened to them.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Files named by the inputs: files as given, folders expanded to their
/// files matching `pattern`, anything else read as a glob. Duplicates are
/// dropped.
pub fn expand_inputs(inputs: &[String], pattern: &str) -> Result<Vec<PathBuf>, ReplayError> {
    let pat = glob::Pattern::new(pattern).map_err(|e| ReplayError::BadGlob {
        input: pattern.to_string(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeSet::new();
    for input in inputs {
        let p = Path::new(input);
        let mut matched = 0usize;
        if p.is_dir() {
            for entry in fs::read_dir(p).map_err(io(p))? {
                let path = entry.map_err(io(p))?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                if path.is_file()
                    && name.is_some_and(|n| {
                        pat.matches(&n) && !crate::source::parquet_drop::is_temporary(&n)
                    })
                {
                    matched += 1;
                    out.insert(path);
                }
            }
        } else if p.is_file() {
            matched += 1;
            out.insert(p.to_path_buf());
        } else {
            let paths = glob::glob(input).map_err(|e| ReplayError::BadGlob {
                input: input.clone(),
                reason: e.to_string(),
            })?;
            for path in paths.flatten() {
                if path.is_file() {
                    matched += 1;
                    out.insert(path);
                }
            }
        }
        if matched == 0 {
            return Err(ReplayError::NoMatch {
                input: input.clone(),
            });
        }
    }
    Ok(out.into_iter().collect())
}

fn recorded(path: &Path) -> Result<DroppedFile, ReplayError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    Ok(DroppedFile {
        path: path.to_path_buf(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: meta.len(),
        mtime_ns,
    })
}

/// Rows of a Parquet file from its footer (0 when it is not readable
/// Parquet; the pipeline will quarantine it).
fn footer_rows(path: &Path) -> u64 {
    use parquet::file::reader::FileReader;
    fs::File::open(path)
        .ok()
        .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
        .map_or(0, |r| r.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Prepare the replay's state folder and lock it for writing; returns it
/// with its lock. A folder given with `--state-dir` is continued; the
/// default one is emptied first (once locked, so that two replays never
/// wipe each other's work).
fn state_folder(
    rules: &Rules,
    chosen: Option<&Path>,
) -> Result<(PathBuf, WriterLock), ReplayError> {
    if let Some(dir) = chosen {
        let lock = WriterLock::acquire(dir)?;
        return Ok((dir.to_path_buf(), lock));
    }
    let dir = rules.state_dir.join("replay");
    let is_lock = |e: &fs::DirEntry| e.file_name() == LOCK_FILE;
    if dir.exists() {
        let mut entries = fs::read_dir(&dir).map_err(io(&dir))?;
        let foreign = entries.any(|e| e.is_ok_and(|e| !is_lock(&e)));
        if foreign && !dir.join(MARKER).exists() {
            return Err(ReplayError::NotReplayState { path: dir });
        }
    }
    let lock = WriterLock::acquire(&dir)?;
    for entry in fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        if is_lock(&entry) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().map_err(io(&path))?.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    fs::write(
        dir.join(MARKER),
        "state of the last `dqmon replay`; recreated by the next one\n",
    )
    .map_err(io(&dir))?;
    Ok((dir, lock))
}

/// Bytes of files, or (`messages`) Kafka messages.
fn progress_bar(total: u64, enabled: bool, messages: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let counts = if messages {
        "{human_pos}/{human_len} messages"
    } else {
        "{binary_bytes}/{binary_total_bytes}"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {counts} {{msg}} ETA {{eta}}"
        ))
        .expect("the progress template is valid"),
    );
    bar
}

/// Replay recorded Parquet files of one dataset.
pub fn replay(
    rules: Rules,
    inputs: &[String],
    opts: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    // before anything is read or written: without the live key there is nothing to replay
    let pii = crate::app::dataset_pii_key(&rules, crate::app::PiiAccess::ReadOnly)?;
    let (pattern, live_folder) = match &rules.source {
        SourceRule::ParquetDrop { path, pattern, .. } => (pattern.clone(), Some(path.clone())),
        // named as live names them: `<url>/<object name>`
        SourceRule::ObjectDrop { url, pattern, .. } => (
            pattern.clone(),
            Some(PathBuf::from(url.trim_end_matches('/'))),
        ),
        _ => ("*.parquet".to_string(), None),
    };
    let mut files = expand_inputs(inputs, &pattern)?
        .iter()
        .map(|p| recorded(p))
        .collect::<Result<Vec<_>, _>>()?;
    match opts.order {
        ReplayOrder::Name => files.sort_by(|a, b| (&a.name, &a.path).cmp(&(&b.name, &b.path))),
        ReplayOrder::Mtime => files
            .sort_by(|a, b| (a.mtime_ns, &a.name, &a.path).cmp(&(b.mtime_ns, &b.name, &b.path))),
    }
    // Evidence accumulates per stream in commit order (see `order`)
    let live = live_manifests(&rules)?;
    let mut identified = Vec::with_capacity(files.len());
    for f in files {
        // as live does: an oversized file is known by its size, never read
        let (_, id) =
            crate::app::identify(&rules, &f.name, &f.path, f.size).map_err(io(&f.path))?;
        identified.push((id, f));
    }
    let order::LiveOrder {
        files,
        streams,
        priors,
    } = order::live_order(&live, identified);
    let (state_dir, _lock) = state_folder(&rules, opts.state_dir.as_deref())?;
    let source_root = if opts.keep_paths { None } else { live_folder };
    let mut source = DropSource::recorded(&rules, files.clone(), source_root).with_streams(streams);
    let mut worker = Worker::open_replay(rules, replay_run_options(), &state_dir, pii)?;
    worker.captured = Some(Vec::new());
    worker.pin_siblings(order::pooled_siblings(&live));
    if worker.history().next_seq() == 0 {
        for (stream, prior) in priors {
            worker.continue_stream(&stream, prior);
        }
    }

    let mut out = Outputs::create(opts)?;
    let total_bytes = files.iter().map(|f| f.size).sum();
    let bar = progress_bar(total_bytes, opts.progress, false);
    let started = std::time::Instant::now();
    let mut summary = ReplaySummary {
        state_dir: state_dir.clone(),
        ..Default::default()
    };
    let never = Shutdown::default();
    for (i, file) in files.iter().enumerate() {
        summary.rows += footer_rows(&file.path);
        // one batch per recorded file; a file that cannot be read is an
        // error (a replay has no later to retry it, and must not drop a
        // batch silently)
        match worker.step(&mut source, &never) {
            Ok(Some(_)) => {}
            Ok(None) => unreachable!("a recorded source yields each of its files"),
            Err(AppError::Unread { path, .. }) => return Err(ReplayError::Unread { path }),
            Err(e) => return Err(e.into()),
        }
        summary.files += 1;
        out.write(&mut worker)?;
        bar.inc(file.size);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "batch {}/{} · {:.0} rows/s",
            i + 1,
            files.len(),
            summary.rows as f64 / secs
        ));
    }
    bar.finish_and_clear();
    out.finish()?;
    summary.run = worker.summary.clone();
    Ok(summary)
}

/// The live history's manifests (the shared history's when the dataset
/// has one), read only.
fn live_manifests(rules: &Rules) -> Result<Vec<crate::store::history::Manifest>, ReplayError> {
    let objects = crate::app::history_objects(rules, &rules.state_dir)?;
    crate::store::history::read_manifests_from(objects.as_ref()).map_err(|e| {
        ReplayError::LiveHistory {
            path: objects.locate(""),
            reason: e.to_string(),
        }
    })
}

/// How a replay's worker runs: once, printing nothing itself (the replay
/// writes the captured alerts where it was asked to).
fn replay_run_options() -> RunOptions {
    RunOptions {
        once: true,
        print_alerts: false,
        ..Default::default()
    }
}

/// An output file and its path (for errors).
type OutFile = (BufWriter<fs::File>, PathBuf);

/// Where each batch's captured alerts go: the `--alerts-out` file (in the
/// bytes of the live alerts file) and the delivery (`--deliver`: one
/// readable line per alert on stdout, or appended to `--deliver-to`).
struct Outputs {
    alerts_out: Option<OutFile>,
    deliver: Option<Delivery>,
    deliver_file: Option<OutFile>,
}

impl Outputs {
    fn create(opts: &ReplayOptions) -> Result<Outputs, ReplayError> {
        let open = |p: &Path, append: bool| -> Result<OutFile, ReplayError> {
            if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let f = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(p)
                .map_err(io(p))?;
            Ok((BufWriter::new(f), p.to_path_buf()))
        };
        let alerts_out = match &opts.alerts_out {
            Some(p) => Some(open(p, false)?),
            None => None,
        };
        let deliver_file = match &opts.deliver {
            Some(Delivery::File(p)) => Some(open(p, true)?),
            _ => None,
        };
        Ok(Outputs {
            alerts_out,
            deliver: opts.deliver.clone(),
            deliver_file,
        })
    }

    /// Drain the worker's capturing sink into the outputs.
    fn write(&mut self, worker: &mut Worker) -> Result<(), ReplayError> {
        let alerts: Vec<Alert> = worker.captured.replace(Vec::new()).unwrap_or_default();
        if alerts.is_empty() {
            return Ok(());
        }
        if let Some((w, path)) = self.alerts_out.as_mut() {
            for a in &alerts {
                serde_json::to_writer(&mut *w, a).expect("alerts serialize");
                w.write_all(b"\n").map_err(io(path))?;
            }
        }
        match (&self.deliver, self.deliver_file.as_mut()) {
            (Some(Delivery::File(_)), Some((w, path))) => {
                for a in &alerts {
                    writeln!(w, "{}", a.line()).map_err(io(path))?;
                }
                w.flush().map_err(io(path))?;
            }
            (Some(Delivery::Stdout), _) => {
                let mut out = std::io::stdout().lock();
                for a in &alerts {
                    // a closed stdout (a pipe to `head`) is no reason to stop the replay
                    let _ = writeln!(out, "{}", a.line());
                }
                let _ = out.flush();
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ReplayError> {
        for (w, path) in [self.alerts_out, self.deliver_file].into_iter().flatten() {
            let f = w.into_inner().map_err(|e| io(&path)(e.into_error()))?;
            f.sync_all().map_err(io(&path))?;
        }
        Ok(())
    }
}

/// Replay Parquet inputs or a Kafka range, whichever was given (exactly one).
pub fn replay_inputs(
    rules: Rules,
    inputs: &[String],
    kafka: Option<&KafkaRange>,
    opts: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    match (inputs.is_empty(), kafka) {
        (false, Some(_)) => Err(ReplayError::FilesAndKafka),
        (true, None) => Err(ReplayError::NoInput),
        (true, Some(range)) => replay_kafka(rules, range, opts),
        (false, None) => replay(rules, inputs, opts),
    }
}

/// Replay a range of a Kafka dataset's topics (see the module doc).
pub fn replay_kafka(
    rules: Rules,
    range: &KafkaRange,
    opts: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    let cfg = match &rules.source {
        SourceRule::Kafka(k) => k.clone(),
        other => {
            return Err(ReplayError::NotKafka {
                dataset: rules.dataset.clone(),
                source_kind: match other {
                    SourceRule::ParquetDrop { .. } => "a Parquet drop folder",
                    SourceRule::ObjectDrop { .. } => "a Parquet drop location on an object store",
                    _ => "none",
                },
            });
        }
    };
    // the live history, read only: its batch boundaries and commit order
    let manifests = live_manifests(&rules)?;
    let pii = crate::app::dataset_pii_key(&rules, crate::app::PiiAccess::ReadOnly)?;
    let live = live_spans(&manifests, &cfg.topics);
    let mut reader = RangeReader::open(&cfg, range, &live)?;
    for r in &reader.ranges {
        tracing::info!(topic = %r.topic, partition = r.partition, from = r.start, to = r.end, "replaying a kafka range");
    }
    let (state_dir, _lock) = state_folder(&rules, opts.state_dir.as_deref())?;
    let decoder = WindowDecoder::new(&rules, &cfg);
    let mut worker = Worker::open_replay(rules, replay_run_options(), &state_dir, pii)?;
    worker.captured = Some(Vec::new());
    worker.pin_siblings(order::pooled_siblings(&manifests));
    let mut out = Outputs::create(opts)?;
    let bar = progress_bar(reader.planned_messages, opts.progress, true);
    let started = std::time::Instant::now();
    let mut summary = ReplaySummary {
        state_dir: state_dir.clone(),
        live_boundaries: reader.live_segments as u64,
        ..Default::default()
    };
    while let Some(w) = reader.next_window()? {
        crate::ops::metrics::batch_started();
        let n = w.msgs.len() as u64;
        let p = decoder.prepare(worker.history(), &w);
        summary.rows += p.rows();
        worker.process(decoder.batch_of(p))?;
        summary.batches += 1;
        summary.messages += n;
        out.write(&mut worker)?;
        bar.inc(n);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "batch {} · {:.0} rows/s",
            summary.batches,
            summary.rows as f64 / secs
        ));
    }
    bar.finish_and_clear();
    out.finish()?;
    summary.run = worker.summary.clone();
    Ok(summary)
}

mod order;
#[cfg(test)]
mod tests;
