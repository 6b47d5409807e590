//! Smoke tests of `dqmon-eval`'s command line (the detection tables
//! themselves are checked by the integration suite's golden tests).

use std::process::Command;

fn eval() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dqmon-eval"))
}

#[test]
fn help_lists_evaluate_and_fixtures() {
    let out = eval().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["evaluate", "fixtures"] {
        assert!(text.contains(cmd), "help does not mention `{cmd}`:\n{text}");
    }
}

#[test]
fn fixtures_writes_the_suite_as_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = eval()
        .args(["fixtures", "--rows", "300", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("wrote {} files", files.len())) && files.len() > 10,
        "{said}: {files:?}"
    );
}

#[test]
fn a_missing_config_is_a_clear_error() {
    let out = eval()
        .args(["evaluate", "--config", "/nonexistent/rules.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/rules.yaml"), "{err}");
}
