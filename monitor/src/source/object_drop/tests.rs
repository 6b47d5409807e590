//! Claims, renewal and request counts of the object-store drop source, on
//! `object_store`'s in-memory store.

use std::sync::Arc;

use super::*;
use crate::store::backend::Counting;
use crate::store::history::History;
use crate::store::object::ObjectBackend;

/// A `--once` source over `store` (named `url`), polling every 10 ms.
fn replica(rules: &Rules, store: Box<dyn Backend>, url: &str, lease: Duration) -> ObjectDropSource {
    ObjectDropSource::new(
        rules,
        store,
        url,
        "*.parquet",
        Duration::from_millis(10),
        lease,
        true,
    )
    .unwrap()
}

/// The object store requests one object costs: a listing of its claims,
/// the claim (a conditional put), a HEAD, a GET and the done marker
/// (a conditional put): five, plus one listing of the drop location
/// per poll. The README's capacity section quotes these counts.
#[test]
fn an_object_costs_five_requests_and_a_poll_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = Rules::for_tests("d", Vec::new());
    rules.state_dir = dir.path().join("state");
    let inner = ObjectBackend::from_url("memory:///incoming").unwrap();
    for name in ["a.parquet", "b.parquet", "c.parquet"] {
        inner.put(name, b"PAR1 not read here PAR1").unwrap();
    }
    let (store, log) = Counting::new(inner);
    let mut source = replica(
        &rules,
        Box::new(store),
        "memory:///incoming",
        Duration::from_secs(600),
    );
    let history = History::open(&rules.state_dir).unwrap();
    let shutdown = Shutdown::default();
    let ctx = SourceCtx {
        history: &history,
        shutdown: &shutdown,
    };
    let mut seen = Vec::new();
    while let Some((batch, ack)) = source.next(&ctx).unwrap() {
        assert!(matches!(batch.input, Input::File(_)));
        seen.push(batch.origin.name.clone());
        source.ack(ack, &Outcome::Processed, &ctx).unwrap();
    }
    assert_eq!(seen, ["a.parquet", "b.parquet", "c.parquet"]);
    let log = log.take();
    // a listing of the drop location itself, or of an object's claims
    let kind = |(k, key): &(&'static str, String)| match (*k, key.is_empty()) {
        ("list", true) => "list_drop",
        ("list", false) => "list_claims",
        (k, _) => k,
    };
    let count = |k: &str| log.iter().filter(|r| kind(r) == k).count();
    assert_eq!(count("list_drop"), 1, "{log:?}");
    for (kind, per_object) in [
        ("list_claims", 1),
        ("put_if_absent", 2),
        ("head", 1),
        ("get", 1),
    ] {
        assert_eq!(count(kind), 3 * per_object, "{kind}: {log:?}");
    }
    assert_eq!(log.len(), 1 + 3 * 5, "{log:?}");
    // the spool folder is left empty
    let spool = rules.state_dir.join("spool");
    assert_eq!(std::fs::read_dir(spool).unwrap().count(), 0);
}

/// One in-memory store shared by two sources (each `memory:///` client
/// is a store of its own).
#[derive(Debug, Clone)]
struct Shared(Arc<ObjectBackend>);

impl Backend for Shared {
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn size(&self, key: &str) -> io::Result<Option<u64>> {
        self.0.size(key)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.0.put(key, bytes)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<Put> {
        self.0.put_if_absent(key, bytes)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.0.list(prefix)
    }
    fn folders(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.0.folders(prefix)
    }
    fn delete(&self, key: &str) -> io::Result<()> {
        self.0.delete(key)
    }
    fn locate(&self, key: &str) -> PathBuf {
        self.0.locate(key)
    }
}

/// A claim is renewed while its object is in the pipeline: a batch that
/// takes longer than the lease is not taken over by another replica;
/// once acknowledged, the renewal stops.
#[test]
fn a_claim_is_renewed_while_its_object_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = Rules::for_tests("d", Vec::new());
    rules.state_dir = dir.path().join("state");
    let store = Shared(Arc::new(ObjectBackend::from_url("memory:///x").unwrap()));
    store.put("slow.parquet", b"PAR1 PAR1").unwrap();
    let lease = Duration::from_millis(300);
    let on_store = || replica(&rules, Box::new(store.clone()), "memory:///x", lease);
    let (mut a, b) = (on_store(), on_store());
    let history = History::open(&rules.state_dir).unwrap();
    let shutdown = Shutdown::default();
    let ctx = SourceCtx {
        history: &history,
        shutdown: &shutdown,
    };
    let (_, ack) = a.next(&ctx).unwrap().expect("a takes the object");
    // the batch takes three leases; the claim stays a's
    for _ in 0..9 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(b.claim("slow.parquet").unwrap(), Claimed::Theirs);
    }
    a.ack(ack, &Outcome::Processed, &ctx).unwrap();
    assert_eq!(b.claim("slow.parquet").unwrap(), Claimed::Done);
    // after the acknowledgement nothing renews the claim any more
    let claim = store
        .get(".dqmon-claims/d/slow.parquet/0")
        .unwrap()
        .unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        store
            .get(".dqmon-claims/d/slow.parquet/0")
            .unwrap()
            .unwrap(),
        claim
    );
}

/// Of two replicas claiming one object, one wins; a retry releases the
/// claim so the object can be claimed again; a done object is done for
/// every replica.
#[test]
fn one_claim_wins_a_retry_releases_it_and_done_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = Rules::for_tests("d", Vec::new());
    rules.state_dir = dir.path().join("state");
    let store = Shared(Arc::new(ObjectBackend::from_url("memory:///x").unwrap()));
    let on_store = || {
        replica(
            &rules,
            Box::new(store.clone()),
            "memory:///x",
            Duration::from_secs(600),
        )
    };
    let (a, b) = (on_store(), on_store());
    assert_ne!(a.holder(), b.holder());
    assert_eq!(a.claim("f.parquet").unwrap(), Claimed::Ours(0));
    assert_eq!(b.claim("f.parquet").unwrap(), Claimed::Theirs);
    a.release("f.parquet", 0);
    assert_eq!(b.claim("f.parquet").unwrap(), Claimed::Ours(0));
    assert_eq!(a.claim("f.parquet").unwrap(), Claimed::Theirs);
    store.put(".dqmon-claims/d/f.parquet/done", b"{}").unwrap();
    assert_eq!(a.claim("f.parquet").unwrap(), Claimed::Done);
    assert_eq!(b.claim("f.parquet").unwrap(), Claimed::Done);
}
