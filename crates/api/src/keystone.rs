//! Keystone v3 as vnet's identity service: the server's own service token
//! (password method, project scoped, renewed before it expires) and the
//! validation of callers' tokens through the token cache. Speaks only the
//! Keystone wire protocol; it must not decide HTTP answers of the Neutron
//! API (that is `auth`'s job).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;

use crate::token_cache::{TokenCache, Validated};

/// How to reach Keystone and who the server is there.
#[derive(Clone)]
pub struct KeystoneConfig {
    /// Keystone's root, e.g. `http://keystone:5000` (a trailing `/v3` is accepted).
    pub url: String,
    pub user: String,
    pub password: String,
    pub project: String,
    pub user_domain: String,
    pub project_domain: String,
    /// The longest a validated token is trusted without asking Keystone
    /// again: a token revoked in Keystone keeps working here until then.
    pub cache_ttl: Duration,
    pub cache_capacity: usize,
}

impl std::fmt::Debug for KeystoneConfig {
    // By hand, so the password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("project", &self.project)
            .field("user_domain", &self.user_domain)
            .field("project_domain", &self.project_domain)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub project_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
}

/// A token's fate: Keystone vouches for it, or refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Identity),
    /// Unknown, expired, revoked, malformed or not scoped to a project.
    Invalid,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeystoneError {
    #[error("Keystone URL {0} is not http://HOST[:PORT][/PATH] (https is not supported yet)")]
    BadUrl(String),
    #[error("cannot build a request to Keystone: {0}")]
    Request(String),
    #[error("Keystone is unreachable: {0}")]
    Unreachable(String),
    #[error("Keystone did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Keystone refused the service credentials ({0})")]
    ServiceAuth(StatusCode),
    #[error("Keystone answered {status} to {what}")]
    Unexpected {
        what: &'static str,
        status: StatusCode,
    },
    #[error("Keystone's answer to {what} is unreadable: {detail}")]
    BadAnswer { what: &'static str, detail: String },
}

/// Counters of the work done for authentication, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Round trips to Keystone to validate a caller's token.
    pub validations: AtomicU64,
    /// Requests answered from the cache.
    pub cache_hits: AtomicU64,
    /// Service tokens obtained.
    pub service_tokens: AtomicU64,
}

struct ServiceToken {
    token: String,
    renew_at: Instant,
}

pub struct Keystone {
    config: KeystoneConfig,
    /// `url` without a trailing `/` or `/v3`.
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// One lock, held while a new service token is fetched, so concurrent
    /// requests never fetch two.
    service: tokio::sync::Mutex<Option<ServiceToken>>,
    cache: TokenCache<Verdict, KeystoneError>,
    pub counters: Counters,
}

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a token Keystone refused is refused without asking again: long
/// enough to absorb a client's retry storm, short enough to forgive a glitch.
const INVALID_TTL: Duration = Duration::from_secs(5);

/// The answer to a Keystone request: status, `X-Subject-Token`, body.
struct Answer {
    status: StatusCode,
    subject_token: Option<String>,
    body: Bytes,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenData,
}

#[derive(Deserialize)]
struct TokenData {
    expires_at: String,
    user: Option<Named>,
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    id: Option<String>,
    name: Option<String>,
}

/// A token body's identity and expiry (as wall-clock time).
fn parse_token(body: &[u8]) -> Result<(Verdict, SystemTime), String> {
    let t: TokenBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let t = t.token;
    let expires = humantime::parse_rfc3339(&t.expires_at)
        .map_err(|e| format!("expires_at {:?}: {e}", t.expires_at))?;
    // Neutron acts within a project: unscoped and domain-scoped tokens don't.
    let verdict = match t.project.and_then(|p| p.id).filter(|id| !id.is_empty()) {
        Some(project_id) => Verdict::Valid(Identity {
            project_id,
            user_id: t.user.and_then(|u| u.id).unwrap_or_default(),
            roles: t.roles.into_iter().filter_map(|r| r.name).collect(),
        }),
        None => Verdict::Invalid,
    };
    Ok((verdict, expires))
}

/// Wall-clock `at` as an `Instant` (in the past if `at` is).
fn instant_of(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

impl Keystone {
    pub fn new(config: KeystoneConfig) -> Result<Arc<Keystone>, KeystoneError> {
        let trimmed = config.url.trim_end_matches('/');
        let base = trimmed.strip_suffix("/v3").unwrap_or(trimmed).to_owned();
        match base.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
            _ => return Err(KeystoneError::BadUrl(config.url.clone())),
        }
        let http = Client::builder(TokioExecutor::new()).build_http();
        Ok(Arc::new(Keystone {
            cache: TokenCache::new(config.cache_capacity, config.cache_ttl),
            config,
            base,
            http,
            service: tokio::sync::Mutex::new(None),
            counters: Counters::default(),
        }))
    }

    /// Where clients authenticate, for `WWW-Authenticate: Keystone uri="..."`.
    pub fn www_authenticate_uri(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, KeystoneError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            // Only a header value could be refused: tokens come from header
            // values or from Keystone, so this would be a bug, not an outage.
            .map_err(|e| KeystoneError::Request(e.to_string()))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| KeystoneError::Unreachable(error_chain(&e)))?;
            let status = resp.status();
            let subject_token = resp
                .headers()
                .get("x-subject-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| KeystoneError::Unreachable(error_chain(&e)))?
                .to_bytes();
            Ok(Answer {
                status,
                subject_token,
                body,
            })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| KeystoneError::Timeout(TIMEOUT))?
    }

    /// The service token, fetched anew when missing or due for renewal.
    async fn service_token(&self) -> Result<String, KeystoneError> {
        let mut slot = self.service.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| Instant::now() < s.renew_at) {
            return Ok(s.token.clone());
        }
        let c = &self.config;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.user, "domain": {"name": c.user_domain}, "password": c.password}}},
            "scope": {"project": {"name": c.project, "domain": {"name": c.project_domain}}},
        }});
        let answer = self
            .call(
                Method::POST,
                "/v3/auth/tokens?nocatalog",
                &[],
                Some(body.to_string().into_bytes()),
            )
            .await?;
        match answer.status {
            StatusCode::CREATED | StatusCode::OK => {}
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) => {
                return Err(KeystoneError::ServiceAuth(s));
            }
            status => {
                return Err(KeystoneError::Unexpected {
                    what: "the service token request",
                    status,
                });
            }
        }
        let bad = |detail: String| KeystoneError::BadAnswer {
            what: "the service token request",
            detail,
        };
        let token = answer
            .subject_token
            .ok_or_else(|| bad("no X-Subject-Token".into()))?;
        let (_, expires) = parse_token(&answer.body).map_err(bad)?;
        // Renewed at three quarters of its life, so a token in use never
        // expires mid-request, however short Keystone makes them.
        let now = Instant::now();
        let life = instant_of(expires).saturating_duration_since(now);
        let renew_at = now + life * 3 / 4;
        self.counters.service_tokens.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            renew_in = ?life * 3 / 4,
            "keystone: obtained the service token"
        );
        *slot = Some(ServiceToken {
            token: token.clone(),
            renew_at,
        });
        Ok(token)
    }

    /// Forget the service token (Keystone refused it, e.g. revoked early).
    async fn drop_service_token(&self, token: &str) {
        let mut slot = self.service.lock().await;
        if slot.as_ref().is_some_and(|s| s.token == token) {
            *slot = None;
        }
    }

    /// Fetch the service token now, to report bad credentials at startup.
    pub async fn warm_up(&self) -> Result<(), KeystoneError> {
        self.service_token().await.map(|_| ())
    }

    /// Ask Keystone about `token`: one round trip (two if the service token
    /// had to be renewed first).
    async fn validate_remote(
        self: Arc<Self>,
        token: String,
    ) -> Result<Validated<Verdict>, KeystoneError> {
        for attempt in 0..2 {
            let service = self.service_token().await?;
            let n = self.counters.validations.fetch_add(1, Ordering::Relaxed) + 1;
            let answer = self
                .call(
                    Method::GET,
                    "/v3/auth/tokens?nocatalog",
                    &[("x-auth-token", &service), ("x-subject-token", &token)],
                    None,
                )
                .await?;
            tracing::debug!(validations = n, status = %answer.status, "keystone: validated a token");
            match answer.status {
                StatusCode::OK => {
                    let (verdict, expires) =
                        parse_token(&answer.body).map_err(|detail| KeystoneError::BadAnswer {
                            what: "a token validation",
                            detail,
                        })?;
                    return Ok(Validated {
                        outcome: verdict,
                        expires: Some(instant_of(expires)),
                    });
                }
                // Keystone's answers for a subject token it does not honour.
                // Remembered only briefly (keystonemiddleware not at all): a
                // fresh token can be refused by a Keystone node that lacks the
                // newest fernet key, and must not stay locked out for the TTL.
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                    return Ok(Validated {
                        outcome: Verdict::Invalid,
                        expires: Some(Instant::now() + INVALID_TTL),
                    });
                }
                // The service token itself was refused: renew it once.
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    self.drop_service_token(&service).await;
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(KeystoneError::ServiceAuth(answer.status));
                }
                status => {
                    return Err(KeystoneError::Unexpected {
                        what: "a token validation",
                        status,
                    });
                }
            }
        }
        Err(KeystoneError::ServiceAuth(StatusCode::UNAUTHORIZED))
    }

    /// The counters as one log line: how much validation the cache saved.
    pub fn log_counters(&self) {
        let c = &self.counters;
        tracing::info!(
            validations = c.validations.load(Ordering::Relaxed),
            cache_hits = c.cache_hits.load(Ordering::Relaxed),
            service_tokens = c.service_tokens.load(Ordering::Relaxed),
            "keystone: token validation counters"
        );
    }

    /// What Keystone says of `token`, from the cache when it can.
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<Verdict, KeystoneError> {
        let this = self.clone();
        let owned = token.to_owned();
        let mut missed = false;
        let verdict = self
            .cache
            .get(token, || {
                missed = true;
                this.validate_remote(owned)
            })
            .await;
        if !missed {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }
}

/// An error with its causes, for a log line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"token": {"methods": ["password"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "u1", "name": "alice"},
        "expires_at": "2026-11-21T13:54:14.000000Z", "issued_at": "2026-11-21T12:54:14.000000Z",
        "project": {"domain": {"id": "default", "name": "Default"}, "id": "p1", "name": "demo"},
        "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}]}}"#;

    #[test]
    fn a_project_token_gives_its_project_and_roles() {
        let (verdict, expires) = parse_token(BODY.as_bytes()).expect("parses");
        assert_eq!(
            verdict,
            Verdict::Valid(Identity {
                project_id: "p1".into(),
                user_id: "u1".into(),
                roles: vec!["member".into(), "reader".into()],
            })
        );
        assert_eq!(
            expires,
            humantime::parse_rfc3339("2026-11-21T13:54:14Z").expect("time")
        );
    }

    #[test]
    fn a_token_without_a_project_is_refused() {
        let body = r#"{"token": {"expires_at": "2026-11-21T13:54:14.000000Z",
            "user": {"id": "u1"}, "domain": {"id": "default"}, "roles": []}}"#;
        assert_eq!(
            parse_token(body.as_bytes()).expect("parses").0,
            Verdict::Invalid
        );
    }

    #[test]
    fn unreadable_bodies_are_errors() {
        assert!(parse_token(b"{}").is_err());
        assert!(parse_token(br#"{"token": {"expires_at": "tomorrow"}}"#).is_err());
    }

    #[test]
    fn the_url_must_be_plain_http() {
        let config = |url: &str| KeystoneConfig {
            url: url.into(),
            user: "u".into(),
            password: "p".into(),
            project: "service".into(),
            user_domain: "Default".into(),
            project_domain: "Default".into(),
            cache_ttl: Duration::from_secs(300),
            cache_capacity: 10,
        };
        let ks = Keystone::new(config("http://127.0.0.1:5000/v3/")).expect("http");
        assert_eq!(ks.www_authenticate_uri(), "http://127.0.0.1:5000");
        assert!(Keystone::new(config("https://keystone")).is_err());
        assert!(Keystone::new(config("keystone:5000")).is_err());
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let c = KeystoneConfig {
            url: "http://k".into(),
            user: "u".into(),
            password: "hunter2".into(),
            project: "service".into(),
            user_domain: "Default".into(),
            project_domain: "Default".into(),
            cache_ttl: Duration::from_secs(1),
            cache_capacity: 1,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
