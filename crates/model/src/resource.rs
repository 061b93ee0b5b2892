//! What every resource shares (Neutron's "standard attributes"), the kinds of
//! stored record and the [`Resource`] sum type the store persists, one key per
//! resource. The registry of kinds: the only place that lists them all.

use serde::{Deserialize, Serialize};

use crate::{
    AddressGroup, AutoAllocatedTopology, DefaultSecurityGroupRule, FloatingIp, MeteringLabel,
    MeteringLabelRule, Network, Port, Quota, RbacPolicy, Router, SecurityGroup, SecurityGroupRule,
    Subnet, SubnetPool, Timestamp,
};

/// A kind of stored record: one store key prefix and one table in the cloud
/// each. Not every kind is a Neutron collection (a project's `Quota` has its
/// own API); the API's collections are its business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Network,
    Subnet,
    Port,
    SecurityGroup,
    SecurityGroupRule,
    Router,
    FloatingIp,
    MeteringLabel,
    MeteringLabelRule,
    Quota,
    SubnetPool,
    DefaultSecurityGroupRule,
    AutoAllocatedTopology,
    RbacPolicy,
    AddressGroup,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Network,
        Kind::Subnet,
        Kind::Port,
        Kind::SecurityGroup,
        Kind::SecurityGroupRule,
        Kind::Router,
        Kind::FloatingIp,
        Kind::MeteringLabel,
        Kind::MeteringLabelRule,
        Kind::Quota,
        Kind::SubnetPool,
        Kind::DefaultSecurityGroupRule,
        Kind::AutoAllocatedTopology,
        Kind::RbacPolicy,
        Kind::AddressGroup,
    ];

    /// The store key prefix of this kind, e.g. `networks/`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Kind::Network => "networks/",
            Kind::Subnet => "subnets/",
            Kind::Port => "ports/",
            Kind::SecurityGroup => "security_groups/",
            Kind::SecurityGroupRule => "security_group_rules/",
            Kind::Router => "routers/",
            Kind::FloatingIp => "floatingips/",
            Kind::MeteringLabel => "metering_labels/",
            Kind::MeteringLabelRule => "metering_label_rules/",
            Kind::Quota => "quotas/",
            Kind::SubnetPool => "subnetpools/",
            Kind::DefaultSecurityGroupRule => "default_security_group_rules/",
            Kind::AutoAllocatedTopology => "auto_allocated_topologies/",
            Kind::RbacPolicy => "rbac_policies/",
            Kind::AddressGroup => "address_groups/",
        }
    }

    /// How error messages name this kind ("Network 1234 could not be found.").
    pub fn title(self) -> &'static str {
        match self {
            Kind::Network => "Network",
            Kind::Subnet => "Subnet",
            Kind::Port => "Port",
            Kind::SecurityGroup => "Security group",
            Kind::SecurityGroupRule => "Security group rule",
            Kind::Router => "Router",
            Kind::FloatingIp => "Floating IP",
            Kind::MeteringLabel => "Metering label",
            Kind::MeteringLabelRule => "Metering label rule",
            Kind::Quota => "Quota of project",
            Kind::SubnetPool => "Subnet pool",
            Kind::DefaultSecurityGroupRule => "Default security group rule",
            Kind::AutoAllocatedTopology => "Auto-allocated topology of project",
            Kind::RbacPolicy => "RBAC policy",
            Kind::AddressGroup => "Address group",
        }
    }

    pub fn key(self, id: &str) -> String {
        format!("{}{id}", self.key_prefix())
    }

    /// The kind and id a store key names, if it is a record's key.
    pub fn of_key(key: &str) -> Option<(Kind, &str)> {
        Kind::ALL
            .into_iter()
            .find_map(|k| key.strip_prefix(k.key_prefix()).map(|id| (k, id)))
    }
}

/// Attributes every resource carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standard {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub revision_number: u64,
}

impl Standard {
    pub fn new(id: String, project_id: String, now: Timestamp) -> Self {
        Standard {
            id,
            project_id,
            name: String::new(),
            description: String::new(),
            tags: Vec::new(),
            created_at: now,
            updated_at: now,
            revision_number: 0,
        }
    }

    /// Record one more change: Neutron bumps the revision on every update.
    pub fn touch(&mut self, now: Timestamp) {
        self.revision_number += 1;
        self.updated_at = now;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    Network(Network),
    Subnet(Subnet),
    Port(Port),
    SecurityGroup(SecurityGroup),
    SecurityGroupRule(SecurityGroupRule),
    Router(Router),
    FloatingIp(FloatingIp),
    MeteringLabel(MeteringLabel),
    MeteringLabelRule(MeteringLabelRule),
    Quota(Quota),
    SubnetPool(SubnetPool),
    DefaultSecurityGroupRule(DefaultSecurityGroupRule),
    AutoAllocatedTopology(AutoAllocatedTopology),
    RbacPolicy(RbacPolicy),
    AddressGroup(AddressGroup),
}

/// Runs `$body` with the type `$R` standing for the record type of `$kind`:
/// the one place a `Kind` is turned into a type.
macro_rules! with_kind {
    ($kind:expr, $R:ident => $body:expr) => {
        match $kind {
            $crate::Kind::Network => {
                type $R = $crate::Network;
                $body
            }
            $crate::Kind::Subnet => {
                type $R = $crate::Subnet;
                $body
            }
            $crate::Kind::Port => {
                type $R = $crate::Port;
                $body
            }
            $crate::Kind::SecurityGroup => {
                type $R = $crate::SecurityGroup;
                $body
            }
            $crate::Kind::SecurityGroupRule => {
                type $R = $crate::SecurityGroupRule;
                $body
            }
            $crate::Kind::Router => {
                type $R = $crate::Router;
                $body
            }
            $crate::Kind::FloatingIp => {
                type $R = $crate::FloatingIp;
                $body
            }
            $crate::Kind::MeteringLabel => {
                type $R = $crate::MeteringLabel;
                $body
            }
            $crate::Kind::MeteringLabelRule => {
                type $R = $crate::MeteringLabelRule;
                $body
            }
            $crate::Kind::Quota => {
                type $R = $crate::Quota;
                $body
            }
            $crate::Kind::SubnetPool => {
                type $R = $crate::SubnetPool;
                $body
            }
            $crate::Kind::DefaultSecurityGroupRule => {
                type $R = $crate::DefaultSecurityGroupRule;
                $body
            }
            $crate::Kind::AutoAllocatedTopology => {
                type $R = $crate::AutoAllocatedTopology;
                $body
            }
            $crate::Kind::RbacPolicy => {
                type $R = $crate::RbacPolicy;
                $body
            }
            $crate::Kind::AddressGroup => {
                type $R = $crate::AddressGroup;
                $body
            }
        }
    };
}

/// Runs `$body` with `$r` bound to the record inside `$resource` (and `$k`,
/// if named, to its kind): the one place a `Resource` is opened.
macro_rules! with_record {
    ($resource:expr, $r:ident => $body:expr) => {
        with_record!($resource, $r, _kind => $body)
    };
    ($resource:expr, $r:ident, $k:ident => $body:expr) => {
        match $resource {
            $crate::Resource::Network($r) => { let $k = $crate::Kind::Network; $body }
            $crate::Resource::Subnet($r) => { let $k = $crate::Kind::Subnet; $body }
            $crate::Resource::Port($r) => { let $k = $crate::Kind::Port; $body }
            $crate::Resource::SecurityGroup($r) => { let $k = $crate::Kind::SecurityGroup; $body }
            $crate::Resource::SecurityGroupRule($r) => {
                let $k = $crate::Kind::SecurityGroupRule;
                $body
            }
            $crate::Resource::Router($r) => { let $k = $crate::Kind::Router; $body }
            $crate::Resource::FloatingIp($r) => { let $k = $crate::Kind::FloatingIp; $body }
            $crate::Resource::MeteringLabel($r) => {
                let $k = $crate::Kind::MeteringLabel;
                $body
            }
            $crate::Resource::MeteringLabelRule($r) => {
                let $k = $crate::Kind::MeteringLabelRule;
                $body
            }
            $crate::Resource::Quota($r) => { let $k = $crate::Kind::Quota; $body }
            $crate::Resource::SubnetPool($r) => { let $k = $crate::Kind::SubnetPool; $body }
            $crate::Resource::DefaultSecurityGroupRule($r) => {
                let $k = $crate::Kind::DefaultSecurityGroupRule;
                $body
            }
            $crate::Resource::AutoAllocatedTopology($r) => {
                let $k = $crate::Kind::AutoAllocatedTopology;
                $body
            }
            $crate::Resource::RbacPolicy($r) => { let $k = $crate::Kind::RbacPolicy; $body }
            $crate::Resource::AddressGroup($r) => { let $k = $crate::Kind::AddressGroup; $body }
        }
    };
}

pub(crate) use {with_kind, with_record};

impl Resource {
    pub fn kind(&self) -> Kind {
        with_record!(self, _r, kind => kind)
    }

    pub fn standard(&self) -> &Standard {
        with_record!(self, r => &r.std)
    }

    pub fn standard_mut(&mut self) -> &mut Standard {
        with_record!(self, r => &mut r.std)
    }

    pub fn id(&self) -> &str {
        &self.standard().id
    }

    pub fn key(&self) -> String {
        self.kind().key(self.id())
    }
}
