//! Walking `trust:`, `label:`, `columns:`, `slices:` and `label_features:`.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::{
    Bound, COLUMN_KEYS, ColumnKind, ColumnOut, ColumnRule, Fields, KINDS, LABEL_KEYS, LabelRule,
    SLICE_KEYS, Section, TRUST_KEYS, TrustRules, TrustSource, Walker, default_feature_bins, found,
    index_path, key_path, kind_name, suggest, suggestion_suffix,
};

impl Walker {
    pub(super) fn trust(&mut self, path: &str, v: &Value) -> Section<TrustRules> {
        let mut out = Section {
            value: None,
            column: None,
        };
        let Some(m) = self.map(
            path,
            v,
            "`trust: { column: trust_tag, levels: [human_reviewed, vendor, scraped] }`",
        ) else {
            return out;
        };
        let mut f = Fields::new(path, m, TRUST_KEYS);
        let column = f.get("column").map(|(p, v)| {
            let name = self.text(&p, v, "`column: trust_tag`");
            if let Some(n) = &name {
                out.column = Some((n.clone(), p));
            }
            name
        });
        let fixed = f
            .get("fixed")
            .map(|(p, v)| (self.text(&p, v, "`fixed: vendor`"), p));
        let source = match (column, &fixed) {
            (Some(_), Some(_)) => {
                self.problem(
                    path,
                    "both `column` and `fixed` are set; keep `column` when a column of the data holds the trust tag, or `fixed` when every record has the same tag, and remove the other.",
                );
                None
            }
            (None, None) => {
                self.problem(
                    path,
                    "the trust tag source is missing; add `column: <name of the column holding the tag>` or `fixed: <the tag of every record>`.",
                );
                None
            }
            (Some(c), None) => c.map(TrustSource::Column),
            (None, Some((x, _))) => x.clone().map(TrustSource::Fixed),
        };

        // The tags read, even from a list with problems, and whether the list is valid.
        let (read_levels, levels_ok) = f
            .required(
                self,
                "levels",
                "`levels: [human_reviewed, vendor, scraped]`",
            )
            .map_or((Vec::new(), false), |(p, v)| {
                self.tag_list(&p, v, None, "levels")
            });
        let levels = levels_ok.then(|| read_levels.clone());
        if levels_ok
            && read_levels.is_empty()
            && let Some((p, _)) = f.peek("levels")
        {
            self.problem(
                &p,
                "the list of trust levels is empty; list every trust tag, most trusted first, e.g. `levels: [human_reviewed, vendor, scraped]`.",
            );
        }
        let low_trust = match f.get("low_trust") {
            Some((p, v)) => {
                let known = (!read_levels.is_empty()).then_some(read_levels.as_slice());
                let (tags, ok) = self.tag_list(&p, v, known, "low_trust");
                ok.then_some(tags)
            }
            None => levels.as_ref().map(|l| l[l.len().div_ceil(2)..].to_vec()),
        };
        if let Some((Some(tag), p)) = &fixed
            && !read_levels.is_empty()
            && !read_levels.contains(tag)
        {
            self.problem(
                p,
                format!(
                    "the fixed tag `{tag}` is not one of `trust.levels`; add it to `levels` at its place in the trust order, or fix its spelling{}.",
                    suggestion_suffix(tag, &read_levels)
                ),
            );
        }
        f.finish(self);
        if let (Some(source), Some(levels), Some(low_trust)) = (source, levels, low_trust)
            && !levels.is_empty()
        {
            out.value = Some(TrustRules {
                source,
                levels,
                low_trust,
            });
        }
        out
    }

    /// A list of distinct trust tags; with `known`, each must be one of them.
    /// Returns the tags that could be read and whether the whole list is valid.
    pub(super) fn tag_list(
        &mut self,
        path: &str,
        v: &Value,
        known: Option<&[String]>,
        key: &str,
    ) -> (Vec<String>, bool) {
        let example = format!("`{key}: [user_reported, scraped]`");
        let Some(items) = self.seq(path, v, &example) else {
            return (Vec::new(), false);
        };
        let mut tags: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = index_path(path, i);
            let Some(tag) = self.text(&p, item, "a trust tag such as `vendor`") else {
                ok = false;
                continue;
            };
            if tag == dqmon_core::profile::ALL {
                self.problem(
                    &p,
                    "`all` is reserved for the whole batch and cannot be a trust tag; rename the tag in the data or map it to another name.".to_string(),
                );
                ok = false;
            } else if let Some(j) = tags.iter().position(|t| t == &tag) {
                self.problem(
                    &p,
                    format!(
                        "`{tag}` is already listed at {}; list each trust tag once.",
                        index_path(path, j)
                    ),
                );
                ok = false;
            } else if let Some(known) = known
                && !known.contains(&tag)
            {
                self.problem(
                    &p,
                    format!(
                        "`{tag}` is not one of `trust.levels`; list only tags from `levels` here{}.",
                        suggestion_suffix(&tag, known)
                    ),
                );
                ok = false;
            }
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        (tags, ok)
    }

    /// The label section: the rule, with the label column name and its path as extra.
    pub(super) fn label(&mut self, path: &str, v: &Value) -> Section<Option<LabelRule>> {
        let mut out = Section {
            value: None,
            column: None,
        };
        let Some(m) = self.map(path, v, "`label: { column: label, positive: \"1\" }`") else {
            return out;
        };
        let mut f = Fields::new(path, m, LABEL_KEYS);
        let column = f
            .required(self, "column", "`column: label`")
            .and_then(|(p, v)| {
                let name = self.text(&p, v, "`column: label`")?;
                out.column = Some((name.clone(), p));
                Some(name)
            });
        let positive = match f.get("positive") {
            Some((p, v)) => match v {
                Value::String(s) => Some(Some(s.clone())),
                Value::Number(n) => Some(Some(n.to_string())),
                Value::Bool(b) => Some(Some(b.to_string())),
                other => {
                    self.wrong_type(&p, "a class value", other, "`positive: \"1\"`");
                    None
                }
            },
            None => Some(None),
        };
        f.finish(self);
        if let (Some(column), Some(positive)) = (column, positive) {
            out.value = Some(Some(LabelRule { column, positive }));
        }
        out
    }

    pub(super) fn columns(&mut self, path: &str, v: &Value) -> Option<Vec<ColumnOut>> {
        let m = self.map(
            path,
            v,
            "`columns: { amount: numeric, country: categorical }`",
        )?;
        let mut out: Vec<ColumnOut> = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (k, v) in m {
            let name = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.problem(
                        path,
                        format!(
                            "a column name must be text, found {}; write the column name as a plain key, e.g. `amount: numeric`.",
                            found(other)
                        ),
                    );
                    continue;
                }
            };
            let p = key_path(path, &name);
            if name.trim().is_empty() {
                self.problem(
                    &p,
                    "a column name is empty; write the name of the column as it appears in the data.",
                );
                continue;
            }
            if !seen.insert(name.clone()) {
                self.problem(
                    &p,
                    format!("the column `{name}` is listed twice; list each column once."),
                );
                continue;
            }
            out.push(self.column(&p, name, v));
        }
        Some(out)
    }

    pub(super) fn column(&mut self, path: &str, name: String, v: &Value) -> ColumnOut {
        let mut out = ColumnOut {
            name,
            kind: None,
            rule: None,
        };
        let m = match v {
            Value::String(_) => {
                out.kind = self.kind(path, v).map(|k| (k, path.to_string()));
                out.rule = out.kind.as_ref().map(|(kind, _)| ColumnRule {
                    name: out.name.clone(),
                    kind: *kind,
                    range: None,
                    pii: false,
                    nullable: true,
                });
                return out;
            }
            Value::Mapping(m) => m,
            Value::Null => {
                self.problem(
                    path,
                    format!(
                        "the column `{}` has no kind; write `{}: numeric` (or `categorical`, `text`, `timestamp`).",
                        out.name, out.name
                    ),
                );
                return out;
            }
            other => {
                self.wrong_type(
                    path,
                    "a column kind or a map of column settings",
                    other,
                    &format!("`{}: {{ kind: numeric }}`", out.name),
                );
                return out;
            }
        };
        let mut f = Fields::new(path, m, COLUMN_KEYS);
        out.kind = f
            .required(self, "kind", "`kind: numeric`")
            .and_then(|(p, v)| self.kind(&p, v).map(|k| (k, p)));
        let range = match f.get("range") {
            Some((p, v)) => {
                let r = self.pair(&p, v, "`range: [0, 100000]`");
                if let Some((kind, _)) = &out.kind
                    && !kind.is_numeric_like()
                {
                    self.problem(
                        &p,
                        format!(
                            "a range applies only to numeric and timestamp columns, and `{}` is `{}`; remove `range` or change the kind.",
                            out.name,
                            kind_name(*kind)
                        ),
                    );
                    None
                } else {
                    r.map(Some)
                }
            }
            None => Some(None),
        };
        let pii = match f.get("pii") {
            Some((p, v)) => self.boolean(&p, v, "pii"),
            None => Some(false),
        };
        let nullable = match f.get("nullable") {
            Some((p, v)) => self.boolean(&p, v, "nullable"),
            None => Some(true),
        };
        f.finish(self);
        if let (Some((kind, _)), Some(range), Some(pii), Some(nullable)) =
            (&out.kind, range, pii, nullable)
        {
            out.rule = Some(ColumnRule {
                name: out.name.clone(),
                kind: *kind,
                range,
                pii,
                nullable,
            });
        }
        out
    }

    pub(super) fn kind(&mut self, path: &str, v: &Value) -> Option<ColumnKind> {
        let s = self.text(path, v, "`kind: numeric`")?;
        match s.as_str() {
            "numeric" => Some(ColumnKind::Numeric),
            "categorical" => Some(ColumnKind::Categorical),
            "text" => Some(ColumnKind::Text),
            "boolean" => Some(ColumnKind::Boolean),
            "timestamp" => Some(ColumnKind::Timestamp),
            _ => {
                let mut message = format!(
                    "unknown column kind `{s}`; write one of `numeric`, `categorical`, `text`, `timestamp` or `boolean`"
                );
                match suggest(&s, KINDS) {
                    Some(k) => message.push_str(&format!(" (did you mean `{k}`?)")),
                    None => message.push('.'),
                }
                self.problem(path, message);
                None
            }
        }
    }

    /// A `[low, high]` list of two numbers with low < high.
    pub(super) fn pair(&mut self, path: &str, v: &Value, example: &str) -> Option<(f64, f64)> {
        let items = self.seq(path, v, example)?;
        if items.len() != 2 {
            self.problem(
                path,
                format!(
                    "expected a list of two numbers `[low, high]`, found {} items; write {example} instead.",
                    items.len()
                ),
            );
            return None;
        }
        let lo = self.number(&index_path(path, 0), &items[0], example);
        let hi = self.number(&index_path(path, 1), &items[1], example);
        let (lo, hi) = (lo?, hi?);
        if lo >= hi {
            self.problem(
                path,
                format!(
                    "the low end ({lo}) must be below the high end ({hi}); write `[low, high]` with low < high, e.g. `[{}, {}]`.",
                    hi.min(lo),
                    if lo == hi { lo + 1.0 } else { hi.max(lo) }
                ),
            );
            return None;
        }
        Some((lo, hi))
    }

    /// A list of columns as `slices:` and `label_features:` take it: names,
    /// or numeric columns with their cut points; each with its YAML path.
    pub(super) fn slice_list(
        &mut self,
        path: &str,
        v: &Value,
        list_example: &str,
        item_example: &str,
    ) -> Vec<(String, String, Option<Vec<f64>>)> {
        let Some(items) = self.seq(path, v, list_example) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let ip = format!("{path}[{i}]");
                match item {
                    Value::Mapping(_) => self.numeric_slice(&ip, item),
                    _ => self.text(&ip, item, item_example).map(|s| (s, ip, None)),
                }
            })
            .collect()
    }

    /// A numeric slice column: `{ column: amount, bins: [10, 100, 1000] }`,
    /// cut points strictly increasing and finite.
    pub(super) fn numeric_slice(
        &mut self,
        path: &str,
        v: &Value,
    ) -> Option<(String, String, Option<Vec<f64>>)> {
        let example = "`{ column: amount, bins: [10, 100, 1000] }`";
        let m = self.map(path, v, example)?;
        let mut f = Fields::new(path, m, SLICE_KEYS);
        let column = f
            .required(self, "column", "`column: amount`")
            .and_then(|(p, v)| self.text(&p, v, "`column: amount`"));
        let bins = f
            .required(self, "bins", "`bins: [10, 100, 1000]`")
            .and_then(|(p, v)| {
                let items = self.seq(&p, v, "`bins: [10, 100, 1000]`")?;
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("{p}[{i}]");
                    let x = self.real(&ip, item, Bound::Finite, "`10`")?;
                    if out.last().is_some_and(|last| x <= *last) {
                        self.problem(
                            &ip,
                            format!(
                                "cut points must increase; {x} does not come after {}.",
                                out[out.len() - 1]
                            ),
                        );
                        return None;
                    }
                    out.push(x);
                }
                if out.is_empty() {
                    self.problem(
                        &p,
                        "give at least one cut point, e.g. `bins: [0]`.".to_string(),
                    );
                    return None;
                }
                Some(out)
            });
        f.finish(self);
        Some((column?, path.to_string(), Some(bins?)))
    }
}

/// What `label_features:` said: nothing or `auto`, or a list (`none` and
/// `[]` are the empty list), each item `(column, YAML path, cut points)`.
pub(super) enum LabelFeatures {
    Auto { declared: bool },
    List(Vec<(String, String, Option<Vec<f64>>)>),
}

/// Problems of an explicit `label_features:` list: each item a declared
/// categorical, boolean or numeric column that is not `pii`, not the label
/// or trust column, listed once, with the same cut points as its slice.
pub(super) fn check_label_features(
    w: &mut Walker,
    cols: &[ColumnOut],
    items: &[(String, String, Option<Vec<f64>>)],
    slices: &[(String, String, Option<Vec<f64>>)],
    label: Option<&(String, String)>,
) {
    if !items.is_empty() && label.is_none() {
        w.problem(
            &items[0].1,
            "label features predict a label, and these rules declare none; add `label: { column: ..., positive: ... }` or remove `label_features`.".to_string(),
        );
        return;
    }
    for (i, (name, p, bins)) in items.iter().enumerate() {
        if items[..i].iter().any(|(n, _, _)| n == name) {
            w.problem(p, format!("`{name}` is already listed; remove the repeat."));
            continue;
        }
        if label.is_some_and(|(l, _)| l == name) {
            w.problem(
                p,
                format!("`{name}` is the label column; a label cannot predict itself, so list the columns the label depends on."),
            );
            continue;
        }
        let Some(c) = cols.iter().find(|c| &c.name == name) else {
            w.problem(
                p,
                format!("`{name}` is not a monitored column; list a column declared under `columns`, or add `{name}: categorical` (or `numeric`) there."),
            );
            continue;
        };
        if let Some((kind, _)) = &c.kind {
            let fits = match bins {
                Some(_) => *kind == ColumnKind::Numeric,
                None => kind.is_categorical_like() || *kind == ColumnKind::Numeric,
            };
            if !fits {
                w.problem(
                    p,
                    format!(
                        "`{name}` is `{}`; label features are categorical, boolean or numeric columns (cut points only for numeric ones).",
                        kind_name(*kind)
                    ),
                );
            }
        }
        if c.rule.as_ref().is_some_and(|r| r.pii) {
            w.problem(
                p,
                format!("`{name}` is a pii column; its values would be kept in profiles, so use a column that is not personal data."),
            );
        }
        if let Some((_, _, Some(sb))) = slices.iter().find(|(n, _, _)| n == name)
            && bins.as_ref().is_some_and(|b| b != sb)
        {
            w.problem(
                p,
                format!("`{name}` is also a slice, with other cut points; give it the same `bins` in both lists, or leave them out here."),
            );
        }
    }
}

/// The label features of valid rules: the list as given, or for `auto` (and
/// by default, when no `slices:` are declared) every declared categorical,
/// boolean and numeric column that is not `pii`, the label or the trust
/// column. A numeric feature without cut points gets
/// [`default_feature_bins`] unless it is a slice with its own.
pub(super) fn resolve_label_features(
    spec: LabelFeatures,
    columns: &[ColumnRule],
    slices: &[(String, String, Option<Vec<f64>>)],
    label: Option<&LabelRule>,
    trust: &TrustRules,
    slice_bins: &mut BTreeMap<String, Vec<f64>>,
) -> Vec<String> {
    let Some(label) = label else {
        return Vec::new();
    };
    let items: Vec<(String, Option<Vec<f64>>)> = match spec {
        LabelFeatures::Auto { declared } => {
            if !declared && !slices.is_empty() {
                return Vec::new();
            }
            let trust_column = match &trust.source {
                TrustSource::Column(c) => Some(c.as_str()),
                TrustSource::Fixed(_) => None,
            };
            columns
                .iter()
                .filter(|c| {
                    !c.pii
                        && c.name != label.column
                        && Some(c.name.as_str()) != trust_column
                        && (c.kind.is_categorical_like() || c.kind == ColumnKind::Numeric)
                })
                .map(|c| (c.name.clone(), None))
                .collect()
        }
        LabelFeatures::List(items) => items.into_iter().map(|(n, _, b)| (n, b)).collect(),
    };
    let mut out = Vec::with_capacity(items.len());
    for (name, bins) in items {
        let numeric = columns
            .iter()
            .any(|c| c.name == name && c.kind == ColumnKind::Numeric);
        if numeric && !slice_bins.contains_key(&name) {
            slice_bins.insert(name.clone(), bins.unwrap_or_else(default_feature_bins));
        }
        out.push(name);
    }
    out
}
