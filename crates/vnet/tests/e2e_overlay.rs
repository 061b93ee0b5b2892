//! End to end, as root, in throwaway namespaces: a real `vnet server` and a
//! real `vnet agent` per host, two projects whose networks use the same CIDR,
//! VMs that get their addresses by DHCP, traffic across hosts through VXLAN,
//! isolation, no ARP or broadcast on the overlay, port deletion reaching the
//! other host, and an agent restart under a running ping.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Cloud, dhcp, kernel_state, wait_for};
use testworld::{Capture, vxlan_frames};

#[test]
fn tenant_networks_are_real_across_hosts() {
    let cloud = Cloud::new("e2", 2);
    // Two projects, the same CIDR; each has a VM on each host. The .10 address
    // exists in both; .11 only in A, .12 only in B.
    let (net_a, sub_a) = cloud.network("proj-a", "10.0.0.0/24");
    let (net_b, sub_b) = cloud.network("proj-b", "10.0.0.0/24");
    let (a1, vm_a1) = cloud.vm("proj-a", &net_a, &sub_a, "10.0.0.10", 1);
    let (a2, vm_a2) = cloud.vm("proj-a", &net_a, &sub_a, "10.0.0.11", 2);
    let (b1, vm_b1) = cloud.vm("proj-b", &net_b, &sub_b, "10.0.0.10", 1);
    let (b2, vm_b2) = cloud.vm("proj-b", &net_b, &sub_b, "10.0.0.12", 2);
    for port in [&a1, &a2, &b1, &b2] {
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
    }

    // Every VM gets exactly its port's address by DHCP, from its own host.
    for (vm, ip) in [
        (&vm_a1, "10.0.0.10"),
        (&vm_a2, "10.0.0.11"),
        (&vm_b1, "10.0.0.10"),
        (&vm_b2, "10.0.0.12"),
    ] {
        assert_eq!(dhcp(vm), format!("{ip}/24"));
    }

    // Traffic across hosts, watched on the underlay.
    let capture = Capture::start(&cloud.fabric.ns, "br0", "udp port 4789").unwrap();
    assert_eq!(vm_a1.ping("10.0.0.11", 3), 3, "A reaches A across hosts");
    assert_eq!(vm_b1.ping("10.0.0.12", 3), 3, "B reaches B across hosts");
    assert_eq!(vm_a1.ping("10.0.0.12", 2), 0, "A never reaches B's VM");
    assert_eq!(vm_b1.ping("10.0.0.11", 2), 0, "B never reaches A's VM");

    // A TCP connection across hosts. The listener's stdin stays open until
    // its output is read: at its end busybox nc half-closes, and the client
    // would exit at that end of stream before its `echo` had written (as in
    // common::tcp_once).
    let mut listener = vm_a2.ns.command("busybox");
    listener
        .args(["nc", "-l", "-p", "7000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let listener = listener.spawn().unwrap();
    wait_for("the listener", Duration::from_secs(5), || {
        vm_a2
            .ns
            .exec("busybox", &["netstat", "-ltn"])
            .is_ok_and(|o| o.contains(":7000"))
    });
    vm_a1
        .ns
        .sh("echo across-hosts | busybox nc -w 2 10.0.0.11 7000")
        .unwrap();
    let received = listener.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&received.stdout).trim(),
        "across-hosts"
    );

    let frames = vxlan_frames(&capture.stop().unwrap());
    assert!(!frames.is_empty(), "the pings crossed the overlay");
    assert!(
        !frames.iter().any(|f| f.is_arp()),
        "ARP crossed the overlay"
    );
    assert!(
        !frames.iter().any(|f| f.is_flood()),
        "a broadcast crossed the overlay"
    );

    // Deleting a port removes its forwarding entry on the other host.
    let mac_b2 = vm_b2.mac.clone();
    assert!(
        cloud.hosts[0]
            .ns
            .exec("bridge", &["fdb", "show"])
            .unwrap()
            .contains(&mac_b2)
    );
    cloud.call("DELETE", &format!("/v2.0/ports/{b2}"), None);
    wait_for(
        "b2's FDB entry gone from h1",
        Duration::from_secs(10),
        || {
            !cloud.hosts[0]
                .ns
                .exec("bridge", &["fdb", "show"])
                .unwrap()
                .contains(&mac_b2)
        },
    );
    drop(vm_b2);

    // Kill h1's agent during a ping and start it again: traffic goes on and
    // the kernel ends exactly as it was.
    let mut cloud = cloud;
    let before = kernel_state(&cloud.hosts[0].ns);
    let mut ping = vm_a1.ns.command("busybox");
    ping.args(["ping", "-c", "40", "-i", "0.1", "10.0.0.11"])
        .stdout(Stdio::piped());
    let ping = ping.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(cloud.agents[0].take()); // SIGKILL
    std::thread::sleep(Duration::from_millis(500));
    cloud.agents[0] = Some(cloud.start_agent(0));
    let out = String::from_utf8_lossy(&ping.wait_with_output().unwrap().stdout).into_owned();
    let received: u32 = out
        .lines()
        .find_map(|l| {
            l.split_once("transmitted, ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(
        received >= 39,
        "lost more than one packet across the agent restart: {out}"
    );
    wait_for(
        "the restarted agent's first reconcile",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(cloud.logs.path().join("agent-h1.log"))
                .is_ok_and(|l| l.contains("vnet agent started"))
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        kernel_state(&cloud.hosts[0].ns),
        before,
        "the restart changed the kernel"
    );
    assert_eq!(cloud.status(&a1), "ACTIVE");
    drop((vm_a1, vm_a2, vm_b1));
}
