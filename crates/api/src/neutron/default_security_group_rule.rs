//! `/v2.0/default-security-group-rules` (Neutron's
//! security-groups-default-rules): the templates of new groups' rules, as
//! Neutron renders them (an id and a description, no project, tags or
//! timestamps). Templates are not updatable (PUT is 405); who may add or
//! remove them is the model's rule.

use std::convert::Infallible;

use model::{
    Caller, Cloud, DefaultRuleCreate, DefaultSecurityGroupRule, ModelError, PARENT, Timestamp,
};
use serde_json::{Value, json};

use super::body::{Attrs, read_only};
use super::collection::{Action, Collection};
use super::security_group::port_value;
use crate::error::ApiError;

impl Collection for DefaultSecurityGroupRule {
    const PATH: &'static str = "default-security-group-rules";
    const SINGULAR: &'static str = "default_security_group_rule";
    const PLURAL: &'static str = "default_security_group_rules";
    const STANDARD: &'static [&'static str] = &["id", "description"];
    const ATTRIBUTES: &'static [&'static str] = &[
        "direction",
        "ethertype",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_group_id",
        "remote_address_group_id",
        "used_in_default_sg",
        "used_in_non_default_sg",
    ];
    const NAMED: bool = false;
    type Create = DefaultRuleCreate;
    type Update = Infallible;

    fn parse_create(mut a: Attrs) -> Result<DefaultRuleCreate, ApiError> {
        let req = DefaultRuleCreate {
            description: a.string_or_null("description")?,
            direction: a.string("direction")?,
            ethertype: a.string("ethertype")?,
            protocol: a.string_or_number("protocol")?,
            port_range_min: port_value(&mut a, "port_range_min")?,
            port_range_max: port_value(&mut a, "port_range_max")?,
            remote_ip_prefix: a.nullable_string("remote_ip_prefix")?,
            remote_group_id: a.nullable_string("remote_group_id")?,
            used_in_default_sg: a.bool("used_in_default_sg")?,
            used_in_non_default_sg: a.bool("used_in_non_default_sg")?,
        };
        if a.nullable_string("remote_address_group_id")?.is_some() {
            return Err(ApiError::invalid_input("address groups are not supported"));
        }
        a.finish(&read_only(&[]))?;
        Ok(req)
    }

    fn parse_update(_: Attrs) -> Result<Infallible, ApiError> {
        Err(ApiError::method_not_allowed())
    }

    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError> {
        Ok(match action {
            Action::Create(req) => Some(cloud.create_default_rule(caller, req, now)?),
            Action::Update(_, never) => match never {},
            Action::Delete(id) => cloud.delete_default_rule(caller, &id).map(|()| None)?,
        })
    }

    fn own_attribute(&self, _: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "direction" => json!(self.direction.as_str()),
            "ethertype" => json!(self.ethertype.as_str()),
            "protocol" => json!(self.protocol),
            "port_range_min" => json!(self.port_range_min),
            "port_range_max" => json!(self.port_range_max),
            "remote_ip_prefix" => json!(self.remote_ip_prefix.map(|p| p.to_string())),
            "remote_group_id" => json!(self.remote_is_parent.then_some(PARENT)),
            "remote_address_group_id" => Value::Null,
            "used_in_default_sg" => json!(self.used_in_default_sg),
            "used_in_non_default_sg" => json!(self.used_in_non_default_sg),
            _ => return None,
        })
    }
}
