//! How a problem is worded: the YAML path of a key or an item, what was
//! found instead, the allowed keys, and a "did you mean" suggestion.

use serde_yaml::Value;

use super::{ColumnKind, ROOT, SECRET_WORDS};

/// The YAML path of `key` below `parent`: `a.b`, or `a["odd key"]` for keys
/// that are not plain words.
pub(super) fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty() || parent == ROOT, plain) {
        (true, true) => key.to_string(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}[{key:?}]"),
    }
}

pub(super) fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A short description of a value for "found …" messages.
pub(super) fn found(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".to_string(),
        Value::Bool(b) => format!("a boolean (`{b}`)"),
        Value::Number(n) => format!("a number (`{n}`)"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            let more = if short.len() < s.len() { "..." } else { "" };
            format!("a string ({short:?}{more})")
        }
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a map".to_string(),
        Value::Tagged(t) => format!("a value tagged `{}`", t.tag),
    }
}

pub(super) fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Numeric => "numeric",
        ColumnKind::Categorical => "categorical",
        ColumnKind::Text => "text",
        ColumnKind::Timestamp => "timestamp",
        ColumnKind::Boolean => "boolean",
    }
}

pub(super) fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a key names a secret (`password`, `smtp_token`, `api-key`, ...);
/// the `_env` and `_file` forms that point at a secret are fine.
pub(super) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    if k.ends_with("_env") || k.ends_with("_file") {
        return false;
    }
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

pub(super) fn is_literal(v: &Value) -> bool {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
        Value::Tagged(t) => is_literal(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => false,
    }
}

/// The candidate closest to `word` when it is at most 2 edits away (ignoring case).
pub(super) fn suggest<'c, S: AsRef<str>>(word: &str, candidates: &'c [S]) -> Option<&'c str> {
    let w = word.to_lowercase();
    let len = w.chars().count();
    candidates
        .iter()
        .map(|c| (edit_distance(&w, &c.as_ref().to_lowercase()), c.as_ref()))
        .filter(|&(d, _)| d <= 2 && d < len)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

pub(super) fn suggestion_suffix(word: &str, candidates: &[String]) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
