//! The desired ruleset kept between desired states, with the inputs each
//! piece was built from (the base chains' named maps, each secured port's
//! anti-spoofing chain, each profile's chains, each used group's chains,
//! each named set; the base chains themselves are fixed), so that a new
//! state rebuilds only the pieces whose inputs changed and names them
//! ([`Touched`]) for the plan to diff alone. Given the stream's [`Hints`],
//! it looks only at the pieces they name, so a one-port or one-member delta
//! costs in proportion to it, not to the host. Pure. It must always equal
//! [`super::desired`] of the same state (proptests in
//! `incremental_tests.rs` check it after every step, on both paths).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use compiler::protocol::{HostState, PortSecuritySpec, RuleDirection, SecurityGroupSpec};
use ipnet::IpNet;

use super::hints::{Hints, SourceId};
use super::ruleset::{
    Chain, Family, Layout, MAPS, Map, MapKey, MapValue, NftConfig, Profile, ProfileChain, Ruleset,
    Set, SetSource, base_chains, group_chains, group_sets, indexes, layout, maps, mark_key,
    network_layout, nft_string, profile_chain, profile_chains, profile_to_chain, spoof_chain,
    spoof_rules, without_overlaps,
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

/// What a secured port's pieces were built from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortInputs {
    spec: PortSecuritySpec,
    /// Its profile's name.
    profile: String,
}

/// A profile in use: what it is, its mark index, the devices of its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProfileInputs {
    profile: Profile,
    index: u16,
    devices: BTreeSet<String>,
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

/// The desired ruleset of a host, kept up to date piece by piece.
#[derive(Clone, Debug, Default)]
pub struct IncrementalRuleset {
    ruleset: Ruleset,
    layout: Layout,
    /// Secured devices per bridge: the filtered bridges.
    bridges: BTreeMap<String, usize>,
    /// By device.
    ports: BTreeMap<String, PortInputs>,
    /// By name. A profile comes with its first port and goes with its
    /// last; indexes are decided afresh when the set of profiles changes
    /// (there are few: ports share their groups).
    profiles: BTreeMap<String, ProfileInputs>,
    /// Secured devices by the groups their port security names (present
    /// or not): a group's change re-decides their profiles.
    naming: BTreeMap<String, BTreeSet<String>>,
    /// Profiles by the groups they use.
    users: BTreeMap<String, BTreeSet<String>>,
    /// The groups profiles use, as their chains were built.
    groups: BTreeMap<String, SecurityGroupSpec>,
    /// By set name.
    sets: BTreeMap<String, SetInputs>,
}

/// What one update changed besides its touched pieces: the devices whose
/// map entries (anti-spoofing jump, mark, to-profile jump) must be set
/// again, and the groups whose users may have changed.
#[derive(Default)]
struct Pending {
    devices: BTreeSet<String>,
    regroup: BTreeSet<String>,
    /// Profiles a device left as their last: removed at the end of the
    /// update unless another joined since (the order the devices came in
    /// must not matter).
    emptied: BTreeSet<String>,
    /// A profile came or went: indexes are decided again.
    profiles_changed: bool,
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
        // Zones are decided network against network, and with no secured
        // port no device is marked: those maps are rebuilt.
        let whole = self.ruleset.inet.maps.is_empty()
            || layout.vxlan_bridges != self.layout.vxlan_bridges
            || layout.flat_bridges != self.layout.flat_bridges
            || layout.secured.is_empty() != self.layout.secured.is_empty();
        let mut pending = Pending::default();
        if layout != self.layout {
            pending.devices = self
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
        }
        for (dev, spec) in &specs {
            self.port(dev, Some(spec), state, &mut pending, &mut touched);
        }
        let gone: Vec<String> = self
            .ports
            .keys()
            .filter(|dev| !specs.contains_key(dev.as_str()))
            .cloned()
            .collect();
        for dev in gone {
            self.port(&dev, None, state, &mut pending, &mut touched);
        }
        self.finish(&mut pending, whole, &mut touched);
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
    /// hinted networks' bridges and devices (the maps rebuilt when a
    /// bridge, so a zone, came or went) and ports, the hinted ports'
    /// devices, the hinted groups' ports and chains, the hinted member sets
    /// at the hinted addresses. Anything else is the whole path.
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
        let mut pending = Pending::default();
        let mut zones = false;
        let mut devices = BTreeSet::new();
        if !hints.networks.is_empty() {
            // A network's bridge, devices and zone: from every network
            // (zones are decided network against network), not their ports.
            let (vxlan, flat, own) = network_layout(state, config);
            zones = vxlan != self.layout.vxlan_bridges || flat != self.layout.flat_bridges;
            devices.extend(
                self.layout
                    .network_devices
                    .symmetric_difference(&own)
                    .cloned(),
            );
            self.layout.vxlan_bridges = vxlan;
            self.layout.flat_bridges = flat;
            self.layout.network_devices = own;
        }
        // The hinted ports, and every port that was or is on a hinted
        // network (a network's removal drops its ports unnamed).
        let mut ports = hints.ports.clone();
        for (port, networks) in &self.layout.locals {
            for net in networks.keys().filter(|n| hints.networks.contains(*n)) {
                ports.entry(port.clone()).or_default().insert(net.clone());
            }
        }
        for net in &hints.networks {
            let now = state.networks.get(net).into_iter();
            for port in now.flat_map(|n| n.local_ports.keys()) {
                ports.entry(port.clone()).or_default().insert(net.clone());
            }
        }
        devices.extend(self.relocate(state, &ports));
        let was_empty = self.layout.secured.is_empty();
        for dev in &devices {
            let listed = self.layout.by_device.contains_key(dev)
                || self.layout.network_devices.contains(dev);
            let was_listed = if listed {
                !self.layout.devices.insert(dev.clone())
            } else {
                self.layout.devices.remove(dev)
            };
            if listed != was_listed {
                pending.devices.insert(dev.clone());
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
        }
        let whole = zones || self.layout.secured.is_empty() != was_empty;
        let mut redo: BTreeSet<String> = devices;
        for g in &hints.groups {
            redo.extend(self.naming.get(g).into_iter().flatten().cloned());
        }
        pending.regroup = hints.groups.clone();
        for dev in redo {
            let spec = secured_port(&self.layout, state, &dev).map(|(_, spec)| spec);
            self.port(&dev, spec, state, &mut pending, &mut touched);
        }
        self.finish(&mut pending, whole, &mut touched);
        let regrouped = self.update_groups(&pending.regroup, state, &mut touched);
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

    /// Brings one device's anti-spoofing chain and profile to its port
    /// security (`None`: not a secured device), naming in `pending` the
    /// device when its map entries change and the groups whose users may.
    fn port(
        &mut self,
        dev: &str,
        spec: Option<&PortSecuritySpec>,
        state: &HostState,
        pending: &mut Pending,
        touched: &mut Touched,
    ) {
        let Some(spec) = spec else {
            if let Some(old) = self.ports.remove(dev) {
                self.unname(dev, &old.spec);
                self.leave(&old.profile, dev, pending);
                let name = spoof_chain(dev);
                self.ruleset.bridge.chains.remove(&name);
                touched.chains.insert((Family::Bridge, name));
                pending.devices.insert(dev.to_owned());
            }
            return;
        };
        let profile = Profile::of(spec, &state.security_groups);
        let name = profile.name();
        let old = self.ports.remove(dev);
        if old
            .as_ref()
            .is_none_or(|o| o.spec.allowed_sources != spec.allowed_sources)
        {
            let chain = spoof_chain(dev);
            let rules = Chain::new(None, spoof_rules(spec));
            self.ruleset.bridge.chains.insert(chain.clone(), rules);
            touched.chains.insert((Family::Bridge, chain));
        }
        match &old {
            Some(o) if o.profile == name => {}
            _ => {
                if let Some(o) = &old {
                    self.leave(&o.profile, dev, pending);
                }
                self.join(&name, profile, dev, pending, touched);
                pending.devices.insert(dev.to_owned());
            }
        }
        if let Some(o) = &old {
            self.unname(dev, &o.spec);
        }
        for g in &spec.security_groups {
            self.naming
                .entry(g.clone())
                .or_default()
                .insert(dev.to_owned());
        }
        let spec = spec.clone();
        self.ports.insert(
            dev.to_owned(),
            PortInputs {
                spec,
                profile: name,
            },
        );
    }

    fn unname(&mut self, dev: &str, spec: &PortSecuritySpec) {
        for g in &spec.security_groups {
            forget(&mut self.naming, g, dev);
        }
    }

    /// Adds `dev` to a profile, making the profile's chains if it is new
    /// (its to-chain and dispatch entries wait for its index: [`Self::finish`]).
    fn join(
        &mut self,
        name: &str,
        profile: Profile,
        dev: &str,
        pending: &mut Pending,
        touched: &mut Touched,
    ) {
        if let Some(p) = self.profiles.get_mut(name) {
            p.devices.insert(dev.to_owned());
            return;
        }
        for (family, chain_name, chain) in profile_chains(name, &profile, 0).into_iter().take(2) {
            self.ruleset
                .table_mut(family)
                .chains
                .insert(chain_name.clone(), chain);
            touched.chains.insert((family, chain_name));
        }
        for g in &profile.groups {
            self.users
                .entry(g.clone())
                .or_default()
                .insert(name.to_owned());
            pending.regroup.insert(g.clone());
        }
        let devices = BTreeSet::from([dev.to_owned()]);
        let inputs = ProfileInputs {
            profile,
            index: 0,
            devices,
        };
        self.profiles.insert(name.to_owned(), inputs);
        pending.profiles_changed = true;
    }

    /// Takes `dev` out of a profile.
    fn leave(&mut self, name: &str, dev: &str, pending: &mut Pending) {
        if let Some(p) = self.profiles.get_mut(name) {
            p.devices.remove(dev);
            if p.devices.is_empty() {
                pending.emptied.insert(name.to_owned());
            }
        }
    }

    /// Removes a profile no device has, with its chains and entries.
    fn remove_profile(&mut self, name: &str, pending: &mut Pending, touched: &mut Touched) {
        let Entry::Occupied(p) = self.profiles.entry(name.to_owned()) else {
            return;
        };
        if !p.get().devices.is_empty() {
            return;
        }
        let gone = p.remove();
        for g in &gone.profile.groups {
            forget(&mut self.users, g, name);
            pending.regroup.insert(g.clone());
        }
        for which in [
            ProfileChain::Egress,
            ProfileChain::Ingress,
            ProfileChain::To,
        ] {
            let chain = profile_chain(name, which);
            let family = match which {
                ProfileChain::To => Family::Bridge,
                _ => Family::Inet,
            };
            self.ruleset.table_mut(family).chains.remove(&chain);
            touched.chains.insert((family, chain));
        }
        if gone.index != 0 {
            self.dispatch(name, gone.index, false, touched);
        }
        pending.profiles_changed = true;
    }

    /// Sets (`on`) or removes a profile's entries at `index` in the egress
    /// and ingress dispatch maps. Entries are removed before any is set in
    /// an update, so a key given up and taken again ends with the taker.
    fn dispatch(&mut self, name: &str, index: u16, on: bool, touched: &mut Touched) {
        let [.., egress, ingress] = MAPS.map(|(f, map, _)| (f, map));
        for (map, dir) in [
            (egress, RuleDirection::Egress),
            (ingress, RuleDirection::Ingress),
        ] {
            let jump = on.then(|| MapValue::Jump(profile_chain(name, dir.into())));
            set_entry(&mut self.ruleset, touched, map, mark_key(index, dir), jump);
        }
    }

    /// After the ports of an update: indexes the profiles afresh if they
    /// changed (giving a moved profile its to-chain and dispatch entries,
    /// and its devices their marks), then sets the map entries of the
    /// pending devices, or rebuilds the maps `whole`.
    fn finish(&mut self, pending: &mut Pending, whole: bool, touched: &mut Touched) {
        for name in std::mem::take(&mut pending.emptied) {
            self.remove_profile(&name, pending, touched);
        }
        if pending.profiles_changed {
            let index = indexes(self.profiles.keys().map(String::as_str));
            let moved: Vec<(String, u16, u16)> = self
                .profiles
                .iter()
                .filter_map(|(name, p)| {
                    let new = index.get(name).copied().unwrap_or(0);
                    (new != p.index).then(|| (name.clone(), p.index, new))
                })
                .collect();
            for (name, old, _) in moved.iter().filter(|(_, old, _)| *old != 0) {
                self.dispatch(name, *old, false, touched);
            }
            for (name, _, new) in moved {
                let (family, chain_name, chain) = profile_to_chain(&name, new);
                self.ruleset
                    .table_mut(family)
                    .chains
                    .insert(chain_name.clone(), chain);
                touched.chains.insert((family, chain_name));
                if let Some(p) = self.profiles.get_mut(&name) {
                    p.index = new;
                    pending.devices.extend(p.devices.iter().cloned());
                }
                self.dispatch(&name, new, true, touched);
            }
        }
        if whole {
            self.rebuild_maps(touched);
        } else {
            self.update_port_entries(&pending.devices, touched);
        }
    }

    /// Rebuilds the named maps whole, naming the keys that changed.
    fn rebuild_maps(&mut self, touched: &mut Touched) {
        let port_profiles: BTreeMap<String, String> = self
            .ports
            .iter()
            .map(|(d, p)| (d.clone(), p.profile.clone()))
            .collect();
        let index: BTreeMap<String, u16> = self
            .profiles
            .iter()
            .map(|(name, p)| (name.clone(), p.index))
            .collect();
        for (family, name, map) in maps(&self.layout, &port_profiles, &index) {
            let maps = &mut self.ruleset.table_mut(family).maps;
            let keys = changed_keys(maps.get(name), &map);
            if !keys.is_empty() {
                touched.maps.insert((family, name.to_string()), keys);
            }
            maps.insert(name.to_string(), map);
        }
    }

    /// The map entries of `devices` (anti-spoofing jump, mark, to-profile
    /// jump), as [`maps`] has them for what is kept now.
    fn update_port_entries(&mut self, devices: &BTreeSet<String>, touched: &mut Touched) {
        let [spoof, marks, to, ..] = MAPS.map(|(f, name, _)| (f, name));
        let rs = &mut self.ruleset;
        for d in devices {
            let key = MapKey::Ifname(nft_string(d));
            let port = self.ports.get(d);
            let jump = |chain: String| MapValue::Jump(chain);
            let s = port.map(|_| jump(spoof_chain(d)));
            set_entry(rs, touched, spoof, key.clone(), s);
            let t = port.map(|p| jump(profile_chain(&p.profile, ProfileChain::To)));
            set_entry(rs, touched, to, key.clone(), t);
            // No device is marked without a secured port.
            let mark = (!self.ports.is_empty() && self.layout.devices.contains(d)).then(|| {
                let i = port
                    .and_then(|p| self.profiles.get(&p.profile))
                    .map_or(0, |p| p.index);
                MapValue::Number(u32::from(i) << 16)
            });
            set_entry(rs, touched, marks, key, mark);
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
}

/// Takes `item` out of `by[key]`, removing the key with its last item.
fn forget(by: &mut BTreeMap<String, BTreeSet<String>>, key: &str, item: &str) {
    if let Entry::Occupied(mut items) = by.entry(key.to_owned()) {
        items.get_mut().remove(item);
        if items.get().is_empty() {
            items.remove();
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
