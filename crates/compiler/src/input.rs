//! What the compiler is fed: one change of the topology at a time, as the
//! server sees it in the store's watch (resources) and in agent registrations
//! (hosts). Plain data; it must not carry anything derived.

use std::net::IpAddr;

use model::{Kind, Network, Port, Resource, Router, SecurityGroup, SecurityGroupRule, Subnet};

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
    /// A router's own attributes (its extra routes); its interfaces are
    /// the ports it owns (`network:router_interface`, `device_id` = router).
    Router(Box<Router>),
    RouterDeleted(String),
    /// A host's agent registered, or its underlay IP changed. Repeating it
    /// unchanged (a heartbeat) yields no changes.
    Host {
        name: String,
        underlay_ip: IpAddr,
    },
    /// The host is gone for good: others stop sending its ports' traffic to it.
    HostDeleted(String),
}

impl Input {
    /// A resource the store holds (written or loaded), as input; `None` for
    /// the kinds the data plane does not realise yet (floating IPs).
    pub fn put(resource: Resource) -> Option<Input> {
        match resource {
            Resource::Network(n) => Some(Input::Network(Box::new(n))),
            Resource::Subnet(s) => Some(Input::Subnet(Box::new(s))),
            Resource::Port(p) => Some(Input::Port(Box::new(p))),
            Resource::SecurityGroup(g) => Some(Input::SecurityGroup(Box::new(g))),
            Resource::SecurityGroupRule(r) => Some(Input::SecurityGroupRule(Box::new(r))),
            Resource::Router(r) => Some(Input::Router(Box::new(r))),
            // No data plane for floating IPs yet: API only.
            Resource::FloatingIp(_) | Resource::Quota(_) => None,
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
            Kind::Router => Some(Input::RouterDeleted(id)),
            Kind::FloatingIp | Kind::Quota => None,
        }
    }
}
