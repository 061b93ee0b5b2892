//! RBAC policies: who besides its owner may use a network, a security group
//! or a subnet pool, and the checks that no project loses access to an
//! object its resources still use. The one source of truth for sharing: a
//! network's `shared` and `router:external`, and a pool's `shared`, are read
//! from the grants indexed here. What a grant lets a project do is decided
//! by each resource's module, which asks [`Cloud::granted`].

use std::collections::BTreeSet;

use super::{Caller, Cloud, Facet, Record, stored};
use crate::{
    Kind, ModelError, Network, OWNER_ROUTER_GATEWAY, ObjectType, RbacAction, RbacPolicy,
    RbacPolicyCreate, RbacPolicyUpdate, Resource, SecurityGroup, Standard, SubnetPool, Timestamp,
    WILDCARD,
};

/// What one policy grants: `(object type, action, target project or *)`,
/// unique per object (Neutron's unique constraint).
pub(crate) type Grant = (ObjectType, RbacAction, String);

impl Record for RbacPolicy {
    stored!(RbacPolicy in rbac_policies);

    // Visible to its owner and admins only (the default): a target project
    // sees the object shared with it, never the policy (Neutron's
    // `get_rbac_policy` is admin-or-owner).

    fn index(&self, cloud: &mut Cloud) {
        cloud
            .object_grants
            .entry(self.object_id.clone())
            .or_default()
            .insert(self.grant(), self.std.id.clone());
    }

    /// Its object is found by the project it is granted to, so that a
    /// tenant's list reads what is shared with it without a scan.
    fn facets_of_others(&self, each: &mut dyn FnMut(Kind, Facet, &str, &str)) {
        let facet = Facet::Granted(self.action);
        each(
            self.object_type.kind(),
            facet,
            &self.target_project,
            &self.object_id,
        );
    }

    fn unindex(&self, cloud: &mut Cloud) {
        if let Some(grants) = cloud.object_grants.get_mut(&self.object_id) {
            if grants.get(&self.grant()) == Some(&self.std.id) {
                grants.remove(&self.grant());
            }
            if grants.is_empty() {
                cloud.object_grants.remove(&self.object_id);
            }
        }
    }
}

impl RbacPolicy {
    fn grant(&self) -> Grant {
        (self.object_type, self.action, self.target_project.clone())
    }
}

impl Cloud {
    pub fn rbac_policies(&self) -> impl Iterator<Item = &RbacPolicy> {
        self.rbac_policies.values()
    }

    pub fn rbac_policy(&self, id: &str) -> Option<&RbacPolicy> {
        self.rbac_policies.get(id)
    }

    /// Whether `project` holds `action` on an object through a policy: one
    /// naming it, or the wildcard. (Its owner needs none.)
    pub fn granted(&self, t: ObjectType, id: &str, action: RbacAction, project: &str) -> bool {
        self.grant_of(t, id, action, WILDCARD).is_some()
            || self.grant_of(t, id, action, project).is_some()
    }

    /// `shared` as `project` sees the object: shared with it or with
    /// everyone (Neutron's `is_network_shared`).
    pub fn shared_with(&self, t: ObjectType, id: &str, project: &str) -> bool {
        self.granted(t, id, RbacAction::AccessAsShared, project)
    }

    /// `router:external`: the network has an `access_as_external` policy
    /// (Neutron makes a network external with its first one and ordinary
    /// when its last one goes).
    pub fn is_external(&self, network_id: &str) -> bool {
        self.object_grants.get(network_id).is_some_and(|grants| {
            grants
                .keys()
                .any(|(t, a, _)| *t == ObjectType::Network && *a == RbacAction::AccessAsExternal)
        })
    }

    /// The id of the policy granting exactly this, if there is one.
    pub(super) fn grant_of(
        &self,
        t: ObjectType,
        id: &str,
        action: RbacAction,
        target: &str,
    ) -> Option<&String> {
        self.object_grants
            .get(id)?
            .get(&(t, action, target.to_owned()))
    }

    /// Record a policy (no checks: the callers made them).
    pub(super) fn put_policy(
        &mut self,
        project_id: &str,
        object: (ObjectType, &str),
        action: RbacAction,
        target: &str,
        now: Timestamp,
    ) -> RbacPolicy {
        let policy = RbacPolicy {
            std: Standard::new(self.rng.uuid(), project_id.to_owned(), now),
            object_type: object.0,
            object_id: object.1.to_owned(),
            action,
            target_project: target.to_owned(),
        };
        self.put(Resource::RbacPolicy(policy.clone()));
        policy
    }

    /// Remove the policies granting `action` on an object (all of them
    /// with `None`), as its deletion or `router:external: false` does.
    pub(super) fn remove_policies(&mut self, object_id: &str, action: Option<RbacAction>) {
        let ids: Vec<String> = self
            .object_grants
            .get(object_id)
            .into_iter()
            .flatten()
            .filter(|((_, a, _), _)| action.is_none_or(|wanted| *a == wanted))
            .map(|(_, id)| id.clone())
            .collect();
        for id in ids {
            self.remove(Kind::RbacPolicy, &id);
        }
    }

    /// The owner of the object a policy names, if `caller` may see it.
    fn object_owner(&self, caller: &Caller, t: ObjectType, id: &str) -> Result<String, ModelError> {
        let owner = match t {
            ObjectType::Network => self.visible_as::<Network>(caller, id)?.std.project_id,
            ObjectType::SecurityGroup => {
                self.visible_as::<SecurityGroup>(caller, id)?.std.project_id
            }
            ObjectType::SubnetPool => self.visible_as::<SubnetPool>(caller, id)?.std.project_id,
        };
        Ok(owner)
    }

    /// The projects whose resources use the object through `action`: ports
    /// on a network (or in a group), routers with their gateway on an
    /// external network, subnets from a pool. Vnet's own ports (floating
    /// IPs, gateways) belong to no project and count for none.
    fn dependents(&self, t: ObjectType, id: &str, action: RbacAction) -> BTreeSet<&str> {
        let ports = |ids: Option<&BTreeSet<String>>| {
            ids.into_iter()
                .flatten()
                .filter_map(|p| self.ports.get(p))
                .collect::<Vec<_>>()
        };
        let projects: Vec<&str> = match (t, action) {
            (ObjectType::Network, RbacAction::AccessAsShared) => ports(self.network_ports.get(id))
                .into_iter()
                .map(|p| p.std.project_id.as_str())
                .collect(),
            (ObjectType::Network, RbacAction::AccessAsExternal) => {
                ports(self.network_ports.get(id))
                    .into_iter()
                    .filter(|p| p.device_owner == OWNER_ROUTER_GATEWAY)
                    .filter_map(|p| self.routers.get(&p.device_id))
                    .map(|r| r.std.project_id.as_str())
                    .collect()
            }
            (ObjectType::SecurityGroup, _) => ports(self.group_ports.get(id))
                .into_iter()
                .map(|p| p.std.project_id.as_str())
                .collect(),
            (ObjectType::SubnetPool, _) => self
                .pool_subnets
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|s| self.subnets.get(s))
                .map(|s| s.std.project_id.as_str())
                .collect(),
        };
        projects.into_iter().filter(|p| !p.is_empty()).collect()
    }

    /// After a grant to `lost` (a project, or everyone) went away: whether
    /// some project still uses the object through `action` without its
    /// owner's project, a remaining grant, or (for `router:external`) the
    /// network still being external. Cost: the object's users, once.
    fn access_lost(
        &self,
        (t, id, owner): (ObjectType, &str, &str),
        action: RbacAction,
        lost: &str,
    ) -> bool {
        let dependents = self.dependents(t, id, action);
        let lost_by = |p: &str| {
            p != owner && (lost == WILDCARD || p == lost) && !self.granted(t, id, action, p)
        };
        if dependents.iter().any(|p| lost_by(p)) {
            return true;
        }
        // No external policy left: the network is no longer external, and
        // no gateway at all (its owner's too) may stay on it.
        action == RbacAction::AccessAsExternal && !self.is_external(id) && !dependents.is_empty()
    }

    /// Refuse the change just made if it cut a project off (see `access_lost`).
    fn check_access_kept(&self, policy: &RbacPolicy, lost: &str) -> Result<(), ModelError> {
        let (t, id) = (policy.object_type, policy.object_id.as_str());
        let Some(owner) = self.owner_of(t, id) else {
            return Ok(());
        };
        if !self.access_lost((t, id, &owner), policy.action, lost) {
            return Ok(());
        }
        let details = match (t, policy.action) {
            (ObjectType::Network, RbacAction::AccessAsShared) => format!(
                "Unable to reconfigure sharing settings for network {id}. Multiple projects are using it."
            ),
            (ObjectType::Network, RbacAction::AccessAsExternal) => {
                "There are routers attached to this network that depend on this policy for access."
                    .to_owned()
            }
            _ => format!("project_id={lost}"),
        };
        Err(ModelError::RbacPolicyInUse {
            object_id: id.to_owned(),
            details,
        })
    }

    fn owner_of(&self, t: ObjectType, id: &str) -> Option<String> {
        let std = match t {
            ObjectType::Network => &self.networks.get(id)?.std,
            ObjectType::SecurityGroup => &self.groups.get(id)?.std,
            ObjectType::SubnetPool => &self.subnet_pools.get(id)?.std,
        };
        Some(std.project_id.clone())
    }

    /// Whether the network's `shared` may go false: every project with a
    /// port on it keeps access by a policy of its own (or owns it).
    pub(super) fn check_unshare_network(&self, network: &Network) -> Result<(), ModelError> {
        let id = network.std.id.as_str();
        let key = (ObjectType::Network, id, network.std.project_id.as_str());
        if self.access_lost(key, RbacAction::AccessAsShared, WILDCARD) {
            return Err(ModelError::InvalidSharedSetting {
                network: id.to_owned(),
            });
        }
        Ok(())
    }

    pub fn create_rbac_policy(
        &mut self,
        caller: &Caller,
        req: RbacPolicyCreate,
        now: Timestamp,
    ) -> Result<RbacPolicy, ModelError> {
        let project_id = self.project_for(caller, req.project_id)?;
        check_target(caller, &req.target_project, "create")?;
        self.check_quota(&project_id, Kind::RbacPolicy)?;
        let t = req.object_type;
        let owner = self.object_owner(caller, t, &req.object_id)?;
        check_object_owner(caller, &owner)?;
        let action = RbacAction::parse(&req.action)
            .filter(|a| t.actions().contains(a))
            .ok_or_else(|| invalid_action(&req.action, t))?;
        if self
            .grant_of(t, &req.object_id, action, &req.target_project)
            .is_some()
        {
            return Err(ModelError::DuplicateRbacPolicy);
        }
        let object = (t, req.object_id.as_str());
        let policy = self.put_policy(&project_id, object, action, &req.target_project, now);
        self.touch_object(&policy, now);
        Ok(policy)
    }

    /// Only `target_tenant` changes. Retargeting is giving the new project
    /// access and taking it from the old one, refused as deleting would be.
    pub fn update_rbac_policy(
        &mut self,
        caller: &Caller,
        id: &str,
        req: RbacPolicyUpdate,
        now: Timestamp,
    ) -> Result<RbacPolicy, ModelError> {
        let mut policy: RbacPolicy = self.writable_as(caller, id)?;
        let Some(target) = req.target_project else {
            return Ok(policy);
        };
        check_target(caller, &target, "update")?;
        if let Some(owner) = self.owner_of(policy.object_type, &policy.object_id) {
            check_object_owner(caller, &owner)?;
        }
        if target == policy.target_project {
            return Ok(policy);
        }
        let (t, object, action) = (policy.object_type, &policy.object_id, policy.action);
        if self.grant_of(t, object, action, &target).is_some() {
            return Err(ModelError::DuplicateRbacPolicy);
        }
        let old = std::mem::replace(&mut policy.target_project, target);
        self.put(Resource::RbacPolicy(policy.clone()));
        self.check_access_kept(&policy, &old)?;
        self.touch_object(&policy, now);
        Ok(policy)
    }

    pub fn delete_rbac_policy(
        &mut self,
        caller: &Caller,
        id: &str,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let policy: RbacPolicy = self.writable_as(caller, id)?;
        self.remove(Kind::RbacPolicy, id);
        self.check_access_kept(&policy, &policy.target_project)?;
        self.touch_object(&policy, now);
        Ok(())
    }

    /// A network's revision counts its policies' changes, as Neutron's
    /// (`revises_on_change`); groups' and pools' do not.
    fn touch_object(&mut self, policy: &RbacPolicy, now: Timestamp) {
        if policy.object_type != ObjectType::Network {
            return;
        }
        let id = &policy.object_id;
        // A network that stops being external stops being the default
        // external one (auto-allocated-topology), as an update would say.
        if !self.is_external(id)
            && let Some(mut n) = self.networks.get(id).filter(|n| n.is_default).cloned()
        {
            n.is_default = false;
            n.std.touch(now);
            self.put(Resource::Network(n));
            return;
        }
        self.touch(Kind::Network, id, now);
    }

    /// Bring records written by an older vnet up to date; run once when
    /// the server loads the store, its changes written like any other.
    /// Networks and pools stored before RBAC policies said "shared" and
    /// "external" with flags: each flag becomes the wildcard policy it
    /// means (owned by the object's project, as Neutron makes it), and the
    /// record is rewritten without it, so the flags are read at most once.
    pub fn upgrade(&mut self, now: Timestamp) -> Result<(), ModelError> {
        let mut networks: Vec<Network> = self
            .networks
            .values()
            .filter(|n| n.legacy_shared || n.legacy_external)
            .cloned()
            .collect();
        networks.sort_by(|a, b| a.std.id.cmp(&b.std.id));
        for mut n in networks {
            let object = (ObjectType::Network, n.std.id.as_str());
            for (flag, action) in [
                (n.legacy_shared, RbacAction::AccessAsShared),
                (n.legacy_external, RbacAction::AccessAsExternal),
            ] {
                if flag
                    && self
                        .grant_of(object.0, object.1, action, WILDCARD)
                        .is_none()
                {
                    self.put_policy(&n.std.project_id, object, action, WILDCARD, now);
                }
            }
            (n.legacy_shared, n.legacy_external) = (false, false);
            self.put(Resource::Network(n));
        }
        let mut pools: Vec<SubnetPool> = self
            .subnet_pools
            .values()
            .filter(|p| p.legacy_shared)
            .cloned()
            .collect();
        pools.sort_by(|a, b| a.std.id.cmp(&b.std.id));
        for mut pool in pools {
            let object = (ObjectType::SubnetPool, pool.std.id.as_str());
            let action = RbacAction::AccessAsShared;
            if self
                .grant_of(object.0, object.1, action, WILDCARD)
                .is_none()
            {
                self.put_policy(&pool.std.project_id, object, action, WILDCARD, now);
            }
            pool.legacy_shared = false;
            self.put(Resource::SubnetPool(pool));
        }
        Ok(())
    }
}

/// Sharing with every project is an admin's (Neutron's `restrict_wildcard`).
fn check_target(caller: &Caller, target: &str, op: &str) -> Result<(), ModelError> {
    if target == WILDCARD && !caller.is_admin {
        return Err(ModelError::Forbidden(format!(
            "(rule:{op}_rbac_policy:target_tenant) is disallowed by policy"
        )));
    }
    Ok(())
}

/// Only the object's owner or an admin makes policies on it.
fn check_object_owner(caller: &Caller, owner: &str) -> Result<(), ModelError> {
    if !caller.owns(owner) {
        return Err(ModelError::invalid(
            "Only admins can manipulate policies on objects they do not own",
        ));
    }
    Ok(())
}

fn invalid_action(action: &str, t: ObjectType) -> ModelError {
    // Python's repr of a tuple of strings: ('a',) or ('a', 'b').
    let names: Vec<String> = t
        .actions()
        .iter()
        .map(|a| format!("'{}'", a.as_str()))
        .collect();
    let valid = if names.len() == 1 {
        format!("({},)", names.join(""))
    } else {
        format!("({})", names.join(", "))
    };
    ModelError::InvalidActionForType {
        action: action.to_owned(),
        object_type: t.as_str(),
        valid,
    }
}
