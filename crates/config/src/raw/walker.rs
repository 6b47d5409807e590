//! The one walker of the YAML tree: typed reads of scalars, lists and
//! mappings, each problem collected with its YAML path (unknown keys with a
//! suggestion, wrong types, out-of-bound numbers, secrets written inline),
//! so one run reports every mistake. Every section of `raw/` reads through it.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::object_store::{OBJECT_STORE_SCHEMES, schemes};
use super::wording::{found, index_path, is_literal, is_secret_key, key_path, list, suggest};
use super::{PARQUET_DROP_KEYS, Problem, ROOT, SOURCE_KEYS, SourceRule, resolve};

/// The default `claim_lease_ms` of a drop location on an object store.
const DEFAULT_CLAIM_LEASE_MS: u64 = 10 * 60 * 1000;

/// Where a `parquet_drop` is: a folder, or a prefix on an object store.
enum DropLocation {
    Folder(String),
    Objects(String),
}

#[derive(Default)]
pub(super) struct Walker {
    pub(super) problems: Vec<Problem>,
}

/// The bounds of a real-valued setting.
#[derive(Clone, Copy)]
pub(super) enum Bound {
    /// Between 0 and 1 inclusive (a share).
    Unit,
    /// Zero or more.
    NonNegative,
    /// More than zero.
    Positive,
    /// Any finite number.
    Finite,
}

impl Walker {
    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        let path = if path.is_empty() { ROOT } else { path };
        self.problems.push(Problem::new(path, message));
    }

    pub(super) fn wrong_type(
        &mut self,
        path: &str,
        expected: &str,
        found_value: &Value,
        example: &str,
    ) {
        let hint = match found_value {
            Value::String(s) if expected.contains("number") && s.trim().parse::<f64>().is_ok() => {
                format!("remove the quotes around `{}`", s.trim())
            }
            _ => format!("write {example} instead"),
        };
        self.problem(
            path,
            format!("expected {expected}, found {}; {hint}.", found(found_value)),
        );
    }

    pub(super) fn root_map<'a>(&mut self, root: &'a Value) -> Option<&'a Mapping> {
        match root {
            Value::Mapping(m) => Some(m),
            Value::Null => {
                self.problem(
                    "",
                    "the file is empty; write at least `dataset:`, `trust:` and `columns:`, or `include:` for a top-level file.",
                );
                None
            }
            other => {
                // Never quote the content: a file named by mistake (or by
                // `include: [/etc/passwd]`) must not be echoed in an error.
                let what = match other {
                    Value::String(t) => format!("text of {} characters", t.chars().count()),
                    Value::Sequence(l) => format!("a list of {} items", l.len()),
                    Value::Bool(_) => "a boolean".to_string(),
                    Value::Number(_) => "a number".to_string(),
                    _ => "a tagged value".to_string(),
                };
                self.problem(
                    "",
                    format!(
                        "expected a map of settings, found {what}: this is not a dqmon rules file; write `key: value` lines such as `dataset: payments`."
                    ),
                );
                None
            }
        }
    }

    pub(super) fn map<'a>(
        &mut self,
        path: &str,
        v: &'a Value,
        example: &str,
    ) -> Option<&'a Mapping> {
        match v {
            Value::Mapping(m) => Some(m),
            other => {
                self.wrong_type(path, "a map", other, example);
                None
            }
        }
    }

    pub(super) fn seq<'a>(
        &mut self,
        path: &str,
        v: &'a Value,
        example: &str,
    ) -> Option<&'a [Value]> {
        match v {
            Value::Sequence(s) => Some(s),
            other => {
                self.wrong_type(path, "a list", other, example);
                None
            }
        }
    }

    /// Non-empty text.
    pub(super) fn text(&mut self, path: &str, v: &Value, example: &str) -> Option<String> {
        match v {
            Value::String(s) if s.trim().is_empty() => {
                self.problem(path, format!("the value is empty; write {example}."));
                None
            }
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(path, "text", other, example);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, path: &str, v: &Value, key: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(
                    path,
                    "`true` or `false`",
                    other,
                    &format!("`{key}: true` or `{key}: false`"),
                );
                None
            }
        }
    }

    /// A number that is not NaN.
    pub(super) fn number(&mut self, path: &str, v: &Value, example: &str) -> Option<f64> {
        match v.as_f64() {
            Some(x) if !x.is_nan() => Some(x),
            Some(_) => {
                self.problem(
                    path,
                    format!("`.nan` is not a usable value; write {example}."),
                );
                None
            }
            None => {
                self.wrong_type(path, "a number", v, example);
                None
            }
        }
    }

    /// A finite number within `bound`.
    pub(super) fn real(
        &mut self,
        path: &str,
        v: &Value,
        bound: Bound,
        example: &str,
    ) -> Option<f64> {
        let x = self.number(path, v, example)?;
        let (ok, rule) = match bound {
            Bound::Unit => ((0.0..=1.0).contains(&x), "between 0 and 1 (a share)"),
            Bound::NonNegative => (x.is_finite() && x >= 0.0, "a finite number, 0 or more"),
            Bound::Positive => (x.is_finite() && x > 0.0, "a finite number greater than 0"),
            Bound::Finite => (x.is_finite(), "a finite number"),
        };
        if ok {
            Some(x)
        } else {
            self.problem(
                path,
                format!("must be {rule}, found {x}; write {example} instead."),
            );
            None
        }
    }

    /// A whole number in `min..=max`.
    pub(super) fn whole(
        &mut self,
        path: &str,
        v: &Value,
        min: u64,
        max: u64,
        example: &str,
    ) -> Option<u64> {
        let n = match v {
            Value::Number(n) => n,
            other => {
                self.wrong_type(path, "a whole number", other, example);
                return None;
            }
        };
        let value = if let Some(u) = n.as_u64() {
            Ok(u)
        } else if n.as_i64().is_some() {
            Err(())
        } else {
            match n.as_f64() {
                // Whole floats such as `2e9` are fine when exact.
                Some(x) if x.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&x) => {
                    Ok(x as u64)
                }
                Some(x) if x.fract() == 0.0 && x < 0.0 => Err(()),
                _ => {
                    self.problem(
                        path,
                        format!("expected a whole number, found {n}; write {example} instead."),
                    );
                    return None;
                }
            }
        };
        match value {
            Ok(u) if u >= min && u <= max => Some(u),
            Ok(u) if u > max => {
                self.problem(
                    path,
                    format!("must be at most {max}, found {u}; write {example} instead."),
                );
                None
            }
            _ => {
                self.problem(
                    path,
                    format!("must be at least {min}, found {n}; write {example} instead."),
                );
                None
            }
        }
    }

    pub(super) fn secret(&mut self, path: &str, key: &str) {
        self.problem(
            path,
            format!(
                "secrets are never written in config files; set `{key}_env: VAR_NAME` (an environment variable) or `{key}_file: /path` instead."
            ),
        );
    }

    /// Report every secret-like key with a literal value anywhere below `v`.
    pub(super) fn scan_secrets(&mut self, path: &str, v: &Value) {
        match v {
            Value::Mapping(m) => {
                for (k, child) in m {
                    let Some(k) = k.as_str() else { continue };
                    let p = key_path(path, k);
                    if is_secret_key(k) && is_literal(child) {
                        self.secret(&p, k);
                    } else {
                        self.scan_secrets(&p, child);
                    }
                }
            }
            Value::Sequence(s) => {
                for (i, child) in s.iter().enumerate() {
                    self.scan_secrets(&index_path(path, i), child);
                }
            }
            Value::Tagged(t) => self.scan_secrets(path, &t.value),
            _ => {}
        }
    }

    pub(super) fn dataset_name(&mut self, path: &str, v: &Value) -> Option<String> {
        let name = self.text(path, v, "`dataset: payments`")?;
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_chars {
            // the suggestion keeps the letters and digits, never a path
            let fixed: String = name
                .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            let fixed = if fixed.is_empty() {
                "payments".to_string()
            } else {
                fixed
            };
            self.problem(
                path,
                format!(
                    "the dataset name `{name}` may only contain letters A-Z and a-z, digits, `_`, `.` and `-` (it names a folder); write e.g. `dataset: {fixed}`."
                ),
            );
            None
        } else if name == "." || name == ".." {
            self.problem(
                path,
                format!(
                    "the dataset name `{name}` would name a parent or current folder; write a real name such as `dataset: payments`."
                ),
            );
            None
        } else {
            Some(name)
        }
    }

    pub(super) fn source(&mut self, path: &str, v: &Value, base_dir: &Path) -> Option<SourceRule> {
        const EXAMPLE: &str = "`source: { parquet_drop: { path: drop/payments } }`";
        let m = self.map(path, v, EXAMPLE)?;
        let mut f = Fields::new(path, m, SOURCE_KEYS);
        let kafka = f.get("kafka");
        let out = match f.get("parquet_drop") {
            Some((p, v)) => {
                if let Some((kp, kv)) = &kafka {
                    self.problem(
                        kp,
                        "a dataset reads from one source; keep either `parquet_drop` or `kafka` and move the other into a rules file of its own.",
                    );
                    let _ = self.kafka(kp, kv, base_dir);
                }
                self.parquet_drop(&p, v, base_dir)
            }
            None if kafka.is_some() => kafka.and_then(|(p, v)| self.kafka(&p, v, base_dir)),
            None => {
                if f.is_empty() {
                    self.problem(
                        path,
                        format!(
                            "no source is given; write {EXAMPLE}, or remove `source:` when there is no live source."
                        ),
                    );
                }
                None
            }
        };
        f.finish(self);
        out
    }

    pub(super) fn parquet_drop(
        &mut self,
        path: &str,
        v: &Value,
        base_dir: &Path,
    ) -> Option<SourceRule> {
        let m = self.map(path, v, "`parquet_drop: { path: drop/payments }`")?;
        let mut f = Fields::new(path, m, PARQUET_DROP_KEYS);
        let written = f
            .required(self, "path", "`path: drop/payments`")
            .and_then(|(p, v)| self.text(&p, v, "`path: drop/payments`").map(|s| (p, s)));
        let location = written.and_then(|(p, s)| match s.split_once("://") {
            Some((scheme, _)) if OBJECT_STORE_SCHEMES.contains(&scheme) => {
                Some(DropLocation::Objects(s))
            }
            Some((scheme, _)) => {
                self.problem(
                    &p,
                    format!(
                        "`{scheme}://` is not an object store dqmon reads; write a folder path, or a prefix on one of {}.",
                        schemes(OBJECT_STORE_SCHEMES)
                    ),
                );
                None
            }
            None => Some(DropLocation::Folder(s)),
        });
        // A listing of an object store is a billed request: every 5 s by
        // default, where a folder is listed every 500 ms (or on its events).
        let default_poll = match location {
            Some(DropLocation::Objects(_)) => 5_000,
            _ => 500,
        };
        let poll = match f.get("poll_interval_ms") {
            Some((p, v)) => self.whole(&p, v, 1, u64::MAX, "`poll_interval_ms: 500`"),
            None => Some(default_poll),
        };
        let pattern = match f.get("pattern") {
            Some((p, v)) => self.text(&p, v, "`pattern: \"*.parquet\"`").and_then(|s| {
                if s.contains('/') || s.contains('\\') {
                    self.problem(
                        &p,
                        format!(
                            "the pattern `{s}` contains a folder separator, but it is matched against file names only; put the folder in `path` and write e.g. `pattern: \"*.parquet\"`."
                        ),
                    );
                    None
                } else {
                    Some(s)
                }
            }),
            None => Some("*.parquet".to_string()),
        };
        let lease = match f.get("claim_lease_ms") {
            Some((p, v)) => {
                let lease = self.whole(&p, v, 1_000, u64::MAX, "`claim_lease_ms: 600000`");
                if matches!(location, Some(DropLocation::Folder(_))) {
                    self.problem(
                        &p,
                        "`claim_lease_ms` is for a drop location on an object store (`path: s3://bucket/prefix/`), where replicas claim objects; a drop folder is watched by one process. Remove it.".to_string(),
                    );
                }
                lease
            }
            None => Some(DEFAULT_CLAIM_LEASE_MS),
        };
        f.finish(self);
        match location? {
            DropLocation::Objects(url) => Some(SourceRule::ObjectDrop {
                url,
                poll_interval_ms: poll?,
                pattern: pattern?,
                claim_lease_ms: lease?,
            }),
            DropLocation::Folder(path) => Some(SourceRule::ParquetDrop {
                path: resolve(base_dir, &path),
                poll_interval_ms: poll?,
                pattern: pattern?,
            }),
        }
    }

    pub(super) fn baseline_id(&mut self, path: &str, v: &Value) -> Option<String> {
        const HINT: &str = "copy the full id of an approved baseline, or remove `baseline_id` to use the latest approved one";
        let id = self.text(path, v, "`baseline_id: <64 lowercase hex characters>`")?;
        if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            self.problem(
                path,
                format!(
                    "a baseline id is 64 hexadecimal characters (a SHA-256), found {} characters that are not all hexadecimal digits; {HINT}.",
                    id.chars().count()
                ),
            );
            None
        } else if id.chars().any(|c| c.is_ascii_uppercase()) {
            self.problem(
                path,
                format!(
                    "baseline ids are written in lowercase; write `baseline_id: {}`.",
                    id.to_ascii_lowercase()
                ),
            );
            None
        } else {
            Some(id)
        }
    }

    pub(super) fn env_var_name(&mut self, path: &str, v: &Value) -> Option<String> {
        let name = self.text(path, v, "`pii_key_env: DQMON_PII_KEY`")?;
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Some(name)
        } else {
            self.problem(
                path,
                "this must be the name of an environment variable (letters, digits and `_`, not starting with a digit), not the key itself; write e.g. `pii_key_env: DQMON_PII_KEY` and put the key in that variable.",
            );
            None
        }
    }
}

/// The entries of one mapping, checked against the keys allowed there.
pub(super) struct Fields<'a> {
    pub(super) path: String,
    pub(super) known: &'static [&'static str],
    pub(super) entries: Vec<(&'a Value, &'a Value, bool)>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(path: &str, m: &'a Mapping, known: &'static [&'static str]) -> Fields<'a> {
        Fields {
            path: path.to_string(),
            known,
            entries: m.iter().map(|(k, v)| (k, v, false)).collect(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key` and its YAML path, without marking it as read.
    pub(super) fn peek(&self, key: &str) -> Option<(String, &'a Value)> {
        self.entries
            .iter()
            .find(|(k, _, _)| k.as_str() == Some(key))
            .map(|(_, v, _)| (key_path(&self.path, key), *v))
    }

    /// The value of an optional key and its YAML path; an empty value counts as absent.
    pub(super) fn get(&mut self, key: &str) -> Option<(String, &'a Value)> {
        let entry = self
            .entries
            .iter_mut()
            .find(|(k, _, _)| k.as_str() == Some(key))?;
        entry.2 = true;
        (!entry.1.is_null()).then(|| (key_path(&self.path, key), entry.1))
    }

    /// The value of a required key; reports it missing or empty.
    pub(super) fn required(
        &mut self,
        w: &mut Walker,
        key: &str,
        example: &str,
    ) -> Option<(String, &'a Value)> {
        let present = self.peek(key).is_some();
        let got = self.get(key);
        if got.is_none() {
            let what = if present {
                format!("`{key}` has no value")
            } else {
                format!("the required key `{key}` is missing")
            };
            w.problem(
                &key_path(&self.path, key),
                format!("{what}; add {example}."),
            );
        }
        got
    }

    pub(super) fn finish(self, w: &mut Walker) {
        self.finish_with(w, |_| None);
    }

    /// Report every key that was not read: unknown keys (with the closest
    /// known key, or `hint` for keys that need a special explanation),
    /// non-text keys and inline secrets.
    pub(super) fn finish_with(self, w: &mut Walker, hint: impl Fn(&str) -> Option<String>) {
        for (k, v, used) in self.entries {
            if used {
                continue;
            }
            let Some(k) = k.as_str() else {
                w.problem(
                    &self.path,
                    format!(
                        "a key must be text, found {}; remove it or write one of {}.",
                        found(k),
                        list(self.known)
                    ),
                );
                continue;
            };
            let p = key_path(&self.path, k);
            if is_secret_key(k) && is_literal(v) {
                w.secret(&p, k);
                continue;
            }
            let message = if let Some(h) = hint(k) {
                h
            } else if let Some(s) = suggest(k, self.known) {
                format!("unknown key `{k}`; did you mean `{s}`?")
            } else {
                format!(
                    "unknown key `{k}`; remove it or use one of the keys allowed here: {}.",
                    list(self.known)
                )
            };
            w.problem(&p, message);
            w.scan_secrets(&p, v);
        }
    }
}
