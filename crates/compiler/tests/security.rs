//! Security groups, port security and remote-group member sets: each rule of
//! the derivation, and the changes one input makes (to exactly whom).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Replay, host, hosts_in, mac, network, port, subnet};
use compiler::Input;
use compiler::protocol::{
    AllowedSource, Change, RuleDirection, RuleEthertype, RuleRemote, RuleSpec,
};
use compiler::spec::{member_addresses, port_security_spec, rule_spec};
use ipnet::IpNet;
use model::{AddressPair, Direction, Ethertype, Port, SecurityGroup, SecurityGroupRule, Standard};

const HOSTS: &[&str] = &["h1", "h2", "h3", "h4"];

/// The security changes one host got, in order (network changes left out).
fn changes_of<'a>(changes: &'a compiler::HostChanges, host: &str) -> Vec<&'a Change> {
    common::changes_of(changes, host)
        .into_iter()
        .filter(|c| {
            !matches!(
                c,
                Change::NetworkUpsert { .. }
                    | Change::NetworkRemove { .. }
                    | Change::SubnetUpsert { .. }
                    | Change::SubnetRemove { .. }
                    | Change::LocalPortUpsert { .. }
                    | Change::LocalPortRemove { .. }
                    | Change::RemotePortUpsert { .. }
                    | Change::RemotePortRemove { .. }
            )
        })
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn group(id: &str, stateful: bool) -> Input {
    Input::SecurityGroup(Box::new(SecurityGroup {
        std: Standard::new(id.into(), "project".into(), 0),
        stateful,
        is_default: false,
    }))
}

fn rule(id: &str, group: &str) -> SecurityGroupRule {
    SecurityGroupRule {
        std: Standard::new(id.into(), "project".into(), 0),
        security_group_id: group.into(),
        direction: Direction::Ingress,
        ethertype: Ethertype::IPv4,
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id: None,
        remote_address_group_id: None,
    }
}

fn remote_rule(id: &str, group: &str, remote: &str) -> Input {
    let mut r = rule(id, group);
    r.remote_group_id = Some(remote.into());
    Input::SecurityGroupRule(Box::new(r))
}

/// A port in `groups`, with one IP on subnet "s".
fn member(id: &str, host: &str, mac_last: u8, ip: &str, groups: &[&str]) -> Port {
    let mut p = port(id, "n", host, mac_last, &[("s", ip)]);
    p.security_groups = groups.iter().map(|g| (*g).to_owned()).collect();
    p
}

fn put(r: &mut Replay, p: &Port) -> compiler::HostChanges {
    r.step(Input::Port(Box::new(p.clone())), HOSTS)
}

/// A cloud with network n, subnet s and four registered hosts.
fn cloud() -> Replay {
    let mut r = Replay::default();
    r.step(Input::Network(Box::new(network("n", 7, 1450))), HOSTS);
    r.step(
        Input::Subnet(Box::new(subnet("s", "n", "10.0.0.0/24"))),
        HOSTS,
    );
    for (i, h) in HOSTS.iter().enumerate() {
        r.step(host(h, &format!("192.0.2.{}", i + 1)), HOSTS);
    }
    r
}

// ---- the derivation, rule by rule -------------------------------------------

#[test]
fn port_security_lists_sorted_unique_sources_and_groups_only_when_enabled() {
    let mut p = port(
        "a",
        "n",
        "h1",
        1,
        &[("s", "10.0.0.9"), ("s6", "fd00::5"), ("s", "10.0.0.9")],
    );
    p.security_groups = vec!["g2".into(), "g1".into(), "g2".into()];
    p.allowed_address_pairs = vec![
        AddressPair {
            ip_address: net("10.1.0.7/24"),
            mac_address: mac(9),
        },
        AddressPair {
            ip_address: net("10.0.0.9/32"),
            mac_address: mac(1),
        },
    ];
    let spec = port_security_spec(&p);
    assert!(spec.enabled);
    assert_eq!(spec.security_groups, ["g1", "g2"]);
    let source = |m: u8, ip: &str| AllowedSource {
        mac: mac(m),
        ip: net(ip),
    };
    assert_eq!(
        spec.allowed_sources,
        [
            source(1, "10.0.0.9/32"),
            source(1, "fd00::5/128"),
            // A pair's prefix is truncated to its network.
            source(9, "10.1.0.0/24"),
        ]
    );
    assert_eq!(
        member_addresses(&p).into_iter().collect::<Vec<_>>(),
        [net("10.0.0.9/32"), net("10.1.0.0/24"), net("fd00::5/128")]
    );

    p.port_security_enabled = false;
    let spec = port_security_spec(&p);
    assert!(!spec.enabled);
    assert!(spec.security_groups.is_empty());
    assert_eq!(spec.allowed_sources.len(), 3, "kept, for the record");
    assert!(member_addresses(&p).is_empty(), "in no member set");
}

fn spec_of(f: impl FnOnce(&mut SecurityGroupRule)) -> RuleSpec {
    let mut r = rule("r", "g");
    f(&mut r);
    rule_spec(&r)
}

#[test]
fn rules_are_normalised() {
    // Any protocol, anyone.
    let any = spec_of(|_| {});
    assert_eq!(
        any,
        RuleSpec {
            id: "r".into(),
            direction: RuleDirection::Ingress,
            ethertype: RuleEthertype::IPv4,
            protocol: None,
            ports: None,
            icmp: None,
            remote: RuleRemote::Any,
        }
    );
    assert_eq!(spec_of(|r| r.protocol = Some("any".into())).protocol, None);
    // Names and numbers.
    for (name, number) in [
        ("tcp", 6),
        ("udp", 17),
        ("6", 6),
        ("sctp", 132),
        ("gre", 47),
    ] {
        assert_eq!(
            spec_of(|r| r.protocol = Some(name.into())).protocol,
            Some(number),
            "{name}"
        );
    }
    // Port ranges for the protocols that have ports; a minimum alone is one port.
    for proto in ["tcp", "udp", "sctp", "dccp", "udplite"] {
        let s = spec_of(|r| {
            r.protocol = Some(proto.into());
            r.port_range_min = Some(22);
            r.port_range_max = Some(80);
        });
        assert_eq!((s.ports, s.icmp), (Some((22, 80)), None), "{proto}");
    }
    let one = spec_of(|r| {
        r.protocol = Some("tcp".into());
        r.port_range_min = Some(443);
    });
    assert_eq!(one.ports, Some((443, 443)));
    // ICMP: type and code.
    let icmp = spec_of(|r| {
        r.protocol = Some("icmp".into());
        r.port_range_min = Some(8);
        r.port_range_max = Some(0);
    });
    assert_eq!(
        (icmp.protocol, icmp.ports, icmp.icmp),
        (Some(1), None, Some((8, Some(0))))
    );
    let type_only = spec_of(|r| {
        r.protocol = Some("icmp".into());
        r.port_range_min = Some(3);
    });
    assert_eq!(type_only.icmp, Some((3, None)));
    // "icmp" with IPv6 is ICMPv6, as Neutron reads it; so are its other names.
    for name in ["icmp", "ipv6-icmp", "icmpv6", "58"] {
        let v6 = spec_of(|r| {
            r.ethertype = Ethertype::IPv6;
            r.protocol = Some(name.into());
            r.port_range_min = Some(135);
        });
        assert_eq!(
            (v6.ethertype, v6.protocol, v6.icmp),
            (RuleEthertype::IPv6, Some(58), Some((135, None))),
            "{name}"
        );
    }
    // Remotes: a /0 prefix is anyone; prefixes are truncated; groups by id.
    assert_eq!(
        spec_of(|r| r.remote_ip_prefix = Some(net("0.0.0.0/0"))).remote,
        RuleRemote::Any
    );
    assert_eq!(
        spec_of(|r| r.remote_ip_prefix = Some(net("192.0.2.7/24"))).remote,
        RuleRemote::Prefix(net("192.0.2.0/24"))
    );
    assert_eq!(
        spec_of(|r| r.remote_group_id = Some("g".into())).remote,
        RuleRemote::Group("g".into())
    );
    assert_eq!(
        spec_of(|r| r.direction = Direction::Egress).direction,
        RuleDirection::Egress
    );
}

#[test]
fn a_group_reaches_the_hosts_whose_enabled_ports_use_it_with_rules_sorted_by_id() {
    let mut r = cloud();
    r.step(group("g", true), HOSTS);
    for id in ["r3", "r1", "r2"] {
        let mut rl = rule(id, "g");
        rl.protocol = Some("tcp".into());
        r.step(Input::SecurityGroupRule(Box::new(rl)), HOSTS);
    }
    put(&mut r, &member("a", "h1", 1, "10.0.0.5", &["g"]));
    let mut off = member("b", "h2", 2, "10.0.0.6", &["g"]);
    off.port_security_enabled = false;
    put(&mut r, &off);
    put(&mut r, &member("c", "", 3, "10.0.0.7", &["g"]));

    let h1 = r.compiler.snapshot("h1");
    let ids: Vec<&str> = h1.security_groups["g"]
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    assert!(h1.security_groups["g"].stateful);
    assert_eq!(h1.port_security["a"].security_groups, ["g"]);
    // Port security disabled: the port is listed, its groups are not used.
    let h2 = r.compiler.snapshot("h2");
    assert!(!h2.port_security["b"].enabled);
    assert!(h2.security_groups.is_empty());
    // Unbound ports are on no host.
    assert!(r.compiler.snapshot("h3").port_security.is_empty());
}

#[test]
fn member_sets_hold_every_enabled_members_addresses_wherever_it_is() {
    let mut r = cloud();
    r.step(group("web", true), HOSTS);
    r.step(group("db", true), HOSTS);
    r.step(remote_rule("r", "db", "web"), HOSTS);
    put(&mut r, &member("d", "h1", 1, "10.0.0.5", &["db"]));
    let mut w1 = member("w1", "h2", 2, "10.0.0.6", &["web"]);
    w1.allowed_address_pairs = vec![AddressPair {
        ip_address: net("10.9.0.0/16"),
        mac_address: mac(2),
    }];
    put(&mut r, &w1);
    put(&mut r, &member("w2", "", 3, "10.0.0.7", &["web"]));
    let mut w3 = member("w3", "h3", 4, "10.0.0.8", &["web"]);
    w3.port_security_enabled = false;
    put(&mut r, &w3);

    let h1 = r.compiler.snapshot("h1");
    assert_eq!(
        h1.remote_groups["web"].iter().copied().collect::<Vec<_>>(),
        [net("10.0.0.6/32"), net("10.0.0.7/32"), net("10.9.0.0/16")]
    );
    // h2 uses web but no rule it holds names web.
    assert!(r.compiler.snapshot("h2").remote_groups.is_empty());
}

// ---- incremental: who hears what --------------------------------------------

#[test]
fn a_port_joining_a_group_is_one_member_add_to_exactly_the_hosts_holding_its_set() {
    let mut r = cloud();
    r.step(group("web", true), HOSTS);
    r.step(group("db", true), HOSTS);
    r.step(remote_rule("r", "db", "web"), HOSTS);
    // h1 and h2 hold web's member set (their db ports); h3 uses web only.
    put(&mut r, &member("d1", "h1", 1, "10.0.0.5", &["db"]));
    put(&mut r, &member("d2", "h2", 2, "10.0.0.6", &["db"]));
    put(&mut r, &member("w", "h3", 3, "10.0.0.7", &["web"]));

    // A port on h4 (no ports there yet) joins web.
    let mut joiner = member("x", "h4", 4, "10.0.0.8", &[]);
    put(&mut r, &joiner);
    joiner.security_groups = vec!["web".into()];
    let changes = put(&mut r, &joiner);
    let add = Change::RemoteGroupMemberAdd {
        group_id: "web".into(),
        member: net("10.0.0.8/32"),
    };
    assert_eq!(changes_of(&changes, "h1"), [&add]);
    assert_eq!(changes_of(&changes, "h2"), [&add]);
    assert!(changes_of(&changes, "h3").is_empty());
    let h4 = changes_of(&changes, "h4");
    assert!(matches!(h4[0], Change::SecurityGroupUpsert { group_id, .. } if group_id == "web"));
    assert!(matches!(h4[1], Change::PortSecurityUpsert { port_id, .. } if port_id == "x"));
    assert_eq!(h4.len(), 2);

    // And leaving is one removal each.
    joiner.security_groups = vec![];
    let changes = put(&mut r, &joiner);
    let remove = Change::RemoteGroupMemberRemove {
        group_id: "web".into(),
        member: net("10.0.0.8/32"),
    };
    assert_eq!(changes_of(&changes, "h1"), [&remove]);
    assert_eq!(changes_of(&changes, "h2"), [&remove]);
    assert_eq!(
        changes_of(&changes, "h4"),
        [
            &Change::PortSecurityUpsert {
                port_id: "x".into(),
                spec: r.compiler.snapshot("h4").port_security["x"].clone(),
            },
            &Change::SecurityGroupRemove {
                group_id: "web".into()
            },
        ]
    );
}

#[test]
fn an_address_two_members_share_leaves_the_set_with_the_last_of_them() {
    let mut r = cloud();
    r.step(group("g", true), HOSTS);
    r.step(remote_rule("r", "g", "g"), HOSTS);
    put(&mut r, &member("a", "h1", 1, "10.0.0.5", &["g"]));
    let mut b = member("b", "h2", 2, "10.0.0.6", &["g"]);
    b.allowed_address_pairs = vec![AddressPair {
        ip_address: net("10.0.0.5/32"),
        mac_address: mac(2),
    }];
    let changes = put(&mut r, &b);
    // 10.0.0.5 was already a member: only 10.0.0.6 is added on h1.
    assert_eq!(
        changes_of(&changes, "h1"),
        [&Change::RemoteGroupMemberAdd {
            group_id: "g".into(),
            member: net("10.0.0.6/32"),
        }]
    );
    let changes = r.step(Input::PortDeleted("a".into()), HOSTS);
    assert!(
        !changes
            .iter()
            .any(|(_, c)| matches!(c, Change::RemoteGroupMemberRemove { .. })),
        "b still stands for 10.0.0.5"
    );
    assert!(r.compiler.snapshot("h2").remote_groups["g"].contains(&net("10.0.0.5/32")));
}

#[test]
fn the_default_groups_self_reference_lets_members_reach_each_other() {
    let mut r = cloud();
    r.step(group("default", true), HOSTS);
    r.step(remote_rule("in4", "default", "default"), HOSTS);
    let mut egress = rule("out4", "default");
    egress.direction = Direction::Egress;
    r.step(Input::SecurityGroupRule(Box::new(egress)), HOSTS);
    let changes = put(&mut r, &member("a", "h1", 1, "10.0.0.5", &["default"]));
    // The set comes before the rules naming it, which come before the port.
    let h1 = changes_of(&changes, "h1");
    let kinds: Vec<&str> = h1
        .iter()
        .filter_map(|c| match c {
            Change::RemoteGroupUpsert { .. } => Some("set"),
            Change::SecurityGroupUpsert { .. } => Some("group"),
            Change::PortSecurityUpsert { .. } => Some("port"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["set", "group", "port"]);
    put(&mut r, &member("b", "h2", 2, "10.0.0.6", &["default"]));
    for h in ["h1", "h2"] {
        assert_eq!(
            r.compiler.snapshot(h).remote_groups["default"]
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [net("10.0.0.5/32"), net("10.0.0.6/32")]
        );
    }
    // The last member leaving a host takes the group and its set from it.
    let changes = r.step(Input::PortDeleted("a".into()), HOSTS);
    assert_eq!(
        changes_of(&changes, "h1"),
        [
            &Change::PortSecurityRemove {
                port_id: "a".into()
            },
            &Change::SecurityGroupRemove {
                group_id: "default".into()
            },
            &Change::RemoteGroupRemove {
                group_id: "default".into()
            },
        ]
    );
    assert_eq!(
        changes_of(&changes, "h2"),
        [&Change::RemoteGroupMemberRemove {
            group_id: "default".into(),
            member: net("10.0.0.5/32"),
        }]
    );
}

#[test]
fn a_rule_change_reaches_the_groups_users_as_that_one_rule() {
    let mut r = cloud();
    r.step(group("g", true), HOSTS);
    r.step(group("other", true), HOSTS);
    put(&mut r, &member("a", "h1", 1, "10.0.0.5", &["g"]));
    put(&mut r, &member("a2", "h1", 5, "10.0.0.9", &["g"]));
    put(&mut r, &member("b", "h2", 2, "10.0.0.6", &["g", "other"]));
    put(&mut r, &member("c", "h3", 3, "10.0.0.7", &["other"]));

    let mut ssh = rule("ssh", "g");
    ssh.protocol = Some("tcp".into());
    ssh.port_range_min = Some(22);
    let changes = r.step(Input::SecurityGroupRule(Box::new(ssh.clone())), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert_eq!(changes.len(), 2, "one upsert per host, not per port");
    assert!(changes.iter().all(
        |(_, c)| matches!(c, Change::SecurityGroupRuleUpsert { group_id, rule }
                if group_id == "g" && rule.id == "ssh")
    ));
    // The same rule again changes nothing.
    assert!(
        r.step(Input::SecurityGroupRule(Box::new(ssh.clone())), HOSTS)
            .is_empty()
    );
    // A rule that starts naming a remote group brings its set first.
    ssh.remote_group_id = Some("other".into());
    let changes = r.step(Input::SecurityGroupRule(Box::new(ssh)), HOSTS);
    let h1 = changes_of(&changes, "h1");
    assert!(
        matches!(h1[0], Change::RemoteGroupUpsert { group_id, members }
            if group_id == "other" && members.len() == 2)
    );
    assert!(matches!(h1[1], Change::SecurityGroupRuleUpsert { .. }));
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    // Deleting it takes the rule, then the set.
    let changes = r.step(Input::SecurityGroupRuleDeleted("ssh".into()), HOSTS);
    assert!(matches!(
        changes_of(&changes, "h1")[..],
        [
            Change::SecurityGroupRuleRemove { .. },
            Change::RemoteGroupRemove { .. }
        ]
    ));
    assert!(r.compiler.snapshot("h1").remote_groups.is_empty());
}

#[test]
fn a_group_is_held_once_known_and_dropped_when_deleted() {
    let mut r = cloud();
    // A rule and a port before their group: nothing to hold yet.
    r.step(remote_rule("r", "g", "g"), HOSTS);
    put(&mut r, &member("a", "h1", 1, "10.0.0.5", &["g"]));
    assert!(r.compiler.snapshot("h1").security_groups.is_empty());
    let changes = r.step(group("g", true), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1"]);
    let h1 = r.compiler.snapshot("h1");
    assert_eq!(h1.security_groups["g"].rules.len(), 1);
    assert_eq!(h1.remote_groups["g"].len(), 1);
    // Statefulness is part of the group.
    let changes = r.step(group("g", false), HOSTS);
    assert!(
        matches!(&changes[..], [(h, Change::SecurityGroupUpsert { spec, .. })]
        if h == "h1" && !spec.stateful)
    );
    assert!(r.step(group("g", false), HOSTS).is_empty());
    r.step(Input::SecurityGroupDeleted("g".into()), HOSTS);
    let h1 = r.compiler.snapshot("h1");
    assert!(h1.security_groups.is_empty() && h1.remote_groups.is_empty());
    assert_eq!(h1.port_security["a"].security_groups, ["g"]);
}

#[test]
fn toggling_port_security_takes_the_port_out_of_its_groups_and_back() {
    let mut r = cloud();
    r.step(group("g", true), HOSTS);
    r.step(remote_rule("r", "g", "g"), HOSTS);
    put(&mut r, &member("a", "h1", 1, "10.0.0.5", &["g"]));
    let mut b = member("b", "h2", 2, "10.0.0.6", &["g"]);
    put(&mut r, &b);
    b.port_security_enabled = false;
    let changes = put(&mut r, &b);
    assert_eq!(
        changes_of(&changes, "h1"),
        [&Change::RemoteGroupMemberRemove {
            group_id: "g".into(),
            member: net("10.0.0.6/32"),
        }]
    );
    let h2 = r.compiler.snapshot("h2");
    assert!(!h2.port_security["b"].enabled);
    assert!(h2.security_groups.is_empty() && h2.remote_groups.is_empty());
    b.port_security_enabled = true;
    put(&mut r, &b);
    assert_eq!(r.compiler.snapshot("h2").remote_groups["g"].len(), 2);
}

#[test]
fn a_port_moving_hosts_moves_its_port_security_and_groups() {
    let mut r = cloud();
    r.step(group("g", true), HOSTS);
    let mut a = member("a", "h1", 1, "10.0.0.5", &["g"]);
    put(&mut r, &a);
    a.binding_host_id = "h2".into();
    let changes = put(&mut r, &a);
    assert!(
        changes_of(&changes, "h1").contains(&&Change::PortSecurityRemove {
            port_id: "a".into()
        })
    );
    assert!(
        changes_of(&changes, "h1").contains(&&Change::SecurityGroupRemove {
            group_id: "g".into()
        })
    );
    let h2 = r.compiler.snapshot("h2");
    assert!(h2.port_security.contains_key("a") && h2.security_groups.contains_key("g"));
    let h1 = r.compiler.snapshot("h1");
    assert!(h1.port_security.is_empty() && h1.security_groups.is_empty());
}

// ---- address groups ---------------------------------------------------------

fn address_group(id: &str, addresses: &[&str]) -> Input {
    Input::AddressGroup(Box::new(model::AddressGroup {
        std: Standard::new(id.into(), "project".into(), 0),
        addresses: addresses.iter().map(|a| net(a)).collect(),
    }))
}

fn address_group_rule(id: &str, group: &str, ag: &str) -> Input {
    let mut r = rule(id, group);
    r.protocol = Some("tcp".into());
    r.port_range_min = Some(22);
    r.port_range_max = Some(22);
    r.remote_address_group_id = Some(ag.into());
    Input::SecurityGroupRule(Box::new(r))
}

#[test]
fn a_rule_naming_an_address_group_looks_it_up_by_id() {
    let spec = spec_of(|r| r.remote_address_group_id = Some("ag".into()));
    assert_eq!(spec.remote, RuleRemote::AddressGroup("ag".into()));
}

#[test]
fn an_address_added_to_a_group_is_one_element_to_exactly_the_hosts_whose_rules_name_it() {
    let mut r = cloud();
    r.step(group("web", true), HOSTS);
    r.step(group("db", true), HOSTS);
    r.step(address_group("ag", &["10.9.0.0/16"]), HOSTS);
    let changes = r.step(address_group_rule("r", "db", "ag"), HOSTS);
    assert!(changes.is_empty(), "nobody uses db yet: {changes:?}");
    // h1 and h2 use db (whose rule names ag); h3 uses web only; h4 nothing.
    let changes = put(&mut r, &member("d1", "h1", 1, "10.0.0.5", &["db"]));
    let h1 = changes_of(&changes, "h1");
    // The addresses come before the rule that names them.
    assert_eq!(
        h1[0],
        &Change::AddressGroupUpsert {
            address_group_id: "ag".into(),
            addresses: [net("10.9.0.0/16")].into(),
        }
    );
    assert!(matches!(h1[1], Change::SecurityGroupUpsert { group_id, .. } if group_id == "db"));
    put(&mut r, &member("d2", "h2", 2, "10.0.0.6", &["db"]));
    put(&mut r, &member("w", "h3", 3, "10.0.0.7", &["web"]));
    assert!(r.compiler.snapshot("h3").address_groups.is_empty());

    // One address added: one element to h1 and h2, nothing else to anyone.
    let changes = r.step(address_group("ag", &["10.9.0.0/16", "192.0.2.7/32"]), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    let add = Change::AddressGroupAddressAdd {
        address_group_id: "ag".into(),
        address: net("192.0.2.7/32"),
    };
    assert_eq!(changes_of(&changes, "h1"), [&add]);
    assert_eq!(changes_of(&changes, "h2"), [&add]);
    // One removed: one element each.
    let changes = r.step(address_group("ag", &["192.0.2.7/32"]), HOSTS);
    let remove = Change::AddressGroupAddressRemove {
        address_group_id: "ag".into(),
        address: net("10.9.0.0/16"),
    };
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert_eq!(changes_of(&changes, "h1"), [&remove]);
    assert_eq!(changes_of(&changes, "h2"), [&remove]);
    // A renamed group (same addresses) reaches no host.
    assert!(
        r.step(address_group("ag", &["192.0.2.7/32"]), HOSTS)
            .is_empty()
    );

    // The rule goes: its hosts drop it, then the addresses only it named.
    let changes = r.step(Input::SecurityGroupRuleDeleted("r".into()), HOSTS);
    assert_eq!(
        changes_of(&changes, "h1"),
        [
            &Change::SecurityGroupRuleRemove {
                group_id: "db".into(),
                rule_id: "r".into(),
            },
            &Change::AddressGroupRemove {
                address_group_id: "ag".into(),
            },
        ]
    );
    assert!(
        r.step(address_group("ag", &["198.51.100.0/24"]), HOSTS)
            .is_empty(),
        "no host holds it any more"
    );
}

#[test]
fn a_rule_may_name_an_address_group_before_it_is_known_and_after_it_is_gone() {
    let mut r = cloud();
    r.step(group("db", true), HOSTS);
    r.step(address_group_rule("r", "db", "ag"), HOSTS);
    put(&mut r, &member("d1", "h1", 1, "10.0.0.5", &["db"]));
    assert_eq!(
        r.compiler.snapshot("h1").address_groups["ag"],
        Default::default(),
        "unknown: empty, so the rule allows nobody"
    );
    let changes = r.step(address_group("ag", &["10.9.0.0/16"]), HOSTS);
    assert_eq!(changes_of(&changes, "h1").len(), 1);
    let changes = r.step(Input::AddressGroupDeleted("ag".into()), HOSTS);
    assert_eq!(
        changes_of(&changes, "h1"),
        [&Change::AddressGroupAddressRemove {
            address_group_id: "ag".into(),
            address: net("10.9.0.0/16"),
        }]
    );
    // The port leaving the group drops everything.
    let changes = put(&mut r, &member("d1", "h1", 1, "10.0.0.5", &[]));
    assert!(
        changes_of(&changes, "h1").contains(&&Change::AddressGroupRemove {
            address_group_id: "ag".into(),
        })
    );
    assert!(r.compiler.snapshot("h1").address_groups.is_empty());
}
