//! `/v2.0/metering/metering-labels` and `/v2.0/metering/metering-label-rules`
//! (Neutron's `metering` and `metering_source_and_destination_fields`): their
//! attributes in, their views out, as Neutron renders them (no tags, no
//! timestamps, no revision; a rule shows no project). Neither is updatable:
//! a PUT is 405, as Neutron's metering plugin has no update. Policy and rule
//! checks are the model's.

use std::convert::Infallible;

use model::{
    Caller, Cloud, MeteringLabel, MeteringLabelCreate, MeteringLabelRule, MeteringLabelRuleCreate,
    ModelError, Timestamp,
};
use serde_json::{Value, json};

use super::body::{Attrs, invalid, read_only};
use super::collection::{Action, Collection};
use crate::error::ApiError;

impl Collection for MeteringLabel {
    const PATH: &'static str = "metering/metering-labels";
    const SINGULAR: &'static str = "metering_label";
    const PLURAL: &'static str = "metering_labels";
    const STANDARD: &'static [&'static str] =
        &["id", "name", "description", "project_id", "tenant_id"];
    const ATTRIBUTES: &'static [&'static str] = &["shared"];
    type Create = MeteringLabelCreate;
    type Update = Infallible;

    fn parse_create(mut a: Attrs) -> Result<MeteringLabelCreate, ApiError> {
        let req = MeteringLabelCreate {
            project_id: a.project()?,
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            shared: a.bool("shared")?,
        };
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
            Action::Create(req) => Some(cloud.create_metering_label(caller, req, now)?),
            Action::Update(_, never) => match never {},
            Action::Delete(id) => cloud.delete_metering_label(caller, &id).map(|()| None)?,
        })
    }

    fn own_attribute(&self, _: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        match name {
            "shared" => Some(json!(self.shared)),
            _ => None,
        }
    }
}

impl Collection for MeteringLabelRule {
    const PATH: &'static str = "metering/metering-label-rules";
    const SINGULAR: &'static str = "metering_label_rule";
    const PLURAL: &'static str = "metering_label_rules";
    const STANDARD: &'static [&'static str] = &["id"];
    const ATTRIBUTES: &'static [&'static str] = &[
        "metering_label_id",
        "direction",
        "excluded",
        "remote_ip_prefix",
        "source_ip_prefix",
        "destination_ip_prefix",
    ];
    const NAMED: bool = false;
    type Create = MeteringLabelRuleCreate;
    type Update = Infallible;

    fn parse_create(mut a: Attrs) -> Result<MeteringLabelRuleCreate, ApiError> {
        let metering_label_id = a.required("metering_label_id", Attrs::string)?;
        if !is_uuid(&metering_label_id) {
            return Err(invalid(
                "metering_label_id",
                format!("'{metering_label_id}' is not a valid UUID"),
            ));
        }
        let direction = a.required("direction", Attrs::string)?;
        if !matches!(direction.as_str(), "ingress" | "egress") {
            return Err(invalid(
                "direction",
                format!("'{direction}' is not in ['ingress', 'egress']"),
            ));
        }
        let req = MeteringLabelRuleCreate {
            project_id: a.project()?,
            metering_label_id,
            direction,
            excluded: a.bool("excluded")?,
            remote_ip_prefix: a.nullable_string("remote_ip_prefix")?,
            source_ip_prefix: a.nullable_string("source_ip_prefix")?,
            destination_ip_prefix: a.nullable_string("destination_ip_prefix")?,
        };
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
            Action::Create(req) => Some(cloud.create_metering_label_rule(caller, req, now)?),
            Action::Update(_, never) => match never {},
            Action::Delete(id) => cloud
                .delete_metering_label_rule(caller, &id)
                .map(|()| None)?,
        })
    }

    fn own_attribute(&self, _: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        let prefix = |p: Option<ipnet::IpNet>| json!(p.map(|p| p.to_string()));
        Some(match name {
            "metering_label_id" => json!(self.metering_label_id),
            "direction" => json!(self.direction.as_str()),
            "excluded" => json!(self.excluded),
            "remote_ip_prefix" => prefix(self.remote_ip_prefix),
            "source_ip_prefix" => prefix(self.source_ip_prefix),
            "destination_ip_prefix" => prefix(self.destination_ip_prefix),
            _ => return None,
        })
    }
}

/// neutron-lib's `type:uuid`: 8-4-4-4-12 hex digits (any case).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
