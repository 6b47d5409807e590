//! State objects on a real S3-compatible server: moto's S3 server (PyPI
//! `moto[server]`, installed by `tests/run` into `.tools/venv`), started per
//! test on a free loopback port. The backend's one conformance suite runs
//! against it: get, put, create-if-absent (the server's `If-None-Match: *`),
//! listing, deletion, key checks, and writers racing for one key. Then
//! replicas of `dqmon run` share a drop location on it
//! (`parquet_drop: { path: s3://... }`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dqmon::store::backend::{Backend, Put, conformance};
use dqmon::store::object::ObjectBackend;
use dqmon_fixtures::Scenario;

use crate::common::{dqmon_bin, fixture_rules, repo_root, stderr, stdout, write_batch};

/// Where moto's server is: beside the venv's python that `tests/run`
/// exports, or in `.tools/venv`; otherwise a clear failure.
fn moto_server() -> PathBuf {
    let beside_python = std::env::var("DQMON_TEST_PYTHON")
        .ok()
        .and_then(|p| PathBuf::from(p).parent().map(|d| d.join("moto_server")));
    let candidates = beside_python
        .into_iter()
        .chain([repo_root().join(".tools/venv/bin/moto_server")]);
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "the object store tests need moto's S3 server and found none (beside DQMON_TEST_PYTHON, .tools/venv/bin); \
         run the suite with `tests/run`, which installs it from .ci/requirements.txt"
    );
}

/// One S3-compatible server for one test, stopped when dropped.
pub(crate) struct S3Server {
    child: Child,
    addr: String,
}

impl S3Server {
    pub(crate) fn start() -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = S3Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&server.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Create a bucket (moto takes an unsigned `PUT /<bucket>`).
    pub(crate) fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
    }

    /// A backend on `s3://<bucket>/<prefix>` of this server, configured the
    /// way a deployment would be (the `object_store` keys, here given
    /// directly instead of through `AWS_*` variables).
    pub(crate) fn backend(&self, bucket: &str, prefix: &str) -> ObjectBackend {
        let options = [
            ("aws_endpoint", format!("http://{}", self.addr)),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        ObjectBackend::from_url_with(&format!("s3://{bucket}/{prefix}"), options).unwrap()
    }
}

impl S3Server {
    /// `dqmon` with arguments, its environment pointing at this server.
    pub(crate) fn dqmon(&self, args: &[&str]) -> std::process::Output {
        Command::new(dqmon_bin())
            .args(args)
            .envs(s3_env(self))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }
}

/// What a replica (its `rules`) sees of a shared history: `dqmon query`
/// counts every batch of `shared` and each of their alerts once, and
/// `dqmon audit verify` passes on the replica's chain.
pub(crate) fn assert_fleet_view(
    s3: &S3Server,
    rules: &std::path::Path,
    shared: &[serde_json::Value],
) {
    let alerts_committed: usize = shared
        .iter()
        .map(|m| m["alerts"].as_array().unwrap().len())
        .sum();
    let rules = rules.to_str().unwrap();
    let out = s3.dqmon(&[
        "query",
        "--config",
        rules,
        "--format",
        "json",
        "SELECT (SELECT count(DISTINCT batch_id) FROM metrics) AS batches, \
         (SELECT count(*) FROM alerts) AS alerts, \
         (SELECT count(DISTINCT alert_id) FROM alerts) AS alert_ids",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let row: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        row["batches"],
        shared.len() as u64,
        "query with {rules}: {row}"
    );
    assert_eq!(row["alerts"], alerts_committed as u64, "{row}");
    assert_eq!(row["alert_ids"], alerts_committed as u64, "{row}");
    let out = s3.dqmon(&["audit", "verify", "--config", rules]);
    assert!(out.status.success(), "audit with {rules}: {}", stderr(&out));
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_s3_compatible_server_keeps_the_backend_contract() {
    let s3 = S3Server::start();
    s3.create_bucket("dqmon-state");
    let b = s3.backend("dqmon-state", "fleet/orders");
    conformance(&b);
    // another prefix of the same bucket is another state: nothing leaks
    let other = s3.backend("dqmon-state", "fleet/payments");
    assert_eq!(other.list("a").unwrap(), Vec::<String>::new());
    assert_eq!(
        other.put_if_absent("race/batch.json", b"x").unwrap(),
        Put::Created
    );
    // two replicas (two clients) on one state: the second writer of a key
    // is told, and the first one's bytes stand
    let replica = s3.backend("dqmon-state", "fleet/orders");
    assert_eq!(
        replica.put_if_absent("race/batch.json", b"late").unwrap(),
        Put::Existed
    );
    assert_ne!(b.get("race/batch.json").unwrap(), Some(b"late".to_vec()));
    // a missing bucket is an error, not an empty state
    let missing = s3.backend("no-such-bucket", "x");
    assert!(missing.put("a/b.json", b"1").is_err());
}

/// The `AWS_*` variables a replica reads to reach this server (as a
/// deployment would set them, or take them from its workload identity).
pub(crate) fn s3_env(s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", format!("http://{}", s3.addr)),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("DQMON_PII_KEY", PII_KEY.into()),
    ]
}

/// One PII key for the fleet (the chart's shared secret).
const PII_KEY: &str = "integration-test-fleet-pii-key-0123456789";

/// A fleet on one drop location: an approved baseline in `baselines/`
/// shared by the replicas, rules per replica with its own state folder,
/// and the drop location `s3://ingest/incoming/`.
pub(crate) struct DropFleet {
    dir: tempfile::TempDir,
    pub(crate) s3: S3Server,
    /// Lines added to every replica's rules.
    extra: String,
    /// Where the approved baseline is: a folder of `dir`, or a prefix on
    /// the S3 server.
    baseline_dir: String,
}

impl DropFleet {
    fn new() -> DropFleet {
        DropFleet::with_rules("")
    }

    /// A fleet whose rules end with `extra`; a shared history there
    /// (`s3://history/...`) has its bucket made first.
    pub(crate) fn with_rules(extra: &str) -> DropFleet {
        let buckets: &[&str] = match extra.contains("s3://history/") {
            true => &["history"],
            false => &[],
        };
        DropFleet::with_baseline_dir(extra, "baselines", buckets)
    }

    /// A fleet as pods without volumes run it: the history on the S3
    /// server (`s3://history/fleet`), and the approved baseline there too
    /// (`s3://history/baselines`), built and approved through it.
    pub(crate) fn without_volumes() -> DropFleet {
        DropFleet::with_baseline_dir(
            "shared_history: s3://history/fleet\n",
            "s3://history/baselines",
            &["history"],
        )
    }

    fn with_baseline_dir(extra: &str, baseline_dir: &str, buckets: &[&str]) -> DropFleet {
        let s3 = S3Server::start();
        s3.create_bucket("ingest");
        for b in buckets {
            s3.create_bucket(b);
        }
        let dir = tempfile::tempdir().unwrap();
        let fleet = DropFleet {
            dir,
            s3,
            extra: extra.to_string(),
            baseline_dir: baseline_dir.to_string(),
        };
        // the baseline, built and approved once for every replica
        let rules = fleet.rules("builder");
        let good = fleet.dir.path().join("good");
        std::fs::create_dir_all(&good).unwrap();
        for i in 0..6 {
            write_batch(
                &good.join(format!("b{i}.parquet")),
                2_000,
                i,
                Scenario::Clean,
            );
        }
        crate::daemon::build_and_approve_with(|a| fleet.dqmon(a), &rules, &good);
        fleet
    }

    /// The rules of one replica (its state in `state-<state>`).
    pub(crate) fn rules(&self, state: &str) -> PathBuf {
        let path = fixture_rules(self.dir.path());
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "state_dir: state-{state}\nbaseline_dir: {}\nsource:\n  parquet_drop:\n    path: s3://ingest/incoming/\n    poll_interval_ms: 200\n    claim_lease_ms: 60000\n{}",
            self.baseline_dir, self.extra
        ));
        let path = self.dir.path().join(format!("rules-{state}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn dqmon(&self, args: &[&str]) -> std::process::Output {
        self.s3.dqmon(args)
    }

    /// The fleet's folder (rules, baselines, the clean batches in `good/`).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `dqmon run --once` of a replica, started.
    pub(crate) fn replica(&self, name: &str) -> Child {
        self.replica_in(name, name)
    }

    /// `dqmon run --once` of replica `name` on the state folder
    /// `state-<state>`, started.
    pub(crate) fn replica_in(&self, name: &str, state: &str) -> Child {
        let rules = self.rules(state);
        Command::new(dqmon_bin())
            .args(["run", "--once", "--config", rules.to_str().unwrap()])
            .envs(s3_env(&self.s3))
            .env("DQMON_REPLICA", name)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The drop location, as ingestion writes to it.
    fn drop_location(&self) -> ObjectBackend {
        self.s3.backend("ingest", "incoming")
    }

    /// Upload a generated batch as `name`.
    fn drop_object(&self, name: &str, index: u64, scenario: Scenario) {
        let tmp = self.dir.path().join("upload.parquet");
        write_batch(&tmp, 2_000, index, scenario);
        self.drop_location()
            .put(name, &std::fs::read(&tmp).unwrap())
            .unwrap();
    }

    /// Drops `part-<i>.parquet` for each `i` in `parts` (seed `seed + i`):
    /// clean, except `part-005`, whose `scraped` labels are flipped.
    pub(crate) fn drop_parts(&self, parts: std::ops::Range<u64>, seed: u64) {
        for i in parts {
            let scenario = if i == 5 {
                Scenario::LabelFlip {
                    tag: "scraped".into(),
                    strength: 0.6,
                }
            } else {
                Scenario::Clean
            };
            self.drop_object(&format!("part-{i:03}.parquet"), seed + i, scenario);
        }
    }

    /// The manifests a replica committed: (batch id, source).
    pub(crate) fn manifests(&self, replica: &str) -> Vec<(String, String)> {
        let dir = self
            .dir
            .path()
            .join(format!("state-{replica}/events/history/batches"));
        let mut out: Vec<(String, String)> = match std::fs::read_dir(&dir) {
            Ok(d) => d
                .map(|e| {
                    let m: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
                    (
                        m["batch_id"].as_str().unwrap().to_string(),
                        m["source"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }
}

pub(crate) fn wait_ok(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "a replica failed: {err}");
    err
}

/// Two replicas on one S3 drop prefix: every object is claimed by exactly
/// one of them (the store's create-if-absent decides), handled once across
/// the fleet, and marked done; the poisoned object is alerted by whichever
/// replica took it, named by its URL.
#[test]
fn two_replicas_on_one_drop_prefix_handle_each_object_once() {
    let fleet = DropFleet::new();
    let n = 8;
    fleet.drop_parts(0..n, 100);
    // ingestion's temporary names and objects in deeper "folders" are not batches
    let loc = fleet.drop_location();
    loc.put("part-999.parquet.tmp", b"half").unwrap();
    loc.put("archive/old.parquet", b"not a batch").unwrap();

    let (a, b) = (fleet.replica("a"), fleet.replica("b"));
    wait_ok(a);
    wait_ok(b);

    let (ma, mb) = (fleet.manifests("a"), fleet.manifests("b"));
    let mut all: Vec<&(String, String)> = ma.iter().chain(mb.iter()).collect();
    all.sort();
    let sources: std::collections::BTreeSet<&str> = all.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        all.len(),
        n as usize,
        "each object once across the fleet: a {ma:?}, b {mb:?}"
    );
    assert_eq!(sources.len(), n as usize, "{all:?}");
    assert!(
        sources
            .iter()
            .all(|s| s.starts_with("s3://ingest/incoming/part-0")),
        "sources are named by their URL: {sources:?}"
    );
    // every object is marked done, under the generation-0 claim of its replica
    for i in 0..n {
        let claims = loc
            .list(&format!(".dqmon-claims/events/part-{i:03}.parquet"))
            .unwrap();
        assert_eq!(
            claims,
            vec![
                format!(".dqmon-claims/events/part-{i:03}.parquet/0"),
                format!(".dqmon-claims/events/part-{i:03}.parquet/done"),
            ]
        );
    }
    // the poisoned batch was alerted by the replica that took it
    let alerts: String = ["a", "b"]
        .iter()
        .filter_map(|r| {
            std::fs::read_to_string(
                fleet
                    .dir
                    .path()
                    .join(format!("state-{r}/events/alerts.jsonl")),
            )
            .ok()
        })
        .collect();
    assert!(
        alerts.contains("s3://ingest/incoming/part-005.parquet"),
        "the label flip in part-005 is alerted: {alerts}"
    );

    // a replica started later finds nothing left to do
    wait_ok(fleet.replica("c"));
    assert!(fleet.manifests("c").is_empty());
}

/// A replica that died holding a claim: once the claim's lease has expired
/// the next replica takes the object over (the next generation of its
/// claim); a live replica's claim is respected.
#[test]
fn an_expired_claim_is_taken_over_and_a_live_one_respected() {
    let fleet = DropFleet::new();
    fleet.drop_object("dead.parquet", 200, Scenario::Clean);
    fleet.drop_object("busy.parquet", 201, Scenario::Clean);
    let loc = fleet.drop_location();
    let claim = |holder: &str, expires_ms: u64| {
        serde_json::to_vec(&serde_json::json!({ "holder": holder, "expires_ms": expires_ms }))
            .unwrap()
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    loc.put(
        ".dqmon-claims/events/dead.parquet/0",
        &claim("died/1/0", now_ms - 1_000),
    )
    .unwrap();
    loc.put(
        ".dqmon-claims/events/busy.parquet/0",
        &claim("alive/2/0", now_ms + 3_600_000),
    )
    .unwrap();

    wait_ok(fleet.replica("a"));

    let m = fleet.manifests("a");
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].1, "s3://ingest/incoming/dead.parquet");
    assert_eq!(
        loc.list(".dqmon-claims/events/dead.parquet").unwrap(),
        vec![
            ".dqmon-claims/events/dead.parquet/0",
            ".dqmon-claims/events/dead.parquet/1",
            ".dqmon-claims/events/dead.parquet/done",
        ]
    );
    assert_eq!(
        loc.list(".dqmon-claims/events/busy.parquet").unwrap(),
        vec![".dqmon-claims/events/busy.parquet/0"],
        "the live claim is left alone"
    );
}

/// The manifests of a shared history (`s3://history/fleet/events/`).
pub(crate) fn shared_manifests(s3: &S3Server) -> Vec<serde_json::Value> {
    let history = s3.backend("history", "fleet/events");
    let mut out: Vec<serde_json::Value> = history
        .list("history/batches")
        .unwrap()
        .iter()
        .map(|key| serde_json::from_slice(&history.get(key).unwrap().unwrap()).unwrap())
        .collect();
    out.sort_by_key(|m| m["source"].as_str().unwrap().to_string());
    out
}

/// The replica that holds the lease of the fleet's notifications (its
/// newest state version under `notify/state/`), if any holds it.
pub(crate) fn notification_holder(s3: &S3Server) -> Option<String> {
    let history = s3.backend("history", "fleet/events");
    let key = history.list("notify/state").unwrap().pop()?;
    let state: serde_json::Value = serde_json::from_slice(&history.get(&key).unwrap()?).unwrap();
    let holder = state["holder"].as_str()?;
    (!holder.is_empty()).then(|| holder.to_string())
}
