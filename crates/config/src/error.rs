//! Errors of loading a configuration: I/O, YAML syntax and invalid content.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong in a configuration file, located by its YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file the problem is, like `columns.amount.range`,
    /// `thresholds.psi` or `trust.levels[2]`; `(top level)` for the whole file.
    pub yaml_path: String,
    /// A full sentence saying what is wrong and what to write instead.
    pub message: String,
}

impl Problem {
    /// A problem at `yaml_path`.
    pub fn new(yaml_path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            yaml_path: yaml_path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.yaml_path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read; the cause is available as the error's `source()`.
    #[error(
        "cannot read the configuration file {}; check that it exists and that this user may read it",
        path.display()
    )]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file is larger than a rules file may be.
    #[error(
        "the configuration file {} is larger than {limit} bytes, the most a rules file may hold; split it with `include:` or check that it is the right file",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file is not valid YAML.
    #[error("{}", display_yaml(path, message, *line, *column))]
    Yaml {
        /// The file with the syntax error.
        path: PathBuf,
        /// What the YAML parser reported.
        message: String,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the error, when the parser knows it.
        column: Option<usize>,
    },
    /// A file is valid YAML but its settings are wrong: every problem found is listed.
    #[error("{}", display_invalid(path, problems))]
    Invalid {
        /// The file whose settings are wrong.
        path: PathBuf,
        /// Every problem found in that file, in a stable order.
        problems: Vec<Problem>,
    },
    /// Several files of one configuration (a top-level file and the files it
    /// includes) have errors: each is reported.
    #[error("{}", display_several(path, errors))]
    Several {
        /// The top-level file that was loaded.
        path: PathBuf,
        /// One error per file that has errors, top-level file first, then in `include:` order.
        errors: Vec<ConfigError>,
    },
}

impl ConfigError {
    /// Every problem of this error, with the file it belongs to: the problems
    /// of `Invalid`, flattened across files for `Several`; empty for I/O and
    /// YAML syntax errors.
    pub fn problems(&self) -> Vec<(&Path, &Problem)> {
        match self {
            ConfigError::Invalid { path, problems } => {
                problems.iter().map(|p| (path.as_path(), p)).collect()
            }
            ConfigError::Several { errors, .. } => {
                errors.iter().flat_map(ConfigError::problems).collect()
            }
            ConfigError::Io { .. } | ConfigError::TooLarge { .. } | ConfigError::Yaml { .. } => {
                Vec::new()
            }
        }
    }
}

fn display_yaml(path: &Path, message: &str, line: Option<usize>, column: Option<usize>) -> String {
    let at = match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    };
    format!(
        "{} is not valid YAML{at}: {message}; fix the YAML there (check indentation, quotes, brackets and `key: value` spacing)",
        path.display()
    )
}

fn display_invalid(path: &Path, problems: &[Problem]) -> String {
    let n = problems.len();
    let noun = if n == 1 { "problem" } else { "problems" };
    let mut out = format!("found {n} {noun} in {}:", path.display());
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

fn display_several(path: &Path, errors: &[ConfigError]) -> String {
    let mut out = format!(
        "the configuration {} has errors in {} files:",
        path.display(),
        errors.len()
    );
    for e in errors {
        out.push('\n');
        out.push_str(&e.to_string());
    }
    out
}
