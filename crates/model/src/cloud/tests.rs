use super::*;

fn cloud() -> Cloud {
    Cloud::new(CloudConfig {
        seed: 7,
        ..Default::default()
    })
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
                cidr: cidr.into(),
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
    c.apply(|c| c.delete_port(&a, &p.std.id)).unwrap();
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
                    cidr: "fd00:20:30::/64".into(),
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
                    cidr: "10.0.0.128/25".into(),
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
