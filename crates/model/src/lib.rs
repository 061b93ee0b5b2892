//! vnet's logical model: the tenant-visible resources (networks, subnets and
//! subnet pools, ports, security groups, their rules and the templates of
//! new groups' rules, address groups, routers and floating IPs, metering
//! labels, and the RBAC policies that share them), their validation, IPAM and the MAC/VNI allocators,
//! and [`Cloud`], the in-memory topology every mutation is applied to.
//! Pure: no I/O, no clock (timestamps are passed in), no OS randomness (a seeded
//! generator is passed in). Knows nothing of HTTP, JSON shapes or the store.

mod address_group;
mod auto_allocated_topology;
mod cloud;
mod default_security_group_rule;
mod error;
mod ipam;
mod mac;
mod metering;
mod network;
mod port;
mod quota;
mod rbac;
mod resource;
mod rng;
mod router;
mod security_group;
mod stored;
mod subnet;
mod subnet_pool;

pub use address_group::{AddressGroup, AddressGroupCreate, AddressGroupUpdate};
pub use auto_allocated_topology::AutoAllocatedTopology;
pub use cloud::{
    Allocated, Caller, Change, Cloud, CloudConfig, Facet, FacetIds, SubnetAvailability, TagEdit,
};
pub use default_security_group_rule::{DefaultRuleCreate, DefaultSecurityGroupRule, PARENT};
pub use error::ModelError;
pub use ipam::{IpRange, eui64};
pub use mac::MacAddr;
pub use metering::{
    MeteringLabel, MeteringLabelCreate, MeteringLabelRule, MeteringLabelRuleCreate,
};
pub use network::{FLAT, Network, NetworkCreate, NetworkUpdate, VXLAN};
pub use port::{
    AddressPair, AddressPairRequest, ExtraDhcpOpt, FixedIp, FixedIpRequest, Port, PortCreate,
    PortStatus, PortUpdate,
};
pub use quota::{Limits, QUOTA_KINDS, Quota, default_limits, quota_name};
pub use rbac::{ObjectType, RbacAction, RbacPolicy, RbacPolicyCreate, RbacPolicyUpdate, WILDCARD};
pub use resource::{Kind, Resource, Standard};
pub use rng::SplitMix64;
pub use router::{
    Association, FORWARDING_PROTOCOLS, FloatingIp, FloatingIpCreate, FloatingIpUpdate, Gateway,
    GatewayRequest, InterfaceInfo, InterfaceRequest, MAX_ROUTES, OWNER_FLOATING_IP,
    OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, PortForwarding, PortForwardingRequest, Router,
    RouterCreate, RouterUpdate,
};
pub use security_group::{
    Direction, Ethertype, RuleCreate, SecurityGroup, SecurityGroupCreate, SecurityGroupRule,
    SecurityGroupUpdate, protocol_number,
};
pub use stored::Stored;
pub use subnet::{HostRoute, Ipv6Mode, Subnet, SubnetCreate, SubnetUpdate};
pub use subnet_pool::{SubnetPool, SubnetPoolCreate, SubnetPoolUpdate};

/// Seconds since the Unix epoch, supplied by the caller.
pub type Timestamp = i64;
