use std::collections::BTreeSet;

use super::*;
use crate::{
    Direction, FixedIpRequest, FloatingIpCreate, FloatingIpUpdate, GatewayRequest, HostRoute,
    InterfaceRequest, MeteringLabelCreate, MeteringLabelRuleCreate, NetworkCreate, NetworkUpdate,
    OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, ObjectType, PortCreate, PortForwardingRequest,
    PortStatus, PortUpdate, RbacPolicyCreate, RbacPolicyUpdate, RouterCreate, RouterUpdate,
    RuleCreate, SecurityGroupCreate, SubnetCreate, SubnetPoolCreate, SubnetPoolUpdate, ipam,
};

/// A new cloud as the server makes one: with Neutron's templates of new
/// groups' rules.
fn cloud() -> Cloud {
    let mut c = Cloud::new(CloudConfig {
        seed: 7,
        ..Default::default()
    });
    c.apply(|c| c.seed_default_rules(0)).unwrap();
    c
}

fn tenant(p: &str) -> Caller {
    Caller {
        project_id: p.into(),
        is_admin: false,
    }
}

fn admin() -> Caller {
    Caller {
        project_id: "admin".into(),
        is_admin: true,
    }
}

fn net(c: &mut Cloud, who: &Caller) -> Network {
    c.apply(|c| c.create_network(who, NetworkCreate::default(), 0))
        .unwrap()
        .0
}

fn subnet(c: &mut Cloud, who: &Caller, network: &str, cidr: &str) -> Subnet {
    let version = if cidr.contains(':') { 6 } else { 4 };
    c.apply(|c| {
        c.create_subnet(
            who,
            SubnetCreate {
                network_id: network.into(),
                ip_version: version,
                cidr: Some(cidr.into()),
                ..Default::default()
            },
            0,
        )
    })
    .unwrap()
    .0
}

fn port(c: &mut Cloud, who: &Caller, network: &str) -> Result<Port, ModelError> {
    c.apply(|c| {
        c.create_port(
            who,
            PortCreate {
                network_id: network.into(),
                ..Default::default()
            },
            0,
        )
    })
    .map(|(p, _)| p)
}

#[test]
fn first_request_of_a_project_creates_its_default_group_with_four_rules() {
    let mut c = cloud();
    let a = tenant("a");
    let (_, changes) = c
        .apply(|c| c.create_network(&a, NetworkCreate::default(), 0))
        .unwrap();
    // network + default group + 4 rules
    assert_eq!(changes.len(), 6);
    let group = c.default_group_of("a").unwrap().to_owned();
    assert_eq!(c.rules_of(&group).count(), 4);
    let ingress_from_self = c
        .rules_of(&group)
        .filter(|r| {
            r.direction == Direction::Ingress && r.remote_group_id.as_deref() == Some(&group)
        })
        .count();
    assert_eq!(ingress_from_self, 2);
}

#[test]
fn ports_get_distinct_addresses_until_the_pool_is_exhausted() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    subnet(&mut c, &a, &n.std.id, "10.0.0.0/29"); // .2 to .6 usable
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        let p = port(&mut c, &a, &n.std.id).unwrap();
        assert!(seen.insert(p.fixed_ips[0].ip_address));
    }
    let before = c.ports().count();
    assert!(matches!(
        port(&mut c, &a, &n.std.id),
        Err(ModelError::IpAddressGenerationFailure { .. })
    ));
    assert_eq!(
        c.ports().count(),
        before,
        "a refused create changes nothing"
    );
}

#[test]
fn released_addresses_are_reused_and_requested_ones_are_checked() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    let s = subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    let want = |ip: &str| PortCreate {
        network_id: n.std.id.clone(),
        attributes: PortUpdate {
            fixed_ips: Some(vec![FixedIpRequest {
                subnet_id: Some(s.std.id.clone()),
                ip_address: Some(ip.parse().unwrap()),
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    let p = c
        .apply(|c| c.create_port(&a, want("10.0.0.10"), 0))
        .unwrap()
        .0;
    assert!(matches!(
        c.apply(|c| c.create_port(&a, want("10.0.0.10"), 0)),
        Err(ModelError::IpAddressAlreadyAllocated { .. })
    ));
    assert!(matches!(
        c.apply(|c| c.create_port(&a, want("10.0.1.10"), 0)),
        Err(ModelError::InvalidInput(_) | ModelError::InvalidIpForSubnet { .. })
    ));
    assert!(matches!(
        c.apply(|c| c.create_port(&a, want("10.0.0.255"), 0)),
        Err(ModelError::InvalidIpForSubnet { .. })
    ));
    c.apply(|c| c.delete_port(&a, &p.std.id, 0)).unwrap();
    c.apply(|c| c.create_port(&a, want("10.0.0.10"), 0))
        .unwrap();
}

#[test]
fn slaac_subnets_give_eui64_addresses_to_new_and_existing_ports() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    let early = port(&mut c, &a, &n.std.id).unwrap();
    let (v6, changes) = c
        .apply(|c| {
            c.create_subnet(
                &a,
                SubnetCreate {
                    network_id: n.std.id.clone(),
                    ip_version: 6,
                    cidr: Some("fd00:20:30::/64".into()),
                    ipv6_ra_mode: Some(crate::Ipv6Mode::Slaac),
                    ipv6_address_mode: Some(crate::Ipv6Mode::Slaac),
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap();
    assert_eq!(
        changes.len(),
        3,
        "the subnet, its network, and the existing port"
    );
    assert_eq!(v6.gateway_ip, Some("fd00:20:30::".parse().unwrap()));
    let early = c.port(&early.std.id).unwrap();
    assert_eq!(
        early.fixed_ips[1].ip_address,
        ipam::eui64(&v6.cidr, early.mac_address).unwrap()
    );
    let late = port(&mut c, &a, &n.std.id).unwrap();
    assert_eq!(late.fixed_ips.len(), 2);
    // Deleting the SLAAC subnet takes the automatic addresses with it.
    c.apply(|c| c.delete_subnet(&a, &v6.std.id, 1)).unwrap();
    assert_eq!(c.port(&late.std.id).unwrap().fixed_ips.len(), 1);
}

#[test]
fn projects_are_isolated_and_overlapping_cidrs_are_fine() {
    let mut c = cloud();
    let (a, b) = (tenant("a"), tenant("b"));
    let na = net(&mut c, &a);
    let nb = net(&mut c, &b);
    subnet(&mut c, &a, &na.std.id, "10.0.0.0/24");
    subnet(&mut c, &b, &nb.std.id, "10.0.0.0/24");
    assert_ne!(na.segmentation_id, nb.segmentation_id);
    assert!(matches!(
        port(&mut c, &b, &na.std.id),
        Err(ModelError::NotFound { .. })
    ));
    assert!(matches!(
        c.apply(|c| c.delete_network(&b, &na.std.id)),
        Err(ModelError::NotFound { .. })
    ));
    // Overlap inside one network is refused.
    let err = c
        .apply(|c| {
            c.create_subnet(
                &a,
                SubnetCreate {
                    network_id: na.std.id.clone(),
                    ip_version: 4,
                    cidr: Some("10.0.0.128/25".into()),
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
}

#[test]
fn shared_networks_take_ports_from_other_projects_but_not_changes() {
    let mut c = cloud();
    let shared = c
        .apply(|c| {
            c.create_network(
                &admin(),
                NetworkCreate {
                    shared: Some(true),
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap()
        .0;
    subnet(&mut c, &admin(), &shared.std.id, "192.0.2.0/24");
    let p = port(&mut c, &tenant("b"), &shared.std.id).unwrap();
    assert_eq!(p.std.project_id, "b");
    assert!(matches!(
        c.apply(|c| c.delete_network(&tenant("b"), &shared.std.id)),
        Err(ModelError::Forbidden(_))
    ));
    assert!(matches!(
        c.apply(|c| c.delete_network(&admin(), &shared.std.id)),
        Err(ModelError::NetworkInUse { .. })
    ));
}

#[test]
fn duplicate_rules_are_refused_in_constant_time() {
    let mut c = cloud();
    let a = tenant("a");
    let g = c
        .apply(|c| c.create_security_group(&a, SecurityGroupCreate::default(), 0))
        .unwrap()
        .0;
    assert_eq!(c.rules_of(&g.std.id).count(), 2);
    let ssh = || RuleCreate {
        security_group_id: g.std.id.clone(),
        direction: Some("ingress".into()),
        protocol: Some("tcp".into()),
        port_range_min: Some(22),
        port_range_max: Some(22),
        remote_ip_prefix: Some("0.0.0.0/0".into()),
        ..Default::default()
    };
    let first = c
        .apply(|c| c.create_security_group_rule(&a, ssh(), 0))
        .unwrap()
        .0;
    match c.apply(|c| c.create_security_group_rule(&a, ssh(), 0)) {
        Err(ModelError::SecurityGroupRuleExists { id }) => assert_eq!(id, first.std.id),
        other => panic!("{other:?}"),
    }
    // Same rule with the prefix left out is the same rule.
    let mut no_prefix = ssh();
    no_prefix.remote_ip_prefix = None;
    assert!(
        c.apply(|c| c.create_security_group_rule(&a, no_prefix, 0))
            .is_err()
    );
}

#[test]
fn groups_in_use_and_default_groups_resist_deletion() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    let p = port(&mut c, &a, &n.std.id).unwrap();
    let default = c.default_group_of("a").unwrap().to_owned();
    assert_eq!(p.security_groups, vec![default.clone()]);
    assert!(matches!(
        c.apply(|c| c.delete_security_group(&a, &default)),
        Err(ModelError::SecurityGroupCannotRemoveDefault)
    ));
    assert!(matches!(
        c.apply(|c| c.delete_security_group(&admin(), &default)),
        Err(ModelError::SecurityGroupInUse { .. })
    ));
    // Port security off while groups are attached is refused.
    assert!(matches!(
        c.apply(|c| c.update_port(
            &a,
            &p.std.id,
            PortUpdate {
                port_security_enabled: Some(false),
                ..Default::default()
            },
            1
        )),
        Err(ModelError::PortSecurityPortHasSecurityGroup)
    ));
}

#[test]
fn a_failed_multi_step_operation_leaves_no_trace() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    subnet(&mut c, &a, &n.std.id, "10.0.0.0/29");
    let before_ports = c.ports().count();
    // Bulk create of ten ports where the pool holds five: all or nothing.
    let err = c.apply(|c| {
        for _ in 0..10 {
            c.create_port(
                &a,
                PortCreate {
                    network_id: n.std.id.clone(),
                    ..Default::default()
                },
                0,
            )?;
        }
        Ok(())
    });
    assert!(err.is_err());
    assert_eq!(c.ports().count(), before_ports);
    assert_eq!(c.used_ips(c.subnets_of(&n.std.id)[0].as_str()), 0);
    // ... and the pool is whole again afterwards.
    for _ in 0..5 {
        port(&mut c, &a, &n.std.id).unwrap();
    }
}

#[test]
fn loading_the_changes_rebuilds_an_equal_cloud() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    let p = port(&mut c, &a, &n.std.id).unwrap();
    let all: Vec<Resource> = Kind::ALL
        .iter()
        .flat_map(|k| {
            let ids: Vec<String> = match k {
                Kind::Network => c.networks().map(|r| r.std.id.clone()).collect(),
                Kind::Subnet => c.subnets().map(|r| r.std.id.clone()).collect(),
                Kind::Port => c.ports().map(|r| r.std.id.clone()).collect(),
                Kind::SecurityGroup => c.security_groups().map(|r| r.std.id.clone()).collect(),
                Kind::SecurityGroupRule => {
                    c.security_group_rules().map(|r| r.std.id.clone()).collect()
                }
                Kind::Router => c.routers().map(|r| r.std.id.clone()).collect(),
                Kind::FloatingIp => c.floating_ips().map(|r| r.std.id.clone()).collect(),
                Kind::MeteringLabel => c.metering_labels().map(|r| r.std.id.clone()).collect(),
                Kind::MeteringLabelRule => {
                    c.metering_label_rules().map(|r| r.std.id.clone()).collect()
                }
                Kind::Quota => Vec::new(), // none set here
                Kind::SubnetPool => c.subnet_pools().map(|r| r.std.id.clone()).collect(),
                Kind::DefaultSecurityGroupRule => {
                    c.default_rules().map(|r| r.std.id.clone()).collect()
                }
                Kind::AutoAllocatedTopology => c
                    .auto_allocated_topologies()
                    .map(|r| r.std.id.clone())
                    .collect(),
                Kind::RbacPolicy => c.rbac_policies().map(|r| r.std.id.clone()).collect(),
                Kind::AddressGroup => c.address_groups().map(|r| r.std.id.clone()).collect(),
            };
            ids.into_iter()
                .filter_map(|id| c.get(*k, &id))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut again = Cloud::load(CloudConfig::default(), all);
    assert_eq!(again.port(&p.std.id), Some(&p));
    // The reloaded indexes still guard the address.
    let taken = PortCreate {
        network_id: n.std.id.clone(),
        attributes: PortUpdate {
            fixed_ips: Some(vec![FixedIpRequest {
                subnet_id: None,
                ip_address: Some(p.fixed_ips[0].ip_address),
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        again.apply(|c| c.create_port(&a, taken, 0)),
        Err(ModelError::IpAddressAlreadyAllocated { .. })
    ));
}

#[test]
fn an_operation_that_panicked_half_way_is_undone_by_the_next() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = c.apply(|c| -> Result<(), ModelError> {
            c.create_port(
                &a,
                PortCreate {
                    network_id: n.std.id.clone(),
                    ..Default::default()
                },
                0,
            )?;
            panic!("a bug half-way through an operation");
        });
    }));
    assert!(result.is_err());
    let (_, changes) = c.apply(|_| Ok(())).unwrap();
    assert!(changes.is_empty());
    assert_eq!(c.ports().count(), 0, "the half-made port is gone");
    assert_eq!(c.used_ips(&c.subnets_of(&n.std.id)[0].clone()), 0);
}

#[test]
fn agents_report_which_bound_ports_are_wired() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    let bind = |c: &mut Cloud, host: &str| {
        c.apply(|c| {
            c.create_port(
                &admin(),
                PortCreate {
                    network_id: n.std.id.clone(),
                    attributes: PortUpdate {
                        binding_host_id: Some(host.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap()
        .0
    };
    let p1 = bind(&mut c, "h1");
    let p2 = bind(&mut c, "h1");
    let other = bind(&mut c, "h2");
    let wired: BTreeSet<String> = [p1.std.id.clone()].into();
    let (changed, writes) = c
        .apply(|c| Ok(c.report_port_status("h1", &wired, 1)))
        .unwrap();
    assert_eq!((changed, writes.len()), (1, 1));
    assert_eq!(c.port(&p1.std.id).unwrap().status, PortStatus::Active);
    assert_eq!(c.port(&p2.std.id).unwrap().status, PortStatus::Down);
    assert_eq!(
        c.port(&other.std.id).unwrap().status,
        PortStatus::Down,
        "another host's port is untouched"
    );
    // The same report again writes nothing; a dead host's ports go DOWN.
    assert_eq!(
        c.apply(|c| Ok(c.report_port_status("h1", &wired, 2)))
            .unwrap()
            .0,
        0
    );
    assert_eq!(
        c.apply(|c| Ok(c.report_port_status("h1", &BTreeSet::new(), 3)))
            .unwrap()
            .0,
        1
    );
    assert_eq!(c.port(&p1.std.id).unwrap().status, PortStatus::Down);
    // Moving a port to another host makes it DOWN until that host wires it.
    c.apply(|c| Ok(c.report_port_status("h1", &wired, 4)))
        .unwrap();
    c.apply(|c| {
        c.update_port(
            &admin(),
            &p1.std.id,
            PortUpdate {
                binding_host_id: Some("h2".into()),
                ..Default::default()
            },
            5,
        )
    })
    .unwrap();
    assert_eq!(c.port(&p1.std.id).unwrap().status, PortStatus::Down);
    assert_eq!(
        c.apply(|c| Ok(c.report_port_status("h1", &wired, 6)))
            .unwrap()
            .0,
        0,
        "no longer h1's"
    );
}

// === routers and floating IPs ===

/// An external network with 203.0.113.0/24, a tenant network with
/// 10.0.0.0/24 and a port on it, and a router of `a` with a gateway.
struct L3 {
    c: Cloud,
    a: Caller,
    external: Network,
    inside: Subnet,
    vm: Port,
    router: Router,
}

fn l3() -> L3 {
    let mut c = cloud();
    let a = tenant("a");
    let external = c
        .apply(|c| {
            c.create_network(
                &admin(),
                NetworkCreate {
                    external: Some(true),
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap()
        .0;
    subnet(&mut c, &admin(), &external.std.id, "203.0.113.0/24");
    let n = net(&mut c, &a);
    let inside = subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    let vm = port(&mut c, &a, &n.std.id).unwrap();
    let router = c
        .apply(|c| {
            c.create_router(
                &a,
                RouterCreate {
                    attributes: RouterUpdate {
                        gateway: Some(Some(GatewayRequest {
                            network_id: external.std.id.clone(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap()
        .0;
    L3 {
        c,
        a,
        external,
        inside,
        vm,
        router,
    }
}

fn by_subnet(subnet: &Subnet) -> InterfaceRequest {
    InterfaceRequest {
        subnet_id: Some(subnet.std.id.clone()),
        port_id: None,
    }
}

fn fip_for(w: &mut L3, port: Option<&str>) -> Result<FloatingIp, ModelError> {
    let req = FloatingIpCreate {
        floating_network_id: w.external.std.id.clone(),
        port_id: port.map(str::to_owned),
        ..Default::default()
    };
    let a = w.a.clone();
    w.c.apply(|c| c.create_floating_ip(&a, req, 0))
        .map(|(f, _)| f)
}

#[test]
fn a_router_gateway_takes_an_external_address_on_a_port_no_tenant_sees() {
    let w = l3();
    let gw = w.router.gateway.clone().unwrap();
    assert!(gw.enable_snat);
    let port = w.c.port(&gw.port_id).unwrap();
    assert_eq!(port.device_owner, OWNER_ROUTER_GATEWAY);
    assert_eq!(port.std.project_id, "");
    assert_eq!(gw.external_fixed_ips, port.fixed_ips);
    assert!(!w.c.can_see(&w.a, &Resource::Port(port.clone())));
    // The external network is visible to every tenant, its owner is not them.
    assert!(w.c.can_see_network(&w.a, &w.external));
}

#[test]
fn only_admins_make_external_networks_and_gateways_need_one() {
    let mut w = l3();
    let a = w.a.clone();
    let refused = w.c.apply(|c| {
        c.create_network(
            &a,
            NetworkCreate {
                external: Some(true),
                ..Default::default()
            },
            0,
        )
    });
    assert!(matches!(refused, Err(ModelError::Forbidden(_))));
    let inside_net = w.inside.network_id.clone();
    let err = w.c.apply(|c| {
        c.create_router(
            &a,
            RouterCreate {
                attributes: RouterUpdate {
                    gateway: Some(Some(GatewayRequest {
                        network_id: inside_net,
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                ..Default::default()
            },
            0,
        )
    });
    assert!(matches!(err, Err(ModelError::BadRequest { .. })), "{err:?}");
}

#[test]
fn an_interface_takes_the_gateway_ip_and_keeps_router_subnet_and_network_in_use() {
    let mut w = l3();
    let (a, r, inside) = (w.a.clone(), w.router.std.id.clone(), w.inside.clone());
    let info =
        w.c.apply(|c| c.add_router_interface(&a, &r, by_subnet(&inside), 0))
            .unwrap()
            .0;
    let port = w.c.port(&info.port_id).unwrap().clone();
    assert_eq!(port.device_owner, OWNER_ROUTER_INTERFACE);
    assert_eq!(port.fixed_ips[0].ip_address, inside.gateway_ip.unwrap());
    let twice =
        w.c.apply(|c| c.add_router_interface(&a, &r, by_subnet(&inside), 0));
    assert!(matches!(twice, Err(ModelError::BadRequest { .. })));
    assert!(matches!(
        w.c.apply(|c| c.delete_router(&a, &r)),
        Err(ModelError::RouterInUse { .. })
    ));
    assert!(matches!(
        w.c.apply(|c| c.delete_subnet(&a, &inside.std.id, 0)),
        Err(ModelError::SubnetInUse { .. })
    ));
    assert!(matches!(
        w.c.apply(|c| c.delete_port(&a, &port.std.id, 0)),
        Err(ModelError::L3PortInUse { .. })
    ));
    w.c.apply(|c| c.remove_router_interface(&a, &r, by_subnet(&inside), 0))
        .unwrap();
    assert!(w.c.port(&port.std.id).is_none());
    let gw_port = w.router.gateway.clone().unwrap().port_id;
    w.c.apply(|c| c.delete_router(&a, &r)).unwrap();
    assert!(
        w.c.port(&gw_port).is_none(),
        "the gateway port goes with it"
    );
}

#[test]
fn a_floating_ip_needs_the_ports_subnet_behind_a_router_on_its_network() {
    let mut w = l3();
    let vm = w.vm.std.id.clone();
    let err = fip_for(&mut w, Some(&vm));
    assert!(
        matches!(
            err,
            Err(ModelError::ExternalGatewayForFloatingIpNotFound { .. })
        ),
        "{err:?}"
    );
    let (a, r, inside) = (w.a.clone(), w.router.std.id.clone(), w.inside.clone());
    w.c.apply(|c| c.add_router_interface(&a, &r, by_subnet(&inside), 0))
        .unwrap();
    let fip = fip_for(&mut w, Some(&vm)).unwrap();
    let assoc = fip.association.clone().unwrap();
    assert_eq!(assoc.router_id, r);
    assert_eq!(assoc.fixed_ip_address, w.vm.fixed_ips[0].ip_address);
    // One floating IP per fixed IP and external network.
    let again = fip_for(&mut w, Some(&vm));
    assert!(matches!(
        again,
        Err(ModelError::FloatingIpPortAlreadyAssociated { .. })
    ));
    // The interface and the gateway are now needed.
    assert!(matches!(
        w.c.apply(|c| c.remove_router_interface(&a, &r, by_subnet(&inside), 0)),
        Err(ModelError::RouterInterfaceInUse { .. })
    ));
    let clear = RouterUpdate {
        gateway: Some(None),
        ..Default::default()
    };
    assert!(matches!(
        w.c.apply(|c| c.update_router(&a, &r, clear, 0)),
        Err(ModelError::RouterExternalGatewayInUseByFloatingIp { .. })
    ));
    // Deleting the port lets the floating IP go, as Neutron does.
    w.c.apply(|c| c.delete_port(&a, &vm, 0)).unwrap();
    assert!(w.c.floating_ip(&fip.std.id).unwrap().association.is_none());
    w.c.apply(|c| c.remove_router_interface(&a, &r, by_subnet(&inside), 0))
        .unwrap();
}

#[test]
fn a_refused_floating_ip_leaves_no_port_and_no_address_behind() {
    let mut w = l3();
    let vm = w.vm.std.id.clone();
    let ports_before = w.c.ports().count();
    assert!(fip_for(&mut w, Some(&vm)).is_err());
    assert_eq!(w.c.ports().count(), ports_before);
    assert_eq!(w.c.floating_ips().count(), 0);
}

#[test]
fn extra_routes_need_a_connected_nexthop_and_pin_their_interface() {
    let mut w = l3();
    let (a, r, inside) = (w.a.clone(), w.router.std.id.clone(), w.inside.clone());
    let route = HostRoute {
        destination: "192.168.0.0/16".parse().unwrap(),
        nexthop: "10.0.0.9".parse().unwrap(),
    };
    let err =
        w.c.apply(|c| c.edit_routes(&a, &r, vec![route.clone()], true, 0));
    assert!(
        matches!(err, Err(ModelError::InvalidRoutes { .. })),
        "{err:?}"
    );
    w.c.apply(|c| c.add_router_interface(&a, &r, by_subnet(&inside), 0))
        .unwrap();
    let router =
        w.c.apply(|c| c.edit_routes(&a, &r, vec![route.clone(), route.clone()], true, 0))
            .unwrap()
            .0;
    assert_eq!(router.routes, vec![route.clone()]);
    assert!(matches!(
        w.c.apply(|c| c.remove_router_interface(&a, &r, by_subnet(&inside), 0)),
        Err(ModelError::RouterInterfaceInUse { by: "routes", .. })
    ));
    let router =
        w.c.apply(|c| c.edit_routes(&a, &r, vec![route], false, 0))
            .unwrap()
            .0;
    assert!(router.routes.is_empty());
}

#[test]
fn port_forwardings_exclude_an_association_and_duplicates() {
    let mut w = l3();
    let (a, r, inside) = (w.a.clone(), w.router.std.id.clone(), w.inside.clone());
    w.c.apply(|c| c.add_router_interface(&a, &r, by_subnet(&inside), 0))
        .unwrap();
    let fip = fip_for(&mut w, None).unwrap();
    let forward = |external: u16| PortForwardingRequest {
        protocol: Some("tcp".into()),
        external_port: Some(external),
        internal_port: Some(22),
        internal_port_id: Some(w.vm.std.id.clone()),
        internal_ip_address: Some(w.vm.fixed_ips[0].ip_address),
        description: None,
    };
    let (first, second) = (forward(2222), forward(2222));
    let pf =
        w.c.apply(|c| c.create_port_forwarding(&a, &fip.std.id, first, 0))
            .unwrap()
            .0;
    assert_eq!(pf.router_id, r);
    let dup =
        w.c.apply(|c| c.create_port_forwarding(&a, &fip.std.id, second, 0));
    assert!(matches!(dup, Err(ModelError::BadRequest { .. })));
    let vm = w.vm.std.id.clone();
    let assoc = FloatingIpUpdate {
        port_id: Some(Some(vm)),
        ..Default::default()
    };
    assert!(
        w.c.apply(|c| c.update_floating_ip(&a, &fip.std.id, assoc, 0))
            .is_err()
    );
    w.c.apply(|c| c.delete_port_forwarding(&a, &fip.std.id, &pf.id, 0))
        .unwrap();
    assert!(
        w.c.floating_ip(&fip.std.id)
            .unwrap()
            .port_forwardings
            .is_empty()
    );
}

#[test]
fn quotas_count_per_project_and_a_refused_bulk_leaves_the_count_alone() {
    let mut c = cloud();
    let (a, b) = (tenant("a"), tenant("b"));
    let limits = [("network".to_owned(), 2)].into_iter().collect();
    c.apply(|c| c.update_quota(&admin(), "a", limits, false, 0))
        .unwrap();
    let bulk = c.apply(|c| {
        for _ in 0..3 {
            c.create_network(&a, NetworkCreate::default(), 0)?;
        }
        Ok(())
    });
    assert_eq!(
        bulk,
        Err(ModelError::OverQuota {
            resource: "network"
        })
    );
    assert_eq!(c.used("a", Kind::Network), 0);
    net(&mut c, &a);
    net(&mut c, &a);
    assert_eq!(c.used("a", Kind::Network), 2);
    for _ in 0..3 {
        net(&mut c, &b);
    }
    let n = c
        .networks()
        .find(|n| n.std.project_id == "a")
        .unwrap()
        .std
        .id
        .clone();
    c.apply(|c| c.delete_network(&a, &n)).unwrap();
    net(&mut c, &a);
    assert!(matches!(
        c.apply(|c| c.update_quota(&a, "a", Limits::new(), false, 0)),
        Err(ModelError::Forbidden(_))
    ));
    // check_limit refuses a limit below what is used (2 networks), and
    // changes nothing; without it, or with -1 (unlimited), it is taken.
    let one = || [("network".to_owned(), 1)].into_iter().collect::<Limits>();
    assert!(matches!(
        c.apply(|c| c.update_quota(&admin(), "a", one(), true, 0)),
        Err(ModelError::QuotaBelowUsage {
            used: 2,
            limit: 1,
            ..
        })
    ));
    assert_eq!(c.quota(&admin(), "a").unwrap()["network"], 2);
    let unlimited = [("network".to_owned(), -1)].into_iter().collect();
    c.apply(|c| c.update_quota(&admin(), "a", unlimited, true, 0))
        .unwrap();
    c.apply(|c| c.update_quota(&admin(), "a", one(), false, 0))
        .unwrap();
    assert_eq!(c.quota(&admin(), "a").unwrap()["network"], 1);
}

#[test]
fn a_router_interface_is_active_while_any_host_reports_it_realised() {
    let mut w = l3();
    let (a, r, inside) = (w.a.clone(), w.router.std.id.clone(), w.inside.clone());
    let info =
        w.c.apply(|c| c.add_router_interface(&a, &r, by_subnet(&inside), 0))
            .unwrap()
            .0;
    let id = info.port_id.clone();
    let status = |w: &L3| w.c.port(&id).unwrap().status;
    assert_eq!(status(&w), PortStatus::Down);
    let realised = BTreeSet::from([id.clone()]);
    let report = |w: &mut L3, host: &str, wired: &BTreeSet<String>| {
        w.c.apply(|c| Ok(c.report_port_status(host, wired, 1)))
            .unwrap()
            .0
    };
    assert_eq!(report(&mut w, "h1", &realised), 1);
    assert_eq!(report(&mut w, "h2", &realised), 0, "already ACTIVE");
    assert_eq!(status(&w), PortStatus::Active);
    // h1 drops it; h2 still has it.
    assert_eq!(report(&mut w, "h1", &BTreeSet::new()), 0);
    assert_eq!(status(&w), PortStatus::Active);
    // The last host goes (as a dead host is reported): DOWN.
    assert_eq!(report(&mut w, "h2", &BTreeSet::new()), 1);
    assert_eq!(status(&w), PortStatus::Down);
    // A host cannot claim a VM's port it is not bound to.
    let vm = BTreeSet::from([w.vm.std.id.clone()]);
    assert_eq!(report(&mut w, "h3", &vm), 0);
    assert_eq!(w.c.port(&w.vm.std.id).unwrap().status, PortStatus::Down);
}

fn provider(
    c: &mut Cloud,
    who: &Caller,
    network_type: Option<&str>,
    physnet: Option<&str>,
    segmentation_id: Option<u32>,
) -> Result<Network, ModelError> {
    c.apply(|c| {
        c.create_network(
            who,
            NetworkCreate {
                network_type: network_type.map(Into::into),
                physical_network: physnet.map(Into::into),
                segmentation_id,
                ..Default::default()
            },
            0,
        )
    })
    .map(|(n, _)| n)
}

#[test]
fn a_flat_network_owns_its_physical_network_and_no_vni() {
    let mut c = cloud();
    let flat = provider(&mut c, &admin(), Some("flat"), Some("external"), None).unwrap();
    assert_eq!(flat.network_type, "flat");
    assert_eq!(flat.physical_network.as_deref(), Some("external"));
    assert_eq!(flat.segmentation_id, 0);
    assert!(flat.is_flat());
    // VXLAN networks still get VNIs from 1: the flat one took none.
    assert_eq!(net(&mut c, &admin()).segmentation_id, 1);
    assert_eq!(
        provider(&mut c, &admin(), Some("flat"), Some("external"), None).unwrap_err(),
        ModelError::FlatNetworkInUse {
            physical_network: "external".into()
        }
    );
    // Another physical network is free.
    provider(&mut c, &admin(), Some("flat"), Some("physnet2"), None).unwrap();
    // Deleting the flat network frees its physical network.
    c.apply(|c| c.delete_network(&admin(), &flat.std.id))
        .unwrap();
    provider(&mut c, &admin(), Some("flat"), Some("external"), None).unwrap();
}

#[test]
fn provider_attributes_are_checked_as_neutrons_type_drivers_check_them() {
    let mut c = cloud();
    let refused = |c: &mut Cloud, t, p, s| match provider(c, &admin(), t, p, s) {
        Err(ModelError::InvalidInput(m)) => m,
        other => panic!("{t:?} {p:?} {s:?}: {other:?}"),
    };
    assert_eq!(
        refused(&mut c, Some("flat"), None, None),
        "physical_network required for flat provider network"
    );
    assert_eq!(
        refused(&mut c, Some("flat"), Some(""), None),
        "physical_network required for flat provider network"
    );
    assert_eq!(
        refused(&mut c, Some("flat"), Some("external"), Some(5)),
        "segmentation_id prohibited for flat provider network"
    );
    assert_eq!(
        refused(&mut c, Some("vxlan"), Some("external"), None),
        "physical_network prohibited for vxlan provider network"
    );
    assert_eq!(
        refused(&mut c, None, Some("external"), None),
        "network_type required"
    );
    assert_eq!(
        refused(&mut c, Some("vlan"), Some("external"), None),
        "network_type value 'vlan' not supported"
    );
    assert!(matches!(
        provider(&mut c, &tenant("p"), Some("flat"), Some("external"), None),
        Err(ModelError::Forbidden(_))
    ));
    assert!(matches!(
        provider(&mut c, &tenant("p"), None, Some("external"), None),
        Err(ModelError::Forbidden(_))
    ));
    // Nothing refused took the physical network.
    provider(&mut c, &admin(), Some("flat"), Some("external"), None).unwrap();
}

// === subnet pools ===

fn pool(c: &mut Cloud, who: &Caller, prefixes: &[&str], default_len: u32) -> SubnetPool {
    let req = SubnetPoolCreate {
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        default_prefixlen: Some(default_len),
        ..Default::default()
    };
    c.apply(|c| c.create_subnet_pool(who, req, 0)).unwrap().0
}

fn from_pool(
    c: &mut Cloud,
    who: &Caller,
    network: &str,
    pool: &str,
    prefixlen: Option<u32>,
) -> Result<Subnet, ModelError> {
    let req = SubnetCreate {
        network_id: network.into(),
        ip_version: 4,
        subnetpool_id: Some(pool.into()),
        prefixlen,
        ..Default::default()
    };
    c.apply(|c| c.create_subnet(who, req, 0)).map(|(s, _)| s)
}

fn cidr_of(s: &Result<Subnet, ModelError>) -> String {
    s.as_ref().map(|s| s.cidr.to_string()).unwrap_or_default()
}

#[test]
fn a_pool_takes_neutrons_defaults_and_merges_its_prefixes() {
    let mut c = cloud();
    let a = tenant("a");
    let req = SubnetPoolCreate {
        prefixes: ["10.10.1.0/24", "10.10.0.0/24", "10.10.0.7/16"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect(),
        ..Default::default()
    };
    let p = c.apply(|c| c.create_subnet_pool(&a, req, 0)).unwrap().0;
    assert_eq!(p.ip_version, 4);
    assert_eq!(
        p.prefixes,
        vec!["10.10.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        (p.min_prefixlen, p.default_prefixlen, p.max_prefixlen),
        (8, 8, 32)
    );
    let v6 = SubnetPoolCreate {
        prefixes: vec!["fd00::/48".parse().unwrap()],
        ..Default::default()
    };
    let p6 = c.apply(|c| c.create_subnet_pool(&a, v6, 0)).unwrap().0;
    assert_eq!(
        (
            p6.ip_version,
            p6.min_prefixlen,
            p6.default_prefixlen,
            p6.max_prefixlen
        ),
        (6, 64, 64, 128)
    );
}

#[test]
fn allocation_takes_the_first_free_block_and_never_overlaps() {
    let mut c = cloud();
    let a = tenant("a");
    let p = pool(&mut c, &a, &["10.10.0.0/16"], 24);
    let n = net(&mut c, &a);
    let first = from_pool(&mut c, &a, &n.std.id, &p.std.id, None);
    assert_eq!(cidr_of(&first), "10.10.0.0/24");
    assert_eq!(
        first.unwrap().subnetpool_id.as_deref(),
        Some(p.std.id.as_str())
    );
    assert_eq!(
        cidr_of(&from_pool(&mut c, &a, &n.std.id, &p.std.id, Some(26))),
        "10.10.1.0/26"
    );
    // The smallest free block that holds it: the rest of 10.10.1.0/24.
    assert_eq!(
        cidr_of(&from_pool(&mut c, &a, &n.std.id, &p.std.id, Some(26))),
        "10.10.1.64/26"
    );
    assert_eq!(
        cidr_of(&from_pool(&mut c, &a, &n.std.id, &p.std.id, None)),
        "10.10.2.0/24"
    );
    // Another network of the pool: still no overlap.
    let m = net(&mut c, &a);
    assert_eq!(
        cidr_of(&from_pool(&mut c, &a, &m.std.id, &p.std.id, Some(23))),
        "10.10.4.0/23"
    );
    let cidrs: Vec<ipnet::IpNet> = c.subnets().map(|s| s.cidr).collect();
    for (i, x) in cidrs.iter().enumerate() {
        for y in &cidrs[i + 1..] {
            assert!(!x.contains(y) && !y.contains(x), "{x} overlaps {y}");
        }
    }
    // Gateway and pools as for a given CIDR.
    let s = c
        .subnets()
        .find(|s| s.cidr.to_string() == "10.10.2.0/24")
        .unwrap();
    assert_eq!(s.gateway_ip, Some("10.10.2.1".parse().unwrap()));
}

#[test]
fn an_exhausted_pool_refuses_and_changes_nothing() {
    let mut c = cloud();
    let a = tenant("a");
    let p = pool(&mut c, &a, &["10.10.0.0/23"], 24);
    let n = net(&mut c, &a);
    from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    let before = c.subnets().count();
    let err = from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Failed to allocate subnet: Insufficient prefix space to allocate subnet size /24."
    );
    assert_eq!(c.subnets().count(), before);
    // Freed space is allocated again.
    let id = c
        .subnets()
        .find(|s| s.cidr.to_string() == "10.10.0.0/24")
        .unwrap()
        .std
        .id
        .clone();
    c.apply(|c| c.delete_subnet(&a, &id, 0)).unwrap();
    assert_eq!(
        cidr_of(&from_pool(&mut c, &a, &n.std.id, &p.std.id, Some(25))),
        "10.10.0.0/25"
    );
}

#[test]
fn prefix_lengths_stay_within_the_pools_bounds() {
    let mut c = cloud();
    let a = tenant("a");
    let req = SubnetPoolCreate {
        prefixes: vec!["10.10.0.0/16".parse().unwrap()],
        min_prefixlen: Some(20),
        max_prefixlen: Some(28),
        default_prefixlen: Some(24),
        ..Default::default()
    };
    let p = c.apply(|c| c.create_subnet_pool(&a, req, 0)).unwrap().0;
    let n = net(&mut c, &a);
    assert_eq!(
        from_pool(&mut c, &a, &n.std.id, &p.std.id, Some(29)).unwrap_err(),
        ModelError::MaxPrefixSubnetAllocationError {
            prefixlen: 29,
            max_prefixlen: 28
        }
    );
    assert_eq!(
        from_pool(&mut c, &a, &n.std.id, &p.std.id, Some(19)).unwrap_err(),
        ModelError::MinPrefixSubnetAllocationError {
            prefixlen: 19,
            min_prefixlen: 20
        }
    );
    let bad = SubnetPoolUpdate {
        default_prefixlen: Some(30),
        ..Default::default()
    };
    assert_eq!(
        c.apply(|c| c.update_subnet_pool(&a, &p.std.id, bad, 1))
            .unwrap_err()
            .to_string(),
        "Illegal prefix bounds: default_prefixlen=30, max_prefixlen=28."
    );
    let mixed = SubnetPoolCreate {
        prefixes: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        ..Default::default()
    };
    assert_eq!(
        c.apply(|c| c.create_subnet_pool(&a, mixed, 0)).unwrap_err(),
        ModelError::PrefixVersionMismatch
    );
}

#[test]
fn a_given_cidr_must_be_free_and_inside_the_pool() {
    let mut c = cloud();
    let a = tenant("a");
    let p = pool(&mut c, &a, &["10.10.0.0/16"], 24);
    let n = net(&mut c, &a);
    let req = |cidr: &str| SubnetCreate {
        network_id: n.std.id.clone(),
        ip_version: 4,
        subnetpool_id: Some(p.std.id.clone()),
        cidr: Some(cidr.into()),
        ..Default::default()
    };
    let s = c
        .apply(|c| c.create_subnet(&a, req("10.10.8.0/24"), 0))
        .unwrap()
        .0;
    assert_eq!(s.subnetpool_id.as_deref(), Some(p.std.id.as_str()));
    let m = net(&mut c, &a);
    let mut taken = req("10.10.8.0/25");
    taken.network_id = m.std.id.clone();
    for bad in [taken, req("10.20.0.0/24")] {
        assert!(matches!(
            c.apply(|c| c.create_subnet(&a, bad, 0)),
            Err(ModelError::SubnetAllocationError { .. })
        ));
    }
    // Both a CIDR and a prefix length: refused, as in Neutron.
    let mut both = req("10.10.9.0/24");
    both.prefixlen = Some(24);
    assert!(matches!(
        c.apply(|c| c.create_subnet(&a, both, 0)),
        Err(ModelError::BadRequest { .. })
    ));
}

#[test]
fn prefixes_only_grow_by_update_and_removal_spares_allocations() {
    let mut c = cloud();
    let a = tenant("a");
    let p = pool(&mut c, &a, &["10.10.0.0/24"], 26);
    let n = net(&mut c, &a);
    from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    let shrink = SubnetPoolUpdate {
        prefixes: Some(vec!["10.10.0.0/25".parse().unwrap()]),
        ..Default::default()
    };
    assert_eq!(
        c.apply(|c| c.update_subnet_pool(&a, &p.std.id, shrink, 1))
            .unwrap_err()
            .to_string(),
        "Illegal update to prefixes: Existing prefixes must be a subset of the new prefixes."
    );
    for (other, err) in [
        (vec!["fd00::/8"], "IllegalSubnetPoolPrefixUpdate"),
        (vec![], "IllegalSubnetPoolPrefixUpdate"),
        (vec!["10.10.0.0/24", "fd00::/8"], "PrefixVersionMismatch"),
    ] {
        let req = SubnetPoolUpdate {
            prefixes: Some(other.iter().map(|p| p.parse().unwrap()).collect()),
            ..Default::default()
        };
        let got = c
            .apply(|c| c.update_subnet_pool(&a, &p.std.id, req, 1))
            .unwrap_err();
        assert!(format!("{got:?}").starts_with(err), "{got:?}");
    }
    let grown = c
        .apply(|c| {
            c.add_subnet_pool_prefixes(&a, &p.std.id, vec!["10.10.1.0/24".parse().unwrap()], 1)
        })
        .unwrap()
        .0;
    assert_eq!(
        grown.prefixes,
        vec!["10.10.0.0/23".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(grown.std.revision_number, 1);
    let in_use = c.apply(|c| {
        c.remove_subnet_pool_prefixes(&a, &p.std.id, vec!["10.10.0.0/25".parse().unwrap()], 2)
    });
    assert!(matches!(
        in_use,
        Err(ModelError::IllegalSubnetPoolPrefixUpdate { .. })
    ));
    let shrunk = c
        .apply(|c| {
            c.remove_subnet_pool_prefixes(&a, &p.std.id, vec!["10.10.1.0/25".parse().unwrap()], 2)
        })
        .unwrap()
        .0;
    let expect: Vec<ipnet::IpNet> = ["10.10.0.0/24", "10.10.1.128/25"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(shrunk.prefixes, expect);
    // What was removed is no longer allocated.
    let req = SubnetCreate {
        network_id: n.std.id.clone(),
        ip_version: 4,
        subnetpool_id: Some(p.std.id.clone()),
        cidr: Some("10.10.1.0/26".into()),
        ..Default::default()
    };
    assert!(c.apply(|c| c.create_subnet(&a, req, 3)).is_err());
}

#[test]
fn a_pool_in_use_is_not_deleted() {
    let mut c = cloud();
    let a = tenant("a");
    let p = pool(&mut c, &a, &["10.10.0.0/16"], 24);
    let n = net(&mut c, &a);
    let s = from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    assert_eq!(
        c.apply(|c| c.delete_subnet_pool(&a, &p.std.id))
            .unwrap_err()
            .to_string(),
        "Unable to delete subnet pool: Subnet pool has existing allocations."
    );
    assert!(c.subnet_pool(&p.std.id).is_some());
    c.apply(|c| c.delete_subnet(&a, &s.std.id, 0)).unwrap();
    c.apply(|c| c.delete_subnet_pool(&a, &p.std.id)).unwrap();
    assert!(c.subnet_pool(&p.std.id).is_none());
    // Deleting the network takes its subnets out of the pool's index too.
    let q = pool(&mut c, &a, &["10.20.0.0/16"], 24);
    from_pool(&mut c, &a, &n.std.id, &q.std.id, None).unwrap();
    c.apply(|c| c.delete_network(&a, &n.std.id)).unwrap();
    c.apply(|c| c.delete_subnet_pool(&a, &q.std.id)).unwrap();
}

#[test]
fn private_pools_are_their_projects_and_shared_ones_everyones() {
    let mut c = cloud();
    let (a, b) = (tenant("a"), tenant("b"));
    let private = pool(&mut c, &a, &["10.10.0.0/16"], 24);
    let nb = net(&mut c, &b);
    assert!(matches!(
        from_pool(&mut c, &b, &nb.std.id, &private.std.id, None),
        Err(ModelError::NotFound {
            kind: Kind::SubnetPool,
            ..
        })
    ));
    assert!(!c.can_see(&b, &Resource::SubnetPool(private.clone())));
    let shared_req = SubnetPoolCreate {
        prefixes: vec!["10.20.0.0/16".parse().unwrap()],
        default_prefixlen: Some(24),
        shared: Some(true),
        ..Default::default()
    };
    assert!(matches!(
        c.apply(|c| c.create_subnet_pool(&a, shared_req.clone(), 0)),
        Err(ModelError::Forbidden(_))
    ));
    let shared = c
        .apply(|c| c.create_subnet_pool(&admin(), shared_req, 0))
        .unwrap()
        .0;
    let s = from_pool(&mut c, &b, &nb.std.id, &shared.std.id, None).unwrap();
    assert_eq!(s.std.project_id, "b");
    // Seen, not owned: b may not change it.
    assert!(matches!(
        c.apply(|c| c.delete_subnet_pool(&b, &shared.std.id)),
        Err(ModelError::Forbidden(_))
    ));
}

#[test]
fn one_default_pool_per_ip_version_serves_use_default_subnetpool() {
    let mut c = cloud();
    let a = tenant("a");
    let default = |prefix: &str| SubnetPoolCreate {
        prefixes: vec![prefix.parse().unwrap()],
        default_prefixlen: Some(if prefix.contains(':') { 64 } else { 24 }),
        shared: Some(true),
        is_default: Some(true),
        ..Default::default()
    };
    assert!(matches!(
        c.apply(|c| c.create_subnet_pool(&a, default("10.0.0.0/8"), 0)),
        Err(ModelError::Forbidden(_))
    ));
    let p = c
        .apply(|c| c.create_subnet_pool(&admin(), default("10.0.0.0/8"), 0))
        .unwrap()
        .0;
    assert!(matches!(
        c.apply(|c| c.create_subnet_pool(&admin(), default("172.16.0.0/12"), 0)),
        Err(ModelError::InvalidInput(_))
    ));
    c.apply(|c| c.create_subnet_pool(&admin(), default("fd00::/8"), 0))
        .unwrap();
    let n = net(&mut c, &a);
    let req = SubnetCreate {
        network_id: n.std.id.clone(),
        ip_version: 4,
        use_default_subnetpool: true,
        ..Default::default()
    };
    let s = c.apply(|c| c.create_subnet(&a, req, 0)).unwrap().0;
    assert_eq!(s.subnetpool_id.as_deref(), Some(p.std.id.as_str()));
    assert_eq!(s.cidr.to_string(), "10.0.0.0/24");
    // No longer the default: a new one may be set.
    let unset = SubnetPoolUpdate {
        is_default: Some(false),
        ..Default::default()
    };
    c.apply(|c| c.update_subnet_pool(&admin(), &p.std.id, unset, 1))
        .unwrap();
    c.apply(|c| c.create_subnet_pool(&admin(), default("172.16.0.0/12"), 0))
        .unwrap();
}

#[test]
fn a_networks_subnets_of_one_version_come_from_one_pool() {
    let mut c = cloud();
    let a = tenant("a");
    let p = pool(&mut c, &a, &["10.10.0.0/16"], 24);
    let q = pool(&mut c, &a, &["10.20.0.0/16"], 24);
    let n = net(&mut c, &a);
    from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    assert_eq!(
        from_pool(&mut c, &a, &n.std.id, &q.std.id, None).unwrap_err(),
        ModelError::NetworkSubnetPoolAffinityError
    );
    let plain = SubnetCreate {
        network_id: n.std.id.clone(),
        ip_version: 4,
        cidr: Some("192.168.0.0/24".into()),
        ..Default::default()
    };
    assert_eq!(
        c.apply(|c| c.create_subnet(&a, plain, 0)).unwrap_err(),
        ModelError::NetworkSubnetPoolAffinityError
    );
}

#[test]
fn a_pools_default_quota_limits_each_project() {
    let mut c = cloud();
    let a = tenant("a");
    let req = SubnetPoolCreate {
        prefixes: vec!["10.10.0.0/16".parse().unwrap()],
        default_prefixlen: Some(24),
        default_quota: Some(512),
        ..Default::default()
    };
    let p = c.apply(|c| c.create_subnet_pool(&a, req, 0)).unwrap().0;
    let n = net(&mut c, &a);
    from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    assert_eq!(
        from_pool(&mut c, &a, &n.std.id, &p.std.id, Some(32 - 1)).unwrap_err(),
        ModelError::SubnetPoolQuotaExceeded
    );
}

#[test]
fn reloading_keeps_a_pools_allocations() {
    let mut c = cloud();
    let a = tenant("a");
    let p = pool(&mut c, &a, &["10.10.0.0/16"], 24);
    let n = net(&mut c, &a);
    from_pool(&mut c, &a, &n.std.id, &p.std.id, None).unwrap();
    let all: Vec<Resource> = [Kind::Network, Kind::Subnet, Kind::SubnetPool]
        .iter()
        .flat_map(|k| {
            let ids: Vec<String> = match k {
                Kind::Network => c.networks().map(|r| r.std.id.clone()).collect(),
                Kind::Subnet => c.subnets().map(|r| r.std.id.clone()).collect(),
                _ => c.subnet_pools().map(|r| r.std.id.clone()).collect(),
            };
            ids.into_iter()
                .filter_map(|id| c.get(*k, &id))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut again = Cloud::load(CloudConfig::default(), all);
    assert_eq!(
        cidr_of(&from_pool(&mut again, &a, &n.std.id, &p.std.id, None)),
        "10.10.1.0/24"
    );
    assert!(
        again
            .apply(|c| c.delete_subnet_pool(&a, &p.std.id))
            .is_err()
    );
}

#[test]
fn ipv6_pools_hand_out_64s_and_a_failed_batch_allocates_nothing() {
    let mut c = cloud();
    let a = tenant("a");
    let req = SubnetPoolCreate {
        prefixes: vec!["fd00:1::/63".parse().unwrap()],
        ..Default::default()
    };
    let p = c.apply(|c| c.create_subnet_pool(&a, req, 0)).unwrap().0;
    let n = net(&mut c, &a);
    let v6 = |prefixlen: Option<u32>| SubnetCreate {
        network_id: n.std.id.clone(),
        ip_version: 6,
        subnetpool_id: Some(p.std.id.clone()),
        prefixlen,
        ..Default::default()
    };
    // Two in one operation, the second refused: neither stays.
    let batch = c.apply(|c| {
        c.create_subnet(&a, v6(None), 0)?;
        c.create_subnet(&a, v6(Some(48)), 0)
    });
    assert!(matches!(
        batch,
        Err(ModelError::MinPrefixSubnetAllocationError { .. })
    ));
    assert_eq!(c.subnets().count(), 0);
    let first = c.apply(|c| c.create_subnet(&a, v6(None), 0)).unwrap().0;
    let second = c.apply(|c| c.create_subnet(&a, v6(None), 0)).unwrap().0;
    assert_eq!(first.cidr.to_string(), "fd00:1::/64");
    assert_eq!(second.cidr.to_string(), "fd00:1:0:1::/64");
    assert!(matches!(
        c.apply(|c| c.create_subnet(&a, v6(None), 0)),
        Err(ModelError::SubnetAllocationError { .. })
    ));
}

// === metering ===

fn label(c: &mut Cloud, who: &Caller, shared: bool) -> Result<MeteringLabel, ModelError> {
    let req = MeteringLabelCreate {
        name: Some("m".into()),
        shared: Some(shared),
        ..Default::default()
    };
    c.apply(|c| c.create_metering_label(who, req, 0))
        .map(|(l, _)| l)
}

fn label_rule(
    c: &mut Cloud,
    who: &Caller,
    label: &str,
    direction: &str,
    remote: Option<&str>,
    excluded: bool,
) -> Result<MeteringLabelRule, ModelError> {
    let req = MeteringLabelRuleCreate {
        metering_label_id: label.into(),
        direction: direction.into(),
        excluded: Some(excluded),
        remote_ip_prefix: remote.map(Into::into),
        ..Default::default()
    };
    c.apply(|c| c.create_metering_label_rule(who, req, 0))
        .map(|(r, _)| r)
}

#[test]
fn metering_is_for_admins_only() {
    let mut c = cloud();
    let member = tenant("a");
    assert!(matches!(
        label(&mut c, &member, false),
        Err(ModelError::Forbidden(_))
    ));
    let l = label(&mut c, &admin(), false).unwrap();
    let r = label_rule(
        &mut c,
        &admin(),
        &l.std.id,
        "ingress",
        Some("10.0.0.0/8"),
        false,
    )
    .unwrap();
    // A member sees neither (404), may not add rules (403) nor delete.
    assert!(matches!(
        c.visible(&member, Kind::MeteringLabel, &l.std.id),
        Err(ModelError::NotFound { .. })
    ));
    assert!(matches!(
        c.visible(&member, Kind::MeteringLabelRule, &r.std.id),
        Err(ModelError::NotFound { .. })
    ));
    assert!(matches!(
        label_rule(
            &mut c,
            &member,
            &l.std.id,
            "egress",
            Some("10.0.0.0/8"),
            false
        ),
        Err(ModelError::Forbidden(_))
    ));
    assert!(matches!(
        c.apply(|c| c.delete_metering_label(&member, &l.std.id)),
        Err(ModelError::NotFound { .. })
    ));
    assert_eq!(c.metering_labels().count(), 1);
}

#[test]
fn a_rule_needs_its_label_a_prefix_and_no_overlap() {
    let mut c = cloud();
    let a = admin();
    let l = label(&mut c, &a, false).unwrap();
    assert!(matches!(
        label_rule(&mut c, &a, "nope", "ingress", Some("10.0.0.0/8"), false),
        Err(ModelError::NotFound {
            kind: Kind::MeteringLabel,
            ..
        })
    ));
    assert!(matches!(
        label_rule(&mut c, &a, &l.std.id, "ingress", None, false),
        Err(ModelError::MeteringInvalid(_))
    ));
    assert!(matches!(
        label_rule(
            &mut c,
            &a,
            &l.std.id,
            "ingress",
            Some("10.0.0.300/8"),
            false
        ),
        Err(ModelError::MeteringInvalid(_))
    ));
    let both = MeteringLabelRuleCreate {
        metering_label_id: l.std.id.clone(),
        direction: "ingress".into(),
        remote_ip_prefix: Some("10.0.0.0/8".into()),
        source_ip_prefix: Some("10.0.0.0/8".into()),
        ..Default::default()
    };
    assert!(matches!(
        c.apply(|c| c.create_metering_label_rule(&a, both, 0)),
        Err(ModelError::MeteringInvalid(_))
    ));
    label_rule(&mut c, &a, &l.std.id, "ingress", Some("10.0.0.0/8"), false).unwrap();
    // Overlapping, same direction and exclusion: refused, naming the prefix.
    assert_eq!(
        label_rule(&mut c, &a, &l.std.id, "ingress", Some("10.1.0.0/16"), false),
        Err(ModelError::MeteringLabelRuleOverlaps {
            prefix: "10.1.0.0/16".into()
        })
    );
    // Another direction, or excluded: fine, as in Neutron.
    label_rule(&mut c, &a, &l.std.id, "egress", Some("10.1.0.0/16"), false).unwrap();
    let x = label_rule(&mut c, &a, &l.std.id, "ingress", Some("10.1.0.0/16"), true).unwrap();
    assert!(x.excluded);
    // An address alone is a host prefix, kept as written.
    let h = label_rule(&mut c, &a, &l.std.id, "ingress", Some("192.0.2.7"), false).unwrap();
    assert_eq!(h.remote_ip_prefix, Some("192.0.2.7/32".parse().unwrap()));
    assert_eq!(c.rules_of_label(&l.std.id).count(), 4);
}

#[test]
fn deleting_a_label_deletes_its_rules_in_one_change() {
    let mut c = cloud();
    let a = admin();
    let l = label(&mut c, &a, true).unwrap();
    let keep = label(&mut c, &a, false).unwrap();
    label_rule(&mut c, &a, &l.std.id, "ingress", Some("10.0.0.0/8"), false).unwrap();
    label_rule(&mut c, &a, &l.std.id, "egress", Some("10.0.0.0/8"), false).unwrap();
    let kept = label_rule(&mut c, &a, &keep.std.id, "egress", Some("0.0.0.0/0"), false).unwrap();
    let ((), changes) = c.apply(|c| c.delete_metering_label(&a, &l.std.id)).unwrap();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|ch| ch.value.is_none()));
    let left: Vec<&str> = c
        .metering_label_rules()
        .map(|r| r.std.id.as_str())
        .collect();
    assert_eq!(left, vec![kept.std.id.as_str()]);
    assert!(c.metering_label(&l.std.id).is_none());
}

// === auto-allocated topology ===

/// An admin's default external network with a subnet, and shared default
/// pools of both IP versions.
fn auto_allocation_ready(c: &mut Cloud) -> String {
    let external = c
        .apply(|c| {
            let n = c.create_network(
                &admin(),
                NetworkCreate {
                    external: Some(true),
                    is_default: Some(true),
                    ..Default::default()
                },
                0,
            )?;
            c.create_subnet(
                &admin(),
                SubnetCreate {
                    network_id: n.std.id.clone(),
                    ip_version: 4,
                    cidr: Some("203.0.113.0/24".into()),
                    ..Default::default()
                },
                0,
            )?;
            for prefix in ["10.128.0.0/16", "fd80::/48"] {
                let prefix: ipnet::IpNet = prefix.parse().unwrap();
                let len = if prefix.addr().is_ipv4() { 24 } else { 64 };
                c.create_subnet_pool(
                    &admin(),
                    SubnetPoolCreate {
                        prefixes: vec![prefix],
                        default_prefixlen: Some(len),
                        shared: Some(true),
                        is_default: Some(true),
                        ..Default::default()
                    },
                    0,
                )?;
            }
            Ok(n)
        })
        .unwrap()
        .0;
    external.std.id
}

#[test]
fn get_me_a_network_makes_it_once_and_whole() {
    let mut c = cloud();
    let a = tenant("a");
    // Nothing to connect to yet: refused, nothing made.
    let before = c.networks().count();
    assert!(matches!(
        c.apply(|c| c.auto_allocate(&a, None, false, 0)),
        Err(ModelError::AutoAllocationFailure { .. })
    ));
    assert_eq!(c.networks().count(), before);
    let external = auto_allocation_ready(&mut c);
    assert_eq!(
        c.apply(|c| c.auto_allocate(&a, None, true, 0)).unwrap().0.1,
        Allocated::DryRunPassed
    );
    let ((project, made), _) = c.apply(|c| c.auto_allocate(&a, None, false, 0)).unwrap();
    assert_eq!(project, "a");
    let Allocated::Network(net) = made else {
        panic!("{made:?}")
    };
    let subnets: Vec<&Subnet> = c
        .subnets_of(&net)
        .iter()
        .filter_map(|s| c.subnet(s))
        .collect();
    assert_eq!(subnets.len(), 2);
    assert!(
        subnets
            .iter()
            .all(|s| s.std.project_id == "a" && s.subnetpool_id.is_some())
    );
    let topology = c.auto_allocated_topologies().next().unwrap().clone();
    let router = c.router(&topology.router_id).unwrap();
    assert_eq!(router.gateway.as_ref().unwrap().network_id, external);
    assert_eq!(c.router_interfaces(&router.std.id).count(), 2);
    // Again: the same network, nothing new.
    let again = c
        .apply(|c| c.auto_allocate(&a, None, false, 0))
        .unwrap()
        .0
        .1;
    assert_eq!(again, Allocated::Network(net.clone()));
    // Another project's is for admins only.
    assert!(matches!(
        c.apply(|c| c.auto_allocate(&tenant("b"), Some("a"), false, 0)),
        Err(ModelError::Forbidden(_))
    ));
    // Deleted whole.
    c.apply(|c| c.delete_auto_allocated(&a, None, 0)).unwrap();
    assert!(c.network(&net).is_none() && c.router(&topology.router_id).is_none());
    assert_eq!(c.auto_allocated_topologies().count(), 0);
}

#[test]
fn one_default_external_network_and_only_an_external_one() {
    let mut c = cloud();
    let first = auto_allocation_ready(&mut c);
    let second = NetworkCreate {
        external: Some(true),
        is_default: Some(true),
        ..Default::default()
    };
    assert_eq!(
        c.apply(|c| c.create_network(&admin(), second, 0))
            .unwrap_err(),
        ModelError::DefaultExternalNetworkExists { id: first.clone() }
    );
    let internal = NetworkCreate {
        is_default: Some(true),
        ..Default::default()
    };
    assert!(matches!(
        c.apply(|c| c.create_network(&admin(), internal, 0)),
        Err(ModelError::InvalidInput(_))
    ));
    let by_member = NetworkCreate {
        is_default: Some(false),
        ..Default::default()
    };
    assert!(matches!(
        c.apply(|c| c.create_network(&tenant("a"), by_member, 0)),
        Err(ModelError::Forbidden(_))
    ));
    // No longer external, no longer the default: another may be.
    let off = NetworkUpdate {
        external: Some(false),
        ..Default::default()
    };
    assert!(
        !c.apply(|c| c.update_network(&admin(), &first, off, 0))
            .unwrap()
            .0
            .is_default
    );
    let other = NetworkCreate {
        external: Some(true),
        is_default: Some(true),
        ..Default::default()
    };
    assert!(
        c.apply(|c| c.create_network(&admin(), other, 0))
            .unwrap()
            .0
            .is_default
    );
}

#[test]
fn an_ipv6_subnet_without_router_advertisements_has_its_first_host_as_gateway() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    let s = c
        .apply(|c| {
            c.create_subnet(
                &a,
                SubnetCreate {
                    network_id: n.std.id.clone(),
                    ip_version: 6,
                    cidr: Some("fd00:77::/64".into()),
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap()
        .0;
    assert_eq!(s.gateway_ip, Some("fd00:77::1".parse().unwrap()));
}

// === RBAC policies ===

fn share(
    c: &mut Cloud,
    who: &Caller,
    object: (ObjectType, &str),
    action: &str,
    target: &str,
) -> Result<RbacPolicy, ModelError> {
    let req = RbacPolicyCreate {
        project_id: None,
        object_type: object.0,
        object_id: object.1.into(),
        action: action.into(),
        target_project: target.into(),
    };
    c.apply(|c| c.create_rbac_policy(who, req, 0))
        .map(|(p, _)| p)
}

fn retarget(c: &mut Cloud, who: &Caller, id: &str, target: &str) -> Result<RbacPolicy, ModelError> {
    let req = RbacPolicyUpdate {
        target_project: Some(target.into()),
    };
    c.apply(|c| c.update_rbac_policy(who, id, req, 0))
        .map(|(p, _)| p)
}

fn unshare(c: &mut Cloud, who: &Caller, id: &str) -> Result<(), ModelError> {
    c.apply(|c| c.delete_rbac_policy(who, id, 0)).map(|_| ())
}

#[test]
fn a_policy_shows_a_network_to_its_target_alone_and_lets_it_add_ports() {
    let mut c = cloud();
    let (a, b, x) = (tenant("a"), tenant("b"), tenant("x"));
    let n = net(&mut c, &a);
    let s = subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    assert!(!c.can_see_network(&b, &n));
    assert!(matches!(
        port(&mut c, &b, &n.std.id),
        Err(ModelError::NotFound { .. })
    ));
    let before = c.network(&n.std.id).unwrap().std.revision_number;

    let p = share(
        &mut c,
        &a,
        (ObjectType::Network, &n.std.id),
        "access_as_shared",
        "b",
    )
    .unwrap();
    assert_eq!(
        (p.std.project_id.as_str(), p.target_project.as_str()),
        ("a", "b")
    );
    // The network's revision counts its policies, as Neutron's does.
    assert!(c.network(&n.std.id).unwrap().std.revision_number > before);
    assert!(c.can_see_network(&b, &n));
    assert!(c.can_see(&b, &Resource::Subnet(s.clone())));
    assert!(c.shared_with(ObjectType::Network, &n.std.id, "b"));
    // Shared with b is not shared with everyone: the owner's view says no.
    assert!(!c.shared_with(ObjectType::Network, &n.std.id, "a"));
    assert!(!c.can_see_network(&x, &n));
    assert!(!c.can_see(&x, &Resource::Subnet(s)));
    // The target sees the network, never the policy.
    assert!(c.visible(&b, Kind::RbacPolicy, &p.std.id).is_err());
    assert!(c.visible(&a, Kind::RbacPolicy, &p.std.id).is_ok());
    let bp = port(&mut c, &b, &n.std.id).unwrap();
    assert_eq!(bp.std.project_id, "b");
    assert_eq!(
        bp.security_groups,
        vec![c.default_group_of("b").unwrap().to_owned()]
    );
    // Seeing is not owning: b changes nothing of a's network.
    assert!(matches!(
        c.apply(|c| c.delete_network(&b, &n.std.id)),
        Err(ModelError::Forbidden(_))
    ));
}

#[test]
fn only_the_owner_or_an_admin_shares_and_only_an_admin_with_everyone() {
    let mut c = cloud();
    let (a, b) = (tenant("a"), tenant("b"));
    let n = net(&mut c, &a);
    let object = (ObjectType::Network, n.std.id.as_str());
    // Invisible to b: not found; visible but not b's: refused.
    assert!(matches!(
        share(&mut c, &b, object, "access_as_shared", "b"),
        Err(ModelError::NotFound {
            kind: Kind::Network,
            ..
        })
    ));
    assert!(matches!(
        share(&mut c, &a, object, "access_as_shared", "*"),
        Err(ModelError::Forbidden(_))
    ));
    share(&mut c, &a, object, "access_as_shared", "b").unwrap();
    assert!(matches!(
        share(&mut c, &b, object, "access_as_shared", "c"),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        share(&mut c, &a, object, "access_as_shared", "b"),
        Err(ModelError::DuplicateRbacPolicy)
    ));
    let err = share(&mut c, &a, object, "access_as_fun", "c").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invalid input for operation: Invalid action 'access_as_fun' for object type 'network'. Valid actions: ('access_as_shared', 'access_as_external')."
    );
    let g = c
        .apply(|c| c.create_security_group(&a, SecurityGroupCreate::default(), 0))
        .unwrap()
        .0;
    let err = share(
        &mut c,
        &a,
        (ObjectType::SecurityGroup, &g.std.id),
        "access_as_external",
        "b",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("Valid actions: ('access_as_shared',)."),
        "{err}"
    );
    // An admin shares anyone's network, with everyone too.
    let all = share(&mut c, &admin(), object, "access_as_shared", "*").unwrap();
    assert_eq!(all.std.project_id, "admin");
    assert!(c.shared_with(ObjectType::Network, &n.std.id, "anyone"));
}

#[test]
fn shared_is_the_wildcard_policy_both_ways() {
    let mut c = cloud();
    let n = c
        .apply(|c| {
            let req = NetworkCreate {
                shared: Some(true),
                ..Default::default()
            };
            c.create_network(&tenant("a"), req, 0)
        })
        .map(|(n, _)| n);
    assert!(matches!(n, Err(ModelError::Forbidden(_))));
    let n = c
        .apply(|c| {
            let req = NetworkCreate {
                project_id: Some("a".into()),
                shared: Some(true),
                ..Default::default()
            };
            c.create_network(&admin(), req, 0)
        })
        .unwrap()
        .0;
    let id = n.std.id.clone();
    // shared: true made the wildcard policy, owned by the network's owner.
    let wildcard: Vec<&RbacPolicy> = c.rbac_policies().filter(|p| p.object_id == id).collect();
    assert_eq!(wildcard.len(), 1);
    assert_eq!(
        (
            wildcard[0].std.project_id.as_str(),
            wildcard[0].target_project.as_str()
        ),
        ("a", "*")
    );
    let wildcard = wildcard[0].std.id.clone();
    assert!(c.shared_with(ObjectType::Network, &id, "z"));
    // Deleting the wildcard policy unshares the network...
    unshare(&mut c, &admin(), &wildcard).unwrap();
    assert!(!c.shared_with(ObjectType::Network, &id, "z"));
    assert!(!c.can_see_network(&tenant("z"), &n));
    // ...and a wildcard policy made through the API shares it.
    let p = share(
        &mut c,
        &admin(),
        (ObjectType::Network, &id),
        "access_as_shared",
        "*",
    )
    .unwrap();
    assert!(c.shared_with(ObjectType::Network, &id, "z"));
    // shared: false removes it; true again makes one more, never two.
    let update = |shared| NetworkUpdate {
        shared: Some(shared),
        ..Default::default()
    };
    c.apply(|c| c.update_network(&admin(), &id, update(false), 0))
        .unwrap();
    assert!(c.rbac_policy(&p.std.id).is_none());
    c.apply(|c| c.update_network(&admin(), &id, update(true), 0))
        .unwrap();
    c.apply(|c| c.update_network(&admin(), &id, update(true), 0))
        .unwrap();
    assert_eq!(c.rbac_policies().filter(|p| p.object_id == id).count(), 1);
    // Deleting the network takes its policies along.
    c.apply(|c| c.delete_network(&admin(), &id)).unwrap();
    assert_eq!(c.rbac_policies().count(), 0);
}

#[test]
fn policies_in_use_are_kept_and_a_refusal_changes_nothing() {
    let mut c = cloud();
    let (a, b) = (tenant("a"), tenant("b"));
    let n = net(&mut c, &a);
    subnet(&mut c, &a, &n.std.id, "10.0.0.0/24");
    let object = (ObjectType::Network, n.std.id.as_str());
    let to_b = share(&mut c, &a, object, "access_as_shared", "b").unwrap();
    let bp = port(&mut c, &b, &n.std.id).unwrap();
    let before: Vec<RbacPolicy> = c.rbac_policies().cloned().collect();
    let revision = c.network(&n.std.id).unwrap().std.revision_number;

    let in_use = |r: Result<_, ModelError>| matches!(r, Err(ModelError::RbacPolicyInUse { .. }));
    assert!(in_use(unshare(&mut c, &a, &to_b.std.id)));
    assert!(in_use(retarget(&mut c, &a, &to_b.std.id, "c").map(|_| ())));
    // Refused: the policy, its target and the network's revision are as they were.
    assert_eq!(c.rbac_policies().cloned().collect::<Vec<_>>(), before);
    assert_eq!(c.network(&n.std.id).unwrap().std.revision_number, revision);
    assert!(c.can_see_network(&b, &n));
    // A wildcard covers b: then its own policy may go, but not the wildcard.
    let all = share(&mut c, &admin(), object, "access_as_shared", "*").unwrap();
    unshare(&mut c, &a, &to_b.std.id).unwrap();
    assert!(in_use(unshare(&mut c, &admin(), &all.std.id)));
    assert!(matches!(
        c.apply(|c| c.update_network(
            &admin(),
            &n.std.id,
            NetworkUpdate {
                shared: Some(false),
                ..Default::default()
            },
            0
        )),
        Err(ModelError::InvalidSharedSetting { .. })
    ));
    assert!(c.shared_with(ObjectType::Network, &n.std.id, "q"));
    // Once b's port is gone, nothing depends on it.
    c.apply(|c| c.delete_port(&b, &bp.std.id, 0)).unwrap();
    unshare(&mut c, &admin(), &all.std.id).unwrap();
    // A policy sharing with the owner itself is never in use.
    let own = share(&mut c, &a, object, "access_as_shared", "a").unwrap();
    port(&mut c, &a, &n.std.id).unwrap();
    unshare(&mut c, &a, &own.std.id).unwrap();
}

#[test]
fn shared_security_groups_and_pools_are_usable_by_their_targets_only() {
    let mut c = cloud();
    let (a, b, x) = (tenant("a"), tenant("b"), tenant("x"));
    let g = c
        .apply(|c| c.create_security_group(&a, SecurityGroupCreate::default(), 0))
        .unwrap()
        .0;
    let with_group = |who: &Caller, network: &str| PortCreate {
        network_id: network.into(),
        project_id: Some(who.project_id.clone()),
        attributes: PortUpdate {
            security_groups: Some(vec![g.std.id.clone()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let nb = net(&mut c, &b);
    subnet(&mut c, &b, &nb.std.id, "10.1.0.0/24");
    let req = with_group(&b, &nb.std.id);
    assert!(matches!(
        c.apply(|c| c.create_port(&b, req, 0)),
        Err(ModelError::NotFound {
            kind: Kind::SecurityGroup,
            ..
        })
    ));
    let policy = share(
        &mut c,
        &a,
        (ObjectType::SecurityGroup, &g.std.id),
        "access_as_shared",
        "b",
    )
    .unwrap();
    assert!(c.visible(&b, Kind::SecurityGroup, &g.std.id).is_ok());
    assert!(c.visible(&x, Kind::SecurityGroup, &g.std.id).is_err());
    let req = with_group(&b, &nb.std.id);
    let bp = c.apply(|c| c.create_port(&b, req, 0)).unwrap().0;
    // b names it as a remote group in its own rules.
    let bg = c
        .apply(|c| c.create_security_group(&b, SecurityGroupCreate::default(), 0))
        .unwrap()
        .0;
    let rule = RuleCreate {
        security_group_id: bg.std.id.clone(),
        direction: Some("ingress".into()),
        remote_group_id: Some(g.std.id.clone()),
        ..Default::default()
    };
    c.apply(|c| c.create_security_group_rule(&b, rule, 0))
        .unwrap();
    assert!(matches!(
        unshare(&mut c, &a, &policy.std.id),
        Err(ModelError::RbacPolicyInUse { .. })
    ));
    c.apply(|c| c.delete_port(&b, &bp.std.id, 0)).unwrap();
    unshare(&mut c, &a, &policy.std.id).unwrap();
    assert!(c.visible(&b, Kind::SecurityGroup, &g.std.id).is_err());

    // A pool: b allocates from it once shared, and keeps it while it does.
    let pool = c
        .apply(|c| {
            let req = SubnetPoolCreate {
                prefixes: vec!["10.50.0.0/16".parse().unwrap()],
                default_prefixlen: Some(24),
                ..Default::default()
            };
            c.create_subnet_pool(&a, req, 0)
        })
        .unwrap()
        .0;
    let from_pool = SubnetCreate {
        network_id: nb.std.id.clone(),
        ip_version: 4,
        subnetpool_id: Some(pool.std.id.clone()),
        ..Default::default()
    };
    let other = net(&mut c, &b);
    let from_pool = SubnetCreate {
        network_id: other.std.id.clone(),
        ..from_pool
    };
    let req = from_pool.clone();
    assert!(matches!(
        c.apply(|c| c.create_subnet(&b, req, 0)),
        Err(ModelError::NotFound {
            kind: Kind::SubnetPool,
            ..
        })
    ));
    let policy = share(
        &mut c,
        &a,
        (ObjectType::SubnetPool, &pool.std.id),
        "access_as_shared",
        "b",
    )
    .unwrap();
    assert!(c.shared_with(ObjectType::SubnetPool, &pool.std.id, "b"));
    let req = from_pool.clone();
    let s = c.apply(|c| c.create_subnet(&b, req, 0)).unwrap().0;
    assert_eq!(s.cidr.to_string(), "10.50.0.0/24");
    assert!(matches!(
        retarget(&mut c, &a, &policy.std.id, "x"),
        Err(ModelError::RbacPolicyInUse { .. })
    ));
    c.apply(|c| c.delete_subnet(&b, &s.std.id, 0)).unwrap();
    let moved = retarget(&mut c, &a, &policy.std.id, "x").unwrap();
    assert_eq!(moved.target_project, "x");
    assert!(c.visible(&b, Kind::SubnetPool, &pool.std.id).is_err());
    assert!(c.visible(&x, Kind::SubnetPool, &pool.std.id).is_ok());
}

#[test]
fn access_as_external_makes_a_network_external_for_its_target() {
    let mut c = cloud();
    let (b, x) = (tenant("b"), tenant("x"));
    let n = net(&mut c, &admin());
    subnet(&mut c, &admin(), &n.std.id, "203.0.113.0/24");
    assert!(!c.is_external(&n.std.id));
    let object = (ObjectType::Network, n.std.id.as_str());
    let to_b = share(&mut c, &admin(), object, "access_as_external", "b").unwrap();
    assert!(c.is_external(&n.std.id));
    assert!(c.can_see_network(&b, &n));
    assert!(!c.can_see_network(&x, &n));
    // External is not shared: b gets gateways and floating IPs, not ports.
    assert!(!c.shared_with(ObjectType::Network, &n.std.id, "b"));
    assert!(matches!(
        port(&mut c, &b, &n.std.id),
        Err(ModelError::Forbidden(_))
    ));
    let gateway = |network: &str| RouterCreate {
        attributes: RouterUpdate {
            gateway: Some(Some(GatewayRequest {
                network_id: network.into(),
                ..Default::default()
            })),
            ..Default::default()
        },
        ..Default::default()
    };
    let req = gateway(&n.std.id);
    assert!(matches!(
        c.apply(|c| c.create_router(&x, req, 0)),
        Err(ModelError::NotFound {
            kind: Kind::Network,
            ..
        })
    ));
    let req = gateway(&n.std.id);
    let r = c.apply(|c| c.create_router(&b, req, 0)).unwrap().0;
    assert!(matches!(
        unshare(&mut c, &admin(), &to_b.std.id),
        Err(ModelError::RbacPolicyInUse { .. })
    ));
    assert!(c.is_external(&n.std.id));
    c.apply(|c| c.delete_router(&b, &r.std.id)).unwrap();
    // Its last external policy gone, the network is no longer external.
    unshare(&mut c, &admin(), &to_b.std.id).unwrap();
    assert!(!c.is_external(&n.std.id));
    assert!(!c.can_see_network(&b, &n));
}

#[test]
fn networks_and_pools_stored_shared_before_policies_stay_shared() {
    let mut c = cloud();
    let a = tenant("a");
    let n = net(&mut c, &a);
    let pool = c
        .apply(|c| {
            let req = SubnetPoolCreate {
                prefixes: vec!["10.60.0.0/16".parse().unwrap()],
                ..Default::default()
            };
            c.create_subnet_pool(&a, req, 0)
        })
        .unwrap()
        .0;
    // Records as an older vnet wrote them: the flags, no policies.
    let old_network = serde_json::to_value(Resource::Network(n.clone())).unwrap();
    let mut old_network = old_network;
    old_network["Network"]["shared"] = true.into();
    old_network["Network"]["external"] = true.into();
    let mut old_pool = serde_json::to_value(Resource::SubnetPool(pool.clone())).unwrap();
    old_pool["SubnetPool"]["shared"] = true.into();
    let stored: Vec<Resource> = [old_network, old_pool]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let mut c = Cloud::load(CloudConfig::default(), stored);
    let (_, changes) = c.apply(|c| c.upgrade(5)).unwrap();
    // Two network policies, one pool policy, both records rewritten.
    assert_eq!(changes.len(), 5);
    assert!(c.shared_with(ObjectType::Network, &n.std.id, "z"));
    assert!(c.is_external(&n.std.id));
    assert!(c.shared_with(ObjectType::SubnetPool, &pool.std.id, "z"));
    let rewritten = changes
        .iter()
        .find(|ch| ch.key == Kind::Network.key(&n.std.id))
        .unwrap();
    let json = serde_json::to_value(rewritten.value.as_ref().unwrap()).unwrap();
    assert!(json["Network"].get("shared").is_none(), "{json}");
    // Once is enough: a second pass changes nothing.
    let (_, again) = c.apply(|c| c.upgrade(6)).unwrap();
    assert!(again.is_empty());
}

// === address groups ===

fn address_group(c: &mut Cloud, who: &Caller, addresses: &[&str]) -> crate::AddressGroup {
    let req = crate::AddressGroupCreate {
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        ..Default::default()
    };
    c.apply(|c| c.create_address_group(who, req, 0)).unwrap().0
}

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn address_groups_normalise_and_add_or_remove_all_or_nothing() {
    let mut c = cloud();
    let a = tenant("a");
    let ag = address_group(&mut c, &a, &["10.0.0.1/32", "10.1.0.5/24", "10.1.0.0/24"]);
    let id = ag.std.id.clone();
    let shown: Vec<String> = ag.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.1/32", "10.1.0.0/24"]);
    assert_eq!(ag.std.revision_number, 0);

    // One already there: nothing is added, and Neutron's message lists it.
    match c.apply(|c| c.add_addresses(&a, &id, &nets(&["fd00::1/128", "10.1.0.9/24"]), 1)) {
        Err(e @ ModelError::AddressesAlreadyExist { .. }) => assert_eq!(
            e.to_string(),
            format!("Addresses ['10.1.0.0/24'] already exist in the address group {id}.")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.address_group(&id).unwrap().addresses.len(), 2);
    let (added, changes) = c
        .apply(|c| c.add_addresses(&a, &id, &nets(&["fd00::1/128"]), 1))
        .unwrap();
    assert_eq!(added.addresses.len(), 3);
    assert_eq!(added.std.revision_number, 1);
    assert_eq!(changes.len(), 1, "only the group is written");

    match c.apply(|c| c.remove_addresses(&a, &id, &nets(&["10.0.0.1/32", "10.9.0.0/16"]), 2)) {
        Err(e @ ModelError::AddressesNotFound { .. }) => assert_eq!(
            e.to_string(),
            format!("Addresses ['10.9.0.0/16'] not found in the address group {id}.")
        ),
        other => panic!("{other:?}"),
    }
    let removed = c
        .apply(|c| c.remove_addresses(&a, &id, &nets(&["10.0.0.1/32", "10.1.0.7/24"]), 2))
        .unwrap()
        .0;
    let shown: Vec<String> = removed.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["fd00::1/128"]);
}

#[test]
fn a_tenant_never_sees_or_uses_another_projects_address_group() {
    let mut c = cloud();
    let (a, b) = (tenant("a"), tenant("b"));
    let ag = address_group(&mut c, &a, &["10.0.0.0/8"]);
    let id = ag.std.id.clone();
    assert!(matches!(
        c.visible(&b, Kind::AddressGroup, &id),
        Err(ModelError::NotFound { .. })
    ));
    assert!(c.visible(&admin(), Kind::AddressGroup, &id).is_ok());
    for result in [
        c.apply(|c| c.add_addresses(&b, &id, &nets(&["192.0.2.0/24"]), 1))
            .map(|_| ()),
        c.apply(|c| c.delete_address_group(&b, &id)).map(|_| ()),
    ] {
        assert!(matches!(
            result,
            Err(ModelError::NotFound {
                kind: Kind::AddressGroup,
                ..
            })
        ));
    }
    // b's rule may not name it either.
    let g = c
        .apply(|c| c.create_security_group(&b, SecurityGroupCreate::default(), 0))
        .unwrap()
        .0;
    let req = RuleCreate {
        security_group_id: g.std.id.clone(),
        direction: Some("ingress".into()),
        remote_address_group_id: Some(id.clone()),
        ..Default::default()
    };
    assert!(matches!(
        c.apply(|c| c.create_security_group_rule(&b, req, 0)),
        Err(ModelError::NotFound {
            kind: Kind::AddressGroup,
            ..
        })
    ));
    assert_eq!(c.address_group(&id).unwrap().addresses.len(), 1);
}

#[test]
fn an_address_group_named_by_a_rule_is_in_use_and_part_of_its_signature() {
    let mut c = cloud();
    let a = tenant("a");
    let ag = address_group(&mut c, &a, &["10.0.0.0/8"]);
    let other = address_group(&mut c, &a, &["10.0.0.0/8"]);
    let g = c
        .apply(|c| c.create_security_group(&a, SecurityGroupCreate::default(), 0))
        .unwrap()
        .0;
    let rule = |ag: &str| RuleCreate {
        security_group_id: g.std.id.clone(),
        direction: Some("ingress".into()),
        protocol: Some("tcp".into()),
        port_range_min: Some(22),
        port_range_max: Some(22),
        remote_address_group_id: Some(ag.to_owned()),
        ..Default::default()
    };
    let r = c
        .apply(|c| c.create_security_group_rule(&a, rule(&ag.std.id), 0))
        .unwrap()
        .0;
    assert_eq!(
        r.remote_address_group_id.as_deref(),
        Some(ag.std.id.as_str())
    );
    // The same rule is a duplicate; naming another group (or none) is not.
    assert!(matches!(
        c.apply(|c| c.create_security_group_rule(&a, rule(&ag.std.id), 0)),
        Err(ModelError::SecurityGroupRuleExists { .. })
    ));
    assert!(
        c.apply(|c| c.create_security_group_rule(&a, rule(&other.std.id), 0))
            .is_ok()
    );
    let mut any = rule(&ag.std.id);
    any.remote_address_group_id = None;
    assert!(
        c.apply(|c| c.create_security_group_rule(&a, any, 0))
            .is_ok()
    );
    // With a prefix too: Neutron's error.
    let mut both = rule(&ag.std.id);
    both.remote_ip_prefix = Some("10.0.0.0/8".into());
    assert!(matches!(
        c.apply(|c| c.create_security_group_rule(&a, both, 0)),
        Err(ModelError::SecurityGroupMultipleRemoteEntites)
    ));

    assert!(matches!(
        c.apply(|c| c.delete_address_group(&a, &ag.std.id)),
        Err(ModelError::AddressGroupInUse { .. })
    ));
    c.apply(|c| c.delete_security_group_rule(&a, &r.std.id, 1))
        .unwrap();
    c.apply(|c| c.delete_address_group(&a, &ag.std.id)).unwrap();
    assert!(c.address_group(&ag.std.id).is_none());
    // Deleting the security group takes its rules, freeing the other one.
    c.apply(|c| c.delete_security_group(&a, &g.std.id)).unwrap();
    c.apply(|c| c.delete_address_group(&a, &other.std.id))
        .unwrap();
}

#[test]
fn address_groups_and_their_rules_survive_a_reload() {
    let mut c = cloud();
    let a = tenant("a");
    let ag = address_group(&mut c, &a, &["10.0.0.0/8"]);
    let g = c
        .apply(|c| c.create_security_group(&a, SecurityGroupCreate::default(), 0))
        .unwrap()
        .0;
    let req = RuleCreate {
        security_group_id: g.std.id.clone(),
        direction: Some("ingress".into()),
        remote_address_group_id: Some(ag.std.id.clone()),
        ..Default::default()
    };
    c.apply(|c| c.create_security_group_rule(&a, req, 0))
        .unwrap();
    let all: Vec<Resource> = Kind::ALL
        .iter()
        .flat_map(|k| {
            with_kind!(*k, R => R::table(&c)
                .values()
                .cloned()
                .map(R::into_resource)
                .collect::<Vec<_>>())
        })
        .collect();
    let mut reloaded = Cloud::load(CloudConfig::default(), all);
    assert_eq!(reloaded.address_group(&ag.std.id), Some(&ag));
    assert!(matches!(
        reloaded.apply(|c| c.delete_address_group(&a, &ag.std.id)),
        Err(ModelError::AddressGroupInUse { .. })
    ));
}

/// As Neutron: a router interface on an IPv6 subnet with router
/// advertisements takes the subnet's gateway (by default the subnet-router
/// anycast address, or the one given), not an EUI-64 address.
#[test]
fn router_interfaces_on_slaac_subnets_take_the_gateway() {
    let mut w = l3();
    let (a, r) = (w.a.clone(), w.router.std.id.clone());
    let network_id = w.inside.network_id.clone();
    for (cidr, gateway, want) in [
        ("fd00:20::/64", None, "fd00:20::"),
        ("fd00:21::/64", Some("fd00:21::1"), "fd00:21::1"),
    ] {
        let v6 =
            w.c.apply(|c| {
                c.create_subnet(
                    &a,
                    SubnetCreate {
                        network_id: network_id.clone(),
                        ip_version: 6,
                        cidr: Some(cidr.into()),
                        gateway_ip: gateway.map(|g| Some(g.parse().unwrap())),
                        ipv6_ra_mode: Some(crate::Ipv6Mode::Slaac),
                        ipv6_address_mode: Some(crate::Ipv6Mode::Slaac),
                        ..Default::default()
                    },
                    0,
                )
            })
            .unwrap()
            .0;
        assert_eq!(v6.gateway_ip, Some(want.parse().unwrap()));
        let info =
            w.c.apply(|c| c.add_router_interface(&a, &r, by_subnet(&v6), 0))
                .unwrap()
                .0;
        let port = w.c.port(&info.port_id).unwrap();
        assert_eq!(port.fixed_ips.len(), 1, "{port:?}");
        assert_eq!(
            port.fixed_ips[0].ip_address,
            want.parse::<IpAddr>().unwrap()
        );
    }
}

/// A replica that replays the writer's changes (`Cloud::replicate`, in
/// commit order) holds the same indexes: its facets agree with its tables,
/// its quota usage and address index are the writer's, and when it writes
/// next it refuses what the writer would and hands out no address twice.
#[test]
fn a_replica_replaying_the_changes_validates_as_the_writer() {
    let mut writer = Cloud::new(CloudConfig {
        seed: 7,
        ..Default::default()
    });
    let mut replica = Cloud::new(CloudConfig {
        seed: 8,
        ..Default::default()
    });
    let replay = |replica: &mut Cloud, changes: Vec<Change>| {
        for change in changes {
            let (kind, id) = Kind::of_key(&change.key).expect("a record's key");
            replica.replicate(kind, id, change.value);
        }
    };
    replay(
        &mut replica,
        writer
            .apply(|c| c.seed_default_rules(0))
            .map(|(_, ch)| ch)
            .unwrap(),
    );
    let a = tenant("a");
    let (n, changes) = writer
        .apply(|c| c.create_network(&a, NetworkCreate::default(), 0))
        .unwrap();
    replay(&mut replica, changes);
    let (s, changes) = writer
        .apply(|c| {
            c.create_subnet(
                &a,
                SubnetCreate {
                    network_id: n.std.id.clone(),
                    ip_version: 4,
                    cidr: Some("10.0.0.0/29".into()),
                    ..Default::default()
                },
                0,
            )
        })
        .unwrap();
    replay(&mut replica, changes);
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (p, changes) = writer
            .apply(|c| {
                c.create_port(
                    &a,
                    PortCreate {
                        network_id: n.std.id.clone(),
                        ..Default::default()
                    },
                    0,
                )
            })
            .unwrap();
        replay(&mut replica, changes);
        ports.push(p);
    }
    let (_, changes) = writer
        .apply(|c| c.delete_port(&a, &ports[0].std.id, 0))
        .unwrap();
    replay(&mut replica, changes);

    assert_eq!(replica.facets_agree(), Ok(()));
    assert_eq!(replica.usage, writer.usage);
    assert_eq!(
        replica.subnet_ips.get(&s.std.id),
        writer.subnet_ips.get(&s.std.id)
    );
    let taken = ports[1].fixed_ips[0].ip_address;
    let want = PortCreate {
        network_id: n.std.id.clone(),
        attributes: PortUpdate {
            fixed_ips: Some(vec![FixedIpRequest {
                subnet_id: Some(s.std.id.clone()),
                ip_address: Some(taken),
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        replica.apply(|c| c.create_port(&a, want, 0)),
        Err(ModelError::IpAddressAlreadyAllocated { .. })
    ));
    // The /29 has five addresses, two held: three more, all new, then none.
    let held: BTreeSet<_> = ports[1..]
        .iter()
        .map(|p| p.fixed_ips[0].ip_address)
        .collect();
    for _ in 0..3 {
        let p = port(&mut replica, &a, &n.std.id).unwrap();
        assert!(!held.contains(&p.fixed_ips[0].ip_address), "{p:?}");
    }
    assert!(matches!(
        port(&mut replica, &a, &n.std.id),
        Err(ModelError::IpAddressGenerationFailure { .. })
    ));
}
