//! The templates of new groups' rules: admins add and remove them, everyone
//! may read them, and each new group takes the ones for its kind (see
//! `security_group.rs`). Seeding Neutron's built-in templates into a new
//! cloud is the server's call (`seed_default_rules`), made once.

use super::{Caller, Cloud, FacetIds, Record, stored};
use crate::default_security_group_rule::{DefaultRuleCreate, legacy_templates};
use crate::{DefaultSecurityGroupRule, Kind, ModelError, Resource, Timestamp};

impl Record for DefaultSecurityGroupRule {
    stored!(DefaultSecurityGroupRule in default_rules);

    /// Templates say what every new group gets: anyone may read them.
    fn visible_to(&self, _cloud: &Cloud, _caller: &Caller) -> bool {
        true
    }

    fn candidates<'c>(_cloud: &'c Cloud, _caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        None
    }
}

impl Cloud {
    pub fn default_rules(&self) -> impl Iterator<Item = &DefaultSecurityGroupRule> {
        self.default_rules.values()
    }

    pub fn create_default_rule(
        &mut self,
        caller: &Caller,
        req: DefaultRuleCreate,
        now: Timestamp,
    ) -> Result<DefaultSecurityGroupRule, ModelError> {
        if !caller.is_admin {
            return Err(ModelError::Forbidden(
                "rule:create_default_security_group_rule is disallowed by policy".into(),
            ));
        }
        self.put_default_rule(req, now)
    }

    pub fn delete_default_rule(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        if !caller.is_admin {
            return Err(ModelError::Forbidden(
                "rule:delete_default_security_group_rule is disallowed by policy".into(),
            ));
        }
        self.visible_as::<DefaultSecurityGroupRule>(caller, id)?;
        self.remove(Kind::DefaultSecurityGroupRule, id);
        Ok(())
    }

    /// Neutron's built-in templates, for a cloud that never had any.
    pub fn seed_default_rules(&mut self, now: Timestamp) -> Result<(), ModelError> {
        for req in legacy_templates() {
            self.put_default_rule(req, now)?;
        }
        Ok(())
    }

    fn put_default_rule(
        &mut self,
        req: DefaultRuleCreate,
        now: Timestamp,
    ) -> Result<DefaultSecurityGroupRule, ModelError> {
        let description = req.description.clone();
        let std = self.standard(String::new(), None, description, None, now)?;
        let template = DefaultSecurityGroupRule::build(std, req)?;
        if let Some(other) = self
            .default_rules
            .values()
            .find(|t| t.clashes_with(&template))
        {
            return Err(ModelError::DefaultSecurityGroupRuleExists {
                id: other.std.id.clone(),
            });
        }
        self.put(Resource::DefaultSecurityGroupRule(template.clone()));
        Ok(template)
    }
}
