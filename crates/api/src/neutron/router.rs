//! `/v2.0/routers`: a router's attributes (gateway, routes) in, its view
//! out, and its actions: `add_router_interface`, `remove_router_interface`,
//! `add_extraroutes`, `remove_extraroutes`. The rules are the model's.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use model::{
    Caller, Cloud, GatewayRequest, HostRoute, InterfaceInfo, InterfaceRequest, ModelError, Router,
    RouterCreate, RouterUpdate, Timestamp,
};
use serde_json::{Map, Value, json};

use super::availability_zone;
use super::body::{self, Attrs, fixed_ips, invalid, read_only};
use super::collection::{Action, Call, Collection, render};
use super::request::caller;
use super::views::{fixed_ips_json, routes_json};
use crate::error::ApiError;
use crate::state::{App, now};

impl Collection for Router {
    const PATH: &'static str = "routers";
    const SINGULAR: &'static str = "router";
    const PLURAL: &'static str = "routers";
    const ATTRIBUTES: &'static [&'static str] = &[
        "admin_state_up",
        "status",
        "external_gateway_info",
        "routes",
        "distributed",
        "ha",
        "availability_zone_hints",
        "availability_zones",
        "flavor_id",
    ];
    type Create = RouterCreate;
    type Update = RouterUpdate;

    fn parse_create(mut a: Attrs) -> Result<RouterCreate, ApiError> {
        let req = RouterCreate {
            project_id: a.project()?,
            tags: a.string_list("tags")?,
            availability_zone_hints: a.string_list("availability_zone_hints")?,
            attributes: router_attributes(&mut a)?,
        };
        a.finish(&read_only(&ROUTER_READ_ONLY))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<RouterUpdate, ApiError> {
        let req = router_attributes(&mut a)?;
        let mut ro = read_only(&ROUTER_READ_ONLY);
        ro.extend(["project_id", "tenant_id", "availability_zone_hints"]);
        a.finish(&ro)?;
        Ok(req)
    }

    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError> {
        Ok(match action {
            Action::Create(req) => Some(cloud.create_router(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_router(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_router(caller, &id).map(|()| None)?,
        })
    }

    async fn call(app: Arc<App>, headers: HeaderMap, call: Call) -> Result<Response, ApiError> {
        match (call.method, call.item) {
            (Method::PUT, None) => {
                let caller = caller(&app, &headers)?;
                action(&app, &caller, &call.id, &call.sub, &call.body).await
            }
            _ => Err(ApiError::not_found()),
        }
    }

    fn check_create(app: &App, req: &RouterCreate) -> Result<(), ApiError> {
        let hints = req.availability_zone_hints.as_deref().unwrap_or_default();
        availability_zone::check_hints(app, hints, availability_zone::Resource::Router)
    }

    /// Its zone is its gateway host's, as the compiler placed it.
    fn adjust(&self, app: &App, _: &Cloud, name: &str, value: &mut Value) {
        if name == "availability_zones" {
            *value = availability_zone::router_zones(app, &self.std.id);
        }
    }

    fn own_attribute(&self, _: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "admin_state_up" => json!(self.admin_state_up),
            "status" => json!("ACTIVE"),
            "external_gateway_info" => match &self.gateway {
                None => Value::Null,
                Some(g) => json!({
                    "network_id": g.network_id,
                    "enable_snat": g.enable_snat,
                    "external_fixed_ips": fixed_ips_json(&g.external_fixed_ips),
                }),
            },
            "routes" => routes_json(&self.routes),
            // Neutron shows these to admins only.
            "distributed" if caller.is_admin => json!(true),
            "ha" if caller.is_admin => json!(false),
            "availability_zone_hints" => json!(self.availability_zone_hints),
            "availability_zones" => json!([]),
            "flavor_id" => Value::Null,
            _ => return None,
        })
    }
}

fn gateway(a: &mut Attrs) -> Result<Option<Option<GatewayRequest>>, ApiError> {
    let Some(info) = a.nested("external_gateway_info")? else {
        return Ok(None);
    };
    let Some(mut g) = info else {
        return Ok(Some(None));
    };
    let attr = "external_gateway_info";
    let network_id = g.string("network_id")?.ok_or_else(|| {
        invalid(
            attr,
            "Validation of dictionary's keys failed. Expected keys: {'network_id'}",
        )
    })?;
    let req = GatewayRequest {
        network_id,
        enable_snat: g.bool("enable_snat")?,
        external_fixed_ips: fixed_ips(&mut g, "external_fixed_ips")?,
    };
    g.finish(&[])
        .map_err(|e| invalid(attr, e.message.trim_end_matches('.')))?;
    Ok(Some(Some(req)))
}

fn routes(a: &mut Attrs) -> Result<Option<Vec<HostRoute>>, ApiError> {
    a.null_as_empty("routes")
        .objects("routes", &["destination", "nexthop"], |f| {
            match (f.str("destination")?, f.ip("nexthop")?) {
                (Some(dest), Some(nexthop)) => {
                    Ok(HostRoute {
                        destination: dest.parse::<ipnet::IpNet>().map(|n| n.trunc()).map_err(
                            |_| invalid("routes", format!("'{dest}' is not a valid IP subnet")),
                        )?,
                        nexthop,
                    })
                }
                _ => Err(invalid(
                    "routes",
                    "a route needs a destination and a nexthop",
                )),
            }
        })
}

const ROUTER_READ_ONLY: [&str; 3] = ["status", "availability_zones", "flavor_id"];

fn router_attributes(a: &mut Attrs) -> Result<RouterUpdate, ApiError> {
    Ok(RouterUpdate {
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        admin_state_up: a.bool("admin_state_up")?,
        gateway: gateway(a)?,
        routes: routes(a)?,
        distributed: a.bool("distributed")?,
        ha: a.bool("ha")?,
    })
}

/// `distributed` and `ha` are accepted as Neutron's defaults: vnet's routers
/// are neither (their data plane is not built yet).
/// The body of `add_router_interface`/`remove_router_interface`.
fn interface(mut a: Attrs) -> Result<InterfaceRequest, ApiError> {
    let req = InterfaceRequest {
        subnet_id: a.string("subnet_id")?,
        port_id: a.string("port_id")?,
    };
    a.finish(&[])?;
    Ok(req)
}

/// The `router` object of `add_extraroutes`/`remove_extraroutes`.
fn extra_routes(mut a: Attrs) -> Result<Vec<HostRoute>, ApiError> {
    let routes = a.required("routes", |a, _| routes(a))?;
    a.finish(&[])?;
    Ok(routes)
}

/// What `add_router_interface`/`remove_router_interface` answer.
fn interface_info(info: &InterfaceInfo) -> Value {
    json!({
        "id": info.router_id,
        "tenant_id": info.project_id,
        "project_id": info.project_id,
        "port_id": info.port_id,
        "network_id": info.network_id,
        "subnet_id": info.subnet_ids.first(),
        "subnet_ids": info.subnet_ids,
    })
}

/// A body that must be one JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_request("Body contains invalid data")),
    }
}

/// `PUT /routers/{id}/{action}`.
async fn action(
    app: &App,
    caller: &Caller,
    id: &str,
    action: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let now = now();
    match action {
        "add_router_interface" | "remove_router_interface" => {
            let req = interface(Attrs::new(object(body)?, "PUT"))?;
            let add = action == "add_router_interface";
            let info = app
                .write(|cloud| {
                    if add {
                        cloud.add_router_interface(caller, id, req, now)
                    } else {
                        cloud.remove_router_interface(caller, id, req, now)
                    }
                })
                .await?;
            Ok(Json(interface_info(&info)).into_response())
        }
        "add_extraroutes" | "remove_extraroutes" => {
            let (mut items, _) = body::resources(body, "router", "routers")?;
            let attrs = items
                .pop()
                .ok_or_else(|| ApiError::bad_request("Unable to find 'router' in request body"))?;
            let routes = extra_routes(Attrs::new(attrs, "PUT"))?;
            let add = action == "add_extraroutes";
            let view = app
                .write(|cloud| {
                    let router = cloud.edit_routes(caller, id, routes, add, now)?;
                    Ok(render(&router, cloud, caller, &[]))
                })
                .await?;
            Ok(Json(json!({ "router": view })).into_response())
        }
        _ => Err(ApiError::not_found()),
    }
}
