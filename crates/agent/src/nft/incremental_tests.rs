#![allow(clippy::unwrap_used)]

//! The incremental ruleset, its touched plan and view against the full
//! path's, after every step of random sequences of changes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use compiler::protocol::{
    AllowedSource, FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, PortSecuritySpec,
    RuleDirection, RuleEthertype, RuleRemote, RuleSpec, SecurityGroupSpec,
};
use ipnet::IpNet;
use proptest::prelude::*;

use super::super::{ObservedNft, desired, plan, plan_touched};
use super::*;

/// One change to a host's state, on a few ids so that they collide.
#[derive(Clone, Debug)]
enum Step {
    Port {
        slot: u8,
        network: u8,
        device: u8,
        enabled: bool,
        groups: Vec<u8>,
    },
    RemovePort(u8),
    Group {
        group: u8,
        stateful: bool,
        rules: Vec<(bool, bool, u8, u8)>,
    },
    RemoveGroup(u8),
    Member {
        address_group: bool,
        id: u8,
        net: IpNet,
        join: bool,
    },
    RemoveMembers {
        address_group: bool,
        id: u8,
    },
}

/// Small prefixes of both versions, nested often.
fn prefix() -> impl Strategy<Value = IpNet> {
    (
        any::<bool>(),
        0u8..2,
        0u8..3,
        prop::sample::select(vec![8u8, 24, 31, 32]),
    )
        .prop_map(|(v6, a, b, len)| {
            if v6 {
                let ip: IpAddr = format!("fd00::{a}:{b}").parse().unwrap();
                IpNet::new(ip, len + 96).unwrap().trunc()
            } else {
                let ip: IpAddr = format!("10.0.{a}.{b}").parse().unwrap();
                IpNet::new(ip, len).unwrap().trunc()
            }
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0u8..5, 0u8..3, 0u8..5, any::<bool>(), prop::collection::vec(0u8..3, 0..3)).prop_map(
            |(slot, network, device, enabled, groups)| Step::Port {
                slot,
                network,
                device,
                enabled,
                groups
            }
        ),
        1 => (0u8..5).prop_map(Step::RemovePort),
        2 => (
            0u8..3,
            any::<bool>(),
            prop::collection::vec((any::<bool>(), any::<bool>(), 0u8..4, 0u8..3), 0..4)
        )
            .prop_map(|(group, stateful, rules)| Step::Group {
                group,
                stateful,
                rules
            }),
        1 => (0u8..3).prop_map(Step::RemoveGroup),
        6 => (any::<bool>(), 0u8..3, prefix(), any::<bool>()).prop_map(
            |(address_group, id, net, join)| Step::Member {
                address_group,
                id,
                net,
                join
            }
        ),
        1 => (any::<bool>(), 0u8..3).prop_map(|(address_group, id)| Step::RemoveMembers {
            address_group,
            id
        }),
    ]
}

fn network(n: u8) -> NetworkSpec {
    NetworkSpec {
        vni: 100 + u32::from(n),
        mtu: 1450,
        // The third network is flat.
        physical_network: (n == 2).then(|| "ext".into()),
        subnets: BTreeMap::new(),
        local_ports: BTreeMap::new(),
        remote_ports: BTreeMap::new(),
    }
}

fn apply(state: &mut HostState, step: &Step) {
    match step.clone() {
        Step::Port {
            slot,
            network: n,
            device,
            enabled,
            groups,
        } => {
            let id = format!("p{slot}");
            for net in state.networks.values_mut() {
                net.local_ports.remove(&id);
            }
            let mac: model::MacAddr = format!("fa:16:3e:00:00:{slot:02x}").parse().unwrap();
            let ip: IpAddr = format!("10.0.0.{}", 10 + slot).parse().unwrap();
            state
                .networks
                .entry(format!("n{n}"))
                .or_insert_with(|| network(n))
                .local_ports
                .insert(
                    id.clone(),
                    LocalPortSpec {
                        mac,
                        fixed_ips: vec![FixedIpSpec {
                            subnet_id: "s".into(),
                            ip_address: ip,
                        }],
                        // Two ports may name one device.
                        device: format!("tap{device}"),
                        admin_state_up: true,
                        dhcpv4_options: vec![],
                        dhcpv6_options: vec![],
                    },
                );
            let mut groups: Vec<String> = groups.iter().map(|g| format!("g{g}")).collect();
            groups.sort();
            groups.dedup();
            state.port_security.insert(
                id,
                PortSecuritySpec {
                    enabled,
                    security_groups: groups,
                    allowed_sources: vec![AllowedSource {
                        mac,
                        ip: IpNet::from(ip),
                    }],
                },
            );
        }
        Step::RemovePort(slot) => {
            let id = format!("p{slot}");
            for net in state.networks.values_mut() {
                net.local_ports.remove(&id);
            }
            state.networks.retain(|_, net| !net.local_ports.is_empty());
            state.port_security.remove(&id);
        }
        Step::Group {
            group,
            stateful,
            rules,
        } => {
            let rules = rules
                .iter()
                .enumerate()
                .map(|(i, (ingress, v6, remote, target))| RuleSpec {
                    id: format!("r{i}"),
                    direction: if *ingress {
                        RuleDirection::Ingress
                    } else {
                        RuleDirection::Egress
                    },
                    ethertype: if *v6 {
                        RuleEthertype::IPv6
                    } else {
                        RuleEthertype::IPv4
                    },
                    protocol: Some(6),
                    ports: Some((80, 80 + u16::from(*target))),
                    icmp: None,
                    remote: match remote {
                        0 => RuleRemote::Any,
                        1 => RuleRemote::Prefix(if *v6 {
                            format!("fd00::{target}:0/112").parse().unwrap()
                        } else {
                            format!("10.1.{target}.0/24").parse().unwrap()
                        }),
                        2 => RuleRemote::Group(format!("g{target}")),
                        _ => RuleRemote::AddressGroup(format!("a{target}")),
                    },
                })
                .collect();
            state
                .security_groups
                .insert(format!("g{group}"), SecurityGroupSpec { stateful, rules });
        }
        Step::RemoveGroup(group) => {
            state.security_groups.remove(&format!("g{group}"));
        }
        Step::Member {
            address_group,
            id,
            net,
            join,
        } => {
            let sets = if address_group {
                &mut state.address_groups
            } else {
                &mut state.remote_groups
            };
            let key = format!("{}{id}", if address_group { "a" } else { "g" });
            let members = sets.entry(key).or_default();
            if join {
                members.insert(net);
            } else {
                members.remove(&net);
            }
        }
        Step::RemoveMembers { address_group, id } => {
            if address_group {
                state.address_groups.remove(&format!("a{id}"));
            } else {
                state.remote_groups.remove(&format!("g{id}"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every step: the kept ruleset is the full path's, the plan of
    /// what it touched is the whole plan, and the view it leaves is the
    /// full path's view.
    #[test]
    fn the_incremental_path_never_drifts_from_the_full_one(
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let config = NftConfig {
            physical_networks: [("ext".to_string(), "eth9".to_string())].into(),
            ..NftConfig::default()
        };
        let mut state = HostState::default();
        let mut kept = IncrementalRuleset::new(&state, &config);
        let mut view = ObservedNft::from_ruleset(kept.ruleset());
        prop_assert_eq!(kept.ruleset(), &desired(&state, &config));
        for step in &steps {
            apply(&mut state, step);
            let touched = kept.update(&state, &config);
            let want = desired(&state, &config);
            prop_assert_eq!(kept.ruleset(), &want, "after {:?}", step);
            let whole = plan(&want, &view);
            let tx = plan_touched(kept.ruleset(), &view, &touched);
            prop_assert_eq!(&tx, &whole, "after {:?}", step);
            view.apply_touched(kept.ruleset(), &touched, &tx);
            prop_assert_eq!(&view, &ObservedNft::from_ruleset(&want), "after {:?}", step);
        }
    }
}
