#![allow(clippy::unwrap_used)]

//! The incremental ruleset, full and hinted, its touched plan and view
//! against the full path's, after every batch of random sequences of the
//! stream's changes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use compiler::protocol::{
    AllowedSource, Change, FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, PortSecuritySpec,
    RemotePortSpec, RuleDirection, RuleEthertype, RuleRemote, RuleSpec, SecurityGroupSpec,
};
use ipnet::IpNet;
use proptest::prelude::*;

use super::super::ruleset::natural_index;
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
    /// A port's security alone: set (enabled or not), or removed.
    Security {
        slot: u8,
        enabled: Option<bool>,
        groups: Vec<u8>,
    },
    Group {
        group: u8,
        stateful: bool,
        rules: Vec<(bool, bool, u8, u8)>,
    },
    RemoveRule {
        group: u8,
        rule: u8,
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
    RemotePort {
        network: u8,
        slot: u8,
    },
    /// A network the host has changed in place: another VNI (0: its own),
    /// or flat turned VXLAN and back, its ports staying.
    Reshape {
        network: u8,
        vni: u8,
        flat: bool,
    },
    /// A network removed with its ports still on it (they go unnamed).
    DropNetwork(u8),
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
        3 => (0u8..6, 0u8..3, 0u8..9, any::<bool>(), prop::collection::vec(0u8..3, 0..3)).prop_map(
            |(slot, network, device, enabled, groups)| Step::Port {
                slot,
                network,
                device,
                enabled,
                groups
            }
        ),
        1 => (0u8..5).prop_map(Step::RemovePort),
        2 => (0u8..6, prop::option::of(any::<bool>()), prop::collection::vec(0u8..3, 0..3))
            .prop_map(|(slot, enabled, groups)| Step::Security {
                slot,
                enabled,
                groups
            }),
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
        1 => (0u8..3, 0u8..4).prop_map(|(group, rule)| Step::RemoveRule { group, rule }),
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
        1 => (0u8..3, 0u8..4).prop_map(|(network, slot)| Step::RemotePort { network, slot }),
        1 => (0u8..3, 0u8..3, any::<bool>())
            .prop_map(|(network, vni, flat)| Step::Reshape { network, vni, flat }),
        1 => (0u8..3).prop_map(Step::DropNetwork),
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

/// Devices of the steps' ports (names that once collided in the mark,
/// when it held ports' indexes; kept, they cost nothing).
const DEVICES: [&str; 9] = [
    "tap0",
    "tap1",
    "tap76144",
    "tap89809",
    "tap190462",
    "tap87422",
    "tap163613",
    "tap66546",
    "tap99970",
];

/// The steps' security groups: ids whose stateful one-group profiles
/// collide in the mark (all three on 18128), so that a profile coming or
/// going may move another's index.
const GROUPS: [&str; 3] = ["g187", "g1592", "g1605"];

fn group_id(g: u8) -> String {
    GROUPS[usize::from(g) % GROUPS.len()].to_string()
}

/// A port's MAC and IP address.
fn address(slot: u8) -> (model::MacAddr, IpAddr) {
    let mac = format!("fa:16:3e:00:00:{slot:02x}").parse().unwrap();
    (mac, format!("10.0.0.{}", 10 + slot).parse().unwrap())
}

fn security(slot: u8, enabled: bool, groups: &[u8]) -> PortSecuritySpec {
    let (mac, ip) = address(slot);
    let mut groups: Vec<String> = groups.iter().map(|g| group_id(*g)).collect();
    groups.sort();
    groups.dedup();
    PortSecuritySpec {
        enabled,
        security_groups: groups,
        allowed_sources: vec![AllowedSource {
            mac,
            ip: IpNet::from(ip),
        }],
    }
}

/// The stream's changes that make `step` of `state`, as the server sends
/// them.
fn changes(state: &HostState, step: &Step) -> Vec<Change> {
    let holding = |id: &str| -> Vec<String> {
        state
            .networks
            .iter()
            .filter(|(_, net)| net.local_ports.contains_key(id))
            .map(|(n, _)| n.clone())
            .collect()
    };
    match step.clone() {
        Step::Port {
            slot,
            network: n,
            device,
            enabled,
            groups,
        } => {
            let id = format!("p{slot}");
            let network_id = format!("n{n}");
            let mut out: Vec<Change> = holding(&id)
                .into_iter()
                .filter(|held| *held != network_id)
                .map(|held| Change::LocalPortRemove {
                    network_id: held,
                    port_id: id.clone(),
                })
                .collect();
            if !state.networks.contains_key(&network_id) {
                let net = network(n);
                out.push(Change::NetworkUpsert {
                    network_id: network_id.clone(),
                    vni: net.vni,
                    mtu: net.mtu,
                    physical_network: net.physical_network,
                });
            }
            let (mac, ip) = address(slot);
            out.push(Change::LocalPortUpsert {
                network_id,
                port_id: id.clone(),
                spec: LocalPortSpec {
                    mac,
                    fixed_ips: vec![FixedIpSpec {
                        subnet_id: "s".into(),
                        ip_address: ip,
                    }],
                    // Two ports may name one device.
                    device: DEVICES[usize::from(device) % DEVICES.len()].into(),
                    admin_state_up: true,
                    dhcpv4_options: vec![],
                    dhcpv6_options: vec![],
                },
            });
            out.push(Change::PortSecurityUpsert {
                port_id: id,
                spec: security(slot, enabled, &groups),
            });
            out
        }
        Step::Security {
            slot,
            enabled,
            groups,
        } => {
            let port_id = format!("p{slot}");
            vec![match enabled {
                Some(enabled) => Change::PortSecurityUpsert {
                    port_id,
                    spec: security(slot, enabled, &groups),
                },
                None => Change::PortSecurityRemove { port_id },
            }]
        }
        Step::RemovePort(slot) => {
            let id = format!("p{slot}");
            let mut out = vec![];
            for network_id in holding(&id) {
                out.push(Change::LocalPortRemove {
                    network_id: network_id.clone(),
                    port_id: id.clone(),
                });
                // A network leaves the host with its last local port.
                if state.networks[&network_id].local_ports.len() == 1 {
                    out.push(Change::NetworkRemove { network_id });
                }
            }
            out.push(Change::PortSecurityRemove { port_id: id });
            out
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
                        2 => RuleRemote::Group(group_id(*target)),
                        _ => RuleRemote::AddressGroup(format!("a{target}")),
                    },
                })
                .collect();
            vec![Change::SecurityGroupUpsert {
                group_id: group_id(group),
                spec: SecurityGroupSpec { stateful, rules },
            }]
        }
        Step::RemoveRule { group, rule } => vec![Change::SecurityGroupRuleRemove {
            group_id: group_id(group),
            rule_id: format!("r{rule}"),
        }],
        Step::RemoveGroup(group) => vec![Change::SecurityGroupRemove {
            group_id: group_id(group),
        }],
        Step::Member {
            address_group,
            id,
            net,
            join,
        } => {
            let key = format!("{}{id}", if address_group { "a" } else { "g" });
            let sets = if address_group {
                &state.address_groups
            } else {
                &state.remote_groups
            };
            let change = match (address_group, sets.contains_key(&key), join) {
                (false, true, true) => Change::RemoteGroupMemberAdd {
                    group_id: key,
                    member: net,
                },
                (false, true, false) => Change::RemoteGroupMemberRemove {
                    group_id: key,
                    member: net,
                },
                (true, true, true) => Change::AddressGroupAddressAdd {
                    address_group_id: key,
                    address: net,
                },
                (true, true, false) => Change::AddressGroupAddressRemove {
                    address_group_id: key,
                    address: net,
                },
                // A set the host does not hold yet comes whole.
                (false, false, _) => Change::RemoteGroupUpsert {
                    group_id: key,
                    members: [net].into_iter().filter(|_| join).collect(),
                },
                (true, false, _) => Change::AddressGroupUpsert {
                    address_group_id: key,
                    addresses: [net].into_iter().filter(|_| join).collect(),
                },
            };
            vec![change]
        }
        Step::RemoveMembers { address_group, id } => vec![if address_group {
            Change::AddressGroupRemove {
                address_group_id: format!("a{id}"),
            }
        } else {
            Change::RemoteGroupRemove {
                group_id: group_id(id),
            }
        }],
        // What makes no part of nftables: another host's port.
        Step::Reshape { network, vni, flat } => {
            let network_id = format!("n{network}");
            if !state.networks.contains_key(&network_id) {
                return vec![];
            }
            // VNIs shared between networks on purpose: one bridge, one zone.
            let vni = 100 + u32::from((network + vni) % 3);
            vec![Change::NetworkUpsert {
                network_id,
                vni,
                mtu: 1450,
                physical_network: flat.then(|| "ext".into()),
            }]
        }
        Step::DropNetwork(network) => vec![Change::NetworkRemove {
            network_id: format!("n{network}"),
        }],
        Step::RemotePort { network: n, slot } => vec![Change::RemotePortUpsert {
            network_id: format!("n{n}"),
            port_id: format!("r{slot}"),
            spec: RemotePortSpec {
                mac: format!("fa:16:3e:00:01:{slot:02x}").parse().unwrap(),
                ips: vec![format!("10.0.1.{slot}").parse().unwrap()],
                vtep: "192.0.2.9".parse().unwrap(),
            },
        }],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every batch of changes, on the full path (every piece
    /// compared) and on the hinted one (the pieces the batch's hints
    /// name): the kept ruleset is [`desired`]'s, both touched the same
    /// pieces, the plan of what was touched is the whole plan, and the
    /// view it leaves is the full path's view.
    #[test]
    fn the_incremental_paths_never_drift_from_the_full_one(
        batches in prop::collection::vec(prop::collection::vec(step(), 1..4), 1..40),
    ) {
        let config = NftConfig {
            physical_networks: [("ext".to_string(), "eth9".to_string())].into(),
            ..NftConfig::default()
        };
        let mut state = HostState::default();
        let mut kept = IncrementalRuleset::new(&state, &config);
        let mut hinted = kept.clone();
        let mut view = ObservedNft::from_ruleset(kept.ruleset());
        prop_assert_eq!(kept.ruleset(), &desired(&state, &config));
        for batch in &batches {
            let mut hints = Hints::default();
            for step in batch {
                for change in changes(&state, step) {
                    hints.note(&change);
                    state.apply(change);
                }
            }
            let touched = kept.update(&state, &config);
            let want = desired(&state, &config);
            prop_assert_eq!(kept.ruleset(), &want, "after {:?}", batch);
            let by_hints = hinted.update_hinted(&state, &config, &hints);
            prop_assert_eq!(hinted.ruleset(), &want, "hinted, after {:?}", batch);
            prop_assert_eq!(&by_hints, &touched, "hinted, after {:?}", batch);
            let whole = plan(&want, &view);
            let tx = plan_touched(kept.ruleset(), &view, &touched);
            prop_assert_eq!(&tx, &whole, "after {:?}", batch);
            view.apply_touched(kept.ruleset(), &touched, &tx);
            prop_assert_eq!(&view, &ObservedNft::from_ruleset(&want), "after {:?}", batch);
        }
    }
}

#[test]
fn the_colliding_groups_collide() {
    let own: Vec<u16> = GROUPS
        .iter()
        .map(|g| {
            let profile = Profile {
                stateful: true,
                groups: vec![g.to_string()],
            };
            natural_index(&profile.name())
        })
        .collect();
    assert_eq!(own, [18128; 3]);
}
