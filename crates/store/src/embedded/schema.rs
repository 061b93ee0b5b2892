//! Opening the database: pragmas, tables and the schema version. Owns the on-disk
//! layout; it must not hold any state of its own.
//!
//! Keys are stored as BLOBs so SQLite orders them bytewise (memcmp), which is the
//! order of Rust's `str` and lets a prefix become a `[prefix, successor)` range.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{Revision, StoreError};

const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits on SQLite's file locks (another process holding the
/// database, or a checkpoint) before giving up with an error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
-- History for watches: one row per event, in commit order.
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    key BLOB NOT NULL,
    kind INTEGER NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
-- 'revision' lives here, not as max(mod_revision), so it survives deleting the
-- newest keys; 'compacted' is the oldest revision the log still holds.
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

pub(super) const KIND_PUT: i64 = 0;
pub(super) const KIND_DELETE: i64 = 1;

/// A backend failure with what we were doing when it happened.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub(super) struct ContextError {
    pub what: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// `map_err(sql("reading a range"))`: wraps a SQLite error into [`StoreError::Backend`].
pub(super) fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        StoreError::Backend(Box::new(ContextError {
            what,
            source: Box::new(e),
        }))
    }
}

/// The database holds something this code cannot make sense of.
pub(super) fn invalid(what: &'static str, why: &'static str) -> StoreError {
    StoreError::Backend(Box::new(ContextError {
        what,
        source: why.into(),
    }))
}

/// The one read-write connection, with the schema created or checked.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sql("opening the database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("setting the busy timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql("switching to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(invalid(
            "switching to WAL mode",
            "SQLite kept another journal mode",
        ));
    }
    // FULL: in WAL mode, every commit fsyncs the WAL. NORMAL would only fsync at
    // checkpoints and could lose acknowledged transactions on power loss.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql("setting synchronous=FULL"))?;
    // Savepoint journals of a batch stay in memory instead of spilling to temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sql("setting temp_store=MEMORY"))?;
    // Checkpoints run on the checkpointer's connection, never inside a COMMIT.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(sql("turning off automatic checkpoints"))?;

    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql("reading the schema version"))?;
    match version {
        0 => {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sql("creating the schema"))?;
        }
        SCHEMA_VERSION => {}
        _ => {
            return Err(invalid(
                "checking the schema version",
                "the database has a schema version this code does not know",
            ));
        }
    }
    Ok(conn)
}

/// The checkpointer's connection: read-write (a checkpoint writes the database
/// file) but it never writes rows.
pub(super) fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sql("opening the checkpoint connection"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("setting the busy timeout"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql("setting synchronous=FULL"))?;
    Ok(conn)
}

/// A read-only connection; WAL lets it read a snapshot while the writer commits.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql("opening a read connection"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("setting the busy timeout"))?;
    Ok(conn)
}

/// `(revision, compacted)` as committed.
pub(super) fn read_meta(conn: &Connection) -> Result<(Revision, Revision), StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT name, value FROM meta")
        .map_err(sql("reading the store revision"))?;
    let mut rows = stmt.query([]).map_err(sql("reading the store revision"))?;
    let (mut revision, mut compacted) = (None, None);
    while let Some(row) = rows.next().map_err(sql("reading the store revision"))? {
        let name: String = row.get(0).map_err(sql("reading the store revision"))?;
        let value: i64 = row.get(1).map_err(sql("reading the store revision"))?;
        match name.as_str() {
            "revision" => revision = Some(value),
            "compacted" => compacted = Some(value),
            _ => {}
        }
    }
    match (revision, compacted) {
        (Some(r), Some(c)) => Ok((r, c)),
        _ => Err(invalid(
            "reading the store revision",
            "the meta table lacks a row",
        )),
    }
}

/// Exclusive upper bound of the keys starting with `prefix`, bytewise; `None` when
/// every key past `prefix` matches (empty prefix).
pub(super) fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    // UTF-8 never contains 0xFF, so the last byte can always be bumped; the loop
    // only keeps this correct for arbitrary bytes.
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(super) fn decode_key(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| invalid("decoding a key", "a stored key is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durability rests on these two settings; kill -9 tests cannot see a missing
    /// fsync (the page cache survives the process), so check them directly.
    #[test]
    fn writer_is_wal_with_full_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open_writer(&dir.path().join("db")).expect("open");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("synchronous");
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }

    #[test]
    fn prefix_end_bumps_the_last_byte() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end("é"), Some(vec![0xC3, 0xAA]));
    }
}
