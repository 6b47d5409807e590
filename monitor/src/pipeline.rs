//! The one per-batch path: every source, and replay, hands its batches here.
//!
//! ```text
//!   Source::next ─▶ Batch { origin, id, sha256, input } ─▶ Worker::process ─▶ Source::ack(Outcome)
//!   (drop folder file, Kafka window, recorded file or topic range in a replay)
//!        already in the history ───────────────────────────────▶ Skipped
//!        refused unread (oversized) ─────────────── commit ─────▶ Quarantined
//!        the same bytes as a committed batch ────── commit ─────▶ Replayed
//!        decode + profile (pure core) ─ unreadable now ─────────▶ Retry
//!                                     └ unusable ── commit ─────▶ Quarantined
//!        compare (pure, with the evidence after the last commit of the batch's stream)
//!        commit: manifest, profile, alerts into the history;
//!                alerts into the outbox                ─────────▶ Processed
//! ```
//!
//! [`Worker::drive`] runs a [`Source`] to its end, one batch at a time
//! ([`Worker::step`]): the pipeline drives, the source yields. The source
//! acknowledges what [`Outcome`] says, after the commit: a drop
//! folder checkpoints the file (and moves a quarantined one aside), Kafka
//! commits the window's offsets. Nothing here knows where a batch came
//! from beyond its [`BatchOrigin`], so a live run and a replay of the same
//! inputs commit the same manifests and alerts. The decisions are the pure
//! core's ([`crate::profile`], [`crate::compare`]); this module owns their
//! order and the commit. The evidence is the history's, per input stream
//! ([`crate::source::stream`]): read before compare, moved on only by a
//! commit.

use sha2::{Digest, Sha256};

use crate::alert::{Alert, BatchContext};
use crate::app::{AppError, RunOptions, RunSummary, batch_time};
use crate::baseline::Baseline;
use crate::compare::{self, Check, Finding, Severity, Verdict};
use crate::config::model::Rules;
use crate::decode::DecodeError;
use crate::decode::json::Decoded;
use crate::decode::parquet::{ProfileFileError, profile_file};
use crate::pii::PiiKey;
use crate::profile::{BatchProfile, Profiler};
use crate::shutdown::Shutdown;
use crate::source::{Source, SourceCtx, SourceError};
use crate::store::history::{BatchStatus, History, HistoryError, MANIFEST_FORMAT, Manifest};

pub use crate::source::{Batch, BatchOrigin, Input, Outcome};

/// One dataset's worker: its rules, baseline and history (the
/// per-batch state of the pipeline). It knows nothing of its source.
pub struct Worker {
    pub(crate) rules: Rules,
    pub(crate) pii: PiiKey,
    pub(crate) baseline_id: String,
    pub(crate) baseline: Baseline,
    /// The baseline prepared for comparisons (bins, ranges), once.
    pub(crate) reference: compare::Reference,
    pub(crate) history: History,
    pub(crate) opts: RunOptions,
    pub summary: RunSummary,
    /// A capturing sink: when set, every alert committed is also pushed here
    /// (replay drains it after each batch).
    pub captured: Option<Vec<Alert>>,
    /// Alert delivery (rules with `alerts:`): enqueue before the checkpoint.
    pub(crate) notifier: Option<crate::alert::deliver::Notifier>,
}

pub(crate) fn history_err(rules: &Rules, source: HistoryError) -> AppError {
    AppError::History {
        dataset: rules.dataset.clone(),
        source,
    }
}

impl Worker {
    /// Drive a source until it is done (shutdown, or a `--once` run that
    /// handled what was there): each batch it yields is processed, then
    /// acknowledged. At the end, packs what a shared history has not
    /// packed yet, and stops the alert delivery (what is not delivered
    /// stays pending in the outbox).
    pub fn drive<S: Source>(
        mut self,
        mut source: S,
        shutdown: &Shutdown,
    ) -> Result<RunSummary, AppError> {
        while self.step(&mut source, shutdown)?.is_some() {}
        // a clean stop: a shared history's last manifests are packed
        self.history.pack_rest();
        if let Some(n) = self.notifier.take() {
            n.stop();
        }
        Ok(self.summary)
    }

    /// One batch of a source: next, [`Worker::process`], acknowledge.
    /// `None` when the source is done.
    pub fn step<S: Source>(
        &mut self,
        source: &mut S,
        shutdown: &Shutdown,
    ) -> Result<Option<Outcome>, AppError> {
        let ctx = SourceCtx {
            history: &self.history,
            shutdown,
        };
        let Some((batch, ack)) = source.next(&ctx).map_err(|e| self.source_err(e))? else {
            return Ok(None);
        };
        let outcome = self.process(batch)?;
        let ctx = SourceCtx {
            history: &self.history,
            shutdown,
        };
        source
            .ack(ack, &outcome, &ctx)
            .map_err(|e| self.source_err(e))?;
        Ok(Some(outcome))
    }

    pub(crate) fn source_err(&self, e: SourceError) -> AppError {
        let dataset = self.rules.dataset.clone();
        match e {
            SourceError::Kafka(e) => AppError::Kafka {
                dataset,
                source: Box::new(e),
            },
            SourceError::History(source) => AppError::History { dataset, source },
            SourceError::Unread { path, reason } => AppError::Unread {
                dataset,
                path,
                reason,
            },
            SourceError::Store { url, reason } => AppError::DropLocation {
                dataset,
                url,
                reason,
            },
        }
    }

    /// The one per-batch path (see the module's diagram).
    pub fn process(&mut self, batch: Batch) -> Result<Outcome, AppError> {
        let Batch {
            origin,
            id,
            sha256: sha,
            input,
        } = batch;
        if self.history.contains(&id) {
            self.summary.skipped += 1;
            return Ok(Outcome::Skipped);
        }
        let input = match input {
            Input::Refused(reason) => {
                self.rejected(&origin, &id, &sha, &reason)?;
                return Ok(Outcome::Quarantined(reason));
            }
            read => read,
        };
        if let Some(original) = self.history.batch_with_input(&sha).map(str::to_string) {
            self.replayed(&origin, &id, &sha, &original)?;
            return Ok(Outcome::Replayed);
        }
        let (profile, extra) = match input {
            Input::Refused(_) => unreachable!("refused inputs are committed above"),
            Input::Committed => {
                return Ok(Outcome::Retry(format!(
                    "batch {id} was said to be in the history, which does not hold it; it is read again"
                )));
            }
            Input::File(path) => match profile_file(&path, &self.rules, &self.pii) {
                Ok(profile) => (Ok(profile), Vec::new()),
                Err(ProfileFileError::Decode(DecodeError::Io { source, .. })) => {
                    return Ok(Outcome::Retry(source.to_string()));
                }
                // the reason names the file as its alerts do
                Err(e) => (
                    Err(e
                        .to_string()
                        .replace(&path.display().to_string(), &origin.source)),
                    Vec::new(),
                ),
            },
            Input::Decoded {
                decoded,
                rejected,
                extra,
            } => (self.profile_decoded(&decoded, &rejected), extra),
        };
        match profile {
            Ok(profile) => {
                self.processed_with(&origin, &id, &sha, profile, extra)?;
                Ok(Outcome::Processed)
            }
            Err(reason) => {
                self.rejected(&origin, &id, &sha, &reason)?;
                Ok(Outcome::Quarantined(reason))
            }
        }
    }

    /// Profile a message source's decoded record batches; an error when
    /// none could be used.
    fn profile_decoded(
        &self,
        decoded: &Decoded,
        rejected: &[(usize, String)],
    ) -> Result<BatchProfile, String> {
        if decoded.rows == 0 {
            return Err(match rejected.first() {
                Some((_, r)) => format!("every message of the batch was rejected; the first: {r}"),
                None => "the batch holds no record".to_string(),
            });
        }
        let mut p = Profiler::new(&self.rules, &self.pii);
        for b in &decoded.batches {
            p.update(b).map_err(|e| e.to_string())?;
        }
        Ok(p.finish())
    }

    fn context(
        &self,
        file: &BatchOrigin,
        id: &str,
        sha: &str,
        batch_time: Option<String>,
        rows: u64,
    ) -> BatchContext {
        BatchContext {
            dataset: self.rules.dataset.clone(),
            batch_id: id.to_string(),
            source: file.source.clone(),
            input_sha256: sha.to_string(),
            baseline_id: self.baseline_id.clone(),
            rules_hash: self.rules.rules_hash.clone(),
            batch_time,
            rows,
        }
    }

    fn manifest(&self, ctx: &BatchContext, status: BatchStatus, file: &BatchOrigin) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            seq: self.history.next_seq(),
            batch_id: ctx.batch_id.clone(),
            dataset: ctx.dataset.clone(),
            status,
            source: ctx.source.clone(),
            input_sha256: ctx.input_sha256.clone(),
            input_bytes: file.size,
            rows: ctx.rows,
            rows_by_tag: Default::default(),
            schema_fingerprint: None,
            baseline_id: Some(self.baseline_id.clone()),
            rules_hash: self.rules.rules_hash.clone(),
            dqmon_version: env!("CARGO_PKG_VERSION").to_string(),
            batch_time: ctx.batch_time.clone(),
            reason: None,
            findings: Vec::new(),
            alerts: Vec::new(),
            evidence: None,
            stream: Some(file.stream.clone()),
            stream_seq: None,
            writer: None,
            pooled: Default::default(),
        }
    }

    fn commit(
        &mut self,
        mut m: Manifest,
        findings: Vec<Finding>,
        ctx: &BatchContext,
        profile: Option<&BatchProfile>,
    ) -> Result<(), AppError> {
        m.alerts = findings.iter().map(|f| Alert::new(ctx, f)).collect();
        m.findings = findings;
        let observed = crate::ops::metrics::Committed::of(&m);
        let (seq, batch_id) = (m.seq, m.batch_id.clone());
        let committed = self
            .history
            .commit_new(m, profile)
            .map_err(|e| history_err(&self.rules, e))?;
        // a batch another writer committed first is theirs to notify
        let Some(alerts) = committed else {
            return Ok(());
        };
        observed.record(&alerts);
        self.summary.alerts += alerts.len() as u64;
        if let Some(c) = self.captured.as_mut() {
            c.extend(alerts.iter().cloned());
        }
        if let Some(n) = &self.notifier {
            // Durable before the checkpoint; delivery happens off this thread.
            n.enqueue(seq, &batch_id, &alerts)
                .map_err(|source| AppError::Outbox {
                    dataset: self.rules.dataset.clone(),
                    source,
                })?;
        } else if self.opts.print_alerts {
            for a in &alerts {
                println!("{}", a.line());
            }
        }
        Ok(())
    }

    /// Compare a batch's profile with the baseline and commit it with its
    /// findings (plus `extra` findings the source made, such as a malformed share).
    fn processed_with(
        &mut self,
        file: &BatchOrigin,
        id: &str,
        sha: &str,
        profile: BatchProfile,
        extra: Vec<Finding>,
    ) -> Result<(), AppError> {
        // another replica may have moved the stream on (a partition that
        // came here in a rebalance); a history of one writer knows
        self.history
            .follow_stream(&file.stream)
            .map_err(|e| history_err(&self.rules, e))?;
        let prior = self.history.stream_evidence(&file.stream);
        // the fleet's other streams, as far as this replica sees them now
        // (recorded in the manifest, so a replay pools the same)
        let siblings = self
            .history
            .fleet_siblings(&file.stream, id)
            .map_err(|e| history_err(&self.rules, e))?;
        let sibling_states: Vec<&compare::EvidenceState> =
            siblings.iter().map(|(.., e)| e).collect();
        let at = compare::Position {
            prior: &prior,
            siblings: &sibling_states,
            batch_id: id,
            baseline_id: &self.baseline_id,
        };
        let (mut findings, evidence) =
            compare::compare_sequential(&profile, &self.reference, &self.baseline, &self.rules, at);
        findings.extend(extra);
        let ctx = self.context(
            file,
            id,
            sha,
            batch_time(&profile, &self.rules),
            profile.rows,
        );
        let mut m = self.manifest(&ctx, BatchStatus::Processed, file);
        m.stream_seq = Some(self.history.next_stream_seq(&file.stream));
        m.pooled = siblings
            .iter()
            .filter(|(.., e)| evidence.pools_with(e))
            .map(|(s, seq, _)| (s.clone(), *seq))
            .collect();
        m.rows_by_tag = profile
            .tags
            .iter()
            .map(|(t, s)| (t.clone(), s.rows))
            .collect();
        m.schema_fingerprint = Some(hex::encode(
            &Sha256::digest(serde_json::to_vec(&profile.schema).expect("schema serializes"))[..8],
        ));
        tracing::info!(
            dataset = %self.rules.dataset,
            batch_id = %id,
            source = %file.name,
            rows = profile.rows,
            findings = findings.len(),
            "batch processed"
        );
        // the commit moves the stream's evidence on
        m.evidence = Some(evidence);
        self.commit(m, findings, &ctx, Some(&profile))?;
        self.summary.processed += 1;
        Ok(())
    }

    /// Commit a batch whose bytes are already in the history under another id.
    fn replayed(
        &mut self,
        file: &BatchOrigin,
        id: &str,
        sha: &str,
        original: &str,
    ) -> Result<(), AppError> {
        let ctx = self.context(file, id, sha, None, 0);
        let mut m = self.manifest(&ctx, BatchStatus::Replayed, file);
        m.reason = Some(format!("same bytes as batch {original}"));
        let finding = Finding::batch_level(
            Check::ReplayedBatch,
            Verdict::DataQuality,
            Severity::Warning,
            format!(
                "{} has the same bytes (SHA-256 {sha}) as batch {original}, which is already in the history; it was not processed again",
                file.name
            ),
        );
        tracing::warn!(dataset = %self.rules.dataset, batch_id = %id, source = %file.name, original = %original, "replayed batch");
        self.commit(m, vec![finding], &ctx, None)?;
        self.summary.replayed += 1;
        Ok(())
    }

    /// Commit a batch that could not be profiled at all (status quarantined,
    /// with a malformed-input finding); moving its input aside is the source's job.
    fn rejected(
        &mut self,
        file: &BatchOrigin,
        id: &str,
        sha: &str,
        reason: &str,
    ) -> Result<(), AppError> {
        let ctx = self.context(file, id, sha, None, 0);
        let mut m = self.manifest(&ctx, BatchStatus::Quarantined, file);
        m.reason = Some(reason.to_string());
        let finding = Finding::batch_level(
            Check::MalformedRecords,
            Verdict::DataQuality,
            Severity::Warning,
            format!("{} was quarantined: {reason}", file.name),
        );
        tracing::warn!(dataset = %self.rules.dataset, batch_id = %id, source = %file.name, reason = %reason, "input quarantined");
        self.commit(m, vec![finding], &ctx, None)?;
        self.summary.quarantined += 1;
        Ok(())
    }

    /// Start a stream from this evidence instead of the history's (a
    /// replay of a part of the live history continues each stream from
    /// what live had before it).
    pub fn continue_stream(&mut self, stream: &str, evidence: compare::EvidenceState) {
        self.history.seed_stream(stream, evidence);
    }

    /// Pool each batch with the evidence live pooled it with (a replay;
    /// see [`crate::store::history::History::pin_siblings`]).
    pub fn pin_siblings(&mut self, pinned: crate::store::history::streams::Pinned) {
        self.history.pin_siblings(pinned);
    }

    /// The dataset's rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The PII key profiles are built with.
    pub fn pii(&self) -> &PiiKey {
        &self.pii
    }

    /// Whether the run stops once the input present at start is handled.
    pub fn once(&self) -> bool {
        self.opts.once
    }

    /// The dataset's history (read-only: commits go through the worker).
    pub fn history(&self) -> &History {
        &self.history
    }
}
