//! Traffic through what the `linux` backend builds (root, namespaces): two
//! hosts on a fabric, VMs with static IPs, each host's reconciler run inside
//! its namespace with a hand-built host state. VMs of one network reach each
//! other across hosts through VXLAN; the underlay carries no ARP and no
//! broadcast inside VXLAN; two networks with the same CIDR stay apart.

#![allow(clippy::unwrap_used)]

mod linux_common;

use compiler::protocol::HostState;
use linux_common::*;
use testworld::{Capture, Fabric, Host, Vm, vxlan_frames};

struct VmSpec {
    port: &'static str,
    device: &'static str,
    mac: &'static str,
    ip: &'static str,
    host: usize,
    vni: u32,
}

/// Each host's state: for every VM, local on its own host and remote on the
/// other.
fn states(vms: &[VmSpec], hosts: &[&Host]) -> Vec<HostState> {
    hosts
        .iter()
        .enumerate()
        .map(|(h, _)| {
            let mut s = HostState::default();
            for vm in vms {
                let net = s
                    .networks
                    .entry(format!("net{}", vm.vni))
                    .or_insert_with(|| network(vm.vni));
                if vm.host == h {
                    net.local_ports
                        .insert(vm.port.into(), local(vm.device, vm.mac, vm.ip));
                } else {
                    let vtep = hosts[vm.host].underlay_ip().to_string();
                    net.remote_ports
                        .insert(vm.port.into(), remote(vm.mac, vm.ip, &vtep));
                }
            }
            s
        })
        .collect()
}

fn arp_entry(vm: &Vm, ip: &str) -> String {
    vm.ns.ip(&["neigh", "show", ip, "dev", "eth0"]).unwrap()
}

#[test]
fn vms_on_two_hosts_talk_through_vxlan_and_nothing_floods_the_underlay() {
    let fabric = Fabric::new("ld").unwrap();
    let h1 = Host::new(&fabric, "ld", 1).unwrap();
    let h2 = Host::new(&fabric, "ld", 2).unwrap();
    let specs = [
        VmSpec {
            port: "p1",
            device: "tap1",
            mac: "fa:16:3e:00:10:01",
            ip: "10.0.0.1",
            host: 0,
            vni: 100,
        },
        VmSpec {
            port: "p2",
            device: "tap2",
            mac: "fa:16:3e:00:10:02",
            ip: "10.0.0.2",
            host: 1,
            vni: 100,
        },
    ];
    let hosts = [&h1, &h2];
    let vms: Vec<Vm> = specs
        .iter()
        .map(|s| {
            let vm = Vm::new(hosts[s.host], "ld", s.device, s.mac).unwrap();
            vm.add_ip(&format!("{}/24", s.ip)).unwrap();
            vm
        })
        .collect();
    for (host, state) in hosts.iter().zip(states(&specs, &hosts)) {
        let report = reconcile_once(&host.ns, &config(host), &state);
        assert!(report.failed.is_empty(), "{:#?}", report.failed);
        assert_eq!(report.wired().len(), 1);
    }

    let capture = Capture::start(&fabric.ns, "br0", "udp port 4789").unwrap();
    assert_eq!(vms[0].ping("10.0.0.2", 3), 3);
    assert_eq!(vms[1].ping("10.0.0.1", 3), 3);
    // ARP for an address nobody has must not cross either.
    assert_eq!(vms[0].ping("10.0.0.77", 1), 0);
    let frames = vxlan_frames(&capture.stop().unwrap());

    assert!(
        frames.len() >= 12,
        "expected the pings inside VXLAN, got {frames:#?}"
    );
    assert!(frames.iter().all(|f| f.vni == 100));
    let arp: Vec<_> = frames.iter().filter(|f| f.is_arp()).collect();
    assert!(arp.is_empty(), "ARP crossed the overlay: {arp:#?}");
    let flood: Vec<_> = frames.iter().filter(|f| f.is_flood()).collect();
    assert!(
        flood.is_empty(),
        "broadcast/multicast crossed the overlay: {flood:#?}"
    );
    // The VM's ARP was answered by its own host's bridge, with the peer's MAC.
    assert!(arp_entry(&vms[0], "10.0.0.2").contains("fa:16:3e:00:10:02"));
}

#[test]
fn two_networks_with_the_same_cidr_on_the_same_hosts_stay_apart() {
    let fabric = Fabric::new("li").unwrap();
    let h1 = Host::new(&fabric, "li", 1).unwrap();
    let h2 = Host::new(&fabric, "li", 2).unwrap();
    let specs = [
        VmSpec {
            port: "a1",
            device: "tapa1",
            mac: "fa:16:3e:00:0a:01",
            ip: "10.0.0.1",
            host: 0,
            vni: 100,
        },
        VmSpec {
            port: "a2",
            device: "tapa2",
            mac: "fa:16:3e:00:0a:02",
            ip: "10.0.0.2",
            host: 1,
            vni: 100,
        },
        VmSpec {
            port: "b1",
            device: "tapb1",
            mac: "fa:16:3e:00:0b:01",
            ip: "10.0.0.1",
            host: 0,
            vni: 200,
        },
        VmSpec {
            port: "b2",
            device: "tapb2",
            mac: "fa:16:3e:00:0b:02",
            ip: "10.0.0.2",
            host: 1,
            vni: 200,
        },
    ];
    let hosts = [&h1, &h2];
    let vms: Vec<Vm> = specs
        .iter()
        .map(|s| {
            let vm = Vm::new(hosts[s.host], "li", s.device, s.mac).unwrap();
            vm.add_ip(&format!("{}/24", s.ip)).unwrap();
            vm
        })
        .collect();
    let all_states = states(&specs, &hosts);
    for (host, state) in hosts.iter().zip(&all_states) {
        let report = reconcile_once(&host.ns, &config(host), state);
        assert!(report.failed.is_empty(), "{:#?}", report.failed);
        assert_eq!(report.wired().len(), 2);
    }
    let [a1, a2, b1, b2] = &vms[..] else {
        unreachable!()
    };

    // Each VM reaches its own peer, and the other network's twin (same IP,
    // same host) sees none of it. (A bridge's own IGMP/MLD reports reach
    // its local ports; those are not the other network's traffic.)
    let b2_sees = Capture::start(&b2.ns, "eth0", "icmp or arp").unwrap();
    assert_eq!(a1.ping("10.0.0.2", 3), 3);
    assert!(arp_entry(a1, "10.0.0.2").contains("fa:16:3e:00:0a:02"));
    let leaked = b2_sees.stop().unwrap();
    assert!(
        leaked.is_empty(),
        "network 200's VM got network 100's traffic: {leaked:02x?}"
    );
    let a2_sees = Capture::start(&a2.ns, "eth0", "icmp or arp").unwrap();
    assert_eq!(b1.ping("10.0.0.2", 3), 3);
    assert!(arp_entry(b1, "10.0.0.2").contains("fa:16:3e:00:0b:02"));
    let leaked = a2_sees.stop().unwrap();
    assert!(
        leaked.is_empty(),
        "network 100's VM got network 200's traffic: {leaked:02x?}"
    );

    // Without its peer in network 200, b1 reaches nobody, although a VM
    // with that very IP sits on the same two hosts in network 100.
    let mut h1_state = all_states[0].clone();
    h1_state
        .networks
        .get_mut("net200")
        .unwrap()
        .remote_ports
        .remove("b2");
    let report = reconcile_once(&h1.ns, &config(&h1), &h1_state);
    assert_eq!(report.applied.len(), 3, "{:#?}", report.applied);
    b1.ns.ip(&["neigh", "flush", "dev", "eth0"]).unwrap();
    assert_eq!(b1.ping("10.0.0.2", 2), 0);
    assert_eq!(a1.ping("10.0.0.2", 1), 1);
}
