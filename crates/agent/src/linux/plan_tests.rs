//! Plan tests, no root: desired states against hand-built observations, and
//! the view's model of the kernel (`Observed::apply`) to check that a plan,
//! once applied, leaves nothing to do.

use std::collections::BTreeMap;
use std::net::IpAddr;

use compiler::protocol::{FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, RemotePortSpec};
use model::MacAddr;

use super::*;
use crate::linux::link::{LinkKind, PortFlags};
use crate::linux::observed::{Observed, ObservedLink};
use crate::linux::{PortWiring, port_wiring};

fn mac(last: u8) -> MacAddr {
    MacAddr([0xfa, 0x16, 0x3e, 0, 0, last])
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn config() -> LinuxConfig {
    LinuxConfig::new(ip("192.0.2.1"))
}

fn local(device: &str, last: u8, addr: &str) -> LocalPortSpec {
    LocalPortSpec {
        mac: mac(last),
        fixed_ips: vec![FixedIpSpec {
            subnet_id: "s".into(),
            ip_address: ip(addr),
        }],
        device: device.into(),
        admin_state_up: true,
        dhcpv4_options: vec![],
        dhcpv6_options: vec![],
    }
}

fn remote(last: u8, addr: &str, vtep: &str) -> RemotePortSpec {
    RemotePortSpec {
        mac: mac(last),
        ips: vec![ip(addr)],
        vtep: ip(vtep),
    }
}

fn network(vni: u32) -> NetworkSpec {
    NetworkSpec {
        vni,
        mtu: 1450,
        physical_network: None,
        subnets: BTreeMap::new(),
        local_ports: BTreeMap::new(),
        remote_ports: BTreeMap::new(),
    }
}

/// One network (VNI 100) with local port `a` on `tapa` and remote port `b`.
fn one_network() -> HostState {
    let mut net = network(100);
    net.local_ports
        .insert("a".into(), local("tapa", 0x0a, "10.0.0.10"));
    net.remote_ports
        .insert("b".into(), remote(0x0b, "10.0.0.11", "192.0.2.2"));
    let mut s = HostState::default();
    s.networks.insert("n1".into(), net);
    s
}

/// A tap as Nova leaves it: down, MTU 1500, not a bridge port.
fn tap(index: u32) -> ObservedLink {
    ObservedLink {
        index,
        kind: LinkKind::Other("tun".into()),
        mtu: 1500,
        address: None,
        up: false,
        master: None,
        ipv6_silent: Some(false),
        port_flags: None,
    }
}

fn with_taps(names: &[&str]) -> Observed {
    let mut o = Observed::default();
    for (i, n) in names.iter().enumerate() {
        o.links.insert((*n).into(), tap(10 + i as u32));
    }
    o
}

/// Plans, checks the plan is in phase order, applies it, and checks that
/// nothing is left to do.
fn converge(state: &HostState, o: &mut Observed) -> Vec<Op> {
    let ops = plan(state, &config(), o);
    assert!(ops.windows(2).all(|w| w[0].phase() <= w[1].phase()));
    for op in &ops {
        o.apply(op);
    }
    let again = plan(state, &config(), o);
    assert!(again.is_empty(), "second plan not empty: {again:#?}");
    ops
}

fn show(ops: &[Op]) -> Vec<String> {
    ops.iter().map(|o| o.to_string()).collect()
}

#[test]
fn from_empty_builds_the_network_and_wires_the_port() {
    let mut o = with_taps(&["tapa"]);
    let ops = converge(&one_network(), &mut o);
    assert_eq!(
        show(&ops),
        [
            "ip link add vnbr100 address 02:76:6e:00:00:64 mtu 1450 type bridge",
            "ip link add vnvx100 mtu 1450 type vxlan id 100 local 192.0.2.1 dstport 4789 nolearning",
            "ip link set vnbr100 addrgenmode none",
            "ip link set vnvx100 master vnbr100",
            "ip link set vnvx100 addrgenmode none",
            "ip link set tapa mtu 1450",
            "ip link set tapa master vnbr100",
            "bridge link set dev vnvx100 learning off neigh_suppress on flood off mcast_flood off bcast_flood off",
            "ip link set vnbr100 up",
            "ip link set vnvx100 up",
            "ip link set tapa up",
            "bridge fdb replace fa:16:3e:00:00:0a dev tapa master static",
            "bridge fdb replace fa:16:3e:00:00:0b dev vnvx100 master static",
            "bridge fdb replace fa:16:3e:00:00:0b dev vnvx100 self permanent dst 192.0.2.2",
            "ip neigh replace 10.0.0.10 lladdr fa:16:3e:00:00:0a dev vnbr100 nud permanent",
            "ip neigh replace 10.0.0.11 lladdr fa:16:3e:00:00:0b dev vnbr100 nud permanent",
        ]
    );
    // The local port keeps the kernel's default port flags: neigh_suppress
    // stays off on a VM's own port.
    assert!(
        !ops.iter()
            .any(|op| matches!(op, Op::SetPortFlags { dev, .. } if dev == "tapa"))
    );
    let wiring = port_wiring(
        &Desired::from_host_state(&one_network(), &config()),
        &o.links,
    );
    assert_eq!(wiring["a"], PortWiring::Wired);
}

#[test]
fn a_converged_kernel_plans_nothing_even_for_a_new_process() {
    let mut o = with_taps(&["tapa"]);
    converge(&one_network(), &mut o);
    // A restarted agent has nothing but the kernel: same observation, same
    // (empty) plan.
    let restarted = o.clone();
    assert!(plan(&one_network(), &config(), &restarted).is_empty());
}

#[test]
fn removing_a_remote_port_removes_exactly_its_entries() {
    let mut o = with_taps(&["tapa"]);
    let mut state = one_network();
    state
        .networks
        .get_mut("n1")
        .expect("n1")
        .remote_ports
        .insert("c".into(), remote(0x0c, "10.0.0.12", "192.0.2.3"));
    converge(&state, &mut o);
    state
        .networks
        .get_mut("n1")
        .expect("n1")
        .remote_ports
        .remove("b");
    let ops = converge(&state, &mut o);
    assert_eq!(
        show(&ops),
        [
            "bridge fdb del fa:16:3e:00:00:0b dev vnvx100 master",
            "bridge fdb del fa:16:3e:00:00:0b dev vnvx100 self",
            "ip neigh del 10.0.0.11 dev vnbr100",
        ]
    );
}

#[test]
fn removing_the_last_local_port_removes_the_network_and_detaches_the_device() {
    let mut o = with_taps(&["tapa"]);
    converge(&one_network(), &mut o);
    let ops = converge(&HostState::default(), &mut o);
    // Entries go with their devices: no per-entry deletes.
    assert_eq!(
        show(&ops),
        [
            "ip link set tapa nomaster",
            "ip link del vnbr100",
            "ip link del vnvx100",
        ]
    );
    assert!(
        o.links.contains_key("tapa"),
        "a port's device is never deleted"
    );
}

#[test]
fn a_deleted_local_port_is_detached_and_its_entries_removed() {
    let mut o = with_taps(&["tapa", "tapz"]);
    let mut state = one_network();
    state
        .networks
        .get_mut("n1")
        .expect("n1")
        .local_ports
        .insert("z".into(), local("tapz", 0x1a, "10.0.0.26"));
    converge(&state, &mut o);
    state
        .networks
        .get_mut("n1")
        .expect("n1")
        .local_ports
        .remove("z");
    let ops = converge(&state, &mut o);
    // Detaching drops the device's bridge FDB entries; the neighbour entry
    // lives on the bridge and goes explicitly.
    assert_eq!(
        show(&ops),
        [
            "ip neigh del 10.0.0.26 dev vnbr100",
            "ip link set tapz nomaster",
        ]
    );
}

#[test]
fn a_missing_device_is_not_wired_but_its_addresses_are_answered() {
    let mut o = Observed::default();
    let ops = converge(&one_network(), &mut o);
    assert!(!ops.iter().any(|op| op.device() == "tapa"), "{ops:#?}");
    assert!(ops.iter().any(
        |op| matches!(op, Op::AddNeighbour { ip, .. } if *ip == "10.0.0.10".parse::<IpAddr>().expect("ip"))
    ));
    let wiring = port_wiring(
        &Desired::from_host_state(&one_network(), &config()),
        &o.links,
    );
    assert_eq!(wiring["a"], PortWiring::DeviceMissing);

    // When the tap appears, the next plan wires it and adds its FDB entry.
    o.links.insert("tapa".into(), tap(10));
    let ops = converge(&one_network(), &mut o);
    assert_eq!(
        show(&ops),
        [
            "ip link set tapa mtu 1450",
            "ip link set tapa master vnbr100",
            "ip link set tapa up",
            "bridge fdb replace fa:16:3e:00:00:0a dev tapa master static",
        ]
    );
}

#[test]
fn an_admin_down_port_is_attached_but_down() {
    let mut state = one_network();
    state
        .networks
        .get_mut("n1")
        .expect("n1")
        .local_ports
        .get_mut("a")
        .expect("a")
        .admin_state_up = false;
    let mut o = with_taps(&["tapa"]);
    o.links.get_mut("tapa").expect("tapa").up = true;
    let ops = converge(&state, &mut o);
    assert!(show(&ops).contains(&"ip link set tapa down".to_string()));
    let wiring = port_wiring(&Desired::from_host_state(&state, &config()), &o.links);
    assert_eq!(wiring["a"], PortWiring::Down);
}

#[test]
fn foreign_objects_are_never_touched() {
    // What Observed would never keep is not even looked at; but even if a
    // foreign link were handed in, the plan leaves it alone.
    let mut o = with_taps(&["tapa"]);
    o.links.insert("eth0".into(), tap(2));
    let mut br0 = ObservedLink::fresh(LinkKind::Bridge, 1500, None);
    br0.up = true;
    o.links.insert("br0".into(), br0);
    let mut other_port = tap(3);
    other_port.master = Some("br0".into());
    other_port.port_flags = Some(PortFlags::KERNEL_DEFAULT);
    o.links.insert("veth9".into(), other_port);
    let ops = converge(&one_network(), &mut o);
    for op in &ops {
        assert!(
            ["vnbr100", "vnvx100", "tapa"].contains(&op.device()),
            "touches a foreign device: {op}"
        );
    }
    assert!(
        plan(
            &HostState::default(),
            &config(),
            &with_taps(&["eth0", "br0"])
        )
        .is_empty()
    );
}

#[test]
fn stray_entries_on_vnet_devices_are_removed_and_wrong_ones_fixed() {
    let mut o = with_taps(&["tapa"]);
    converge(&one_network(), &mut o);
    // Someone added a flood entry, a second remote, a stale MAC, a wrong neighbour.
    let vx = o.vxlan_fdb.get_mut("vnvx100").expect("vx");
    vx.insert(MacAddr([0; 6]), vec![ip("192.0.2.9")]);
    vx.insert(mac(0x0b), vec![ip("192.0.2.2"), ip("192.0.2.9")]);
    o.fdb
        .get_mut("vnbr100")
        .expect("fdb")
        .insert(mac(0x99), "vnvx100".into());
    o.neighbours
        .get_mut("vnbr100")
        .expect("neigh")
        .insert(ip("10.0.0.11"), mac(0x98));
    let ops = converge(&one_network(), &mut o);
    assert_eq!(
        show(&ops),
        [
            "bridge fdb del fa:16:3e:00:00:99 dev vnvx100 master",
            "bridge fdb del fa:16:3e:00:00:0b dev vnvx100 self",
            "bridge fdb del 00:00:00:00:00:00 dev vnvx100 self",
            "bridge fdb replace fa:16:3e:00:00:0b dev vnvx100 self permanent dst 192.0.2.2",
            "ip neigh replace 10.0.0.11 lladdr fa:16:3e:00:00:0b dev vnbr100 nud permanent",
        ]
    );
}

#[test]
fn a_misconfigured_vxlan_device_is_recreated() {
    let mut o = with_taps(&["tapa"]);
    converge(&one_network(), &mut o);
    o.links.get_mut("vnvx100").expect("vx").kind = LinkKind::vxlan(100, ip("192.0.2.77"), 4789);
    let ops = converge(&one_network(), &mut o);
    let shown = show(&ops);
    assert_eq!(shown[0], "ip link del vnvx100");
    assert!(
        shown.contains(
            &"bridge fdb replace fa:16:3e:00:00:0b dev vnvx100 self permanent dst 192.0.2.2"
                .to_string()
        )
    );
    assert!(!shown.iter().any(|s| s.contains("tapa")), "{shown:#?}");
}

#[test]
fn a_port_that_moves_host_moves_its_mac() {
    // Remote b becomes local on tapb: its MAC moves from the VXLAN port to
    // the tap by the add alone, and its VXLAN entry goes.
    let mut o = with_taps(&["tapa", "tapb"]);
    let mut state = one_network();
    converge(&state, &mut o);
    let net = state.networks.get_mut("n1").expect("n1");
    net.remote_ports.remove("b");
    net.local_ports
        .insert("b".into(), local("tapb", 0x0b, "10.0.0.11"));
    let ops = converge(&state, &mut o);
    assert_eq!(
        show(&ops),
        [
            "bridge fdb del fa:16:3e:00:00:0b dev vnvx100 self",
            "ip link set tapb mtu 1450",
            "ip link set tapb master vnbr100",
            "ip link set tapb up",
            "bridge fdb replace fa:16:3e:00:00:0b dev tapb master static",
        ]
    );
}

#[test]
fn many_networks_converge_and_reconverge_after_changes() {
    let mut state = HostState::default();
    let mut taps = vec![];
    for n in 0..10u32 {
        let mut net = network(1000 + n);
        for p in 0..3u8 {
            let id = format!("l{n}-{p}");
            let dev = format!("tap{n}x{p}");
            net.local_ports
                .insert(id, local(&dev, p, &format!("10.{n}.0.{}", 10 + p)));
            taps.push(dev);
        }
        for p in 0..20u8 {
            net.remote_ports.insert(
                format!("r{n}-{p}"),
                remote(100 + p, &format!("10.{n}.1.{p}"), "192.0.2.2"),
            );
        }
        state.networks.insert(format!("net{n}"), net);
    }
    let names: Vec<&str> = taps.iter().map(String::as_str).collect();
    let mut o = with_taps(&names);
    let ops = converge(&state, &mut o);
    assert_eq!(
        ops.iter()
            .filter(|op| matches!(op, Op::AddVxlanFdb { .. }))
            .count(),
        200
    );
    // Drop a network and a remote port, change an MTU: converges again.
    state.networks.remove("net3");
    let net = state.networks.get_mut("net4").expect("net4");
    net.remote_ports.remove("r4-7");
    net.mtu = 1400;
    converge(&state, &mut o);
}

#[test]
fn a_bridge_without_its_fixed_address_gets_it_and_its_neighbours_back() {
    // The kernel flushes a bridge's neighbours (permanent ones too) when its
    // address changes, so after setting it every answer is written again.
    let mut o = with_taps(&["tapa"]);
    converge(&one_network(), &mut o);
    o.links.get_mut("vnbr100").expect("bridge").address = Some(MacAddr([2, 0, 0, 0, 0, 9]));
    let ops = converge(&one_network(), &mut o);
    assert_eq!(
        show(&ops),
        [
            "ip link set vnbr100 address 02:76:6e:00:00:64",
            "ip neigh replace 10.0.0.10 lladdr fa:16:3e:00:00:0a dev vnbr100 nud permanent",
            "ip neigh replace 10.0.0.11 lladdr fa:16:3e:00:00:0b dev vnbr100 nud permanent",
        ]
    );
}

fn flat_config() -> LinuxConfig {
    config().with_physical_networks(BTreeMap::from([("external".into(), "ext0".into())]))
}

/// A flat network on `external` with local port `a` on `tapa` and remote
/// port `b`.
fn flat_network(physnet: &str) -> HostState {
    let mut net = network(0);
    net.physical_network = Some(physnet.into());
    net.local_ports
        .insert("a".into(), local("tapa", 0x0a, "203.0.113.10"));
    net.remote_ports
        .insert("b".into(), remote(0x0b, "203.0.113.11", "192.0.2.2"));
    let mut s = HostState::default();
    s.networks.insert("ext".into(), net);
    s
}

#[test]
fn a_flat_network_is_a_bridge_enslaving_the_mapped_interface_and_nothing_more() {
    let mut o = with_taps(&["tapa", "ext0"]);
    let state = flat_network("external");
    let ops = plan(&state, &flat_config(), &o);
    assert_eq!(
        show(&ops),
        [
            "ip link add vnbrf331d748a address 02:76:66:1d:74:8a mtu 1450 type bridge",
            "ip link set vnbrf331d748a addrgenmode none",
            "ip link set tapa mtu 1450",
            "ip link set tapa master vnbrf331d748a",
            "ip link set ext0 master vnbrf331d748a",
            "ip link set vnbrf331d748a up",
            "ip link set tapa up",
            "ip link set ext0 up",
            "bridge fdb replace fa:16:3e:00:00:0a dev tapa master static",
        ],
        "no VXLAN device, no VXLAN FDB, no neighbour entries; the interface keeps its MTU"
    );
    for op in &ops {
        o.apply(op);
    }
    assert!(plan(&state, &flat_config(), &o).is_empty());
    assert_eq!(
        o.links["ext0"].port_flags,
        Some(PortFlags::UPLINK),
        "the segment learns and floods"
    );

    // The network goes: the bridge is deleted, the interface only detached.
    let ops = plan(&HostState::default(), &flat_config(), &o);
    let mut shown = show(&ops);
    shown.sort();
    assert_eq!(
        shown,
        [
            "ip link del vnbrf331d748a",
            "ip link set ext0 nomaster",
            "ip link set tapa nomaster",
        ]
    );
    assert!(ops.contains(&Op::Detach { dev: "ext0".into() }));
    assert!(!ops.contains(&Op::DeleteLink {
        name: "ext0".into()
    }));
    assert!(ops.contains(&Op::DeleteLink {
        name: "vnbrf331d748a".into()
    }));
}

#[test]
fn a_flat_network_this_host_does_not_map_builds_nothing() {
    let o = with_taps(&["tapa", "ext0"]);
    let ops = plan(&flat_network("physnet9"), &flat_config(), &o);
    assert!(ops.is_empty(), "{ops:#?}");
    let want = Desired::from_host_state(&flat_network("physnet9"), &flat_config());
    assert!(want.ports.is_empty() && want.uplinks.is_empty() && want.links.is_empty());
}
