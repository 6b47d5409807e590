//! Loading and validating dqmon's YAML configuration.
//!
//! A configuration file is one of two things:
//!
//! - a **dataset rules file**, with a top-level `dataset:` key, which becomes
//!   one [`Rules`];
//! - a **top-level include file**, with `include: [paths]` (relative to that
//!   file's folder) and an optional shared `state_dir:`, whose included files
//!   are dataset rules files. An included file uses the shared `state_dir`
//!   unless it sets its own.
//!
//! A dataset rules file looks like this (defaults in brackets):
//!
//! ```yaml
//! dataset: payments            # required; letters, digits, `_`, `.`, `-`
//! source:                      # optional [no live source]
//!   parquet_drop:
//!     path: drop/payments      # relative to this file's folder
//!     poll_interval_ms: 500    # [500]
//!     pattern: "*.parquet"     # ["*.parquet"]
//! state_dir: state             # [state]; the dataset's state is <state_dir>/<dataset>
//! baseline_dir: baselines      # [<state_dir>/<dataset>/baselines]; or s3://bucket/prefix
//! baseline_id: <64 hex>        # optional pin of an approved baseline
//! trust:                       # required
//!   column: trust_tag          # exactly one of `column` / `fixed`
//!   levels: [human_reviewed, vendor, user_reported, scraped]  # most trusted first
//!   low_trust: [user_reported, scraped]  # [the second half of levels]
//! label: { column: label, positive: "1" }  # optional
//! columns:                     # required; order is kept
//!   amount: { kind: numeric, range: [0, 100000], pii: false, nullable: true }
//!   country: categorical       # shorthand: just the kind
//! thresholds: { false_alarms_per_1000_batches: 2 }   # any field of `Thresholds`
//! sketch: { tdigest_k: 100, hll_lg_k: 12, frequent_items_map: 1024 }
//! limits: { max_file_bytes: 2147483648, max_rows: 100000000, max_string_len: 65536 }
//! pii_key_env: DQMON_PII_KEY   # [DQMON_PII_KEY]
//! alerts: [{ type: stdout }]   # each needs `type:` stdout | file | email | webhook
//! security:                    # who may approve baselines (all optional)
//!   require_signed_approval: true     # [false]
//!   require_distinct_approver: true   # [false]
//!   trusted_keys:
//!     - { name: bob, public_key: "base64 of 32 bytes" }
//!     - { name: carol, public_key_file: keys/carol.pub }
//! server: { listen: 127.0.0.1:9464 }  # optional: `dqmon run` serves /healthz, /readyz, /metrics
//! ```
//!
//! `server:` is process-wide: with an include file it goes in the top-level
//! file, and an included rules file may not have one.
//!
//! Relative paths are resolved against the folder of the file that contains
//! them. The `range` of a timestamp column is in epoch microseconds, like its
//! statistics. A bad file is reported in full: every problem found is listed with
//! its YAML path (see [`ConfigError::Invalid`]), not only the first one.
//! Secrets (keys such as `password`, `token`, `api_key`) are never accepted as
//! literal values; they are referenced with `<key>_env` or `<key>_file`.

/// The typed rules, defined in `dqmon-core` (re-exported here, where they are built).
pub use dqmon_core::rules as model;

mod error;
pub mod keys;
mod raw;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde_yaml::Value;
use sha2::{Digest, Sha256};

pub use error::{ConfigError, Problem};
pub use model::ServerSettings;
pub use model::{
    ColumnKind, ColumnRule, LabelRule, Limits, RuleSet, Rules, SketchParams, SourceRule,
    Thresholds, TrustRules, TrustSource,
};
pub use model::{PublicKeySource, SecurityRules, TrustedKey};

/// A loaded configuration: the rules of every dataset it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file that was loaded (as given to [`load`]).
    pub path: PathBuf,
    /// Every dataset's rules, in `include:` order (one for a dataset rules file).
    pub datasets: Vec<Rules>,
    /// SHA-256 (hex) of the bytes of every file read, in order: the loaded
    /// file first, then each included file in `include:` order.
    pub hash: String,
    /// The HTTP listener of `dqmon run` (top-level `server:`; absent: none).
    pub server: Option<ServerSettings>,
}

impl Config {
    /// The rules of a dataset by name.
    pub fn dataset(&self, name: &str) -> Option<&Rules> {
        self.datasets.iter().find(|r| r.dataset == name)
    }
}

/// Load a configuration file: a dataset rules file or a top-level include file.
///
/// Every problem of every file is reported at once; see [`ConfigError`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = read(path)?;
    let value = parse_yaml(path, &bytes)?;
    let base_dir = folder_of(path);
    if raw::is_include_file(&value) {
        return load_include_file(path, &bytes, &value, base_dir);
    }
    let rules_hash = sha256_hex(&bytes);
    let ctx = raw::RulesContext {
        base_dir,
        inherited_state_dir: None,
        rules_hash: rules_hash.clone(),
    };
    let (rules, server) = match (raw::rules(&value, &ctx), raw::server_section(&value, false)) {
        (Ok(rules), Ok(server)) => (rules, server),
        (rules, server) => {
            let mut problems = rules.err().unwrap_or_default();
            problems.extend(server.err().unwrap_or_default());
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
    };
    Ok(Config {
        path: path.to_path_buf(),
        datasets: vec![rules],
        hash: rules_hash,
        server,
    })
}

/// Parse the text of one dataset rules file, for tests and tools that do not
/// read a file: relative paths are resolved against `base_dir`, and `origin`
/// names the text in errors (it is used as the error's `path`).
pub fn parse_rules(yaml: &str, base_dir: &Path, origin: &str) -> Result<Rules, ConfigError> {
    let origin = Path::new(origin);
    let value = parse_yaml(origin, yaml.as_bytes())?;
    let ctx = raw::RulesContext {
        base_dir,
        inherited_state_dir: None,
        rules_hash: sha256_hex(yaml.as_bytes()),
    };
    raw::rules(&value, &ctx).map_err(|problems| ConfigError::Invalid {
        path: origin.to_path_buf(),
        problems,
    })
}

fn load_include_file(
    path: &Path,
    bytes: &[u8],
    value: &Value,
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let (top, mut top_problems) = raw::include_file(value, base_dir);
    let server = raw::server_section(value, false)
        .map_err(|problems| top_problems.extend(problems))
        .unwrap_or_default();
    let mut errors = Vec::new();
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    // (yaml path of the include entry, file as written, rules)
    let mut loaded: Vec<(String, String, Rules)> = Vec::new();
    for (yaml_path, written) in &top.include {
        let file = raw::resolve(base_dir, written);
        let file_bytes = match read_bounded(&file) {
            Ok(b) => b,
            Err(e) => {
                top_problems.push(Problem::new(
                    yaml_path.as_str(),
                    format!(
                        "cannot read `{written}` ({}: {e}); fix the path, which is relative to the folder of this file.",
                        file.display()
                    ),
                ));
                continue;
            }
        };
        hasher.update(&file_bytes);
        let file_value = match parse_yaml(&file, &file_bytes) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if raw::is_include_file(&file_value) {
            top_problems.push(Problem::new(
                yaml_path.as_str(),
                format!(
                    "`{written}` is itself an include file, and includes do not nest; list the files it includes here directly."
                ),
            ));
            continue;
        }
        let ctx = raw::RulesContext {
            base_dir: folder_of(&file),
            inherited_state_dir: top.state_dir.as_deref(),
            rules_hash: sha256_hex(&file_bytes),
        };
        let rules = match (
            raw::rules(&file_value, &ctx),
            raw::server_section(&file_value, true),
        ) {
            (Ok(rules), Ok(_)) => Ok(rules),
            (rules, server) => {
                let mut problems = rules.err().unwrap_or_default();
                problems.extend(server.err().unwrap_or_default());
                Err(problems)
            }
        };
        match rules {
            Ok(rules) => {
                if let Some((first_path, first_file, _)) =
                    loaded.iter().find(|(_, _, r)| r.dataset == rules.dataset)
                {
                    top_problems.push(Problem::new(
                        yaml_path.as_str(),
                        format!(
                            "`{written}` defines the dataset `{}`, which `{first_file}` ({first_path}) already defines; each dataset is defined once, so remove one of the two entries or rename one of the datasets.",
                            rules.dataset
                        ),
                    ));
                } else {
                    loaded.push((yaml_path.clone(), written.clone(), rules));
                }
            }
            Err(problems) => errors.push(ConfigError::Invalid {
                path: file,
                problems,
            }),
        }
    }
    if !top_problems.is_empty() {
        errors.insert(
            0,
            ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: top_problems,
            },
        );
    }
    match errors.len() {
        0 => Ok(Config {
            path: path.to_path_buf(),
            datasets: loaded.into_iter().map(|(_, _, r)| r).collect(),
            hash: hex::encode(hasher.finalize()),
            server,
        }),
        1 => Err(errors.remove(0)),
        _ => Err(ConfigError::Several {
            path: path.to_path_buf(),
            errors,
        }),
    }
}

/// The largest rules file read: 40,000 columns take about 1 MB, so a file
/// past this is a mistake (or an attack), not a configuration.
pub const MAX_RULES_FILE_BYTES: u64 = 8 * 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    read_bounded(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::FileTooLarge {
            ConfigError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_RULES_FILE_BYTES,
            }
        } else {
            ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Read a file of at most [`MAX_RULES_FILE_BYTES`], checking the size
/// before reading and bounding the read (the file may grow meanwhile).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "the file is larger than {MAX_RULES_FILE_BYTES} bytes, the most a rules file may hold"
            ),
        )
    };
    if file.metadata()?.len() > MAX_RULES_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_RULES_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RULES_FILE_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Parse YAML into a tree, with `<<` merge keys applied.
fn parse_yaml(path: &Path, bytes: &[u8]) -> Result<Value, ConfigError> {
    let yaml_error = |e: serde_yaml::Error| {
        let location = e.location();
        let (line, column) = match &location {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        let mut message = e.to_string();
        if let (Some(l), Some(c)) = (line, column) {
            // The location is reported separately; keep the message short.
            message = message.replacen(&format!(" at line {l} column {c}"), "", 1);
        }
        ConfigError::Yaml {
            path: path.to_path_buf(),
            message,
            line,
            column,
        }
    };
    // An alias bomb fails without a location: point at the first alias.
    let located = |e: serde_yaml::Error| {
        let mut err = yaml_error(e);
        if let ConfigError::Yaml {
            message,
            line: line @ None,
            ..
        } = &mut err
            && message.contains("repetition limit")
            && let Some(at) = first_alias_line(bytes)
        {
            *line = Some(at);
            *message = "its aliases (`*name`) expand to more nodes than a rules file may hold (an alias bomb?); the first alias is on this line".to_string();
        }
        err
    };
    let mut value: Value = serde_yaml::from_slice(bytes).map_err(located)?;
    value.apply_merge().map_err(located)?;
    Ok(value)
}

/// The 1-based line of the first YAML alias (`*name` outside quotes and
/// comments), if any.
fn first_alias_line(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    text.lines().enumerate().find_map(|(i, line)| {
        let (mut single, mut double) = (false, false);
        let chars: Vec<char> = line.chars().collect();
        for (k, &c) in chars.iter().enumerate() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '#' if !single && !double => return None,
                '*' if !single
                    && !double
                    && (k == 0 || matches!(chars[k - 1], ' ' | '\t' | '[' | ',' | '{'))
                    && chars
                        .get(k + 1)
                        .is_some_and(|n| n.is_alphanumeric() || *n == '_') =>
                {
                    return Some(i + 1);
                }
                _ => {}
            }
        }
        None
    })
}

/// The folder of a file, against which the paths it contains are resolved.
fn folder_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
