//! `/v2.0/subnetpools`: a subnet pool's attributes in, its view out, and
//! its actions `add_prefixes` and `remove_prefixes`. Prefix arithmetic,
//! bounds and allocation are the model's; this module only parses.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use model::{
    Caller, Cloud, ModelError, ObjectType, SubnetPool, SubnetPoolCreate, SubnetPoolUpdate,
    Timestamp,
};
use serde_json::{Value, json};

use super::body::{Attrs, invalid, read_only};
use super::collection::{Action, Call, Collection};
use super::request::caller;
use crate::error::ApiError;
use crate::state::{App, now};

impl Collection for SubnetPool {
    const PATH: &'static str = "subnetpools";
    const SINGULAR: &'static str = "subnetpool";
    const PLURAL: &'static str = "subnetpools";
    const ATTRIBUTES: &'static [&'static str] = &[
        "prefixes",
        "default_quota",
        "ip_version",
        "default_prefixlen",
        "min_prefixlen",
        "max_prefixlen",
        "is_default",
        "shared",
        "address_scope_id",
    ];
    type Create = SubnetPoolCreate;
    type Update = SubnetPoolUpdate;

    fn parse_create(mut a: Attrs) -> Result<SubnetPoolCreate, ApiError> {
        let prefixes = a.required("prefixes", prefixes)?;
        let req = SubnetPoolCreate {
            project_id: a.project()?,
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            tags: a.string_list("tags")?,
            prefixes,
            default_prefixlen: a.u32("default_prefixlen")?,
            min_prefixlen: a.u32("min_prefixlen")?,
            max_prefixlen: a.u32("max_prefixlen")?,
            default_quota: a.u32("default_quota")?,
            shared: a.bool("shared")?,
            is_default: a.bool("is_default")?,
        };
        no_address_scope(&mut a)?;
        a.finish(&read_only(&["ip_version"]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<SubnetPoolUpdate, ApiError> {
        let req = SubnetPoolUpdate {
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            prefixes: prefixes(&mut a, "prefixes")?,
            default_prefixlen: a.u32("default_prefixlen")?,
            min_prefixlen: a.u32("min_prefixlen")?,
            max_prefixlen: a.u32("max_prefixlen")?,
            default_quota: a.u32("default_quota")?,
            is_default: a.bool("is_default")?,
        };
        no_address_scope(&mut a)?;
        a.finish(&read_only(&[
            "ip_version",
            "shared",
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
            Action::Create(req) => Some(cloud.create_subnet_pool(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_subnet_pool(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_subnet_pool(caller, &id).map(|()| None)?,
        })
    }

    async fn call(app: Arc<App>, headers: HeaderMap, call: Call) -> Result<Response, ApiError> {
        let add = match (&call.method, call.item.as_deref(), call.sub.as_str()) {
            (&Method::PUT, None, "add_prefixes") => true,
            (&Method::PUT, None, "remove_prefixes") => false,
            _ => return Err(ApiError::not_found()),
        };
        let caller = caller(&app, &headers)?;
        let given = action_prefixes(&call.body)?;
        let now = now();
        let id = call.id.as_str();
        let pool = app
            .write(|cloud| {
                if add {
                    cloud.add_subnet_pool_prefixes(&caller, id, given, now)
                } else {
                    cloud.remove_subnet_pool_prefixes(&caller, id, given, now)
                }
            })
            .await?;
        Ok(Json(json!({ "prefixes": prefixes_json(&pool.prefixes) })).into_response())
    }

    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "prefixes" => prefixes_json(&self.prefixes),
            "default_quota" => json!(self.default_quota),
            "ip_version" => json!(self.ip_version),
            "default_prefixlen" => json!(self.default_prefixlen),
            "min_prefixlen" => json!(self.min_prefixlen),
            "max_prefixlen" => json!(self.max_prefixlen),
            "is_default" => json!(self.is_default),
            // As the caller sees it: shared with it, or with everyone.
            "shared" => {
                json!(cloud.shared_with(ObjectType::SubnetPool, &self.std.id, &caller.project_id))
            }
            // Address scopes are not implemented: no pool is in one.
            "address_scope_id" => Value::Null,
            _ => return None,
        })
    }
}

fn prefixes_json(prefixes: &[IpNet]) -> Value {
    json!(prefixes.iter().map(IpNet::to_string).collect::<Vec<_>>())
}

/// A list of CIDRs, as Neutron's `type:subnet_list` validates it.
fn prefixes(a: &mut Attrs, name: &str) -> Result<Option<Vec<IpNet>>, ApiError> {
    let Some(list) = a.string_list(name)? else {
        return Ok(None);
    };
    list.iter()
        .map(|p| {
            parse_prefix(p).ok_or_else(|| invalid(name, format!("'{p}' is not a valid IP subnet")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_prefix(p: &str) -> Option<IpNet> {
    // Neutron wants the length written out: "10.0.0.0" is no subnet.
    if !p.contains('/') {
        return None;
    }
    p.parse().ok()
}

/// `address_scope_id`: only null, until address scopes exist.
fn no_address_scope(a: &mut Attrs) -> Result<(), ApiError> {
    if a.nullable_string("address_scope_id")?.is_some() {
        return Err(ApiError::invalid_input("address scopes are not supported"));
    }
    Ok(())
}

/// The body of `add_prefixes`/`remove_prefixes`: `{"prefixes": [...]}`,
/// a list that is not empty (Neutron refuses the rest alike).
fn action_prefixes(body: &[u8]) -> Result<Vec<IpNet>, ApiError> {
    let refused = || ApiError::bad_request("Request body contains invalid data");
    let body: Value = serde_json::from_slice(body).map_err(|_| refused())?;
    let list = body
        .get("prefixes")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(refused)?;
    list.iter()
        .map(|v| {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            parse_prefix(&text)
                .ok_or_else(|| invalid("prefixes", format!("'{text}' is not a valid IP subnet")))
        })
        .collect()
}
