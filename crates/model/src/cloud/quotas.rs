//! Quotas (limits per project, enforced on create) and IP availability per
//! network: reads over the counters `Cloud` keeps in step with every write,
//! so a check costs O(1) however big the project.

use super::{Caller, Cloud, Limits, Quota, Record, stored};
use crate::{Kind, ModelError, QUOTA_KINDS, Resource, Standard, Timestamp, quota_name};

/// One subnet's addresses: how many its pools hold, how many are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetAvailability {
    pub subnet_id: String,
    pub subnet_name: String,
    pub cidr: String,
    pub ip_version: u8,
    pub total_ips: u128,
    pub used_ips: usize,
}

/// A project's own limits: a stored record, but no Neutron collection (its
/// API is `/v2.0/quotas`).
impl Record for Quota {
    stored!(Quota in quotas);
}

impl Cloud {
    /// Refuse one more `kind` for `project_id` if that would pass its limit.
    pub(super) fn check_quota(&self, project_id: &str, kind: Kind) -> Result<(), ModelError> {
        let Some(name) = quota_name(kind) else {
            return Ok(());
        };
        let limit = self.limit(project_id, name);
        let used = self.used(project_id, kind);
        if limit >= 0 && used as i64 >= limit {
            return Err(ModelError::OverQuota { resource: name });
        }
        Ok(())
    }

    fn limit(&self, project_id: &str, name: &str) -> i64 {
        self.quotas
            .get(project_id)
            .and_then(|q| q.limits.get(name))
            .or_else(|| self.config.default_quotas.get(name))
            .copied()
            .unwrap_or(-1)
    }

    /// How many `kind` the project owns.
    pub fn used(&self, project_id: &str, kind: Kind) -> usize {
        self.usage
            .get(&(project_id.to_owned(), kind))
            .copied()
            .unwrap_or(0)
    }

    /// The project's limits: the defaults with its overrides on top. Only
    /// its owner and admins may read them.
    pub fn quota(&self, caller: &Caller, project_id: &str) -> Result<Limits, ModelError> {
        if !caller.owns(project_id) {
            return Err(ModelError::Forbidden(
                "Non-admin is not authorised to access quotas for another project".into(),
            ));
        }
        Ok(QUOTA_KINDS
            .iter()
            .map(|(name, _)| ((*name).to_owned(), self.limit(project_id, name)))
            .collect())
    }

    pub fn default_quota(&self) -> &Limits {
        &self.config.default_quotas
    }

    /// Projects with limits of their own (admins only).
    pub fn quota_overrides(&self, caller: &Caller) -> Result<Vec<String>, ModelError> {
        if !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:get_quota) is disallowed by policy".into(),
            ));
        }
        let mut projects: Vec<String> = self.quotas.keys().cloned().collect();
        projects.sort();
        Ok(projects)
    }

    /// Set some of a project's limits (admins only); -1 is unlimited.
    pub fn update_quota(
        &mut self,
        caller: &Caller,
        project_id: &str,
        changes: Limits,
        check_limit: bool,
        now: Timestamp,
    ) -> Result<Limits, ModelError> {
        self.check_quota_admin(caller)?;
        let mut quota = self
            .quotas
            .get(project_id)
            .cloned()
            .unwrap_or_else(|| Quota {
                std: Standard::new(project_id.to_owned(), project_id.to_owned(), now),
                limits: Limits::new(),
            });
        for (name, limit) in changes {
            let Some(kind) = quota_name_known(&name) else {
                return Err(ModelError::invalid(format!("Unrecognized quota '{name}'")));
            };
            let used = self.used(project_id, kind);
            if check_limit && limit >= 0 && used > limit as usize {
                return Err(ModelError::QuotaBelowUsage {
                    resource: name,
                    limit,
                    used,
                });
            }
            if limit < -1 {
                return Err(ModelError::invalid(format!(
                    "'{limit}' should be greater than or equal to -1 for {name}"
                )));
            }
            quota.limits.insert(name, limit);
        }
        quota.std.touch(now);
        self.put(Resource::Quota(quota));
        self.quota(caller, project_id)
    }

    /// Back to the defaults (admins only).
    pub fn delete_quota(&mut self, caller: &Caller, project_id: &str) -> Result<(), ModelError> {
        self.check_quota_admin(caller)?;
        self.remove(Kind::Quota, project_id);
        Ok(())
    }

    fn check_quota_admin(&self, caller: &Caller) -> Result<(), ModelError> {
        if caller.is_admin {
            Ok(())
        } else {
            Err(ModelError::Forbidden(
                "(rule:update_quota) is disallowed by policy".into(),
            ))
        }
    }

    /// Addresses per subnet of a network, in subnet order.
    pub fn ip_availability(&self, network_id: &str) -> Vec<SubnetAvailability> {
        self.subnets_of(network_id)
            .iter()
            .filter_map(|id| self.subnets.get(id))
            .map(|s| SubnetAvailability {
                subnet_id: s.std.id.clone(),
                subnet_name: s.std.name.clone(),
                cidr: s.cidr.to_string(),
                ip_version: s.ip_version,
                total_ips: s.allocation_pools.iter().map(|p| p.size()).sum(),
                used_ips: self.used_ips(&s.std.id),
            })
            .collect()
    }
}

fn quota_name_known(name: &str) -> Option<Kind> {
    QUOTA_KINDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}
