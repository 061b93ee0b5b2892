//! Model resources → the protocol's specs: what one subnet or port looks like
//! from a host. Per-resource and stateless: it knows nothing of hosts, bindings
//! or which host carries what (that is `compile`'s).

use model::{Port, Subnet};

use crate::protocol::{FixedIpSpec, LocalPortSpec, RouteSpec, SubnetSpec, tap_name};

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
    }
}

/// The kernel device of a port: the non-empty string `device` of its
/// `binding:profile` if it has one, else Nova's tap name. A profile that is not
/// a JSON object, or whose `device` is not a non-empty string, names nothing.
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
