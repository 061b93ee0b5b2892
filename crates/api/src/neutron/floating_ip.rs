//! `/v2.0/floatingips`: a floating IP's attributes in, its view out, and its
//! port forwardings (`/floatingips/{id}/port_forwardings[/{pf}]`). The rules
//! are the model's.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use model::{
    Caller, Cloud, Facet, FloatingIp, FloatingIpCreate, FloatingIpUpdate, Kind, ModelError,
    PortForwarding, PortForwardingRequest, PortStatus, Stored, Timestamp,
};
use serde_json::{Value, json};

use super::body::{self, Attrs, invalid, read_only};
use super::collection::{Action, Call, Collection, standard_facet};
use super::request::caller;
use crate::error::ApiError;
use crate::state::{App, now};

impl Collection for FloatingIp {
    const PATH: &'static str = "floatingips";
    const SINGULAR: &'static str = "floatingip";
    const PLURAL: &'static str = "floatingips";
    const ATTRIBUTES: &'static [&'static str] = &[
        "floating_ip_address",
        "floating_network_id",
        "router_id",
        "port_id",
        "fixed_ip_address",
        "status",
        "port_details",
        "port_forwardings",
    ];
    /// Floating IPs have no `name`.
    const NAMED: bool = false;
    type Create = FloatingIpCreate;
    type Update = FloatingIpUpdate;

    fn parse_create(mut a: Attrs) -> Result<FloatingIpCreate, ApiError> {
        let floating_network_id = a.required("floating_network_id", Attrs::string)?;
        let req = FloatingIpCreate {
            project_id: a.project()?,
            tags: a.string_list("tags")?,
            description: a.string_or_null("description")?,
            floating_network_id,
            subnet_id: a.nullable_string("subnet_id")?,
            floating_ip_address: a.nullable_ip("floating_ip_address")?.flatten(),
            port_id: a.nullable_string("port_id")?,
            fixed_ip_address: a.nullable_ip("fixed_ip_address")?.flatten(),
        };
        a.finish(&read_only(&[
            "status",
            "router_id",
            "port_details",
            "port_forwardings",
        ]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<FloatingIpUpdate, ApiError> {
        let req = FloatingIpUpdate {
            description: a.string_or_null("description")?,
            port_id: a.nullable_id("port_id")?,
            fixed_ip_address: a.nullable_ip("fixed_ip_address")?.flatten(),
        };
        a.finish(&read_only(&[
            "status",
            "router_id",
            "port_details",
            "port_forwardings",
            "floating_network_id",
            "floating_ip_address",
            "subnet_id",
            "project_id",
            "tenant_id",
        ]))?;
        Ok(req)
    }

    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError> {
        Ok(match action {
            Action::Create(req) => Some(cloud.create_floating_ip(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_floating_ip(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_floating_ip(caller, &id).map(|()| None)?,
        })
    }

    async fn call(app: Arc<App>, headers: HeaderMap, call: Call) -> Result<Response, ApiError> {
        if call.sub != "port_forwardings" {
            return Err(ApiError::not_found());
        }
        let Call {
            method,
            id,
            item,
            body,
            ..
        } = call;
        let action = match (method, item) {
            (Method::GET, item) => Forwarding::Show(item),
            (Method::POST, None) => Forwarding::Create(body),
            (Method::PUT, Some(item)) => Forwarding::Update(item, body),
            (Method::DELETE, Some(item)) => Forwarding::Delete(item),
            _ => return Err(ApiError::not_found()),
        };
        let caller = caller(&app, &headers)?;
        forwarding(&app, &caller, &id, action).await
    }

    fn facet<'w>(name: &str, wanted: &'w str) -> Option<(Facet, &'w str)> {
        match name {
            "floating_network_id" => Some((Facet::Network, wanted)),
            "port_id" => Some((Facet::Port, wanted)),
            _ => standard_facet::<Self>(name, wanted),
        }
    }

    fn own_attribute(&self, cloud: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        let association = self.association.as_ref();
        Some(match name {
            "floating_ip_address" => json!(self.floating_ip_address),
            "floating_network_id" => json!(self.floating_network_id),
            "router_id" => json!(self.router_id()),
            "port_id" => json!(association.map(|a| &a.port_id)),
            "fixed_ip_address" => json!(association.map(|a| a.fixed_ip_address)),
            // ACTIVE while the host of its port reports it realised (its
            // own port carries that), DOWN unassociated.
            "status" => json!(
                cloud
                    .port(&self.floating_port_id)
                    .map_or(PortStatus::Down, |p| p.status)
                    .as_str()
            ),
            "port_details" => match association.and_then(|a| cloud.port(&a.port_id)) {
                None => Value::Null,
                Some(p) => json!({
                    "name": p.std.name,
                    "network_id": p.network_id,
                    "mac_address": p.mac_address.to_string(),
                    "admin_state_up": p.admin_state_up,
                    "status": p.status.as_str(),
                    "device_id": p.device_id,
                    "device_owner": p.device_owner,
                }),
            },
            // expose-port-forwarding-in-fip, with the id and internal port of
            // floating-ip-port-forwarding-detail and the description of
            // floating-ip-port-forwarding-description.
            "port_forwardings" => json!(
                self.port_forwardings
                    .iter()
                    .map(|p| json!({"id": p.id, "protocol": p.protocol,
                                    "internal_ip_address": p.internal_ip_address,
                                    "internal_port": p.internal_port, "internal_port_id": p.internal_port_id,
                                    "external_port": p.external_port, "description": p.description}))
                    .collect::<Vec<_>>()
            ),
            _ => return None,
        })
    }
}

fn port_number(a: &mut Attrs, name: &str) -> Result<Option<u16>, ApiError> {
    a.u32(name)?
        .map(|n| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(name, format!("{n} is not in range 1 through 65535")))
        })
        .transpose()
}

fn forwarding_request(mut a: Attrs) -> Result<PortForwardingRequest, ApiError> {
    let req = PortForwardingRequest {
        protocol: a.string("protocol")?,
        external_port: port_number(&mut a, "external_port")?,
        internal_port: port_number(&mut a, "internal_port")?,
        internal_port_id: a.string("internal_port_id")?,
        internal_ip_address: a.nullable_ip("internal_ip_address")?.flatten(),
        description: a.string_or_null("description")?,
    };
    a.finish(&["id", "floatingip_id"])?;
    Ok(req)
}

fn forwarding_view(p: &PortForwarding) -> Value {
    json!({
        "id": p.id,
        "protocol": p.protocol,
        "external_port": p.external_port,
        "internal_port": p.internal_port,
        "internal_port_id": p.internal_port_id,
        "internal_ip_address": p.internal_ip_address,
        "description": p.description,
        "external_port_range": format!("{0}:{0}", p.external_port),
        "internal_port_range": format!("{0}:{0}", p.internal_port),
    })
}

/// A call on a floating IP's port forwardings, parsed from its route.
enum Forwarding {
    /// `GET …/port_forwardings[/{pf}]`.
    Show(Option<String>),
    Create(Bytes),
    Update(String, Bytes),
    Delete(String),
}

async fn forwarding(
    app: &App,
    caller: &Caller,
    fip_id: &str,
    call: Forwarding,
) -> Result<Response, ApiError> {
    let now = now();
    let one = |p: &PortForwarding| Json(json!({ "port_forwarding": forwarding_view(p) }));
    Ok(match call {
        Forwarding::Show(one_id) => {
            let cloud = app.read();
            let fip = cloud
                .floating_ip(fip_id)
                .filter(|f| f.visible_to(&cloud, caller))
                .ok_or_else(|| ModelError::not_found(Kind::FloatingIp, fip_id))?;
            match one_id {
                None => Json(json!({
                    "port_forwardings": fip.port_forwardings.iter().map(forwarding_view).collect::<Vec<_>>()
                }))
                .into_response(),
                Some(id) => fip
                    .port_forwardings
                    .iter()
                    .find(|p| p.id == id)
                    .map(one)
                    .ok_or(ModelError::PortForwardingNotFound { id })?
                    .into_response(),
            }
        }
        Forwarding::Create(body) => {
            let req = parse_forwarding(&body, "POST")?;
            let pf = app
                .write(|cloud| cloud.create_port_forwarding(caller, fip_id, req, now))
                .await?;
            (StatusCode::CREATED, one(&pf)).into_response()
        }
        Forwarding::Update(id, body) => {
            let req = parse_forwarding(&body, "PUT")?;
            let pf = app
                .write(|cloud| cloud.update_port_forwarding(caller, fip_id, &id, req, now))
                .await?;
            one(&pf).into_response()
        }
        Forwarding::Delete(id) => {
            app.write(|cloud| cloud.delete_port_forwarding(caller, fip_id, &id, now))
                .await?;
            StatusCode::NO_CONTENT.into_response()
        }
    })
}

fn parse_forwarding(body: &[u8], method: &'static str) -> Result<PortForwardingRequest, ApiError> {
    let (mut items, bulk) = body::resources(body, "port_forwarding", "port_forwardings")?;
    match (items.pop(), bulk) {
        (Some(attrs), false) => forwarding_request(Attrs::new(attrs, method)),
        _ => Err(ApiError::bad_request(
            "Unable to find 'port_forwarding' in request body",
        )),
    }
}

/// `GET /v2.0/floatingip_pools` (the `floatingip-pools` extension): the IPv4
/// subnets of the external networks the caller sees, which is where its
/// floating IPs can come from.
pub async fn pools(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    const ATTRIBUTES: [&str; 6] = [
        "subnet_id",
        "subnet_name",
        "network_id",
        "cidr",
        "project_id",
        "tenant_id",
    ];
    let caller = caller(&app, &headers)?;
    let q = super::query::ListQuery::parse(super::request::query_pairs(raw)?, &ATTRIBUTES)?;
    let views: Vec<Value> = {
        let cloud = app.read();
        cloud
            .networks()
            .filter(|n| cloud.is_external(&n.std.id) && n.visible_to(&cloud, &caller))
            .flat_map(|n| cloud.subnets_of(&n.std.id).iter())
            .filter_map(|id| cloud.subnet(id))
            .filter(|s| s.ip_version == 4)
            .map(|s| {
                json!({
                    "subnet_id": s.std.id,
                    "subnet_name": s.std.name,
                    "network_id": s.network_id,
                    "cidr": s.cidr.to_string(),
                    "project_id": s.std.project_id,
                    "tenant_id": s.std.project_id,
                })
            })
            .collect()
    };
    Ok(Json(q.render_values(
        views,
        "/v2.0/floatingip_pools",
        "floatingip_pools",
    )?))
}
