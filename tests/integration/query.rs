//! `dqmon query`: the README's SQL over a live history, checked row by row
//! against what the daemon stored.

use serde_json::Value;

use crate::common::*;
use crate::daemon::Setup;

/// A live run over the incident (see `replay::incident`).
fn history() -> Setup {
    let s = Setup::new();
    crate::replay::incident(&s);
    let o = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s
}

fn query(s: &Setup, format: &str, sql: &str) -> String {
    let o = dqmon(&[
        "query",
        "--config",
        s.rules.to_str().unwrap(),
        "--format",
        format,
        sql,
    ]);
    assert!(o.status.success(), "query failed: {sql}\n{}", stderr(&o));
    stdout(&o)
}

fn rows(s: &Setup, sql: &str) -> Vec<Value> {
    query(s, "json", sql)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The queries documented in the README, in order (the test below runs the
/// README's text itself, so the two cannot drift apart).
fn readme_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("### SQL over the history")
        .nth(1)
        .expect("README has a `### SQL over the history` section");
    let section = section.split("\n##").next().unwrap();
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "```sql" {
            let q: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push(q.join("\n"));
        }
    }
    out
}

#[test]
fn readme_queries_answer_from_the_history() {
    let s = &history();
    let q = readme_queries();
    assert_eq!(q.len(), 5, "the README documents five queries: {q:#?}");
    let alerts = s.alerts();
    let manifests = s.manifests();

    // 1. missing rate of a column per trust tag per day
    let r = rows(s, &q[0]);
    assert!(!r.is_empty());
    let tags: std::collections::BTreeSet<_> =
        r.iter().map(|v| v["trust_tag"].as_str().unwrap()).collect();
    for t in [
        "all",
        "human_reviewed",
        "vendor",
        "user_reported",
        "scraped",
    ] {
        assert!(tags.contains(t), "no row for {t}: {r:?}");
    }
    let worst = r
        .iter()
        .filter(|v| v["trust_tag"] == "all")
        .map(|v| v["max_missing_rate"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(worst > 0.25, "the 30% missing batch shows: {r:?}");

    // 2. every alert of one batch: the label-flip batch
    let flip = manifests
        .iter()
        .find(|m| {
            m["source"]
                .as_str()
                .unwrap()
                .ends_with("2024-06-01T11.parquet")
        })
        .unwrap();
    let id = flip["batch_id"].as_str().unwrap();
    let sql = q[1].replace("'3ea986b3%'", &format!("'{}%'", &id[..8]));
    let r = rows(s, &sql);
    let expected: Vec<_> = alerts.iter().filter(|a| a["batch_id"] == id).collect();
    assert_eq!(r.len(), expected.len(), "{r:?}");
    assert!(
        r.iter()
            .any(|v| v["check"] == "label_calibration" && v["trust_tag"] == "scraped")
    );

    // 3. batches that used a given baseline
    let baseline = flip["baseline_id"].as_str().unwrap();
    assert!(
        q[2].contains("'be6fb528%'"),
        "the README's query names the quickstart baseline: {}",
        q[2]
    );
    let sql = q[2].replace("be6fb528", &baseline[..8]);
    let r = rows(s, &sql);
    assert_eq!(
        r.len(),
        manifests.len(),
        "every batch used the one baseline: {r:?}"
    );
    assert!(r.iter().all(|v| v["baseline_id"] == baseline));

    // 4. possible poisoning per trust tag
    let r = rows(s, &q[3]);
    let count = |tag: &str| {
        r.iter()
            .find(|v| v["trust_tag"] == tag)
            .map_or(0, |v| v["alerts"].as_u64().unwrap())
    };
    let by_tag = |tag: &str| {
        alerts
            .iter()
            .filter(|a| a["verdict"] == "possible_poisoning" && a["trust_tag"] == tag)
            .count() as u64
    };
    assert!(
        count("scraped") >= 1 && count("user_reported") >= 1,
        "{r:?}"
    );
    assert_eq!(count("scraped"), by_tag("scraped"));
    assert_eq!(count("user_reported"), by_tag("user_reported"));

    // 5. quarantined inputs and why, with the baseline approval in force
    let r = rows(s, &q[4]);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("2024-06-01T16.parquet")
    );
    assert!(!r[0]["reason"].as_str().unwrap().is_empty());
    assert_eq!(r[0]["approved_by"], "approver");
}

#[test]
fn query_prints_tables_and_csv_and_explains_sql_errors() {
    let s = &history();
    let t = query(s, "table", "SELECT count(*) AS n FROM batches");
    assert!(t.contains("| n ") && t.contains("| 7 "), "{t}");
    let c = query(
        s,
        "csv",
        "SELECT status, count(*) AS n FROM batches GROUP BY status ORDER BY status",
    );
    assert_eq!(c, "status,n\nprocessed,5\nquarantined,1\nreplayed,1\n");
    let o = dqmon(&[
        "query",
        "--config",
        s.rules.to_str().unwrap(),
        "SELECT * FROM nope",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the tables are metrics, batches, findings, alerts and baselines"),
        "{}",
        stderr(&o)
    );
}
