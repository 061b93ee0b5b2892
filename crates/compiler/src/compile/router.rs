//! Distributed routers: which hosts hold a router, and which networks a host
//! carries because of one. A router is realised, whole and identical, on
//! every host with a port bound on one of its networks, so that traffic
//! between its subnets is routed on the sending VM's own host; such a host
//! therefore also carries every other network of the router (its bridge,
//! VXLAN and remote ports), even with no port of its own there. Not
//! transitive: a network carried only for a router brings in no further
//! routers. Work per change is in proportion to the hosts and networks of
//! the routers it touches, never to the cloud.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use model::{OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Port, Router};

use super::{Compiler, Emitter};
use crate::protocol::{Change, RouteSpec, RouterGatewaySpec, RouterInterfaceSpec, RouterSpec};

/// Everything under one router id. Interfaces (ports) may arrive before the
/// router itself and outlive it, so the entry lives while anything names it.
#[derive(Debug, Default)]
pub(super) struct RouterEntry {
    /// From the router resource; empty until it arrives.
    routes: Vec<RouteSpec>,
    /// Interface port id → its network id.
    interfaces: BTreeMap<String, String>,
    /// Its networks, each with how many of its interfaces are on it.
    pub(super) networks: BTreeMap<String, u32>,
    /// The hosts that hold it, each with on how many of its networks it has
    /// bound ports.
    pub(super) hosts: BTreeMap<String, u32>,
    /// The spec its hosts hold (as last sent).
    pub(super) spec: RouterSpec,
    /// From the router resource: its uplink, if it has one.
    gateway: Option<GatewayEntry>,
    /// From the router resource: its project (whose metering labels it
    /// counts); `None` until it arrives.
    pub(super) project: Option<String>,
    /// The live gateway host chosen to run its default SNAT. It holds the
    /// router (and so carries its networks) like a host with ports on them.
    pub(super) gateway_host: Option<String>,
    /// Its availability zone hints: when some are given, its gateway host
    /// is one of those zones.
    zones: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct GatewayEntry {
    network_id: String,
    port_id: String,
    enable_snat: bool,
}

impl RouterEntry {
    fn is_unused(&self) -> bool {
        self.routes.is_empty() && self.interfaces.is_empty() && self.gateway.is_none()
    }
}

/// The router whose gateway a port is, from its owner fields.
pub(super) fn gateway_of(port: &Port) -> Option<String> {
    (port.device_owner == OWNER_ROUTER_GATEWAY && !port.device_id.is_empty())
        .then(|| port.device_id.clone())
}

/// Rendezvous (highest random weight) hashing: each router picks the
/// candidate host with the highest weight, so a host joining or leaving
/// moves only the routers it wins or held, and every server computing from
/// the same inputs picks the same host. FNV-1a: stable across builds, which
/// a std hasher does not promise.
fn gateway_weight(router_id: &str, host: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in router_id.bytes().chain([0xff]).chain(host.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The router a port is an interface of, from its owner fields.
pub(super) fn interface_of(port: &Port) -> Option<String> {
    (port.device_owner == OWNER_ROUTER_INTERFACE && !port.device_id.is_empty())
        .then(|| port.device_id.clone())
}

/// Ports that routers and floating IPs own are no VM's: they are realised
/// by what owns them (a router interface on every host of its router), never
/// bound to one host's bridge.
pub(super) fn is_router_owned(port: &Port) -> bool {
    port.device_owner.starts_with("network:router") || port.device_owner == "network:floatingip"
}

/// Whether one host carries some networks and holds some routers, taken
/// before a change so that only what the change altered is emitted.
pub(super) struct Carrying {
    host: String,
    networks: Vec<(String, bool)>,
    routers: Vec<(String, bool)>,
}

impl Compiler {
    /// Whether `host` carries the network: it is known and the host has a
    /// port bound on it or holds a router with an interface on it.
    pub(super) fn carries(&self, host: &str, network_id: &str) -> bool {
        self.networks
            .get(network_id)
            .is_some_and(|n| n.segment.is_some() && n.named_by(host))
    }

    fn holds(&self, host: &str, router_id: &str) -> bool {
        self.routers
            .get(router_id)
            .is_some_and(|r| r.hosts.contains_key(host))
    }

    pub(super) fn carrying<'a>(
        &self,
        host: &str,
        networks: impl IntoIterator<Item = &'a String>,
        routers: impl IntoIterator<Item = &'a String>,
    ) -> Carrying {
        Carrying {
            host: host.to_owned(),
            networks: networks
                .into_iter()
                .map(|n| (n.clone(), self.carries(host, n)))
                .collect(),
            routers: routers
                .into_iter()
                .map(|r| (r.clone(), self.holds(host, r)))
                .collect(),
        }
    }

    /// `carrying` for a port about to be bound on, or unbound from, a
    /// network: the network itself, the routers on it, and their networks.
    pub(super) fn carrying_around(&self, host: &str, network_id: &str) -> Carrying {
        let routers: Vec<&String> = self
            .networks
            .get(network_id)
            .into_iter()
            .flat_map(|n| n.routers.iter())
            .collect();
        let own = network_id.to_owned();
        let mut networks: BTreeSet<&String> = routers
            .iter()
            .filter_map(|r| self.routers.get(*r))
            .flat_map(|r| r.networks.keys())
            .collect();
        networks.insert(&own);
        self.carrying(host, networks, routers)
    }

    /// Emits what changed for one host since `before`, in the order it
    /// applies: routers it stops holding, networks it stops carrying,
    /// networks it starts carrying (with all they hold), routers it starts
    /// holding. `skip` is a network whose own change the caller emits.
    pub(super) fn carrying_changed(
        &self,
        before: &Carrying,
        skip: Option<&str>,
        out: &mut Emitter,
    ) {
        let host = before.host.as_str();
        for (router_id, held) in &before.routers {
            if *held && !self.holds(host, router_id) {
                out.push(
                    host,
                    Change::RouterRemove {
                        router_id: router_id.clone(),
                    },
                );
            }
        }
        for (network_id, carried) in &before.networks {
            if skip == Some(network_id.as_str()) {
                continue;
            }
            let now = self.carries(host, network_id);
            if *carried && !now {
                out.push(
                    host,
                    Change::NetworkRemove {
                        network_id: network_id.clone(),
                    },
                );
            } else if !*carried
                && now
                && let Some(spec) = self
                    .networks
                    .get(network_id)
                    .and_then(|n| self.network_spec(n, host))
            {
                out.network_added(host, network_id, spec);
            }
        }
        for (router_id, held) in &before.routers {
            if !*held
                && let Some(router) = self.routers.get(router_id)
                && router.hosts.contains_key(host)
            {
                out.push(
                    host,
                    Change::RouterUpsert {
                        router_id: router_id.clone(),
                        spec: router.spec.clone(),
                    },
                );
            }
        }
    }

    /// A host gained its first bound port on a network: it now holds every
    /// router on that network (and carries their networks).
    pub(super) fn routers_gain_host(&mut self, network_id: &str, host: &str) {
        for router_id in self.routers_on(network_id) {
            self.router_gains_host(&router_id, host);
        }
    }

    /// A host lost its last bound port on a network.
    pub(super) fn routers_lose_host(&mut self, network_id: &str, host: &str) {
        for router_id in self.routers_on(network_id) {
            self.router_loses_host(&router_id, host);
        }
    }

    fn routers_on(&self, network_id: &str) -> Vec<String> {
        self.networks
            .get(network_id)
            .map(|n| n.routers.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The only place a router's hosts and the networks they carry for it
    /// grow: one more of the router's networks has ports on `host`.
    fn router_gains_host(&mut self, router_id: &str, host: &str) {
        let Some(router) = self.routers.get_mut(router_id) else {
            return;
        };
        let held = router.hosts.entry(host.to_owned()).or_default();
        *held += 1;
        if *held > 1 {
            return;
        }
        let networks: Vec<String> = router.networks.keys().cloned().collect();
        for network_id in networks {
            *self
                .networks
                .entry(network_id)
                .or_default()
                .routed_hosts
                .entry(host.to_owned())
                .or_default() += 1;
        }
        self.hosts
            .entry(host.to_owned())
            .or_default()
            .routers
            .insert(router_id.to_owned());
    }

    /// Undoes [`Compiler::router_gains_host`].
    fn router_loses_host(&mut self, router_id: &str, host: &str) {
        let Some(router) = self.routers.get_mut(router_id) else {
            return;
        };
        let Some(held) = router.hosts.get_mut(host) else {
            return;
        };
        *held = held.saturating_sub(1);
        if *held > 0 {
            return;
        }
        router.hosts.remove(host);
        let networks: Vec<String> = router.networks.keys().cloned().collect();
        for network_id in networks {
            self.unroute(&network_id, host);
        }
        if let Some(h) = self.hosts.get_mut(host) {
            h.routers.remove(router_id);
        }
        self.forget_host_if_unused(host);
    }

    /// One router fewer makes `host` carry `network_id`.
    fn unroute(&mut self, network_id: &str, host: &str) {
        if let Some(network) = self.networks.get_mut(network_id)
            && let Some(n) = network.routed_hosts.get_mut(host)
        {
            *n -= 1;
            if *n == 0 {
                network.routed_hosts.remove(host);
            }
        }
        self.forget_network_if_unused(network_id);
    }

    // ---- inputs -----------------------------------------------------------

    pub(super) fn put_router(&mut self, router: &Router, out: &mut Emitter) {
        let routes = router
            .routes
            .iter()
            .map(|r| RouteSpec {
                destination: r.destination,
                nexthop: r.nexthop,
            })
            .collect();
        let gateway = router.gateway.as_ref().map(|g| GatewayEntry {
            network_id: g.network_id.clone(),
            port_id: g.port_id.clone(),
            enable_snat: g.enable_snat,
        });
        let id = &router.std.id;
        let entry = self.routers.entry(id.clone()).or_default();
        entry.routes = routes;
        let zones: BTreeSet<String> = router.availability_zone_hints.iter().cloned().collect();
        let rezoned = entry.zones != zones;
        entry.zones = zones;
        let old = entry.project.replace(router.std.project_id.clone());
        self.metering
            .router_project(id, old.as_deref(), Some(&router.std.project_id));
        self.set_gateway(id, gateway, out);
        if rezoned {
            self.place_gateway(id, out);
        }
        self.refresh_router(id, out);
    }

    pub(super) fn delete_router(&mut self, id: &str, out: &mut Emitter) {
        if let Some(router) = self.routers.get_mut(id) {
            router.routes.clear();
            let old = router.project.take();
            self.metering.router_project(id, old.as_deref(), None);
        }
        self.set_gateway(id, None, out);
        self.refresh_router(id, out);
        self.forget_router_if_unused(id);
    }

    // ---- gateways -----------------------------------------------------------

    /// A router's uplink changed: its hosts carry the external network (for
    /// their floating IPs and to reach the gateway host), without that
    /// network pulling in the hosts of its own ports; then it is placed.
    fn set_gateway(&mut self, router_id: &str, gateway: Option<GatewayEntry>, out: &mut Emitter) {
        let Some(router) = self.routers.get_mut(router_id) else {
            return;
        };
        let old = std::mem::replace(&mut router.gateway, gateway.clone());
        let old_network = old.map(|g| g.network_id);
        let new_network = gateway.map(|g| g.network_id);
        if old_network != new_network {
            let hosts: Vec<String> = router.hosts.keys().cloned().collect();
            let networks: Vec<&String> = old_network.iter().chain(new_network.iter()).collect();
            let before: Vec<_> = hosts
                .iter()
                .map(|h| self.carrying(h, networks.iter().copied(), []))
                .collect();
            if let Some(network_id) = &old_network {
                self.gateway_network_leaves(router_id, network_id, &hosts);
            }
            if let Some(network_id) = &new_network {
                self.gateway_network_joins(router_id, network_id, &hosts);
            }
            for carrying in &before {
                self.carrying_changed(carrying, None, out);
            }
        }
        self.place_gateway(router_id, out);
    }

    fn gateway_network_joins(&mut self, router_id: &str, network_id: &str, hosts: &[String]) {
        let first = self.routers.get_mut(router_id).is_some_and(|router| {
            let n = router.networks.entry(network_id.to_owned()).or_default();
            *n += 1;
            *n == 1
        });
        self.gateway_routers.insert(router_id.to_owned());
        let network = self.networks.entry(network_id.to_owned()).or_default();
        network.gateway_routers.insert(router_id.to_owned());
        if first {
            for host in hosts {
                *network.routed_hosts.entry(host.clone()).or_default() += 1;
            }
        }
    }

    fn gateway_network_leaves(&mut self, router_id: &str, network_id: &str, hosts: &[String]) {
        let mut last = false;
        if let Some(router) = self.routers.get_mut(router_id)
            && let Some(n) = router.networks.get_mut(network_id)
        {
            *n -= 1;
            if *n == 0 {
                router.networks.remove(network_id);
                last = true;
            }
        }
        self.gateway_routers.remove(router_id);
        if let Some(network) = self.networks.get_mut(network_id) {
            network.gateway_routers.remove(router_id);
        }
        if last {
            for host in hosts {
                self.unroute(network_id, host);
            }
        }
    }

    /// Chooses the router's gateway host among the live gateway hosts that
    /// map its external network's physical network; if the choice changed,
    /// the old host lets go of the router and the new one takes it (with
    /// everything it carries for it), and every holder hears the new spec.
    /// Whether a host is registered in one of `zones`.
    fn host_in(&self, host: &str, zones: &BTreeSet<String>) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| zones.contains(&h.zone))
    }

    pub(super) fn place_gateway(&mut self, router_id: &str, out: &mut Emitter) {
        let Some(router) = self.routers.get(router_id) else {
            return;
        };
        let chosen = router.gateway.as_ref().and_then(|g| {
            let network = self.networks.get(&g.network_id)?;
            let physnet = network.segment.as_ref()?.physical_network.as_ref()?;
            self.gateway_hosts
                .get(physnet)?
                .iter()
                .filter(|h| router.zones.is_empty() || self.host_in(h, &router.zones))
                .max_by_key(|h| gateway_weight(router_id, h))
                .cloned()
        });
        if chosen == router.gateway_host {
            return;
        }
        let old = router.gateway_host.clone();
        let stale: Vec<String> = router.hosts.keys().cloned().collect();
        let networks: Vec<String> = router.networks.keys().cloned().collect();
        let id = router_id.to_owned();
        let before: Vec<Carrying> = old
            .iter()
            .chain(chosen.iter())
            .map(|h| self.carrying(h, &networks, [&id]))
            .collect();
        if let Some(router) = self.routers.get_mut(router_id) {
            router.gateway_host = chosen.clone();
        }
        if let Some(host) = &chosen {
            self.router_gains_host(router_id, host);
        }
        if let Some(host) = &old {
            self.router_loses_host(router_id, host);
        }
        self.router_spec_changed(router_id, &stale, out);
        for carrying in &before {
            self.carrying_changed(carrying, None, out);
        }
    }

    /// A host's gateway offer changed (it registered with or without
    /// `--gateway`, its mappings changed, it died or came back): every
    /// router with a gateway is placed again. Rendezvous hashing moves only
    /// the routers that host wins or held.
    pub(super) fn gateway_hosts_changed(&mut self, out: &mut Emitter) {
        let routers: Vec<String> = self.gateway_routers.iter().cloned().collect();
        for router_id in routers {
            self.place_gateway(&router_id, out);
        }
    }

    /// A port stopped or started being an interface of a router (`old`,
    /// `new`: the router it was and is an interface of), or changed while
    /// being one. The port's entry is already the new one.
    pub(super) fn interface_changed(
        &mut self,
        port_id: &str,
        old: Option<(String, String)>,
        out: &mut Emitter,
    ) {
        let new = self.ports.get(port_id).and_then(|p| {
            p.interface
                .as_ref()
                .map(|r| (r.clone(), p.network_id.clone()))
        });
        if old == new {
            if let Some((router_id, _)) = new {
                self.refresh_router(&router_id, out);
            }
            return;
        }
        if let Some((router_id, network_id)) = old {
            self.detach_interface(port_id, &router_id, &network_id, out);
        }
        if let Some((router_id, network_id)) = new {
            self.attach_interface(port_id, &router_id, &network_id, out);
        }
    }

    /// The hosts an interface change on (router, network) can concern, each
    /// with what it carries and holds now.
    fn carrying_for_interface(&self, router_id: &str, network_id: &str) -> Vec<Carrying> {
        let router = self.routers.get(router_id);
        let mut hosts: BTreeSet<&String> =
            router.into_iter().flat_map(|r| r.hosts.keys()).collect();
        hosts.extend(
            self.networks
                .get(network_id)
                .into_iter()
                .flat_map(|n| n.bound_ports.keys()),
        );
        let own = network_id.to_owned();
        let mut networks: BTreeSet<&String> =
            router.into_iter().flat_map(|r| r.networks.keys()).collect();
        networks.insert(&own);
        let id = router_id.to_owned();
        hosts
            .into_iter()
            .map(|h| self.carrying(h, networks.iter().copied(), [&id]))
            .collect()
    }

    fn attach_interface(
        &mut self,
        port_id: &str,
        router_id: &str,
        network_id: &str,
        out: &mut Emitter,
    ) {
        let before = self.carrying_for_interface(router_id, network_id);
        let router = self.routers.entry(router_id.to_owned()).or_default();
        let stale: Vec<String> = router.hosts.keys().cloned().collect();
        let first_interface = !router.interfaces.values().any(|n| n == network_id);
        router
            .interfaces
            .insert(port_id.to_owned(), network_id.to_owned());
        let on_network = router.networks.entry(network_id.to_owned()).or_default();
        *on_network += 1;
        let network = self.networks.entry(network_id.to_owned()).or_default();
        if *on_network == 1 {
            // The router's hosts now carry the network.
            for host in &stale {
                *network.routed_hosts.entry(host.clone()).or_default() += 1;
            }
        }
        if first_interface {
            // The network's hosts now hold the router.
            network.routers.insert(router_id.to_owned());
            let bound: Vec<String> = network.bound_ports.keys().cloned().collect();
            for host in bound {
                self.router_gains_host(router_id, &host);
            }
        }
        self.router_spec_changed(router_id, &stale, out);
        for carrying in &before {
            self.carrying_changed(carrying, None, out);
        }
    }

    fn detach_interface(
        &mut self,
        port_id: &str,
        router_id: &str,
        network_id: &str,
        out: &mut Emitter,
    ) {
        let before = self.carrying_for_interface(router_id, network_id);
        let Some(router) = self.routers.get_mut(router_id) else {
            return;
        };
        router.interfaces.remove(port_id);
        let last_interface = !router.interfaces.values().any(|n| n == network_id);
        let last = match router.networks.get_mut(network_id) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        let held: Vec<String> = router.hosts.keys().cloned().collect();
        if last {
            router.networks.remove(network_id);
            for host in &held {
                self.unroute(network_id, host);
            }
        }
        if last_interface {
            if let Some(network) = self.networks.get_mut(network_id) {
                network.routers.remove(router_id);
            }
            let bound: Vec<String> = self
                .networks
                .get(network_id)
                .map(|n| n.bound_ports.keys().cloned().collect())
                .unwrap_or_default();
            for host in bound {
                self.router_loses_host(router_id, &host);
            }
        }
        let stale: Vec<String> = self
            .routers
            .get(router_id)
            .map(|r| r.hosts.keys().cloned().collect())
            .unwrap_or_default();
        self.router_spec_changed(router_id, &stale, out);
        for carrying in &before {
            self.carrying_changed(carrying, None, out);
        }
        self.forget_router_if_unused(router_id);
    }

    /// Recomputes a router's spec; if it changed, every host holding it
    /// hears of it.
    pub(super) fn refresh_router(&mut self, router_id: &str, out: &mut Emitter) {
        let hosts: Vec<String> = self
            .routers
            .get(router_id)
            .map(|r| r.hosts.keys().cloned().collect())
            .unwrap_or_default();
        self.router_spec_changed(router_id, &hosts, out);
    }

    /// Recomputes a router's spec; if it changed, tells `hosts` (those that
    /// held it before and still do) of the new one.
    fn router_spec_changed(&mut self, router_id: &str, hosts: &[String], out: &mut Emitter) {
        let Some(spec) = self
            .routers
            .get(router_id)
            .map(|r| self.router_spec(router_id, r))
        else {
            return;
        };
        let Some(router) = self.routers.get_mut(router_id) else {
            return;
        };
        if router.spec == spec {
            return;
        }
        router.spec = spec;
        for host in hosts.iter().filter(|h| router.hosts.contains_key(*h)) {
            out.push(
                host,
                Change::RouterUpsert {
                    router_id: router_id.to_owned(),
                    spec: router.spec.clone(),
                },
            );
        }
    }

    /// A router as its hosts hold it: each interface with its MAC and its
    /// addresses, at their subnets' prefix lengths (an address whose subnet
    /// is unknown is left out until the subnet arrives).
    fn router_spec(&self, router_id: &str, router: &RouterEntry) -> RouterSpec {
        let interfaces = router
            .interfaces
            .iter()
            .filter_map(|(port_id, network_id)| {
                let port = self.ports.get(port_id)?;
                let subnets = &self.networks.get(network_id)?.subnets;
                let addresses = port
                    .local
                    .fixed_ips
                    .iter()
                    .filter_map(|f| {
                        let subnet = subnets.get(&f.subnet_id)?;
                        IpNet::new(f.ip_address, subnet.cidr.prefix_len()).ok()
                    })
                    .collect();
                let spec = RouterInterfaceSpec {
                    network_id: network_id.clone(),
                    mac: port.local.mac,
                    addresses,
                };
                Some((port_id.clone(), spec))
            })
            .collect();
        RouterSpec {
            interfaces,
            routes: router.routes.clone(),
            gateway: self.gateway_spec(router_id, router),
            metering: self.metering.of_router(router.project.as_deref()),
        }
    }

    /// The uplink as every holder sees it; `None` until its port (owned by
    /// the router as its gateway) is known.
    fn gateway_spec(&self, router_id: &str, router: &RouterEntry) -> Option<RouterGatewaySpec> {
        let gateway = router.gateway.as_ref()?;
        let port = self
            .ports
            .get(&gateway.port_id)
            .filter(|p| p.gateway_of.as_deref() == Some(router_id))?;
        let subnets = &self.networks.get(&gateway.network_id)?.subnets;
        let on_network: Vec<_> = port
            .local
            .fixed_ips
            .iter()
            .filter_map(|f| Some((f.ip_address, subnets.get(&f.subnet_id)?)))
            .collect();
        let addresses = on_network
            .iter()
            .filter_map(|(ip, subnet)| IpNet::new(*ip, subnet.cidr.prefix_len()).ok())
            .collect();
        // The IPv4 upstream first: IPv4 is what SNAT and floating IPs carry.
        let upstreams: Vec<_> = on_network
            .iter()
            .filter_map(|(_, s)| s.gateway_ip)
            .collect();
        let nexthop = upstreams
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(upstreams.first())
            .copied();
        Some(RouterGatewaySpec {
            network_id: gateway.network_id.clone(),
            port_id: gateway.port_id.clone(),
            mac: port.local.mac,
            addresses,
            nexthop,
            ipv6_nexthop: upstreams.iter().find(|ip| ip.is_ipv6()).copied(),
            enable_snat: gateway.enable_snat,
            host: router.gateway_host.clone(),
        })
    }

    /// The routers with an interface or their gateway on a network whose
    /// subnets changed.
    pub(super) fn refresh_routers_of(&mut self, network_id: &str, out: &mut Emitter) {
        let routers: BTreeSet<String> = self
            .networks
            .get(network_id)
            .map(|n| n.routers.union(&n.gateway_routers).cloned().collect())
            .unwrap_or_default();
        for router_id in routers {
            self.refresh_router(&router_id, out);
        }
    }

    fn forget_router_if_unused(&mut self, id: &str) {
        if self.routers.get(id).is_some_and(RouterEntry::is_unused) {
            self.routers.remove(id);
        }
    }

    /// The router specs a host holds, for its snapshot.
    pub(super) fn routers_of_host(
        &self,
        host: &str,
    ) -> impl Iterator<Item = (&String, &RouterSpec)> {
        self.hosts
            .get(host)
            .into_iter()
            .flat_map(|h| h.routers.iter())
            .filter_map(|id| Some((id, &self.routers.get(id)?.spec)))
    }

    /// The networks a host carries because of its routers.
    pub(super) fn routed_networks_of_host(&self, host: &str) -> impl Iterator<Item = &String> {
        self.hosts
            .get(host)
            .into_iter()
            .flat_map(|h| h.routers.iter())
            .filter_map(|id| self.routers.get(id))
            .flat_map(|r| r.networks.keys())
    }
}
