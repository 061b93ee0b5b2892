//! The committer: makes the cloud's changes durable in the order they were
//! applied in memory. Everything queued while one store transaction is in
//! flight goes into the next one (group commit), so N concurrent writers cost
//! one fsync, not N, and a later change never reaches the disk before an
//! earlier one it may depend on. Callers are answered only after their batch
//! is durable. A store failure is fatal: memory is then ahead of the disk, so
//! the server stops rather than serve state it cannot keep (restart reloads).

use std::collections::BTreeMap;
use std::sync::Arc;

use store::{Revision, Store, Txn, TxnOp};
use tokio::sync::{mpsc, oneshot, watch};

/// Most API writes merged into one store transaction.
const MAX_BATCH: usize = 1024;

/// Store history kept for watchers that resume from a past revision; older
/// history is compacted away so the log does not grow without bound.
const HISTORY_KEPT: Revision = 100_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("the store failed ({0}); the server is stopping")]
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

#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Start the committer task. `failed` is set to the error when the store fails.
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
        let _ = self.queue.send(Pending { writes, done });
        rx
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    failed: watch::Sender<Option<CommitError>>,
) {
    let mut compacted: Revision = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // One op per key: a later write in the batch supersedes an earlier one.
        let mut ops = BTreeMap::new();
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
        let result = store
            .txn(Txn {
                compare: Vec::new(),
                success: ops.into_values().collect(),
                failure: Vec::new(),
            })
            .await
            .map(|r| r.revision)
            .map_err(|e| CommitError::StoreFailed(e.to_string()));
        if let Err(e) = &result {
            tracing::error!(error = %e, "commit failed; stopping");
            let _ = failed.send(Some(e.clone()));
        }
        for pending in batch {
            let _ = pending.done.send(result.clone());
        }
        match result {
            Err(_) => return,
            // Compacting every HISTORY_KEPT revisions keeps between one and two
            // windows of history, at the cost of one delete per window.
            Ok(revision) if revision - compacted >= 2 * HISTORY_KEPT => {
                compacted = revision - HISTORY_KEPT;
                if let Err(e) = store.compact(compacted).await {
                    tracing::warn!(error = %e, "compacting store history failed");
                }
            }
            Ok(_) => {}
        }
    }
}
