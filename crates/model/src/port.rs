//! Ports: a device's attachment to a network, with its MAC, fixed IPs, security
//! groups, allowed address pairs and binding.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{MacAddr, Standard};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortStatus {
    Down,
    Active,
    Build,
}

impl PortStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PortStatus::Down => "DOWN",
            PortStatus::Active => "ACTIVE",
            PortStatus::Build => "BUILD",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: IpAddr,
}

/// An address this port may also send from: an IP or a whole CIDR, with a MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: IpNet,
    pub mac_address: MacAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraDhcpOpt {
    pub opt_name: String,
    pub opt_value: String,
    pub ip_version: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub std: Standard,
    pub network_id: String,
    pub mac_address: MacAddr,
    pub admin_state_up: bool,
    pub status: PortStatus,
    pub device_id: String,
    pub device_owner: String,
    pub fixed_ips: Vec<FixedIp>,
    pub security_groups: Vec<String>,
    pub port_security_enabled: bool,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub extra_dhcp_opts: Vec<ExtraDhcpOpt>,
    pub binding_host_id: String,
    pub binding_vnic_type: String,
    /// `binding:profile`: opaque to vnet, kept as the JSON text it came as.
    pub binding_profile: String,
}

/// One requested fixed IP: by subnet, by address, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FixedIpRequest {
    pub subnet_id: Option<String>,
    pub ip_address: Option<IpAddr>,
}

/// An allowed address pair as requested: the MAC defaults to the port's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPairRequest {
    pub ip_address: IpNet,
    pub mac_address: Option<MacAddr>,
}

/// A create request: where the port goes and who owns it, plus every attribute
/// an update may also set.
#[derive(Clone, Debug, Default)]
pub struct PortCreate {
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub network_id: String,
    pub attributes: PortUpdate,
}

#[derive(Clone, Debug, Default)]
pub struct PortUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `Some(None)`: a new one of vnet's choosing (Neutron's
    /// port-mac-address-regenerate; on create, the same as not given).
    pub mac_address: Option<Option<MacAddr>>,
    pub admin_state_up: Option<bool>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    pub security_groups: Option<Vec<String>>,
    pub port_security_enabled: Option<bool>,
    pub allowed_address_pairs: Option<Vec<AddressPairRequest>>,
    pub extra_dhcp_opts: Option<Vec<ExtraDhcpOpt>>,
    pub binding_host_id: Option<String>,
    pub binding_vnic_type: Option<String>,
    pub binding_profile: Option<String>,
}

/// `binding:vnic_type` values vnet accepts.
/// Bounds on what one port may carry, so no caller grows a port (and the
/// state every host of its network holds) without limit. Address pairs are
/// Neutron's `max_allowed_address_pair`; fixed IPs follow Neutron's former
/// `max_fixed_ips_per_port` (removed there, kept here as a bound); extra
/// DHCP options are vnet's own (each goes into a DHCP answer).
pub const MAX_ALLOWED_ADDRESS_PAIRS: usize = 10;
pub const MAX_FIXED_IPS: usize = 32;
pub const MAX_EXTRA_DHCP_OPTS: usize = 64;

pub const VNIC_TYPES: [&str; 2] = ["normal", "direct"];
