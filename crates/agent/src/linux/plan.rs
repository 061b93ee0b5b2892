//! The plan: a pure diff of desired against observed kernel state into the
//! list of operations that makes them equal. Never a flush: an object that is
//! already right yields no operation, so planning the same state twice, or
//! from a fresh process against a converged kernel, yields nothing. Only
//! objects that [`Observed`] kept (vnet's own, and the port devices it wires)
//! can appear in an operation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use compiler::protocol::HostState;
use model::MacAddr;

use super::LinuxConfig;
use super::desired::Desired;
use super::link::{LinkKind, PortFlags};
use super::names::{is_bridge, is_owned};
use super::observed::{Observed, ObservedLink};

/// One kernel change. Devices are named; the executor resolves indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `bridge fdb del MAC dev DEV master`
    DeleteFdb {
        bridge: String,
        dev: String,
        mac: MacAddr,
    },
    /// `bridge fdb del MAC dev DEV self` (every remote of the entry)
    DeleteVxlanFdb { dev: String, mac: MacAddr },
    /// `ip neigh del IP dev BRIDGE`
    DeleteNeighbour { bridge: String, ip: IpAddr },
    /// `ip link set DEV nomaster`: a port device vnet no longer wires.
    Detach { dev: String },
    /// `ip link del NAME` (only vnet's own bridges and VXLAN devices).
    DeleteLink { name: String },
    /// `ip link add NAME address MAC mtu MTU type bridge` (created down)
    CreateBridge {
        name: String,
        mtu: u32,
        address: MacAddr,
    },
    /// `ip link add NAME mtu MTU type vxlan id VNI local IP dstport PORT nolearning`
    CreateVxlan {
        name: String,
        vni: u32,
        local: IpAddr,
        port: u16,
        mtu: u32,
    },
    /// `ip link set DEV mtu MTU`
    SetMtu { dev: String, mtu: u32 },
    /// `ip link set DEV address MAC` (flushes the device's neighbours)
    SetAddress { dev: String, mac: MacAddr },
    /// `ip link set DEV master BRIDGE`
    SetMaster { dev: String, master: String },
    /// `ip link set DEV addrgenmode none`: no link-local address, so the
    /// device itself sends no ND, RS or MLD.
    SilenceIpv6 { dev: String },
    /// `bridge link set dev DEV learning … neigh_suppress … flood … mcast_flood … bcast_flood …`
    SetPortFlags { dev: String, flags: PortFlags },
    /// `ip link set DEV up|down`
    SetUp { dev: String, up: bool },
    /// `bridge fdb replace MAC dev DEV master static`
    AddFdb {
        bridge: String,
        dev: String,
        mac: MacAddr,
    },
    /// `bridge fdb replace MAC dev DEV self permanent dst IP`
    AddVxlanFdb {
        dev: String,
        mac: MacAddr,
        dst: IpAddr,
    },
    /// `ip neigh replace IP lladdr MAC dev BRIDGE nud permanent`
    AddNeighbour {
        bridge: String,
        ip: IpAddr,
        mac: MacAddr,
    },
}

/// Operations run in phase order: one may need what an earlier phase did (the
/// executor keeps the order on the wire); within a phase they are independent
/// of each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    RemoveEntries,
    RemoveLinks,
    CreateLinks,
    ConfigureLinks,
    ConfigurePorts,
    Up,
    AddEntries,
}

impl Op {
    pub fn phase(&self) -> Phase {
        match self {
            Op::DeleteFdb { .. } | Op::DeleteVxlanFdb { .. } | Op::DeleteNeighbour { .. } => {
                Phase::RemoveEntries
            }
            Op::Detach { .. } | Op::DeleteLink { .. } => Phase::RemoveLinks,
            Op::CreateBridge { .. } | Op::CreateVxlan { .. } => Phase::CreateLinks,
            Op::SetMtu { .. }
            | Op::SetAddress { .. }
            | Op::SetMaster { .. }
            | Op::SilenceIpv6 { .. } => Phase::ConfigureLinks,
            Op::SetPortFlags { .. } => Phase::ConfigurePorts,
            Op::SetUp { .. } => Phase::Up,
            Op::AddFdb { .. } | Op::AddVxlanFdb { .. } | Op::AddNeighbour { .. } => {
                Phase::AddEntries
            }
        }
    }

    /// The device the operation is about (for reports).
    pub fn device(&self) -> &str {
        match self {
            Op::DeleteFdb { dev, .. }
            | Op::DeleteVxlanFdb { dev, .. }
            | Op::Detach { dev }
            | Op::SetMtu { dev, .. }
            | Op::SetAddress { dev, .. }
            | Op::SetMaster { dev, .. }
            | Op::SilenceIpv6 { dev }
            | Op::SetPortFlags { dev, .. }
            | Op::SetUp { dev, .. }
            | Op::AddFdb { dev, .. }
            | Op::AddVxlanFdb { dev, .. } => dev,
            Op::DeleteNeighbour { bridge, .. } | Op::AddNeighbour { bridge, .. } => bridge,
            Op::DeleteLink { name }
            | Op::CreateBridge { name, .. }
            | Op::CreateVxlan { name, .. } => name,
        }
    }
}

/// As the equivalent iproute2 command.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DeleteFdb { dev, mac, .. } => write!(f, "bridge fdb del {mac} dev {dev} master"),
            Op::DeleteVxlanFdb { dev, mac } => write!(f, "bridge fdb del {mac} dev {dev} self"),
            Op::DeleteNeighbour { bridge, ip } => write!(f, "ip neigh del {ip} dev {bridge}"),
            Op::Detach { dev } => write!(f, "ip link set {dev} nomaster"),
            Op::DeleteLink { name } => write!(f, "ip link del {name}"),
            Op::CreateBridge { name, mtu, address } => {
                write!(
                    f,
                    "ip link add {name} address {address} mtu {mtu} type bridge"
                )
            }
            Op::CreateVxlan {
                name,
                vni,
                local,
                port,
                mtu,
            } => write!(
                f,
                "ip link add {name} mtu {mtu} type vxlan id {vni} local {local} dstport {port} nolearning"
            ),
            Op::SetMtu { dev, mtu } => write!(f, "ip link set {dev} mtu {mtu}"),
            Op::SetAddress { dev, mac } => write!(f, "ip link set {dev} address {mac}"),
            Op::SetMaster { dev, master } => write!(f, "ip link set {dev} master {master}"),
            Op::SilenceIpv6 { dev } => write!(f, "ip link set {dev} addrgenmode none"),
            Op::SetPortFlags { dev, flags } => write!(f, "bridge link set dev {dev} {flags}"),
            Op::SetUp { dev, up } => {
                write!(f, "ip link set {dev} {}", if *up { "up" } else { "down" })
            }
            Op::AddFdb { dev, mac, .. } => {
                write!(f, "bridge fdb replace {mac} dev {dev} master static")
            }
            Op::AddVxlanFdb { dev, mac, dst } => {
                write!(
                    f,
                    "bridge fdb replace {mac} dev {dev} self permanent dst {dst}"
                )
            }
            Op::AddNeighbour { bridge, ip, mac } => {
                write!(
                    f,
                    "ip neigh replace {ip} lladdr {mac} dev {bridge} nud permanent"
                )
            }
        }
    }
}

/// The operations that take the kernel from `observed` to `desired` on a
/// host configured by `config`, in phase order.
pub fn plan(desired: &HostState, config: &LinuxConfig, observed: &Observed) -> Vec<Op> {
    diff(&Desired::from_host_state(desired, config), observed)
}

/// [`plan`] on an already restated desired state.
pub fn diff(want: &Desired, have: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    // Links deleted for good, and links (re)created: entries on either are gone.
    let mut removed: BTreeSet<&str> = BTreeSet::new();
    let mut fresh: BTreeSet<&str> = BTreeSet::new();
    // Devices that change bridge: the kernel drops their bridge FDB entries.
    let mut moved: BTreeSet<&str> = BTreeSet::new();
    // Bridges that get a new address: the kernel drops their neighbours.
    let mut readdressed: BTreeSet<&str> = BTreeSet::new();

    for (name, link) in &have.links {
        if is_owned(name) && !want.links.contains_key(name) {
            ops.push(Op::DeleteLink { name: name.clone() });
            removed.insert(name);
        } else if !is_owned(name)
            && link.master.as_deref().is_some_and(is_bridge)
            && !want.ports.contains_key(name)
            && !want.uplinks.contains_key(name)
        {
            ops.push(Op::Detach { dev: name.clone() });
            moved.insert(name);
        }
    }

    for (name, link) in &want.links {
        let current = match have.links.get(name) {
            Some(h) if h.kind == link.kind => h.clone(),
            existing => {
                if existing.is_some() {
                    ops.push(Op::DeleteLink { name: name.clone() });
                }
                ops.push(create(name, link));
                fresh.insert(name);
                ObservedLink::fresh(link.kind.clone(), link.mtu, link.address)
            }
        };
        if let Some(mac) = link.address
            && current.address != Some(mac)
        {
            ops.push(Op::SetAddress {
                dev: name.clone(),
                mac,
            });
            readdressed.insert(name);
        }
        let target = LinkTarget {
            mtu: link.mtu,
            master: link.master.as_deref(),
            flags: link.port_flags,
            up: true,
            silence_ipv6: true,
        };
        if converge(name, &current, &target, &mut ops) {
            moved.insert(name);
        }
    }

    for (dev, port) in &want.ports {
        let Some(current) = have.links.get(dev) else {
            continue; // not plugged in (yet): nothing to wire
        };
        let target = LinkTarget {
            mtu: port.mtu,
            master: Some(&port.bridge),
            flags: Some(PortFlags::LOCAL),
            up: port.up,
            silence_ipv6: false,
        };
        if converge(dev, current, &target, &mut ops) {
            moved.insert(dev);
        }
    }

    // A physical interface is enslaved and up, its MTU and addresses the
    // host's own: vnet never creates, deletes or reconfigures it.
    for (dev, bridge) in &want.uplinks {
        let Some(current) = have.links.get(dev) else {
            continue; // not there (yet): nothing to enslave
        };
        let target = LinkTarget {
            mtu: current.mtu,
            master: Some(bridge),
            flags: Some(PortFlags::UPLINK),
            up: true,
            silence_ipv6: false,
        };
        if converge(dev, current, &target, &mut ops) {
            moved.insert(dev);
        }
    }

    // A device exists after this plan if it exists now and stays, or is created.
    let exists = |dev: &str| {
        (have.links.contains_key(dev) && !removed.contains(dev)) || want.links.contains_key(dev)
    };
    let gone = |dev: &str| removed.contains(dev) || fresh.contains(dev);

    // Bridge FDB: entries on a moved or fresh device start empty.
    entries(
        &want.fdb,
        &have.fdb,
        &gone,
        |bridge, _mac, dev| {
            (!gone(bridge) && !gone(dev) && !moved.contains(dev.as_str())).then(|| dev.clone())
        },
        |bridge, mac, dev| {
            exists(dev).then(|| Op::AddFdb {
                bridge: bridge.to_string(),
                dev: dev.clone(),
                mac: *mac,
            })
        },
        |bridge, mac, dev, wanted| {
            // A MAC wanted on another (existing) device moves there by the add alone.
            wanted.is_none_or(|d| !exists(d)).then(|| Op::DeleteFdb {
                bridge: bridge.to_string(),
                dev: dev.clone(),
                mac: *mac,
            })
        },
        &mut ops,
    );

    // VXLAN FDB: exactly one remote per MAC.
    for (vx, wanted) in &want.vxlan_fdb {
        let current = have.vxlan_fdb.get(vx).filter(|_| !gone(vx));
        for (mac, dst) in wanted {
            match current.and_then(|c| c.get(mac)).map(Vec::as_slice) {
                Some([one]) if one == dst => {}
                Some(remotes) if remotes.len() > 1 => {
                    ops.push(Op::DeleteVxlanFdb {
                        dev: vx.clone(),
                        mac: *mac,
                    });
                    ops.push(add_vxlan_fdb(vx, mac, dst));
                }
                _ => ops.push(add_vxlan_fdb(vx, mac, dst)),
            }
        }
    }
    for (vx, current) in &have.vxlan_fdb {
        if gone(vx) {
            continue;
        }
        let wanted = want.vxlan_fdb.get(vx);
        for mac in current.keys() {
            if !wanted.is_some_and(|w| w.contains_key(mac)) {
                ops.push(Op::DeleteVxlanFdb {
                    dev: vx.clone(),
                    mac: *mac,
                });
            }
        }
    }

    // Neighbours.
    entries(
        &want.neighbours,
        &have.neighbours,
        &gone,
        |bridge, _ip, mac| (!gone(bridge) && !readdressed.contains(bridge)).then_some(*mac),
        |bridge, ip, mac| {
            Some(Op::AddNeighbour {
                bridge: bridge.to_string(),
                ip: *ip,
                mac: *mac,
            })
        },
        |bridge, ip, _mac, wanted| {
            wanted.is_none().then(|| Op::DeleteNeighbour {
                bridge: bridge.to_string(),
                ip: *ip,
            })
        },
        &mut ops,
    );

    ops.sort_by_key(Op::phase);
    ops
}

fn create(name: &str, link: &super::desired::DesiredLink) -> Op {
    let mtu = link.mtu;
    match &link.kind {
        LinkKind::Vxlan {
            vni,
            local: Some(local),
            port,
            ..
        } => Op::CreateVxlan {
            name: name.to_string(),
            vni: *vni,
            local: *local,
            port: *port,
            mtu,
        },
        _ => Op::CreateBridge {
            name: name.to_string(),
            mtu,
            address: link.address.unwrap_or(MacAddr([0x02, 0, 0, 0, 0, 1])),
        },
    }
}

fn add_vxlan_fdb(dev: &str, mac: &MacAddr, dst: &IpAddr) -> Op {
    Op::AddVxlanFdb {
        dev: dev.to_string(),
        mac: *mac,
        dst: *dst,
    }
}

struct LinkTarget<'a> {
    mtu: u32,
    master: Option<&'a str>,
    flags: Option<PortFlags>,
    up: bool,
    silence_ipv6: bool,
}

/// Pushes what it takes to bring one link from `current` to `target`;
/// returns whether the link changes bridge.
fn converge(dev: &str, current: &ObservedLink, target: &LinkTarget, ops: &mut Vec<Op>) -> bool {
    let dev_s = || dev.to_string();
    if current.mtu != target.mtu {
        ops.push(Op::SetMtu {
            dev: dev_s(),
            mtu: target.mtu,
        });
    }
    let moves = current.master.as_deref() != target.master;
    let mut flags = current.port_flags;
    if moves {
        match target.master {
            Some(master) => {
                ops.push(Op::SetMaster {
                    dev: dev_s(),
                    master: master.to_string(),
                });
                flags = Some(PortFlags::KERNEL_DEFAULT);
            }
            None => ops.push(Op::Detach { dev: dev_s() }),
        }
    }
    if let Some(want) = target.flags
        && flags != Some(want)
    {
        ops.push(Op::SetPortFlags {
            dev: dev_s(),
            flags: want,
        });
    }
    if target.silence_ipv6 && current.ipv6_silent == Some(false) {
        ops.push(Op::SilenceIpv6 { dev: dev_s() });
    }
    if current.up != target.up {
        ops.push(Op::SetUp {
            dev: dev_s(),
            up: target.up,
        });
    }
    moves
}

/// Diffs two `device → key → value` tables. `current(dev, key, value)` says
/// what an observed entry still is after this plan's link changes (`None`:
/// gone with its device); `add` and `remove` build the operations (`remove`
/// is told what is wanted under the key, if anything).
#[allow(clippy::too_many_arguments)]
fn entries<K: Ord, V: PartialEq + Clone>(
    want: &BTreeMap<String, BTreeMap<K, V>>,
    have: &BTreeMap<String, BTreeMap<K, V>>,
    gone: &dyn Fn(&str) -> bool,
    current: impl Fn(&str, &K, &V) -> Option<V>,
    add: impl Fn(&str, &K, &V) -> Option<Op>,
    remove: impl Fn(&str, &K, &V, Option<&V>) -> Option<Op>,
    ops: &mut Vec<Op>,
) {
    for (dev, wanted) in want {
        let observed = have.get(dev);
        for (key, value) in wanted {
            let now = observed
                .and_then(|o| o.get(key))
                .and_then(|v| current(dev, key, v));
            if now.as_ref() != Some(value)
                && let Some(op) = add(dev, key, value)
            {
                ops.push(op);
            }
        }
    }
    for (dev, observed) in have {
        if gone(dev) {
            continue;
        }
        let wanted = want.get(dev);
        for (key, value) in observed {
            let w = wanted.and_then(|w| w.get(key));
            if w == Some(value) {
                continue;
            }
            if current(dev, key, value).is_some()
                && let Some(op) = remove(dev, key, value, w)
            {
                ops.push(op);
            }
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
