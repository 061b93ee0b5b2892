//! Security groups, their rules, port security and remote-group member sets,
//! derived incrementally. A rule naming an address group makes its hosts
//! watch that group's addresses as they watch a member set (`address_group`).
//!
//! The index, all under one group id ([`GroupEntry`]):
//! - `users`: host → how many of its local ports with port security enabled
//!   are in the group. The hosts with a count are the ones that hold the
//!   group's rules (`HostState::security_groups`, once the group is known).
//! - `watchers`: host → how many rules, of the known groups the host uses,
//!   name this group as their remote group. The hosts with a count hold its
//!   member set (`HostState::remote_groups`).
//! - `members`: address → how many ports of the group (port security
//!   enabled, bound or not) stand for it, so that two ports sharing an
//!   address leave the set only when both have gone.
//!
//! A port joining a group is then one `RemoteGroupMemberAdd` per new address
//! to each watcher of the group, and a rule change one `SecurityGroupRuleUpsert`
//! (or `…Remove`) to each user: work in proportion to the hosts concerned,
//! whatever the size of the group. A host's first
//! use of a group (or first rule naming a remote group) sends it whole.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use model::{SecurityGroup, SecurityGroupRule};

use super::{Compiler, Emitter, PortEntry};
use crate::protocol::{Change, PortSecuritySpec, RuleRemote, RuleSpec, SecurityGroupSpec};
use crate::spec::rule_spec;

/// Everything under one security group id. Rules, ports and other groups'
/// rules may name a group the compiler does not know (not yet put, or
/// deleted): the entry lives while anything names it.
#[derive(Debug, Default)]
pub(super) struct GroupEntry {
    /// `Some(stateful)` once the group itself is known. An unknown group has
    /// no rules on any host (its users filter with the rest of their groups),
    /// but its member set is kept all the same.
    pub(super) stateful: Option<bool>,
    /// Its rules by id: sorted by id, so equal groups compare equal.
    pub(super) rules: BTreeMap<String, RuleSpec>,
    pub(super) users: BTreeMap<String, usize>,
    pub(super) watchers: BTreeMap<String, usize>,
    pub(super) members: BTreeMap<IpNet, usize>,
}

impl GroupEntry {
    fn is_unused(&self) -> bool {
        self.stateful.is_none()
            && self.rules.is_empty()
            && self.users.is_empty()
            && self.watchers.is_empty()
            && self.members.is_empty()
    }

    fn spec(&self) -> Option<SecurityGroupSpec> {
        Some(SecurityGroupSpec {
            stateful: self.stateful?,
            rules: self.rules.values().cloned().collect(),
        })
    }

    /// The remote groups and address groups its rules name, once per rule.
    fn remotes(&self) -> Vec<Remote> {
        self.rules.values().filter_map(remote_of).collect()
    }

    fn member_set(&self) -> BTreeSet<IpNet> {
        self.members.keys().copied().collect()
    }
}

/// What a rule names whose addresses the hosts holding the rule must hold:
/// a group's member set, or an address group's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Remote {
    Group(String),
    AddressGroup(String),
}

fn remote_of(rule: &RuleSpec) -> Option<Remote> {
    match &rule.remote {
        RuleRemote::Group(g) => Some(Remote::Group(g.clone())),
        RuleRemote::AddressGroup(g) => Some(Remote::AddressGroup(g.clone())),
        RuleRemote::Any | RuleRemote::Prefix(_) => None,
    }
}

/// What the security side needs of a port, before or after a change.
#[derive(Debug)]
pub(super) struct SecurityView {
    /// `binding:host_id`, empty when unbound.
    host: String,
    spec: PortSecuritySpec,
    /// The groups it is in (empty when port security is disabled).
    groups: BTreeSet<String>,
    /// Its addresses in those groups' member sets.
    members: BTreeSet<IpNet>,
}

impl SecurityView {
    pub(super) fn of(port: &PortEntry) -> Self {
        SecurityView {
            host: port.host.clone(),
            spec: port.security.clone(),
            groups: port.groups.clone(),
            members: port.members.clone(),
        }
    }

    fn uses(&self, host: &str, group: &str) -> bool {
        !self.host.is_empty() && self.host == host && self.groups.contains(group)
    }

    fn stands_for(&self, group: &str, member: &IpNet) -> bool {
        self.groups.contains(group) && self.members.contains(member)
    }
}

impl Compiler {
    // ---- ports ------------------------------------------------------------

    /// A port was put or deleted (`old`: how it was, if it was; the port as
    /// it is now is in `self.ports`). In order: the addresses it adds to its
    /// groups' member sets (one element each), the groups its new host starts
    /// using, its port security, the groups its old host stops using, and the
    /// addresses it takes out of member sets (so that a host dropping a set
    /// does not first hear of its elements leaving).
    pub(super) fn port_security_changed(
        &mut self,
        id: &str,
        old: Option<SecurityView>,
        out: &mut Emitter,
    ) {
        let new = self.ports.get(id).map(SecurityView::of);
        let empty = || SecurityView {
            host: String::new(),
            spec: PortSecuritySpec {
                enabled: false,
                security_groups: Vec::new(),
                allowed_sources: Vec::new(),
            },
            groups: BTreeSet::new(),
            members: BTreeSet::new(),
        };
        let old = old.unwrap_or_else(empty);
        let existed = self.ports.contains_key(id);
        let new = new.unwrap_or_else(empty);

        for group in &new.groups {
            for member in &new.members {
                if !old.stands_for(group, member) {
                    self.member_add(group, *member, out);
                }
            }
        }
        if !new.host.is_empty() {
            for group in &new.groups {
                if !old.uses(&new.host, group) {
                    self.use_group(&new.host, group, out);
                }
            }
            if existed && (new.host != old.host || new.spec != old.spec) {
                out.push(
                    &new.host,
                    Change::PortSecurityUpsert {
                        port_id: id.to_owned(),
                        spec: new.spec.clone(),
                    },
                );
            }
        }
        if !old.host.is_empty() {
            if old.host != new.host {
                out.push(
                    &old.host,
                    Change::PortSecurityRemove {
                        port_id: id.to_owned(),
                    },
                );
            }
            for group in &old.groups {
                if !new.uses(&old.host, group) {
                    self.unuse_group(&old.host, group, out);
                }
            }
        }
        for group in &old.groups {
            for member in &old.members {
                if !new.stands_for(group, member) {
                    self.member_remove(group, member, out);
                }
            }
        }
        if !old.host.is_empty() {
            self.forget_host_if_unused(&old.host);
        }
    }

    fn member_add(&mut self, group: &str, member: IpNet, out: &mut Emitter) {
        let entry = self.groups.entry(group.to_owned()).or_default();
        let count = entry.members.entry(member).or_default();
        *count += 1;
        if *count == 1 && out.recording() {
            for host in entry.watchers.keys() {
                out.push(
                    host,
                    Change::RemoteGroupMemberAdd {
                        group_id: group.to_owned(),
                        member,
                    },
                );
            }
        }
    }

    fn member_remove(&mut self, group: &str, member: &IpNet, out: &mut Emitter) {
        let Some(entry) = self.groups.get_mut(group) else {
            return;
        };
        let Some(count) = entry.members.get_mut(member) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            entry.members.remove(member);
            for host in entry.watchers.keys() {
                out.push(
                    host,
                    Change::RemoteGroupMemberRemove {
                        group_id: group.to_owned(),
                        member: *member,
                    },
                );
            }
        }
        self.forget_group_if_unused(group);
    }

    /// One more local port of `host` uses `group`.
    fn use_group(&mut self, host: &str, group: &str, out: &mut Emitter) {
        let entry = self.groups.entry(group.to_owned()).or_default();
        let count = entry.users.entry(host.to_owned()).or_default();
        *count += 1;
        if *count > 1 {
            return;
        }
        self.hosts
            .entry(host.to_owned())
            .or_default()
            .groups
            .insert(group.to_owned());
        self.group_shown(host, group, out);
    }

    /// One local port of `host` fewer uses `group`.
    fn unuse_group(&mut self, host: &str, group: &str, out: &mut Emitter) {
        let Some(count) = self
            .groups
            .get_mut(group)
            .and_then(|e| e.users.get_mut(host))
        else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        if let Some(entry) = self.groups.get_mut(group) {
            entry.users.remove(host);
        }
        if let Some(h) = self.hosts.get_mut(host) {
            h.groups.remove(group);
        }
        self.group_hidden(host, group, out);
        self.forget_group_if_unused(group);
    }

    /// A host that uses a known group now holds it: the member sets its rules
    /// name, then its rules.
    fn group_shown(&mut self, host: &str, group: &str, out: &mut Emitter) {
        let Some(entry) = self.groups.get(group) else {
            return;
        };
        let Some(spec) = entry.spec() else {
            return;
        };
        for remote in entry.remotes() {
            self.watch(host, &remote, out);
        }
        out.push(
            host,
            Change::SecurityGroupUpsert {
                group_id: group.to_owned(),
                spec,
            },
        );
    }

    /// Undo [`Compiler::group_shown`]: the rules go, then the member sets only they named.
    fn group_hidden(&mut self, host: &str, group: &str, out: &mut Emitter) {
        let Some(entry) = self.groups.get(group) else {
            return;
        };
        if entry.stateful.is_none() {
            return;
        }
        let remotes = entry.remotes();
        out.push(
            host,
            Change::SecurityGroupRemove {
                group_id: group.to_owned(),
            },
        );
        for remote in remotes {
            self.unwatch(host, &remote, out);
        }
    }

    /// One more rule held by `host` names `remote`.
    fn watch(&mut self, host: &str, remote: &Remote, out: &mut Emitter) {
        match remote {
            Remote::Group(g) => self.watch_group(host, g, out),
            Remote::AddressGroup(g) => self.watch_address_group(host, g, out),
        }
    }

    /// One rule fewer held by `host` names `remote`.
    fn unwatch(&mut self, host: &str, remote: &Remote, out: &mut Emitter) {
        match remote {
            Remote::Group(g) => self.unwatch_group(host, g, out),
            Remote::AddressGroup(g) => self.unwatch_address_group(host, g, out),
        }
    }

    /// One more rule held by `host` names `group` as its remote group.
    fn watch_group(&mut self, host: &str, group: &str, out: &mut Emitter) {
        let entry = self.groups.entry(group.to_owned()).or_default();
        if !watch(&mut entry.watchers, host) {
            return;
        }
        if out.recording() {
            out.push(
                host,
                Change::RemoteGroupUpsert {
                    group_id: group.to_owned(),
                    members: entry.member_set(),
                },
            );
        }
        self.hosts
            .entry(host.to_owned())
            .or_default()
            .remote_groups
            .insert(group.to_owned());
    }

    fn unwatch_group(&mut self, host: &str, group: &str, out: &mut Emitter) {
        let Some(entry) = self.groups.get_mut(group) else {
            return;
        };
        if !unwatch(&mut entry.watchers, host) {
            return;
        }
        out.push(
            host,
            Change::RemoteGroupRemove {
                group_id: group.to_owned(),
            },
        );
        if let Some(h) = self.hosts.get_mut(host) {
            h.remote_groups.remove(group);
        }
        self.forget_group_if_unused(group);
    }

    fn forget_group_if_unused(&mut self, id: &str) {
        if self.groups.get(id).is_some_and(GroupEntry::is_unused) {
            self.groups.remove(id);
        }
    }

    /// The hosts using a group, in name order.
    fn users_of(&self, group: &str) -> Vec<String> {
        self.groups
            .get(group)
            .map(|e| e.users.keys().cloned().collect())
            .unwrap_or_default()
    }

    // ---- groups -----------------------------------------------------------

    pub(super) fn put_group(&mut self, group: &SecurityGroup, out: &mut Emitter) {
        let id = &group.std.id;
        let entry = self.groups.entry(id.clone()).or_default();
        match entry.stateful.replace(group.stateful) {
            // Unknown until now: its users start holding it.
            None => {
                for host in self.users_of(id) {
                    self.group_shown(&host, id, out);
                }
            }
            Some(previous) if previous != group.stateful => {
                let spec = entry.spec();
                for host in entry.users.keys() {
                    if let Some(spec) = &spec {
                        out.push(
                            host,
                            Change::SecurityGroupUpsert {
                                group_id: id.clone(),
                                spec: spec.clone(),
                            },
                        );
                    }
                }
            }
            Some(_) => {}
        }
    }

    pub(super) fn delete_group(&mut self, id: &str, out: &mut Emitter) {
        if self
            .groups
            .get(id)
            .is_none_or(|entry| entry.stateful.is_none())
        {
            return;
        }
        for host in self.users_of(id) {
            self.group_hidden(&host, id, out);
        }
        if let Some(entry) = self.groups.get_mut(id) {
            entry.stateful = None;
        }
        self.forget_group_if_unused(id);
    }

    // ---- rules ------------------------------------------------------------

    pub(super) fn put_rule(&mut self, rule: &SecurityGroupRule, out: &mut Emitter) {
        let id = &rule.std.id;
        let group = &rule.security_group_id;
        // A rule that changed groups leaves the old one first.
        if self
            .rule_groups
            .get(id)
            .is_some_and(|previous| previous != group)
        {
            self.delete_rule(id, out);
        }
        self.rule_groups.insert(id.clone(), group.clone());
        let spec = rule_spec(rule);
        let entry = self.groups.entry(group.clone()).or_default();
        let old = entry.rules.insert(id.clone(), spec.clone());
        if old.as_ref() == Some(&spec) {
            return;
        }
        self.rule_changed(group, old.as_ref(), Some(&spec), out);
    }

    pub(super) fn delete_rule(&mut self, id: &str, out: &mut Emitter) {
        let Some(group) = self.rule_groups.remove(id) else {
            return;
        };
        let old = self
            .groups
            .get_mut(&group)
            .and_then(|entry| entry.rules.remove(id));
        if old.is_some() {
            self.rule_changed(&group, old.as_ref(), None, out);
        }
        self.forget_group_if_unused(&group);
    }

    /// A rule of `group` went from `old` to `new` (already stored): the
    /// group's users hold the new member set, then the rule, then drop the
    /// member set only the old rule named. One rule travels, not the group.
    fn rule_changed(
        &mut self,
        group: &str,
        old: Option<&RuleSpec>,
        new: Option<&RuleSpec>,
        out: &mut Emitter,
    ) {
        if self.groups.get(group).is_none_or(|e| e.stateful.is_none()) {
            return; // not shown to anyone until the group itself is known
        }
        let users = self.users_of(group);
        let old_remote = old.and_then(remote_of);
        let new_remote = new.and_then(remote_of);
        for host in &users {
            if let Some(remote) = &new_remote {
                self.watch(host, remote, out);
            }
            let change = match (new, old) {
                (Some(rule), _) => Change::SecurityGroupRuleUpsert {
                    group_id: group.to_owned(),
                    rule: rule.clone(),
                },
                (None, Some(rule)) => Change::SecurityGroupRuleRemove {
                    group_id: group.to_owned(),
                    rule_id: rule.id.clone(),
                },
                (None, None) => continue,
            };
            out.push(host, change);
            if let Some(remote) = &old_remote {
                self.unwatch(host, remote, out);
            }
        }
    }

    // ---- snapshots --------------------------------------------------------

    /// The security part of a host's state, into `state`.
    pub(super) fn security_snapshot(&self, host: &str, state: &mut crate::protocol::HostState) {
        let Some(entry) = self.hosts.get(host) else {
            return;
        };
        for network_id in &entry.networks {
            let Some(ids) = self
                .networks
                .get(network_id)
                .and_then(|n| n.bound_ports.get(host))
            else {
                continue;
            };
            for id in ids {
                if let Some(port) = self.ports.get(id) {
                    state
                        .port_security
                        .insert(id.clone(), port.security.clone());
                }
            }
        }
        for group in &entry.groups {
            if let Some(spec) = self.groups.get(group).and_then(GroupEntry::spec) {
                state.security_groups.insert(group.clone(), spec);
            }
        }
        for group in &entry.remote_groups {
            if let Some(g) = self.groups.get(group) {
                state.remote_groups.insert(group.clone(), g.member_set());
            }
        }
        self.address_group_snapshot(&entry.address_groups, state);
    }
}

/// One more of `host`'s rules names a set (a remote group's members, an
/// address group's addresses): whether it is the first, so the host now
/// needs the set.
pub(super) fn watch(watchers: &mut BTreeMap<String, usize>, host: &str) -> bool {
    let count = watchers.entry(host.to_owned()).or_default();
    *count += 1;
    *count == 1
}

/// One fewer: whether it was the last, so the host no longer needs the set.
pub(super) fn unwatch(watchers: &mut BTreeMap<String, usize>, host: &str) -> bool {
    let Some(count) = watchers.get_mut(host) else {
        return false;
    };
    *count -= 1;
    if *count > 0 {
        return false;
    }
    watchers.remove(host);
    true
}
