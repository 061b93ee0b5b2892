//! [`Cloud`]: the whole logical topology in memory, with the indexes that make
//! every check O(1) or O(log n), and every tenant operation Neutron defines.
//! An operation runs inside [`Cloud::apply`]: it either succeeds and yields the
//! resources it wrote, or fails and leaves the cloud exactly as it was (an undo
//! journal, so even a bulk create of many resources is all-or-nothing).
//! Persisting the changes is the caller's job; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

mod l3;
mod quotas;

pub use quotas::SubnetAvailability;

use crate::ipam;
use crate::port::{AddressPairRequest, VNIC_TYPES};
use crate::quota::{Limits, Quota};
use crate::security_group::{self, RuleSignature};
use crate::subnet::{self};
use crate::{
    AddressPair, Direction, Ethertype, FixedIp, FixedIpRequest, FloatingIp, Kind, MacAddr,
    ModelError, Network, NetworkCreate, NetworkUpdate, OWNER_ROUTER_INTERFACE, Port, PortCreate,
    PortStatus, PortUpdate, Resource, Router, RuleCreate, SecurityGroup, SecurityGroupCreate,
    SecurityGroupRule, SecurityGroupUpdate, SplitMix64, Standard, Subnet, SubnetCreate,
    SubnetUpdate, Timestamp, default_limits, quota_name,
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
    // === indexes, maintained only by `index`/`unindex` ===
    network_subnets: HashMap<String, Vec<String>>,
    network_ports: HashMap<String, BTreeSet<String>>,
    network_macs: HashMap<String, HashMap<MacAddr, String>>,
    subnet_ips: HashMap<String, BTreeMap<IpAddr, String>>,
    group_rules: HashMap<String, HashMap<RuleSignature, String>>,
    group_ports: HashMap<String, BTreeSet<String>>,
    /// Ports by `binding:host_id`, for an agent's status report.
    host_ports: HashMap<String, BTreeSet<String>>,
    remote_group_rules: HashMap<String, BTreeSet<String>>,
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
    /// How many of each quota-limited kind a project owns.
    usage: HashMap<(String, Kind), usize>,
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

/// Neutron's limit on a physical network's name.
const MAX_PHYSICAL_NETWORK_LEN: usize = 64;

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
            network_subnets: HashMap::new(),
            network_ports: HashMap::new(),
            network_macs: HashMap::new(),
            subnet_ips: HashMap::new(),
            group_rules: HashMap::new(),
            group_ports: HashMap::new(),
            host_ports: HashMap::new(),
            realised_on: HashMap::new(),
            host_realised: HashMap::new(),
            remote_group_rules: HashMap::new(),
            default_groups: HashMap::new(),
            vnis: BTreeSet::new(),
            flat_networks: HashMap::new(),
            router_ports: HashMap::new(),
            subnet_routers: HashMap::new(),
            port_fips: HashMap::new(),
            router_fips: HashMap::new(),
            usage: HashMap::new(),
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
        match kind {
            Kind::Network => self.networks.get(id).cloned().map(Resource::Network),
            Kind::Subnet => self.subnets.get(id).cloned().map(Resource::Subnet),
            Kind::Port => self.ports.get(id).cloned().map(Resource::Port),
            Kind::SecurityGroup => self.groups.get(id).cloned().map(Resource::SecurityGroup),
            Kind::SecurityGroupRule => self.rules.get(id).cloned().map(Resource::SecurityGroupRule),
            Kind::Router => self.routers.get(id).cloned().map(Resource::Router),
            Kind::FloatingIp => self.floating_ips.get(id).cloned().map(Resource::FloatingIp),
            Kind::Quota => self.quotas.get(id).cloned().map(Resource::Quota),
        }
    }

    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values()
    }
    pub fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.values()
    }
    pub fn security_groups(&self) -> impl Iterator<Item = &SecurityGroup> {
        self.groups.values()
    }
    pub fn security_group_rules(&self) -> impl Iterator<Item = &SecurityGroupRule> {
        self.rules.values()
    }
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.get(id)
    }
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.get(id)
    }
    pub fn port(&self, id: &str) -> Option<&Port> {
        self.ports.get(id)
    }
    pub fn security_group(&self, id: &str) -> Option<&SecurityGroup> {
        self.groups.get(id)
    }
    pub fn security_group_rule(&self, id: &str) -> Option<&SecurityGroupRule> {
        self.rules.get(id)
    }

    /// Subnet ids of a network, in creation order.
    pub fn subnets_of(&self, network_id: &str) -> &[String] {
        self.network_subnets
            .get(network_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Rules of a group (unordered).
    pub fn rules_of(&self, group_id: &str) -> impl Iterator<Item = &SecurityGroupRule> {
        self.group_rules
            .get(group_id)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|id| self.rules.get(id))
    }

    /// The port of a network that holds `ip` as a fixed IP (one lookup per
    /// subnet of the network).
    pub fn port_with_ip(&self, network_id: &str, ip: IpAddr) -> Option<&Port> {
        self.subnets_of(network_id)
            .iter()
            .find_map(|s| self.subnet_ips.get(s)?.get(&ip))
            .and_then(|id| self.ports.get(id))
    }

    /// Number of addresses in use on a subnet.
    pub fn used_ips(&self, subnet_id: &str) -> usize {
        self.subnet_ips.get(subnet_id).map_or(0, BTreeMap::len)
    }

    pub fn default_group_of(&self, project_id: &str) -> Option<&str> {
        self.default_groups.get(project_id).map(String::as_str)
    }

    /// Whether `caller` may see `resource` at all (others get 404): their own,
    /// and shared networks with their subnets.
    pub fn can_see(&self, caller: &Caller, resource: &Resource) -> bool {
        match resource {
            Resource::Network(n) => self.can_see_network(caller, n),
            Resource::Subnet(s) => self.can_see_subnet(caller, s),
            other => caller.owns(&other.standard().project_id),
        }
    }

    /// Shared and external networks are everyone's to see (an external
    /// network is where floating IPs come from).
    pub fn can_see_network(&self, caller: &Caller, n: &Network) -> bool {
        caller.owns(&n.std.project_id) || n.shared || n.external
    }

    pub fn can_see_subnet(&self, caller: &Caller, s: &Subnet) -> bool {
        caller.owns(&s.std.project_id) || self.networks.get(&s.network_id).is_some_and(|n| n.shared)
    }

    /// The resource if `caller` may see it, else `NotFound`.
    pub fn visible(&self, caller: &Caller, kind: Kind, id: &str) -> Result<Resource, ModelError> {
        self.get(kind, id)
            .filter(|r| self.can_see(caller, r))
            .ok_or_else(|| ModelError::not_found(kind, id))
    }

    /// The resource if `caller` may change it: `NotFound` if they cannot see
    /// it, `Forbidden` if they see it (a shared network) but do not own it.
    pub fn writable(&self, caller: &Caller, kind: Kind, id: &str) -> Result<Resource, ModelError> {
        let r = self.visible(caller, kind, id)?;
        if !caller.owns(&r.standard().project_id) {
            return Err(ModelError::Forbidden(format!(
                "{} {id} is owned by another project",
                kind.title()
            )));
        }
        Ok(r)
    }

    /// `If-Match: revision_number=N`: fail unless the resource is at revision N.
    pub fn check_revision(&self, kind: Kind, id: &str, expected: u64) -> Result<(), ModelError> {
        if let Some(r) = self.get(kind, id) {
            let current = r.standard().revision_number;
            if current != expected {
                return Err(ModelError::RevisionMismatch { expected, current });
            }
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
        self.index(&resource);
        match resource {
            Resource::Network(r) => {
                self.networks.insert(r.std.id.clone(), r);
            }
            Resource::Subnet(r) => {
                self.subnets.insert(r.std.id.clone(), r);
            }
            Resource::Port(r) => {
                self.ports.insert(r.std.id.clone(), r);
            }
            Resource::SecurityGroup(r) => {
                self.groups.insert(r.std.id.clone(), r);
            }
            Resource::SecurityGroupRule(r) => {
                self.rules.insert(r.std.id.clone(), r);
            }
            Resource::Router(r) => {
                self.routers.insert(r.std.id.clone(), r);
            }
            Resource::FloatingIp(r) => {
                self.floating_ips.insert(r.std.id.clone(), r);
            }
            Resource::Quota(r) => {
                self.quotas.insert(r.std.id.clone(), r);
            }
        }
    }

    fn raw_remove(&mut self, kind: Kind, id: &str) -> Option<Resource> {
        let old = match kind {
            Kind::Network => self.networks.remove(id).map(Resource::Network),
            Kind::Subnet => self.subnets.remove(id).map(Resource::Subnet),
            Kind::Port => self.ports.remove(id).map(Resource::Port),
            Kind::SecurityGroup => self.groups.remove(id).map(Resource::SecurityGroup),
            Kind::SecurityGroupRule => self.rules.remove(id).map(Resource::SecurityGroupRule),
            Kind::Router => self.routers.remove(id).map(Resource::Router),
            Kind::FloatingIp => self.floating_ips.remove(id).map(Resource::FloatingIp),
            Kind::Quota => self.quotas.remove(id).map(Resource::Quota),
        };
        if let Some(r) = &old {
            self.unindex(r);
        }
        old
    }

    fn index(&mut self, resource: &Resource) {
        let project = &resource.standard().project_id;
        if !project.is_empty() && quota_name(resource.kind()).is_some() {
            *self
                .usage
                .entry((project.clone(), resource.kind()))
                .or_default() += 1;
        }
        match resource {
            Resource::Network(n) => match &n.physical_network {
                Some(physnet) => {
                    self.flat_networks.insert(physnet.clone(), n.std.id.clone());
                }
                None => {
                    self.vnis.insert(n.segmentation_id);
                }
            },
            Resource::Subnet(s) => {
                let ids = self
                    .network_subnets
                    .entry(s.network_id.clone())
                    .or_default();
                if !ids.contains(&s.std.id) {
                    ids.push(s.std.id.clone());
                }
                self.subnet_ips.entry(s.std.id.clone()).or_default();
            }
            Resource::Port(p) => {
                let id = &p.std.id;
                self.network_ports
                    .entry(p.network_id.clone())
                    .or_default()
                    .insert(id.clone());
                self.network_macs
                    .entry(p.network_id.clone())
                    .or_default()
                    .insert(p.mac_address, id.clone());
                for ip in &p.fixed_ips {
                    self.subnet_ips
                        .entry(ip.subnet_id.clone())
                        .or_default()
                        .insert(ip.ip_address, id.clone());
                }
                for g in &p.security_groups {
                    self.group_ports
                        .entry(g.clone())
                        .or_default()
                        .insert(id.clone());
                }
                if !p.binding_host_id.is_empty() {
                    self.host_ports
                        .entry(p.binding_host_id.clone())
                        .or_default()
                        .insert(id.clone());
                }
                if p.device_owner.starts_with("network:router_") && !p.device_id.is_empty() {
                    self.router_ports
                        .entry(p.device_id.clone())
                        .or_default()
                        .insert(id.clone());
                    if p.device_owner == OWNER_ROUTER_INTERFACE {
                        for ip in &p.fixed_ips {
                            self.subnet_routers
                                .entry(ip.subnet_id.clone())
                                .or_default()
                                .insert(p.device_id.clone());
                        }
                    }
                }
            }
            Resource::SecurityGroup(g) => {
                if g.is_default {
                    self.default_groups
                        .insert(g.std.project_id.clone(), g.std.id.clone());
                }
            }
            Resource::SecurityGroupRule(r) => {
                self.group_rules
                    .entry(r.security_group_id.clone())
                    .or_default()
                    .insert(r.signature(), r.std.id.clone());
                if let Some(remote) = &r.remote_group_id {
                    self.remote_group_rules
                        .entry(remote.clone())
                        .or_default()
                        .insert(r.std.id.clone());
                }
            }
            Resource::Router(_) | Resource::Quota(_) => {}
            Resource::FloatingIp(f) => {
                for (port, router) in f.targets() {
                    self.port_fips
                        .entry(port.to_owned())
                        .or_default()
                        .insert(f.std.id.clone());
                    self.router_fips
                        .entry(router.to_owned())
                        .or_default()
                        .insert(f.std.id.clone());
                }
            }
        }
    }

    fn unindex(&mut self, resource: &Resource) {
        let key = (resource.standard().project_id.clone(), resource.kind());
        if let Some(n) = self.usage.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.usage.remove(&key);
            }
        }
        match resource {
            Resource::Network(n) => match &n.physical_network {
                Some(physnet) => {
                    self.flat_networks.remove(physnet);
                }
                None => {
                    self.vnis.remove(&n.segmentation_id);
                }
            },
            Resource::Subnet(s) => {
                if let Some(ids) = self.network_subnets.get_mut(&s.network_id) {
                    ids.retain(|id| id != &s.std.id);
                    if ids.is_empty() {
                        self.network_subnets.remove(&s.network_id);
                    }
                }
                if self
                    .subnet_ips
                    .get(&s.std.id)
                    .is_some_and(BTreeMap::is_empty)
                {
                    self.subnet_ips.remove(&s.std.id);
                }
                self.subnet_cursor.remove(&s.std.id);
            }
            Resource::Port(p) => {
                let id = &p.std.id;
                remove_from(&mut self.network_ports, &p.network_id, id);
                if let Some(macs) = self.network_macs.get_mut(&p.network_id) {
                    if macs.get(&p.mac_address) == Some(id) {
                        macs.remove(&p.mac_address);
                    }
                    if macs.is_empty() {
                        self.network_macs.remove(&p.network_id);
                    }
                }
                for ip in &p.fixed_ips {
                    if let Some(ips) = self.subnet_ips.get_mut(&ip.subnet_id)
                        && ips.get(&ip.ip_address) == Some(id)
                    {
                        ips.remove(&ip.ip_address);
                    }
                }
                for g in &p.security_groups {
                    remove_from(&mut self.group_ports, g, id);
                }
                remove_from(&mut self.host_ports, &p.binding_host_id, id);
                if p.device_owner.starts_with("network:router_") {
                    remove_from(&mut self.router_ports, &p.device_id, id);
                    if p.device_owner == OWNER_ROUTER_INTERFACE {
                        for ip in &p.fixed_ips {
                            remove_from(&mut self.subnet_routers, &ip.subnet_id, &p.device_id);
                        }
                    }
                }
            }
            Resource::SecurityGroup(g) => {
                if g.is_default && self.default_groups.get(&g.std.project_id) == Some(&g.std.id) {
                    self.default_groups.remove(&g.std.project_id);
                }
            }
            Resource::SecurityGroupRule(r) => {
                if let Some(sigs) = self.group_rules.get_mut(&r.security_group_id) {
                    sigs.remove(&r.signature());
                    if sigs.is_empty() {
                        self.group_rules.remove(&r.security_group_id);
                    }
                }
                if let Some(remote) = &r.remote_group_id {
                    remove_from(&mut self.remote_group_rules, remote, &r.std.id);
                }
            }
            Resource::Router(_) | Resource::Quota(_) => {}
            Resource::FloatingIp(f) => {
                for (port, router) in f.targets() {
                    remove_from(&mut self.port_fips, port, &f.std.id);
                    remove_from(&mut self.router_fips, router, &f.std.id);
                }
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

    // === networks ===

    pub fn create_network(
        &mut self,
        caller: &Caller,
        req: NetworkCreate,
        now: Timestamp,
    ) -> Result<Network, ModelError> {
        let project_id = self.project_for(caller, req.project_id)?;
        self.check_quota(&project_id, Kind::Network)?;
        if req.shared == Some(true) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "Only an admin may create a shared network".into(),
            ));
        }
        if req.external == Some(true) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:create_network:router:external) is disallowed by policy".into(),
            ));
        }
        let provider_given = req.network_type.is_some()
            || req.segmentation_id.is_some()
            || req.physical_network.is_some();
        if provider_given && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "Only an admin may set provider attributes".into(),
            ));
        }
        let mtu = self.check_mtu(req.mtu)?;
        let (network_type, segmentation_id, physical_network) =
            self.provider_segment(req.network_type, req.segmentation_id, req.physical_network)?;
        self.ensure_default_group(&project_id, now);
        let network = Network {
            std: self.standard(project_id, req.name, req.description, req.tags, now)?,
            admin_state_up: req.admin_state_up.unwrap_or(true),
            mtu,
            shared: req.shared.unwrap_or(false),
            external: req.external.unwrap_or(false),
            port_security_enabled: req.port_security_enabled.unwrap_or(true),
            network_type,
            segmentation_id,
            physical_network,
            availability_zone_hints: req.availability_zone_hints.unwrap_or_default(),
        };
        self.put(Resource::Network(network.clone()));
        Ok(network)
    }

    /// The segment a create asks for, checked as Neutron's type drivers
    /// check it: `(network_type, segmentation_id, physical_network)`. A flat
    /// network names a physical network nobody else's flat network uses and
    /// no segmentation id; a VXLAN network names no physical network and gets
    /// a free VNI unless it asks for one.
    fn provider_segment(
        &mut self,
        network_type: Option<String>,
        segmentation_id: Option<u32>,
        physical_network: Option<String>,
    ) -> Result<(String, u32, Option<String>), ModelError> {
        let network_type = match network_type {
            Some(t) => t,
            None if segmentation_id.is_some() || physical_network.is_some() => {
                return Err(ModelError::invalid("network_type required"));
            }
            None => crate::VXLAN.to_owned(),
        };
        match network_type.as_str() {
            crate::FLAT => {
                if segmentation_id.is_some() {
                    return Err(ModelError::invalid(
                        "segmentation_id prohibited for flat provider network",
                    ));
                }
                let Some(physnet) = physical_network.filter(|p| !p.is_empty()) else {
                    return Err(ModelError::invalid(
                        "physical_network required for flat provider network",
                    ));
                };
                if physnet.len() > MAX_PHYSICAL_NETWORK_LEN {
                    return Err(ModelError::invalid(format!(
                        "'{physnet}' exceeds maximum length of {MAX_PHYSICAL_NETWORK_LEN}"
                    )));
                }
                if self.flat_networks.contains_key(&physnet) {
                    return Err(ModelError::FlatNetworkInUse {
                        physical_network: physnet,
                    });
                }
                Ok((network_type, 0, Some(physnet)))
            }
            crate::VXLAN => {
                if physical_network.is_some() {
                    return Err(ModelError::invalid(
                        "physical_network prohibited for vxlan provider network",
                    ));
                }
                let vni = match segmentation_id {
                    Some(vni) => {
                        if !(1..=0x00ff_ffff).contains(&vni) {
                            return Err(ModelError::invalid(format!(
                                "{vni} is not a valid VXLAN VNI (1 to 16777215)"
                            )));
                        }
                        if self.vnis.contains(&vni) {
                            return Err(ModelError::TunnelIdInUse { id: vni });
                        }
                        vni
                    }
                    None => self.allocate_vni()?,
                };
                Ok((network_type, vni, None))
            }
            other => Err(ModelError::invalid(format!(
                "network_type value '{other}' not supported"
            ))),
        }
    }

    fn check_mtu(&self, mtu: Option<u32>) -> Result<u32, ModelError> {
        let max = self.config.max_mtu;
        match mtu {
            None => Ok(max),
            Some(m) if m > max => Err(ModelError::invalid(format!(
                "Requested MTU is too big, maximum is {max}"
            ))),
            Some(m) if m < 68 => Err(ModelError::invalid(format!(
                "Requested MTU {m} is too small, minimum is 68"
            ))),
            Some(m) => Ok(m),
        }
    }

    fn allocate_vni(&mut self) -> Result<u32, ModelError> {
        let (lo, hi) = self.config.vni_range;
        let start = self.vni_cursor.clamp(lo, hi);
        let free = (start..=hi)
            .chain(lo..start)
            .find(|v| !self.vnis.contains(v))
            .ok_or(ModelError::NoNetworkAvailable)?;
        self.vni_cursor = free.saturating_add(1);
        Ok(free)
    }

    pub fn update_network(
        &mut self,
        caller: &Caller,
        id: &str,
        req: NetworkUpdate,
        now: Timestamp,
    ) -> Result<Network, ModelError> {
        let Resource::Network(mut n) = self.writable(caller, Kind::Network, id)? else {
            return Err(ModelError::not_found(Kind::Network, id));
        };
        if req.shared.is_some_and(|s| s != n.shared) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "Only an admin may change whether a network is shared".into(),
            ));
        }
        if req.external.is_some_and(|e| e != n.external) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:update_network:router:external) is disallowed by policy".into(),
            ));
        }
        if req.external == Some(false) && n.external {
            let gateways = self
                .network_ports
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|p| self.ports.get(p))
                .any(|p| l3::is_l3_owner(&p.device_owner));
            if gateways {
                return Err(ModelError::ExternalNetworkInUse { id: id.to_owned() });
            }
        }
        if req.shared == Some(false) && n.shared {
            let foreign = self
                .network_ports
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|p| self.ports.get(p))
                .any(|p| p.std.project_id != n.std.project_id);
            if foreign {
                return Err(ModelError::invalid(format!(
                    "Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it"
                )));
            }
        }
        if let Some(mtu) = req.mtu {
            n.mtu = self.check_mtu(Some(mtu))?;
        }
        set(&mut n.std.name, req.name);
        set(&mut n.std.description, req.description);
        set(&mut n.admin_state_up, req.admin_state_up);
        set(&mut n.shared, req.shared);
        set(&mut n.external, req.external);
        set(&mut n.port_security_enabled, req.port_security_enabled);
        n.std.touch(now);
        self.put(Resource::Network(n.clone()));
        Ok(n)
    }

    pub fn delete_network(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        self.writable(caller, Kind::Network, id)?;
        if let Some(ports) = self.network_ports.get(id).filter(|p| !p.is_empty()) {
            return Err(ModelError::NetworkInUse {
                id: id.to_owned(),
                ports: ports.iter().cloned().collect(),
            });
        }
        for subnet in self.subnets_of(id).to_vec() {
            self.remove(Kind::Subnet, &subnet);
        }
        self.remove(Kind::Network, id);
        Ok(())
    }

    // === subnets ===

    pub fn create_subnet(
        &mut self,
        caller: &Caller,
        req: SubnetCreate,
        now: Timestamp,
    ) -> Result<Subnet, ModelError> {
        let Resource::Network(network) = self.writable(caller, Kind::Network, &req.network_id)?
        else {
            return Err(ModelError::not_found(Kind::Network, &req.network_id));
        };
        let project_id = self.project_for(caller, req.project_id.clone())?;
        self.check_quota(&project_id, Kind::Subnet)?;
        if req.ip_version != 4 && req.ip_version != 6 {
            return Err(ModelError::invalid(format!(
                "{} is not in [4, 6]",
                req.ip_version
            )));
        }
        let cidr = subnet::parse_cidr(&req.cidr, req.ip_version)?;
        subnet::check_ipv6_modes(
            req.ip_version,
            &cidr,
            req.ipv6_ra_mode,
            req.ipv6_address_mode,
        )?;
        if let Some(other) = self
            .subnets_of(&network.std.id)
            .iter()
            .filter_map(|s| self.subnets.get(s))
            .find(|s| s.cidr.contains(&cidr.network()) || cidr.contains(&s.cidr.network()))
        {
            return Err(ModelError::invalid(format!(
                "Requested subnet with cidr: {cidr} for network: {} overlaps with another subnet {}",
                network.std.id, other.std.id
            )));
        }
        let gateway_ip = match req.gateway_ip {
            Some(given) => given,
            // With router advertisements the subnet-router anycast address is the
            // gateway, as Neutron answers; otherwise the first host address.
            None if req.ipv6_ra_mode.is_some() => Some(cidr.network()),
            None => cidr.hosts().next(),
        };
        if let Some(gw) = gateway_ip {
            subnet::check_gateway(&cidr, gw)?;
        }
        let allocation_pools = match req.allocation_pools {
            Some(pools) => {
                subnet::check_pools(&cidr, gateway_ip, &pools)?;
                pools
            }
            None => ipam::default_pools(&cidr, gateway_ip),
        };
        let dns_nameservers = req.dns_nameservers.unwrap_or_default();
        subnet::check_nameservers(req.ip_version, &dns_nameservers)?;
        let host_routes = req.host_routes.unwrap_or_default();
        subnet::check_host_routes(req.ip_version, &host_routes)?;
        self.ensure_default_group(&project_id, now);
        let subnet = Subnet {
            std: self.standard(project_id, req.name, req.description, req.tags, now)?,
            network_id: network.std.id.clone(),
            ip_version: req.ip_version,
            cidr,
            gateway_ip,
            allocation_pools,
            dns_nameservers,
            host_routes,
            enable_dhcp: req.enable_dhcp.unwrap_or(true),
            ipv6_ra_mode: req.ipv6_ra_mode,
            ipv6_address_mode: req.ipv6_address_mode,
        };
        self.put(Resource::Subnet(subnet.clone()));
        self.touch(Kind::Network, &subnet.network_id, now);
        if subnet.is_auto_address() {
            // Neutron gives every port already on the network its address here.
            let ports: Vec<String> = self
                .network_ports
                .get(&network.std.id)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for port_id in ports {
                if let Some(mut port) = self.ports.get(&port_id).cloned()
                    && let Some(ip) = ipam::eui64(&subnet.cidr, port.mac_address)
                {
                    port.fixed_ips.push(FixedIp {
                        subnet_id: subnet.std.id.clone(),
                        ip_address: ip,
                    });
                    port.std.touch(now);
                    self.put(Resource::Port(port));
                }
            }
        }
        Ok(subnet)
    }

    pub fn update_subnet(
        &mut self,
        caller: &Caller,
        id: &str,
        req: SubnetUpdate,
        now: Timestamp,
    ) -> Result<Subnet, ModelError> {
        let Resource::Subnet(mut s) = self.writable(caller, Kind::Subnet, id)? else {
            return Err(ModelError::not_found(Kind::Subnet, id));
        };
        if let Some(gateway) = req.gateway_ip {
            if let Some(gw) = gateway {
                subnet::check_gateway(&s.cidr, gw)?;
            }
            s.gateway_ip = gateway;
        }
        if let Some(pools) = req.allocation_pools {
            s.allocation_pools = pools;
        }
        subnet::check_pools(&s.cidr, s.gateway_ip, &s.allocation_pools)?;
        if let Some(servers) = req.dns_nameservers {
            subnet::check_nameservers(s.ip_version, &servers)?;
            s.dns_nameservers = servers;
        }
        if let Some(routes) = req.host_routes {
            subnet::check_host_routes(s.ip_version, &routes)?;
            s.host_routes = routes;
        }
        set(&mut s.std.name, req.name);
        set(&mut s.std.description, req.description);
        set(&mut s.enable_dhcp, req.enable_dhcp);
        s.std.touch(now);
        self.put(Resource::Subnet(s.clone()));
        Ok(s)
    }

    pub fn delete_subnet(
        &mut self,
        caller: &Caller,
        id: &str,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let Resource::Subnet(s) = self.writable(caller, Kind::Subnet, id)? else {
            return Err(ModelError::not_found(Kind::Subnet, id));
        };
        let holders: BTreeSet<String> = self
            .subnet_ips
            .get(id)
            .into_iter()
            .flat_map(|m| m.values().cloned())
            .collect();
        if !holders.is_empty() && !s.is_auto_address() {
            return Err(ModelError::SubnetInUse { id: id.to_owned() });
        }
        // Automatic addresses go with their subnet, as in Neutron.
        for port_id in holders {
            if let Some(mut port) = self.ports.get(&port_id).cloned() {
                port.fixed_ips.retain(|ip| ip.subnet_id != id);
                port.std.touch(now);
                self.put(Resource::Port(port));
            }
        }
        self.remove(Kind::Subnet, id);
        self.touch(Kind::Network, &s.network_id, now);
        Ok(())
    }

    // === ports ===

    pub fn create_port(
        &mut self,
        caller: &Caller,
        req: PortCreate,
        now: Timestamp,
    ) -> Result<Port, ModelError> {
        let Resource::Network(network) = self.visible(caller, Kind::Network, &req.network_id)?
        else {
            return Err(ModelError::not_found(Kind::Network, &req.network_id));
        };
        let project_id = self.project_for(caller, req.project_id.clone())?;
        self.check_quota(&project_id, Kind::Port)?;
        let a = req.attributes;
        check_binding_admin(caller, &a, "create")?;
        let network_id = network.std.id.clone();
        let mac_address = match a.mac_address {
            Some(mac) => {
                self.check_mac(&network_id, mac, None)?;
                mac
            }
            None => self.generate_mac(&network_id)?,
        };
        let port_security_enabled = a
            .port_security_enabled
            .unwrap_or(network.port_security_enabled);
        let device_owner = a.device_owner.unwrap_or_default();
        self.ensure_default_group(&project_id, now);
        let security_groups = match a.security_groups {
            Some(groups) => self.check_groups(&project_id, groups)?,
            None if port_security_enabled && !device_owner.starts_with("network:") => self
                .default_groups
                .get(&project_id)
                .cloned()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        if !port_security_enabled && !security_groups.is_empty() {
            return Err(ModelError::PortSecurityAndIPRequiredForSecurityGroups);
        }
        let allowed_address_pairs =
            address_pairs(a.allowed_address_pairs.unwrap_or_default(), mac_address)?;
        if !port_security_enabled && !allowed_address_pairs.is_empty() {
            return Err(ModelError::AddressPairAndPortSecurityRequired);
        }
        let fixed_ips =
            self.plan_fixed_ips(&network_id, None, mac_address, a.fixed_ips.as_deref())?;
        let binding_vnic_type = check_vnic_type(a.binding_vnic_type)?;
        let port = Port {
            std: self.standard(project_id, a.name, a.description, req.tags, now)?,
            network_id,
            mac_address,
            admin_state_up: a.admin_state_up.unwrap_or(true),
            status: PortStatus::Down,
            device_id: a.device_id.unwrap_or_default(),
            device_owner,
            fixed_ips,
            security_groups,
            port_security_enabled,
            allowed_address_pairs,
            extra_dhcp_opts: a.extra_dhcp_opts.unwrap_or_default(),
            binding_host_id: a.binding_host_id.unwrap_or_default(),
            binding_vnic_type,
            binding_profile: a.binding_profile.unwrap_or_else(|| "{}".into()),
        };
        self.put(Resource::Port(port.clone()));
        Ok(port)
    }

    pub fn update_port(
        &mut self,
        caller: &Caller,
        id: &str,
        req: PortUpdate,
        now: Timestamp,
    ) -> Result<Port, ModelError> {
        let Resource::Port(mut p) = self.writable(caller, Kind::Port, id)? else {
            return Err(ModelError::not_found(Kind::Port, id));
        };
        check_binding_admin(caller, &req, "update")?;
        if let Some(mac) = req.mac_address.filter(|m| *m != p.mac_address) {
            if !p.binding_host_id.is_empty() {
                return Err(ModelError::PortBound {
                    id: id.to_owned(),
                    vif_type: "bridge".into(),
                    old_mac: p.mac_address.to_string(),
                    new_mac: mac.to_string(),
                });
            }
            self.check_mac(&p.network_id, mac, Some(id))?;
            p.mac_address = mac;
            // Automatic (EUI-64) addresses follow the MAC.
            for ip in &mut p.fixed_ips {
                if let Some(s) = self
                    .subnets
                    .get(&ip.subnet_id)
                    .filter(|s| s.is_auto_address())
                    && let Some(addr) = ipam::eui64(&s.cidr, mac)
                {
                    ip.ip_address = addr;
                }
            }
        }
        if let Some(requests) = req.fixed_ips {
            p.fixed_ips =
                self.plan_fixed_ips(&p.network_id, Some(id), p.mac_address, Some(&requests))?;
        }
        if let Some(groups) = req.security_groups {
            p.security_groups = self.check_groups(&p.std.project_id, groups)?;
        }
        set(&mut p.port_security_enabled, req.port_security_enabled);
        if let Some(pairs) = req.allowed_address_pairs {
            p.allowed_address_pairs = address_pairs(pairs, p.mac_address)?;
        }
        if !p.port_security_enabled {
            if !p.security_groups.is_empty() {
                return Err(ModelError::PortSecurityPortHasSecurityGroup);
            }
            if !p.allowed_address_pairs.is_empty() {
                return Err(ModelError::AddressPairAndPortSecurityRequired);
            }
        }
        if req.binding_vnic_type.is_some() {
            p.binding_vnic_type = check_vnic_type(req.binding_vnic_type)?;
        }
        set(&mut p.std.name, req.name);
        set(&mut p.std.description, req.description);
        set(&mut p.admin_state_up, req.admin_state_up);
        set(&mut p.device_id, req.device_id);
        set(&mut p.device_owner, req.device_owner);
        set(&mut p.extra_dhcp_opts, req.extra_dhcp_opts);
        if let Some(host) = req.binding_host_id.filter(|h| *h != p.binding_host_id) {
            // A port on a new host is not wired there until its agent says so.
            p.binding_host_id = host;
            p.status = PortStatus::Down;
        }
        set(&mut p.binding_profile, req.binding_profile);
        p.std.touch(now);
        self.put(Resource::Port(p.clone()));
        Ok(p)
    }

    pub fn delete_port(
        &mut self,
        caller: &Caller,
        id: &str,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let Resource::Port(port) = self.writable(caller, Kind::Port, id)? else {
            return Err(ModelError::not_found(Kind::Port, id));
        };
        if l3::is_l3_owner(&port.device_owner) {
            return Err(ModelError::L3PortInUse {
                port_id: id.to_owned(),
                device_owner: port.device_owner,
            });
        }
        self.release_floating_ips(id, now);
        self.remove(Kind::Port, id);
        Ok(())
    }

    fn check_mac(
        &self,
        network_id: &str,
        mac: MacAddr,
        port: Option<&str>,
    ) -> Result<(), ModelError> {
        if !mac.is_valid_port_mac() {
            return Err(ModelError::invalid(format!(
                "'{mac}' is not a valid MAC address"
            )));
        }
        let holder = self.network_macs.get(network_id).and_then(|m| m.get(&mac));
        if holder.is_some_and(|h| Some(h.as_str()) != port) {
            return Err(ModelError::MacAddressInUse {
                network_id: network_id.to_owned(),
                mac: mac.to_string(),
            });
        }
        Ok(())
    }

    fn generate_mac(&mut self, network_id: &str) -> Result<MacAddr, ModelError> {
        let [a, b, c] = self.config.mac_base;
        for _ in 0..16 {
            let r = self.rng.next_u64().to_le_bytes();
            let mac = MacAddr([a, b, c, r[0], r[1], r[2]]);
            if self.check_mac(network_id, mac, None).is_ok() {
                return Ok(mac);
            }
        }
        Err(ModelError::MacAddressGenerationFailure {
            network_id: network_id.to_owned(),
        })
    }

    /// Groups named for a port of `project_id`: they must exist and belong to it.
    fn check_groups(
        &self,
        project_id: &str,
        groups: Vec<String>,
    ) -> Result<Vec<String>, ModelError> {
        let mut out: Vec<String> = Vec::with_capacity(groups.len());
        for g in groups {
            match self.groups.get(&g) {
                Some(group) if group.std.project_id == project_id => {}
                _ => return Err(ModelError::not_found(Kind::SecurityGroup, &g)),
            }
            if !out.contains(&g) {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Decide a port's fixed IPs. `port` is the port being updated, whose own
    /// addresses do not count as taken. Nothing is recorded until the port is put.
    fn plan_fixed_ips(
        &mut self,
        network_id: &str,
        port: Option<&str>,
        mac: MacAddr,
        requests: Option<&[FixedIpRequest]>,
    ) -> Result<Vec<FixedIp>, ModelError> {
        let subnets: Vec<Subnet> = self
            .subnets_of(network_id)
            .iter()
            .filter_map(|id| self.subnets.get(id).cloned())
            .collect();
        let mut out: Vec<FixedIp> = Vec::new();
        match requests {
            None => {
                // One address of each family from the first subnet with room.
                for version in [4, 6] {
                    let candidates: Vec<&Subnet> = subnets
                        .iter()
                        .filter(|s| s.ip_version == version && !s.is_auto_address())
                        .collect();
                    if candidates.is_empty() {
                        continue;
                    }
                    let found = candidates
                        .iter()
                        .find_map(|s| self.free_ip(s, &out).map(|ip| (s.std.id.clone(), ip)));
                    let Some((subnet_id, ip)) = found else {
                        return Err(ModelError::IpAddressGenerationFailure {
                            network_id: network_id.to_owned(),
                        });
                    };
                    self.subnet_cursor.insert(subnet_id.clone(), ip);
                    out.push(FixedIp {
                        subnet_id,
                        ip_address: ip,
                    });
                }
            }
            Some(requests) => {
                for req in requests {
                    let subnet = match (&req.subnet_id, req.ip_address) {
                        (Some(sid), _) => subnets.iter().find(|s| &s.std.id == sid).ok_or_else(|| {
                            ModelError::invalid(format!(
                                "Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}"
                            ))
                        })?,
                        (None, Some(ip)) => subnets
                            .iter()
                            .find(|s| s.cidr.contains(&ip))
                            .ok_or(ModelError::InvalidIpForNetwork { ip: ip.to_string() })?,
                        (None, None) => {
                            return Err(ModelError::invalid(
                                "Each fixed_ips entry needs a subnet_id or an ip_address",
                            ));
                        }
                    };
                    let sid = subnet.std.id.clone();
                    let ip = if subnet.is_auto_address() {
                        let eui = ipam::eui64(&subnet.cidr, mac);
                        match (req.ip_address, eui) {
                            (Some(ip), Some(eui)) if ip != eui => {
                                return Err(ModelError::invalid(format!(
                                    "IPv6 address {ip} cannot be directly assigned to a port on subnet {sid} as the subnet is configured for automatic addresses"
                                )));
                            }
                            (_, Some(eui)) => eui,
                            (_, None) => continue,
                        }
                    } else if let Some(ip) = req.ip_address {
                        if !ipam::is_assignable(&subnet.cidr, ip) {
                            return Err(ModelError::InvalidIpForSubnet { ip: ip.to_string() });
                        }
                        ip
                    } else {
                        let ip = self.free_ip(subnet, &out).ok_or_else(|| {
                            ModelError::IpAddressGenerationFailure {
                                network_id: network_id.to_owned(),
                            }
                        })?;
                        self.subnet_cursor.insert(sid.clone(), ip);
                        ip
                    };
                    let taken_by_other = self
                        .subnet_ips
                        .get(&sid)
                        .and_then(|m| m.get(&ip))
                        .is_some_and(|holder| Some(holder.as_str()) != port);
                    if taken_by_other || out.iter().any(|f| f.ip_address == ip) {
                        return Err(ModelError::IpAddressAlreadyAllocated {
                            ip: ip.to_string(),
                            subnet_id: sid,
                        });
                    }
                    out.push(FixedIp {
                        subnet_id: sid,
                        ip_address: ip,
                    });
                }
            }
        }
        // Automatic-address subnets always give the port its EUI-64 address.
        for s in subnets.iter().filter(|s| s.is_auto_address()) {
            if !out.iter().any(|f| f.subnet_id == s.std.id)
                && let Some(ip) = ipam::eui64(&s.cidr, mac)
            {
                out.push(FixedIp {
                    subnet_id: s.std.id.clone(),
                    ip_address: ip,
                });
            }
        }
        Ok(out)
    }

    /// A free pool address of `subnet`, not already picked in `picked`.
    /// Addresses an updated port already holds count as taken: a request that
    /// keeps one names it explicitly.
    fn free_ip(&self, subnet: &Subnet, picked: &[FixedIp]) -> Option<IpAddr> {
        let empty = BTreeMap::new();
        let allocated = self.subnet_ips.get(&subnet.std.id).unwrap_or(&empty);
        let mut cursor = self.subnet_cursor.get(&subnet.std.id).copied();
        for _ in 0..=picked.len() {
            let ip = ipam::next_free(&subnet.allocation_pools, allocated, cursor)?;
            if !picked.iter().any(|f| f.ip_address == ip) {
                return Some(ip);
            }
            cursor = Some(next_addr(ip));
        }
        None
    }

    /// An agent's report: of the ports bound to `host`, those in `wired` are
    /// ACTIVE and the others DOWN (a dead host's agent wires nothing). Router
    /// interfaces are realised on many hosts: one is ACTIVE while any host
    /// reports it wired. Only ports whose status changes are written.
    /// Returns how many changed.
    pub fn report_port_status(
        &mut self,
        host: &str,
        wired: &BTreeSet<String>,
        now: Timestamp,
    ) -> usize {
        let bound: Vec<String> = self
            .host_ports
            .get(host)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let mut changed = 0;
        for id in bound {
            let status = if wired.contains(&id) {
                PortStatus::Active
            } else {
                PortStatus::Down
            };
            changed += usize::from(self.set_port_status(&id, status, now));
        }
        changed + self.report_realised(host, wired, now)
    }

    /// The side of [`Cloud::report_port_status`] for the ports routers and
    /// floating IPs own: realised on any number of hosts, ACTIVE while one
    /// reports them.
    fn report_realised(&mut self, host: &str, wired: &BTreeSet<String>, now: Timestamp) -> usize {
        let here: BTreeSet<String> = wired
            .iter()
            .filter(|id| {
                self.ports.get(*id).is_some_and(|p| {
                    l3::is_l3_owner(&p.device_owner) && p.binding_host_id.is_empty()
                })
            })
            .cloned()
            .collect();
        let before = self.host_realised.remove(host).unwrap_or_default();
        for id in before.difference(&here) {
            if let Some(hosts) = self.realised_on.get_mut(id) {
                hosts.remove(host);
                if hosts.is_empty() {
                    self.realised_on.remove(id);
                }
            }
        }
        for id in &here {
            self.realised_on
                .entry(id.clone())
                .or_default()
                .insert(host.to_owned());
        }
        let mut changed = 0;
        for id in before.union(&here) {
            let status = if self.realised_on.contains_key(id) {
                PortStatus::Active
            } else {
                PortStatus::Down
            };
            changed += usize::from(self.set_port_status(id, status, now));
        }
        if !here.is_empty() {
            self.host_realised.insert(host.to_owned(), here);
        }
        changed
    }

    /// Writes a port's status if it differs; whether it did.
    fn set_port_status(&mut self, id: &str, status: PortStatus, now: Timestamp) -> bool {
        match self.ports.get(id).cloned() {
            Some(mut port) if port.status != status => {
                port.status = status;
                port.std.touch(now);
                self.put(Resource::Port(port));
                true
            }
            _ => false,
        }
    }

    // === security groups ===

    /// Give `project_id` its `default` group (Neutron does it on first use).
    pub fn ensure_default_group(&mut self, project_id: &str, now: Timestamp) {
        if self.default_groups.contains_key(project_id) {
            return;
        }
        let mut std = Standard::new(self.rng.uuid(), project_id.to_owned(), now);
        std.name = "default".into();
        std.description = "Default security group".into();
        let group = SecurityGroup {
            std,
            stateful: true,
            is_default: true,
        };
        let id = group.std.id.clone();
        self.put(Resource::SecurityGroup(group));
        for ethertype in [Ethertype::IPv4, Ethertype::IPv6] {
            self.put_rule(project_id, &id, Direction::Egress, ethertype, None, now);
            self.put_rule(
                project_id,
                &id,
                Direction::Ingress,
                ethertype,
                Some(id.clone()),
                now,
            );
        }
    }

    fn put_rule(
        &mut self,
        project_id: &str,
        group_id: &str,
        direction: Direction,
        ethertype: Ethertype,
        remote_group_id: Option<String>,
        now: Timestamp,
    ) {
        let rule = SecurityGroupRule {
            std: Standard::new(self.rng.uuid(), project_id.to_owned(), now),
            security_group_id: group_id.to_owned(),
            direction,
            ethertype,
            protocol: None,
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id,
        };
        self.put(Resource::SecurityGroupRule(rule));
    }

    pub fn create_security_group(
        &mut self,
        caller: &Caller,
        req: SecurityGroupCreate,
        now: Timestamp,
    ) -> Result<SecurityGroup, ModelError> {
        let project_id = self.project_for(caller, req.project_id)?;
        self.ensure_default_group(&project_id, now);
        self.check_quota(&project_id, Kind::SecurityGroup)?;
        if req.name.as_deref() == Some("default") {
            return Err(ModelError::SecurityGroupDefaultAlreadyExists);
        }
        let group = SecurityGroup {
            std: self.standard(project_id.clone(), req.name, req.description, req.tags, now)?,
            stateful: req.stateful.unwrap_or(true),
            is_default: false,
        };
        self.put(Resource::SecurityGroup(group.clone()));
        for ethertype in [Ethertype::IPv4, Ethertype::IPv6] {
            self.put_rule(
                &project_id,
                &group.std.id,
                Direction::Egress,
                ethertype,
                None,
                now,
            );
        }
        Ok(group)
    }

    pub fn update_security_group(
        &mut self,
        caller: &Caller,
        id: &str,
        req: SecurityGroupUpdate,
        now: Timestamp,
    ) -> Result<SecurityGroup, ModelError> {
        let Resource::SecurityGroup(mut g) = self.writable(caller, Kind::SecurityGroup, id)? else {
            return Err(ModelError::not_found(Kind::SecurityGroup, id));
        };
        if g.is_default && req.name.as_deref().is_some_and(|n| n != "default") {
            return Err(ModelError::SecurityGroupCannotUpdateDefault);
        }
        if !g.is_default && req.name.as_deref() == Some("default") {
            return Err(ModelError::SecurityGroupDefaultAlreadyExists);
        }
        if req.stateful.is_some_and(|s| s != g.stateful)
            && self.group_ports.get(id).is_some_and(|p| !p.is_empty())
        {
            return Err(ModelError::SecurityGroupInUse { id: id.to_owned() });
        }
        set(&mut g.std.name, req.name);
        set(&mut g.std.description, req.description);
        set(&mut g.stateful, req.stateful);
        g.std.touch(now);
        self.put(Resource::SecurityGroup(g.clone()));
        Ok(g)
    }

    pub fn delete_security_group(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        let Resource::SecurityGroup(g) = self.writable(caller, Kind::SecurityGroup, id)? else {
            return Err(ModelError::not_found(Kind::SecurityGroup, id));
        };
        if g.is_default && !caller.is_admin {
            return Err(ModelError::SecurityGroupCannotRemoveDefault);
        }
        if self.group_ports.get(id).is_some_and(|p| !p.is_empty()) {
            return Err(ModelError::SecurityGroupInUse { id: id.to_owned() });
        }
        let own: Vec<String> = self
            .group_rules
            .get(id)
            .into_iter()
            .flat_map(|m| m.values().cloned())
            .collect();
        let referencing: Vec<String> = self
            .remote_group_rules
            .get(id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for rule in own.into_iter().chain(referencing) {
            self.remove(Kind::SecurityGroupRule, &rule);
        }
        self.remove(Kind::SecurityGroup, id);
        Ok(())
    }

    pub fn create_security_group_rule(
        &mut self,
        caller: &Caller,
        req: RuleCreate,
        now: Timestamp,
    ) -> Result<SecurityGroupRule, ModelError> {
        let Resource::SecurityGroup(group) =
            self.writable(caller, Kind::SecurityGroup, &req.security_group_id)?
        else {
            return Err(ModelError::not_found(
                Kind::SecurityGroup,
                &req.security_group_id,
            ));
        };
        self.project_for(caller, req.project_id.clone())?;
        let description = req.description.clone();
        self.check_quota(&group.std.project_id, Kind::SecurityGroupRule)?;
        let std = self.standard(group.std.project_id.clone(), None, description, None, now)?;
        let rule = security_group::build_rule(std, &group.std.id, req)?;
        if let Some(remote) = &rule.remote_group_id {
            self.visible(caller, Kind::SecurityGroup, remote)?;
        }
        if let Some(existing) = self
            .group_rules
            .get(&group.std.id)
            .and_then(|m| m.get(&rule.signature()))
        {
            return Err(ModelError::SecurityGroupRuleExists {
                id: existing.clone(),
            });
        }
        self.put(Resource::SecurityGroupRule(rule.clone()));
        self.touch(Kind::SecurityGroup, &rule.security_group_id, now);
        Ok(rule)
    }

    pub fn update_security_group_rule(
        &mut self,
        caller: &Caller,
        id: &str,
        description: Option<String>,
        now: Timestamp,
    ) -> Result<SecurityGroupRule, ModelError> {
        let Resource::SecurityGroupRule(mut r) =
            self.writable(caller, Kind::SecurityGroupRule, id)?
        else {
            return Err(ModelError::not_found(Kind::SecurityGroupRule, id));
        };
        set(&mut r.std.description, description);
        r.std.touch(now);
        self.put(Resource::SecurityGroupRule(r.clone()));
        Ok(r)
    }

    pub fn delete_security_group_rule(
        &mut self,
        caller: &Caller,
        id: &str,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let Resource::SecurityGroupRule(rule) =
            self.writable(caller, Kind::SecurityGroupRule, id)?
        else {
            return Err(ModelError::not_found(Kind::SecurityGroupRule, id));
        };
        self.remove(Kind::SecurityGroupRule, id);
        self.touch(Kind::SecurityGroup, &rule.security_group_id, now);
        Ok(())
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

/// Where a port is bound (and how) is the compute service's to say, as in
/// Neutron's default policy: admins only.
fn check_binding_admin(caller: &Caller, req: &PortUpdate, action: &str) -> Result<(), ModelError> {
    let named = [
        ("binding:host_id", req.binding_host_id.is_some()),
        ("binding:profile", req.binding_profile.is_some()),
    ];
    match named.iter().find(|(_, given)| *given) {
        Some((attr, _)) if !caller.is_admin => Err(ModelError::Forbidden(format!(
            "(rule:{action}_port:{attr}) is disallowed by policy"
        ))),
        _ => Ok(()),
    }
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

fn next_addr(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(u32::from(v4).wrapping_add(1).into()),
        IpAddr::V6(v6) => IpAddr::V6(u128::from(v6).wrapping_add(1).into()),
    }
}

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
    Ok(out.into_iter().collect())
}

fn address_pairs(
    requests: Vec<AddressPairRequest>,
    port_mac: MacAddr,
) -> Result<Vec<AddressPair>, ModelError> {
    let mut out: Vec<AddressPair> = Vec::with_capacity(requests.len());
    for req in requests {
        let pair = AddressPair {
            ip_address: req.ip_address,
            mac_address: req.mac_address.unwrap_or(port_mac),
        };
        if !pair.mac_address.is_valid_port_mac() {
            return Err(ModelError::invalid(format!(
                "'{}' is not a valid MAC address",
                pair.mac_address
            )));
        }
        if pair.ip_address.addr().is_multicast() {
            return Err(ModelError::invalid(format!(
                "Multicast address {} is not allowed in allowed address pairs",
                pair.ip_address
            )));
        }
        if out.contains(&pair) {
            return Err(ModelError::invalid(
                "Request contains duplicate address pair",
            ));
        }
        out.push(pair);
    }
    Ok(out)
}

fn check_vnic_type(vnic: Option<String>) -> Result<String, ModelError> {
    match vnic {
        None => Ok("normal".into()),
        Some(v) if VNIC_TYPES.contains(&v.as_str()) => Ok(v),
        Some(v) => Err(ModelError::invalid(format!("{v} is not in {VNIC_TYPES:?}"))),
    }
}

#[cfg(test)]
mod tests;
