//! Neutron v2.0 over HTTP: the routes, and what every handler shares (the
//! caller, query pairs, `If-Match`). The only place that knows Neutron's
//! JSON; each collection's parsing, view and actions are its own module's
//! (`network`, `subnet`, `subnet_pool`, `port`, `security_group`,
//! `address_group`, `router`, `floating_ip`, `metering`, `rbac`),
//! served by the generic handlers of `collection`.

mod address_group;
mod agents;
mod auto_allocated_topology;
mod availability_zone;
mod body;
mod collection;
mod default_security_group_rule;
mod extensions;
mod floating_ip;
#[doc(hidden)]
pub mod fuzzing;
mod metering;
mod network;
mod port;
mod query;
mod quotas;
mod rbac;
mod request;
mod router;
mod security_group;
mod service_providers;
mod subnet;
mod subnet_pool;
mod views;

pub use views::timestamp;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{MethodRouter, get};
use model::{
    FloatingIp, MeteringLabel, MeteringLabelRule, Network, Port, RbacPolicy, SecurityGroup,
    SecurityGroupRule, Subnet, SubnetPool,
};
use serde_json::{Value, json};

use self::collection::Collection;
use self::request::base_url;
use crate::error::ApiError;
use crate::state::App;

/// The collections' routes, and their names for `GET /v2.0`.
#[derive(Default)]
struct Collections {
    routes: Router<Arc<App>>,
    /// `(singular, plural, path)` of each, in the order mounted.
    names: Vec<(&'static str, &'static str, &'static str)>,
}

impl Collections {
    /// Serve `C` at `/v2.0/{C::PATH}`: its CRUD, tags and own calls.
    fn with<C: Collection>(mut self) -> Self {
        let base = format!("/v2.0/{}", C::PATH);
        use collection::{create, delete, item, list, show, sub, update};
        self.routes = self
            .routes
            .route(&base, get(list::<C>).post(create::<C>))
            .route(
                &format!("{base}/{{id}}"),
                get(show::<C>).put(update::<C>).delete(delete::<C>),
            )
            .route(
                &format!("{base}/{{id}}/{{sub}}"),
                get(sub::<C>).put(sub::<C>).post(sub::<C>).delete(sub::<C>),
            )
            .route(
                &format!("{base}/{{id}}/{{sub}}/{{item}}"),
                get(item::<C>).put(item::<C>).delete(item::<C>),
            );
        self.names.push((C::SINGULAR, C::PLURAL, C::PATH));
        self
    }
}

pub fn router(app: Arc<App>) -> Router {
    // Adding a collection is one line here (and its module).
    let collections = Collections::default()
        .with::<Network>()
        .with::<Subnet>()
        .with::<SubnetPool>()
        .with::<Port>()
        .with::<SecurityGroup>()
        .with::<SecurityGroupRule>()
        .with::<model::DefaultSecurityGroupRule>()
        .with::<model::AddressGroup>()
        .with::<model::Router>()
        .with::<FloatingIp>()
        .with::<MeteringLabel>()
        .with::<MeteringLabelRule>()
        .with::<RbacPolicy>();
    let names = Arc::new(collections.names);
    let root: MethodRouter<Arc<App>> = get(move |headers: HeaderMap| v2_root(headers, names));
    // Any other collection: 404, or 405 for a method no collection has.
    let none = || async { ApiError::not_found() };
    Router::new()
        .route("/", get(versions))
        .route("/v2.0", root.clone())
        .route("/v2.0/", root)
        .route("/v2.0/extensions", get(extensions::list))
        .route("/v2.0/extensions/{alias}", get(extensions::show))
        .route("/v2.0/agents", get(agents::list))
        .route(
            "/v2.0/agents/{id}",
            get(agents::show).put(agents::update).delete(agents::delete),
        )
        .route("/v2.0/service-providers", get(service_providers::list))
        .route("/v2.0/availability_zones", get(availability_zone::list))
        .route(
            "/v2.0/auto-allocated-topology/{project}",
            get(auto_allocated_topology::show).delete(auto_allocated_topology::delete),
        )
        .route("/v2.0/floatingip_pools", get(floating_ip::pools))
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
        .merge(collections.routes)
        .route("/v2.0/{collection}", get(none).post(none))
        .route("/v2.0/{collection}/{id}", get(none).put(none).delete(none))
        .route(
            "/v2.0/{collection}/{id}/{sub}",
            get(none).put(none).post(none).delete(none),
        )
        .route(
            "/v2.0/{collection}/{id}/{sub}/{item}",
            get(none).put(none).delete(none),
        )
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(app)
}

async fn versions(headers: HeaderMap) -> Json<Value> {
    let base = base_url(&headers);
    Json(json!({"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{base}/v2.0/")}],
    }]}))
}

async fn v2_root(headers: HeaderMap, names: Arc<Vec<(&str, &str, &str)>>) -> Json<Value> {
    let base = base_url(&headers);
    let resources: Vec<Value> = names
        .iter()
        .map(|(singular, plural, path)| {
            json!({"name": singular, "collection": plural,
                   "links": [{"rel": "self", "href": format!("{base}/v2.0/{path}")}]})
        })
        .collect();
    Json(json!({ "resources": resources }))
}
