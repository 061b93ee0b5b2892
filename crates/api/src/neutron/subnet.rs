//! `/v2.0/subnets`: a subnet's attributes (pools, host routes, IPv6 modes,
//! the subnet pool it is allocated from) in, its view out. Addressing rules
//! and allocation from subnet pools are the model's.

use model::{
    Caller, Cloud, Facet, HostRoute, IpRange, Ipv6Mode, ModelError, ObjectType, Subnet,
    SubnetCreate, SubnetUpdate, Timestamp,
};
use serde_json::{Value, json};

use super::body::{Attrs, read_only};
use super::collection::{Action, Collection, standard_facet};
use super::views::routes_json;
use crate::error::ApiError;

impl Collection for Subnet {
    const PATH: &'static str = "subnets";
    const SINGULAR: &'static str = "subnet";
    const PLURAL: &'static str = "subnets";
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
    const FILTER_ONLY: &'static [&'static str] = &["shared"];
    type Create = SubnetCreate;
    type Update = SubnetUpdate;

    fn parse_create(mut a: Attrs) -> Result<SubnetCreate, ApiError> {
        let network_id = a.required("network_id", Attrs::string)?;
        let ip_version = a.required("ip_version", Attrs::u32)?;
        let req = SubnetCreate {
            project_id: a.project()?,
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            tags: a.string_list("tags")?,
            network_id,
            ip_version: u8::try_from(ip_version).unwrap_or(0),
            cidr: a.nullable_string("cidr")?,
            subnetpool_id: a.nullable_string("subnetpool_id")?,
            use_default_subnetpool: a.bool("use_default_subnetpool")?.unwrap_or(false),
            prefixlen: a.u32("prefixlen")?,
            gateway_ip: a.nullable_ip("gateway_ip")?,
            allocation_pools: pools(&mut a)?,
            dns_nameservers: a
                .null_as_empty("dns_nameservers")
                .ip_list("dns_nameservers")?,
            host_routes: host_routes(&mut a)?,
            enable_dhcp: a.bool("enable_dhcp")?,
            ipv6_ra_mode: ipv6_mode(&mut a, "ipv6_ra_mode")?,
            ipv6_address_mode: ipv6_mode(&mut a, "ipv6_address_mode")?,
            service_types: a
                .null_as_empty("service_types")
                .string_list("service_types")?,
        };
        // Neutron's default for what vnet does not implement; anything else is refused.
        if a.nullable_string("segment_id")?.is_some() {
            return Err(ApiError::invalid_input("segments are not supported"));
        }
        a.finish(&read_only(&[]))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<SubnetUpdate, ApiError> {
        let req = SubnetUpdate {
            name: a.string("name")?,
            description: a.string_or_null("description")?,
            gateway_ip: a.nullable_ip("gateway_ip")?,
            allocation_pools: pools(&mut a)?,
            dns_nameservers: a
                .null_as_empty("dns_nameservers")
                .ip_list("dns_nameservers")?,
            host_routes: host_routes(&mut a)?,
            enable_dhcp: a.bool("enable_dhcp")?,
            service_types: a
                .null_as_empty("service_types")
                .string_list("service_types")?,
        };
        a.finish(&read_only(&[
            "network_id",
            "ip_version",
            "cidr",
            "project_id",
            "tenant_id",
            "ipv6_ra_mode",
            "ipv6_address_mode",
            "subnetpool_id",
            "prefixlen",
            "use_default_subnetpool",
        ]))?;
        Ok(req)
    }

    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError> {
        Ok(match action {
            Action::Create(req) => Some(cloud.create_subnet(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_subnet(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_subnet(caller, &id, now).map(|()| None)?,
        })
    }

    fn facet<'w>(name: &str, wanted: &'w str) -> Option<(Facet, &'w str)> {
        match name {
            "network_id" => Some((Facet::Network, wanted)),
            _ => standard_facet::<Self>(name, wanted),
        }
    }

    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value> {
        Some(match name {
            "network_id" => json!(self.network_id),
            "ip_version" => json!(self.ip_version),
            "subnetpool_id" => json!(self.subnetpool_id),
            "segment_id" => Value::Null,
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
            "host_routes" => routes_json(&self.host_routes),
            "dns_nameservers" => json!(self.dns_nameservers),
            "router:external" => {
                json!(cloud.is_external(&self.network_id))
            }
            "service_types" => json!(self.service_types),
            // Filter only: whether its network is shared (with the caller).
            "shared" => {
                json!(cloud.shared_with(ObjectType::Network, &self.network_id, &caller.project_id))
            }
            _ => return None,
        })
    }
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
    a.null_as_empty("host_routes")
        .objects("host_routes", &["destination", "nexthop"], |f| {
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
