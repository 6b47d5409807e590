//! Locations on object stores: the URL schemes the rules accept (those the
//! `object_store` crate builds a client for from a URL), for a drop
//! location (`parquet_drop.path`, read in `walker`) and for the fleet's
//! `shared_history`.

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

impl Walker {
    /// `shared_history: s3://bucket/prefix`: where replicas keep the batch
    /// history they share (the dataset's part is `<prefix>/<dataset>`).
    pub(super) fn shared_history(&mut self, path: &str, v: &Value) -> Option<String> {
        let example = "`shared_history: s3://bucket/dqmon`";
        let s = self.text(path, v, example)?;
        let shared = || OBJECT_STORE_SCHEMES.iter().filter(|s| **s != "memory");
        match s.split_once("://") {
            Some((scheme, rest))
                if shared().any(|s| *s == scheme) && !rest.trim_matches('/').is_empty() =>
            {
                Some(s.trim_end_matches('/').to_string())
            }
            _ => {
                self.problem(
                    path,
                    format!(
                        "`{s}` is not a prefix on an object store; the shared history lives on one that every replica reaches: write a prefix on one of {}, e.g. {example} (or remove it to keep the history in `state_dir`).",
                        schemes(shared())
                    ),
                );
                None
            }
        }
    }
}
