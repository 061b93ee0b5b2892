//! The checkpointer thread: copies committed WAL pages into the database file
//! from its own connection, so the writer's COMMIT never pays for it (SQLite's
//! automatic checkpoint would run inside COMMIT and stall the whole batch).
//! It never writes data of its own, and never blocks the writer (PASSIVE mode).

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::schema::{self, sql};
use crate::StoreError;

/// Commits arriving within this window share one checkpoint (one db fsync).
/// 250 ms rather than 50: fewer db fsyncs competing with the commits' WAL fsyncs
/// took the p99 of 8 concurrent port creates from 2.5-4.3 ms to 1.9-2.1 ms.
const COALESCE: Duration = Duration::from_millis(250);

/// Start the thread. The writer nudges it after each commit through the returned
/// sender; dropping the sender ends the thread.
pub(super) fn spawn(path: &Path) -> Result<(SyncSender<()>, JoinHandle<()>), StoreError> {
    let conn = schema::open_checkpointer(path)?;
    let (nudge, nudged) = sync_channel(1);
    let handle = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || run(&conn, &nudged))
        .map_err(|e| {
            StoreError::Backend(Box::new(schema::ContextError {
                what: "starting the checkpoint thread",
                source: Box::new(e),
            }))
        })?;
    Ok((nudge, handle))
}

fn run(conn: &rusqlite::Connection, nudged: &Receiver<()>) {
    while nudged.recv().is_ok() {
        std::thread::sleep(COALESCE);
        // A nudge that arrived while sleeping is covered by this checkpoint.
        let _ = nudged.try_recv();
        let done = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(sql("checkpointing the WAL"));
        if let Err(e) = done {
            // The WAL only grows until a later checkpoint succeeds; data is safe.
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}
