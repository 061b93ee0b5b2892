//! The compiler proper: the topology in memory, indexed so that one change
//! costs work in proportion to the hosts and ports it concerns, and each host's
//! desired state derived from it, as a snapshot or as the changes one input
//! makes. Pure: no I/O, no clock. It must never walk all the ports, networks or
//! hosts of the cloud on one input.

mod address_group;
mod floating_ip;
mod metering;
mod query;
mod router;
mod security;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use model::{Network, Port, Subnet};

use crate::input::Input;
use crate::protocol::{
    Change, HostState, LocalPortSpec, NetworkSpec, PortSecuritySpec, RemotePortSpec, SubnetSpec,
};
use crate::spec::{
    local_port_spec, member_addresses, port_groups, port_security_spec, subnet_spec,
};
use floating_ip::FloatingIpEntry;
pub use query::{GroupView, NetworkView, PortSeen, PortView, containing_member};
use router::{RouterEntry, gateway_of, interface_of, is_router_owned};
use security::{GroupEntry, SecurityView};

/// The changes one input makes, each with the host that must apply it. A
/// host's changes are in the order it must apply them; hosts are interleaved.
pub type HostChanges = Vec<(String, Change)>;

/// The logical topology and every host's desired state derived from it.
///
/// A host carries a network when the network is known and at least one port
/// on it is bound to the host (`binding:host_id`). Its view of the network
/// holds every subnet, its own ports (local) and the ports bound to other
/// *registered* hosts (remote, behind that host's underlay IP). A host's own
/// view does not depend on its registration: only how others see its ports does.
///
/// Security (see `security`): a host holds the port security of every port
/// bound to it (whether or not it carries the port's network yet), the known
/// groups its ports with port security enabled are in, and the member set of
/// every group that a rule of those groups names. A member set holds the fixed
/// IPs (host prefixes) and address-pair prefixes of every port of the group
/// with port security enabled, bound or not: a port's addresses are its own
/// from its creation, so a VM booting elsewhere is already allowed in. A rule
/// naming an address group makes its hosts hold that group's addresses the
/// same way (see `address_group`).
#[derive(Debug, Default)]
pub struct Compiler {
    networks: HashMap<String, NetworkEntry>,
    /// Subnet id → its network's id; the subnet's spec lives in that network's entry.
    subnet_networks: HashMap<String, String>,
    ports: HashMap<String, PortEntry>,
    hosts: HashMap<String, HostEntry>,
    /// Security groups by id, with the index of who uses them (see `security`).
    groups: HashMap<String, GroupEntry>,
    /// Rule id → its group's id; the rule's spec lives in that group's entry.
    rule_groups: HashMap<String, String>,
    /// Address groups by id, with the hosts whose rules name them.
    address_groups: HashMap<String, address_group::AddressGroupEntry>,
    /// Routers by id (see `router`).
    routers: HashMap<String, RouterEntry>,
    /// The routers with a gateway: placed again when gateway hosts change.
    gateway_routers: BTreeSet<String>,
    /// Live gateway hosts by the physical networks they map.
    gateway_hosts: HashMap<String, BTreeSet<String>>,
    /// Floating IPs by id (see `floating_ip`).
    floating_ips: HashMap<String, FloatingIpEntry>,
    /// Port id → the floating IPs associated with it or forwarding to it.
    port_floating_ips: HashMap<String, BTreeSet<String>>,
    /// Metering labels and which routers they apply to (see `metering`).
    metering: metering::Metering,
}

/// What a host's vxlan device (or, flat, its physical network) is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    vni: u32,
    mtu: u32,
    /// `Some` for a flat network (see `NetworkSpec::physical_network`).
    physical_network: Option<String>,
}

/// Everything under one network id. Subnets and ports may name a network the
/// compiler does not know (not yet put, or deleted before them), so the entry
/// lives while anything names it, and `segment` says whether the network does.
#[derive(Debug, Default)]
struct NetworkEntry {
    /// `None`: the network itself is unknown, and no host carries it.
    segment: Option<Segment>,
    subnets: BTreeMap<String, SubnetSpec>,
    /// Bound ports by host. Its keys, with those of `routed_hosts`, are
    /// the hosts that carry the network (once the segment is known).
    bound_ports: BTreeMap<String, BTreeSet<String>>,
    /// Routers with an interface on it.
    routers: BTreeSet<String>,
    /// Hosts that hold a router with an interface or its gateway on it,
    /// each with how many such routers: they carry the network for them.
    routed_hosts: BTreeMap<String, u32>,
    /// Routers whose gateway is on it (they do not pull its ports' hosts in).
    gateway_routers: BTreeSet<String>,
}

impl NetworkEntry {
    /// The hosts carrying the network, in name order: none while the
    /// network is unknown.
    fn carriers(&self) -> impl Iterator<Item = &String> {
        let known = self.segment.is_some();
        let mut bound = self.bound_ports.keys().peekable();
        let mut routed = self.routed_hosts.keys().peekable();
        std::iter::from_fn(move || {
            if !known {
                return None;
            }
            match (bound.peek(), routed.peek()) {
                (Some(b), Some(r)) if b < r => bound.next(),
                (Some(b), Some(r)) if b > r => routed.next(),
                (Some(_), Some(_)) => {
                    routed.next();
                    bound.next()
                }
                (Some(_), None) => bound.next(),
                (None, _) => routed.next(),
            }
        })
    }

    /// Whether `host` has a port bound on it or holds a router on it
    /// (whether or not the network itself is known).
    fn named_by(&self, host: &str) -> bool {
        self.bound_ports.contains_key(host) || self.routed_hosts.contains_key(host)
    }

    /// Carriers other than `host`: those that see `host`'s ports as remote.
    fn carriers_besides<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a String> {
        self.carriers().filter(move |h| h.as_str() != host)
    }

    fn is_unused(&self) -> bool {
        self.segment.is_none()
            && self.subnets.is_empty()
            && self.bound_ports.is_empty()
            && self.routers.is_empty()
            && self.routed_hosts.is_empty()
            && self.gateway_routers.is_empty()
    }
}

/// What the compiler keeps of a port: where it is bound, and how its host sees it.
#[derive(Debug)]
struct PortEntry {
    network_id: String,
    /// `binding:host_id`; empty when the port is unbound, and for the ports
    /// routers and floating IPs own (realised by their owner, not bound).
    host: String,
    local: LocalPortSpec,
    /// Its port security, as its host sees it.
    security: PortSecuritySpec,
    /// The groups it is in: none when port security is disabled.
    groups: BTreeSet<String>,
    /// Its addresses in those groups' member sets.
    members: BTreeSet<IpNet>,
    /// The router it is an interface of.
    interface: Option<String>,
    /// The router it is the gateway port of.
    gateway_of: Option<String>,
}

impl PortEntry {
    fn new(port: &Port) -> Self {
        PortEntry {
            network_id: port.network_id.clone(),
            host: if is_router_owned(port) {
                String::new()
            } else {
                port.binding_host_id.clone()
            },
            local: local_port_spec(port),
            security: port_security_spec(port),
            groups: port_groups(port),
            members: member_addresses(port),
            interface: interface_of(port),
            gateway_of: gateway_of(port),
        }
    }

    /// (network id, host) of a bound port.
    fn binding(&self) -> Option<(&str, &str)> {
        (!self.host.is_empty()).then_some((self.network_id.as_str(), self.host.as_str()))
    }

    /// (router id, network id) of a router interface.
    fn interface(&self) -> Option<(String, String)> {
        self.interface
            .as_ref()
            .map(|r| (r.clone(), self.network_id.clone()))
    }

    /// The port as hosts other than its own see it.
    fn remote(&self, vtep: IpAddr) -> RemotePortSpec {
        RemotePortSpec {
            mac: self.local.mac,
            ips: self.local.fixed_ips.iter().map(|f| f.ip_address).collect(),
            vtep,
        }
    }

    /// Whether other hosts must hear of the change from `other` to `self`.
    fn remote_view_differs(&self, other: &PortEntry) -> bool {
        self.local.mac != other.local.mac
            || !self.local.fixed_ips.iter().map(|f| f.ip_address).eq(other
                .local
                .fixed_ips
                .iter()
                .map(|f| f.ip_address))
    }
}

/// A host, registered or only named by bindings.
#[derive(Debug, Default)]
struct HostEntry {
    /// `None` until the host's agent registers: until then no other host sees its ports.
    underlay_ip: Option<IpAddr>,
    /// The networks with at least one port bound to this host, known or not.
    networks: BTreeSet<String>,
    /// The groups its local ports use (known or not).
    groups: BTreeSet<String>,
    /// The groups whose member sets it holds.
    remote_groups: BTreeSet<String>,
    /// The address groups whose addresses it holds.
    address_groups: BTreeSet<String>,
    /// The routers it holds (see `router`).
    routers: BTreeSet<String>,
    /// The floating IPs whose NAT happens here (see `floating_ip`).
    floating_ips: BTreeSet<String>,
    /// What its agent registered: the physical networks it maps, and
    /// whether it offers to run routers' SNAT (and is alive to).
    physical_networks: BTreeSet<String>,
    gateway: bool,
    /// Its availability zone, as registered.
    zone: String,
}

impl HostEntry {
    fn is_unused(&self) -> bool {
        self.underlay_ip.is_none()
            && self.networks.is_empty()
            && self.groups.is_empty()
            && self.remote_groups.is_empty()
            && self.address_groups.is_empty()
            && self.routers.is_empty()
            && self.floating_ips.is_empty()
    }

    /// The physical networks it offers gateway service on.
    fn gateway_offer(&self) -> BTreeSet<String> {
        if self.gateway && self.underlay_ip.is_some() {
            self.physical_networks.clone()
        } else {
            BTreeSet::new()
        }
    }
}

/// Collects the changes of one input.
#[derive(Default)]
struct Emitter {
    changes: HostChanges,
    /// Taking in a whole cloud at once ([`Compiler::build`]): nobody reads
    /// its changes, so they are not made, and the costly ones (a network's
    /// or a group's whole spec, a member set, a port's upsert to every
    /// carrier) not even computed.
    quiet: bool,
}

impl Emitter {
    fn push(&mut self, host: &str, change: Change) {
        if !self.quiet {
            self.changes.push((host.to_owned(), change));
        }
    }

    /// Whether changes are wanted: false only while building.
    fn recording(&self) -> bool {
        !self.quiet
    }

    /// Of the changes since `from`, drops each host's removal of remote port
    /// `port_id` directly followed (for that host) by its upsert as it was,
    /// `old`: a port that left and came back unchanged, as seen from there
    /// (its new host has the same tunnel endpoint), changed nothing.
    fn cancel_remote_round_trips(&mut self, from: usize, port_id: &str, old: &RemotePortSpec) {
        let mut cancelled = BTreeSet::new();
        for i in from..self.changes.len() {
            let (
                host,
                Change::RemotePortRemove {
                    network_id,
                    port_id: removed,
                },
            ) = &self.changes[i]
            else {
                continue;
            };
            if removed != port_id {
                continue;
            }
            let next_for_host = (i + 1..self.changes.len()).find(|&j| self.changes[j].0 == *host);
            if let Some(j) = next_for_host
                && let Change::RemotePortUpsert {
                    network_id: n,
                    port_id: p,
                    spec,
                } = &self.changes[j].1
                && n == network_id
                && p == port_id
                && spec == old
            {
                cancelled.extend([i, j]);
            }
        }
        let mut index = 0;
        self.changes.retain(|_| {
            index += 1;
            !cancelled.contains(&(index - 1))
        });
    }

    /// A network the host starts carrying, with everything under it.
    fn network_added(&mut self, host: &str, network_id: &str, spec: NetworkSpec) {
        self.push(
            host,
            Change::NetworkUpsert {
                network_id: network_id.to_owned(),
                vni: spec.vni,
                mtu: spec.mtu,
                physical_network: spec.physical_network,
            },
        );
        for (subnet_id, spec) in spec.subnets {
            self.push(
                host,
                Change::SubnetUpsert {
                    network_id: network_id.to_owned(),
                    subnet_id,
                    spec,
                },
            );
        }
        for (port_id, spec) in spec.local_ports {
            self.push(
                host,
                Change::LocalPortUpsert {
                    network_id: network_id.to_owned(),
                    port_id,
                    spec,
                },
            );
        }
        for (port_id, spec) in spec.remote_ports {
            self.push(
                host,
                Change::RemotePortUpsert {
                    network_id: network_id.to_owned(),
                    port_id,
                    spec,
                },
            );
        }
    }
}

impl Compiler {
    pub fn new() -> Self {
        Compiler::default()
    }

    /// Take in one change of the topology; return what each affected host must
    /// change, in order, to go from its previous desired state to its new one.
    pub fn apply(&mut self, input: Input) -> HostChanges {
        let mut out = Emitter::default();
        self.take_in(input, &mut out);
        out.changes
    }

    /// A compiler holding `inputs` (a whole store, read at start-up): the
    /// same state as applying them one by one, without making the changes
    /// nobody would read.
    pub fn build(inputs: impl IntoIterator<Item = Input>) -> Compiler {
        let mut compiler = Compiler::new();
        let mut quiet = Emitter {
            quiet: true,
            ..Emitter::default()
        };
        for input in inputs {
            compiler.take_in(input, &mut quiet);
        }
        compiler
    }

    fn take_in(&mut self, input: Input, out: &mut Emitter) {
        match input {
            Input::Network(network) => self.put_network(&network, out),
            Input::NetworkDeleted(id) => self.delete_network(&id, out),
            Input::Subnet(subnet) => self.put_subnet(&subnet, out),
            Input::SubnetDeleted(id) => self.delete_subnet(&id, out),
            Input::Port(port) => self.put_port(&port, out),
            Input::PortDeleted(id) => self.delete_port(&id, out),
            Input::Host {
                name,
                underlay_ip,
                physical_networks,
                gateway,
                availability_zone,
            } => self.put_host(
                name,
                underlay_ip,
                physical_networks,
                gateway,
                availability_zone,
                out,
            ),
            Input::HostDeleted(name) => self.delete_host(&name, out),
            Input::SecurityGroup(group) => self.put_group(&group, out),
            Input::SecurityGroupDeleted(id) => self.delete_group(&id, out),
            Input::SecurityGroupRule(rule) => self.put_rule(&rule, out),
            Input::SecurityGroupRuleDeleted(id) => self.delete_rule(&id, out),
            Input::AddressGroup(group) => self.put_address_group(&group, out),
            Input::AddressGroupDeleted(id) => self.delete_address_group(&id, out),
            Input::Router(router) => self.put_router(&router, out),
            Input::RouterDeleted(id) => self.delete_router(&id, out),
            Input::FloatingIp(fip) => self.put_floating_ip(&fip, out),
            Input::FloatingIpDeleted(id) => self.delete_floating_ip(&id, out),
            Input::MeteringLabel(label) => self.put_metering_label(&label, out),
            Input::MeteringLabelDeleted(id) => self.delete_metering_label(&id, out),
            Input::MeteringLabelRule(rule) => self.put_metering_rule(&rule, out),
            Input::MeteringLabelRuleDeleted(id) => self.delete_metering_rule(&id, out),
        }
    }

    /// The whole desired state of one host, for an agent that (re)connects.
    /// Costs in proportion to that host's state, not the cloud's.
    pub fn snapshot(&self, host: &str) -> HostState {
        let mut state = HostState::default();
        let Some(entry) = self.hosts.get(host) else {
            return state;
        };
        let carried: BTreeSet<&String> = entry
            .networks
            .iter()
            .chain(self.routed_networks_of_host(host))
            .collect();
        for network_id in carried {
            let spec = self
                .networks
                .get(network_id)
                .and_then(|network| self.network_spec(network, host));
            if let Some(spec) = spec {
                state.networks.insert(network_id.clone(), spec);
            }
        }
        self.security_snapshot(host, &mut state);
        for (id, spec) in self.routers_of_host(host) {
            state.routers.insert(id.clone(), spec.clone());
        }
        for (id, spec) in self.floating_ips_of_host(host) {
            state.floating_ips.insert(id.clone(), spec.clone());
        }
        state
    }

    /// The hosts that carry a network, in name order.
    pub fn hosts_of_network(&self, network_id: &str) -> impl Iterator<Item = &str> {
        self.networks
            .get(network_id)
            .into_iter()
            .flat_map(NetworkEntry::carriers)
            .map(String::as_str)
    }

    /// The networks a host carries, in id order.
    pub fn networks_of_host(&self, host: &str) -> impl Iterator<Item = &str> {
        let carried: BTreeSet<&String> = self
            .hosts
            .get(host)
            .into_iter()
            .flat_map(|h| h.networks.iter())
            .chain(self.routed_networks_of_host(host))
            .collect();
        carried
            .into_iter()
            .filter(|id| self.networks.get(*id).is_some_and(|n| n.segment.is_some()))
            .map(String::as_str)
    }

    /// A registered host's underlay IP (its VXLAN tunnel endpoint).
    pub fn underlay_ip(&self, host: &str) -> Option<IpAddr> {
        self.hosts.get(host).and_then(|h| h.underlay_ip)
    }

    /// How `host` sees a network it carries; `None` if it does not carry it.
    fn network_spec(&self, network: &NetworkEntry, host: &str) -> Option<NetworkSpec> {
        let segment = network.segment.as_ref()?;
        if !network.named_by(host) {
            return None;
        }
        let local_ports = network
            .bound_ports
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|id| Some((id.clone(), self.ports.get(id)?.local.clone())))
            .collect();
        let mut remote_ports = BTreeMap::new();
        for (other, ids) in network.bound_ports.iter().filter(|(h, _)| *h != host) {
            let Some(vtep) = self.underlay_ip(other) else {
                continue;
            };
            for id in ids {
                if let Some(port) = self.ports.get(id) {
                    remote_ports.insert(id.clone(), port.remote(vtep));
                }
            }
        }
        Some(NetworkSpec {
            vni: segment.vni,
            mtu: segment.mtu,
            physical_network: segment.physical_network.clone(),
            subnets: network.subnets.clone(),
            local_ports,
            remote_ports,
        })
    }

    // ---- networks ---------------------------------------------------------

    fn put_network(&mut self, network: &Network, out: &mut Emitter) {
        let id = &network.std.id;
        let segment = Segment {
            vni: network.segmentation_id,
            mtu: network.mtu,
            physical_network: network.physical_network.clone(),
        };
        let entry = self.networks.entry(id.clone()).or_default();
        let previous = entry.segment.replace(segment.clone());
        let Some(entry) = self.networks.get(id) else {
            return;
        };
        match previous {
            // The hosts with ports bound on it start carrying it, with all it holds.
            None => {
                for host in entry.carriers() {
                    if let Some(spec) = self.network_spec(entry, host) {
                        out.network_added(host, id, spec);
                    }
                }
            }
            Some(previous) if previous != segment => {
                for host in entry.carriers() {
                    out.push(
                        host,
                        Change::NetworkUpsert {
                            network_id: id.clone(),
                            vni: segment.vni,
                            mtu: segment.mtu,
                            physical_network: segment.physical_network.clone(),
                        },
                    );
                }
            }
            Some(_) => return,
        }
        // Its physical network decides its routers' gateway hosts.
        let placed: Vec<String> = entry.gateway_routers.iter().cloned().collect();
        for router_id in placed {
            self.place_gateway(&router_id, out);
        }
    }

    fn delete_network(&mut self, id: &str, out: &mut Emitter) {
        let Some(entry) = self.networks.get_mut(id) else {
            return;
        };
        let hosts: Vec<String> = entry.carriers().cloned().collect();
        if entry.segment.take().is_some() {
            for host in hosts {
                out.push(
                    &host,
                    Change::NetworkRemove {
                        network_id: id.to_owned(),
                    },
                );
            }
        }
        let placed: Vec<String> = self
            .networks
            .get(id)
            .map(|n| n.gateway_routers.iter().cloned().collect())
            .unwrap_or_default();
        for router_id in placed {
            self.place_gateway(&router_id, out);
        }
        self.forget_network_if_unused(id);
    }

    fn forget_network_if_unused(&mut self, id: &str) {
        if self.networks.get(id).is_some_and(NetworkEntry::is_unused) {
            self.networks.remove(id);
        }
    }

    // ---- subnets ----------------------------------------------------------

    fn put_subnet(&mut self, subnet: &Subnet, out: &mut Emitter) {
        let id = &subnet.std.id;
        let network_id = &subnet.network_id;
        // A subnet that changed networks leaves the old one first.
        if self
            .subnet_networks
            .get(id)
            .is_some_and(|previous| previous != network_id)
        {
            self.delete_subnet(id, out);
        }
        self.subnet_networks.insert(id.clone(), network_id.clone());
        let spec = subnet_spec(subnet);
        let entry = self.networks.entry(network_id.clone()).or_default();
        if entry.subnets.get(id) == Some(&spec) {
            return;
        }
        for host in entry.carriers() {
            out.push(
                host,
                Change::SubnetUpsert {
                    network_id: network_id.clone(),
                    subnet_id: id.clone(),
                    spec: spec.clone(),
                },
            );
        }
        entry.subnets.insert(id.clone(), spec);
        self.refresh_routers_of(network_id, out);
    }

    fn delete_subnet(&mut self, id: &str, out: &mut Emitter) {
        let Some(network_id) = self.subnet_networks.remove(id) else {
            return;
        };
        if let Some(entry) = self.networks.get_mut(&network_id)
            && entry.subnets.remove(id).is_some()
        {
            for host in entry.carriers() {
                out.push(
                    host,
                    Change::SubnetRemove {
                        network_id: network_id.clone(),
                        subnet_id: id.to_owned(),
                    },
                );
            }
        }
        self.refresh_routers_of(&network_id, out);
        self.forget_network_if_unused(&network_id);
    }

    // ---- ports ------------------------------------------------------------

    fn put_port(&mut self, port: &Port, out: &mut Emitter) {
        let id = &port.std.id;
        let old_security = self.ports.get(id).map(SecurityView::of);
        let old_interface = self.ports.get(id).and_then(PortEntry::interface);
        let old_gateway = self.ports.get(id).and_then(|p| p.gateway_of.clone());
        self.put_port_binding(port, out);
        self.interface_changed(id, old_interface, out);
        self.port_security_changed(id, old_security, out);
        let new_gateway = self.ports.get(id).and_then(|p| p.gateway_of.clone());
        for router_id in BTreeSet::from_iter(old_gateway.into_iter().chain(new_gateway)) {
            self.refresh_router(&router_id, out);
        }
        self.floating_ips_follow_port(id, out);
    }

    /// The networks' side of a put port.
    fn put_port_binding(&mut self, port: &Port, out: &mut Emitter) {
        let id = &port.std.id;
        let new = PortEntry::new(port);
        match self.ports.remove(id) {
            Some(old) if old.binding() == new.binding() => {
                self.ports.insert(id.clone(), new);
                self.port_changed_in_place(id, &old, out);
            }
            // Told as one move rather than a leave and a join, so that a host
            // that sees the port before and after hears only the difference.
            Some(old) if self.moves_host_within_unrouted_network(&old, &new) => {
                self.ports.insert(id.clone(), new);
                self.port_moved_between_hosts(id, &old, out);
            }
            Some(old) => {
                let from = out.changes.len();
                let old_remote = old
                    .binding()
                    .and_then(|(_, host)| self.underlay_ip(host))
                    .map(|vtep| old.remote(vtep));
                self.unbind(id, &old, out);
                self.ports.insert(id.clone(), new);
                self.bind(id, out);
                if let Some(old_remote) = old_remote {
                    out.cancel_remote_round_trips(from, id, &old_remote);
                }
            }
            None => {
                self.ports.insert(id.clone(), new);
                self.bind(id, out);
            }
        }
    }

    fn delete_port(&mut self, id: &str, out: &mut Emitter) {
        if let Some(old) = self.ports.remove(id) {
            self.unbind(id, &old, out);
            self.interface_changed(id, old.interface(), out);
            self.port_security_changed(id, Some(SecurityView::of(&old)), out);
            if let Some(router_id) = &old.gateway_of {
                self.refresh_router(router_id, out);
            }
            self.floating_ips_follow_port(id, out);
        }
    }

    /// Same network, same host: only what the port looks like may have changed.
    fn port_changed_in_place(&self, id: &str, old: &PortEntry, out: &mut Emitter) {
        let Some(port) = self.ports.get(id) else {
            return;
        };
        let Some((network_id, host)) = port.binding() else {
            return;
        };
        let Some(network) = self.networks.get(network_id) else {
            return;
        };
        if network.segment.is_none() {
            return;
        }
        if port.local != old.local {
            out.push(
                host,
                Change::LocalPortUpsert {
                    network_id: network_id.to_owned(),
                    port_id: id.to_owned(),
                    spec: port.local.clone(),
                },
            );
        }
        let Some(vtep) = self.underlay_ip(host) else {
            return;
        };
        if port.remote_view_differs(old) {
            for other in network.carriers_besides(host) {
                out.push(
                    other,
                    Change::RemotePortUpsert {
                        network_id: network_id.to_owned(),
                        port_id: id.to_owned(),
                        spec: port.remote(vtep),
                    },
                );
            }
        }
    }

    /// Same network, another host (both bound). The old host drops the port
    /// (and the network if it was its last port there) or now sees it remote;
    /// the new host starts carrying the network or sees the port local instead
    /// of remote; every other carrier hears of the new remote view, if it differs.
    fn port_moved_between_hosts(&mut self, id: &str, old: &PortEntry, out: &mut Emitter) {
        let (Some((network_id, old_host)), Some((_, new_host))) = (
            old.binding(),
            self.ports.get(id).and_then(PortEntry::binding),
        ) else {
            return;
        };
        let new_host = new_host.to_owned();
        let last_on_old = self
            .unindex_binding(id, network_id, old_host)
            .unwrap_or_default();
        let first_on_new = self.index_binding(id, network_id, &new_host);

        let network = self
            .networks
            .get(network_id)
            .filter(|n| n.segment.is_some());
        let (Some(network), Some(port)) = (network, self.ports.get(id)) else {
            self.forget_host_if_unused(old_host);
            return;
        };
        let old_remote = self.underlay_ip(old_host).map(|vtep| old.remote(vtep));
        let new_remote = self.underlay_ip(&new_host).map(|vtep| port.remote(vtep));
        let remote_upsert = |spec: RemotePortSpec| Change::RemotePortUpsert {
            network_id: network_id.to_owned(),
            port_id: id.to_owned(),
            spec,
        };
        let remote_remove = || Change::RemotePortRemove {
            network_id: network_id.to_owned(),
            port_id: id.to_owned(),
        };

        if last_on_old {
            out.push(
                old_host,
                Change::NetworkRemove {
                    network_id: network_id.to_owned(),
                },
            );
        } else {
            out.push(
                old_host,
                Change::LocalPortRemove {
                    network_id: network_id.to_owned(),
                    port_id: id.to_owned(),
                },
            );
            if let Some(spec) = &new_remote {
                out.push(old_host, remote_upsert(spec.clone()));
            }
        }

        if first_on_new {
            if let Some(spec) = self.network_spec(network, &new_host) {
                out.network_added(&new_host, network_id, spec);
            }
        } else {
            if old_remote.is_some() {
                out.push(&new_host, remote_remove());
            }
            out.push(
                &new_host,
                Change::LocalPortUpsert {
                    network_id: network_id.to_owned(),
                    port_id: id.to_owned(),
                    spec: port.local.clone(),
                },
            );
        }

        if old_remote != new_remote {
            let others = network
                .carriers()
                .filter(|h| h.as_str() != old_host && **h != new_host);
            for other in others {
                match &new_remote {
                    Some(spec) => out.push(other, remote_upsert(spec.clone())),
                    None => out.push(other, remote_remove()),
                }
            }
        }
        self.forget_host_if_unused(old_host);
    }

    /// Index the (already stored) port under its binding and tell the hosts
    /// of its network: its own host sees it local (carrying the network from
    /// now on if it is its first port there), registered or not; the others see
    /// it remote once its host is registered.
    fn bind(&mut self, id: &str, out: &mut Emitter) {
        let Some((network_id, host)) = self
            .ports
            .get(id)
            .and_then(PortEntry::binding)
            .map(|(n, h)| (n.to_owned(), h.to_owned()))
        else {
            return;
        };
        let before = self.carrying_around(&host, &network_id);
        let carried = self.carries(&host, &network_id);
        self.index_binding(id, &network_id, &host);
        self.carrying_changed(&before, Some(&network_id), out);

        let (Some(network), Some(port)) = (self.networks.get(&network_id), self.ports.get(id))
        else {
            return;
        };
        if network.segment.is_none() {
            return;
        }
        if !out.recording() {
            return;
        }
        if !carried {
            if let Some(spec) = self.network_spec(network, &host) {
                out.network_added(&host, &network_id, spec);
            }
        } else {
            out.push(
                &host,
                Change::LocalPortUpsert {
                    network_id: network_id.clone(),
                    port_id: id.to_owned(),
                    spec: port.local.clone(),
                },
            );
        }
        if let Some(vtep) = self.underlay_ip(&host) {
            for other in network.carriers_besides(&host) {
                out.push(
                    other,
                    Change::RemotePortUpsert {
                        network_id: network_id.clone(),
                        port_id: id.to_owned(),
                        spec: port.remote(vtep),
                    },
                );
            }
        }
    }

    /// Take a port that is no longer stored (or stored with another binding)
    /// out of its old binding: its host drops it, and the network too if it
    /// was the last port there; the other carriers forget it.
    fn unbind(&mut self, id: &str, old: &PortEntry, out: &mut Emitter) {
        let Some((network_id, host)) = old.binding() else {
            return;
        };
        let before = self.carrying_around(host, network_id);
        if self.unindex_binding(id, network_id, host).is_none() {
            return;
        }

        let network = self
            .networks
            .get(network_id)
            .filter(|n| n.segment.is_some());
        if let Some(network) = network {
            out.push(
                host,
                if network.named_by(host) {
                    Change::LocalPortRemove {
                        network_id: network_id.to_owned(),
                        port_id: id.to_owned(),
                    }
                } else {
                    Change::NetworkRemove {
                        network_id: network_id.to_owned(),
                    }
                },
            );
            if self.underlay_ip(host).is_some() {
                for other in network.carriers_besides(host) {
                    out.push(
                        other,
                        Change::RemotePortRemove {
                            network_id: network_id.to_owned(),
                            port_id: id.to_owned(),
                        },
                    );
                }
            }
        }
        self.carrying_changed(&before, Some(network_id), out);
        self.forget_host_if_unused(host);
        self.forget_network_if_unused(network_id);
    }

    /// Index a bound port under its network and host; true if it is the
    /// host's first port on the network. The only place bindings are indexed.
    fn index_binding(&mut self, id: &str, network_id: &str, host: &str) -> bool {
        let network = self.networks.entry(network_id.to_owned()).or_default();
        let local_ids = network.bound_ports.entry(host.to_owned()).or_default();
        let first_here = local_ids.is_empty();
        local_ids.insert(id.to_owned());
        if first_here {
            self.hosts
                .entry(host.to_owned())
                .or_default()
                .networks
                .insert(network_id.to_owned());
            self.routers_gain_host(network_id, host);
        }
        first_here
    }

    /// Undo [`Compiler::index_binding`]; `Some(true)` if it was the host's last
    /// port on the network, `None` if the port was not indexed there.
    fn unindex_binding(&mut self, id: &str, network_id: &str, host: &str) -> Option<bool> {
        let network = self.networks.get_mut(network_id)?;
        let local_ids = network.bound_ports.get_mut(host)?;
        if !local_ids.remove(id) {
            return None;
        }
        let last_here = local_ids.is_empty();
        if last_here {
            network.bound_ports.remove(host);
            if let Some(h) = self.hosts.get_mut(host) {
                h.networks.remove(network_id);
            }
            self.routers_lose_host(network_id, host);
        }
        Some(last_here)
    }

    // ---- hosts ------------------------------------------------------------

    fn put_host(
        &mut self,
        name: String,
        underlay_ip: IpAddr,
        physical_networks: Vec<String>,
        gateway: bool,
        zone: String,
        out: &mut Emitter,
    ) {
        // An empty host id means "unbound": no agent may register as it.
        if name.is_empty() {
            return;
        }
        let entry = self.hosts.entry(name.clone()).or_default();
        let offered = entry.gateway_offer();
        let moved = entry.underlay_ip.replace(underlay_ip) != Some(underlay_ip);
        entry.physical_networks = physical_networks.into_iter().collect();
        entry.gateway = gateway;
        let rezoned = entry.zone != zone;
        entry.zone = zone;
        let offers = entry.gateway_offer();
        if offers != offered {
            self.gateway_offer_changed(&name, &offered, &offers, out);
        } else if rezoned && !offers.is_empty() {
            // Routers with zone hints may now want it, or not.
            self.gateway_hosts_changed(out);
        }
        if !moved {
            return;
        }
        self.for_each_remote_view(&name, |other, network_id, port_id, port| {
            out.push(
                other,
                Change::RemotePortUpsert {
                    network_id: network_id.to_owned(),
                    port_id: port_id.to_owned(),
                    spec: port.remote(underlay_ip),
                },
            );
        });
    }

    fn delete_host(&mut self, name: &str, out: &mut Emitter) {
        let Some(entry) = self.hosts.get_mut(name) else {
            return;
        };
        let offered = entry.gateway_offer();
        entry.gateway = false;
        if !offered.is_empty() {
            self.gateway_offer_changed(name, &offered, &BTreeSet::new(), out);
        }
        let Some(entry) = self.hosts.get_mut(name) else {
            return;
        };
        if entry.underlay_ip.take().is_some() {
            self.for_each_remote_view(name, |other, network_id, port_id, _| {
                out.push(
                    other,
                    Change::RemotePortRemove {
                        network_id: network_id.to_owned(),
                        port_id: port_id.to_owned(),
                    },
                );
            });
        }
        self.forget_host_if_unused(name);
    }

    fn gateway_offer_changed(
        &mut self,
        host: &str,
        before: &BTreeSet<String>,
        after: &BTreeSet<String>,
        out: &mut Emitter,
    ) {
        for physnet in before.difference(after) {
            if let Some(hosts) = self.gateway_hosts.get_mut(physnet) {
                hosts.remove(host);
                if hosts.is_empty() {
                    self.gateway_hosts.remove(physnet);
                }
            }
        }
        for physnet in after.difference(before) {
            self.gateway_hosts
                .entry(physnet.clone())
                .or_default()
                .insert(host.to_owned());
        }
        self.gateway_hosts_changed(out);
    }

    /// Calls `f(other host, network id, port id, port)` for every port bound to
    /// `host` as each other carrier of its network sees it: work in proportion
    /// to those views, which is what a change of `host`'s underlay IP changes.
    fn for_each_remote_view(&self, host: &str, mut f: impl FnMut(&str, &str, &str, &PortEntry)) {
        let Some(entry) = self.hosts.get(host) else {
            return;
        };
        for network_id in &entry.networks {
            let Some(network) = self.networks.get(network_id) else {
                continue;
            };
            let Some(local_ids) = network.bound_ports.get(host) else {
                continue;
            };
            for other in network.carriers_besides(host) {
                for port_id in local_ids {
                    if let Some(port) = self.ports.get(port_id) {
                        f(other, network_id, port_id, port);
                    }
                }
            }
        }
    }

    /// Whether a put moves a port from one host to another on the same
    /// network that no router touches: the move is then told as one change.
    /// (On a routed network, which hosts hold which routers, and which carry
    /// the network for them, changes too: that is told as the port leaving
    /// one host and joining another.)
    fn moves_host_within_unrouted_network(&self, old: &PortEntry, new: &PortEntry) -> bool {
        match (old.binding(), new.binding()) {
            (Some((old_network, old_host)), Some((new_network, new_host))) => {
                old_network == new_network
                    && old_host != new_host
                    && self
                        .networks
                        .get(old_network)
                        .is_none_or(|n| n.routers.is_empty() && n.routed_hosts.is_empty())
            }
            _ => false,
        }
    }

    fn forget_host_if_unused(&mut self, name: &str) {
        if self.hosts.get(name).is_some_and(HostEntry::is_unused) {
            self.hosts.remove(name);
        }
    }
}
