//! Who is calling. The handlers read the caller from `X-Project-Id` (or
//! `X-Tenant-Id`) and `X-Roles`, as Neutron does behind keystonemiddleware.
//! In `noauth` mode (development only) the client sets them, and a request
//! with no project acts as admin of the configured default project. In
//! `keystone` mode the `keystone` layer below validates `X-Auth-Token` and
//! overwrites them from the token, so a client cannot choose its project.
//! This module must not talk to Keystone itself (that is `keystone.rs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model::Caller;

use crate::error::ApiError;
use crate::keystone::{Keystone, KeystoneError, Verdict};

/// Identity headers a client must never supply itself in keystone mode
/// (keystonemiddleware removes the same ones before setting them).
const IDENTITY_HEADERS: &[&str] = &[
    "x-project-id",
    "x-tenant-id",
    "x-roles",
    "x-user-id",
    "x-identity-status",
];

const MAX_TOKEN_LEN: usize = 8192;

/// The Neutron API behind Keystone: every request but version discovery
/// (`GET /`, unauthenticated in Neutron too) needs a valid `X-Auth-Token`.
pub async fn keystone(
    State(keystone): State<Arc<Keystone>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/" {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    // Real tokens are a few hundred bytes (fernet) to a few KiB (JWS); the
    // cap bounds what a flood of junk tokens can pin in the cache.
    let Some(token) = token.filter(|t| t.len() <= MAX_TOKEN_LEN) else {
        return unauthorized(&keystone);
    };
    let identity = match keystone.verify(&token).await {
        Ok(Verdict::Valid(identity)) => identity,
        Ok(Verdict::Invalid) => return unauthorized(&keystone),
        Err(e) => return unavailable(&e),
    };
    let headers = request.headers_mut();
    for name in IDENTITY_HEADERS {
        headers.remove(*name);
    }
    // Keystone ids and role names are ASCII; anything else is refused rather
    // than passed on altered.
    let (Ok(project), Ok(roles), Ok(user)) = (
        HeaderValue::from_str(&identity.project_id),
        HeaderValue::from_str(&identity.roles.join(",")),
        HeaderValue::from_str(&identity.user_id),
    ) else {
        return unauthorized(&keystone);
    };
    headers.insert("x-project-id", project);
    headers.insert("x-roles", roles);
    headers.insert("x-user-id", user);
    next.run(request).await
}

/// keystonemiddleware's refusal: its JSON body, and where to get a token.
fn unauthorized(keystone: &Keystone) -> Response {
    let body = serde_json::json!({"error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }});
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    let uri = format!("Keystone uri=\"{}\"", keystone.www_authenticate_uri());
    if let Ok(value) = HeaderValue::from_str(&uri) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Keystone could not be asked: the token may well be valid, so this is a
/// 503 (try again), never a 401 (get a new token).
fn unavailable(e: &KeystoneError) -> Response {
    tracing::error!(error = %e, "keystone: unable to validate a token");
    ApiError::unavailable("The Keystone service is temporarily unavailable.").into_response()
}

/// Longest project id (Neutron's column; Keystone's are 64 hex digits).
const MAX_PROJECT_ID_LEN: usize = 255;

/// Refuses a request whose identity headers are present but unusable: a
/// project id that is blank, too long, or not printable ASCII without
/// spaces, or roles that are not ASCII. Without this, [`noauth_caller`]
/// would read such a header as absent, which makes the caller the default
/// project's admin. Runs after the `keystone` layer, which sets them.
pub async fn identity_headers(request: Request, next: Next) -> Response {
    let headers = request.headers();
    for name in ["x-project-id", "x-tenant-id"] {
        let Some(value) = headers.get(name) else {
            continue;
        };
        let usable = value.to_str().ok().filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_PROJECT_ID_LEN
                && v.bytes().all(|b| b.is_ascii_graphic())
        });
        if usable.is_none() {
            return ApiError::bad_request(format!(
                "{name} must be a project id: 1 to {MAX_PROJECT_ID_LEN} printable ASCII characters without spaces"
            ))
            .into_response();
        }
    }
    if headers.get("x-roles").is_some_and(|v| v.to_str().is_err()) {
        return ApiError::bad_request("x-roles must be ASCII role names, comma-separated")
            .into_response();
    }
    next.run(request).await
}

pub fn noauth_caller(headers: &HeaderMap, default_project: &str) -> Caller {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match header("x-project-id").or_else(|| header("x-tenant-id")) {
        Some(project) => Caller {
            project_id: project.to_owned(),
            is_admin: header("x-roles").is_some_and(|roles| {
                roles
                    .split(',')
                    .any(|r| r.trim().eq_ignore_ascii_case("admin"))
            }),
        },
        None => Caller {
            project_id: default_project.to_owned(),
            is_admin: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_header_scopes_and_roles_grant_admin() {
        let mut h = HeaderMap::new();
        assert_eq!(
            noauth_caller(&h, "admin"),
            Caller {
                project_id: "admin".into(),
                is_admin: true
            }
        );
        h.insert("X-Tenant-Id", "t1".parse().unwrap());
        assert_eq!(
            noauth_caller(&h, "admin"),
            Caller {
                project_id: "t1".into(),
                is_admin: false
            }
        );
        h.insert("X-Project-Id", "p1".parse().unwrap());
        h.insert("X-Roles", "member, Admin".parse().unwrap());
        assert_eq!(
            noauth_caller(&h, "admin"),
            Caller {
                project_id: "p1".into(),
                is_admin: true
            }
        );
    }
}
