//! State objects on a real S3-compatible server: moto's S3 server (PyPI
//! `moto[server]`, installed by `tests/run` into `.tools/venv`), started per
//! test on a free loopback port. The backend's one conformance suite runs
//! against it: get, put, create-if-absent (the server's `If-None-Match: *`),
//! listing, deletion, key checks, and writers racing for one key.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dqmon::store::backend::{Backend, Put, conformance};
use dqmon::store::object::ObjectBackend;

use crate::common::repo_root;

/// Where moto's server is: beside the venv's python that `tests/run`
/// exports, or in `.tools/venv`; otherwise a clear failure.
fn moto_server() -> PathBuf {
    let beside_python = std::env::var("DQMON_TEST_PYTHON")
        .ok()
        .and_then(|p| PathBuf::from(p).parent().map(|d| d.join("moto_server")));
    let candidates = beside_python
        .into_iter()
        .chain([repo_root().join(".tools/venv/bin/moto_server")]);
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "the object store tests need moto's S3 server and found none (beside DQMON_TEST_PYTHON, .tools/venv/bin); \
         run the suite with `tests/run`, which installs it from .ci/requirements.txt"
    );
}

/// One S3-compatible server for one test, stopped when dropped.
struct S3Server {
    child: Child,
    addr: String,
}

impl S3Server {
    fn start() -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = S3Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&server.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Create a bucket (moto takes an unsigned `PUT /<bucket>`).
    fn create_bucket(&self, bucket: &str) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
    }

    /// A backend on `s3://<bucket>/<prefix>` of this server, configured the
    /// way a deployment would be (the `object_store` keys, here given
    /// directly instead of through `AWS_*` variables).
    fn backend(&self, bucket: &str, prefix: &str) -> ObjectBackend {
        let options = [
            ("aws_endpoint", format!("http://{}", self.addr)),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        ObjectBackend::from_url_with(&format!("s3://{bucket}/{prefix}"), options).unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_s3_compatible_server_keeps_the_backend_contract() {
    let s3 = S3Server::start();
    s3.create_bucket("dqmon-state");
    let b = s3.backend("dqmon-state", "fleet/orders");
    conformance(&b);
    // another prefix of the same bucket is another state: nothing leaks
    let other = s3.backend("dqmon-state", "fleet/payments");
    assert_eq!(other.list("a").unwrap(), Vec::<String>::new());
    assert_eq!(
        other.put_if_absent("race/batch.json", b"x").unwrap(),
        Put::Created
    );
    // two replicas (two clients) on one state: the second writer of a key
    // is told, and the first one's bytes stand
    let replica = s3.backend("dqmon-state", "fleet/orders");
    assert_eq!(
        replica.put_if_absent("race/batch.json", b"late").unwrap(),
        Put::Existed
    );
    assert_ne!(b.get("race/batch.json").unwrap(), Some(b"late".to_vec()));
    // a missing bucket is an error, not an empty state
    let missing = s3.backend("no-such-bucket", "x");
    assert!(missing.put("a/b.json", b"1").is_err());
}
