//! Watch streams: history from the event log, then the live feed of the writer,
//! with no gap and no repeat. Owns nothing shared; it must never hold up the writer
//! (the live feed is a ring buffer that overwrites what a slow watcher has not read).
//!
//! Gap-freedom rests on two facts: every writing transaction takes the next revision
//! and is published on the feed after it is committed (so it is in the log first),
//! and a watch tracks `next`, the revision it must see next. A feed message below
//! `next` was already replayed and is dropped; one above `next`, or a `Lagged` from
//! the ring buffer, means something was missed, and the watch goes back to the log,
//! which has it. Subscribing before the first log read makes the normal case need
//! no second read.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::reader::{self, Readers};
use super::writer::Committed;
use crate::{Event, KeyRange, Revision, StoreError, WatchStream};

/// Revisions read from the log per read transaction, so a long replay neither holds
/// a snapshot (and so the WAL) open for long nor loads all history into memory.
const REPLAY_CHUNK: i64 = 1024;

pub(super) async fn watch(
    live: &broadcast::Sender<Arc<Committed>>,
    readers: &Arc<Readers>,
    range: KeyRange,
    from_revision: Revision,
) -> Result<WatchStream, StoreError> {
    let feed = live.subscribe();
    let mut watch = Watch {
        range,
        // 0 and 1 both mean "from the first revision".
        next: from_revision.max(1),
        feed,
        readers: Arc::clone(readers),
        pending: VecDeque::new(),
        replaying: true,
        done: false,
    };
    // The first chunk is read now, so a compacted start fails this call rather than
    // the stream's first item.
    watch.replay().await?;
    Ok(Box::pin(futures::stream::unfold(
        watch,
        |mut watch| async move { watch.next().await.map(|item| (item, watch)) },
    )))
}

struct Watch {
    range: KeyRange,
    /// Every revision below this one has been delivered (or did not touch the range).
    next: Revision,
    feed: broadcast::Receiver<Arc<Committed>>,
    readers: Arc<Readers>,
    /// Batches read from the log and not yet handed out.
    pending: VecDeque<Vec<Event>>,
    /// The log holds revisions from `next` on that the feed will not deliver.
    replaying: bool,
    done: bool,
}

impl Watch {
    async fn replay(&mut self) -> Result<(), StoreError> {
        let range = self.range.clone();
        let after = self.next - 1;
        let chunk = self
            .readers
            .run(move |conn| reader::read_log(conn, &range, after, REPLAY_CHUNK))
            .await?;
        self.pending.extend(chunk.batches);
        self.next = chunk.through + 1;
        self.replaying = chunk.through < chunk.head;
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<Vec<Event>, StoreError>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                return None;
            }
            if self.replaying {
                if let Err(e) = self.replay().await {
                    // Compacted under a lagging watcher (or a read failed): the client
                    // must re-watch, so end here rather than skip.
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            }
            match self.feed.recv().await {
                Ok(committed) if committed.revision < self.next => {}
                Ok(committed) if committed.revision > self.next => self.replaying = true,
                Ok(committed) => {
                    self.next = committed.revision + 1;
                    let events: Vec<Event> = committed
                        .events
                        .iter()
                        .filter(|e| self.range.contains(&e.kv.key))
                        .cloned()
                        .collect();
                    if !events.is_empty() {
                        return Some(Ok(events));
                    }
                }
                Err(RecvError::Lagged(_)) => self.replaying = true,
                Err(RecvError::Closed) => {
                    self.done = true;
                    return Some(Err(StoreError::Closed));
                }
            }
        }
    }
}
