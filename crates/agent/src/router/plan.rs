//! A host's routers as kernel objects ([`desired`]), what the kernel has of
//! them ([`ObservedRouter`]), and the pure diff between the two into
//! [`RouterOp`]s. A router is a namespace `<prefix><router id>` with
//! forwarding on; each interface a veth pair whose namespace end `qr-<port>`
//! has the interface's MAC and addresses (the same on every host) and whose
//! host end `vnrt<port>` the `linux` backend attaches to the network's
//! bridge; each extra route a route of vnet's own protocol. Never a flush:
//! only what differs changes, so planning against a right kernel yields
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use compiler::protocol::HostState;
use ipnet::IpNet;
use model::MacAddr;

use crate::linux::router_port_name;

/// The routing protocol number vnet's routes carry, so that vnet reads and
/// removes only its own (not the kernel's connected routes).
pub const VNET_ROUTE_PROTOCOL: u8 = 118;

/// How this host names its router namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// A router's namespace is this prefix and its id. Every namespace with
    /// the prefix is vnet's: give each agent sharing a machine its own.
    pub netns_prefix: String,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            netns_prefix: "vnr-".into(),
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

/// One router as its namespace should be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredRouter {
    /// By device name inside the namespace.
    pub interfaces: BTreeMap<String, DesiredInterface>,
    pub routes: BTreeSet<Route>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredInterface {
    pub port_id: String,
    /// The veth end left in the host's namespace.
    pub host_device: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub addresses: BTreeSet<IpNet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

/// The routers of `state`, by namespace name. An interface on a network the
/// host does not carry (yet) is left out: it would have no bridge to join.
pub fn desired(state: &HostState, config: &RouterConfig) -> BTreeMap<String, DesiredRouter> {
    state
        .routers
        .iter()
        .map(|(router_id, spec)| {
            let interfaces = spec
                .interfaces
                .iter()
                .filter_map(|(port_id, iface)| {
                    let network = state.networks.get(&iface.network_id)?;
                    let desired = DesiredInterface {
                        port_id: port_id.clone(),
                        host_device: router_port_name(port_id),
                        mac: iface.mac,
                        mtu: network.mtu,
                        addresses: iface.addresses.iter().copied().collect(),
                    };
                    Some((interface_device(port_id), desired))
                })
                .collect();
            let routes = spec
                .routes
                .iter()
                .filter(|r| r.destination.addr().is_ipv4() == r.nexthop.is_ipv4())
                .map(|r| Route {
                    destination: r.destination.trunc(),
                    nexthop: r.nexthop,
                })
                .collect();
            (
                config.netns(router_id),
                DesiredRouter { interfaces, routes },
            )
        })
        .collect()
}

/// What one router namespace has that vnet manages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedRouter {
    /// Its sysctls set: forwarding (IPv4 and IPv6) on, and the rest.
    pub forwarding: bool,
    pub loopback_up: bool,
    /// The `qr-` devices, by name.
    pub interfaces: BTreeMap<String, ObservedInterface>,
    /// Routes of [`VNET_ROUTE_PROTOCOL`] in the main table.
    pub routes: BTreeSet<Route>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInterface {
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    /// Global addresses (not link-local).
    pub addresses: BTreeSet<IpNet>,
}

/// One kernel change, named as `ip` would say it.
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
    /// `ip route replace DESTINATION via NEXTHOP proto 118`
    AddRoute { netns: String, route: Route },
    /// `ip route del DESTINATION via NEXTHOP proto 118`
    DeleteRoute { netns: String, route: Route },
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
            | RouterOp::AddRoute { netns, .. }
            | RouterOp::DeleteRoute { netns, .. } => netns,
        }
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
            RouterOp::AddRoute { netns, route } => write!(
                f,
                "ip -n {netns} route replace {} via {} proto {VNET_ROUTE_PROTOCOL}",
                route.destination, route.nexthop
            ),
            RouterOp::DeleteRoute { netns, route } => write!(
                f,
                "ip -n {netns} route del {} via {} proto {VNET_ROUTE_PROTOCOL}",
                route.destination, route.nexthop
            ),
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
    for (device, iface) in &want.interfaces {
        let current = have.interfaces.get(device);
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
            if !had.is_some_and(|h| h.contains(address)) {
                address_ops.push(RouterOp::AddAddress {
                    netns: netns_s(),
                    device: device.clone(),
                    address: *address,
                });
            }
        }
    }
    // Deletes first: an address or route may move between interfaces.
    address_ops.sort_by_key(|op| !matches!(op, RouterOp::DeleteAddress { .. }));
    ops.extend(address_ops);
    for route in have.routes.difference(&want.routes) {
        ops.push(RouterOp::DeleteRoute {
            netns: netns_s(),
            route: *route,
        });
    }
    for route in want.routes.difference(&have.routes) {
        ops.push(RouterOp::AddRoute {
            netns: netns_s(),
            route: *route,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use compiler::protocol::{NetworkSpec, RouteSpec, RouterInterfaceSpec, RouterSpec};

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
        HostState {
            networks: [("na".into(), network(1)), ("nb".into(), network(2))].into(),
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
                "ip -n vnr-r1 route replace 192.168.0.0/16 via 10.0.0.9 proto 118",
            ]
        );
        assert_eq!(diff(&want, &observed_after(&want)), []);
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
            destination: net("172.16.0.0/12"),
            nexthop: "10.0.1.9".parse().unwrap(),
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
            ]
        );
    }
}
