//! A host's desired state ([`HostState`]) restated as kernel objects: the
//! links, bridge FDB, VXLAN FDB and neighbour entries the `linux` backend
//! must make exist, and the physical interfaces its flat networks' bridges
//! enslave. Pure; the shape mirrors [`super::Observed`] so that the plan is
//! a diff of two like things.

use std::collections::BTreeMap;
use std::net::IpAddr;

use compiler::protocol::{HostState, NetworkSpec};
use model::MacAddr;

use super::LinuxConfig;
use super::link::{LinkKind, PortFlags};
use super::names::{network_bridge, network_bridge_mac, router_port_name, vxlan_name};

/// A bridge or VXLAN device vnet creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredLink {
    pub kind: LinkKind,
    pub mtu: u32,
    /// A fixed MAC (bridges: see `bridge_mac`).
    pub address: Option<MacAddr>,
    /// The bridge a VXLAN device is a port of.
    pub master: Option<String>,
    pub port_flags: Option<PortFlags>,
}

/// A local port's device, which vnet wires but never creates or deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPort {
    pub port_id: String,
    pub bridge: String,
    pub mtu: u32,
    /// The port's `admin_state_up`.
    pub up: bool,
    pub mac: MacAddr,
}

/// Everything vnet wants in the kernel, by device name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Bridges and VXLAN devices.
    pub links: BTreeMap<String, DesiredLink>,
    /// Local port devices.
    pub ports: BTreeMap<String, DesiredPort>,
    /// Physical interfaces (a flat network's, by the agent's mapping) →
    /// the bridge that enslaves them. Like port devices, vnet attaches and
    /// detaches them but never creates, deletes or reconfigures them.
    pub uplinks: BTreeMap<String, String>,
    /// Bridge FDB (`master static`): bridge → MAC → port device.
    pub fdb: BTreeMap<String, BTreeMap<MacAddr, String>>,
    /// VXLAN FDB (`self permanent dst`): VXLAN device → MAC → remote VTEP.
    pub vxlan_fdb: BTreeMap<String, BTreeMap<MacAddr, IpAddr>>,
    /// Neighbour answers (`nud permanent`): bridge → IP → MAC.
    pub neighbours: BTreeMap<String, BTreeMap<IpAddr, MacAddr>>,
}

impl Desired {
    /// Restates `state` as kernel objects. Conflicts that a well-formed state
    /// cannot have are settled deterministically, never by panicking: of two
    /// networks with one VNI the first (by id) wins; of two ports naming one
    /// device the first wins; a MAC both local and remote stays local; an
    /// invalid (multicast or zero) MAC gets no entry, so that no flood entry
    /// can ever be written. A flat network whose physical network this host
    /// does not map is left out (its ports stay unwired).
    pub fn from_host_state(state: &HostState, config: &LinuxConfig) -> Self {
        let mut d = Desired::default();
        for net in state.networks.values() {
            d.add_network(net, config);
        }
        d.add_router_ports(state, config);
        d
    }

    /// Adds one network's bridge, VXLAN device, ports and entries, unless
    /// its bridge is there already (of two networks with one, the first
    /// wins) or its physical network is not mapped here.
    pub(super) fn add_network(&mut self, net: &NetworkSpec, config: &LinuxConfig) {
        let d = self;
        let bridge = network_bridge(net);
        let uplink = match &net.physical_network {
            None => None,
            Some(physnet) => match config.physical_networks.get(physnet) {
                Some(iface) => Some(iface),
                None => return,
            },
        };
        if d.links.contains_key(&bridge) {
            return;
        }
        d.links.insert(
            bridge.clone(),
            DesiredLink {
                kind: LinkKind::Bridge,
                mtu: net.mtu,
                address: Some(network_bridge_mac(net)),
                master: None,
                port_flags: None,
            },
        );
        let vxlan = match uplink {
            Some(iface) => {
                d.uplinks
                    .entry(iface.clone())
                    .or_insert_with(|| bridge.clone());
                None
            }
            None => {
                let vxlan = vxlan_name(net.vni);
                d.links.insert(
                    vxlan.clone(),
                    DesiredLink {
                        kind: LinkKind::vxlan(net.vni, config.underlay_ip, config.vxlan_port),
                        mtu: net.mtu,
                        address: None,
                        master: Some(bridge.clone()),
                        port_flags: Some(PortFlags::VXLAN),
                    },
                );
                Some(vxlan)
            }
        };
        let fdb = d.fdb.entry(bridge.clone()).or_default();
        for (port_id, port) in &net.local_ports {
            if d.ports.contains_key(&port.device) {
                continue;
            }
            d.ports.insert(
                port.device.clone(),
                DesiredPort {
                    port_id: port_id.clone(),
                    bridge: bridge.clone(),
                    mtu: net.mtu,
                    up: port.admin_state_up,
                    mac: port.mac,
                },
            );
            if port.mac.is_valid_port_mac() {
                fdb.entry(port.mac).or_insert_with(|| port.device.clone());
            }
        }
        // A flat network stops here: remote ports are reached through
        // the physical interface, whose bridge port learns them like any
        // machine on that segment, and ARP there is answered by each
        // address's owner (the segment holds machines vnet knows nothing
        // of, and addresses that move, such as floating IPs): neighbour
        // entries would answer nothing without `neigh_suppress`, and
        // suppression on a physical port would answer from vnet's view
        // instead of the wire's.
        let Some(vxlan) = vxlan else {
            return;
        };
        let vxlan_fdb = d.vxlan_fdb.entry(vxlan.clone()).or_default();
        for port in net.remote_ports.values() {
            if !port.mac.is_valid_port_mac() || fdb.contains_key(&port.mac) {
                continue;
            }
            fdb.insert(port.mac, vxlan.clone());
            vxlan_fdb.insert(port.mac, port.vtep);
        }
        let neighbours = d.neighbours.entry(bridge.clone()).or_default();
        for (ip, mac) in net.neighbours() {
            if mac.is_valid_port_mac() {
                neighbours.entry(ip).or_insert(mac);
            }
        }
        // On a network with IPv6, every remote port's link-local address
        // too (the kernel's EUI-64 of its MAC): neighbour discovery for it
        // is answered here, as for its fixed IPs, since no solicitation
        // crosses the overlay.
        if net.subnets.values().any(|s| s.cidr.addr().is_ipv6()) {
            for port in net.remote_ports.values() {
                if port.mac.is_valid_port_mac() {
                    let link_local = port.mac.ipv6_link_local();
                    neighbours.entry(IpAddr::V6(link_local)).or_insert(port.mac);
                }
            }
        }
    }

    /// Router interfaces and uplinks: the host end of each veth is wired as
    /// a port of its network's bridge, the interface's MAC behind it.
    pub(super) fn add_router_ports(&mut self, state: &HostState, config: &LinuxConfig) {
        for (router_id, router) in &state.routers {
            let uplink = router.gateway.as_ref().map(|g| {
                let mac = crate::router::uplink_mac(router_id, g, &config.host);
                (&g.port_id, &g.network_id, mac)
            });
            let interfaces = router
                .interfaces
                .iter()
                .map(|(port_id, iface)| (port_id, &iface.network_id, iface.mac));
            for (port_id, network_id, mac) in interfaces.chain(uplink) {
                let Some(net) = state.networks.get(network_id) else {
                    continue;
                };
                self.add_router_port(port_id, net, mac);
            }
        }
    }

    fn add_router_port(&mut self, port_id: &str, net: &NetworkSpec, mac: MacAddr) {
        let device = router_port_name(port_id);
        let bridge = network_bridge(net);
        if self.ports.contains_key(&device) || !self.links.contains_key(&bridge) {
            return;
        }
        self.ports.insert(
            device.clone(),
            DesiredPort {
                port_id: port_id.to_owned(),
                bridge: bridge.clone(),
                mtu: net.mtu,
                up: true,
                mac,
            },
        );
        if mac.is_valid_port_mac() {
            self.fdb
                .entry(bridge)
                .or_default()
                .entry(mac)
                .or_insert(device);
        }
    }
}
