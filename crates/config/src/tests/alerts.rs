//! The `alerts:` section: receivers, routes, cooldowns, and secrets kept out
//! of the file and out of the messages.

use super::*;

const ALERTS_FULL: &str = "\
alerts:
  cooldown: 30m
  resolve_after_batches: 5
  retry: { max_attempts: 4, initial_backoff: 500ms, max_backoff: 1m }
  receivers:
    oncall:
      type: email
      host: smtp.example.com
      tls: tls
      from: dqmon <dqmon@example.com>
      to: [oncall@example.com, data@example.com]
      username_env: SMTP_USER
      password_file: secrets/smtp
      ca_file: certs/ca.pem
    chat: { type: webhook, format: slack, url_env: SLACK_URL }
    pager:
      type: webhook
      format: pagerduty
      url: https://events.pagerduty.com/v2/enqueue
      routing_key_env: PD_KEY
    hook:
      type: webhook
      url: http://127.0.0.1:9/x
      headers: { X-Source: dqmon, Authorization_env: HOOK_AUTH }
      timeout: 3s
    log: { type: file, path: out/alerts.jsonl }
  routes:
    - match: { severity: critical, trust_tag: [scraped, user_reported] }
      to: [pager, oncall]
      continue: true
    - match: { check: [missing_rate, out_of_range], column: amount }
      to: chat
      digest: 15m
  default: [log, stdout]
";

#[test]
fn alerts_section_is_read_into_receivers_and_routes() {
    use crate::model::{ConfigValue, EmailReceiver, Receiver, SecretRef, SmtpTls, WebhookFormat};
    use dqmon_core::compare::Severity;
    let r = parse_rules(
        &format!("{MINIMAL}{ALERTS_FULL}"),
        Path::new("/cfg"),
        "t.yaml",
    )
    .unwrap();
    let a = r.alerts.expect("alerts");
    assert_eq!(a.cooldown_secs, 1800);
    assert_eq!(a.resolve_after_batches, 5);
    assert_eq!(
        (
            a.retry.max_attempts,
            a.retry.initial_backoff_ms,
            a.retry.max_backoff_ms
        ),
        (4, 500, 60_000)
    );
    assert_eq!(
        a.receivers["oncall"],
        Receiver::Email(EmailReceiver {
            host: "smtp.example.com".into(),
            port: 465,
            tls: SmtpTls::Tls,
            from: "dqmon <dqmon@example.com>".into(),
            to: vec!["oncall@example.com".into(), "data@example.com".into()],
            username: Some(ConfigValue::Secret(SecretRef::Env("SMTP_USER".into()))),
            password: Some(SecretRef::File(PathBuf::from("/cfg/secrets/smtp"))),
            timeout_secs: 10,
            ca_file: Some(PathBuf::from("/cfg/certs/ca.pem")),
        })
    );
    let Receiver::Webhook(hook) = &a.receivers["hook"] else {
        panic!()
    };
    assert_eq!(
        hook.headers,
        vec![
            ("X-Source".to_string(), ConfigValue::Literal("dqmon".into())),
            (
                "Authorization".to_string(),
                ConfigValue::Secret(SecretRef::Env("HOOK_AUTH".into()))
            ),
        ]
    );
    assert_eq!(hook.timeout_secs, 3);
    let Receiver::Webhook(chat) = &a.receivers["chat"] else {
        panic!()
    };
    assert_eq!(chat.format, WebhookFormat::Slack);
    assert_eq!(
        chat.url,
        ConfigValue::Secret(SecretRef::Env("SLACK_URL".into()))
    );
    assert!(matches!(a.receivers["stdout"], Receiver::Stdout));
    assert_eq!(
        a.receivers["log"],
        Receiver::File {
            path: PathBuf::from("/cfg/out/alerts.jsonl")
        }
    );
    assert_eq!(a.routes.len(), 2);
    assert_eq!(a.routes[0].severity, vec![Severity::Critical]);
    assert_eq!(a.routes[0].trust_tag, vec!["scraped", "user_reported"]);
    assert_eq!(a.routes[0].to, vec!["pager", "oncall"]);
    assert!(a.routes[0].continue_matching);
    assert_eq!(a.routes[1].check, vec!["missing_rate", "out_of_range"]);
    assert_eq!(a.routes[1].column, vec!["amount"]);
    assert_eq!(a.routes[1].digest_secs, Some(900));
    assert_eq!(a.default_route, vec!["log", "stdout"]);
}

#[test]
fn absent_alerts_section_keeps_stdout_lines_and_defaults_are_an_hour() {
    let r = parse_rules(MINIMAL, Path::new("/cfg"), "t.yaml").unwrap();
    assert_eq!(r.alerts, None);
    let r = parse_rules(
        &format!("{MINIMAL}alerts: {{}}\n"),
        Path::new("/cfg"),
        "t.yaml",
    );
    // `alerts: {}` turns the outbox on with every default (stdout only).
    assert_eq!(r.unwrap().alerts, Some(crate::model::AlertRules::default()));
    let r = parse_rules(
        &format!("{MINIMAL}alerts: {{ cooldown: 2h }}\n"),
        Path::new("/cfg"),
        "t.yaml",
    )
    .unwrap();
    let a = r.alerts.unwrap();
    assert_eq!(a.cooldown_secs, 7200);
    assert_eq!(a.default_route, vec!["stdout"]);
    let d = crate::model::AlertRules::default();
    assert_eq!((d.cooldown_secs, d.resolve_after_batches), (3600, 3));
}

#[test]
fn alerts_problems_are_all_reported_with_paths_and_no_secret_values() {
    let yaml = format!(
        "{MINIMAL}\
alerts:
  cooldown: soon
  receivers:
    mail: {{ type: email, host: h, from: not-an-address, to: [], username: u, password: hunter2 }}
    plain: {{ type: email, host: h, tls: none, from: a@b.c, to: [a@b.c], ca_file: ca.pem }}
    hook: {{ type: webhook, url: ftp://x, headers: {{ Authorization: Bearer sk-abc }} }}
    pd: {{ type: webhook, format: pagerduty, url: https://e.example/v2 }}
    slack: {{ type: webhook, format: slak, url: https://e.example }}
  routes:
    - match: {{ check: lable_rate, severity: fatal }}
      to: [hok]
  default: [nobody]
"
    );
    let found = parse_err(&yaml);
    let p = paths(&found);
    for expected in [
        "alerts.cooldown",
        "alerts.receivers.mail.password",
        "alerts.receivers.mail.from",
        "alerts.receivers.mail.to",
        "alerts.receivers.hook.url",
        "alerts.receivers.hook.headers.Authorization",
        "alerts.receivers.pd.routing_key_env",
        "alerts.receivers.slack.format",
        "alerts.receivers.plain.ca_file",
        "alerts.routes[0].match.check",
        "alerts.routes[0].match.severity",
        "alerts.routes[0].to[0]",
        "alerts.default[0]",
    ] {
        assert!(p.contains(&expected), "missing {expected} in {found:#?}");
    }
    let m = |k| message(&found, k);
    assert!(m("alerts.receivers.mail.password").contains("`password_env: VAR_NAME`"));
    assert!(
        m("alerts.receivers.hook.headers.Authorization").contains("`Authorization_env: VAR_NAME`")
    );
    assert!(m("alerts.receivers.pd.routing_key_env").contains("routing_key_env"));
    assert!(m("alerts.receivers.slack.format").contains("did you mean `slack`?"));
    assert!(m("alerts.routes[0].match.check").contains("did you mean `label_rate`?"));
    assert!(m("alerts.routes[0].to[0]").contains("did you mean `hook`?"));
    assert!(m("alerts.cooldown").contains("`cooldown: 1h`"));
    assert!(m("alerts.receivers.plain.ca_file").contains("`tls: starttls`"));
    for (_, msg) in &found {
        assert!(!msg.contains("hunter2") && !msg.contains("sk-abc"), "{msg}");
    }
}

/// An inline webhook URL with a password or a token in it is refused, and
/// the message does not repeat the secret.
#[test]
fn a_webhook_url_with_a_credential_is_refused_inline() {
    for (url, what) in [
        ("https://bob:hunter2@hooks.example.com/x", "user:password@"), // pragma: allowlist secret
        (
            "https://hooks.example.com/x?channel=ops&token=hunter2",
            "`token`",
        ),
        (
            "https://hooks.example.com/x?Signature=hunter2",
            "`signature`",
        ),
    ] {
        let p = parse_err(&format!(
            "{MINIMAL}alerts:\n  - {{ type: webhook, url: \"{url}\" }}\n"
        ));
        let m = message(&p, "alerts[0].url");
        assert!(m.contains(what) && m.contains("url_env"), "{url}: {m}");
        assert!(!m.contains("hunter2"), "{url}: {m}");
    }
    let fine = format!(
        "{MINIMAL}alerts:\n  - {{ type: webhook, url: \"https://hooks.example.com/x?channel=ops\" }}\n"
    );
    parse_rules(&fine, Path::new("/cfg"), "ok.yaml").unwrap();
}
