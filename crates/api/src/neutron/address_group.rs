//! `/v2.0/address-groups`: an address group's attributes in, its view out
//! (standard attributes without tags, as Neutron gives them), and its
//! actions `add_addresses` and `remove_addresses`. Normalising, the
//! all-or-nothing checks and who may see a group are the model's; this
//! module only parses.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use model::{
    AddressGroup, AddressGroupCreate, AddressGroupUpdate, Caller, Cloud, ModelError, Timestamp,
};
use serde_json::{Value, json};

use super::body::{Attrs, invalid, read_only};
use super::collection::{Action, Call, Collection, render};
use super::request::caller;
use crate::error::ApiError;
use crate::state::{App, now};

impl Collection for AddressGroup {
    const PATH: &'static str = "address-groups";
    const SINGULAR: &'static str = "address_group";
    const PLURAL: &'static str = "address_groups";
    /// Neutron's address groups have standard attributes but no tag support.
    const STANDARD: &'static [&'static str] = &[
        "id",
        "name",
        "project_id",
        "tenant_id",
        "description",
        "created_at",
        "updated_at",
        "revision_number",
    ];
    const ATTRIBUTES: &'static [&'static str] = &["addresses"];
    type Create = AddressGroupCreate;
    type Update = AddressGroupUpdate;

    fn parse_create(mut a: Attrs) -> Result<AddressGroupCreate, ApiError> {
        let req = AddressGroupCreate {
            project_id: a.project()?,
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            addresses: subnet_list(&mut a, "addresses")?,
        };
        a.finish(&read_only(&[]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<AddressGroupUpdate, ApiError> {
        let req = AddressGroupUpdate {
            name: a.string("name")?,
            description: a.string_or_null("description")?,
        };
        // Addresses change only through the actions, as in Neutron.
        a.finish(&read_only(&["addresses", "project_id", "tenant_id"]))?;
        Ok(req)
    }

    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError> {
        Ok(match action {
            Action::Create(req) => Some(cloud.create_address_group(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_address_group(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_address_group(caller, &id).map(|()| None)?,
        })
    }

    /// `PUT /{id}/add_addresses` and `/{id}/remove_addresses` with
    /// `{"addresses": [...]}`: the whole group back, as Neutron answers.
    async fn call(app: Arc<App>, headers: HeaderMap, call: Call) -> Result<Response, ApiError> {
        let add = match (&call.method, call.item.as_deref(), call.sub.as_str()) {
            (&Method::PUT, None, "add_addresses") => true,
            (&Method::PUT, None, "remove_addresses") => false,
            _ => return Err(ApiError::not_found()),
        };
        let caller = caller(&app, &headers)?;
        let given = action_addresses(&call.body)?;
        let now = now();
        let id = call.id.as_str();
        let view = app
            .write(|cloud| {
                let group = if add {
                    cloud.add_addresses(&caller, id, &given, now)?
                } else {
                    cloud.remove_addresses(&caller, id, &given, now)?
                };
                Ok(render(&group, cloud, &caller, &[]))
            })
            .await?;
        Ok(Json(json!({ "address_group": view })).into_response())
    }

    fn own_attribute(&self, _: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "addresses" => json!(
                self.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            _ => return None,
        })
    }
}

/// `addresses` on create, as Neutron's `type:subnet_list` validates it
/// (null is none): a list without duplicates of CIDRs with the prefix
/// length written out; an IPv4 one written as its canonical text.
fn subnet_list(a: &mut Attrs, name: &str) -> Result<Vec<IpNet>, ApiError> {
    let items = match a.value(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid(name, format!("'{}' is not a list", text(&other)))),
    };
    let mut seen = BTreeSet::new();
    let dups: Vec<String> = items
        .iter()
        .map(text)
        .filter(|t| !seen.insert(t.clone()))
        .collect();
    if !dups.is_empty() {
        return Err(invalid(
            name,
            format!("Duplicate items in the list: '{}'", dups.join(", ")),
        ));
    }
    items
        .iter()
        .map(|v| {
            let t = text(v);
            v.as_str()
                .and_then(cidr)
                .ok_or_else(|| invalid(name, format!("'{t}' is not a valid IP subnet")))
        })
        .collect()
}

/// A CIDR as `validate_subnet` accepts it.
fn cidr(s: &str) -> Option<IpNet> {
    if !s.contains('/') {
        return None;
    }
    let net: IpNet = s.parse().ok()?;
    // Neutron compares IPv4 with netaddr's rendering ("10.0.0.01/8" is not one).
    (net.addr().is_ipv6() || net.to_string() == s).then_some(net)
}

/// A JSON value as Neutron quotes it in messages.
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The body of `add_addresses`/`remove_addresses`. Neutron reads each with
/// `netaddr.IPNetwork`, so a bare address is a host prefix (`/32`, `/128`).
fn action_addresses(body: &[u8]) -> Result<Vec<IpNet>, ApiError> {
    let refused = || ApiError::bad_request("Request body contains invalid data");
    let body: Value = serde_json::from_slice(body).map_err(|_| refused())?;
    let list = body
        .get("addresses")
        .and_then(Value::as_array)
        .ok_or_else(refused)?;
    list.iter()
        .map(|v| {
            let t = text(v);
            v.as_str()
                .and_then(|s| {
                    s.parse::<IpNet>()
                        .ok()
                        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
                })
                .ok_or_else(|| invalid("addresses", format!("'{t}' is not a valid IP subnet")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked_as_neutron_checks_them() {
        assert!(cidr("10.0.0.1/32").is_some());
        assert!(
            cidr("10.1.0.5/24").is_some(),
            "host bits are the model's to clear"
        );
        assert!(cidr("fd00::1/64").is_some());
        for bad in [
            "10.0.0.1",
            "10.0.0.01/32",
            "10.0.0.0/33",
            "nonsense/8",
            "fd00::1",
        ] {
            assert!(cidr(bad).is_none(), "{bad}");
        }
        let hosts = action_addresses(br#"{"addresses": ["10.0.0.1", "fd00::1"]}"#).unwrap();
        let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["10.0.0.1/32", "fd00::1/128"]);
        assert!(action_addresses(br#"{"addresses": [5]}"#).is_err());
        assert!(action_addresses(br#"{"prefixes": []}"#).is_err());
    }
}
