//! The rules loader's tests, by section of the rules file; the helpers
//! every part uses are here.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;

mod alerts;
mod dataset;
mod files;
mod security;
mod server;
mod source;

const MINIMAL: &str = "\
dataset: payments
trust:
  column: trust_tag
  levels: [human_reviewed, vendor, user_reported, scraped]
columns:
  amount: numeric
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, text).unwrap();
    path
}

fn sha(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The problems of an `Invalid` error as (yaml_path, message) pairs.
fn problems(err: ConfigError) -> Vec<(String, String)> {
    match err {
        ConfigError::Invalid { problems, .. } => problems
            .into_iter()
            .map(|p| (p.yaml_path, p.message))
            .collect(),
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

fn paths(problems: &[(String, String)]) -> Vec<&str> {
    problems.iter().map(|(p, _)| p.as_str()).collect()
}

fn message<'a>(problems: &'a [(String, String)], path: &str) -> &'a str {
    problems
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("no problem at {path}: {problems:#?}"))
}

fn parse_err(yaml: &str) -> Vec<(String, String)> {
    problems(parse_rules(yaml, Path::new("/cfg"), "test.yaml").unwrap_err())
}
