//! The etcd backend against a real etcd: the conformance suite, each check on its
//! own etcd member (loopback, free ports, a temp dir; killed on drop), plus what
//! only this backend has to show (a prefix shared cluster, an unreachable etcd).

use std::ops::Deref;
use std::time::{Duration, Instant};

use store::etcd::local::LocalEtcd;
use store::etcd::{EtcdStore, Options};
use store::testing::{delete, get, ops, put, txn};
use store::{Claim, KeyRange, Store, StoreError};
use tempfile::TempDir;

struct Fixture {
    // Dropped in this order: the client, then the member (killed), then its dir.
    store: EtcdStore,
    etcd: LocalEtcd,
    _dir: TempDir,
}

impl Deref for Fixture {
    type Target = EtcdStore;
    fn deref(&self) -> &EtcdStore {
        &self.store
    }
}

async fn member() -> (LocalEtcd, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = LocalEtcd::start(dir.path()).await.expect("start etcd");
    (etcd, dir)
}

async fn connect(etcd: &LocalEtcd, prefix: &str) -> EtcdStore {
    let mut options = Options::new(vec![etcd.client_url().to_owned()]);
    options.prefix = prefix.to_owned();
    options.claim_ttl = CLAIM_TTL;
    EtcdStore::connect(options).await.expect("connect to etcd")
}

async fn fresh() -> Fixture {
    let (etcd, dir) = member().await;
    let store = connect(&etcd, "/vnet").await;
    Fixture {
        store,
        etcd,
        _dir: dir,
    }
}

store::conformance_tests!(fresh);

/// The suite again on a cluster another user of etcd has written to and
/// compacted: the store holds no keys but is past revision 0, as on a shared etcd.
mod shared_cluster {
    use super::*;

    async fn shared() -> Fixture {
        let fixture = fresh().await;
        let other = connect(&fixture.etcd, "/other-app").await;
        txn(&other, ops(vec![put("a", b"1"), put("b", b"")])).await;
        let last = txn(&other, ops(vec![put("a", b"2")])).await.revision;
        other.compact(last).await.expect("compact");
        fixture
    }

    store::conformance_tests!(any_revision: shared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_stores_apart() {
    let f = fresh().await;
    let other = connect(&f.etcd, "/vnet2").await;
    txn(&*f, ops(vec![put("k", b"mine")])).await;
    txn(&other, ops(vec![put("k", b"theirs")])).await;
    assert_eq!(get(&*f, "k").await.expect("k").value, b"mine");
    assert_eq!(get(&other, "k").await.expect("k").value, b"theirs");
    let all = f
        .range(KeyRange::Prefix(String::new()))
        .await
        .expect("range");
    assert_eq!(
        all.kvs.len(),
        1,
        "/vnet2/ is not under /vnet/: {:?}",
        all.kvs
    );
}

/// Ranges larger than one page are read as one snapshot, every key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_range_reads_every_page() {
    let f = fresh().await;
    let keys: Vec<String> = (0..10_000).map(|i| format!("p/{i:05}")).collect();
    for chunk in keys.chunks(1000) {
        txn(
            &*f,
            ops(chunk.iter().map(|k| put(k, k.as_bytes())).collect()),
        )
        .await;
    }
    let all = f.range(KeyRange::Prefix("p/".into())).await.expect("range");
    let got: Vec<String> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(got, keys);
    assert_eq!(all.revision, 10);
}

/// A dead etcd fails requests with a backend error within the request timeout:
/// the API turns that into a 503, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_fails_requests_in_time() {
    let (etcd, _dir) = member().await;
    let mut options = Options::new(vec![etcd.client_url().to_owned()]);
    options.request_timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(options.clone()).await.expect("connect");
    drop(etcd);
    let started = Instant::now();
    let result = store.txn(ops(vec![put("k", b"")])).await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        store.range(KeyRange::Key("k".into())).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        EtcdStore::connect(options).await,
        Err(StoreError::Backend(_))
    ));
}

/// What etcd acknowledged survives `kill -9` of etcd itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_killed_member() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = LocalEtcd::start(dir.path()).await.expect("start etcd");
    let store = connect(&etcd, "/vnet").await;
    let r = txn(&store, ops(vec![put("k", b"kept")])).await;
    drop(store);
    drop(etcd); // SIGKILL
    let etcd = LocalEtcd::restart(dir.path()).await.expect("restart etcd");
    let store = connect(&etcd, "/vnet").await;
    let kv = get(&store, "k").await.expect("k after restart");
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"kept"[..], r.revision)
    );
}

const CLAIM_TTL: Duration = Duration::from_secs(3);

/// The suite on a claimed store: every transaction then runs inside the one that
/// checks the claim, and must mean exactly what it meant without it.
mod claimed {
    use super::*;

    async fn claimed() -> Fixture {
        let fixture = fresh().await;
        assert_eq!(fixture.claim("suite").await.expect("claim"), Claim::Ours);
        fixture
    }

    store::conformance_tests!(any_revision: claimed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_at_a_time() {
    let first = fresh().await;
    assert_eq!(first.claim("first").await.expect("claim"), Claim::Ours);
    let second = connect(&first.etcd, "/vnet").await;
    assert_eq!(
        second.claim("second").await.expect("claim"),
        Claim::HeldBy("first".into()),
        "a second writer claimed a held store"
    );
    // Another prefix is another store.
    let elsewhere = connect(&first.etcd, "/vnet2").await;
    assert_eq!(
        elsewhere.claim("elsewhere").await.expect("claim /vnet2"),
        Claim::Ours
    );

    first.store.release().await;
    assert_eq!(
        second.claim("second").await.expect("claim after release"),
        Claim::Ours
    );
    txn(&second, ops(vec![put("k", b"second")])).await;
    let refused = first.store.txn(ops(vec![put("k", b"first")])).await;
    assert!(
        matches!(refused, Err(StoreError::ClaimLost(_))),
        "{refused:?}"
    );
    assert_eq!(get(&second, "k").await.expect("k").value, b"second");
}

/// A writer whose claim is gone (its lease ended while it was cut off) has its
/// writes refused, while its successor writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_lost_its_claim_is_fenced() {
    let old = fresh().await;
    assert_eq!(old.claim("old").await.expect("claim"), Claim::Ours);
    txn(&*old, ops(vec![put("k", b"old")])).await;
    // What etcd does when the lease expires: the claim key goes.
    let mut raw = etcd_client::Client::connect([old.etcd.client_url()], None)
        .await
        .expect("raw client");
    raw.delete("/vnet.writer", None)
        .await
        .expect("delete claim");
    let new = connect(&old.etcd, "/vnet").await;
    assert_eq!(new.claim("new").await.expect("claim"), Claim::Ours);
    txn(&new, ops(vec![put("k", b"new")])).await;

    let refused = old.store.txn(ops(vec![put("k", b"old again")])).await;
    assert!(
        matches!(refused, Err(StoreError::ClaimLost(_))),
        "{refused:?}"
    );
    assert_eq!(get(&new, "k").await.expect("k").value, b"new");
    // The loser knows at once, and may win the claim again once it is free.
    tokio::time::timeout(Duration::from_secs(1), old.store.claim_lost())
        .await
        .expect("the lost claim is reported");
    assert_eq!(
        old.claim("old").await.expect("claim"),
        Claim::HeldBy("new".into())
    );
    new.release().await;
    assert_eq!(old.claim("old").await.expect("claim"), Claim::Ours);
    txn(&*old, ops(vec![put("k", b"old, again")])).await;
    assert_eq!(get(&*old, "k").await.expect("k").value, b"old, again");
}

/// The claim outlives several lease periods while its holder is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_kept_alive() {
    let f = fresh().await;
    assert_eq!(f.claim("alive").await.expect("claim"), Claim::Ours);
    let mut raw = etcd_client::Client::connect([f.etcd.client_url()], None)
        .await
        .expect("raw client");
    let lease = raw.get("/vnet.writer", None).await.expect("get").kvs()[0].lease();
    // Three TTLs: a lease that were not renewed would be gone by then.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ttl = raw
            .lease_time_to_live(lease, None)
            .await
            .expect("ttl")
            .ttl();
        assert!(ttl > 0, "the lease expired");
    }
    txn(&*f, ops(vec![put("k", b"")])).await;
}

/// etcd refuses a transaction that names one key twice; the backend keeps the
/// last op on each key, which is what applying the ops in order leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_twice_in_one_txn_ends_as_its_last_op() {
    let f = fresh().await;
    txn(
        &*f,
        ops(vec![put("a", b"1"), put("a", b"2"), put("b", b"x")]),
    )
    .await;
    assert_eq!(get(&*f, "a").await.expect("a").value, b"2");
    let r = txn(
        &*f,
        ops(vec![
            put("b", b"y"),
            delete("b"),
            delete("a"),
            put("a", b"3"),
        ]),
    )
    .await;
    assert_eq!(get(&*f, "b").await, None);
    let a = get(&*f, "a").await.expect("a");
    assert_eq!(
        (a.value.as_slice(), a.mod_revision),
        (&b"3"[..], r.revision)
    );
}
