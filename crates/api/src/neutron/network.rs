//! `/v2.0/networks`: a network's attributes in, its view out. The rules
//! (provider segments, sharing, MTU) are the model's.

use model::{
    Caller, Cloud, ModelError, Network, NetworkCreate, NetworkUpdate, ObjectType, Timestamp,
};
use serde_json::{Value, json};

use super::availability_zone;
use super::body::{Attrs, read_only};
use super::collection::{Action, Collection};
use crate::error::ApiError;
use crate::state::App;

impl Collection for Network {
    const PATH: &'static str = "networks";
    const SINGULAR: &'static str = "network";
    const PLURAL: &'static str = "networks";
    const ATTRIBUTES: &'static [&'static str] = &[
        "admin_state_up",
        "mtu",
        "status",
        "subnets",
        "shared",
        "port_security_enabled",
        "router:external",
        "is_default",
        "availability_zone_hints",
        "availability_zones",
        "ipv4_address_scope",
        "ipv6_address_scope",
        "l2_adjacency",
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ];
    type Create = NetworkCreate;
    type Update = NetworkUpdate;

    fn parse_create(mut a: Attrs) -> Result<NetworkCreate, ApiError> {
        let req = NetworkCreate {
            project_id: a.project()?,
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            tags: a.string_list("tags")?,
            admin_state_up: a.bool("admin_state_up")?,
            mtu: a.u32("mtu")?,
            shared: a.bool("shared")?,
            external: a.bool("router:external")?,
            port_security_enabled: a.bool("port_security_enabled")?,
            network_type: a.nullable_string("provider:network_type")?,
            segmentation_id: a.u32("provider:segmentation_id")?,
            physical_network: a.nullable_string("provider:physical_network")?,
            availability_zone_hints: a.string_list("availability_zone_hints")?,
            is_default: a.bool("is_default")?,
        };
        a.finish(&read_only(&[
            "status",
            "subnets",
            "l2_adjacency",
            "availability_zones",
        ]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<NetworkUpdate, ApiError> {
        let req = NetworkUpdate {
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            admin_state_up: a.bool("admin_state_up")?,
            mtu: a.u32("mtu")?,
            shared: a.bool("shared")?,
            external: a.bool("router:external")?,
            port_security_enabled: a.bool("port_security_enabled")?,
            is_default: a.bool("is_default")?,
        };
        a.finish(&read_only(&[
            "status",
            "subnets",
            "project_id",
            "tenant_id",
            "provider:network_type",
            "provider:segmentation_id",
            "provider:physical_network",
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
            Action::Create(req) => Some(cloud.create_network(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_network(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_network(caller, &id).map(|()| None)?,
        })
    }

    fn check_create(app: &App, req: &NetworkCreate) -> Result<(), ApiError> {
        let hints = req.availability_zone_hints.as_deref().unwrap_or_default();
        availability_zone::check_hints(app, hints, availability_zone::Resource::Network)
    }

    /// Its zones are where the compiler has it carried.
    fn adjust(&self, app: &App, _: &Cloud, name: &str, value: &mut Value) {
        if name == "availability_zones" {
            *value = availability_zone::network_zones(app, &self.std.id);
        }
    }

    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "admin_state_up" => json!(self.admin_state_up),
            "mtu" => json!(self.mtu),
            "status" => json!("ACTIVE"),
            "subnets" => json!(cloud.subnets_of(&self.std.id)),
            // As the caller sees it: shared with it, or with everyone.
            "shared" => {
                json!(cloud.shared_with(ObjectType::Network, &self.std.id, &caller.project_id))
            }
            "port_security_enabled" => json!(self.port_security_enabled),
            "router:external" => json!(cloud.is_external(&self.std.id)),
            "is_default" => json!(self.is_default),
            "l2_adjacency" => json!(true),
            "availability_zone_hints" => json!(self.availability_zone_hints),
            // Where it is carried: the API's to say (see `adjust`).
            "availability_zones" => json!([]),
            "ipv4_address_scope" | "ipv6_address_scope" => Value::Null,
            "provider:network_type" if caller.is_admin => json!(self.network_type),
            "provider:physical_network" if caller.is_admin => json!(self.physical_network),
            // A flat network has no segment id (null, as in Neutron).
            "provider:segmentation_id" if caller.is_admin && self.is_flat() => Value::Null,
            "provider:segmentation_id" if caller.is_admin => json!(self.segmentation_id),
            _ => return None,
        })
    }
}
