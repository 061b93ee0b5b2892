//! What the trace reads: the compiled state as one host sees it
//! ([`Compiled`]), and the facts the compiled state does not hold: liveness
//! and port status ([`Facts`]). Two implementations of `Compiled`: over the
//! server's [`Compiler`] (borrowing queries) and over hosts' [`HostState`]s
//! (the very snapshots agents get). It must not copy a host's state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use compiler::protocol::{
    FloatingIpSpec, HostState, LocalPortSpec, PortSecuritySpec, RouterInterfaceSpec, RouterSpec,
    RuleSpec, SubnetSpec,
};
use compiler::{Compiler, PortSeen, containing_member};
use ipnet::IpNet;
use model::PortStatus;

/// A port wherever it is bound.
#[derive(Clone, Copy, Debug)]
pub struct PortRef<'a> {
    pub network_id: &'a str,
    /// Empty when unbound.
    pub host: &'a str,
    pub local: &'a LocalPortSpec,
    /// As its host holds it (`None`: its host holds none).
    pub security: Option<&'a PortSecuritySpec>,
}

/// A network as a host carries it.
#[derive(Clone, Copy, Debug)]
pub struct NetworkRef<'a> {
    pub vni: u32,
    pub subnets: &'a BTreeMap<String, SubnetSpec>,
}

/// A security group as a host holds it.
#[derive(Clone, Debug)]
pub struct GroupRef<'a> {
    pub stateful: bool,
    /// By id.
    pub rules: Vec<&'a RuleSpec>,
}

/// The compiled state, one host's view at a time: each answer is what that
/// host's snapshot holds.
pub trait Compiled {
    /// A port the compiled state knows, bound or not.
    fn port(&self, id: &str) -> Option<PortRef<'_>>;
    /// A network as `host` carries it.
    fn network(&self, host: &str, network_id: &str) -> Option<NetworkRef<'_>>;
    /// How `host` sees a port of a network it carries.
    fn port_seen(&self, host: &str, port_id: &str) -> Option<PortSeen<'_>>;
    /// The port `host`'s neighbour entries of a network give `ip` to.
    fn port_with_ip(&self, host: &str, network_id: &str, ip: IpAddr) -> Option<&str>;
    /// The port security `host` holds for a local port.
    fn port_security(&self, host: &str, port_id: &str) -> Option<&PortSecuritySpec>;
    /// A group `host` holds.
    fn group(&self, host: &str, group_id: &str) -> Option<GroupRef<'_>>;
    /// `None` if `host` holds no member set for the group, else the member
    /// that contains `ip`, if one does.
    fn member(&self, host: &str, group_id: &str, ip: IpAddr) -> Option<Option<IpNet>>;
    /// `None` if `host` holds no addresses of the address group, else the
    /// address that contains `ip`, if one does.
    fn address(&self, host: &str, address_group_id: &str, ip: IpAddr) -> Option<Option<IpNet>>;
    /// A router `host` realises.
    fn router(&self, host: &str, router_id: &str) -> Option<&RouterSpec>;
    /// The router interface a port is, as `host` holds it: (router id,
    /// interface).
    fn router_interface(&self, host: &str, port_id: &str) -> Option<(&str, &RouterInterfaceSpec)>;
    /// The router interface holding `ip` on a network `host` carries:
    /// (router id, interface port id).
    fn router_interface_with_ip(
        &self,
        host: &str,
        network_id: &str,
        ip: IpAddr,
    ) -> Option<(&str, &str)>;
    /// The floating IPs whose NAT `host` does.
    fn floating_ips(&self, host: &str) -> Vec<&FloatingIpSpec>;
    /// Where a floating IP is realised, and as what: (host, spec).
    fn floating_ip(&self, id: &str) -> Option<(&str, &FloatingIpSpec)>;
}

/// What the compiled state does not say: liveness (the server's host
/// registry) and the ports as the model holds them.
pub trait Facts {
    /// Whether the host's agent heartbeats.
    fn agent_alive(&self, host: &str) -> bool;
    /// The port's status (`ACTIVE` once its agent wired it).
    fn port_status(&self, port_id: &str) -> Option<PortStatus>;
    /// The port of a network that holds `ip`, bound or not.
    fn port_with_ip(&self, network_id: &str, ip: IpAddr) -> Option<String>;
    /// The floating IP holding `address`.
    fn floating_ip_with_address(&self, address: IpAddr) -> Option<String>;
}

impl Compiled for Compiler {
    fn port(&self, id: &str) -> Option<PortRef<'_>> {
        Compiler::port(self, id).map(|p| PortRef {
            network_id: p.network_id,
            host: p.host,
            local: p.local,
            security: (!p.host.is_empty()).then_some(p.security),
        })
    }

    fn network(&self, host: &str, network_id: &str) -> Option<NetworkRef<'_>> {
        self.network_seen_from(host, network_id)
            .map(|n| NetworkRef {
                vni: n.vni,
                subnets: n.subnets,
            })
    }

    fn port_seen(&self, host: &str, port_id: &str) -> Option<PortSeen<'_>> {
        self.port_seen_from(host, port_id)
    }

    fn port_with_ip(&self, host: &str, network_id: &str, ip: IpAddr) -> Option<&str> {
        self.port_with_ip_seen_from(host, network_id, ip)
    }

    fn port_security(&self, host: &str, port_id: &str) -> Option<&PortSecuritySpec> {
        self.port_security_on(host, port_id)
    }

    fn group(&self, host: &str, group_id: &str) -> Option<GroupRef<'_>> {
        self.group_seen_from(host, group_id).map(|g| GroupRef {
            stateful: g.stateful,
            rules: g.rules().collect(),
        })
    }

    fn member(&self, host: &str, group_id: &str, ip: IpAddr) -> Option<Option<IpNet>> {
        self.member_seen_from(host, group_id, ip)
    }

    fn address(&self, host: &str, address_group_id: &str, ip: IpAddr) -> Option<Option<IpNet>> {
        self.address_seen_from(host, address_group_id, ip)
    }

    fn router(&self, host: &str, router_id: &str) -> Option<&RouterSpec> {
        self.router_seen_from(host, router_id)
    }

    fn router_interface(&self, host: &str, port_id: &str) -> Option<(&str, &RouterInterfaceSpec)> {
        self.router_interface_seen_from(host, port_id)
    }

    fn router_interface_with_ip(
        &self,
        host: &str,
        network_id: &str,
        ip: IpAddr,
    ) -> Option<(&str, &str)> {
        self.router_interface_with_ip_seen_from(host, network_id, ip)
    }

    fn floating_ips(&self, host: &str) -> Vec<&FloatingIpSpec> {
        self.floating_ips_seen_from(host).collect()
    }

    fn floating_ip(&self, id: &str) -> Option<(&str, &FloatingIpSpec)> {
        self.floating_ip_home(id)
    }
}

/// Every host's snapshot, as the agents hold them, with the hosts' tunnel
/// endpoints: the trace over exactly what agents get (tests, and agents'
/// own state dumps).
#[derive(Clone, Debug, Default)]
pub struct Snapshots {
    pub states: BTreeMap<String, HostState>,
}

impl Snapshots {
    fn local(&self, port_id: &str) -> Option<(&str, &str, &LocalPortSpec)> {
        self.states.iter().find_map(|(host, state)| {
            state.networks.iter().find_map(|(network_id, net)| {
                net.local_ports
                    .get(port_id)
                    .map(|p| (host.as_str(), network_id.as_str(), p))
            })
        })
    }
}

impl Compiled for Snapshots {
    fn port(&self, id: &str) -> Option<PortRef<'_>> {
        let (host, network_id, local) = self.local(id)?;
        Some(PortRef {
            network_id,
            host,
            local,
            security: self.states.get(host)?.port_security.get(id),
        })
    }

    fn network(&self, host: &str, network_id: &str) -> Option<NetworkRef<'_>> {
        let net = self.states.get(host)?.networks.get(network_id)?;
        Some(NetworkRef {
            vni: net.vni,
            subnets: &net.subnets,
        })
    }

    fn port_seen(&self, host: &str, port_id: &str) -> Option<PortSeen<'_>> {
        let state = self.states.get(host)?;
        state.networks.values().find_map(|net| {
            if let Some(local) = net.local_ports.get(port_id) {
                return Some(PortSeen::Local(local));
            }
            net.remote_ports.get(port_id).map(|r| PortSeen::Remote {
                mac: r.mac,
                vtep: r.vtep,
            })
        })
    }

    fn port_with_ip(&self, host: &str, network_id: &str, ip: IpAddr) -> Option<&str> {
        let net = self.states.get(host)?.networks.get(network_id)?;
        let local = net
            .local_ports
            .iter()
            .find(|(_, p)| p.fixed_ips.iter().any(|f| f.ip_address == ip));
        let remote = || {
            net.remote_ports
                .iter()
                .find(|(_, p)| p.ips.contains(&ip))
                .map(|(id, _)| id)
        };
        local.map(|(id, _)| id).or_else(remote).map(String::as_str)
    }

    fn port_security(&self, host: &str, port_id: &str) -> Option<&PortSecuritySpec> {
        self.states.get(host)?.port_security.get(port_id)
    }

    fn group(&self, host: &str, group_id: &str) -> Option<GroupRef<'_>> {
        let g = self.states.get(host)?.security_groups.get(group_id)?;
        Some(GroupRef {
            stateful: g.stateful,
            rules: g.rules.iter().collect(),
        })
    }

    fn member(&self, host: &str, group_id: &str, ip: IpAddr) -> Option<Option<IpNet>> {
        let set = self.states.get(host)?.remote_groups.get(group_id)?;
        Some(containing_member(ip, |n| set.contains(n)))
    }

    fn address(&self, host: &str, address_group_id: &str, ip: IpAddr) -> Option<Option<IpNet>> {
        let set = self
            .states
            .get(host)?
            .address_groups
            .get(address_group_id)?;
        Some(containing_member(ip, |n| set.contains(n)))
    }

    fn router(&self, host: &str, router_id: &str) -> Option<&RouterSpec> {
        self.states.get(host)?.routers.get(router_id)
    }

    fn router_interface(&self, host: &str, port_id: &str) -> Option<(&str, &RouterInterfaceSpec)> {
        self.states
            .get(host)?
            .routers
            .iter()
            .find_map(|(id, r)| r.interfaces.get(port_id).map(|i| (id.as_str(), i)))
    }

    fn router_interface_with_ip(
        &self,
        host: &str,
        network_id: &str,
        ip: IpAddr,
    ) -> Option<(&str, &str)> {
        let state = self.states.get(host)?;
        state.networks.get(network_id)?;
        state.routers.iter().find_map(|(id, r)| {
            r.interfaces
                .iter()
                .find(|(_, i)| {
                    i.network_id == network_id && i.addresses.iter().any(|a| a.addr() == ip)
                })
                .map(|(port, _)| (id.as_str(), port.as_str()))
        })
    }

    fn floating_ips(&self, host: &str) -> Vec<&FloatingIpSpec> {
        self.states
            .get(host)
            .map(|s| s.floating_ips.values().collect())
            .unwrap_or_default()
    }

    fn floating_ip(&self, id: &str) -> Option<(&str, &FloatingIpSpec)> {
        self.states
            .iter()
            .find_map(|(host, s)| Some((host.as_str(), s.floating_ips.get(id)?)))
    }
}
