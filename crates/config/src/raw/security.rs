//! Walking `security:`: signed approvals and trusted keys.

use std::path::Path;

use serde_yaml::Value;

use super::{
    Fields, PublicKeySource, SECURITY_KEYS, SecurityRules, TRUSTED_KEY_KEYS, TrustedKey, Walker,
    index_path, key_path, resolve,
};

impl Walker {
    /// `security:`: the approval policy and the trusted approvers' public keys.
    pub(super) fn security(&mut self, path: &str, v: &Value, base_dir: &Path) -> SecurityRules {
        const EXAMPLE: &str = "`security: { require_signed_approval: true, trusted_keys: [{ name: bob, public_key_file: keys/bob.pub }] }`";
        let mut out = SecurityRules::default();
        let Some(m) = self.map(path, v, EXAMPLE) else {
            self.scan_secrets(path, v);
            return out;
        };
        let mut f = Fields::new(path, m, SECURITY_KEYS);
        if let Some((p, v)) = f.get("require_signed_approval")
            && let Some(b) = self.boolean(&p, v, "require_signed_approval")
        {
            out.require_signed_approval = b;
        }
        if let Some((p, v)) = f.get("require_distinct_approver")
            && let Some(b) = self.boolean(&p, v, "require_distinct_approver")
        {
            out.require_distinct_approver = b;
        }
        let keys_path = key_path(path, "trusted_keys");
        if let Some((p, v)) = f.get("trusted_keys")
            && let Some(items) = self.seq(
                &p,
                v,
                "`trusted_keys: [{ name: bob, public_key_file: keys/bob.pub }]`",
            )
        {
            for (i, item) in items.iter().enumerate() {
                let ip = index_path(&p, i);
                if let Some(k) = self.trusted_key(&ip, item, base_dir) {
                    if out.trusted_keys.iter().any(|o| o.name == k.name) {
                        self.problem(
                            &key_path(&ip, "name"),
                            format!(
                                "`{}` is listed twice; give each approver one entry (rotate a key by replacing it).",
                                k.name
                            ),
                        );
                    } else {
                        out.trusted_keys.push(k);
                    }
                }
            }
        }
        f.finish(self);
        if out.require_signed_approval
            && out.trusted_keys.is_empty()
            && !self
                .problems
                .iter()
                .any(|pr| pr.yaml_path.starts_with(&keys_path))
        {
            self.problem(
                &keys_path,
                "`require_signed_approval: true` needs at least one trusted approver; add `trusted_keys: [{ name: NAME, public_key_file: FILE }]` (create a key pair with `dqmon baseline keygen --out FILE`).",
            );
        }
        out
    }

    pub(super) fn trusted_key(
        &mut self,
        path: &str,
        v: &Value,
        base_dir: &Path,
    ) -> Option<TrustedKey> {
        let m = self.map(path, v, "`- { name: bob, public_key_file: keys/bob.pub }`")?;
        let mut f = Fields::new(path, m, TRUSTED_KEY_KEYS);
        let name = f
            .required(
                self,
                "name",
                "`name: bob` (the name the approver gives to `--by`)",
            )
            .and_then(|(p, v)| self.text(&p, v, "`name: bob`"));
        let inline = f.get("public_key");
        let file = f.get("public_key_file");
        let key = match (inline, file) {
            (Some((p, v)), None) => {
                let text = self.text(
                    &p,
                    v,
                    "`public_key: <base64 printed by dqmon baseline keygen>`",
                )?;
                match crate::keys::parse_public_key(&text) {
                    Ok(_) => Some(PublicKeySource::Inline(text)),
                    Err(reason) => {
                        self.problem(
                            &p,
                            format!(
                                "this is not an Ed25519 public key ({reason}); paste the base64 line printed by `dqmon baseline keygen`, or use `public_key_file:` with its `.pub` file."
                            ),
                        );
                        None
                    }
                }
            }
            (None, Some((p, v))) => self
                .text(&p, v, "`public_key_file: keys/bob.pub`")
                .map(|s| PublicKeySource::File(resolve(base_dir, &s))),
            (Some((p, _)), Some(_)) => {
                self.problem(
                    &p,
                    "give either `public_key` or `public_key_file`, not both; remove one of them.",
                );
                None
            }
            (None, None) => {
                self.problem(
                    path,
                    "the trusted key has no key; add `public_key_file: keys/NAME.pub` (written by `dqmon baseline keygen`) or `public_key: <base64>`.",
                );
                None
            }
        };
        f.finish(self);
        Some(TrustedKey {
            name: name?,
            key: key?,
        })
    }
}
