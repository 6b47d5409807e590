//! The floor reads every row of a file, on one thread or several, with or
//! without dictionaries, and says so as one JSON line; bad arguments fail.

use std::process::Command;

fn floor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dqmon-decode-floor"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_row_is_read_however_it_is_split() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/quickstart/drop/2024-06-02T10.parquet"
    );
    let rows = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
        .map(|r| {
            use parquet::file::reader::FileReader;
            r.metadata().file_metadata().num_rows()
        })
        .unwrap();
    assert!(rows > 0);
    for args in [
        vec![file],
        vec![file, "--threads", "2"],
        vec![file, "--threads", "3", "--dictionary", "country,device"],
    ] {
        let out = floor(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(
            line.starts_with(&format!("{{\"rows\": {rows}, \"seconds\": ")),
            "{line}"
        );
    }
    let out = floor(&[file, "--threads", "0"]);
    assert!(!out.status.success());
    let out = floor(&["/nonexistent.parquet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.parquet"));
}
