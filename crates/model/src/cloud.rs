//! [`Cloud`]: the whole logical topology in memory, with the indexes that make
//! every check O(1) or O(log n), and every tenant operation Neutron defines.
//! An operation runs inside [`Cloud::apply`]: it either succeeds and yields the
//! resources it wrote, or fails and leaves the cloud exactly as it was (an undo
//! journal, so even a bulk create of many resources is all-or-nothing).
//! Persisting the changes is the caller's job; nothing here does I/O.
//! This file is the frame (tables, journal, the two write primitives, tags);
//! each resource's operations and index entries live in its own module
//! (`network`, `subnet`, `subnet_pool`, `port`, `security_group`,
//! `default_security_group_rule`, `address_group`, `l3`, `metering`, `quotas`,
//! `rbac`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

mod address_group;
mod auto_allocated_topology;
mod default_security_group_rule;
mod facets;
mod l3;
mod metering;
mod network;
mod port;
mod quotas;
mod rbac;
mod security_group;
mod subnet;
mod subnet_pool;

pub use auto_allocated_topology::Allocated;
pub use facets::{Facet, FacetIds};
pub use quotas::SubnetAvailability;

use crate::quota::{Limits, Quota};
use crate::resource::{with_kind, with_record};
use crate::security_group::RuleSignature;
use crate::{
    AddressGroup, AutoAllocatedTopology, DefaultSecurityGroupRule, FloatingIp, Kind, MacAddr,
    MeteringLabel, MeteringLabelRule, ModelError, Network, Port, RbacPolicy, Resource, Router,
    SecurityGroup, SecurityGroupRule, SplitMix64, Standard, Subnet, SubnetPool, Timestamp,
    default_limits, quota_name,
};

/// Allocator settings.
#[derive(Clone, Debug)]
pub struct CloudConfig {
    /// The first three octets of every generated MAC (Neutron's is fa:16:3e).
    pub mac_base: [u8; 3],
    /// VXLAN VNIs handed to new networks, inclusive.
    pub vni_range: (u32, u32),
    /// Default and maximum network MTU (1450: 1500 minus VXLAN's 50 bytes).
    pub max_mtu: u32,
    /// Seed of the id/MAC generator.
    pub seed: u64,
    /// Every project's limits unless it has its own (see [`crate::Quota`]).
    pub default_quotas: Limits,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            mac_base: [0xfa, 0x16, 0x3e],
            vni_range: (1, 65535),
            max_mtu: 1450,
            seed: 0,
            default_quotas: default_limits(),
        }
    }
}

/// Who is asking: their project, and whether they are an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub project_id: String,
    pub is_admin: bool,
}

impl Caller {
    pub fn owns(&self, project_id: &str) -> bool {
        self.is_admin || self.project_id == project_id
    }
}

/// One resource written by an operation: its key and new value (`None`: deleted).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub key: String,
    pub value: Option<Resource>,
}

/// A kind of stored record, implemented in its resource's module: where the
/// cloud keeps it and the index entries it owns. Only `insert` and `take`
/// call `index`/`unindex` and index `facets`, so an index can never
/// disagree with its table.
pub(crate) trait Record: Clone {
    const KIND: Kind;
    fn standard(&self) -> &Standard;
    fn into_resource(self) -> Resource;
    fn table(cloud: &Cloud) -> &HashMap<String, Self>;
    fn table_mut(cloud: &mut Cloud) -> &mut HashMap<String, Self>;
    /// Whether `caller` may see it at all (others get 404): by default, their own.
    fn visible_to(&self, _cloud: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.standard().project_id)
    }
    fn index(&self, _cloud: &mut Cloud) {}
    fn unindex(&self, _cloud: &mut Cloud) {}
    /// Its own facets' values (`each(facet, value)`), beyond every record's
    /// project and name: what lists filter it by.
    fn facets(&self, _each: &mut dyn FnMut(Facet, &str)) {}
    /// Facets it gives another record (`each(kind, facet, value, id)`): an
    /// RBAC policy's grant, on its object.
    fn facets_of_others(&self, _each: &mut dyn FnMut(Kind, Facet, &str, &str)) {}
    /// Id sets, in order, that together hold every record of its kind
    /// `visible_to` lets `caller` see (more is fine: the list still asks
    /// `visible_to` of each), so a tenant's list reads only these; `None`:
    /// every id. Kept beside `visible_to`, which it must follow: by default,
    /// the caller's project's.
    fn candidates<'c>(cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        cloud.owned_ids(Self::KIND, caller).map(|own| vec![own])
    }
}

/// The part of a `Record` impl that only names things: the record's kind
/// (and `Resource` variant, spelled alike) and its table in `Cloud`.
macro_rules! stored {
    ($T:ident in $table:ident) => {
        const KIND: $crate::Kind = $crate::Kind::$T;
        fn standard(&self) -> &$crate::Standard {
            &self.std
        }
        fn into_resource(self) -> $crate::Resource {
            $crate::Resource::$T(self)
        }
        fn table(cloud: &Cloud) -> &std::collections::HashMap<String, Self> {
            &cloud.$table
        }
        fn table_mut(cloud: &mut Cloud) -> &mut std::collections::HashMap<String, Self> {
            &mut cloud.$table
        }
    };
}
use stored;

pub struct Cloud {
    config: CloudConfig,
    rng: SplitMix64,
    networks: HashMap<String, Network>,
    subnets: HashMap<String, Subnet>,
    ports: HashMap<String, Port>,
    groups: HashMap<String, SecurityGroup>,
    rules: HashMap<String, SecurityGroupRule>,
    routers: HashMap<String, Router>,
    floating_ips: HashMap<String, FloatingIp>,
    quotas: HashMap<String, Quota>,
    subnet_pools: HashMap<String, SubnetPool>,
    default_rules: HashMap<String, DefaultSecurityGroupRule>,
    topologies: HashMap<String, AutoAllocatedTopology>,
    address_groups: HashMap<String, AddressGroup>,
    metering_labels: HashMap<String, MeteringLabel>,
    metering_rules: HashMap<String, MeteringLabelRule>,
    rbac_policies: HashMap<String, RbacPolicy>,
    // === indexes, maintained only by each record's `Record::index`/`unindex` ===
    network_subnets: HashMap<String, Vec<String>>,
    network_ports: HashMap<String, BTreeSet<String>>,
    network_macs: HashMap<String, HashMap<MacAddr, String>>,
    subnet_ips: HashMap<String, BTreeMap<IpAddr, String>>,
    /// Subnet pool → the subnets allocated from it.
    pool_subnets: HashMap<String, BTreeSet<String>>,
    /// IP version → the default subnet pool of that version (one at most).
    default_pools: BTreeMap<u8, String>,
    /// The default external network (auto-allocated-topology), if any.
    default_external: Option<String>,
    group_rules: HashMap<String, HashMap<RuleSignature, String>>,
    group_ports: HashMap<String, BTreeSet<String>>,
    /// Ports by `binding:host_id`, for an agent's status report.
    host_ports: HashMap<String, BTreeSet<String>>,
    remote_group_rules: HashMap<String, BTreeSet<String>>,
    /// Address group → the rules naming it as their remote.
    address_group_rules: HashMap<String, BTreeSet<String>>,
    default_groups: HashMap<String, String>,
    vnis: BTreeSet<u32>,
    /// Physical network → the flat network on it (one each, as in Neutron).
    flat_networks: HashMap<String, String>,
    /// Ports by `device_id`, of the `network:router_*` owners: a router's
    /// interfaces and gateway.
    router_ports: HashMap<String, BTreeSet<String>>,
    /// Subnet → the routers with an interface on it.
    subnet_routers: HashMap<String, BTreeSet<String>>,
    /// Port → floating IPs reaching it (associated or forwarding to it).
    port_fips: HashMap<String, BTreeSet<String>>,
    /// Router → floating IPs reached through it.
    router_fips: HashMap<String, BTreeSet<String>>,
    /// Metering label → its rules.
    label_rules: HashMap<String, BTreeSet<String>>,
    /// Object id → what its RBAC policies grant, to whom (the policy's id).
    object_grants: HashMap<String, BTreeMap<rbac::Grant, String>>,
    /// How many of each quota-limited kind a project owns.
    usage: HashMap<(String, Kind), usize>,
    /// What lists filter by: each kind's facets, value → ids in id order.
    facets: facets::Facets,
    // === what agents report: volatile, rebuilt from their next reports ===
    /// Router interface → the hosts that report it realised (a distributed
    /// port is ACTIVE while any host has it).
    realised_on: HashMap<String, BTreeSet<String>>,
    /// Host → the router interfaces it reported realised.
    host_realised: HashMap<String, BTreeSet<String>>,
    // === allocation hints: not state, never persisted ===
    subnet_cursor: HashMap<String, IpAddr>,
    vni_cursor: u32,
    /// Before-images of what the running operation wrote, oldest first.
    journal: Vec<(Kind, String, Option<Resource>)>,
}

fn key_of(kind: Kind, id: &str) -> (Kind, String) {
    (kind, id.to_owned())
}

impl Cloud {
    pub fn new(config: CloudConfig) -> Self {
        Cloud {
            rng: SplitMix64::new(config.seed),
            vni_cursor: config.vni_range.0,
            config,
            networks: HashMap::new(),
            subnets: HashMap::new(),
            ports: HashMap::new(),
            groups: HashMap::new(),
            rules: HashMap::new(),
            routers: HashMap::new(),
            floating_ips: HashMap::new(),
            quotas: HashMap::new(),
            subnet_pools: HashMap::new(),
            default_rules: HashMap::new(),
            topologies: HashMap::new(),
            address_groups: HashMap::new(),
            metering_labels: HashMap::new(),
            metering_rules: HashMap::new(),
            label_rules: HashMap::new(),
            rbac_policies: HashMap::new(),
            network_subnets: HashMap::new(),
            network_ports: HashMap::new(),
            network_macs: HashMap::new(),
            subnet_ips: HashMap::new(),
            pool_subnets: HashMap::new(),
            default_pools: BTreeMap::new(),
            default_external: None,
            group_rules: HashMap::new(),
            group_ports: HashMap::new(),
            host_ports: HashMap::new(),
            realised_on: HashMap::new(),
            host_realised: HashMap::new(),
            remote_group_rules: HashMap::new(),
            address_group_rules: HashMap::new(),
            default_groups: HashMap::new(),
            vnis: BTreeSet::new(),
            flat_networks: HashMap::new(),
            router_ports: HashMap::new(),
            subnet_routers: HashMap::new(),
            port_fips: HashMap::new(),
            router_fips: HashMap::new(),
            object_grants: HashMap::new(),
            usage: HashMap::new(),
            facets: facets::Facets::default(),
            subnet_cursor: HashMap::new(),
            journal: Vec::new(),
        }
    }

    /// Rebuild from persisted resources (in any order).
    pub fn load(config: CloudConfig, resources: impl IntoIterator<Item = Resource>) -> Self {
        let mut cloud = Cloud::new(config);
        for r in resources {
            cloud.raw_put(r);
        }
        // Subnets index in creation order, whatever order the store gave them.
        for ids in cloud.network_subnets.values_mut() {
            ids.sort_by_key(|id| {
                cloud
                    .subnets
                    .get(id)
                    .map(|s| (s.std.created_at, s.std.id.clone()))
            });
        }
        cloud
    }

    /// A replica's copy follows the writer's: the stored record of `kind`
    /// and `id` becomes `record` (`None`: it was deleted). No validation and
    /// no journal: the writer validated it, and the store holds it already.
    pub fn replicate(&mut self, kind: Kind, id: &str, record: Option<Resource>) {
        self.raw_remove(kind, id);
        if let Some(r) = record {
            self.raw_put(r);
        }
    }

    /// Run `op` atomically: on success return its value and the resources it
    /// wrote (one entry per key, final value); on failure undo everything it did.
    pub fn apply<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, ModelError>,
    ) -> Result<(T, Vec<Change>), ModelError> {
        // A journal left over means an earlier operation panicked half-way: undo
        // it, so a bug costs that one request and never leaves half a change.
        self.roll_back();
        match op(self) {
            Ok(value) => {
                let journal = std::mem::take(&mut self.journal);
                let mut seen = BTreeSet::new();
                let changes = journal
                    .into_iter()
                    .filter(|(kind, id, _)| seen.insert(key_of(*kind, id)))
                    .map(|(kind, id, _)| Change {
                        key: kind.key(&id),
                        value: self.get(kind, &id),
                    })
                    .collect();
                Ok((value, changes))
            }
            Err(e) => {
                self.roll_back();
                Err(e)
            }
        }
    }

    /// Records the operation in progress (inside [`Cloud::apply`]) has written so
    /// far, each counted once: the store writes it as that many keys.
    pub fn pending_changes(&self) -> usize {
        let mut seen = BTreeSet::new();
        self.journal
            .iter()
            .filter(|(kind, id, _)| seen.insert((*kind, id.as_str())))
            .count()
    }

    fn roll_back(&mut self) {
        while let Some((kind, id, before)) = self.journal.pop() {
            self.raw_remove(kind, &id);
            if let Some(r) = before {
                self.raw_put(r);
            }
        }
    }

    // === reads ===

    pub fn get(&self, kind: Kind, id: &str) -> Option<Resource> {
        with_kind!(kind, R => R::table(self).get(id).cloned().map(R::into_resource))
    }

    /// Whether `caller` may see `resource` at all (others get 404).
    pub fn can_see(&self, caller: &Caller, resource: &Resource) -> bool {
        with_record!(resource, r => r.visible_to(self, caller))
    }

    /// The resource if `caller` may see it, else `NotFound`.
    pub fn visible(&self, caller: &Caller, kind: Kind, id: &str) -> Result<Resource, ModelError> {
        with_kind!(kind, R => self.visible_as::<R>(caller, id).map(R::into_resource))
    }

    /// The resource if `caller` may change it: `NotFound` if they cannot see
    /// it, `Forbidden` if they see it (a shared network) but do not own it.
    pub fn writable(&self, caller: &Caller, kind: Kind, id: &str) -> Result<Resource, ModelError> {
        with_kind!(kind, R => self.writable_as::<R>(caller, id).map(R::into_resource))
    }

    pub(crate) fn visible_as<R: Record>(&self, caller: &Caller, id: &str) -> Result<R, ModelError> {
        R::table(self)
            .get(id)
            .filter(|r| r.visible_to(self, caller))
            .cloned()
            .ok_or_else(|| ModelError::not_found(R::KIND, id))
    }

    pub(crate) fn writable_as<R: Record>(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<R, ModelError> {
        let r = self.visible_as::<R>(caller, id)?;
        if !caller.owns(&r.standard().project_id) {
            return Err(ModelError::Forbidden(format!(
                "{} {id} is owned by another project",
                R::KIND.title()
            )));
        }
        Ok(r)
    }

    /// `If-Match: revision_number=N`: fail unless the resource is at
    /// revision N. Visibility first: a resource `caller` may not see is
    /// `NotFound`, so the check never tells of its existence or revision.
    pub fn check_revision(
        &self,
        caller: &Caller,
        kind: Kind,
        id: &str,
        expected: i64,
    ) -> Result<(), ModelError> {
        let current = self.visible(caller, kind, id)?.standard().revision_number;
        if i64::try_from(current) != Ok(expected) {
            return Err(ModelError::RevisionMismatch { expected, current });
        }
        Ok(())
    }

    // === the write primitives: every mutation goes through these two ===

    fn put(&mut self, resource: Resource) {
        let before = self.raw_remove(resource.kind(), resource.id());
        self.journal
            .push((resource.kind(), resource.id().to_owned(), before));
        self.raw_put(resource);
    }

    fn remove(&mut self, kind: Kind, id: &str) {
        if let Some(before) = self.raw_remove(kind, id) {
            self.journal.push((kind, id.to_owned(), Some(before)));
        }
    }

    fn raw_put(&mut self, resource: Resource) {
        with_record!(resource, r => self.insert(r));
    }

    fn raw_remove(&mut self, kind: Kind, id: &str) -> Option<Resource> {
        with_kind!(kind, R => self.take::<R>(id).map(R::into_resource))
    }

    /// The only place a record enters its table, with its index entries.
    fn insert<R: Record>(&mut self, record: R) {
        self.count(&record.standard().project_id, R::KIND, true);
        record.index(self);
        self.facets.add(&record);
        R::table_mut(self).insert(record.standard().id.clone(), record);
    }

    /// The only place a record leaves its table, with its index entries.
    fn take<R: Record>(&mut self, id: &str) -> Option<R> {
        let record = R::table_mut(self).remove(id)?;
        self.count(&record.standard().project_id, R::KIND, false);
        record.unindex(self);
        self.facets.remove(&record);
        Some(record)
    }

    /// Quota usage: how many of each limited kind a project owns.
    fn count(&mut self, project: &str, kind: Kind, added: bool) {
        if project.is_empty() || quota_name(kind).is_none() {
            return;
        }
        let key = (project.to_owned(), kind);
        let n = self.usage.entry(key.clone()).or_default();
        if added {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.usage.remove(&key);
            }
        }
    }

    // === shared helpers ===

    /// Bump a parent's revision when a child changes, as Neutron does (a
    /// network when its subnets change, a group when its rules change).
    fn touch(&mut self, kind: Kind, id: &str, now: Timestamp) {
        if let Some(mut parent) = self.get(kind, id) {
            parent.standard_mut().touch(now);
            self.put(parent);
        }
    }

    fn project_for(
        &self,
        caller: &Caller,
        requested: Option<String>,
    ) -> Result<String, ModelError> {
        match requested {
            Some(p) if p != caller.project_id && !caller.is_admin => {
                Err(ModelError::ForeignProject)
            }
            Some(p) if p.is_empty() => Err(ModelError::invalid("'project_id' must not be empty")),
            Some(p) => Ok(p),
            None => Ok(caller.project_id.clone()),
        }
    }

    fn standard(
        &mut self,
        project_id: String,
        name: Option<String>,
        description: Option<String>,
        tags: Option<Vec<String>>,
        now: Timestamp,
    ) -> Result<Standard, ModelError> {
        let mut std = Standard::new(self.rng.uuid(), project_id, now);
        std.name = name.unwrap_or_default();
        std.description = description.unwrap_or_default();
        std.tags = normalize_tags(tags.unwrap_or_default())?;
        Ok(std)
    }

    // === tags, on any resource ===

    /// Replace, add to, or remove from a resource's tags; returns the new tags.
    pub fn edit_tags(
        &mut self,
        caller: &Caller,
        kind: Kind,
        id: &str,
        edit: TagEdit,
        now: Timestamp,
    ) -> Result<Vec<String>, ModelError> {
        let mut r = self.writable(caller, kind, id)?;
        let std = r.standard_mut();
        let tags = match edit {
            TagEdit::Replace(tags) => normalize_tags(tags)?,
            TagEdit::Add(tag) => {
                let mut t = std.tags.clone();
                t.push(tag);
                normalize_tags(t)?
            }
            TagEdit::Remove(tag) => {
                if !std.tags.contains(&tag) {
                    return Err(ModelError::TagNotFound { tag });
                }
                std.tags.iter().filter(|t| **t != tag).cloned().collect()
            }
        };
        if tags != std.tags {
            std.tags = tags.clone();
            std.touch(now);
            self.put(r);
        }
        Ok(tags)
    }
}

/// A change to a resource's tags.
#[derive(Clone, Debug)]
pub enum TagEdit {
    Replace(Vec<String>),
    Add(String),
    Remove(String),
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn remove_from(index: &mut HashMap<String, BTreeSet<String>>, key: &str, member: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(member);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// How many tags one resource may carry. Neutron sets no count (only the
/// 255-character length); vnet bounds it as Nova bounds a server's tags, so
/// a caller cannot grow one record, and every view of it, without limit.
pub const MAX_TAGS: usize = 50;

fn normalize_tags(tags: Vec<String>) -> Result<Vec<String>, ModelError> {
    let mut out = BTreeSet::new();
    for tag in tags {
        if tag.is_empty() || tag.len() > 255 || tag.contains(',') {
            return Err(ModelError::invalid(format!(
                "'{tag}' is not a valid tag: 1 to 255 characters, no comma"
            )));
        }
        out.insert(tag);
    }
    if out.len() > MAX_TAGS {
        return Err(ModelError::invalid(format!(
            "The number of tags exceeds the per-resource limit of {MAX_TAGS}"
        )));
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests;
