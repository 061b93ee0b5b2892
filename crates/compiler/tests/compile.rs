//! The compiler's semantics, one rule per test. Every step also checks that the
//! changes emitted so far, replayed, give exactly each host's snapshot.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Replay, changes_of, host, hosts_in, ip, mac, network, port, subnet};
use compiler::Input;
use compiler::protocol::{Change, FixedIpSpec, RemotePortSpec, tap_name};
use model::{Kind, Resource};

const HOSTS: &[&str] = &["h1", "h2", "h3", "h4"];

/// Three registered hosts and one network `n` (VNI 100) with subnet `s`.
fn cloud() -> Replay {
    let mut r = Replay::default();
    r.step(host("h1", "192.0.2.1"), HOSTS);
    r.step(host("h2", "192.0.2.2"), HOSTS);
    r.step(host("h3", "192.0.2.3"), HOSTS);
    r.step(Input::Network(Box::new(network("n", 100, 1450))), HOSTS);
    r.step(
        Input::Subnet(Box::new(subnet("s", "n", "10.0.0.0/24"))),
        HOSTS,
    );
    r
}

fn put_port(
    r: &mut Replay,
    id: &str,
    net: &str,
    host: &str,
    last: u8,
    addr: &str,
) -> compiler::HostChanges {
    let subnet = if net == "n" { "s" } else { "s2" };
    r.step(
        Input::Port(Box::new(port(id, net, host, last, &[(subnet, addr)]))),
        HOSTS,
    )
}

#[test]
fn unbound_ports_and_empty_networks_appear_nowhere() {
    let mut r = cloud();
    let changes = put_port(&mut r, "p", "n", "", 1, "10.0.0.5");
    assert!(changes.is_empty());
    for h in HOSTS {
        assert!(r.compiler.snapshot(h).networks.is_empty(), "{h}");
    }
    assert_eq!(r.compiler.hosts_of_network("n").count(), 0);
}

#[test]
fn a_bound_port_makes_its_host_carry_the_network_with_all_its_subnets() {
    let mut r = cloud();
    r.step(
        Input::Subnet(Box::new(subnet("s6", "n", "fd00::/64"))),
        HOSTS,
    );
    let changes = put_port(&mut r, "p", "n", "h1", 1, "10.0.0.5");
    assert_eq!(hosts_in(&changes), ["h1"], "only the port's host");
    assert!(matches!(
        changes_of(&changes, "h1")[0],
        Change::NetworkUpsert {
            vni: 100,
            mtu: 1450,
            ..
        }
    ));

    let state = r.compiler.snapshot("h1");
    let net = &state.networks["n"];
    assert_eq!((net.vni, net.mtu), (100, 1450));
    assert_eq!(net.subnets.keys().collect::<Vec<_>>(), ["s", "s6"]);
    let local = &net.local_ports["p"];
    assert_eq!(local.mac, mac(1));
    assert_eq!(local.device, tap_name("p"));
    assert!(local.admin_state_up);
    assert_eq!(
        local.fixed_ips,
        [FixedIpSpec {
            subnet_id: "s".into(),
            ip_address: ip("10.0.0.5"),
        }]
    );
    assert!(net.remote_ports.is_empty());
    assert_eq!(r.compiler.hosts_of_network("n").collect::<Vec<_>>(), ["h1"]);
    assert_eq!(r.compiler.networks_of_host("h1").collect::<Vec<_>>(), ["n"]);
    let lease = net.dhcp_lease("p").unwrap();
    assert_eq!(
        (lease.ip, lease.gateway),
        (ip("10.0.0.5"), Some(ip("10.0.0.1")))
    );
}

#[test]
fn the_binding_profile_names_the_device() {
    let mut r = cloud();
    let mut p = port("p", "n", "h1", 1, &[("s", "10.0.0.5")]);
    p.binding_profile = r#"{"device": "veth-vm1"}"#.into();
    r.step(Input::Port(Box::new(p.clone())), HOSTS);
    assert_eq!(
        r.compiler.snapshot("h1").networks["n"].local_ports["p"].device,
        "veth-vm1"
    );

    p.binding_profile = r#"{"device": 7}"#.into();
    let changes = r.step(Input::Port(Box::new(p)), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1"]);
    assert_eq!(
        r.compiler.snapshot("h1").networks["n"].local_ports["p"].device,
        tap_name("p")
    );
}

#[test]
fn other_carriers_see_a_port_remote_behind_its_hosts_vtep() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    let changes = put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");
    // h3 carries nothing and hears nothing.
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert_eq!(
        changes_of(&changes, "h1"),
        [&Change::RemotePortUpsert {
            network_id: "n".into(),
            port_id: "b".into(),
            spec: RemotePortSpec {
                mac: mac(2),
                ips: vec![ip("10.0.0.6")],
                vtep: ip("192.0.2.2"),
            },
        }]
    );
    let h2 = r.compiler.snapshot("h2");
    assert_eq!(h2.networks["n"].remote_ports["a"].vtep, ip("192.0.2.1"));
    assert_eq!(h2.networks["n"].neighbours().count(), 2);
    assert_eq!(
        r.compiler.hosts_of_network("n").collect::<Vec<_>>(),
        ["h1", "h2"]
    );
}

#[test]
fn ports_of_an_unregistered_host_are_local_there_and_remote_nowhere_until_it_registers() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    let changes = put_port(&mut r, "b", "n", "h4", 2, "10.0.0.6");
    assert_eq!(
        hosts_in(&changes),
        ["h4"],
        "h4's own view does not wait for it"
    );
    assert!(
        r.compiler.snapshot("h1").networks["n"]
            .remote_ports
            .is_empty()
    );
    assert_eq!(
        r.compiler.snapshot("h4").networks["n"].remote_ports["a"].vtep,
        ip("192.0.2.1")
    );
    assert_eq!(r.compiler.underlay_ip("h4"), None);

    let changes = r.step(host("h4", "192.0.2.4"), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1"]);
    assert_eq!(
        r.compiler.snapshot("h1").networks["n"].remote_ports["b"].vtep,
        ip("192.0.2.4")
    );
}

#[test]
fn the_last_local_port_leaving_removes_the_network_from_its_host() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "a2", "n", "h1", 3, "10.0.0.7");
    put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");

    let changes = r.step(Input::PortDeleted("a2".into()), HOSTS);
    assert_eq!(
        changes_of(&changes, "h1"),
        [
            &Change::LocalPortRemove {
                network_id: "n".into(),
                port_id: "a2".into(),
            },
            &Change::PortSecurityRemove {
                port_id: "a2".into(),
            }
        ]
    );
    assert_eq!(
        changes_of(&changes, "h2"),
        [&Change::RemotePortRemove {
            network_id: "n".into(),
            port_id: "a2".into(),
        }]
    );

    let changes = r.step(Input::PortDeleted("a".into()), HOSTS);
    assert_eq!(
        changes_of(&changes, "h1"),
        [
            &Change::NetworkRemove {
                network_id: "n".into()
            },
            &Change::PortSecurityRemove {
                port_id: "a".into()
            }
        ]
    );
    assert_eq!(changes_of(&changes, "h2").len(), 1);
    assert!(r.compiler.snapshot("h1").networks.is_empty());
    assert_eq!(r.compiler.hosts_of_network("n").collect::<Vec<_>>(), ["h2"]);

    // Deleting what is not there is a no-op.
    assert!(r.step(Input::PortDeleted("a".into()), HOSTS).is_empty());
}

#[test]
fn a_port_moving_between_hosts_leaves_one_and_reaches_the_other() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "c", "n", "h3", 3, "10.0.0.7");
    let changes = put_port(&mut r, "a", "n", "h2", 1, "10.0.0.5");
    assert_eq!(hosts_in(&changes), ["h1", "h2", "h3"]);
    assert!(r.compiler.snapshot("h1").networks.is_empty());
    let h2 = r.compiler.snapshot("h2");
    assert!(h2.networks["n"].local_ports.contains_key("a"));
    assert_eq!(h2.networks["n"].remote_ports["c"].vtep, ip("192.0.2.3"));
    assert_eq!(
        r.compiler.snapshot("h3").networks["n"].remote_ports["a"].vtep,
        ip("192.0.2.2")
    );
}

#[test]
fn a_port_moving_between_networks_on_one_host() {
    let mut r = cloud();
    r.step(Input::Network(Box::new(network("n2", 200, 1400))), HOSTS);
    r.step(
        Input::Subnet(Box::new(subnet("s2", "n2", "10.0.0.0/24"))),
        HOSTS,
    );
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");
    let changes = put_port(&mut r, "a", "n2", "h1", 1, "10.0.0.5");
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    let h1 = r.compiler.snapshot("h1");
    assert_eq!(h1.networks.keys().collect::<Vec<_>>(), ["n2"]);
    assert_eq!(h1.networks["n2"].vni, 200);
    assert!(
        r.compiler.snapshot("h2").networks["n"]
            .remote_ports
            .is_empty()
    );
}

#[test]
fn an_underlay_ip_change_reaches_exactly_the_hosts_sharing_a_network() {
    let mut r = cloud();
    r.step(Input::Network(Box::new(network("n2", 200, 1450))), HOSTS);
    r.step(
        Input::Subnet(Box::new(subnet("s2", "n2", "10.1.0.0/24"))),
        HOSTS,
    );
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");
    put_port(&mut r, "c", "n2", "h3", 3, "10.1.0.5");
    // Heartbeats with the same address change nothing.
    assert!(r.step(host("h1", "192.0.2.1"), HOSTS).is_empty());
    let changes = r.step(host("h1", "198.51.100.1"), HOSTS);
    assert_eq!(hosts_in(&changes), ["h2"]);
    assert_eq!(
        r.compiler.snapshot("h2").networks["n"].remote_ports["a"].vtep,
        ip("198.51.100.1")
    );
}

#[test]
fn a_deleted_host_disappears_from_others_views_but_keeps_its_own() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");
    let changes = r.step(Input::HostDeleted("h1".into()), HOSTS);
    assert_eq!(
        changes,
        [(
            "h2".to_owned(),
            Change::RemotePortRemove {
                network_id: "n".into(),
                port_id: "a".into(),
            }
        )]
    );
    assert!(
        r.compiler.snapshot("h1").networks["n"]
            .local_ports
            .contains_key("a")
    );
    // Back again: others learn its ports anew.
    let changes = r.step(host("h1", "192.0.2.1"), HOSTS);
    assert_eq!(hosts_in(&changes), ["h2"]);
}

#[test]
fn a_deleted_network_leaves_its_carriers_and_returns_with_everything_under_it() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");
    let changes = r.step(Input::NetworkDeleted("n".into()), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert!(
        changes
            .iter()
            .all(|(_, c)| matches!(c, Change::NetworkRemove { .. }))
    );
    assert_eq!(r.compiler.hosts_of_network("n").count(), 0);
    assert_eq!(r.compiler.networks_of_host("h1").count(), 0);

    // Ports and subnets that still name it are kept, and come back with it.
    let changes = r.step(Input::Network(Box::new(network("n", 100, 1450))), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    let h1 = r.compiler.snapshot("h1");
    assert!(h1.networks["n"].subnets.contains_key("s"));
    assert!(h1.networks["n"].remote_ports.contains_key("b"));
}

#[test]
fn a_port_on_an_unknown_network_waits_for_it() {
    let mut r = cloud();
    // Only its port security: that is keyed by port, not by network.
    assert!(
        put_port(&mut r, "a", "n9", "h1", 1, "10.9.0.5")
            .iter()
            .all(|(_, c)| matches!(c, Change::PortSecurityUpsert { .. }))
    );
    assert!(
        r.step(
            Input::Subnet(Box::new(subnet("s9", "n9", "10.9.0.0/24"))),
            HOSTS
        )
        .is_empty()
    );
    let changes = r.step(Input::Network(Box::new(network("n9", 900, 1450))), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1"]);
    assert!(
        r.compiler.snapshot("h1").networks["n9"]
            .subnets
            .contains_key("s9")
    );
}

#[test]
fn a_vni_or_mtu_change_reaches_carriers_only() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    assert!(
        r.step(Input::Network(Box::new(network("n", 100, 1450))), HOSTS)
            .is_empty()
    );
    let changes = r.step(Input::Network(Box::new(network("n", 100, 1400))), HOSTS);
    assert_eq!(
        changes,
        [(
            "h1".to_owned(),
            Change::NetworkUpsert {
                network_id: "n".into(),
                vni: 100,
                mtu: 1400,
                physical_network: None,
            }
        )]
    );
    assert_eq!(r.compiler.snapshot("h1").networks["n"].local_ports.len(), 1);
}

#[test]
fn subnet_puts_and_deletes_reach_carriers_only() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");
    let mut s = subnet("s", "n", "10.0.0.0/24");
    assert!(
        r.step(Input::Subnet(Box::new(s.clone())), HOSTS).is_empty(),
        "unchanged"
    );
    s.dns_nameservers = vec![ip("192.0.2.53")];
    let changes = r.step(Input::Subnet(Box::new(s.clone())), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert_eq!(
        r.compiler.snapshot("h1").networks["n"]
            .dhcp_lease("a")
            .unwrap()
            .dns_nameservers,
        [ip("192.0.2.53")]
    );
    // A subnet moved to another network leaves the first one's carriers.
    s.network_id = "elsewhere".into();
    let changes = r.step(Input::Subnet(Box::new(s)), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert!(r.compiler.snapshot("h1").networks["n"].subnets.is_empty());

    r.step(
        Input::Subnet(Box::new(subnet("s", "n", "10.0.0.0/24"))),
        HOSTS,
    );
    let changes = r.step(Input::SubnetDeleted("s".into()), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert!(
        changes
            .iter()
            .all(|(_, c)| matches!(c, Change::SubnetRemove { .. }))
    );
}

#[test]
fn a_port_update_in_place_tells_each_host_only_what_it_sees() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "h1", 1, "10.0.0.5");
    put_port(&mut r, "b", "n", "h2", 2, "10.0.0.6");
    let mut p = port("a", "n", "h1", 1, &[("s", "10.0.0.5")]);
    assert!(
        r.step(Input::Port(Box::new(p.clone())), HOSTS).is_empty(),
        "unchanged"
    );

    // admin_state_up is the local host's business alone.
    p.admin_state_up = false;
    let changes = r.step(Input::Port(Box::new(p.clone())), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1"]);
    assert!(matches!(changes[0].1, Change::LocalPortUpsert { .. }));

    // A new address is everyone's.
    p.fixed_ips[0].ip_address = ip("10.0.0.9");
    let changes = r.step(Input::Port(Box::new(p)), HOSTS);
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert_eq!(
        r.compiler.snapshot("h2").networks["n"].remote_ports["a"].ips,
        [ip("10.0.0.9")]
    );
}

#[test]
fn an_empty_host_name_never_registers() {
    let mut r = cloud();
    put_port(&mut r, "a", "n", "", 1, "10.0.0.5");
    assert!(r.step(host("", "192.0.2.9"), HOSTS).is_empty());
    assert_eq!(r.compiler.underlay_ip(""), None);
    assert!(r.compiler.snapshot("").networks.is_empty());
}

#[test]
fn store_resources_convert_to_inputs() {
    let p = port("a", "n", "h1", 1, &[]);
    assert_eq!(
        Input::put(Resource::Port(p.clone())),
        Some(Input::Port(Box::new(p)))
    );
    assert_eq!(
        Input::deleted(Kind::Subnet, "s".into()),
        Some(Input::SubnetDeleted("s".into()))
    );
    assert_eq!(
        Input::deleted(Kind::SecurityGroup, "g".into()),
        Some(Input::SecurityGroupDeleted("g".into()))
    );
    assert_eq!(
        Input::deleted(Kind::SecurityGroupRule, "r".into()),
        Some(Input::SecurityGroupRuleDeleted("r".into()))
    );
}

fn flat_network(id: &str, physnet: &str) -> model::Network {
    let mut n = network(id, 0, 1450);
    n.network_type = model::FLAT.into();
    n.physical_network = Some(physnet.into());
    n
}

#[test]
fn a_flat_network_reaches_its_carriers_with_its_physical_network_and_no_vni() {
    let mut r = cloud();
    r.step(
        Input::Network(Box::new(flat_network("f", "external"))),
        HOSTS,
    );
    r.step(
        Input::Subnet(Box::new(subnet("s2", "f", "203.0.113.0/24"))),
        HOSTS,
    );
    let changes = put_port(&mut r, "a", "f", "h1", 1, "203.0.113.10");
    assert_eq!(
        changes_of(&changes, "h1")[0],
        &Change::NetworkUpsert {
            network_id: "f".into(),
            vni: 0,
            mtu: 1450,
            physical_network: Some("external".into()),
        }
    );
    put_port(&mut r, "b", "f", "h2", 2, "203.0.113.11");
    let net = &r.compiler.snapshot("h1").networks["f"];
    assert_eq!(net.physical_network.as_deref(), Some("external"));
    // The remote port is still told with its host: the agent decides what a
    // flat network makes of it (no VXLAN FDB).
    assert_eq!(net.remote_ports["b"].vtep, ip("192.0.2.2"));

    // Moving the network to another physical network reaches both carriers.
    let changes = r.step(
        Input::Network(Box::new(flat_network("f", "physnet2"))),
        HOSTS,
    );
    assert_eq!(hosts_in(&changes), ["h1", "h2"]);
    assert!(changes.iter().all(|(_, c)| matches!(
        c,
        Change::NetworkUpsert { physical_network: Some(p), .. } if p == "physnet2"
    )));
}
