//! Metering: which labels a router counts (its project's, and every shared
//! one) and their rules, carried in its `RouterSpec`. A label or rule change
//! costs the routers it applies to: a project's routers, or, for a shared
//! label, every router (labels are few and change rarely; a shared label is
//! by definition about every router).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use model::{Direction, MeteringLabel, MeteringLabelRule};

use super::{Compiler, Emitter};
use crate::protocol::{MeteringLabelSpec, MeteringRuleSpec, RuleDirection};

/// Labels, their rules, and the indexes from projects to labels and routers.
#[derive(Debug, Default)]
pub(super) struct Metering {
    /// By label id. A rule may arrive before its label, so an entry lives
    /// while its label or a rule names it.
    labels: HashMap<String, LabelEntry>,
    /// Rule id → its label's id.
    rule_labels: HashMap<String, String>,
    shared: BTreeSet<String>,
    /// Project → its labels that are not shared.
    project_labels: HashMap<String, BTreeSet<String>>,
    /// Project → its routers (those whose resource is known).
    project_routers: HashMap<String, BTreeSet<String>>,
}

#[derive(Debug, Default)]
struct LabelEntry {
    /// (project, shared) from the label resource; `None` until it arrives.
    label: Option<(String, bool)>,
    spec: MeteringLabelSpec,
}

impl Metering {
    /// A router's project changed (from `old` to `new`, `None`: unknown).
    pub(super) fn router_project(&mut self, router_id: &str, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        if let Some(old) = old
            && let Some(routers) = self.project_routers.get_mut(old)
        {
            routers.remove(router_id);
            if routers.is_empty() {
                self.project_routers.remove(old);
            }
        }
        if let Some(new) = new {
            self.project_routers
                .entry(new.to_owned())
                .or_default()
                .insert(router_id.to_owned());
        }
    }

    /// The labels a router of `project` counts (none while its project is
    /// unknown).
    pub(super) fn of_router(&self, project: Option<&str>) -> BTreeMap<String, MeteringLabelSpec> {
        let Some(project) = project else {
            return BTreeMap::new();
        };
        self.project_labels
            .get(project)
            .into_iter()
            .flatten()
            .chain(&self.shared)
            .filter_map(|id| Some((id.clone(), self.labels.get(id)?.spec.clone())))
            .collect()
    }

    /// The scope of a label: `None` for every router, else one project's.
    fn scope(&self, label_id: &str) -> Option<Option<String>> {
        let (project, shared) = self.labels.get(label_id)?.label.clone()?;
        Some((!shared).then_some(project))
    }

    fn unindex(&mut self, label_id: &str) {
        self.shared.remove(label_id);
        let project = self
            .labels
            .get(label_id)
            .and_then(|l| l.label.as_ref())
            .map(|(p, _)| p.clone());
        if let Some(project) = project
            && let Some(labels) = self.project_labels.get_mut(&project)
        {
            labels.remove(label_id);
            if labels.is_empty() {
                self.project_labels.remove(&project);
            }
        }
    }

    fn forget_if_unused(&mut self, label_id: &str) {
        if self
            .labels
            .get(label_id)
            .is_some_and(|l| l.label.is_none() && l.spec.rules.is_empty())
        {
            self.labels.remove(label_id);
        }
    }
}

fn rule_spec(rule: &MeteringLabelRule) -> MeteringRuleSpec {
    MeteringRuleSpec {
        direction: match rule.direction {
            Direction::Ingress => RuleDirection::Ingress,
            Direction::Egress => RuleDirection::Egress,
        },
        excluded: rule.excluded,
        remote_ip_prefix: rule.remote_ip_prefix,
        source_ip_prefix: rule.source_ip_prefix,
        destination_ip_prefix: rule.destination_ip_prefix,
    }
}

impl Compiler {
    /// The routers a label of `scope` applies to.
    fn metered_routers(&self, scope: Option<Option<String>>) -> BTreeSet<String> {
        match scope {
            None => BTreeSet::new(),
            Some(None) => self
                .metering
                .project_routers
                .values()
                .flatten()
                .cloned()
                .collect(),
            Some(Some(project)) => self
                .metering
                .project_routers
                .get(&project)
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn refresh_metered(&mut self, routers: BTreeSet<String>, out: &mut Emitter) {
        for router_id in routers {
            self.refresh_router(&router_id, out);
        }
    }

    pub(super) fn put_metering_label(&mut self, label: &MeteringLabel, out: &mut Emitter) {
        let id = &label.std.id;
        let mut routers = self.metered_routers(self.metering.scope(id));
        self.metering.unindex(id);
        let m = &mut self.metering;
        m.labels.entry(id.clone()).or_default().label =
            Some((label.std.project_id.clone(), label.shared));
        if label.shared {
            m.shared.insert(id.clone());
        } else {
            m.project_labels
                .entry(label.std.project_id.clone())
                .or_default()
                .insert(id.clone());
        }
        routers.extend(self.metered_routers(self.metering.scope(id)));
        self.refresh_metered(routers, out);
    }

    pub(super) fn delete_metering_label(&mut self, id: &str, out: &mut Emitter) {
        let routers = self.metered_routers(self.metering.scope(id));
        self.metering.unindex(id);
        if let Some(entry) = self.metering.labels.get_mut(id) {
            entry.label = None;
        }
        self.metering.forget_if_unused(id);
        self.refresh_metered(routers, out);
    }

    pub(super) fn put_metering_rule(&mut self, rule: &MeteringLabelRule, out: &mut Emitter) {
        let id = &rule.std.id;
        let mut routers = BTreeSet::new();
        if let Some(old) = self.metering.rule_labels.get(id).cloned()
            && old != rule.metering_label_id
        {
            routers.extend(self.metered_routers(self.metering.scope(&old)));
            if let Some(entry) = self.metering.labels.get_mut(&old) {
                entry.spec.rules.remove(id);
            }
            self.metering.forget_if_unused(&old);
        }
        let label_id = &rule.metering_label_id;
        self.metering
            .rule_labels
            .insert(id.clone(), label_id.clone());
        self.metering
            .labels
            .entry(label_id.clone())
            .or_default()
            .spec
            .rules
            .insert(id.clone(), rule_spec(rule));
        routers.extend(self.metered_routers(self.metering.scope(label_id)));
        self.refresh_metered(routers, out);
    }

    pub(super) fn delete_metering_rule(&mut self, id: &str, out: &mut Emitter) {
        let Some(label_id) = self.metering.rule_labels.remove(id) else {
            return;
        };
        if let Some(entry) = self.metering.labels.get_mut(&label_id) {
            entry.spec.rules.remove(id);
        }
        let routers = self.metered_routers(self.metering.scope(&label_id));
        self.metering.forget_if_unused(&label_id);
        self.refresh_metered(routers, out);
    }
}
