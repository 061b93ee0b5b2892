//! What the DHCP and IPv6 servers are handed: every local port's DHCPv4
//! lease and IPv6 service, kept between rounds so that a delta rebuilds only
//! the ports its changes name ([`ServeHints`]) and hands the servers only
//! those devices. Pure: no sockets. It must never hand the servers other
//! than what a whole rebuild would (a proptest ties the two paths).

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
    entries: BTreeMap<PortKey, Entry>,
    /// The ports naming each device: two ports may name one (the servers
    /// serve it the last one's lease, in (network, port) order).
    by_device: BTreeMap<String, BTreeSet<PortKey>>,
}

impl Served {
    /// Rebuilds every port's entry from `state`.
    pub fn rebuild(&mut self, state: &HostState, domain: &dhcpv6::DnsDomain) {
        *self = Served::default();
        for (network_id, net) in &state.networks {
            for port_id in net.local_ports.keys() {
                self.put((network_id.clone(), port_id.clone()), state, domain);
            }
        }
    }

    /// Every (device, lease), for [`super::DhcpServer::set_ports`]: the
    /// order of the state's networks and their ports.
    pub fn dhcp(&self) -> impl Iterator<Item = (String, DhcpLease)> + '_ {
        self.entries
            .values()
            .filter_map(|e| Some((e.device.clone(), e.dhcp.clone()?)))
    }

    /// Every (device, service), for [`super::Ipv6Server::set_ports`].
    pub fn ipv6(&self) -> impl Iterator<Item = (String, Ipv6Service)> + '_ {
        self.entries
            .values()
            .map(|e| (e.device.clone(), e.ipv6.clone()))
    }

    /// Rebuilds the entries of the ports `hints` name (all of a named
    /// network's, before and after) and returns what each device they had
    /// or have is served now. `hints.all` is not looked at: a whole
    /// rebuild is [`Served::rebuild`].
    pub fn update(
        &mut self,
        state: &HostState,
        domain: &dhcpv6::DnsDomain,
        hints: &ServeHints,
    ) -> Edits {
        let mut keys: BTreeSet<PortKey> = hints.ports.clone();
        for network_id in &hints.networks {
            let held = self
                .entries
                .range((network_id.clone(), String::new())..)
                .take_while(|((n, _), _)| n == network_id)
                .map(|(key, _)| key.clone());
            let now = state
                .networks
                .get(network_id)
                .into_iter()
                .flat_map(|net| net.local_ports.keys())
                .map(|port_id| (network_id.clone(), port_id.clone()));
            keys.extend(held.chain(now));
        }
        let mut devices = BTreeSet::new();
        for key in keys {
            if let Some(old) = self.take(&key) {
                devices.insert(old.device);
            }
            if let Some(device) = self.put(key, state, domain) {
                devices.insert(device);
            }
        }
        let mut edits = Edits::default();
        for device in devices {
            edits.dhcp.push((device.clone(), self.dhcp_of(&device)));
            edits.ipv6.push((device.clone(), self.ipv6_of(&device)));
        }
        edits
    }

    /// Builds `key`'s entry if `state` has the port; its device.
    fn put(
        &mut self,
        key: PortKey,
        state: &HostState,
        domain: &dhcpv6::DnsDomain,
    ) -> Option<String> {
        let (network_id, port_id) = &key;
        let net = state.networks.get(network_id)?;
        let port = net.local_ports.get(port_id)?;
        let entry = Entry {
            device: port.device.clone(),
            dhcp: net.dhcp_lease(port_id),
            ipv6: Ipv6Service {
                adverts: router_advert::port_adverts(state, network_id, port_id),
                dhcpv6: dhcpv6::port_lease(net, port_id, domain),
            },
        };
        let device = entry.device.clone();
        self.by_device
            .entry(device.clone())
            .or_default()
            .insert(key.clone());
        self.entries.insert(key, entry);
        Some(device)
    }

    fn take(&mut self, key: &PortKey) -> Option<Entry> {
        let old = self.entries.remove(key)?;
        if let Some(keys) = self.by_device.get_mut(&old.device) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_device.remove(&old.device);
            }
        }
        Some(old)
    }

    /// The entries naming `device`, last first (the one the servers keep).
    fn naming<'a>(&'a self, device: &str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.by_device
            .get(device)
            .into_iter()
            .flat_map(|keys| keys.iter().rev())
            .filter_map(|key| self.entries.get(key))
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
