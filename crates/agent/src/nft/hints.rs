//! What a run of stream deltas changed, as far as nftables is concerned:
//! the pieces [`super::IncrementalRuleset::update_hinted`] looks at. Pure.
//! It must never leave a change out (a proptest ties the hinted path to
//! the full one); naming too much only costs time.

use std::collections::{BTreeMap, BTreeSet};

use compiler::protocol::Change;
use ipnet::IpNet;

/// A member set's source: (an address group, not a remote group; its id).
pub type SourceId = (bool, String);

/// The changes since the hints were last taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// Anything may have changed: a snapshot, a start.
    pub all: bool,
    /// Networks that came, went or changed (their bridge, their own
    /// devices, their zone, and every local port on them).
    pub networks: BTreeSet<String>,
    /// Local ports (by id) whose place, device or port security changed,
    /// with the networks the changes named them in.
    pub ports: BTreeMap<String, BTreeSet<String>>,
    /// Security groups whose existence, statefulness or rules changed.
    pub groups: BTreeSet<String>,
    /// Member sets changed: `None` whole (set or removed), else the
    /// addresses that joined or left.
    pub members: BTreeMap<SourceId, Option<BTreeSet<IpNet>>>,
}

impl Hints {
    /// Anything may have changed.
    pub fn everything() -> Self {
        Hints {
            all: true,
            ..Hints::default()
        }
    }

    /// Names what `change` may change.
    pub fn note(&mut self, change: &Change) {
        if self.all {
            return;
        }
        let mut port = |port_id: &str, network_id: Option<&str>| {
            let networks = self.ports.entry(port_id.to_owned()).or_default();
            networks.extend(network_id.map(str::to_owned));
        };
        match change {
            Change::NetworkUpsert { network_id, .. } | Change::NetworkRemove { network_id } => {
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
            } => port(port_id, Some(network_id)),
            Change::PortSecurityUpsert { port_id, .. } | Change::PortSecurityRemove { port_id } => {
                port(port_id, None);
            }
            Change::SecurityGroupUpsert { group_id, .. }
            | Change::SecurityGroupRemove { group_id }
            | Change::SecurityGroupRuleUpsert { group_id, .. }
            | Change::SecurityGroupRuleRemove { group_id, .. } => {
                self.groups.insert(group_id.clone());
            }
            Change::RemoteGroupUpsert { group_id, .. } | Change::RemoteGroupRemove { group_id } => {
                self.members.insert((false, group_id.clone()), None);
            }
            Change::AddressGroupUpsert {
                address_group_id, ..
            }
            | Change::AddressGroupRemove { address_group_id } => {
                self.members.insert((true, address_group_id.clone()), None);
            }
            Change::RemoteGroupMemberAdd { group_id, member }
            | Change::RemoteGroupMemberRemove { group_id, member } => {
                self.member((false, group_id.clone()), *member);
            }
            Change::AddressGroupAddressAdd {
                address_group_id,
                address,
            }
            | Change::AddressGroupAddressRemove {
                address_group_id,
                address,
            } => self.member((true, address_group_id.clone()), *address),
            // Subnets, other hosts' ports, routers and floating IPs make no
            // part of vnet's nftables.
            Change::SubnetUpsert { .. }
            | Change::SubnetRemove { .. }
            | Change::RemotePortUpsert { .. }
            | Change::RemotePortRemove { .. }
            | Change::RouterUpsert { .. }
            | Change::RouterRemove { .. }
            | Change::FloatingIpUpsert { .. }
            | Change::FloatingIpRemove { .. } => {}
        }
    }

    fn member(&mut self, source: SourceId, address: IpNet) {
        let entry = self
            .members
            .entry(source)
            .or_insert_with(|| Some(BTreeSet::new()));
        if let Some(addresses) = entry {
            addresses.insert(address);
        }
    }
}
