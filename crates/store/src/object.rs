//! State objects on an object store: S3 and S3-compatible stores (MinIO,
//! R2, Ceph), Google Cloud Storage, Azure Blob Storage, through the
//! `object_store` crate, behind [`Backend`]. (Version 0.14: DataFusion 55
//! brings 0.13, whose cloud clients need a quick-xml with two RustSec
//! advisories; see the workspace `Cargo.toml`.)
//!
//! ```text
//! History, BaselineStore ──► dyn Backend ──► ObjectBackend ──► object_store ──► s3:// gs:// az://
//!    (sync callers)                          (its own runtime)
//! ```
//!
//! - **Where:** a URL, `s3://bucket/prefix` (or `gs://`, `az://`,
//!   `memory:///`); keys live under the prefix.
//! - **Credentials:** from the environment and the provider's usual chain
//!   (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for an
//!   S3-compatible server, instance or workload identity, ...), never
//!   from the rules.
//! - **Create-if-absent** is the store's conditional put (`If-None-Match:
//!   *` on S3): of two writers of one key, the store itself lets exactly one
//!   win, whatever machine each runs on.
//! - **Sync over async:** the store's calls run on a small runtime owned by
//!   the backend; a caller blocks on a channel, so it works from plain
//!   threads and from inside another runtime alike (the Kafka source's).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::backend::{Backend, Put, check_key};

/// Objects under a prefix of an object store.
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// Always `Some` until dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectBackend {
    /// Without waiting: tokio refuses to drop a runtime the blocking way
    /// from inside another one, and the Kafka source runs the pipeline in
    /// one. Calls have all returned by now (each caller waited for its own).
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBackend")
            .field("url", &self.url)
            .finish()
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

/// The backend key of a listed object directly under `prefix` (the
/// backend's own prefix stripped), or `None` for hidden objects (a leading
/// `.`: temporary names, as in a local folder).
fn key_under(prefix: &str, object: &object_store::ObjectMeta) -> Option<String> {
    let name = object.location.filename()?;
    if name.starts_with('.') {
        None
    } else if prefix.is_empty() {
        Some(name.to_string())
    } else {
        Some(format!("{prefix}/{name}"))
    }
}

impl ObjectBackend {
    /// The store a URL names, configured from the environment.
    pub fn from_url(url: &str) -> io::Result<ObjectBackend> {
        ObjectBackend::from_url_with(url, std::env::vars())
    }

    /// The store a URL names, configured from `options` (the `object_store`
    /// builders' keys, such as `aws_endpoint`; case does not matter, and
    /// keys no builder knows are ignored, so the environment can be given
    /// whole).
    pub fn from_url_with(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> io::Result<ObjectBackend> {
        let parsed = url::Url::parse(url).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{url}` is not an object store URL: {e}"),
            )
        })?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options).map_err(other)?;
        ObjectBackend::new(Arc::from(store), prefix, url)
    }

    /// A backend over a store already built, keys under `prefix`; `url`
    /// names it in messages.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        url: &str,
    ) -> io::Result<ObjectBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dqmon-object-store")
            .enable_all()
            .build()?;
        Ok(ObjectBackend {
            store,
            prefix,
            url: url.trim_end_matches('/').to_string(),
            runtime: Some(runtime),
        })
    }

    fn path(&self, key: &str) -> io::Result<ObjectPath> {
        check_key(key)?;
        Ok(key
            .split('/')
            .fold(self.prefix.clone(), |p, part| p.join(part)))
    }

    /// A folder-like prefix of keys (no trailing `/`) and where it is in
    /// the store.
    fn dir(&self, prefix: &str) -> io::Result<(String, ObjectPath)> {
        let prefix = prefix.trim_end_matches('/').to_string();
        let dir = if prefix.is_empty() {
            self.prefix.clone()
        } else {
            self.path(&prefix)?
        };
        Ok((prefix, dir))
    }

    /// One delimiter listing of a prefix: the objects and folders directly
    /// under it.
    fn delimited(&self, prefix: &str) -> io::Result<(String, object_store::ListResult)> {
        let (prefix, dir) = self.dir(prefix)?;
        let store = self.store.clone();
        let listed = self.run(async move {
            let dir = (!dir.is_root()).then_some(dir);
            store.list_with_delimiter(dir.as_ref()).await.map_err(other)
        })?;
        Ok((prefix, listed))
    }

    /// Run one call of the store on the backend's runtime and wait for it.
    fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = io::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(call.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the object store's runtime stopped"))?
    }
}

impl Backend for ObjectBackend {
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        self.run(async move {
            match store.get(&path).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(other)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(other(e)),
            }
        })
    }

    fn size(&self, key: &str) -> io::Result<Option<u64>> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        self.run(async move {
            match store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(other(e)),
            }
        })
    }

    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        let payload = PutPayload::from(bytes.to_vec());
        self.run(async move {
            store.put(&path, payload).await.map_err(other)?;
            Ok(())
        })
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<Put> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        let payload = PutPayload::from(bytes.to_vec());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.run(async move {
            match store.put_opts(&path, payload, opts).await {
                Ok(_) => Ok(Put::Created),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Existed),
                Err(e) => Err(other(e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let (prefix, listed) = self.delimited(prefix)?;
        let mut keys: Vec<String> = listed
            .objects
            .iter()
            .filter_map(|o| key_under(&prefix, o))
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn list_after(&self, prefix: &str, after: &str) -> io::Result<Vec<String>> {
        use futures_util::TryStreamExt;
        let (prefix, dir) = self.dir(prefix)?;
        // `after` need not name an object (nor be a valid key: `a/` is fine)
        let offset = after
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part));
        let store = self.store.clone();
        let depth = dir.parts().count() + 1;
        let listed: Vec<object_store::ObjectMeta> = self.run(async move {
            let dir = (!dir.is_root()).then_some(dir);
            store
                .list_with_offset(dir.as_ref(), &offset)
                .try_collect()
                .await
                .map_err(other)
        })?;
        // the listing is recursive: keep what lies directly under the prefix
        let mut keys: Vec<String> = listed
            .iter()
            .filter(|o| o.location.parts().count() == depth)
            .filter_map(|o| key_under(&prefix, o))
            .filter(|k| k.as_str() > after)
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn folders(&self, prefix: &str) -> io::Result<Vec<String>> {
        let (prefix, listed) = self.delimited(prefix)?;
        let mut keys: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|name| !name.starts_with('.'))
            .map(|name| {
                if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                }
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        self.run(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(other(e)),
            }
        })
    }

    fn locate(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("{}/{key}", self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;

    /// The in-memory store of `object_store`: the same client code paths
    /// (paths, listing, conditional put) without a server.
    #[test]
    fn an_in_memory_object_store_keeps_the_contract() {
        let b = ObjectBackend::from_url("memory:///state/orders").unwrap();
        conformance(&b);
    }

    /// Calls, and dropping the backend, from inside another runtime (the
    /// Kafka source runs the pipeline in one) neither panic nor deadlock.
    #[test]
    fn calls_and_drop_work_from_inside_another_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = ObjectBackend::from_url("memory:///x").unwrap();
            b.put("k/a.json", b"1").unwrap();
            assert_eq!(b.get("k/a.json").unwrap().as_deref(), Some(&b"1"[..]));
            drop(b);
        });
    }
}
