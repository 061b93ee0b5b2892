//! Subnets: a CIDR on a network, its gateway, allocation pools, DNS servers and
//! host routes, and the checks Neutron applies to them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ipam::{self, IpRange};
use crate::{ModelError, Standard};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ipv6Mode {
    Slaac,
    Dhcpv6Stateful,
    Dhcpv6Stateless,
}

impl Ipv6Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Mode::Slaac => "slaac",
            Ipv6Mode::Dhcpv6Stateful => "dhcpv6-stateful",
            Ipv6Mode::Dhcpv6Stateless => "dhcpv6-stateless",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "slaac" => Some(Ipv6Mode::Slaac),
            "dhcpv6-stateful" => Some(Ipv6Mode::Dhcpv6Stateful),
            "dhcpv6-stateless" => Some(Ipv6Mode::Dhcpv6Stateless),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub std: Standard,
    pub network_id: String,
    pub ip_version: u8,
    pub cidr: IpNet,
    pub gateway_ip: Option<IpAddr>,
    pub allocation_pools: Vec<IpRange>,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<HostRoute>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    pub ipv6_address_mode: Option<Ipv6Mode>,
    /// The subnet pool its CIDR was allocated from.
    #[serde(default)]
    pub subnetpool_id: Option<String>,
    /// The device owners whose ports take addresses from it
    /// (subnet-service-types); empty: any port no other subnet is for.
    #[serde(default)]
    pub service_types: Vec<String>,
}

impl Subnet {
    /// Ports get an EUI-64 address here instead of one from the pools.
    /// Whether a port of `device_owner` may take an address from it when
    /// the network also has `specific` subnets for that owner: a subnet for
    /// the owner, or, if there is none, one for nobody in particular.
    pub fn serves(&self, device_owner: &str, specific: bool) -> bool {
        if specific {
            self.service_types.iter().any(|t| t == device_owner)
        } else {
            self.service_types.is_empty()
        }
    }

    pub fn is_auto_address(&self) -> bool {
        matches!(
            self.ipv6_address_mode,
            Some(Ipv6Mode::Slaac | Ipv6Mode::Dhcpv6Stateless)
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct SubnetCreate {
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub network_id: String,
    pub ip_version: u8,
    /// As given: parsed and checked by the model so the error names it.
    /// `None`: allocated from the subnet pool.
    pub cidr: Option<String>,
    /// Allocate the CIDR from this pool (or check the given one is free in it).
    pub subnetpool_id: Option<String>,
    /// Allocate from the default pool of `ip_version`.
    pub use_default_subnetpool: bool,
    /// The size of the CIDR to allocate; the pool's default if `None`.
    pub prefixlen: Option<u32>,
    /// Outer `None`: not given (default gateway); `Some(None)`: no gateway.
    pub gateway_ip: Option<Option<IpAddr>>,
    pub allocation_pools: Option<Vec<IpRange>>,
    pub dns_nameservers: Option<Vec<IpAddr>>,
    pub host_routes: Option<Vec<HostRoute>>,
    pub enable_dhcp: Option<bool>,
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    pub ipv6_address_mode: Option<Ipv6Mode>,
    pub service_types: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct SubnetUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub gateway_ip: Option<Option<IpAddr>>,
    pub allocation_pools: Option<Vec<IpRange>>,
    pub dns_nameservers: Option<Vec<IpAddr>>,
    pub host_routes: Option<Vec<HostRoute>>,
    pub enable_dhcp: Option<bool>,
    pub service_types: Option<Vec<String>>,
}

/// Parse a subnet CIDR the way Neutron accepts it: a valid prefix with no host bits.
pub fn parse_cidr(cidr: &str, ip_version: u8) -> Result<IpNet, ModelError> {
    let net: IpNet = cidr
        .parse()
        .map_err(|_| ModelError::invalid(format!("{cidr} is not in a CIDR format")))?;
    let version = if net.addr().is_ipv4() { 4 } else { 6 };
    if version != ip_version {
        return Err(ModelError::invalid(format!(
            "Cidr {cidr} does not match ip_version {ip_version}"
        )));
    }
    if net.addr() != net.network() {
        return Err(ModelError::invalid(format!(
            "{cidr} isn't a recommended CIDR, {} should be specified instead",
            net.trunc()
        )));
    }
    let min_prefix_room = if version == 4 { 30 } else { 127 };
    if net.prefix_len() > min_prefix_room {
        return Err(ModelError::invalid(format!(
            "{cidr} is too small: a subnet needs room for at least two addresses"
        )));
    }
    Ok(net)
}

pub fn check_ipv6_modes(
    ip_version: u8,
    cidr: &IpNet,
    ra: Option<Ipv6Mode>,
    address: Option<Ipv6Mode>,
) -> Result<(), ModelError> {
    if ip_version == 4 && (ra.is_some() || address.is_some()) {
        return Err(ModelError::invalid(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False or on an IPv4 subnet",
        ));
    }
    if let (Some(ra), Some(addr)) = (ra, address)
        && ra != addr
    {
        return Err(ModelError::invalid(format!(
            "ipv6_ra_mode set to '{}' with ipv6_address_mode set to '{}' is not valid. If both attributes are set, they must be the same value",
            ra.as_str(),
            addr.as_str()
        )));
    }
    let auto = matches!(
        address.or(ra),
        Some(Ipv6Mode::Slaac | Ipv6Mode::Dhcpv6Stateless)
    );
    if auto && cidr.prefix_len() != 64 {
        return Err(ModelError::invalid(format!(
            "Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
        )));
    }
    Ok(())
}

/// Check a gateway against its CIDR: inside it, and not its network or broadcast address
/// (on IPv6 the subnet-router anycast address is an accepted gateway).
pub fn check_gateway(cidr: &IpNet, gateway: IpAddr) -> Result<(), ModelError> {
    let usable =
        ipam::is_assignable(cidr, gateway) || (cidr.addr().is_ipv6() && gateway == cidr.network());
    if !usable {
        return Err(ModelError::invalid(format!(
            "Gateway IP {gateway} is not a valid IP address on subnet {cidr}"
        )));
    }
    Ok(())
}

/// Check explicit allocation pools: ordered, inside the CIDR, not covering the
/// network/broadcast address or the gateway, not overlapping each other.
pub fn check_pools(
    cidr: &IpNet,
    gateway: Option<IpAddr>,
    pools: &[IpRange],
) -> Result<(), ModelError> {
    let text = |p: &IpRange| format!("{}-{}", p.start, p.end);
    for (i, pool) in pools.iter().enumerate() {
        if !ipam::same_family(pool.start, pool.end) || pool.start > pool.end {
            return Err(ModelError::InvalidAllocationPool { pool: text(pool) });
        }
        if !ipam::is_assignable(cidr, pool.start) || !ipam::is_assignable(cidr, pool.end) {
            return Err(ModelError::OutOfBoundsAllocationPool {
                pool: text(pool),
                cidr: cidr.to_string(),
            });
        }
        if let Some(gw) = gateway
            && pool.contains(gw)
        {
            return Err(ModelError::GatewayConflictWithAllocationPools {
                gateway: gw.to_string(),
                pool: text(pool),
            });
        }
        if let Some(other) = pools[..i].iter().find(|p| p.overlaps(pool)) {
            return Err(ModelError::OverlappingAllocationPools {
                first: text(other),
                second: text(pool),
                cidr: cidr.to_string(),
            });
        }
    }
    Ok(())
}

/// How many DNS servers and host routes a subnet may carry (Neutron's
/// `max_dns_nameservers` and `max_subnet_host_routes`): both go into every
/// DHCP answer, which has room for only so many.
pub const MAX_DNS_NAMESERVERS: usize = 5;
pub const MAX_HOST_ROUTES: usize = 20;

/// `subnet_id` is `None` for a subnet being created.
pub fn check_host_routes(
    subnet_id: Option<&str>,
    ip_version: u8,
    routes: &[HostRoute],
) -> Result<(), ModelError> {
    if routes.len() > MAX_HOST_ROUTES {
        return Err(ModelError::HostRoutesExhausted {
            subnet_id: subnet_id.unwrap_or("new subnet").to_owned(),
            max: MAX_HOST_ROUTES,
        });
    }
    for route in routes {
        let v4 = ip_version == 4;
        if route.destination.addr().is_ipv4() != v4 || route.nexthop.is_ipv4() != v4 {
            return Err(ModelError::invalid(format!(
                "Host route {} via {} does not match the subnet's IP version {ip_version}",
                route.destination, route.nexthop
            )));
        }
    }
    Ok(())
}

pub fn check_nameservers(
    subnet_id: Option<&str>,
    ip_version: u8,
    servers: &[IpAddr],
) -> Result<(), ModelError> {
    if servers.len() > MAX_DNS_NAMESERVERS {
        return Err(ModelError::DnsNameServersExhausted {
            subnet_id: subnet_id.unwrap_or("new subnet").to_owned(),
            max: MAX_DNS_NAMESERVERS,
        });
    }
    for (i, server) in servers.iter().enumerate() {
        if server.is_ipv4() != (ip_version == 4) {
            return Err(ModelError::invalid(format!(
                "DNS nameserver {server} does not match the subnet's IP version {ip_version}"
            )));
        }
        if servers[..i].contains(server) {
            return Err(ModelError::invalid(format!(
                "Duplicate nameserver '{server}'"
            )));
        }
    }
    Ok(())
}

/// Neutron's check of `service_types`: each names a kind of device owner
/// (`network:…`, `neutron:…` or `compute:…`).
pub fn check_service_types(types: &[String]) -> Result<(), ModelError> {
    match types.iter().find(|t| {
        !["network:", "neutron:", "compute:"]
            .iter()
            .any(|p| t.starts_with(p))
    }) {
        None => Ok(()),
        Some(t) => Err(ModelError::InvalidSubnetServiceType {
            service_type: t.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_errors_read_like_neutron() {
        let err = parse_cidr("10.0.0.300/24", 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid input for operation: 10.0.0.300/24 is not in a CIDR format."
        );
        assert!(parse_cidr("10.0.0.5/24", 4).is_err());
        assert!(parse_cidr("10.0.0.0/24", 6).is_err());
        assert!(parse_cidr("10.0.0.0/32", 4).is_err());
        assert!(parse_cidr("fd00::/64", 6).is_ok());
    }

    #[test]
    fn pools_must_avoid_gateway_and_each_other() {
        let cidr: IpNet = "10.0.0.0/24".parse().unwrap();
        let r = |a: &str, b: &str| IpRange {
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        };
        let gw = Some("10.0.0.1".parse().unwrap());
        assert!(check_pools(&cidr, gw, &[r("10.0.0.2", "10.0.0.100")]).is_ok());
        assert!(matches!(
            check_pools(&cidr, gw, &[r("10.0.0.1", "10.0.0.100")]),
            Err(ModelError::GatewayConflictWithAllocationPools { .. })
        ));
        assert!(check_pools(&cidr, gw, &[r("10.0.0.2", "10.0.0.255")]).is_err());
        assert!(
            check_pools(
                &cidr,
                gw,
                &[r("10.0.0.2", "10.0.0.9"), r("10.0.0.9", "10.0.0.20")]
            )
            .is_err()
        );
        assert!(check_pools(&cidr, gw, &[r("10.0.0.9", "10.0.0.2")]).is_err());
    }

    #[test]
    fn ipv6_modes_must_agree_and_need_a_64() {
        let net: IpNet = "fd00::/64".parse().unwrap();
        let wide: IpNet = "fd00::/56".parse().unwrap();
        assert!(check_ipv6_modes(6, &net, Some(Ipv6Mode::Slaac), Some(Ipv6Mode::Slaac)).is_ok());
        assert!(
            check_ipv6_modes(
                6,
                &net,
                Some(Ipv6Mode::Slaac),
                Some(Ipv6Mode::Dhcpv6Stateful)
            )
            .is_err()
        );
        assert!(check_ipv6_modes(6, &wide, None, Some(Ipv6Mode::Slaac)).is_err());
        assert!(check_ipv6_modes(6, &wide, None, Some(Ipv6Mode::Dhcpv6Stateful)).is_ok());
        assert!(check_ipv6_modes(4, &net, Some(Ipv6Mode::Slaac), None).is_err());
    }
}
