//! Availability zones (Neutron's `availability_zone`, `network_availability_zone`,
//! `router_availability_zone`, `availability_zone_filter`): the zones hosts
//! register in. Every host serves its networks (DHCP is local), so each host's
//! zone is a network zone; gateway hosts' zones are router zones. A network's
//! zones are those of the hosts that carry it, a router's that of its gateway
//! host: both as the compiler placed them. Zone hints must name a zone there is.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::query::ListQuery;
use super::request::{caller, query_pairs};
use crate::error::ApiError;
use crate::state::App;

/// What a zone offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Network,
    Router,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Resource::Network => "network",
            Resource::Router => "router",
        }
    }
}

/// Each zone and what it offers, available while some host of it that
/// offers that is alive.
fn zones(app: &App) -> BTreeMap<(String, Resource), bool> {
    let mut zones = BTreeMap::new();
    for h in app.hosts.list() {
        let r = &h.registration;
        let mut offers = vec![Resource::Network];
        if r.gateway && h.settings.admin_state_up {
            offers.push(Resource::Router);
        }
        for resource in offers {
            *zones
                .entry((r.availability_zone.clone(), resource))
                .or_insert(false) |= h.alive;
        }
    }
    zones
}

/// Every hint must name a zone that offers `resource`, as Neutron checks it.
pub fn check_hints(app: &App, hints: &[String], resource: Resource) -> Result<(), ApiError> {
    // Most creates name no zone: they cost no walk over the hosts.
    if hints.is_empty() {
        return Ok(());
    }
    let known = zones(app);
    match hints
        .iter()
        .find(|z| !known.contains_key(&((*z).clone(), resource)))
    {
        None => Ok(()),
        Some(zone) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "AvailabilityZoneNotFound",
            format!("AvailabilityZone {zone} could not be found."),
        )),
    }
}

/// A network's zones: those of the hosts that carry it.
pub fn network_zones(app: &App, network_id: &str) -> Value {
    let hosts: Vec<String> = app.fabric.read(|c| {
        c.carriers_of(network_id)
            .into_iter()
            .map(str::to_owned)
            .collect()
    });
    json!(app.hosts.zones_of(hosts.iter().map(String::as_str)))
}

/// A router's zones: that of its gateway host, if it has one.
pub fn router_zones(app: &App, router_id: &str) -> Value {
    let host = app
        .fabric
        .read(|c| c.gateway_host_of(router_id).map(str::to_owned));
    json!(app.hosts.zones_of(host.as_deref()))
}

/// `GET /v2.0/availability_zones`, filtered by name, resource or state.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers)?;
    let q = ListQuery::parse(query_pairs(raw)?, &["name", "resource", "state"])?;
    let views = zones(&app)
        .into_iter()
        .map(|((name, resource), available)| {
            json!({
                "name": name,
                "resource": resource.as_str(),
                "state": if available { "available" } else { "unavailable" },
            })
        })
        .collect();
    Ok(Json(q.render_values(
        views,
        "/v2.0/availability_zones",
        "availability_zones",
    )?))
}
