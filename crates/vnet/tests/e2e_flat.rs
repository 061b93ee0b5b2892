//! Flat provider networks end to end, as root, in throwaway namespaces: a
//! real server and real agents, an external segment (a physical network the
//! first two hosts map) with the outside world on it. An admin's flat network
//! carries VMs on two hosts that get their addresses by DHCP, reach each
//! other and the outside across the physical segment (never the overlay), and
//! are reached from it; a port bound to a host that does not map the
//! physical network fails its binding and stays DOWN, with the reason in its
//! agent's log.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::time::Duration;

use common::{Cloud, PHYSICAL_NETWORK, dhcp, wait_for};
use serde_json::json;
use testworld::{Capture, OUTSIDE_IP, Vm, vxlan_frames};

/// The admin's project (the server's default project under noauth).
const ADMIN: &str = "admin";

#[test]
fn a_flat_network_joins_vms_on_two_hosts_and_the_outside_across_the_physical_network() {
    let cloud = Cloud::with_external("ef", 3, 2);
    let outside = cloud.outside.as_ref().unwrap();
    let net = cloud.call(
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {
            "name": "public", "router:external": true,
            "provider:network_type": "flat",
            "provider:physical_network": PHYSICAL_NETWORK,
        }})),
    )["network"]
        .clone();
    assert_eq!(net["provider:segmentation_id"], serde_json::Value::Null);
    let net = net["id"].as_str().unwrap().to_owned();
    let subnet = cloud.call(
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {
            "network_id": net, "ip_version": 4, "cidr": "203.0.113.0/24",
            "gateway_ip": OUTSIDE_IP,
            "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.100"}],
        }})),
    )["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The outside is no member of any group: a group lets it ping in.
    let group = cloud.call(
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": "pingable", "project_id": ADMIN}})),
    )["security_group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cloud.call(
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({"security_group_rule": {
            "security_group_id": group, "direction": "ingress", "ethertype": "IPv4",
            "protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0",
        }})),
    );
    let groups = json!({"security_groups": [group]});
    let (p1, vm1) = cloud.vm_with(ADMIN, &net, &subnet, "203.0.113.10", 1, groups.clone());
    let (p2, vm2) = cloud.vm_with(ADMIN, &net, &subnet, "203.0.113.11", 2, groups);
    for port in [&p1, &p2] {
        wait_for("flat ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
        let shown = cloud.call("GET", &format!("/v2.0/ports/{port}"), None);
        assert_eq!(shown["port"]["binding:vif_type"], "bridge");
    }

    // DHCP is served on each VM's own host, as on a VXLAN network.
    assert_eq!(dhcp(&vm1), "203.0.113.10/24");
    assert_eq!(dhcp(&vm2), "203.0.113.11/24");

    // Across hosts, to the outside and from it: over the physical segment,
    // never through the overlay.
    let underlay = Capture::start(&cloud.fabric.ns, "br0", "udp port 4789").unwrap();
    assert_eq!(vm1.ping("203.0.113.11", 3), 3, "VM to VM across hosts");
    assert_eq!(vm2.ping(OUTSIDE_IP, 3), 3, "VM to the outside");
    assert_eq!(outside.ping("203.0.113.10", 3), 3, "the outside to a VM");
    assert!(
        vxlan_frames(&underlay.stop().unwrap()).is_empty(),
        "a flat network's frames crossed the overlay"
    );
    // The hosts' view: a flat bridge with the physical interface, no VXLAN.
    let links = cloud.hosts[0].ns.ip(&["-o", "link", "show"]).unwrap();
    assert!(
        links.contains("ext0") && links.contains("master vnbrf"),
        "{links}"
    );
    assert!(!links.contains("vnvx0"), "{links}");

    // Host 3 maps no physical network: a port bound there fails its
    // binding, stays DOWN, and its agent says why.
    let body = json!({"port": {
        "network_id": net, "project_id": ADMIN, "binding:host_id": "h3",
        "fixed_ips": [{"subnet_id": subnet, "ip_address": "203.0.113.12"}],
    }});
    let p3 = cloud.call("POST", "/v2.0/ports", Some(body))["port"].clone();
    assert_eq!(p3["binding:vif_type"], "binding_failed");
    let p3_id = p3["id"].as_str().unwrap().to_owned();
    let device = compiler::protocol::tap_name(&p3_id);
    let _vm3 = Vm::new(
        &cloud.hosts[2],
        "ef",
        &device,
        p3["mac_address"].as_str().unwrap(),
    )
    .unwrap();
    // A VXLAN port on the same host going ACTIVE shows its agent has acted
    // on everything before it: the flat port must still be DOWN then.
    let (vx_net, vx_subnet) = cloud.network(ADMIN, "10.0.0.0/24");
    let (p4, _vm4) = cloud.vm(ADMIN, &vx_net, &vx_subnet, "10.0.0.4", 3);
    wait_for(
        "the VXLAN port on h3 ACTIVE",
        Duration::from_secs(20),
        || cloud.status(&p4) == "ACTIVE",
    );
    assert_eq!(cloud.status(&p3_id), "DOWN");
    let listed = cloud.call("GET", "/v2.0/ports?binding:vif_type=binding_failed", None);
    assert_eq!(listed["ports"].as_array().unwrap().len(), 1);
    assert_eq!(listed["ports"][0]["id"], p3_id.as_str());
    let h3 = cloud.hosts[2].ns.ip(&["-o", "link", "show"]).unwrap();
    assert!(!h3.contains("vnbrf"), "h3 built a flat bridge: {h3}");
    let log = cloud.agent_log(3);
    assert!(
        log.contains("binding failed") && log.contains(&net) && log.contains(PHYSICAL_NETWORK),
        "{log}"
    );
}
