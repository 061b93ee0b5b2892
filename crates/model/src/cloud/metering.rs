//! Metering labels and their rules: admin only (Neutron's policy: others
//! cannot create them, and see none), a rule's label must exist, overlapping
//! rules are refused, a label takes its rules with it. What a label counts,
//! and where, is the compiler's and the agent's.

use super::{Caller, Cloud, FacetIds, Record, remove_from, stored};
use crate::metering::{self, overlaps};
use crate::{
    Kind, MeteringLabel, MeteringLabelCreate, MeteringLabelRule, MeteringLabelRuleCreate,
    ModelError, Resource, Standard, Timestamp,
};

impl Record for MeteringLabel {
    stored!(MeteringLabel in metering_labels);

    /// Admins only: a member sees none (404 on show, an empty list).
    fn visible_to(&self, _cloud: &Cloud, caller: &Caller) -> bool {
        caller.is_admin
    }

    fn candidates<'c>(_cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        admins_only(caller)
    }
}

impl Record for MeteringLabelRule {
    stored!(MeteringLabelRule in metering_rules);

    fn visible_to(&self, _cloud: &Cloud, caller: &Caller) -> bool {
        caller.is_admin
    }

    fn candidates<'c>(_cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        admins_only(caller)
    }

    fn index(&self, cloud: &mut Cloud) {
        cloud
            .label_rules
            .entry(self.metering_label_id.clone())
            .or_default()
            .insert(self.std.id.clone());
    }

    fn unindex(&self, cloud: &mut Cloud) {
        remove_from(
            &mut cloud.label_rules,
            &self.metering_label_id,
            &self.std.id,
        );
    }
}

/// A list's candidates of what only admins see: every id for an admin,
/// none for anyone else.
fn admins_only<'c>(caller: &Caller) -> Option<Vec<&'c FacetIds>> {
    (!caller.is_admin).then(Vec::new)
}

/// Neutron's refusal of a call its policy keeps to admins.
fn admin_only(caller: &Caller, rule: &str) -> Result<(), ModelError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(ModelError::Forbidden(format!(
            "(rule:{rule}) is disallowed by policy"
        )))
    }
}

impl Cloud {
    pub fn metering_labels(&self) -> impl Iterator<Item = &MeteringLabel> {
        self.metering_labels.values()
    }

    pub fn metering_label(&self, id: &str) -> Option<&MeteringLabel> {
        self.metering_labels.get(id)
    }

    pub fn metering_label_rules(&self) -> impl Iterator<Item = &MeteringLabelRule> {
        self.metering_rules.values()
    }

    /// The rules of a label (by id order).
    pub fn rules_of_label(&self, label_id: &str) -> impl Iterator<Item = &MeteringLabelRule> {
        self.label_rules
            .get(label_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.metering_rules.get(id))
    }

    pub fn create_metering_label(
        &mut self,
        caller: &Caller,
        req: MeteringLabelCreate,
        now: Timestamp,
    ) -> Result<MeteringLabel, ModelError> {
        admin_only(caller, "create_metering_label")?;
        let project_id = self.project_for(caller, req.project_id)?;
        let label = MeteringLabel {
            std: self.standard(project_id, req.name, req.description, None, now)?,
            shared: req.shared.unwrap_or(false),
        };
        self.put(Resource::MeteringLabel(label.clone()));
        Ok(label)
    }

    /// Deletes the label and its rules.
    pub fn delete_metering_label(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        self.visible_as::<MeteringLabel>(caller, id)?;
        admin_only(caller, "delete_metering_label")?;
        let rules: Vec<String> = self
            .label_rules
            .get(id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for rule in rules {
            self.remove(Kind::MeteringLabelRule, &rule);
        }
        self.remove(Kind::MeteringLabel, id);
        Ok(())
    }

    pub fn create_metering_label_rule(
        &mut self,
        caller: &Caller,
        req: MeteringLabelRuleCreate,
        now: Timestamp,
    ) -> Result<MeteringLabelRule, ModelError> {
        admin_only(caller, "create_metering_label_rule")?;
        let label: MeteringLabel = self.visible_as(caller, &req.metering_label_id)?;
        self.project_for(caller, req.project_id.clone())?;
        let std = Standard::new(self.rng.uuid(), label.std.project_id.clone(), now);
        let rule = metering::build_rule(std, &req)?;
        // As Neutron checks: only `remote_ip_prefix`, against the label's
        // rules of the same direction and exclusion.
        if let Some(prefix) = rule.remote_ip_prefix {
            let clash = self.rules_of_label(&label.std.id).any(|r| {
                r.direction == rule.direction
                    && r.excluded == rule.excluded
                    && r.remote_ip_prefix.is_some_and(|p| overlaps(p, prefix))
            });
            if clash {
                return Err(ModelError::MeteringLabelRuleOverlaps {
                    prefix: req.remote_ip_prefix.unwrap_or_default(),
                });
            }
        }
        self.put(Resource::MeteringLabelRule(rule.clone()));
        Ok(rule)
    }

    pub fn delete_metering_label_rule(
        &mut self,
        caller: &Caller,
        id: &str,
    ) -> Result<(), ModelError> {
        self.visible_as::<MeteringLabelRule>(caller, id)?;
        admin_only(caller, "delete_metering_label_rule")?;
        self.remove(Kind::MeteringLabelRule, id);
        Ok(())
    }
}
