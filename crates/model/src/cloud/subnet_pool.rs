//! Subnet pools: their prefixes and bounds, the default pool of each IP
//! version, and allocating a subnet's CIDR from a pool (so that no two
//! subnets of one pool ever overlap). Which subnets a pool holds is the
//! subnet's index entry (`pool_subnets`); this module only reads it.

use ipnet::IpNet;

use super::{Caller, Cloud, FacetIds, Record, set, stored};
use crate::subnet_pool::{self, PrefixSet};
use crate::{
    Kind, ModelError, ObjectType, RbacAction, Resource, SubnetPool, SubnetPoolCreate,
    SubnetPoolUpdate, Timestamp, WILDCARD,
};

impl Record for SubnetPool {
    stored!(SubnetPool in subnet_pools);

    /// Its project's, and any project's it is shared with (RBAC).
    fn visible_to(&self, cloud: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.std.project_id)
            || cloud.shared_with(ObjectType::SubnetPool, &self.std.id, &caller.project_id)
    }

    /// Its project's, and those shared with it or with everyone.
    fn candidates<'c>(cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        cloud.owned_or_shared(Kind::SubnetPool, caller)
    }

    fn index(&self, cloud: &mut Cloud) {
        if self.is_default {
            cloud
                .default_pools
                .insert(self.ip_version, self.std.id.clone());
        }
    }

    fn unindex(&self, cloud: &mut Cloud) {
        if cloud.default_pools.get(&self.ip_version) == Some(&self.std.id) {
            cloud.default_pools.remove(&self.ip_version);
        }
    }
}

/// The size of the allocation a subnet asks for.
pub(super) enum Request {
    /// Any free CIDR of this prefix length.
    Any(u32),
    /// Exactly this CIDR.
    Specific(IpNet),
}

impl Cloud {
    pub fn subnet_pools(&self) -> impl Iterator<Item = &SubnetPool> {
        self.subnet_pools.values()
    }

    pub fn subnet_pool(&self, id: &str) -> Option<&SubnetPool> {
        self.subnet_pools.get(id)
    }

    /// The default pool of `ip_version`, if `caller` may see it.
    pub(super) fn default_pool(&self, caller: &Caller, ip_version: u8) -> Option<&SubnetPool> {
        self.default_pools
            .get(&ip_version)
            .and_then(|id| self.subnet_pools.get(id))
            .filter(|p| p.visible_to(self, caller))
    }

    /// The CIDRs of the subnets allocated from a pool.
    fn allocated(&self, pool: &SubnetPool) -> PrefixSet {
        let cidrs: Vec<IpNet> = self
            .pool_subnets
            .get(&pool.std.id)
            .into_iter()
            .flatten()
            .filter_map(|s| self.subnets.get(s))
            .map(|s| s.cidr)
            .collect();
        PrefixSet::of(pool.ip_version == 4, &cidrs)
    }

    pub fn create_subnet_pool(
        &mut self,
        caller: &Caller,
        req: SubnetPoolCreate,
        now: Timestamp,
    ) -> Result<SubnetPool, ModelError> {
        let project_id = self.project_for(caller, req.project_id)?;
        if req.shared == Some(true) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:create_subnetpool:shared) is disallowed by policy".into(),
            ));
        }
        if req.is_default == Some(true) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:create_subnetpool:is_default) is disallowed by policy".into(),
            ));
        }
        self.check_quota(&project_id, Kind::SubnetPool)?;
        let (ip_version, prefixes) = subnet_pool::merge_prefixes(&req.prefixes)?;
        let min = req
            .min_prefixlen
            .unwrap_or(subnet_pool::default_min_prefixlen(ip_version).into());
        let max = req
            .max_prefixlen
            .unwrap_or(subnet_pool::family_bits(ip_version).into());
        let default = req.default_prefixlen.unwrap_or(min);
        subnet_pool::check_bounds(ip_version, min, max, default)?;
        let is_default = req.is_default.unwrap_or(false);
        if is_default {
            self.check_no_default(ip_version, None)?;
        }
        let pool = SubnetPool {
            std: self.standard(project_id, req.name, req.description, req.tags, now)?,
            ip_version,
            prefixes,
            // `check_bounds` kept all three within the family's width.
            default_prefixlen: prefix_len(default),
            min_prefixlen: prefix_len(min),
            max_prefixlen: prefix_len(max),
            default_quota: req.default_quota,
            legacy_shared: false,
            is_default,
        };
        self.put(Resource::SubnetPool(pool.clone()));
        if req.shared == Some(true) {
            // `shared` is the wildcard policy, made by the pool's owner.
            let object = (ObjectType::SubnetPool, pool.std.id.as_str());
            let owner = pool.std.project_id.as_str();
            self.put_policy(owner, object, RbacAction::AccessAsShared, WILDCARD, now);
        }
        Ok(pool)
    }

    /// One default pool per IP version (`except`: the pool being updated).
    fn check_no_default(&self, ip_version: u8, except: Option<&str>) -> Result<(), ModelError> {
        match self.default_pools.get(&ip_version) {
            Some(id) if Some(id.as_str()) != except => Err(ModelError::invalid(
                "A default subnetpool for this IP family has already been set. Only one default may exist per IP family",
            )),
            _ => Ok(()),
        }
    }

    pub fn update_subnet_pool(
        &mut self,
        caller: &Caller,
        id: &str,
        req: SubnetPoolUpdate,
        now: Timestamp,
    ) -> Result<SubnetPool, ModelError> {
        let mut pool: SubnetPool = self.writable_as(caller, id)?;
        if req.is_default.is_some_and(|d| d != pool.is_default) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:update_subnetpool:is_default) is disallowed by policy".into(),
            ));
        }
        if let Some(given) = req.prefixes {
            // Prefixes only grow: what the pool had (and its subnets hold)
            // must stay in it. Checked first, as Neutron does, so a list of
            // only the other IP version (or none) fails here.
            let v4 = pool.ip_version == 4;
            if !PrefixSet::of(v4, &given).contains_all(&PrefixSet::of(v4, &pool.prefixes)) {
                return Err(ModelError::IllegalSubnetPoolPrefixUpdate {
                    msg: "Existing prefixes must be a subset of the new prefixes".into(),
                });
            }
            // Whatever else it holds must be of the same version.
            pool.prefixes = subnet_pool::merge_prefixes(&given)?.1;
        }
        let min = req.min_prefixlen.unwrap_or(pool.min_prefixlen.into());
        let max = req.max_prefixlen.unwrap_or(pool.max_prefixlen.into());
        let default = req
            .default_prefixlen
            .unwrap_or(pool.default_prefixlen.into());
        subnet_pool::check_bounds(pool.ip_version, min, max, default)?;
        (pool.min_prefixlen, pool.max_prefixlen) = (prefix_len(min), prefix_len(max));
        pool.default_prefixlen = prefix_len(default);
        if req.is_default == Some(true) {
            self.check_no_default(pool.ip_version, Some(id))?;
        }
        set(&mut pool.is_default, req.is_default);
        if let Some(q) = req.default_quota {
            pool.default_quota = Some(q);
        }
        set(&mut pool.std.name, req.name);
        set(&mut pool.std.description, req.description);
        pool.std.touch(now);
        self.put(Resource::SubnetPool(pool.clone()));
        Ok(pool)
    }

    pub fn delete_subnet_pool(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        self.writable(caller, Kind::SubnetPool, id)?;
        if self.pool_subnets.get(id).is_some_and(|s| !s.is_empty()) {
            return Err(ModelError::SubnetPoolDeleteError {
                reason: "Subnet pool has existing allocations".into(),
            });
        }
        self.remove_policies(id, None);
        self.remove(Kind::SubnetPool, id);
        Ok(())
    }

    /// `add_prefixes`: the pool's prefixes with `given` merged in.
    pub fn add_subnet_pool_prefixes(
        &mut self,
        caller: &Caller,
        id: &str,
        given: Vec<IpNet>,
        now: Timestamp,
    ) -> Result<SubnetPool, ModelError> {
        let pool: SubnetPool = self.writable_as(caller, id)?;
        if given.is_empty() {
            return Ok(pool);
        }
        let mut prefixes = pool.prefixes.clone();
        prefixes.extend(given);
        let req = SubnetPoolUpdate {
            prefixes: Some(prefixes),
            ..Default::default()
        };
        self.update_subnet_pool(caller, id, req, now)
    }

    /// `remove_prefixes`: the pool's addresses minus `given`, refused if a
    /// subnet of the pool has any of them. Prefixes of the other IP version,
    /// or outside the pool, change nothing.
    pub fn remove_subnet_pool_prefixes(
        &mut self,
        caller: &Caller,
        id: &str,
        given: Vec<IpNet>,
        now: Timestamp,
    ) -> Result<SubnetPool, ModelError> {
        let mut pool: SubnetPool = self.writable_as(caller, id)?;
        let v4 = pool.ip_version == 4;
        let all = PrefixSet::of(v4, &pool.prefixes);
        let removed = PrefixSet::of(v4, &given);
        if !all.intersects(&removed) {
            return Ok(pool);
        }
        if self.allocated(&pool).intersects(&removed) {
            return Err(ModelError::IllegalSubnetPoolPrefixUpdate {
                msg: "One or more the prefixes to be removed is in use by a subnet.".into(),
            });
        }
        pool.prefixes = all.minus(&removed).cidrs();
        pool.std.touch(now);
        self.put(Resource::SubnetPool(pool.clone()));
        Ok(pool)
    }

    /// The CIDR a new subnet of `project_id` gets from `pool`: within the
    /// pool's bounds and quota, and free in the pool (Neutron's
    /// `SubnetAllocator`).
    pub(super) fn allocate_from_pool(
        &self,
        pool: &SubnetPool,
        project_id: &str,
        request: Request,
    ) -> Result<IpNet, ModelError> {
        let prefixlen = match &request {
            Request::Any(len) => *len,
            Request::Specific(cidr) => cidr.prefix_len().into(),
        };
        if prefixlen > pool.max_prefixlen.into() {
            return Err(ModelError::MaxPrefixSubnetAllocationError {
                prefixlen,
                max_prefixlen: pool.max_prefixlen,
            });
        }
        if prefixlen < pool.min_prefixlen.into() {
            return Err(ModelError::MinPrefixSubnetAllocationError {
                prefixlen,
                min_prefixlen: pool.min_prefixlen,
            });
        }
        self.check_pool_quota(pool, project_id, prefixlen)?;
        let available =
            PrefixSet::of(pool.ip_version == 4, &pool.prefixes).minus(&self.allocated(pool));
        match request {
            Request::Any(len) => {
                subnet_pool::best_fit(&available, prefix_len(len)).ok_or_else(|| {
                    ModelError::SubnetAllocationError {
                        reason: format!("Insufficient prefix space to allocate subnet size /{len}"),
                    }
                })
            }
            Request::Specific(cidr) => {
                if available.contains_all(&PrefixSet::of(pool.ip_version == 4, [&cidr])) {
                    Ok(cidr)
                } else {
                    Err(ModelError::SubnetAllocationError {
                        reason:
                            "Cannot allocate requested subnet from the available set of prefixes"
                                .into(),
                    })
                }
            }
        }
    }

    /// The pool's `default_quota`: how much of it one project may hold, in
    /// addresses (IPv4) or /64s (IPv6).
    fn check_pool_quota(
        &self,
        pool: &SubnetPool,
        project_id: &str,
        prefixlen: u32,
    ) -> Result<(), ModelError> {
        let Some(quota) = pool.default_quota.filter(|q| *q > 0) else {
            return Ok(());
        };
        let unit: i32 = if pool.ip_version == 4 { 32 } else { 64 };
        // Neutron counts in floats too: a /80 is a fraction of a /64.
        let units = |len: u8| 2f64.powi(unit - i32::from(len));
        let used: f64 = self
            .pool_subnets
            .get(&pool.std.id)
            .into_iter()
            .flatten()
            .filter_map(|s| self.subnets.get(s))
            .filter(|s| s.std.project_id == project_id)
            .map(|s| units(s.cidr.prefix_len()))
            .sum();
        if used + units(prefix_len(prefixlen)) > f64::from(quota) {
            return Err(ModelError::SubnetPoolQuotaExceeded);
        }
        Ok(())
    }
}

/// A prefix length already checked against the family's width.
fn prefix_len(len: u32) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}
