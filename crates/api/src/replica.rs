//! Several servers on one store: which replica leads (holds the store's
//! claim and alone validates and commits writes) and when it steps down, a
//! follower's copy of the cloud kept by the store's watch, its read barrier,
//! and the forwarding of writes to the leader. It must not validate anything
//! itself: a follower only replays what the leader committed.

use std::cell::Cell;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use model::{Cloud, Kind, Resource};
use store::{Claim, Event, EventKind, KeyRange, Revision, Store, StoreError};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::hosts::{self, StoredHost};
use crate::state::{App, LoadError};

/// Put by every commit: its mod revision is the last committed revision,
/// which a read barrier reads (one key) and a follower's watch delivers.
pub const COMMITTED_KEY: &str = "meta/committed";

/// How often a follower tries the claim: a dead leader's claim lasts its
/// lease, so this adds at most this much to a failover.
const CAMPAIGN_EVERY: Duration = Duration::from_millis(300);

/// Longest a follower waits for its watch to reach a revision etcd has.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(10);

/// Longest a forwarded request may take at the leader.
const FORWARD_WITHIN: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Follows the leader at this URL (`None`: not known yet).
    Follower(Option<String>),
}

pub struct Replica {
    /// This replica's URL, which followers forward writes to while it leads.
    pub advertise: String,
    role: watch::Sender<Role>,
    /// The store revision a follower's cloud reflects.
    applied: watch::Sender<Revision>,
    client: Client<HttpConnector, Body>,
}

/// The leader's answer to a write names the revision that made it durable,
/// so the follower that forwarded it waits for exactly that one.
const REVISION_HEADER: &str = "x-vnet-revision";

/// Set on a forwarded request: a replica that does not lead answers it 503
/// rather than forward it again, so two replicas that each think the other
/// leads (during an election) cannot bounce a request between them.
const FORWARDED_HEADER: &str = "x-vnet-forwarded";

tokio::task_local! {
    /// Set by a write a follower refused inside a read it serves (a
    /// project's first list of security groups makes its default group): the
    /// read then goes to the leader.
    static WANTED_LEADER: Cell<bool>;
    /// On the leader, the last revision a request's writes committed at.
    static COMMITTED_AT: Cell<Revision>;
}

/// A write of the request being served committed at `revision`.
pub fn note_commit(revision: Revision) {
    let _ = COMMITTED_AT.try_with(|c| c.set(c.get().max(revision)));
}

impl Replica {
    pub fn new(advertise: String, applied: Revision) -> Self {
        Replica {
            advertise,
            role: watch::Sender::new(Role::Follower(None)),
            applied: watch::Sender::new(applied),
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.role.borrow() == Role::Leader
    }

    /// The error a write gets on a follower (outside a request, or before
    /// the forwarding layer sends the request on).
    pub fn refuse_write(&self) -> ApiError {
        let _ = WANTED_LEADER.try_with(|w| w.set(true));
        ApiError::unavailable("this replica does not lead; the write goes to the leader")
    }

    async fn wait_applied(&self, revision: Revision) -> Result<(), ApiError> {
        let mut applied = self.applied.subscribe();
        match tokio::time::timeout(CATCH_UP_WITHIN, applied.wait_for(|a| *a >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ApiError::unavailable(format!(
                "this replica has not caught up with revision {revision} yet"
            ))),
        }
    }

    /// A follower's cloud was reloaded at `revision`.
    pub fn reloaded(&self, revision: Revision) {
        self.applied.send_replace(revision);
    }

    /// What `GET /vnet/v1/replica` shows: whether this replica leads, whom
    /// it follows, and the revision its cloud reflects (a follower's).
    pub fn view(&self) -> serde_json::Value {
        let (leads, leader) = match &*self.role.borrow() {
            Role::Leader => (true, Some(self.advertise.clone())),
            Role::Follower(leader) => (false, leader.clone()),
        };
        serde_json::json!({
            "replica": {
                "url": self.advertise,
                "leads": leads,
                "leader": leader,
                "applied_revision": *self.applied.borrow(),
            }
        })
    }
}

/// The last committed revision, as the store has it now (a quorum read on etcd).
async fn committed(store: &dyn Store) -> Result<Revision, StoreError> {
    let read = store.range(KeyRange::Key(COMMITTED_KEY.into())).await?;
    Ok(read.kvs.first().map_or(0, |kv| kv.mod_revision))
}

/// Wait until this follower's cloud holds everything committed before now,
/// so that a read made after any replica answered a write sees that write.
/// A store that does not answer leaves the cloud as it is: reads are then
/// served from memory, as last known.
async fn barrier(app: &App) -> Result<(), ApiError> {
    match committed(app.store.as_ref()).await {
        Ok(revision) => app.replica.wait_applied(revision).await,
        Err(e) => {
            tracing::warn!(error = %e, "read barrier: the store did not answer; serving from memory");
            Ok(())
        }
    }
}

/// The outermost layer: on the leader, a write's answer names its revision;
/// on a follower, writes go to the leader (answered once this replica has
/// applied them) and reads wait for the barrier.
pub async fn route(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.replica.is_leader() {
        let (mut response, revision) = COMMITTED_AT
            .scope(Cell::new(0), async {
                let response = next.run(request).await;
                (response, COMMITTED_AT.with(Cell::get))
            })
            .await;
        if revision > 0 {
            response
                .headers_mut()
                .insert(REVISION_HEADER, revision.into());
        }
        return response;
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return forward(&app, request).await;
    }
    let mut again = Request::new(Body::empty());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.headers_mut() = request.headers().clone();
    if let Err(e) = barrier(&app).await {
        return e.into_response();
    }
    let (response, wanted) = WANTED_LEADER
        .scope(Cell::new(false), async {
            let response = next.run(request).await;
            (response, WANTED_LEADER.with(Cell::get))
        })
        .await;
    match wanted {
        true => forward(&app, again).await,
        false => response,
    }
}

async fn forward(app: &App, mut request: Request) -> Response {
    let leader = match &*app.replica.role.borrow() {
        Role::Follower(Some(leader)) if !request.headers().contains_key(FORWARDED_HEADER) => {
            leader.clone()
        }
        _ => {
            return ApiError::unavailable("no replica leads yet (an election is on): retry")
                .into_response();
        }
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", leader.trim_end_matches('/')).parse::<Uri>() else {
        return ApiError::unavailable(format!("the leader's address {leader:?} is not a URL"))
            .into_response();
    };
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert(FORWARDED_HEADER, axum::http::HeaderValue::from_static("1"));
    let answered = tokio::time::timeout(FORWARD_WITHIN, app.replica.client.request(request)).await;
    match answered {
        Ok(Ok(response)) => {
            // Answered once durable, at the revision the leader names (none:
            // the request wrote nothing).
            let revision = response
                .headers()
                .get(REVISION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Revision>().ok());
            if let Some(revision) = revision
                && let Err(e) = app.replica.wait_applied(revision).await
            {
                return e.into_response();
            }
            response.map(Body::new)
        }
        Ok(Err(e)) => ApiError::unavailable(format!("the leader ({leader}) did not answer: {e}"))
            .into_response(),
        Err(_) => ApiError::unavailable(format!(
            "the leader ({leader}) did not answer within {FORWARD_WITHIN:?}"
        ))
        .into_response(),
    }
}

/// One claim attempt: ours, and this replica catches up and leads (true);
/// another's, and it follows that one.
pub async fn try_to_lead(app: &Arc<App>) -> Result<bool, LoadError> {
    match app.store.claim(&app.replica.advertise).await? {
        Claim::HeldBy(leader) => {
            // Our own URL: a predecessor of this replica (killed, restarted)
            // whose claim has not run out yet. Nobody to forward to.
            let leader = (leader != app.replica.advertise).then_some(leader);
            app.replica
                .role
                .send_if_modified(|role| replace(role, Role::Follower(leader)));
            Ok(false)
        }
        Claim::Ours => {
            // No other replica commits from here on (the claim fences them):
            // once the cloud holds the last commit, it holds every one.
            let last = committed(app.store.as_ref()).await?;
            app.replica
                .wait_applied(last)
                .await
                .map_err(LoadError::CatchUp)?;
            // A failure of an earlier reign concerned a cloud since reloaded.
            app.committer.reset().await;
            {
                let _cloud = app.cloud.write().unwrap_or_else(PoisonError::into_inner);
                app.replica.role.send_replace(Role::Leader);
            }
            tokio::spawn(hold(Arc::downgrade(app)));
            // Agents heartbeat to whichever replica they reach; the leader
            // hears them from now on.
            app.hosts.grace(Instant::now());
            tracing::info!(revision = last, "this replica leads");
            app.lead().await?;
            Ok(true)
        }
    }
}

fn replace(role: &mut Role, new: Role) -> bool {
    let changed = *role != new;
    *role = new;
    changed
}

/// While this replica leads: once its claim is gone (the store says so
/// before any other replica can win it) or a commit failed (its outcome
/// unknown, yet applied in memory), it steps down.
async fn hold(app: Weak<App>) {
    let Some((store, mut failed)) = app.upgrade().map(|a| (a.store.clone(), a.failed.clone()))
    else {
        return;
    };
    let why = tokio::select! {
        () = store.claim_lost() => "its claim on the store is gone",
        _ = failed.wait_for(Option::is_some) => "a commit failed",
    };
    if let Some(app) = app.upgrade() {
        step_down(&app, why);
    }
}

/// The leader becomes a follower at once, under the cloud's lock (so no
/// write applies after it). Its cloud may hold writes the store does not,
/// so it matches no revision until the follower reloads it from the store;
/// it campaigns again meanwhile (and leads only once caught up).
fn step_down(app: &Arc<App>, why: &str) {
    {
        let _cloud = app.cloud.write().unwrap_or_else(PoisonError::into_inner);
        if !app.replica.is_leader() {
            return;
        }
        app.replica.role.send_replace(Role::Follower(None));
        app.replica.applied.send_replace(0);
    }
    tracing::warn!(why, "this replica steps down");
    tokio::spawn(follow(Arc::downgrade(app), None));
    tokio::spawn(campaign(Arc::downgrade(app)));
}

/// A follower tries the claim until it wins it (its leader died or let go).
pub async fn campaign(app: Weak<App>) {
    loop {
        tokio::time::sleep(CAMPAIGN_EVERY).await;
        let Some(app) = app.upgrade() else { return };
        // Leading (a failure after winning leaves it so): the step-down
        // that ends this reign campaigns anew.
        if *app.stopping.borrow() || app.replica.is_leader() {
            return;
        }
        match try_to_lead(&app).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "claiming the store failed; trying again"),
        }
    }
}

/// A follower's cloud follows the store's watch from `from` until this
/// replica leads (its own writes are then in memory before they are in the
/// store). Without `from`, or if the watch breaks, it reloads from a fresh
/// read first.
pub async fn follow(app: Weak<App>, from: Option<Revision>) {
    let Some(mut role) = app.upgrade().map(|a| a.replica.role.subscribe()) else {
        return;
    };
    let mut at = from;
    loop {
        let Some(app_now) = app.upgrade() else { return };
        let from = match at.take() {
            Some(revision) => revision,
            None => match app_now.reload().await {
                Ok(Some(revision)) => revision,
                Ok(None) | Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "reloading the replica failed; retrying");
                    drop(app_now);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let store = app_now.store.clone();
        drop(app_now);
        match store.watch(KeyRange::Prefix(String::new()), from + 1).await {
            Ok(mut events) => {
                // Ends as soon as this replica leads, letting go of the store.
                while let Some(batch) = tokio::select! {
                    batch = events.next() => batch,
                    _ = role.wait_for(|r| *r == Role::Leader) => return,
                } {
                    let Some(app) = app.upgrade() else { return };
                    match batch {
                        Ok(batch) if !apply(&app, &batch) => return,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "store watch ended; reloading the replica");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "store watch refused; reloading the replica"),
        }
    }
}

/// Apply one revision's events to a follower's cloud and hosts; false once
/// this replica leads.
fn apply(app: &App, batch: &[Event]) -> bool {
    let mut cloud = app.cloud.write().unwrap_or_else(PoisonError::into_inner);
    if app.replica.is_leader() {
        return false;
    }
    for event in batch {
        replay(app, &mut cloud, event);
    }
    if let Some(event) = batch.first() {
        app.replica.applied.send_replace(event.kv.mod_revision);
    }
    true
}

fn replay(app: &App, cloud: &mut Cloud, event: &Event) {
    let key = event.kv.key.as_str();
    let value = (event.kind == EventKind::Put).then_some(event.kv.value.as_slice());
    if let Some(name) = key.strip_prefix(hosts::KEY_PREFIX) {
        match value.map(serde_json::from_slice::<StoredHost>).transpose() {
            Ok(stored) => app.hosts.replicate(name, stored, Instant::now()),
            Err(e) => tracing::error!(key, error = %e, "unreadable stored host skipped"),
        }
    } else if let Some((kind, id)) = Kind::of_key(key) {
        match value.map(serde_json::from_slice::<Resource>).transpose() {
            Ok(record) => cloud.replicate(kind, id, record),
            Err(e) => tracing::error!(key, error = %e, "unreadable stored record skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use store::embedded::EmbeddedStore;
    use store::{RangeResponse, Txn, TxnResponse, WatchStream};

    use super::*;
    use crate::state::read_all;

    /// The real embedded store, whose transactions fail while `fenced` is
    /// set, as a lost claim's do.
    struct Fenced {
        inner: EmbeddedStore,
        fenced: AtomicBool,
    }

    #[async_trait]
    impl Store for Fenced {
        async fn range(&self, range: KeyRange) -> Result<RangeResponse, StoreError> {
            self.inner.range(range).await
        }
        async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
            match self.fenced.load(Ordering::Relaxed) {
                true => Err(StoreError::ClaimLost("fenced by the test".into())),
                false => self.inner.txn(txn).await,
            }
        }
        async fn watch(&self, range: KeyRange, from: Revision) -> Result<WatchStream, StoreError> {
            self.inner.watch(range, from).await
        }
        async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
            self.inner.compact(revision).await
        }
    }

    /// A follower's app, served on loopback until the sender is dropped,
    /// and its URL.
    async fn served_follower(dir: &std::path::Path) -> (Arc<App>, String, watch::Sender<bool>) {
        let store = Arc::new(EmbeddedStore::open(dir).expect("open"));
        let app = App::load(
            store,
            model::CloudConfig::default(),
            "admin".into(),
            String::new(),
        )
        .await
        .expect("load");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let limits = crate::listen::Limits {
            header_read: Duration::from_secs(5),
            body_read: Duration::from_secs(5),
            max_body: 1 << 20,
            max_connections: 64,
            max_per_client: 64,
        };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(crate::listen::serve(
            listener,
            crate::router(app.clone(), None),
            limits,
            stopped,
        ));
        (app, url, stop)
    }

    /// During an election two replicas may each take the other for the
    /// leader: a write forwarded once is refused by the second (503 in
    /// Neutron's shape, at once), never sent back to the first.
    #[tokio::test]
    async fn a_forwarded_write_is_not_forwarded_again() {
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (a, url_a, _stop_a) = served_follower(dir_a.path()).await;
        let (b, url_b, _stop_b) = served_follower(dir_b.path()).await;
        a.replica.role.send_replace(Role::Follower(Some(url_b)));
        b.replica
            .role
            .send_replace(Role::Follower(Some(url_a.clone())));

        let request = hyper::Request::post(format!("{url_a}/v2.0/networks"))
            .header("content-type", "application/json")
            .header("x-project-id", "p")
            .body(Body::from(r#"{"network":{"name":"n"}}"#))
            .expect("request");
        let answered =
            tokio::time::timeout(Duration::from_secs(10), a.replica.client.request(request))
                .await
                .expect("answered, not bounced between the replicas")
                .expect("the replica answered");
        assert_eq!(
            answered.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        let body = axum::body::to_bytes(Body::new(answered.into_body()), 1 << 16)
            .await
            .expect("body");
        let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let message = error["NeutronError"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("no replica leads"), "{error}");
        for app in [&a, &b] {
            assert_eq!(
                app.read().networks().count(),
                0,
                "a refused write was applied"
            );
        }
    }

    async fn role_becomes(app: &App, leads: bool) {
        let mut role = app.replica.role.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            role.wait_for(|r| (*r == Role::Leader) == leads),
        )
        .await
        .expect("the role changed in time")
        .expect("the role is still kept");
    }

    /// A write applied in memory whose commit failed is not kept: the leader
    /// steps down, reloads from the store, and leads again, in one process.
    #[tokio::test]
    async fn a_leader_whose_commit_failed_steps_down_reloads_and_leads_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Fenced {
            inner: EmbeddedStore::open(dir.path()).expect("open"),
            fenced: AtomicBool::new(false),
        });
        let app = App::load(
            store.clone(),
            model::CloudConfig::default(),
            "admin".into(),
            String::new(),
        )
        .await
        .expect("load");
        app.start_background();
        let group = |project: &'static str| {
            move |c: &mut Cloud| {
                c.ensure_default_group(project, 0);
                Ok(())
            }
        };

        store.fenced.store(true, Ordering::Relaxed);
        let refused = app.write(group("lost")).await.expect_err("written");
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        role_becomes(&app, false).await;
        store.fenced.store(false, Ordering::Relaxed);
        role_becomes(&app, true).await;

        assert!(
            app.read().default_group_of("lost").is_none(),
            "a write the store never took is still applied"
        );
        app.write(group("kept"))
            .await
            .expect("a write after leading again");
        // What the store holds: the write after, not the one refused.
        let stored = read_all(store.as_ref(), model::CloudConfig::default())
            .await
            .expect("read the store");
        assert!(stored.cloud.default_group_of("kept").is_some());
        assert!(stored.cloud.default_group_of("lost").is_none());
    }
}
