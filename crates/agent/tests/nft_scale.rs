//! Programming cost of `agent::nft` at scale (root, one namespace; the
//! rules need no devices). Prints the figures:
//! - one member joining a 10,000-member remote group (one element, one
//!   transaction), as a whole reconcile, a cached one, and the transaction
//!   alone;
//! - a 1,000-rule group applied to a first port (its chain written) and to
//!   a second port (its profile's chains shared: only its anti-spoofing
//!   chain and map elements).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent::nft::{NftConfig, NftReconciler, desired, plan};
use compiler::protocol::{
    AllowedSource, FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, PortSecuritySpec,
    RuleDirection, RuleEthertype, RuleRemote, RuleSpec, SecurityGroupSpec,
};
use testworld::Netns;

fn port(s: &mut HostState, id: &str, n: u8, groups: &[&str]) {
    let mac = format!("fa:16:3e:00:50:{n:02x}").parse().unwrap();
    let ip = format!("10.0.0.{n}");
    s.networks
        .entry("n".into())
        .or_insert_with(|| NetworkSpec {
            vni: 100,
            mtu: 1450,
            physical_network: None,
            subnets: BTreeMap::new(),
            local_ports: BTreeMap::new(),
            remote_ports: BTreeMap::new(),
        })
        .local_ports
        .insert(
            id.into(),
            LocalPortSpec {
                mac,
                fixed_ips: vec![FixedIpSpec {
                    subnet_id: "s".into(),
                    ip_address: ip.parse().unwrap(),
                }],
                device: format!("tap{id}"),
                admin_state_up: true,
                dhcpv4_options: vec![],
                dhcpv6_options: vec![],
            },
        );
    s.port_security.insert(
        id.into(),
        PortSecuritySpec {
            enabled: true,
            security_groups: groups.iter().map(|g| g.to_string()).collect(),
            allowed_sources: vec![AllowedSource {
                mac,
                ip: format!("{ip}/32").parse().unwrap(),
            }],
        },
    );
}

fn rule(i: u32, remote: RuleRemote) -> RuleSpec {
    RuleSpec {
        id: format!("r{i}"),
        direction: RuleDirection::Ingress,
        ethertype: RuleEthertype::IPv4,
        protocol: Some(6),
        ports: Some((1000 + i as u16, 1000 + i as u16)),
        icmp: None,
        remote,
    }
}

fn member(i: u32) -> ipnet::IpNet {
    let [_, a, b, c] = (0x0a00_0000 + i).to_be_bytes();
    format!("10.{a}.{b}.{c}/32").parse().unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[test]
fn one_member_joining_a_10k_group_and_a_1k_rule_group_on_a_new_port() {
    let ns = Netns::new("ns").unwrap();
    ns.run(|| {
        let r = NftReconciler::new(NftConfig::default());
        let cfg = NftConfig::default();

        // --- 10,000 members ---
        let mut s = HostState::default();
        port(&mut s, "a", 10, &["big"]);
        s.security_groups.insert(
            "big".into(),
            SecurityGroupSpec {
                stateful: true,
                rules: vec![rule(0, RuleRemote::Group("big".into()))],
            },
        );
        s.remote_groups
            .insert("big".into(), (1..=10_000).map(member).collect());
        let t = Instant::now();
        let first = r.reconcile(&s).unwrap();
        let load = t.elapsed();
        assert_eq!(first.transaction.elements_added.len(), 10_000);
        s.remote_groups.get_mut("big").unwrap().insert(member(20_000));
        let t = Instant::now();
        let join = r.reconcile(&s).unwrap();
        let join_total = t.elapsed();
        assert_eq!(join.transaction.elements_added.len(), 1);
        assert!(join.transaction.chains_written.is_empty());
        // The transaction alone (as a daemon holding its view would run it).
        s.remote_groups.get_mut("big").unwrap().insert(member(20_001));
        let have = r.observe().unwrap();
        let tx = plan(&desired(&s, &cfg), &have);
        let t = Instant::now();
        r.apply(&tx).unwrap();
        let join_tx = t.elapsed();
        assert!(r.reconcile(&s).unwrap().unchanged());
        // A cached reconcile (the daemon's steady state): no listing.
        s.remote_groups.get_mut("big").unwrap().insert(member(20_002));
        let t = Instant::now();
        let cached = r.reconcile_cached(&s).unwrap();
        let join_cached = t.elapsed();
        assert_eq!(cached.transaction.elements_added.len(), 1);
        assert_eq!(r.observe().unwrap(), agent::nft::ObservedNft::from_ruleset(&desired(&s, &cfg)));
        println!("10k-member set: one member joins, cached reconcile {}", ms(join_cached));
        println!(
            "10k-member set: initial load {}; one member joins: reconcile {} (observe {}, nft -f {}); transaction alone {}",
            ms(load),
            ms(join_total),
            ms(join.observe),
            ms(join.execute),
            ms(join_tx)
        );
        assert!(join_tx < Duration::from_secs(2));

        // --- 1,000 rules ---
        let mut s = HostState::default();
        port(&mut s, "a", 10, &["thousand"]);
        s.security_groups.insert(
            "thousand".into(),
            SecurityGroupSpec {
                stateful: true,
                rules: (0..1000)
                    .map(|i| rule(i, RuleRemote::Prefix(member(i + 1))))
                    .collect(),
            },
        );
        r.remove_all().unwrap();
        let t = Instant::now();
        let first = r.reconcile(&s).unwrap();
        let first_port = t.elapsed();
        assert!(first.transaction.chains_written.contains(&"inet/g_thousand_i".to_string()));
        port(&mut s, "b", 11, &["thousand"]);
        let t = Instant::now();
        let second = r.reconcile(&s).unwrap();
        let second_port = t.elapsed();
        assert!(!second.transaction.chains_written.contains(&"inet/g_thousand_i".to_string()));
        println!(
            "1,000-rule group: on a first port {} (nft -f {}); on a further port {} (nft -f {}, {} chains written)",
            ms(first_port),
            ms(first.execute),
            ms(second_port),
            ms(second.execute),
            second.transaction.chains_written.len()
        );
        assert!(r.reconcile(&s).unwrap().unchanged());
    });
}
