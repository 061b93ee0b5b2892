//! `/v2.0/security-groups` and `/v2.0/security-group-rules`: a group's and a
//! rule's attributes in, their views out. Rule semantics are the model's.

use axum::http::StatusCode;
use model::{
    Caller, Cloud, Facet, ModelError, ObjectType, RuleCreate, SecurityGroup, SecurityGroupCreate,
    SecurityGroupRule, SecurityGroupUpdate, Timestamp,
};
use serde_json::{Value, json};

use super::body::{Attrs, read_only};
use super::collection::{Action, Collection, render, standard_facet};
use crate::error::ApiError;

impl Collection for SecurityGroup {
    const LIST_ENSURES_DEFAULT_GROUP: bool = true;
    const PATH: &'static str = "security-groups";
    const SINGULAR: &'static str = "security_group";
    const PLURAL: &'static str = "security_groups";
    const ATTRIBUTES: &'static [&'static str] = &["stateful", "shared", "security_group_rules"];
    type Create = SecurityGroupCreate;
    type Update = SecurityGroupUpdate;

    fn parse_create(mut a: Attrs) -> Result<SecurityGroupCreate, ApiError> {
        let req = SecurityGroupCreate {
            project_id: a.project()?,
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            tags: a.string_list("tags")?,
            stateful: a.bool("stateful")?,
        };
        a.finish(&read_only(&["security_group_rules", "shared"]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<SecurityGroupUpdate, ApiError> {
        let req = SecurityGroupUpdate {
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            stateful: a.bool("stateful")?,
        };
        a.finish(&read_only(&[
            "security_group_rules",
            "project_id",
            "tenant_id",
            "shared",
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
            Action::Create(req) => Some(cloud.create_security_group(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_security_group(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_security_group(caller, &id).map(|()| None)?,
        })
    }

    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "stateful" => json!(self.stateful),
            // security-groups-shared-filtering: shared with the caller's
            // project, or with everyone, by an RBAC policy.
            "shared" => json!(cloud.shared_with(
                ObjectType::SecurityGroup,
                &self.std.id,
                &caller.project_id
            )),
            "security_group_rules" => {
                let mut rules: Vec<&SecurityGroupRule> = cloud.rules_of(&self.std.id).collect();
                rules.sort_by(|a, b| {
                    (a.std.created_at, &a.std.id).cmp(&(b.std.created_at, &b.std.id))
                });
                json!(
                    rules
                        .into_iter()
                        .map(|r| render(r, cloud, caller, &[]))
                        .collect::<Vec<_>>()
                )
            }
            _ => return None,
        })
    }
}

impl Collection for SecurityGroupRule {
    const PATH: &'static str = "security-group-rules";

    fn facet<'w>(name: &str, wanted: &'w str) -> Option<(Facet, &'w str)> {
        match name {
            "security_group_id" => Some((Facet::SecurityGroup, wanted)),
            _ => standard_facet::<Self>(name, wanted),
        }
    }

    const SINGULAR: &'static str = "security_group_rule";
    const PLURAL: &'static str = "security_group_rules";
    const ATTRIBUTES: &'static [&'static str] = &[
        "security_group_id",
        "ethertype",
        "direction",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_address_group_id",
        "normalized_cidr",
        "remote_group_id",
        "belongs_to_default_sg",
    ];
    /// Rules have no `name`.
    const NAMED: bool = false;
    type Create = RuleCreate;
    type Update = Option<String>;

    fn parse_create(mut a: Attrs) -> Result<RuleCreate, ApiError> {
        let security_group_id = a.required("security_group_id", Attrs::string)?;
        let protocol = a.string_or_number("protocol")?;
        let req = RuleCreate {
            project_id: a.project()?,
            description: a.string_or_null("description")?,
            security_group_id,
            direction: a.string("direction")?,
            ethertype: a.string("ethertype")?,
            protocol,
            port_range_min: port_value(&mut a, "port_range_min")?,
            port_range_max: port_value(&mut a, "port_range_max")?,
            remote_ip_prefix: a.nullable_string("remote_ip_prefix")?,
            remote_group_id: a.nullable_string("remote_group_id")?,
            remote_address_group_id: a.nullable_string("remote_address_group_id")?,
        };
        a.finish(&read_only(&["normalized_cidr", "belongs_to_default_sg"]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<Option<String>, ApiError> {
        let description = a.string_or_null("description")?;
        a.finish(&read_only(&[
            "security_group_id",
            "direction",
            "ethertype",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "remote_group_id",
            "remote_address_group_id",
            "project_id",
            "tenant_id",
        ]))?;
        Ok(description)
    }

    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError> {
        Ok(match action {
            Action::Create(req) => Some(cloud.create_security_group_rule(caller, req, now)?),
            Action::Update(id, req) => {
                Some(cloud.update_security_group_rule(caller, &id, req, now)?)
            }
            Action::Delete(id) => cloud
                .delete_security_group_rule(caller, &id, now)
                .map(|()| None)?,
        })
    }

    fn own_attribute(&self, cloud: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "security_group_id" => json!(self.security_group_id),
            "ethertype" => json!(self.ethertype.as_str()),
            "direction" => json!(self.direction.as_str()),
            "protocol" => json!(self.protocol),
            "port_range_min" => json!(self.port_range_min),
            "port_range_max" => json!(self.port_range_max),
            "remote_ip_prefix" => json!(self.remote_ip_prefix.map(|p| p.to_string())),
            "remote_address_group_id" => json!(self.remote_address_group_id),
            "normalized_cidr" => json!(self.remote_ip_prefix.map(|p| p.trunc().to_string())),
            "remote_group_id" => json!(self.remote_group_id),
            "belongs_to_default_sg" => json!(
                cloud
                    .security_group(&self.security_group_id)
                    .is_some_and(|g| g.is_default)
            ),
            _ => return None,
        })
    }
}

/// Neutron's `convert_validate_port_value`: null, or a port number (integer
/// or decimal string) from 0 to 65535; anything else, negative numbers
/// included, is an invalid port value, named as given.
pub(super) fn port_value(a: &mut Attrs, name: &str) -> Result<Option<u32>, ApiError> {
    let value = match a.value(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let port = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match port
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p <= 65535)
    {
        Some(p) => Ok(Some(p)),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SecurityGroupInvalidPortValue",
            format!(
                "Invalid value for port {}.",
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            ),
        )),
    }
}
