//! The `server:` section (the HTTP listener of `dqmon run`).

use super::*;

#[test]
fn server_section_is_optional_and_defaults_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.yaml", MINIMAL);
    assert_eq!(load(&path).unwrap().server, None);

    let path = write(dir.path(), "b.yaml", &format!("{MINIMAL}server: {{}}\n"));
    let server = load(&path).unwrap().server.unwrap();
    assert_eq!(server.listen.to_string(), "127.0.0.1:9464");

    let path = write(
        dir.path(),
        "c.yaml",
        &format!("{MINIMAL}server:\n  listen: 0.0.0.0:9100\n"),
    );
    let server = load(&path).unwrap().server.unwrap();
    assert_eq!(server.listen.to_string(), "0.0.0.0:9100");
}

#[test]
fn server_problems_are_reported_with_the_other_problems() {
    let dir = tempfile::tempdir().unwrap();
    let text = "dataset: payments\ncolumns: { amount: numeric }\nserver:\n  listen: localhost\n  lisen: 1\n  token: abc\n";
    let path = write(dir.path(), "bad.yaml", text);
    let found = problems(load(&path).unwrap_err());
    assert_eq!(
        paths(&found),
        vec!["trust", "server.listen", "server.lisen", "server.token"]
    );
    assert!(message(&found, "server.listen").contains("`127.0.0.1:9464`"));
    assert!(message(&found, "server.lisen").contains("did you mean `listen`?"));
    assert!(message(&found, "server.token").contains("token_env"));
    assert!(!message(&found, "server.token").contains("abc"));
}

#[test]
fn server_goes_in_the_include_file_not_in_included_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = "dataset: a\ntrust: { fixed: x, levels: [x] }\ncolumns: { n: numeric }\n";
    write(dir.path(), "a.yaml", a);
    let top = write(
        dir.path(),
        "top.yaml",
        "include: [a.yaml]\nserver: { listen: \"[::1]:9000\" }\n",
    );
    let config = load(&top).unwrap();
    assert_eq!(config.server.unwrap().listen.to_string(), "[::1]:9000");

    write(dir.path(), "b.yaml", &format!("{a}server: {{}}\n"));
    let top = write(dir.path(), "top2.yaml", "include: [b.yaml]\n");
    let found = problems(load(&top).unwrap_err());
    assert_eq!(paths(&found), vec!["server"]);
    assert!(found[0].1.contains("belongs in the top-level include file"));
}
