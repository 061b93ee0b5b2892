//! The etcd backend: the store's keys live in an etcd cluster under one key
//! prefix, reached through the `etcd-client` crate. It maps the trait's keys and
//! revisions onto etcd's and back; it must not keep any state of its own that a
//! second process on the same etcd could contradict (no cache, no revision
//! counter): etcd is the only truth.
//!
//! Revisions: the trait's revision is etcd's minus one. An etcd cluster nobody has
//! written to is at revision 1, and the trait promises 0 for an empty store, so
//! the shift keeps that promise and changes nothing else: etcd's revisions are
//! cluster-wide, so writes under other prefixes still move ours (as the trait
//! allows: a store may start past 0 and skip revisions it did not write). A key's
//! create and mod revisions shift the same way; 0 (a missing key) stays 0, which
//! keeps every compare exact because no key is ever written at etcd revision 1.
//!
//! - `local`: starting a throw-away etcd on loopback (tests, benchmarks, `lab`).

pub mod local;

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as etcd;

use crate::{
    Claim, Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, RangeResponse,
    Revision, Store, StoreError, Txn, TxnLimits, TxnOp, TxnResponse, WatchStream,
};

/// The key prefix vnet uses when none is given.
pub const DEFAULT_PREFIX: &str = "/vnet";

/// Keys a range read fetches per request: ranges larger than this are read in
/// pages, all at the revision of the first page, so they stay one snapshot.
const RANGE_PAGE: i64 = 4096;

/// Largest message the client accepts from etcd (a page of a range, a batch of
/// watch events); etcd itself sends up to its request limit.
const MAX_MESSAGE: usize = 256 << 20;

/// How to reach etcd and where in its key space the store lives.
#[derive(Clone, Debug)]
pub struct Options {
    /// Client URLs of the cluster's members (`http://host:2379`).
    pub endpoints: Vec<String>,
    /// Every key is stored as `prefix/key`; two stores with different prefixes
    /// share a cluster without seeing each other's keys.
    pub prefix: String,
    /// How long one request may take before it fails with a backend error (a
    /// cluster without quorum does not answer; callers must not hang on it).
    pub request_timeout: Duration,
    /// The cluster's `--max-txn-ops` and `--max-request-bytes`: etcd refuses
    /// larger transactions, so writers are told to stay under them.
    pub limits: TxnLimits,
    /// How long this process's claim outlives it if it dies without letting
    /// go (kill -9, or cut off from etcd): the next writer waits that long.
    pub claim_ttl: Duration,
}

/// etcd's own defaults for `--max-txn-ops` and `--max-request-bytes`.
pub const ETCD_DEFAULT_LIMITS: TxnLimits = TxnLimits {
    max_ops: 128,
    max_bytes: 3 << 19,
};

impl Options {
    pub fn new(endpoints: Vec<String>) -> Self {
        Options {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            request_timeout: Duration::from_secs(10),
            limits: ETCD_DEFAULT_LIMITS,
            claim_ttl: Duration::from_secs(10),
        }
    }
}

/// This process's claim on the store (see [`Store::claim`]).
#[derive(Clone)]
struct Held {
    key: String,
    /// etcd revision that created `key`: the key is ours while it still has it.
    create_revision: i64,
    /// The lease `key` lives under.
    lease: i64,
    /// Given up: every transaction is refused until a new claim is won (it
    /// never again goes unfenced, nor fenced by a key this process let go).
    lost: bool,
}

/// This process's claim, shared with the task renewing its lease, which
/// gives it up when the lease may have ended.
type Claimed = std::sync::Arc<tokio::sync::watch::Sender<Option<Held>>>;

/// This process's lease and the task renewing it.
struct Lease {
    id: i64,
    keeper: tokio::task::JoinHandle<()>,
    /// False once the keeper gave the lease up.
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Renews `lease` (granted at `granted`) every ttl / 3 while etcd confirms
/// it in time. etcd counts a lease's ttl from a renewal it received, never
/// from before it was asked, so the lease lives at least until the last
/// confirmed renewal's asking time plus the ttl: past that point, this
/// process may no longer hold the claim, so it gives the claim up (before
/// any successor can have won it), then revokes the lease once etcd answers
/// (else its claim key would hold out everyone for a ttl after quorum returns).
async fn keep_alive(
    mut client: etcd::LeaseClient,
    lease: i64,
    (mut keeper, mut responses): (etcd::LeaseKeeper, etcd::LeaseKeepAliveStream),
    (granted, ttl): (tokio::time::Instant, Duration),
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
    claim: Claimed,
) {
    let mut valid_until = granted + ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let asked = tokio::time::Instant::now();
        if asked >= valid_until {
            tracing::error!("etcd confirmed no lease renewal in time: giving the claim up");
            break;
        }
        let renewed = tokio::time::timeout_at(valid_until, async {
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        match renewed {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                valid_until = asked + Duration::from_secs(r.ttl().unsigned_abs());
                continue;
            }
            Ok(Ok(_)) => {
                tracing::error!("the store's writer lease expired: giving the claim up");
                break;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the writer lease failed"),
            Err(_) => {
                tracing::error!("etcd confirmed no lease renewal in time: giving the claim up");
                break;
            }
        }
        // The stream may be broken while the lease lives: open another.
        if let Ok(Ok((k, r))) = tokio::time::timeout_at(valid_until, client.keep_alive(lease)).await
        {
            keeper = k;
            responses = r;
        }
    }
    alive.store(false, std::sync::atomic::Ordering::Release);
    give_up(&claim, |h| h.lease == lease);
    loop {
        match tokio::time::timeout(ttl, client.revoke(lease)).await {
            Ok(Ok(_)) => return,
            Ok(Err(etcd::Error::GRpcStatus(s))) if s.message().contains("lease not found") => {
                return;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Marks the claim given up if `which` is the one held.
fn give_up(claim: &Claimed, which: impl Fn(&Held) -> bool) {
    claim.send_if_modified(|held| match held {
        Some(h) if !h.lost && which(h) => {
            h.lost = true;
            true
        }
        _ => false,
    });
}

/// A [`Store`] on an etcd cluster.
pub struct EtcdStore {
    kv: etcd::KvClient,
    watch: etcd::WatchClient,
    lease_client: etcd::LeaseClient,
    /// This process's lease, once granted (see `EtcdStore::lease`).
    lease: tokio::sync::Mutex<Option<Lease>>,
    prefix: String,
    limits: TxnLimits,
    claim_ttl: Duration,
    claim: Claimed,
    /// `prefix` with one trailing `/`: the etcd key of store key `k` is `root + k`.
    root: String,
    request_timeout: Duration,
}

impl EtcdStore {
    /// Connects and checks that the cluster answers (within the request timeout).
    pub async fn connect(options: Options) -> Result<Self, StoreError> {
        if options.endpoints.is_empty() {
            return Err(backend_msg("no etcd endpoint given"));
        }
        let connect = etcd::ConnectOptions::new()
            .with_connect_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), options.request_timeout);
        let client = etcd::Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(backend)?;
        let store = EtcdStore {
            kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            lease_client: client.lease_client(),
            lease: tokio::sync::Mutex::new(None),
            prefix: options.prefix.trim_end_matches('/').to_owned(),
            limits: options.limits,
            // etcd's shortest lease is about 1.5 s (with its default election timeout).
            claim_ttl: options.claim_ttl.max(Duration::from_secs(2)),
            claim: std::sync::Arc::new(tokio::sync::watch::Sender::new(None)),
            root: format!("{}/", options.prefix.trim_end_matches('/')),
            request_timeout: options.request_timeout,
        };
        store.range(KeyRange::Key(String::new())).await?;
        Ok(store)
    }

    /// This process's lease, granted on its first claim attempt and kept
    /// alive from then on (every ttl / 3), whether or not the claim is won:
    /// a replica that waits to lead need not grant one per attempt. One that
    /// was given up is replaced.
    async fn lease(&self) -> Result<i64, StoreError> {
        let mut lease = self.lease.lock().await;
        if let Some(l) = lease.as_ref()
            && l.alive.load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(l.id);
        }
        let ttl = self.claim_ttl;
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let mut client = self.lease_client.clone();
        let granted = tokio::time::Instant::now();
        let id = self
            .timed("a lease grant", client.grant(ttl_secs, None))
            .await?
            .id();
        let stream = self
            .timed("a lease keep-alive", client.keep_alive(id))
            .await?;
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let keeper = tokio::spawn(keep_alive(
            client,
            id,
            stream,
            (granted, ttl),
            alive.clone(),
            self.claim.clone(),
        ));
        *lease = Some(Lease { id, keeper, alive });
        Ok(id)
    }

    /// Gives the claim (and the lease) up at once (a clean shutdown), so the
    /// next writer need not wait for the lease to run out.
    pub async fn release(&self) {
        if let Some(lease) = self.lease.lock().await.take() {
            lease.keeper.abort();
            give_up(&self.claim, |_| true);
            let mut client = self.lease_client.clone();
            let _ = self.timed("a lease revoke", client.revoke(lease.id)).await;
        }
    }

    fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// The etcd key or prefix of `range`, and whether it is a prefix.
    fn etcd_range(&self, range: &KeyRange) -> (String, bool) {
        match range {
            KeyRange::Key(k) => (self.etcd_key(k), false),
            KeyRange::Prefix(p) => (self.etcd_key(p), true),
        }
    }

    fn store_key(&self, key: &[u8]) -> Result<String, StoreError> {
        let key = std::str::from_utf8(key)
            .map_err(|_| backend_msg(format!("a key under {} is not UTF-8", self.root)))?;
        key.strip_prefix(self.root.as_str())
            .map(str::to_owned)
            .ok_or_else(|| backend_msg(format!("etcd returned {key:?}, outside {}", self.root)))
    }

    fn key_value(&self, kv: &etcd::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.store_key(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: from_etcd(kv.create_revision()),
            mod_revision: from_etcd(kv.mod_revision()),
            version: kv.version(),
        })
    }

    /// Runs one etcd request under the request timeout.
    async fn timed<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, etcd::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(result) => result.map_err(backend),
            Err(_) => Err(backend_msg(format!(
                "etcd did not answer {what} within {:?}",
                self.request_timeout
            ))),
        }
    }

    /// An etcd watch from `start` (an etcd revision), once etcd has confirmed it.
    async fn open_watch(
        &self,
        key: &str,
        prefix: bool,
        start: i64,
    ) -> Result<(etcd::WatchStream, i64), StoreError> {
        let mut options = etcd::WatchOptions::new().with_start_revision(start);
        if prefix {
            options = options.with_prefix();
        }
        let mut client = self.watch.clone();
        let mut stream = self
            .timed("a watch", client.watch(key, Some(options)))
            .await?;
        let created = self
            .timed("a watch", stream.message())
            .await?
            .ok_or_else(|| backend_msg("etcd closed a watch it was creating"))?;
        if created.compact_revision() > 0 {
            return Err(compacted(start, created.compact_revision()));
        }
        if !created.created() || created.canceled() {
            return Err(backend_msg(format!(
                "etcd refused a watch: {}",
                created.cancel_reason()
            )));
        }
        let head = created.header().map_or(0, |h| h.revision());
        Ok((stream, head))
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, range: KeyRange) -> Result<RangeResponse, StoreError> {
        let (key, prefix) = self.etcd_range(&range);
        // One page at the latest revision, then the rest pinned at that revision.
        let end = prefix.then(|| prefix_end(key.as_bytes()));
        let mut kvs = Vec::new();
        let mut revision = 0;
        let mut from = key.clone().into_bytes();
        loop {
            let mut options = etcd::GetOptions::new().with_limit(RANGE_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            if let Some(end) = &end {
                options = options.with_range(end.clone());
            }
            let mut client = self.kv.clone();
            let page = self
                .timed("a range read", client.get(from.clone(), Some(options)))
                .await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                kvs.push(self.key_value(kv)?);
            }
            match (page.more(), page.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(RangeResponse {
            kvs,
            revision: from_etcd(revision),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let compares: Vec<etcd::Compare> =
            txn.compare.iter().map(|c| self.etcd_compare(c)).collect();
        let request = etcd::Txn::new()
            .when(compares)
            .and_then(self.etcd_ops(txn.success))
            .or_else(self.etcd_ops(txn.failure));
        // A claimed store runs the transaction inside one that checks the claim.
        let held = self.claim.borrow().clone();
        let request = match &held {
            None => request,
            Some(claim) if claim.lost => {
                return Err(StoreError::ClaimLost(format!(
                    "this server gave {} up (its lease may have ended): write refused",
                    claim.key
                )));
            }
            Some(claim) => etcd::Txn::new()
                .when([etcd::Compare::create_revision(
                    claim.key.clone(),
                    etcd::CompareOp::Equal,
                    claim.create_revision,
                )])
                .and_then([etcd::TxnOp::txn(request)]),
        };
        let mut client = self.kv.clone();
        let response = self.timed("a transaction", client.txn(request)).await?;
        let revision = response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| backend_msg("etcd answered a transaction without a header"))?;
        let succeeded = match &held {
            None => response.succeeded(),
            Some(claim) if !response.succeeded() => {
                give_up(&self.claim, |h| h.create_revision == claim.create_revision);
                return Err(StoreError::ClaimLost(format!(
                    "this server no longer holds {} (its lease ended): write refused",
                    claim.key
                )));
            }
            Some(_) => match response.op_responses().into_iter().next() {
                Some(etcd::TxnOpResponse::Txn(inner)) => inner.succeeded(),
                _ => return Err(backend_msg("etcd answered a fenced transaction oddly")),
            },
        };
        Ok(TxnResponse {
            succeeded,
            revision: from_etcd(revision),
        })
    }

    async fn watch(
        &self,
        range: KeyRange,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let (key, prefix) = self.etcd_range(&range);
        // etcd reads start revision 0 as "from now": the trait's 0 means "from the
        // beginning", which is etcd's 1.
        let start = to_etcd(from_revision.max(0)).max(1);
        let (mut stream, head) = self.open_watch(&key, prefix, start).await?;
        // etcd tells a watcher its history is compacted only when it syncs it, a
        // moment after creating it; a read at `start` tells at once.
        if start <= head {
            let mut client = self.kv.clone();
            let probe = etcd::GetOptions::new()
                .with_revision(start)
                .with_limit(1)
                .with_keys_only();
            let probe = match prefix {
                true => probe.with_range(prefix_end(key.as_bytes())),
                false => probe,
            };
            let read = client.get(key.as_bytes(), Some(probe));
            match tokio::time::timeout(self.request_timeout, read).await {
                Ok(Err(e)) if is_compacted(&e) => {
                    return Err(self.await_compaction_notice(&mut stream, start).await);
                }
                Ok(Err(e)) => return Err(backend(e)),
                Ok(Ok(_)) => {}
                Err(_) => return Err(backend_msg("etcd did not answer a watch's history check")),
            }
        }
        let state = WatchState {
            stream,
            root: self.root.clone(),
            next: from_revision,
            pending: VecDeque::new(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut client = self.kv.clone();
        match self
            .timed(
                "a compaction",
                client.compact(to_etcd(revision).max(1), None),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Compacting at or before an earlier compaction is a no-op.
            Err(StoreError::Backend(e))
                if e.downcast_ref::<etcd::Error>().is_some_and(is_compacted) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The claim is a key beside the prefix (`PREFIX.writer`) holding
    /// `holder`, under this process's lease, as the embedded store's lock
    /// file is for a data dir. A killed holder's key goes with its lease
    /// (one `claim_ttl`). From then on every transaction is fenced: it
    /// applies only while the key is still the one this claim created.
    async fn claim(&self, holder: &str) -> Result<Claim, StoreError> {
        if self.claim.borrow().as_ref().is_some_and(|h| !h.lost) {
            return Ok(Claim::Ours);
        }
        let lease = self.lease().await?;
        let key = format!("{}.writer", self.prefix);
        let claim = etcd::Txn::new()
            .when([etcd::Compare::create_revision(
                key.clone(),
                etcd::CompareOp::Equal,
                0,
            )])
            .and_then([etcd::TxnOp::put(
                key.clone(),
                holder,
                Some(etcd::PutOptions::new().with_lease(lease)),
            )])
            .or_else([etcd::TxnOp::get(key.clone(), None)]);
        let mut client = self.kv.clone();
        let response = self.timed("a claim", client.txn(claim)).await?;
        if response.succeeded() {
            let create_revision = response.header().map_or(0, |h| h.revision());
            self.claim.send_replace(Some(Held {
                key,
                create_revision,
                lease,
                lost: false,
            }));
            return Ok(Claim::Ours);
        }
        let holder = response
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Claim::HeldBy(holder))
    }

    async fn claim_lost(&self) {
        let mut claim = self.claim.subscribe();
        let _ = claim.wait_for(|h| h.as_ref().is_none_or(|h| h.lost)).await;
    }

    fn txn_limits(&self) -> TxnLimits {
        self.limits
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // The lease then runs out by itself; `release` ends it at once.
        if let Some(lease) = self.lease.get_mut().as_ref() {
            lease.keeper.abort();
        }
    }
}

impl EtcdStore {
    fn etcd_compare(&self, compare: &Compare) -> etcd::Compare {
        let key = self.etcd_key(&compare.key);
        let op = match compare.op {
            CompareOp::Equal => etcd::CompareOp::Equal,
            CompareOp::NotEqual => etcd::CompareOp::NotEqual,
            CompareOp::Greater => etcd::CompareOp::Greater,
            CompareOp::Less => etcd::CompareOp::Less,
        };
        match &compare.target {
            CompareTarget::Version(v) => etcd::Compare::version(key, op, *v),
            CompareTarget::CreateRevision(r) => {
                etcd::Compare::create_revision(key, op, to_etcd(*r))
            }
            CompareTarget::ModRevision(r) => etcd::Compare::mod_revision(key, op, to_etcd(*r)),
            CompareTarget::Value(v) => etcd::Compare::value(key, op, v.clone()),
        }
    }

    /// etcd refuses a transaction that touches one key twice; the trait applies
    /// ops in order, so only the last op on each key has a lasting effect, and
    /// that is the one kept.
    fn etcd_ops(&self, ops: Vec<TxnOp>) -> Vec<etcd::TxnOp> {
        let mut last: Vec<TxnOp> = Vec::with_capacity(ops.len());
        for op in ops.into_iter().rev() {
            let key = op_key(&op);
            if !last.iter().any(|kept| op_key(kept) == key) {
                last.push(op);
            }
        }
        last.into_iter()
            .rev()
            .map(|op| match op {
                TxnOp::Put { key, value } => etcd::TxnOp::put(self.etcd_key(&key), value, None),
                TxnOp::Delete { key } => etcd::TxnOp::delete(self.etcd_key(&key), None),
            })
            .collect()
    }

    /// After a read said `start` is compacted, etcd's watch says so too, with the
    /// oldest revision it kept.
    async fn await_compaction_notice(
        &self,
        stream: &mut etcd::WatchStream,
        start: i64,
    ) -> StoreError {
        loop {
            match self.timed("a compacted watch", stream.message()).await {
                Ok(Some(r)) if r.compact_revision() > 0 => {
                    return compacted(start, r.compact_revision());
                }
                Ok(Some(_)) => continue,
                Ok(None) => return backend_msg("etcd closed a compacted watch"),
                Err(e) => return e,
            }
        }
    }
}

fn op_key(op: &TxnOp) -> &str {
    match op {
        TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
    }
}

/// A watch in progress: etcd's stream, cut into one batch per revision.
struct WatchState {
    stream: etcd::WatchStream,
    root: String,
    /// The trait revision the next batch will be at or after.
    next: Revision,
    pending: VecDeque<Vec<Event>>,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Vec<Event>, StoreError>, Self)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some((Ok(batch), self));
            }
            if self.done {
                return None;
            }
            let error = match self.stream.message().await {
                Ok(Some(response)) if response.compact_revision() > 0 => {
                    compacted(to_etcd(self.next), response.compact_revision())
                }
                Ok(Some(response)) if response.canceled() => backend_msg(format!(
                    "etcd canceled a watch: {}",
                    response.cancel_reason()
                )),
                Ok(Some(response)) => match self.take(response.events()) {
                    Ok(()) => continue,
                    Err(e) => e,
                },
                Ok(None) => backend_msg("etcd ended a watch"),
                Err(e) => backend(e),
            };
            self.done = true;
            return Some((Err(error), self));
        }
    }

    /// Splits etcd's events into batches by revision: etcd never splits one
    /// revision's events across responses, but may send several revisions in one.
    fn take(&mut self, events: &[etcd::Event]) -> Result<(), StoreError> {
        for event in events {
            let kv = event
                .kv()
                .ok_or_else(|| backend_msg("etcd sent a watch event without a key"))?;
            let key = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(self.root.as_str()))
                .ok_or_else(|| backend_msg("etcd sent a watch event outside the prefix"))?;
            let event = match event.event_type() {
                etcd::EventType::Put => Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.to_owned(),
                        value: kv.value().to_vec(),
                        create_revision: from_etcd(kv.create_revision()),
                        mod_revision: from_etcd(kv.mod_revision()),
                        version: kv.version(),
                    },
                },
                etcd::EventType::Delete => Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: key.to_owned(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: from_etcd(kv.mod_revision()),
                        version: 0,
                    },
                },
            };
            let revision = event.kv.mod_revision;
            match self.pending.back_mut() {
                Some(batch) if batch.last().is_some_and(|e| e.kv.mod_revision == revision) => {
                    batch.push(event);
                }
                _ => self.pending.push_back(vec![event]),
            }
            self.next = revision + 1;
        }
        Ok(())
    }
}

/// A trait revision as etcd counts it. Key revisions 0 (missing) and below stay
/// as they are, so compares against them mean the same in both.
fn to_etcd(revision: Revision) -> i64 {
    if revision >= 1 {
        revision + 1
    } else {
        revision
    }
}

/// An etcd revision as the trait counts it (etcd's empty revision 1 is 0).
fn from_etcd(revision: i64) -> Revision {
    (revision - 1).max(0)
}

/// The end of etcd's range for every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

fn compacted(start: i64, compact_revision: i64) -> StoreError {
    StoreError::Compacted {
        requested: from_etcd(start),
        compacted: from_etcd(compact_revision),
    }
}

/// etcd's "required revision has been compacted" (a read, a watch or a compaction
/// at or below the compacted revision).
fn is_compacted(error: &etcd::Error) -> bool {
    matches!(error, etcd::Error::GRpcStatus(s) if s.message().contains("required revision has been compacted"))
}

fn backend(error: etcd::Error) -> StoreError {
    StoreError::Backend(Box::new(error))
}

fn backend_msg(message: impl Into<String>) -> StoreError {
    StoreError::Backend(message.into().into())
}
