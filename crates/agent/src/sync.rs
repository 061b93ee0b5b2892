//! The agent's side of the protocol over HTTP: registration/heartbeat, port
//! status reports, and the desired-state stream (newline-delimited JSON:
//! a snapshot, then deltas), to whichever of the server's replicas answers.
//! Knows nothing of the kernel.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use compiler::protocol::{HostRegistration, PortStatusReport, Revision, StreamMessage};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

/// Longest a registration or report may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a connection to one replica may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The first pause before trying the server again, and the longest: a
/// server restarted under its agents is back within this cap of answering,
/// not after a pause that kept doubling while it loaded its store.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// The pauses between tries at the server after a failure: doubling from
/// [`RETRY_FIRST`] to [`RETRY_MAX`], each drawn between half and the whole
/// of it, so that the thousand agents of a cloud that lost their server at
/// the same instant do not come back in lock-step.
#[derive(Debug)]
pub struct Backoff {
    pause: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { pause: RETRY_FIRST }
    }
}

impl Backoff {
    /// The server answered: the next failure starts over from the first pause.
    pub fn reset(&mut self) {
        self.pause = RETRY_FIRST;
    }

    /// Sleep the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    fn next_pause(&mut self) -> Duration {
        let full = self.pause;
        self.pause = (full * 2).min(RETRY_MAX);
        let full_us = u64::try_from(full.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::random_range(full_us / 2..=full_us))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("server URL '{0}' is not http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach the server at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with the server failed")]
    Http(#[from] hyper::Error),
    #[error("the server answered {status} to {what}: {body}")]
    Status {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("the server sent a message this agent cannot read")]
    Decode(#[from] serde_json::Error),
    #[error("building a request failed")]
    Request(#[from] hyper::http::Error),
}

/// Where the server is: one or more replicas of it, any of which serves an
/// agent (revisions are the same on all, so a stream resumes on another).
#[derive(Clone, Debug)]
pub struct Server {
    authorities: Arc<[String]>,
    /// The replica that answered last, tried first (shared by the clones:
    /// the heartbeat, the reports and the stream move together).
    current: Arc<AtomicUsize>,
    token: Option<String>,
    /// The address connections come from, when not the kernel's choice.
    local_address: Option<IpAddr>,
}

impl Server {
    /// `http://127.0.0.1:9696` (a trailing slash is fine), or several such
    /// URLs separated by commas: the replicas, tried in turn when one does
    /// not accept a connection.
    pub fn parse(urls: &str) -> Result<Server, SyncError> {
        let authorities = urls
            .split(',')
            .map(|url| {
                url.trim()
                    .strip_prefix("http://")
                    .map(|rest| rest.trim_end_matches('/'))
                    .filter(|a| !a.is_empty() && !a.contains('/'))
                    .map(str::to_owned)
                    .ok_or_else(|| SyncError::BadUrl(url.to_owned()))
            })
            .collect::<Result<Arc<[String]>, _>>()?;
        Ok(Server {
            authorities,
            current: Arc::new(AtomicUsize::new(0)),
            token: None,
            local_address: None,
        })
    }

    /// Send `token` with every request, as the server's agent API requires.
    pub fn with_token(self, token: Option<String>) -> Server {
        Server { token, ..self }
    }

    /// Connect from `address` (a host of its own, as the scale bench's
    /// simulated hosts are: the server caps connections per client address).
    pub fn with_local_address(self, address: IpAddr) -> Server {
        Server {
            local_address: Some(address),
            ..self
        }
    }

    async fn connect(&self, authority: &str) -> std::io::Result<TcpStream> {
        let Some(local) = self.local_address else {
            return TcpStream::connect(authority).await;
        };
        let remote = tokio::net::lookup_host(authority)
            .await?
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or_else(|| {
                std::io::Error::other("no server address of the local address's family")
            })?;
        let socket = if local.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind((local, 0).into())?;
        socket.connect(remote).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, SyncError> {
        let (stream, authority) = self.connect_any().await?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(compiler::protocol::AGENT_TOKEN_HEADER, token);
        }
        let request = request.body(Full::new(body))?;
        Ok(sender.send_request(request).await?)
    }

    /// A connection to the replica that answered last, or else to the next
    /// one that accepts; the error of the last one tried when none does.
    async fn connect_any(&self) -> Result<(TcpStream, &str), SyncError> {
        let count = self.authorities.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut failed = None;
        for i in 0..count {
            let at = (first + i) % count;
            let authority = self.authorities[at].as_str();
            let source = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect(authority)).await
            {
                Ok(Ok(stream)) => {
                    if at != first {
                        self.current.store(at, Ordering::Relaxed);
                        tracing::info!(server = authority, "moved to another server replica");
                    }
                    return Ok((stream, authority));
                }
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                ),
            };
            failed = Some(SyncError::Connect {
                addr: authority.to_owned(),
                source,
            });
        }
        Err(failed.unwrap_or_else(|| SyncError::BadUrl(String::new())))
    }

    async fn put_json(
        &self,
        what: &'static str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(), SyncError> {
        let exchange = async {
            let response = self.send(Method::PUT, path, body.into()).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if status != StatusCode::OK {
                return Err(SyncError::Status {
                    what,
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
            Ok(())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SyncError::Timeout(what))?
    }

    /// Register this host, or renew its heartbeat.
    pub async fn register(&self, registration: &HostRegistration) -> Result<(), SyncError> {
        let path = format!("/vnet/v1/hosts/{}", registration.name);
        self.put_json("the registration", &path, serde_json::to_vec(registration)?)
            .await
    }

    /// Say which local ports are wired.
    pub async fn report_ports(
        &self,
        host: &str,
        report: &PortStatusReport,
    ) -> Result<(), SyncError> {
        let path = format!("/vnet/v1/hosts/{host}/ports");
        self.put_json("the port report", &path, serde_json::to_vec(report)?)
            .await
    }

    /// Open the desired-state stream of `host`, resuming after `revision` if
    /// given (the server sends a snapshot when it cannot resume from there).
    pub async fn stream(
        &self,
        host: &str,
        revision: Option<Revision>,
    ) -> Result<StateStream, SyncError> {
        let path = match revision {
            Some(r) => format!("/vnet/v1/hosts/{host}/state?revision={r}"),
            None => format!("/vnet/v1/hosts/{host}/state"),
        };
        let response =
            tokio::time::timeout(REQUEST_TIMEOUT, self.send(Method::GET, &path, Bytes::new()))
                .await
                .map_err(|_| SyncError::Timeout("opening the state stream"))??;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.into_body().collect().await?.to_bytes();
            return Err(SyncError::Status {
                what: "the state stream",
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(StateStream {
            body: response.into_body(),
            buffer: BytesMut::new(),
            bytes_read: 0,
        })
    }
}

/// The messages of one state stream, in order.
pub struct StateStream {
    body: Incoming,
    buffer: BytesMut,
    bytes_read: u64,
}

impl StateStream {
    /// Bytes of the stream's body received so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next message; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<StreamMessage>, SyncError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = &line[..end];
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(serde_json::from_slice(line)?));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.bytes_read += data.len() as u64;
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_cap_with_jitter_and_start_over_on_reset() {
        let mut backoff = Backoff::default();
        let pauses: Vec<Duration> = (0..40).map(|_| backoff.next_pause()).collect();
        assert!(pauses[0] <= RETRY_FIRST && pauses[0] >= RETRY_FIRST / 2);
        assert!(
            pauses
                .iter()
                .all(|p| *p >= RETRY_FIRST / 2 && *p <= RETRY_MAX)
        );
        // Capped from the fourth try on (100, 200, 400, then 500 ms).
        assert!(pauses[3..].iter().all(|p| *p >= RETRY_MAX / 2));
        // Drawn, not fixed: 37 capped pauses in microseconds are not all one.
        let capped: std::collections::BTreeSet<&Duration> = pauses[3..].iter().collect();
        assert!(capped.len() > 1, "{pauses:?}");
        backoff.reset();
        assert!(backoff.next_pause() <= RETRY_FIRST);
    }
}
