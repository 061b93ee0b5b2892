//! Read connections: range reads and log replay for watches, each in one read
//! transaction (a WAL snapshot). Owns a small pool of connections; it must never
//! write.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, Row, TransactionBehavior};

use super::schema::{self, KIND_DELETE, KIND_PUT, decode_key, invalid, sql};
use crate::{Event, EventKind, KeyRange, KeyValue, RangeResponse, Revision, StoreError};

/// Idle connections kept open; more are opened under load and closed after.
const MAX_IDLE: usize = 8;

pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a pooled connection, on this thread.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic elsewhere while holding the lock leaves only a Vec behind: still valid.
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = f(&mut conn);
        // A connection that failed may be in a bad state: drop it, open a new one later.
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }

    /// Runs `f` on a pooled connection on tokio's blocking pool, since SQLite calls
    /// block (disk reads, busy waits).
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| {
                StoreError::Backend(Box::new(schema::ContextError {
                    what: "running a read on the blocking pool",
                    source: Box::new(e),
                }))
            })?
    }
}

pub(super) fn range(conn: &mut Connection, range: &KeyRange) -> Result<RangeResponse, StoreError> {
    const WHAT: &str = "reading a range";
    // One transaction, so the revision and the rows come from the same snapshot.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(sql(WHAT))?;
    let (revision, _) = schema::read_meta(&tx)?;
    let cols = "SELECT key, value, create_revision, mod_revision, version FROM kv";
    let mut kvs = Vec::new();
    let mut push = |row: &Row<'_>| -> Result<(), StoreError> {
        kvs.push(KeyValue {
            key: decode_key(row.get(0).map_err(sql(WHAT))?)?,
            value: row.get(1).map_err(sql(WHAT))?,
            create_revision: row.get(2).map_err(sql(WHAT))?,
            mod_revision: row.get(3).map_err(sql(WHAT))?,
            version: row.get(4).map_err(sql(WHAT))?,
        });
        Ok(())
    };
    match range {
        KeyRange::Key(key) => {
            let mut stmt = tx
                .prepare_cached(&format!("{cols} WHERE key = ?1"))
                .map_err(sql(WHAT))?;
            let mut rows = stmt.query([key.as_bytes()]).map_err(sql(WHAT))?;
            while let Some(row) = rows.next().map_err(sql(WHAT))? {
                push(row)?;
            }
        }
        KeyRange::Prefix(prefix) => match schema::prefix_end(prefix) {
            Some(end) => {
                let mut stmt = tx
                    .prepare_cached(&format!("{cols} WHERE key >= ?1 AND key < ?2 ORDER BY key"))
                    .map_err(sql(WHAT))?;
                let mut rows = stmt
                    .query((prefix.as_bytes(), end.as_slice()))
                    .map_err(sql(WHAT))?;
                while let Some(row) = rows.next().map_err(sql(WHAT))? {
                    push(row)?;
                }
            }
            None => {
                let mut stmt = tx
                    .prepare_cached(&format!("{cols} ORDER BY key"))
                    .map_err(sql(WHAT))?;
                let mut rows = stmt.query([]).map_err(sql(WHAT))?;
                while let Some(row) = rows.next().map_err(sql(WHAT))? {
                    push(row)?;
                }
            }
        },
    }
    Ok(RangeResponse { kvs, revision })
}

/// Part of the log, as a watch replays it.
pub(super) struct LogChunk {
    /// Events of each transaction in the chunk touching the range, in revision order
    /// (transactions that touch nothing in the range are left out).
    pub batches: Vec<Vec<Event>>,
    /// Every revision up to this one has been read (or filtered out).
    pub through: Revision,
    /// The store's revision in the snapshot read; `through == head` means caught up.
    pub head: Revision,
}

/// Reads the log after revision `after`, at most `max_revisions` revisions of it.
/// Fails with `Compacted` if some of the history after `after` is gone.
pub(super) fn read_log(
    conn: &mut Connection,
    range: &KeyRange,
    after: Revision,
    max_revisions: i64,
) -> Result<LogChunk, StoreError> {
    const WHAT: &str = "reading the event log";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(sql(WHAT))?;
    let (head, compacted) = schema::read_meta(&tx)?;
    if after + 1 < compacted {
        return Err(StoreError::Compacted {
            requested: after + 1,
            compacted,
        });
    }
    let through = head.min(after.saturating_add(max_revisions)).max(after);
    let mut batches: Vec<Vec<Event>> = Vec::new();
    if through == after {
        return Ok(LogChunk {
            batches,
            through,
            head,
        });
    }

    let cols = "SELECT revision, key, kind, value, create_revision, version FROM log \
                WHERE revision > ?1 AND revision <= ?2";
    let order = "ORDER BY revision, seq";
    let mut last_revision = None;
    let mut push = |row: &Row<'_>| -> Result<(), StoreError> {
        let revision: Revision = row.get(0).map_err(sql(WHAT))?;
        let kind = match row.get::<_, i64>(2).map_err(sql(WHAT))? {
            KIND_PUT => EventKind::Put,
            KIND_DELETE => EventKind::Delete,
            _ => return Err(invalid("decoding an event", "unknown event kind")),
        };
        let event = Event {
            kind,
            kv: KeyValue {
                key: decode_key(row.get(1).map_err(sql(WHAT))?)?,
                value: row.get(3).map_err(sql(WHAT))?,
                create_revision: row.get(4).map_err(sql(WHAT))?,
                mod_revision: revision,
                version: row.get(5).map_err(sql(WHAT))?,
            },
        };
        match batches.last_mut() {
            Some(batch) if last_revision == Some(revision) => batch.push(event),
            _ => batches.push(vec![event]),
        }
        last_revision = Some(revision);
        Ok(())
    };
    // The range filter is in SQL so rows of other keys are never decoded.
    match range {
        KeyRange::Key(key) => {
            let mut stmt = tx
                .prepare_cached(&format!("{cols} AND key = ?3 {order}"))
                .map_err(sql(WHAT))?;
            let mut rows = stmt
                .query((after, through, key.as_bytes()))
                .map_err(sql(WHAT))?;
            while let Some(row) = rows.next().map_err(sql(WHAT))? {
                push(row)?;
            }
        }
        KeyRange::Prefix(prefix) => match schema::prefix_end(prefix) {
            Some(end) => {
                let mut stmt = tx
                    .prepare_cached(&format!("{cols} AND key >= ?3 AND key < ?4 {order}"))
                    .map_err(sql(WHAT))?;
                let mut rows = stmt
                    .query((after, through, prefix.as_bytes(), end.as_slice()))
                    .map_err(sql(WHAT))?;
                while let Some(row) = rows.next().map_err(sql(WHAT))? {
                    push(row)?;
                }
            }
            None => {
                let mut stmt = tx
                    .prepare_cached(&format!("{cols} {order}"))
                    .map_err(sql(WHAT))?;
                let mut rows = stmt.query((after, through)).map_err(sql(WHAT))?;
                while let Some(row) = rows.next().map_err(sql(WHAT))? {
                    push(row)?;
                }
            }
        },
    }
    Ok(LogChunk {
        batches,
        through,
        head,
    })
}
