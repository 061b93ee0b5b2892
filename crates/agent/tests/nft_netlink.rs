//! The in-process nf_tables path (`agent::nft::netlink`) against the `nft`
//! process path, in scratch namespaces (root): the same changes leave the
//! same ruleset (`nft -j list ruleset`, handles aside), a refused batch
//! changes nothing and names the message refused, and a batch of a
//! thousand ports' chains has every answer read.

#![allow(clippy::unwrap_used)]

mod linux_common;

use std::collections::BTreeSet;

use agent::nft::netlink::{
    BatchError, SetDelta, element_messages, send_batch, transaction_messages,
};
use agent::nft::rule::add_rule_messages;
use agent::nft::{Family, NftConfig, NftReconciler};
use compiler::protocol::{
    AllowedSource, HostState, PortSecuritySpec, RuleDirection, RuleEthertype, RuleRemote, RuleSpec,
    SecurityGroupSpec,
};
use ipnet::IpNet;
use linux_common::*;
use testworld::Netns;

/// Two secured ports; "web" admits TCP 80 from the members of "client"
/// (IPv4 and IPv6) and from the address group "ag".
fn state(members: &[&str], ag: &[&str]) -> HostState {
    let mut s = HostState::default();
    let mut net = network(100);
    net.local_ports
        .insert("pa".into(), local("tapa", "fa:16:3e:00:60:0a", "10.0.0.10"));
    net.local_ports
        .insert("pb".into(), local("tapb", "fa:16:3e:00:60:0b", "10.0.0.11"));
    s.networks.insert("n".into(), net);
    for (port, m, ip, group) in [
        ("pa", "fa:16:3e:00:60:0a", "10.0.0.10", "client"),
        ("pb", "fa:16:3e:00:60:0b", "10.0.0.11", "web"),
    ] {
        s.port_security.insert(
            port.into(),
            PortSecuritySpec {
                enabled: true,
                security_groups: vec![group.into()],
                allowed_sources: vec![AllowedSource {
                    mac: mac(m),
                    ip: format!("{ip}/32").parse().unwrap(),
                }],
            },
        );
    }
    let rule = |ethertype, remote| RuleSpec {
        id: format!("{ethertype:?}{remote:?}"),
        direction: RuleDirection::Ingress,
        ethertype,
        protocol: Some(6),
        ports: Some((80, 80)),
        icmp: None,
        remote,
    };
    s.security_groups.insert(
        "client".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![],
        },
    );
    s.security_groups.insert(
        "web".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![
                rule(RuleEthertype::IPv4, RuleRemote::Group("client".into())),
                rule(RuleEthertype::IPv6, RuleRemote::Group("client".into())),
                rule(RuleEthertype::IPv4, RuleRemote::AddressGroup("ag".into())),
            ],
        },
    );
    let nets = |l: &[&str]| -> BTreeSet<IpNet> { l.iter().map(|a| a.parse().unwrap()).collect() };
    s.remote_groups.insert("client".into(), nets(members));
    s.address_groups.insert("ag".into(), nets(ag));
    s
}

#[test]
fn element_changes_in_process_leave_the_ruleset_nft_leaves() {
    let by_nft = Netns::new("nfnl").unwrap();
    let in_process = Netns::new("nfnl").unwrap();
    let old = NftReconciler::new(NftConfig::default()).by_process(true);
    let new = NftReconciler::new(NftConfig::default()).by_process(false);
    // Thousands joining at once (a bulk port create): several messages in
    // a batch past the socket's default buffer.
    let many: Vec<String> = (0..3000)
        .map(|i| format!("fd00::1:{i:x}/128"))
        .chain(["10.0.0.20/32".to_string()])
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let steps = [
        // From nothing (tables, chains, sets: by nft on both paths).
        state(&["10.0.0.10/32", "fd00::10/128"], &[]),
        // Members join, to an empty set too (nft then closes the interval
        // below the first element; so does vnet).
        state(
            &[
                "10.0.0.10/32",
                "10.0.0.20/32",
                "fd00::10/128",
                "fd00::20/128",
            ],
            &["10.9.0.0/16", "192.168.0.0/24"],
        ),
        // Some leave, one joins, a prefix to the top of the space.
        state(
            &["10.0.0.20/32", "10.0.0.30/32", "fd00::20/128"],
            &["0.0.0.0/0"],
        ),
        state(&many, &["10.9.0.0/16"]),
        // Every member gone.
        state(&[], &[]),
        state(&["10.0.0.40/32"], &["10.9.0.0/16"]),
    ];
    for (i, s) in steps.iter().enumerate() {
        let a = by_nft.run(|| old.reconcile_cached(s).unwrap());
        let b = in_process.run(|| new.reconcile_cached(s).unwrap());
        assert_eq!(a.transaction, b.transaction, "step {i}: the same plan");
        if i > 0 {
            assert!(b.transaction.elements_only(), "step {i}: {b:#?}");
            assert!(!b.transaction.set_deltas.is_empty(), "step {i}");
        }
        assert_eq!(ruleset(&by_nft), ruleset(&in_process), "step {i}");
        // A restart (a fresh reconciler reading the kernel) plans nothing.
        let restarted = NftReconciler::new(NftConfig::default());
        let r = in_process.run(|| restarted.reconcile(s).unwrap());
        assert!(r.unchanged(), "step {i}: {r:#?}");
    }
}

#[test]
fn a_refused_batch_changes_nothing_and_names_the_message() {
    let ns = Netns::new("nfnl").unwrap();
    let s = state(&["10.0.0.10/32"], &[]);
    ns.run(|| {
        NftReconciler::new(NftConfig::default())
            .reconcile(&s)
            .unwrap()
    });
    let before = ruleset(&ns);
    let delta = |removed: &[&str], added: &[&str]| SetDelta {
        family: Family::Inet,
        set: "rg_client_4".into(),
        was_empty: false,
        removed: removed.iter().map(|a| a.parse().unwrap()).collect(),
        added: added.iter().map(|a| a.parse().unwrap()).collect(),
    };
    // Message 0 adds a member, message 1 removes one that is not there.
    let mut messages = element_messages(&[delta(&[], &["10.0.0.77/32"])]);
    messages.extend(element_messages(&[delta(&["10.0.0.99/32"], &[])]));
    let err = ns.run(|| send_batch(&messages)).unwrap_err();
    match &err {
        BatchError::Refused { index, source, .. } => {
            assert_eq!(*index, 1, "{err}");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{err}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(ruleset(&ns), before, "nothing of the batch applied");
    // The same batch without the bad message applies.
    ns.run(|| send_batch(&messages[..1])).unwrap();
    let set = json(
        &ns,
        "nft",
        &["-j", "list", "set", "inet", "vnet", "rg_client_4"],
    );
    assert!(set.to_string().contains("10.0.0.77"), "{set}");
}

/// `state` with group rules of every typed shape: ports and port ranges,
/// ICMP type and code (IPv4 and IPv6), prefixes byte-aligned or not, a list
/// of prefixes (an anonymous set: text only), egress to a prefix.
fn rich_state() -> HostState {
    let mut s = state(&["10.0.0.10/32", "fd00::10/128"], &["10.9.0.0/16"]);
    let rule = |direction, ethertype, protocol, ports, icmp, remote: &str| RuleSpec {
        id: format!("{direction:?}{ethertype:?}{protocol:?}{ports:?}{icmp:?}{remote}"),
        direction,
        ethertype,
        protocol,
        ports,
        icmp,
        remote: if remote.is_empty() {
            RuleRemote::Any
        } else {
            RuleRemote::Prefix(remote.parse().unwrap())
        },
    };
    use RuleDirection::{Egress, Ingress};
    use RuleEthertype::{IPv4, IPv6};
    if let Some(g) = s.security_groups.get_mut("web") {
        g.rules.extend([
            rule(
                Ingress,
                IPv4,
                Some(17),
                Some((1000, 2000)),
                None,
                "10.1.2.0/23",
            ),
            rule(Ingress, IPv4, Some(1), None, Some((8, Some(0))), ""),
            rule(
                Ingress,
                IPv6,
                Some(58),
                None,
                Some((128, None)),
                "2001:db8::/60",
            ),
            rule(
                Ingress,
                IPv4,
                Some(6),
                Some((22, 22)),
                None,
                "192.168.0.0/24",
            ),
            rule(
                Ingress,
                IPv4,
                Some(6),
                Some((22, 22)),
                None,
                "172.16.0.0/12",
            ),
            rule(Egress, IPv4, Some(6), Some((443, 443)), None, "10.0.0.0/8"),
            rule(Egress, IPv6, None, None, None, ""),
        ]);
    }
    s
}

#[test]
fn typed_rules_sent_over_netlink_list_as_nfts() {
    let by_nft = Netns::new("nfr").unwrap();
    let by_netlink = Netns::new("nfr").unwrap();
    let s = rich_state();
    by_nft.run(|| {
        NftReconciler::new(NftConfig::default())
            .by_process(true)
            .reconcile(&s)
            .unwrap()
    });
    // The same ruleset: tables, chains and sets by nft, then every chain's
    // rules in order, each typed one in a netlink batch, the others by nft.
    let want = agent::nft::desired(&s, &NftConfig::default());
    let mut bare = want.clone();
    for t in [&mut bare.bridge, &mut bare.inet] {
        for c in t.chains.values_mut() {
            c.rules.clear();
            c.typed.clear();
        }
    }
    let skeleton = agent::nft::plan(&bare, &agent::nft::ObservedNft::default());
    by_netlink
        .sh(&format!("nft -f - <<'EOF'\n{}EOF", skeleton.script))
        .unwrap();
    let (mut typed, mut text, mut set_ids) = (0, 0, 0);
    for family in [Family::Bridge, Family::Inet] {
        for (name, chain) in &want.table(family).chains {
            let mut batch = vec![];
            for rule in &chain.typed {
                let tag = agent::nft::rule_tag(&rule.to_string());
                match add_rule_messages(family, name, rule, &tag, &mut set_ids) {
                    Ok(m) => {
                        typed += 1;
                        batch.extend(m);
                    }
                    Err(_) => {
                        text += 1;
                        by_netlink.run(|| send_batch(&batch)).unwrap();
                        batch.clear();
                        by_netlink
                            .exec(
                                "nft",
                                &[
                                    "add",
                                    "rule",
                                    family.as_str(),
                                    "vnet",
                                    name,
                                    &rule.to_string(),
                                    "comment",
                                    &format!("\"{tag}\""),
                                ],
                            )
                            .unwrap();
                    }
                }
            }
            by_netlink.run(|| send_batch(&batch)).unwrap();
        }
    }
    // Every rule typed (the list of prefixes too) but the base chains'
    // lookups in their named maps, written with the tables by nft.
    let base_lookups = [&want.bridge, &want.inet]
        .iter()
        .flat_map(|t| t.chains.values())
        .filter(|c| c.hook.is_some())
        .flat_map(|c| &c.typed)
        .filter(|r| matches!(r, agent::nft::rule::Rule::Text(_)))
        .count();
    assert_eq!(base_lookups, 6);
    assert!(
        typed > 30 && text == base_lookups,
        "typed {typed}, text {text}"
    );
    assert_eq!(ruleset(&by_nft), ruleset(&by_netlink));
    // nft reads the comments back as the tags `plan` compares: a restart
    // plans nothing.
    let r = by_netlink.run(|| {
        NftReconciler::new(NftConfig::default())
            .reconcile(&s)
            .unwrap()
    });
    assert!(r.unchanged(), "{r:#?}");
}

#[test]
fn rule_chain_and_set_changes_in_process_leave_the_ruleset_nft_leaves() {
    let by_nft = Netns::new("nfr").unwrap();
    let in_process = Netns::new("nfr").unwrap();
    let old = NftReconciler::new(NftConfig::default()).by_process(true);
    let new = NftReconciler::new(NftConfig::default()).by_process(false);
    // The second network's bridge, as the link reconciler would make it
    // (its netfilter switches are set after each change).
    for ns in [&by_nft, &in_process] {
        ns.ip(&["link", "add", "vnbr200", "type", "bridge"])
            .unwrap();
    }
    let base = rich_state();
    let with = |f: &dyn Fn(&mut HostState)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    let ssh = RuleSpec {
        id: "ssh".into(),
        direction: RuleDirection::Ingress,
        ethertype: RuleEthertype::IPv6,
        protocol: Some(6),
        ports: Some((22, 22)),
        icmp: None,
        remote: RuleRemote::Prefix("2001:db8:5::/48".parse().unwrap()),
    };
    let groups = |port: &'static str, groups: &'static [&'static str]| {
        move |s: &mut HostState| {
            if let Some(p) = s.port_security.get_mut(port) {
                p.security_groups = groups.iter().map(|g| g.to_string()).collect();
            }
        }
    };
    // (state, whether the in-process path sends it without a process)
    let steps: Vec<(HostState, bool)> = vec![
        // Tables and base chains: by nft on both paths.
        (base.clone(), false),
        // A rule added to a group: its chains rewritten.
        (
            with(&|s| {
                if let Some(g) = s.security_groups.get_mut("web") {
                    g.rules.push(ssh.clone());
                }
            }),
            true,
        ),
        // And removed again.
        (base.clone(), true),
        // A port gains a group: its chains rewritten, the group's chains
        // and member sets made.
        (with(&groups("pa", &["client", "web"])), true),
        // A group's last port leaves it: its chains and sets deleted.
        (with(&groups("pb", &["client"])), true),
        (base.clone(), true),
        // A port added: its chains, and the base chains' maps rewritten.
        (
            with(&|s| {
                if let Some(n) = s.networks.get_mut("n") {
                    n.local_ports
                        .insert("pc".into(), local("tapc", "fa:16:3e:00:60:0c", "10.0.0.12"));
                }
                s.port_security.insert(
                    "pc".into(),
                    PortSecuritySpec {
                        enabled: true,
                        security_groups: vec!["web".into()],
                        allowed_sources: vec![AllowedSource {
                            mac: mac("fa:16:3e:00:60:0c"),
                            ip: "10.0.0.12/32".parse().unwrap(),
                        }],
                    },
                );
            }),
            true,
        ),
        // And removed.
        (base.clone(), true),
        // A port on a network new to the host: its conntrack zone too.
        (
            with(&|s| {
                let mut n2 = network(200);
                n2.local_ports
                    .insert("pd".into(), local("tapd", "fa:16:3e:00:60:0d", "10.0.0.13"));
                s.networks.insert("n2".into(), n2);
                s.port_security.insert(
                    "pd".into(),
                    PortSecuritySpec {
                        enabled: true,
                        security_groups: vec!["client".into()],
                        allowed_sources: vec![AllowedSource {
                            mac: mac("fa:16:3e:00:60:0d"),
                            ip: "10.0.0.13/32".parse().unwrap(),
                        }],
                    },
                );
            }),
            true,
        ),
        (base.clone(), true),
    ];
    for (i, (s, process_free)) in steps.iter().enumerate() {
        let a = by_nft.run(|| old.reconcile_cached(s).unwrap());
        let b = in_process.run(|| new.reconcile_cached(s).unwrap());
        assert_eq!(a.transaction, b.transaction, "step {i}: the same plan");
        assert!(!b.transaction.is_empty(), "step {i}: something to do");
        assert_eq!(
            transaction_messages(&b.transaction).is_ok(),
            *process_free,
            "step {i}: {:#?}",
            b.transaction.ops
        );
        assert_eq!(ruleset(&by_nft), ruleset(&in_process), "step {i}");
        let restarted = NftReconciler::new(NftConfig::default());
        let r = in_process.run(|| restarted.reconcile(s).unwrap());
        assert!(r.unchanged(), "step {i}: {r:#?}");
    }
}

#[test]
fn a_thousand_ports_in_one_batch_are_all_acknowledged() {
    let ns = Netns::new("nfbig").unwrap();
    let mut s = state(&["10.0.0.10/32"], &[]);
    let r = NftReconciler::new(NftConfig::default());
    ns.run(|| r.reconcile(&s).unwrap());
    // One delta: 1,000 secured ports, some 20,000 messages in one batch,
    // each acknowledged; the kernel's answers must all fit the socket.
    let template = s.port_security["pb"].clone();
    for i in 0..1000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        let m = format!("fa:16:3e:01:{hi:02x}:{lo:02x}");
        let ip = format!("10.1.{hi}.{lo}");
        let id = format!("p{i}");
        s.networks
            .get_mut("n")
            .unwrap()
            .local_ports
            .insert(id.clone(), local(&format!("tapn{i}"), &m, &ip));
        let mut spec = template.clone();
        spec.allowed_sources = vec![AllowedSource {
            mac: mac(&m),
            ip: format!("{ip}/32").parse().unwrap(),
        }];
        s.port_security.insert(id, spec);
    }
    let report = ns.run(|| r.reconcile_cached(&s)).unwrap();
    // Their anti-spoofing chains, and map elements past one message's
    // worth (a jump names its chain: 1,000 of them are over 64 KiB).
    assert!(report.transaction.chains_written.len() >= 1000);
    // What the batch left is what a fresh reader finds: nothing to do.
    let fresh = ns.run(|| {
        NftReconciler::new(NftConfig::default())
            .reconcile(&s)
            .unwrap()
    });
    assert!(
        fresh.unchanged(),
        "{:#?}",
        fresh.transaction.chains_written.len()
    );
}
