//! Security groups end to end, as root: real server and agents, VMs on two
//! hosts, and real packets deciding every case: the default group, port and
//! protocol rules, remote groups, rule changes taking effect, a VM joining a
//! group, spoofed sources dropped, and port security switched off.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::time::Duration;

use common::{Cloud, Proc, dhcp, wait_for};
use serde_json::{Value, json};
use testworld::Vm;

const PROJECT: &str = "proj-sg";

/// Whether a TCP connection from `vm` to `ip:port` is let through.
fn tcp(vm: &Vm, ip: &str, port: u16) -> bool {
    vm.ns
        .sh(&format!("busybox nc -w 1 {ip} {port} </dev/null"))
        .is_ok()
}

/// A listener that accepts any number of connections on `port`.
fn listen(vm: &Vm, port: u16) -> Proc {
    let mut cmd = vm.ns.command("busybox");
    cmd.args(["nc", "-ll", "-p", &port.to_string(), "-e", "/bin/true"]);
    Proc(cmd.spawn().unwrap())
}

fn pings(vm: &Vm, ip: &str) -> bool {
    vm.ping(ip, 1) == 1
}

/// Wait until `check` gives `want` (a rule change takes effect within the
/// convergence time, not at once).
fn converges(what: &str, want: bool, mut check: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(10), || check() == want);
}

fn group(cloud: &Cloud, name: &str) -> String {
    let g = cloud.call(
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": name, "project_id": PROJECT}})),
    );
    g["security_group"]["id"].as_str().unwrap().to_owned()
}

fn rule(cloud: &Cloud, group: &str, attrs: Value) -> String {
    let mut body =
        json!({"security_group_id": group, "direction": "ingress", "project_id": PROJECT});
    body.as_object_mut()
        .unwrap()
        .extend(attrs.as_object().unwrap().clone());
    let r = cloud.call(
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({"security_group_rule": body})),
    );
    r["security_group_rule"]["id"].as_str().unwrap().to_owned()
}

#[test]
fn security_groups_decide_real_packets() {
    let cloud = Cloud::new("sg", 2);
    let (net, sub) = cloud.network(PROJECT, "10.0.0.0/24");
    let default = cloud.call(
        "GET",
        &format!("/v2.0/security-groups?name=default&project_id={PROJECT}"),
        None,
    )["security_groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let web = group(&cloud, "web");
    rule(
        &cloud,
        &web,
        json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}),
    );
    rule(
        &cloud,
        &web,
        json!({"protocol": "icmp", "remote_group_id": web}),
    );

    let with = |groups: &[&str]| json!({"security_groups": groups});
    let (_w1, vm_w1) = cloud.vm_with(PROJECT, &net, &sub, "10.0.0.11", 1, with(&[&web]));
    let (_w2, vm_w2) = cloud.vm_with(PROJECT, &net, &sub, "10.0.0.12", 2, with(&[&web]));
    let (c1, vm_c1) = cloud.vm_with(PROJECT, &net, &sub, "10.0.0.21", 1, with(&[&default]));
    let (c2, vm_c2) = cloud.vm_with(PROJECT, &net, &sub, "10.0.0.22", 2, with(&[&default]));
    for port in [&_w1, &_w2, &c1, &c2] {
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
    }
    // DHCP keeps working behind security groups.
    assert_eq!(dhcp(&vm_w1), "10.0.0.11/24");
    for (vm, ip) in [
        (&vm_w2, "10.0.0.12/24"),
        (&vm_c1, "10.0.0.21/24"),
        (&vm_c2, "10.0.0.22/24"),
    ] {
        vm.add_ip(ip).unwrap();
    }
    let _http = listen(&vm_w1, 80);
    let _alt = listen(&vm_w1, 81);

    // The default group: members reach each other, outsiders do not.
    converges("default members reach each other", true, || {
        pings(&vm_c1, "10.0.0.22")
    });
    assert!(
        !pings(&vm_w1, "10.0.0.21"),
        "an outsider reached a default-group VM"
    );
    // Port rules: tcp 80 from anywhere, not tcp 81; egress is open.
    assert!(
        tcp(&vm_c1, "10.0.0.11", 80),
        "tcp 80 is allowed from anywhere"
    );
    assert!(!tcp(&vm_c1, "10.0.0.11", 81), "tcp 81 has no rule");
    // Remote group: web members may ping each other, others may not.
    assert!(
        pings(&vm_w2, "10.0.0.11"),
        "a web member pings a web member across hosts"
    );
    assert!(!pings(&vm_c1, "10.0.0.11"), "a non-member pinged a web VM");

    // A rule added opens a flow; removed, new connections are refused again.
    let alt = rule(
        &cloud,
        &web,
        json!({"protocol": "tcp", "port_range_min": 81, "port_range_max": 81}),
    );
    converges("tcp 81 opened", true, || tcp(&vm_c1, "10.0.0.11", 81));
    cloud.call("DELETE", &format!("/v2.0/security-group-rules/{alt}"), None);
    converges("tcp 81 closed", false, || tcp(&vm_c1, "10.0.0.11", 81));

    // A VM joining the remote group is reachable by the group's rule.
    cloud.call(
        "PUT",
        &format!("/v2.0/ports/{c1}"),
        Some(json!({"port": {"security_groups": [default, web]}})),
    );
    converges("c1, now in web, pings w1", true, || {
        pings(&vm_c1, "10.0.0.11")
    });

    // Spoofing: a source IP or MAC the port does not own is dropped.
    assert!(pings(&vm_w2, "10.0.0.11"));
    vm_w2.add_ip("10.0.0.99/24").unwrap();
    assert!(
        vm_w2
            .ns
            .exec(
                "busybox",
                &["ping", "-c", "1", "-W", "1", "-I", "10.0.0.99", "10.0.0.11"]
            )
            .is_err(),
        "a forged source IP got through"
    );
    let mac = vm_w2.mac.clone();
    vm_w2
        .ns
        .ip(&["link", "set", "eth0", "address", "fa:16:3e:66:66:66"])
        .unwrap();
    assert!(
        !pings(&vm_w2, "10.0.0.11"),
        "a forged source MAC got through"
    );
    vm_w2
        .ns
        .ip(&["link", "set", "eth0", "address", &mac])
        .unwrap();
    converges("w2 with its own MAC again", true, || {
        pings(&vm_w2, "10.0.0.11")
    });

    // Port security off (groups removed first, as Neutron demands): anything reaches c2.
    assert!(!pings(&vm_w1, "10.0.0.22"));
    cloud.call(
        "PUT",
        &format!("/v2.0/ports/{c2}"),
        Some(json!({"port": {"security_groups": [], "port_security_enabled": false}})),
    );
    converges("c2 open with port security off", true, || {
        pings(&vm_w1, "10.0.0.22")
    });
}
