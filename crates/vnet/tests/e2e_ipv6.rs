//! IPv6 inside VMs end to end, as root, in throwaway namespaces: a real server
//! and agents; VMs with IPv6 on, as a guest kernel has it. Checked with real
//! packets: router advertisements from the VM's own host give it exactly its
//! port's EUI-64 address (SLAAC) and a default route via the router's
//! link-local address; dual-stack ports get their IPv4 lease too; ping6 and
//! TCP over IPv6 across hosts, on one subnet and through a router (routed on
//! the sending host); isolation between projects with the same prefix; and
//! the underlay carries no neighbour solicitation and no multicast; IPv6 to
//! and from the outside through a router's gateway, unNATed; ICMPv6 rules
//! by prefix and by a remote group with IPv6 members.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use common::{Cloud, add_interface, dhcp, tcp, wait_for};
use serde_json::{Value, json};
use testworld::{Capture, ICMPV6_NEIGHBOUR_SOLICITATION, Vm, vxlan_frames};

const P: &str = "proj-v6";
const Q: &str = "proj-v6-other";

fn subnet6(cloud: &Cloud, project: &str, net: &str, cidr: &str, mode: &str) -> String {
    let body = json!({"subnet": {"network_id": net, "project_id": project, "ip_version": 6,
        "cidr": cidr, "ipv6_ra_mode": mode, "ipv6_address_mode": mode}});
    cloud.call("POST", "/v2.0/subnets", Some(body))["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn network(cloud: &Cloud, project: &str) -> String {
    let body = json!({"network": {"project_id": project}});
    cloud.call("POST", "/v2.0/networks", Some(body))["network"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A port with these fixed IPs bound to host `h` (1-based), and its VM with
/// IPv6 on; the port as the API shows it.
fn vm(cloud: &Cloud, project: &str, net: &str, fixed_ips: Value, h: usize) -> (Value, Vm) {
    let port = json!({"network_id": net, "project_id": project, "fixed_ips": fixed_ips});
    vm_of(cloud, port, h)
}

/// A port of these attributes bound to host `h` (1-based), and its VM.
fn vm_of(cloud: &Cloud, mut port: Value, h: usize) -> (Value, Vm) {
    port["binding:host_id"] = json!(format!("h{h}"));
    let body = json!({ "port": port });
    let port = cloud.call("POST", "/v2.0/ports", Some(body))["port"].clone();
    let device = compiler::protocol::tap_name(port["id"].as_str().unwrap());
    let vm = Vm::dual_stack(
        &cloud.hosts[h - 1],
        "v6",
        &device,
        port["mac_address"].as_str().unwrap(),
    )
    .unwrap();
    (port, vm)
}

/// The port's IPv6 addresses.
fn ipv6_of(port: &Value) -> Vec<Ipv6Addr> {
    port["fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| match f["ip_address"].as_str()?.parse().ok()? {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        })
        .collect()
}

/// The VM's global IPv6 addresses, and whether any is still tentative.
fn global_addresses(vm: &Vm) -> (Vec<Ipv6Addr>, bool) {
    let out = vm
        .ns
        .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
        .unwrap();
    let tentative = out.contains("tentative");
    let addresses = out
        .lines()
        .filter_map(|l| {
            let cidr = l.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?;
            cidr.split('/').next()?.parse().ok()
        })
        .collect();
    (addresses, tentative)
}

/// Wait until the VM holds exactly `want` (SLAAC done, DAD passed).
fn wait_for_addresses(vm: &Vm, want: &[Ipv6Addr]) {
    let mut want = want.to_vec();
    want.sort();
    wait_for("the VM's SLAAC addresses", Duration::from_secs(20), || {
        let (mut have, tentative) = global_addresses(vm);
        have.sort();
        have == want && !tentative
    });
}

/// The link-local address the kernel derives from a MAC (EUI-64).
fn link_local(mac: &str) -> Ipv6Addr {
    let m: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let iid = u64::from_be_bytes([m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    Ipv6Addr::from((0xfe80u128 << 112) | u128::from(iid))
}

#[test]
fn slaac_dual_stack_and_routing_over_ipv6() {
    let cloud = Cloud::new("v6", 2);
    // Network A: dual-stack (IPv4 + SLAAC); network B: SLAAC; a router
    // between the two IPv6 subnets. Project Q has the same prefix as A.
    let net_a = network(&cloud, P);
    let v4 = json!({"subnet": {"network_id": net_a, "project_id": P, "ip_version": 4,
        "cidr": "10.6.0.0/24"}});
    let sub_a4 = cloud.call("POST", "/v2.0/subnets", Some(v4))["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sub_a6 = subnet6(&cloud, P, &net_a, "fd00:a::/64", "slaac");
    let net_b = network(&cloud, P);
    let sub_b6 = subnet6(&cloud, P, &net_b, "fd00:b::/64", "slaac");
    let net_q = network(&cloud, Q);
    let sub_q6 = subnet6(&cloud, Q, &net_q, "fd00:a::/64", "slaac");
    let router = cloud.call(
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {"project_id": P, "name": "r6"}})),
    )["router"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let iface_a = add_interface(&cloud, &router, &sub_a6);
    add_interface(&cloud, &router, &sub_b6);
    let iface_a = cloud.call("GET", &format!("/v2.0/ports/{iface_a}"), None)["port"].clone();
    assert_eq!(
        iface_a["fixed_ips"][0]["ip_address"], "fd00:a::",
        "the interface holds the subnet's gateway, as in Neutron"
    );

    // Watch the underlay from before the VMs start: their start-up traffic
    // (router solicitations, MLD, duplicate address detection) included.
    let capture = Capture::start(&cloud.fabric.ns, "br0", "udp port 4789").unwrap();
    let (a1, vm_a1) = vm(
        &cloud,
        P,
        &net_a,
        json!([{"subnet_id": sub_a4, "ip_address": "10.6.0.10"}, {"subnet_id": sub_a6}]),
        1,
    );
    let (a2, vm_a2) = vm(&cloud, P, &net_a, json!([{"subnet_id": sub_a6}]), 2);
    let (b2, vm_b2) = vm(&cloud, P, &net_b, json!([{"subnet_id": sub_b6}]), 2);
    let (q1, vm_q1) = vm(&cloud, Q, &net_q, json!([{"subnet_id": sub_q6}]), 1);
    for port in [&a1, &a2, &b2, &q1] {
        let id = port["id"].as_str().unwrap();
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(id) == "ACTIVE"
        });
    }

    // Each VM holds exactly its port's EUI-64 address.
    for (port, vm) in [(&a1, &vm_a1), (&a2, &vm_a2), (&b2, &vm_b2), (&q1, &vm_q1)] {
        let want = ipv6_of(port);
        assert_eq!(want.len(), 1, "{port}");
        wait_for_addresses(vm, &want);
    }
    // Its default route is the router's link-local address, where the
    // subnet has a router; project Q's has none, so no default route.
    let router_ll = link_local(iface_a["mac_address"].as_str().unwrap());
    let wait_default = |vm: &Vm, via: &str| {
        wait_for("the default route", Duration::from_secs(20), || {
            vm.ns
                .ip(&["-6", "route", "show", "default"])
                .unwrap()
                .contains(&format!("via {via} dev eth0"))
        });
    };
    wait_default(&vm_a1, &router_ll.to_string());
    assert_eq!(
        vm_q1.ns.ip(&["-6", "route", "show", "default"]).unwrap(),
        "",
        "no router on Q's subnet: no default route"
    );
    // The dual-stack port gets its IPv4 address too.
    assert_eq!(dhcp(&vm_a1), "10.6.0.10/24");

    let ip = |port: &Value| ipv6_of(port)[0].to_string();
    // Same subnet across hosts, and across subnets through the router.
    wait_default(
        &vm_b2,
        &link_local(&router_mac(&cloud, &router, &net_b)).to_string(),
    );
    assert_eq!(vm_a1.ping(&ip(&a2), 3), 3, "a1 reaches a2 across hosts");
    // a2's link-local address is resolved on h1 too (the default group
    // lets in only its members' fixed IPs, so the ping itself gets no
    // answer, as in Neutron; its neighbour solicitation does).
    let a2_mac = a2["mac_address"].as_str().unwrap();
    let a2_link_local = link_local(a2_mac);
    vm_a1.ping(&format!("{a2_link_local}%eth0"), 1);
    let neigh = vm_a1
        .ns
        .ip(&[
            "-6",
            "neigh",
            "show",
            &a2_link_local.to_string(),
            "dev",
            "eth0",
        ])
        .unwrap();
    assert!(
        neigh.contains(&format!("lladdr {a2_mac}")),
        "a2's link-local address resolved: {neigh}"
    );
    assert_eq!(vm_a1.ping(&ip(&b2), 3), 3, "a1 reaches b2 through r6");
    assert_eq!(tcp(&vm_a1.ns, &vm_b2.ns, &ip(&b2), 7600), "hello");
    // Project Q's VM, on the same prefix, reaches none of P's.
    assert_eq!(vm_q1.ping(&ip(&a2), 2), 0, "Q never reaches P's VM");

    let frames = vxlan_frames(&capture.stop().unwrap());
    let ipv6: Vec<_> = frames.iter().filter_map(|f| f.inner_ipv6).collect();
    assert!(
        ipv6.iter().any(|h| h.icmpv6_type == Some(128)),
        "the pings crossed the overlay: {frames:?}"
    );
    assert!(
        !ipv6
            .iter()
            .any(|h| h.icmpv6_type == Some(ICMPV6_NEIGHBOUR_SOLICITATION)),
        "no neighbour solicitation on the overlay: {ipv6:?}"
    );
    assert!(
        !frames.iter().any(|f| f.is_flood()),
        "no multicast or broadcast on the overlay: {frames:?}"
    );
    // Routed on the sending host: a1 → b2 leaves h1 on B's network with
    // one hop less than a VM sends (64).
    let (a1_ip, b2_ip) = (ipv6_of(&a1)[0], ipv6_of(&b2)[0]);
    let routed: Vec<u8> = ipv6
        .iter()
        .filter(|h| h.src == a1_ip && h.dst == b2_ip)
        .map(|h| h.hop_limit)
        .collect();
    assert!(
        !routed.is_empty() && routed.iter().all(|hl| *hl == 63),
        "{routed:?}"
    );
}

/// The MAC of the router's interface on `net`.
fn router_mac(cloud: &Cloud, router: &str, net: &str) -> String {
    let ports = cloud.call(
        "GET",
        &format!("/v2.0/ports?device_id={router}&network_id={net}"),
        None,
    );
    ports["ports"][0]["mac_address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Run `dhclient -6` (isc-dhcp-client) in the VM, stateful or (`-S`)
/// stateless, until its script has run once; what the script was given:
/// `ADDRESS ip/len` (bound, and added to eth0), `DOMAIN search list` and
/// `DNS servers` lines.
fn dhclient6(vm: &Vm, stateless: bool) -> Vec<String> {
    let dir = tempfile::Builder::new()
        .prefix("vnet-dhclient6-")
        .tempdir()
        .unwrap();
    let out = dir.path().join("out");
    let script = dir.path().join("script.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             if [ -n \"$new_ip6_address\" ]; then \
             ip -6 addr add $new_ip6_address/$new_ip6_prefixlen dev $interface; \
             echo \"ADDRESS $new_ip6_address/$new_ip6_prefixlen\" >> {out}; fi\n\
             if [ -n \"$new_dhcp6_domain_search\" ]; then \
             echo \"DOMAIN $new_dhcp6_domain_search\" >> {out}; fi\n\
             if [ -n \"$new_dhcp6_name_servers\" ]; then \
             echo \"DNS $new_dhcp6_name_servers\" >> {out}; fi\n",
            out = out.display()
        ),
    )
    .unwrap();
    vm.ns
        .exec("chmod", &["+x", script.to_str().unwrap()])
        .unwrap();
    // dhclient binds its socket through the loopback, as a guest has it up,
    // and speaks from a link-local address that passed DAD.
    vm.ns.ip(&["link", "set", "lo", "up"]).unwrap();
    wait_for(
        "a usable link-local address",
        Duration::from_secs(20),
        || {
            let link = vm
                .ns
                .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"])
                .unwrap();
            link.contains("fe80:") && !link.contains("tentative")
        },
    );
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mut cmd = vm.ns.command("dhclient");
    cmd.args(["-6", "-d", "-cf", "/dev/null", "-lf", &path("leases")])
        .args(["-pf", &path("pid"), "-sf", script.to_str().unwrap()]);
    if stateless {
        cmd.arg("-S");
    }
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    cmd.arg("eth0")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut client = common::Proc(cmd.spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&out).is_ok_and(|o| o.contains("DNS")) {
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(
            std::time::Instant::now() < deadline,
            "dhclient -6 got nothing:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = client.0.kill();
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn dhcpv6_stateful_and_stateless() {
    let cloud = Cloud::new("v6d", 1);
    let net_s = network(&cloud, P);
    let body = json!({"subnet": {"network_id": net_s, "project_id": P, "ip_version": 6,
        "cidr": "fd00:c::/64", "ipv6_ra_mode": "dhcpv6-stateful",
        "ipv6_address_mode": "dhcpv6-stateful", "dns_nameservers": ["fd00:c::53"]}});
    let sub_s = cloud.call("POST", "/v2.0/subnets", Some(body))["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let net_l = network(&cloud, P);
    let body = json!({"subnet": {"network_id": net_l, "project_id": P, "ip_version": 6,
        "cidr": "fd00:d::/64", "ipv6_ra_mode": "dhcpv6-stateless",
        "ipv6_address_mode": "dhcpv6-stateless", "dns_nameservers": ["fd00:d::53"]}});
    let sub_l = cloud.call("POST", "/v2.0/subnets", Some(body))["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Its own DHCPv6 options (Neutron's extra_dhcp_opts of ip_version 6)
    // replace the subnet's DNS servers and the agent's domain; an IPv4
    // one is not DHCPv6's.
    let (s, vm_s) = vm_of(
        &cloud,
        json!({"network_id": net_s, "project_id": P,
            "fixed_ips": [{"subnet_id": sub_s, "ip_address": "fd00:c::10"}],
            "extra_dhcp_opts": [
                {"opt_name": "domain-search", "opt_value": "vnet.example", "ip_version": 6},
                {"opt_name": "dns-server", "opt_value": "[fd00:c::54]", "ip_version": 6},
                {"opt_name": "domain-search", "opt_value": "v4.example", "ip_version": 4}]}),
        1,
    );
    let (l, vm_l) = vm(&cloud, P, &net_l, json!([{"subnet_id": sub_l}]), 1);
    for port in [&s, &l] {
        let id = port["id"].as_str().unwrap();
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(id) == "ACTIVE"
        });
    }
    // Stateless: SLAAC gives the EUI-64 address, DHCPv6 the DNS servers
    // and the agent's DNS domain (Neutron's default `dns_domain`).
    wait_for_addresses(&vm_l, &ipv6_of(&l));
    assert_eq!(
        dhclient6(&vm_l, true),
        vec!["DOMAIN openstacklocal.", "DNS fd00:d::53"]
    );
    // Stateful: the advertisement is managed and its prefix not autonomous,
    // so the VM has no address until DHCPv6 gives exactly the port's.
    wait_for(
        "the stateful subnet's on-link route",
        Duration::from_secs(20),
        || {
            vm_s.ns
                .ip(&["-6", "route", "show", "fd00:c::/64"])
                .unwrap()
                .contains("dev eth0")
        },
    );
    assert_eq!(global_addresses(&vm_s).0, Vec::<Ipv6Addr>::new());
    assert_eq!(
        dhclient6(&vm_s, false),
        vec![
            "ADDRESS fd00:c::10/128",
            "DOMAIN vnet.example.",
            "DNS fd00:c::54"
        ]
    );
    wait_for_addresses(&vm_s, &["fd00:c::10".parse().unwrap()]);
}

/// Send one Ethernet frame out of the VM's eth0 (a packet socket, as a
/// guest's rogue daemon would).
fn send_frame(vm: &Vm, frame: &[u8]) {
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    vm.ns
        .exec(
            "python3",
            &[
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); \
                 s.bind(('eth0', 0)); s.send(bytes.fromhex(sys.argv[1]))",
                &hex,
            ],
        )
        .unwrap();
}

fn mac_bytes(mac: &str) -> [u8; 6] {
    let m: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    m.try_into().unwrap()
}

/// A DHCPv6 Reply (type 7) from `src` to `dst` (UDP 547 → 546).
fn dhcpv6_reply(src_mac: &str, dst_mac: &str, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let payload = [7u8, 0x12, 0x34, 0x56];
    let udp_len = (8 + payload.len()) as u16;
    let mut frame = Vec::new();
    frame.extend_from_slice(&mac_bytes(dst_mac));
    frame.extend_from_slice(&mac_bytes(src_mac));
    frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&[17, 64]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(&547u16.to_be_bytes());
    frame.extend_from_slice(&546u16.to_be_bytes());
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&payload);
    frame
}

#[test]
fn a_vm_can_neither_advertise_nor_answer_dhcpv6_nor_spoof() {
    let cloud = Cloud::new("v6x", 1);
    let net = network(&cloud, P);
    let sub = subnet6(&cloud, P, &net, "fd00:e::/64", "slaac");
    let (rogue, vm_rogue) = vm(&cloud, P, &net, json!([{"subnet_id": sub}]), 1);
    let (victim, vm_victim) = vm(&cloud, P, &net, json!([{"subnet_id": sub}]), 1);
    for (port, vm) in [(&rogue, &vm_rogue), (&victim, &vm_victim)] {
        let id = port["id"].as_str().unwrap();
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(id) == "ACTIVE"
        });
        wait_for_addresses(vm, &ipv6_of(port));
    }
    let rogue_mac = rogue["mac_address"].as_str().unwrap();
    let victim_mac = victim["mac_address"].as_str().unwrap();
    let victim_ip = ipv6_of(&victim)[0].to_string();

    let capture = Capture::start(&vm_victim.ns, "eth0", "ip6").unwrap();
    // A router advertisement of a prefix of its own, to every node.
    let advert = agent::dhcp::router_advert::Advert {
        source_mac: rogue_mac.parse().unwrap(),
        router_lifetime: 300,
        managed: false,
        other_config: false,
        mtu: 1450,
        prefixes: vec![("fd00:bad::/64".parse().unwrap(), true)],
        dns_servers: vec![],
    };
    send_frame(&vm_rogue, &agent::dhcp::router_advert::frame(&advert));
    // A DHCPv6 reply to the victim's link-local address.
    send_frame(
        &vm_rogue,
        &dhcpv6_reply(
            rogue_mac,
            victim_mac,
            link_local(rogue_mac),
            link_local(victim_mac),
        ),
    );
    // A ping from an address that is not the port's.
    vm_rogue
        .ns
        .ip(&["-6", "addr", "add", "fd00:e::99/64", "dev", "eth0", "nodad"])
        .unwrap();
    let spoofed = vm_rogue.ns.exec(
        "busybox",
        &["ping", "-c", "2", "-W", "1", "-I", "fd00:e::99", &victim_ip],
    );
    assert!(
        spoofed.is_err(),
        "a spoofed source got answers: {spoofed:?}"
    );
    vm_rogue
        .ns
        .ip(&["-6", "addr", "del", "fd00:e::99/64", "dev", "eth0"])
        .unwrap();
    // The spoofed ping began the rogue's resolution of the victim, and the
    // kernel solicits from the source of the packet that waits: fd00:e::99,
    // which anti-spoofing drops. Its third and last probe goes about when
    // that ping ends; sent before the address went, it is dropped too, and
    // a second later the entry fails with every packet queued behind it,
    // the legitimate ping's among them. Wait for that resolution to end
    // (resolved, failed or gone): the next is the legitimate ping's own.
    wait_for(
        "the spoofed neighbour resolution to end",
        Duration::from_secs(10),
        || {
            !vm_rogue
                .ns
                .ip(&["-6", "neigh", "show", &victim_ip, "dev", "eth0"])
                .unwrap()
                .contains("INCOMPLETE")
        },
    );
    // What the rogue VM may send still arrives, after all of the above: once
    // its replies are back, anything sent before would have been delivered.
    assert_eq!(vm_rogue.ping(&victim_ip, 2), 2);

    let frames = capture.stop().unwrap();
    let from_rogue: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| f.get(6..12) == Some(&mac_bytes(rogue_mac)[..]))
        .collect();
    let icmpv6_type = |f: &[u8]| {
        (f.get(20) == Some(&58))
            .then(|| f.get(54).copied())
            .flatten()
    };
    let udp_dport = |f: &[u8]| {
        (f.get(20) == Some(&17))
            .then(|| Some(u16::from_be_bytes([*f.get(56)?, *f.get(57)?])))
            .flatten()
    };
    assert!(
        from_rogue.iter().any(|f| icmpv6_type(f) == Some(128)),
        "the control pings arrived"
    );
    assert!(
        !from_rogue.iter().any(|f| icmpv6_type(f) == Some(134)),
        "no router advertisement from a VM"
    );
    assert!(
        !from_rogue.iter().any(|f| udp_dport(f) == Some(546)),
        "no DHCPv6 reply from a VM"
    );
    let spoofed_src: [u8; 16] = "fd00:e::99".parse::<Ipv6Addr>().unwrap().octets();
    assert!(
        !frames
            .iter()
            .any(|f| f.get(22..38) == Some(&spoofed_src[..])),
        "nothing from a spoofed source"
    );
    let (held, _) = global_addresses(&vm_victim);
    assert_eq!(held, ipv6_of(&victim), "the rogue prefix was not taken");
}

/// The admin's external network on the external segment, with an IPv4 and
/// an IPv6 subnet whose gateways are the outside's; its id.
fn dual_stack_public_network(cloud: &Cloud) -> String {
    let public = cloud.call(
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {
            "name": "public", "router:external": true,
            "provider:network_type": "flat",
            "provider:physical_network": common::PHYSICAL_NETWORK,
        }})),
    )["network"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (version, cidr, gateway) in [
        (4, "203.0.113.0/24", testworld::OUTSIDE_IP),
        (6, "2001:db8:e::/64", OUTSIDE_IP6),
    ] {
        cloud.call(
            "POST",
            "/v2.0/subnets",
            Some(json!({"subnet": {
                "network_id": public, "ip_version": version, "cidr": cidr,
                "gateway_ip": gateway, "enable_dhcp": false,
            }})),
        );
    }
    public
}

/// The outside's IPv6 address, on the external network's IPv6 subnet.
const OUTSIDE_IP6: &str = "2001:db8:e::1";

/// The hosts (0-based) whose router namespaces hold `address` on an uplink.
fn uplink_holders(cloud: &Cloud, address: &str) -> Vec<usize> {
    let with = format!(" {address}/128");
    (0..cloud.hosts.len())
        .filter(|&i| {
            common::router_namespaces(cloud, i).iter().any(|ns| {
                testworld::run_cmd("ip", &["-n", ns, "-br", "addr", "show"]).is_ok_and(|out| {
                    out.lines()
                        .any(|l| l.starts_with("qg-") && l.contains(&with))
                })
            })
        })
        .collect()
}

/// A security group of `project` whose one rule lets in ICMPv6 from
/// `remote` (a prefix or a group); its id.
fn icmpv6_group(cloud: &Cloud, project: &str, remote: Value) -> String {
    let group = cloud.call(
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": "icmpv6", "project_id": project}})),
    )["security_group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut rule = json!({"security_group_id": group, "direction": "ingress",
        "ethertype": "IPv6", "protocol": "ipv6-icmp"});
    rule.as_object_mut()
        .unwrap()
        .extend(remote.as_object().unwrap().clone());
    cloud.call(
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({ "security_group_rule": rule })),
    );
    group
}

/// A router with a gateway on a dual-stack external network routes its
/// tenant's IPv6 subnet out and back without NAT (Neutron does not NAT
/// IPv6): the outside sees the VMs' own addresses, from the gateway host
/// and from another, and reaches them back through the gateway's IPv6
/// address. Which VMs the outside and other VMs reach over IPv6 is the
/// security groups' ICMPv6 rules: by prefix, and by a remote group with
/// IPv6 members, which a VM joins.
#[test]
fn ipv6_to_the_outside_unnatted_and_icmpv6_rules_by_prefix_and_remote_group() {
    let mut cloud = Cloud::with_external("v6x", 2, 2);
    // Dropped before the cloud, whose fabric it is plugged into.
    let world = cloud.outside.take().unwrap();
    let outside = &world.ns;
    outside
        .exec("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=0"])
        .unwrap();
    outside
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("{OUTSIDE_IP6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();

    let public = dual_stack_public_network(&cloud);
    let net = network(&cloud, P);
    let sub = subnet6(&cloud, P, &net, "fd00:e1::/64", "slaac");
    let router = cloud.call(
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {"project_id": P,
            "external_gateway_info": {"network_id": public}}})),
    )["router"]
        .clone();
    let gateway_ip6 = router["external_gateway_info"]["external_fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["ip_address"].as_str())
        .find(|ip| ip.contains(':'))
        .expect("the gateway holds an IPv6 address of the external network")
        .to_owned();
    add_interface(&cloud, router["id"].as_str().unwrap(), &sub);
    // The outside routes the tenant's prefix to the router's gateway, as an
    // operator's upstream (or BGP) would.
    outside
        .ip(&["-6", "route", "add", "fd00:e1::/64", "via", &gateway_ip6])
        .unwrap();
    let mut g = 0;
    wait_for("a gateway host", Duration::from_secs(20), || {
        let found = uplink_holders(&cloud, &gateway_ip6);
        g = found.first().copied().unwrap_or_default();
        found.len() == 1
    });

    // open: ICMPv6 from anywhere; web: ICMPv6 from the members of clients.
    let open = icmpv6_group(&cloud, P, json!({"remote_ip_prefix": "::/0"}));
    let clients = icmpv6_group(&cloud, P, json!({"remote_ip_prefix": "fd00:ffff::/64"}));
    let web = icmpv6_group(&cloud, P, json!({"remote_group_id": clients}));
    let port = |groups: &[&str], h: usize| {
        vm_of(
            &cloud,
            json!({"network_id": net, "project_id": P, "fixed_ips": [{"subnet_id": sub}],
                "security_groups": groups}),
            h,
        )
    };
    // One VM on the gateway host, one on the other host.
    let (on_g, vm_on_g) = port(&[&open], g + 1);
    let (other, vm_other) = port(&[&web, &clients], 2 - g);
    let (client, vm_client) = port(&[&clients], g + 1);
    let (stranger, vm_stranger) = port(&[&open], 2 - g);
    for (port, vm) in [
        (&on_g, &vm_on_g),
        (&other, &vm_other),
        (&client, &vm_client),
        (&stranger, &vm_stranger),
    ] {
        let id = port["id"].as_str().unwrap();
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(id) == "ACTIVE"
        });
        wait_for_addresses(vm, &ipv6_of(port));
    }
    let ip = |port: &Value| ipv6_of(port)[0].to_string();

    // Out and back unNATed, from both hosts: the outside sees each VM's own
    // address, and nothing of the gateway's.
    let from_tenant = Capture::start(outside, "eth0", "ip6 src net fd00:e1::/64").unwrap();
    // The gateway's own address answers neighbour solicitations, no more.
    let from_gateway = Capture::start(
        outside,
        "eth0",
        &format!("ip6 src host {gateway_ip6} and (tcp or icmp6[0] == 128 or icmp6[0] == 129)"),
    )
    .unwrap();
    assert_eq!(vm_on_g.ping(OUTSIDE_IP6, 3), 3, "out from the gateway host");
    assert_eq!(vm_other.ping(OUTSIDE_IP6, 3), 3, "out from another host");
    let seen = from_tenant.stop().unwrap();
    assert!(!seen.is_empty(), "the outside saw the VMs' own addresses");
    assert!(
        from_gateway.stop().unwrap().is_empty(),
        "nothing NATed to the gateway's address"
    );
    assert_eq!(tcp(&vm_other.ns, outside, OUTSIDE_IP6, 7610), "hello");
    // The trace says the same: out of the VM's own host, as itself.
    let body = json!({"trace": {"from_port": other["id"], "to_ip": OUTSIDE_IP6,
        "protocol": "icmp"}});
    let traced = cloud.call("POST", "/vnet/v1/trace", Some(body))["trace"].clone();
    let message = traced["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("from host h{} as {}", 2 - g, ip(&other))),
        "{traced}"
    );

    // In: an ICMPv6 rule from ::/0 lets the outside ping; a group whose
    // ICMPv6 comes only from its remote group's members does not.
    assert_eq!(world.ping(&ip(&on_g), 3), 3, "in to the open VM");
    assert_eq!(world.ping(&ip(&other), 2), 0, "the outside is no client");
    // The trace agrees from the outside: in by the gateway's address,
    // unNATed, and the groups decide.
    let trace_in = |to: &Value| {
        let body = json!({"trace": {"from_ip": OUTSIDE_IP6, "to_ip": ip(to),
            "protocol": "icmp"}});
        cloud.call("POST", "/vnet/v1/trace", Some(body))["trace"].clone()
    };
    let traced = trace_in(&on_g);
    assert_eq!(traced["verdict"], "delivered", "{traced}");
    assert!(
        traced["message"].as_str().unwrap().contains("unNATed"),
        "{traced}"
    );
    assert_eq!(trace_in(&other)["reason"], "no_rule_allows");
    // The remote group's IPv6 members: the client reaches web, the
    // stranger (across hosts) only once it joins the group.
    assert_eq!(vm_client.ping(&ip(&other), 3), 3, "a member of clients");
    assert_eq!(vm_stranger.ping(&ip(&other), 2), 0, "not a member");
    cloud.call(
        "PUT",
        &format!("/v2.0/ports/{}", stranger["id"].as_str().unwrap()),
        Some(json!({"port": {"security_groups": [open, clients]}})),
    );
    wait_for("the stranger admitted", Duration::from_secs(20), || {
        vm_stranger.ping(&ip(&other), 1) == 1
    });
}
