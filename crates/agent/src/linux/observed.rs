//! What the kernel has that vnet owns or wires, read from netlink dumps: its
//! bridges and VXLAN devices (by name prefix), the port devices it was asked
//! about, any other device enslaved to one of its bridges, and the FDB and
//! neighbour entries vnet writes on them. Everything else in the dumps is
//! dropped here, so the plan cannot touch it. Unknown attributes and
//! unexpected message shapes are skipped, never fatal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use model::MacAddr;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};

use super::link::{LinkKind, PortFlags};
use super::names::{is_bridge, is_owned, is_vxlan};
use super::plan::Op;

/// One link as vnet sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLink {
    pub index: u32,
    pub kind: LinkKind,
    pub mtu: u32,
    /// Kept for vnet's bridges only: the only links whose address vnet sets.
    pub address: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The master's name, if enslaved.
    pub master: Option<String>,
    /// `Some(true)` when IPv6 address generation is off (`addrgenmode none`):
    /// the device then has no link-local address and sends no ND/MLD. `None`
    /// when the kernel reports no IPv6 state for it (nothing to turn off).
    pub ipv6_silent: Option<bool>,
    /// Set when the link is a bridge port.
    pub port_flags: Option<PortFlags>,
}

impl ObservedLink {
    /// How a link vnet creates looks right after creation.
    pub fn fresh(kind: LinkKind, mtu: u32, address: Option<MacAddr>) -> Self {
        ObservedLink {
            index: 0,
            kind,
            mtu,
            address,
            up: false,
            master: None,
            ipv6_silent: Some(false),
            port_flags: None,
        }
    }
}

/// The kernel state vnet owns, by device name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: BTreeMap<String, ObservedLink>,
    /// Static bridge FDB entries on vnet bridges: bridge → MAC → port device.
    pub fdb: BTreeMap<String, BTreeMap<MacAddr, String>>,
    /// VXLAN FDB entries on vnet VXLAN devices: device → MAC → remotes.
    pub vxlan_fdb: BTreeMap<String, BTreeMap<MacAddr, Vec<IpAddr>>>,
    /// Permanent neighbour entries on vnet bridges: bridge → IP → MAC.
    pub neighbours: BTreeMap<String, BTreeMap<IpAddr, MacAddr>>,
}

const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;

impl Observed {
    /// Keeps, from full dumps, what vnet owns plus the `devices` it wires.
    /// `fdb` is an `AF_BRIDGE` neighbour dump, `neighbours` `AF_INET` and
    /// `AF_INET6` neighbour dumps.
    pub fn from_dumps(
        links: &[LinkMessage],
        fdb: &[NeighbourMessage],
        neighbours: &[NeighbourMessage],
        devices: &BTreeSet<String>,
    ) -> Self {
        let mut obs = Observed::default();
        let names: HashMap<u32, String> = links
            .iter()
            .filter_map(|l| Some((l.header.index, link_name(l)?)))
            .collect();
        for msg in links {
            let Some(name) = names.get(&msg.header.index) else {
                continue;
            };
            let mut link = parse_link(msg, &names);
            if !is_bridge(name) {
                link.address = None;
            }
            let enslaved_to_ours = link.master.as_deref().is_some_and(is_bridge);
            if is_owned(name) || devices.contains(name) || enslaved_to_ours {
                obs.links.insert(name.clone(), link);
            }
        }
        for msg in fdb {
            obs.add_fdb(msg, &names);
        }
        for msg in neighbours {
            obs.add_neighbour(msg, &names);
        }
        obs
    }

    fn add_fdb(&mut self, msg: &NeighbourMessage, names: &HashMap<u32, String>) {
        if msg.header.family != AddressFamily::Bridge {
            return;
        }
        let Some(dev) = names.get(&msg.header.ifindex) else {
            return;
        };
        let Some(mac) = lladdr(msg) else {
            return;
        };
        let state = u16::from(msg.header.state);
        if msg.header.flags.contains(NeighbourFlags::Own) {
            // The VXLAN device's own table: every entry on a vnet VXLAN device
            // is vnet's (an all-zeros one would be a flood entry: it shows
            // here so that the plan removes it).
            if is_vxlan(dev) {
                let remotes = self
                    .vxlan_fdb
                    .entry(dev.clone())
                    .or_default()
                    .entry(mac)
                    .or_default();
                if let Some(ip) = fdb_dst(msg) {
                    remotes.push(ip);
                }
            }
            return;
        }
        // The bridge's table: only static entries (not the kernel's local
        // `permanent` ones, not learned ones) on vnet bridges.
        let Some(bridge) = master(msg).and_then(|i| names.get(&i)) else {
            return;
        };
        if is_bridge(bridge) && state & NUD_NOARP != 0 && state & NUD_PERMANENT == 0 {
            self.fdb
                .entry(bridge.clone())
                .or_default()
                .insert(mac, dev.clone());
        }
    }

    fn add_neighbour(&mut self, msg: &NeighbourMessage, names: &HashMap<u32, String>) {
        let Some(bridge) = names.get(&msg.header.ifindex) else {
            return;
        };
        if !is_bridge(bridge) || u16::from(msg.header.state) & NUD_PERMANENT == 0 {
            return;
        }
        let ip = msg.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
            _ => None,
        });
        if let (Some(ip), Some(mac)) = (ip, lladdr(msg)) {
            self.neighbours
                .entry(bridge.clone())
                .or_default()
                .insert(ip, mac);
        }
    }
}

impl Observed {
    /// What the kernel does with `op` once it accepts it, as far as this view
    /// can tell: the view a cached reconcile plans against. Created links get
    /// index 0 until [`Observed::set_indexes`].
    pub fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::DeleteFdb { bridge, dev, mac } => {
                if let Some(e) = self.fdb.get_mut(&bridge)
                    && e.get(&mac) == Some(&dev)
                {
                    e.remove(&mac);
                }
            }
            Op::DeleteVxlanFdb { dev, mac } => {
                if let Some(e) = self.vxlan_fdb.get_mut(&dev) {
                    e.remove(&mac);
                }
            }
            Op::DeleteNeighbour { bridge, ip } => {
                if let Some(e) = self.neighbours.get_mut(&bridge) {
                    e.remove(&ip);
                }
            }
            Op::Detach { dev } => {
                if let Some(l) = self.links.get_mut(&dev) {
                    l.master = None;
                    l.port_flags = None;
                }
                self.forget_port(&dev);
            }
            Op::DeleteLink { name } => {
                self.links.remove(&name);
                self.fdb.remove(&name);
                self.vxlan_fdb.remove(&name);
                self.neighbours.remove(&name);
                self.forget_port(&name);
                for l in self.links.values_mut() {
                    if l.master.as_deref() == Some(name.as_str()) {
                        l.master = None;
                        l.port_flags = None;
                    }
                }
            }
            Op::CreateBridge { name, mtu, address } => {
                self.links.insert(
                    name,
                    ObservedLink::fresh(LinkKind::Bridge, mtu, Some(address)),
                );
            }
            Op::CreateVxlan {
                name,
                vni,
                local,
                port,
                mtu,
            } => {
                self.links.insert(
                    name,
                    ObservedLink::fresh(LinkKind::vxlan(vni, local, port), mtu, None),
                );
            }
            Op::SetMtu { dev, mtu } => {
                if let Some(l) = self.links.get_mut(&dev) {
                    l.mtu = mtu;
                }
            }
            Op::SetMaster { dev, master } => {
                self.forget_port(&dev);
                if let Some(l) = self.links.get_mut(&dev) {
                    l.master = Some(master);
                    l.port_flags = Some(PortFlags::KERNEL_DEFAULT);
                }
            }
            Op::SetAddress { dev, mac } => {
                if let Some(l) = self.links.get_mut(&dev) {
                    l.address = Some(mac);
                }
                // A new address flushes the device's neighbours.
                self.neighbours.remove(&dev);
            }
            Op::SilenceIpv6 { dev } => {
                if let Some(l) = self.links.get_mut(&dev) {
                    l.ipv6_silent = Some(true);
                }
            }
            Op::SetPortFlags { dev, flags } => {
                if let Some(l) = self.links.get_mut(&dev) {
                    l.port_flags = Some(flags);
                }
            }
            Op::SetUp { dev, up } => {
                if let Some(l) = self.links.get_mut(&dev) {
                    l.up = up;
                }
            }
            Op::AddFdb { bridge, dev, mac } => {
                // One entry per MAC per bridge: a replace moves it.
                self.fdb.entry(bridge).or_default().insert(mac, dev);
            }
            Op::AddVxlanFdb { dev, mac, dst } => {
                self.vxlan_fdb
                    .entry(dev)
                    .or_default()
                    .insert(mac, vec![dst]);
            }
            Op::AddNeighbour { bridge, ip, mac } => {
                self.neighbours.entry(bridge).or_default().insert(ip, mac);
            }
        }
    }

    /// A device leaving a bridge loses its bridge FDB entries.
    fn forget_port(&mut self, dev: &str) {
        for entries in self.fdb.values_mut() {
            entries.retain(|_, d| d != dev);
        }
    }

    /// Drops what an observation for `want` would not have kept: devices
    /// neither vnet's, nor wired, nor on a vnet bridge; empty tables.
    pub fn retain_relevant(&mut self, want: &super::Desired) {
        self.links.retain(|name, l| {
            is_owned(name)
                || want.ports.contains_key(name)
                || want.uplinks.contains_key(name)
                || l.master.as_deref().is_some_and(is_bridge)
        });
        self.fdb.retain(|_, e| !e.is_empty());
        self.vxlan_fdb.retain(|_, e| !e.is_empty());
        self.neighbours.retain(|_, e| !e.is_empty());
    }

    /// Puts fresh link messages for some `devices` into the view (masters
    /// are resolved by the view's own indexes); a device in `devices` with
    /// no message is gone.
    pub fn refresh_devices(&mut self, messages: &[LinkMessage], devices: &[String]) {
        let mut names: HashMap<u32, String> = self
            .links
            .iter()
            .map(|(name, l)| (l.index, name.clone()))
            .collect();
        for msg in messages {
            if let Some(name) = link_name(msg) {
                names.insert(msg.header.index, name);
            }
        }
        for dev in devices {
            self.links.remove(dev);
        }
        for msg in messages {
            if let Some(name) = link_name(msg)
                && devices.contains(&name)
            {
                let mut link = parse_link(msg, &names);
                link.address = None;
                self.links.insert(name, link);
            }
        }
    }

    /// Records the kernel's indexes of the links this view has.
    pub fn set_indexes(&mut self, indexes: &HashMap<String, u32>) {
        for (name, link) in &mut self.links {
            if let Some(i) = indexes.get(name) {
                link.index = *i;
            }
        }
    }
}

pub(crate) fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn parse_link(msg: &LinkMessage, names: &HashMap<u32, String>) -> ObservedLink {
    let mut link = ObservedLink {
        index: msg.header.index,
        kind: LinkKind::Other(String::new()),
        mtu: 0,
        address: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        ipv6_silent: None,
        port_flags: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(a) => link.address = a.as_slice().try_into().ok().map(MacAddr),
            LinkAttribute::Controller(i) => link.master = names.get(i).cloned(),
            LinkAttribute::LinkInfo(infos) => parse_link_info(infos, &mut link),
            LinkAttribute::AfSpecUnspec(specs) => {
                for spec in specs {
                    if let AfSpecUnspec::Inet6(inet6) = spec {
                        for a in inet6 {
                            if let AfSpecInet6::AddrGenMode(mode) = a {
                                link.ipv6_silent = Some(*mode == In6AddrGenMode::None);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_link_info(infos: &[LinkInfo], link: &mut ObservedLink) {
    for info in infos {
        match info {
            LinkInfo::Kind(InfoKind::Bridge) => link.kind = LinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Vxlan) if !matches!(link.kind, LinkKind::Vxlan { .. }) => {
                link.kind = LinkKind::Vxlan {
                    vni: 0,
                    local: None,
                    port: 0,
                    learning: true,
                    group: None,
                };
            }
            LinkInfo::Kind(InfoKind::Vxlan) => {}
            LinkInfo::Kind(other) => link.kind = LinkKind::Other(other.to_string()),
            LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                let (mut vni, mut local, mut port, mut learning, mut group) =
                    (0, None, 0, true, None);
                for a in attrs {
                    match a {
                        InfoVxlan::Id(v) => vni = *v,
                        InfoVxlan::Local(ip) => local = Some(IpAddr::V4(*ip)),
                        InfoVxlan::Local6(ip) => local = Some(IpAddr::V6(*ip)),
                        InfoVxlan::Port(p) => port = *p,
                        InfoVxlan::Learning(l) => learning = *l,
                        InfoVxlan::Group(ip) if !ip.is_unspecified() => {
                            group = Some(IpAddr::V4(*ip))
                        }
                        InfoVxlan::Group6(ip) if !ip.is_unspecified() => {
                            group = Some(IpAddr::V6(*ip))
                        }
                        _ => {}
                    }
                }
                link.kind = LinkKind::Vxlan {
                    vni,
                    local,
                    port,
                    learning,
                    group,
                };
            }
            LinkInfo::PortData(InfoPortData::BridgePort(attrs)) => {
                let mut flags = PortFlags::KERNEL_DEFAULT;
                for a in attrs {
                    match a {
                        InfoBridgePort::Learning(v) => flags.learning = *v,
                        InfoBridgePort::NeighSupress(v) => flags.neigh_suppress = *v,
                        InfoBridgePort::UnicastFlood(v) => flags.flood = *v,
                        InfoBridgePort::MulticastFlood(v) => flags.mcast_flood = *v,
                        InfoBridgePort::BroadcastFlood(v) => flags.bcast_flood = *v,
                        _ => {}
                    }
                }
                link.port_flags = Some(flags);
            }
            _ => {}
        }
    }
}

fn lladdr(msg: &NeighbourMessage) -> Option<MacAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => Some(MacAddr(b.as_slice().try_into().ok()?)),
        _ => None,
    })
}

fn master(msg: &NeighbourMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// `NDA_DST` of an `AF_BRIDGE` entry: an IPv4 or IPv6 address by length.
fn fdb_dst(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(b.as_slice()).ok()?,
            ))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(b.as_slice()).ok()?,
            ))),
            _ => None,
        },
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}
