//! `/v2.0/ports`: a port's attributes (fixed IPs, address pairs, DHCP
//! options, binding) in, its view out, with the binding as the hosts make it.

use model::{
    AddressPairRequest, Caller, Cloud, ExtraDhcpOpt, Facet, MacAddr, ModelError, Port, PortCreate,
    PortUpdate, Timestamp,
};
use serde_json::{Value, json};

use super::body::{Attrs, fixed_ips, mac, read_only};
use super::collection::{Action, Collection, standard_facet};
use super::views::fixed_ips_json;
use crate::binding;
use crate::error::ApiError;
use crate::state::App;

impl Collection for Port {
    const PATH: &'static str = "ports";
    const SINGULAR: &'static str = "port";
    const PLURAL: &'static str = "ports";
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
    type Create = PortCreate;
    type Update = PortUpdate;

    fn parse_create(mut a: Attrs) -> Result<PortCreate, ApiError> {
        let network_id = a.required("network_id", Attrs::string)?;
        let req = PortCreate {
            project_id: a.project()?,
            tags: a.string_list("tags")?,
            network_id,
            attributes: port_attributes(&mut a)?,
        };
        a.finish(&read_only(&PORT_READ_ONLY))?;
        Ok(req)
    }

    fn parse_update(mut a: Attrs) -> Result<PortUpdate, ApiError> {
        let req = port_attributes(&mut a)?;
        let mut ro = read_only(&PORT_READ_ONLY);
        ro.extend(["network_id", "project_id", "tenant_id"]);
        a.finish(&ro)?;
        Ok(req)
    }

    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError> {
        Ok(match action {
            Action::Create(req) => Some(cloud.create_port(caller, req, now)?),
            Action::Update(id, req) => Some(cloud.update_port(caller, &id, req, now)?),
            Action::Delete(id) => cloud.delete_port(caller, &id, now).map(|()| None)?,
        })
    }

    /// A fixed IP filter names one address or one subnet (a substring
    /// scans); a group filter, one of the port's groups.
    fn facet<'w>(name: &str, wanted: &'w str) -> Option<(Facet, &'w str)> {
        Some(match (name, wanted.split_once('=')) {
            ("network_id", _) => (Facet::Network, wanted),
            ("device_id", _) => (Facet::DeviceId, wanted),
            ("device_owner", _) => (Facet::DeviceOwner, wanted),
            ("binding:host_id", _) => (Facet::Host, wanted),
            ("security_groups", _) => (Facet::SecurityGroup, wanted),
            ("fixed_ips", Some(("ip_address", ip))) => (Facet::FixedIp, ip),
            ("fixed_ips", Some(("subnet_id", subnet))) => (Facet::FixedIpSubnet, subnet),
            _ => return standard_facet::<Self>(name, wanted),
        })
    }

    /// A port's binding depends on its host's agent, which only the API
    /// knows (see `binding`).
    fn adjust(&self, app: &App, cloud: &Cloud, name: &str, value: &mut Value) {
        binding::adjust(cloud, &app.hosts, self, name, value);
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
            "fixed_ips" => fixed_ips_json(&self.fixed_ips),
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

fn address_pairs(a: &mut Attrs) -> Result<Option<Vec<AddressPairRequest>>, ApiError> {
    let attr = "allowed_address_pairs";
    a.null_as_empty(attr)
        .objects(attr, &["ip_address", "mac_address"], |f| {
            let ip = f.str("ip_address")?.ok_or_else(|| {
                ApiError::bad_request("AllowedAddressPair must contain ip_address")
            })?;
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

/// A MAC, or null for a new one (port-mac-address-regenerate).
fn mac_attr(a: &mut Attrs) -> Result<Option<Option<MacAddr>>, ApiError> {
    a.nullable_id("mac_address")?
        .map(|m| m.map(|s| mac("mac_address", &s)).transpose())
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
        fixed_ips: fixed_ips(a, "fixed_ips")?,
        security_groups: a
            .null_as_empty("security_groups")
            .string_list("security_groups")?,
        port_security_enabled: a.bool("port_security_enabled")?,
        allowed_address_pairs: address_pairs(a)?,
        extra_dhcp_opts: extra_dhcp_opts(a)?,
        binding_host_id: a.string("binding:host_id")?,
        binding_vnic_type: a.string("binding:vnic_type")?,
        binding_profile: a.object_text("binding:profile")?,
    })
}

const PORT_READ_ONLY: [&str; 3] = ["status", "binding:vif_type", "binding:vif_details"];
