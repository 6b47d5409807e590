//! Walking the YAML tree of a configuration file by hand.
//!
//! serde's `deny_unknown_fields` stops at the first mistake; here every
//! mapping is walked key by key and every problem is collected with its YAML
//! path, so that one run reports all of them. Values are only turned into the
//! typed [`Rules`] when no problem was found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

mod ops;
pub(super) use ops::server_section;

use super::error::Problem;

mod alerts;
use super::model::{
    ColumnKind, ColumnRule, LabelRule, Limits, Rules, SketchParams, SourceRule, Thresholds,
    TrustRules, TrustSource, default_feature_bins,
};
use super::model::{PublicKeySource, SecurityRules, TrustedKey};

mod columns;
mod kafka;
mod security;
mod thresholds;

use columns::{LabelFeatures, check_label_features, resolve_label_features};

/// The YAML path used for problems about the file as a whole.
pub(super) const ROOT: &str = "(top level)";

const RULES_KEYS: &[&str] = &[
    "dataset",
    "source",
    "state_dir",
    "baseline_dir",
    "baseline_id",
    "trust",
    "label",
    "columns",
    "slices",
    "label_features",
    "thresholds",
    "sketch",
    "limits",
    "pii_key_env",
    "alerts",
    "security",
    "server",
];
const INCLUDE_KEYS: &[&str] = &["include", "state_dir", "server"];
const SOURCE_KEYS: &[&str] = &["parquet_drop", "kafka"];
const PARQUET_DROP_KEYS: &[&str] = &["path", "poll_interval_ms", "pattern"];
const TRUST_KEYS: &[&str] = &["column", "fixed", "levels", "low_trust"];
const LABEL_KEYS: &[&str] = &["column", "positive"];
const SLICE_KEYS: &[&str] = &["column", "bins"];
const COLUMN_KEYS: &[&str] = &["kind", "range", "pii", "nullable"];
const KINDS: &[&str] = &["numeric", "categorical", "text", "timestamp", "boolean"];
const THRESHOLD_KEYS: &[&str] = &[
    "false_alarms_per_1000_batches",
    "row_count_min_rel_change",
    "tag_share_min_abs_change",
    "missing_min_abs_change",
    "range_min_share_outside",
    "range_quantiles",
    "psi",
    "psi_bins",
    "js",
    "top_k",
    "top_min_share",
    "rare_share",
    "label_min_abs_change",
    "unseen_min_share",
    "duplicate_min_share",
    "malformed_max_share",
    "min_slice_rows",
    "min_slice_value_rows",
    "max_findings_per_batch",
];
const SKETCH_KEYS: &[&str] = &["tdigest_k", "hll_lg_k", "frequent_items_map"];
const LIMIT_KEYS: &[&str] = &["max_file_bytes", "max_rows", "max_string_len"];
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "signing_key",
];
const SECURITY_KEYS: &[&str] = &[
    "require_signed_approval",
    "require_distinct_approver",
    "trusted_keys",
];
const TRUSTED_KEY_KEYS: &[&str] = &["name", "public_key", "public_key_file"];

/// What a rules file needs from where it was found.
pub(super) struct RulesContext<'a> {
    /// The folder of the rules file: relative paths are resolved against it.
    pub base_dir: &'a Path,
    /// The `state_dir` of the top-level file that included this one, already resolved.
    pub inherited_state_dir: Option<&'a Path>,
    /// SHA-256 hex of the rules file bytes.
    pub rules_hash: String,
}

/// The settings of a top-level include file.
pub(super) struct IncludeFile {
    /// The shared `state_dir`, resolved against the include file's folder.
    pub state_dir: Option<PathBuf>,
    /// Each valid entry of `include:`: its YAML path and the path as written.
    pub include: Vec<(String, String)>,
}

/// Whether a parsed file is a top-level include file rather than a dataset rules file.
pub(super) fn is_include_file(root: &Value) -> bool {
    root.as_mapping()
        .is_some_and(|m| m.contains_key("include") && !m.contains_key("dataset"))
}

/// Walk a top-level include file: the problems found and what could be read.
pub(super) fn include_file(root: &Value, base_dir: &Path) -> (IncludeFile, Vec<Problem>) {
    let mut w = Walker::default();
    let mut out = IncludeFile {
        state_dir: None,
        include: Vec::new(),
    };
    if let Some(m) = w.root_map(root) {
        let mut f = Fields::new("", m, INCLUDE_KEYS);
        if let Some((p, v)) = f.get("state_dir") {
            out.state_dir = w
                .text(&p, v, "`state_dir: state`")
                .map(|s| resolve(base_dir, &s));
        }
        let _validated_by_server_section = f.get("server");
        if let Some((p, v)) = f.required(&mut w, "include", "`include: [rules/payments.yaml]`")
            && let Some(items) = w.seq(&p, v, "`include: [rules/payments.yaml]`")
        {
            if items.is_empty() {
                w.problem(
                    &p,
                    "the include list is empty; list at least one dataset rules file, e.g. `include: [rules/payments.yaml]`.",
                );
            }
            for (i, item) in items.iter().enumerate() {
                let ip = index_path(&p, i);
                if let Some(s) = w.text(&ip, item, "a path such as `rules/payments.yaml`") {
                    out.include.push((ip, s));
                }
            }
        }
        f.finish_with(&mut w, |k| {
            RULES_KEYS.contains(&k).then(|| {
                format!(
                    "`{k}` belongs in each dataset's rules file, not in a top-level include file (which takes only `include` and `state_dir`); move it into the rules files."
                )
            })
        });
    }
    (out, w.problems)
}

/// Walk a dataset rules file and build its [`Rules`], or return every problem found.
pub(super) fn rules(root: &Value, ctx: &RulesContext<'_>) -> Result<Rules, Vec<Problem>> {
    let mut w = Walker::default();
    let Some(m) = w.root_map(root) else {
        return Err(w.problems);
    };
    let mut f = Fields::new("", m, RULES_KEYS);

    let dataset = f
        .required(&mut w, "dataset", "`dataset: payments`")
        .and_then(|(p, v)| w.dataset_name(&p, v));
    let source = match f.get("source") {
        Some((p, v)) => w.source(&p, v, ctx.base_dir),
        None => Some(SourceRule::None),
    };
    let state_root = match f.get("state_dir") {
        Some((p, v)) => w
            .text(&p, v, "`state_dir: state`")
            .map(|s| resolve(ctx.base_dir, &s)),
        None => Some(
            ctx.inherited_state_dir
                .map_or_else(|| ctx.base_dir.join("state"), Path::to_path_buf),
        ),
    };
    let baseline_dir = match f.get("baseline_dir") {
        Some((p, v)) => w
            .text(&p, v, "`baseline_dir: baselines`")
            .map(|s| Some(resolve(ctx.base_dir, &s))),
        None => Some(None),
    };
    let baseline_id = match f.get("baseline_id") {
        Some((p, v)) => w.baseline_id(&p, v).map(Some),
        None => Some(None),
    };
    let trust = f
        .required(
            &mut w,
            "trust",
            "`trust: { column: trust_tag, levels: [human_reviewed, vendor, scraped] }`",
        )
        .map(|(p, v)| w.trust(&p, v));
    let label = match f.get("label") {
        Some((p, v)) => w.label(&p, v),
        None => Section {
            value: Some(None),
            column: None,
        },
    };
    let columns = f
        .required(&mut w, "columns", "`columns: { amount: numeric }`")
        .and_then(|(p, v)| w.columns(&p, v));
    // (column, its YAML path, cut points for a numeric column)
    let slices: Vec<(String, String, Option<Vec<f64>>)> = match f.get("slices") {
        Some((p, v)) => w.slice_list(
            &p,
            v,
            "`slices: [country, merchant_category]`",
            "`slices: [country]`",
        ),
        None => Vec::new(),
    };
    // `label_features:` absent or `auto` (every eligible column, when no
    // `slices:` are declared), `none` or `[]` (off), or a list like `slices:`
    let label_features: LabelFeatures = match f.get("label_features") {
        None => LabelFeatures::Auto { declared: false },
        Some((_, Value::String(t))) if t == "auto" => LabelFeatures::Auto { declared: true },
        Some((_, Value::String(t))) if t == "none" => LabelFeatures::List(Vec::new()),
        Some((p, v)) => LabelFeatures::List(w.slice_list(
            &p,
            v,
            "`label_features: auto`, `label_features: none` or `label_features: [country, { column: amount, bins: [10, 100] }]`",
            "`label_features: [country]`",
        )),
    };
    let (thresholds, thresholds_path) = match f.get("thresholds") {
        Some((p, v)) => (w.thresholds(&p, v), p),
        None => (Thresholds::default(), "thresholds".to_string()),
    };
    let sketch = match f.get("sketch") {
        Some((p, v)) => w.sketch(&p, v),
        None => SketchParams::default(),
    };
    let limits = match f.get("limits") {
        Some((p, v)) => w.limits(&p, v),
        None => Limits::default(),
    };
    let pii_key_env = match f.get("pii_key_env") {
        Some((p, v)) => w.env_var_name(&p, v),
        None => Some("DQMON_PII_KEY".to_string()),
    };
    let alerts = match f.get("alerts") {
        Some((p, v)) => w.alerts(&p, v, ctx.base_dir),
        None => None,
    };
    let security = match f.get("security") {
        Some((p, v)) => w.security(&p, v, ctx.base_dir),
        None => SecurityRules::default(),
    };
    let _validated_by_server_section = f.get("server");
    f.finish_with(&mut w, |k| {
        (k == "include").then(|| {
            "a dataset rules file cannot also include other files; remove `include:` here and list this file under `include:` of a separate top-level file instead.".to_string()
        })
    });

    // Cross-field checks, run on whatever parts were readable.
    let trust_column = trust.as_ref().and_then(|t| t.column.clone());
    if let Some(cols) = &columns {
        for (role, name) in [
            ("trust", trust_column.as_ref().map(|(n, _)| n)),
            ("label", label.column.as_ref().map(|(n, _)| n)),
        ] {
            let Some(name) = name else { continue };
            if let Some(c) = cols.iter().find(|c| &c.name == name)
                && let Some((kind, kind_path)) = &c.kind
                && kind.is_numeric_like()
            {
                let what = if role == "trust" {
                    "the trust column, whose values are trust tags"
                } else {
                    "the label column, whose values are classes"
                };
                w.problem(
                    kind_path,
                    format!(
                        "`{name}` is {what}, so it cannot be monitored as `{}`; change its kind to `categorical` or remove it from `columns`.",
                        kind_name(*kind)
                    ),
                );
            }
        }
    }
    if let Some(cols) = &columns
        && let LabelFeatures::List(items) = &label_features
    {
        check_label_features(&mut w, cols, items, &slices, label.column.as_ref());
    }
    if let Some(cols) = &columns {
        for (i, (name, p, bins)) in slices.iter().enumerate() {
            if slices[..i].iter().any(|(n, _, _)| n == name) {
                w.problem(p, format!("`{name}` is already listed; remove the repeat."));
                continue;
            }
            match cols.iter().find(|c| &c.name == name) {
                None => w.problem(
                    p,
                    format!(
                        "`{name}` is not a monitored column; slice by a categorical column declared under `columns`, or add `{name}: categorical` there."
                    ),
                ),
                Some(c) if bins.is_some() => {
                    if let Some((kind, _)) = &c.kind
                        && *kind != ColumnKind::Numeric
                    {
                        w.problem(
                            p,
                            format!(
                                "`{name}` is `{}`; `bins` cut a numeric column, so slice a categorical one by name (`slices: [{name}]`).",
                                kind_name(*kind)
                            ),
                        );
                    }
                }
                Some(c) => {
                    if let Some((kind, _)) = &c.kind
                        && !kind.is_categorical_like()
                    {
                        w.problem(
                            p,
                            format!(
                                "`{name}` is `{}`; slices need a categorical column (one value per slice), or cut points for a numeric one: `{{ column: {name}, bins: [10, 100] }}`.",
                                kind_name(*kind)
                            ),
                        );
                    }
                    if c.rule.as_ref().is_some_and(|r| r.pii) {
                        w.problem(
                            p,
                            format!(
                                "`{name}` is a pii column; its values would be kept as slice names, so slice by a column that is not personal data."
                            ),
                        );
                    }
                }
            }
        }
    }
    if let (Some((t, _)), Some((l, lp))) = (&trust_column, &label.column)
        && t == l
    {
        w.problem(
            lp,
            format!(
                "the label column cannot be the trust column `{t}` as well; set `label.column` to the column that holds the labels."
            ),
        );
    }
    if thresholds.rare_share >= thresholds.top_min_share {
        w.problem(
            &key_path(&thresholds_path, "rare_share"),
            format!(
                "`rare_share` ({}) must be below `top_min_share` ({}), otherwise no value can go from rare to common; lower `rare_share` or raise `top_min_share`.",
                thresholds.rare_share, thresholds.top_min_share
            ),
        );
    }

    let trust_is_fixed = trust
        .as_ref()
        .and_then(|t| t.value.as_ref())
        .is_some_and(|t| matches!(t.source, TrustSource::Fixed(_)));
    kafka::check_trust(&mut w, source.as_ref(), trust_is_fixed);

    if !w.problems.is_empty() {
        return Err(w.problems);
    }
    let (
        Some(dataset),
        Some(source),
        Some(state_root),
        Some(baseline_dir),
        Some(baseline_id),
        Some(Section {
            value: Some(trust), ..
        }),
        Section {
            value: Some(label), ..
        },
        Some(Some(columns)),
        Some(pii_key_env),
    ) = (
        dataset,
        source,
        state_root,
        baseline_dir,
        baseline_id,
        trust,
        label,
        columns.map(|cols| cols.into_iter().map(|c| c.rule).collect::<Option<Vec<_>>>()),
        pii_key_env,
    )
    else {
        // Every `None` above comes with a problem, so this is unreachable in
        // practice; report it rather than panic.
        return Err(vec![Problem::new(
            ROOT,
            "the file could not be read completely although no single problem was found; please report this as a bug of dqmon.",
        )]);
    };
    let mut slice_bins: BTreeMap<String, Vec<f64>> = slices
        .iter()
        .filter_map(|(n, _, b)| b.clone().map(|b| (n.clone(), b)))
        .collect();
    let label_features = resolve_label_features(
        label_features,
        &columns,
        &slices,
        label.as_ref(),
        &trust,
        &mut slice_bins,
    );
    let state_dir = state_root.join(&dataset);
    let baseline_dir = baseline_dir.unwrap_or_else(|| state_dir.join("baselines"));
    Ok(Rules {
        dataset,
        source,
        state_dir,
        baseline_dir,
        baseline_id,
        trust,
        label,
        columns,
        slice_bins,
        slices: slices.into_iter().map(|(n, _, _)| n).collect(),
        label_features,
        thresholds,
        sketch,
        limits,
        pii_key_env,
        rules_hash: ctx.rules_hash.clone(),
        security,
        alerts,
    })
}

/// A section as far as it could be read: the typed value when it is
/// complete, and a column name with its YAML path that cross-field checks can
/// use even when the rest of the section is broken.
struct Section<T> {
    value: Option<T>,
    column: Option<(String, String)>,
}

/// One column as far as it could be read.
struct ColumnOut {
    name: String,
    /// The kind and the YAML path where it was written.
    kind: Option<(ColumnKind, String)>,
    rule: Option<ColumnRule>,
}

#[derive(Default)]
struct Walker {
    problems: Vec<Problem>,
}

/// The bounds of a real-valued setting.
#[derive(Clone, Copy)]
enum Bound {
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
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        let path = if path.is_empty() { ROOT } else { path };
        self.problems.push(Problem::new(path, message));
    }

    fn wrong_type(&mut self, path: &str, expected: &str, found_value: &Value, example: &str) {
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

    fn root_map<'a>(&mut self, root: &'a Value) -> Option<&'a Mapping> {
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

    fn map<'a>(&mut self, path: &str, v: &'a Value, example: &str) -> Option<&'a Mapping> {
        match v {
            Value::Mapping(m) => Some(m),
            other => {
                self.wrong_type(path, "a map", other, example);
                None
            }
        }
    }

    fn seq<'a>(&mut self, path: &str, v: &'a Value, example: &str) -> Option<&'a [Value]> {
        match v {
            Value::Sequence(s) => Some(s),
            other => {
                self.wrong_type(path, "a list", other, example);
                None
            }
        }
    }

    /// Non-empty text.
    fn text(&mut self, path: &str, v: &Value, example: &str) -> Option<String> {
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

    fn boolean(&mut self, path: &str, v: &Value, key: &str) -> Option<bool> {
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
    fn number(&mut self, path: &str, v: &Value, example: &str) -> Option<f64> {
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
    fn real(&mut self, path: &str, v: &Value, bound: Bound, example: &str) -> Option<f64> {
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
    fn whole(&mut self, path: &str, v: &Value, min: u64, max: u64, example: &str) -> Option<u64> {
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

    fn secret(&mut self, path: &str, key: &str) {
        self.problem(
            path,
            format!(
                "secrets are never written in config files; set `{key}_env: VAR_NAME` (an environment variable) or `{key}_file: /path` instead."
            ),
        );
    }

    /// Report every secret-like key with a literal value anywhere below `v`.
    fn scan_secrets(&mut self, path: &str, v: &Value) {
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

    fn dataset_name(&mut self, path: &str, v: &Value) -> Option<String> {
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

    fn source(&mut self, path: &str, v: &Value, base_dir: &Path) -> Option<SourceRule> {
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

    fn parquet_drop(&mut self, path: &str, v: &Value, base_dir: &Path) -> Option<SourceRule> {
        let m = self.map(path, v, "`parquet_drop: { path: drop/payments }`")?;
        let mut f = Fields::new(path, m, PARQUET_DROP_KEYS);
        let folder = f
            .required(self, "path", "`path: drop/payments`")
            .and_then(|(p, v)| self.text(&p, v, "`path: drop/payments`"))
            .map(|s| resolve(base_dir, &s));
        let poll = match f.get("poll_interval_ms") {
            Some((p, v)) => self.whole(&p, v, 1, u64::MAX, "`poll_interval_ms: 500`"),
            None => Some(500),
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
        f.finish(self);
        Some(SourceRule::ParquetDrop {
            path: folder?,
            poll_interval_ms: poll?,
            pattern: pattern?,
        })
    }

    fn baseline_id(&mut self, path: &str, v: &Value) -> Option<String> {
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

    fn env_var_name(&mut self, path: &str, v: &Value) -> Option<String> {
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
struct Fields<'a> {
    path: String,
    known: &'static [&'static str],
    entries: Vec<(&'a Value, &'a Value, bool)>,
}

impl<'a> Fields<'a> {
    fn new(path: &str, m: &'a Mapping, known: &'static [&'static str]) -> Fields<'a> {
        Fields {
            path: path.to_string(),
            known,
            entries: m.iter().map(|(k, v)| (k, v, false)).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key` and its YAML path, without marking it as read.
    fn peek(&self, key: &str) -> Option<(String, &'a Value)> {
        self.entries
            .iter()
            .find(|(k, _, _)| k.as_str() == Some(key))
            .map(|(_, v, _)| (key_path(&self.path, key), *v))
    }

    /// The value of an optional key and its YAML path; an empty value counts as absent.
    fn get(&mut self, key: &str) -> Option<(String, &'a Value)> {
        let entry = self
            .entries
            .iter_mut()
            .find(|(k, _, _)| k.as_str() == Some(key))?;
        entry.2 = true;
        (!entry.1.is_null()).then(|| (key_path(&self.path, key), entry.1))
    }

    /// The value of a required key; reports it missing or empty.
    fn required(
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

    fn finish(self, w: &mut Walker) {
        self.finish_with(w, |_| None);
    }

    /// Report every key that was not read: unknown keys (with the closest
    /// known key, or `hint` for keys that need a special explanation),
    /// non-text keys and inline secrets.
    fn finish_with(self, w: &mut Walker, hint: impl Fn(&str) -> Option<String>) {
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

/// Resolve a path written in a file against the file's folder; absolute paths
/// are kept. `.` and `..` are resolved lexically (`rules/../drop` → `drop`), so
/// that paths in logs and alerts read as users expect.
pub(super) fn resolve(base_dir: &Path, written: &str) -> PathBuf {
    use std::path::Component;
    let p = Path::new(written);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !matches!(out.components().next_back(), Some(Component::RootDir)) {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// The YAML path of `key` below `parent`: `a.b`, or `a["odd key"]` for keys
/// that are not plain words.
fn key_path(parent: &str, key: &str) -> String {
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

fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A short description of a value for "found …" messages.
fn found(v: &Value) -> String {
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

fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Numeric => "numeric",
        ColumnKind::Categorical => "categorical",
        ColumnKind::Text => "text",
        ColumnKind::Timestamp => "timestamp",
        ColumnKind::Boolean => "boolean",
    }
}

fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a key names a secret (`password`, `smtp_token`, `api-key`, ...);
/// the `_env` and `_file` forms that point at a secret are fine.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    if k.ends_with("_env") || k.ends_with("_file") {
        return false;
    }
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

fn is_literal(v: &Value) -> bool {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
        Value::Tagged(t) => is_literal(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => false,
    }
}

/// The candidate closest to `word` when it is at most 2 edits away (ignoring case).
fn suggest<'c, S: AsRef<str>>(word: &str, candidates: &'c [S]) -> Option<&'c str> {
    let w = word.to_lowercase();
    let len = w.chars().count();
    candidates
        .iter()
        .map(|c| (edit_distance(&w, &c.as_ref().to_lowercase()), c.as_ref()))
        .filter(|&(d, _)| d <= 2 && d < len)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn suggestion_suffix(word: &str, candidates: &[String]) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("treshold", "thresholds"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kind", "kind"), 0);
        assert_eq!(suggest("treshold", RULES_KEYS), Some("thresholds"));
        assert_eq!(suggest("colums", RULES_KEYS), Some("columns"));
        assert_eq!(suggest("zzzzzz", RULES_KEYS), None);
    }

    #[test]
    fn secret_keys_are_recognised() {
        for k in [
            "password",
            "smtp_password",
            "api-key",
            "API_KEY",
            "token",
            "client_secret",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "password_env",
            "token_file",
            "pii_key_env",
            "dataset",
            "top_k",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn key_paths_quote_odd_keys() {
        assert_eq!(key_path("", "dataset"), "dataset");
        assert_eq!(key_path("columns", "amount"), "columns.amount");
        assert_eq!(key_path("columns", "a.b"), "columns[\"a.b\"]");
        assert_eq!(index_path("trust.levels", 2), "trust.levels[2]");
        assert_eq!(
            resolve(Path::new("rules"), "../fixtures/drop"),
            PathBuf::from("fixtures/drop")
        );
        assert_eq!(resolve(Path::new(""), "../x"), PathBuf::from("../x"));
        assert_eq!(
            resolve(Path::new("/a/b"), "./c/../d"),
            PathBuf::from("/a/b/d")
        );
        assert_eq!(
            resolve(Path::new("rules"), "/abs/p"),
            PathBuf::from("/abs/p")
        );
    }
}
