//! The L3 calls beyond a collection's CRUD: router actions (interfaces,
//! extra routes) and a floating IP's port forwardings. JSON in and out only;
//! the rules are the model's.

use axum::Json;
use model::{Caller, Kind, ModelError, Resource};
use serde_json::{Map, Value, json};

use super::body::{self, Attrs};
use super::{requests, views};
use crate::error::ApiError;
use crate::state::{App, now};

/// A body that must be one JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_request("Body contains invalid data")),
    }
}

/// `PUT /routers/{id}/{action}`.
pub async fn router_action(
    app: &App,
    caller: &Caller,
    id: &str,
    action: &str,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let now = now();
    match action {
        "add_router_interface" | "remove_router_interface" => {
            let req = requests::interface(Attrs::new(object(body)?, "PUT"))?;
            let add = action == "add_router_interface";
            let info = app
                .write(None, |cloud| {
                    if add {
                        cloud.add_router_interface(caller, id, req, now)
                    } else {
                        cloud.remove_router_interface(caller, id, req, now)
                    }
                })
                .await?;
            Ok(Json(views::interface_info(&info)))
        }
        "add_extraroutes" | "remove_extraroutes" => {
            let (mut items, _) = body::resources(body, "router", "routers")?;
            let attrs = items
                .pop()
                .ok_or_else(|| ApiError::bad_request("Unable to find 'router' in request body"))?;
            let routes = requests::extra_routes(Attrs::new(attrs, "PUT"))?;
            let add = action == "add_extraroutes";
            let view = app
                .write(None, |cloud| {
                    let router = cloud.edit_routes(caller, id, routes, add, now)?;
                    Ok(views::resource(
                        cloud,
                        caller,
                        &Resource::Router(router),
                        &[],
                    ))
                })
                .await?;
            Ok(Json(json!({ "router": view })))
        }
        _ => Err(ApiError::not_found()),
    }
}

/// `GET /floatingips/{id}/port_forwardings[/{pf}]`.
pub fn forwardings(
    app: &App,
    caller: &Caller,
    fip_id: &str,
    one: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let cloud = app.read();
    let Resource::FloatingIp(fip) = cloud.visible(caller, Kind::FloatingIp, fip_id)? else {
        return Err(ModelError::not_found(Kind::FloatingIp, fip_id).into());
    };
    match one {
        None => Ok(Json(json!({
            "port_forwardings": fip.port_forwardings.iter().map(views::port_forwarding).collect::<Vec<_>>()
        }))),
        Some(id) => fip
            .port_forwardings
            .iter()
            .find(|p| p.id == id)
            .map(|p| Json(json!({ "port_forwarding": views::port_forwarding(p) })))
            .ok_or_else(|| ModelError::PortForwardingNotFound { id: id.to_owned() }.into()),
    }
}

fn forwarding_request(
    body: &[u8],
    method: &'static str,
) -> Result<model::PortForwardingRequest, ApiError> {
    let (mut items, bulk) = body::resources(body, "port_forwarding", "port_forwardings")?;
    match (items.pop(), bulk) {
        (Some(attrs), false) => requests::port_forwarding(Attrs::new(attrs, method)),
        _ => Err(ApiError::bad_request(
            "Unable to find 'port_forwarding' in request body",
        )),
    }
}

/// `POST /floatingips/{id}/port_forwardings`.
pub async fn create_forwarding(
    app: &App,
    caller: &Caller,
    fip_id: &str,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let req = forwarding_request(body, "POST")?;
    let now = now();
    let forwarding = app
        .write(None, |cloud| {
            cloud.create_port_forwarding(caller, fip_id, req, now)
        })
        .await?;
    Ok(Json(
        json!({ "port_forwarding": views::port_forwarding(&forwarding) }),
    ))
}

/// `PUT /floatingips/{id}/port_forwardings/{pf}`.
pub async fn update_forwarding(
    app: &App,
    caller: &Caller,
    fip_id: &str,
    id: &str,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let req = forwarding_request(body, "PUT")?;
    let now = now();
    let forwarding = app
        .write(None, |cloud| {
            cloud.update_port_forwarding(caller, fip_id, id, req, now)
        })
        .await?;
    Ok(Json(
        json!({ "port_forwarding": views::port_forwarding(&forwarding) }),
    ))
}
