//! A host's routers as kernel objects ([`desired`]), what the kernel has of
//! them ([`ObservedRouter`]), and the pure diff between the two into
//! [`RouterOp`]s. A router is a namespace `<prefix><router id>` with
//! forwarding on; each interface a veth pair whose namespace end `qr-<port>`
//! has the interface's MAC and addresses (the same on every host) and whose
//! host end `vnrt<port>` the `linux` backend attaches to the network's
//! bridge; each extra route a route of vnet's own protocol.
//!
//! A router with a gateway also gets an uplink `qg-<gateway port>` on the
//! external network, on every host that holds it. Its floating IPs live on
//! the uplink of their port's host (one-to-one NAT and port forwardings,
//! routed out of that uplink by policy rules); everything else leaving the
//! cloud goes to the gateway host, which holds the gateway's address and
//! runs the default SNAT. IPv6 is never NATed (as in Neutron): every host's
//! router sends it out of its own uplink to the external IPv6 gateway, and
//! it comes back to the gateway's IPv6 address, on the gateway host's
//! uplink (the outside routes the tenant prefixes to it).
//!
//! Never a flush: only what differs changes, so planning against a right
//! kernel yields nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use compiler::protocol::{FloatingIpSpec, HostState, NetworkSpec, RouterGatewaySpec};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use model::MacAddr;

use super::metering;
use super::nat;
use super::table::Table;
use crate::linux::router_port_name;

/// The routing protocol number vnet's routes and rules carry, so that vnet
/// reads and removes only its own (not the kernel's connected routes).
pub const VNET_ROUTE_PROTOCOL: u8 = 118;

/// The main routing table: interfaces' subnets and extra routes.
pub const MAIN_TABLE: u32 = 254;
/// Traffic of this host's floating IPs and port forwardings: out of this
/// host's uplink, to the external network's gateway.
pub const FLOATING_TABLE: u32 = 200;
/// Everything else that leaves the cloud: to the gateway host (on the
/// gateway host itself, to the external network's gateway).
pub const UPLINK_TABLE: u32 = 201;
/// Rules are consulted after the main table (32766), so that traffic to the
/// router's own subnets and extra routes never leaves by the uplink.
pub const FLOATING_RULE_PRIORITY: u32 = 40000;
pub const UPLINK_RULE_PRIORITY: u32 = 50000;

/// How this host names its router namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// A router's namespace is this prefix and its id. Every namespace with
    /// the prefix is vnet's: give each agent sharing a machine its own.
    pub netns_prefix: String,
    /// This host's name, as routers' gateway specs name their gateway host.
    pub host: String,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            netns_prefix: "vnr-".into(),
            host: String::new(),
        }
    }
}

impl RouterConfig {
    pub fn netns(&self, router_id: &str) -> String {
        format!("{}{router_id}", self.netns_prefix)
    }
}

/// An interface's device inside its router's namespace: `qr-` and the first
/// 11 characters of its port id, as Neutron names it.
pub fn interface_device(port_id: &str) -> String {
    let prefix: String = port_id.chars().take(11).collect();
    format!("qr-{prefix}")
}

/// The uplink's device inside its router's namespace: `qg-` and the first
/// 11 characters of the gateway port's id, as Neutron names it.
pub fn uplink_device(port_id: &str) -> String {
    let prefix: String = port_id.chars().take(11).collect();
    format!("qg-{prefix}")
}

/// The MAC of a router's uplink on `host`. On the gateway host it is the
/// gateway port's own, so that the other hosts' static neighbour entry for
/// the gateway address stays right across a failover. Elsewhere it is the
/// host's own (every holder's uplink shares the external segment): locally
/// administered, from FNV-1a of the host and router, stable across builds.
pub fn uplink_mac(router_id: &str, gateway: &RouterGatewaySpec, host: &str) -> MacAddr {
    if gateway.host.as_deref() == Some(host) {
        return gateway.mac;
    }
    let hash = host
        .bytes()
        .chain([0xff])
        .chain(router_id.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let [_, _, _, a, b, c, d, e] = hash.to_be_bytes();
    MacAddr([0x02, a, b, c, d, e])
}

/// One router as its namespace should be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredRouter {
    /// By device name inside the namespace: the `qr-` interfaces and the
    /// `qg-` uplink.
    pub interfaces: BTreeMap<String, DesiredInterface>,
    pub routes: BTreeSet<Route>,
    pub rules: BTreeSet<Rule>,
    pub neighbours: BTreeSet<Neighbour>,
    /// Its NAT (`table ip vnet`), if it has any.
    pub nat: Option<Table>,
    /// Its metering counters (`table ip vnet_metering`), if labels apply
    /// to it and it has an uplink here.
    pub metering: Option<Table>,
    /// The floating IPs' ports it realises.
    pub floating_ports: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredInterface {
    pub port_id: String,
    /// The veth end left in the host's namespace.
    pub host_device: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub addresses: BTreeSet<IpNet>,
    /// Addresses added here are announced (gratuitous ARP) once the host
    /// end is attached: an uplink's may have lived on another host's uplink
    /// a moment ago; an interface's gateway may have been asked for by a
    /// VM of this host before it was here (another host routed to the VM
    /// first), and the VM would ask again only a second later.
    pub announce: bool,
}

/// A route of vnet's protocol. With a `device`, it is `onlink` (with a
/// nexthop) or a link-scope route (without one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub table: u32,
    pub destination: IpNet,
    pub nexthop: Option<IpAddr>,
    pub device: Option<String>,
}

/// A policy rule of vnet's protocol: `from SOURCE [ipproto P sport N]
/// lookup TABLE`, of the source's IP version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub priority: u32,
    pub source: IpNet,
    /// (IP protocol, source port): a port forwarding's replies.
    pub port: Option<(u8, u16)>,
    pub table: u32,
}

/// A permanent neighbour entry: each port of an interface's network, on its
/// `qr-` device (so a router never asks by ARP, which the overlay would not
/// carry until this host's bridge knows the port); the gateway host's uplink,
/// on other hosts' `qg-` device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    pub device: String,
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// The routers of `state`, by namespace name. An interface on a network the
/// host does not carry (yet) is left out: it would have no bridge to join.
pub fn desired(state: &HostState, config: &RouterConfig) -> BTreeMap<String, DesiredRouter> {
    state
        .routers
        .iter()
        .map(|(router_id, spec)| {
            let interface = |port_id: &String, iface: &compiler::protocol::RouterInterfaceSpec| {
                let network = state.networks.get(&iface.network_id)?;
                let desired = DesiredInterface {
                    port_id: port_id.clone(),
                    host_device: router_port_name(port_id),
                    mac: iface.mac,
                    mtu: network.mtu,
                    addresses: iface.addresses.iter().copied().collect(),
                    // On a flat network the same gateway MAC is on every
                    // host's interface: announced, the segment would see it
                    // move from host to host.
                    announce: network.physical_network.is_none(),
                };
                Some((interface_device(port_id), desired))
            };
            let mut router = DesiredRouter {
                interfaces: spec
                    .interfaces
                    .iter()
                    .filter_map(|(port_id, iface)| interface(port_id, iface))
                    .collect(),
                neighbours: spec
                    .interfaces
                    .iter()
                    .filter_map(|(port_id, iface)| {
                        Some((port_id, state.networks.get(&iface.network_id)?))
                    })
                    .flat_map(|(port_id, network)| port_neighbours(port_id, network))
                    .collect(),
                routes: spec
                    .routes
                    .iter()
                    .filter(|r| r.destination.addr().is_ipv4() == r.nexthop.is_ipv4())
                    .map(|r| Route {
                        table: MAIN_TABLE,
                        destination: r.destination.trunc(),
                        nexthop: Some(r.nexthop),
                        device: None,
                    })
                    .collect(),
                ..DesiredRouter::default()
            };
            if let Some(gateway) = &spec.gateway {
                let floating: Vec<&FloatingIpSpec> = state
                    .floating_ips
                    .values()
                    .filter(|f| &f.router_id == router_id)
                    .collect();
                uplink(state, config, router_id, gateway, &floating, &mut router);
                let device = uplink_device(&gateway.port_id);
                if router.interfaces.contains_key(&device) {
                    router.metering = metering::ruleset(&device, &spec.metering);
                }
            }
            (config.netns(router_id), router)
        })
        .collect()
}

/// The IPv4 neighbours of the interface `port_id` on `network`: every port
/// of the network, on this host or another.
fn port_neighbours<'a>(
    port_id: &str,
    network: &'a NetworkSpec,
) -> impl Iterator<Item = Neighbour> + 'a {
    let device = interface_device(port_id);
    let local = network
        .local_ports
        .values()
        .flat_map(|p| p.fixed_ips.iter().map(move |ip| (ip.ip_address, p.mac)));
    let remote = network
        .remote_ports
        .values()
        .flat_map(|p| p.ips.iter().map(move |ip| (*ip, p.mac)));
    local
        .chain(remote)
        .filter(|(ip, _)| ip.is_ipv4())
        .map(move |(ip, mac)| Neighbour {
            device: device.clone(),
            ip,
            mac,
        })
}

/// The uplink of a router with a gateway, its routes, rules and NAT (IPv4's
/// only).
fn uplink(
    state: &HostState,
    config: &RouterConfig,
    router_id: &str,
    gateway: &RouterGatewaySpec,
    floating: &[&FloatingIpSpec],
    router: &mut DesiredRouter,
) {
    let Some(network) = state.networks.get(&gateway.network_id) else {
        return;
    };
    let device = uplink_device(&gateway.port_id);
    let on_gateway_host = gateway.host.as_deref() == Some(config.host.as_str());
    let gateway_ips: Vec<Ipv4Net> = gateway
        .addresses
        .iter()
        .filter_map(|a| match a {
            IpNet::V4(a) => Some(*a),
            IpNet::V6(_) => None,
        })
        .collect();
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    };
    let nexthop = gateway.nexthop.and_then(v4);
    let gateway_ips6: Vec<Ipv6Net> = gateway
        .addresses
        .iter()
        .filter_map(|a| match a {
            IpNet::V6(a) => Some(*a),
            IpNet::V4(_) => None,
        })
        .collect();
    let nexthop6 = gateway.ipv6_nexthop.and_then(|ip| match ip {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    });
    let floating: Vec<(&FloatingIpSpec, Ipv4Addr)> = floating
        .iter()
        .filter_map(|f| Some((*f, v4(f.address)?)))
        .collect();

    // Host addresses only: the external subnet's route lives in the policy
    // tables, never in main, so traffic reaches the uplink only by a rule.
    let mut addresses: BTreeSet<IpNet> = floating
        .iter()
        .map(|(_, ip)| IpNet::V4(Ipv4Net::from(*ip)))
        .collect();
    if on_gateway_host {
        addresses.extend(
            gateway_ips
                .iter()
                .map(|a| IpNet::V4(Ipv4Net::from(a.addr()))),
        );
        addresses.extend(
            gateway_ips6
                .iter()
                .map(|a| IpNet::V6(Ipv6Net::from(a.addr()))),
        );
    }
    router.interfaces.insert(
        device.clone(),
        DesiredInterface {
            port_id: gateway.port_id.clone(),
            host_device: router_port_name(&gateway.port_id),
            mac: uplink_mac(router_id, gateway, &config.host),
            mtu: network.mtu,
            addresses,
            announce: true,
        },
    );

    let on_link = |table: u32| -> Vec<Route> {
        gateway_ips
            .iter()
            .map(|a| Route {
                table,
                destination: IpNet::V4(a.trunc()),
                nexthop: None,
                device: Some(device.clone()),
            })
            .collect()
    };
    let default_via = |table: u32, via: Ipv4Addr| Route {
        table,
        destination: IpNet::V4(Ipv4Net::default()),
        nexthop: Some(IpAddr::V4(via)),
        device: Some(device.clone()),
    };
    if !floating.is_empty() {
        router.routes.extend(on_link(FLOATING_TABLE));
        router
            .routes
            .extend(nexthop.map(|via| default_via(FLOATING_TABLE, via)));
    }
    if on_gateway_host {
        router.routes.extend(on_link(UPLINK_TABLE));
        router
            .routes
            .extend(nexthop.map(|via| default_via(UPLINK_TABLE, via)));
    } else if let (Some(_), Some(gateway_ip)) = (&gateway.host, gateway_ips.first()) {
        // To the gateway host, by its uplink's MAC (the gateway port's):
        // no ARP, and nothing to change when it fails over.
        router
            .routes
            .insert(default_via(UPLINK_TABLE, gateway_ip.addr()));
        router.neighbours.insert(Neighbour {
            device: device.clone(),
            ip: IpAddr::V4(gateway_ip.addr()),
            mac: gateway.mac,
        });
    }
    router.rules.insert(Rule {
        priority: UPLINK_RULE_PRIORITY,
        source: IpNet::V4(Ipv4Net::default()),
        port: None,
        table: UPLINK_TABLE,
    });
    if !gateway_ips6.is_empty() {
        // Out of this host's own uplink, whichever host is the gateway's:
        // with no NAT, the way out needs no state of the gateway host's.
        router.routes.extend(gateway_ips6.iter().map(|a| Route {
            table: UPLINK_TABLE,
            destination: IpNet::V6(a.trunc()),
            nexthop: None,
            device: Some(device.clone()),
        }));
        router.routes.extend(nexthop6.map(|via| Route {
            table: UPLINK_TABLE,
            destination: IpNet::V6(Ipv6Net::default()),
            nexthop: Some(IpAddr::V6(via)),
            device: Some(device.clone()),
        }));
        router.rules.insert(Rule {
            priority: UPLINK_RULE_PRIORITY,
            source: IpNet::V6(Ipv6Net::default()),
            port: None,
            table: UPLINK_TABLE,
        });
    }
    for (fip, _) in &floating {
        let rules = fip
            .fixed_ip
            .and_then(v4)
            .map(|ip| (ip, None))
            .into_iter()
            .chain(fip.port_forwardings.values().filter_map(|pf| {
                Some((v4(pf.internal_ip)?, Some((pf.protocol, pf.internal_port))))
            }));
        for (source, port) in rules {
            router.rules.insert(Rule {
                priority: FLOATING_RULE_PRIORITY,
                source: IpNet::V4(Ipv4Net::from(source)),
                port,
                table: FLOATING_TABLE,
            });
        }
        router.floating_ports.insert(fip.port_id.clone());
    }
    let snat = (on_gateway_host && gateway.enable_snat)
        .then(|| gateway_ips.first().map(Ipv4Net::addr))
        .flatten();
    router.nat = nat::ruleset(&device, &floating, snat);
}

/// What one router namespace has that vnet manages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedRouter {
    /// Its sysctls set: forwarding (IPv4 and IPv6) on, and the rest.
    pub forwarding: bool,
    pub loopback_up: bool,
    /// The `qr-` and `qg-` devices, by name.
    pub interfaces: BTreeMap<String, ObservedInterface>,
    /// Routes and rules of [`VNET_ROUTE_PROTOCOL`], in every table.
    pub routes: BTreeSet<Route>,
    pub rules: BTreeSet<Rule>,
    /// Permanent IPv4 neighbour entries on the `qr-` and `qg-` devices.
    pub neighbours: BTreeSet<Neighbour>,
    /// The fingerprint of its `table ip vnet`, if it has one.
    pub nat: Option<String>,
    /// The fingerprint of its `table ip vnet_metering`, if it has one.
    pub metering: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInterface {
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    /// Global addresses (not link-local).
    pub addresses: BTreeSet<IpNet>,
}

/// One kernel change, named as `ip` or `nft` would say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterOp {
    /// `ip netns add NETNS`
    CreateNamespace { netns: String },
    /// `ip netns del NETNS` (its devices, and their veth peers, go too)
    DeleteNamespace { netns: String },
    /// `sysctl net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 …`
    /// (see the router backend's sysctls)
    EnableForwarding { netns: String },
    /// `ip link set lo up`
    LoopbackUp { netns: String },
    /// `ip link add HOST_DEVICE mtu MTU type veth peer DEVICE address MAC
    /// netns NETNS`, then `DEVICE` up
    CreateInterface {
        netns: String,
        device: String,
        host_device: String,
        mac: MacAddr,
        mtu: u32,
    },
    /// `ip link del DEVICE` inside the namespace
    DeleteInterface { netns: String, device: String },
    /// `ip link set DEVICE address MAC mtu MTU up`
    SetInterface {
        netns: String,
        device: String,
        mac: MacAddr,
        mtu: u32,
    },
    /// `ip addr add ADDRESS dev DEVICE nodad`
    AddAddress {
        netns: String,
        device: String,
        address: IpNet,
    },
    /// `ip addr del ADDRESS dev DEVICE`
    DeleteAddress {
        netns: String,
        device: String,
        address: IpNet,
    },
    /// `arping -U -I DEVICE IP`: a gratuitous ARP from DEVICE's MAC.
    Announce {
        netns: String,
        device: String,
        ip: Ipv4Addr,
        mac: MacAddr,
    },
    /// `ip route replace … proto 118`
    AddRoute { netns: String, route: Route },
    /// `ip route del … proto 118`
    DeleteRoute { netns: String, route: Route },
    /// `ip rule add … proto 118`
    AddRule { netns: String, rule: Rule },
    /// `ip rule del … proto 118`
    DeleteRule { netns: String, rule: Rule },
    /// `ip neigh replace IP lladdr MAC dev DEVICE nud permanent`
    AddNeighbour { netns: String, neighbour: Neighbour },
    /// `ip neigh del IP dev DEVICE`
    DeleteNeighbour { netns: String, neighbour: Neighbour },
    /// `nft -f -`: `table ip vnet` replaced whole, in one transaction.
    SetNat { netns: String, ruleset: Table },
    /// `nft delete table ip vnet`
    DeleteNat { netns: String },
    /// `nft -f -`: `table ip vnet_metering` replaced whole, in one
    /// transaction (its counters start again from zero).
    SetMetering { netns: String, ruleset: Table },
    /// `nft delete table ip vnet_metering`
    DeleteMetering { netns: String },
}

impl RouterOp {
    pub fn netns(&self) -> &str {
        match self {
            RouterOp::CreateNamespace { netns }
            | RouterOp::DeleteNamespace { netns }
            | RouterOp::EnableForwarding { netns }
            | RouterOp::LoopbackUp { netns }
            | RouterOp::CreateInterface { netns, .. }
            | RouterOp::DeleteInterface { netns, .. }
            | RouterOp::SetInterface { netns, .. }
            | RouterOp::AddAddress { netns, .. }
            | RouterOp::DeleteAddress { netns, .. }
            | RouterOp::Announce { netns, .. }
            | RouterOp::AddRoute { netns, .. }
            | RouterOp::DeleteRoute { netns, .. }
            | RouterOp::AddRule { netns, .. }
            | RouterOp::DeleteRule { netns, .. }
            | RouterOp::AddNeighbour { netns, .. }
            | RouterOp::DeleteNeighbour { netns, .. }
            | RouterOp::SetNat { netns, .. }
            | RouterOp::DeleteNat { netns }
            | RouterOp::SetMetering { netns, .. }
            | RouterOp::DeleteMetering { netns } => netns,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(via) = self.nexthop {
            write!(f, " via {via}")?;
        }
        if let Some(device) = &self.device {
            write!(f, " dev {device}")?;
            if self.nexthop.is_some() {
                write!(f, " onlink")?;
            } else {
                write!(f, " scope link")?;
            }
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        write!(f, " proto {VNET_ROUTE_PROTOCOL}")
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "priority {} from {}", self.priority, self.source)?;
        if let Some((protocol, port)) = self.port {
            write!(f, " ipproto {protocol} sport {port}")?;
        }
        write!(f, " lookup {} proto {VNET_ROUTE_PROTOCOL}", self.table)
    }
}

impl fmt::Display for RouterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterOp::CreateNamespace { netns } => write!(f, "ip netns add {netns}"),
            RouterOp::DeleteNamespace { netns } => write!(f, "ip netns del {netns}"),
            RouterOp::EnableForwarding { netns } => write!(
                f,
                "ip netns exec {netns} sysctl net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"
            ),
            RouterOp::LoopbackUp { netns } => write!(f, "ip -n {netns} link set lo up"),
            RouterOp::CreateInterface {
                netns,
                device,
                host_device,
                mac,
                mtu,
            } => write!(
                f,
                "ip link add {host_device} mtu {mtu} type veth peer {device} address {mac} netns {netns}"
            ),
            RouterOp::DeleteInterface { netns, device } => {
                write!(f, "ip -n {netns} link del {device}")
            }
            RouterOp::SetInterface {
                netns,
                device,
                mac,
                mtu,
            } => write!(
                f,
                "ip -n {netns} link set {device} address {mac} mtu {mtu} up"
            ),
            RouterOp::AddAddress {
                netns,
                device,
                address,
            } => write!(f, "ip -n {netns} addr add {address} dev {device} nodad"),
            RouterOp::DeleteAddress {
                netns,
                device,
                address,
            } => write!(f, "ip -n {netns} addr del {address} dev {device}"),
            RouterOp::Announce {
                netns,
                device,
                ip,
                mac,
            } => write!(
                f,
                "ip netns exec {netns} arping -U -I {device} -s {mac} {ip}"
            ),
            RouterOp::AddRoute { netns, route } => {
                write!(f, "ip -n {netns} route replace {route}")
            }
            RouterOp::DeleteRoute { netns, route } => write!(f, "ip -n {netns} route del {route}"),
            RouterOp::AddRule { netns, rule } => write!(f, "ip -n {netns} rule add {rule}"),
            RouterOp::DeleteRule { netns, rule } => write!(f, "ip -n {netns} rule del {rule}"),
            RouterOp::AddNeighbour { netns, neighbour } => write!(
                f,
                "ip -n {netns} neigh replace {} lladdr {} dev {} nud permanent",
                neighbour.ip, neighbour.mac, neighbour.device
            ),
            RouterOp::DeleteNeighbour { netns, neighbour } => write!(
                f,
                "ip -n {netns} neigh del {} dev {}",
                neighbour.ip, neighbour.device
            ),
            RouterOp::SetNat { netns, ruleset } => write!(
                f,
                "ip netns exec {netns} nft -f - # table ip vnet {}",
                ruleset.fingerprint
            ),
            RouterOp::DeleteNat { netns } => {
                write!(f, "ip netns exec {netns} nft delete table ip vnet")
            }
            RouterOp::SetMetering { netns, ruleset } => write!(
                f,
                "ip netns exec {netns} nft -f - # table ip vnet_metering {}",
                ruleset.fingerprint
            ),
            RouterOp::DeleteMetering { netns } => {
                write!(f, "ip netns exec {netns} nft delete table ip vnet_metering")
            }
        }
    }
}

/// The operations that take the router namespaces in `have` to `want`. A
/// namespace in `have` but not in `want` is deleted; one in neither is not
/// looked at. Per namespace, in the order they must run.
pub fn diff(
    want: &BTreeMap<String, DesiredRouter>,
    have: &BTreeMap<String, ObservedRouter>,
) -> Vec<RouterOp> {
    let mut ops = Vec::new();
    for netns in have.keys().filter(|n| !want.contains_key(*n)) {
        ops.push(RouterOp::DeleteNamespace {
            netns: netns.clone(),
        });
    }
    let empty = ObservedRouter::default();
    for (netns, router) in want {
        let current = match have.get(netns) {
            Some(current) => current,
            None => {
                ops.push(RouterOp::CreateNamespace {
                    netns: netns.clone(),
                });
                &empty
            }
        };
        diff_router(netns, router, current, &mut ops);
    }
    ops
}

fn diff_router(netns: &str, want: &DesiredRouter, have: &ObservedRouter, ops: &mut Vec<RouterOp>) {
    let netns_s = || netns.to_owned();
    if !have.forwarding {
        ops.push(RouterOp::EnableForwarding { netns: netns_s() });
    }
    if !have.loopback_up {
        ops.push(RouterOp::LoopbackUp { netns: netns_s() });
    }
    for device in have.interfaces.keys() {
        if !want.interfaces.contains_key(device) {
            ops.push(RouterOp::DeleteInterface {
                netns: netns_s(),
                device: device.clone(),
            });
        }
    }
    let mut address_ops = Vec::new();
    let mut announcements = Vec::new();
    for (device, iface) in &want.interfaces {
        let current = have.interfaces.get(device);
        let moved_mac = current.is_some_and(|c| c.mac != Some(iface.mac));
        match current {
            None => ops.push(RouterOp::CreateInterface {
                netns: netns_s(),
                device: device.clone(),
                host_device: iface.host_device.clone(),
                mac: iface.mac,
                mtu: iface.mtu,
            }),
            Some(c) if c.mac != Some(iface.mac) || c.mtu != iface.mtu || !c.up => {
                ops.push(RouterOp::SetInterface {
                    netns: netns_s(),
                    device: device.clone(),
                    mac: iface.mac,
                    mtu: iface.mtu,
                });
            }
            Some(_) => {}
        }
        let had = current.map(|c| &c.addresses);
        for address in had.into_iter().flatten() {
            if !iface.addresses.contains(address) {
                address_ops.push(RouterOp::DeleteAddress {
                    netns: netns_s(),
                    device: device.clone(),
                    address: *address,
                });
            }
        }
        for address in &iface.addresses {
            let new = !had.is_some_and(|h| h.contains(address));
            if new {
                address_ops.push(RouterOp::AddAddress {
                    netns: netns_s(),
                    device: device.clone(),
                    address: *address,
                });
            }
            if let (true, IpAddr::V4(ip)) = (iface.announce && (new || moved_mac), address.addr()) {
                announcements.push(RouterOp::Announce {
                    netns: netns_s(),
                    device: device.clone(),
                    ip,
                    mac: iface.mac,
                });
            }
        }
    }
    // Deletes first: an address or route may move between interfaces.
    address_ops.sort_by_key(|op| !matches!(op, RouterOp::DeleteAddress { .. }));
    ops.extend(address_ops);
    for neighbour in have.neighbours.difference(&want.neighbours) {
        ops.push(RouterOp::DeleteNeighbour {
            netns: netns_s(),
            neighbour: neighbour.clone(),
        });
    }
    for neighbour in want.neighbours.difference(&have.neighbours) {
        ops.push(RouterOp::AddNeighbour {
            netns: netns_s(),
            neighbour: neighbour.clone(),
        });
    }
    for route in have.routes.difference(&want.routes) {
        ops.push(RouterOp::DeleteRoute {
            netns: netns_s(),
            route: route.clone(),
        });
    }
    for route in want.routes.difference(&have.routes) {
        ops.push(RouterOp::AddRoute {
            netns: netns_s(),
            route: route.clone(),
        });
    }
    for rule in have.rules.difference(&want.rules) {
        ops.push(RouterOp::DeleteRule {
            netns: netns_s(),
            rule: rule.clone(),
        });
    }
    for rule in want.rules.difference(&have.rules) {
        ops.push(RouterOp::AddRule {
            netns: netns_s(),
            rule: rule.clone(),
        });
    }
    match (&want.nat, &have.nat) {
        (Some(want), have) if have.as_ref() != Some(&want.fingerprint) => {
            ops.push(RouterOp::SetNat {
                netns: netns_s(),
                ruleset: want.clone(),
            });
        }
        (None, Some(_)) => ops.push(RouterOp::DeleteNat { netns: netns_s() }),
        _ => {}
    }
    match (&want.metering, &have.metering) {
        (Some(want), have) if have.as_ref() != Some(&want.fingerprint) => {
            ops.push(RouterOp::SetMetering {
                netns: netns_s(),
                ruleset: want.clone(),
            });
        }
        (None, Some(_)) => ops.push(RouterOp::DeleteMetering { netns: netns_s() }),
        _ => {}
    }
    // Last: an address is announced once traffic to it is handled.
    ops.extend(announcements);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use compiler::protocol::{
        FixedIpSpec, LocalPortSpec, NetworkSpec, RemotePortSpec, RouteSpec, RouterInterfaceSpec,
        RouterSpec,
    };

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn state() -> HostState {
        let network = |vni| NetworkSpec {
            vni,
            mtu: 1450,
            physical_network: None,
            subnets: BTreeMap::new(),
            local_ports: BTreeMap::new(),
            remote_ports: BTreeMap::new(),
        };
        let iface = |network: &str, last, address: &str| RouterInterfaceSpec {
            network_id: network.into(),
            mac: MacAddr([0xfa, 0x16, 0x3e, 0, 0, last]),
            addresses: vec![net(address)],
        };
        // A VM here and one on another host, on "na".
        let mut na = network(1);
        na.local_ports.insert(
            "vm1".into(),
            LocalPortSpec {
                mac: MacAddr([0xfa, 0x16, 0x3e, 1, 0, 1]),
                fixed_ips: vec![FixedIpSpec {
                    subnet_id: "sa".into(),
                    ip_address: "10.0.0.5".parse().unwrap(),
                }],
                device: "tapvm1".into(),
                admin_state_up: true,
                dhcpv4_options: vec![],
                dhcpv6_options: vec![],
            },
        );
        na.remote_ports.insert(
            "vm2".into(),
            RemotePortSpec {
                mac: MacAddr([0xfa, 0x16, 0x3e, 1, 0, 2]),
                ips: vec!["10.0.0.6".parse().unwrap(), "fd00::6".parse().unwrap()],
                vtep: "192.0.2.2".parse().unwrap(),
            },
        );
        HostState {
            networks: [("na".into(), na), ("nb".into(), network(2))].into(),
            routers: [(
                "r1".into(),
                RouterSpec {
                    interfaces: [
                        ("pa-0123456789".into(), iface("na", 1, "10.0.0.1/24")),
                        ("pb-0123456789".into(), iface("nb", 2, "10.0.1.1/24")),
                        // A network this host does not carry: left out.
                        ("pc-0123456789".into(), iface("nc", 3, "10.0.2.1/24")),
                    ]
                    .into(),
                    routes: vec![RouteSpec {
                        destination: net("192.168.0.0/16"),
                        nexthop: "10.0.0.9".parse().unwrap(),
                    }],
                    gateway: None,
                    metering: Default::default(),
                },
            )]
            .into(),
            ..HostState::default()
        }
    }

    /// The kernel as a plan leaves it, per its ops, for checking that a
    /// second plan is empty.
    fn observed_after(want: &BTreeMap<String, DesiredRouter>) -> BTreeMap<String, ObservedRouter> {
        want.iter()
            .map(|(netns, r)| {
                let interfaces = r
                    .interfaces
                    .iter()
                    .map(|(dev, i)| {
                        let observed = ObservedInterface {
                            mac: Some(i.mac),
                            mtu: i.mtu,
                            up: true,
                            addresses: i.addresses.clone(),
                        };
                        (dev.clone(), observed)
                    })
                    .collect();
                let observed = ObservedRouter {
                    forwarding: true,
                    loopback_up: true,
                    interfaces,
                    routes: r.routes.clone(),
                    rules: r.rules.clone(),
                    neighbours: r.neighbours.clone(),
                    nat: r.nat.as_ref().map(|n| n.fingerprint.clone()),
                    metering: r.metering.as_ref().map(|m| m.fingerprint.clone()),
                };
                (netns.clone(), observed)
            })
            .collect()
    }

    #[test]
    fn a_new_router_is_built_whole_then_nothing_is_planned() {
        let want = desired(&state(), &RouterConfig::default());
        let router = &want["vnr-r1"];
        assert_eq!(
            router.interfaces.keys().collect::<Vec<_>>(),
            ["qr-pa-01234567", "qr-pb-01234567"]
        );
        assert_eq!(
            router.interfaces["qr-pa-01234567"].host_device,
            "vnrtpa-01234567"
        );
        let ops: Vec<String> = diff(&want, &BTreeMap::new())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ops,
            [
                "ip netns add vnr-r1",
                "ip netns exec vnr-r1 sysctl net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
                "ip -n vnr-r1 link set lo up",
                "ip link add vnrtpa-01234567 mtu 1450 type veth peer qr-pa-01234567 address fa:16:3e:00:00:01 netns vnr-r1",
                "ip link add vnrtpb-01234567 mtu 1450 type veth peer qr-pb-01234567 address fa:16:3e:00:00:02 netns vnr-r1",
                "ip -n vnr-r1 addr add 10.0.0.1/24 dev qr-pa-01234567 nodad",
                "ip -n vnr-r1 addr add 10.0.1.1/24 dev qr-pb-01234567 nodad",
                // The VMs of its networks, here or not: the router never ARPs
                // (IPv4 only).
                "ip -n vnr-r1 neigh replace 10.0.0.5 lladdr fa:16:3e:01:00:01 dev qr-pa-01234567 nud permanent",
                "ip -n vnr-r1 neigh replace 10.0.0.6 lladdr fa:16:3e:01:00:02 dev qr-pa-01234567 nud permanent",
                "ip -n vnr-r1 route replace 192.168.0.0/16 via 10.0.0.9 proto 118",
                // Its gateways, to the VMs that asked before they were here
                // (sent once the host ends are attached).
                "ip netns exec vnr-r1 arping -U -I qr-pa-01234567 -s fa:16:3e:00:00:01 10.0.0.1",
                "ip netns exec vnr-r1 arping -U -I qr-pb-01234567 -s fa:16:3e:00:00:02 10.0.1.1",
            ]
        );
        assert_eq!(diff(&want, &observed_after(&want)), []);
        // On a flat network the gateway's MAC is every host's: never
        // announced on the segment.
        let mut flat = state();
        if let Some(nb) = flat.networks.get_mut("nb") {
            nb.physical_network = Some("physnet".into());
        }
        let want = desired(&flat, &RouterConfig::default());
        assert!(!diff(&want, &BTreeMap::new()).iter().any(
            |op| matches!(op, RouterOp::Announce { device, .. } if device == "qr-pb-01234567")
        ));
    }

    #[test]
    fn only_what_differs_changes_and_unwanted_routers_go() {
        let want = desired(&state(), &RouterConfig::default());
        let mut have = observed_after(&want);
        let r1 = have.get_mut("vnr-r1").unwrap();
        // An address moved, a stale interface and route, the MTU drifted.
        let a = r1.interfaces.get_mut("qr-pa-01234567").unwrap();
        a.addresses = [net("10.0.0.254/24")].into();
        a.mtu = 1500;
        r1.interfaces.insert(
            "qr-old0000000".into(),
            ObservedInterface {
                mac: None,
                mtu: 1450,
                up: true,
                addresses: BTreeSet::new(),
            },
        );
        r1.routes.insert(Route {
            table: MAIN_TABLE,
            destination: net("172.16.0.0/12"),
            nexthop: Some("10.0.1.9".parse().unwrap()),
            device: None,
        });
        have.insert("vnr-gone".into(), ObservedRouter::default());
        let ops: Vec<String> = diff(&want, &have).iter().map(ToString::to_string).collect();
        assert_eq!(
            ops,
            [
                "ip netns del vnr-gone",
                "ip -n vnr-r1 link del qr-old0000000",
                "ip -n vnr-r1 link set qr-pa-01234567 address fa:16:3e:00:00:01 mtu 1450 up",
                "ip -n vnr-r1 addr del 10.0.0.254/24 dev qr-pa-01234567",
                "ip -n vnr-r1 addr add 10.0.0.1/24 dev qr-pa-01234567 nodad",
                "ip -n vnr-r1 route del 172.16.0.0/12 via 10.0.1.9 proto 118",
                "ip netns exec vnr-r1 arping -U -I qr-pa-01234567 -s fa:16:3e:00:00:01 10.0.0.1",
            ]
        );
    }

    /// r1 of [`state`] with a gateway on the flat network "ext" and two
    /// floating IPs on this host: one associated, one forwarding a port.
    fn with_gateway(gateway_host: Option<&str>) -> HostState {
        use compiler::protocol::{FloatingIpSpec, PortForwardingSpec, RouterGatewaySpec};
        let mut state = state();
        let mut ext = state.networks["na"].clone();
        ext.physical_network = Some("external".into());
        ext.mtu = 1500;
        state.networks.insert("ext".into(), ext);
        state.routers.get_mut("r1").unwrap().gateway = Some(RouterGatewaySpec {
            network_id: "ext".into(),
            port_id: "pg-0123456789".into(),
            mac: MacAddr([0xfa, 0x16, 0x3e, 0, 0, 9]),
            addresses: vec![net("203.0.113.2/24")],
            nexthop: Some("203.0.113.1".parse().unwrap()),
            ipv6_nexthop: None,
            enable_snat: true,
            host: gateway_host.map(str::to_owned),
        });
        let fip = |address: &str, fixed: Option<&str>, forwardings| FloatingIpSpec {
            router_id: "r1".into(),
            port_id: format!("fp-{address}"),
            address: address.parse().unwrap(),
            fixed_ip: fixed.map(|f| f.parse().unwrap()),
            port_forwardings: forwardings,
        };
        let forwarding = PortForwardingSpec {
            protocol: 6,
            external_port: 2222,
            internal_ip: "10.0.1.6".parse().unwrap(),
            internal_port: 22,
        };
        state.floating_ips = [
            (
                "f1".into(),
                fip("203.0.113.10", Some("10.0.0.5"), BTreeMap::new()),
            ),
            (
                "f2".into(),
                fip("203.0.113.11", None, [("pf1".into(), forwarding)].into()),
            ),
        ]
        .into();
        state
    }

    fn config(host: &str) -> RouterConfig {
        RouterConfig {
            host: host.into(),
            ..RouterConfig::default()
        }
    }

    fn uplink_ops(state: &HostState, host: &str) -> Vec<String> {
        let want = desired(state, &config(host));
        let ops = diff(&want, &BTreeMap::new());
        assert_eq!(
            diff(&want, &observed_after(&want)),
            [],
            "a second plan is empty"
        );
        ops.iter()
            .map(ToString::to_string)
            .filter(|op| op.contains("qg-") || op.contains("table") || op.contains("rule"))
            .collect()
    }

    #[test]
    fn the_gateway_host_holds_the_gateway_address_and_snats_for_all() {
        let ops = uplink_ops(&with_gateway(Some("h1")), "h1");
        let nat = desired(&with_gateway(Some("h1")), &config("h1"))["vnr-r1"]
            .nat
            .clone()
            .unwrap();
        assert_eq!(
            ops,
            [
                "ip link add vnrtpg-01234567 mtu 1500 type veth peer qg-pg-01234567 address fa:16:3e:00:00:09 netns vnr-r1",
                "ip -n vnr-r1 addr add 203.0.113.2/32 dev qg-pg-01234567 nodad",
                "ip -n vnr-r1 addr add 203.0.113.10/32 dev qg-pg-01234567 nodad",
                "ip -n vnr-r1 addr add 203.0.113.11/32 dev qg-pg-01234567 nodad",
                "ip -n vnr-r1 route replace 0.0.0.0/0 via 203.0.113.1 dev qg-pg-01234567 onlink table 200 proto 118",
                "ip -n vnr-r1 route replace 203.0.113.0/24 dev qg-pg-01234567 scope link table 200 proto 118",
                "ip -n vnr-r1 route replace 0.0.0.0/0 via 203.0.113.1 dev qg-pg-01234567 onlink table 201 proto 118",
                "ip -n vnr-r1 route replace 203.0.113.0/24 dev qg-pg-01234567 scope link table 201 proto 118",
                "ip -n vnr-r1 rule add priority 40000 from 10.0.0.5/32 lookup 200 proto 118",
                "ip -n vnr-r1 rule add priority 40000 from 10.0.1.6/32 ipproto 6 sport 22 lookup 200 proto 118",
                "ip -n vnr-r1 rule add priority 50000 from 0.0.0.0/0 lookup 201 proto 118",
                &format!(
                    "ip netns exec vnr-r1 nft -f - # table ip vnet {}",
                    nat.fingerprint
                ),
                "ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s fa:16:3e:00:00:09 203.0.113.2",
                "ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s fa:16:3e:00:00:09 203.0.113.10",
                "ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s fa:16:3e:00:00:09 203.0.113.11",
            ]
        );
        assert!(
            nat.text()
                .contains("oifname \"qg-pg-01234567\" snat to 203.0.113.2")
        );
        assert!(nat.text().contains("tcp dport 2222 dnat to 10.0.1.6:22"));
    }

    /// IPv6 leaves every host by its own uplink, unNATed; only the gateway
    /// host holds the gateway's IPv6 address, where it comes back.
    #[test]
    fn ipv6_is_routed_out_of_every_hosts_uplink_without_nat() {
        for (host, address) in [("h1", true), ("h2", false)] {
            let mut state = with_gateway(Some("h1"));
            let gateway = state
                .routers
                .get_mut("r1")
                .unwrap()
                .gateway
                .as_mut()
                .unwrap();
            gateway.addresses.push(net("2001:db8:e::5/64"));
            gateway.ipv6_nexthop = Some("2001:db8:e::1".parse().unwrap());
            let v6: Vec<String> = uplink_ops(&state, host)
                .into_iter()
                .filter(|op| op.contains("2001:db8") || op.contains("::/0"))
                .collect();
            let mut want = vec![
                "ip -n vnr-r1 route replace ::/0 via 2001:db8:e::1 dev qg-pg-01234567 onlink table 201 proto 118",
                "ip -n vnr-r1 route replace 2001:db8:e::/64 dev qg-pg-01234567 scope link table 201 proto 118",
                "ip -n vnr-r1 rule add priority 50000 from ::/0 lookup 201 proto 118",
            ];
            if address {
                want.insert(
                    0,
                    "ip -n vnr-r1 addr add 2001:db8:e::5/128 dev qg-pg-01234567 nodad",
                );
            }
            assert_eq!(v6, want, "on {host}");
            let nat = desired(&state, &config(host))["vnr-r1"]
                .nat
                .clone()
                .unwrap();
            assert!(!nat.text().contains("2001:db8"), "never NATed");
        }
    }

    #[test]
    fn other_hosts_reach_the_gateway_host_by_its_mac_and_keep_their_floating_ips() {
        let state = with_gateway(Some("h2"));
        let ops = uplink_ops(&state, "h1");
        let nat = desired(&state, &config("h1"))["vnr-r1"]
            .nat
            .clone()
            .unwrap();
        let mac = uplink_mac("r1", state.routers["r1"].gateway.as_ref().unwrap(), "h1");
        assert_ne!(
            mac,
            MacAddr([0xfa, 0x16, 0x3e, 0, 0, 9]),
            "not the gateway's"
        );
        assert_eq!(mac.0[0], 0x02, "locally administered");
        assert_eq!(
            ops,
            [
                format!("ip link add vnrtpg-01234567 mtu 1500 type veth peer qg-pg-01234567 address {mac} netns vnr-r1"),
                "ip -n vnr-r1 addr add 203.0.113.10/32 dev qg-pg-01234567 nodad".into(),
                "ip -n vnr-r1 addr add 203.0.113.11/32 dev qg-pg-01234567 nodad".into(),
                "ip -n vnr-r1 neigh replace 203.0.113.2 lladdr fa:16:3e:00:00:09 dev qg-pg-01234567 nud permanent".into(),
                "ip -n vnr-r1 route replace 0.0.0.0/0 via 203.0.113.1 dev qg-pg-01234567 onlink table 200 proto 118".into(),
                "ip -n vnr-r1 route replace 203.0.113.0/24 dev qg-pg-01234567 scope link table 200 proto 118".into(),
                "ip -n vnr-r1 route replace 0.0.0.0/0 via 203.0.113.2 dev qg-pg-01234567 onlink table 201 proto 118".into(),
                "ip -n vnr-r1 rule add priority 40000 from 10.0.0.5/32 lookup 200 proto 118".into(),
                "ip -n vnr-r1 rule add priority 40000 from 10.0.1.6/32 ipproto 6 sport 22 lookup 200 proto 118".into(),
                "ip -n vnr-r1 rule add priority 50000 from 0.0.0.0/0 lookup 201 proto 118".into(),
                format!("ip netns exec vnr-r1 nft -f - # table ip vnet {}", nat.fingerprint),
                format!("ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s {mac} 203.0.113.10"),
                format!("ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s {mac} 203.0.113.11"),
            ]
        );
        assert!(
            !nat.text().contains("snat to 203.0.113.2"),
            "no default SNAT here"
        );
    }

    #[test]
    fn a_failover_moves_the_gateway_address_and_announces_it() {
        // h1 was a plain holder; now it is the gateway host.
        let before = desired(&with_gateway(Some("h2")), &config("h1"));
        let after = desired(&with_gateway(Some("h1")), &config("h1"));
        let ops: Vec<String> = diff(&after, &observed_after(&before))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ops,
            [
                "ip -n vnr-r1 link set qg-pg-01234567 address fa:16:3e:00:00:09 mtu 1500 up",
                "ip -n vnr-r1 addr add 203.0.113.2/32 dev qg-pg-01234567 nodad",
                "ip -n vnr-r1 neigh del 203.0.113.2 dev qg-pg-01234567",
                "ip -n vnr-r1 route del 0.0.0.0/0 via 203.0.113.2 dev qg-pg-01234567 onlink table 201 proto 118",
                "ip -n vnr-r1 route replace 0.0.0.0/0 via 203.0.113.1 dev qg-pg-01234567 onlink table 201 proto 118",
                "ip -n vnr-r1 route replace 203.0.113.0/24 dev qg-pg-01234567 scope link table 201 proto 118",
                &format!(
                    "ip netns exec vnr-r1 nft -f - # table ip vnet {}",
                    after["vnr-r1"].nat.as_ref().unwrap().fingerprint
                ),
                // The MAC moved: every address of the uplink is announced.
                "ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s fa:16:3e:00:00:09 203.0.113.2",
                "ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s fa:16:3e:00:00:09 203.0.113.10",
                "ip netns exec vnr-r1 arping -U -I qg-pg-01234567 -s fa:16:3e:00:00:09 203.0.113.11",
            ]
        );
        // With no gateway host at all, other hosts have no way out but
        // their floating IPs.
        let stranded = desired(&with_gateway(None), &config("h1"));
        assert!(
            !stranded["vnr-r1"]
                .neighbours
                .iter()
                .any(|n| n.device.starts_with("qg-"))
        );
        assert!(
            !stranded["vnr-r1"]
                .routes
                .iter()
                .any(|r| r.table == UPLINK_TABLE)
        );
    }
}
