//! Smoke tests of the binary's command line. (The integration suite lives in
//! the workspace's `tests/` member; this file also makes `cargo test
//! --workspace` build the `dqmon` binary that suite runs.)

use std::process::Command;

fn dqmon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dqmon"))
}

#[test]
fn help_lists_the_commands() {
    let out = dqmon().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let listed = |cmd: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{cmd} ")))
    };
    for cmd in [
        "check", "profile", "baseline", "compare", "run", "replay", "query", "report", "audit",
        "outbox",
    ] {
        assert!(listed(cmd), "help does not list `{cmd}`:\n{text}");
    }
    // the synthetic suite and its evaluation are `dqmon-eval`'s
    for cmd in ["evaluate", "fixtures"] {
        assert!(!listed(cmd), "help lists `{cmd}`:\n{text}");
    }
}

#[test]
fn unknown_arguments_exit_2() {
    let out = dqmon().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_config_is_a_clear_error() {
    let out = dqmon()
        .args(["check", "--config", "/nonexistent/rules.yaml"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/rules.yaml"), "{err}");
}
