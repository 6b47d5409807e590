//! Walking the process-wide `server:` section (the HTTP listener of `dqmon
//! run`), which sits at the top level of a dataset rules file or of a
//! top-level include file — never in a file that is included.
//!
//! Like the rest of `raw`, it collects every problem with its YAML path and
//! reads nothing but the YAML tree.

use std::net::SocketAddr;

use serde_yaml::Value;

use super::{Fields, Walker, key_path};
use crate::error::Problem;
use crate::model::ServerSettings;

const SERVER_KEYS: &[&str] = &["listen"];

const EXAMPLE: &str = "`server: { listen: 127.0.0.1:9464 }`";

/// The `server:` section of a file's root (`None` when absent), or every
/// problem found in it. `included` is true for a rules file listed under
/// another file's `include:`, where the section is not allowed.
pub(crate) fn server_section(
    root: &Value,
    included: bool,
) -> Result<Option<ServerSettings>, Vec<Problem>> {
    let mut w = Walker::default();
    let Some((key, v)) = root
        .as_mapping()
        .and_then(|m| m.get("server").map(|v| ("server", v)))
    else {
        return Ok(None);
    };
    let path = key_path("", key);
    if included {
        w.problem(
            &path,
            "`server` configures the whole `dqmon run` process, so it belongs in the top-level include file, not in an included rules file; move it there.",
        );
        return Err(w.problems);
    }
    let settings = w.server(&path, v);
    if w.problems.is_empty() {
        Ok(settings)
    } else {
        Err(w.problems)
    }
}

impl Walker {
    fn server(&mut self, path: &str, v: &Value) -> Option<ServerSettings> {
        let mut out = ServerSettings::default();
        if v.is_null() {
            return Some(out);
        }
        let m = self.map(path, v, EXAMPLE)?;
        let mut f = Fields::new(path, m, SERVER_KEYS);
        if let Some((p, v)) = f.get("listen")
            && let Some(text) = self.text(&p, v, "`listen: 127.0.0.1:9464`")
        {
            match text.trim().parse::<SocketAddr>() {
                Ok(addr) => out.listen = addr,
                Err(_) => self.problem(
                    &p,
                    format!(
                        "`{text}` is not an address with a port; write an IP address and a port such as `127.0.0.1:9464` (this machine only), `0.0.0.0:9464` (every interface, e.g. in a container) or `[::1]:9464`."
                    ),
                ),
            }
        }
        f.finish(self);
        Some(out)
    }
}
