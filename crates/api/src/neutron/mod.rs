//! Neutron v2.0 over HTTP: routes, collections and handlers. The only place
//! that knows Neutron's JSON; handlers parse into the model's typed requests,
//! apply them through [`App::write`], and render with `views`.

mod agents;
mod body;
mod extensions;
mod l3;
mod query;
mod quotas;
mod requests;
mod views;

pub use views::{View, timestamp};

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use model::{Caller, Cloud, Kind, Resource, TagEdit};
use serde_json::{Value, json};

use self::body::Attrs;
use self::query::ListQuery;
use crate::auth::noauth_caller;
use crate::binding;
use crate::error::ApiError;
use crate::state::{App, now};

/// A Neutron collection: its URL segment and JSON keys.
struct Collection {
    kind: Kind,
    path: &'static str,
    singular: &'static str,
    plural: &'static str,
}

const COLLECTIONS: [Collection; 7] = [
    Collection {
        kind: Kind::Network,
        path: "networks",
        singular: "network",
        plural: "networks",
    },
    Collection {
        kind: Kind::Subnet,
        path: "subnets",
        singular: "subnet",
        plural: "subnets",
    },
    Collection {
        kind: Kind::Port,
        path: "ports",
        singular: "port",
        plural: "ports",
    },
    Collection {
        kind: Kind::SecurityGroup,
        path: "security-groups",
        singular: "security_group",
        plural: "security_groups",
    },
    Collection {
        kind: Kind::SecurityGroupRule,
        path: "security-group-rules",
        singular: "security_group_rule",
        plural: "security_group_rules",
    },
    Collection {
        kind: Kind::Router,
        path: "routers",
        singular: "router",
        plural: "routers",
    },
    Collection {
        kind: Kind::FloatingIp,
        path: "floatingips",
        singular: "floatingip",
        plural: "floatingips",
    },
];

fn collection(path: &str) -> Result<&'static Collection, ApiError> {
    COLLECTIONS
        .iter()
        .find(|c| c.path == path)
        .ok_or_else(ApiError::not_found)
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/v2.0", get(v2_root))
        .route("/v2.0/", get(v2_root))
        .route("/v2.0/extensions", get(extensions::list))
        .route("/v2.0/extensions/{alias}", get(extensions::show))
        .route("/v2.0/agents", get(agents::list))
        .route("/v2.0/agents/{id}", get(agents::show))
        .route("/v2.0/quotas", get(quotas::list))
        .route(
            "/v2.0/quotas/{project}",
            get(quotas::show).put(quotas::update).delete(quotas::reset),
        )
        .route("/v2.0/quotas/{project}/{sub}", get(quotas::show_sub))
        .route(
            "/v2.0/network-ip-availabilities",
            get(quotas::availabilities),
        )
        .route(
            "/v2.0/network-ip-availabilities/{id}",
            get(quotas::availability_show),
        )
        .route("/v2.0/{collection}", get(list).post(create))
        .route(
            "/v2.0/{collection}/{id}",
            get(show).put(update).delete(delete),
        )
        // Tags, router actions and port forwardings share these shapes: one
        // route each, dispatched on the segment (the router cannot tell a
        // literal `tags` from a parameter at the same depth).
        .route(
            "/v2.0/{collection}/{id}/{sub}",
            get(sub_get).put(sub_put).post(sub_post).delete(sub_delete),
        )
        .route(
            "/v2.0/{collection}/{id}/{sub}/{item}",
            get(item_get).put(item_put).delete(item_delete),
        )
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(app)
}

/// `http://host:port` as the client addressed us, for links.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9696");
    format!("http://{host}")
}

async fn versions(headers: HeaderMap) -> Json<Value> {
    let base = base_url(&headers);
    Json(json!({"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{base}/v2.0/")}],
    }]}))
}

async fn v2_root(headers: HeaderMap) -> Json<Value> {
    let base = base_url(&headers);
    let resources: Vec<Value> = COLLECTIONS
        .iter()
        .map(|c| {
            json!({"name": c.singular, "collection": c.plural,
                   "links": [{"rel": "self", "href": format!("{base}/v2.0/{}", c.path)}]})
        })
        .collect();
    Json(json!({ "resources": resources }))
}

async fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let caller = noauth_caller(headers, &app.default_project);
    app.ensure_project(&caller).await?;
    Ok(caller)
}

fn query_pairs(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("The query string is malformed"))
}

/// `If-Match: revision_number=N`, as Neutron's revision-if-match extension reads it.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
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

async fn list(
    State(app): State<Arc<App>>,
    Path(coll): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let c = collection(&coll)?;
    let caller = caller(&app, &headers).await?;
    let q = ListQuery::parse(query_pairs(raw)?, &views::attribute_names(c.kind))?;
    let url = format!("{}/v2.0/{}", base_url(&headers), c.path);
    let (items, links) = {
        let cloud = app.read();
        match c.kind {
            Kind::Network => list_page(&cloud, &caller, &q, cloud.networks(), &url, &as_is),
            Kind::Subnet => list_page(&cloud, &caller, &q, cloud.subnets(), &url, &as_is),
            Kind::Port => {
                // A port's binding depends on its host's agent, which only
                // the API knows (see `binding`).
                let bound = |p: &model::Port, name: &str, value: Option<Value>| {
                    let unbindable = name == "binding:vif_type"
                        && value == Some(json!("bridge"))
                        && binding::refusal(&cloud, &app.hosts, p).is_some();
                    if unbindable {
                        Some(json!("binding_failed"))
                    } else {
                        value
                    }
                };
                list_page(&cloud, &caller, &q, cloud.ports(), &url, &bound)
            }
            Kind::SecurityGroup => {
                list_page(&cloud, &caller, &q, cloud.security_groups(), &url, &as_is)
            }
            Kind::SecurityGroupRule => list_page(
                &cloud,
                &caller,
                &q,
                cloud.security_group_rules(),
                &url,
                &as_is,
            ),
            Kind::Router => list_page(&cloud, &caller, &q, cloud.routers(), &url, &as_is),
            Kind::FloatingIp => list_page(&cloud, &caller, &q, cloud.floating_ips(), &url, &as_is),
            // Not a collection: quotas have their own routes.
            Kind::Quota => Err(ApiError::not_found()),
        }?
    };
    let mut out = serde_json::Map::new();
    out.insert(c.plural.into(), Value::Array(items));
    if !links.is_empty() {
        out.insert(format!("{}_links", c.plural), Value::Array(links));
    }
    Ok(Json(Value::Object(out)))
}

/// Gives an attribute of a `T` the value facts beyond the model make it.
type Adjust<'a, T> = dyn Fn(&T, &str, Option<Value>) -> Option<Value> + 'a;

/// The attributes an `adjust` of `list_page` may change.
const ADJUSTED: [&str; 1] = ["binding:vif_type"];

/// An attribute as the model alone gives it.
fn as_is<T>(_: &T, _: &str, value: Option<Value>) -> Option<Value> {
    value
}

/// Filter, sort and page `all` reading only the attributes the query names,
/// then render the page: a list costs one whole render per item returned.
/// `adjust` gives an attribute the value facts beyond the model make it
/// (a port's binding), the same for filters, sorting and the view.
fn list_page<'a, T: views::Shown + 'a>(
    cloud: &Cloud,
    caller: &Caller,
    q: &ListQuery,
    all: impl Iterator<Item = &'a T>,
    url: &str,
    adjust: &Adjust<'_, T>,
) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let attribute = |r: &T, name: &str| adjust(r, name, r.attribute(cloud, caller, name));
    let matching: Vec<&T> = all
        .filter(|r| r.visible(cloud, caller))
        .filter(|r| q.matches(&r.standard().tags, |name| attribute(r, name)))
        .collect();
    let (page, links) = q.page(
        matching,
        |r| r.standard().id.as_str(),
        |r, name| attribute(r, name),
        url,
    )?;
    let items = page
        .into_iter()
        .map(|r| {
            let mut view = views::render(r, cloud, caller, q.fields());
            for name in ADJUSTED {
                if let Some(value) = view.get_mut(name)
                    && let Some(adjusted) = adjust(r, name, Some(value.clone()))
                {
                    *value = adjusted;
                }
            }
            Value::Object(view)
        })
        .collect();
    Ok((items, links))
}

/// A resource's view with what the model alone cannot say (a port's binding).
fn full_view(app: &App, cloud: &Cloud, caller: &Caller, r: &Resource, fields: &[String]) -> View {
    let mut view = views::resource(cloud, caller, r, fields);
    if let Resource::Port(p) = r {
        binding::show(&mut view, cloud, &app.hosts, p);
    }
    view
}

async fn show(
    State(app): State<Arc<App>>,
    Path((coll, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let c = collection(&coll)?;
    let caller = caller(&app, &headers).await?;
    let fields: Vec<String> = query_pairs(raw)?
        .into_iter()
        .filter(|(k, _)| k == "fields")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let cloud = app.read();
    let r = cloud.visible(&caller, c.kind, &id)?;
    let view = full_view(&app, &cloud, &caller, &r, &fields);
    Ok(Json(json!({ c.singular: view })))
}

/// A parsed create request of any kind.
enum Create {
    Network(model::NetworkCreate),
    Subnet(model::SubnetCreate),
    Port(model::PortCreate),
    SecurityGroup(model::SecurityGroupCreate),
    Rule(model::RuleCreate),
    Router(model::RouterCreate),
    FloatingIp(model::FloatingIpCreate),
}

async fn create(
    State(app): State<Arc<App>>,
    Path(coll): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = collection(&coll)?;
    let caller = caller(&app, &headers).await?;
    let (items, bulk) = body::resources(&body, c.singular, c.plural)?;
    let requests = items
        .into_iter()
        .map(|m| {
            let a = Attrs::new(m, "POST");
            Ok(match c.kind {
                Kind::Network => Create::Network(requests::network_create(a)?),
                Kind::Subnet => Create::Subnet(requests::subnet_create(a)?),
                Kind::Port => Create::Port(requests::port_create(a)?),
                Kind::SecurityGroup => Create::SecurityGroup(requests::security_group_create(a)?),
                Kind::SecurityGroupRule => Create::Rule(requests::rule_create(a)?),
                Kind::Router => Create::Router(requests::router_create(a)?),
                Kind::FloatingIp => Create::FloatingIp(requests::floating_ip_create(a)?),
                Kind::Quota => return Err(ApiError::not_found()),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let now = now();
    let created = app
        .write(None, |cloud| {
            let mut made = Vec::with_capacity(requests.len());
            for req in requests {
                made.push(match req {
                    Create::Network(r) => Resource::Network(cloud.create_network(&caller, r, now)?),
                    Create::Subnet(r) => Resource::Subnet(cloud.create_subnet(&caller, r, now)?),
                    Create::Port(r) => Resource::Port(cloud.create_port(&caller, r, now)?),
                    Create::SecurityGroup(r) => {
                        Resource::SecurityGroup(cloud.create_security_group(&caller, r, now)?)
                    }
                    Create::Rule(r) => Resource::SecurityGroupRule(
                        cloud.create_security_group_rule(&caller, r, now)?,
                    ),
                    Create::Router(r) => Resource::Router(cloud.create_router(&caller, r, now)?),
                    Create::FloatingIp(r) => {
                        Resource::FloatingIp(cloud.create_floating_ip(&caller, r, now)?)
                    }
                });
            }
            Ok(made
                .iter()
                .map(|r| Value::Object(full_view(&app, cloud, &caller, r, &[])))
                .collect::<Vec<_>>())
        })
        .await?;
    let body = if bulk {
        json!({ c.plural: created })
    } else {
        json!({ c.singular: created.into_iter().next() })
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A parsed update request of any kind.
enum Update {
    Network(model::NetworkUpdate),
    Subnet(model::SubnetUpdate),
    Port(model::PortUpdate),
    SecurityGroup(model::SecurityGroupUpdate),
    Rule(Option<String>),
    Router(model::RouterUpdate),
    FloatingIp(model::FloatingIpUpdate),
}

async fn update(
    State(app): State<Arc<App>>,
    Path((coll, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = collection(&coll)?;
    let caller = caller(&app, &headers).await?;
    let revision = if_match(&headers)?;
    let (mut items, bulk) = body::resources(&body, c.singular, c.plural)?;
    let (Some(attrs), false) = (items.pop(), bulk) else {
        return Err(ApiError::bad_request(format!(
            "Unable to find '{}' in request body",
            c.singular
        )));
    };
    let a = Attrs::new(attrs, "PUT");
    let req = match c.kind {
        Kind::Network => Update::Network(requests::network_update(a)?),
        Kind::Subnet => Update::Subnet(requests::subnet_update(a)?),
        Kind::Port => Update::Port(requests::port_update(a)?),
        Kind::SecurityGroup => Update::SecurityGroup(requests::security_group_update(a)?),
        Kind::SecurityGroupRule => Update::Rule(requests::rule_update(a)?),
        Kind::Router => Update::Router(requests::router_update(a)?),
        Kind::FloatingIp => Update::FloatingIp(requests::floating_ip_update(a)?),
        Kind::Quota => return Err(ApiError::not_found()),
    };
    let now = now();
    let view = app
        .write(revision.map(|r| (c.kind, id.as_str(), r)), |cloud| {
            let r = match req {
                Update::Network(u) => {
                    Resource::Network(cloud.update_network(&caller, &id, u, now)?)
                }
                Update::Subnet(u) => Resource::Subnet(cloud.update_subnet(&caller, &id, u, now)?),
                Update::Port(u) => Resource::Port(cloud.update_port(&caller, &id, u, now)?),
                Update::SecurityGroup(u) => {
                    Resource::SecurityGroup(cloud.update_security_group(&caller, &id, u, now)?)
                }
                Update::Rule(d) => Resource::SecurityGroupRule(
                    cloud.update_security_group_rule(&caller, &id, d, now)?,
                ),
                Update::Router(u) => Resource::Router(cloud.update_router(&caller, &id, u, now)?),
                Update::FloatingIp(u) => {
                    Resource::FloatingIp(cloud.update_floating_ip(&caller, &id, u, now)?)
                }
            };
            Ok(full_view(&app, cloud, &caller, &r, &[]))
        })
        .await?;
    Ok(Json(json!({ c.singular: view })))
}

async fn delete(
    State(app): State<Arc<App>>,
    Path((coll, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let c = collection(&coll)?;
    let caller = caller(&app, &headers).await?;
    let revision = if_match(&headers)?;
    let now = now();
    app.write(
        revision.map(|r| (c.kind, id.as_str(), r)),
        |cloud| match c.kind {
            Kind::Network => cloud.delete_network(&caller, &id),
            Kind::Subnet => cloud.delete_subnet(&caller, &id, now),
            Kind::Port => cloud.delete_port(&caller, &id, now),
            Kind::SecurityGroup => cloud.delete_security_group(&caller, &id),
            Kind::SecurityGroupRule => cloud.delete_security_group_rule(&caller, &id, now),
            Kind::Router => cloud.delete_router(&caller, &id),
            Kind::FloatingIp => cloud.delete_floating_ip(&caller, &id),
            Kind::Quota => Err(model::ModelError::not_found(Kind::Quota, &id)),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// === tags: /v2.0/{collection}/{id}/tags[/{tag}] ===

async fn edit_tags(
    app: &App,
    coll: &str,
    id: &str,
    headers: &HeaderMap,
    edit: TagEdit,
) -> Result<Vec<String>, ApiError> {
    let c = collection(coll)?;
    let caller = caller(app, headers).await?;
    let now = now();
    app.write(None, |cloud| {
        cloud.edit_tags(&caller, c.kind, id, edit, now)
    })
    .await
}

async fn current_tags(
    app: &App,
    coll: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Vec<String>, ApiError> {
    let c = collection(coll)?;
    let caller = caller(app, headers).await?;
    let cloud = app.read();
    Ok(cloud.visible(&caller, c.kind, id)?.standard().tags.clone())
}

// === /{collection}/{id}/{sub}[/{item}]: tags, router actions, port forwardings ===

async fn sub_get(
    State(app): State<Arc<App>>,
    Path((coll, id, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    match (coll.as_str(), sub.as_str()) {
        (_, "tags") => {
            let tags = current_tags(&app, &coll, &id, &headers).await?;
            Ok(Json(json!({ "tags": tags })))
        }
        ("floatingips", "port_forwardings") => {
            let caller = caller(&app, &headers).await?;
            l3::forwardings(&app, &caller, &id, None)
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn sub_put(
    State(app): State<Arc<App>>,
    Path((coll, id, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    match (coll.as_str(), sub.as_str()) {
        (_, "tags") => {
            let tags = edit_tags(
                &app,
                &coll,
                &id,
                &headers,
                TagEdit::Replace(tag_list(&body)?),
            );
            Ok(Json(json!({ "tags": tags.await? })))
        }
        ("routers", action) => {
            let caller = caller(&app, &headers).await?;
            l3::router_action(&app, &caller, &id, action, &body).await
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn sub_post(
    State(app): State<Arc<App>>,
    Path((coll, id, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    match (coll.as_str(), sub.as_str()) {
        ("floatingips", "port_forwardings") => {
            let caller = caller(&app, &headers).await?;
            let view = l3::create_forwarding(&app, &caller, &id, &body).await?;
            Ok((StatusCode::CREATED, view).into_response())
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn sub_delete(
    State(app): State<Arc<App>>,
    Path((coll, id, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    match sub.as_str() {
        "tags" => {
            edit_tags(&app, &coll, &id, &headers, TagEdit::Replace(Vec::new())).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn item_get(
    State(app): State<Arc<App>>,
    Path((coll, id, sub, item)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match (coll.as_str(), sub.as_str()) {
        (_, "tags") => {
            if current_tags(&app, &coll, &id, &headers)
                .await?
                .contains(&item)
            {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(model::ModelError::TagNotFound { tag: item }.into())
            }
        }
        ("floatingips", "port_forwardings") => {
            let caller = caller(&app, &headers).await?;
            Ok(l3::forwardings(&app, &caller, &id, Some(&item))?.into_response())
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn item_put(
    State(app): State<Arc<App>>,
    Path((coll, id, sub, item)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    match (coll.as_str(), sub.as_str()) {
        (_, "tags") => {
            edit_tags(&app, &coll, &id, &headers, TagEdit::Add(item)).await?;
            Ok(StatusCode::CREATED.into_response())
        }
        ("floatingips", "port_forwardings") => {
            let caller = caller(&app, &headers).await?;
            Ok(l3::update_forwarding(&app, &caller, &id, &item, &body)
                .await?
                .into_response())
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn item_delete(
    State(app): State<Arc<App>>,
    Path((coll, id, sub, item)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    match (coll.as_str(), sub.as_str()) {
        (_, "tags") => {
            edit_tags(&app, &coll, &id, &headers, TagEdit::Remove(item)).await?;
        }
        ("floatingips", "port_forwardings") => {
            let caller = caller(&app, &headers).await?;
            let now = now();
            app.write(None, |cloud| {
                cloud.delete_port_forwarding(&caller, &id, &item, now)
            })
            .await?;
        }
        _ => return Err(ApiError::not_found()),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `PUT …/tags`: `{"tags": [...]}`.
fn tag_list(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Body contains invalid data"))?;
    body.get("tags")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("Unable to find 'tags' in request body"))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::invalid_input(format!("'{t}' is not a valid string")))
        })
        .collect()
}
