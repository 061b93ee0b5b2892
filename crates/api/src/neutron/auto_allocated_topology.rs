//! `/v2.0/auto-allocated-topology/{project}` (Neutron's
//! auto-allocated-topology, "get me a network"): GET makes the project's
//! topology if it has none and answers its network; `?fields=dry-run` only
//! checks that it could; DELETE removes it. What is made is the model's.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use model::Allocated;
use serde_json::{Value, json};

use super::request::{caller, query_pairs};
use crate::error::ApiError;
use crate::state::{App, now};

/// The project in the path; clients with no project send `None`, which is
/// the caller's, as Neutron reads it.
fn project(path: &str) -> Option<&str> {
    (path != "None" && !path.is_empty()).then_some(path)
}

pub async fn show(
    State(app): State<Arc<App>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    let mut dry_run = false;
    for (key, value) in query_pairs(raw)? {
        match (key.as_str(), value.as_str()) {
            ("fields", "dry-run") => dry_run = true,
            _ => {
                return Err(ApiError::bad_request(
                    "Bad auto_allocate request: Unrecognized field",
                ));
            }
        }
    }
    let now = now();
    let (project, allocated) = app
        .write(|cloud| cloud.auto_allocate(&caller, project(&path), dry_run, now))
        .await?;
    let id = match allocated {
        Allocated::Network(id) => id,
        // What the CLI looks for to print "Dry-run: pass".
        Allocated::DryRunPassed => "dry-run=pass".to_owned(),
    };
    Ok(Json(json!({
        "auto_allocated_topology": {"id": id, "tenant_id": project, "project_id": project}
    })))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = caller(&app, &headers)?;
    let now = now();
    app.write(|cloud| cloud.delete_auto_allocated(&caller, project(&path), now))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
