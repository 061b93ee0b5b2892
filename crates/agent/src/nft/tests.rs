#![allow(clippy::unwrap_used)]

//! Pure tests: generation and diff, no root.

use std::collections::BTreeMap;

use compiler::protocol::{
    AllowedSource, FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, PortSecuritySpec,
    RuleDirection, RuleEthertype, RuleRemote, RuleSpec, SecurityGroupSpec,
};

use super::ruleset::{MapKey, MapKind, MapValue, Table};
use super::*;

fn rule(
    dir: RuleDirection,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
    remote: RuleRemote,
) -> RuleSpec {
    RuleSpec {
        id: "r".into(),
        direction: dir,
        ethertype: RuleEthertype::IPv4,
        protocol: proto,
        ports,
        icmp: None,
        remote,
    }
}

fn state() -> HostState {
    let mut s = HostState::default();
    let mut net = NetworkSpec {
        vni: 100,
        mtu: 1450,
        physical_network: None,
        subnets: BTreeMap::new(),
        local_ports: BTreeMap::new(),
        remote_ports: BTreeMap::new(),
    };
    for (id, dev, mac, ip) in [
        ("pa", "tapa", "fa:16:3e:00:00:0a", "10.0.0.10"),
        ("pb", "tapb", "fa:16:3e:00:00:0b", "10.0.0.11"),
        ("pc", "tapc", "fa:16:3e:00:00:0c", "10.0.0.12"),
    ] {
        net.local_ports.insert(
            id.into(),
            LocalPortSpec {
                mac: mac.parse().unwrap(),
                fixed_ips: vec![FixedIpSpec {
                    subnet_id: "s".into(),
                    ip_address: ip.parse().unwrap(),
                }],
                device: dev.into(),
                admin_state_up: true,
                dhcpv4_options: vec![],
                dhcpv6_options: vec![],
            },
        );
        s.port_security.insert(
            id.into(),
            PortSecuritySpec {
                enabled: id != "pc",
                security_groups: vec!["web".into()],
                allowed_sources: vec![AllowedSource {
                    mac: mac.parse().unwrap(),
                    ip: format!("{ip}/32").parse().unwrap(),
                }],
            },
        );
    }
    s.networks.insert("n".into(), net);
    s.security_groups.insert(
        "web".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![
                rule(RuleDirection::Egress, None, None, RuleRemote::Any),
                rule(
                    RuleDirection::Ingress,
                    Some(6),
                    Some((80, 80)),
                    RuleRemote::Group("web".into()),
                ),
                rule(
                    RuleDirection::Ingress,
                    Some(6),
                    Some((22, 22)),
                    RuleRemote::Prefix("192.168.0.0/24".parse().unwrap()),
                ),
                rule(
                    RuleDirection::Ingress,
                    Some(6),
                    Some((22, 22)),
                    RuleRemote::Prefix("192.168.1.0/24".parse().unwrap()),
                ),
            ],
        },
    );
    s.remote_groups.insert(
        "web".into(),
        ["10.0.0.10/32", "10.0.0.11/32"]
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
    );
    s
}

/// What nft would list after running the plan (a fake in the manner of
/// knftables' fake: enough of nft's semantics for the diff).
fn apply_fake(want: &Ruleset, have: &mut ObservedNft) {
    *have = ObservedNft::from_ruleset(want);
}

/// The chain a secured port's packets go through in `dir`: its profile's,
/// as the bridge's to-map names it.
fn port_chain(rs: &Ruleset, dev: &str, dir: RuleDirection) -> String {
    let to = &rs.bridge.maps["to_ports"].elements;
    let Some(MapValue::Jump(chain)) = to.get(&MapKey::Ifname(dev.into())) else {
        panic!("{dev} has no profile: {to:?}");
    };
    let profile = chain.strip_prefix("pt_").unwrap();
    ruleset::profile_chain(profile, dir.into())
}

/// A named map's elements as nft writes them, `KEY : VALUE, …`.
fn map_text(t: &Table, name: &str) -> String {
    let elements: Vec<String> = t.maps[name]
        .elements
        .iter()
        .map(|(k, v)| format!("{k} : {v}"))
        .collect();
    elements.join(", ")
}

#[test]
fn the_ruleset_dispatches_ports_to_shared_group_chains() {
    let rs = desired(&state(), &NftConfig::default());
    // Only secured ports are dispatched; the one with security off is not.
    let egress = &rs.inet.chains["egress"].rules;
    assert_eq!(
        egress,
        &["iifname \"vnbr*\" meta mark & 0xffff0000 vmap @egress_ports"]
    );
    // Both ports have the same groups: one profile, one dispatch entry.
    let (ea, eb) = (
        port_chain(&rs, "tapa", RuleDirection::Egress),
        port_chain(&rs, "tapb", RuleDirection::Egress),
    );
    assert_eq!(ea, eb);
    assert_eq!(
        map_text(&rs.inet, "egress_ports"),
        format!(
            "0x{:08x} : jump {ea}",
            match &rs.bridge.maps["marks"].elements[&MapKey::Ifname("tapa".into())] {
                MapValue::Number(n) => *n,
                v => panic!("{v:?}"),
            }
        )
    );
    assert!(!map_text(&rs.bridge, "to_ports").contains("tapc"));
    assert!(!rs.bridge.chains.contains_key("s_tapc"));
    // One chain per group and direction, jumped to by the profile.
    assert!(
        rs.inet.chains[&ea]
            .rules
            .contains(&"jump g_web_e".to_string())
    );
    assert!(
        rs.inet.chains[&port_chain(&rs, "tapb", RuleDirection::Ingress)]
            .rules
            .contains(&"jump g_web_i".to_string())
    );
    let gi = &rs.inet.chains["g_web_i"].rules;
    // Two prefix rules on one port become one rule with a set; the group rule is a lookup.
    assert_eq!(gi.len(), 2, "{gi:#?}");
    assert!(
        gi.iter().any(|r| r
            == "meta nfproto ipv4 meta l4proto 6 th dport 22 ip saddr { 192.168.0.0/23 } accept"
            || r == "meta nfproto ipv4 meta l4proto 6 th dport 22 ip saddr 192.168.0.0/23 accept"),
        "{gi:#?}"
    );
    assert!(gi.contains(
        &"meta nfproto ipv4 meta l4proto 6 th dport 80 ip saddr @rg_web_4 accept".to_string()
    ));
    assert_eq!(rs.inet.sets["rg_web_4"].elements.len(), 2);
    // A VM's router advertisements and DHCPv6 replies go first, whatever
    // its connections; then stateful, with DHCP allowed and the default
    // drop last.
    let e = &rs.inet.chains[&ea].rules;
    assert_eq!(e[0], "meta l4proto 58 icmpv6 type 134 drop");
    assert_eq!(e[1], "meta nfproto ipv6 udp sport 547 udp dport 546 drop");
    assert_eq!(e[2], "ct state established,related accept");
    let i = &rs.inet.chains[&port_chain(&rs, "tapa", RuleDirection::Ingress)].rules;
    assert_eq!(i[0], "ct state established,related accept");
    assert!(
        !i.iter()
            .any(|r| r.contains("134") || r.contains("sport 547")),
        "{i:#?}"
    );
    assert_eq!(e.last().map(String::as_str), Some("drop"));
    // Anti-spoofing names the port's pair and drops the rest.
    let s = &rs.bridge.chains["s_tapa"].rules;
    assert!(s.contains(&"ether saddr fa:16:3e:00:00:0a ip saddr 10.0.0.10/32 return".to_string()));
    assert_eq!(s.last().map(String::as_str), Some("drop"));
    // Zones per network, bridges filtered.
    assert!(
        rs.inet.chains["prerouting"]
            .rules
            .contains(&"ct zone set iifname map @zones".to_string())
    );
    assert_eq!(map_text(&rs.inet, "zones"), "\"vnbr100\" : 100");
    assert!(rs.filtered_bridges.contains("vnbr100"));
}

#[test]
fn plan_from_nothing_creates_everything_then_nothing() {
    let rs = desired(&state(), &NftConfig::default());
    let mut have = ObservedNft::default();
    let tx = plan(&rs, &have);
    assert!(
        tx.script
            .starts_with("add table bridge vnet\nadd table inet vnet\n"),
        "{}",
        tx.script
    );
    // Chains exist before the rules that jump to them; sets before lookups.
    let first_rule = tx.script.find("add rule").unwrap();
    assert!(tx.script.rfind("add chain").unwrap() < first_rule);
    assert!(tx.script.find("add set").unwrap() < first_rule);
    // No rule and `}` share a line (nft 1.0.6).
    apply_fake(&rs, &mut have);
    assert!(plan(&rs, &have).is_empty());
}

#[test]
fn a_member_joining_changes_one_element_and_no_rule() {
    let s = state();
    let rs = desired(&s, &NftConfig::default());
    let mut have = ObservedNft::default();
    apply_fake(&rs, &mut have);
    let mut s2 = s.clone();
    if let Some(m) = s2.remote_groups.get_mut("web") {
        m.insert("10.0.0.99/32".parse().unwrap());
    }
    let tx = plan(&desired(&s2, &NftConfig::default()), &have);
    assert_eq!(
        tx.script,
        "add element inet vnet rg_web_4 { 10.0.0.99/32 }\n"
    );
    assert_eq!(
        tx.elements_added,
        vec!["inet/rg_web_4 10.0.0.99/32".to_string()]
    );
    assert!(tx.chains_written.is_empty());
    // What the in-process path sends: one set's one element, nothing else.
    assert!(tx.elements_only());
    assert_eq!(tx.set_deltas.len(), 1, "{:?}", tx.set_deltas);
    let d = &tx.set_deltas[0];
    assert_eq!((d.family, d.set.as_str()), (Family::Inet, "rg_web_4"));
    assert_eq!(
        d.added,
        vec!["10.0.0.99/32".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(d.removed.is_empty() && !d.was_empty);
    assert_eq!(netlink::element_messages(&tx.set_deltas).len(), 1);
}

#[test]
fn a_transaction_making_tables_chains_or_sets_is_not_elements_only() {
    let rs = desired(&state(), &NftConfig::default());
    let tx = plan(&rs, &ObservedNft::default());
    assert!(!tx.tables_created.is_empty());
    assert!(!tx.elements_only());
    // A set's first elements, with the set created: still by nft.
    let mut have = ObservedNft::default();
    apply_fake(&rs, &mut have);
    have.inet.sets.clear();
    let tx = plan(&rs, &have);
    assert!(
        !tx.sets_created.is_empty() && !tx.elements_only(),
        "{tx:#?}"
    );
}

#[test]
fn a_rule_change_rewrites_only_its_group_chain() {
    let s = state();
    let rs = desired(&s, &NftConfig::default());
    let mut have = ObservedNft::default();
    apply_fake(&rs, &mut have);
    let mut s2 = s.clone();
    if let Some(g) = s2.security_groups.get_mut("web") {
        g.rules.push(rule(
            RuleDirection::Ingress,
            Some(17),
            Some((53, 54)),
            RuleRemote::Any,
        ));
    }
    let tx = plan(&desired(&s2, &NftConfig::default()), &have);
    assert_eq!(tx.chains_written, vec!["inet/g_web_i".to_string()]);
    assert!(tx.script.starts_with("flush chain inet vnet g_web_i\n"));
    assert!(tx.script.contains("meta l4proto 17 th dport 53-54 accept"));
}

#[test]
fn port_security_off_and_removed_ports_leave_no_chains() {
    let s = state();
    let rs = desired(&s, &NftConfig::default());
    let mut have = ObservedNft::default();
    apply_fake(&rs, &mut have);
    let mut s2 = s.clone();
    if let Some(p) = s2.port_security.get_mut("pb") {
        p.enabled = false;
    }
    let tx = plan(&desired(&s2, &NftConfig::default()), &have);
    // Its anti-spoofing chain goes; its profile stays, tapa's.
    assert_eq!(
        tx.chains_deleted,
        vec!["bridge/s_tapb".to_string()],
        "{tx:#?}"
    );
    // Deleted after the map elements that jumped to them; no base chain
    // is rewritten.
    let del = tx.script.find("delete chain").unwrap();
    let unmapped = tx
        .script
        .find("delete element bridge vnet spoof_ports { \"tapb\" }")
        .unwrap();
    assert!(unmapped < del, "{}", tx.script);
    assert!(!tx.script.contains("add rule"), "{}", tx.script);
}

#[test]
fn observed_tables_are_read_from_nft_json() {
    let json = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "vnet"}},
      {"set": {"family": "inet", "name": "rg_4", "table": "vnet", "type": "ipv4_addr", "flags": ["interval"],
        "elem": ["10.0.0.5", {"prefix": {"addr": "10.1.0.0", "len": 16}}]}},
      {"set": {"family": "inet", "name": "empty", "table": "vnet", "type": "ipv4_addr"}},
      {"chain": {"family": "inet", "table": "vnet", "name": "e", "handle": 1}},
      {"rule": {"family": "inet", "table": "vnet", "chain": "e", "handle": 4, "expr": [], "comment": "h1"}}]}"#;
    let t = parse_table(json).unwrap();
    assert!(t.exists);
    assert_eq!(t.chains["e"], vec!["h1".to_string()]);
    let want: std::collections::BTreeSet<ipnet::IpNet> = ["10.0.0.5/32", "10.1.0.0/16"]
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(t.sets["rg_4"], Some(want));
    assert_eq!(t.sets["empty"], Some(Default::default()));
}

#[test]
fn bridge_switches_follow_secured_ports() {
    let rs = desired(&state(), &NftConfig::default());
    let have = vec![
        ("vnbr100".to_string(), false),
        ("vnbr200".to_string(), true),
    ];
    assert_eq!(
        bridge_switches(&rs, &have),
        vec![
            ("vnbr100".to_string(), true),
            ("vnbr200".to_string(), false)
        ]
    );
}

#[test]
fn zones_and_indexes_are_stable_and_distinct() {
    let z = ruleset::zones(&[100, 65636, 0x10000].into_iter().collect());
    assert_eq!(z[&100], 100);
    assert_ne!(z[&65636], 100);
    assert_ne!(z[&0x10000], 0);
    let a = ruleset::indexes(["tapa", "tapb"]);
    let b = ruleset::indexes(["tapa", "tapb", "tapz"]);
    assert_eq!(a["tapa"], b["tapa"]);
    assert!(a.values().all(|i| *i != 0));
}

#[test]
fn member_sets_drop_contained_prefixes_but_merge_no_neighbours() {
    let nets: Vec<ipnet::IpNet> = ["10.0.0.5/32", "10.0.0.0/24", "10.0.1.1/32", "10.0.1.0/32"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let kept: Vec<String> = ruleset::without_overlaps(&nets)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(kept, vec!["10.0.0.0/24", "10.0.1.0/32", "10.0.1.1/32"]);
}

#[test]
fn stateless_groups_accept_no_replies_and_ipv6_rules_use_icmpv6() {
    let mut s = state();
    if let Some(g) = s.security_groups.get_mut("web") {
        g.stateful = false;
        g.rules.push(RuleSpec {
            ethertype: RuleEthertype::IPv6,
            icmp: Some((128, Some(0))),
            // ICMP named on an IPv6 rule.
            ..rule(
                RuleDirection::Ingress,
                Some(1),
                None,
                RuleRemote::Group("web".into()),
            )
        });
        g.rules.push(RuleSpec {
            ethertype: RuleEthertype::IPv6,
            ..rule(
                RuleDirection::Ingress,
                Some(6),
                Some((443, 443)),
                RuleRemote::Prefix("2001:db8::/32".parse().unwrap()),
            )
        });
    }
    if let Some(m) = s.remote_groups.get_mut("web") {
        m.insert("fd00::10/128".parse().unwrap());
    }
    let rs = desired(&s, &NftConfig::default());
    let e = &rs.inet.chains[&port_chain(&rs, "tapa", RuleDirection::Egress)].rules;
    assert!(!e.iter().any(|r| r.contains("ct state")), "{e:#?}");
    let gi = &rs.inet.chains["g_web_i"].rules;
    assert!(gi.contains(&"meta nfproto ipv6 meta l4proto 58 icmpv6 type 128 icmpv6 code 0 ip6 saddr @rg_web_6 accept".to_string()), "{gi:#?}");
    assert!(
        gi.contains(
            &"meta nfproto ipv6 meta l4proto 6 th dport 443 ip6 saddr 2001:db8::/32 accept"
                .to_string()
        ),
        "{gi:#?}"
    );
    let v6: Vec<String> = rs.inet.sets["rg_web_6"]
        .elements
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(v6, vec!["fd00::10/128"]);
    // The v4 set does not carry v6 members.
    assert_eq!(rs.inet.sets["rg_web_4"].elements.len(), 2);
}

#[test]
fn marks_are_set_for_every_device_of_vnet_bridges_only() {
    let rs = desired(&state(), &NftConfig::default());
    let fwd = &rs.bridge.chains["forward"].rules;
    assert_eq!(fwd[0], "meta mark set iifname map @marks");
    // The unsecured port and the VXLAN device map to 0: their frames' marks are reset.
    let marks = &rs.bridge.maps["marks"].elements;
    for dev in ["tapc", "vnvx100"] {
        assert_eq!(
            marks.get(&MapKey::Ifname(dev.into())),
            Some(&MapValue::Number(0)),
            "{dev}"
        );
    }
    assert_eq!(rs.bridge.maps["marks"].kind, MapKind::IfnameMark);
}

#[test]
fn a_flat_network_gets_its_own_zone_and_its_interface_a_mark() {
    let mut s = state();
    // A second network, flat: its port `tapf` secured like the others.
    let mut flat = s.networks["n"].clone();
    flat.vni = 0;
    flat.physical_network = Some("external".into());
    flat.local_ports.clear();
    let mut port = s.networks["n"].local_ports["pa"].clone();
    port.device = "tapf".into();
    port.mac = "fa:16:3e:00:00:0f".parse().unwrap();
    flat.local_ports.insert("pf".into(), port);
    s.networks.insert("f".into(), flat);
    let pa = s.port_security["pa"].clone();
    s.port_security.insert("pf".into(), pa);
    let config = NftConfig {
        physical_networks: BTreeMap::from([("external".into(), "ext0".into())]),
        ..NftConfig::default()
    };
    let rs = desired(&s, &config);
    let bridge = crate::linux::network_bridge(&s.networks["f"]);
    let zones = map_text(&rs.inet, "zones");
    // The VXLAN network keeps its zone; the flat one has another, by name.
    assert!(zones.contains("\"vnbr100\" : 100"), "{zones}");
    let flat_zone = zones
        .split(&format!("\"{bridge}\" : "))
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap();
    assert_ne!(flat_zone, "100");
    assert_ne!(flat_zone, "0");
    assert!(rs.filtered_bridges.contains(&bridge));
    // Frames from the physical interface are marked "no port" (never stale).
    let marks = map_text(&rs.bridge, "marks");
    assert!(marks.contains("\"ext0\" : 0,"), "{marks}");
    assert!(
        !marks.contains("vnvx0"),
        "a flat network has no VXLAN device"
    );
}

/// `state()` with a rule of `web` admitting SSH from address group "ag".
fn with_address_group(addresses: &[&str]) -> HostState {
    let mut s = state();
    if let Some(g) = s.security_groups.get_mut("web") {
        let mut r = rule(
            RuleDirection::Ingress,
            Some(6),
            Some((2222, 2222)),
            RuleRemote::AddressGroup("ag".into()),
        );
        r.id = "r-ag".into();
        g.rules.push(r);
        let mut r6 = rule(
            RuleDirection::Ingress,
            Some(6),
            Some((2222, 2222)),
            RuleRemote::AddressGroup("ag".into()),
        );
        r6.id = "r-ag6".into();
        r6.ethertype = RuleEthertype::IPv6;
        g.rules.push(r6);
    }
    s.address_groups.insert(
        "ag".into(),
        addresses.iter().map(|a| a.parse().unwrap()).collect(),
    );
    s
}

#[test]
fn an_address_group_rule_is_one_lookup_in_a_set_per_family() {
    let rs = desired(
        &with_address_group(&["192.0.2.0/24", "192.0.2.7/32", "fd00::/64"]),
        &NftConfig::default(),
    );
    let gi = &rs.inet.chains["g_web_i"].rules;
    assert!(gi.contains(
        &"meta nfproto ipv4 meta l4proto 6 th dport 2222 ip saddr @ag_ag_4 accept".to_string()
    ));
    assert!(gi.contains(
        &"meta nfproto ipv6 meta l4proto 6 th dport 2222 ip6 saddr @ag_ag_6 accept".to_string()
    ));
    // Each family's addresses in its own interval set, without overlaps.
    let v4: Vec<String> = rs.inet.sets["ag_ag_4"]
        .elements
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(v4, ["192.0.2.0/24"]);
    assert!(rs.inet.sets["ag_ag_6"].v6);
    let v6: Vec<String> = rs.inet.sets["ag_ag_6"]
        .elements
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(v6, ["fd00::/64"]);
    let tx = plan(&rs, &ObservedNft::default());
    assert!(
        tx.script
            .contains("add set inet vnet ag_ag_4 { type ipv4_addr; flags interval; }")
    );
}

#[test]
fn an_address_added_to_a_group_changes_one_element_and_no_rule() {
    let s = with_address_group(&["192.0.2.0/24"]);
    let mut have = ObservedNft::default();
    apply_fake(&desired(&s, &NftConfig::default()), &mut have);
    let s2 = with_address_group(&["192.0.2.0/24", "198.51.100.9/32"]);
    let tx = plan(&desired(&s2, &NftConfig::default()), &have);
    assert_eq!(
        tx.script,
        "add element inet vnet ag_ag_4 { 198.51.100.9/32 }\n"
    );
    assert!(tx.chains_written.is_empty());
    apply_fake(&desired(&s2, &NftConfig::default()), &mut have);
    let s3 = with_address_group(&["198.51.100.9/32"]);
    let tx = plan(&desired(&s3, &NftConfig::default()), &have);
    assert_eq!(
        tx.script,
        "delete element inet vnet ag_ag_4 { 192.0.2.0/24 }\n"
    );
}

#[test]
fn typed_rules_render_the_chains_text_and_port_and_group_rules_encode() {
    let rs = desired(
        &with_address_group(&["192.0.2.0/24"]),
        &NftConfig::default(),
    );
    for (family, t) in [(Family::Bridge, &rs.bridge), (Family::Inet, &rs.inet)] {
        for (name, c) in &t.chains {
            let text: Vec<String> = c.typed.iter().map(ToString::to_string).collect();
            assert_eq!(text, c.rules, "{name}");
            // A base chain is written with its table, by nft.
            if c.hook.is_some() {
                continue;
            }
            for (rule, text) in c.typed.iter().zip(&c.rules) {
                assert!(
                    rule.expressions(family).is_ok(),
                    "{family:?} {name}: {text}"
                );
            }
        }
    }
    assert!(rs.inet.chains["g_web_i"].typed.len() >= 3);
}

#[test]
fn a_port_added_or_removed_changes_map_elements_and_no_base_chain() {
    // tapd's port has tapa's groups: its profile is there already, so the
    // inet table (every rule change there has the kernel validate all of
    // it) is not touched at all.
    let s = state();
    let mut have = ObservedNft::default();
    apply_fake(&desired(&s, &NftConfig::default()), &mut have);
    let mut s2 = s.clone();
    let mut port = s2.networks["n"].local_ports["pa"].clone();
    port.device = "tapd".into();
    if let Some(net) = s2.networks.get_mut("n") {
        net.local_ports.insert("pd".into(), port);
    }
    let pa = s2.port_security["pa"].clone();
    s2.port_security.insert("pd".into(), pa);
    let base = ["prerouting", "forward", "egress", "ingress"];
    for (from, to, dir) in [(&s, &s2, "added"), (&s2, &s, "removed")] {
        let mut have = ObservedNft::default();
        apply_fake(&desired(from, &NftConfig::default()), &mut have);
        let tx = plan(&desired(to, &NftConfig::default()), &have);
        for written in &tx.chains_written {
            let name = written.split_once('/').unwrap().1;
            assert!(!base.contains(&name), "{dir}: {written} rewritten");
            assert!(written.starts_with("bridge/s_"), "{dir}: {written} written");
        }
        let inet = |e: &String| e.starts_with("inet/");
        assert!(!tx.map_elements_added.iter().any(inet), "{dir}: {tx:#?}");
        assert!(!tx.map_elements_removed.iter().any(inet), "{dir}: {tx:#?}");
        let changed = if dir == "added" {
            &tx.map_elements_added
        } else {
            &tx.map_elements_removed
        };
        for element in [
            "bridge/spoof_ports \"tapd\"",
            "bridge/to_ports \"tapd\"",
            "bridge/marks \"tapd\"",
        ] {
            assert!(
                changed.iter().any(|e| e.starts_with(element)),
                "{dir}: {element} in {changed:#?}"
            );
        }
    }
    // Every step of it goes in-process.
    let tx = plan(&desired(&s2, &NftConfig::default()), &have);
    assert!(netlink::transaction_messages(&tx).is_ok());
}
