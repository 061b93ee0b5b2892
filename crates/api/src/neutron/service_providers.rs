//! `GET /v2.0/service-providers` (the `service-type` extension): the one
//! provider of each service vnet has. Read-only; vnet has no flavors to
//! choose among providers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::query::ListQuery;
use super::request::{caller, query_pairs};
use crate::error::ApiError;
use crate::state::App;

const ATTRIBUTES: [&str; 3] = ["service_type", "name", "default"];

pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers)?;
    let q = ListQuery::parse(query_pairs(raw)?, &ATTRIBUTES)?;
    // Routers (with NAT) are vnet's own distributed ones.
    let providers = vec![json!({"service_type": "L3_ROUTER_NAT", "name": "vnet", "default": true})];
    Ok(Json(q.render_values(
        providers,
        "/v2.0/service-providers",
        "service_providers",
    )?))
}
