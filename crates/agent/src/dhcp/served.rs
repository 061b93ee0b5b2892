//! What the DHCP and IPv6 servers are handed: every local port's DHCPv4
//! lease and IPv6 service, kept between rounds so that a delta rebuilds only
//! the ports its changes name ([`ServeHints`]; a start or a resync every
//! port's) and the servers are handed only the devices whose entries
//! changed. Pure: no sockets. It must never leave the servers other than
//! handing them every port's lease would (a proptest ties the two).

use std::collections::{BTreeMap, BTreeSet};

use compiler::protocol::{Change, DhcpLease, HostState};

use super::ipv6_server::Ipv6Service;
use super::{dhcpv6, router_advert};

/// What a run of stream deltas may have changed of the leases and
/// advertisements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeHints {
    /// Anything may have: a start, a snapshot.
    pub all: bool,
    /// Networks every local port of which may have a new lease or
    /// advertisement (the network's MTU, its subnets, a router on it).
    pub networks: BTreeSet<String>,
    /// Local ports, as (network, port), that came, went or changed.
    pub ports: BTreeSet<(String, String)>,
}

impl ServeHints {
    pub fn everything() -> Self {
        ServeHints {
            all: true,
            ..ServeHints::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.networks.is_empty() && self.ports.is_empty()
    }

    /// Names what `change` may change, `before` being the state it applies
    /// to (a router's interfaces it drops are only there).
    pub fn note(&mut self, change: &Change, before: &HostState) {
        if self.all {
            return;
        }
        let router_networks = |router_id: &str| {
            before
                .routers
                .get(router_id)
                .into_iter()
                .flat_map(|r| r.interfaces.values().map(|i| i.network_id.clone()))
        };
        match change {
            Change::NetworkUpsert { network_id, .. }
            | Change::NetworkRemove { network_id }
            | Change::SubnetUpsert { network_id, .. }
            | Change::SubnetRemove { network_id, .. } => {
                self.networks.insert(network_id.clone());
            }
            Change::LocalPortUpsert {
                network_id,
                port_id,
                ..
            }
            | Change::LocalPortRemove {
                network_id,
                port_id,
            } => {
                self.ports.insert((network_id.clone(), port_id.clone()));
            }
            // A router's interfaces are its networks' advertisements' source.
            Change::RouterUpsert { router_id, spec } => {
                let after = spec.interfaces.values().map(|i| i.network_id.clone());
                self.networks
                    .extend(router_networks(router_id).chain(after));
            }
            Change::RouterRemove { router_id } => {
                self.networks.extend(router_networks(router_id));
            }
            // Security, other hosts' ports and floating IPs are in no lease
            // and no advertisement.
            Change::RemotePortUpsert { .. }
            | Change::RemotePortRemove { .. }
            | Change::PortSecurityUpsert { .. }
            | Change::PortSecurityRemove { .. }
            | Change::SecurityGroupUpsert { .. }
            | Change::SecurityGroupRemove { .. }
            | Change::SecurityGroupRuleUpsert { .. }
            | Change::SecurityGroupRuleRemove { .. }
            | Change::RemoteGroupUpsert { .. }
            | Change::RemoteGroupRemove { .. }
            | Change::RemoteGroupMemberAdd { .. }
            | Change::RemoteGroupMemberRemove { .. }
            | Change::AddressGroupUpsert { .. }
            | Change::AddressGroupRemove { .. }
            | Change::AddressGroupAddressAdd { .. }
            | Change::AddressGroupAddressRemove { .. }
            | Change::FloatingIpUpsert { .. }
            | Change::FloatingIpRemove { .. } => {}
        }
    }

    /// Adds what `other` names.
    pub fn merge(&mut self, other: ServeHints) {
        if self.all || other.all {
            *self = ServeHints::everything();
            return;
        }
        self.networks.extend(other.networks);
        self.ports.extend(other.ports);
    }
}

/// A local port, by (network, port) id, as the state names it.
type PortKey = (String, String);

/// What one local port is served.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    device: String,
    dhcp: Option<DhcpLease>,
    ipv6: Ipv6Service,
}

/// Devices whose service changed (or may have), each with what it is served
/// now (`None`: nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edits {
    pub dhcp: Vec<(String, Option<DhcpLease>)>,
    pub ipv6: Vec<(String, Option<Ipv6Service>)>,
}

/// Every local port's lease and IPv6 service, as last handed to the servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// By network, then port: looked up by the state's own ids, with no
    /// key made for a port whose entry is unchanged.
    entries: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The ports naming each device: two ports may name one (the servers
    /// serve it the last one's lease, in (network, port) order).
    by_device: BTreeMap<String, BTreeSet<PortKey>>,
}

impl Served {
    /// Every port's entry, built from `state` alone: what [`Served::update`]
    /// must always arrive at.
    pub fn rebuild(state: &HostState, domain: &dhcpv6::DnsDomain) -> Self {
        let mut served = Served::default();
        let mut devices = BTreeSet::new();
        for (network_id, net) in &state.networks {
            for port_id in net.local_ports.keys() {
                served.refresh(network_id, port_id, state, domain, &mut devices);
            }
        }
        served
    }

    /// Every (device, lease), as [`super::DhcpServer::set_ports`] would be
    /// handed them: the order of the state's networks and their ports.
    pub fn dhcp(&self) -> impl Iterator<Item = (String, DhcpLease)> + '_ {
        self.entries
            .values()
            .flat_map(BTreeMap::values)
            .filter_map(|e| Some((e.device.clone(), e.dhcp.clone()?)))
    }

    /// Every (device, service), likewise.
    pub fn ipv6(&self) -> impl Iterator<Item = (String, Ipv6Service)> + '_ {
        self.entries
            .values()
            .flat_map(BTreeMap::values)
            .map(|e| (e.device.clone(), e.ipv6.clone()))
    }

    /// Rebuilds the entries of the ports `hints` name (all of a named
    /// network's, held or in `state`; every port's when `hints.all`) and
    /// returns what each device whose entries changed is served now.
    pub fn update(
        &mut self,
        state: &HostState,
        domain: &dhcpv6::DnsDomain,
        hints: &ServeHints,
    ) -> Edits {
        let mut devices = BTreeSet::new();
        let networks: BTreeSet<String> = if hints.all {
            self.entries
                .keys()
                .chain(state.networks.keys())
                .cloned()
                .collect()
        } else {
            hints.networks.clone()
        };
        for network_id in &networks {
            // Held ports the state no longer has (few): by key, after.
            let gone: Vec<String> = self
                .entries
                .get(network_id)
                .into_iter()
                .flat_map(BTreeMap::keys)
                .filter(|port_id| {
                    state
                        .networks
                        .get(network_id)
                        .is_none_or(|net| !net.local_ports.contains_key(*port_id))
                })
                .cloned()
                .collect();
            for port_id in &gone {
                self.refresh(network_id, port_id, state, domain, &mut devices);
            }
            if let Some(net) = state.networks.get(network_id) {
                for port_id in net.local_ports.keys() {
                    self.refresh(network_id, port_id, state, domain, &mut devices);
                }
            }
        }
        for (network_id, port_id) in &hints.ports {
            if !networks.contains(network_id) {
                self.refresh(network_id, port_id, state, domain, &mut devices);
            }
        }
        let mut edits = Edits::default();
        for device in devices {
            edits.dhcp.push((device.clone(), self.dhcp_of(&device)));
            edits.ipv6.push((device.clone(), self.ipv6_of(&device)));
        }
        edits
    }

    /// Makes the entry of (`network_id`, `port_id`) `state`'s; unless it
    /// was already, adds the devices it had and has to `devices`.
    fn refresh(
        &mut self,
        network_id: &str,
        port_id: &str,
        state: &HostState,
        domain: &dhcpv6::DnsDomain,
        devices: &mut BTreeSet<String>,
    ) {
        let now = state.networks.get(network_id).and_then(|net| {
            let port = net.local_ports.get(port_id)?;
            Some(Entry {
                device: port.device.clone(),
                dhcp: net.dhcp_lease(port_id),
                ipv6: Ipv6Service {
                    adverts: router_advert::port_adverts(state, network_id, port_id),
                    dhcpv6: dhcpv6::port_lease(net, port_id, domain),
                },
            })
        });
        let held = self.entries.get(network_id).and_then(|n| n.get(port_id));
        if held == now.as_ref() {
            return;
        }
        let key = (network_id.to_owned(), port_id.to_owned());
        let ports = self.entries.entry(key.0.clone()).or_default();
        if let Some(old) = ports.remove(port_id) {
            if let Some(keys) = self.by_device.get_mut(&old.device) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_device.remove(&old.device);
                }
            }
            devices.insert(old.device);
        }
        match now {
            Some(entry) => {
                devices.insert(entry.device.clone());
                self.by_device
                    .entry(entry.device.clone())
                    .or_default()
                    .insert(key.clone());
                ports.insert(key.1, entry);
            }
            None if ports.is_empty() => {
                self.entries.remove(network_id);
            }
            None => {}
        }
    }

    /// The entries naming `device`, last first (the one the servers keep).
    fn naming<'a>(&'a self, device: &str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.by_device
            .get(device)
            .into_iter()
            .flat_map(|keys| keys.iter().rev())
            .filter_map(|(n, p)| self.entries.get(n)?.get(p))
    }

    fn dhcp_of(&self, device: &str) -> Option<DhcpLease> {
        self.naming(device).find_map(|e| e.dhcp.clone())
    }

    /// The IPv6 server drops empty services before it keeps the last.
    fn ipv6_of(&self, device: &str) -> Option<Ipv6Service> {
        self.naming(device)
            .find(|e| !e.ipv6.is_empty())
            .map(|e| e.ipv6.clone())
    }
}

#[cfg(test)]
#[path = "served_tests.rs"]
mod tests;
