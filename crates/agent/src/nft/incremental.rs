//! The desired ruleset kept between desired states, with the inputs each
//! piece was built from (the base chains' named maps, each secured port's
//! chains, each used group's chains, each named set; the base chains
//! themselves are fixed), so that a new state rebuilds only
//! the pieces whose inputs changed and names them ([`Touched`]) for the
//! plan to diff alone. Pure. It must always equal [`super::desired`] of
//! the same state (a proptest in `tests.rs` checks it after every step).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use compiler::protocol::{HostState, PortSecuritySpec, RuleDirection, SecurityGroupSpec};
use ipnet::IpNet;

use super::ruleset::{
    Family, Layout, MAPS, Map, MapKey, MapValue, NftConfig, Ruleset, Set, SetSource, base_chains,
    group_chains, group_sets, layout, maps, nft_string, port_chain, port_chain_names, port_chains,
    port_groups, port_indexes, spoof_chain, to_chain, without_overlaps,
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

/// The desired ruleset of a host, kept up to date piece by piece.
#[derive(Clone, Debug, Default)]
pub struct IncrementalRuleset {
    ruleset: Ruleset,
    layout: Layout,
    index: BTreeMap<String, u16>,
    /// By device.
    ports: BTreeMap<String, PortInputs>,
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

    /// Brings the ruleset to `state`'s, rebuilding only the pieces whose
    /// inputs changed; returns what it touched.
    pub fn update(&mut self, state: &HostState, config: &NftConfig) -> Touched {
        let mut touched = Touched::default();
        let (layout, specs) = layout(state, config);
        let index = port_indexes(layout.secured.keys().map(String::as_str));
        if self.ruleset.inet.chains.is_empty() {
            for (family, name, chain) in base_chains(config) {
                self.ruleset
                    .table_mut(family)
                    .chains
                    .insert(name.clone(), chain);
                touched.chains.insert((family, name));
            }
        }
        let changed = layout != self.layout || index != self.index;
        let whole = self.ruleset.inet.maps.is_empty()
            || layout.vxlan_bridges != self.layout.vxlan_bridges
            || layout.flat_bridges != self.layout.flat_bridges
            || index.is_empty() != self.index.is_empty();
        if whole {
            // Zones are decided network against network, and with no
            // secured port no device is marked: those maps are rebuilt.
            for (family, name, map) in maps(&layout, &index) {
                let maps = &mut self.ruleset.table_mut(family).maps;
                let keys = changed_keys(maps.get(name), &map);
                if !keys.is_empty() {
                    touched.maps.insert((family, name.to_string()), keys);
                }
                maps.insert(name.to_string(), map);
            }
        } else if changed {
            self.update_port_entries(&layout, &index, &mut touched);
        }
        if whole || changed {
            self.ruleset.filtered_bridges = layout.secured.values().cloned().collect();
            self.layout = layout;
            self.index = index;
        }

        let mut used_groups: BTreeSet<&str> = BTreeSet::new();
        for (dev, spec) in &specs {
            let (groups, stateful) = port_groups(spec, &state.security_groups);
            let i = self.index.get(*dev).copied().unwrap_or(0);
            let same = self.ports.get(*dev).is_some_and(|p| {
                p.index == i && p.stateful == stateful && p.groups == groups && p.spec == **spec
            });
            if !same {
                for (family, name, chain) in port_chains(dev, spec, i, &groups, stateful) {
                    self.ruleset
                        .table_mut(family)
                        .chains
                        .insert(name.clone(), chain);
                    touched.chains.insert((family, name));
                }
                let inputs = PortInputs {
                    spec: (*spec).clone(),
                    index: i,
                    groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                    stateful,
                };
                self.ports.insert((*dev).to_owned(), inputs);
            }
            used_groups.extend(groups);
        }
        let gone: Vec<String> = self
            .ports
            .keys()
            .filter(|dev| !specs.contains_key(dev.as_str()))
            .cloned()
            .collect();
        for dev in gone {
            self.ports.remove(&dev);
            for (family, name) in port_chain_names(&dev) {
                self.ruleset.table_mut(family).chains.remove(&name);
                touched.chains.insert((family, name));
            }
        }

        let mut wanted_sets: BTreeMap<String, SetSource> = BTreeMap::new();
        for g in &used_groups {
            let Some(sg) = state.security_groups.get(*g) else {
                continue;
            };
            if self.groups.get(*g) != Some(sg) {
                for (name, chain) in group_chains(g, sg) {
                    self.ruleset.inet.chains.insert(name.clone(), chain);
                    touched.chains.insert((Family::Inet, name));
                }
                self.groups.insert((*g).to_owned(), sg.clone());
            }
            wanted_sets.extend(group_sets(sg));
        }
        let gone: Vec<(String, SecurityGroupSpec)> = self
            .groups
            .iter()
            .filter(|(g, _)| !used_groups.contains(g.as_str()))
            .map(|(g, sg)| (g.clone(), sg.clone()))
            .collect();
        for (g, sg) in gone {
            self.groups.remove(&g);
            for (name, _) in group_chains(&g, &sg) {
                self.ruleset.inet.chains.remove(&name);
                touched.chains.insert((Family::Inet, name));
            }
        }

        let wanted: BTreeSet<String> = wanted_sets.keys().cloned().collect();
        for (name, source) in wanted_sets {
            let now = source.members(state);
            let empty = BTreeSet::new();
            let now = now.unwrap_or(&empty);
            match self.sets.get_mut(&name) {
                Some(kept) if kept.source == source => {
                    let Some(set) = self.ruleset.inet.sets.get_mut(&name) else {
                        continue;
                    };
                    let changed = kept.update(now, &mut set.elements);
                    if !changed.is_empty() {
                        touched.set_keys.insert(name.clone(), changed);
                        touched.sets.insert(name);
                    }
                }
                _ => {
                    let (inputs, set) = SetInputs::new(source, now);
                    self.ruleset.inet.sets.insert(name.clone(), set);
                    self.sets.insert(name.clone(), inputs);
                    touched.sets.insert(name);
                }
            }
        }
        let gone: Vec<String> = self
            .sets
            .keys()
            .filter(|name| !wanted.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            self.sets.remove(&name);
            self.ruleset.inet.sets.remove(&name);
            touched.sets.insert(name);
        }
        touched
    }
}

impl IncrementalRuleset {
    /// The map entries of the secured ports and devices that came, went
    /// or changed index (as [`maps`] has them), the networks unchanged.
    fn update_port_entries(
        &mut self,
        layout: &Layout,
        index: &BTreeMap<String, u16>,
        touched: &mut Touched,
    ) {
        let [spoof, marks, to, _, egress, ingress] = MAPS.map(|(f, name, _)| (f, name));
        let rs = &mut self.ruleset;
        let old = &self.index;
        let moved: BTreeSet<&String> = old
            .keys()
            .chain(index.keys())
            .filter(|d| old.get(*d) != index.get(*d))
            .collect();
        // An index given up is removed before another port takes it.
        for d in &moved {
            if let Some(i) = old.get(*d) {
                set_entry(rs, touched, egress, MapKey::Mark(u32::from(*i) << 16), None);
                set_entry(rs, touched, ingress, MapKey::Mark(u32::from(*i)), None);
            }
        }
        let jump = |chain: String| Some(MapValue::Jump(chain));
        for d in &moved {
            let dev = MapKey::Ifname(nft_string(d));
            match index.get(*d) {
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
        if index.is_empty() {
            // No device is marked without a secured port.
            return;
        }
        let devices = self.layout.devices.symmetric_difference(&layout.devices);
        for d in moved.into_iter().chain(devices) {
            let mark = layout.devices.contains(d).then(|| {
                let i = index.get(d).copied().unwrap_or(0);
                MapValue::Number(u32::from(i) << 16)
            });
            set_entry(rs, touched, marks, MapKey::Ifname(nft_string(d)), mark);
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

    /// Takes the addresses to `now` and `elements` with them; the
    /// elements that changed.
    fn update(&mut self, now: &BTreeSet<IpNet>, elements: &mut BTreeSet<IpNet>) -> BTreeSet<IpNet> {
        let v6 = self.source.v6;
        let mine = |n: &&IpNet| matches!(n, IpNet::V6(_)) == v6;
        let added: Vec<IpNet> = now.difference(&self.members).copied().collect();
        let removed: Vec<IpNet> = self.members.difference(now).copied().collect();
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
