//! The outside world end to end, as root, in throwaway namespaces: a real
//! server and three agents whose hosts all map the external segment and may
//! run default SNAT; a tenant's router with a gateway on the admin's flat
//! external network. Checked with real packets on the external segment:
//! default SNAT to the gateway address from the gateway host and from
//! another, a floating IP reached from the outside and leaving from its
//! VM's own host (never the gateway host), its disassociation, a port
//! forwarding, SNAT turned off and on, an agent restart that changes
//! nothing, and the gateway failing over when its host dies (with the time
//! it took).

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::time::{Duration, Instant};

use common::{
    Cloud, PHYSICAL_NETWORK, add_interface, default_route, dhcp, router_namespaces, router_state,
    tcp, tcp_via, wait_for,
};
use serde_json::{Value, json};
use testworld::{Capture, OUTSIDE_IP, Outside, VM_DEV};

const P: &str = "proj-n";

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The hosts (0-based) whose router namespaces hold `address` on an uplink.
fn holders(cloud: &Cloud, address: &str) -> Vec<usize> {
    let with = format!(" {address}/32");
    (0..cloud.hosts.len())
        .filter(|&i| {
            router_namespaces(cloud, i).iter().any(|ns| {
                testworld::run_cmd("ip", &["-n", ns, "-br", "addr", "show"]).is_ok_and(|out| {
                    out.lines()
                        .any(|l| l.starts_with("qg-") && l.contains(&with))
                })
            })
        })
        .collect()
}

/// Whether packets the outside receives from `source` arrive while `send`
/// runs, and whether any arrive from the tenant's own addresses.
fn seen_outside(outside: &Outside, source: &str, send: impl FnOnce()) -> (bool, bool) {
    let outside = &outside.ns;
    let from = Capture::start(outside, VM_DEV, &format!("ip src host {source}")).unwrap();
    let private = Capture::start(outside, VM_DEV, "ip src net 10.0.0.0/8").unwrap();
    send();
    (
        !from.stop().unwrap().is_empty(),
        !private.stop().unwrap().is_empty(),
    )
}

/// The admin's external network on the external segment, as an operator
/// makes it; its id.
fn public_network(cloud: &Cloud) -> String {
    let public = id(&cloud.call(
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {
            "name": "public", "router:external": true,
            "provider:network_type": "flat",
            "provider:physical_network": PHYSICAL_NETWORK,
        }})),
    )["network"]);
    cloud.call(
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {
            "network_id": public, "ip_version": 4, "cidr": "203.0.113.0/24",
            "gateway_ip": OUTSIDE_IP, "enable_dhcp": false,
            "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.100"}],
        }})),
    );
    public
}

/// A router of `project` with its gateway on `public` and an interface on
/// `subnet`: its id and gateway address.
fn router_to(cloud: &Cloud, project: &str, public: &str, subnet: &str) -> (String, String) {
    let router = cloud.call(
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {
            "project_id": project, "external_gateway_info": {"network_id": public},
        }})),
    )["router"]
        .clone();
    let router_id = id(&router);
    add_interface(cloud, &router_id, subnet);
    let gateway_ip = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_owned();
    (router_id, gateway_ip)
}

/// A group of `project` that lets anyone ping and connect in (the outside
/// is no member of any group); its id.
fn open_group(cloud: &Cloud, project: &str) -> String {
    let group = id(&cloud.call(
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": "open", "project_id": project}})),
    )["security_group"]);
    for protocol in ["icmp", "tcp"] {
        cloud.call(
            "POST",
            "/v2.0/security-group-rules",
            Some(json!({"security_group_rule": {
                "security_group_id": group, "direction": "ingress", "ethertype": "IPv4",
                "protocol": protocol, "remote_ip_prefix": "0.0.0.0/0",
            }})),
        );
    }
    group
}

/// What `vnet trace` says of TCP from the outside to `address:port`: its
/// verdict and message.
fn traced_in(cloud: &Cloud, address: &str, port: u16) -> (String, String) {
    let body = json!({"trace": {
        "from_ip": OUTSIDE_IP, "to_ip": address, "protocol": "tcp", "destination_port": port,
    }});
    let t = cloud.call("POST", "/vnet/v1/trace", Some(body))["trace"].clone();
    let text = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
    (text("verdict"), text("message"))
}

/// What `vnet trace` says of a ping from `port` to the outside: its
/// verdict's message, checked against the real packets around it.
fn traced_out(cloud: &Cloud, port: &str) -> String {
    let body = json!({"trace": {"from_port": port, "to_ip": OUTSIDE_IP, "protocol": "icmp"}});
    cloud.call("POST", "/vnet/v1/trace", Some(body))["trace"]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn fip_status(cloud: &Cloud, fip: &str) -> String {
    cloud.call("GET", &format!("/v2.0/floatingips/{fip}"), None)["floatingip"]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn routers_reach_the_outside_by_snat_and_floating_ips_on_their_own_hosts() {
    let mut cloud = Cloud::with_external("en", 3, 3);
    // Dropped before the cloud, whose fabric it is plugged into.
    let world = cloud.outside.take().unwrap();
    let outside = &world.ns;
    let public = public_network(&cloud);
    let (net, subnet) = cloud.network(P, "10.1.0.0/24");
    let (router_id, gateway_ip) = router_to(&cloud, P, &public, &subnet);

    // One of the three hosts is chosen to hold the gateway address.
    let mut g = 0;
    wait_for("a gateway host", Duration::from_secs(20), || {
        let found = holders(&cloud, &gateway_ip);
        g = found.first().copied().unwrap_or_default();
        found.len() == 1
    });
    let o = (g + 1) % 3;
    let gateway_port = cloud.call(
        "GET",
        &format!("/v2.0/ports?device_id={router_id}&device_owner=network:router_gateway"),
        None,
    )["ports"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the gateway port ACTIVE", Duration::from_secs(20), || {
        cloud.status(&gateway_port) == "ACTIVE"
    });

    let groups = json!({"security_groups": [open_group(&cloud, P)]});
    let (port_g, vm_g) = cloud.vm_with(P, &net, &subnet, "10.1.0.10", g + 1, groups.clone());
    let (port_o, vm_o) = cloud.vm_with(P, &net, &subnet, "10.1.0.20", o + 1, groups);
    for port in [&port_g, &port_o] {
        wait_for("VM ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
    }
    for vm in [&vm_g, &vm_o] {
        dhcp(vm);
        default_route(vm, "10.1.0.1");
    }

    // Default SNAT: both VMs reach the outside as the gateway address, the
    // one on another host through the gateway host.
    let seen = seen_outside(&world, &gateway_ip, || {
        assert_eq!(vm_g.ping(OUTSIDE_IP, 3), 3, "SNAT on the gateway host");
        assert_eq!(vm_o.ping(OUTSIDE_IP, 3), 3, "SNAT from another host");
    });
    assert_eq!(
        seen,
        (true, false),
        "the outside saw the gateway address only"
    );
    let out = traced_out(&cloud, &port_o);
    assert!(
        out.contains(&format!("from host h{} as {gateway_ip}", g + 1)),
        "{out}"
    );
    assert_eq!(
        tcp(&vm_o.ns, outside, OUTSIDE_IP, 7300),
        "hello",
        "TCP through SNAT"
    );

    // A floating IP for the VM on the other host: reached from the outside,
    // and its traffic leaves by that host's own link, as the floating IP.
    let fip = cloud.call(
        "POST",
        "/v2.0/floatingips",
        Some(json!({"floatingip": {
            "project_id": P, "floating_network_id": public, "port_id": port_o,
        }})),
    )["floatingip"]
        .clone();
    let (fip_id, fip_ip) = (
        id(&fip),
        fip["floating_ip_address"].as_str().unwrap().to_owned(),
    );
    wait_for("the floating IP ACTIVE", Duration::from_secs(20), || {
        fip_status(&cloud, &fip_id) == "ACTIVE"
    });
    assert_eq!(
        holders(&cloud, &fip_ip),
        [o],
        "the floating IP lives on its VM's host"
    );
    let o_link = Capture::start(
        &cloud.fabric.ns,
        &format!("x{}", o + 1),
        &format!("ip src host {fip_ip}"),
    )
    .unwrap();
    let seen = seen_outside(&world, &fip_ip, || {
        assert_eq!(vm_o.ping(OUTSIDE_IP, 3), 3, "out as the floating IP");
        assert_eq!(world.ping(&fip_ip, 3), 3, "in to it");
    });
    assert_eq!(seen, (true, false));
    assert!(
        !o_link.stop().unwrap().is_empty(),
        "the floating IP's traffic left by its own host"
    );
    let out = traced_out(&cloud, &port_o);
    assert!(
        out.contains(&format!("from host h{} as {fip_ip}", o + 1)),
        "{out}"
    );
    assert_eq!(
        tcp(outside, &vm_o.ns, &fip_ip, 7301),
        "hello",
        "TCP to a floating IP"
    );
    let (verdict, message) = traced_in(&cloud, &fip_ip, 7301);
    assert_eq!(verdict, "delivered", "{message}");
    assert!(
        message.contains(&format!("reaches port {port_o} on host h{}", o + 1)),
        "{message}"
    );

    // An agent restart changes nothing in the router (addresses, rules,
    // NAT), and the floating IP keeps answering.
    let netns_o = router_namespaces(&cloud, o).remove(0);
    let before = router_state(&netns_o);
    drop(cloud.agents[o].take()); // SIGKILL
    cloud.agents[o] = Some(cloud.start_agent(o));
    wait_for("the restarted agent", Duration::from_secs(10), || {
        cloud.agent_log(o + 1).contains("vnet agent started")
    });
    wait_for(
        "the restarted agent's report",
        Duration::from_secs(10),
        || fip_status(&cloud, &fip_id) == "ACTIVE" && cloud.status(&port_o) == "ACTIVE",
    );
    assert_eq!(
        before,
        router_state(&netns_o),
        "the restart changed the router"
    );
    assert_eq!(world.ping(&fip_ip, 2), 2);

    // Disassociated: unreachable from the outside, and the VM is back to SNAT.
    cloud.call(
        "PUT",
        &format!("/v2.0/floatingips/{fip_id}"),
        Some(json!({"floatingip": {"port_id": null}})),
    );
    wait_for("the floating IP DOWN", Duration::from_secs(20), || {
        fip_status(&cloud, &fip_id) == "DOWN"
    });
    wait_for(
        "the floating IP gone from o",
        Duration::from_secs(10),
        || holders(&cloud, &fip_ip).is_empty(),
    );
    assert_eq!(
        world.ping(&fip_ip, 2),
        0,
        "a disassociated floating IP answers"
    );
    let (verdict, message) = traced_in(&cloud, &fip_ip, 7301);
    assert_eq!(verdict, "dropped", "{message}");
    let seen = seen_outside(&world, &gateway_ip, || {
        assert_eq!(vm_o.ping(OUTSIDE_IP, 2), 2);
    });
    assert_eq!(seen, (true, false));

    // A port forwarding on the unassociated floating IP: TCP 2222 to the
    // VM on the gateway host's port 22.
    cloud.call(
        "POST",
        &format!("/v2.0/floatingips/{fip_id}/port_forwardings"),
        Some(json!({"port_forwarding": {
            "protocol": "tcp", "external_port": 2222, "internal_port": 22,
            "internal_port_id": port_g, "internal_ip_address": "10.1.0.10",
        }})),
    );
    // Its address on g's uplink, and its DNAT in g's router.
    wait_for(
        "the port forwarding on its host",
        Duration::from_secs(20),
        || {
            holders(&cloud, &fip_ip) == [g]
                && router_namespaces(&cloud, g)
                    .iter()
                    .any(|ns| router_state(ns).contains("tcp dport 2222 dnat to 10.1.0.10:22"))
        },
    );
    assert_eq!(
        tcp(outside, &vm_g.ns, &fip_ip, 2222),
        "",
        "listening on 2222"
    );
    assert_eq!(
        tcp_via(outside, &vm_g.ns, &fip_ip, 2222, 22),
        "hello",
        "forwarded to 22"
    );
    let (verdict, message) = traced_in(&cloud, &fip_ip, 2222);
    assert_eq!(verdict, "delivered", "{message}");
    assert!(
        message.contains("port forwarding tcp 2222 → 10.1.0.10:22"),
        "{message}"
    );

    // SNAT off: the VM's packets leave untranslated (the outside has no
    // route back); on again: they are translated again.
    let gateway_info = |snat: bool| json!({"router": {"external_gateway_info": {"network_id": public, "enable_snat": snat}}});
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router_id}"),
        Some(gateway_info(false)),
    );
    wait_for("SNAT off", Duration::from_secs(10), || {
        vm_o.ping(OUTSIDE_IP, 1) == 0
    });
    let seen = seen_outside(&world, &gateway_ip, || {
        vm_o.ping(OUTSIDE_IP, 1);
    });
    assert_eq!(
        seen,
        (false, true),
        "SNAT off: the private address goes out"
    );
    let out = traced_out(&cloud, &port_o);
    assert!(out.contains("as 10.1.0.20"), "{out}");
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router_id}"),
        Some(gateway_info(true)),
    );
    wait_for("SNAT on", Duration::from_secs(10), || {
        vm_o.ping(OUTSIDE_IP, 1) == 1
    });

    // The gateway host dies (its agent and its links): another host takes
    // the gateway over, and the VM on host o reaches the outside again as
    // the same address, with nothing changed on host o.
    drop(cloud.agents[g].take());
    let gi = g + 1;
    cloud
        .fabric
        .ns
        .sh(&format!("ip link set x{gi} down && ip link set u{gi} down"))
        .unwrap();
    let died = Instant::now();
    wait_for("the gateway failed over", Duration::from_secs(30), || {
        vm_o.ping(OUTSIDE_IP, 1) == 1
    });
    let recovered = died.elapsed();
    let live: Vec<usize> = holders(&cloud, &gateway_ip)
        .into_iter()
        .filter(|&i| i != g)
        .collect();
    assert_eq!(
        live.len(),
        1,
        "one live host holds the gateway address: {live:?}"
    );
    let out = traced_out(&cloud, &port_o);
    assert!(
        out.contains(&format!("from host h{} as {gateway_ip}", live[0] + 1)),
        "{out}"
    );
    let seen = seen_outside(&world, &gateway_ip, || {
        assert_eq!(vm_o.ping(OUTSIDE_IP, 2), 2);
    });
    assert_eq!(seen, (true, false));
    eprintln!("gateway failover: the outside reachable again {recovered:?} after its host died");
}

#[test]
fn tenants_with_the_same_addresses_go_out_at_once_and_floating_ips_move() {
    let mut cloud = Cloud::with_external("em", 3, 3);
    let world = cloud.outside.take().unwrap();
    let public = public_network(&cloud);
    // Two projects, the same subnet, each its own router and gateway.
    let (pa, pb) = ("proj-a", "proj-b");
    let (net_a, sub_a) = cloud.network(pa, "10.5.0.0/24");
    let (net_b, sub_b) = cloud.network(pb, "10.5.0.0/24");
    let (_, gw_a) = router_to(&cloud, pa, &public, &sub_a);
    let (router_b, gw_b) = router_to(&cloud, pb, &public, &sub_b);
    let group_a = json!({"security_groups": [open_group(&cloud, pa)]});
    let (a1, vm_a1) = cloud.vm_with(pa, &net_a, &sub_a, "10.5.0.10", 1, group_a.clone());
    let (a3, vm_a3) = cloud.vm_with(pa, &net_a, &sub_a, "10.5.0.30", 3, group_a);
    let (b2, vm_b2) = cloud.vm(pb, &net_b, &sub_b, "10.5.0.10", 2);
    for port in [&a1, &a3, &b2] {
        wait_for("VM ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
    }
    for vm in [&vm_a1, &vm_a3, &vm_b2] {
        dhcp(vm);
        default_route(vm, "10.5.0.1");
    }
    wait_for("both gateways", Duration::from_secs(20), || {
        holders(&cloud, &gw_a).len() == 1 && holders(&cloud, &gw_b).len() == 1
    });

    // Both 10.5.0.10s ping the outside at the same moment, each as its own
    // router's gateway address.
    let (seen_a, seen_b) = (
        Capture::start(&world.ns, VM_DEV, &format!("icmp and ip src host {gw_a}")).unwrap(),
        Capture::start(&world.ns, VM_DEV, &format!("icmp and ip src host {gw_b}")).unwrap(),
    );
    std::thread::scope(|s| {
        let a = s.spawn(|| vm_a1.ping(OUTSIDE_IP, 5));
        let b = s.spawn(|| vm_b2.ping(OUTSIDE_IP, 5));
        assert_eq!((a.join().unwrap(), b.join().unwrap()), (5, 5));
    });
    assert_eq!(seen_a.stop().unwrap().len(), 5);
    assert_eq!(seen_b.stop().unwrap().len(), 5);

    // A floating IP on a1 (host 1), then moved to a3 (host 3): it moves
    // with its port, and answers from there.
    let fip = cloud.call(
        "POST",
        "/v2.0/floatingips",
        Some(json!({"floatingip": {
            "project_id": pa, "floating_network_id": public, "port_id": a1,
        }})),
    )["floatingip"]
        .clone();
    let (fip_id, fip_ip) = (
        id(&fip),
        fip["floating_ip_address"].as_str().unwrap().to_owned(),
    );
    wait_for("the floating IP on host 1", Duration::from_secs(20), || {
        holders(&cloud, &fip_ip) == [0] && fip_status(&cloud, &fip_id) == "ACTIVE"
    });
    assert_eq!(tcp(&world.ns, &vm_a1.ns, &fip_ip, 7400), "hello");
    cloud.call(
        "PUT",
        &format!("/v2.0/floatingips/{fip_id}"),
        Some(json!({"floatingip": {"port_id": a3}})),
    );
    wait_for("the floating IP on host 3", Duration::from_secs(20), || {
        holders(&cloud, &fip_ip) == [2] && fip_status(&cloud, &fip_id) == "ACTIVE"
    });
    assert_eq!(tcp(&world.ns, &vm_a3.ns, &fip_ip, 7401), "hello");

    // Host 3's agent killed and restarted under a ping of the floating IP:
    // at most one packet lost.
    let mut ping = world.ns.command("busybox");
    ping.args(["ping", "-c", "30", "-i", "0.1", &fip_ip])
        .stdout(std::process::Stdio::piped());
    let ping = ping.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(cloud.agents[2].take()); // SIGKILL
    cloud.agents[2] = Some(cloud.start_agent(2));
    let out = String::from_utf8_lossy(&ping.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        out.contains("30 packets transmitted, 30 packets received")
            || out.contains("30 packets transmitted, 29 packets received"),
        "lost more than one packet to a floating IP across the agent restart: {out}"
    );

    // Project b's gateway removed: b no longer goes out, a still does.
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router_b}"),
        Some(json!({"router": {"external_gateway_info": {}}})),
    );
    wait_for("b's gateway gone", Duration::from_secs(20), || {
        holders(&cloud, &gw_b).is_empty()
    });
    assert_eq!(vm_b2.ping(OUTSIDE_IP, 2), 0, "b goes out without a gateway");
    assert_eq!(vm_a1.ping(OUTSIDE_IP, 2), 2, "a still goes out");
}
