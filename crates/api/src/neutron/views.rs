//! Model resources → Neutron's JSON shapes, as the real Neutron answers them
//! (see shared/neutron/). Admin-only attributes are left out for other callers.

use std::time::{Duration, UNIX_EPOCH};

use model::{
    Caller, Cloud, Network, Port, Resource, SecurityGroup, SecurityGroupRule, Standard, Subnet,
};
use serde_json::{Map, Value, json};

pub type View = Map<String, Value>;

pub fn timestamp(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn standard(v: &mut View, std: &Standard, with_name: bool) {
    v.insert("id".into(), json!(std.id));
    if with_name {
        v.insert("name".into(), json!(std.name));
    }
    v.insert("project_id".into(), json!(std.project_id));
    v.insert("tenant_id".into(), json!(std.project_id));
    v.insert("description".into(), json!(std.description));
    v.insert("tags".into(), json!(std.tags));
    v.insert("created_at".into(), json!(timestamp(std.created_at)));
    v.insert("updated_at".into(), json!(timestamp(std.updated_at)));
    v.insert("revision_number".into(), json!(std.revision_number));
}

fn object(value: Value) -> View {
    match value {
        Value::Object(m) => m,
        _ => View::new(),
    }
}

pub fn resource(cloud: &Cloud, caller: &Caller, r: &Resource) -> View {
    match r {
        Resource::Network(n) => network(cloud, caller, n),
        Resource::Subnet(s) => subnet(cloud, s),
        Resource::Port(p) => port(caller, p),
        Resource::SecurityGroup(g) => security_group(cloud, g),
        Resource::SecurityGroupRule(r) => rule(cloud, r),
    }
}

pub fn network(cloud: &Cloud, caller: &Caller, n: &Network) -> View {
    let mut v = object(json!({
        "admin_state_up": n.admin_state_up,
        "mtu": n.mtu,
        "status": "ACTIVE",
        "subnets": cloud.subnets_of(&n.std.id),
        "shared": n.shared,
        "port_security_enabled": n.port_security_enabled,
        "router:external": n.external,
        "is_default": false,
        "availability_zone_hints": n.availability_zone_hints,
        "availability_zones": [],
        "ipv4_address_scope": null,
        "ipv6_address_scope": null,
        "l2_adjacency": true,
    }));
    standard(&mut v, &n.std, true);
    if caller.is_admin {
        v.insert("provider:network_type".into(), json!(n.network_type));
        v.insert("provider:physical_network".into(), Value::Null);
        v.insert("provider:segmentation_id".into(), json!(n.segmentation_id));
    }
    v
}

pub fn subnet(cloud: &Cloud, s: &Subnet) -> View {
    let external = cloud.network(&s.network_id).is_some_and(|n| n.external);
    let mut v = object(json!({
        "network_id": s.network_id,
        "ip_version": s.ip_version,
        "subnetpool_id": null,
        "enable_dhcp": s.enable_dhcp,
        "ipv6_ra_mode": s.ipv6_ra_mode.map(|m| m.as_str()),
        "ipv6_address_mode": s.ipv6_address_mode.map(|m| m.as_str()),
        "gateway_ip": s.gateway_ip,
        "cidr": s.cidr.to_string(),
        "allocation_pools": s.allocation_pools.iter()
            .map(|p| json!({"start": p.start, "end": p.end})).collect::<Vec<_>>(),
        "host_routes": s.host_routes.iter()
            .map(|r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop}))
            .collect::<Vec<_>>(),
        "dns_nameservers": s.dns_nameservers,
        "router:external": external,
        "service_types": [],
        "segment_id": null,
    }));
    standard(&mut v, &s.std, true);
    v
}

pub fn port(caller: &Caller, p: &Port) -> View {
    let mut v = object(json!({
        "network_id": p.network_id,
        "mac_address": p.mac_address.to_string(),
        "admin_state_up": p.admin_state_up,
        "status": p.status.as_str(),
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "fixed_ips": p.fixed_ips.iter()
            .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address}))
            .collect::<Vec<_>>(),
        "port_security_enabled": p.port_security_enabled,
        "security_groups": p.security_groups,
        "binding:vnic_type": p.binding_vnic_type,
        "allowed_address_pairs": p.allowed_address_pairs.iter()
            .map(|a| json!({"ip_address": pair_ip(&a.ip_address), "mac_address": a.mac_address.to_string()}))
            .collect::<Vec<_>>(),
        "extra_dhcp_opts": p.extra_dhcp_opts.iter()
            .map(|o| json!({"opt_name": o.opt_name, "opt_value": o.opt_value, "ip_version": o.ip_version}))
            .collect::<Vec<_>>(),
        "ip_allocation": "immediate",
    }));
    standard(&mut v, &p.std, true);
    if caller.is_admin {
        let bound = !p.binding_host_id.is_empty();
        let profile: Value = serde_json::from_str(&p.binding_profile).unwrap_or_else(|_| json!({}));
        v.insert("binding:host_id".into(), json!(p.binding_host_id));
        v.insert("binding:profile".into(), profile);
        v.insert(
            "binding:vif_type".into(),
            json!(if bound { "bridge" } else { "unbound" }),
        );
        v.insert("binding:vif_details".into(), json!({}));
    }
    v
}

/// Allowed address pairs are shown as given: a host prefix as a bare address.
fn pair_ip(net: &ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

pub fn security_group(cloud: &Cloud, g: &SecurityGroup) -> View {
    let mut rules: Vec<&SecurityGroupRule> = cloud.rules_of(&g.std.id).collect();
    rules.sort_by(|a, b| (a.std.created_at, &a.std.id).cmp(&(b.std.created_at, &b.std.id)));
    let mut v = object(json!({
        "stateful": g.stateful,
        "shared": false,
        "security_group_rules": rules.into_iter().map(|r| rule(cloud, r)).collect::<Vec<_>>(),
    }));
    standard(&mut v, &g.std, true);
    v
}

pub fn rule(cloud: &Cloud, r: &SecurityGroupRule) -> View {
    let default = cloud
        .security_group(&r.security_group_id)
        .is_some_and(|g| g.is_default);
    let mut v = object(json!({
        "security_group_id": r.security_group_id,
        "ethertype": r.ethertype.as_str(),
        "direction": r.direction.as_str(),
        "protocol": r.protocol,
        "port_range_min": r.port_range_min,
        "port_range_max": r.port_range_max,
        "remote_ip_prefix": r.remote_ip_prefix.map(|p| p.to_string()),
        "remote_address_group_id": null,
        "normalized_cidr": r.remote_ip_prefix.map(|p| p.trunc().to_string()),
        "remote_group_id": r.remote_group_id,
        "belongs_to_default_sg": default,
    }));
    standard(&mut v, &r.std, false);
    v
}
