//! Liveness and readiness: what `/healthz` and `/readyz` answer.
//!
//! The daemon tells this registry which datasets it is starting
//! ([`Health::expect`]) and when each one is open ([`Health::opened`]: its
//! approved baseline was loaded and its SHA-256 verified, and its source
//! opened, the drop folder's checkpoint read from the state folder). A streaming
//! source reports whether it is connected with [`Health::source_status`];
//! a drop folder is checked live instead. Readiness is computed when asked:
//! every dataset must be open, its source connected (the drop folder
//! listable), its baseline verified, and its state folder writable (a probe
//! file is created, written, synced and removed there each time).
//!
//! This module only observes: it never changes state, never creates the
//! state folder (a missing folder is not ready), and its messages carry
//! paths and ids, never data values or secrets.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use crate::config::model::{Rules, SourceRule};

/// The process-wide registry that the daemon reports to and the HTTP
/// server reads.
pub fn global() -> &'static Health {
    static GLOBAL: OnceLock<Health> = OnceLock::new();
    GLOBAL.get_or_init(Health::default)
}

/// What is known about every dataset of the running configuration.
#[derive(Debug, Default)]
pub struct Health {
    datasets: Mutex<BTreeMap<String, DatasetHealth>>,
}

#[derive(Debug, Clone)]
struct DatasetHealth {
    state_dir: PathBuf,
    source: SourceState,
    /// The approved baseline, once loaded and verified.
    baseline: Option<String>,
    /// Why monitoring of the dataset is stopped (its baseline was refused).
    stopped: Option<String>,
}

#[derive(Debug, Clone)]
enum SourceState {
    /// A drop folder: checked live (it must be listable).
    DropFolder(PathBuf),
    /// A source that reports its own state (e.g. a Kafka consumer).
    Reported { connected: bool, detail: String },
}

/// One readiness check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub ok: bool,
    /// A sentence for the person reading the probe's output.
    pub detail: String,
}

/// One dataset's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetReadiness {
    pub ready: bool,
    pub source: CheckResult,
    pub state_dir: CheckResult,
    pub baseline: CheckResult,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub datasets: BTreeMap<String, DatasetReadiness>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DatasetHealth>> {
        self.datasets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The daemon starts (or restarts after a reload) with these datasets:
    /// each is not ready until it is [`opened`](Health::opened).
    pub fn expect(&self, datasets: &[Rules]) {
        let mut map = self.lock();
        map.clear();
        for r in datasets {
            let source = match &r.source {
                SourceRule::ParquetDrop { path, .. } => SourceState::DropFolder(path.clone()),
                _ => SourceState::Reported {
                    connected: false,
                    detail: "the source has not connected yet".into(),
                },
            };
            map.insert(
                r.dataset.clone(),
                DatasetHealth {
                    state_dir: r.state_dir.clone(),
                    source,
                    baseline: None,
                    stopped: None,
                },
            );
        }
    }

    /// A dataset's worker is open: its approved baseline `baseline_id` was
    /// loaded and its hash verified.
    pub fn opened(&self, dataset: &str, baseline_id: &str) {
        if let Some(d) = self.lock().get_mut(dataset) {
            d.baseline = Some(baseline_id.to_string());
            d.stopped = None;
        }
    }

    /// Monitoring of a dataset is stopped: its approved baseline was
    /// refused (`reason`). It stays not ready until a reload or restart
    /// opens it with a baseline that verifies.
    pub fn stopped(&self, dataset: &str, reason: &str) {
        if let Some(d) = self.lock().get_mut(dataset) {
            d.baseline = None;
            d.stopped = Some(reason.to_string());
        }
    }

    /// A streaming source reports whether it is connected (`detail` says
    /// to what, or why not; no credentials).
    pub fn source_status(&self, dataset: &str, connected: bool, detail: &str) {
        if let Some(d) = self.lock().get_mut(dataset) {
            d.source = SourceState::Reported {
                connected,
                detail: detail.to_string(),
            };
        }
    }

    /// Compute readiness now (this does file I/O: a probe file in every
    /// state folder).
    pub fn readiness(&self) -> Readiness {
        let snapshot: Vec<(String, DatasetHealth)> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut datasets = BTreeMap::new();
        for (name, d) in snapshot {
            let source = match &d.source {
                SourceState::DropFolder(p) => match std::fs::read_dir(p) {
                    Ok(_) => ok(format!("the drop folder {} is readable", p.display())),
                    Err(e) => fail(format!(
                        "the drop folder {} cannot be listed ({e}); check that it is mounted and readable by this user",
                        p.display()
                    )),
                },
                SourceState::Reported { connected, detail } => CheckResult {
                    ok: *connected,
                    detail: detail.clone(),
                },
            };
            let state_dir = match probe_writable(&d.state_dir) {
                Ok(()) => ok(format!(
                    "the state folder {} is writable",
                    d.state_dir.display()
                )),
                Err(e) => fail(format!(
                    "the state folder {} is not writable ({e}); check the volume is mounted read-write, not full, and owned by this user",
                    d.state_dir.display()
                )),
            };
            let baseline = match (&d.baseline, &d.stopped) {
                (_, Some(reason)) => fail(format!(
                    "monitoring of this dataset is STOPPED: {reason}; approve a baseline that verifies, then reload (SIGHUP) or restart"
                )),
                (Some(id), None) => ok(format!("approved baseline {id} loaded and verified")),
                (None, None) => fail(
                    "the dataset is starting: its approved baseline and its source are not open yet".to_string(),
                ),
            };
            let ready = source.ok && state_dir.ok && baseline.ok;
            datasets.insert(
                name,
                DatasetReadiness {
                    ready,
                    source,
                    state_dir,
                    baseline,
                },
            );
        }
        Readiness {
            ready: !datasets.is_empty() && datasets.values().all(|d| d.ready),
            datasets,
        }
    }
}

fn ok(detail: String) -> CheckResult {
    CheckResult { ok: true, detail }
}

fn fail(detail: String) -> CheckResult {
    CheckResult { ok: false, detail }
}

/// Create, write, sync and remove a probe file in `dir`: what the history
/// does for every batch, in miniature. Never creates `dir` itself.
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let mut f = tempfile::Builder::new()
        .prefix(".dqmon-ready-probe")
        .tempfile_in(dir)?;
    f.write_all(b"ok")?;
    f.as_file().sync_all()?;
    f.close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Rules;

    fn rules(dir: &Path) -> Rules {
        let mut r = Rules::for_tests("h", Vec::new());
        r.state_dir = dir.join("state/h");
        r.source = SourceRule::ParquetDrop {
            path: dir.join("drop"),
            poll_interval_ms: 100,
            pattern: "*.parquet".into(),
        };
        r
    }

    #[test]
    fn ready_only_when_open_with_listable_source_and_writable_state() {
        let dir = tempfile::tempdir().unwrap();
        let r = rules(dir.path());
        let h = Health::default();
        assert!(!h.readiness().ready, "no dataset: not ready");
        h.expect(std::slice::from_ref(&r));
        let rd = h.readiness();
        assert!(!rd.ready);
        let d = &rd.datasets["h"];
        assert!(!d.baseline.ok && !d.source.ok && !d.state_dir.ok, "{d:?}");

        std::fs::create_dir_all(&r.state_dir).unwrap();
        std::fs::create_dir_all(dir.path().join("drop")).unwrap();
        h.opened("h", "abc");
        assert!(h.readiness().ready, "{:?}", h.readiness());
        // The probe leaves nothing behind.
        assert_eq!(std::fs::read_dir(&r.state_dir).unwrap().count(), 0);

        // The state folder replaced by a file: not writable, even for root.
        let moved = dir.path().join("moved");
        std::fs::rename(&r.state_dir, &moved).unwrap();
        std::fs::write(&r.state_dir, b"not a folder").unwrap();
        let rd = h.readiness();
        assert!(!rd.ready);
        assert!(!rd.datasets["h"].state_dir.ok);
        assert!(rd.datasets["h"].source.ok && rd.datasets["h"].baseline.ok);

        std::fs::remove_file(&r.state_dir).unwrap();
        std::fs::rename(&moved, &r.state_dir).unwrap();
        assert!(h.readiness().ready);

        h.source_status("h", false, "broker 127.0.0.1:9 unreachable");
        let rd = h.readiness();
        assert!(!rd.ready);
        assert_eq!(
            rd.datasets["h"].source.detail,
            "broker 127.0.0.1:9 unreachable"
        );
    }

    #[test]
    fn a_stopped_dataset_is_not_ready_and_says_why_while_the_others_are() {
        let dir = tempfile::tempdir().unwrap();
        let a = rules(&dir.path().join("a"));
        let mut b = rules(&dir.path().join("b"));
        b.dataset = "b".into();
        let h = Health::default();
        h.expect(&[a.clone(), b.clone()]);
        for r in [&a, &b] {
            std::fs::create_dir_all(&r.state_dir).unwrap();
            if let SourceRule::ParquetDrop { path, .. } = &r.source {
                std::fs::create_dir_all(path).unwrap();
            }
        }
        h.opened("h", "abc");
        h.stopped("b", "baseline 123 was refused: its approval is not signed");
        let rd = h.readiness();
        assert!(!rd.ready, "one dataset stopped: the process is not ready");
        assert!(rd.datasets["h"].ready, "{rd:?}");
        let stopped = &rd.datasets["b"];
        assert!(!stopped.ready && !stopped.baseline.ok);
        assert!(
            stopped.baseline.detail.contains("STOPPED")
                && stopped.baseline.detail.contains("not signed"),
            "{}",
            stopped.baseline.detail
        );
    }
}
