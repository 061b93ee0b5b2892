//! Security groups and their rules: each project's default group, rule
//! uniqueness (the signature index), remote-group and address-group
//! references and which ports use a group. What the rules mean on the wire
//! is the compiler's business.

use super::{Caller, Cloud, Facet, FacetIds, Record, remove_from, set, stored};
use crate::security_group;
use crate::{
    Kind, ModelError, ObjectType, Resource, RuleCreate, SecurityGroup, SecurityGroupCreate,
    SecurityGroupRule, SecurityGroupUpdate, Standard, Timestamp,
};

impl Record for SecurityGroup {
    stored!(SecurityGroup in groups);

    /// Its project's, and any project's it is shared with (RBAC): those may
    /// put it on their ports and name it as a remote group.
    fn visible_to(&self, cloud: &Cloud, caller: &Caller) -> bool {
        caller.owns(&self.std.project_id)
            || cloud.shared_with(ObjectType::SecurityGroup, &self.std.id, &caller.project_id)
    }

    /// Its project's, and those shared with it or with everyone.
    fn candidates<'c>(cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        cloud.owned_or_shared(Kind::SecurityGroup, caller)
    }

    fn index(&self, cloud: &mut Cloud) {
        if self.is_default {
            cloud
                .default_groups
                .insert(self.std.project_id.clone(), self.std.id.clone());
        }
    }

    fn unindex(&self, cloud: &mut Cloud) {
        let project = &self.std.project_id;
        if self.is_default && cloud.default_groups.get(project) == Some(&self.std.id) {
            cloud.default_groups.remove(project);
        }
    }
}

impl Record for SecurityGroupRule {
    stored!(SecurityGroupRule in rules);

    fn facets(&self, each: &mut dyn FnMut(Facet, &str)) {
        each(Facet::SecurityGroup, &self.security_group_id);
    }

    fn index(&self, cloud: &mut Cloud) {
        cloud
            .group_rules
            .entry(self.security_group_id.clone())
            .or_default()
            .insert(self.signature(), self.std.id.clone());
        if let Some(remote) = &self.remote_group_id {
            cloud
                .remote_group_rules
                .entry(remote.clone())
                .or_default()
                .insert(self.std.id.clone());
        }
        if let Some(ag) = &self.remote_address_group_id {
            cloud
                .address_group_rules
                .entry(ag.clone())
                .or_default()
                .insert(self.std.id.clone());
        }
    }

    fn unindex(&self, cloud: &mut Cloud) {
        if let Some(sigs) = cloud.group_rules.get_mut(&self.security_group_id) {
            sigs.remove(&self.signature());
            if sigs.is_empty() {
                cloud.group_rules.remove(&self.security_group_id);
            }
        }
        if let Some(remote) = &self.remote_group_id {
            remove_from(&mut cloud.remote_group_rules, remote, &self.std.id);
        }
        if let Some(ag) = &self.remote_address_group_id {
            remove_from(&mut cloud.address_group_rules, ag, &self.std.id);
        }
    }
}

impl Cloud {
    pub fn security_groups(&self) -> impl Iterator<Item = &SecurityGroup> {
        self.groups.values()
    }
    pub fn security_group_rules(&self) -> impl Iterator<Item = &SecurityGroupRule> {
        self.rules.values()
    }

    pub fn security_group(&self, id: &str) -> Option<&SecurityGroup> {
        self.groups.get(id)
    }
    pub fn security_group_rule(&self, id: &str) -> Option<&SecurityGroupRule> {
        self.rules.get(id)
    }

    /// Rules of a group (unordered).
    pub fn rules_of(&self, group_id: &str) -> impl Iterator<Item = &SecurityGroupRule> {
        self.group_rules
            .get(group_id)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|id| self.rules.get(id))
    }

    pub fn default_group_of(&self, project_id: &str) -> Option<&str> {
        self.default_groups.get(project_id).map(String::as_str)
    }

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
        self.put_template_rules(project_id, &id, true, now);
    }

    /// The rules the templates give a new group of `project_id`: those for
    /// default groups, or those for the others.
    fn put_template_rules(
        &mut self,
        project_id: &str,
        group_id: &str,
        default: bool,
        now: Timestamp,
    ) {
        let mut templates: Vec<_> = self
            .default_rules
            .values()
            .filter(|t| {
                if default {
                    t.used_in_default_sg
                } else {
                    t.used_in_non_default_sg
                }
            })
            .cloned()
            .collect();
        // In a fixed order, so the same cloud gives the same ids.
        templates.sort_by(|a, b| a.std.id.cmp(&b.std.id));
        for template in templates {
            // The rule has no description of its own (Neutron's is null).
            let std = Standard::new(self.rng.uuid(), project_id.to_owned(), now);
            let rule = template.instantiate(std, group_id);
            self.put(Resource::SecurityGroupRule(rule));
        }
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
        self.put_template_rules(&project_id, &group.std.id, false, now);
        Ok(group)
    }

    pub fn update_security_group(
        &mut self,
        caller: &Caller,
        id: &str,
        req: SecurityGroupUpdate,
        now: Timestamp,
    ) -> Result<SecurityGroup, ModelError> {
        let mut g: SecurityGroup = self.writable_as(caller, id)?;
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
        let g: SecurityGroup = self.writable_as(caller, id)?;
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
        self.remove_policies(id, None);
        self.remove(Kind::SecurityGroup, id);
        Ok(())
    }

    pub fn create_security_group_rule(
        &mut self,
        caller: &Caller,
        req: RuleCreate,
        now: Timestamp,
    ) -> Result<SecurityGroupRule, ModelError> {
        let group: SecurityGroup = self.writable_as(caller, &req.security_group_id)?;
        self.project_for(caller, req.project_id.clone())?;
        let description = req.description.clone();
        self.check_quota(&group.std.project_id, Kind::SecurityGroupRule)?;
        let std = self.standard(group.std.project_id.clone(), None, description, None, now)?;
        let rule = security_group::build_rule(std, &group.std.id, req)?;
        if let Some(remote) = &rule.remote_group_id {
            self.visible(caller, Kind::SecurityGroup, remote)?;
        }
        if let Some(ag) = &rule.remote_address_group_id {
            self.visible(caller, Kind::AddressGroup, ag)?;
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
        let mut r: SecurityGroupRule = self.writable_as(caller, id)?;
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
        let rule: SecurityGroupRule = self.writable_as(caller, id)?;
        self.remove(Kind::SecurityGroupRule, id);
        self.touch(Kind::SecurityGroup, &rule.security_group_id, now);
        Ok(())
    }
}
