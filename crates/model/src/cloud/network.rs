//! Networks: their provider segment (a VXLAN VNI, or a flat network's
//! physical network), MTU, and `shared`/`router:external` as the wildcard
//! RBAC policies they are (`rbac.rs` keeps them). Knows nothing of a
//! network's subnets or ports beyond the indexes it reads.

use super::{Caller, Cloud, FacetIds, Record, l3, set, stored};
use crate::{
    Kind, ModelError, Network, NetworkCreate, NetworkUpdate, OWNER_FLOATING_IP, ObjectType,
    RbacAction, Resource, Timestamp, WILDCARD,
};

impl Record for Network {
    stored!(Network in networks);

    fn visible_to(&self, cloud: &Cloud, caller: &Caller) -> bool {
        cloud.can_see_network(caller, self)
    }

    /// Its project's, and those granted to it or to everyone, shared or external.
    fn candidates<'c>(cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        let mut sets = cloud.owned_or_shared(Kind::Network, caller)?;
        sets.extend(cloud.granted_ids(Kind::Network, RbacAction::AccessAsExternal, caller));
        Some(sets)
    }

    fn index(&self, cloud: &mut Cloud) {
        match &self.physical_network {
            Some(physnet) => {
                cloud
                    .flat_networks
                    .insert(physnet.clone(), self.std.id.clone());
            }
            None => {
                cloud.vnis.insert(self.segmentation_id);
            }
        }
        if self.is_default {
            cloud.default_external = Some(self.std.id.clone());
        }
    }

    fn unindex(&self, cloud: &mut Cloud) {
        match &self.physical_network {
            Some(physnet) => {
                cloud.flat_networks.remove(physnet);
            }
            None => {
                cloud.vnis.remove(&self.segmentation_id);
            }
        }
        if cloud.default_external.as_deref() == Some(self.std.id.as_str()) {
            cloud.default_external = None;
        }
    }
}

impl Cloud {
    /// Its project's, and any project's it is shared with or external for
    /// (an external network is where floating IPs come from), as Neutron's
    /// network query with both RBAC actions.
    pub fn can_see_network(&self, caller: &Caller, n: &Network) -> bool {
        let (id, project) = (n.std.id.as_str(), caller.project_id.as_str());
        caller.owns(&n.std.project_id)
            || self.granted(ObjectType::Network, id, RbacAction::AccessAsShared, project)
            || self.granted(
                ObjectType::Network,
                id,
                RbacAction::AccessAsExternal,
                project,
            )
    }

    /// Whether `project` may put ports on the network: its own, or shared
    /// with it (Neutron's `create_port` rule: owner, or `rule:shared`).
    pub(super) fn may_use_network(&self, project: &str, n: &Network) -> bool {
        n.std.project_id == project || self.shared_with(ObjectType::Network, &n.std.id, project)
    }

    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    /// `is_default` as a create or update leaves it: the operator's to set,
    /// on an external network only (one that stops being external stops
    /// being the default), and on one network at most.
    fn default_external_flag(
        &self,
        caller: &Caller,
        verb: &str,
        id: Option<&str>,
        wanted: Option<bool>,
        external: bool,
        current: bool,
    ) -> Result<bool, ModelError> {
        let Some(wanted) = wanted else {
            return Ok(current && external);
        };
        if !caller.is_admin {
            return Err(ModelError::Forbidden(format!(
                "(rule:{verb}_network:is_default) is disallowed by policy"
            )));
        }
        if wanted && !external {
            return Err(ModelError::invalid(
                "is_default applies to router:external networks only",
            ));
        }
        if wanted
            && let Some(other) = self.default_external.as_deref()
            && Some(other) != id
        {
            return Err(ModelError::DefaultExternalNetworkExists {
                id: other.to_owned(),
            });
        }
        Ok(wanted)
    }

    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.get(id)
    }

    pub fn create_network(
        &mut self,
        caller: &Caller,
        req: NetworkCreate,
        now: Timestamp,
    ) -> Result<Network, ModelError> {
        let project_id = self.project_for(caller, req.project_id)?;
        self.check_quota(&project_id, Kind::Network)?;
        if req.shared == Some(true) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "Only an admin may create a shared network".into(),
            ));
        }
        if req.external == Some(true) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:create_network:router:external) is disallowed by policy".into(),
            ));
        }
        let provider_given = req.network_type.is_some()
            || req.segmentation_id.is_some()
            || req.physical_network.is_some();
        if provider_given && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "Only an admin may set provider attributes".into(),
            ));
        }
        let mtu = self.check_mtu(req.mtu)?;
        let external = req.external.unwrap_or(false);
        let is_default =
            self.default_external_flag(caller, "create", None, req.is_default, external, false)?;
        let (network_type, segmentation_id, physical_network) =
            self.provider_segment(req.network_type, req.segmentation_id, req.physical_network)?;
        self.ensure_default_group(&project_id, now);
        let network = Network {
            std: self.standard(project_id, req.name, req.description, req.tags, now)?,
            admin_state_up: req.admin_state_up.unwrap_or(true),
            mtu,
            legacy_shared: false,
            legacy_external: false,
            port_security_enabled: req.port_security_enabled.unwrap_or(true),
            network_type,
            segmentation_id,
            physical_network,
            availability_zone_hints: req.availability_zone_hints.unwrap_or_default(),
            is_default,
        };
        self.put(Resource::Network(network.clone()));
        // `shared` and `router:external` are the wildcard policies, made by
        // the network's owner as Neutron makes them.
        let object = (ObjectType::Network, network.std.id.as_str());
        let owner = network.std.project_id.as_str();
        if req.shared == Some(true) {
            self.put_policy(owner, object, RbacAction::AccessAsShared, WILDCARD, now);
        }
        if req.external == Some(true) {
            self.put_policy(owner, object, RbacAction::AccessAsExternal, WILDCARD, now);
        }
        Ok(network)
    }

    /// The segment a create asks for, checked as Neutron's type drivers
    /// check it: `(network_type, segmentation_id, physical_network)`. A flat
    /// network names a physical network nobody else's flat network uses and
    /// no segmentation id; a VXLAN network names no physical network and gets
    /// a free VNI unless it asks for one.
    fn provider_segment(
        &mut self,
        network_type: Option<String>,
        segmentation_id: Option<u32>,
        physical_network: Option<String>,
    ) -> Result<(String, u32, Option<String>), ModelError> {
        let network_type = match network_type {
            Some(t) => t,
            None if segmentation_id.is_some() || physical_network.is_some() => {
                return Err(ModelError::invalid("network_type required"));
            }
            None => crate::VXLAN.to_owned(),
        };
        match network_type.as_str() {
            crate::FLAT => {
                if segmentation_id.is_some() {
                    return Err(ModelError::invalid(
                        "segmentation_id prohibited for flat provider network",
                    ));
                }
                let Some(physnet) = physical_network.filter(|p| !p.is_empty()) else {
                    return Err(ModelError::invalid(
                        "physical_network required for flat provider network",
                    ));
                };
                if physnet.len() > MAX_PHYSICAL_NETWORK_LEN {
                    return Err(ModelError::invalid(format!(
                        "'{physnet}' exceeds maximum length of {MAX_PHYSICAL_NETWORK_LEN}"
                    )));
                }
                if self.flat_networks.contains_key(&physnet) {
                    return Err(ModelError::FlatNetworkInUse {
                        physical_network: physnet,
                    });
                }
                Ok((network_type, 0, Some(physnet)))
            }
            crate::VXLAN => {
                if physical_network.is_some() {
                    return Err(ModelError::invalid(
                        "physical_network prohibited for vxlan provider network",
                    ));
                }
                let vni = match segmentation_id {
                    Some(vni) => {
                        if !(1..=0x00ff_ffff).contains(&vni) {
                            return Err(ModelError::invalid(format!(
                                "{vni} is not a valid VXLAN VNI (1 to 16777215)"
                            )));
                        }
                        if self.vnis.contains(&vni) {
                            return Err(ModelError::TunnelIdInUse { id: vni });
                        }
                        vni
                    }
                    None => self.allocate_vni()?,
                };
                Ok((network_type, vni, None))
            }
            other => Err(ModelError::invalid(format!(
                "network_type value '{other}' not supported"
            ))),
        }
    }

    fn check_mtu(&self, mtu: Option<u32>) -> Result<u32, ModelError> {
        let max = self.config.max_mtu;
        match mtu {
            None => Ok(max),
            Some(m) if m > max => Err(ModelError::invalid(format!(
                "Requested MTU is too big, maximum is {max}"
            ))),
            Some(m) if m < 68 => Err(ModelError::invalid(format!(
                "Requested MTU {m} is too small, minimum is 68"
            ))),
            Some(m) => Ok(m),
        }
    }

    fn allocate_vni(&mut self) -> Result<u32, ModelError> {
        let (lo, hi) = self.config.vni_range;
        let start = self.vni_cursor.clamp(lo, hi);
        let free = (start..=hi)
            .chain(lo..start)
            .find(|v| !self.vnis.contains(v))
            .ok_or(ModelError::NoNetworkAvailable)?;
        self.vni_cursor = free.saturating_add(1);
        Ok(free)
    }

    pub fn update_network(
        &mut self,
        caller: &Caller,
        id: &str,
        req: NetworkUpdate,
        now: Timestamp,
    ) -> Result<Network, ModelError> {
        let mut n: Network = self.writable_as(caller, id)?;
        let shared = self
            .grant_of(
                ObjectType::Network,
                id,
                RbacAction::AccessAsShared,
                WILDCARD,
            )
            .is_some();
        let external = self.is_external(id);
        if req.shared.is_some_and(|s| s != shared) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "Only an admin may change whether a network is shared".into(),
            ));
        }
        if req.external.is_some_and(|e| e != external) && !caller.is_admin {
            return Err(ModelError::Forbidden(
                "(rule:update_network:router:external) is disallowed by policy".into(),
            ));
        }
        let object = (ObjectType::Network, id);
        let owner = n.std.project_id.clone();
        match (req.external, external) {
            (Some(false), true) => {
                let gateways = self
                    .network_ports
                    .get(id)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| self.ports.get(p))
                    .any(|p| l3::is_l3_owner(&p.device_owner));
                if gateways {
                    return Err(ModelError::ExternalNetworkInUse { id: id.to_owned() });
                }
                // Every `access_as_external` policy goes, as in Neutron.
                self.remove_policies(id, Some(RbacAction::AccessAsExternal));
            }
            (Some(true), false) => {
                self.put_policy(&owner, object, RbacAction::AccessAsExternal, WILDCARD, now);
            }
            _ => {}
        }
        match (req.shared, shared) {
            (Some(false), true) => {
                if let Some(wildcard) = self
                    .grant_of(
                        ObjectType::Network,
                        id,
                        RbacAction::AccessAsShared,
                        WILDCARD,
                    )
                    .cloned()
                {
                    self.remove(Kind::RbacPolicy, &wildcard);
                }
                self.check_unshare_network(&n)?;
            }
            (Some(true), false) => {
                self.put_policy(&owner, object, RbacAction::AccessAsShared, WILDCARD, now);
            }
            _ => {}
        }
        if let Some(mtu) = req.mtu {
            n.mtu = self.check_mtu(Some(mtu))?;
            if self
                .subnets_of(id)
                .iter()
                .any(|s| self.subnets.get(s).is_some_and(|s| s.ip_version == 6))
            {
                check_ipv6_mtu(n.mtu)?;
            }
        }
        n.is_default = self.default_external_flag(
            caller,
            "update",
            Some(id),
            req.is_default,
            req.external.unwrap_or(external),
            n.is_default,
        )?;
        set(&mut n.std.name, req.name);
        set(&mut n.std.description, req.description);
        set(&mut n.admin_state_up, req.admin_state_up);
        set(&mut n.port_security_enabled, req.port_security_enabled);
        n.std.touch(now);
        self.put(Resource::Network(n.clone()));
        Ok(n)
    }

    pub fn delete_network(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        self.writable(caller, Kind::Network, id)?;
        // As Neutron: an external network's floating IPs that nothing uses
        // (no port, no forwarding) go with it; the rest keep it in use.
        let free_floating_ips: Vec<(String, String)> = self
            .network_ports
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|p| self.ports.get(p))
            .filter(|p| p.device_owner == OWNER_FLOATING_IP)
            .filter_map(|p| self.floating_ips.get(&p.device_id))
            .filter(|f| f.association.is_none() && f.port_forwardings.is_empty())
            .map(|f| (f.std.id.clone(), f.floating_port_id.clone()))
            .collect();
        for (fip, port) in free_floating_ips {
            self.remove(Kind::Port, &port);
            self.remove(Kind::FloatingIp, &fip);
        }
        if let Some(ports) = self.network_ports.get(id).filter(|p| !p.is_empty()) {
            return Err(ModelError::NetworkInUse {
                id: id.to_owned(),
                ports: ports.iter().cloned().collect(),
            });
        }
        for subnet in self.subnets_of(id).to_vec() {
            self.remove(Kind::Subnet, &subnet);
        }
        self.remove_policies(id, None);
        self.remove(Kind::Network, id);
        Ok(())
    }
}

/// IPv6 needs links of at least 1280 bytes (RFC 8200): a network with an
/// IPv6 subnet keeps an MTU that carries it.
pub(super) fn check_ipv6_mtu(mtu: u32) -> Result<(), ModelError> {
    if mtu < 1280 {
        return Err(ModelError::invalid(format!(
            "IPv6 protocol requires a minimum MTU of 1280, while the network's MTU is {mtu}"
        )));
    }
    Ok(())
}

/// Neutron's limit on a physical network's name.
const MAX_PHYSICAL_NETWORK_LEN: usize = 64;
