//! The desired kernel objects kept between desired states, network by
//! network, so that a change to some networks rebuilds only theirs (and
//! the routers' ports, which are few) and names what it touched for the
//! plan to diff alone ([`restrict`]). Pure. It must always equal
//! [`Desired::from_host_state`] of the same state (a proptest in
//! `incremental_tests.rs` checks it, and the plan, after every step).

use std::collections::{BTreeMap, BTreeSet};

use compiler::protocol::HostState;
use model::MacAddr;

use super::LinuxConfig;
use super::desired::Desired;
use super::observed::Observed;

/// The kernel objects one update may have changed: links, port devices and
/// physical interfaces by name, and the entry tables of bridges and VXLAN
/// devices by device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub devices: BTreeSet<String>,
    /// Bridges and VXLAN devices whose FDB or neighbour tables changed.
    pub tables: BTreeSet<String>,
}

impl Touched {
    fn add(&mut self, piece: &Desired) {
        let links = piece.links.keys().chain(piece.ports.keys());
        self.devices
            .extend(links.chain(piece.uplinks.keys()).cloned());
        let tables = piece.fdb.keys().chain(piece.vxlan_fdb.keys());
        self.tables
            .extend(tables.chain(piece.neighbours.keys()).cloned());
    }
}

/// One router port as the last update added it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouterPort {
    device: String,
    bridge: String,
    mac: MacAddr,
    /// Whether its MAC's bridge FDB entry is its own (a local port's wins).
    fdb: bool,
}

/// The desired kernel objects of a host, kept up to date network by
/// network.
#[derive(Clone, Debug, Default)]
pub struct IncrementalDesired {
    desired: Desired,
    /// Each network's own objects, built alone, by network id; empty when
    /// two networks share a bridge, a device or an interface (then every
    /// update builds the whole, as [`Desired::from_host_state`] settles
    /// such conflicts).
    pieces: BTreeMap<String, Desired>,
    exclusive: bool,
    routers: Vec<RouterPort>,
}

impl IncrementalDesired {
    /// Built whole from `state`.
    pub fn new(state: &HostState, config: &LinuxConfig) -> Self {
        let mut pieces = BTreeMap::new();
        let mut desired = Desired::default();
        let mut exclusive = true;
        for (id, net) in &state.networks {
            let mut piece = Desired::default();
            piece.add_network(net, config);
            exclusive &= desired.take_in(&piece);
            pieces.insert(id.clone(), piece);
        }
        if !exclusive {
            pieces.clear();
            desired = Desired::default();
            for net in state.networks.values() {
                desired.add_network(net, config);
            }
        }
        let mut built = IncrementalDesired {
            desired,
            pieces,
            exclusive,
            routers: vec![],
        };
        built.routers = built.desired.add_router_ports_recorded(state, config);
        built
    }

    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Brings the objects to `state`'s, rebuilding only the networks named
    /// in `changed` (each network a change named since the last update)
    /// and the routers' ports; `None` when it rebuilt everything.
    pub fn update(
        &mut self,
        state: &HostState,
        changed: &BTreeSet<String>,
        config: &LinuxConfig,
    ) -> Option<Touched> {
        if !self.exclusive {
            *self = IncrementalDesired::new(state, config);
            return None;
        }
        let mut touched = Touched::default();
        let old_routers = std::mem::take(&mut self.routers);
        self.desired.remove_router_ports(&old_routers);
        for id in changed {
            if let Some(old) = self.pieces.remove(id) {
                self.desired.give_back(&old);
                touched.add(&old);
            }
            if let Some(net) = state.networks.get(id) {
                let mut piece = Desired::default();
                piece.add_network(net, config);
                touched.add(&piece);
                if !self.desired.take_in(&piece) {
                    *self = IncrementalDesired::new(state, config);
                    return None;
                }
                self.pieces.insert(id.clone(), piece);
            }
        }
        self.routers = self.desired.add_router_ports_recorded(state, config);
        if self.routers != old_routers {
            for port in old_routers.iter().chain(&self.routers) {
                touched.devices.insert(port.device.clone());
                touched.tables.insert(port.bridge.clone());
            }
        }
        Some(touched)
    }
}

impl Desired {
    /// Adds a network's objects, built alone; whether none of them was
    /// here already (else nothing is added).
    fn take_in(&mut self, piece: &Desired) -> bool {
        let clash = piece.links.keys().any(|n| self.links.contains_key(n))
            || piece.ports.keys().any(|n| self.ports.contains_key(n))
            || piece.uplinks.keys().any(|n| self.uplinks.contains_key(n));
        if clash {
            return false;
        }
        self.links.extend(piece.links.clone());
        self.ports.extend(piece.ports.clone());
        self.uplinks.extend(piece.uplinks.clone());
        self.fdb.extend(piece.fdb.clone());
        self.vxlan_fdb.extend(piece.vxlan_fdb.clone());
        self.neighbours.extend(piece.neighbours.clone());
        true
    }

    /// Removes a network's objects, as [`Desired::take_in`] added them.
    fn give_back(&mut self, piece: &Desired) {
        for name in piece.links.keys() {
            self.links.remove(name);
        }
        for name in piece.ports.keys() {
            self.ports.remove(name);
        }
        for name in piece.uplinks.keys() {
            self.uplinks.remove(name);
        }
        for name in piece.fdb.keys() {
            self.fdb.remove(name);
        }
        for name in piece.vxlan_fdb.keys() {
            self.vxlan_fdb.remove(name);
        }
        for name in piece.neighbours.keys() {
            self.neighbours.remove(name);
        }
    }

    /// [`Desired::add_router_ports`], recording what each added.
    fn add_router_ports_recorded(
        &mut self,
        state: &HostState,
        config: &LinuxConfig,
    ) -> Vec<RouterPort> {
        let before: BTreeSet<String> = self.ports.keys().cloned().collect();
        self.add_router_ports(state, config);
        self.ports
            .iter()
            .filter(|(device, _)| !before.contains(*device))
            .map(|(device, port)| RouterPort {
                device: device.clone(),
                bridge: port.bridge.clone(),
                mac: port.mac,
                // Router devices are named apart from local ports': an
                // entry naming this one is this one's.
                fdb: self.fdb.get(&port.bridge).and_then(|f| f.get(&port.mac)) == Some(device),
            })
            .collect()
    }

    fn remove_router_ports(&mut self, ports: &[RouterPort]) {
        for port in ports {
            self.ports.remove(&port.device);
            if port.fdb
                && let Some(fdb) = self.fdb.get_mut(&port.bridge)
                && fdb.get(&port.mac) == Some(&port.device)
            {
                fdb.remove(&port.mac);
            }
        }
    }
}

/// `want` and `have` cut down to what `touched` names, with every link of
/// a touched table's bridge (those its entries may name): [`super::diff`]
/// of the two is the whole diff when everything else already agrees.
pub fn restrict(want: &Desired, have: &Observed, touched: &Touched) -> (Desired, Observed) {
    let tables = &touched.tables;
    let on_table = |master: Option<&str>| master.is_some_and(|m| tables.contains(m));
    let mut devices = touched.devices.clone();
    devices.extend(tables.iter().cloned());
    devices.extend(
        want.links
            .iter()
            .filter(|(_, l)| on_table(l.master.as_deref()))
            .map(|(n, _)| n.clone()),
    );
    devices.extend(
        want.ports
            .iter()
            .filter(|(_, p)| on_table(Some(&p.bridge)))
            .map(|(n, _)| n.clone()),
    );
    devices.extend(
        have.links
            .iter()
            .filter(|(_, l)| on_table(l.master.as_deref()))
            .map(|(n, _)| n.clone()),
    );
    let want = Desired {
        links: cut(&want.links, &devices),
        ports: cut(&want.ports, &devices),
        uplinks: cut(&want.uplinks, &devices),
        fdb: cut(&want.fdb, tables),
        vxlan_fdb: cut(&want.vxlan_fdb, tables),
        neighbours: cut(&want.neighbours, tables),
    };
    let have = Observed {
        links: cut(&have.links, &devices),
        fdb: cut(&have.fdb, tables),
        vxlan_fdb: cut(&have.vxlan_fdb, tables),
        neighbours: cut(&have.neighbours, tables),
    };
    (want, have)
}

fn cut<V: Clone>(map: &BTreeMap<String, V>, names: &BTreeSet<String>) -> BTreeMap<String, V> {
    names
        .iter()
        .filter_map(|n| map.get_key_value(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
