//! Get-me-a-network: a project's network, a subnet from each default subnet
//! pool, and a router with interfaces on them and its gateway on the default
//! external network, made in one operation (so a failure leaves nothing
//! half-made) and removed in one. The resources are ordinary ones of the
//! project; this module only composes their operations.

use super::{Caller, Cloud, Record, stored};
use crate::{
    AutoAllocatedTopology, GatewayRequest, InterfaceRequest, Kind, ModelError, NetworkCreate,
    Resource, RouterCreate, RouterUpdate, Standard, SubnetCreate, Timestamp,
};

impl Record for AutoAllocatedTopology {
    stored!(AutoAllocatedTopology in topologies);
}

/// What a topology request answers: its network, or that a dry run found
/// every requirement met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocated {
    Network(String),
    DryRunPassed,
}

fn failure(reason: &str) -> ModelError {
    ModelError::AutoAllocationFailure {
        reason: reason.to_owned(),
    }
}

impl Cloud {
    pub fn auto_allocated_topologies(&self) -> impl Iterator<Item = &AutoAllocatedTopology> {
        self.topologies.values()
    }

    /// The project a topology request is for: `None` (a client that sent
    /// none) is the caller's; another project's is for admins only.
    fn topology_project(
        &self,
        caller: &Caller,
        project: Option<&str>,
    ) -> Result<String, ModelError> {
        let project = project.unwrap_or(&caller.project_id);
        if !caller.owns(project) {
            return Err(ModelError::Forbidden(
                "rule:get_auto_allocated_topology is disallowed by policy".into(),
            ));
        }
        Ok(project.to_owned())
    }

    /// The project's topology, made first if it has none; with `dry_run`,
    /// only whether it could be made.
    pub fn auto_allocate(
        &mut self,
        caller: &Caller,
        project: Option<&str>,
        dry_run: bool,
        now: Timestamp,
    ) -> Result<(String, Allocated), ModelError> {
        let project = self.topology_project(caller, project)?;
        let external = self
            .default_external
            .clone()
            .ok_or_else(|| failure("No default router:external network"))?;
        let pools: Vec<(u8, String)> = [4, 6]
            .into_iter()
            .filter_map(|v| self.default_pool(caller, v).map(|p| (v, p.std.id.clone())))
            .collect();
        if dry_run {
            if pools.is_empty() {
                return Err(failure("No default subnetpools defined"));
            }
            return Ok((project, Allocated::DryRunPassed));
        }
        if let Some(t) = self.topologies.get(&project) {
            return Ok((project, Allocated::Network(t.network_id.clone())));
        }
        let network = self
            .create_network(
                caller,
                NetworkCreate {
                    project_id: Some(project.clone()),
                    name: Some("auto_allocated_network".into()),
                    ..NetworkCreate::default()
                },
                now,
            )
            .map_err(|_| failure("Unable to provide tenant private network"))?;
        let mut subnets = Vec::new();
        for (version, pool) in &pools {
            let subnet = self
                .create_subnet(
                    caller,
                    SubnetCreate {
                        project_id: Some(project.clone()),
                        name: Some(format!("auto_allocated_subnet_v{version}")),
                        network_id: network.std.id.clone(),
                        ip_version: *version,
                        subnetpool_id: Some(pool.clone()),
                        ..SubnetCreate::default()
                    },
                    now,
                )
                .map_err(|_| failure("Unable to provide tenant private network"))?;
            subnets.push(subnet.std.id);
        }
        if subnets.is_empty() {
            return Err(failure("Unable to provide tenant private network"));
        }
        let connectivity = |_| failure("Unable to provide external connectivity");
        let router = self
            .create_router(
                caller,
                RouterCreate {
                    project_id: Some(project.clone()),
                    tags: None,
                    availability_zone_hints: None,
                    attributes: RouterUpdate {
                        name: Some("auto_allocated_router".into()),
                        gateway: Some(Some(GatewayRequest {
                            network_id: external,
                            ..GatewayRequest::default()
                        })),
                        ..RouterUpdate::default()
                    },
                },
                now,
            )
            .map_err(connectivity)?;
        for subnet in subnets {
            let interface = InterfaceRequest {
                subnet_id: Some(subnet),
                port_id: None,
            };
            self.add_router_interface(caller, &router.std.id, interface, now)
                .map_err(connectivity)?;
        }
        let topology = AutoAllocatedTopology {
            std: Standard::new(project.clone(), project.clone(), now),
            network_id: network.std.id.clone(),
            router_id: router.std.id,
        };
        self.put(Resource::AutoAllocatedTopology(topology));
        Ok((project, Allocated::Network(network.std.id)))
    }

    /// Remove a project's topology: its router's interfaces and the router,
    /// the subnets and the network. Nothing to remove is no error, as in
    /// Neutron; anything else in use (a VM's port on the network) refuses it
    /// whole.
    pub fn delete_auto_allocated(
        &mut self,
        caller: &Caller,
        project: Option<&str>,
        now: Timestamp,
    ) -> Result<(), ModelError> {
        let project = self.topology_project(caller, project)?;
        let Some(topology) = self.topologies.get(&project).cloned() else {
            return Ok(());
        };
        let router = topology.router_id.as_str();
        if self.routers.contains_key(router) {
            let interfaces: Vec<String> = self
                .router_interfaces(router)
                .map(|p| p.std.id.clone())
                .collect();
            for port in interfaces {
                let interface = InterfaceRequest {
                    subnet_id: None,
                    port_id: Some(port),
                };
                self.remove_router_interface(caller, router, interface, now)?;
            }
            self.delete_router(caller, router)?;
        }
        if self.networks.contains_key(&topology.network_id) {
            self.delete_network(caller, &topology.network_id)?;
        }
        self.remove(Kind::AutoAllocatedTopology, &project);
        Ok(())
    }
}
