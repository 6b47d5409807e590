//! The dataset section: trust, columns, slices, label features, and the
//! whole file read back field by field.

use super::*;

#[test]
fn minimal_file_loads_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "payments.yaml", MINIMAL);
    let config = load(&path).unwrap();

    assert_eq!(config.path, path);
    assert_eq!(config.hash, sha(&[MINIMAL]));
    assert_eq!(config.datasets.len(), 1);
    let r = &config.datasets[0];
    let state = dir.path().join("state").join("payments");
    let expected = Rules {
        dataset: "payments".into(),
        source: SourceRule::None,
        state_dir: state.clone(),
        shared_history: None,
        baseline_dir: state.join("baselines"),
        baseline_id: None,
        trust: TrustRules {
            source: TrustSource::Column("trust_tag".into()),
            levels: vec![
                "human_reviewed".into(),
                "vendor".into(),
                "user_reported".into(),
                "scraped".into(),
            ],
            low_trust: vec!["user_reported".into(), "scraped".into()],
        },
        label: None,
        columns: vec![ColumnRule {
            name: "amount".into(),
            kind: ColumnKind::Numeric,
            range: None,
            pii: false,
            nullable: true,
        }],
        slices: Vec::new(),
        slice_bins: Default::default(),
        label_features: Vec::new(),
        thresholds: Thresholds::default(),
        sketch: SketchParams::default(),
        limits: Limits::default(),
        pii_key_env: "DQMON_PII_KEY".into(),
        rules_hash: sha(&[MINIMAL]),
        security: SecurityRules::default(),
        alerts: None,
    };
    assert_eq!(r, &expected);
    assert_eq!(config.dataset("payments"), Some(r));
    assert_eq!(config.dataset("other"), None);
}

#[test]
fn default_low_trust_is_the_second_half_rounded_up() {
    let low = |levels: &str| {
        let yaml = format!(
            "dataset: d\ntrust: {{ fixed: a, levels: {levels} }}\ncolumns: {{ x: text }}\n"
        );
        parse_rules(&yaml, Path::new(""), "t.yaml")
            .unwrap()
            .trust
            .low_trust
    };
    assert_eq!(low("[a]"), Vec::<String>::new());
    assert_eq!(low("[a, b]"), vec!["b"]);
    assert_eq!(low("[a, b, c]"), vec!["c"]);
    assert_eq!(low("[a, b, c, d, e]"), vec!["d", "e"]);
}

#[test]
fn full_file_round_trips_every_field() {
    let yaml = "\
dataset: payments.eu-1
source:
  parquet_drop:
    path: drop/payments
    poll_interval_ms: 250
    pattern: \"batch-*.parquet\"
state_dir: /var/lib/dqmon
baseline_dir: baselines
baseline_id: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
trust:
  fixed: vendor
  levels: [human_reviewed, vendor, user_reported, scraped]
  low_trust: [scraped]
label:
  column: is_fraud
  positive: 1
columns:
  amount: { kind: numeric, range: [0, 100000], pii: false, nullable: false }
  email: { kind: text, pii: true }
  country: categorical
  created_at: { kind: timestamp, range: [-1.5e3, .inf] }
  trust_tag: categorical
label_features: [country, { column: amount, bins: [10, 1000] }]
thresholds:
  false_alarms_per_1000_batches: 5
  row_count_min_rel_change: 0.75
  tag_share_min_abs_change: 0.1
  missing_min_abs_change: 0.03
  range_min_share_outside: 0.01
  range_quantiles: [0.001, 0.999]
  psi: 0.2
  psi_bins: 20
  js: 0.1
  top_k: 25
  top_min_share: 0.05
  rare_share: 0.002
  label_min_abs_change: 0.04
  unseen_min_share: 0.01
  duplicate_min_share: 0.1
  malformed_max_share: 0.02
  min_slice_rows: 500
sketch: { tdigest_k: 200, hll_lg_k: 14, frequent_items_map: 4096 }
limits: { max_file_bytes: 1000000, max_rows: 5000, max_string_len: 1024 }
pii_key_env: MY_PII_KEY
alerts:
  - type: stdout
  - { type: webhook, url: \"https://example.invalid/hook\", token_env: HOOK_TOKEN }
";
    let r = parse_rules(yaml, Path::new("/etc/dqmon"), "full.yaml").unwrap();
    let expected = Rules {
        dataset: "payments.eu-1".into(),
        shared_history: None,
        source: SourceRule::ParquetDrop {
            path: PathBuf::from("/etc/dqmon/drop/payments"),
            poll_interval_ms: 250,
            pattern: "batch-*.parquet".into(),
        },
        state_dir: PathBuf::from("/var/lib/dqmon/payments.eu-1"),
        baseline_dir: PathBuf::from("/etc/dqmon/baselines"),
        baseline_id: Some(
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(), // pragma: allowlist secret
        ),
        trust: TrustRules {
            source: TrustSource::Fixed("vendor".into()),
            levels: vec![
                "human_reviewed".into(),
                "vendor".into(),
                "user_reported".into(),
                "scraped".into(),
            ],
            low_trust: vec!["scraped".into()],
        },
        label: Some(LabelRule {
            column: "is_fraud".into(),
            positive: Some("1".into()),
        }),
        columns: vec![
            ColumnRule {
                name: "amount".into(),
                kind: ColumnKind::Numeric,
                range: Some((0.0, 100000.0)),
                pii: false,
                nullable: false,
            },
            ColumnRule {
                name: "email".into(),
                kind: ColumnKind::Text,
                range: None,
                pii: true,
                nullable: true,
            },
            ColumnRule {
                name: "country".into(),
                kind: ColumnKind::Categorical,
                range: None,
                pii: false,
                nullable: true,
            },
            ColumnRule {
                name: "created_at".into(),
                kind: ColumnKind::Timestamp,
                range: Some((-1500.0, f64::INFINITY)),
                pii: false,
                nullable: true,
            },
            ColumnRule {
                name: "trust_tag".into(),
                kind: ColumnKind::Categorical,
                range: None,
                pii: false,
                nullable: true,
            },
        ],
        slices: Vec::new(),
        slice_bins: [("amount".to_string(), vec![10.0, 1000.0])].into(),
        label_features: vec!["country".into(), "amount".into()],
        thresholds: Thresholds {
            false_alarms_per_1000_batches: 5.0,
            row_count_min_rel_change: 0.75,
            tag_share_min_abs_change: 0.1,
            missing_min_abs_change: 0.03,
            range_min_share_outside: 0.01,
            range_quantiles: (0.001, 0.999),
            psi: 0.2,
            psi_bins: 20,
            js: 0.1,
            top_k: 25,
            top_min_share: 0.05,
            rare_share: 0.002,
            label_min_abs_change: 0.04,
            unseen_min_share: 0.01,
            duplicate_min_share: 0.1,
            malformed_max_share: 0.02,
            min_slice_rows: 500,
            min_slice_value_rows: 50,
            max_findings_per_batch: 50,
        },
        sketch: SketchParams {
            tdigest_k: 200,
            hll_lg_k: 14,
            frequent_items_map: 4096,
        },
        limits: Limits {
            max_file_bytes: 1_000_000,
            max_rows: 5000,
            max_string_len: 1024,
        },
        pii_key_env: "MY_PII_KEY".into(),
        rules_hash: sha(&[yaml]),
        security: SecurityRules::default(),
        alerts: Some({
            use crate::model::{
                AlertRules, ConfigValue, Receiver, SecretRef, WebhookFormat, WebhookReceiver,
            };
            let mut a = AlertRules::default();
            a.receivers.insert("receiver-0".into(), Receiver::Stdout);
            a.receivers.insert(
                "receiver-1".into(),
                Receiver::Webhook(WebhookReceiver {
                    url: ConfigValue::Literal("https://example.invalid/hook".into()),
                    format: WebhookFormat::Generic,
                    headers: vec![(
                        "Authorization".into(),
                        ConfigValue::Secret(SecretRef::Env("HOOK_TOKEN".into())),
                    )],
                    routing_key: None,
                    timeout_secs: 10,
                }),
            );
            a.default_route = vec!["receiver-0".into(), "receiver-1".into()];
            a
        }),
    };
    assert_eq!(r, expected);
}

#[test]
fn every_mistake_is_reported_with_its_path() {
    let yaml = "\
dataset: pay ments
treshold: 3
trust:
  column: trust_tag
  levels: [human_reviewed, vendor, vendor, scraped]
  low_trust: [scrapped]
label: { column: label }
columns:
  amount: { kind: numeric, range: [10, 1] }
  country: { kind: categorical, range: [0, 5] }
  email: { kind: txt, pii: \"yes\" }
  trust_tag: numeric
  label: { kind: numeric }
thresholds:
  false_alarms_per_1000_batches: -1
  psi: \"0.3\"
  psi_bins: 1
  top_k: 0
  range_quantiles: [0.9, 0.1]
sketch: { tdigest_k: 5, hll_lg_k: 22, frequent_items_map: 1000 }
limits: { max_rows: -1 }
baseline_id: abc
alerts:
  - type: pager
  - { url: x }
";
    let found = parse_err(yaml);
    assert_eq!(
        paths(&found),
        vec![
            "dataset",
            "baseline_id",
            "trust.levels[2]",
            "trust.low_trust[0]",
            "columns.amount.range",
            "columns.country.range",
            "columns.email.kind",
            "columns.email.pii",
            "thresholds.false_alarms_per_1000_batches",
            "thresholds.psi",
            "thresholds.range_quantiles",
            "thresholds.psi_bins",
            "thresholds.top_k",
            "sketch.tdigest_k",
            "sketch.hll_lg_k",
            "sketch.frequent_items_map",
            "limits.max_rows",
            "alerts[0].type",
            "alerts[1].type",
            "treshold",
            "columns.trust_tag",
            "columns.label.kind",
        ],
        "{found:#?}"
    );
    let m = |p| message(&found, p);
    assert!(m("dataset").contains("`dataset: pay_ments`"));
    assert!(m("trust.levels[2]").contains("already listed at trust.levels[1]"));
    assert!(m("trust.low_trust[0]").contains("did you mean `scraped`?"));
    assert!(m("columns.amount.range").contains("must be below the high end"));
    assert!(m("columns.country.range").contains("only to numeric and timestamp"));
    assert!(m("columns.email.kind").contains("did you mean `text`?"));
    assert_eq!(
        m("columns.email.pii"),
        "expected `true` or `false`, found a string (\"yes\"); write `pii: true` or `pii: false` instead."
    );
    assert!(m("thresholds.false_alarms_per_1000_batches").contains("found -1"));
    assert_eq!(
        m("thresholds.psi"),
        "expected a number, found a string (\"0.3\"); remove the quotes around `0.3`."
    );
    assert!(m("thresholds.psi_bins").contains("at least 2"));
    assert!(m("sketch.frequent_items_map").contains("`frequent_items_map: 1024`"));
    assert!(m("limits.max_rows").contains("at least 1, found -1"));
    assert!(m("alerts[0].type").contains("`webhook`"));
    assert!(m("alerts[1].type").contains("has no `type`"));
    assert_eq!(
        m("treshold"),
        "unknown key `treshold`; did you mean `thresholds`?"
    );
    assert!(m("columns.trust_tag").contains("trust column"));
    assert!(m("columns.label.kind").contains("label column"));
}

#[test]
fn missing_required_keys_and_wrong_section_types() {
    let found = parse_err("trust: { levels: [] }\nthresholds: 5\n");
    assert_eq!(
        paths(&found),
        vec!["dataset", "trust", "trust.levels", "columns", "thresholds"],
        "{found:#?}"
    );
    assert!(message(&found, "dataset").contains("the required key `dataset` is missing"));
    assert!(message(&found, "trust").contains("add `column:"));
    assert!(message(&found, "thresholds").contains("expected a map, found a number (`5`)"));
}

#[test]
fn trust_cross_checks() {
    let found = parse_err(
        "dataset: d\n\
         trust: { column: tag, fixed: vendor, levels: [a, b] }\n\
         label: { column: tag }\n\
         columns: { x: text }\n",
    );
    assert_eq!(
        paths(&found),
        vec!["trust", "trust.fixed", "label.column"],
        "{found:#?}"
    );
    assert!(message(&found, "trust").contains("remove the other"));
    assert!(message(&found, "trust.fixed").contains("not one of `trust.levels`"));
    assert!(message(&found, "label.column").contains("cannot be the trust column `tag`"));
}

#[test]
fn typo_in_nested_key_is_suggested() {
    let found = parse_err(&format!(
        "{MINIMAL}thresholds: {{ psii: 0.3 }}\nsketch: {{ tdigest: 100 }}\ncolumns2: {{}}\nxyzzy: 1\n"
    ));
    assert_eq!(
        found,
        vec![
            (
                "thresholds.psii".to_string(),
                "unknown key `psii`; did you mean `psi`?".to_string()
            ),
            (
                "sketch.tdigest".to_string(),
                "unknown key `tdigest`; did you mean `tdigest_k`?".to_string()
            ),
            (
                "columns2".to_string(),
                "unknown key `columns2`; did you mean `columns`?".to_string()
            ),
            (
                "xyzzy".to_string(),
                "unknown key `xyzzy`; remove it or use one of the keys allowed here: `dataset`, `source`, `state_dir`, `shared_history`, `baseline_dir`, `baseline_id`, `trust`, `label`, `columns`, `slices`, `label_features`, `thresholds`, `sketch`, `limits`, `pii_key_env`, `alerts`, `security`, `server`.".to_string()
            ),
        ]
    );
}

#[test]
fn slices_must_be_declared_categorical_columns_without_pii() {
    let found = parse_err(&format!(
        "{MINIMAL}  country: categorical\n  email: {{ kind: categorical, pii: true }}\nslices: [country, amount, email, nope, country]\n"
    ));
    assert_eq!(
        paths(&found),
        vec!["slices[1]", "slices[2]", "slices[3]", "slices[4]"],
        "{found:#?}"
    );
    assert!(message(&found, "slices[1]").contains("need a categorical column"));
    assert!(message(&found, "slices[2]").contains("pii column"));
    assert!(message(&found, "slices[3]").contains("not a monitored column"));
    assert!(message(&found, "slices[4]").contains("already listed"));
    let ok = parse_rules(
        &format!("{MINIMAL}  country: categorical\nslices: [country]\n"),
        Path::new("/cfg"),
        "test.yaml",
    )
    .unwrap();
    assert_eq!(ok.slices, vec!["country".to_string()]);
}

#[test]
fn boolean_is_a_column_kind() {
    let r = parse_rules(
        &format!(
            "{MINIMAL}  is_test: boolean\n  reviewed: {{ kind: boolean }}\nslices: [is_test]\n"
        ),
        Path::new("/cfg"),
        "test.yaml",
    )
    .unwrap();
    assert_eq!(r.column("is_test").unwrap().kind, ColumnKind::Boolean);
    assert_eq!(r.column("reviewed").unwrap().kind, ColumnKind::Boolean);
    let found = parse_err(&format!("{MINIMAL}  flag: bool\n"));
    assert!(
        message(&found, "columns.flag").contains("`timestamp` or `boolean`"),
        "{found:?}"
    );
}

#[test]
fn numeric_slices_take_increasing_cut_points() {
    let r = parse_rules(
        &format!(
            "{MINIMAL}  country: categorical\nslices: [country, {{ column: amount, bins: [10, 100, 1000] }}]\n"
        ),
        Path::new("/cfg"),
        "test.yaml",
    )
    .unwrap();
    assert_eq!(r.slices, vec!["country".to_string(), "amount".to_string()]);
    assert_eq!(r.slice_bins["amount"], vec![10.0, 100.0, 1000.0]);
    let found = parse_err(&format!(
        "{MINIMAL}  country: categorical\nslices: [amount, {{ column: country, bins: [1] }}, {{ column: amount, bins: [5, 5] }}]\n"
    ));
    assert_eq!(
        paths(&found),
        vec!["slices[2].bins[1]", "slices[0]", "slices[1]"],
        "{found:#?}"
    );
    assert!(message(&found, "slices[0]").contains("`{ column: amount, bins: [10, 100] }`"));
    assert!(message(&found, "slices[1]").contains("`bins` cut a numeric column"));
    assert!(message(&found, "slices[2].bins[1]").contains("must increase"));
}

/// The suggested dataset name never keeps a path.
#[test]
fn a_dataset_name_with_a_path_gets_a_plain_suggestion() {
    let p = parse_err("dataset: ../../evil\ntrust: { fixed: vendor }\ncolumns: { a: numeric }\n");
    let m = message(&p, "dataset");
    assert!(m.ends_with("write e.g. `dataset: evil`."), "{m}");
}

#[test]
fn label_features_are_automatic_without_slices_and_can_be_listed_or_turned_off() {
    let base = format!(
        "{MINIMAL}  country: categorical\n  email: {{ kind: categorical, pii: true }}\n  at: timestamp\n  label: categorical\nlabel: {{ column: label, positive: \"1\" }}\n"
    );
    let load = |extra: &str| parse_rules(&format!("{base}{extra}"), Path::new("/cfg"), "test.yaml");
    // default: every declared categorical, boolean and numeric column but
    // pii ones, the label and the trust column; numeric ones in R10 bins
    let r = load("").unwrap();
    assert_eq!(r.label_features, ["amount", "country"]);
    assert_eq!(
        r.slice_bins["amount"],
        dqmon_core::rules::default_feature_bins()
    );
    assert_eq!(r.slice_bins["amount"].len(), 241);
    assert!(r.slice_bins["amount"].contains(&0.005));
    // slices declared: their cells are the prediction, no features
    let r = load("slices: [country]\n").unwrap();
    assert!(r.label_features.is_empty());
    // unless asked for
    let r = load("slices: [country]\nlabel_features: auto\n").unwrap();
    assert_eq!(r.label_features, ["amount", "country"]);
    for off in ["none", "[]"] {
        let r = load(&format!("label_features: {off}\n")).unwrap();
        assert!(
            r.label_features.is_empty() && r.slice_bins.is_empty(),
            "{off}"
        );
    }
    let r = load("label_features: [amount]\n").unwrap();
    assert_eq!(r.label_features, ["amount"]);
    assert_eq!(r.slice_bins["amount"].len(), 241);
    // the shape of a profile follows the features
    assert_ne!(
        load("").unwrap().profile_shape(),
        load("label_features: none\n").unwrap().profile_shape()
    );
    let found = parse_err(&format!(
        "{base}label_features: [label, nope, email, at, country, country]\n"
    ));
    let at = |p: &str| message(&found, p);
    assert!(
        at("label_features[0]").contains("label column"),
        "{found:?}"
    );
    assert!(at("label_features[1]").contains("not a monitored column"));
    assert!(at("label_features[2]").contains("pii column"));
    assert!(at("label_features[3]").contains("`timestamp`"));
    assert!(at("label_features[5]").contains("already listed"));
    let found = parse_err(&format!(
        "{base}label_features: [{{ column: country, bins: [1] }}]\n"
    ));
    assert!(message(&found, "label_features[0]").contains("cut points only for numeric"));
}
