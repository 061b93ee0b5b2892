//! Neutron request attributes → the model's typed requests. The attribute
//! names, aliases and read-only lists of each resource live here.

use model::{
    AddressPairRequest, ExtraDhcpOpt, FixedIpRequest, FloatingIpCreate, FloatingIpUpdate,
    GatewayRequest, HostRoute, InterfaceRequest, IpRange, Ipv6Mode, MacAddr, NetworkCreate,
    NetworkUpdate, PortCreate, PortForwardingRequest, PortUpdate, RouterCreate, RouterUpdate,
    RuleCreate, SecurityGroupCreate, SecurityGroupUpdate, SubnetCreate, SubnetUpdate,
};

use super::body::{Attrs, invalid};
use crate::error::ApiError;

const STANDARD_READ_ONLY: [&str; 4] = ["id", "created_at", "updated_at", "revision_number"];

fn read_only<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    STANDARD_READ_ONLY
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

fn mac(attr: &str, s: &str) -> Result<MacAddr, ApiError> {
    s.parse()
        .map_err(|_| invalid(attr, format!("'{s}' is not a valid MAC address")))
}

fn ipv6_mode(a: &mut Attrs, name: &str) -> Result<Option<Ipv6Mode>, ApiError> {
    match a.nullable_string(name)? {
        None => Ok(None),
        Some(s) => Ipv6Mode::parse(&s).map(Some).ok_or_else(|| {
            ApiError::invalid_input(format!(
                "{s} is not in [dhcpv6-stateful, dhcpv6-stateless, slaac] for {name}"
            ))
        }),
    }
}

// === networks ===

pub fn network_create(mut a: Attrs) -> Result<NetworkCreate, ApiError> {
    let req = NetworkCreate {
        project_id: a.project()?,
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        tags: a.string_list("tags")?,
        admin_state_up: a.bool("admin_state_up")?,
        mtu: a.u32("mtu")?,
        shared: a.bool("shared")?,
        external: a.bool("router:external")?,
        port_security_enabled: a.bool("port_security_enabled")?,
        network_type: a.nullable_string("provider:network_type")?,
        segmentation_id: a.u32("provider:segmentation_id")?,
        physical_network: a.nullable_string("provider:physical_network")?,
        availability_zone_hints: a.string_list("availability_zone_hints")?,
    };
    a.finish(&read_only(&[
        "status",
        "subnets",
        "l2_adjacency",
        "availability_zones",
    ]))?;
    Ok(req)
}

pub fn network_update(mut a: Attrs) -> Result<NetworkUpdate, ApiError> {
    let req = NetworkUpdate {
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        admin_state_up: a.bool("admin_state_up")?,
        mtu: a.u32("mtu")?,
        shared: a.bool("shared")?,
        external: a.bool("router:external")?,
        port_security_enabled: a.bool("port_security_enabled")?,
    };
    a.finish(&read_only(&[
        "status",
        "subnets",
        "project_id",
        "tenant_id",
        "provider:network_type",
        "provider:segmentation_id",
        "provider:physical_network",
    ]))?;
    Ok(req)
}

// === subnets ===

fn pools(a: &mut Attrs) -> Result<Option<Vec<IpRange>>, ApiError> {
    a.objects("allocation_pools", &["start", "end"], |f| {
        match (f.ip("start")?, f.ip("end")?) {
            (Some(start), Some(end)) => Ok(IpRange { start, end }),
            _ => Err(ApiError::invalid_input(
                "an allocation pool needs a start and an end",
            )),
        }
    })
}

fn host_routes(a: &mut Attrs) -> Result<Option<Vec<HostRoute>>, ApiError> {
    a.objects("host_routes", &["destination", "nexthop"], |f| {
        match (f.str("destination")?, f.ip("nexthop")?) {
            (Some(dest), Some(nexthop)) => Ok(HostRoute {
                destination: dest.parse().map_err(|_| {
                    ApiError::invalid_input(format!("{dest} is not in a CIDR format"))
                })?,
                nexthop,
            }),
            _ => Err(ApiError::invalid_input(
                "a host route needs a destination and a nexthop",
            )),
        }
    })
}

pub fn subnet_create(mut a: Attrs) -> Result<SubnetCreate, ApiError> {
    let network_id = a.string("network_id")?.ok_or_else(|| {
        ApiError::bad_request(
            "Failed to parse request. Required attribute 'network_id' not specified",
        )
    })?;
    let ip_version = a.u32("ip_version")?.ok_or_else(|| {
        ApiError::bad_request(
            "Failed to parse request. Required attribute 'ip_version' not specified",
        )
    })?;
    let cidr = a.string("cidr")?.ok_or_else(|| {
        ApiError::bad_request("Failed to parse request. Required attribute 'cidr' not specified")
    })?;
    let req = SubnetCreate {
        project_id: a.project()?,
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        tags: a.string_list("tags")?,
        network_id,
        ip_version: u8::try_from(ip_version).unwrap_or(0),
        cidr,
        gateway_ip: a.nullable_ip("gateway_ip")?,
        allocation_pools: pools(&mut a)?,
        dns_nameservers: a.ip_list("dns_nameservers")?,
        host_routes: host_routes(&mut a)?,
        enable_dhcp: a.bool("enable_dhcp")?,
        ipv6_ra_mode: ipv6_mode(&mut a, "ipv6_ra_mode")?,
        ipv6_address_mode: ipv6_mode(&mut a, "ipv6_address_mode")?,
    };
    // Neutron's defaults for what vnet does not implement; anything else is refused.
    if a.nullable_string("subnetpool_id")?.is_some() {
        return Err(ApiError::invalid_input("subnet pools are not supported"));
    }
    if a.nullable_string("segment_id")?.is_some() {
        return Err(ApiError::invalid_input("segments are not supported"));
    }
    if a.string_list("service_types")?
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::invalid_input(
            "subnet service types are not supported",
        ));
    }
    a.finish(&read_only(&[]))?;
    Ok(req)
}

pub fn subnet_update(mut a: Attrs) -> Result<SubnetUpdate, ApiError> {
    let req = SubnetUpdate {
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        gateway_ip: a.nullable_ip("gateway_ip")?,
        allocation_pools: pools(&mut a)?,
        dns_nameservers: a.ip_list("dns_nameservers")?,
        host_routes: host_routes(&mut a)?,
        enable_dhcp: a.bool("enable_dhcp")?,
    };
    a.finish(&read_only(&[
        "network_id",
        "ip_version",
        "cidr",
        "project_id",
        "tenant_id",
        "ipv6_ra_mode",
        "ipv6_address_mode",
    ]))?;
    Ok(req)
}

// === ports ===

fn fixed_ips(a: &mut Attrs) -> Result<Option<Vec<FixedIpRequest>>, ApiError> {
    a.objects("fixed_ips", &["subnet_id", "ip_address"], |f| {
        Ok(FixedIpRequest {
            subnet_id: f.str("subnet_id")?.map(str::to_owned),
            ip_address: f.ip("ip_address")?,
        })
    })
}

fn address_pairs(a: &mut Attrs) -> Result<Option<Vec<AddressPairRequest>>, ApiError> {
    let attr = "allowed_address_pairs";
    a.objects(attr, &["ip_address", "mac_address"], |f| {
        let ip = f
            .str("ip_address")?
            .ok_or_else(|| ApiError::bad_request("AllowedAddressPair must contain ip_address"))?;
        Ok(AddressPairRequest {
            ip_address: model_prefix(ip)?,
            mac_address: f.str("mac_address")?.map(|s| mac(attr, s)).transpose()?,
        })
    })
}

fn model_prefix(text: &str) -> Result<ipnet::IpNet, ApiError> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| ApiError::invalid_input(format!("'{text}' is not a valid IP address")))
}

fn extra_dhcp_opts(a: &mut Attrs) -> Result<Option<Vec<ExtraDhcpOpt>>, ApiError> {
    a.objects(
        "extra_dhcp_opts",
        &["opt_name", "opt_value", "ip_version"],
        |f| {
            let name = f.str("opt_name")?.ok_or_else(|| {
                ApiError::invalid_input("extra_dhcp_opts entries need an opt_name")
            })?;
            let ip_version = match f.raw("ip_version") {
                None | Some(serde_json::Value::Null) => 4,
                Some(v) if v.as_u64() == Some(4) || v.as_str() == Some("4") => 4,
                Some(v) if v.as_u64() == Some(6) || v.as_str() == Some("6") => 6,
                Some(v) => return Err(ApiError::invalid_input(format!("{v} is not in [4, 6]"))),
            };
            Ok(ExtraDhcpOpt {
                opt_name: name.to_owned(),
                opt_value: f.str("opt_value")?.unwrap_or_default().to_owned(),
                ip_version,
            })
        },
    )
}

fn mac_attr(a: &mut Attrs) -> Result<Option<MacAddr>, ApiError> {
    a.string("mac_address")?
        .map(|s| mac("mac_address", &s))
        .transpose()
}

/// Port attributes that both create and update may set.
fn port_attributes(a: &mut Attrs) -> Result<PortUpdate, ApiError> {
    Ok(PortUpdate {
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        mac_address: mac_attr(a)?,
        admin_state_up: a.bool("admin_state_up")?,
        device_id: a.string("device_id")?,
        device_owner: a.string("device_owner")?,
        fixed_ips: fixed_ips(a)?,
        security_groups: a.string_list("security_groups")?,
        port_security_enabled: a.bool("port_security_enabled")?,
        allowed_address_pairs: address_pairs(a)?,
        extra_dhcp_opts: extra_dhcp_opts(a)?,
        binding_host_id: a.string("binding:host_id")?,
        binding_vnic_type: a.string("binding:vnic_type")?,
        binding_profile: a.object_text("binding:profile")?,
    })
}

const PORT_READ_ONLY: [&str; 3] = ["status", "binding:vif_type", "binding:vif_details"];

pub fn port_create(mut a: Attrs) -> Result<PortCreate, ApiError> {
    let network_id = a.string("network_id")?.ok_or_else(|| {
        ApiError::bad_request(
            "Failed to parse request. Required attribute 'network_id' not specified",
        )
    })?;
    let req = PortCreate {
        project_id: a.project()?,
        tags: a.string_list("tags")?,
        network_id,
        attributes: port_attributes(&mut a)?,
    };
    a.finish(&read_only(&PORT_READ_ONLY))?;
    Ok(req)
}

pub fn port_update(mut a: Attrs) -> Result<PortUpdate, ApiError> {
    let req = port_attributes(&mut a)?;
    let mut ro = read_only(&PORT_READ_ONLY);
    ro.extend(["network_id", "project_id", "tenant_id"]);
    a.finish(&ro)?;
    Ok(req)
}

// === security groups and rules ===

pub fn security_group_create(mut a: Attrs) -> Result<SecurityGroupCreate, ApiError> {
    let req = SecurityGroupCreate {
        project_id: a.project()?,
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        tags: a.string_list("tags")?,
        stateful: a.bool("stateful")?,
    };
    a.finish(&read_only(&["security_group_rules", "shared"]))?;
    Ok(req)
}

pub fn security_group_update(mut a: Attrs) -> Result<SecurityGroupUpdate, ApiError> {
    let req = SecurityGroupUpdate {
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        stateful: a.bool("stateful")?,
    };
    a.finish(&read_only(&[
        "security_group_rules",
        "project_id",
        "tenant_id",
        "shared",
    ]))?;
    Ok(req)
}

pub fn rule_create(mut a: Attrs) -> Result<RuleCreate, ApiError> {
    let security_group_id = a.string("security_group_id")?.ok_or_else(|| {
        ApiError::bad_request(
            "Failed to parse request. Required attribute 'security_group_id' not specified",
        )
    })?;
    let protocol = a.string_or_number("protocol")?;
    let req = RuleCreate {
        project_id: a.project()?,
        description: a.string_or_null("description")?,
        security_group_id,
        direction: a.string("direction")?,
        ethertype: a.string("ethertype")?,
        protocol,
        port_range_min: a.u32("port_range_min")?,
        port_range_max: a.u32("port_range_max")?,
        remote_ip_prefix: a.nullable_string("remote_ip_prefix")?,
        remote_group_id: a.nullable_string("remote_group_id")?,
    };
    if a.nullable_string("remote_address_group_id")?.is_some() {
        return Err(ApiError::invalid_input("address groups are not supported"));
    }
    a.finish(&read_only(&["normalized_cidr", "belongs_to_default_sg"]))?;
    Ok(req)
}

pub fn rule_update(mut a: Attrs) -> Result<Option<String>, ApiError> {
    let description = a.string_or_null("description")?;
    a.finish(&read_only(&[
        "security_group_id",
        "direction",
        "ethertype",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_group_id",
        "project_id",
        "tenant_id",
    ]))?;
    Ok(description)
}

// === routers ===

fn gateway(a: &mut Attrs) -> Result<Option<Option<GatewayRequest>>, ApiError> {
    let Some(info) = a.nested("external_gateway_info")? else {
        return Ok(None);
    };
    let Some(mut g) = info else {
        return Ok(Some(None));
    };
    let attr = "external_gateway_info";
    let network_id = g.string("network_id")?.ok_or_else(|| {
        invalid(
            attr,
            "Validation of dictionary's keys failed. Expected keys: {'network_id'}",
        )
    })?;
    let req = GatewayRequest {
        network_id,
        enable_snat: g.bool("enable_snat")?,
        external_fixed_ips: g.objects("external_fixed_ips", &["subnet_id", "ip_address"], |f| {
            Ok(FixedIpRequest {
                subnet_id: f.str("subnet_id")?.map(str::to_owned),
                ip_address: f.ip("ip_address")?,
            })
        })?,
    };
    g.finish(&[])
        .map_err(|e| invalid(attr, e.message.trim_end_matches('.')))?;
    Ok(Some(Some(req)))
}

fn routes(a: &mut Attrs) -> Result<Option<Vec<HostRoute>>, ApiError> {
    a.objects("routes", &["destination", "nexthop"], |f| {
        match (f.str("destination")?, f.ip("nexthop")?) {
            (Some(dest), Some(nexthop)) => Ok(HostRoute {
                destination: dest
                    .parse::<ipnet::IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| invalid("routes", format!("'{dest}' is not a valid IP subnet")))?,
                nexthop,
            }),
            _ => Err(invalid(
                "routes",
                "a route needs a destination and a nexthop",
            )),
        }
    })
}

const ROUTER_READ_ONLY: [&str; 3] = ["status", "availability_zones", "flavor_id"];

fn router_attributes(a: &mut Attrs) -> Result<RouterUpdate, ApiError> {
    Ok(RouterUpdate {
        name: a.string("name")?,
        description: a.string_or_null("description")?,
        admin_state_up: a.bool("admin_state_up")?,
        gateway: gateway(a)?,
        routes: routes(a)?,
    })
}

/// `distributed` and `ha` are accepted as Neutron's defaults: vnet's routers
/// are neither (their data plane is not built yet).
fn router_flags(a: &mut Attrs) -> Result<(), ApiError> {
    for flag in ["distributed", "ha"] {
        if a.bool(flag)? == Some(true) {
            return Err(ApiError::invalid_input(format!(
                "'{flag}' routers are not supported"
            )));
        }
    }
    Ok(())
}

pub fn router_create(mut a: Attrs) -> Result<RouterCreate, ApiError> {
    let req = RouterCreate {
        project_id: a.project()?,
        tags: a.string_list("tags")?,
        availability_zone_hints: a.string_list("availability_zone_hints")?,
        attributes: router_attributes(&mut a)?,
    };
    router_flags(&mut a)?;
    a.finish(&read_only(&ROUTER_READ_ONLY))?;
    Ok(req)
}

pub fn router_update(mut a: Attrs) -> Result<RouterUpdate, ApiError> {
    let req = router_attributes(&mut a)?;
    router_flags(&mut a)?;
    let mut ro = read_only(&ROUTER_READ_ONLY);
    ro.extend(["project_id", "tenant_id", "availability_zone_hints"]);
    a.finish(&ro)?;
    Ok(req)
}

/// The body of `add_router_interface`/`remove_router_interface`.
pub fn interface(mut a: Attrs) -> Result<InterfaceRequest, ApiError> {
    let req = InterfaceRequest {
        subnet_id: a.string("subnet_id")?,
        port_id: a.string("port_id")?,
    };
    a.finish(&[])?;
    Ok(req)
}

/// The `router` object of `add_extraroutes`/`remove_extraroutes`.
pub fn extra_routes(mut a: Attrs) -> Result<Vec<HostRoute>, ApiError> {
    let routes = routes(&mut a)?.ok_or_else(|| {
        ApiError::bad_request("Failed to parse request. Required attribute 'routes' not specified")
    })?;
    a.finish(&[])?;
    Ok(routes)
}

// === floating IPs ===

pub fn floating_ip_create(mut a: Attrs) -> Result<FloatingIpCreate, ApiError> {
    let floating_network_id = a.string("floating_network_id")?.ok_or_else(|| {
        ApiError::bad_request(
            "Failed to parse request. Required attribute 'floating_network_id' not specified",
        )
    })?;
    let req = FloatingIpCreate {
        project_id: a.project()?,
        tags: a.string_list("tags")?,
        description: a.string_or_null("description")?,
        floating_network_id,
        subnet_id: a.nullable_string("subnet_id")?,
        floating_ip_address: a.nullable_ip("floating_ip_address")?.flatten(),
        port_id: a.nullable_string("port_id")?,
        fixed_ip_address: a.nullable_ip("fixed_ip_address")?.flatten(),
    };
    a.finish(&read_only(&[
        "status",
        "router_id",
        "port_details",
        "port_forwardings",
    ]))?;
    Ok(req)
}

pub fn floating_ip_update(mut a: Attrs) -> Result<FloatingIpUpdate, ApiError> {
    let req = FloatingIpUpdate {
        description: a.string_or_null("description")?,
        port_id: a.nullable_id("port_id")?,
        fixed_ip_address: a.nullable_ip("fixed_ip_address")?.flatten(),
    };
    a.finish(&read_only(&[
        "status",
        "router_id",
        "port_details",
        "port_forwardings",
        "floating_network_id",
        "floating_ip_address",
        "subnet_id",
        "project_id",
        "tenant_id",
    ]))?;
    Ok(req)
}

fn port_number(a: &mut Attrs, name: &str) -> Result<Option<u16>, ApiError> {
    a.u32(name)?
        .map(|n| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(name, format!("{n} is not in range 1 through 65535")))
        })
        .transpose()
}

pub fn port_forwarding(mut a: Attrs) -> Result<PortForwardingRequest, ApiError> {
    let req = PortForwardingRequest {
        protocol: a.string("protocol")?,
        external_port: port_number(&mut a, "external_port")?,
        internal_port: port_number(&mut a, "internal_port")?,
        internal_port_id: a.string("internal_port_id")?,
        internal_ip_address: a.nullable_ip("internal_ip_address")?.flatten(),
        description: a.string_or_null("description")?,
    };
    a.finish(&["id", "floatingip_id"])?;
    Ok(req)
}
