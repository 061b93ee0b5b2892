//! Ports: MACs, fixed IPs (IPAM against the subnet address index), security
//! groups, address pairs, binding, and the status agents report. Owns every
//! index keyed by a port; the ports routers and floating IPs own are `l3`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Caller, Cloud, Facet, Record, l3, remove_from, set, stored};
use crate::port::{
    AddressPairRequest, ExtraDhcpOpt, MAX_ALLOWED_ADDRESS_PAIRS, MAX_EXTRA_DHCP_OPTS,
    MAX_FIXED_IPS, VNIC_TYPES,
};
use crate::{
    AddressPair, FixedIp, FixedIpRequest, Kind, MacAddr, ModelError, Network,
    OWNER_ROUTER_INTERFACE, ObjectType, Port, PortCreate, PortStatus, PortUpdate, Resource, Subnet,
    Timestamp, ipam,
};

impl Record for Port {
    stored!(Port in ports);

    fn facets(&self, each: &mut dyn FnMut(Facet, &str)) {
        each(Facet::Network, &self.network_id);
        each(Facet::DeviceId, &self.device_id);
        each(Facet::DeviceOwner, &self.device_owner);
        each(Facet::Host, &self.binding_host_id);
        for ip in &self.fixed_ips {
            each(Facet::FixedIp, &ip.ip_address.to_string());
            each(Facet::FixedIpSubnet, &ip.subnet_id);
        }
        for group in &self.security_groups {
            each(Facet::SecurityGroup, group);
        }
    }

    fn index(&self, cloud: &mut Cloud) {
        let id = &self.std.id;
        cloud
            .network_ports
            .entry(self.network_id.clone())
            .or_default()
            .insert(id.clone());
        cloud
            .network_macs
            .entry(self.network_id.clone())
            .or_default()
            .insert(self.mac_address, id.clone());
        for ip in &self.fixed_ips {
            cloud
                .subnet_ips
                .entry(ip.subnet_id.clone())
                .or_default()
                .insert(ip.ip_address, id.clone());
        }
        for g in &self.security_groups {
            cloud
                .group_ports
                .entry(g.clone())
                .or_default()
                .insert(id.clone());
        }
        if !self.binding_host_id.is_empty() {
            cloud
                .host_ports
                .entry(self.binding_host_id.clone())
                .or_default()
                .insert(id.clone());
        }
        if self.device_owner.starts_with("network:router_") && !self.device_id.is_empty() {
            cloud
                .router_ports
                .entry(self.device_id.clone())
                .or_default()
                .insert(id.clone());
            if self.device_owner == OWNER_ROUTER_INTERFACE {
                for ip in &self.fixed_ips {
                    cloud
                        .subnet_routers
                        .entry(ip.subnet_id.clone())
                        .or_default()
                        .insert(self.device_id.clone());
                }
            }
        }
    }

    fn unindex(&self, cloud: &mut Cloud) {
        let id = &self.std.id;
        remove_from(&mut cloud.network_ports, &self.network_id, id);
        if let Some(macs) = cloud.network_macs.get_mut(&self.network_id) {
            if macs.get(&self.mac_address) == Some(id) {
                macs.remove(&self.mac_address);
            }
            if macs.is_empty() {
                cloud.network_macs.remove(&self.network_id);
            }
        }
        for ip in &self.fixed_ips {
            if let Some(ips) = cloud.subnet_ips.get_mut(&ip.subnet_id)
                && ips.get(&ip.ip_address) == Some(id)
            {
                ips.remove(&ip.ip_address);
            }
        }
        for g in &self.security_groups {
            remove_from(&mut cloud.group_ports, g, id);
        }
        remove_from(&mut cloud.host_ports, &self.binding_host_id, id);
        if self.device_owner.starts_with("network:router_") {
            remove_from(&mut cloud.router_ports, &self.device_id, id);
            if self.device_owner == OWNER_ROUTER_INTERFACE {
                for ip in &self.fixed_ips {
                    remove_from(&mut cloud.subnet_routers, &ip.subnet_id, &self.device_id);
                }
            }
        }
    }
}

impl Cloud {
    pub fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.values()
    }

    pub fn port(&self, id: &str) -> Option<&Port> {
        self.ports.get(id)
    }

    /// The port of a network that holds `ip` as a fixed IP (one lookup per
    /// subnet of the network).
    pub fn port_with_ip(&self, network_id: &str, ip: IpAddr) -> Option<&Port> {
        self.subnets_of(network_id)
            .iter()
            .find_map(|s| self.subnet_ips.get(s)?.get(&ip))
            .and_then(|id| self.ports.get(id))
    }

    pub fn create_port(
        &mut self,
        caller: &Caller,
        req: PortCreate,
        now: Timestamp,
    ) -> Result<Port, ModelError> {
        let network: Network = self.visible_as(caller, &req.network_id)?;
        let project_id = self.project_for(caller, req.project_id.clone())?;
        // Seeing a network (external for the caller) is not using it.
        if !caller.is_admin && !self.may_use_network(&caller.project_id, &network) {
            return Err(ModelError::Forbidden(
                "(rule:create_port) is disallowed by policy".into(),
            ));
        }
        self.check_quota(&project_id, Kind::Port)?;
        let a = req.attributes;
        check_binding_admin(caller, &a, "create")?;
        let network_id = network.std.id.clone();
        let mac_address = match a.mac_address.flatten() {
            Some(mac) => {
                self.check_mac(&network_id, mac, None)?;
                mac
            }
            None => self.generate_mac(&network_id)?,
        };
        let port_security_enabled = a
            .port_security_enabled
            .unwrap_or(network.port_security_enabled);
        let device_owner = a.device_owner.unwrap_or_default();
        self.ensure_default_group(&project_id, now);
        let security_groups = match a.security_groups {
            Some(groups) => self.check_groups(&project_id, groups)?,
            None if port_security_enabled && !device_owner.starts_with("network:") => self
                .default_groups
                .get(&project_id)
                .cloned()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        if !port_security_enabled && !security_groups.is_empty() {
            return Err(ModelError::PortSecurityAndIPRequiredForSecurityGroups);
        }
        let allowed_address_pairs =
            address_pairs(a.allowed_address_pairs.unwrap_or_default(), mac_address)?;
        if !port_security_enabled && !allowed_address_pairs.is_empty() {
            return Err(ModelError::AddressPairAndPortSecurityRequired);
        }
        let fixed_ips = self.plan_fixed_ips(
            &network_id,
            None,
            mac_address,
            &device_owner,
            a.fixed_ips.as_deref(),
        )?;
        let binding_vnic_type = check_vnic_type(a.binding_vnic_type)?;
        let port = Port {
            std: self.standard(project_id, a.name, a.description, req.tags, now)?,
            network_id,
            mac_address,
            admin_state_up: a.admin_state_up.unwrap_or(true),
            status: PortStatus::Down,
            device_id: a.device_id.unwrap_or_default(),
            device_owner,
            fixed_ips,
            security_groups,
            port_security_enabled,
            allowed_address_pairs,
            extra_dhcp_opts: extra_dhcp_opts(a.extra_dhcp_opts.unwrap_or_default())?,
            binding_host_id: a.binding_host_id.unwrap_or_default(),
            binding_vnic_type,
            binding_profile: a.binding_profile.unwrap_or_else(|| "{}".into()),
        };
        self.put(Resource::Port(port.clone()));
        Ok(port)
    }

    pub fn update_port(
        &mut self,
        caller: &Caller,
        id: &str,
        req: PortUpdate,
        now: Timestamp,
    ) -> Result<Port, ModelError> {
        let mut p: Port = self.writable_as(caller, id)?;
        check_binding_admin(caller, &req, "update")?;
        if let Some(wanted) = req.mac_address.filter(|m| *m != Some(p.mac_address)) {
            if !p.binding_host_id.is_empty() {
                return Err(ModelError::PortBound {
                    id: id.to_owned(),
                    vif_type: "bridge".into(),
                    old_mac: p.mac_address.to_string(),
                    new_mac: wanted.map_or_else(|| "None".to_owned(), |m| m.to_string()),
                });
            }
            let mac = match wanted {
                Some(mac) => {
                    self.check_mac(&p.network_id, mac, Some(id))?;
                    mac
                }
                None => self.generate_mac(&p.network_id)?,
            };
            p.mac_address = mac;
            // Automatic (EUI-64) addresses follow the MAC.
            for ip in &mut p.fixed_ips {
                if let Some(s) = self
                    .subnets
                    .get(&ip.subnet_id)
                    .filter(|s| s.is_auto_address())
                    && let Some(addr) = ipam::eui64(&s.cidr, mac)
                {
                    ip.ip_address = addr;
                }
            }
        }
        if let Some(requests) = req.fixed_ips {
            let owner = req
                .device_owner
                .clone()
                .unwrap_or_else(|| p.device_owner.clone());
            p.fixed_ips = self.plan_fixed_ips(
                &p.network_id,
                Some(id),
                p.mac_address,
                &owner,
                Some(&requests),
            )?;
        }
        if let Some(groups) = req.security_groups {
            p.security_groups = self.check_groups(&p.std.project_id, groups)?;
        }
        set(&mut p.port_security_enabled, req.port_security_enabled);
        if let Some(pairs) = req.allowed_address_pairs {
            p.allowed_address_pairs = address_pairs(pairs, p.mac_address)?;
        }
        if !p.port_security_enabled {
            if !p.security_groups.is_empty() {
                return Err(ModelError::PortSecurityPortHasSecurityGroup);
            }
            if !p.allowed_address_pairs.is_empty() {
                return Err(ModelError::AddressPairAndPortSecurityRequired);
            }
        }
        if req.binding_vnic_type.is_some() {
            p.binding_vnic_type = check_vnic_type(req.binding_vnic_type)?;
        }
        set(&mut p.std.name, req.name);
        set(&mut p.std.description, req.description);
        set(&mut p.admin_state_up, req.admin_state_up);
        set(&mut p.device_id, req.device_id);
        set(&mut p.device_owner, req.device_owner);
        if let Some(opts) = req.extra_dhcp_opts {
            p.extra_dhcp_opts = extra_dhcp_opts(opts)?;
        }
        if let Some(host) = req.binding_host_id.filter(|h| *h != p.binding_host_id) {
            // A port on a new host is not wired there until its agent says so.
            p.binding_host_id = host;
            p.status = PortStatus::Down;
        }
        set(&mut p.binding_profile, req.binding_profile);
        p.std.touch(now);
        self.put(Resource::Port(p.clone()));
        Ok(p)
    }

    pub fn delete_port(
        &mut self,
        caller: &Caller,
        id: &str,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let port: Port = self.writable_as(caller, id)?;
        if l3::is_l3_owner(&port.device_owner) {
            return Err(ModelError::L3PortInUse {
                port_id: id.to_owned(),
                device_owner: port.device_owner,
            });
        }
        self.release_floating_ips(id, now);
        self.remove(Kind::Port, id);
        Ok(())
    }

    fn check_mac(
        &self,
        network_id: &str,
        mac: MacAddr,
        port: Option<&str>,
    ) -> Result<(), ModelError> {
        if !mac.is_valid_port_mac() {
            return Err(ModelError::invalid(format!(
                "'{mac}' is not a valid MAC address"
            )));
        }
        let holder = self.network_macs.get(network_id).and_then(|m| m.get(&mac));
        if holder.is_some_and(|h| Some(h.as_str()) != port) {
            return Err(ModelError::MacAddressInUse {
                network_id: network_id.to_owned(),
                mac: mac.to_string(),
            });
        }
        Ok(())
    }

    pub(super) fn generate_mac(&mut self, network_id: &str) -> Result<MacAddr, ModelError> {
        let [a, b, c] = self.config.mac_base;
        for _ in 0..16 {
            let r = self.rng.next_u64().to_le_bytes();
            let mac = MacAddr([a, b, c, r[0], r[1], r[2]]);
            if self.check_mac(network_id, mac, None).is_ok() {
                return Ok(mac);
            }
        }
        Err(ModelError::MacAddressGenerationFailure {
            network_id: network_id.to_owned(),
        })
    }

    /// Groups named for a port of `project_id`: they must exist and belong to it.
    fn check_groups(
        &self,
        project_id: &str,
        groups: Vec<String>,
    ) -> Result<Vec<String>, ModelError> {
        let mut out: Vec<String> = Vec::with_capacity(groups.len());
        for g in groups {
            // The port's project's own groups, or groups shared with it.
            match self.groups.get(&g) {
                Some(group)
                    if group.std.project_id == project_id
                        || self.shared_with(ObjectType::SecurityGroup, &g, project_id) => {}
                _ => return Err(ModelError::not_found(Kind::SecurityGroup, &g)),
            }
            if !out.contains(&g) {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Decide a port's fixed IPs. `port` is the port being updated, whose own
    /// addresses do not count as taken. Nothing is recorded until the port is put.
    pub(super) fn plan_fixed_ips(
        &mut self,
        network_id: &str,
        port: Option<&str>,
        mac: MacAddr,
        device_owner: &str,
        requests: Option<&[FixedIpRequest]>,
    ) -> Result<Vec<FixedIp>, ModelError> {
        let subnets: Vec<Subnet> = self
            .subnets_of(network_id)
            .iter()
            .filter_map(|id| self.subnets.get(id).cloned())
            .collect();
        // Subnet service types: the subnets for this device owner if the
        // network has any, else those for nobody in particular. Addresses
        // asked for by subnet or IP are the asker's choice.
        let specific = subnets.iter().any(|s| s.serves(device_owner, true));
        let serving: Vec<&Subnet> = subnets
            .iter()
            .filter(|s| s.serves(device_owner, specific))
            .collect();
        if requests.is_none() && serving.is_empty() && !subnets.is_empty() {
            return Err(ModelError::IpAddressGenerationFailureNoMatchingSubnet {
                network_id: network_id.to_owned(),
                service_type: device_owner.to_owned(),
            });
        }
        if requests.is_some_and(|r| r.len() > MAX_FIXED_IPS) {
            return Err(ModelError::invalid(
                "Exceeded maximum amount of fixed ips per port.",
            ));
        }
        // Neutron's router ports hold the gateway, not an EUI-64 address, on
        // an automatic-address subnet, and on IPv6 that gateway may be the
        // subnet-router anycast address (`ipam_utils.check_subnet_ip`).
        let router_port = matches!(
            device_owner,
            crate::router::OWNER_ROUTER_INTERFACE | crate::router::OWNER_ROUTER_GATEWAY
        );
        let mut out: Vec<FixedIp> = Vec::new();
        match requests {
            None => {
                // One address of each family from the first subnet with room.
                for version in [4, 6] {
                    let candidates: Vec<&Subnet> = serving
                        .iter()
                        .copied()
                        .filter(|s| s.ip_version == version && !s.is_auto_address())
                        .collect();
                    if candidates.is_empty() {
                        continue;
                    }
                    let found = candidates
                        .iter()
                        .find_map(|s| self.free_ip(s, &out).map(|ip| (s.std.id.clone(), ip)));
                    let Some((subnet_id, ip)) = found else {
                        return Err(ModelError::IpAddressGenerationFailure {
                            network_id: network_id.to_owned(),
                        });
                    };
                    self.subnet_cursor.insert(subnet_id.clone(), ip);
                    out.push(FixedIp {
                        subnet_id,
                        ip_address: ip,
                    });
                }
            }
            Some(requests) => {
                for req in requests {
                    let subnet = match (&req.subnet_id, req.ip_address) {
                        (Some(sid), _) => subnets.iter().find(|s| &s.std.id == sid).ok_or_else(|| {
                            ModelError::invalid(format!(
                                "Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}"
                            ))
                        })?,
                        (None, Some(ip)) => subnets
                            .iter()
                            .find(|s| s.cidr.contains(&ip))
                            .ok_or(ModelError::InvalidIpForNetwork { ip: ip.to_string() })?,
                        (None, None) => {
                            return Err(ModelError::invalid(
                                "Each fixed_ips entry needs a subnet_id or an ip_address",
                            ));
                        }
                    };
                    let sid = subnet.std.id.clone();
                    let ip = if subnet.is_auto_address() && !router_port {
                        let eui = ipam::eui64(&subnet.cidr, mac);
                        match (req.ip_address, eui) {
                            (Some(ip), Some(eui)) if ip != eui => {
                                return Err(ModelError::invalid(format!(
                                    "IPv6 address {ip} cannot be directly assigned to a port on subnet {sid} as the subnet is configured for automatic addresses"
                                )));
                            }
                            (_, Some(eui)) => eui,
                            (_, None) => continue,
                        }
                    } else if let Some(ip) = req.ip_address {
                        let anycast = router_port
                            && subnet.cidr.addr().is_ipv6()
                            && ip == subnet.cidr.network();
                        if !ipam::is_assignable(&subnet.cidr, ip) && !anycast {
                            return Err(ModelError::InvalidIpForSubnet { ip: ip.to_string() });
                        }
                        ip
                    } else {
                        let ip = self.free_ip(subnet, &out).ok_or_else(|| {
                            ModelError::IpAddressGenerationFailure {
                                network_id: network_id.to_owned(),
                            }
                        })?;
                        self.subnet_cursor.insert(sid.clone(), ip);
                        ip
                    };
                    let taken_by_other = self
                        .subnet_ips
                        .get(&sid)
                        .and_then(|m| m.get(&ip))
                        .is_some_and(|holder| Some(holder.as_str()) != port);
                    if taken_by_other || out.iter().any(|f| f.ip_address == ip) {
                        return Err(ModelError::IpAddressAlreadyAllocated {
                            ip: ip.to_string(),
                            subnet_id: sid,
                        });
                    }
                    out.push(FixedIp {
                        subnet_id: sid,
                        ip_address: ip,
                    });
                }
            }
        }
        // Automatic-address subnets (that serve it) always give the port its
        // EUI-64 address; a router interface only the gateways it asks for.
        let interface = device_owner == crate::router::OWNER_ROUTER_INTERFACE;
        for s in serving.iter().filter(|s| s.is_auto_address() && !interface) {
            if !out.iter().any(|f| f.subnet_id == s.std.id)
                && let Some(ip) = ipam::eui64(&s.cidr, mac)
            {
                out.push(FixedIp {
                    subnet_id: s.std.id.clone(),
                    ip_address: ip,
                });
            }
        }
        Ok(out)
    }

    /// A free pool address of `subnet`, not already picked in `picked`.
    /// Addresses an updated port already holds count as taken: a request that
    /// keeps one names it explicitly.
    pub(super) fn free_ip(&self, subnet: &Subnet, picked: &[FixedIp]) -> Option<IpAddr> {
        let empty = BTreeMap::new();
        let allocated = self.subnet_ips.get(&subnet.std.id).unwrap_or(&empty);
        let mut cursor = self.subnet_cursor.get(&subnet.std.id).copied();
        for _ in 0..=picked.len() {
            let ip = ipam::next_free(&subnet.allocation_pools, allocated, cursor)?;
            if !picked.iter().any(|f| f.ip_address == ip) {
                return Some(ip);
            }
            cursor = Some(next_addr(ip));
        }
        None
    }

    /// An agent's report: of the ports bound to `host`, those in `wired` are
    /// ACTIVE and the others DOWN (a dead host's agent wires nothing). Router
    /// interfaces are realised on many hosts: one is ACTIVE while any host
    /// reports it wired. Only ports whose status changes are written.
    /// Returns how many changed.
    pub fn report_port_status(
        &mut self,
        host: &str,
        wired: &BTreeSet<String>,
        now: Timestamp,
    ) -> usize {
        // A host reports all its wired ports each time: only those whose
        // status differs are copied and written (a host holding 1,000
        // ports reported one port's change at the cost of 1,000 copies).
        let differing: Vec<(String, PortStatus)> = self
            .host_ports
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let status = if wired.contains(id) {
                    PortStatus::Active
                } else {
                    PortStatus::Down
                };
                let port = self.ports.get(id)?;
                (port.status != status).then(|| (id.clone(), status))
            })
            .collect();
        let mut changed = 0;
        for (id, status) in differing {
            changed += usize::from(self.set_port_status(&id, status, now));
        }
        changed + self.report_realised(host, wired, now)
    }

    /// The side of [`Cloud::report_port_status`] for the ports routers and
    /// floating IPs own: realised on any number of hosts, ACTIVE while one
    /// reports them.
    fn report_realised(&mut self, host: &str, wired: &BTreeSet<String>, now: Timestamp) -> usize {
        let here: BTreeSet<String> = wired
            .iter()
            .filter(|id| {
                self.ports.get(*id).is_some_and(|p| {
                    l3::is_l3_owner(&p.device_owner) && p.binding_host_id.is_empty()
                })
            })
            .cloned()
            .collect();
        let before = self.host_realised.remove(host).unwrap_or_default();
        for id in before.difference(&here) {
            if let Some(hosts) = self.realised_on.get_mut(id) {
                hosts.remove(host);
                if hosts.is_empty() {
                    self.realised_on.remove(id);
                }
            }
        }
        for id in &here {
            self.realised_on
                .entry(id.clone())
                .or_default()
                .insert(host.to_owned());
        }
        let mut changed = 0;
        for id in before.union(&here) {
            let status = if self.realised_on.contains_key(id) {
                PortStatus::Active
            } else {
                PortStatus::Down
            };
            changed += usize::from(self.set_port_status(id, status, now));
        }
        if !here.is_empty() {
            self.host_realised.insert(host.to_owned(), here);
        }
        changed
    }

    /// Writes a port's status if it differs; whether it did.
    fn set_port_status(&mut self, id: &str, status: PortStatus, now: Timestamp) -> bool {
        match self.ports.get(id) {
            Some(port) if port.status != status => {
                let mut port = port.clone();
                port.status = status;
                port.std.touch(now);
                self.put(Resource::Port(port));
                true
            }
            _ => false,
        }
    }
}

/// Where a port is bound (and how) is the compute service's to say, as in
/// Neutron's default policy: admins only.
fn check_binding_admin(caller: &Caller, req: &PortUpdate, action: &str) -> Result<(), ModelError> {
    let named = [
        ("binding:host_id", req.binding_host_id.is_some()),
        ("binding:profile", req.binding_profile.is_some()),
    ];
    match named.iter().find(|(_, given)| *given) {
        Some((attr, _)) if !caller.is_admin => Err(ModelError::Forbidden(format!(
            "(rule:{action}_port:{attr}) is disallowed by policy"
        ))),
        _ => Ok(()),
    }
}

fn next_addr(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(u32::from(v4).wrapping_add(1).into()),
        IpAddr::V6(v6) => IpAddr::V6(u128::from(v6).wrapping_add(1).into()),
    }
}

fn address_pairs(
    requests: Vec<AddressPairRequest>,
    port_mac: MacAddr,
) -> Result<Vec<AddressPair>, ModelError> {
    if requests.len() > MAX_ALLOWED_ADDRESS_PAIRS {
        return Err(ModelError::AllowedAddressPairExhausted {
            max: MAX_ALLOWED_ADDRESS_PAIRS,
        });
    }
    let mut out: Vec<AddressPair> = Vec::with_capacity(requests.len());
    for req in requests {
        let pair = AddressPair {
            ip_address: req.ip_address,
            mac_address: req.mac_address.unwrap_or(port_mac),
        };
        if !pair.mac_address.is_valid_port_mac() {
            return Err(ModelError::invalid(format!(
                "'{}' is not a valid MAC address",
                pair.mac_address
            )));
        }
        if pair.ip_address.addr().is_multicast() {
            return Err(ModelError::invalid(format!(
                "Multicast address {} is not allowed in allowed address pairs",
                pair.ip_address
            )));
        }
        if out.contains(&pair) {
            return Err(ModelError::invalid(
                "Request contains duplicate address pair",
            ));
        }
        out.push(pair);
    }
    Ok(out)
}

fn check_vnic_type(vnic: Option<String>) -> Result<String, ModelError> {
    match vnic {
        None => Ok("normal".into()),
        Some(v) if VNIC_TYPES.contains(&v.as_str()) => Ok(v),
        Some(v) => Err(ModelError::invalid(format!("{v} is not in {VNIC_TYPES:?}"))),
    }
}

fn extra_dhcp_opts(opts: Vec<ExtraDhcpOpt>) -> Result<Vec<ExtraDhcpOpt>, ModelError> {
    if opts.len() > MAX_EXTRA_DHCP_OPTS {
        return Err(ModelError::invalid(format!(
            "Exceeded maximum amount of extra DHCP options per port ({MAX_EXTRA_DHCP_OPTS})."
        )));
    }
    Ok(opts)
}
