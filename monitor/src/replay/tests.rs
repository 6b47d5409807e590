//! Replay inputs (files, folders, globs), progress output, and the guard on
//! the replay state folder.

use super::*;

#[test]
fn inputs_expand_files_folders_and_globs_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["a.parquet", "b.parquet", "c.txt", ".d.parquet.tmp"] {
        fs::write(dir.path().join(n), b"x").unwrap();
    }
    let d = dir.path().display().to_string();
    let got = expand_inputs(
        &[d.clone(), format!("{d}/a.parquet"), format!("{d}/b.parq*")],
        "*.parquet",
    )
    .unwrap();
    let names: Vec<_> = got
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.parquet", "b.parquet"]);
    let err = expand_inputs(&[format!("{d}/nothing-*.parquet")], "*.parquet").unwrap_err();
    assert!(err.to_string().contains("matches no Parquet file"), "{err}");
}

#[test]
fn the_progress_bar_is_quiet_off_a_terminal() {
    use std::io::IsTerminal;
    assert!(progress_bar(1 << 20, false, false).is_hidden());
    // the test harness captures stderr: not a terminal, so nothing is drawn
    if !std::io::stderr().is_terminal() {
        assert!(progress_bar(1 << 20, true, true).is_hidden());
    }
}

#[test]
fn a_foreign_folder_is_never_wiped_as_replay_state() {
    let dir = tempfile::tempdir().unwrap();
    let replay = dir.path().join("replay");
    fs::create_dir_all(&replay).unwrap();
    fs::write(replay.join("precious.txt"), b"keep").unwrap();
    let mut rules = crate::config::model::Rules::for_tests("t", Vec::new());
    rules.state_dir = dir.path().to_path_buf();
    let err = state_folder(&rules, None).unwrap_err();
    assert!(matches!(err, ReplayError::NotReplayState { .. }), "{err}");
    assert!(replay.join("precious.txt").exists());
    assert!(
        !replay.join(LOCK_FILE).exists(),
        "a foreign folder is not even locked"
    );
    fs::remove_file(replay.join("precious.txt")).unwrap();
    let (got, lock) = state_folder(&rules, None).unwrap();
    assert!(got.join(MARKER).exists());
    fs::write(got.join("history.json"), b"old").unwrap();
    fs::create_dir_all(got.join("history/batches")).unwrap();
    drop(lock);
    let (again, _lock) = state_folder(&rules, None).unwrap();
    assert!(
        !again.join("history.json").exists() && !again.join("history").exists(),
        "old replay state is recreated"
    );
    assert!(again.join(MARKER).exists() && again.join(LOCK_FILE).exists());
}
