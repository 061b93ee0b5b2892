//! `/v2.0/agents`: vnet's hosts as Neutron agents, so `openstack network
//! agent list` shows each host's agent and whether it is alive, and `agent
//! set`/`delete` reach the host's record. All of it for admins only, as
//! Neutron's policy has it (a member lists none and finds none).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::body::{self, Attrs};
use super::query::ListQuery;
use super::request::{caller, query_pairs};
use crate::error::ApiError;
use crate::hosts::{self, HostEntry};
use crate::state::App;

const ATTRIBUTES: [&str; 14] = [
    "id",
    "agent_type",
    "binary",
    "host",
    "topic",
    "admin_state_up",
    "alive",
    "availability_zone",
    "configurations",
    "created_at",
    "started_at",
    "heartbeat_timestamp",
    "description",
    "resources_synced",
];

/// Agent ids are stable UUIDs derived from the host name.
fn agent_id(host: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("vnet-agent:{host}").as_bytes(),
    )
    .to_string()
}

/// Neutron's agent timestamps: `2026-11-21 08:29:38`.
fn agent_time(secs: i64) -> String {
    super::views::timestamp(secs)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

fn view(h: &HostEntry) -> Value {
    let r = &h.registration;
    json!({
        "id": agent_id(&r.name),
        "agent_type": "vnet agent",
        "binary": "vnet-agent",
        "host": r.name,
        "topic": "N/A",
        "admin_state_up": h.settings.admin_state_up,
        "alive": h.alive,
        "availability_zone": null,
        "configurations": {"underlay_ip": r.underlay_ip, "capabilities": r.capabilities,
                           "protocol_version": r.protocol_version,
                           "physical_networks": r.physical_networks, "gateway": r.gateway},
        "created_at": agent_time(h.started_at),
        "started_at": agent_time(h.started_at),
        "heartbeat_timestamp": agent_time(h.heartbeat_at),
        "description": h.settings.description,
        "resources_synced": null,
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "AgentNotFound",
        format!("Agent {id} could not be found."),
    )
}

pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    // Agents are for admins: Neutron's policy filters every one of them
    // out of a member's list.
    let is_admin = caller(&app, &headers)?.is_admin;
    let q = ListQuery::parse(query_pairs(raw)?, &ATTRIBUTES)?;
    let hosts = if is_admin {
        app.hosts.list()
    } else {
        Vec::new()
    };
    let views = hosts.iter().map(view).collect();
    Ok(Json(q.render_values(views, "/v2.0/agents", "agents")?))
}

pub async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    // A member is told no more than that there is no such agent.
    if !caller(&app, &headers)?.is_admin {
        return Err(not_found(&id));
    }
    app.hosts
        .list()
        .iter()
        .find(|h| agent_id(&h.registration.name) == id)
        .map(|h| Json(json!({ "agent": view(h) })))
        .ok_or_else(|| not_found(&id))
}

/// The host behind an agent id, for an admin; a member finds none.
fn host_of(app: &App, headers: &HeaderMap, id: &str) -> Result<String, ApiError> {
    if !caller(app, headers)?.is_admin {
        return Err(not_found(id));
    }
    app.hosts
        .list()
        .into_iter()
        .find(|h| agent_id(&h.registration.name) == id)
        .map(|h| h.registration.name)
        .ok_or_else(|| not_found(id))
}

/// `PUT /v2.0/agents/{id}`: an admin sets `admin_state_up` (false: the host
/// takes no routers' gateways) and `description`.
pub async fn update(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let host = host_of(&app, &headers, &id)?;
    let (mut maps, _) = body::resources(&body, "agent", "agents")?;
    let mut a = Attrs::new(maps.pop().unwrap_or_default(), "PUT");
    let admin_state_up = a.bool("admin_state_up")?;
    let description = a.string_or_null("description")?;
    a.finish(&ATTRIBUTES)?;
    let stored = app
        .hosts
        .configure(&host, |s| {
            if let Some(up) = admin_state_up {
                s.admin_state_up = up;
            }
            if let Some(d) = description {
                s.description = d;
            }
        })
        .ok_or_else(|| not_found(&id))?;
    let value = serde_json::to_vec(&stored).map_err(|e| ApiError::bad_request(e.to_string()))?;
    app.write_raw(vec![(hosts::key(&host), Some(value))])
        .await?;
    let entry = app.hosts.get(&host).ok_or_else(|| not_found(&id))?;
    Ok(Json(json!({ "agent": view(&entry) })))
}

/// `DELETE /v2.0/agents/{id}`: forget the host, as Neutron forgets an agent.
/// Its routers' gateways move; an agent still running registers again with
/// its next heartbeat.
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let host = host_of(&app, &headers, &id)?;
    app.hosts.forget(&host);
    app.write_raw(vec![(hosts::key(&host), None)]).await?;
    Ok(StatusCode::NO_CONTENT)
}
