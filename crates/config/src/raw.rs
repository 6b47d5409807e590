//! Walking the YAML tree of a configuration file by hand.
//!
//! serde's `deny_unknown_fields` stops at the first mistake; here every
//! mapping is walked key by key and every problem is collected with its YAML
//! path, so that one run reports all of them. Values are only turned into the
//! typed [`Rules`] when no problem was found.

mod alerts;
mod columns;
mod kafka;
mod object_store;
mod ops;
mod security;
mod thresholds;
mod walker;
mod wording;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::error::Problem;
use super::model::{
    ColumnKind, ColumnRule, LabelRule, Limits, Rules, SketchParams, SourceRule, Thresholds,
    TrustRules, TrustSource, default_feature_bins,
};
use super::model::{PublicKeySource, SecurityRules, TrustedKey};
use columns::{LabelFeatures, check_label_features, resolve_label_features};
pub(super) use ops::server_section;
use walker::{Bound, Fields, Walker};
use wording::{
    found, index_path, is_literal, is_secret_key, key_path, kind_name, list, suggest,
    suggestion_suffix,
};

/// The YAML path used for problems about the file as a whole.
pub(super) const ROOT: &str = "(top level)";

const RULES_KEYS: &[&str] = &[
    "dataset",
    "source",
    "state_dir",
    "shared_history",
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
const PARQUET_DROP_KEYS: &[&str] = &["path", "poll_interval_ms", "pattern", "claim_lease_ms"];
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
    let shared_history = match f.get("shared_history") {
        Some((p, v)) => w.shared_history(&p, v).map(Some),
        None => Some(None),
    };
    let baseline_dir = match f.get("baseline_dir") {
        Some((p, v)) => w.baseline_dir(&p, v, ctx.base_dir).map(Some),
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
        Some(shared_history),
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
        shared_history,
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
    let shared_history = shared_history.map(|url| format!("{url}/{dataset}"));
    Ok(Rules {
        dataset,
        source,
        shared_history,
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

#[cfg(test)]
mod tests {
    use super::wording::edit_distance;
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
