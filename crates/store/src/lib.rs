//! The revisioned key-value store vnet keeps its logical state in, on etcd's data
//! model: one global revision bumped by every writing transaction, compare-and-swap
//! transactions, range reads and watches that resume from a revision.
//! Nothing above this trait may know which backend runs; this crate knows nothing
//! of networks or ports (keys and values are opaque here).

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub mod embedded;
pub mod etcd;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// A store revision. Starts at 0 for an empty store; every transaction that
/// writes anything takes the next one.
pub type Revision = i64;

/// One key as the store holds it, with etcd's bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created this key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote this key.
    pub mod_revision: Revision,
    /// Number of writes since creation: 1 after the first put.
    pub version: i64,
}

/// Which keys a range read covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly this key.
    Key(String),
    /// Every key starting with this prefix, in key order.
    Prefix(String),
}

impl KeyRange {
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeyRange::Key(k) => k == key,
            KeyRange::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// Matching keys, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The store's revision at the moment of the read: a watch from
    /// `revision + 1` sees exactly the changes after this read.
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// What a compare looks at. A missing key has version, create and mod revision 0
/// and never equals any value: as in etcd, a `Value` compare on a missing key
/// fails whatever the op (even `NotEqual`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Value(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
        }
    }

    /// The key was last written at exactly `revision` (0: it does not exist).
    pub fn mod_revision_is(key: impl Into<String>, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(revision),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// Deleting a missing key is not an error and writes nothing.
    Delete {
        key: String,
    },
}

/// An etcd-style transaction: if every compare holds, apply `success`, else
/// apply `failure`. All of it happens at one revision, atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The revision this transaction wrote at, or the store's current revision
    /// if it wrote nothing (a read-only branch does not bump the revision).
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv.value` is empty,
/// `kv.mod_revision` is the deleting revision and `kv.version` and
/// `kv.create_revision` are 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// Events in revision order; all events of one transaction arrive in one batch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Vec<Event>, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("revision {requested} has been compacted (oldest kept is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("store is closed")]
    Closed,
    /// This process's claim (see [`Store::claim`]) is gone: another may
    /// write now, so this one never will again.
    #[error("{0}")]
    ClaimLost(String),
}

impl StoreError {
    /// Whether the same request may succeed if sent again (a backend that
    /// did not answer, or answered during its own leader election).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// The largest transaction a backend accepts. A writer that merges many changes
/// into one transaction (the API's committer) must stay under both bounds; a
/// bigger transaction fails with a backend error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLimits {
    /// Most ops (puts and deletes of one branch) in one transaction.
    pub max_ops: usize,
    /// Most bytes of keys and values in one transaction, with
    /// [`TxnLimits::OP_OVERHEAD`] counted per op for the framing around them.
    pub max_bytes: usize,
}

impl TxnLimits {
    pub const UNLIMITED: TxnLimits = TxnLimits {
        max_ops: usize::MAX,
        max_bytes: usize::MAX,
    };

    /// Bytes counted per op on top of its key and value.
    pub const OP_OVERHEAD: usize = 32;
}

/// Who holds a store's writer claim (see [`Store::claim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This process: its transactions are the only ones applied.
    Ours,
    /// Another process, which named itself so (vnet: its API's URL).
    HeldBy(String),
}

/// The store contract. A transaction's future resolves only once its effect is
/// durable: an acknowledged write survives `kill -9` of the process.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Read keys at the latest revision.
    async fn range(&self, range: KeyRange) -> Result<RangeResponse, StoreError>;

    /// Apply a transaction atomically at the next revision.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// Every change to keys in `range` with revision >= `from_revision`, first
    /// those already in history, then live ones, with no gap and no repeat.
    /// Fails with `Compacted` if history before `from_revision` is gone.
    async fn watch(
        &self,
        range: KeyRange,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError>;

    /// Forget history older than `revision` (current values are kept): a watch
    /// from `revision` still works, one from `revision - 1` fails with `Compacted`.
    /// Compacting at or before an earlier compaction is a no-op, not an error.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Try once to become the store's only writer, naming this process
    /// `holder`. Once ours, the claim lasts as long as the process, or until
    /// the backend loses it (then [`Store::claim_lost`] resolves and every
    /// transaction fails, never applying over a successor's; the process
    /// may claim again). The default is a store only one process can open
    /// (the embedded store, whose data dir's lock its opener holds): always ours.
    async fn claim(&self, holder: &str) -> Result<Claim, StoreError> {
        let _ = holder;
        Ok(Claim::Ours)
    }

    /// Resolves once this process holds no claim: at once if it never won
    /// one, else as soon as the backend may have lost it, before any other
    /// process can win it. The default's claim is never lost.
    async fn claim_lost(&self) {
        futures::future::pending().await
    }

    /// How large a transaction this store accepts.
    fn txn_limits(&self) -> TxnLimits {
        TxnLimits::UNLIMITED
    }
}
