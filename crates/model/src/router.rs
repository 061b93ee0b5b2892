//! Routers and floating IPs: the L3 resources of Neutron's API (routers with
//! their gateway and extra routes, floating IPs with their port forwardings).
//! Plain data and requests; the rules that tie them to ports live in `Cloud`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{FixedIp, FixedIpRequest, HostRoute, Standard};

/// `device_owner` of the ports vnet creates for routers and floating IPs.
pub const OWNER_ROUTER_INTERFACE: &str = "network:router_interface";
pub const OWNER_ROUTER_GATEWAY: &str = "network:router_gateway";
pub const OWNER_FLOATING_IP: &str = "network:floatingip";

/// How many extra routes a router may hold (Neutron's `max_routes`).
pub const MAX_ROUTES: usize = 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    pub std: Standard,
    pub admin_state_up: bool,
    pub gateway: Option<Gateway>,
    pub routes: Vec<HostRoute>,
    pub availability_zone_hints: Vec<String>,
}

/// A router's uplink to an external network, through its gateway port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub network_id: String,
    pub enable_snat: bool,
    pub port_id: String,
    pub external_fixed_ips: Vec<FixedIp>,
}

#[derive(Clone, Debug, Default)]
pub struct RouterCreate {
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub availability_zone_hints: Option<Vec<String>>,
    pub attributes: RouterUpdate,
}

#[derive(Clone, Debug, Default)]
pub struct RouterUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    /// `Some(None)`: remove the gateway.
    pub gateway: Option<Option<GatewayRequest>>,
    pub routes: Option<Vec<HostRoute>>,
    /// Neutron's `dvr` and `l3-ha` flags, the operator's to set. vnet's
    /// routers are always distributed, and never HA in Neutron's sense
    /// (standby copies): only the values that say so are taken.
    pub distributed: Option<bool>,
    pub ha: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct GatewayRequest {
    pub network_id: String,
    pub enable_snat: Option<bool>,
    pub external_fixed_ips: Option<Vec<FixedIpRequest>>,
}

/// `add_router_interface`/`remove_router_interface`: by subnet or by port.
#[derive(Clone, Debug, Default)]
pub struct InterfaceRequest {
    pub subnet_id: Option<String>,
    pub port_id: Option<String>,
}

/// What an interface call answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub router_id: String,
    pub project_id: String,
    pub port_id: String,
    pub network_id: String,
    pub subnet_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub std: Standard,
    pub floating_network_id: String,
    pub subnet_id: String,
    pub floating_ip_address: IpAddr,
    /// The `network:floatingip` port that holds the address.
    pub floating_port_id: String,
    pub association: Option<Association>,
    pub port_forwardings: Vec<PortForwarding>,
}

/// A floating IP's internal end: a port's fixed IP, behind a router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Association {
    pub port_id: String,
    pub fixed_ip_address: IpAddr,
    pub router_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForwarding {
    pub id: String,
    pub protocol: String,
    pub external_port: u16,
    pub internal_port: u16,
    pub internal_port_id: String,
    pub internal_ip_address: IpAddr,
    pub description: String,
    /// The router the internal port is reached through.
    pub router_id: String,
}

impl FloatingIp {
    /// The router the floating IP is reached through, if any.
    pub fn router_id(&self) -> Option<&str> {
        self.association
            .as_ref()
            .map(|a| a.router_id.as_str())
            .or_else(|| self.port_forwardings.first().map(|p| p.router_id.as_str()))
    }

    /// (internal port, router) of its association and of each forwarding.
    pub fn targets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.association
            .iter()
            .map(|a| (a.port_id.as_str(), a.router_id.as_str()))
            .chain(
                self.port_forwardings
                    .iter()
                    .map(|p| (p.internal_port_id.as_str(), p.router_id.as_str())),
            )
    }
}

#[derive(Clone, Debug, Default)]
pub struct FloatingIpCreate {
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub description: Option<String>,
    pub floating_network_id: String,
    pub subnet_id: Option<String>,
    pub floating_ip_address: Option<IpAddr>,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<IpAddr>,
}

#[derive(Clone, Debug, Default)]
pub struct FloatingIpUpdate {
    pub description: Option<String>,
    /// `Some(None)`: disassociate.
    pub port_id: Option<Option<String>>,
    pub fixed_ip_address: Option<IpAddr>,
}

#[derive(Clone, Debug, Default)]
pub struct PortForwardingRequest {
    pub protocol: Option<String>,
    pub external_port: Option<u16>,
    pub internal_port: Option<u16>,
    pub internal_port_id: Option<String>,
    pub internal_ip_address: Option<IpAddr>,
    pub description: Option<String>,
}

/// Protocols a port forwarding may name.
pub const FORWARDING_PROTOCOLS: [&str; 4] = ["tcp", "udp", "udplite", "sctp"];
