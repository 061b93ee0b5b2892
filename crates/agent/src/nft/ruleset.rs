//! The desired nftables state of a host, from its [`HostState`]: pure, no
//! I/O, so every rule is testable without root.
//!
//! Two tables, both named [`TABLE`], are vnet's and nothing else is touched:
//!
//! - `bridge vnet` sees each frame with the port it came from and goes to.
//!   `prerouting` (priority -300, before br_netfilter hands the frame to
//!   conntrack) jumps per port to its anti-spoofing chain `s_<dev>`;
//!   `forward` (priority -200) writes the ports' profiles into the packet
//!   mark: bits 16–31 the index of the profile of the port it comes from,
//!   bits 0–15 of the port it goes to (0: not a filtered port). Under
//!   bridge netfilter the inet family only sees the bridge as device,
//!   hence the mark.
//! - `inet vnet`: `prerouting` (raw) puts each network's packets in its own
//!   conntrack zone (by bridge) and skips conntrack for the underlay VXLAN;
//!   `egress` (forward, priority 0) dispatches on the from-profile bits to
//!   `pe_<profile>`, `ingress` (forward, priority 10) on the to-profile bits
//!   to `pi_<profile>`. Two base chains so that `accept` in one (the sending
//!   port's rules allow it) still leaves the other (the receiving port's)
//!   to decide. A profile chain accepts replies (stateful), DHCP and
//!   neighbour discovery, then jumps to one chain per security group and
//!   direction (`g_<group>_e`/`g_<group>_i`), and drops what none accepted.
//!   A rule naming a remote group is one lookup in the named set
//!   `rg_<group>_4`/`_6` of the group's members; one naming an address
//!   group, in the named set `ag_<address group>_4`/`_6` of its addresses
//!   (an interval set of prefixes, changed element by element).
//!
//! A port's [`Profile`] is what its packets get past anti-spoofing: its
//! groups and whether it is stateful. Ports of one profile share its three
//! chains (`pe_`, `pi_`, and `pt_`, which writes its index into the mark),
//! so that a port coming or going adds or removes map elements and its
//! anti-spoofing chain only: never a rule of the inet table, whose every
//! change has the kernel validate all its chains again at commit (that
//! grew with the ports held, milliseconds at a thousand).
//!
//! The base chains are fixed: each dispatches by one lookup in a named map
//! of its table ([`MAPS`]), whose elements (one or two per port, device,
//! bridge or profile) are added and removed one by one, so a port coming
//! or going never rewrites a base chain.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use compiler::protocol::{
    HostState, PortSecuritySpec, RuleDirection, RuleEthertype, RuleRemote, RuleSpec,
    SecurityGroupSpec,
};
use ipnet::IpNet;

use super::rule::{CtState, Match, Rule, Verdict};

/// The name of both of vnet's tables.
pub const TABLE: &str = "vnet";

/// An nftables address family vnet uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Bridge,
    Inet,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Bridge => "bridge",
            Family::Inet => "inet",
        }
    }
}

/// One chain: a base chain has a hook definition (`type … hook … priority
/// …; policy …;`); its rules in order, as nft text, and the same rules typed
/// (`typed[i]` renders `rules[i]`; [`Chain::new`] keeps them so).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub hook: Option<String>,
    pub rules: Vec<String>,
    pub typed: Vec<Rule>,
}

impl Chain {
    pub fn new(hook: Option<String>, typed: Vec<Rule>) -> Self {
        Chain {
            hook,
            rules: typed.iter().map(ToString::to_string).collect(),
            typed,
        }
    }
}

/// A named set of addresses or prefixes (always `flags interval`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub v6: bool,
    pub elements: BTreeSet<IpNet>,
}

impl Set {
    pub fn type_name(&self) -> &'static str {
        if self.v6 { "ipv6_addr" } else { "ipv4_addr" }
    }
}

/// What a named map maps, from what to what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// Interface name → verdict (`jump CHAIN`).
    IfnameVerdict,
    /// Interface name → packet mark.
    IfnameMark,
    /// Interface name → conntrack zone.
    IfnameZone,
    /// Packet mark → verdict.
    MarkVerdict,
}

impl MapKind {
    /// Its declaration in nft's syntax (inside `{ … }`).
    pub fn declaration(self) -> &'static str {
        match self {
            MapKind::IfnameVerdict => "type ifname : verdict;",
            MapKind::IfnameMark => "type ifname : mark;",
            // nft has no type of a zone's own: `typeof` names it.
            MapKind::IfnameZone => "typeof iifname : ct zone;",
            MapKind::MarkVerdict => "type mark : verdict;",
        }
    }
}

/// A key of a named map: an interface name (as the inside of an nft
/// string) or a mark.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapKey {
    Ifname(String),
    Mark(u32),
}

/// What a map maps a key to: a jump, or a number (a mark or a zone; the
/// map's kind says which).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapValue {
    Jump(String),
    Number(u32),
}

impl fmt::Display for MapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapKey::Ifname(dev) => write!(f, "\"{dev}\""),
            MapKey::Mark(mark) => write!(f, "{mark:#010x}"),
        }
    }
}

impl fmt::Display for MapValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapValue::Jump(chain) => write!(f, "jump {chain}"),
            MapValue::Number(n) => write!(f, "{n}"),
        }
    }
}

/// A named map of a base chain's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    pub kind: MapKind,
    pub elements: BTreeMap<MapKey, MapValue>,
}

/// vnet's named maps: the table, the name, what it maps.
pub const MAPS: [(Family, &str, MapKind); 6] = [
    (Family::Bridge, "spoof_ports", MapKind::IfnameVerdict),
    (Family::Bridge, "marks", MapKind::IfnameMark),
    (Family::Bridge, "to_ports", MapKind::IfnameVerdict),
    (Family::Inet, "zones", MapKind::IfnameZone),
    (Family::Inet, "egress_ports", MapKind::MarkVerdict),
    (Family::Inet, "ingress_ports", MapKind::MarkVerdict),
];

/// One of vnet's tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
    pub maps: BTreeMap<String, Map>,
}

/// Everything vnet wants in nftables on one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub bridge: Table,
    pub inet: Table,
    /// Bridges whose IP traffic must go through the inet family
    /// (`nf_call_iptables`/`nf_call_ip6tables` on): those with a port whose
    /// port security is on.
    pub filtered_bridges: BTreeSet<String>,
}

impl Ruleset {
    pub fn table(&self, family: Family) -> &Table {
        match family {
            Family::Bridge => &self.bridge,
            Family::Inet => &self.inet,
        }
    }

    pub(super) fn table_mut(&mut self, family: Family) -> &mut Table {
        match family {
            Family::Bridge => &mut self.bridge,
            Family::Inet => &mut self.inet,
        }
    }
}

/// How this host's nftables are set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftConfig {
    /// UDP port of the overlay (conntrack is skipped for it on the underlay).
    pub vxlan_port: u16,
    /// Physical network name → this host's interface on it, as the link
    /// backend has it: a flat network's interface is a device of its bridge.
    pub physical_networks: BTreeMap<String, String>,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            vxlan_port: crate::linux::VXLAN_PORT,
            physical_networks: BTreeMap::new(),
        }
    }
}

/// Mark bits of the port a packet comes from.
pub const MARK_FROM: u32 = 0xffff_0000;
/// Mark bits of the port a packet goes to.
pub const MARK_TO: u32 = 0x0000_ffff;

/// The conntrack zone of a network: the low 16 bits of its VNI (0 is
/// avoided); on a collision with another network of the host, the next free
/// one, networks taken by VNI order. Stable as long as no collision appears.
pub fn zones(vnis: &BTreeSet<u32>) -> BTreeMap<u32, u16> {
    let mut used = BTreeSet::new();
    let mut out = BTreeMap::new();
    for &vni in vnis {
        let mut z = (vni & 0xffff) as u16;
        while z == 0 || used.contains(&z) {
            z = z.wrapping_add(1);
        }
        used.insert(z);
        out.insert(vni, z);
    }
    out
}

/// Profile indexes for the mark (1…0xffff): derived from the profile's
/// name, so that a profile keeps its index while others come and go; on a
/// collision the next free one (profiles in name order).
pub fn indexes<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u16> {
    let mut used = BTreeSet::new();
    let mut out = BTreeMap::new();
    let names: BTreeSet<&str> = names.into_iter().collect();
    for name in names {
        let mut i = natural_index(name);
        while used.contains(&i) {
            i = if i == 0xffff { 1 } else { i + 1 };
        }
        used.insert(i);
        out.insert(name.to_string(), i);
    }
    out
}

/// The index a name has unless an earlier one took it.
pub(super) fn natural_index(name: &str) -> u16 {
    (fnv1a(name.as_bytes()) % 0xffff) as u16 + 1
}

/// FNV-1a (64 bit): a hash that is the same in every build (std's is not).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An identifier nft accepts as a chain or set name: letters, digits, `_`
/// and `-` kept, anything else `_`, and then a hash of the original so that
/// two ids never share a name.
pub fn ident(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == id {
        clean
    } else {
        format!("{clean}_{:08x}", fnv1a(id.as_bytes()) as u32)
    }
}

pub fn group_chain(group: &str, dir: RuleDirection) -> String {
    let d = match dir {
        RuleDirection::Ingress => "i",
        RuleDirection::Egress => "e",
    };
    format!("g_{}_{d}", ident(group))
}

pub fn remote_set(group: &str, v6: bool) -> String {
    format!("rg_{}_{}", ident(group), if v6 { 6 } else { 4 })
}

/// The set of an address group's addresses of one family.
pub fn address_group_set(address_group: &str, v6: bool) -> String {
    format!("ag_{}_{}", ident(address_group), if v6 { 6 } else { 4 })
}

/// A device name as the inside of an nft string (the quotes are the
/// rule's).
pub(super) fn nft_string(s: &str) -> String {
    s.replace(['"', '\\'], "_")
}

/// IANA numbers of the protocols whose rules name ports (`th dport`).
const PORT_PROTOCOLS: [u8; 5] = [6, 17, 33, 132, 136];

/// What the base chains are made of: the secured ports' devices and
/// bridges, every device on vnet's bridges, the networks' bridges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Layout {
    /// Secured local ports: device → its bridge (of two ports naming one
    /// device, the first by network and port id).
    pub secured: BTreeMap<String, String>,
    /// Every device on vnet's bridges: local ports, VXLAN devices and
    /// physical interfaces.
    pub devices: BTreeSet<String>,
    /// VNI → its network's bridge.
    pub vxlan_bridges: BTreeMap<u32, String>,
    pub flat_bridges: BTreeSet<String>,
    /// The networks' own devices (VXLAN devices, physical interfaces).
    pub network_devices: BTreeSet<String>,
    /// Every local port's device, by port and network: where a hinted
    /// port was.
    pub locals: BTreeMap<String, BTreeMap<String, String>>,
    /// The local ports (network, port) naming each device, in the order
    /// that picks the secured one.
    pub by_device: BTreeMap<String, BTreeSet<(String, String)>>,
}

/// The networks' part of a layout: their bridges (VXLAN by VNI, flat) and
/// their own devices. In proportion to the networks, not their ports.
pub(super) fn network_layout(
    state: &HostState,
    config: &NftConfig,
) -> (BTreeMap<u32, String>, BTreeSet<String>, BTreeSet<String>) {
    let mut vxlan_bridges = BTreeMap::new();
    let mut flat_bridges = BTreeSet::new();
    let mut network_devices = BTreeSet::new();
    for net in state.networks.values() {
        let bridge = crate::linux::network_bridge(net);
        match &net.physical_network {
            None => {
                vxlan_bridges.insert(net.vni, bridge);
                network_devices.insert(crate::linux::vxlan_name(net.vni));
            }
            Some(physnet) => {
                flat_bridges.insert(bridge);
                network_devices.extend(config.physical_networks.get(physnet).cloned());
            }
        }
    }
    (vxlan_bridges, flat_bridges, network_devices)
}

/// The layout of `state`, and the port security of each secured device.
pub(super) fn layout<'a>(
    state: &'a HostState,
    config: &NftConfig,
) -> (Layout, BTreeMap<&'a str, &'a PortSecuritySpec>) {
    let mut layout = Layout::default();
    let mut specs = BTreeMap::new();
    (
        layout.vxlan_bridges,
        layout.flat_bridges,
        layout.network_devices,
    ) = network_layout(state, config);
    for (network_id, net) in &state.networks {
        let bridge = crate::linux::network_bridge(net);
        for (port_id, port) in &net.local_ports {
            layout.devices.insert(port.device.clone());
            layout
                .locals
                .entry(port_id.clone())
                .or_default()
                .insert(network_id.clone(), port.device.clone());
            layout
                .by_device
                .entry(port.device.clone())
                .or_default()
                .insert((network_id.clone(), port_id.clone()));
            let Some(spec) = state.port_security.get(port_id) else {
                continue;
            };
            if spec.enabled && !specs.contains_key(port.device.as_str()) {
                specs.insert(port.device.as_str(), spec);
                layout.secured.insert(port.device.clone(), bridge.clone());
            }
        }
    }
    layout
        .devices
        .extend(layout.network_devices.iter().cloned());
    (layout, specs)
}

/// The desired ruleset of a host: the reference the incremental path
/// ([`super::incremental`]) must always equal.
pub fn desired(state: &HostState, config: &NftConfig) -> Ruleset {
    let mut rs = Ruleset::default();
    let (layout, specs) = layout(state, config);
    let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
    let mut port_profiles = BTreeMap::new();
    for (dev, spec) in &specs {
        let profile = Profile::of(spec, &state.security_groups);
        let name = profile.name();
        port_profiles.insert(dev.to_string(), name.clone());
        profiles.insert(name, profile);
    }
    let index = indexes(profiles.keys().map(String::as_str));
    for (family, name, chain) in base_chains(config) {
        rs.table_mut(family).chains.insert(name, chain);
    }
    for (family, name, map) in maps(&layout, &port_profiles, &index) {
        rs.table_mut(family).maps.insert(name.to_string(), map);
    }
    rs.filtered_bridges = layout.secured.values().cloned().collect();
    for (dev, spec) in specs {
        rs.bridge
            .chains
            .insert(spoof_chain(dev), Chain::new(None, spoof_rules(spec)));
    }
    let mut used_groups = BTreeSet::new();
    for (name, profile) in &profiles {
        let i = index.get(name).copied().unwrap_or(0);
        for (family, chain_name, chain) in profile_chains(name, profile, i) {
            rs.table_mut(family).chains.insert(chain_name, chain);
        }
        used_groups.extend(profile.groups.iter().map(String::as_str));
    }
    for g in used_groups {
        let Some(sg) = state.security_groups.get(g) else {
            continue;
        };
        for (name, chain) in group_chains(g, sg) {
            rs.inet.chains.insert(name, chain);
        }
        for (name, source) in group_sets(sg) {
            let members: Vec<IpNet> = source
                .members(state)
                .into_iter()
                .flatten()
                .filter(|n| matches!(n, IpNet::V6(_)) == source.v6)
                .copied()
                .collect();
            rs.inet.sets.insert(
                name,
                Set {
                    v6: source.v6,
                    elements: without_overlaps(&members),
                },
            );
        }
    }
    rs
}

/// The five base chains, fixed: the bridge family's anti-spoofing jumps
/// and marks, the inet family's conntrack zones and dispatch to port
/// chains, each by a lookup in one of [`MAPS`].
pub(super) fn base_chains(config: &NftConfig) -> Vec<(Family, String, Chain)> {
    let hook = |h: &str| Some(format!("type filter hook {h}; policy accept;"));
    let text = |t: String| Rule::Text(t);
    let prefix = crate::linux::BRIDGE_PREFIX;
    vec![
        (
            Family::Bridge,
            "prerouting".into(),
            Chain::new(
                hook("prerouting priority -300"),
                vec![text("iifname vmap @spoof_ports".into())],
            ),
        ),
        (
            Family::Bridge,
            "forward".into(),
            Chain::new(
                hook("forward priority -200"),
                vec![
                    text("meta mark set iifname map @marks".into()),
                    text("oifname vmap @to_ports".into()),
                ],
            ),
        ),
        (
            Family::Inet,
            "prerouting".into(),
            Chain::new(
                hook("prerouting priority -300"),
                vec![
                    Rule::NoTrackUdp {
                        not_iif_prefix: prefix.to_string(),
                        dport: config.vxlan_port,
                    },
                    text("ct zone set iifname map @zones".into()),
                ],
            ),
        ),
        (
            Family::Inet,
            "egress".into(),
            Chain::new(
                hook("forward priority 0"),
                vec![text(format!(
                    "iifname \"{prefix}*\" meta mark & {MARK_FROM:#010x} vmap @egress_ports"
                ))],
            ),
        ),
        (
            Family::Inet,
            "ingress".into(),
            Chain::new(
                hook("forward priority 10"),
                vec![text(format!(
                    "iifname \"{prefix}*\" meta mark & {MARK_TO:#010x} vmap @ingress_ports"
                ))],
            ),
        ),
    ]
}

/// The elements of [`MAPS`], in its order, for `layout`, the secured
/// ports' profiles (device → profile name) and the profiles' mark indexes.
pub(super) fn maps(
    layout: &Layout,
    port_profiles: &BTreeMap<String, String>,
    index: &BTreeMap<String, u16>,
) -> [(Family, &'static str, Map); 6] {
    let ifname = |d: &str| MapKey::Ifname(nft_string(d));
    let spoof = port_profiles
        .keys()
        .map(|d| (ifname(d), MapValue::Jump(spoof_chain(d))))
        .collect();
    let to = port_profiles
        .iter()
        .map(|(d, p)| {
            (
                ifname(d),
                MapValue::Jump(profile_chain(p, ProfileChain::To)),
            )
        })
        .collect();
    let by_mark = |dir: RuleDirection| -> BTreeMap<MapKey, MapValue> {
        index
            .iter()
            .map(|(p, i)| {
                (
                    mark_key(*i, dir),
                    MapValue::Jump(profile_chain(p, dir.into())),
                )
            })
            .collect()
    };
    // Every device of vnet's bridges is marked (0: not filtered), so the
    // mark of a frame from any of them is set (never stale), and frames of
    // other bridges keep theirs; with no secured port, none is.
    let marks = if port_profiles.is_empty() {
        BTreeMap::new()
    } else {
        layout
            .devices
            .iter()
            .map(|d| {
                let i = port_profiles
                    .get(d)
                    .and_then(|p| index.get(p))
                    .copied()
                    .unwrap_or(0);
                (ifname(d), MapValue::Number(u32::from(i) << 16))
            })
            .collect()
    };
    let zones = bridge_zones(layout)
        .into_iter()
        .map(|(bridge, z)| (ifname(bridge), MapValue::Number(u32::from(z))))
        .collect();
    let [m0, m1, m2, m3, m4, m5] = MAPS;
    let map = |(family, name, kind): (Family, &'static str, MapKind), elements| {
        (family, name, Map { kind, elements })
    };
    [
        map(m0, spoof),
        map(m1, marks),
        map(m2, to),
        map(m3, zones),
        map(m4, by_mark(RuleDirection::Egress)),
        map(m5, by_mark(RuleDirection::Ingress)),
    ]
}

/// The key of a profile's entry in the egress or ingress dispatch map.
pub(super) fn mark_key(index: u16, dir: RuleDirection) -> MapKey {
    match dir {
        RuleDirection::Egress => MapKey::Mark(u32::from(index) << 16),
        RuleDirection::Ingress => MapKey::Mark(u32::from(index)),
    }
}

/// Each network's bridge with its conntrack zone.
fn bridge_zones(layout: &Layout) -> Vec<(&String, u16)> {
    let vnis: BTreeSet<u32> = layout.vxlan_bridges.keys().copied().collect();
    let zone_of = zones(&vnis);
    let mut zone_of_bridge: Vec<(&String, u16)> = zone_of
        .iter()
        .filter_map(|(vni, z)| Some((layout.vxlan_bridges.get(vni)?, *z)))
        .collect();
    // Flat networks have no VNI: a zone from their bridge's name, after
    // every VXLAN network's (so those keep theirs), the next free one on a
    // collision.
    let mut used: BTreeSet<u16> = zone_of.values().copied().collect();
    for bridge in &layout.flat_bridges {
        let mut z = (fnv1a(bridge.as_bytes()) & 0xffff) as u16;
        while z == 0 || used.contains(&z) {
            z = z.wrapping_add(1);
        }
        used.insert(z);
        zone_of_bridge.push((bridge, z));
    }
    zone_of_bridge
}

/// What a secured port's packets get past anti-spoofing: the groups of
/// its port security the host holds (in the port's order) and whether it
/// is stateful. Ports with the same profile share its chains.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Profile {
    pub stateful: bool,
    pub groups: Vec<String>,
}

impl Profile {
    pub fn of(spec: &PortSecuritySpec, groups: &BTreeMap<String, SecurityGroupSpec>) -> Self {
        let present: Vec<String> = spec
            .security_groups
            .iter()
            .filter(|g| groups.contains_key(*g))
            .cloned()
            .collect();
        // Neutron refuses mixing stateful and stateless groups on a port; a
        // port is stateful if any of its groups is (and with none, too:
        // replies of what it sent are still let back in).
        let stateful = present.is_empty()
            || present
                .iter()
                .any(|g| groups.get(g).is_some_and(|s| s.stateful));
        Profile {
            stateful,
            groups: present,
        }
    }

    /// Its name in its chains' names: a hash of what it is (group ids are
    /// too long to spell out, and a port may have many).
    pub fn name(&self) -> String {
        let mut bytes = vec![u8::from(self.stateful)];
        for g in &self.groups {
            bytes.push(0);
            bytes.extend_from_slice(g.as_bytes());
        }
        format!("{:016x}", fnv1a(&bytes))
    }
}

/// A profile's chains: what its ports send, what they receive (inet), and
/// the one writing its index as the to-bits of the mark (bridge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileChain {
    Egress,
    Ingress,
    To,
}

impl From<RuleDirection> for ProfileChain {
    fn from(dir: RuleDirection) -> Self {
        match dir {
            RuleDirection::Egress => ProfileChain::Egress,
            RuleDirection::Ingress => ProfileChain::Ingress,
        }
    }
}

pub fn profile_chain(profile: &str, which: ProfileChain) -> String {
    match which {
        ProfileChain::Egress => format!("pe_{profile}"),
        ProfileChain::Ingress => format!("pi_{profile}"),
        ProfileChain::To => format!("pt_{profile}"),
    }
}

/// A profile's three chains, with its mark index.
pub(super) fn profile_chains(
    name: &str,
    profile: &Profile,
    index: u16,
) -> [(Family, String, Chain); 3] {
    let groups: Vec<&str> = profile.groups.iter().map(String::as_str).collect();
    let chain = |dir: RuleDirection| {
        let rules = port_rules(dir, profile.stateful, &groups);
        (
            Family::Inet,
            profile_chain(name, dir.into()),
            Chain::new(None, rules),
        )
    };
    [
        chain(RuleDirection::Egress),
        chain(RuleDirection::Ingress),
        profile_to_chain(name, index),
    ]
}

/// The bridge chain writing a profile's index as the to-bits of the mark.
pub(super) fn profile_to_chain(name: &str, index: u16) -> (Family, String, Chain) {
    (
        Family::Bridge,
        profile_chain(name, ProfileChain::To),
        Chain::new(None, vec![Rule::MarkOr(u32::from(index))]),
    )
}

/// A group's two chains (egress, ingress).
pub(super) fn group_chains(group: &str, sg: &SecurityGroupSpec) -> Vec<(String, Chain)> {
    [RuleDirection::Egress, RuleDirection::Ingress]
        .into_iter()
        .map(|dir| {
            let rules: Vec<&RuleSpec> = sg.rules.iter().filter(|r| r.direction == dir).collect();
            (
                group_chain(group, dir),
                Chain::new(None, group_rules(&rules)),
            )
        })
        .collect()
}

/// What fills a named set: a remote group's members or an address group's
/// addresses, of one IP version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SetSource {
    pub id: String,
    pub address_group: bool,
    pub v6: bool,
}

impl SetSource {
    /// Its addresses in `state` (`None`: unknown, so empty).
    pub fn members<'a>(&self, state: &'a HostState) -> Option<&'a BTreeSet<IpNet>> {
        if self.address_group {
            state.address_groups.get(&self.id)
        } else {
            state.remote_groups.get(&self.id)
        }
    }
}

/// The named sets a group's rules look their remotes up in.
pub(super) fn group_sets(sg: &SecurityGroupSpec) -> Vec<(String, SetSource)> {
    sg.rules
        .iter()
        .filter_map(|r| {
            let v6 = r.ethertype == RuleEthertype::IPv6;
            let (name, id, address_group) = match &r.remote {
                RuleRemote::Group(g) => (remote_set(g, v6), g, false),
                RuleRemote::AddressGroup(ag) => (address_group_set(ag, v6), ag, true),
                RuleRemote::Any | RuleRemote::Prefix(_) => return None,
            };
            let source = SetSource {
                id: id.clone(),
                address_group,
                v6,
            };
            Some((name, source))
        })
        .collect()
}

/// The prefixes of `nets` that no other of them contains: an interval set
/// refuses overlapping elements. Unlike aggregation, neighbours are not
/// merged, so one member joining is one element added.
pub fn without_overlaps(nets: &[IpNet]) -> BTreeSet<IpNet> {
    let all: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
    // Kept unless one of its (at most 128) supernets is there too.
    all.iter()
        .filter(|n| {
            !(0..n.prefix_len())
                .any(|len| IpNet::new(n.addr(), len).is_ok_and(|sup| all.contains(&sup.trunc())))
        })
        .copied()
        .collect()
}

pub(super) fn spoof_chain(dev: &str) -> String {
    format!("s_{}", ident(dev))
}

/// Anti-spoofing of one port: what it sends must carry one of its (MAC, IP)
/// pairs; ARP must name them too. DHCP discovery (from 0.0.0.0), ARP probes,
/// IPv6 link-local and duplicate address detection are let through from the
/// port's MACs. Everything else is dropped.
pub(super) fn spoof_rules(spec: &PortSecuritySpec) -> Vec<Rule> {
    let mut rules = vec![];
    let macs: BTreeSet<model::MacAddr> = spec.allowed_sources.iter().map(|s| s.mac).collect();
    let sources: BTreeSet<(model::MacAddr, IpNet)> = spec
        .allowed_sources
        .iter()
        .map(|s| (s.mac, s.ip.trunc()))
        .collect();
    let ether = |mac: &model::MacAddr| Match::EtherSaddr(mac.0);
    let host = |src, addr: IpAddr| Match::Host { src, addr };
    for mac in &macs {
        rules.push(Rule::new(
            vec![
                ether(mac),
                host(true, Ipv4Addr::UNSPECIFIED.into()),
                host(false, Ipv4Addr::BROADCAST.into()),
                Match::UdpPorts {
                    sport: 68,
                    dport: 67,
                },
            ],
            Verdict::Return,
        ));
        rules.push(Rule::new(
            vec![
                ether(mac),
                Match::Arp {
                    sha: mac.0,
                    spa: Ipv4Addr::UNSPECIFIED,
                    len: None,
                },
            ],
            Verdict::Return,
        ));
    }
    for (mac, ip) in &sources {
        rules.push(Rule::new(
            vec![
                ether(mac),
                Match::Prefix {
                    src: true,
                    net: *ip,
                },
            ],
            Verdict::Return,
        ));
        if let IpNet::V4(net) = ip {
            rules.push(Rule::new(
                vec![
                    ether(mac),
                    Match::Arp {
                        sha: mac.0,
                        spa: net.addr(),
                        len: Some(net.prefix_len()),
                    },
                ],
                Verdict::Return,
            ));
        }
    }
    if sources.iter().any(|(_, ip)| matches!(ip, IpNet::V6(_))) {
        for mac in &macs {
            // Only the link-local address the kernel derives from the MAC,
            // never another host's on the link (a router's, say).
            rules.push(Rule::new(
                vec![ether(mac), host(true, mac.ipv6_link_local().into())],
                Verdict::Return,
            ));
            rules.push(Rule::new(
                vec![
                    ether(mac),
                    host(true, Ipv6Addr::UNSPECIFIED.into()),
                    Match::Icmpv6TypeIn(vec![135, 143]),
                ],
                Verdict::Return,
            ));
        }
    }
    rules.push(Rule::new(vec![], Verdict::Drop));
    rules
}

/// A profile's chain for one direction (egress: what its ports send).
fn port_rules(dir: RuleDirection, stateful: bool, groups: &[&str]) -> Vec<Rule> {
    let mut rules = vec![];
    // Only the host answers a VM's router solicitations and DHCPv6 (written
    // on the port's own device, past this chain): a VM's router
    // advertisements and DHCPv6 replies reach nobody, whatever its groups
    // or connections allow.
    if dir == RuleDirection::Egress {
        rules.push(Rule::new(
            vec![
                Match::L4Proto(58),
                Match::Icmp {
                    v6: true,
                    ty: 134,
                    code: None,
                },
            ],
            Verdict::Drop,
        ));
        rules.push(Rule::new(
            vec![
                Match::NfProto { v6: true },
                Match::UdpPorts {
                    sport: 547,
                    dport: 546,
                },
            ],
            Verdict::Drop,
        ));
    }
    if stateful {
        rules.push(Rule::new(
            vec![Match::Ct(CtState::EstablishedRelated)],
            Verdict::Accept,
        ));
        rules.push(Rule::new(vec![Match::Ct(CtState::Invalid)], Verdict::Drop));
    }
    let dhcp = |v6: bool, sport, dport| {
        Rule::new(
            vec![Match::NfProto { v6 }, Match::UdpPorts { sport, dport }],
            Verdict::Accept,
        )
    };
    // What Neutron always allows: DHCP(v6) requests to the agent and
    // neighbour discovery (RS/NS/NA/MLD out, NS/NA/MLD query in). Router
    // advertisements and DHCPv6 replies come only from the host, which
    // writes them past the bridge.
    match dir {
        RuleDirection::Egress => {
            rules.push(dhcp(false, 68, 67));
            rules.push(dhcp(true, 546, 547));
            rules.push(Rule::new(
                vec![Match::Icmpv6TypeIn(vec![131, 133, 135, 136, 143])],
                Verdict::Accept,
            ));
        }
        RuleDirection::Ingress => {
            rules.push(dhcp(false, 67, 68));
            rules.push(Rule::new(
                vec![Match::Icmpv6TypeIn(vec![130, 135, 136])],
                Verdict::Accept,
            ));
        }
    }
    for g in groups {
        rules.push(Rule::new(vec![], Verdict::Jump(group_chain(g, dir))));
    }
    rules.push(Rule::new(vec![], Verdict::Drop));
    rules
}

/// What a rule matches besides its remote: ethertype, protocol, ports, ICMP.
type Key = (
    RuleEthertype,
    Option<u8>,
    Option<(u16, u16)>,
    Option<(u8, Option<u8>)>,
);

/// The rules of one group in one direction. Rules that differ only in their
/// remote prefix become one rule with a set of prefixes (one lookup however
/// many); a rule with no remote makes its prefix siblings redundant.
fn group_rules(rules: &[&RuleSpec]) -> Vec<Rule> {
    let mut any: BTreeSet<Key> = BTreeSet::new();
    let mut prefixes: BTreeMap<Key, Vec<IpNet>> = BTreeMap::new();
    let mut groups: BTreeSet<(Key, String)> = BTreeSet::new();
    let mut address_groups: BTreeSet<(Key, String)> = BTreeSet::new();
    for r in rules {
        let key = (r.ethertype, r.protocol, r.ports, r.icmp);
        match &r.remote {
            RuleRemote::Any => {
                any.insert(key);
            }
            RuleRemote::Prefix(p) => {
                if matches!(p, IpNet::V6(_)) == (r.ethertype == RuleEthertype::IPv6) {
                    prefixes.entry(key).or_default().push(p.trunc());
                }
            }
            RuleRemote::Group(g) => {
                groups.insert((key, g.clone()));
            }
            RuleRemote::AddressGroup(g) => {
                address_groups.insert((key, g.clone()));
            }
        }
    }
    let dir = rules.first().map(|r| r.direction);
    // Egress rules name where packets go, ingress where they come from.
    let src = dir != Some(RuleDirection::Egress);
    let with = |key: &Key, remote: Match| {
        let mut m = matches(key);
        m.push(remote);
        Rule::new(m, Verdict::Accept)
    };
    let mut out = vec![];
    for key in &any {
        out.push(Rule::new(matches(key), Verdict::Accept));
    }
    for (key, nets) in &prefixes {
        if any.contains(key) {
            continue;
        }
        let nets = IpNet::aggregate(nets);
        let v6 = key.0 == RuleEthertype::IPv6;
        let remote = match nets.as_slice() {
            [net] => Match::Prefix { src, net: *net },
            _ => Match::AnyOf { src, v6, nets },
        };
        out.push(with(key, remote));
    }
    for (key, g) in &groups {
        if any.contains(key) {
            continue;
        }
        let v6 = key.0 == RuleEthertype::IPv6;
        let set = remote_set(g, v6);
        out.push(with(key, Match::InSet { src, v6, set }));
    }
    for (key, g) in &address_groups {
        if any.contains(key) {
            continue;
        }
        let v6 = key.0 == RuleEthertype::IPv6;
        let set = address_group_set(g, v6);
        out.push(with(key, Match::InSet { src, v6, set }));
    }
    out
}

/// The match part of a rule: family, protocol, ports, ICMP type/code.
fn matches(key: &Key) -> Vec<Match> {
    let (eth, proto, ports, icmp) = *key;
    let v6 = eth == RuleEthertype::IPv6;
    let mut m = vec![Match::NfProto { v6 }];
    // ICMP named on an IPv6 rule means ICMPv6.
    let proto = match proto {
        Some(1) if v6 => Some(58),
        p => p,
    };
    if let Some(p) = proto {
        m.push(Match::L4Proto(p));
        if let Some((lo, hi)) = ports.filter(|_| PORT_PROTOCOLS.contains(&p)) {
            m.push(Match::ThDport(lo, hi));
        }
        if let Some((ty, code)) = icmp.filter(|_| p == 1 || p == 58) {
            m.push(Match::Icmp {
                v6: p == 58,
                ty,
                code,
            });
        }
    }
    m
}
