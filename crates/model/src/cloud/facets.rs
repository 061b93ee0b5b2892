//! Facets: the attributes lists filter by (a port's network, device, host,
//! fixed IPs, groups, …; every record's project and name; the projects an
//! object is granted to), each an index from value to the ids holding it, in
//! id order, and every record's id in order, so a filtered page, or an
//! unfiltered one in id order, costs the page and not the cloud. Written only
//! by `Cloud::insert`/`take`, from each record's `Record::facets`; it must not
//! decide what a list shows (the API and each kind's `visible_to` do).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Caller, Cloud, Record};
use crate::{Kind, RbacAction, WILDCARD};

/// An attribute a list may be filtered by, indexed for the kinds that have
/// it. `Project` and `Name` are every record's; the rest are the record's
/// own (`Record::facets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Facet {
    Project,
    Name,
    /// A port's or subnet's network.
    Network,
    DeviceId,
    DeviceOwner,
    /// A port's `binding:host_id`.
    Host,
    /// One of a port's fixed IP addresses, as text (`10.0.0.5`, `fd00::5`).
    FixedIp,
    /// The subnet of one of a port's fixed IPs.
    FixedIpSubnet,
    /// A rule's group, or one of a port's groups.
    SecurityGroup,
    /// The port a floating IP is associated with.
    Port,
    /// A project (or `*`) an RBAC policy grants the action on the object
    /// to: indexed on the object's kind, by its policies.
    Granted(RbacAction),
}

/// The ids of the records with one value of a facet, in order. A record's
/// entries share one allocation of its id.
pub type FacetIds = BTreeSet<Arc<str>>;

static NO_IDS: FacetIds = BTreeSet::new();

/// Kind and facet → value → ids, and kind → ids. Empty values are not
/// indexed: a list never asks for them (a filter on an empty value also
/// matches an absent one).
#[derive(Default, PartialEq)]
pub(super) struct Facets {
    by_value: HashMap<(Kind, Facet), HashMap<String, FacetIds>>,
    ids: HashMap<Kind, FacetIds>,
}

impl Facets {
    pub(super) fn add<R: Record>(&mut self, record: &R) {
        let id: Arc<str> = Arc::from(record.standard().id.as_str());
        self.ids.entry(R::KIND).or_default().insert(id.clone());
        each_facet(record, &mut |facet, value| {
            self.put((R::KIND, facet), value, id.clone());
        });
        record.facets_of_others(&mut |kind, facet, value, other| {
            self.put((kind, facet), value, Arc::from(other));
        });
    }

    pub(super) fn remove<R: Record>(&mut self, record: &R) {
        let id = &record.standard().id;
        if let Some(ids) = self.ids.get_mut(&R::KIND) {
            ids.remove(id.as_str());
            if ids.is_empty() {
                self.ids.remove(&R::KIND);
            }
        }
        each_facet(record, &mut |facet, value| {
            self.take((R::KIND, facet), value, id)
        });
        record.facets_of_others(&mut |kind, facet, value, other| {
            self.take((kind, facet), value, other);
        });
    }

    fn put(&mut self, key: (Kind, Facet), value: &str, id: Arc<str>) {
        if value.is_empty() {
            return;
        }
        self.by_value
            .entry(key)
            .or_default()
            .entry(value.to_owned())
            .or_default()
            .insert(id);
    }

    fn take(&mut self, key: (Kind, Facet), value: &str, id: &str) {
        let Some(values) = self.by_value.get_mut(&key) else {
            return;
        };
        if let Some(ids) = values.get_mut(value) {
            ids.remove(id);
            if ids.is_empty() {
                values.remove(value);
            }
        }
        if values.is_empty() {
            self.by_value.remove(&key);
        }
    }

    fn get(&self, kind: Kind, facet: Facet, value: &str) -> Option<&FacetIds> {
        self.by_value.get(&(kind, facet))?.get(value)
    }
}

/// Every (facet, value) of `record` (`put` leaves the empty values out).
fn each_facet<R: Record>(record: &R, f: &mut dyn FnMut(Facet, &str)) {
    let std = record.standard();
    f(Facet::Project, &std.project_id);
    f(Facet::Name, &std.name);
    record.facets(f);
}

impl Cloud {
    /// The ids of the records of `kind` whose `facet` is `value`, in id
    /// order; `None` for an empty value, which is not indexed.
    pub fn faceted(&self, kind: Kind, facet: Facet, value: &str) -> Option<&FacetIds> {
        if value.is_empty() {
            return None;
        }
        Some(self.facets.get(kind, facet, value).unwrap_or(&NO_IDS))
    }

    /// The ids of every record of `kind`, in order.
    pub fn ids(&self, kind: Kind) -> &FacetIds {
        self.facets.ids.get(&kind).unwrap_or(&NO_IDS)
    }

    /// The ids of the records of `kind` `caller` owns; `None` when no index
    /// holds them (an admin owns every record, an empty project is not
    /// indexed).
    pub(super) fn owned_ids(&self, kind: Kind, caller: &Caller) -> Option<&FacetIds> {
        if caller.is_admin {
            return None;
        }
        self.faceted(kind, Facet::Project, &caller.project_id)
    }

    /// The ids of the records of `kind` `caller` owns, and of those shared
    /// with it or with everyone; `None` as for [`Cloud::owned_ids`].
    pub(super) fn owned_or_shared(&self, kind: Kind, caller: &Caller) -> Option<Vec<&FacetIds>> {
        let mut sets = vec![self.owned_ids(kind, caller)?];
        sets.extend(self.granted_ids(kind, RbacAction::AccessAsShared, caller));
        Some(sets)
    }

    /// The ids of the objects of `kind` on which a policy grants `action`
    /// to `caller`'s project or to every project.
    pub(super) fn granted_ids(
        &self,
        kind: Kind,
        action: RbacAction,
        caller: &Caller,
    ) -> impl Iterator<Item = &FacetIds> {
        [caller.project_id.as_str(), WILDCARD]
            .into_iter()
            .filter_map(move |target| self.faceted(kind, Facet::Granted(action), target))
    }

    /// Whether every facet index holds exactly what a scan of the tables
    /// finds: what the tests check after every step.
    #[cfg(test)]
    pub(crate) fn facets_agree(&self) -> Result<(), String> {
        let mut scanned = Facets::default();
        for kind in Kind::ALL {
            crate::resource::with_kind!(kind, R => {
                for r in R::table(self).values() {
                    scanned.add(r);
                }
            });
        }
        if scanned == self.facets {
            return Ok(());
        }
        let (found, held) = (&scanned.by_value, &self.facets.by_value);
        let keys: BTreeSet<_> = found.keys().chain(held.keys()).collect();
        let wrong: Vec<_> = keys
            .into_iter()
            .filter(|k| found.get(k) != held.get(k))
            .collect();
        let kinds: Vec<_> = Kind::ALL
            .into_iter()
            .filter(|k| scanned.ids.get(k) != self.facets.ids.get(k))
            .collect();
        Err(format!(
            "facet indexes differ from the tables in {wrong:?}, id indexes in {kinds:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        Caller, CloudConfig, FixedIpRequest, ModelError, NetworkCreate, NetworkUpdate, ObjectType,
        PortCreate, PortUpdate, RbacPolicyCreate, SubnetCreate,
    };

    /// What a step does; `pick`s choose among what exists, modulo its count.
    #[derive(Clone, Debug)]
    enum Step {
        Create {
            net: usize,
            project: usize,
            port: Shape,
        },
        Update {
            pick: usize,
            port: Shape,
        },
        Delete {
            pick: usize,
        },
        /// Two ports in one operation, the second refused: nothing stays.
        RefusedBulk {
            net: usize,
            port: Shape,
        },
        RenameNetwork {
            net: usize,
            name: usize,
        },
        DeleteNetwork {
            net: usize,
        },
        /// An RBAC grant on a network to project a, b or everyone.
        Grant {
            net: usize,
            target: usize,
            external: bool,
        },
        Revoke {
            pick: usize,
        },
    }

    #[derive(Clone, Debug)]
    struct Shape {
        name: usize,
        device: usize,
        owner: usize,
        host: usize,
        /// Its fixed IPs: none, or one on each of these subnets of its network.
        subnets: usize,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        (0..3usize, 0..4usize, 0..3usize, 0..3usize, 0..3usize).prop_map(
            |(name, device, owner, host, subnets)| Shape {
                name,
                device,
                owner,
                host,
                subnets,
            },
        )
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 0..2usize, shape())
                .prop_map(|(net, project, port)| Step::Create { net, project, port }),
            3 => (any::<usize>(), shape()).prop_map(|(pick, port)| Step::Update { pick, port }),
            2 => any::<usize>().prop_map(|pick| Step::Delete { pick }),
            1 => (0..3usize, shape()).prop_map(|(net, port)| Step::RefusedBulk { net, port }),
            1 => (0..3usize, 0..3usize).prop_map(|(net, name)| Step::RenameNetwork { net, name }),
            1 => (0..3usize).prop_map(|net| Step::DeleteNetwork { net }),
            2 => (0..3usize, 0..3usize, any::<bool>())
                .prop_map(|(net, target, external)| Step::Grant { net, target, external }),
            1 => any::<usize>().prop_map(|pick| Step::Revoke { pick }),
        ]
    }

    fn admin() -> Caller {
        Caller {
            project_id: "admin".into(),
            is_admin: true,
        }
    }

    /// Empty for the first choice: empty values are not indexed.
    fn text(prefix: &str, n: usize) -> String {
        if n == 0 {
            String::new()
        } else {
            format!("{prefix}-{n}")
        }
    }

    fn update(c: &Cloud, network: &str, s: &Shape) -> PortUpdate {
        let fixed_ips = c
            .subnets_of(network)
            .iter()
            .take(s.subnets)
            .map(|id| FixedIpRequest {
                subnet_id: Some(id.clone()),
                ip_address: None,
            })
            .collect();
        PortUpdate {
            name: Some(text("port", s.name)),
            device_id: Some(text("vm", s.device)),
            device_owner: Some(text("compute:az", s.owner)),
            binding_host_id: Some(text("host", s.host)),
            fixed_ips: Some(fixed_ips),
            ..Default::default()
        }
    }

    /// Three networks of projects a, b and admin, each with an IPv4 and an
    /// IPv6 subnet.
    fn start() -> (Cloud, Vec<String>) {
        let mut c = Cloud::new(CloudConfig::default());
        let mut networks = Vec::new();
        for (i, project) in ["a", "b", "admin"].into_iter().enumerate() {
            let create = NetworkCreate {
                project_id: Some(project.into()),
                ..Default::default()
            };
            let (n, _) = c.apply(|c| c.create_network(&admin(), create, 0)).unwrap();
            for cidr in [format!("10.{i}.0.0/24"), format!("fd00:{i}::/64")] {
                let create = SubnetCreate {
                    network_id: n.std.id.clone(),
                    ip_version: if cidr.contains(':') { 6 } else { 4 },
                    cidr: Some(cidr),
                    ..Default::default()
                };
                c.apply(|c| c.create_subnet(&admin(), create, 0)).unwrap();
            }
            networks.push(n.std.id);
        }
        (c, networks)
    }

    fn run(c: &mut Cloud, networks: &[String], step: &Step) -> Result<(), ModelError> {
        let me = admin();
        let ports: Vec<String> = {
            let mut ids: Vec<String> = c.ports().map(|p| p.std.id.clone()).collect();
            ids.sort();
            ids
        };
        let picked = |pick: usize| ports.get(pick % ports.len().max(1)).cloned();
        match step {
            Step::Create { net, project, port } => {
                let create = PortCreate {
                    project_id: Some(["a", "b"][*project].into()),
                    network_id: networks[*net].clone(),
                    attributes: update(c, &networks[*net], port),
                    ..Default::default()
                };
                c.apply(|c| c.create_port(&me, create, 1)).map(drop)
            }
            Step::Update { pick, port } => {
                let Some(id) = picked(*pick) else {
                    return Ok(());
                };
                let network = c
                    .port(&id)
                    .map(|p| p.network_id.clone())
                    .unwrap_or_default();
                let req = update(c, &network, port);
                c.apply(|c| c.update_port(&me, &id, req, 2)).map(drop)
            }
            Step::Delete { pick } => {
                let Some(id) = picked(*pick) else {
                    return Ok(());
                };
                c.apply(|c| c.delete_port(&me, &id, 3)).map(drop)
            }
            Step::RefusedBulk { net, port } => {
                let first = PortCreate {
                    network_id: networks[*net].clone(),
                    attributes: update(c, &networks[*net], port),
                    ..Default::default()
                };
                let refused = PortCreate {
                    network_id: "no-such-network".into(),
                    ..Default::default()
                };
                let outcome = c.apply(|c| {
                    c.create_port(&me, first, 4)?;
                    c.create_port(&me, refused, 4)
                });
                assert!(outcome.is_err(), "the second port has no network");
                Ok(())
            }
            Step::RenameNetwork { net, name } => {
                let req = NetworkUpdate {
                    name: Some(text("net", *name)),
                    ..Default::default()
                };
                c.apply(|c| c.update_network(&me, &networks[*net], req, 5))
                    .map(drop)
            }
            Step::DeleteNetwork { net } => c
                .apply(|c| c.delete_network(&me, &networks[*net]))
                .map(drop),
            Step::Grant {
                net,
                target,
                external,
            } => {
                let action = if *external {
                    "access_as_external"
                } else {
                    "access_as_shared"
                };
                let req = RbacPolicyCreate {
                    project_id: None,
                    object_type: ObjectType::Network,
                    object_id: networks[*net].clone(),
                    action: action.into(),
                    target_project: ["a", "b", WILDCARD][*target].into(),
                };
                c.apply(|c| c.create_rbac_policy(&me, req, 6)).map(drop)
            }
            Step::Revoke { pick } => {
                let mut ids: Vec<String> = c.rbac_policies().map(|p| p.std.id.clone()).collect();
                ids.sort();
                let Some(id) = ids.get(pick % ids.len().max(1)) else {
                    return Ok(());
                };
                c.apply(|c| c.delete_rbac_policy(&me, id, 7)).map(drop)
            }
        }
    }

    /// The records of every kind `caller` may see that its candidates miss.
    fn missed(c: &Cloud, caller: &Caller) -> Vec<(Kind, String)> {
        let mut missed = Vec::new();
        for kind in Kind::ALL {
            crate::resource::with_kind!(kind, R => {
                let sets = R::candidates(c, caller);
                for r in R::table(c).values().filter(|r| r.visible_to(c, caller)) {
                    let id = r.standard().id.as_str();
                    if sets.as_ref().is_some_and(|sets| !sets.iter().any(|s| s.contains(id))) {
                        missed.push((kind, id.to_owned()));
                    }
                }
            });
        }
        missed
    }

    proptest! {
        /// Whatever is created, shared and revoked, a tenant's candidates
        /// hold every record of every kind it may see.
        #[test]
        fn candidates_hold_all_a_tenant_may_see(steps in prop::collection::vec(step(), 1..40)) {
            let (mut c, networks) = start();
            for step in &steps {
                let _ = run(&mut c, &networks, step);
                for project in ["a", "b", "c"] {
                    let caller = Caller { project_id: project.into(), is_admin: false };
                    prop_assert_eq!(missed(&c, &caller), vec![], "{} after {:?}", project, step);
                }
            }
        }

        /// Whatever happens (refusals and undone bulk creates included),
        /// every facet index holds exactly what a scan of the tables finds,
        /// and a cloud loaded from the same records holds the same.
        #[test]
        fn facets_always_agree_with_the_tables(steps in prop::collection::vec(step(), 1..40)) {
            let (mut c, networks) = start();
            for step in &steps {
                // A refusal (a network in use, addresses run out) is fine:
                // it must have changed nothing, which the check also sees.
                let _ = run(&mut c, &networks, step);
                prop_assert_eq!(c.facets_agree(), Ok(()), "after {:?}", step);
            }
            let records: Vec<crate::Resource> = Kind::ALL
                .iter()
                .flat_map(|k| {
                    crate::resource::with_kind!(*k, R => R::table(&c)
                        .values()
                        .cloned()
                        .map(R::into_resource)
                        .collect::<Vec<_>>())
                })
                .collect();
            let loaded = Cloud::load(CloudConfig::default(), records);
            prop_assert!(loaded.facets == c.facets);
        }
    }

    #[test]
    fn a_port_is_found_by_each_facet_and_not_by_an_empty_value() {
        let (mut c, networks) = start();
        let shape = Shape {
            name: 1,
            device: 2,
            owner: 1,
            host: 1,
            subnets: 2,
        };
        run(
            &mut c,
            &networks,
            &Step::Create {
                net: 0,
                project: 1,
                port: shape,
            },
        )
        .unwrap();
        let p = c.ports().next().unwrap().clone();
        let ip = p.fixed_ips[1].ip_address.to_string();
        for (facet, value) in [
            (Facet::Project, "b"),
            (Facet::Name, "port-1"),
            (Facet::Network, networks[0].as_str()),
            (Facet::DeviceId, "vm-2"),
            (Facet::DeviceOwner, "compute:az-1"),
            (Facet::Host, "host-1"),
            (Facet::FixedIp, ip.as_str()),
            (Facet::FixedIpSubnet, p.fixed_ips[0].subnet_id.as_str()),
        ] {
            let ids = c.faceted(Kind::Port, facet, value).unwrap();
            assert!(ids.contains(p.std.id.as_str()), "{facet:?} {value}");
        }
        assert!(
            c.faceted(Kind::Port, Facet::DeviceId, "vm-3")
                .unwrap()
                .is_empty()
        );
        assert!(c.faceted(Kind::Port, Facet::Name, "").is_none());
        assert!(
            c.faceted(Kind::Network, Facet::Network, &networks[0])
                .unwrap()
                .is_empty()
        );
        let subnets = c
            .faceted(Kind::Subnet, Facet::Network, &networks[0])
            .unwrap();
        assert_eq!(subnets.len(), 2);
    }
}
