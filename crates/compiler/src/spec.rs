//! Model resources → the protocol's specs: what one subnet or port looks like
//! from a host. Per-resource and stateless: it knows nothing of hosts, bindings
//! or which host carries what (that is `compile`'s).

use std::collections::BTreeSet;

use ipnet::IpNet;
use model::{Direction, Ethertype, Port, SecurityGroupRule, Subnet, protocol_number};

use crate::protocol::{
    AllowedSource, DhcpOptionSpec, FixedIpSpec, LocalPortSpec, PortSecuritySpec, RouteSpec,
    RuleDirection, RuleEthertype, RuleRemote, RuleSpec, SubnetSpec, tap_name,
};

/// The key of `binding:profile` that names a port's device explicitly (a veth
/// end of a container or a test VM, which Nova's tap rule cannot name).
pub const PROFILE_DEVICE_KEY: &str = "device";

pub fn subnet_spec(subnet: &Subnet) -> SubnetSpec {
    SubnetSpec {
        cidr: subnet.cidr,
        gateway_ip: subnet.gateway_ip,
        dns_nameservers: subnet.dns_nameservers.clone(),
        host_routes: subnet
            .host_routes
            .iter()
            .map(|r| RouteSpec {
                destination: r.destination,
                nexthop: r.nexthop,
            })
            .collect(),
        enable_dhcp: subnet.enable_dhcp,
        ipv6_ra_mode: subnet.ipv6_ra_mode,
        ipv6_address_mode: subnet.ipv6_address_mode,
    }
}

/// The port as the host it is bound to sees it.
pub fn local_port_spec(port: &Port) -> LocalPortSpec {
    LocalPortSpec {
        mac: port.mac_address,
        fixed_ips: port
            .fixed_ips
            .iter()
            .map(|f| FixedIpSpec {
                subnet_id: f.subnet_id.clone(),
                ip_address: f.ip_address,
            })
            .collect(),
        device: port_device(port),
        admin_state_up: port.admin_state_up,
        dhcpv4_options: dhcp_options(port, 4),
        dhcpv6_options: dhcp_options(port, 6),
    }
}

/// The kernel device of a port: the non-empty string `device` of its
/// `binding:profile` if it has one, else Nova's tap name. A profile that is not
/// a JSON object, or whose `device` is not a non-empty string, names nothing.
/// The port's `extra_dhcp_opts` of one IP version, in the API's order.
fn dhcp_options(port: &Port, ip_version: u8) -> Vec<DhcpOptionSpec> {
    port.extra_dhcp_opts
        .iter()
        .filter(|o| o.ip_version == ip_version)
        .map(|o| DhcpOptionSpec {
            name: o.opt_name.clone(),
            value: o.opt_value.clone(),
        })
        .collect()
}

pub fn port_device(port: &Port) -> String {
    profile_device(&port.binding_profile).unwrap_or_else(|| tap_name(&port.std.id))
}

fn profile_device(profile: &str) -> Option<String> {
    // Most ports have no profile: skip the parser for them.
    if !profile.contains(PROFILE_DEVICE_KEY) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(profile).ok()?;
    let device = value.get(PROFILE_DEVICE_KEY)?.as_str()?;
    (!device.is_empty()).then(|| device.to_owned())
}

/// The port security of a port as its host sees it. A disabled port keeps its
/// allowed sources in the spec (the agent ignores them) but uses no groups.
/// Sources are sorted and deduplicated; prefixes are truncated to their network.
pub fn port_security_spec(port: &Port) -> PortSecuritySpec {
    let security_groups = if port.port_security_enabled {
        let groups: BTreeSet<&String> = port.security_groups.iter().collect();
        groups.into_iter().cloned().collect()
    } else {
        Vec::new()
    };
    let fixed = port.fixed_ips.iter().map(|f| AllowedSource {
        mac: port.mac_address,
        ip: IpNet::from(f.ip_address),
    });
    let pairs = port.allowed_address_pairs.iter().map(|p| AllowedSource {
        mac: p.mac_address,
        ip: p.ip_address.trunc(),
    });
    let sources: BTreeSet<AllowedSource> = fixed.chain(pairs).collect();
    PortSecuritySpec {
        enabled: port.port_security_enabled,
        security_groups,
        allowed_sources: sources.into_iter().collect(),
    }
}

/// The addresses a port stands for in the member sets of its groups: each
/// fixed IP as a host prefix and each allowed address pair's prefix
/// (truncated). Empty when port security is disabled: such a port is in no
/// member set, as it uses no group.
pub fn member_addresses(port: &Port) -> BTreeSet<IpNet> {
    if !port.port_security_enabled {
        return BTreeSet::new();
    }
    let fixed = port.fixed_ips.iter().map(|f| IpNet::from(f.ip_address));
    let pairs = port
        .allowed_address_pairs
        .iter()
        .map(|p| p.ip_address.trunc());
    fixed.chain(pairs).collect()
}

/// The groups whose member sets a port is in, and whose rules filter it.
pub fn port_groups(port: &Port) -> BTreeSet<String> {
    if port.port_security_enabled {
        port.security_groups.iter().cloned().collect()
    } else {
        BTreeSet::new()
    }
}

/// Protocols whose rules match a destination port range.
fn has_ports(number: u8) -> bool {
    matches!(number, 6 | 17 | 33 | 132 | 136)
}

/// A rule, normalised: the protocol as a number (Neutron's legacy `icmp` with
/// IPv6 meaning ICMPv6), the port range for protocols that have ports (a
/// minimum alone is a single port; a maximum alone restricts nothing, as in
/// Neutron's drivers), the type and code for ICMP, and whom it allows (a /0
/// prefix is anyone).
pub fn rule_spec(rule: &SecurityGroupRule) -> RuleSpec {
    let ethertype = match rule.ethertype {
        Ethertype::IPv4 => RuleEthertype::IPv4,
        Ethertype::IPv6 => RuleEthertype::IPv6,
    };
    let protocol = rule
        .protocol
        .as_deref()
        .map(str::to_ascii_lowercase)
        .filter(|p| !p.is_empty() && p != "any")
        .and_then(|p| match (p.as_str(), ethertype) {
            ("icmp", RuleEthertype::IPv6) => Some(58),
            _ => protocol_number(&p),
        });
    let (min, max) = (rule.port_range_min, rule.port_range_max);
    let clamp16 = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let clamp8 = |v: u32| u8::try_from(v).unwrap_or(u8::MAX);
    let (ports, icmp) = match protocol {
        Some(n) if has_ports(n) => (
            min.map(|lo| (clamp16(lo), clamp16(max.unwrap_or(lo)))),
            None,
        ),
        Some(1 | 58) => (None, min.map(|t| (clamp8(t), max.map(clamp8)))),
        _ => (None, None),
    };
    let remote = match (
        &rule.remote_ip_prefix,
        &rule.remote_group_id,
        &rule.remote_address_group_id,
    ) {
        (Some(prefix), _, _) if prefix.prefix_len() == 0 => RuleRemote::Any,
        (Some(prefix), _, _) => RuleRemote::Prefix(prefix.trunc()),
        (None, Some(group), _) => RuleRemote::Group(group.clone()),
        (None, None, Some(ag)) => RuleRemote::AddressGroup(ag.clone()),
        (None, None, None) => RuleRemote::Any,
    };
    RuleSpec {
        id: rule.std.id.clone(),
        direction: match rule.direction {
            Direction::Ingress => RuleDirection::Ingress,
            Direction::Egress => RuleDirection::Egress,
        },
        ethertype,
        protocol,
        ports,
        icmp,
        remote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_names_the_device_only_with_a_non_empty_string() {
        assert_eq!(
            profile_device(r#"{"device": "veth-vm1"}"#).as_deref(),
            Some("veth-vm1")
        );
        for profile in [
            "",
            "{}",
            r#"{"device": ""}"#,
            r#"{"device": 5}"#,
            r#"["device"]"#,
            "device",
            r#"{"other": {"device": "x"}}"#,
        ] {
            assert_eq!(profile_device(profile), None, "{profile}");
        }
    }
}
