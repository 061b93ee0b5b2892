//! The committer: makes the cloud's changes durable in the order they were
//! applied in memory. Everything queued while one store transaction is in
//! flight goes into the next one (group commit), so N concurrent writers cost
//! one fsync, not N, and a later change never reaches the disk before an
//! earlier one it may depend on. Callers are answered only after their batch
//! is durable. A transient store failure (an etcd leader change) is retried
//! for a few seconds; a lasting one fails that batch and everything queued
//! behind it (applied in memory after it, it may depend on it) until
//! [`Committer::reset`]: memory is then ahead of the store, and the replica
//! steps down and reloads (`replica`) before it commits again.

use std::collections::BTreeMap;
use std::sync::Arc;

use store::{Revision, Store, Txn, TxnLimits, TxnOp};
use tokio::sync::{mpsc, oneshot, watch};

/// Most API writes merged into one store transaction.
const MAX_BATCH: usize = 1024;

/// How long a transaction is retried while the store's failure is
/// transient, before the replica steps down (memory is ahead of the store).
/// etcd elects a new leader within a few seconds.
const RETRY_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Store history kept for watchers that resume from a past revision; older
/// history is compacted away so the log does not grow without bound.
const HISTORY_KEPT: Revision = 100_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("the store failed ({0}); this replica no longer leads: retry")]
    StoreFailed(String),
    #[error("the committer has stopped")]
    Stopped,
}

/// One key to write: its new value, or `None` to delete it.
pub type Write = (String, Option<Vec<u8>>);

struct Pending {
    writes: Vec<Write>,
    done: oneshot::Sender<Result<Revision, CommitError>>,
}

enum Queued {
    Write(Pending),
    /// A new reign: forget the failure (answered once forgotten).
    Reset(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Committer {
    /// Start the committer task. `failed` is set to the error when the store
    /// fails, until [`Committer::reset`].
    pub fn spawn(store: Arc<dyn Store>, failed: watch::Sender<Option<CommitError>>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx, failed));
        Committer { queue }
    }

    /// Queue `writes` behind everything queued before; resolves once durable.
    /// Must be called in the order the writes were decided (under the cloud's lock).
    pub fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<Revision, CommitError>> {
        let (done, rx) = oneshot::channel();
        // If the task is gone the receiver reports it when awaited.
        let _ = self.queue.send(Queued::Write(Pending { writes, done }));
        rx
    }

    /// Commit again after a failure: for a replica that starts to lead from
    /// a cloud reloaded from the store, so nothing failed is still applied.
    /// Everything submitted before this call stays failed.
    pub async fn reset(&self) {
        let (done, rx) = oneshot::channel();
        let _ = self.queue.send(Queued::Reset(done));
        let _ = rx.await;
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    failed: watch::Sender<Option<CommitError>>,
) {
    let mut compacted: Revision = 0;
    let limits = store.txn_limits();
    // A write that did not fit in the last transaction opens the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let first = match first {
            Queued::Reset(done) => {
                failed.send_replace(None);
                let _ = done.send(());
                continue;
            }
            Queued::Write(p) => match failed.borrow().clone() {
                Some(e) => {
                    let _ = p.done.send(Err(e));
                    continue;
                }
                None => p,
            },
        };
        // Every transaction also puts the commit marker (one op).
        let marker = vec![(crate::replica::COMMITTED_KEY.to_owned(), Some(Vec::new()))];
        let (mut ops, mut bytes) = size_of(&first.writes);
        ops += 1;
        bytes += size_of(&marker).1;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            let Queued::Write(next) = next else {
                carried = Some(next);
                break;
            };
            let (more_ops, more_bytes) = size_of(&next.writes);
            if ops + more_ops > limits.max_ops || bytes + more_bytes > limits.max_bytes {
                carried = Some(Queued::Write(next));
                break;
            }
            ops += more_ops;
            bytes += more_bytes;
            batch.push(next);
        }
        // One op per key: a later write in the batch supersedes an earlier one.
        let mut ops = BTreeMap::new();
        for (key, value) in marker {
            ops.insert(
                key.clone(),
                TxnOp::Put {
                    key,
                    value: value.unwrap_or_default(),
                },
            );
        }
        for pending in &mut batch {
            for (key, value) in std::mem::take(&mut pending.writes) {
                let op = match value {
                    Some(value) => TxnOp::Put {
                        key: key.clone(),
                        value,
                    },
                    None => TxnOp::Delete { key: key.clone() },
                };
                ops.insert(key, op);
            }
        }
        let result = commit(
            store.as_ref(),
            Txn {
                compare: Vec::new(),
                success: ops.into_values().collect(),
                failure: Vec::new(),
            },
        )
        .await
        .map_err(|e| CommitError::StoreFailed(e.to_string()));
        if let Err(e) = &result {
            tracing::error!(error = %e, "commit failed; failing what is queued behind it");
            failed.send_replace(Some(e.clone()));
        }
        for pending in batch {
            let _ = pending.done.send(result.clone());
        }
        // Compacting every HISTORY_KEPT revisions keeps between one and two
        // windows of history, at the cost of one delete per window.
        if let Ok(revision) = result
            && revision - compacted >= 2 * HISTORY_KEPT
        {
            compacted = revision - HISTORY_KEPT;
            if let Err(e) = store.compact(compacted).await {
                tracing::warn!(error = %e, "compacting store history failed");
            }
        }
    }
}

/// One transaction, sent again while the store's failure is transient (an
/// etcd leader change), for up to [`RETRY_WITHIN`] after the first failure
/// (which may itself have waited a request timeout). Sending it twice is
/// harmless: it only puts and deletes, with no compare.
async fn commit(store: &dyn Store, txn: Txn) -> Result<Revision, store::StoreError> {
    let mut deadline = None;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match store.txn(txn.clone()).await {
            Ok(r) => return Ok(r.revision),
            Err(e)
                if e.is_transient()
                    && *deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + RETRY_WITHIN)
                        > tokio::time::Instant::now() + pause =>
            {
                tracing::warn!(error = %e, "commit failed; sending it again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Ops and bytes of `writes` as [`store::TxnLimits`] counts them (before keys
/// written twice in one batch are merged, so never under the real size).
fn size_of(writes: &[Write]) -> (usize, usize) {
    let bytes = writes
        .iter()
        .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len) + TxnLimits::OP_OVERHEAD)
        .sum();
    (writes.len(), bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use store::embedded::EmbeddedStore;
    use store::{KeyRange, RangeResponse, StoreError, TxnLimits, TxnResponse, WatchStream};

    use super::*;

    /// The real embedded store, announcing small limits and recording the size of
    /// every transaction it is sent.
    struct Limited {
        inner: EmbeddedStore,
        limits: TxnLimits,
        sizes: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Store for Limited {
        async fn range(&self, range: KeyRange) -> Result<RangeResponse, StoreError> {
            self.inner.range(range).await
        }
        async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
            self.sizes.lock().expect("sizes").push(txn.success.len());
            self.inner.txn(txn).await
        }
        async fn watch(&self, range: KeyRange, from: Revision) -> Result<WatchStream, StoreError> {
            self.inner.watch(range, from).await
        }
        async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
            self.inner.compact(revision).await
        }
        fn txn_limits(&self) -> TxnLimits {
            self.limits
        }
    }

    #[tokio::test]
    async fn batches_stay_within_the_store_limits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Limited {
            inner: EmbeddedStore::open(dir.path()).expect("open"),
            limits: TxnLimits {
                max_ops: 10,
                max_bytes: 10 * (TxnLimits::OP_OVERHEAD + 20),
            },
            sizes: Mutex::new(Vec::new()),
        });
        let (failed, _) = watch::channel(None);
        let committer = Committer::spawn(store.clone(), failed);
        // Queued all at once, so the committer could merge them all.
        let done: Vec<_> = (0..60)
            .map(|i| {
                committer.submit(
                    (0..3)
                        .map(|k| (format!("w/{i:02}/{k}"), Some(b"v".to_vec())))
                        .collect(),
                )
            })
            .collect();
        for d in done {
            d.await.expect("answered").expect("committed");
        }
        let sizes = store.sizes.lock().expect("sizes").clone();
        assert!(
            sizes.iter().all(|&n| n <= 10),
            "a batch over the limit: {sizes:?}"
        );
        assert!(
            sizes.iter().any(|&n| n > 3),
            "nothing was merged: {sizes:?}"
        );
        let all = store
            .range(KeyRange::Prefix("w/".into()))
            .await
            .expect("range");
        assert_eq!(all.kvs.len(), 180);
    }
}
