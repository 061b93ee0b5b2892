//! Subnets: their CIDR (given, or allocated from a subnet pool), gateway,
//! allocation pools, DNS and host routes, and the per-network, per-subnet and
//! per-subnet-pool indexes. Addresses are handed out by the port module; this
//! one only creates and removes the pools they come from.

use std::collections::{BTreeMap, BTreeSet};

use super::subnet_pool::Request;
use super::{Caller, Cloud, Facet, FacetIds, Record, network, set, stored};
use crate::subnet;
use crate::{
    FixedIp, Kind, ModelError, Network, ObjectType, RbacAction, Resource, Subnet, SubnetCreate,
    SubnetPool, SubnetUpdate, Timestamp, ipam,
};

impl Record for Subnet {
    stored!(Subnet in subnets);

    fn visible_to(&self, cloud: &Cloud, caller: &Caller) -> bool {
        cloud.can_see_subnet(caller, self)
    }

    /// Its project's, and those of each network shared with it or with
    /// everyone (an external network's subnets are not shown to others).
    fn candidates<'c>(cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        let mut sets = vec![cloud.owned_ids(Kind::Subnet, caller)?];
        let shared = cloud.granted_ids(Kind::Network, RbacAction::AccessAsShared, caller);
        for network in shared.flatten() {
            sets.extend(cloud.faceted(Kind::Subnet, Facet::Network, network));
        }
        Some(sets)
    }

    fn facets(&self, each: &mut dyn FnMut(Facet, &str)) {
        each(Facet::Network, &self.network_id);
    }

    fn index(&self, cloud: &mut Cloud) {
        let ids = cloud
            .network_subnets
            .entry(self.network_id.clone())
            .or_default();
        if !ids.contains(&self.std.id) {
            ids.push(self.std.id.clone());
        }
        cloud.subnet_ips.entry(self.std.id.clone()).or_default();
        if let Some(pool) = &self.subnetpool_id {
            cloud
                .pool_subnets
                .entry(pool.clone())
                .or_default()
                .insert(self.std.id.clone());
        }
    }

    fn unindex(&self, cloud: &mut Cloud) {
        if let Some(ids) = cloud.network_subnets.get_mut(&self.network_id) {
            ids.retain(|id| id != &self.std.id);
            if ids.is_empty() {
                cloud.network_subnets.remove(&self.network_id);
            }
        }
        if cloud
            .subnet_ips
            .get(&self.std.id)
            .is_some_and(BTreeMap::is_empty)
        {
            cloud.subnet_ips.remove(&self.std.id);
        }
        cloud.subnet_cursor.remove(&self.std.id);
        if let Some(pool) = &self.subnetpool_id {
            super::remove_from(&mut cloud.pool_subnets, pool, &self.std.id);
        }
    }
}

impl Cloud {
    /// Its project's, and any project's its network is shared with. Not
    /// those it is only external for: showing an external network's
    /// subnets is Neutron's `subnet-external-network`, which vnet does not
    /// offer (tempest checks the two go together).
    pub fn can_see_subnet(&self, caller: &Caller, s: &Subnet) -> bool {
        caller.owns(&s.std.project_id)
            || self.shared_with(ObjectType::Network, &s.network_id, &caller.project_id)
    }

    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values()
    }

    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.get(id)
    }

    /// Subnet ids of a network, in creation order.
    pub fn subnets_of(&self, network_id: &str) -> &[String] {
        self.network_subnets
            .get(network_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Number of addresses in use on a subnet.
    pub fn used_ips(&self, subnet_id: &str) -> usize {
        self.subnet_ips.get(subnet_id).map_or(0, BTreeMap::len)
    }

    pub fn create_subnet(
        &mut self,
        caller: &Caller,
        req: SubnetCreate,
        now: Timestamp,
    ) -> Result<Subnet, ModelError> {
        let network: Network = self.writable_as(caller, &req.network_id)?;
        let project_id = self.project_for(caller, req.project_id.clone())?;
        self.check_quota(&project_id, Kind::Subnet)?;
        if req.ip_version != 4 && req.ip_version != 6 {
            return Err(ModelError::invalid(format!(
                "{} is not in [4, 6]",
                req.ip_version
            )));
        }
        let pool = self.pool_for(caller, &req)?;
        self.check_pool_affinity(&network.std.id, req.ip_version, pool.as_ref())?;
        let cidr = match (&pool, &req.cidr) {
            (None, Some(cidr)) => subnet::parse_cidr(cidr, req.ip_version)?,
            (None, None) => {
                return Err(ModelError::bad_subnet(
                    "a subnetpool must be specified in the absence of a cidr",
                ));
            }
            (Some(pool), given) => {
                // Neutron's specific request: a CIDR, or one made of the
                // gateway and the prefix length.
                let specific = match (given, req.gateway_ip) {
                    (Some(cidr), _) => Some(subnet::parse_cidr(cidr, req.ip_version)?),
                    (None, Some(Some(gw))) => {
                        let len = req.prefixlen.unwrap_or(pool.default_prefixlen.into());
                        let net = u8::try_from(len)
                            .ok()
                            .and_then(|l| ipnet::IpNet::new(gw, l).ok())
                            .ok_or_else(|| {
                                ModelError::invalid(format!("{len} is not a valid prefix length"))
                            })?;
                        Some(net.trunc())
                    }
                    (None, _) => None,
                };
                if specific.is_none() && req.allocation_pools.is_some() {
                    return Err(ModelError::bad_subnet(
                        "allocation_pools allowed only for specific subnet requests.",
                    ));
                }
                let request = match specific {
                    Some(cidr) => Request::Specific(cidr),
                    None => Request::Any(req.prefixlen.unwrap_or(pool.default_prefixlen.into())),
                };
                let cidr = self.allocate_from_pool(pool, &project_id, request)?;
                // An allocated CIDR meets what a given one must.
                subnet::parse_cidr(&cidr.to_string(), req.ip_version)?
            }
        };
        subnet::check_ipv6_modes(
            req.ip_version,
            &cidr,
            req.ipv6_ra_mode,
            req.ipv6_address_mode,
        )?;
        if req.ip_version == 6 {
            network::check_ipv6_mtu(network.mtu)?;
        }
        if let Some(other) = self
            .subnets_of(&network.std.id)
            .iter()
            .filter_map(|s| self.subnets.get(s))
            .find(|s| s.cidr.contains(&cidr.network()) || cidr.contains(&s.cidr.network()))
        {
            return Err(ModelError::invalid(format!(
                "Requested subnet with cidr: {cidr} for network: {} overlaps with another subnet {}",
                network.std.id, other.std.id
            )));
        }
        let gateway_ip = match req.gateway_ip {
            Some(given) => given,
            // With router advertisements the subnet-router anycast address is the
            // gateway, as Neutron answers; otherwise the first host address.
            None if req.ipv6_ra_mode.is_some() => Some(cidr.network()),
            // The address after the network's (Neutron's first host): for
            // IPv6 `hosts()` starts at the subnet-router anycast address.
            None => cidr.hosts().find(|a| *a != cidr.network()),
        };
        if let Some(gw) = gateway_ip {
            subnet::check_gateway(&cidr, gw)?;
        }
        let allocation_pools = match req.allocation_pools {
            Some(pools) => {
                subnet::check_pools(&cidr, gateway_ip, &pools)?;
                pools
            }
            None => ipam::default_pools(&cidr, gateway_ip),
        };
        let dns_nameservers = req.dns_nameservers.unwrap_or_default();
        subnet::check_nameservers(None, req.ip_version, &dns_nameservers)?;
        let host_routes = req.host_routes.unwrap_or_default();
        subnet::check_host_routes(None, req.ip_version, &host_routes)?;
        let service_types = req.service_types.unwrap_or_default();
        subnet::check_service_types(&service_types)?;
        self.ensure_default_group(&project_id, now);
        let subnet = Subnet {
            std: self.standard(project_id, req.name, req.description, req.tags, now)?,
            network_id: network.std.id.clone(),
            ip_version: req.ip_version,
            cidr,
            gateway_ip,
            allocation_pools,
            dns_nameservers,
            host_routes,
            enable_dhcp: req.enable_dhcp.unwrap_or(true),
            ipv6_ra_mode: req.ipv6_ra_mode,
            ipv6_address_mode: req.ipv6_address_mode,
            subnetpool_id: pool.map(|p| p.std.id),
            service_types,
        };
        self.put(Resource::Subnet(subnet.clone()));
        self.touch(Kind::Network, &subnet.network_id, now);
        if subnet.is_auto_address() {
            // Neutron gives every port already on the network its address
            // here, but for router interfaces, which hold gateways
            // (`_add_auto_addrs_on_network_ports`).
            let ports: Vec<String> = self
                .network_ports
                .get(&network.std.id)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for port_id in ports {
                if let Some(mut port) = self.ports.get(&port_id).cloned()
                    && port.device_owner != crate::router::OWNER_ROUTER_INTERFACE
                    && let Some(ip) = ipam::eui64(&subnet.cidr, port.mac_address)
                {
                    port.fixed_ips.push(FixedIp {
                        subnet_id: subnet.std.id.clone(),
                        ip_address: ip,
                    });
                    port.std.touch(now);
                    self.put(Resource::Port(port));
                }
            }
        }
        Ok(subnet)
    }

    /// The pool a create asks to allocate from: named, or the default of
    /// its IP version; as Neutron resolves it.
    fn pool_for(
        &self,
        caller: &Caller,
        req: &SubnetCreate,
    ) -> Result<Option<SubnetPool>, ModelError> {
        if req.cidr.is_some() && req.prefixlen.is_some() {
            return Err(ModelError::bad_subnet(
                "cidr and prefixlen must not be supplied together",
            ));
        }
        let pool = match (&req.subnetpool_id, req.use_default_subnetpool) {
            (Some(_), true) => {
                return Err(ModelError::bad_subnet(
                    "subnetpool_id and use_default_subnetpool cannot both be specified",
                ));
            }
            (Some(id), false) => self.visible_as::<SubnetPool>(caller, id)?,
            (None, true) => self
                .default_pool(caller, req.ip_version)
                .cloned()
                .ok_or_else(|| {
                    ModelError::bad_subnet(format!(
                        "No default subnetpool found for IPv{}",
                        req.ip_version
                    ))
                })?,
            (None, false) => return Ok(None),
        };
        if pool.ip_version != req.ip_version {
            return Err(ModelError::bad_subnet(format!(
                "Cannot allocate IPv{} subnet from IPv{} subnet pool",
                req.ip_version, pool.ip_version
            )));
        }
        Ok(Some(pool))
    }

    /// Subnets of one IP version on one network come from one pool (or
    /// none), as Neutron requires without address scopes.
    fn check_pool_affinity(
        &self,
        network_id: &str,
        ip_version: u8,
        pool: Option<&SubnetPool>,
    ) -> Result<(), ModelError> {
        let pool_id = pool.map(|p| p.std.id.as_str());
        let mixed = self
            .subnets_of(network_id)
            .iter()
            .filter_map(|s| self.subnets.get(s))
            .filter(|s| s.ip_version == ip_version)
            .any(|s| s.subnetpool_id.as_deref() != pool_id);
        if mixed {
            return Err(ModelError::NetworkSubnetPoolAffinityError);
        }
        Ok(())
    }

    pub fn update_subnet(
        &mut self,
        caller: &Caller,
        id: &str,
        req: SubnetUpdate,
        now: Timestamp,
    ) -> Result<Subnet, ModelError> {
        let mut s: Subnet = self.writable_as(caller, id)?;
        if let Some(gateway) = req.gateway_ip {
            if let Some(gw) = gateway {
                subnet::check_gateway(&s.cidr, gw)?;
            }
            s.gateway_ip = gateway;
        }
        if let Some(pools) = req.allocation_pools {
            s.allocation_pools = pools;
        }
        subnet::check_pools(&s.cidr, s.gateway_ip, &s.allocation_pools)?;
        if let Some(servers) = req.dns_nameservers {
            subnet::check_nameservers(Some(id), s.ip_version, &servers)?;
            s.dns_nameservers = servers;
        }
        if let Some(routes) = req.host_routes {
            subnet::check_host_routes(Some(id), s.ip_version, &routes)?;
            s.host_routes = routes;
        }
        if let Some(types) = &req.service_types {
            subnet::check_service_types(types)?;
        }
        set(&mut s.std.name, req.name);
        set(&mut s.std.description, req.description);
        set(&mut s.enable_dhcp, req.enable_dhcp);
        set(&mut s.service_types, req.service_types);
        s.std.touch(now);
        self.put(Resource::Subnet(s.clone()));
        Ok(s)
    }

    pub fn delete_subnet(
        &mut self,
        caller: &Caller,
        id: &str,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let s: Subnet = self.writable_as(caller, id)?;
        let holders: BTreeSet<String> = self
            .subnet_ips
            .get(id)
            .into_iter()
            .flat_map(|m| m.values().cloned())
            .collect();
        if !holders.is_empty() && !s.is_auto_address() {
            return Err(ModelError::SubnetInUse { id: id.to_owned() });
        }
        // Automatic addresses go with their subnet, as in Neutron.
        for port_id in holders {
            if let Some(mut port) = self.ports.get(&port_id).cloned() {
                port.fixed_ips.retain(|ip| ip.subnet_id != id);
                port.std.touch(now);
                self.put(Resource::Port(port));
            }
        }
        self.remove(Kind::Subnet, id);
        self.touch(Kind::Network, &s.network_id, now);
        Ok(())
    }
}
