//! The receivers of the `alerts:` section: stdout, file, email (SMTP) and
//! webhook, their secrets only by reference (an environment variable or a
//! file), never inline, and no credential in a URL or a header.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{
    ConfigValue, EmailReceiver, Fields, Receiver, SecretRef, SmtpTls, Walker, WebhookFormat,
    WebhookReceiver, index_path, is_literal, is_secret_key, key_path, list, resolve, suggest,
};

const RECEIVER_TYPES: &[&str] = &["stdout", "file", "email", "webhook"];
const FILE_KEYS: &[&str] = &["type", "path"];
const EMAIL_KEYS: &[&str] = &[
    "type",
    "host",
    "port",
    "tls",
    "from",
    "to",
    "username",
    "username_env",
    "username_file",
    "password_env",
    "password_file",
    "timeout",
    "ca_file",
];
const WEBHOOK_KEYS: &[&str] = &[
    "type",
    "url",
    "url_env",
    "url_file",
    "format",
    "headers",
    "token_env",
    "token_file",
    "routing_key_env",
    "routing_key_file",
    "timeout",
];
const TLS_MODES: &[&str] = &["none", "starttls", "tls"];
const FORMATS: &[&str] = &["generic", "slack", "pagerduty"];

/// Query parameters whose value is a credential.
const SECRET_QUERY: &[&str] = &[
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "passwd",
    "sig",
    "signature",
    "auth",
    "code",
];

/// What credential an inline URL carries, if any: a `user:password@` part
/// or a query parameter named like a secret.
fn url_credential(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some("a `user:password@` part".to_string());
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|pair| {
        let name = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
        SECRET_QUERY
            .contains(&name.as_str())
            .then(|| format!("the query parameter `{name}`"))
    })
}

/// Header names whose value is a credential and so may not be written inline.
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

impl Walker {
    pub(super) fn receiver(&mut self, path: &str, v: &Value, base_dir: &Path) -> Option<Receiver> {
        self.scan_secrets(path, v);
        let m = self.map(path, v, "`{ type: email, host: smtp.example.com, from: dqmon@example.com, to: [oncall@example.com] }`")?;
        let tp = key_path(path, "type");
        let kind = match m.get("type") {
            None | Some(Value::Null) => {
                self.problem(
                    &tp,
                    "the receiver has no `type`; add `type:` with one of `stdout`, `file`, `email` or `webhook`.",
                );
                return None;
            }
            Some(t) => self.text(&tp, t, "`type: email`")?,
        };
        let before = self.problems.len();
        let r = match kind.as_str() {
            "stdout" => {
                let f = Fields::new(path, m, &["type"]);
                let mut f = f;
                f.get("type");
                self.finish_quiet(f);
                Some(Receiver::Stdout)
            }
            "file" => {
                let mut f = Fields::new(path, m, FILE_KEYS);
                f.get("type");
                let p = f
                    .required(self, "path", "`path: alerts-out.jsonl`")
                    .and_then(|(p, v)| self.text(&p, v, "`path: alerts-out.jsonl`"))
                    .map(|s| Receiver::File {
                        path: resolve(base_dir, &s),
                    });
                self.finish_quiet(f);
                p
            }
            "email" => self.email(path, m, base_dir),
            "webhook" => self.webhook(path, m, base_dir),
            other => {
                let mut message = format!(
                    "unknown receiver type `{other}`; write one of `stdout`, `file`, `email` or `webhook`"
                );
                match suggest(other, RECEIVER_TYPES) {
                    Some(s) => message.push_str(&format!(" (did you mean `{s}`?)")),
                    None => message.push('.'),
                }
                self.problem(&tp, message);
                return None;
            }
        };
        (self.problems.len() == before).then_some(r).flatten()
    }

    /// `finish` without reporting secrets twice: `scan_secrets` already ran on the receiver.
    fn finish_quiet(&mut self, f: Fields<'_>) {
        let before = self.problems.len();
        f.finish(self);
        // A secret-like key was reported by the scan already; drop the duplicate.
        let mut seen = std::collections::HashSet::new();
        let mut i = 0;
        while i < self.problems.len() {
            let key = (
                self.problems[i].yaml_path.clone(),
                self.problems[i].message.clone(),
            );
            if i >= before && !seen.insert(key.clone()) {
                self.problems.remove(i);
                continue;
            }
            if i < before {
                seen.insert(key);
            }
            i += 1;
        }
    }

    /// A secret given as `<key>_env` or `<key>_file` (never inline).
    fn secret_ref(&mut self, f: &mut Fields<'_>, key: &str, base_dir: &Path) -> Option<SecretRef> {
        let env = f.get(&format!("{key}_env"));
        let file = f.get(&format!("{key}_file"));
        match (env, file) {
            (Some((p, _)), Some(_)) => {
                self.problem(
                    &p,
                    format!("`{key}_env` and `{key}_file` are both set; keep only one."),
                );
                None
            }
            (Some((p, v)), None) => self.env_name(&p, v).map(SecretRef::Env),
            (None, Some((p, v))) => self
                .text(&p, v, &format!("`{key}_file: /run/secrets/{key}`"))
                .map(|s| SecretRef::File(resolve(base_dir, &s))),
            (None, None) => None,
        }
    }

    fn env_name(&mut self, path: &str, v: &Value) -> Option<String> {
        let name = self.text(path, v, "`password_env: SMTP_PASSWORD`")?;
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
                "this must be the name of an environment variable (letters, digits and `_`, not starting with a digit), not the secret itself; put the secret in that variable.",
            );
            None
        }
    }

    fn timeout(&mut self, f: &mut Fields<'_>) -> u64 {
        match f.get("timeout") {
            Some((p, v)) => self
                .duration(&p, v, "`timeout: 10s`")
                .map_or(10, |ms| (ms / 1000).max(1)),
            None => 10,
        }
    }

    fn email(&mut self, path: &str, m: &Mapping, base_dir: &Path) -> Option<Receiver> {
        let mut f = Fields::new(path, m, EMAIL_KEYS);
        f.get("type");
        let host = f
            .required(self, "host", "`host: smtp.example.com`")
            .and_then(|(p, v)| self.text(&p, v, "`host: smtp.example.com`"));
        let tls = match f.get("tls") {
            Some((p, v)) => match self.text(&p, v, "`tls: starttls`") {
                Some(t) if t == "none" => Some(SmtpTls::None),
                Some(t) if t == "starttls" => Some(SmtpTls::Starttls),
                Some(t) if t == "tls" => Some(SmtpTls::Tls),
                Some(t) => {
                    self.problem(
                        &p,
                        format!("unknown TLS mode `{t}`; write one of {}.", list(TLS_MODES)),
                    );
                    None
                }
                None => None,
            },
            None => Some(SmtpTls::Starttls),
        };
        let port = match f.get("port") {
            Some((p, v)) => self.whole(&p, v, 1, 65535, "`port: 587`").map(|n| n as u16),
            None => tls.map(|t| match t {
                SmtpTls::None => 25,
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
            }),
        };
        let from = f
            .required(self, "from", "`from: dqmon@example.com`")
            .and_then(|(p, v)| self.address(&p, v));
        let to = f
            .required(self, "to", "`to: [oncall@example.com]`")
            .and_then(|(p, v)| {
                let items: Vec<(String, &Value)> = match v {
                    Value::Sequence(s) => s.iter().enumerate().map(|(i, x)| (index_path(&p, i), x)).collect(),
                    other => vec![(p.clone(), other)],
                };
                if items.is_empty() {
                    self.problem(&p, "the list of recipients is empty; add at least one address, e.g. `to: [oncall@example.com]`.");
                    return None;
                }
                items
                    .into_iter()
                    .map(|(ip, x)| self.address(&ip, x))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
            });
        let username = match f.get("username") {
            Some((p, v)) => self
                .text(&p, v, "`username: dqmon`")
                .map(ConfigValue::Literal),
            None => self
                .secret_ref(&mut f, "username", base_dir)
                .map(ConfigValue::Secret),
        };
        let password = self.secret_ref(&mut f, "password", base_dir);
        if password.is_some() && username.is_none() {
            self.problem(
                &key_path(path, "username"),
                "a password is set but no user name; add `username: NAME` (or `username_env: VAR`).",
            );
        }
        let timeout_secs = self.timeout(&mut f);
        let ca_file = match f.get("ca_file") {
            Some((p, v)) => {
                let written = self.text(&p, v, "`ca_file: certs/internal-ca.pem`");
                if tls == Some(SmtpTls::None) {
                    self.problem(
                        &p,
                        "`ca_file` needs TLS, but this receiver has `tls: none`; use `tls: starttls` or `tls: tls`, or remove `ca_file`.",
                    );
                }
                written.map(|w| resolve(base_dir, &w))
            }
            None => None,
        };
        self.finish_quiet(f);
        Some(Receiver::Email(EmailReceiver {
            host: host?,
            port: port?,
            tls: tls?,
            from: from?,
            to: to?,
            username,
            password,
            timeout_secs,
            ca_file,
        }))
    }

    fn address(&mut self, path: &str, v: &Value) -> Option<String> {
        let s = self.text(path, v, "an address such as `oncall@example.com`")?;
        if s.parse::<lettre::message::Mailbox>().is_ok() {
            Some(s)
        } else {
            self.problem(
                path,
                format!("`{s}` is not an email address; write e.g. `oncall@example.com` or `On-call <oncall@example.com>`."),
            );
            None
        }
    }

    fn webhook(&mut self, path: &str, m: &Mapping, base_dir: &Path) -> Option<Receiver> {
        let mut f = Fields::new(path, m, WEBHOOK_KEYS);
        f.get("type");
        let url = match f.get("url") {
            Some((p, v)) => self.text(&p, v, "`url: https://hooks.example.com/dqmon`").and_then(|u| {
                if let Some(what) = url_credential(&u) {
                    // the message must not repeat the URL: it holds the secret
                    self.problem(&p, format!("the webhook URL carries a credential ({what}); a secret is never written inline: put the URL in `url_env: VAR` or `url_file: path` instead."));
                    None
                } else if u.starts_with("http://") || u.starts_with("https://") {
                    Some(ConfigValue::Literal(u))
                } else {
                    self.problem(&p, format!("`{u}` is not an http(s) URL; write e.g. `url: https://hooks.example.com/dqmon`."));
                    None
                }
            }),
            None => match self.secret_ref(&mut f, "url", base_dir) {
                Some(s) => Some(ConfigValue::Secret(s)),
                None => {
                    self.problem(
                        &key_path(path, "url"),
                        "the webhook has no URL; add `url: https://...`, or `url_env: VAR` when the URL itself is a secret (Slack webhook URLs are).",
                    );
                    None
                }
            },
        };
        let format = match f.get("format") {
            Some((p, v)) => match self.text(&p, v, "`format: slack`") {
                Some(t) if t == "generic" => Some(WebhookFormat::Generic),
                Some(t) if t == "slack" => Some(WebhookFormat::Slack),
                Some(t) if t == "pagerduty" => Some(WebhookFormat::Pagerduty),
                Some(t) => {
                    let mut message = format!(
                        "unknown webhook format `{t}`; write one of {}",
                        list(FORMATS)
                    );
                    match suggest(&t, FORMATS) {
                        Some(s) => message.push_str(&format!(" (did you mean `{s}`?)")),
                        None => message.push('.'),
                    }
                    self.problem(&p, message);
                    None
                }
                None => None,
            },
            None => Some(WebhookFormat::Generic),
        };
        let mut headers = Vec::new();
        if let Some(token) = self.secret_ref(&mut f, "token", base_dir) {
            headers.push(("Authorization".to_string(), ConfigValue::Secret(token)));
        }
        if let Some((p, v)) = f.get("headers")
            && let Some(hm) = self.map(
                &p,
                v,
                "`headers: { X-Source: dqmon, Authorization_env: HOOK_AUTH }`",
            )
        {
            for (k, hv) in hm {
                let Some(k) = k.as_str() else {
                    self.problem(&p, "a header name must be text.");
                    continue;
                };
                let hp = key_path(&p, k);
                if let Some(name) = k.strip_suffix("_env") {
                    if let Some(var) = self.env_name(&hp, hv) {
                        headers.push((name.to_string(), ConfigValue::Secret(SecretRef::Env(var))));
                    }
                } else if let Some(name) = k.strip_suffix("_file") {
                    if let Some(file) = self.text(&hp, hv, "`X-Token_file: /run/secrets/token`") {
                        headers.push((
                            name.to_string(),
                            ConfigValue::Secret(SecretRef::File(resolve(base_dir, &file))),
                        ));
                    }
                } else if SECRET_HEADERS.contains(&k.to_ascii_lowercase().as_str())
                    || is_secret_key(k)
                {
                    if is_literal(hv) && !is_secret_key(k) {
                        self.secret(&hp, k);
                    }
                } else if let Some(val) = self.text(&hp, hv, "`X-Source: dqmon`") {
                    headers.push((k.to_string(), ConfigValue::Literal(val)));
                }
            }
        }
        let routing_key = self.secret_ref(&mut f, "routing_key", base_dir);
        if format == Some(WebhookFormat::Pagerduty) && routing_key.is_none() {
            self.problem(
                &key_path(path, "routing_key_env"),
                "a PagerDuty webhook needs its integration key; add `routing_key_env: VAR` (or `routing_key_file: /path`).",
            );
        }
        let timeout_secs = self.timeout(&mut f);
        self.finish_quiet(f);
        Some(Receiver::Webhook(WebhookReceiver {
            url: url?,
            format: format?,
            headers,
            routing_key,
            timeout_secs,
        }))
    }
}
