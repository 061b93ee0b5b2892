//! The writer thread: the only code that writes the database. It owns the write
//! connection and commits queued transactions in batches, one fsync per batch; it
//! must not reply to a caller before the batch holding its transaction is committed.
//!
//! Each transaction of a batch runs inside its own SAVEPOINT, so one that fails with
//! a backend error is rolled back alone and the rest of the batch still commits.

use std::cmp::Ordering as CmpOrdering;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::Stats;
use super::schema::{self, KIND_DELETE, KIND_PUT, sql};
use crate::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyValue, Revision, StoreError, Txn,
    TxnOp, TxnResponse,
};

pub(super) enum Request {
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnResponse, StoreError>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// One committed writing transaction, as the live feed carries it to watchers.
#[derive(Debug)]
pub(super) struct Committed {
    pub revision: Revision,
    pub events: Vec<Event>,
}

pub(super) struct Writer {
    conn: Connection,
    /// Nudges the checkpointer after each commit.
    checkpoint: std::sync::mpsc::SyncSender<()>,
    /// Committed revision, plus the writes of the batch in progress.
    revision: Revision,
    compacted: Revision,
    live: broadcast::Sender<Arc<Committed>>,
    stats: Arc<Stats>,
}

/// What a request did inside the batch, until the batch commits.
enum Outcome {
    Txn {
        reply: oneshot::Sender<Result<TxnResponse, StoreError>>,
        result: Result<(TxnResponse, Vec<Event>), StoreError>,
    },
    Compact {
        reply: oneshot::Sender<Result<(), StoreError>>,
        result: Result<(), StoreError>,
    },
}

impl Outcome {
    fn fail(self, error: StoreError) {
        // Send errors only mean the caller gave up waiting.
        match self {
            Outcome::Txn { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Outcome::Compact { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The batch could not commit: every request in it gets this, sharing the cause.
#[derive(Debug, thiserror::Error)]
#[error("committing a batch of {count} transactions")]
struct BatchFailed {
    count: usize,
    #[source]
    source: Arc<StoreError>,
}

/// The current state of one key, as compares and writes need it.
struct Current {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
}

impl Writer {
    pub fn new(
        conn: Connection,
        checkpoint: std::sync::mpsc::SyncSender<()>,
        live: broadcast::Sender<Arc<Committed>>,
        stats: Arc<Stats>,
    ) -> Result<Self, StoreError> {
        let (revision, compacted) = schema::read_meta(&conn)?;
        Ok(Writer {
            conn,
            checkpoint,
            revision,
            compacted,
            live,
            stats,
        })
    }

    /// Commits batches until every sender is gone (the store was dropped).
    pub fn run(mut self, mut queue: mpsc::Receiver<Request>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        // Whatever queued up during the previous commit's fsync forms the next batch:
        // no timer, so a lone caller never waits for company.
        while queue.blocking_recv_many(&mut batch, max_batch) > 0 {
            self.commit_batch(std::mem::take(&mut batch));
        }
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let count = batch.len();
        let mut broken = self.begin().err();
        let (start_revision, start_compacted) = (self.revision, self.compacted);
        let mut outcomes = Vec::with_capacity(count);
        for request in batch {
            match request {
                Request::Txn { txn, reply } => {
                    let result = self.step(&mut broken, |w| w.apply_txn(&txn));
                    outcomes.push(Outcome::Txn { reply, result });
                }
                Request::Compact { revision, reply } => {
                    let result = self.step(&mut broken, |w| w.compact(revision));
                    outcomes.push(Outcome::Compact { reply, result });
                }
            }
        }
        if broken.is_none() {
            broken = self.commit(start_revision, start_compacted).err();
        }

        if let Some(error) = broken {
            // Nothing of this batch happened (or it failed to begin at all).
            let _ = self.conn.execute_batch("ROLLBACK");
            self.revision = start_revision;
            self.compacted = start_compacted;
            let source = Arc::new(error);
            for outcome in outcomes {
                outcome.fail(StoreError::Backend(Box::new(BatchFailed {
                    count,
                    source: Arc::clone(&source),
                })));
            }
            return;
        }

        let txns = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Txn { .. }))
            .count();
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.txns.fetch_add(txns as u64, Ordering::Relaxed);
        for outcome in outcomes {
            match outcome {
                Outcome::Txn { reply, result } => {
                    let result = result.map(|(response, events)| {
                        if !events.is_empty() {
                            // No receiver is not an error: nobody watches right now.
                            let _ = self.live.send(Arc::new(Committed {
                                revision: response.revision,
                                events,
                            }));
                        }
                        response
                    });
                    // The caller may have given up waiting; its write stands anyway.
                    let _ = reply.send(result);
                }
                Outcome::Compact { reply, result } => {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql("beginning a batch"))?;
        // Re-read under the write lock: cheap, and keeps revisions right even if
        // something else wrote the file (another process opening the same dir).
        let (revision, compacted) = schema::read_meta(&self.conn)?;
        self.revision = revision;
        self.compacted = compacted;
        Ok(())
    }

    fn commit(
        &mut self,
        start_revision: Revision,
        start_compacted: Revision,
    ) -> Result<(), StoreError> {
        const WHAT: &str = "recording the store revision";
        let mut set = self
            .conn
            .prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")
            .map_err(sql(WHAT))?;
        if self.revision != start_revision {
            set.execute(("revision", self.revision))
                .map_err(sql(WHAT))?;
        }
        if self.compacted != start_compacted {
            set.execute(("compacted", self.compacted))
                .map_err(sql(WHAT))?;
        }
        drop(set);
        // The one fsync of the whole batch happens here (synchronous=FULL).
        self.conn
            .execute_batch("COMMIT")
            .map_err(sql("committing a batch"))?;
        // Full means a checkpoint is already due; it will see this commit too.
        let _ = self.checkpoint.try_send(());
        Ok(())
    }

    /// Runs `f` so that its database changes and its effect on `revision` and
    /// `compacted` are undone together if it fails. The inner result is `f`'s; the
    /// outer error means the savepoint itself failed and the batch is unusable.
    fn in_savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<Result<T, StoreError>, StoreError> {
        let (revision, compacted) = (self.revision, self.compacted);
        self.savepoint("SAVEPOINT txn", "opening a savepoint")?;
        let result = f(self);
        if result.is_err() {
            self.revision = revision;
            self.compacted = compacted;
            self.savepoint("ROLLBACK TO txn", "rolling back a failed transaction")?;
        }
        // After ROLLBACK TO, RELEASE just pops the (now empty) savepoint.
        self.savepoint("RELEASE txn", "releasing a savepoint")?;
        Ok(result)
    }

    /// One request of the batch, in its savepoint. Once the batch is broken the rest
    /// is not even tried: it all fails with the batch's error, so the placeholder
    /// error returned then is never seen.
    fn step<T>(
        &mut self,
        broken: &mut Option<StoreError>,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if broken.is_some() {
            return Err(StoreError::Closed);
        }
        self.in_savepoint(f).unwrap_or_else(|e| {
            *broken = Some(e);
            Err(StoreError::Closed)
        })
    }

    fn savepoint(&self, statement: &str, what: &'static str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(statement)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(sql(what))
    }

    fn apply_txn(&mut self, txn: &Txn) -> Result<(TxnResponse, Vec<Event>), StoreError> {
        let mut succeeded = true;
        for compare in &txn.compare {
            let current = self.current(&compare.key)?;
            if !holds(compare, current.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Taken only if something is written: a txn that writes nothing keeps the
        // store's revision.
        let revision = self.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            // Ops apply in order, each seeing the ones before it in the same txn.
            match op {
                TxnOp::Put { key, value } => {
                    let current = self.current(key)?;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: current.as_ref().map_or(revision, |c| c.create_revision),
                        mod_revision: revision,
                        version: current.as_ref().map_or(1, |c| c.version + 1),
                    };
                    self.conn
                        .prepare_cached(
                            "INSERT OR REPLACE INTO kv \
                             (key, value, create_revision, mod_revision, version) \
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .and_then(|mut s| {
                            s.execute((
                                kv.key.as_bytes(),
                                &kv.value,
                                kv.create_revision,
                                kv.mod_revision,
                                kv.version,
                            ))
                        })
                        .map_err(sql("writing a key"))?;
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                    });
                }
                TxnOp::Delete { key } => {
                    let deleted = self
                        .conn
                        .prepare_cached("DELETE FROM kv WHERE key = ?1")
                        .and_then(|mut s| s.execute([key.as_bytes()]))
                        .map_err(sql("deleting a key"))?;
                    if deleted > 0 {
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: revision,
                                version: 0,
                            },
                        });
                    }
                }
            }
        }
        if !events.is_empty() {
            let mut log = self
                .conn
                .prepare_cached(
                    "INSERT INTO log (revision, seq, key, kind, value, create_revision, version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql("appending to the event log"))?;
            for (seq, event) in events.iter().enumerate() {
                let kind = match event.kind {
                    EventKind::Put => KIND_PUT,
                    EventKind::Delete => KIND_DELETE,
                };
                log.execute((
                    revision,
                    seq as i64,
                    event.kv.key.as_bytes(),
                    kind,
                    &event.kv.value,
                    event.kv.create_revision,
                    event.kv.version,
                ))
                .map_err(sql("appending to the event log"))?;
            }
            self.revision = revision;
        }
        Ok((
            TxnResponse {
                succeeded,
                revision: self.revision,
            },
            events,
        ))
    }

    fn current(&self, key: &str) -> Result<Option<Current>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT value, create_revision, mod_revision, version FROM kv WHERE key = ?1",
            )
            .and_then(|mut s| {
                s.query_row([key.as_bytes()], |row| {
                    Ok(Current {
                        value: row.get(0)?,
                        create_revision: row.get(1)?,
                        mod_revision: row.get(2)?,
                        version: row.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(sql("reading a key for a transaction"))
    }

    fn compact(&mut self, revision: Revision) -> Result<(), StoreError> {
        // Past the next revision there is nothing more to forget.
        let revision = revision.min(self.revision + 1);
        if revision <= self.compacted {
            return Ok(());
        }
        self.conn
            .prepare_cached("DELETE FROM log WHERE revision < ?1")
            .and_then(|mut s| s.execute([revision]))
            .map_err(sql("compacting the event log"))?;
        self.compacted = revision;
        Ok(())
    }
}

/// etcd's rule: compare the key's field with the target; a missing key has
/// version and revisions 0, and a `Value` compare on it fails whatever the op.
fn holds(compare: &Compare, current: Option<&Current>) -> bool {
    let field = |f: fn(&Current) -> i64| current.map_or(0, f);
    let ordering = match &compare.target {
        CompareTarget::Version(v) => field(|c| c.version).cmp(v),
        CompareTarget::CreateRevision(r) => field(|c| c.create_revision).cmp(r),
        CompareTarget::ModRevision(r) => field(|c| c.mod_revision).cmp(r),
        CompareTarget::Value(v) => match current {
            Some(c) => c.value.as_slice().cmp(v.as_slice()),
            None => return false,
        },
    };
    match compare.op {
        CompareOp::Equal => ordering == CmpOrdering::Equal,
        CompareOp::NotEqual => ordering != CmpOrdering::Equal,
        CompareOp::Greater => ordering == CmpOrdering::Greater,
        CompareOp::Less => ordering == CmpOrdering::Less,
    }
}
