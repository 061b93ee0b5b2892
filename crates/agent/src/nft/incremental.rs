//! The desired ruleset kept between desired states, with the inputs each
//! piece was built from (the base chains' named maps, each secured port's
//! chains, each used group's chains, each named set; the base chains
//! themselves are fixed), so that a new state rebuilds only
//! the pieces whose inputs changed and names them ([`Touched`]) for the
//! plan to diff alone. Given the stream's [`Hints`], it looks only at the
//! pieces they name, so a one-port or one-member delta costs in
//! proportion to it, not to the host. Pure. It must always equal
//! [`super::desired`] of the same state (proptests in
//! `incremental_tests.rs` check it after every step, on both paths).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use compiler::protocol::{HostState, PortSecuritySpec, RuleDirection, SecurityGroupSpec};
use ipnet::IpNet;

use super::hints::{Hints, SourceId};
use super::ruleset::{
    Family, Layout, MAPS, Map, MapKey, MapValue, NftConfig, Ruleset, Set, SetSource, base_chains,
    group_chains, group_sets, layout, maps, natural_index, nft_string, port_chain,
    port_chain_names, port_chains, port_groups, port_indexes, spoof_chain, to_chain,
    without_overlaps,
};

/// The chains and sets one update rebuilt, added or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub chains: BTreeSet<(Family, String)>,
    /// Named sets (all in the inet table).
    pub sets: BTreeSet<String>,
    /// Of those changed in place, the prefixes that may have changed (a
    /// set made, remade or removed has none: it is diffed whole).
    pub set_keys: BTreeMap<String, BTreeSet<IpNet>>,
    /// Named maps whose elements changed, with the keys that may have.
    pub maps: BTreeMap<(Family, String), BTreeSet<MapKey>>,
}

impl Touched {
    pub fn chains(&self, family: Family) -> impl Iterator<Item = &String> {
        self.chains
            .iter()
            .filter(move |(f, _)| *f == family)
            .map(|(_, name)| name)
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.maps.is_empty()
    }

    pub fn maps(&self, family: Family) -> impl Iterator<Item = &String> {
        self.maps
            .keys()
            .filter(move |(f, _)| *f == family)
            .map(|(_, name)| name)
    }
}

/// What a secured port's chains were built from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortInputs {
    spec: PortSecuritySpec,
    index: u16,
    groups: Vec<String>,
    stateful: bool,
}

/// What a set's elements were built from: its source's addresses (both
/// IP versions, as the state has them), and of its own version each
/// prefix (truncated) with how many addresses give it, so that an address
/// coming or going re-decides only the prefixes it contains.
#[derive(Clone, Debug)]
struct SetInputs {
    source: SetSource,
    members: BTreeSet<IpNet>,
    prefixes: BTreeMap<IpNet, u32>,
}

/// Devices whose mark index changed: (before, after).
type Moved = BTreeMap<String, (Option<u16>, Option<u16>)>;

/// The desired ruleset of a host, kept up to date piece by piece.
#[derive(Clone, Debug, Default)]
pub struct IncrementalRuleset {
    ruleset: Ruleset,
    layout: Layout,
    index: BTreeMap<String, u16>,
    /// The index's inverse, and the devices not at their own index (their
    /// probe passed others'): whether a device coming or going moves
    /// another's index is decided from them alone.
    slots: BTreeMap<u16, String>,
    displaced: BTreeSet<String>,
    /// Secured devices per bridge: the filtered bridges.
    bridges: BTreeMap<String, usize>,
    /// By device.
    ports: BTreeMap<String, PortInputs>,
    /// Secured devices by the groups their port security names (present
    /// or not), and by those they use: a group's change re-decides them.
    naming: BTreeMap<String, BTreeSet<String>>,
    users: BTreeMap<String, BTreeSet<String>>,
    /// The groups secured ports use, as their chains were built.
    groups: BTreeMap<String, SecurityGroupSpec>,
    /// By set name.
    sets: BTreeMap<String, SetInputs>,
}

impl IncrementalRuleset {
    /// Built whole from `state`.
    pub fn new(state: &HostState, config: &NftConfig) -> Self {
        let mut built = IncrementalRuleset::default();
        built.update(state, config);
        built
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// Brings the ruleset to `state`'s, comparing every piece's inputs
    /// and rebuilding only those that changed; returns what it touched.
    /// The path of a start, a snapshot and anything not hinted.
    pub fn update(&mut self, state: &HostState, config: &NftConfig) -> Touched {
        let mut touched = Touched::default();
        if self.ruleset.inet.chains.is_empty() {
            for (family, name, chain) in base_chains(config) {
                self.ruleset
                    .table_mut(family)
                    .chains
                    .insert(name.clone(), chain);
                touched.chains.insert((family, name));
            }
        }
        let (layout, specs) = layout(state, config);
        let index = port_indexes(layout.secured.keys().map(String::as_str));
        let whole = self.ruleset.inet.maps.is_empty()
            || layout.vxlan_bridges != self.layout.vxlan_bridges
            || layout.flat_bridges != self.layout.flat_bridges
            || index.is_empty() != self.index.is_empty();
        let changed = layout != self.layout || index != self.index;
        if changed {
            let moved: Moved = self
                .index
                .keys()
                .chain(index.keys())
                .filter_map(|d| {
                    let (old, new) = (self.index.get(d).copied(), index.get(d).copied());
                    (old != new).then(|| (d.clone(), (old, new)))
                })
                .collect();
            let marks: BTreeSet<String> = self
                .layout
                .devices
                .symmetric_difference(&layout.devices)
                .cloned()
                .collect();
            self.bridges.clear();
            for bridge in layout.secured.values() {
                *self.bridges.entry(bridge.clone()).or_default() += 1;
            }
            self.ruleset.filtered_bridges = self.bridges.keys().cloned().collect();
            self.layout = layout;
            self.set_index(index);
            if !whole {
                self.update_port_entries(&moved, &marks, &mut touched);
            }
        }
        if whole {
            // Zones are decided network against network, and with no
            // secured port no device is marked: those maps are rebuilt.
            self.rebuild_maps(&mut touched);
        }

        let mut regroup = BTreeSet::new();
        for (dev, spec) in &specs {
            self.port(dev, Some(spec), state, &mut regroup, &mut touched);
        }
        let gone: Vec<String> = self
            .ports
            .keys()
            .filter(|dev| !specs.contains_key(dev.as_str()))
            .cloned()
            .collect();
        for dev in gone {
            self.port(&dev, None, state, &mut regroup, &mut touched);
        }
        let groups: BTreeSet<String> = self
            .users
            .keys()
            .chain(self.groups.keys())
            .cloned()
            .collect();
        self.update_groups(&groups, state, &mut touched);
        self.update_sets(state, None, true, &mut touched);
        touched
    }

    /// Like [`IncrementalRuleset::update`] (the same ruleset, the same
    /// touched pieces), looking only at the pieces `hints` name: the
    /// hinted ports' devices (and those whose index that moves), the
    /// hinted groups' ports and chains, the hinted member sets at the
    /// hinted addresses. Anything else is the whole path.
    pub fn update_hinted(
        &mut self,
        state: &HostState,
        config: &NftConfig,
        hints: &Hints,
    ) -> Touched {
        if hints.all || self.ruleset.inet.maps.is_empty() {
            return self.update(state, config);
        }
        let mut touched = Touched::default();
        let devices = self.relocate(state, &hints.ports);
        let mut marks = BTreeSet::new();
        let (mut added, mut removed) = (vec![], vec![]);
        for dev in &devices {
            let listed = self.layout.by_device.contains_key(dev)
                || self.layout.network_devices.contains(dev);
            let was_listed = if listed {
                !self.layout.devices.insert(dev.clone())
            } else {
                self.layout.devices.remove(dev)
            };
            if listed != was_listed {
                marks.insert(dev.clone());
            }
            let bridge = secured_port(&self.layout, state, dev).map(|(bridge, _)| bridge);
            let old = match &bridge {
                Some(b) => self.layout.secured.insert(dev.clone(), b.clone()),
                None => self.layout.secured.remove(dev),
            };
            if old == bridge {
                continue;
            }
            if let Some(b) = &old {
                self.unfilter(b);
            }
            if let Some(b) = &bridge {
                self.filter(b);
            }
            match (old, bridge) {
                (None, Some(_)) => added.push(dev.as_str()),
                (Some(_), None) => removed.push(dev.as_str()),
                _ => {}
            }
        }
        let was_empty = self.index.is_empty();
        let mut moved = Moved::new();
        let exact = removed.iter().all(|d| self.index_remove(d, &mut moved))
            && added.iter().all(|d| self.index_add(d, &mut moved));
        if !exact {
            self.reindex(&mut moved);
        }
        if self.index.is_empty() != was_empty {
            self.rebuild_maps(&mut touched);
        } else {
            self.update_port_entries(&moved, &marks, &mut touched);
        }

        let mut redo: BTreeSet<String> = devices;
        redo.extend(moved.into_keys());
        for g in &hints.groups {
            redo.extend(self.naming.get(g).into_iter().flatten().cloned());
        }
        let mut regroup = hints.groups.clone();
        for dev in redo {
            let spec = secured_port(&self.layout, state, &dev).map(|(_, spec)| spec);
            self.port(&dev, spec, state, &mut regroup, &mut touched);
        }
        let regrouped = self.update_groups(&regroup, state, &mut touched);
        self.update_sets(state, Some(&hints.members), regrouped, &mut touched);
        touched
    }
}

/// The bridge and port security of the port that secures `dev` (of
/// several naming it, the first by network and port id), if one does.
fn secured_port<'s>(
    layout: &Layout,
    state: &'s HostState,
    dev: &str,
) -> Option<(String, &'s PortSecuritySpec)> {
    layout.by_device.get(dev)?.iter().find_map(|(net, port)| {
        let spec = state.port_security.get(port).filter(|s| s.enabled)?;
        Some((crate::linux::network_bridge(state.networks.get(net)?), spec))
    })
}

/// Whether the probe from index `from` to `to` (cyclic over 1…0xffff)
/// passed `at`.
fn probe_passes(from: u16, to: u16, at: u16) -> bool {
    if from <= to {
        from <= at && at < to
    } else {
        at >= from || at < to
    }
}

impl IncrementalRuleset {
    /// Moves the hinted ports (by id, with the networks their changes
    /// named) to where `state` has them; the devices they left or took.
    fn relocate(
        &mut self,
        state: &HostState,
        ports: &BTreeMap<String, BTreeSet<String>>,
    ) -> BTreeSet<String> {
        let layout = &mut self.layout;
        let mut devices = BTreeSet::new();
        for (port, networks) in ports {
            let was = layout.locals.remove(port).unwrap_or_default();
            for (net, dev) in &was {
                if let Some(named) = layout.by_device.get_mut(dev) {
                    named.remove(&(net.clone(), port.clone()));
                    if named.is_empty() {
                        layout.by_device.remove(dev);
                    }
                }
                devices.insert(dev.clone());
            }
            let mut now = BTreeMap::new();
            for net in networks.iter().chain(was.keys()) {
                let Some(p) = state
                    .networks
                    .get(net)
                    .and_then(|n| n.local_ports.get(port))
                else {
                    continue;
                };
                let named = layout.by_device.entry(p.device.clone()).or_default();
                named.insert((net.clone(), port.clone()));
                devices.insert(p.device.clone());
                now.insert(net.clone(), p.device.clone());
            }
            if !now.is_empty() {
                layout.locals.insert(port.clone(), now);
            }
        }
        devices
    }

    fn filter(&mut self, bridge: &str) {
        let ports = self.bridges.entry(bridge.to_owned()).or_default();
        *ports += 1;
        if *ports == 1 {
            self.ruleset.filtered_bridges.insert(bridge.to_owned());
        }
    }

    fn unfilter(&mut self, bridge: &str) {
        if let Entry::Occupied(mut ports) = self.bridges.entry(bridge.to_owned()) {
            *ports.get_mut() -= 1;
            if *ports.get() == 0 {
                ports.remove();
                self.ruleset.filtered_bridges.remove(bridge);
            }
        }
    }

    fn set_index(&mut self, index: BTreeMap<String, u16>) {
        self.slots = index.iter().map(|(d, i)| (*i, d.clone())).collect();
        self.displaced = index
            .iter()
            .filter(|(d, i)| natural_index(d) != **i)
            .map(|(d, _)| d.clone())
            .collect();
        self.index = index;
    }

    /// Gives `dev` its own index, if that is free (then no other device's
    /// moves: none passed a free index); false otherwise.
    fn index_add(&mut self, dev: &str, moved: &mut Moved) -> bool {
        let i = natural_index(dev);
        if self.slots.contains_key(&i) {
            return false;
        }
        self.slots.insert(i, dev.to_owned());
        self.index.insert(dev.to_owned(), i);
        moved.insert(dev.to_owned(), (None, Some(i)));
        true
    }

    /// Frees `dev`'s index, if no other device's probe passed it (then
    /// none moves); false otherwise.
    fn index_remove(&mut self, dev: &str, moved: &mut Moved) -> bool {
        let Some(&at) = self.index.get(dev) else {
            return true;
        };
        let passed = self.displaced.iter().any(|d| {
            d != dev
                && self
                    .index
                    .get(d)
                    .is_some_and(|i| probe_passes(natural_index(d), *i, at))
        });
        if passed {
            return false;
        }
        self.index.remove(dev);
        self.slots.remove(&at);
        self.displaced.remove(dev);
        moved.insert(dev.to_owned(), (Some(at), None));
        true
    }

    /// Indexes the secured devices afresh, adding those whose index it
    /// moved to `moved`.
    fn reindex(&mut self, moved: &mut Moved) {
        let index = port_indexes(self.layout.secured.keys().map(String::as_str));
        for d in self.index.keys().chain(index.keys()) {
            let new = index.get(d).copied();
            let old = self.index.get(d).copied();
            moved.entry(d.clone()).or_insert((old, new)).1 = new;
        }
        moved.retain(|_, (old, new)| old != new);
        self.set_index(index);
    }

    /// Rebuilds the named maps whole, naming the keys that changed.
    fn rebuild_maps(&mut self, touched: &mut Touched) {
        for (family, name, map) in maps(&self.layout, &self.index) {
            let maps = &mut self.ruleset.table_mut(family).maps;
            let keys = changed_keys(maps.get(name), &map);
            if !keys.is_empty() {
                touched.maps.insert((family, name.to_string()), keys);
            }
            maps.insert(name.to_string(), map);
        }
    }

    /// Brings one device's chains to its port security (`None`: not a
    /// secured device), naming in `regroup` the groups whose users that
    /// may change.
    fn port(
        &mut self,
        dev: &str,
        spec: Option<&PortSecuritySpec>,
        state: &HostState,
        regroup: &mut BTreeSet<String>,
        touched: &mut Touched,
    ) {
        let Some(spec) = spec else {
            if let Some(old) = self.ports.remove(dev) {
                self.unlink(dev, &old, regroup);
                for (family, name) in port_chain_names(dev) {
                    self.ruleset.table_mut(family).chains.remove(&name);
                    touched.chains.insert((family, name));
                }
            }
            return;
        };
        let (groups, stateful) = port_groups(spec, &state.security_groups);
        let i = self.index.get(dev).copied().unwrap_or(0);
        let same = self.ports.get(dev).is_some_and(|p| {
            p.index == i && p.stateful == stateful && p.groups == groups && p.spec == *spec
        });
        if same {
            return;
        }
        for (family, name, chain) in port_chains(dev, spec, i, &groups, stateful) {
            self.ruleset
                .table_mut(family)
                .chains
                .insert(name.clone(), chain);
            touched.chains.insert((family, name));
        }
        if let Some(old) = self.ports.remove(dev) {
            self.unlink(dev, &old, regroup);
        }
        let inputs = PortInputs {
            spec: spec.clone(),
            index: i,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            stateful,
        };
        for g in &inputs.spec.security_groups {
            self.naming
                .entry(g.clone())
                .or_default()
                .insert(dev.to_owned());
        }
        for g in &inputs.groups {
            self.users
                .entry(g.clone())
                .or_default()
                .insert(dev.to_owned());
            regroup.insert(g.clone());
        }
        self.ports.insert(dev.to_owned(), inputs);
    }

    fn unlink(&mut self, dev: &str, old: &PortInputs, regroup: &mut BTreeSet<String>) {
        let forget = |by: &mut BTreeMap<String, BTreeSet<String>>, g: &String| {
            if let Entry::Occupied(mut devs) = by.entry(g.clone()) {
                devs.get_mut().remove(dev);
                if devs.get().is_empty() {
                    devs.remove();
                }
            }
        };
        for g in &old.spec.security_groups {
            forget(&mut self.naming, g);
        }
        for g in &old.groups {
            forget(&mut self.users, g);
            regroup.insert(g.clone());
        }
    }

    /// Brings the chains of the groups in `candidates` to `state` (a used
    /// group's built, an unused one's removed); whether any changed.
    fn update_groups(
        &mut self,
        candidates: &BTreeSet<String>,
        state: &HostState,
        touched: &mut Touched,
    ) -> bool {
        let mut changed = false;
        for g in candidates {
            let used = self.users.contains_key(g);
            match state.security_groups.get(g).filter(|_| used) {
                Some(sg) if self.groups.get(g) == Some(sg) => {}
                Some(sg) => {
                    for (name, chain) in group_chains(g, sg) {
                        self.ruleset.inet.chains.insert(name.clone(), chain);
                        touched.chains.insert((Family::Inet, name));
                    }
                    self.groups.insert(g.clone(), sg.clone());
                    changed = true;
                }
                None => {
                    if let Some(sg) = self.groups.remove(g) {
                        for (name, _) in group_chains(g, &sg) {
                            self.ruleset.inet.chains.remove(&name);
                            touched.chains.insert((Family::Inet, name));
                        }
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// Makes and removes the sets the used groups want (when `regrouped`:
    /// those groups may have changed), and brings the members of those
    /// named in `members` (`None`: of all) to `state`.
    fn update_sets(
        &mut self,
        state: &HostState,
        members: Option<&BTreeMap<SourceId, Option<BTreeSet<IpNet>>>>,
        regrouped: bool,
        touched: &mut Touched,
    ) {
        let empty = BTreeSet::new();
        let mut made = BTreeSet::new();
        if regrouped {
            let wanted: BTreeMap<String, SetSource> =
                self.groups.values().flat_map(group_sets).collect();
            let gone: Vec<String> = self
                .sets
                .keys()
                .filter(|name| !wanted.contains_key(*name))
                .cloned()
                .collect();
            for name in gone {
                self.sets.remove(&name);
                self.ruleset.inet.sets.remove(&name);
                touched.sets.insert(name);
            }
            for (name, source) in wanted {
                if self
                    .sets
                    .get(&name)
                    .is_some_and(|kept| kept.source == source)
                {
                    continue;
                }
                let now = source.members(state).unwrap_or(&empty);
                let (inputs, set) = SetInputs::new(source, now);
                self.ruleset.inet.sets.insert(name.clone(), set);
                self.sets.insert(name.clone(), inputs);
                touched.sets.insert(name.clone());
                made.insert(name);
            }
        }
        if members.is_some_and(BTreeMap::is_empty) {
            return;
        }
        for (name, kept) in &mut self.sets {
            if made.contains(name) {
                continue;
            }
            let at = match members {
                None => None,
                Some(members) => {
                    let source = (kept.source.address_group, kept.source.id.clone());
                    match members.get(&source) {
                        None => continue,
                        Some(at) => at.as_ref(),
                    }
                }
            };
            let Some(set) = self.ruleset.inet.sets.get_mut(name) else {
                continue;
            };
            let now = kept.source.members(state).unwrap_or(&empty);
            let changed = kept.update(now, at, &mut set.elements);
            if !changed.is_empty() {
                touched.set_keys.insert(name.clone(), changed);
                touched.sets.insert(name.clone());
            }
        }
    }

    /// The map entries of the devices whose index `moved` and of those
    /// that came onto or left vnet's bridges (`marks`), as [`maps`] has
    /// them for the layout and index now kept.
    fn update_port_entries(
        &mut self,
        moved: &Moved,
        marks: &BTreeSet<String>,
        touched: &mut Touched,
    ) {
        let [spoof, marks_map, to, _, egress, ingress] = MAPS.map(|(f, name, _)| (f, name));
        let rs = &mut self.ruleset;
        // An index given up is removed before another port takes it.
        for (old, _) in moved.values() {
            if let Some(i) = old {
                set_entry(rs, touched, egress, MapKey::Mark(u32::from(*i) << 16), None);
                set_entry(rs, touched, ingress, MapKey::Mark(u32::from(*i)), None);
            }
        }
        let jump = |chain: String| Some(MapValue::Jump(chain));
        for (d, (_, new)) in moved {
            let dev = MapKey::Ifname(nft_string(d));
            match new {
                Some(i) => {
                    set_entry(rs, touched, spoof, dev.clone(), jump(spoof_chain(d)));
                    set_entry(rs, touched, to, dev, jump(to_chain(d)));
                    let (from, dest) = (u32::from(*i) << 16, u32::from(*i));
                    let e = jump(port_chain(d, RuleDirection::Egress));
                    set_entry(rs, touched, egress, MapKey::Mark(from), e);
                    let i = jump(port_chain(d, RuleDirection::Ingress));
                    set_entry(rs, touched, ingress, MapKey::Mark(dest), i);
                }
                None => {
                    set_entry(rs, touched, spoof, dev.clone(), None);
                    set_entry(rs, touched, to, dev, None);
                }
            }
        }
        if self.index.is_empty() {
            // No device is marked without a secured port.
            return;
        }
        for d in moved.keys().chain(marks) {
            let mark = self.layout.devices.contains(d).then(|| {
                let i = self.index.get(d).copied().unwrap_or(0);
                MapValue::Number(u32::from(i) << 16)
            });
            set_entry(rs, touched, marks_map, MapKey::Ifname(nft_string(d)), mark);
        }
    }
}

/// Sets (or with `None` removes) one entry of a map, naming its key in
/// `touched` when that changed it.
fn set_entry(
    rs: &mut Ruleset,
    touched: &mut Touched,
    (family, name): (Family, &str),
    key: MapKey,
    value: Option<MapValue>,
) {
    let Some(map) = rs.table_mut(family).maps.get_mut(name) else {
        return;
    };
    let changed = match value {
        Some(v) => map.elements.insert(key.clone(), v.clone()) != Some(v),
        None => map.elements.remove(&key).is_some(),
    };
    if changed {
        touched
            .maps
            .entry((family, name.to_string()))
            .or_default()
            .insert(key);
    }
}

/// The keys whose entries differ between a map and its replacement.
fn changed_keys(old: Option<&Map>, new: &Map) -> BTreeSet<MapKey> {
    let empty = BTreeMap::new();
    let old = old.map_or(&empty, |m| &m.elements);
    let differ = |a: &BTreeMap<MapKey, MapValue>, b: &BTreeMap<MapKey, MapValue>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    differ(old, &new.elements)
        .into_iter()
        .chain(differ(&new.elements, old))
        .collect()
}

impl SetInputs {
    fn new(source: SetSource, members: &BTreeSet<IpNet>) -> (Self, Set) {
        let mine: Vec<IpNet> = members
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == source.v6)
            .copied()
            .collect();
        let mut prefixes = BTreeMap::new();
        for n in &mine {
            *prefixes.entry(n.trunc()).or_insert(0) += 1;
        }
        let set = Set {
            v6: source.v6,
            elements: without_overlaps(&mine),
        };
        let inputs = SetInputs {
            source,
            members: members.clone(),
            prefixes,
        };
        (inputs, set)
    }

    /// Takes the addresses to `now` and `elements` with them, looking only
    /// at the addresses `at` when given (the others are known unchanged);
    /// the elements that changed.
    fn update(
        &mut self,
        now: &BTreeSet<IpNet>,
        at: Option<&BTreeSet<IpNet>>,
        elements: &mut BTreeSet<IpNet>,
    ) -> BTreeSet<IpNet> {
        let v6 = self.source.v6;
        let mine = |n: &&IpNet| matches!(n, IpNet::V6(_)) == v6;
        let (added, removed): (Vec<IpNet>, Vec<IpNet>) = match at {
            Some(at) => (
                at.iter()
                    .filter(|n| now.contains(n) && !self.members.contains(n))
                    .copied()
                    .collect(),
                at.iter()
                    .filter(|n| !now.contains(n) && self.members.contains(n))
                    .copied()
                    .collect(),
            ),
            None => (
                now.difference(&self.members).copied().collect(),
                self.members.difference(now).copied().collect(),
            ),
        };
        // Prefixes that appear or vanish: only they, and what they contain,
        // can enter or leave the set.
        let mut changed = vec![];
        for n in removed.iter().filter(mine) {
            self.members.remove(n);
            if let Entry::Occupied(mut count) = self.prefixes.entry(n.trunc()) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                    changed.push(n.trunc());
                }
            }
        }
        for n in added.iter().filter(mine) {
            self.members.insert(*n);
            let count = self.prefixes.entry(n.trunc()).or_insert(0);
            *count += 1;
            if *count == 1 {
                changed.push(n.trunc());
            }
        }
        // The other version's addresses are kept too, so the next
        // difference sees them unchanged.
        for n in removed.iter().filter(|n| !mine(n)) {
            self.members.remove(n);
        }
        for n in added.iter().filter(|n| !mine(n)) {
            self.members.insert(*n);
        }
        let mut modified = BTreeSet::new();
        for prefix in changed {
            let inside: Vec<IpNet> = self
                .prefixes
                .range(range_of(prefix))
                .map(|(p, _)| *p)
                .filter(|p| prefix.contains(p))
                .chain([prefix])
                .collect();
            for p in inside {
                let kept = self.prefixes.contains_key(&p) && !self.has_supernet(p);
                let changed = if kept {
                    elements.insert(p)
                } else {
                    elements.remove(&p)
                };
                if changed {
                    modified.insert(p);
                }
            }
        }
        modified
    }

    /// Whether a strict supernet of `p` is one of the prefixes.
    fn has_supernet(&self, p: IpNet) -> bool {
        (0..p.prefix_len()).any(|len| {
            IpNet::new(p.addr(), len).is_ok_and(|sup| self.prefixes.contains_key(&sup.trunc()))
        })
    }
}

/// Every (truncated) prefix whose address lies within `p`, in the order
/// `IpNet` sorts (address, then length): those `p` contains among them.
fn range_of(p: IpNet) -> std::ops::RangeInclusive<IpNet> {
    let max_len = p.max_prefix_len();
    let low = IpNet::new(p.network(), 0).unwrap_or(p);
    let high = IpNet::new(p.broadcast(), max_len).unwrap_or(p);
    low..=high
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
