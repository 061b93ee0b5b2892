//! What every Neutron handler takes from a request: the caller, the query
//! pairs, `If-Match`, the base URL for links. No
//! handler and no resource lives here.

use axum::http::HeaderMap;
use model::Caller;

use crate::auth::noauth_caller;
use crate::error::ApiError;
use crate::state::App;

/// `http://host:port` as the client addressed us, for links.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9696");
    format!("http://{host}")
}

/// Who is asking. Nothing is written for a new project here: the write
/// that needs its default group makes it, in the same transaction (a
/// refused request and a read change nothing).
pub fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(noauth_caller(headers, &app.default_project))
}

pub fn query_pairs(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("The query string is malformed"))
}

/// `If-Match: revision_number=N`, as Neutron's revision-if-match extension
/// reads it: any integer, so a negative one is a mismatch (412), not a 400.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    text.strip_prefix("revision_number=")
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "If-Match header must be of the form revision_number=N, not '{text}'"
            ))
        })
}
