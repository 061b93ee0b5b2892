//! What vnet's tables hold (read from `nft -j list table`), and the one
//! transaction that turns that into the desired ruleset. Pure.
//!
//! Every rule vnet writes carries a comment with a hash of its text, so a
//! chain is known unchanged by comparing the list of hashes: a chain whose
//! rules differ is flushed and rewritten in the transaction; named sets and
//! maps are changed element by element; chains and sets vnet no longer wants are
//! deleted. Tables and objects of anyone else are never named.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::incremental::Touched;
use super::netlink::{MapDelta, SetDelta};
use super::rule::Rule;
use super::ruleset::{Family, MapKey, MapKind, MapValue, Ruleset, TABLE, Table, fnv1a};

/// One of vnet's tables as nftables has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedTable {
    pub exists: bool,
    /// Chain → the comments (rule hashes) of its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set → its elements (`None` for one vnet cannot read back, e.g. a
    /// range: then the set is recreated).
    pub sets: BTreeMap<String, Option<BTreeSet<IpNet>>>,
    /// Map → its elements (`None` for one vnet cannot read back: then its
    /// elements are flushed and added again).
    pub maps: BTreeMap<String, Option<BTreeMap<MapKey, MapValue>>>,
}

/// Both of vnet's tables as nftables has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedNft {
    pub bridge: ObservedTable,
    pub inet: ObservedTable,
}

impl ObservedNft {
    /// What nftables holds once `want` is applied: the view a cached
    /// reconcile plans against.
    pub fn from_ruleset(want: &Ruleset) -> Self {
        let table = |t: &Table| ObservedTable {
            exists: true,
            chains: t
                .chains
                .iter()
                .map(|(n, c)| (n.clone(), c.rules.iter().map(|r| rule_tag(r)).collect()))
                .collect(),
            sets: t
                .sets
                .iter()
                .map(|(n, s)| (n.clone(), Some(s.elements.clone())))
                .collect(),
            maps: t
                .maps
                .iter()
                .map(|(n, m)| (n.clone(), Some(m.elements.clone())))
                .collect(),
        };
        ObservedNft {
            bridge: table(&want.bridge),
            inet: table(&want.inet),
        }
    }

    pub fn table(&self, family: Family) -> &ObservedTable {
        match family {
            Family::Bridge => &self.bridge,
            Family::Inet => &self.inet,
        }
    }

    fn table_mut(&mut self, family: Family) -> &mut ObservedTable {
        match family {
            Family::Bridge => &mut self.bridge,
            Family::Inet => &mut self.inet,
        }
    }

    /// What nftables holds once `tx`, planned by [`plan_touched`] against
    /// this view, is applied: the touched chains and sets as `want` has
    /// them (equal to [`ObservedNft::from_ruleset`], at the cost of what
    /// changed).
    pub fn apply_touched(&mut self, want: &Ruleset, touched: &Touched, tx: &Transaction) {
        self.bridge.exists = true;
        self.inet.exists = true;
        for (family, name) in &touched.chains {
            let chains = &mut self.table_mut(*family).chains;
            match want.table(*family).chains.get(name) {
                Some(c) => {
                    chains.insert(name.clone(), c.rules.iter().map(|r| rule_tag(r)).collect());
                }
                None => {
                    chains.remove(name);
                }
            }
        }
        for name in &touched.sets {
            if want.inet.sets.contains_key(name) {
                // Made (or remade) empty by the plan, then filled by its deltas.
                let elements = self.inet.sets.entry(name.clone()).or_insert(None);
                elements.get_or_insert_with(BTreeSet::new);
            } else {
                self.inet.sets.remove(name);
            }
        }
        for (family, name) in touched.maps.keys() {
            let maps = &mut self.table_mut(*family).maps;
            if want.table(*family).maps.contains_key(name) {
                // Made (or flushed) empty by the plan, then filled by its deltas.
                let elements = maps.entry(name.clone()).or_insert(None);
                elements.get_or_insert_with(BTreeMap::new);
            } else {
                maps.remove(name);
            }
        }
        for delta in &tx.map_deltas {
            if let Some(Some(elements)) = self.table_mut(delta.family).maps.get_mut(&delta.map) {
                for gone in &delta.removed {
                    elements.remove(gone);
                }
                elements.extend(delta.added.iter().cloned());
            }
        }
        for delta in &tx.set_deltas {
            if let Some(Some(elements)) = self.table_mut(delta.family).sets.get_mut(&delta.set) {
                for gone in &delta.removed {
                    elements.remove(gone);
                }
                elements.extend(delta.added.iter().copied());
            }
        }
    }
}

/// The comment identifying a rule's text.
pub fn rule_tag(rule: &str) -> String {
    format!("h{:016x}", fnv1a(rule.as_bytes()))
}

/// Reads `nft -j list table <family> vnet` output.
pub fn parse_table(json: &str) -> Result<ObservedTable, serde_json::Error> {
    let v: Value = serde_json::from_str(json)?;
    let mut t = ObservedTable::default();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if item.get("table").is_some() {
            t.exists = true;
        } else if let Some(c) = item.get("chain") {
            if let Some(name) = c["name"].as_str() {
                t.chains.entry(name.to_string()).or_default();
            }
        } else if let Some(r) = item.get("rule") {
            if let Some(chain) = r["chain"].as_str() {
                let tag = r["comment"].as_str().unwrap_or("").to_string();
                t.chains.entry(chain.to_string()).or_default().push(tag);
            }
        } else if let Some(s) = item.get("set")
            && let Some(name) = s["name"].as_str()
        {
            let elems = s["elem"]
                .as_array()
                .map(|a| a.iter().map(parse_element).collect::<Option<BTreeSet<_>>>())
                .unwrap_or_else(|| Some(BTreeSet::new()));
            t.sets.insert(name.to_string(), elems);
        } else if let Some(m) = item.get("map")
            && let Some(name) = m["name"].as_str()
        {
            let elems = m["elem"]
                .as_array()
                .map(|a| a.iter().map(parse_map_element).collect::<Option<_>>())
                .unwrap_or_else(|| Some(BTreeMap::new()));
            t.maps.insert(name.to_string(), elems);
        }
    }
    Ok(t)
}

fn parse_element(e: &Value) -> Option<IpNet> {
    if let Some(s) = e.as_str() {
        return s.parse::<IpAddr>().ok().map(IpNet::from);
    }
    let p = e.get("prefix")?;
    let addr: IpAddr = p["addr"].as_str()?.parse().ok()?;
    let len = u8::try_from(p["len"].as_u64()?).ok()?;
    IpNet::new(addr, len).ok()
}

fn parse_map_element(e: &Value) -> Option<(MapKey, MapValue)> {
    let [key, value] = e.as_array()?.as_slice() else {
        return None;
    };
    let key = match key {
        Value::String(dev) => MapKey::Ifname(dev.clone()),
        k => MapKey::Mark(u32::try_from(k.as_u64()?).ok()?),
    };
    let value = match value.get("jump") {
        Some(jump) => MapValue::Jump(jump["target"].as_str()?.to_string()),
        None => MapValue::Number(u32::try_from(value.as_u64()?).ok()?),
    };
    Some((key, value))
}

/// At `keys` (in order, maybe repeated): the keys to remove from `have`
/// and the entries to add for it to be `want`.
#[allow(clippy::type_complexity)]
fn map_diff<'a>(
    keys: impl Iterator<Item = &'a MapKey>,
    want: &BTreeMap<MapKey, MapValue>,
    have: &BTreeMap<MapKey, MapValue>,
) -> (Vec<MapKey>, Vec<(MapKey, MapValue)>) {
    let keys: BTreeSet<&MapKey> = keys.collect();
    let mut removed = vec![];
    let mut added = vec![];
    for k in keys {
        let (w, h) = (want.get(k), have.get(k));
        if w == h {
            continue;
        }
        if h.is_some() {
            removed.push(k.clone());
        }
        if let Some(w) = w {
            added.push((k.clone(), w.clone()));
        }
    }
    (removed, added)
}

/// `VERB element FAMILY TABLE NAME { items }` (nothing for no items): one
/// line for a set's or a map's elements.
fn write_elements(script: &mut String, verb: &str, element: &str, items: &[String]) {
    if !items.is_empty() {
        let _ = writeln!(
            script,
            "{verb} element {element} {{ {} }}",
            items.join(", ")
        );
    }
}

/// One nftables transaction (an `nft -f` script), and what it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    pub script: String,
    /// Chains (re)written, as `family/chain`.
    pub chains_written: Vec<String>,
    pub chains_deleted: Vec<String>,
    /// Sets and maps made and deleted.
    pub sets_created: Vec<String>,
    pub sets_deleted: Vec<String>,
    /// Elements added and removed, as `family/set element`.
    pub elements_added: Vec<String>,
    pub elements_removed: Vec<String>,
    /// Map elements added and removed, as `family/map key[ : value]`.
    pub map_elements_added: Vec<String>,
    pub map_elements_removed: Vec<String>,
    /// Tables created, by family name.
    pub tables_created: Vec<String>,
    /// The element changes, set by set: what the in-process path sends.
    pub set_deltas: Vec<SetDelta>,
    /// The maps' element changes, likewise.
    pub map_deltas: Vec<MapDelta>,
    /// The script's steps, typed, in its order: the in-process path sends
    /// them as one batch.
    pub ops: Vec<Op>,
}

/// One step of a transaction (its element changes aside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    AddTable(Family),
    AddChain {
        family: Family,
        name: String,
        hook: Option<String>,
    },
    /// A named interval set of addresses.
    AddSet {
        family: Family,
        name: String,
        v6: bool,
    },
    /// A set or a map.
    DeleteSet {
        family: Family,
        name: String,
    },
    /// A named map (made with its table on a first start: by nft).
    AddMap {
        family: Family,
        name: String,
        kind: MapKind,
    },
    /// A map's elements, all (one that could not be read back).
    FlushMap {
        family: Family,
        name: String,
    },
    FlushChain {
        family: Family,
        name: String,
    },
    AddRule {
        family: Family,
        chain: String,
        rule: Rule,
        tag: String,
    },
    DeleteChain {
        family: Family,
        name: String,
    },
    /// Here go the element changes (`set_deltas`, `map_deltas`).
    Elements,
}

/// Where each step goes in the transaction: `Phase::Tables` first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Tables,
    NewChains,
    NewSets,
    Elements,
    Flushes,
    Rules,
    Deletes,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
    }

    /// Whether the transaction only adds and removes elements of sets and
    /// maps that exist (a member joining or leaving, an address group
    /// changing, a device without port security coming or going).
    pub fn elements_only(&self) -> bool {
        self.tables_created.is_empty()
            && self.chains_written.is_empty()
            && self.chains_deleted.is_empty()
            && self.sets_created.is_empty()
            && self.sets_deleted.is_empty()
    }
}

/// The transaction taking `have` to `want`. Empty when they agree.
pub fn plan(want: &Ruleset, have: &ObservedNft) -> Transaction {
    plan_within(want, have, None)
}

/// [`plan`] of the chains and sets `touched` names alone (the others are
/// known to agree): the same transaction when they do, at the cost of what
/// changed.
pub fn plan_touched(want: &Ruleset, have: &ObservedNft, touched: &Touched) -> Transaction {
    plan_within(want, have, Some(touched))
}

fn plan_within(want: &Ruleset, have: &ObservedNft, touched: Option<&Touched>) -> Transaction {
    let mut tx = Transaction::default();
    // Phases, in the order nft must run them within the one transaction.
    let mut tables = String::new();
    let mut new_chains = String::new();
    let mut new_sets = String::new();
    let mut del_elements = String::new();
    let mut add_elements = String::new();
    let mut flushes = String::new();
    let mut rules = String::new();
    let mut deletes = String::new();
    let mut ops: Vec<(Phase, Op)> = vec![];
    for family in [Family::Bridge, Family::Inet] {
        let f = family.as_str();
        let w: &Table = want.table(family);
        let h = have.table(family);
        if !h.exists {
            let _ = writeln!(tables, "add table {f} {TABLE}");
            ops.push((Phase::Tables, Op::AddTable(family)));
            tx.tables_created.push(f.to_string());
        }
        // Every name, or the touched ones: in name order either way, so
        // both give their steps in the same order.
        let chain_names: BTreeSet<&String> = match touched {
            None => w.chains.keys().chain(h.chains.keys()).collect(),
            Some(t) => t.chains(family).collect(),
        };
        let set_names: BTreeSet<&String> = match (touched, family) {
            (None, _) => w.sets.keys().chain(h.sets.keys()).collect(),
            (Some(t), Family::Inet) => t.sets.iter().collect(),
            (Some(_), Family::Bridge) => BTreeSet::new(),
        };
        for (name, chain) in chain_names
            .iter()
            .filter_map(|n| w.chains.get_key_value(*n))
        {
            let tags: Vec<String> = chain.rules.iter().map(|r| rule_tag(r)).collect();
            let existing = h.chains.get(name);
            match existing {
                None => ops.push((
                    Phase::NewChains,
                    Op::AddChain {
                        family,
                        name: name.clone(),
                        hook: chain.hook.clone(),
                    },
                )),
                Some(have_tags) if *have_tags == tags => {}
                Some(_) => ops.push((
                    Phase::Flushes,
                    Op::FlushChain {
                        family,
                        name: name.clone(),
                    },
                )),
            }
            match existing {
                None => match &chain.hook {
                    Some(hook) => {
                        let _ = writeln!(new_chains, "add chain {f} {TABLE} {name} {{ {hook} }}");
                    }
                    None => {
                        let _ = writeln!(new_chains, "add chain {f} {TABLE} {name}");
                    }
                },
                Some(have_tags) if *have_tags == tags => continue,
                Some(_) => {
                    let _ = writeln!(flushes, "flush chain {f} {TABLE} {name}");
                }
            }
            tx.chains_written.push(format!("{f}/{name}"));
            for (i, (rule, tag)) in chain.rules.iter().zip(&tags).enumerate() {
                // The typed rule if it is this text (a chain built by hand
                // may lack it): the in-process path then sends the text's
                // own rule or none.
                let typed = chain
                    .typed
                    .get(i)
                    .filter(|t| t.to_string() == *rule)
                    .cloned()
                    .unwrap_or_else(|| Rule::Text(rule.clone()));
                let _ = writeln!(
                    rules,
                    "add rule {f} {TABLE} {name} {rule} comment \"{tag}\""
                );
                ops.push((
                    Phase::Rules,
                    Op::AddRule {
                        family,
                        chain: name.clone(),
                        rule: typed,
                        tag: tag.clone(),
                    },
                ));
            }
        }
        for &name in &chain_names {
            if h.chains.contains_key(name) && !w.chains.contains_key(name) {
                let _ = writeln!(flushes, "flush chain {f} {TABLE} {name}");
                let _ = writeln!(deletes, "delete chain {f} {TABLE} {name}");
                ops.push((
                    Phase::Flushes,
                    Op::FlushChain {
                        family,
                        name: name.clone(),
                    },
                ));
                ops.push((
                    Phase::Deletes,
                    Op::DeleteChain {
                        family,
                        name: name.clone(),
                    },
                ));
                tx.chains_deleted.push(format!("{f}/{name}"));
            }
        }
        let empty = BTreeSet::new();
        for (name, set) in set_names.iter().filter_map(|n| w.sets.get_key_value(*n)) {
            let have_elems = match h.sets.get(name) {
                Some(Some(e)) => e,
                Some(None) => {
                    // Unreadable: delete and recreate it (same transaction).
                    let _ = writeln!(new_sets, "delete set {f} {TABLE} {name}");
                    let _ = writeln!(
                        new_sets,
                        "add set {f} {TABLE} {name} {{ type {}; flags interval; }}",
                        set.type_name()
                    );
                    ops.push((
                        Phase::NewSets,
                        Op::DeleteSet {
                            family,
                            name: name.clone(),
                        },
                    ));
                    ops.push((
                        Phase::NewSets,
                        Op::AddSet {
                            family,
                            name: name.clone(),
                            v6: set.v6,
                        },
                    ));
                    tx.sets_created.push(format!("{f}/{name}"));
                    &empty
                }
                None => {
                    let _ = writeln!(
                        new_sets,
                        "add set {f} {TABLE} {name} {{ type {}; flags interval; }}",
                        set.type_name()
                    );
                    ops.push((
                        Phase::NewSets,
                        Op::AddSet {
                            family,
                            name: name.clone(),
                            v6: set.v6,
                        },
                    ));
                    tx.sets_created.push(format!("{f}/{name}"));
                    &empty
                }
            };
            // A set changed in place is diffed at the prefixes the update
            // named (the others agree).
            let keys = touched
                .and_then(|t| t.set_keys.get(name))
                .filter(|_| matches!(h.sets.get(name), Some(Some(_))));
            let (removed, added): (Vec<IpNet>, Vec<IpNet>) = match keys {
                Some(keys) => (
                    keys.iter()
                        .filter(|k| have_elems.contains(k) && !set.elements.contains(k))
                        .copied()
                        .collect(),
                    keys.iter()
                        .filter(|k| set.elements.contains(k) && !have_elems.contains(k))
                        .copied()
                        .collect(),
                ),
                None => (
                    have_elems.difference(&set.elements).copied().collect(),
                    set.elements.difference(have_elems).copied().collect(),
                ),
            };
            let gone: Vec<String> = removed.iter().map(ToString::to_string).collect();
            let new: Vec<String> = added.iter().map(ToString::to_string).collect();
            if !removed.is_empty() || !added.is_empty() {
                tx.set_deltas.push(SetDelta {
                    family,
                    set: name.clone(),
                    was_empty: have_elems.is_empty(),
                    removed,
                    added,
                });
            }
            let element = format!("{f} {TABLE} {name}");
            write_elements(&mut del_elements, "delete", &element, &gone);
            write_elements(&mut add_elements, "add", &element, &new);
            let named = |e: &String| format!("{f}/{name} {e}");
            tx.elements_removed.extend(gone.iter().map(named));
            tx.elements_added.extend(new.iter().map(named));
        }
        let map_names: BTreeSet<&String> = match touched {
            None => w.maps.keys().chain(h.maps.keys()).collect(),
            Some(t) => t.maps(family).collect(),
        };
        let empty = BTreeMap::new();
        for (name, map) in map_names.iter().filter_map(|n| w.maps.get_key_value(*n)) {
            let have_elems = match h.maps.get(name) {
                Some(Some(e)) => e,
                Some(None) => {
                    let _ = writeln!(new_sets, "flush map {f} {TABLE} {name}");
                    let name = name.clone();
                    ops.push((Phase::NewSets, Op::FlushMap { family, name }));
                    &empty
                }
                None => {
                    let decl = map.kind.declaration();
                    let _ = writeln!(new_sets, "add map {f} {TABLE} {name} {{ {decl} }}");
                    ops.push((
                        Phase::NewSets,
                        Op::AddMap {
                            family,
                            name: name.clone(),
                            kind: map.kind,
                        },
                    ));
                    tx.sets_created.push(format!("{f}/{name}"));
                    &empty
                }
            };
            // A key whose value changed is deleted and added again. A
            // touched map that exists is diffed at the keys the update
            // named (the others agree).
            let keys = touched
                .and_then(|t| t.maps.get(&(family, name.clone())))
                .filter(|_| matches!(h.maps.get(name), Some(Some(_))));
            let (removed, added) = match keys {
                Some(keys) => map_diff(keys.iter(), &map.elements, have_elems),
                None => map_diff(
                    have_elems.keys().chain(map.elements.keys()),
                    &map.elements,
                    have_elems,
                ),
            };
            let gone: Vec<String> = removed.iter().map(ToString::to_string).collect();
            let new: Vec<String> = added.iter().map(|(k, v)| format!("{k} : {v}")).collect();
            let element = format!("{f} {TABLE} {name}");
            write_elements(&mut del_elements, "delete", &element, &gone);
            write_elements(&mut add_elements, "add", &element, &new);
            let named = |e: &String| format!("{f}/{name} {e}");
            tx.map_elements_removed.extend(gone.iter().map(named));
            tx.map_elements_added.extend(new.iter().map(named));
            if !removed.is_empty() || !added.is_empty() {
                tx.map_deltas.push(MapDelta {
                    family,
                    map: name.clone(),
                    kind: map.kind,
                    removed,
                    added,
                });
            }
        }
        for &name in &map_names {
            if h.maps.contains_key(name) && !w.maps.contains_key(name) {
                let _ = writeln!(deletes, "delete map {f} {TABLE} {name}");
                ops.push((
                    Phase::Deletes,
                    Op::DeleteSet {
                        family,
                        name: name.clone(),
                    },
                ));
                tx.sets_deleted.push(format!("{f}/{name}"));
            }
        }
        for &name in &set_names {
            if h.sets.contains_key(name) && !w.sets.contains_key(name) {
                let _ = writeln!(deletes, "delete set {f} {TABLE} {name}");
                ops.push((
                    Phase::Deletes,
                    Op::DeleteSet {
                        family,
                        name: name.clone(),
                    },
                ));
                tx.sets_deleted.push(format!("{f}/{name}"));
            }
        }
    }
    let body = [
        new_chains,
        new_sets,
        del_elements,
        add_elements,
        flushes,
        rules,
        deletes,
    ]
    .concat();
    if !body.is_empty() || !tables.is_empty() {
        tx.script = tables + &body;
    }
    if !tx.set_deltas.is_empty() || !tx.map_deltas.is_empty() {
        ops.push((Phase::Elements, Op::Elements));
    }
    // The script's order: phase by phase, in the order written within one
    // (a stable sort).
    ops.sort_by_key(|(phase, _)| *phase);
    tx.ops = ops.into_iter().map(|(_, op)| op).collect();
    tx
}
