//! Templates of the rules new security groups start with (Neutron's
//! security-groups-default-rules): what a template is and how it becomes a
//! rule of one group. Which templates exist is the cloud's.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::security_group::build_rule;
use crate::{Direction, Ethertype, ModelError, RuleCreate, SecurityGroupRule, Standard};

/// How a template names the group being made as its remote group.
pub const PARENT: &str = "PARENT";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultSecurityGroupRule {
    /// Its project stays empty: a template belongs to the cloud.
    pub std: Standard,
    pub direction: Direction,
    pub ethertype: Ethertype,
    pub protocol: Option<String>,
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<IpNet>,
    /// The remote group is the new group itself (`PARENT`).
    pub remote_is_parent: bool,
    /// Given to each project's `default` group.
    pub used_in_default_sg: bool,
    /// Given to every other new group.
    pub used_in_non_default_sg: bool,
}

#[derive(Clone, Debug, Default)]
pub struct DefaultRuleCreate {
    pub description: Option<String>,
    pub direction: Option<String>,
    pub ethertype: Option<String>,
    pub protocol: Option<String>,
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub used_in_default_sg: Option<bool>,
    pub used_in_non_default_sg: Option<bool>,
}

impl DefaultSecurityGroupRule {
    /// A template from a request, validated as a rule is (a template is a
    /// rule whose group is not known yet).
    pub fn build(std: Standard, req: DefaultRuleCreate) -> Result<Self, ModelError> {
        let remote_is_parent = match req.remote_group_id.as_deref() {
            None => false,
            Some(PARENT) => true,
            Some(other) => {
                return Err(ModelError::invalid(format!(
                    "a default rule's remote_group_id is {PARENT} (the group being made) or none, not '{other}'"
                )));
            }
        };
        let rule = build_rule(
            std,
            "",
            RuleCreate {
                project_id: None,
                description: req.description,
                security_group_id: String::new(),
                direction: req.direction,
                ethertype: req.ethertype,
                protocol: req.protocol,
                port_range_min: req.port_range_min,
                port_range_max: req.port_range_max,
                remote_ip_prefix: req.remote_ip_prefix,
                remote_group_id: req.remote_group_id,
                remote_address_group_id: None,
            },
        )?;
        Ok(DefaultSecurityGroupRule {
            std: rule.std,
            direction: rule.direction,
            ethertype: rule.ethertype,
            protocol: rule.protocol,
            port_range_min: rule.port_range_min,
            port_range_max: rule.port_range_max,
            remote_ip_prefix: rule.remote_ip_prefix,
            remote_is_parent,
            used_in_default_sg: req.used_in_default_sg.unwrap_or(false),
            used_in_non_default_sg: req.used_in_non_default_sg.unwrap_or(true),
        })
    }

    /// The rule it gives the group `group_id` of `project_id`.
    pub fn instantiate(&self, std: Standard, group_id: &str) -> SecurityGroupRule {
        SecurityGroupRule {
            std,
            security_group_id: group_id.to_owned(),
            direction: self.direction,
            ethertype: self.ethertype,
            protocol: self.protocol.clone(),
            port_range_min: self.port_range_min,
            port_range_max: self.port_range_max,
            remote_ip_prefix: self.remote_ip_prefix,
            remote_group_id: self.remote_is_parent.then(|| group_id.to_owned()),
            remote_address_group_id: None,
        }
    }

    /// Whether two templates give some group the same rule: the same rule,
    /// for a kind of group both are used in.
    pub fn clashes_with(&self, other: &DefaultSecurityGroupRule) -> bool {
        let same = |t: &DefaultSecurityGroupRule| {
            t.instantiate(Standard::new(String::new(), String::new(), 0), "g")
                .signature()
        };
        same(self) == same(other)
            && ((self.used_in_default_sg && other.used_in_default_sg)
                || (self.used_in_non_default_sg && other.used_in_non_default_sg))
    }
}

/// Neutron's built-in templates (its "legacy" rules): every group may send
/// anything; a project's default group also takes anything from its own
/// members.
pub fn legacy_templates() -> Vec<DefaultRuleCreate> {
    let mut out = Vec::new();
    for ethertype in ["IPv4", "IPv6"] {
        out.push(DefaultRuleCreate {
            description: Some("Legacy default SG rule for egress traffic".into()),
            direction: Some("egress".into()),
            ethertype: Some(ethertype.into()),
            used_in_default_sg: Some(true),
            used_in_non_default_sg: Some(true),
            ..DefaultRuleCreate::default()
        });
        out.push(DefaultRuleCreate {
            description: Some("Legacy default SG rule for ingress traffic".into()),
            direction: Some("ingress".into()),
            ethertype: Some(ethertype.into()),
            remote_group_id: Some(PARENT.into()),
            used_in_default_sg: Some(true),
            used_in_non_default_sg: Some(false),
            ..DefaultRuleCreate::default()
        });
    }
    out
}
