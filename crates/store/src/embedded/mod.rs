//! The embedded backend: one SQLite database file (`dir/vnet.db`) holding the keys,
//! an event log for watches and the store's revision, written by one group-committing
//! writer thread. It must not acknowledge a transaction before it is fsynced, and
//! nothing but that writer thread may write rows (the checkpointer only moves
//! committed WAL pages into the database file).
//!
//! Why SQLite: it gives crash-safe atomic commits with an fsync we control
//! (`synchronous=FULL` in WAL mode), snapshot reads that never block the writer, and
//! ordered B-tree range scans, in one bundled C library with no server to run.
//!
//! Layout:
//! - `schema`: opening connections, pragmas and the tables;
//! - `writer`: the writer thread and the group commit;
//! - `checkpoint`: WAL checkpoints off the commit path;
//! - `reader`: the pool of read connections (ranges and log replay);
//! - `watch`: watch streams (history, then the live feed, with no gap).
//!
//! One directory must be opened by one [`EmbeddedStore`] at a time: the live feed of
//! watches only carries the writes of its own store.

mod checkpoint;
mod reader;
mod schema;
mod watch;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{KeyRange, RangeResponse, Revision, Store, StoreError, Txn, TxnResponse, WatchStream};

use reader::Readers;
use writer::{Committed, Request};

/// Name of the database file inside the store's directory.
pub const DB_FILE: &str = "vnet.db";

/// Tuning knobs; [`Options::default`] is what production uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most transactions committed together under one fsync. 1 turns group commit
    /// off (one fsync per transaction), which is only useful as a baseline.
    pub max_batch: usize,
    /// Committed transactions the live feed keeps for watchers that fall behind;
    /// a watcher further behind replays from the log instead.
    pub watch_buffer: usize,
    /// Transactions callers may queue for the writer before `txn` waits.
    pub queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 1024,
            watch_buffer: 4096,
            queue: 8192,
        }
    }
}

/// How much the writer thread has committed since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// SQLite commits (fsyncs) of batches.
    pub batches: u64,
    /// Transactions acknowledged in those batches (including failed compares).
    pub txns: u64,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    txns: AtomicU64,
}

/// The SQLite-backed [`Store`]. Dropping it lets the writer thread finish what is
/// queued and waits for it; watch streams still open then end with
/// [`StoreError::Closed`].
pub struct EmbeddedStore {
    /// `None` only during drop, so the writer sees its channel close before we join it.
    requests: Option<mpsc::Sender<Request>>,
    live: broadcast::Sender<Arc<Committed>>,
    readers: Arc<Readers>,
    stats: Arc<Stats>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, with the default options.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Options::default())
    }

    pub fn open_with(dir: &Path, options: Options) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(Box::new(schema::ContextError {
                what: "creating the store directory",
                source: Box::new(e),
            }))
        })?;
        let path = dir.join(DB_FILE);
        let conn = schema::open_writer(&path)?;
        let readers = Arc::new(Readers::new(path.clone()));
        // Fail now rather than on the first read if the file cannot be read back.
        readers.with(|_| Ok(()))?;

        let (live, _) = broadcast::channel(options.watch_buffer.max(1));
        let (requests, queue) = mpsc::channel(options.queue.max(1));
        let stats = Arc::new(Stats::default());
        let (nudge, checkpointer) = checkpoint::spawn(&path)?;
        let writer = writer::Writer::new(conn, nudge, live.clone(), Arc::clone(&stats))?;
        let max_batch = options.max_batch.max(1);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(queue, max_batch))
            .map_err(|e| {
                StoreError::Backend(Box::new(schema::ContextError {
                    what: "starting the writer thread",
                    source: Box::new(e),
                }))
            })?;
        Ok(EmbeddedStore {
            requests: Some(requests),
            live,
            readers,
            stats,
            writer: Some(handle),
            checkpointer: Some(checkpointer),
        })
    }

    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            txns: self.stats.txns.load(Ordering::Relaxed),
        }
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        requests
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        // A dropped reply means the writer thread is gone (it never drops one otherwise).
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(handle) = self.writer.take() {
            // Joining makes "dropped" mean "the database is closed": a reopen right
            // after sees everything. The wait is at most one batch commit.
            if handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
        // The writer's exit dropped the checkpointer's nudge sender, ending it.
        if let Some(handle) = self.checkpointer.take()
            && handle.join().is_err()
        {
            tracing::error!("store checkpoint thread panicked");
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Reads go to a pool of read connections on blocking threads, not through the
    /// writer: in WAL mode a read transaction is a consistent snapshot that neither
    /// waits for nor delays the writer's fsync, and the writer stays dedicated to
    /// commits. A read started after a `txn` resolved sees that txn (it is committed).
    async fn range(&self, range: KeyRange) -> Result<RangeResponse, StoreError> {
        self.readers
            .run(move |conn| reader::range(conn, &range))
            .await
    }

    /// The future may be dropped once sent: the transaction still applies (as with
    /// etcd, cancelling a request does not cancel a write in flight).
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.request(|reply| Request::Txn { txn, reply }).await
    }

    async fn watch(
        &self,
        range: KeyRange,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::watch(&self.live, &self.readers, range, from_revision).await
    }

    /// Keeps history from `revision` on: a watch from `revision` still works, one
    /// from `revision - 1` fails with [`StoreError::Compacted`]. A revision past the
    /// next one is taken as the next one (all history gone); an older compaction
    /// than the last is a no-op.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.request(|reply| Request::Compact { revision, reply })
            .await
    }
}
