//! What every resource shares (Neutron's "standard attributes") and the
//! [`Resource`] sum type the store persists, one key per resource.

use serde::{Deserialize, Serialize};

use crate::{
    FloatingIp, Network, Port, Quota, Router, SecurityGroup, SecurityGroupRule, Subnet, Timestamp,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Network,
    Subnet,
    Port,
    SecurityGroup,
    SecurityGroupRule,
    Router,
    FloatingIp,
    Quota,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Network,
        Kind::Subnet,
        Kind::Port,
        Kind::SecurityGroup,
        Kind::SecurityGroupRule,
        Kind::Router,
        Kind::FloatingIp,
        Kind::Quota,
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
            Kind::Quota => "quotas/",
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
            Kind::Quota => "Quota of project",
        }
    }

    pub fn key(self, id: &str) -> String {
        format!("{}{id}", self.key_prefix())
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
    Quota(Quota),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Network(_) => Kind::Network,
            Resource::Subnet(_) => Kind::Subnet,
            Resource::Port(_) => Kind::Port,
            Resource::SecurityGroup(_) => Kind::SecurityGroup,
            Resource::SecurityGroupRule(_) => Kind::SecurityGroupRule,
            Resource::Router(_) => Kind::Router,
            Resource::FloatingIp(_) => Kind::FloatingIp,
            Resource::Quota(_) => Kind::Quota,
        }
    }

    pub fn standard(&self) -> &Standard {
        match self {
            Resource::Network(r) => &r.std,
            Resource::Subnet(r) => &r.std,
            Resource::Port(r) => &r.std,
            Resource::SecurityGroup(r) => &r.std,
            Resource::SecurityGroupRule(r) => &r.std,
            Resource::Router(r) => &r.std,
            Resource::FloatingIp(r) => &r.std,
            Resource::Quota(r) => &r.std,
        }
    }

    pub fn standard_mut(&mut self) -> &mut Standard {
        match self {
            Resource::Network(r) => &mut r.std,
            Resource::Subnet(r) => &mut r.std,
            Resource::Port(r) => &mut r.std,
            Resource::SecurityGroup(r) => &mut r.std,
            Resource::SecurityGroupRule(r) => &mut r.std,
            Resource::Router(r) => &mut r.std,
            Resource::FloatingIp(r) => &mut r.std,
            Resource::Quota(r) => &mut r.std,
        }
    }

    pub fn id(&self) -> &str {
        &self.standard().id
    }

    pub fn key(&self) -> String {
        self.kind().key(self.id())
    }
}
