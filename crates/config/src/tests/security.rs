//! Secrets and the `security:` section: inline secrets refused, signing keys.

use super::*;

#[test]
fn inline_secrets_are_rejected_with_env_and_file_advice() {
    let yaml = format!(
        "{MINIMAL}api_key: sk-live-123\n\
         alerts:\n  - {{ type: email, host: localhost, from: a@example.com, to: [b@example.com], username: dq, password: hunter2, password_env: SMTP_PW }}\n\
         credentials: {{ token: abc }}\n"
    );
    let found = parse_err(&yaml);
    assert_eq!(
        paths(&found),
        vec![
            "alerts[0].password",
            "api_key",
            "credentials",
            "credentials.token"
        ],
        "{found:#?}"
    );
    assert_eq!(
        message(&found, "alerts[0].password"),
        "secrets are never written in config files; set `password_env: VAR_NAME` (an environment variable) or `password_file: /path` instead."
    );
    assert!(message(&found, "api_key").contains("`api_key_env: VAR_NAME`"));
    for (_, m) in &found {
        assert!(!m.contains("hunter2") && !m.contains("sk-live") && !m.contains("abc"));
    }
}

#[test]
fn column_names_are_not_mistaken_for_secrets() {
    let yaml = "dataset: d\ntrust: { fixed: a, levels: [a] }\ncolumns: { auth_token: text, password_hash: { kind: text, pii: true } }\n";
    let r = parse_rules(yaml, Path::new(""), "t.yaml").unwrap();
    assert_eq!(r.columns.len(), 2);
}

#[test]
fn security_section_loads_inline_and_file_keys() {
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .as_bytes(),
    );
    let yaml = format!(
        "{MINIMAL}security:\n  require_signed_approval: true\n  require_distinct_approver: true\n  trusted_keys:\n    - {{ name: bob, public_key: \"{key}\" }}\n    - {{ name: carol, public_key_file: keys/carol.pub }}\n"
    );
    let r = parse_rules(&yaml, Path::new("/etc/dqmon"), "s.yaml").unwrap();
    assert_eq!(
        r.security,
        SecurityRules {
            require_signed_approval: true,
            require_distinct_approver: true,
            trusted_keys: vec![
                TrustedKey {
                    name: "bob".into(),
                    key: PublicKeySource::Inline(key.clone()),
                },
                TrustedKey {
                    name: "carol".into(),
                    key: PublicKeySource::File(PathBuf::from("/etc/dqmon/keys/carol.pub")),
                },
            ],
        }
    );
    // absent: accept any recorded approval, as before
    let r = parse_rules(MINIMAL, Path::new("/"), "m.yaml").unwrap();
    assert_eq!(r.security, SecurityRules::default());
}

#[test]
fn security_section_problems_are_all_reported_with_paths() {
    let yaml = format!(
        "{MINIMAL}security:\n  require_signed_approval: yes please\n  trusted_key: []\n  trusted_keys:\n    - {{ name: bob, public_key: \"not-a-key\" }}\n    - {{ name: carol }}\n    - {{ name: dan, public_key: \"x\", public_key_file: d.pub }}\n    - {{ name: erin, private_key: \"c2VjcmV0c2VjcmV0c2VjcmV0\" }}\n"
    );
    let found = parse_err(&yaml);
    assert_eq!(
        paths(&found),
        vec![
            "security.require_signed_approval",
            "security.trusted_keys[0].public_key",
            "security.trusted_keys[1]",
            "security.trusted_keys[2].public_key",
            "security.trusted_keys[3]",
            "security.trusted_keys[3].private_key",
            "security.trusted_key",
        ],
        "{found:#?}"
    );
    assert!(message(&found, "security.trusted_key").contains("did you mean `trusted_keys`"));
    assert!(
        message(&found, "security.trusted_keys[3].private_key")
            .contains("`private_key_file: /path`")
    );
    for (_, m) in &found {
        assert!(
            !m.contains("c2VjcmV0"),
            "a secret leaked into a message: {m}"
        );
    }
}

#[test]
fn signed_approval_without_trusted_keys_is_a_config_error() {
    let yaml = format!("{MINIMAL}security: {{ require_signed_approval: true }}\n");
    let found = parse_err(&yaml);
    assert_eq!(paths(&found), vec!["security.trusted_keys"], "{found:#?}");
    assert!(message(&found, "security.trusted_keys").contains("dqmon baseline keygen"));
}
