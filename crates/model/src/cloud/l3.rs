//! Routers, their interfaces, gateways and extra routes; floating IPs, their
//! associations and port forwardings. API semantics only: what vnet does with
//! them in the data plane is not decided here.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Caller, Cloud, Facet, Record, remove_from, set, stored};
use crate::{
    Association, FORWARDING_PROTOCOLS, FixedIpRequest, FloatingIp, FloatingIpCreate,
    FloatingIpUpdate, Gateway, GatewayRequest, HostRoute, InterfaceInfo, InterfaceRequest, Kind,
    MAX_ROUTES, ModelError, Network, OWNER_FLOATING_IP, OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE, Port, PortForwarding, PortForwardingRequest, PortStatus, Resource,
    Router, RouterCreate, RouterUpdate, Subnet, Timestamp,
};

/// Owners of the ports vnet manages for routers and floating IPs: the port API
/// may not delete them.
pub(super) fn is_l3_owner(owner: &str) -> bool {
    [
        OWNER_ROUTER_INTERFACE,
        OWNER_ROUTER_GATEWAY,
        OWNER_FLOATING_IP,
    ]
    .contains(&owner)
}

impl Record for Router {
    stored!(Router in routers);
}

impl Record for FloatingIp {
    stored!(FloatingIp in floating_ips);

    fn facets(&self, each: &mut dyn FnMut(Facet, &str)) {
        each(Facet::Network, &self.floating_network_id);
        if let Some(a) = &self.association {
            each(Facet::Port, &a.port_id);
        }
    }

    fn index(&self, cloud: &mut Cloud) {
        for (port, router) in self.targets() {
            cloud
                .port_fips
                .entry(port.to_owned())
                .or_default()
                .insert(self.std.id.clone());
            cloud
                .router_fips
                .entry(router.to_owned())
                .or_default()
                .insert(self.std.id.clone());
        }
    }

    fn unindex(&self, cloud: &mut Cloud) {
        for (port, router) in self.targets() {
            remove_from(&mut cloud.port_fips, port, &self.std.id);
            remove_from(&mut cloud.router_fips, router, &self.std.id);
        }
    }
}

/// `distributed` and `ha` are admin-only, as in Neutron's policy; of their
/// values only the true ones are taken: every vnet router is distributed
/// (routed on the sending host) and none keeps standby copies.
fn check_router_flags(caller: &Caller, verb: &str, req: &RouterUpdate) -> Result<(), ModelError> {
    for (flag, given) in [("distributed", req.distributed), ("ha", req.ha)] {
        if given.is_some() && !caller.is_admin {
            return Err(ModelError::Forbidden(format!(
                "(rule:{verb}_router:{flag}) is disallowed by policy"
            )));
        }
    }
    if req.distributed == Some(false) {
        return Err(ModelError::invalid(
            "vnet routers are always distributed: centralized routers are not supported",
        ));
    }
    if req.ha == Some(true) {
        return Err(ModelError::invalid(
            "HA routers are not supported: a router's gateway moves to another gateway host when its host dies",
        ));
    }
    Ok(())
}

impl Cloud {
    pub fn routers(&self) -> impl Iterator<Item = &Router> {
        self.routers.values()
    }

    pub fn floating_ips(&self) -> impl Iterator<Item = &FloatingIp> {
        self.floating_ips.values()
    }

    pub fn router(&self, id: &str) -> Option<&Router> {
        self.routers.get(id)
    }

    pub fn floating_ip(&self, id: &str) -> Option<&FloatingIp> {
        self.floating_ips.get(id)
    }

    /// The floating IP holding `address`: one address lookup per external
    /// network (there are few), through its `network:floatingip` port.
    pub fn floating_ip_with_address(&self, address: IpAddr) -> Option<&FloatingIp> {
        self.networks()
            .filter(|n| self.is_external(&n.std.id))
            .find_map(|n| self.port_with_ip(&n.std.id, address))
            .filter(|p| p.device_owner == OWNER_FLOATING_IP)
            .and_then(|p| self.floating_ips.get(&p.device_id))
    }

    /// A router's interface ports, in id order.
    pub fn router_interfaces(&self, router_id: &str) -> impl Iterator<Item = &Port> {
        self.router_ports
            .get(router_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.ports.get(id))
            .filter(|p| p.device_owner == OWNER_ROUTER_INTERFACE)
    }

    // === routers ===

    pub fn create_router(
        &mut self,
        caller: &Caller,
        req: RouterCreate,
        now: Timestamp,
    ) -> Result<Router, ModelError> {
        let project_id = self.project_for(caller, req.project_id)?;
        check_router_flags(caller, "create", &req.attributes)?;
        self.check_quota(&project_id, Kind::Router)?;
        let a = req.attributes;
        let mut router = Router {
            std: self.standard(project_id, a.name, a.description, req.tags, now)?,
            admin_state_up: a.admin_state_up.unwrap_or(true),
            gateway: None,
            routes: Vec::new(),
            availability_zone_hints: req.availability_zone_hints.unwrap_or_default(),
        };
        if a.routes.is_some() {
            return Err(ModelError::invalid(
                "Attribute 'routes' not allowed in POST",
            ));
        }
        if let Some(Some(gw)) = a.gateway {
            router.gateway = Some(self.new_gateway(caller, &router, gw, now)?);
        }
        self.put(Resource::Router(router.clone()));
        Ok(router)
    }

    pub fn update_router(
        &mut self,
        caller: &Caller,
        id: &str,
        req: RouterUpdate,
        now: Timestamp,
    ) -> Result<Router, ModelError> {
        let mut router = self.writable_as::<Router>(caller, id)?;
        check_router_flags(caller, "update", &req)?;
        set(&mut router.std.name, req.name);
        set(&mut router.std.description, req.description);
        set(&mut router.admin_state_up, req.admin_state_up);
        if let Some(gateway) = req.gateway {
            router.gateway = self.change_gateway(caller, &router, gateway, now)?;
        }
        if let Some(routes) = req.routes {
            router.routes = self.check_routes(&router, routes)?;
        }
        router.std.touch(now);
        self.put(Resource::Router(router.clone()));
        Ok(router)
    }

    pub fn delete_router(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        let router = self.writable_as::<Router>(caller, id)?;
        if self.router_interfaces(id).next().is_some() || self.router_fips.contains_key(id) {
            return Err(ModelError::RouterInUse { id: id.to_owned() });
        }
        if let Some(gw) = router.gateway {
            self.remove(Kind::Port, &gw.port_id);
        }
        self.remove(Kind::Router, id);
        Ok(())
    }

    /// `PUT /routers/{id}/add_extraroutes` and `remove_extraroutes`: change
    /// some routes atomically, leaving the others as they are.
    pub fn edit_routes(
        &mut self,
        caller: &Caller,
        id: &str,
        routes: Vec<HostRoute>,
        add: bool,
        now: Timestamp,
    ) -> Result<Router, ModelError> {
        let router = self.writable_as::<Router>(caller, id)?;
        let mut next = router.routes.clone();
        if add {
            next.extend(routes);
        } else {
            next.retain(|r| !routes.contains(r));
        }
        self.update_router(
            caller,
            id,
            RouterUpdate {
                routes: Some(next),
                ..RouterUpdate::default()
            },
            now,
        )
    }

    /// Routes as a router may hold them: each next hop on one of its
    /// interfaces' subnets (not an interface's own address), no duplicates,
    /// at most [`MAX_ROUTES`].
    fn check_routes(
        &self,
        router: &Router,
        routes: Vec<HostRoute>,
    ) -> Result<Vec<HostRoute>, ModelError> {
        let mut out: Vec<HostRoute> = Vec::with_capacity(routes.len());
        for route in routes {
            if !out.contains(&route) {
                out.push(route);
            }
        }
        if out.len() > MAX_ROUTES {
            return Err(ModelError::RoutesExhausted {
                router_id: router.std.id.clone(),
                max: MAX_ROUTES,
            });
        }
        let interfaces: Vec<&Port> = self.router_interfaces(&router.std.id).collect();
        for route in &out {
            let invalid = |reason: &str| ModelError::InvalidRoutes {
                routes: format!(
                    "[{{'destination': '{}', 'nexthop': '{}'}}]",
                    route.destination, route.nexthop
                ),
                reason: reason.to_owned(),
            };
            if route.destination.addr().is_ipv4() != route.nexthop.is_ipv4() {
                return Err(invalid(
                    "the nexthop is not of the destination's IP version",
                ));
            }
            let own = interfaces
                .iter()
                .flat_map(|p| &p.fixed_ips)
                .any(|f| f.ip_address == route.nexthop);
            if own {
                return Err(invalid("the nexthop is used by router"));
            }
            let connected = interfaces
                .iter()
                .flat_map(|p| &p.fixed_ips)
                .filter_map(|f| self.subnets.get(&f.subnet_id))
                .any(|s| s.cidr.contains(&route.nexthop));
            if !connected {
                return Err(invalid("the nexthop is not connected with router"));
            }
        }
        Ok(out)
    }

    /// The gateway a router update asks for: kept, changed in place
    /// (`enable_snat`, addresses) or replaced (another network, or none).
    fn change_gateway(
        &mut self,
        caller: &Caller,
        router: &Router,
        request: Option<GatewayRequest>,
        now: Timestamp,
    ) -> Result<Option<Gateway>, ModelError> {
        let current = router.gateway.clone();
        let same_network = match (&current, &request) {
            (Some(c), Some(r)) => c.network_id == r.network_id,
            _ => false,
        };
        if let (Some(mut gw), Some(req), true) = (current.clone(), request.clone(), same_network) {
            if let Some(snat) = req.enable_snat {
                self.check_gateway_admin(caller)?;
                gw.enable_snat = snat;
            }
            if let Some(ips) = req.external_fixed_ips {
                self.check_gateway_admin(caller)?;
                let mut port = self
                    .ports
                    .get(&gw.port_id)
                    .cloned()
                    .ok_or_else(|| ModelError::not_found(Kind::Port, &gw.port_id))?;
                port.fixed_ips = self.plan_fixed_ips(
                    &gw.network_id,
                    Some(&gw.port_id),
                    port.mac_address,
                    &port.device_owner,
                    Some(&ips),
                )?;
                port.std.touch(now);
                gw.external_fixed_ips = port.fixed_ips.clone();
                self.put(Resource::Port(port));
            }
            return Ok(Some(gw));
        }
        if let Some(gw) = current {
            if self.router_fips.contains_key(&router.std.id) {
                return Err(ModelError::RouterExternalGatewayInUseByFloatingIp {
                    router_id: router.std.id.clone(),
                    network_id: gw.network_id,
                });
            }
            self.remove(Kind::Port, &gw.port_id);
        }
        request
            .map(|req| self.new_gateway(caller, router, req, now))
            .transpose()
    }

    /// `enable_snat` and `external_fixed_ips` are the operator's to choose.
    fn check_gateway_admin(&self, caller: &Caller) -> Result<(), ModelError> {
        if caller.is_admin {
            Ok(())
        } else {
            Err(ModelError::Forbidden(
                "(rule:update_router:external_gateway_info) is disallowed by policy".into(),
            ))
        }
    }

    /// A gateway port on the external network `req` names, for `router`.
    fn new_gateway(
        &mut self,
        caller: &Caller,
        router: &Router,
        req: GatewayRequest,
        now: Timestamp,
    ) -> Result<Gateway, ModelError> {
        let network: Network = self.visible_as(caller, &req.network_id)?;
        if !self.is_external(&network.std.id) {
            return Err(ModelError::bad_router(format!(
                "Network {} is not an external network",
                network.std.id
            )));
        }
        if req.enable_snat.is_some() || req.external_fixed_ips.is_some() {
            self.check_gateway_admin(caller)?;
        }
        // Neutron's gateway ports belong to no project: tenants never see them.
        let port = self.device_port(
            String::new(),
            &network.std.id,
            req.external_fixed_ips.as_deref(),
            OWNER_ROUTER_GATEWAY,
            &router.std.id,
            now,
        )?;
        Ok(Gateway {
            network_id: network.std.id,
            enable_snat: req.enable_snat.unwrap_or(true),
            port_id: port.std.id.clone(),
            external_fixed_ips: port.fixed_ips,
        })
    }

    /// A port vnet creates for a router or a floating IP: no security groups,
    /// no port security, owned by `project_id`.
    fn device_port(
        &mut self,
        project_id: String,
        network_id: &str,
        fixed_ips: Option<&[FixedIpRequest]>,
        owner: &str,
        device_id: &str,
        now: Timestamp,
    ) -> Result<Port, ModelError> {
        if !project_id.is_empty() {
            self.check_quota(&project_id, Kind::Port)?;
        }
        let mac_address = self.generate_mac(network_id)?;
        let fixed_ips = self.plan_fixed_ips(network_id, None, mac_address, owner, fixed_ips)?;
        if fixed_ips.is_empty() {
            return Err(ModelError::IpAddressGenerationFailure {
                network_id: network_id.to_owned(),
            });
        }
        let port = Port {
            std: self.standard(project_id, None, None, None, now)?,
            network_id: network_id.to_owned(),
            mac_address,
            admin_state_up: true,
            status: PortStatus::Down,
            device_id: device_id.to_owned(),
            device_owner: owner.to_owned(),
            fixed_ips,
            security_groups: Vec::new(),
            port_security_enabled: false,
            allowed_address_pairs: Vec::new(),
            extra_dhcp_opts: Vec::new(),
            binding_host_id: String::new(),
            binding_vnic_type: "normal".into(),
            binding_profile: "{}".into(),
        };
        self.put(Resource::Port(port.clone()));
        Ok(port)
    }

    // === router interfaces ===

    pub fn add_router_interface(
        &mut self,
        caller: &Caller,
        router_id: &str,
        req: InterfaceRequest,
        now: Timestamp,
    ) -> Result<InterfaceInfo, ModelError> {
        let router = self.writable_as::<Router>(caller, router_id)?;
        let port = match (req.subnet_id, req.port_id) {
            (Some(_), Some(_)) => {
                return Err(ModelError::bad_router(
                    "Cannot specify both subnet-id and port-id",
                ));
            }
            (None, None) => {
                return Err(ModelError::bad_router(
                    "Either subnet_id or port_id must be specified",
                ));
            }
            (Some(subnet_id), None) => {
                let subnet: Subnet = self.visible_as(caller, &subnet_id)?;
                let Some(gateway_ip) = subnet.gateway_ip else {
                    return Err(ModelError::bad_router(format!(
                        "Subnet {subnet_id} for router interface must have a gateway IP"
                    )));
                };
                self.check_interface_subnet(&router, &subnet)?;
                let request = FixedIpRequest {
                    subnet_id: Some(subnet_id),
                    ip_address: Some(gateway_ip),
                };
                self.device_port(
                    router.std.project_id.clone(),
                    &subnet.network_id.clone(),
                    Some(&[request]),
                    OWNER_ROUTER_INTERFACE,
                    router_id,
                    now,
                )?
            }
            (None, Some(port_id)) => {
                let mut port: Port = self.writable_as(caller, &port_id)?;
                if !port.device_id.is_empty() || !port.device_owner.is_empty() {
                    return Err(ModelError::PortInUse {
                        port_id,
                        network_id: port.network_id,
                        device_id: port.device_id,
                    });
                }
                if port.fixed_ips.is_empty() {
                    return Err(ModelError::bad_router(
                        "Router port must have at least one fixed IP",
                    ));
                }
                let v4 = port.fixed_ips.iter().filter(|f| f.ip_address.is_ipv4());
                if v4.count() > 1 {
                    return Err(ModelError::bad_router(
                        "Cannot have multiple IPv4 subnets on router port",
                    ));
                }
                for ip in &port.fixed_ips {
                    if let Some(subnet) = self.subnets.get(&ip.subnet_id).cloned() {
                        self.check_interface_subnet(&router, &subnet)?;
                    }
                }
                port.device_owner = OWNER_ROUTER_INTERFACE.into();
                port.device_id = router_id.to_owned();
                port.std.touch(now);
                self.put(Resource::Port(port.clone()));
                port
            }
        };
        self.touch(Kind::Router, router_id, now);
        Ok(interface_info(&router, &port))
    }

    /// A router may have one interface per subnet, on subnets that do not
    /// overlap (it could not tell them apart).
    fn check_interface_subnet(&self, router: &Router, subnet: &Subnet) -> Result<(), ModelError> {
        for port in self.router_interfaces(&router.std.id) {
            for ip in &port.fixed_ips {
                if ip.subnet_id == subnet.std.id {
                    return Err(ModelError::bad_router(format!(
                        "Router already has a port on subnet {}",
                        subnet.std.id
                    )));
                }
                if let Some(other) = self.subnets.get(&ip.subnet_id)
                    && (other.cidr.contains(&subnet.cidr.network())
                        || subnet.cidr.contains(&other.cidr.network()))
                {
                    return Err(ModelError::bad_router(format!(
                        "Cidr {} of subnet {} overlaps with cidr {} of subnet {}",
                        subnet.cidr, subnet.std.id, other.cidr, other.std.id
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn remove_router_interface(
        &mut self,
        caller: &Caller,
        router_id: &str,
        req: InterfaceRequest,
        now: Timestamp,
    ) -> Result<InterfaceInfo, ModelError> {
        let router = self.writable_as::<Router>(caller, router_id)?;
        let port = match (&req.port_id, &req.subnet_id) {
            (Some(port_id), subnet_id) => {
                let port = self
                    .router_interfaces(router_id)
                    .find(|p| &p.std.id == port_id)
                    .cloned()
                    .ok_or_else(|| ModelError::RouterInterfaceNotFound {
                        router_id: router_id.to_owned(),
                        port_id: port_id.clone(),
                    })?;
                if let Some(subnet_id) = subnet_id
                    && !port.fixed_ips.iter().any(|f| &f.subnet_id == subnet_id)
                {
                    return Err(ModelError::bad_router(format!(
                        "Subnet {subnet_id} does not match port {port_id}"
                    )));
                }
                port
            }
            (None, Some(subnet_id)) => self
                .router_interfaces(router_id)
                .find(|p| p.fixed_ips.iter().any(|f| &f.subnet_id == subnet_id))
                .cloned()
                .ok_or_else(|| ModelError::RouterInterfaceNotFoundForSubnet {
                    router_id: router_id.to_owned(),
                    subnet_id: subnet_id.clone(),
                })?,
            (None, None) => {
                return Err(ModelError::bad_router(
                    "Either subnet_id or port_id must be specified",
                ));
            }
        };
        for ip in &port.fixed_ips {
            let Some(subnet) = self.subnets.get(&ip.subnet_id) else {
                continue;
            };
            let in_use = |by: &'static str| ModelError::RouterInterfaceInUse {
                router_id: router_id.to_owned(),
                subnet_id: ip.subnet_id.clone(),
                by,
            };
            let fips_behind = self
                .router_fips
                .get(router_id)
                .into_iter()
                .flatten()
                .filter_map(|id| self.floating_ips.get(id))
                .flat_map(|f| {
                    f.targets()
                        .map(|(port, _)| port.to_owned())
                        .collect::<Vec<_>>()
                })
                .filter_map(|port| self.ports.get(&port))
                .any(|p| p.fixed_ips.iter().any(|f| f.subnet_id == subnet.std.id));
            if fips_behind {
                return Err(in_use("floating IPs"));
            }
            if router
                .routes
                .iter()
                .any(|r| subnet.cidr.contains(&r.nexthop))
            {
                return Err(in_use("routes"));
            }
        }
        self.remove(Kind::Port, &port.std.id);
        self.touch(Kind::Router, router_id, now);
        Ok(interface_info(&router, &port))
    }

    // === floating IPs ===

    pub fn create_floating_ip(
        &mut self,
        caller: &Caller,
        req: FloatingIpCreate,
        now: Timestamp,
    ) -> Result<FloatingIp, ModelError> {
        let network: Network = self.visible_as(caller, &req.floating_network_id)?;
        if !self.is_external(&network.std.id) {
            return Err(ModelError::bad_floating_ip(format!(
                "Network {} is not a valid external network",
                network.std.id
            )));
        }
        let project_id = self.project_for(caller, req.project_id)?;
        self.check_quota(&project_id, Kind::FloatingIp)?;
        let request =
            self.floating_address(&network.std.id, req.subnet_id, req.floating_ip_address)?;
        let mut fip = FloatingIp {
            std: self.standard(project_id, None, req.description, req.tags, now)?,
            floating_network_id: network.std.id.clone(),
            subnet_id: String::new(),
            floating_ip_address: IpAddr::from([0, 0, 0, 0]),
            floating_port_id: String::new(),
            association: None,
            port_forwardings: Vec::new(),
        };
        let port = self.device_port(
            String::new(),
            &network.std.id,
            Some(&[request]),
            OWNER_FLOATING_IP,
            &fip.std.id,
            now,
        )?;
        let Some(address) = port.fixed_ips.first() else {
            return Err(ModelError::IpAddressGenerationFailure {
                network_id: network.std.id,
            });
        };
        fip.subnet_id = address.subnet_id.clone();
        fip.floating_ip_address = address.ip_address;
        fip.floating_port_id = port.std.id.clone();
        if let Some(port_id) = req.port_id {
            fip.association =
                Some(self.association(caller, &fip, &port_id, req.fixed_ip_address)?);
        } else if req.fixed_ip_address.is_some() {
            return Err(ModelError::bad_floating_ip(
                "fixed_ip_address cannot be specified without a port_id",
            ));
        }
        self.put(Resource::FloatingIp(fip.clone()));
        Ok(fip)
    }

    /// Which external address a new floating IP asks for: as given, or the
    /// next free one of the network's (or the named) IPv4 subnets.
    fn floating_address(
        &self,
        network_id: &str,
        subnet_id: Option<String>,
        address: Option<IpAddr>,
    ) -> Result<FixedIpRequest, ModelError> {
        let v4: Vec<&Subnet> = self
            .subnets_of(network_id)
            .iter()
            .filter_map(|id| self.subnets.get(id))
            .filter(|s| s.ip_version == 4)
            .collect();
        if let Some(id) = &subnet_id
            && !v4.iter().any(|s| &s.std.id == id)
        {
            return Err(ModelError::bad_floating_ip(format!(
                "Subnet {id} is not an IPv4 subnet of network {network_id}"
            )));
        }
        if address.is_some_and(|ip| !ip.is_ipv4()) {
            return Err(ModelError::bad_floating_ip(
                "floating_ip_address must be an IPv4 address",
            ));
        }
        if subnet_id.is_some() || address.is_some() {
            return Ok(FixedIpRequest {
                subnet_id,
                ip_address: address,
            });
        }
        let subnet = v4
            .iter()
            .find(|s| self.free_ip(s, &[]).is_some())
            .ok_or_else(|| {
                if v4.is_empty() {
                    ModelError::bad_floating_ip(format!(
                        "Network {network_id} does not contain any IPv4 subnet"
                    ))
                } else {
                    ModelError::IpAddressGenerationFailure {
                        network_id: network_id.to_owned(),
                    }
                }
            })?;
        Ok(FixedIpRequest {
            subnet_id: Some(subnet.std.id.clone()),
            ip_address: None,
        })
    }

    pub fn update_floating_ip(
        &mut self,
        caller: &Caller,
        id: &str,
        req: FloatingIpUpdate,
        now: Timestamp,
    ) -> Result<FloatingIp, ModelError> {
        let mut fip = self.writable_as::<FloatingIp>(caller, id)?;
        set(&mut fip.std.description, req.description);
        match (req.port_id, req.fixed_ip_address) {
            (Some(None), _) => fip.association = None,
            (Some(Some(port_id)), fixed_ip) => {
                fip.association = Some(self.association(caller, &fip, &port_id, fixed_ip)?);
            }
            (None, Some(fixed_ip)) => {
                let Some(port_id) = fip.association.as_ref().map(|a| a.port_id.clone()) else {
                    return Err(ModelError::bad_floating_ip(
                        "fixed_ip_address cannot be specified without a port_id",
                    ));
                };
                fip.association = Some(self.association(caller, &fip, &port_id, Some(fixed_ip))?);
            }
            (None, None) => {}
        }
        fip.std.touch(now);
        self.put(Resource::FloatingIp(fip.clone()));
        Ok(fip)
    }

    pub fn delete_floating_ip(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        let fip = self.writable_as::<FloatingIp>(caller, id)?;
        self.remove(Kind::Port, &fip.floating_port_id);
        self.remove(Kind::FloatingIp, id);
        Ok(())
    }

    /// Bind `fip` to one IPv4 address of `port_id`: the port must be the
    /// caller's, its subnet behind a router whose gateway is on the floating
    /// IP's network, and that address without another floating IP there.
    fn association(
        &self,
        caller: &Caller,
        fip: &FloatingIp,
        port_id: &str,
        fixed_ip: Option<IpAddr>,
    ) -> Result<Association, ModelError> {
        if !fip.port_forwardings.is_empty() {
            return Err(ModelError::bad_floating_ip(format!(
                "Floating IP {} has port forwardings and cannot be associated with a port",
                fip.std.id
            )));
        }
        let port = self
            .ports
            .get(port_id)
            .filter(|p| caller.owns(&p.std.project_id))
            .ok_or_else(|| ModelError::not_found(Kind::Port, port_id))?;
        if port.std.project_id != fip.std.project_id {
            return Err(ModelError::bad_floating_ip(format!(
                "Cannot create floating IP and bind it to Port {port_id}, since that port is owned by a different tenant"
            )));
        }
        let (subnet_id, address) = self.internal_address(port, fixed_ip, "floatingip", port_id)?;
        let router_id = self.router_towards(&fip.floating_network_id, &subnet_id, port_id)?;
        let taken = self
            .port_fips
            .get(port_id)
            .into_iter()
            .flatten()
            .filter(|other| **other != fip.std.id)
            .filter_map(|other| self.floating_ips.get(other))
            .any(|other| {
                other.floating_network_id == fip.floating_network_id
                    && other
                        .association
                        .as_ref()
                        .is_some_and(|a| a.fixed_ip_address == address)
            });
        if taken {
            return Err(ModelError::FloatingIpPortAlreadyAssociated {
                floating_ip: fip.floating_ip_address.to_string(),
                fip_id: fip.std.id.clone(),
                port_id: port_id.to_owned(),
                fixed_ip: address.to_string(),
                network_id: fip.floating_network_id.clone(),
            });
        }
        Ok(Association {
            port_id: port_id.to_owned(),
            fixed_ip_address: address,
            router_id,
        })
    }

    /// The port's IPv4 address a floating IP or forwarding targets, with its
    /// subnet: the one named, or its only IPv4 address.
    fn internal_address(
        &self,
        port: &Port,
        wanted: Option<IpAddr>,
        resource: &'static str,
        port_id: &str,
    ) -> Result<(String, IpAddr), ModelError> {
        let bad = |message: String| ModelError::BadRequest { resource, message };
        let v4: Vec<_> = port
            .fixed_ips
            .iter()
            .filter(|f| f.ip_address.is_ipv4())
            .collect();
        let chosen = match wanted {
            Some(ip) => port
                .fixed_ips
                .iter()
                .find(|f| f.ip_address == ip)
                .ok_or_else(|| bad(format!("Port {port_id} does not have fixed ip {ip}")))?,
            None => match v4.as_slice() {
                [only] => *only,
                [] => {
                    return Err(bad(format!(
                        "Port {port_id} does not have any IPv4 address"
                    )));
                }
                _ => {
                    return Err(bad(format!(
                        "Port {port_id} has multiple fixed IPv4 addresses.  Must provide a specific IPv4 address when assigning a floating IP"
                    )));
                }
            },
        };
        if !chosen.ip_address.is_ipv4() {
            return Err(bad(format!(
                "Cannot add floating IP to port {port_id} that has no IPv4 address {}",
                chosen.ip_address
            )));
        }
        Ok((chosen.subnet_id.clone(), chosen.ip_address))
    }

    /// The router that connects `subnet_id` to the external `network_id`.
    fn router_towards(
        &self,
        network_id: &str,
        subnet_id: &str,
        port_id: &str,
    ) -> Result<String, ModelError> {
        self.subnet_routers
            .get(subnet_id)
            .into_iter()
            .flatten()
            .find(|r| {
                self.routers
                    .get(*r)
                    .and_then(|r| r.gateway.as_ref())
                    .is_some_and(|g| g.network_id == network_id)
            })
            .cloned()
            .ok_or_else(|| ModelError::ExternalGatewayForFloatingIpNotFound {
                network_id: network_id.to_owned(),
                subnet_id: subnet_id.to_owned(),
                port_id: port_id.to_owned(),
            })
    }

    /// A port is going: floating IPs associated with it let go, forwardings
    /// to it go, as in Neutron.
    pub(super) fn release_floating_ips(&mut self, port_id: &str, now: Timestamp) {
        let fips: Vec<String> = self
            .port_fips
            .get(port_id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for id in fips {
            if let Some(mut fip) = self.floating_ips.get(&id).cloned() {
                if fip
                    .association
                    .as_ref()
                    .is_some_and(|a| a.port_id == port_id)
                {
                    fip.association = None;
                }
                fip.port_forwardings
                    .retain(|p| p.internal_port_id != port_id);
                fip.std.touch(now);
                self.put(Resource::FloatingIp(fip));
            }
        }
    }

    // === port forwardings ===

    pub fn create_port_forwarding(
        &mut self,
        caller: &Caller,
        fip_id: &str,
        req: PortForwardingRequest,
        now: Timestamp,
    ) -> Result<PortForwarding, ModelError> {
        let mut fip = self.writable_as::<FloatingIp>(caller, fip_id)?;
        if fip.association.is_some() {
            return Err(ModelError::BadRequest {
                resource: "port_forwarding",
                message: format!(
                    "The floating IP {fip_id} is associated with a port and cannot have port forwardings"
                ),
            });
        }
        let missing = |name: &str| ModelError::invalid(format!("A port forwarding needs '{name}'"));
        let forwarding = PortForwarding {
            id: self.rng.uuid(),
            protocol: req.protocol.ok_or_else(|| missing("protocol"))?,
            external_port: req.external_port.ok_or_else(|| missing("external_port"))?,
            internal_port: req.internal_port.ok_or_else(|| missing("internal_port"))?,
            internal_port_id: req
                .internal_port_id
                .ok_or_else(|| missing("internal_port_id"))?,
            internal_ip_address: req
                .internal_ip_address
                .ok_or_else(|| missing("internal_ip_address"))?,
            description: req.description.unwrap_or_default(),
            router_id: String::new(),
        };
        let forwarding = self.check_forwarding(caller, &fip, forwarding)?;
        fip.port_forwardings.push(forwarding.clone());
        fip.std.touch(now);
        self.put(Resource::FloatingIp(fip));
        Ok(forwarding)
    }

    pub fn update_port_forwarding(
        &mut self,
        caller: &Caller,
        fip_id: &str,
        id: &str,
        req: PortForwardingRequest,
        now: Timestamp,
    ) -> Result<PortForwarding, ModelError> {
        let mut fip = self.writable_as::<FloatingIp>(caller, fip_id)?;
        let at = fip
            .port_forwardings
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| ModelError::PortForwardingNotFound { id: id.to_owned() })?;
        let mut forwarding = fip.port_forwardings.remove(at);
        set(&mut forwarding.protocol, req.protocol);
        set(&mut forwarding.external_port, req.external_port);
        set(&mut forwarding.internal_port, req.internal_port);
        set(&mut forwarding.internal_port_id, req.internal_port_id);
        set(&mut forwarding.internal_ip_address, req.internal_ip_address);
        set(&mut forwarding.description, req.description);
        let forwarding = self.check_forwarding(caller, &fip, forwarding)?;
        fip.port_forwardings.insert(at, forwarding.clone());
        fip.std.touch(now);
        self.put(Resource::FloatingIp(fip));
        Ok(forwarding)
    }

    pub fn delete_port_forwarding(
        &mut self,
        caller: &Caller,
        fip_id: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let mut fip = self.writable_as::<FloatingIp>(caller, fip_id)?;
        let before = fip.port_forwardings.len();
        fip.port_forwardings.retain(|p| p.id != id);
        if fip.port_forwardings.len() == before {
            return Err(ModelError::PortForwardingNotFound { id: id.to_owned() });
        }
        fip.std.touch(now);
        self.put(Resource::FloatingIp(fip));
        Ok(())
    }

    /// A forwarding `fip` may hold (`fip` without it): a known protocol and
    /// ports, the caller's port with that address behind a router on the
    /// floating IP's network, the same router as its other forwardings, and
    /// no other forwarding on the same external or internal socket.
    fn check_forwarding(
        &self,
        caller: &Caller,
        fip: &FloatingIp,
        mut forwarding: PortForwarding,
    ) -> Result<PortForwarding, ModelError> {
        let bad = |message: String| ModelError::BadRequest {
            resource: "port_forwarding",
            message,
        };
        forwarding.protocol = forwarding.protocol.to_ascii_lowercase();
        if !FORWARDING_PROTOCOLS.contains(&forwarding.protocol.as_str()) {
            return Err(ModelError::invalid(format!(
                "{} is not in {FORWARDING_PROTOCOLS:?}",
                forwarding.protocol
            )));
        }
        if forwarding.external_port == 0 || forwarding.internal_port == 0 {
            return Err(ModelError::invalid("Port numbers must be 1 to 65535"));
        }
        let port_id = forwarding.internal_port_id.clone();
        let port = self
            .ports
            .get(&port_id)
            .filter(|p| caller.owns(&p.std.project_id))
            .ok_or_else(|| ModelError::not_found(Kind::Port, &port_id))?;
        let (subnet_id, _) = self.internal_address(
            port,
            Some(forwarding.internal_ip_address),
            "port_forwarding",
            &port_id,
        )?;
        forwarding.router_id =
            self.router_towards(&fip.floating_network_id, &subnet_id, &port_id)?;
        let others: BTreeSet<&str> = fip
            .port_forwardings
            .iter()
            .map(|p| p.router_id.as_str())
            .collect();
        if others.iter().any(|r| *r != forwarding.router_id) {
            return Err(bad(format!(
                "The floating IP {} already forwards through another router",
                fip.std.id
            )));
        }
        for other in &fip.port_forwardings {
            let same_external = other.protocol == forwarding.protocol
                && other.external_port == forwarding.external_port;
            let same_internal = other.protocol == forwarding.protocol
                && other.internal_ip_address == forwarding.internal_ip_address
                && other.internal_port == forwarding.internal_port;
            if same_external || same_internal {
                return Err(bad(format!(
                    "A duplicate port forwarding entry with same attributes already exists, conflicting values are {{'floatingip_id': '{}', 'protocol': '{}', 'external_port': {}}}",
                    fip.std.id, other.protocol, other.external_port
                )));
            }
        }
        Ok(forwarding)
    }
}

fn interface_info(router: &Router, port: &Port) -> InterfaceInfo {
    InterfaceInfo {
        router_id: router.std.id.clone(),
        project_id: router.std.project_id.clone(),
        port_id: port.std.id.clone(),
        network_id: port.network_id.clone(),
        subnet_ids: port.fixed_ips.iter().map(|f| f.subnet_id.clone()).collect(),
    }
}
