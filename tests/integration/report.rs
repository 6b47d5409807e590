//! `dqmon report`: the HTML file is self-contained, and Debian's headless
//! Chromium renders its SVG charts without console errors (screenshot kept
//! in `target/report-screenshot.png` for a person to look at).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::daemon::Setup;

/// The Chromium binary: `$DQMON_CHROMIUM` or Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let p = std::env::var_os("DQMON_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.exists(),
        "{} is missing: the report test renders the HTML in headless Chromium. Run `tests/run` \
         (it installs Debian's `chromium` package when missing), or `apt-get install chromium`, \
         or point DQMON_CHROMIUM at a Chromium binary",
        p.display()
    );
    p
}

/// What headless Chromium printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Run headless Chromium on a file with extra arguments; generous timeout.
/// Its output goes to files (a pipe would fill up and stall it).
fn headless(html: &Path, profile: &Path, extra: &[String]) -> Run {
    let out = profile.join("chromium.stdout");
    let err = profile.join("chromium.stderr");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "headless chromium did not finish within 300 s: {}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Run {
        ok: status.success(),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn report_renders_charts_in_headless_chromium() {
    let s = Setup::new();
    crate::replay::incident(&s);
    let o = s.spawn(&["--once"]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html_path = s.dir.path().join("report.html");
    let o = dqmon(&[
        "report",
        "--config",
        s.rules.to_str().unwrap(),
        "--out",
        html_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = fs::read_to_string(&html_path).unwrap();
    // kept for a person to look at, beside the screenshot
    let keep = repo_root().join("target/report.html");
    let _ = fs::create_dir_all(keep.parent().unwrap());
    let _ = fs::write(&keep, &html);

    // self-contained: nothing is fetched
    for bad in ["<script", " src=", " href=", "@import", "url("] {
        assert!(
            !html.contains(bad),
            "the report must load nothing, found {bad}"
        );
    }
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    // no raw pii: the fixtures' email column never appears with a value
    assert!(
        !html.contains("@example"),
        "a raw pii value leaked into the report"
    );
    // deterministic: the same history gives the same bytes
    let again = s.dir.path().join("again.html");
    let o = dqmon(&[
        "report",
        "--config",
        s.rules.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(fs::read_to_string(&again).unwrap(), html);

    // the alert summary table lists every alert
    let alerts = s.alerts();
    assert_eq!(
        count(&html, "<tr class=\"critical\">") + count(&html, "<tr class=\"warning\">"),
        alerts.len()
    );

    // render it
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(&html_path, profile.path(), &["--dump-dom".into()]);
    let (dom_text, log) = (dom.stdout, dom.stderr);
    assert!(dom.ok, "chromium --dump-dom failed: {log}");
    let charts = count(&dom_text, "<svg class=\"chart\"");
    assert!(charts >= 40, "only {charts} charts rendered:\n{log}");
    assert_eq!(count(&dom_text, "<polyline class=\"line\""), charts);
    assert!(
        count(&dom_text, "<rect class=\"band\"") >= 20,
        "normal bands are drawn"
    );
    // one marker per alert whose metric is charted (top-value, schema and
    // batch-level alerts are in the table only; every label check is drawn
    // on the label_rate chart)
    let charted = alerts
        .iter()
        .filter(|a| {
            [
                "row_count",
                "tag_share",
                "label_rate",
                "label_rate_vs_trusted",
                "label_calibration",
                "missing_rate",
            ]
            .contains(&a["check"].as_str().unwrap())
        })
        .count();
    assert!(
        charted >= 2,
        "the incident raises charted alerts: {alerts:?}"
    );
    assert_eq!(
        count(&dom_text, "<line class=\"alert\""),
        charted,
        "alert markers are drawn"
    );
    assert_eq!(count(&dom_text, "<circle class=\"pt hit\""), charted);
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("ERR_"))
        .collect();
    assert!(console.is_empty(), "console errors: {console:#?}");

    let shot = repo_root().join("target/report-screenshot.png");
    let _ = fs::create_dir_all(shot.parent().unwrap());
    let _ = fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let o = headless(
        &html_path,
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,1800".into(),
            "--hide-scrollbars".into(),
        ],
    );
    assert!(o.ok, "chromium --screenshot failed: {}", o.stderr);
    let png = fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
    assert!(
        png.len() > 20_000,
        "the screenshot is not blank ({} bytes)",
        png.len()
    );
}
