//! The crate graph the README draws, checked: `dqmon-core` (profile,
//! compare, baselines, rules) does no I/O, and the pipeline's crates depend
//! one way (core ← config, core ← store, both ← dqmon ← eval), the
//! generator out of the production binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every package `package` pulls in as a normal (non-dev, non-build)
/// dependency, transitively, as `cargo tree` resolves it from Cargo.lock.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn core_has_no_io_dependency() {
    let deps = normal_dependencies("dqmon-core");
    assert!(deps.contains("arrow-array"), "the tree was read: {deps:?}");
    // chrono comes with arrow-array (its temporal types); the core never
    // reads a clock, which `core_source_does_no_io` checks.
    let io = [
        "tokio",
        "rdkafka",
        "datafusion",
        "parquet",
        "mio",
        "notify",
        "axum",
        "hyper",
        "lettre",
        "ureq",
        "object_store",
        "tracing",
        "rand",
        "dqmon",
        "dqmon-config",
        "dqmon-fixtures",
    ];
    let found: Vec<_> = io.iter().filter(|c| deps.contains(**c)).collect();
    assert!(
        found.is_empty(),
        "dqmon-core must stay pure, but it now depends on {found:?}; move the code that needs them out of crates/core"
    );
}

#[test]
fn config_depends_on_core_and_not_on_the_daemon() {
    let deps = normal_dependencies("dqmon-config");
    assert!(deps.contains("dqmon-core"));
    for c in ["dqmon", "tokio", "rdkafka", "datafusion", "parquet"] {
        assert!(!deps.contains(c), "dqmon-config depends on {c}");
    }
}

#[test]
fn store_depends_on_core_and_on_no_engine_of_the_daemon() {
    let deps = normal_dependencies("dqmon-store");
    assert!(deps.contains("dqmon-core"), "the tree was read: {deps:?}");
    for c in [
        "dqmon",
        "dqmon-config",
        "rdkafka",
        "datafusion",
        "lettre",
        "ureq",
        "axum",
    ] {
        assert!(
            !deps.contains(c),
            "dqmon-store depends on {c}: the store writes state; sources, sinks and queries live in the daemon"
        );
    }
}

#[test]
fn the_production_binary_carries_no_generator_or_evaluation() {
    let deps = normal_dependencies("dqmon");
    assert!(deps.contains("dqmon-core"), "the tree was read: {deps:?}");
    for c in ["dqmon-fixtures", "dqmon-eval", "rand_distr"] {
        assert!(
            !deps.contains(c),
            "dqmon depends on {c}: the synthetic suite and its evaluation live in crates/fixtures and crates/eval, dev-dependencies of the monitor"
        );
    }
}

/// The source of the core names no file system, network, process,
/// environment, thread or clock API (a dependency check cannot see `std`).
#[test]
fn core_source_does_no_io() {
    let forbidden = [
        "std::fs",
        "std::net",
        "std::env",
        "std::process",
        "std::thread",
        "std::io::stdin",
        "std::io::stdout",
        "SystemTime",
        "Instant::now",
        "println!",
        "eprintln!",
    ];
    let mut offences = Vec::new();
    let files = sources_under(&root().join("crates/core/src"));
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for f in forbidden {
                // an address is a value in the rules, not a socket
                let address = f == "std::net" && line.contains("SocketAddr");
                if line.contains(f) && !address {
                    offences.push(format!("{}:{}: {f}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        files.len() >= 10,
        "the core's sources were found ({} files)",
        files.len()
    );
    assert!(offences.is_empty(), "I/O in dqmon-core: {offences:#?}");
}

/// Every `.rs` file of the daemon's sources under `dir`, with its text.
fn sources_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// Sources yield, the pipeline drives: no source names the pipeline or
/// the daemon that wires it (`crate::app`), outside comments.
#[test]
fn sources_do_not_import_the_pipeline() {
    let files = sources_under(&root().join("monitor/src/source"));
    assert!(files.len() >= 8, "the sources were found ({})", files.len());
    let mut offences = Vec::new();
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for f in ["crate::pipeline", "crate::app", "Worker"] {
                if line.contains(f) {
                    offences.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "a source reaches into the pipeline: {offences:#?}"
    );
}

/// Every module of the workspace is under 600 lines, unless a comment in
/// its first lines says why it is longer (`Longer than 600 lines: ...`).
#[test]
fn modules_are_small_or_say_why() {
    let mut long = Vec::new();
    let mut seen = 0;
    for dir in ["crates", "monitor/src", "monitor/benches", "tests"] {
        for (path, text) in sources_under(&root().join(dir)) {
            if path.components().any(|c| c.as_os_str() == "target") {
                continue;
            }
            seen += 1;
            let lines = text.lines().count();
            let says_why = text
                .lines()
                .take(12)
                .any(|l| l.trim_start().starts_with("//") && l.contains("Longer than 600 lines"));
            if lines > 600 && !says_why {
                long.push(format!("{} ({lines} lines)", path.display()));
            }
        }
    }
    assert!(seen >= 100, "the workspace's modules were found ({seen})");
    assert!(
        long.is_empty(),
        "modules over 600 lines with no reason at their top: {long:#?}"
    );
}
