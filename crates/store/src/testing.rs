//! The conformance suite every [`Store`] backend must pass: etcd's revision,
//! transaction, range and watch semantics as the trait documents them. It owns no
//! backend: each test takes a fresh, empty store, so the embedded and the etcd
//! backend run the very same checks.
//!
//! Use [`conformance_tests!`](crate::conformance_tests) in a backend's integration
//! test to get one `#[tokio::test]` per check:
//!
//! ```ignore
//! async fn fresh() -> Fixture { /* an empty store that derefs to a Store */ }
//! store::conformance_tests!(fresh);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;

use crate::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, Revision, Store,
    StoreError, Txn, TxnOp, TxnResponse, WatchStream,
};

/// Generates one `#[tokio::test]` per conformance check. `$fresh` names an async fn
/// taking nothing and returning a fresh empty store behind anything that derefs to
/// a [`Store`] (so a fixture can keep a temp dir alive next to it).
///
/// `conformance_tests!(any_revision: $fresh)` runs every check but `empty_store`,
/// for a store that holds no keys but is past revision 0 (and may be compacted up
/// to its next revision): a shared etcd under a key prefix, or a reused store.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@each $fresh; empty_store);
        $crate::conformance_tests!(any_revision: $fresh);
    };
    (any_revision: $fresh:path) => {
        $crate::conformance_tests!(@each $fresh;
            revision_bumping,
            key_bookkeeping,
            compare_targets,
            success_and_failure_branches,
            range_by_key_and_prefix,
            watch_replays_history_then_live,
            watch_txn_is_one_batch,
            watch_filters_range,
            watch_from_future_revision,
            watch_gap_free_under_concurrent_writes,
            watch_slow_watcher_misses_nothing,
            compaction,
            concurrent_create_if_absent,
            concurrent_compare_and_swap_counter,
        );
    };
    (@each $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let store = $fresh().await;
                $crate::testing::$check(&*store).await;
            }
        )*
    };
}

/// How long a check waits for a watch event before calling it lost.
const WATCH_TIMEOUT: Duration = Duration::from_secs(20);

// === helpers ===

pub fn put(key: &str, value: &[u8]) -> TxnOp {
    TxnOp::Put {
        key: key.to_owned(),
        value: value.to_vec(),
    }
}

pub fn delete(key: &str) -> TxnOp {
    TxnOp::Delete {
        key: key.to_owned(),
    }
}

/// A transaction that applies `ops` unconditionally.
pub fn ops(ops: Vec<TxnOp>) -> Txn {
    Txn {
        compare: Vec::new(),
        success: ops,
        failure: Vec::new(),
    }
}

pub fn compare(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare {
        key: key.to_owned(),
        op,
        target,
    }
}

pub async fn txn(store: &dyn Store, txn: Txn) -> TxnResponse {
    store.txn(txn).await.expect("txn failed")
}

pub async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    let mut kvs = store
        .range(KeyRange::Key(key.to_owned()))
        .await
        .expect("range failed")
        .kvs;
    assert!(kvs.len() <= 1, "a single-key range returned {kvs:?}");
    kvs.pop()
}

pub async fn current_revision(store: &dyn Store) -> Revision {
    store
        .range(KeyRange::Key(String::new()))
        .await
        .expect("range failed")
        .revision
}

pub async fn watch(store: &dyn Store, range: KeyRange, from: Revision) -> WatchStream {
    store.watch(range, from).await.expect("watch failed")
}

/// The next batch of a watch; panics on an error, the end of the stream or a timeout.
pub async fn next_batch(stream: &mut WatchStream) -> Vec<Event> {
    match tokio::time::timeout(WATCH_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WATCH_TIMEOUT:?}"),
    }
}

/// Asserts that nothing arrives on the watch for a short while.
pub async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
        panic!("unexpected watch item {item:?}");
    }
}

/// Batches until one at `revision` or later has arrived.
pub async fn batches_through(stream: &mut WatchStream, revision: Revision) -> Vec<Vec<Event>> {
    let mut batches = Vec::new();
    loop {
        let batch = next_batch(stream).await;
        let last = batch_revision(&batch);
        batches.push(batch);
        if last >= revision {
            return batches;
        }
    }
}

/// The revision of a batch, checking all its events share it.
pub fn batch_revision(batch: &[Event]) -> Revision {
    let first = batch.first().expect("a watch delivered an empty batch");
    let revision = first.kv.mod_revision;
    assert!(
        batch.iter().all(|e| e.kv.mod_revision == revision),
        "one batch spans several revisions: {batch:?}"
    );
    revision
}

/// Asserts batch revisions strictly increase (no repeat, in order).
pub fn assert_increasing(batches: &[Vec<Event>]) {
    let revisions: Vec<Revision> = batches.iter().map(|b| batch_revision(b)).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "watch revisions not strictly increasing: {revisions:?}"
    );
}

fn put_event(key: &str, value: &[u8], create: Revision, revision: Revision, version: i64) -> Event {
    Event {
        kind: EventKind::Put,
        kv: KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision: create,
            mod_revision: revision,
            version,
        },
    }
}

fn delete_event(key: &str, revision: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_owned(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
        },
    }
}

// === checks ===
//
// Every check but `empty_store` counts revisions from `b`, the store's revision when
// it starts, so a backend whose fresh store is not at 0 (an etcd key prefix on a
// shared cluster) runs them unchanged.

pub async fn empty_store(store: &dyn Store) {
    let all = store
        .range(KeyRange::Prefix(String::new()))
        .await
        .expect("range failed");
    assert_eq!(all.kvs, vec![]);
    assert_eq!(all.revision, 0, "an empty store is at revision 0");
    let nothing = txn(store, Txn::default()).await;
    assert_eq!(
        nothing,
        TxnResponse {
            succeeded: true,
            revision: 0
        }
    );
    assert_eq!(get(store, "missing").await, None);
}

pub async fn revision_bumping(store: &dyn Store) {
    let b = current_revision(store).await;
    let r = txn(store, ops(vec![put("a", b"1")])).await;
    assert_eq!((r.succeeded, r.revision), (true, b + 1), "first write");

    let r = txn(store, ops(vec![put("b", b"2"), put("c", b"3")])).await;
    assert_eq!(r.revision, b + 2, "all ops of a txn share one revision");
    assert_eq!(get(store, "b").await.expect("b").mod_revision, b + 2);
    assert_eq!(get(store, "c").await.expect("c").mod_revision, b + 2);

    let r = txn(store, ops(vec![delete("missing")])).await;
    assert_eq!(r.revision, b + 2, "deleting a missing key writes nothing");

    let r = txn(
        store,
        Txn {
            compare: vec![Compare::absent("a")],
            success: vec![put("x", b"")],
            failure: vec![],
        },
    )
    .await;
    assert_eq!(
        (r.succeeded, r.revision),
        (false, b + 2),
        "an empty failure branch writes nothing"
    );

    let r = txn(
        store,
        Txn {
            compare: vec![Compare::mod_revision_is("a", b + 1)],
            ..Txn::default()
        },
    )
    .await;
    assert_eq!((r.succeeded, r.revision), (true, b + 2), "a read-only txn");

    let r = txn(store, ops(vec![delete("a")])).await;
    assert_eq!(r.revision, b + 3, "deleting an existing key writes");
    let r = txn(store, ops(vec![delete("b"), delete("missing")])).await;
    assert_eq!(r.revision, b + 4);
    let r = txn(store, ops(vec![delete("c")])).await;
    assert_eq!(r.revision, b + 5);

    let all = store
        .range(KeyRange::Prefix(String::new()))
        .await
        .expect("range failed");
    assert_eq!(all.kvs, vec![]);
    assert_eq!(
        all.revision,
        b + 5,
        "the revision stays when the newest keys are gone"
    );
    assert_eq!(txn(store, Txn::default()).await.revision, b + 5);
}

pub async fn key_bookkeeping(store: &dyn Store) {
    let b = current_revision(store).await;
    txn(store, ops(vec![put("k", b"one")])).await;
    assert_eq!(
        get(store, "k").await,
        Some(KeyValue {
            key: "k".into(),
            value: b"one".to_vec(),
            create_revision: b + 1,
            mod_revision: b + 1,
            version: 1,
        })
    );
    txn(store, ops(vec![put("other", b"")])).await;
    txn(store, ops(vec![put("k", b"two")])).await;
    assert_eq!(
        get(store, "k").await,
        Some(KeyValue {
            key: "k".into(),
            value: b"two".to_vec(),
            create_revision: b + 1,
            mod_revision: b + 3,
            version: 2,
        }),
        "an overwrite keeps create_revision and bumps version"
    );
    assert_eq!(
        get(store, "other").await.expect("other").mod_revision,
        b + 2,
        "other keys are untouched"
    );
    txn(store, ops(vec![delete("k")])).await;
    assert_eq!(get(store, "k").await, None);
    txn(store, ops(vec![put("k", b"three")])).await;
    assert_eq!(
        get(store, "k").await,
        Some(KeyValue {
            key: "k".into(),
            value: b"three".to_vec(),
            create_revision: b + 5,
            mod_revision: b + 5,
            version: 1,
        }),
        "a key put again after a delete starts over"
    );
}

pub async fn compare_targets(store: &dyn Store) {
    use CompareOp::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{CreateRevision, ModRevision, Value, Version};

    // k: value "v2", version 2, create b+1, mod b+3.
    let b = current_revision(store).await;
    txn(store, ops(vec![put("k", b"v1")])).await;
    txn(store, ops(vec![put("unrelated", b"")])).await;
    txn(store, ops(vec![put("k", b"v2")])).await;

    let cases: Vec<(&str, CompareOp, CompareTarget, bool)> = vec![
        ("k", Equal, Version(2), true),
        ("k", NotEqual, Version(2), false),
        ("k", Greater, Version(2), false),
        ("k", Less, Version(2), false),
        ("k", Greater, Version(1), true),
        ("k", Less, Version(3), true),
        ("k", NotEqual, Version(0), true),
        ("k", Equal, CreateRevision(b + 1), true),
        ("k", Greater, CreateRevision(0), true),
        ("k", Greater, CreateRevision(b), true),
        ("k", Less, CreateRevision(b + 2), true),
        ("k", NotEqual, CreateRevision(b + 3), true),
        ("k", Equal, ModRevision(b + 3), true),
        ("k", Equal, ModRevision(b + 1), false),
        ("k", Greater, ModRevision(b + 2), true),
        ("k", Less, ModRevision(b + 4), true),
        ("k", Less, ModRevision(b + 3), false),
        ("k", Equal, Value(b"v2".to_vec()), true),
        ("k", NotEqual, Value(b"v2".to_vec()), false),
        ("k", NotEqual, Value(b"v1".to_vec()), true),
        ("k", Greater, Value(b"v1".to_vec()), true),
        ("k", Less, Value(b"v3".to_vec()), true),
        ("k", Less, Value(b"v".to_vec()), false),
        // A missing key: version and revisions 0, and a value compare always fails.
        ("missing", Equal, Version(0), true),
        ("missing", Less, Version(1), true),
        ("missing", Greater, Version(0), false),
        ("missing", Equal, CreateRevision(0), true),
        ("missing", Equal, ModRevision(0), true),
        ("missing", Less, ModRevision(b + 5), true),
        ("missing", NotEqual, ModRevision(0), false),
        ("missing", Equal, Value(Vec::new()), false),
        ("missing", NotEqual, Value(b"x".to_vec()), false),
        ("missing", Greater, Value(Vec::new()), false),
        ("missing", Less, Value(b"x".to_vec()), false),
    ];
    for (key, op, target, expected) in cases {
        let case = format!("{key} {op:?} {target:?}");
        let r = txn(
            store,
            Txn {
                compare: vec![compare(key, op, target)],
                ..Txn::default()
            },
        )
        .await;
        assert_eq!(r.succeeded, expected, "{case}");
        assert_eq!(r.revision, b + 3, "{case}: a compare writes nothing");
    }

    let holds = |c: Vec<Compare>| async move {
        txn(
            store,
            Txn {
                compare: c,
                ..Txn::default()
            },
        )
        .await
        .succeeded
    };
    assert!(holds(vec![Compare::absent("missing")]).await);
    assert!(!holds(vec![Compare::absent("k")]).await);
    assert!(holds(vec![Compare::mod_revision_is("k", b + 3)]).await);
    assert!(holds(vec![Compare::mod_revision_is("missing", 0)]).await);
    assert!(
        !holds(vec![
            Compare::mod_revision_is("k", b + 3),
            Compare::absent("k")
        ])
        .await,
        "every compare must hold"
    );
    assert!(holds(vec![]).await, "no compare holds");
}

pub async fn success_and_failure_branches(store: &dyn Store) {
    let b = current_revision(store).await;
    let create = Txn {
        compare: vec![Compare::absent("k")],
        success: vec![put("k", b"created")],
        failure: vec![put("lost", b"k existed")],
    };
    let r = txn(store, create.clone()).await;
    assert_eq!((r.succeeded, r.revision), (true, b + 1));
    assert_eq!(get(store, "k").await.expect("k").value, b"created");
    assert_eq!(get(store, "lost").await, None, "failure ops did not run");

    let r = txn(store, create).await;
    assert_eq!(
        (r.succeeded, r.revision),
        (false, b + 2),
        "failure ops write at the next revision"
    );
    assert_eq!(get(store, "k").await.expect("k").value, b"created");
    assert_eq!(
        get(store, "lost").await.expect("lost").mod_revision,
        b + 2,
        "failure ops ran"
    );

    let r = txn(
        store,
        Txn {
            compare: vec![Compare::mod_revision_is("k", b + 99)],
            success: vec![put("k", b"not this")],
            failure: vec![delete("k"), put("k2", b"")],
        },
    )
    .await;
    assert_eq!((r.succeeded, r.revision), (false, b + 3));
    assert_eq!(get(store, "k").await, None);
    assert_eq!(get(store, "k2").await.expect("k2").mod_revision, b + 3);
}

pub async fn range_by_key_and_prefix(store: &dyn Store) {
    let b = current_revision(store).await;
    let keys = ["a/2", "b/1", "a/é", "a", "ab", "a/10", "a0", "a/1", "a/1/x"];
    for key in keys {
        txn(store, ops(vec![put(key, key.as_bytes())])).await;
    }
    let head = b + keys.len() as Revision;
    let keys_of = |kvs: &[KeyValue]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();

    let one = store
        .range(KeyRange::Key("a".into()))
        .await
        .expect("range failed");
    assert_eq!(keys_of(&one.kvs), ["a"]);
    assert_eq!(one.kvs[0].value, b"a");
    assert_eq!(one.kvs[0].mod_revision, b + 4);
    assert_eq!(one.revision, head);
    let none = store
        .range(KeyRange::Key("a/".into()))
        .await
        .expect("range failed");
    assert_eq!(none.kvs, vec![], "a key range is not a prefix");
    assert_eq!(none.revision, head);

    let prefix = |p: &str| {
        let p = p.to_owned();
        async move {
            let r = store
                .range(KeyRange::Prefix(p))
                .await
                .expect("range failed");
            assert_eq!(r.revision, head);
            for kv in &r.kvs {
                assert_eq!(kv.value, kv.key.as_bytes(), "value of {}", kv.key);
            }
            keys_of(&r.kvs)
        }
    };
    assert_eq!(prefix("a/").await, ["a/1", "a/1/x", "a/10", "a/2", "a/é"]);
    assert_eq!(
        prefix("a").await,
        ["a", "a/1", "a/1/x", "a/10", "a/2", "a/é", "a0", "ab"]
    );
    assert_eq!(prefix("a/1").await, ["a/1", "a/1/x", "a/10"]);
    assert_eq!(
        prefix("").await,
        ["a", "a/1", "a/1/x", "a/10", "a/2", "a/é", "a0", "ab", "b/1"]
    );
    assert_eq!(prefix("c").await, Vec::<String>::new());
    assert_eq!(prefix("a/é").await, ["a/é"]);
}

pub async fn watch_replays_history_then_live(store: &dyn Store) {
    let b = current_revision(store).await;
    txn(store, ops(vec![put("w/a", b"1")])).await; // b+1
    txn(store, ops(vec![put("w/b", b"2")])).await; // b+2
    txn(store, ops(vec![put("w/a", b"3")])).await; // b+3
    txn(store, ops(vec![delete("w/b")])).await; // b+4
    txn(store, ops(vec![put("w/b", b"5")])).await; // b+5

    let mut from_3 = watch(store, KeyRange::Prefix("w/".into()), b + 3).await;
    assert_eq!(
        next_batch(&mut from_3).await,
        [put_event("w/a", b"3", b + 1, b + 3, 2)]
    );
    assert_eq!(next_batch(&mut from_3).await, [delete_event("w/b", b + 4)]);
    assert_eq!(
        next_batch(&mut from_3).await,
        [put_event("w/b", b"5", b + 5, b + 5, 1)]
    );

    let mut from_1 = watch(store, KeyRange::Prefix("w/".into()), b + 1).await;
    let history = batches_through(&mut from_1, b + 5).await;
    assert_eq!(history.len(), 5, "the whole history replays: {history:?}");
    assert_eq!(history[0], [put_event("w/a", b"1", b + 1, b + 1, 1)]);
    assert_increasing(&history);

    txn(store, ops(vec![put("w/c", b"6")])).await; // b+6
    let live = [put_event("w/c", b"6", b + 6, b + 6, 1)];
    assert_eq!(next_batch(&mut from_3).await, live);
    assert_eq!(next_batch(&mut from_1).await, live);

    let mut from_next = watch(store, KeyRange::Prefix("w/".into()), b + 7).await;
    assert_quiet(&mut from_next).await;
    txn(store, ops(vec![delete("w/a")])).await; // b+7
    assert_eq!(
        next_batch(&mut from_next).await,
        [delete_event("w/a", b + 7)]
    );
    assert_eq!(next_batch(&mut from_3).await, [delete_event("w/a", b + 7)]);
}

pub async fn watch_txn_is_one_batch(store: &dyn Store) {
    let b = current_revision(store).await;
    txn(store, ops(vec![put("x/c", b"old")])).await; // b+1
    let mut all = watch(store, KeyRange::Prefix("x/".into()), b + 2).await;
    let mut just_a = watch(store, KeyRange::Key("x/a".into()), b + 2).await;
    txn(
        store,
        ops(vec![
            put("x/a", b"a"),
            put("x/b", b"b"),
            delete("x/c"),
            delete("x/none"),
        ]),
    )
    .await; // b+2
    let r = b + 2;
    assert_eq!(
        next_batch(&mut all).await,
        [
            put_event("x/a", b"a", r, r, 1),
            put_event("x/b", b"b", r, r, 1),
            delete_event("x/c", r),
        ],
        "one txn, one batch, in op order"
    );
    assert_eq!(
        next_batch(&mut just_a).await,
        [put_event("x/a", b"a", r, r, 1)]
    );
}

pub async fn watch_filters_range(store: &dyn Store) {
    let b = current_revision(store).await;
    let mut prefix = watch(store, KeyRange::Prefix("f/".into()), b + 1).await;
    let mut key = watch(store, KeyRange::Key("f".into()), b + 1).await;
    txn(store, ops(vec![put("g/1", b"")])).await; // b+1
    txn(store, ops(vec![put("f/1", b"")])).await; // b+2
    txn(store, ops(vec![put("f", b"")])).await; // b+3
    txn(store, ops(vec![put("e", b""), put("f0", b"")])).await; // b+4
    txn(store, ops(vec![put("g/2", b""), put("f/2", b"")])).await; // b+5

    assert_eq!(
        next_batch(&mut prefix).await,
        [put_event("f/1", b"", b + 2, b + 2, 1)]
    );
    assert_eq!(
        next_batch(&mut prefix).await,
        [put_event("f/2", b"", b + 5, b + 5, 1)],
        "txns touching nothing in range are skipped, others are filtered"
    );
    assert_eq!(
        next_batch(&mut key).await,
        [put_event("f", b"", b + 3, b + 3, 1)]
    );
    assert_quiet(&mut prefix).await;
    assert_quiet(&mut key).await;
}

pub async fn watch_from_future_revision(store: &dyn Store) {
    let b = current_revision(store).await;
    txn(store, ops(vec![put("k", b"1")])).await; // b+1
    let mut stream = watch(store, KeyRange::Key("k".into()), b + 4).await;
    txn(store, ops(vec![put("k", b"2")])).await; // b+2
    txn(store, ops(vec![put("k", b"3")])).await; // b+3
    txn(store, ops(vec![put("k", b"4")])).await; // b+4
    txn(store, ops(vec![put("k", b"5")])).await; // b+5
    assert_eq!(
        next_batch(&mut stream).await,
        [put_event("k", b"4", b + 1, b + 4, 4)]
    );
    assert_eq!(
        next_batch(&mut stream).await,
        [put_event("k", b"5", b + 1, b + 5, 5)]
    );
}

pub async fn watch_gap_free_under_concurrent_writes(store: &dyn Store) {
    const WRITERS: usize = 8;
    const TXNS: usize = 50;
    let b = current_revision(store).await;
    let mut early = watch(store, KeyRange::Prefix("g/".into()), b + 1).await;
    let late_started = AtomicBool::new(false);

    let writer = |w: usize| async move {
        let mut revisions = Vec::new();
        for i in 0..TXNS {
            let key = format!("g/{w}/{i}");
            revisions.push(txn(store, ops(vec![put(&key, b"")])).await.revision);
            // Writes outside the range interleave with the watched ones.
            txn(store, ops(vec![put(&format!("h/{w}"), b"")])).await;
        }
        revisions
    };
    // A watch opened from the start mid-stream must stitch history to live with
    // no gap at the moment it subscribes.
    let late = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stream = watch(store, KeyRange::Prefix("g/".into()), b + 1).await;
        late_started.store(true, Ordering::SeqCst);
        stream
    };
    let (acked, mut late) = futures::join!(join_all((0..WRITERS).map(writer)), late);
    assert!(late_started.load(Ordering::SeqCst));
    let acked: BTreeSet<Revision> = acked.into_iter().flatten().collect();
    assert_eq!(
        acked.len(),
        WRITERS * TXNS,
        "every txn got its own revision"
    );
    let last = *acked.iter().next_back().expect("writes");

    for (name, stream) in [("early", &mut early), ("late", &mut late)] {
        let batches = batches_through(stream, last).await;
        assert_increasing(&batches);
        let seen: BTreeSet<Revision> = batches.iter().map(|b| batch_revision(b)).collect();
        assert_eq!(
            seen, acked,
            "{name} watch saw exactly the acknowledged writes"
        );
        assert!(
            batches
                .iter()
                .all(|b| b.len() == 1 && b[0].kv.key.starts_with("g/"))
        );
    }
}

pub async fn watch_slow_watcher_misses_nothing(store: &dyn Store) {
    const TXNS: usize = 3000;
    let b = current_revision(store).await;
    let mut slow = watch(store, KeyRange::Prefix("s/".into()), b + 1).await;
    // Many writes while the watcher reads nothing: a backend may replay them or end
    // the stream with an error, but must not skip any.
    let acked = join_all((0..TXNS).map(|i| async move {
        txn(
            store,
            ops(vec![put(&format!("s/{}", i % 100), &i.to_le_bytes())]),
        )
        .await
        .revision
    }))
    .await;
    let acked: BTreeSet<Revision> = acked.into_iter().collect();
    assert_eq!(acked.len(), TXNS);
    let last = *acked.iter().next_back().expect("writes");

    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        match tokio::time::timeout(WATCH_TIMEOUT, slow.next()).await {
            Ok(Some(Ok(batch))) => seen.push(batch_revision(&batch)),
            // Ending with an error (the client re-watches) is allowed; a gap is not.
            Ok(Some(Err(_))) | Ok(None) => break,
            Err(_) => panic!("slow watcher stalled after {} batches", seen.len()),
        }
    }
    let expected: Vec<Revision> = acked.iter().copied().take(seen.len()).collect();
    assert_eq!(
        seen, expected,
        "the slow watcher saw a prefix of all writes"
    );
}

pub async fn compaction(store: &dyn Store) {
    let b = current_revision(store).await;
    for i in 1..=10u8 {
        txn(store, ops(vec![put("c", &[i])])).await; // b+i
    }
    store.compact(b + 5).await.expect("compact failed");
    match store.watch(KeyRange::Key("c".into()), b + 4).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, b + 4),
        Err(e) => panic!("watch from a compacted revision failed with {e}"),
        Ok(_) => panic!("watch from a compacted revision succeeded"),
    }
    assert!(matches!(
        store.watch(KeyRange::Prefix(String::new()), b + 1).await,
        Err(StoreError::Compacted { .. })
    ));

    let mut from_5 = watch(store, KeyRange::Key("c".into()), b + 5).await;
    let kept = batches_through(&mut from_5, b + 10).await;
    let revisions: Vec<Revision> = kept.iter().map(|k| batch_revision(k) - b).collect();
    assert_eq!(revisions, [5, 6, 7, 8, 9, 10], "history from b+5 is kept");

    let current = store
        .range(KeyRange::Key("c".into()))
        .await
        .expect("range failed");
    assert_eq!(
        current.revision,
        b + 10,
        "compaction does not change the revision"
    );
    assert_eq!(current.kvs[0].value, [10]);
    assert_eq!(current.kvs[0].version, 10);

    store
        .compact(b + 3)
        .await
        .expect("an older compaction is a no-op");
    assert!(matches!(
        store.watch(KeyRange::Key("c".into()), b + 4).await,
        Err(StoreError::Compacted { .. })
    ));

    store.compact(b + 10).await.expect("compact failed");
    let r = txn(store, ops(vec![put("c", b"after")])).await;
    assert_eq!(r.revision, b + 11);
    let mut live = watch(store, KeyRange::Key("c".into()), b + 11).await;
    assert_eq!(
        batch_revision(&next_batch(&mut live).await),
        b + 11,
        "writes and watches go on after compaction"
    );
    assert_eq!(
        batch_revision(&next_batch(&mut from_5).await),
        b + 11,
        "a live watch outlives compaction"
    );
}

pub async fn concurrent_create_if_absent(store: &dyn Store) {
    const TASKS: usize = 8;
    const KEYS: usize = 100;
    let b = current_revision(store).await;
    let task = |t: usize| async move {
        let mut won = Vec::new();
        for i in 0..KEYS {
            // Each task walks the keys from a different place, so they collide.
            let key = format!("lock/{}", (i + t * 13) % KEYS);
            let r = txn(
                store,
                Txn {
                    compare: vec![Compare::absent(key.as_str())],
                    success: vec![put(&key, t.to_string().as_bytes())],
                    failure: vec![],
                },
            )
            .await;
            if r.succeeded {
                won.push((key, r.revision));
            }
        }
        (t, won)
    };
    let results = join_all((0..TASKS).map(task)).await;

    let mut winners: BTreeMap<String, (usize, Revision)> = BTreeMap::new();
    for (t, won) in results {
        for (key, revision) in won {
            if let Some(other) = winners.insert(key.clone(), (t, revision)) {
                panic!("{key} created by tasks {} and {t}", other.0);
            }
        }
    }
    assert_eq!(winners.len(), KEYS, "every key has exactly one winner");
    let revisions: BTreeSet<Revision> = winners.values().map(|(_, r)| *r).collect();
    assert_eq!(
        revisions,
        (b + 1..=b + KEYS as Revision).collect(),
        "winners took distinct, consecutive revisions"
    );
    for (key, (t, revision)) in winners {
        let kv = get(store, &key).await.expect("created key");
        assert_eq!(kv.value, t.to_string().as_bytes(), "{key}");
        assert_eq!((kv.create_revision, kv.version), (revision, 1), "{key}");
    }
    assert_eq!(current_revision(store).await, b + KEYS as Revision);
}

pub async fn concurrent_compare_and_swap_counter(store: &dyn Store) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 25;
    let b = current_revision(store).await;
    let task = || async move {
        let mut done = 0;
        while done < INCREMENTS {
            let (value, revision) = match get(store, "counter").await {
                Some(kv) => (
                    u64::from_le_bytes(kv.value.try_into().expect("8 bytes")),
                    kv.mod_revision,
                ),
                None => (0, 0),
            };
            let r = txn(
                store,
                Txn {
                    compare: vec![Compare::mod_revision_is("counter", revision)],
                    success: vec![put("counter", &(value + 1).to_le_bytes())],
                    failure: vec![],
                },
            )
            .await;
            if r.succeeded {
                done += 1;
            }
        }
    };
    join_all((0..TASKS).map(|_| task())).await;
    let kv = get(store, "counter").await.expect("counter");
    let total = (TASKS * INCREMENTS) as u64;
    assert_eq!(kv.value, total.to_le_bytes(), "no increment was lost");
    assert_eq!(kv.version, total as i64);
    assert_eq!(
        current_revision(store).await,
        b + total as Revision,
        "only the winning txns wrote"
    );
}
