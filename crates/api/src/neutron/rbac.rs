//! `/v2.0/rbac-policies`: a policy's attributes in (Neutron's conversions
//! and validators for `object_type` and `target_tenant`), its view out.
//! Who may make which policy, and what a policy grants, are the model's.

use model::{
    Caller, Cloud, ModelError, ObjectType, RbacPolicy, RbacPolicyCreate, RbacPolicyUpdate,
    Timestamp, WILDCARD,
};
use serde_json::{Value, json};

use super::body::{Attrs, invalid, read_only};
use super::collection::{Action, Collection};
use crate::error::ApiError;

impl Collection for RbacPolicy {
    const PATH: &'static str = "rbac-policies";
    const SINGULAR: &'static str = "rbac_policy";
    const PLURAL: &'static str = "rbac_policies";
    const STANDARD: &'static [&'static str] = &["id", "project_id", "tenant_id"];
    const ATTRIBUTES: &'static [&'static str] = &[
        "object_type",
        "object_id",
        "action",
        "target_tenant",
        "target_project",
    ];
    type Create = RbacPolicyCreate;
    type Update = RbacPolicyUpdate;

    fn parse_create(mut a: Attrs) -> Result<RbacPolicyCreate, ApiError> {
        let object_type = a.required("object_type", Attrs::string)?;
        let object_type = object_type_of(&object_type)?;
        let object_id = a.required("object_id", Attrs::string)?;
        if !uuid_like(&object_id) {
            return Err(invalid(
                "object_id",
                format!("'{object_id}' is not a valid UUID"),
            ));
        }
        let req = RbacPolicyCreate {
            project_id: a.project()?,
            object_type,
            object_id,
            action: a.required("action", Attrs::string)?,
            target_project: target(&mut a)?.ok_or_else(|| {
                ApiError::bad_request(
                    "Failed to parse request. Required attribute 'target_tenant' not specified",
                )
            })?,
        };
        a.finish(&read_only(&[]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<RbacPolicyUpdate, ApiError> {
        let req = RbacPolicyUpdate {
            target_project: target(&mut a)?,
        };
        a.finish(&read_only(&[
            "object_type",
            "object_id",
            "action",
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
            Action::Create(req) => Some(cloud.create_rbac_policy(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_rbac_policy(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_rbac_policy(caller, &id, now).map(|()| None)?,
        })
    }

    fn own_attribute(&self, _: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "object_type" => json!(self.object_type.as_str()),
            "object_id" => json!(self.object_id),
            "action" => json!(self.action.as_str()),
            // Neutron shows the target under its old name and its new one.
            "target_tenant" | "target_project" => json!(self.target_project),
            _ => return None,
        })
    }
}

/// Neutron's `convert_valid_object_type`, over the types vnet has: address
/// scopes, address groups and QoS policies are refused as unknown types.
fn object_type_of(given: &str) -> Result<ObjectType, ApiError> {
    ObjectType::parse(&given.trim().to_lowercase()).ok_or_else(|| {
        ApiError::invalid_input(format!("'{given}' is not a valid RBAC object type"))
    })
}

/// `target_tenant`, or its newer name `target_project` (both must agree):
/// a project id (UUID-like, as Keystone's) or `*`.
fn target(a: &mut Attrs) -> Result<Option<String>, ApiError> {
    let tenant = a.string("target_tenant")?;
    let project = a.string("target_project")?;
    let (name, value) = match (tenant, project) {
        (Some(t), Some(p)) if t != p => {
            return Err(ApiError::bad_request(
                "'target_project' and 'target_tenant' do not match",
            ));
        }
        (Some(t), _) => ("target_tenant", t),
        (None, Some(p)) => ("target_project", p),
        (None, None) => return Ok(None),
    };
    if value != WILDCARD && !uuid_like(&value) {
        return Err(invalid(
            name,
            format!("'{value}' is not a valid target project ID; expected a UUID or '*'"),
        ));
    }
    Ok(Some(value))
}

/// oslo's `is_uuid_like`: 32 hex digits, with or without the dashes of the
/// canonical form.
fn uuid_like(s: &str) -> bool {
    let dashed = s.len() == 36
        && s.char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    (s.len() == 32 || dashed)
        && s.chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::uuid_like;

    #[test]
    fn uuid_like_is_osloish() {
        assert!(uuid_like("0123456789abcdef0123456789ABCDEF"));
        assert!(uuid_like("01234567-89ab-cdef-0123-456789abcdef"));
        assert!(!uuid_like("0123456789abcdef0123456789abcde"));
        assert!(!uuid_like("0123456789-abcdef-0123456789abcdef"));
        assert!(!uuid_like("proj-a"));
        assert!(!uuid_like(&"1234".repeat(100)));
    }
}
