//! Integrity and privacy through the real binary: the hash-chained audit
//! log and `dqmon audit verify`, signed baseline approvals enforced by the
//! daemon, and no raw value of a `pii` column anywhere in the state folder
//! or the logs after a run.
//!
//! Longer than 600 lines: one test per protection of the security model
//! (audit chain, signed approvals, PII in state and logs, PII keys), each
//! end to end through the binary, sharing the setup helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dqmon_fixtures::Scenario;
use serde_json::Value;

use crate::common::*;
use crate::daemon::Setup;

fn run_once(rules: &Path, log_level: &str) -> Output {
    Command::new(dqmon_bin())
        .args([
            "run",
            "--config",
            rules.to_str().unwrap(),
            "--once",
            "--settle-ms",
            "0",
        ])
        .env("RUST_LOG", log_level)
        .env_remove("DQMON_PII_KEY")
        .output()
        .expect("dqmon runs")
}

fn audit_entries(state: &Path) -> Vec<Value> {
    fs::read_to_string(state.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

fn verify(rules: &Path) -> Output {
    dqmon(&["audit", "verify", "--config", rules.to_str().unwrap()])
}

#[test]
fn audit_log_chains_every_batch_and_verify_names_the_first_bad_entry() {
    let s = Setup::new();
    for i in 0..3 {
        s.drop_batch(&format!("b{i}.parquet"), 100 + i, Scenario::Clean);
    }
    let out = run_once(&s.rules, "warn");
    assert!(out.status.success(), "{}", stderr(&out));
    // a second start processes nothing and logs no batch twice
    let out = run_once(&s.rules, "warn");
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = audit_entries(&s.state);
    let k = kinds(&entries);
    assert_eq!(
        k.iter().filter(|k| *k == "batch_committed").count(),
        3,
        "{k:?}"
    );
    for want in [
        "baseline_built",
        "baseline_approved",
        "config_changed",
        "config_loaded",
    ] {
        assert!(k.iter().any(|k| k == want), "no {want} entry in {k:?}");
    }
    let batch = entries
        .iter()
        .find(|e| e["kind"] == "batch_committed")
        .unwrap();
    for field in [
        "manifest_sha256",
        "input_sha256",
        "source",
        "schema_fingerprint",
        "rules_hash",
        "baseline_id",
        "dqmon_version",
        "rows_by_tag",
        "alert_ids",
    ] {
        assert!(
            !batch["payload"][field].is_null(),
            "batch entry lacks {field}: {batch}"
        );
    }

    let out = verify(&s.rules);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains(&format!("{} entries", entries.len())));

    let log = s.state.join("audit.jsonl");
    let original = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let write = |ls: &[String]| fs::write(&log, ls.join("\n") + "\n").unwrap();
    let target = lines
        .iter()
        .position(|l| l.contains("batch_committed"))
        .unwrap();
    let seq = target; // entries are numbered from 0, one per line

    // edited: one byte of one entry's payload
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[target] = edited[target].replacen("\"rows\":", "\"rows\":1", 1);
    write(&edited);
    let out = verify(&s.rules);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("first bad entry {seq} "))
            && stdout(&out).contains("was edited"),
        "{}",
        stdout(&out)
    );

    // removed
    let mut removed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    removed.remove(target);
    write(&removed);
    let out = verify(&s.rules);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("entry {seq} is missing")),
        "{}",
        stdout(&out)
    );

    // reordered
    let mut reordered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    reordered.swap(target, target + 1);
    write(&reordered);
    let out = verify(&s.rules);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("first bad entry {seq} "))
            && stdout(&out).contains("reordered"),
        "{}",
        stdout(&out)
    );

    // intact log again, but a manifest edited after it was logged
    fs::write(&log, &original).unwrap();
    assert!(verify(&s.rules).status.success());
    let batch_id = entries[seq]["key"].as_str().unwrap();
    let manifest = s
        .state
        .join("history/batches")
        .join(format!("{batch_id}.json"));
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replacen("\"rows\": ", "\"rows\": 9", 1)).unwrap();
    let out = verify(&s.rules);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("manifest of batch") && stdout(&out).contains(batch_id),
        "{}",
        stdout(&out)
    );
}

/// `dqmon baseline keygen --out FILE`: returns the public key text.
fn keygen(path: &Path) -> String {
    let out = dqmon(&["baseline", "keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn approve(rules: &Path, id: &str, by: &str, key: Option<&Path>) -> Output {
    let mut args = vec![
        "baseline",
        "approve",
        "--config",
        rules.to_str().unwrap(),
        id,
        "--by",
        by,
    ];
    if let Some(k) = key {
        args.extend(["--sign-key", k.to_str().unwrap()]);
    }
    dqmon(&args)
}

fn refused_alerts(state: &Path) -> Vec<Value> {
    fs::read_to_string(state.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a["check"] == "baseline_refused")
        .collect()
}

/// The daemon under `secure` rules must refuse to start, say why, and leave
/// one more `baseline_refused` alert and audit entry.
fn assert_refused(secure: &Path, state: &Path, why: &str, alerts_before: usize) -> usize {
    let out = run_once(secure, "warn");
    assert!(!out.status.success(), "the daemon accepted the baseline");
    let err = stderr(&out);
    assert!(err.contains("refused") && err.contains(why), "{err}");
    let alerts = refused_alerts(state);
    assert_eq!(alerts.len(), alerts_before + 1, "{alerts:#?}");
    assert_eq!(alerts.last().unwrap()["severity"], "critical");
    assert!(
        kinds(&audit_entries(state))
            .last()
            .is_some_and(|k| k == "baseline_refused")
    );
    alerts.len()
}

#[test]
fn daemon_accepts_only_baselines_signed_by_a_trusted_distinct_approver() {
    let s = Setup::new();
    let dir = s.dir.path();
    let open_rules = s.rules.clone();
    let id = fs::read_dir(s.state.join("baselines"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".json").map(str::to_string)
        })
        .find(|n| n.len() == 64)
        .unwrap();
    let keys = dir.join("keys");
    fs::create_dir_all(&keys).unwrap();
    let approver_pub = keygen(&keys.join("approver.key"));
    let builder_pub = keygen(&keys.join("builder.key"));
    keygen(&keys.join("mallory.key"));
    assert!(approver_pub.len() >= 43, "{approver_pub}");
    let secure = dir.join("secure.yaml");
    let mut text = fs::read_to_string(&open_rules).unwrap();
    text.push_str(&format!(
        "security:\n  require_signed_approval: true\n  require_distinct_approver: true\n  trusted_keys:\n    - {{ name: approver, public_key_file: keys/approver.key.pub }}\n    - {{ name: builder, public_key: \"{builder_pub}\" }}\n"
    ));
    fs::write(&secure, text).unwrap();
    let out = dqmon(&["check", "--config", secure.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.drop_batch("b0.parquet", 100, Scenario::Clean);

    // 1. unsigned (the Setup's approval)
    let mut n = assert_refused(&secure, &s.state, "not signed", 0);
    // the same refusal again is not a new alert
    let out = run_once(&secure, "warn");
    assert!(!out.status.success());
    assert_eq!(refused_alerts(&s.state).len(), n);
    // and the CLI will not record an unsigned approval under these rules
    let out = approve(&secure, &id, "approver", None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not signed"), "{}", stderr(&out));

    // 2. signed with a key that is not the approver's
    let out = approve(
        &open_rules,
        &id,
        "approver",
        Some(&keys.join("mallory.key")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    n = assert_refused(&secure, &s.state, "does not verify", n);
    let out = approve(&secure, &id, "approver", Some(&keys.join("mallory.key")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not the one"), "{}", stderr(&out));

    // 3. properly signed, then the approval record edited
    let out = approve(&secure, &id, "approver", Some(&keys.join("approver.key")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(signed)"));
    let approval = s
        .state
        .join("baselines/approvals")
        .join(format!("{id}.json"));
    let mut a: Value = serde_json::from_slice(&fs::read(&approval).unwrap()).unwrap();
    a["approved_at"] = "2020-01-01T00:00:00Z".into();
    fs::write(&approval, serde_json::to_vec_pretty(&a).unwrap()).unwrap();
    n = assert_refused(&secure, &s.state, "does not verify", n);

    // 4. signed by a trusted key, but by the person who built it
    let out = approve(&open_rules, &id, "builder", Some(&keys.join("builder.key")));
    assert!(out.status.success(), "{}", stderr(&out));
    n = assert_refused(&secure, &s.state, "same person", n);
    let out = approve(&secure, &id, "builder", Some(&keys.join("builder.key")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("same person"), "{}", stderr(&out));

    // 5. signed by the trusted approver: accepted, the batch is checked
    let out = approve(&secure, &id, "approver", Some(&keys.join("approver.key")));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_once(&secure, "warn");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.manifests().len(), 1);

    // 6. the baseline's bytes changed after approval: refused and alerted too
    let path = s.state.join("baselines").join(format!("{id}.json"));
    let mut bytes = fs::read(&path).unwrap();
    let pos = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[pos] = b'2';
    fs::write(&path, bytes).unwrap();
    assert_refused(&secure, &s.state, "hash", n);

    // the whole story is in an intact audit log
    let out = verify(&secure);
    assert!(out.status.success(), "{}", stdout(&out));
}

/// Every file under `dir`, as searchable text: Parquet files decoded to
/// JSON (so that compressed pages cannot hide a value), others as bytes.
fn searchable_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            searchable_files(&path, out);
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if bytes.starts_with(b"PAR1") {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                fs::File::open(&path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            for batch in reader {
                w.write(&batch.unwrap()).unwrap();
            }
            w.finish().unwrap();
            text.push_str(&String::from_utf8(w.into_inner()).unwrap());
        }
        out.push((path, text));
    }
}

/// Distinct non-null values of a string column of a Parquet file.
fn column_values(file: &Path, column: &str) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        fs::File::open(file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut out = std::collections::BTreeSet::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name(column).unwrap();
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
        let s = col.as_string::<i32>();
        for i in 0..s.len() {
            if s.is_valid(i) {
                out.insert(s.value(i).to_string());
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn no_raw_pii_value_in_the_state_folder_or_the_logs() {
    let s = Setup::new();
    let mut raw = Vec::new();
    for (i, scenario) in [
        Scenario::Clean,
        Scenario::LabelFlip {
            tag: "scraped".into(),
            strength: 0.2,
        },
        Scenario::DuplicateBurst { share: 0.3 },
    ]
    .into_iter()
    .enumerate()
    {
        let f = s.drop_batch(&format!("b{i}.parquet"), 200 + i as u64, scenario);
        raw.extend(column_values(&f, "email"));
    }
    // the baseline's inputs too: their values went into the stored baseline
    for entry in fs::read_dir(s.dir.path().join("good")).unwrap() {
        raw.extend(column_values(&entry.unwrap().path(), "email"));
    }
    raw.sort();
    raw.dedup();
    assert!(
        raw.len() > 1000,
        "too few raw values to test: {}",
        raw.len()
    );

    // everything that prints: the daemon at debug level, and the commands
    let run = run_once(&s.rules, "debug");
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!s.alerts().is_empty(), "the attacks should raise alerts");
    let rules = s.rules.to_str().unwrap();
    let file = s.drop.join("b1.parquet");
    let profile = dqmon(&[
        "profile",
        "--config",
        rules,
        "--json",
        "--top",
        "50",
        file.to_str().unwrap(),
    ]);
    assert!(profile.status.success(), "{}", stderr(&profile));
    let table = dqmon(&[
        "profile",
        "--config",
        rules,
        "--top",
        "50",
        file.to_str().unwrap(),
    ]);
    let compare = dqmon(&[
        "compare",
        "--config",
        rules,
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(compare.status.success(), "{}", stderr(&compare));
    // the pii column was profiled: its top values are there, as keyed hashes
    let summary: Value = serde_json::from_slice(&profile.stdout).unwrap();
    let top = &summary["slices"]["all"]["columns"]["email"]["top"];
    assert!(
        top.as_array().is_some_and(|t| !t.is_empty()
            && t.iter()
                .all(|v| v["value"].as_str().unwrap().starts_with("pii:"))),
        "{top}"
    );

    let mut haystacks: Vec<(PathBuf, String)> = Vec::new();
    searchable_files(&s.state, &mut haystacks);
    assert!(haystacks.len() > 10, "{haystacks:?}");
    for (name, o) in [
        ("run", &run),
        ("profile --json", &profile),
        ("profile", &table),
        ("compare", &compare),
    ] {
        haystacks.push((PathBuf::from(format!("{name} stdout")), stdout(o)));
        haystacks.push((PathBuf::from(format!("{name} stderr")), stderr(o)));
    }
    // the search finds raw values where they are (the inputs), so a leak
    // could not hide from it
    let mut inputs = Vec::new();
    searchable_files(&s.drop, &mut inputs);
    assert!(
        inputs
            .iter()
            .any(|(_, t)| { aho_corasick::AhoCorasick::new(&raw).unwrap().is_match(t) }),
        "the search does not see raw values even in the inputs"
    );
    let matcher = aho_corasick::AhoCorasick::new(&raw).unwrap();
    for (path, text) in &haystacks {
        if let Some(m) = matcher.find(text) {
            panic!(
                "raw pii value `{}` found in {}",
                &raw[m.pattern().as_usize()],
                path.display()
            );
        }
    }
}

/// Every file under `dir` but those under `skip`, with its bytes.
fn snapshot(dir: &Path, skip: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.starts_with(skip) {
                continue;
            }
            if path.is_dir() {
                todo.push(path);
            } else {
                out.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn read_only_commands_and_replays_never_create_the_pii_key() {
    let s = Setup::new();
    s.drop_batch("a.parquet", 100, Scenario::Clean);
    let o = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key_path = s.state.join("pii.key");
    let key = fs::read(&key_path).expect("building the baseline made the key");
    let rules = s.rules.to_str().unwrap().to_string();
    let file = s.dir.path().join("good/b0.parquet");
    let file = file.to_str().unwrap().to_string();
    let replay_dir = s.state.join("replay");
    let commands: Vec<(&str, Vec<&str>)> = vec![
        (
            "profile",
            vec!["profile", "--config", &rules, "--json", &file],
        ),
        ("compare", vec!["compare", "--config", &rules, &file]),
        ("replay", vec!["replay", "--config", &rules, &file]),
    ];

    // the key is gone (a new host, a restore without it): a command that
    // needs it says so, and creates nothing, the key least of all
    fs::remove_file(&key_path).unwrap();
    let before = snapshot(&s.state, &replay_dir);
    for (name, args) in &commands {
        let o = dqmon(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{name} ran without the PII key");
        assert!(
            err.contains(&key_path.display().to_string()) && err.contains("DQMON_PII_KEY"),
            "{name} does not name the missing key and its variable: {err}"
        );
        assert!(!key_path.exists(), "{name} created {}", key_path.display());
        assert_eq!(
            snapshot(&s.state, &replay_dir),
            before,
            "{name} wrote state"
        );
        assert!(!replay_dir.exists(), "{name} prepared a replay folder");
    }

    // with the key back, they work and write nothing but the replay's own
    // folder; nor do the other readers
    fs::write(&key_path, &key).unwrap();
    let before = snapshot(&s.state, &replay_dir);
    let report = s.dir.path().join("report.html");
    let report = report.to_str().unwrap();
    let readers: Vec<(&str, Vec<&str>)> = vec![
        (
            "query",
            vec!["query", "--config", &rules, "SELECT count(*) FROM batches"],
        ),
        (
            "report",
            vec!["report", "--config", &rules, "--out", report],
        ),
        ("audit verify", vec!["audit", "verify", "--config", &rules]),
    ];
    for (name, args) in commands.iter().chain(&readers) {
        let o = dqmon(args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert_eq!(
            snapshot(&s.state, &replay_dir),
            before,
            "{name} wrote state"
        );
    }

    // no pii column: no key needed, none made
    fs::remove_file(&key_path).unwrap();
    let text = fs::read_to_string(&s.rules).unwrap();
    let plain = text.replace("pii: true", "pii: false");
    assert_ne!(plain, text);
    fs::write(&s.rules, plain).unwrap();
    let o = dqmon(&commands[0].1);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!key_path.exists(), "profile created a key no column needs");
}

/// A process with another PII key than the one the baseline's `pii`
/// columns were hashed with (a replica without the fleet's shared key made
/// its own) is refused before it reads a batch, naming both key ids and the
/// variable to set; `compare` is refused the same way. With the baseline's
/// key the same run goes through.
#[test]
fn a_pii_key_other_than_the_baselines_is_refused() {
    let s = Setup::new();
    let rules = s.rules.to_str().unwrap();
    // the baseline records the id of the key it was built with, not the key
    let key = fs::read(s.state.join("pii.key")).unwrap();
    let baselines: Vec<Value> = fs::read_dir(s.state.join("baselines"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "json")
                .then(|| serde_json::from_slice(&fs::read(&p).unwrap()).unwrap())
        })
        .collect();
    let id = baselines
        .iter()
        .find_map(|b| b["pii_key_id"].as_str().map(str::to_string))
        .expect("the baseline records its PII key id");
    assert_eq!(id.len(), 16, "{id}");
    assert!(!String::from_utf8_lossy(&key).contains(&id));

    let file = s.drop_batch("a.parquet", 1, Scenario::Clean);
    let run = |with_key: Option<&str>| {
        let mut c = Command::new(dqmon_bin());
        c.args(["run", "--once", "--settle-ms", "0", "--config", rules])
            .env("RUST_LOG", "warn")
            .env_remove("DQMON_PII_KEY");
        if let Some(k) = with_key {
            c.env("DQMON_PII_KEY", k);
        }
        c.output().unwrap()
    };
    let out = run(Some("a-replica-of-its-own-0123456789abcdef"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("was built with the PII key {id}")) && err.contains("$DQMON_PII_KEY"),
        "{err}"
    );
    assert!(s.manifests().is_empty(), "no batch was read");
    let out = dqmon_with_pii_key(&["compare", "--config", rules, file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was built with the PII key"),
        "{}",
        stderr(&out)
    );

    // the state folder's key is the baseline's: the run goes through
    let out = run(None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.manifests().len(), 1);
}
