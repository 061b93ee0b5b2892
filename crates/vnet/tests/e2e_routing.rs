//! Distributed east-west routing end to end, as root, in throwaway
//! namespaces: a real server and three agents; one router with interfaces
//! on two subnets, VMs on different hosts. Checked with real packets: ping
//! and TCP across subnets, the packet routed on the sending VM's own host
//! (TTL decremented there, carried on the destination network's VNI), the
//! interface ports going ACTIVE, an extra route via a VM, a host with no
//! port behind the router holding nothing of it, an agent restart under a
//! routed ping, and the interface and the router removed exactly.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use common::{
    Cloud, add_interface, default_route, dhcp, kernel_state, router_namespaces, router_state, tcp,
    wait_for,
};
use serde_json::{Value, json};
use testworld::{Capture, vxlan_frames};

const P: &str = "proj-r";

fn interfaces(cloud: &Cloud, router: &str) -> Vec<Value> {
    let ports = cloud.call(
        "GET",
        &format!("/v2.0/ports?device_id={router}&device_owner=network:router_interface"),
        None,
    );
    ports["ports"].as_array().unwrap().clone()
}

#[test]
fn routers_route_east_west_on_the_sending_host() {
    let cloud = Cloud::new("er", 3);
    let (net_a, sub_a) = cloud.network(P, "10.1.0.0/24");
    let (net_b, sub_b) = cloud.network(P, "10.2.0.0/24");
    let router = cloud.call(
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {"project_id": P, "name": "r1"}})),
    )["router"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    add_interface(&cloud, &router, &sub_a);
    let iface_b = add_interface(&cloud, &router, &sub_b);

    // a1 on h1 (subnet A), b2 on h2 (subnet B, also standing for the
    // networks behind it: 192.168.7.0/24), c3 on h3 on a network of its own.
    let (a1, vm_a1) = cloud.vm(P, &net_a, &sub_a, "10.1.0.10", 1);
    let (b2, vm_b2) = cloud.vm_with(
        P,
        &net_b,
        &sub_b,
        "10.2.0.20",
        2,
        json!({"allowed_address_pairs": [{"ip_address": "192.168.7.0/24"}]}),
    );
    let (net_c, sub_c) = cloud.network(P, "10.3.0.0/24");
    let (c3, _vm_c3) = cloud.vm(P, &net_c, &sub_c, "10.3.0.30", 3);
    for port in [&a1, &b2, &c3] {
        wait_for("VM ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
    }
    // The interfaces are realised on h1 and h2: ACTIVE (what tempest waits for).
    wait_for("interface ports ACTIVE", Duration::from_secs(20), || {
        interfaces(&cloud, &router)
            .iter()
            .all(|p| p["status"] == "ACTIVE")
    });
    assert_eq!(router_namespaces(&cloud, 0).len(), 1, "h1 holds the router");
    assert_eq!(router_namespaces(&cloud, 1).len(), 1, "h2 holds the router");
    assert_eq!(
        router_namespaces(&cloud, 2),
        Vec::<String>::new(),
        "h3 has no port behind the router"
    );

    assert_eq!(dhcp(&vm_a1), "10.1.0.10/24");
    assert_eq!(dhcp(&vm_b2), "10.2.0.20/24");
    default_route(&vm_a1, "10.1.0.1");
    default_route(&vm_b2, "10.2.0.1");

    // Ping and TCP across subnets and hosts, watched on the underlay.
    let capture = Capture::start(&cloud.fabric.ns, "br0", "udp port 4789").unwrap();
    assert_eq!(vm_a1.ping("10.2.0.20", 3), 3, "a1 reaches b2 through r1");
    assert_eq!(tcp(&vm_a1.ns, &vm_b2.ns, "10.2.0.20", 7100), "hello");
    let frames = vxlan_frames(&capture.stop().unwrap());
    let vni = |net: &str| {
        cloud.call("GET", &format!("/v2.0/networks/{net}"), None)["network"]
            ["provider:segmentation_id"]
            .as_u64()
            .unwrap() as u32
    };
    let (vni_a, vni_b) = (vni(&net_a), vni(&net_b));
    let (h1, h2) = (cloud.hosts[0].underlay_ip(), cloud.hosts[1].underlay_ip());
    let (ip_a1, ip_b2) = (Ipv4Addr::new(10, 1, 0, 10), Ipv4Addr::new(10, 2, 0, 20));
    let carried = |src_host, vni, src, dst| {
        frames
            .iter()
            .filter(|f| f.outer_src == src_host && f.vni == vni)
            .filter_map(|f| f.inner_ipv4)
            .filter(|ip| ip.src == src && ip.dst == dst)
            .map(|ip| ip.ttl)
            .collect::<Vec<u8>>()
    };
    // a1 → b2 leaves h1 already routed: on B's VNI, TTL one less than a
    // VM sends (64); b2 → a1 likewise leaves h2 routed, on A's VNI.
    let there = carried(h1, vni_b, ip_a1, ip_b2);
    assert!(
        !there.is_empty() && there.iter().all(|ttl| *ttl == 63),
        "{there:?} {frames:?}"
    );
    let back = carried(h2, vni_a, ip_b2, ip_a1);
    assert!(
        !back.is_empty() && back.iter().all(|ttl| *ttl == 63),
        "{back:?} {frames:?}"
    );
    assert!(
        carried(h1, vni_a, ip_a1, ip_b2).is_empty(),
        "a1's packets never cross the overlay unrouted"
    );
    assert!(!frames.iter().any(|f| f.is_arp() || f.is_flood()));

    // An extra route via a VM acting as a router: b2 stands for
    // 192.168.7.0/24.
    vm_b2
        .ns
        .ip(&["addr", "add", "192.168.7.1/32", "dev", "lo"])
        .unwrap();
    assert_eq!(vm_a1.ping("192.168.7.1", 1), 0, "no route yet");
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router}"),
        Some(json!({"router": {"routes": [{"destination": "192.168.7.0/24", "nexthop": "10.2.0.20"}]}})),
    );
    wait_for("the extra route", Duration::from_secs(10), || {
        vm_a1.ping("192.168.7.1", 1) == 1
    });

    // Kill h1's agent during a routed ping and start it again: at most one
    // packet lost, and the host and its router left exactly as they were.
    let mut cloud = cloud;
    let netns_h1 = router_namespaces(&cloud, 0).remove(0);
    let before = (kernel_state(&cloud.hosts[0].ns), router_state(&netns_h1));
    let mut ping = vm_a1.ns.command("busybox");
    ping.args(["ping", "-c", "30", "-i", "0.1", "10.2.0.20"])
        .stdout(Stdio::piped());
    let ping = ping.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(cloud.agents[0].take()); // SIGKILL
    std::thread::sleep(Duration::from_millis(500));
    cloud.agents[0] = Some(cloud.start_agent(0));
    let out = String::from_utf8_lossy(&ping.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        out.contains("30 packets transmitted, 30 packets received")
            || out.contains("30 packets transmitted, 29 packets received"),
        "lost more than one routed packet across the agent restart: {out}"
    );
    wait_for("the restarted agent", Duration::from_secs(10), || {
        std::fs::read_to_string(cloud.logs.path().join("agent-h1.log"))
            .is_ok_and(|l| l.contains("vnet agent started"))
    });
    let after = (kernel_state(&cloud.hosts[0].ns), router_state(&netns_h1));
    assert_eq!(before, after, "the restart changed the kernel");

    // Removing B's interface stops exactly routing to B: h1 no longer
    // carries B, h2 still carries it for b2.
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router}"),
        Some(json!({"router": {"routes": []}})),
    );
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router}/remove_router_interface"),
        Some(json!({"port_id": iface_b})),
    );
    wait_for(
        "B's interface gone from h1",
        Duration::from_secs(10),
        || !router_state(&netns_h1).contains("10.2.0.1/24"),
    );
    assert_eq!(vm_a1.ping("10.2.0.20", 2), 0, "a1 no longer reaches b2");
    assert_eq!(
        router_namespaces(&cloud, 1),
        Vec::<String>::new(),
        "h2 has no port behind the router any more"
    );

    // The last interface and the router go: so does every namespace.
    let iface_a = interfaces(&cloud, &router)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router}/remove_router_interface"),
        Some(json!({"port_id": iface_a})),
    );
    cloud.call("DELETE", &format!("/v2.0/routers/{router}"), None);
    wait_for("no router namespace left", Duration::from_secs(10), || {
        (0..3).all(|i| router_namespaces(&cloud, i).is_empty())
    });
}
