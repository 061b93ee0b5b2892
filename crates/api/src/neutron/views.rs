//! Model resources → Neutron's JSON shapes, as the real Neutron answers them
//! (see shared/neutron/). Each kind is a list of attribute names and one
//! function giving an attribute's value, so a list can filter and sort on the
//! few attributes a query names and render whole objects only for the page it
//! returns. Admin-only attributes are absent for other callers.

use std::time::{Duration, UNIX_EPOCH};

use model::{
    Caller, Cloud, FloatingIp, InterfaceInfo, Kind, Network, Port, PortForwarding, PortStatus,
    Resource, Router, SecurityGroup, SecurityGroupRule, Standard, Subnet,
};
use serde_json::{Map, Value, json};

pub type View = Map<String, Value>;

/// Attributes every kind shows (rules show all but `name`).
const STANDARD: [&str; 9] = [
    "id",
    "name",
    "project_id",
    "tenant_id",
    "description",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// A resource kind as Neutron shows it.
pub trait Shown {
    /// The attributes beyond the standard ones.
    const ATTRIBUTES: &'static [&'static str];

    /// Whether the kind has the standard `name` (rules and floating IPs do not).
    const NAMED: bool = true;

    fn standard(&self) -> &Standard;

    /// Whether `caller` may see this resource at all.
    fn visible(&self, cloud: &Cloud, caller: &Caller) -> bool;

    /// One attribute of this kind (not a standard one); `None` if hidden from `caller`.
    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value>;

    fn attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        if name == "name" && !Self::NAMED {
            return None;
        }
        standard_attribute(self.standard(), name)
            .or_else(|| self.own_attribute(cloud, caller, name))
    }
}

/// Every attribute name a kind may show, for query validation.
pub fn attribute_names(kind: Kind) -> Vec<&'static str> {
    let own = match kind {
        Kind::Network => Network::ATTRIBUTES,
        Kind::Subnet => Subnet::ATTRIBUTES,
        Kind::Port => Port::ATTRIBUTES,
        Kind::SecurityGroup => SecurityGroup::ATTRIBUTES,
        Kind::SecurityGroupRule => SecurityGroupRule::ATTRIBUTES,
        Kind::Router => Router::ATTRIBUTES,
        Kind::FloatingIp => FloatingIp::ATTRIBUTES,
        Kind::Quota => &[],
    };
    STANDARD.iter().chain(own).copied().collect()
}

/// The whole object, or only `fields` when some are asked for.
pub fn render<T: Shown>(r: &T, cloud: &Cloud, caller: &Caller, fields: &[String]) -> View {
    let names = STANDARD.iter().chain(T::ATTRIBUTES);
    names
        .filter(|n| fields.is_empty() || fields.iter().any(|f| f == *n))
        .filter_map(|n| r.attribute(cloud, caller, n).map(|v| ((*n).to_owned(), v)))
        .collect()
}

pub fn resource(cloud: &Cloud, caller: &Caller, r: &Resource, fields: &[String]) -> View {
    match r {
        Resource::Network(n) => render(n, cloud, caller, fields),
        Resource::Subnet(s) => render(s, cloud, caller, fields),
        Resource::Port(p) => render(p, cloud, caller, fields),
        Resource::SecurityGroup(g) => render(g, cloud, caller, fields),
        Resource::SecurityGroupRule(r) => render(r, cloud, caller, fields),
        Resource::Router(r) => render(r, cloud, caller, fields),
        Resource::FloatingIp(f) => render(f, cloud, caller, fields),
        Resource::Quota(q) => q
            .limits
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect(),
    }
}

pub fn timestamp(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn standard_attribute(std: &Standard, name: &str) -> Option<Value> {
    Some(match name {
        "id" => json!(std.id),
        "name" => json!(std.name),
        "project_id" | "tenant_id" => json!(std.project_id),
        "description" => json!(std.description),
        "tags" => json!(std.tags),
        "created_at" => json!(timestamp(std.created_at)),
        "updated_at" => json!(timestamp(std.updated_at)),
        "revision_number" => json!(std.revision_number),
        _ => return None,
    })
}

impl Shown for Network {
    const ATTRIBUTES: &'static [&'static str] = &[
        "admin_state_up",
        "mtu",
        "status",
        "subnets",
        "shared",
        "port_security_enabled",
        "router:external",
        "is_default",
        "availability_zone_hints",
        "availability_zones",
        "ipv4_address_scope",
        "ipv6_address_scope",
        "l2_adjacency",
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ];

    fn standard(&self) -> &Standard {
        &self.std
    }

    fn visible(&self, cloud: &Cloud, caller: &Caller) -> bool {
        cloud.can_see_network(caller, self)
    }

    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "admin_state_up" => json!(self.admin_state_up),
            "mtu" => json!(self.mtu),
            "status" => json!("ACTIVE"),
            "subnets" => json!(cloud.subnets_of(&self.std.id)),
            "shared" => json!(self.shared),
            "port_security_enabled" => json!(self.port_security_enabled),
            "router:external" => json!(self.external),
            "is_default" | "l2_adjacency" => json!(name == "l2_adjacency"),
            "availability_zone_hints" => json!(self.availability_zone_hints),
            "availability_zones" => json!([]),
            "ipv4_address_scope" | "ipv6_address_scope" => Value::Null,
            "provider:network_type" if caller.is_admin => json!(self.network_type),
            "provider:physical_network" if caller.is_admin => json!(self.physical_network),
            // A flat network has no segment id (null, as in Neutron).
            "provider:segmentation_id" if caller.is_admin && self.is_flat() => Value::Null,
            "provider:segmentation_id" if caller.is_admin => json!(self.segmentation_id),
            _ => return None,
        })
    }
}

impl Shown for Subnet {
    const ATTRIBUTES: &'static [&'static str] = &[
        "network_id",
        "ip_version",
        "subnetpool_id",
        "enable_dhcp",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "gateway_ip",
        "cidr",
        "allocation_pools",
        "host_routes",
        "dns_nameservers",
        "router:external",
        "service_types",
        "segment_id",
    ];

    fn standard(&self) -> &Standard {
        &self.std
    }

    fn visible(&self, cloud: &Cloud, caller: &Caller) -> bool {
        cloud.can_see_subnet(caller, self)
    }

    fn own_attribute(&self, cloud: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "network_id" => json!(self.network_id),
            "ip_version" => json!(self.ip_version),
            "subnetpool_id" | "segment_id" => Value::Null,
            "enable_dhcp" => json!(self.enable_dhcp),
            "ipv6_ra_mode" => json!(self.ipv6_ra_mode.map(|m| m.as_str())),
            "ipv6_address_mode" => json!(self.ipv6_address_mode.map(|m| m.as_str())),
            "gateway_ip" => json!(self.gateway_ip),
            "cidr" => json!(self.cidr.to_string()),
            "allocation_pools" => json!(
                self.allocation_pools
                    .iter()
                    .map(|p| json!({"start": p.start, "end": p.end}))
                    .collect::<Vec<_>>()
            ),
            "host_routes" => json!(
                self.host_routes
                    .iter()
                    .map(
                        |r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop})
                    )
                    .collect::<Vec<_>>()
            ),
            "dns_nameservers" => json!(self.dns_nameservers),
            "router:external" => {
                json!(cloud.network(&self.network_id).is_some_and(|n| n.external))
            }
            "service_types" => json!([]),
            _ => return None,
        })
    }
}

impl Shown for Port {
    const ATTRIBUTES: &'static [&'static str] = &[
        "network_id",
        "mac_address",
        "admin_state_up",
        "status",
        "device_id",
        "device_owner",
        "fixed_ips",
        "port_security_enabled",
        "security_groups",
        "binding:vnic_type",
        "binding:host_id",
        "binding:profile",
        "binding:vif_type",
        "binding:vif_details",
        "allowed_address_pairs",
        "extra_dhcp_opts",
        "ip_allocation",
    ];

    fn standard(&self) -> &Standard {
        &self.std
    }

    fn visible(&self, _: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.std.project_id)
    }

    fn own_attribute(&self, _: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        let admin = caller.is_admin;
        Some(match name {
            "network_id" => json!(self.network_id),
            "mac_address" => json!(self.mac_address.to_string()),
            "admin_state_up" => json!(self.admin_state_up),
            "status" => json!(self.status.as_str()),
            "device_id" => json!(self.device_id),
            "device_owner" => json!(self.device_owner),
            "fixed_ips" => json!(
                self.fixed_ips
                    .iter()
                    .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address}))
                    .collect::<Vec<_>>()
            ),
            "port_security_enabled" => json!(self.port_security_enabled),
            "security_groups" => json!(self.security_groups),
            "binding:vnic_type" => json!(self.binding_vnic_type),
            "binding:host_id" if admin => json!(self.binding_host_id),
            "binding:profile" if admin => {
                serde_json::from_str(&self.binding_profile).unwrap_or_else(|_| json!({}))
            }
            "binding:vif_type" if admin => json!(if self.binding_host_id.is_empty() {
                "unbound"
            } else {
                "bridge"
            }),
            "binding:vif_details" if admin => json!({}),
            "allowed_address_pairs" => json!(
                self.allowed_address_pairs
                    .iter()
                    .map(|a| json!({"ip_address": pair_ip(&a.ip_address), "mac_address": a.mac_address.to_string()}))
                    .collect::<Vec<_>>()
            ),
            "extra_dhcp_opts" => json!(
                self.extra_dhcp_opts
                    .iter()
                    .map(|o| json!({"opt_name": o.opt_name, "opt_value": o.opt_value, "ip_version": o.ip_version}))
                    .collect::<Vec<_>>()
            ),
            "ip_allocation" => json!("immediate"),
            _ => return None,
        })
    }
}

/// Allowed address pairs are shown as given: a host prefix as a bare address.
fn pair_ip(net: &ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

impl Shown for SecurityGroup {
    const ATTRIBUTES: &'static [&'static str] = &["stateful", "shared", "security_group_rules"];

    fn standard(&self) -> &Standard {
        &self.std
    }

    fn visible(&self, _: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.std.project_id)
    }

    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "stateful" => json!(self.stateful),
            "shared" => json!(false),
            "security_group_rules" => {
                let mut rules: Vec<&SecurityGroupRule> = cloud.rules_of(&self.std.id).collect();
                rules.sort_by(|a, b| {
                    (a.std.created_at, &a.std.id).cmp(&(b.std.created_at, &b.std.id))
                });
                json!(
                    rules
                        .into_iter()
                        .map(|r| render(r, cloud, caller, &[]))
                        .collect::<Vec<_>>()
                )
            }
            _ => return None,
        })
    }
}

impl Shown for SecurityGroupRule {
    const ATTRIBUTES: &'static [&'static str] = &[
        "security_group_id",
        "ethertype",
        "direction",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_address_group_id",
        "normalized_cidr",
        "remote_group_id",
        "belongs_to_default_sg",
    ];

    fn standard(&self) -> &Standard {
        &self.std
    }

    fn visible(&self, _: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.std.project_id)
    }

    /// Rules have no `name`.
    const NAMED: bool = false;

    fn own_attribute(&self, cloud: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "security_group_id" => json!(self.security_group_id),
            "ethertype" => json!(self.ethertype.as_str()),
            "direction" => json!(self.direction.as_str()),
            "protocol" => json!(self.protocol),
            "port_range_min" => json!(self.port_range_min),
            "port_range_max" => json!(self.port_range_max),
            "remote_ip_prefix" => json!(self.remote_ip_prefix.map(|p| p.to_string())),
            "remote_address_group_id" => Value::Null,
            "normalized_cidr" => json!(self.remote_ip_prefix.map(|p| p.trunc().to_string())),
            "remote_group_id" => json!(self.remote_group_id),
            "belongs_to_default_sg" => json!(
                cloud
                    .security_group(&self.security_group_id)
                    .is_some_and(|g| g.is_default)
            ),
            _ => return None,
        })
    }
}

fn fixed_ips_json(ips: &[model::FixedIp]) -> Value {
    json!(
        ips.iter()
            .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address}))
            .collect::<Vec<_>>()
    )
}

impl Shown for Router {
    const ATTRIBUTES: &'static [&'static str] = &[
        "admin_state_up",
        "status",
        "external_gateway_info",
        "routes",
        "distributed",
        "ha",
        "availability_zone_hints",
        "availability_zones",
        "flavor_id",
    ];

    fn standard(&self) -> &Standard {
        &self.std
    }

    fn visible(&self, _: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.std.project_id)
    }

    fn own_attribute(&self, _: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "admin_state_up" => json!(self.admin_state_up),
            "status" => json!("ACTIVE"),
            "external_gateway_info" => match &self.gateway {
                None => Value::Null,
                Some(g) => json!({
                    "network_id": g.network_id,
                    "enable_snat": g.enable_snat,
                    "external_fixed_ips": fixed_ips_json(&g.external_fixed_ips),
                }),
            },
            "routes" => json!(
                self.routes
                    .iter()
                    .map(
                        |r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop})
                    )
                    .collect::<Vec<_>>()
            ),
            // Neutron shows these to admins only.
            "distributed" | "ha" if caller.is_admin => json!(false),
            "availability_zone_hints" => json!(self.availability_zone_hints),
            "availability_zones" => json!([]),
            "flavor_id" => Value::Null,
            _ => return None,
        })
    }
}

/// What `add_router_interface`/`remove_router_interface` answer.
pub fn interface_info(info: &InterfaceInfo) -> Value {
    json!({
        "id": info.router_id,
        "tenant_id": info.project_id,
        "project_id": info.project_id,
        "port_id": info.port_id,
        "network_id": info.network_id,
        "subnet_id": info.subnet_ids.first(),
        "subnet_ids": info.subnet_ids,
    })
}

pub fn port_forwarding(p: &PortForwarding) -> Value {
    json!({
        "id": p.id,
        "protocol": p.protocol,
        "external_port": p.external_port,
        "internal_port": p.internal_port,
        "internal_port_id": p.internal_port_id,
        "internal_ip_address": p.internal_ip_address,
        "description": p.description,
        "external_port_range": format!("{0}:{0}", p.external_port),
        "internal_port_range": format!("{0}:{0}", p.internal_port),
    })
}

impl Shown for FloatingIp {
    const ATTRIBUTES: &'static [&'static str] = &[
        "floating_ip_address",
        "floating_network_id",
        "router_id",
        "port_id",
        "fixed_ip_address",
        "status",
        "port_details",
        "port_forwardings",
    ];

    fn standard(&self) -> &Standard {
        &self.std
    }

    fn visible(&self, _: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.std.project_id)
    }

    /// Floating IPs have no `name`.
    const NAMED: bool = false;

    fn own_attribute(&self, cloud: &Cloud, _: &Caller, name: &str) -> Option<Value> {
        let association = self.association.as_ref();
        Some(match name {
            "floating_ip_address" => json!(self.floating_ip_address),
            "floating_network_id" => json!(self.floating_network_id),
            "router_id" => json!(self.router_id()),
            "port_id" => json!(association.map(|a| &a.port_id)),
            "fixed_ip_address" => json!(association.map(|a| a.fixed_ip_address)),
            // ACTIVE while the host of its port reports it realised (its
            // own port carries that), DOWN unassociated.
            "status" => json!(
                cloud
                    .port(&self.floating_port_id)
                    .map_or(PortStatus::Down, |p| p.status)
                    .as_str()
            ),
            "port_details" => match association.and_then(|a| cloud.port(&a.port_id)) {
                None => Value::Null,
                Some(p) => json!({
                    "name": p.std.name,
                    "network_id": p.network_id,
                    "mac_address": p.mac_address.to_string(),
                    "admin_state_up": p.admin_state_up,
                    "status": p.status.as_str(),
                    "device_id": p.device_id,
                    "device_owner": p.device_owner,
                }),
            },
            "port_forwardings" => json!(
                self.port_forwardings
                    .iter()
                    .map(|p| json!({"protocol": p.protocol, "internal_ip_address": p.internal_ip_address,
                                    "internal_port": p.internal_port, "external_port": p.external_port}))
                    .collect::<Vec<_>>()
            ),
            _ => return None,
        })
    }
}
