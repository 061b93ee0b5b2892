//! Serving the API on a listener so that hostile or broken clients cannot
//! exhaust the server: a connection must send its request headers within a
//! timeout (also between requests on a kept-alive connection, so idle
//! connections close), a body must arrive within its own timeout and no
//! larger than the limit (a larger declared length is refused at once), and
//! connections are capped in total and per client address, below the
//! descriptor limit. It must not look into requests beyond their framing:
//! that is the routers'.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::ApiError;

/// What one listener allows.
#[derive(Clone, Debug)]
pub struct Limits {
    /// To send a request's headers, from the connection's start or the
    /// previous response: longer, and the connection is closed.
    pub header_read: Duration,
    /// To send a request's body once its headers are in.
    pub body_read: Duration,
    /// The largest body a request may have.
    pub max_body: usize,
    /// Open connections, in total and from one client address.
    pub max_connections: usize,
    pub max_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(30),
            body_read: Duration::from_secs(30),
            max_body: 2 << 20,
            max_connections: 4096,
            max_per_client: 512,
        }
    }
}

impl Limits {
    /// These limits with the total cap below `descriptors` (leaving room
    /// for the store, the agents' sockets and the log).
    pub fn within_descriptors(mut self, descriptors: u64) -> Self {
        let room = usize::try_from(descriptors.saturating_sub(64)).unwrap_or(usize::MAX);
        self.max_connections = self.max_connections.min(room.max(1));
        self.max_per_client = self.max_per_client.min(self.max_connections);
        self
    }
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// (idle clients must not starve the store and the agents of descriptors);
/// returns the soft limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Open connections, by client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    /// When a cap was last logged (once a second at most).
    logged: Option<Instant>,
}

/// One admitted connection; dropping it gives its place back.
struct Admitted {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, client: IpAddr, limits: &Limits) -> Option<Admitted> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    let mine = o.by_client.get(&client).copied().unwrap_or(0);
    let full = if o.total >= limits.max_connections {
        Some("connections")
    } else if mine >= limits.max_per_client {
        Some("connections from one client")
    } else {
        None
    };
    if let Some(what) = full {
        if o.logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            o.logged = Some(Instant::now());
            tracing::warn!(%client, total = o.total, "at the cap of open {what}: refusing connections");
        }
        return None;
    }
    o.total += 1;
    *o.by_client.entry(client).or_default() += 1;
    Some(Admitted {
        open: open.clone(),
        client,
    })
}

/// Serves `api` on `listener` until `stop` turns true; then stops
/// accepting, asks every connection to finish its request in flight, and
/// returns once they have.
pub async fn serve(
    listener: TcpListener,
    api: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let api = api.layer(axum::middleware::from_fn_with_state(
        limits.clone(),
        bounded_body,
    ));
    let open = Arc::new(Mutex::new(Open::default()));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (or a connection reset before accept):
                // back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = admit(&open, peer.ip(), &limits) else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(api.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read);
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _admitted = admitted;
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Until `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Refuses a declared body over the limit at once, and reads the body in
/// whole within the body timeout (the handlers take whole bodies anyway).
async fn bounded_body(
    axum::extract::State(limits): axum::extract::State<Limits>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large(limits.max_body);
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_body);
    let bytes = match tokio::time::timeout(limits.body_read, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return too_large(limits.max_body),
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "HTTPRequestTimeout",
                format!(
                    "The request body did not arrive within {} s.",
                    limits.body_read.as_secs()
                ),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn too_large(max: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "HTTPRequestEntityTooLarge",
        format!("Request body is larger than the limit of {max} bytes."),
    )
    .into_response()
}
