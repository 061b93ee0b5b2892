//! Port binding: whether a port can bind to the host its `binding:host_id`
//! names, decided here because only the API knows the hosts (their agents'
//! registrations, `hosts.rs`); the model stays a pure topology that knows no
//! agent. A VXLAN port binds to any host; a flat network's port only to a host
//! whose agent maps its physical network. It must not change anything: a
//! failed binding is a view (`binding:vif_type` `binding_failed`) and an
//! unwired port (its agent leaves it DOWN), never a refused request, as in
//! Neutron.

use model::{Cloud, Port};
use serde_json::Value;

use crate::hosts::Hosts;

/// Why `port` cannot bind to its host, if it cannot: a flat network's port
/// bound to a host that no agent registered, or whose agent maps no
/// interface to the network's physical network.
pub fn refusal(cloud: &Cloud, hosts: &Hosts, port: &Port) -> Option<String> {
    if port.binding_host_id.is_empty() {
        return None;
    }
    let physnet = cloud
        .network(&port.network_id)?
        .physical_network
        .as_deref()?;
    let host = &port.binding_host_id;
    match hosts.get(host) {
        None => Some(format!(
            "no agent registered on host {host}, so none maps physical network {physnet}"
        )),
        Some(h)
            if h.registration
                .physical_networks
                .iter()
                .any(|p| p == physnet) =>
        {
            None
        }
        Some(_) => Some(format!(
            "the agent of host {host} maps no interface to physical network {physnet} \
             (vnet agent --physical-network {physnet}:IFACE)"
        )),
    }
}

/// Shows a failed binding: a port's `binding:vif_type` (admins only) is
/// `binding_failed` where it cannot bind, the same for views, filters and
/// sorting.
pub fn adjust(cloud: &Cloud, hosts: &Hosts, port: &Port, name: &str, value: &mut Value) {
    if name == "binding:vif_type" && *value == "bridge" && refusal(cloud, hosts, port).is_some() {
        *value = Value::from("binding_failed");
    }
}
