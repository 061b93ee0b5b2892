//! vnet's own API, `/vnet/v1`: what agents call (host registration and
//! heartbeat, port status reports, the desired-state stream) and what
//! operators read (hosts and their liveness), admin only; and the packet
//! trace (`packet_trace`), which any project may run on its own ports. Errors keep
//! Neutron's shape so every client parses one kind of error.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use compiler::protocol::{
    HostRegistration, PROTOCOL_VERSION, PortStatusReport, Revision, StreamMessage,
};

use crate::fabric::{Fabric, Next};
use serde_json::{Value, json};

use crate::auth::noauth_caller;
use crate::error::ApiError;
use crate::hosts::{self, HostEntry};
use crate::neutron::timestamp;
use crate::state::{App, now};

/// The agents' (and operators') API: hosts, their reports and state streams.
/// With `agent_token`, a request without it is refused before any handler.
pub fn agent_router(app: Arc<App>, agent_token: Option<&str>) -> Router {
    let router = Router::new()
        .route("/vnet/v1/hosts", get(list_hosts))
        .route("/vnet/v1/hosts/{name}", get(show_host).put(register))
        .route("/vnet/v1/hosts/{name}/ports", put(report_ports))
        .route("/vnet/v1/hosts/{name}/state", get(state_stream))
        .route("/vnet/v1/replica", get(show_replica))
        .with_state(app);
    match agent_token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_agent_token,
        )),
        None => router,
    }
}

/// What tenants call beside Neutron: `POST /vnet/v1/trace`.
pub fn tenant_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/vnet/v1/trace", post(crate::packet_trace::trace_packet))
        .with_state(app)
}

async fn require_agent_token(
    axum::extract::State(token): axum::extract::State<Arc<str>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let given = request
        .headers()
        .get(compiler::protocol::AGENT_TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if same_secret(given, token.as_bytes()) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "The agent API needs the agent token (X-Vnet-Agent-Token)",
        )
        .into_response()
    }
}

/// Equal secrets, compared in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn require_admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if noauth_caller(headers, &app.default_project).is_admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "PolicyNotAuthorized",
            "/vnet/v1 is for agents and operators (admin only)",
        ))
    }
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("Body contains invalid data: {e}")))
}

pub fn host_view(h: &HostEntry) -> Value {
    json!({
        "name": h.registration.name,
        "underlay_ip": h.registration.underlay_ip,
        "capabilities": h.registration.capabilities,
        "physical_networks": h.registration.physical_networks,
        "gateway": h.registration.gateway,
        "alive": h.alive,
        "started_at": timestamp(h.started_at),
        "heartbeat_at": timestamp(h.heartbeat_at),
    })
}

async fn list_hosts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    let hosts: Vec<Value> = app.hosts.list().iter().map(host_view).collect();
    Ok(Json(json!({ "hosts": hosts })))
}

async fn show_host(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    let host = app.hosts.get(&name).ok_or_else(|| host_not_found(&name))?;
    Ok(Json(json!({ "host": host_view(&host) })))
}

/// Whether this server leads its store's replicas, and whom it follows.
async fn show_replica(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    Ok(Json(app.replica.view()))
}

fn host_not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "HostNotFound",
        format!("Host {name} could not be found."),
    )
}

/// Registration and heartbeat in one: an agent PUTs its registration every
/// `HEARTBEAT_SECONDS`. It is persisted only when new or changed.
async fn register(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    let registration: HostRegistration = json_body(&body)?;
    if registration.name != name {
        return Err(ApiError::bad_request(format!(
            "the body names host '{}' but the URL '{name}'",
            registration.name
        )));
    }
    if registration.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ProtocolVersionMismatch",
            format!(
                "agent speaks protocol {}, this server {PROTOCOL_VERSION}",
                registration.protocol_version
            ),
        ));
    }
    if name.is_empty() || name.len() > 255 || name.contains('/') {
        return Err(ApiError::bad_request(
            "a host name is 1 to 255 characters, no '/'",
        ));
    }
    let stored = hosts::StoredHost {
        registration: registration.clone(),
        dead: false,
        settings: app.hosts.get(&name).map(|h| h.settings).unwrap_or_default(),
    };
    let value = serde_json::to_vec(&stored).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let beat = app.hosts.heartbeat(registration, now(), Instant::now());
    if beat.persist {
        app.write_raw(vec![(hosts::key(&name), Some(value))])
            .await?;
        tracing::info!(host = %name, "host registered");
    }
    let host = app.hosts.get(&name).ok_or_else(|| host_not_found(&name))?;
    Ok(Json(json!({ "host": host_view(&host) })))
}

/// An agent's account of which of its ports are wired: those become ACTIVE,
/// the host's other bound ports DOWN.
async fn report_ports(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    let report: PortStatusReport = json_body(&body)?;
    if !app.hosts.get(&name).is_some_and(|h| h.alive) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "HostNotAlive",
            format!("host {name} must register (heartbeat) before reporting ports"),
        ));
    }
    let wired: BTreeSet<String> = report.wired.into_iter().collect();
    let now = now();
    let changed = app
        .write(|cloud| Ok(cloud.report_port_status(&name, &wired, now)))
        .await?;
    Ok(Json(json!({ "changed": changed })))
}

/// How often an otherwise quiet stream says it is still there.
const IDLE_EVERY: Duration = Duration::from_secs(10);

/// `GET /vnet/v1/hosts/{name}/state[?revision=R]`: the host's desired state
/// as newline-delimited JSON: a snapshot (or the deltas after R), then a
/// delta for every revision that changes this host, and `idle` messages in
/// between. It ends when the stream falls too far behind, or the server
/// stops; the agent then reconnects with its last revision.
async fn state_stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    require_admin(&app, &headers)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("The query string is malformed"))?;
    let from = match pairs.iter().find(|(k, _)| k == "revision") {
        None => None,
        Some((_, v)) => Some(v.parse::<Revision>().map_err(|_| {
            ApiError::bad_request(format!("revision must be an integer, not '{v}'"))
        })?),
    };
    let (first, feed) = app.fabric.open(&name, from);
    let seen = first.last().map_or(0, revision_of);
    let stream = StateStream {
        stop: app.stopping.subscribe(),
        fabric: app.fabric.clone(),
        host: name,
        pending: first.into(),
        feed,
        seen,
        idle: tokio::time::interval_at(tokio::time::Instant::now() + IDLE_EVERY, IDLE_EVERY),
    };
    let body = Body::from_stream(futures::stream::unfold(stream, StateStream::next_line));
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn revision_of(message: &StreamMessage) -> Revision {
    match message {
        StreamMessage::Snapshot { revision, .. }
        | StreamMessage::Delta { revision, .. }
        | StreamMessage::Idle { revision } => *revision,
    }
}

struct StateStream {
    /// The server is stopping: end the stream, so that the connection (and
    /// the graceful shutdown waiting for it) can finish.
    stop: tokio::sync::watch::Receiver<bool>,
    fabric: Arc<Fabric>,
    host: String,
    pending: VecDeque<StreamMessage>,
    /// Changes when the host's log has a newer revision; closed when the
    /// fabric is rebuilt.
    feed: tokio::sync::watch::Receiver<Revision>,
    /// Everything of the host's log up to here is queued or sent: an idle
    /// message never claims a revision whose delta is still to come.
    seen: Revision,
    idle: tokio::time::Interval,
}

impl StateStream {
    async fn next_line(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                let mut line = serde_json::to_vec(&message).unwrap_or_default();
                line.push(b'\n');
                return Some((Ok(Bytes::from(line)), self));
            }
            let idle = tokio::select! {
                _ = self.stop.wait_for(|stopping| *stopping) => return None,
                changed = self.feed.changed() => {
                    // The fabric was rebuilt: end, and let the agent resume.
                    changed.ok()?;
                    false
                }
                _ = self.idle.tick() => true,
            };
            self.take_next(idle)?;
        }
    }

    /// Queue what the host's log has after `seen`, or (`idle`) say that
    /// nothing has; `None` when the stream fell too far behind: end, and let
    /// the agent resume from its last revision.
    fn take_next(&mut self, idle: bool) -> Option<()> {
        match self.fabric.next(&self.host, self.seen) {
            Next::Deltas(deltas) => {
                self.seen = deltas.last().map_or(self.seen, revision_of);
                self.pending.extend(deltas);
            }
            Next::UpToDate(revision) if idle => {
                self.seen = revision;
                self.pending.push_back(StreamMessage::Idle { revision });
            }
            Next::UpToDate(_) => {}
            Next::Lost => return None,
        }
        Some(())
    }
}

/// Every second, on the leader: hosts whose agent went silent are dead, and
/// their ports DOWN.
/// Holds the app weakly so that it ends with the server.
pub async fn reap_dead_hosts(app: Weak<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        if *app.stopping.borrow() {
            return;
        }
        // Heartbeats reach the leader only (followers forward them).
        if !app.replica.is_leader() {
            continue;
        }
        for dead in app.hosts.reap(Instant::now()) {
            let host = dead.registration.name.clone();
            tracing::warn!(host = %host, "host missed its heartbeats: its ports go DOWN");
            // Stored, so that the compiler moves its routers' gateways.
            match serde_json::to_vec(&dead) {
                Ok(value) => {
                    if let Err(e) = app.write_raw(vec![(hosts::key(&host), Some(value))]).await {
                        tracing::error!(host = %host, error = %e, "storing a dead host failed");
                    }
                }
                Err(e) => tracing::error!(host = %host, error = %e, "encoding a dead host failed"),
            }
            let now = now();
            let nothing = BTreeSet::new();
            if let Err(e) = app
                .write(|cloud| Ok(cloud.report_port_status(&host, &nothing, now)))
                .await
            {
                tracing::error!(host = %host, error = %e, "marking a dead host's ports DOWN failed");
            }
        }
    }
}
