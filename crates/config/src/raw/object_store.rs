//! Locations on object stores: the URL schemes the rules accept (those the
//! `object_store` crate builds a client for from a URL), for a drop
//! location (`parquet_drop.path`, read in `walker`), for the fleet's
//! `shared_history`, and for a `baseline_dir` every replica reads.

use serde_yaml::Value;

use super::Walker;

/// The URL schemes of the object stores a location may be on. `memory://`
/// is a store inside one process: a drop location for tests, never a
/// history that replicas share.
pub(super) const OBJECT_STORE_SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "memory",
];

/// The schemes as a message lists them: `` `s3://`, `gs://` ``...
pub(super) fn schemes<'a>(list: impl IntoIterator<Item = &'a &'a str>) -> String {
    list.into_iter()
        .map(|s| format!("`{s}://`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schemes of stores that several machines reach (not `memory://`).
fn shared_schemes() -> impl Iterator<Item = &'static &'static str> {
    OBJECT_STORE_SCHEMES.iter().filter(|s| **s != "memory")
}

/// `s` without a trailing `/` when it is a prefix on a store that several
/// machines reach: a known scheme and a bucket.
fn shared_prefix(s: &str) -> Option<&str> {
    let (scheme, rest) = s.split_once("://")?;
    (shared_schemes().any(|k| *k == scheme) && !rest.trim_matches('/').is_empty())
        .then(|| s.trim_end_matches('/'))
}

impl Walker {
    /// `shared_history: s3://bucket/prefix`: where replicas keep the batch
    /// history they share (the dataset's part is `<prefix>/<dataset>`).
    pub(super) fn shared_history(&mut self, path: &str, v: &Value) -> Option<String> {
        let example = "`shared_history: s3://bucket/dqmon`";
        let s = self.text(path, v, example)?;
        if let Some(prefix) = shared_prefix(&s) {
            return Some(prefix.to_string());
        }
        self.problem(
            path,
            format!(
                "`{s}` is not a prefix on an object store; the shared history lives on one that every replica reaches: write a prefix on one of {}, e.g. {example} (or remove it to keep the history in `state_dir`).",
                schemes(shared_schemes())
            ),
        );
        None
    }

    /// `baseline_dir:` a folder (relative to the rules file), or a prefix
    /// on an object store (`s3://bucket/baselines`), kept as written, so
    /// that replicas without a volume read the approved baseline.
    pub(super) fn baseline_dir(
        &mut self,
        path: &str,
        v: &Value,
        base_dir: &std::path::Path,
    ) -> Option<std::path::PathBuf> {
        let example = "`baseline_dir: baselines`";
        let s = self.text(path, v, example)?;
        if !s.contains("://") {
            return Some(super::resolve(base_dir, &s));
        }
        if let Some(prefix) = shared_prefix(&s) {
            return Some(std::path::PathBuf::from(prefix));
        }
        self.problem(
            path,
            format!(
                "`{s}` is neither a folder nor a prefix on an object store; write a folder, e.g. {example}, or a prefix on one of {}, e.g. `baseline_dir: s3://bucket/baselines`.",
                schemes(shared_schemes())
            ),
        );
        None
    }
}
