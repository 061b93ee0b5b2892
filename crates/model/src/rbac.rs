//! RBAC policies: one project's grant of access to one object (a network, a
//! security group or a subnet pool) to another project, or to every project
//! (`*`). Pure values; who may see what because of them, and the checks
//! that keep a project's resources reachable, are `cloud/rbac.rs`'s.

use serde::{Deserialize, Serialize};

use crate::{Kind, Standard};

/// `target_tenant` of a policy that grants every project.
pub const WILDCARD: &str = "*";

/// What a policy grants access to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectType {
    Network,
    SecurityGroup,
    SubnetPool,
}

impl ObjectType {
    pub const ALL: [ObjectType; 3] = [
        ObjectType::Network,
        ObjectType::SecurityGroup,
        ObjectType::SubnetPool,
    ];

    /// Neutron's name for it (`object_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Network => "network",
            ObjectType::SecurityGroup => "security_group",
            ObjectType::SubnetPool => "subnetpool",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ObjectType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The kind of record it names.
    pub fn kind(self) -> Kind {
        match self {
            ObjectType::Network => Kind::Network,
            ObjectType::SecurityGroup => Kind::SecurityGroup,
            ObjectType::SubnetPool => Kind::SubnetPool,
        }
    }

    /// The actions a policy on this type may grant, as Neutron lists them.
    pub fn actions(self) -> &'static [RbacAction] {
        match self {
            ObjectType::Network => &[RbacAction::AccessAsShared, RbacAction::AccessAsExternal],
            ObjectType::SecurityGroup | ObjectType::SubnetPool => &[RbacAction::AccessAsShared],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RbacAction {
    /// Use it as if it were one's own (ports on a network, a group on one's
    /// ports and in one's rules, subnets from a pool).
    AccessAsShared,
    /// A network's floating IPs and router gateways (`router:external`).
    AccessAsExternal,
}

impl RbacAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RbacAction::AccessAsShared => "access_as_shared",
            RbacAction::AccessAsExternal => "access_as_external",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [RbacAction::AccessAsShared, RbacAction::AccessAsExternal]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// An RBAC policy. `std.project_id` is its owner (who made it: the
/// object's owner, or an admin); it has no name, description or tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacPolicy {
    pub std: Standard,
    pub object_type: ObjectType,
    pub object_id: String,
    pub action: RbacAction,
    /// A project id, or [`WILDCARD`].
    pub target_project: String,
}

#[derive(Clone, Debug)]
pub struct RbacPolicyCreate {
    pub project_id: Option<String>,
    pub object_type: ObjectType,
    pub object_id: String,
    /// As given: whether it is valid depends on the object type.
    pub action: String,
    pub target_project: String,
}

#[derive(Clone, Debug, Default)]
pub struct RbacPolicyUpdate {
    pub target_project: Option<String>,
}
