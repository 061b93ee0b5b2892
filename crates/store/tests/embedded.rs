//! The embedded backend: the conformance suite, plus what only this backend can
//! show (reopening, its live-feed lag path, batch isolation, shutdown).

use std::ops::Deref;
use std::path::Path;

use futures::StreamExt;
use futures::future::join_all;
use store::embedded::{DB_FILE, EmbeddedStore, Options};
use store::testing::{
    batch_revision, batches_through, delete, get, next_batch, ops, put, txn, watch,
};
use store::{KeyRange, Revision, Store, StoreError};
use tempfile::TempDir;

struct Fixture {
    // Declared first so it is dropped (and its writer joined) before the dir goes.
    store: EmbeddedStore,
    dir: TempDir,
}

impl Deref for Fixture {
    type Target = EmbeddedStore;
    fn deref(&self) -> &EmbeddedStore {
        &self.store
    }
}

async fn fresh() -> Fixture {
    fresh_with(Options::default())
}

fn fresh_with(options: Options) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open_with(dir.path(), options).expect("open store");
    Fixture { store, dir }
}

store::conformance_tests!(fresh);

/// The suite again on a store with history behind it: no keys, revision past 0,
/// compacted up to its next revision. Catches checks (and code) that assume a
/// store starts at revision 0.
mod with_history {
    use super::*;

    async fn used() -> Fixture {
        let fixture = fresh().await;
        txn(&*fixture, ops(vec![put("old/1", b""), put("old/2", b"")])).await;
        txn(&*fixture, ops(vec![put("old/1", b"again")])).await;
        txn(&*fixture, ops(vec![delete("old/1"), delete("old/2")])).await;
        fixture.compact(4).await.expect("compact");
        fixture
    }

    store::conformance_tests!(any_revision: used);
}

fn reopen(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).expect("reopen store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_revision_history_and_compaction() {
    let Fixture { store, dir } = fresh().await;
    txn(&store, ops(vec![put("a", b"1")])).await; // 1
    txn(&store, ops(vec![put("a", b"2"), put("b", b"x")])).await; // 2
    txn(&store, ops(vec![put("c", b"")])).await; // 3
    txn(&store, ops(vec![put("d", b"")])).await; // 4
    store.compact(2).await.expect("compact");
    txn(&store, ops(vec![delete("c"), delete("d")])).await; // 5: newest keys gone
    drop(store);

    let store = reopen(dir.path());
    let all = store
        .range(KeyRange::Prefix(String::new()))
        .await
        .expect("range");
    assert_eq!(
        all.revision, 5,
        "the revision survives, even past deleted keys"
    );
    let a = get(&store, "a").await.expect("a");
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"2"[..], 1, 2, 2)
    );
    assert_eq!(all.kvs.len(), 2);
    assert!(matches!(
        store.watch(KeyRange::Prefix(String::new()), 1).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut history = watch(&store, KeyRange::Prefix(String::new()), 2).await;
    let revisions: Vec<Revision> = batches_through(&mut history, 5)
        .await
        .iter()
        .map(|b| batch_revision(b))
        .collect();
    assert_eq!(revisions, [2, 3, 4, 5]);
    assert_eq!(txn(&store, ops(vec![put("e", b"")])).await.revision, 6);
    drop(store);
    assert!(dir.path().join(DB_FILE).exists());
}

/// A watcher far behind a tiny live buffer catches up from the log, while writes
/// keep coming, without a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_replays_from_the_log() {
    let store = fresh_with(Options {
        watch_buffer: 4,
        ..Options::default()
    });
    let store: &dyn Store = &*store;
    let mut slow = watch(store, KeyRange::Prefix("k/".into()), 1).await;
    let first = join_all((0..500).map(|i| async move {
        txn(store, ops(vec![put(&format!("k/{i}"), b"")]))
            .await
            .revision
    }))
    .await;
    // Half read, then more writes while reading the rest.
    let mut seen: Vec<Revision> = Vec::new();
    for _ in 0..250 {
        seen.push(batch_revision(&next_batch(&mut slow).await));
    }
    let (second, rest) = futures::join!(
        join_all((0..500).map(|i| async move {
            txn(store, ops(vec![put(&format!("k/more/{i}"), b"")]))
                .await
                .revision
        })),
        async {
            let mut rest = Vec::new();
            while rest.len() < 750 {
                rest.push(batch_revision(&next_batch(&mut slow).await));
            }
            rest
        }
    );
    seen.extend(rest);
    let mut acked: Vec<Revision> = first.into_iter().chain(second).collect();
    acked.sort_unstable();
    assert_eq!(seen, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_overtaken_by_compaction_ends_with_an_error() {
    let store = fresh_with(Options {
        watch_buffer: 2,
        ..Options::default()
    });
    let mut slow = watch(&*store, KeyRange::Prefix(String::new()), 1).await;
    for i in 0..10u8 {
        txn(&*store, ops(vec![put("k", &[i])])).await;
    }
    store.compact(8).await.expect("compact");
    let mut items = Vec::new();
    while let Some(item) = slow.next().await {
        items.push(item);
    }
    // The watch replayed the log before the compaction only if it had been polled;
    // it was not, so history 1..8 is gone and the stream must say so.
    match items.as_slice() {
        [
            Err(StoreError::Compacted {
                requested: 1,
                compacted: 8,
            }),
        ] => {}
        other => panic!("expected one Compacted error, got {other:?}"),
    }
}

/// One transaction failing with a backend error inside a batch is rolled back
/// alone; the others in the batch commit with consecutive revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_txn_does_not_poison_its_batch() {
    let fixture = fresh().await;
    // A trigger stands in for a backend failure (disk full, a constraint) that hits
    // one transaction only.
    rusqlite::Connection::open(fixture.dir.path().join(DB_FILE))
        .and_then(|c| {
            c.execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON kv \
                 WHEN NEW.key = CAST('poison' AS BLOB) \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
        })
        .expect("create trigger");
    let store: &dyn Store = &*fixture;
    let before = fixture.commit_stats();
    let results = join_all((0..60).map(|i| async move {
        let mut ops_ = vec![put(&format!("good/{i}"), b"")];
        if i % 3 == 0 {
            ops_.push(put("poison", b""));
        }
        (i, store.txn(ops(ops_)).await)
    }))
    .await;
    let stats = fixture.commit_stats();
    let mut revisions = Vec::new();
    for (i, result) in results {
        match (i % 3 == 0, result) {
            (true, Err(StoreError::Backend(_))) => {
                assert_eq!(
                    get(store, &format!("good/{i}")).await,
                    None,
                    "txn {i} was half applied"
                );
            }
            (false, Ok(r)) => {
                assert!(r.succeeded);
                revisions.push(r.revision);
            }
            (poisoned, other) => panic!("txn {i} (poisoned: {poisoned}) gave {other:?}"),
        }
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=40).collect::<Vec<Revision>>());
    assert!(
        stats.batches - before.batches < 60,
        "60 concurrent txns were not batched at all: {stats:?}"
    );
    let mut all = watch(store, KeyRange::Prefix(String::new()), 1).await;
    let logged: Vec<Revision> = batches_through(&mut all, 40)
        .await
        .iter()
        .map(|b| batch_revision(b))
        .collect();
    assert_eq!(
        logged, revisions,
        "rolled-back txns left nothing in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_watches() {
    let Fixture { store, dir: _dir } = fresh().await;
    let mut stream = watch(&store, KeyRange::Prefix(String::new()), 1).await;
    txn(&store, ops(vec![put("k", b"")])).await;
    drop(store);
    assert_eq!(
        batch_revision(&next_batch(&mut stream).await),
        1,
        "what was committed still arrives"
    );
    assert!(matches!(stream.next().await, Some(Err(StoreError::Closed))));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn open_rejects_an_unusable_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").expect("write file");
    match EmbeddedStore::open(&file) {
        Err(StoreError::Backend(e)) => assert!(std::error::Error::source(&*e).is_some()),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a store inside a file"),
    }
}

/// Automatic checkpoints are off on the writer, so only the checkpointer moves
/// committed pages from the WAL into the database file: if it stopped, the file
/// would stay at its empty size and the WAL would grow forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_moves_commits_into_the_database_file() {
    let f = fresh().await;
    let db = f.dir.path().join(DB_FILE);
    let empty_size = std::fs::metadata(&db).expect("db file").len();
    for i in 0..200 {
        txn(&*f, ops(vec![put(&format!("k/{i}"), &[7u8; 4096])])).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&db).expect("db file").len() < empty_size + 800 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint reached the database file within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
