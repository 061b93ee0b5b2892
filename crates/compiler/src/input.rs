//! What the compiler is fed: one change of the topology at a time, as the
//! server sees it in the store's watch (resources) and in agent registrations
//! (hosts). Plain data; it must not carry anything derived.

use std::net::IpAddr;

use model::{
    AddressGroup, FloatingIp, Kind, MeteringLabel, MeteringLabelRule, Network, Port, Resource,
    Router, SecurityGroup, SecurityGroupRule, Subnet,
};

/// One change of the topology. A put is an upsert: anything about the resource
/// may differ from its previous put (a port's network, binding host, MAC, IPs).
/// A delete of something the compiler does not know is a no-op.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Network(Box<Network>),
    NetworkDeleted(String),
    Subnet(Box<Subnet>),
    SubnetDeleted(String),
    Port(Box<Port>),
    PortDeleted(String),
    SecurityGroup(Box<SecurityGroup>),
    SecurityGroupDeleted(String),
    /// A rule may arrive before its group and may move between groups.
    SecurityGroupRule(Box<SecurityGroupRule>),
    SecurityGroupRuleDeleted(String),
    /// Its addresses, for the hosts whose rules name it.
    AddressGroup(Box<AddressGroup>),
    AddressGroupDeleted(String),
    /// A router's own attributes (its extra routes); its interfaces are
    /// the ports it owns (`network:router_interface`, `device_id` = router).
    Router(Box<Router>),
    RouterDeleted(String),
    /// Realised on the host of its associated port (or of its first port
    /// forwarding's port), through its router there.
    FloatingIp(Box<FloatingIp>),
    FloatingIpDeleted(String),
    /// Counted on the uplinks of its project's routers, or of every router
    /// if shared.
    MeteringLabel(Box<MeteringLabel>),
    MeteringLabelDeleted(String),
    /// A rule may arrive before its label.
    MeteringLabelRule(Box<MeteringLabelRule>),
    MeteringLabelRuleDeleted(String),
    /// A host's agent registered, or what it registered changed, or its
    /// liveness as a gateway did. Repeating it unchanged yields no changes.
    Host {
        name: String,
        underlay_ip: IpAddr,
        /// The physical networks its agent maps.
        physical_networks: Vec<String>,
        /// It may run routers' default SNAT now: started with `--gateway`
        /// and not reaped as dead.
        gateway: bool,
        /// Its availability zone.
        availability_zone: String,
    },
    /// The host is gone for good: others stop sending its ports' traffic to it.
    HostDeleted(String),
}

impl Input {
    /// A resource the store holds (written or loaded), as input; `None` for
    /// what is not a resource of the data plane (quotas; subnet pools: a
    /// subnet carries its CIDR whatever pool it came from; RBAC policies:
    /// who may use a network or group changes no packet's path, and a port
    /// of another project on a shared network is a port like any other).
    pub fn put(resource: Resource) -> Option<Input> {
        match resource {
            Resource::Network(n) => Some(Input::Network(Box::new(n))),
            Resource::Subnet(s) => Some(Input::Subnet(Box::new(s))),
            Resource::Port(p) => Some(Input::Port(Box::new(p))),
            Resource::SecurityGroup(g) => Some(Input::SecurityGroup(Box::new(g))),
            Resource::SecurityGroupRule(r) => Some(Input::SecurityGroupRule(Box::new(r))),
            Resource::AddressGroup(g) => Some(Input::AddressGroup(Box::new(g))),
            Resource::Router(r) => Some(Input::Router(Box::new(r))),
            Resource::FloatingIp(f) => Some(Input::FloatingIp(Box::new(f))),
            Resource::MeteringLabel(l) => Some(Input::MeteringLabel(Box::new(l))),
            Resource::MeteringLabelRule(r) => Some(Input::MeteringLabelRule(Box::new(r))),
            Resource::Quota(_)
            | Resource::SubnetPool(_)
            | Resource::DefaultSecurityGroupRule(_)
            | Resource::AutoAllocatedTopology(_)
            | Resource::RbacPolicy(_) => None,
        }
    }

    /// A resource deleted from the store, as input; `None` as for [`Input::put`].
    pub fn deleted(kind: Kind, id: String) -> Option<Input> {
        match kind {
            Kind::Network => Some(Input::NetworkDeleted(id)),
            Kind::Subnet => Some(Input::SubnetDeleted(id)),
            Kind::Port => Some(Input::PortDeleted(id)),
            Kind::SecurityGroup => Some(Input::SecurityGroupDeleted(id)),
            Kind::SecurityGroupRule => Some(Input::SecurityGroupRuleDeleted(id)),
            Kind::AddressGroup => Some(Input::AddressGroupDeleted(id)),
            Kind::Router => Some(Input::RouterDeleted(id)),
            Kind::FloatingIp => Some(Input::FloatingIpDeleted(id)),
            Kind::MeteringLabel => Some(Input::MeteringLabelDeleted(id)),
            Kind::MeteringLabelRule => Some(Input::MeteringLabelRuleDeleted(id)),
            Kind::Quota
            | Kind::SubnetPool
            | Kind::DefaultSecurityGroupRule
            | Kind::AutoAllocatedTopology
            | Kind::RbacPolicy => None,
        }
    }
}
