//! Narrow, borrowing reads of the compiled state: how one host sees one
//! port, network, group, member set or address group, exactly as its snapshot would say,
//! without building the snapshot. For `vnet trace`, which must read what the
//! agent programs at O(log n) per question. Read-only: it must never change
//! the compiler, and never walk the cloud (one network's ports at most).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use model::MacAddr;

use super::Compiler;
use crate::protocol::{
    FloatingIpSpec, LocalPortSpec, PortSecuritySpec, RouterInterfaceSpec, RouterSpec, RuleSpec,
    SubnetSpec,
};

/// A port as the compiler holds it, whichever host asks.
#[derive(Clone, Copy, Debug)]
pub struct PortView<'a> {
    pub network_id: &'a str,
    /// `binding:host_id`; empty when unbound.
    pub host: &'a str,
    /// How its own host sees it.
    pub local: &'a LocalPortSpec,
    /// Its port security, as its own host holds it.
    pub security: &'a PortSecuritySpec,
}

/// A network as one host that carries it sees it.
#[derive(Clone, Copy, Debug)]
pub struct NetworkView<'a> {
    pub vni: u32,
    pub mtu: u32,
    pub subnets: &'a BTreeMap<String, SubnetSpec>,
}

/// Where one host sends frames for a port of a network it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSeen<'a> {
    /// The port is on this host's bridge.
    Local(&'a LocalPortSpec),
    /// Behind the VXLAN tunnel to `vtep`, with a static FDB entry for `mac`.
    Remote { mac: MacAddr, vtep: IpAddr },
}

/// A security group as a host that uses it holds it.
#[derive(Clone, Copy, Debug)]
pub struct GroupView<'a> {
    pub stateful: bool,
    rules: &'a BTreeMap<String, RuleSpec>,
}

impl<'a> GroupView<'a> {
    /// Its rules, by id.
    pub fn rules(&self) -> impl Iterator<Item = &'a RuleSpec> + use<'a> {
        self.rules.values()
    }
}

/// The member of a set that contains `ip`, if any: one lookup per prefix
/// length (33 for IPv4, 129 for IPv6), each O(log n).
pub fn containing_member(ip: IpAddr, contains: impl Fn(&IpNet) -> bool) -> Option<IpNet> {
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    (0..=max)
        .rev()
        .filter_map(|len| IpNet::new(ip, len).ok().map(|n| n.trunc()))
        .find(|n| contains(n))
}

impl Compiler {
    /// The host running a router's default SNAT, if it has one: where its
    /// availability zone is.
    pub fn gateway_host_of(&self, router_id: &str) -> Option<&str> {
        self.routers.get(router_id)?.gateway_host.as_deref()
    }

    /// The hosts that carry a network (its ports' and its routers' hosts):
    /// where its availability zones are.
    pub fn carriers_of(&self, network_id: &str) -> Vec<&str> {
        self.networks
            .get(network_id)
            .filter(|n| n.segment.is_some())
            .map(|n| n.carriers().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// A port the compiler knows, bound or not.
    pub fn port(&self, id: &str) -> Option<PortView<'_>> {
        self.ports.get(id).map(|p| PortView {
            network_id: &p.network_id,
            host: &p.host,
            local: &p.local,
            security: &p.security,
        })
    }

    /// The network as `host` carries it; `None` if it does not.
    pub fn network_seen_from(&self, host: &str, network_id: &str) -> Option<NetworkView<'_>> {
        let network = self.networks.get(network_id)?;
        let segment = network.segment.as_ref()?;
        network.named_by(host).then_some(NetworkView {
            vni: segment.vni,
            mtu: segment.mtu,
            subnets: &network.subnets,
        })
    }

    /// How `host` sees a port of a network it carries: local, remote behind
    /// its host's VTEP, or not at all (unbound, or its host not registered).
    pub fn port_seen_from(&self, host: &str, port_id: &str) -> Option<PortSeen<'_>> {
        let port = self.ports.get(port_id)?;
        let (network_id, port_host) = port.binding()?;
        self.network_seen_from(host, network_id)?;
        if port_host == host {
            return Some(PortSeen::Local(&port.local));
        }
        Some(PortSeen::Remote {
            mac: port.local.mac,
            vtep: self.underlay_ip(port_host)?,
        })
    }

    /// The port of `network_id` that `host`'s neighbour entries give `ip`
    /// to, if the host carries the network. Costs the network's bound ports
    /// (there is no address index in the compiler).
    pub fn port_with_ip_seen_from(&self, host: &str, network_id: &str, ip: IpAddr) -> Option<&str> {
        let network = self.networks.get(network_id)?;
        network.segment.as_ref()?;
        if !network.named_by(host) {
            return None;
        }
        network
            .bound_ports
            .iter()
            .filter(|(h, _)| h.as_str() == host || self.underlay_ip(h).is_some())
            .flat_map(|(_, ids)| ids.iter())
            .find(|id| {
                self.ports
                    .get(*id)
                    .is_some_and(|p| p.local.fixed_ips.iter().any(|f| f.ip_address == ip))
            })
            .map(String::as_str)
    }

    /// The port security `host` holds for one of its ports.
    pub fn port_security_on(&self, host: &str, port_id: &str) -> Option<&PortSecuritySpec> {
        let port = self.ports.get(port_id)?;
        (!port.host.is_empty() && port.host == host).then_some(&port.security)
    }

    /// A group as `host` holds it: only if one of its local ports with port
    /// security enabled uses it and the group is known.
    pub fn group_seen_from(&self, host: &str, group_id: &str) -> Option<GroupView<'_>> {
        let entry = self.groups.get(group_id)?;
        if !entry.users.contains_key(host) {
            return None;
        }
        Some(GroupView {
            stateful: entry.stateful?,
            rules: &entry.rules,
        })
    }

    /// Whether `ip` is in the member set of `group_id` as `host` holds it:
    /// `None` if the host holds no such set, else the member containing it.
    pub fn member_seen_from(
        &self,
        host: &str,
        group_id: &str,
        ip: IpAddr,
    ) -> Option<Option<IpNet>> {
        let entry = self.groups.get(group_id)?;
        if !entry.watchers.contains_key(host) {
            return None;
        }
        Some(containing_member(ip, |n| entry.members.contains_key(n)))
    }

    /// Whether `ip` is in the addresses of address group `id` as `host`
    /// holds them: `None` if the host holds no such group, else the
    /// address containing it.
    pub fn address_seen_from(&self, host: &str, id: &str, ip: IpAddr) -> Option<Option<IpNet>> {
        let entry = self.address_groups.get(id)?;
        if !entry.watchers.contains_key(host) {
            return None;
        }
        Some(containing_member(ip, |n| entry.addresses.contains(n)))
    }

    /// Where a floating IP is realised, and what its host holds of it.
    pub fn floating_ip_home(&self, id: &str) -> Option<(&str, &FloatingIpSpec)> {
        self.floating_ip_home_of(id)
    }

    /// The floating IPs whose NAT `host` does (as few as its ports have).
    pub fn floating_ips_seen_from(&self, host: &str) -> impl Iterator<Item = &FloatingIpSpec> {
        self.floating_ips_of_host(host).map(|(_, spec)| spec)
    }

    /// A router as `host` holds it: only if the host realises it.
    pub fn router_seen_from(&self, host: &str, router_id: &str) -> Option<&RouterSpec> {
        let router = self.routers.get(router_id)?;
        router.hosts.contains_key(host).then_some(&router.spec)
    }

    /// The router interface a port is, as `host` holds it: the router's id
    /// and the interface. O(log n): the port names its router.
    pub fn router_interface_seen_from(
        &self,
        host: &str,
        port_id: &str,
    ) -> Option<(&str, &RouterInterfaceSpec)> {
        let router_id = self.ports.get(port_id)?.interface.as_deref()?;
        let spec = self.router_seen_from(host, router_id)?;
        Some((router_id, spec.interfaces.get(port_id)?))
    }

    /// The router interface that holds `ip` on `network_id`, as `host`
    /// sees it: (router id, interface port id). Costs the routers on that
    /// one network and their interfaces (the model's address index finds
    /// the port first; this is the fallback that decides).
    pub fn router_interface_with_ip_seen_from(
        &self,
        host: &str,
        network_id: &str,
        ip: IpAddr,
    ) -> Option<(&str, &str)> {
        let network = self.networks.get(network_id)?;
        network.segment.as_ref()?;
        if !network.named_by(host) {
            return None;
        }
        network.routers.iter().find_map(|router_id| {
            let spec = self.router_seen_from(host, router_id)?;
            spec.interfaces
                .iter()
                .find(|(_, i)| {
                    i.network_id == network_id && i.addresses.iter().any(|a| a.addr() == ip)
                })
                .map(|(port_id, _)| (router_id.as_str(), port_id.as_str()))
        })
    }
}
