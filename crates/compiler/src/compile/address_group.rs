//! Address groups in the compiled state: the hosts that hold an address
//! group's addresses are those with a rule naming it (its `watchers`, counted
//! as remote groups' are), and an address added or removed is one element
//! sent to each of them, never the group's rules or the whole list. Which
//! rules name a group, and when a host starts or stops holding them, is
//! `security`'s; this module keeps the addresses and who holds them.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use model::AddressGroup;

use super::security::{unwatch, watch};
use super::{Compiler, Emitter};
use crate::protocol::Change;

/// Everything under one address group id. Rules may name a group the
/// compiler does not know (not yet put, or deleted): it is then empty, and
/// the entry lives while anything names it.
#[derive(Debug, Default)]
pub(super) struct AddressGroupEntry {
    /// Whether the group itself is known.
    known: bool,
    pub(super) addresses: BTreeSet<IpNet>,
    /// Host → how many rules, of the known groups the host uses, name it.
    pub(super) watchers: BTreeMap<String, usize>,
}

impl AddressGroupEntry {
    fn is_unused(&self) -> bool {
        !self.known && self.addresses.is_empty() && self.watchers.is_empty()
    }
}

impl Compiler {
    pub(super) fn put_address_group(&mut self, group: &AddressGroup, out: &mut Emitter) {
        let entry = self.address_groups.entry(group.std.id.clone()).or_default();
        entry.known = true;
        let gone: Vec<IpNet> = entry
            .addresses
            .difference(&group.addresses)
            .copied()
            .collect();
        let new: Vec<IpNet> = group
            .addresses
            .difference(&entry.addresses)
            .copied()
            .collect();
        entry.addresses = group.addresses.clone();
        for host in entry.watchers.keys() {
            for address in &new {
                out.push(
                    host,
                    Change::AddressGroupAddressAdd {
                        address_group_id: group.std.id.clone(),
                        address: *address,
                    },
                );
            }
            for address in &gone {
                out.push(
                    host,
                    Change::AddressGroupAddressRemove {
                        address_group_id: group.std.id.clone(),
                        address: *address,
                    },
                );
            }
        }
    }

    /// The model refuses deleting a group a rule names; should the store
    /// say so anyway, its rules match nothing from then on.
    pub(super) fn delete_address_group(&mut self, id: &str, out: &mut Emitter) {
        let Some(entry) = self.address_groups.get_mut(id) else {
            return;
        };
        entry.known = false;
        let gone = std::mem::take(&mut entry.addresses);
        for host in entry.watchers.keys() {
            for address in &gone {
                out.push(
                    host,
                    Change::AddressGroupAddressRemove {
                        address_group_id: id.to_owned(),
                        address: *address,
                    },
                );
            }
        }
        self.forget_address_group_if_unused(id);
    }

    /// One more rule held by `host` names address group `id`.
    pub(super) fn watch_address_group(&mut self, host: &str, id: &str, out: &mut Emitter) {
        let entry = self.address_groups.entry(id.to_owned()).or_default();
        if !watch(&mut entry.watchers, host) {
            return;
        }
        out.push(
            host,
            Change::AddressGroupUpsert {
                address_group_id: id.to_owned(),
                addresses: entry.addresses.clone(),
            },
        );
        self.hosts
            .entry(host.to_owned())
            .or_default()
            .address_groups
            .insert(id.to_owned());
    }

    pub(super) fn unwatch_address_group(&mut self, host: &str, id: &str, out: &mut Emitter) {
        let Some(entry) = self.address_groups.get_mut(id) else {
            return;
        };
        if !unwatch(&mut entry.watchers, host) {
            return;
        }
        out.push(
            host,
            Change::AddressGroupRemove {
                address_group_id: id.to_owned(),
            },
        );
        if let Some(h) = self.hosts.get_mut(host) {
            h.address_groups.remove(id);
        }
        self.forget_address_group_if_unused(id);
    }

    fn forget_address_group_if_unused(&mut self, id: &str) {
        if self
            .address_groups
            .get(id)
            .is_some_and(AddressGroupEntry::is_unused)
        {
            self.address_groups.remove(id);
        }
    }

    /// The address groups `host` holds, into its snapshot.
    pub(super) fn address_group_snapshot(
        &self,
        ids: &BTreeSet<String>,
        state: &mut crate::protocol::HostState,
    ) {
        for id in ids {
            if let Some(entry) = self.address_groups.get(id) {
                state
                    .address_groups
                    .insert(id.clone(), entry.addresses.clone());
            }
        }
    }
}
