//! `vnet trace` tells the truth, as root: a real server and agents on three
//! hosts, VMs of two projects on the same CIDR, seeded random security
//! groups (port ranges, prefixes, remote groups, ICMP types, a restricted
//! egress), a port with no group, one without port security, one
//! administratively down, one on another network, and a spoofed source;
//! and, in a second world, routed east-west flows through a distributed
//! router (connected subnets, extra routes, missing routes, gateways and
//! router interfaces, groups behind the router both ways, stateless
//! replies routed back). For every generated flow, the server's trace
//! (`POST /vnet/v1/trace`) and the real packet's fate (TCP connect, UDP
//! datagram to a listener, ICMP echo, sent from inside the VMs' namespaces)
//! must agree.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cloud, wait_for};
use model::SplitMix64;
use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};
use testworld::Vm;

const PA: &str = "proj-tr-a";
const PB: &str = "proj-tr-b";
/// Destination ports every VM listens on (TCP and UDP); rules' ranges are
/// drawn from them, so that edges are hit.
const PORTS: [u16; 10] = [22, 80, 443, 1000, 1001, 1500, 2000, 5000, 5001, 8080];
/// Long enough for any delivery on loopback namespaces (RTT well under 1 ms).
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const FLOWS: usize = 600;
/// The address one VM holds without its port having it: its flows are spoofed.
const SPOOFED: &str = "10.0.0.201";
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMPV6_ROUTER_ADVERT: u8 = 134;

/// What a flow's router advertisement carries to name it (never 0, which
/// a real router's may).
fn advert_tag(id: usize) -> u32 {
    u32::try_from(id).unwrap() + 1
}
/// A DHCPv6 client's and server's ports: a VM "replying" from 547 to 546
/// must reach nobody (only the host answers DHCPv6).
const DHCPV6_CLIENT_PORT: u16 = 546;
const DHCPV6_SERVER_PORT: u16 = 547;

struct Machine {
    port: String,
    project: &'static str,
    ip: IpAddr,
    vm: Vm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
    /// An ICMPv6 router advertisement, which only the host may send.
    RouterAdvert,
}

#[derive(Clone, Debug)]
struct Flow {
    id: usize,
    src: usize,
    /// Send from this address instead of the machine's own.
    spoof: Option<IpAddr>,
    dst: IpAddr,
    /// The machine named as destination port (else the address is traced).
    to_port: Option<usize>,
    proto: Proto,
    dport: u16,
    /// A source port of its own (a DHCPv6 server's), instead of the flow's.
    sport: Option<u16>,
}

impl Flow {
    /// Its source port: by default one per flow, which names the flow to
    /// the TCP listeners.
    fn sport(&self) -> u16 {
        self.sport
            .unwrap_or(20_000 + u16::try_from(self.id).unwrap())
    }
}

fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

fn chance(rng: &mut SplitMix64, percent: u64) -> bool {
    rng.next_u64() % 100 < percent
}

fn group(cloud: &Cloud, project: &str, name: &str) -> String {
    let g = cloud.call(
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": name, "project_id": project}})),
    );
    g["security_group"]["id"].as_str().unwrap().to_owned()
}

/// A seeded random ingress rule for `group`, IPv4 or (`v6`) IPv6; `None`
/// if it repeats one.
fn random_rule(
    rng: &mut SplitMix64,
    group: &str,
    groups: &[String],
    seen: &mut HashSet<String>,
    v6: bool,
) -> Option<Value> {
    let range = |rng: &mut SplitMix64| {
        let a = (rng.next_u64() % PORTS.len() as u64) as usize;
        let b = a + (rng.next_u64() % 3) as usize;
        (PORTS[a], PORTS[b.min(PORTS.len() - 1)])
    };
    let mut r = json!({"security_group_id": group, "direction": "ingress", "project_id": PA,
        "ethertype": if v6 { "IPv6" } else { "IPv4" }});
    // ICMP on an IPv6 rule is ICMPv6, by either name.
    let icmp = if v6 {
        &["icmp", "ipv6-icmp"][..]
    } else {
        &["icmp"]
    };
    let (echo_request, echo_reply) = if v6 {
        (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    } else {
        (8, 0)
    };
    match rng.next_u64() % 7 {
        0 | 1 => {
            let (lo, hi) = range(rng);
            r["protocol"] = json!(pick(rng, &["tcp", "6"]));
            r["port_range_min"] = json!(lo);
            r["port_range_max"] = json!(hi);
        }
        2 => {
            let (lo, hi) = range(rng);
            r["protocol"] = json!("udp");
            r["port_range_min"] = json!(lo);
            r["port_range_max"] = json!(hi);
        }
        3 => r["protocol"] = json!(pick(rng, icmp)),
        4 => {
            // Echo request (with or without code 0), or echo reply: the
            // latter never lets a ping in.
            r["protocol"] = json!(pick(rng, icmp));
            r["port_range_min"] = json!(pick(rng, &[echo_request, echo_reply]));
            if chance(rng, 50) {
                r["port_range_max"] = json!(0);
            }
        }
        5 => r["protocol"] = json!("udp"),
        _ => {}
    }
    match rng.next_u64() % 3 {
        0 => {}
        1 if v6 => {
            r["remote_ip_prefix"] = json!(pick(
                rng,
                &[
                    "fd00:70::/124",
                    "fd00:70::10/125",
                    "fd00:70::12/128",
                    "fd00:70::/64",
                    "fd00:70::8000/113"
                ]
            ))
        }
        1 => {
            r["remote_ip_prefix"] = json!(pick(
                rng,
                &[
                    "10.0.0.0/28",
                    "10.0.0.16/29",
                    "10.0.0.12/32",
                    "10.0.0.0/24",
                    "10.0.0.128/25"
                ]
            ))
        }
        _ => r["remote_group_id"] = json!(groups[(rng.next_u64() % groups.len() as u64) as usize]),
    }
    let key = r.to_string();
    seen.insert(key).then_some(r)
}

/// What a VM listens on, created inside its namespace.
struct Listeners {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    /// An IPv6 VM's raw ICMPv6 socket, which sees the router advertisements
    /// that reach it (whether or not its kernel would take them).
    adverts: Option<Socket>,
}

fn listeners(vm: &Vm, ip: IpAddr) -> Listeners {
    vm.ns.run(|| {
        let unspecified = match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let any = |p: u16| SocketAddr::new(unspecified, p);
        let tcp: Vec<TcpListener> = PORTS
            .iter()
            .map(|p| {
                let l = TcpListener::bind(any(*p)).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        // And a DHCPv6 client's port, where a VM's DHCPv6 replies would go.
        let udp: Vec<UdpSocket> = PORTS
            .iter()
            .chain(ip.is_ipv6().then_some(&DHCPV6_CLIENT_PORT))
            .map(|p| {
                let s = UdpSocket::bind(any(*p)).unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let adverts = ip.is_ipv6().then(|| {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        });
        Listeners { tcp, udp, adverts }
    })
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends the flow from inside the source VM's namespace (the calling thread
/// is in it); true if it got through: TCP connected (or refused: it
/// arrived), ICMP echo answered. UDP is judged by the receivers.
fn probe(flow: &Flow, src: IpAddr) -> bool {
    let from = SocketAddr::new(src, flow.sport());
    let domain = Domain::for_address(from);
    match flow.proto {
        Proto::Tcp => {
            let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&from.into()).unwrap();
            let to = SocketAddr::new(flow.dst, flow.dport);
            match s.connect_timeout(&to.into(), PROBE_TIMEOUT) {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            }
        }
        Proto::Udp => {
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&from.into()).unwrap();
            let to = SocketAddr::new(flow.dst, flow.dport);
            let _ = s.send_to(&u32::try_from(flow.id).unwrap().to_be_bytes(), &to.into());
            false
        }
        Proto::Icmp if flow.dst.is_ipv6() => probe_icmpv6(flow, src),
        Proto::RouterAdvert => {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
            s.bind(&SocketAddr::new(src, 0).into()).unwrap();
            // As a router sends it; router lifetime 0 (no default route in
            // whoever takes it), the flow in its reachable time field.
            s.set_unicast_hops_v6(255).unwrap();
            let mut advert = vec![ICMPV6_ROUTER_ADVERT, 0, 0, 0, 64, 0, 0, 0];
            advert.extend_from_slice(&advert_tag(flow.id).to_be_bytes());
            advert.extend_from_slice(&[0; 4]);
            let _ = s.send_to(&advert, &SocketAddr::new(flow.dst, 0).into());
            false
        }
        Proto::Icmp => {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
            s.bind(&SocketAddr::new(src, 0).into()).unwrap();
            let ident = u16::try_from(flow.id).unwrap();
            let mut echo = vec![8, 0, 0, 0];
            echo.extend_from_slice(&ident.to_be_bytes());
            echo.extend_from_slice(&1u16.to_be_bytes());
            echo.extend_from_slice(b"vnet-trace");
            let sum = checksum(&echo);
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
            let to = SocketAddr::new(flow.dst, 0);
            if s.send_to(&echo, &to.into()).is_err() {
                return false;
            }
            let deadline = Instant::now() + PROBE_TIMEOUT;
            let mut buf = [0u8; 1500];
            let mut reader = &s;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                let Ok(n) = reader.read(&mut buf) else {
                    break;
                };
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let from_dst = IpAddr::from(<[u8; 4]>::try_from(&buf[12..16]).unwrap()) == flow.dst;
                if n >= ihl + 8
                    && from_dst
                    && buf[ihl] == 0
                    && buf[ihl + 4..ihl + 6] == ident.to_be_bytes()
                {
                    return true;
                }
            }
            false
        }
    }
}

/// An ICMPv6 echo from `src` (the kernel computes the checksum of a raw
/// ICMPv6 socket's messages, and hands it only the ICMPv6 message of what
/// its connected peer sends); true if answered.
fn probe_icmpv6(flow: &Flow, src: IpAddr) -> bool {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
    s.bind(&SocketAddr::new(src, 0).into()).unwrap();
    if s.connect(&SocketAddr::new(flow.dst, 0).into()).is_err() {
        return false;
    }
    let ident = u16::try_from(flow.id).unwrap();
    let mut echo = vec![ICMPV6_ECHO_REQUEST, 0, 0, 0];
    echo.extend_from_slice(&ident.to_be_bytes());
    echo.extend_from_slice(&1u16.to_be_bytes());
    echo.extend_from_slice(b"vnet-trace");
    if s.send(&echo).is_err() {
        return false;
    }
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut buf = [0u8; 1500];
    let mut reader = &s;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let Ok(n) = reader.read(&mut buf) else {
            break;
        };
        if n >= 8 && buf[0] == ICMPV6_ECHO_REPLY && buf[4..6] == ident.to_be_bytes() {
            return true;
        }
    }
    false
}

/// The server's trace of the flow, asked as the source's project.
fn trace(api: SocketAddr, machines: &[Machine], flow: &Flow) -> Value {
    let src = &machines[flow.src];
    let mut t = json!({
        "from_port": src.port,
        "protocol": match flow.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::RouterAdvert => "ipv6-icmp",
        },
    });
    if flow.proto == Proto::RouterAdvert {
        t["icmp_type"] = json!(ICMPV6_ROUTER_ADVERT);
    }
    match flow.to_port {
        Some(m) => t["to_port"] = json!(machines[m].port),
        None => t["to_ip"] = json!(flow.dst),
    }
    if matches!(flow.proto, Proto::Tcp | Proto::Udp) {
        t["destination_port"] = json!(flow.dport);
        t["source_port"] = json!(flow.sport());
    }
    if let Some(ip) = flow.spoof {
        t["source_ip"] = json!(ip);
    }
    let body = json!({ "trace": t }).to_string();
    let mut stream = TcpStream::connect(api).unwrap();
    write!(
        stream,
        "POST /vnet/v1/trace HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nX-Project-Id: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        src.project,
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{flow:?}: {head} {body}");
    serde_json::from_str::<Value>(body).unwrap()["trace"].clone()
}

/// The flows' generator, from `VNET_TRACE_SEED` (default 6), said so that
/// a failure can be replayed.
fn seeded() -> SplitMix64 {
    let seed: u64 = std::env::var("VNET_TRACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    eprintln!("seed {seed} (VNET_TRACE_SEED)");
    SplitMix64::new(seed)
}

#[test]
fn traces_agree_with_real_packets() {
    let mut rng = seeded();
    let cloud = Cloud::new("tr", 3);
    let (net_a, sub_a) = cloud.network(PA, "10.0.0.0/24");
    let (net_c, sub_c) = cloud.network(PA, "10.1.0.0/24");
    let (net_b, sub_b) = cloud.network(PB, "10.0.0.0/24");

    // Groups first (rules name each other), then ports, so that a port's
    // first state already holds everything.
    let default_a = cloud.call(
        "GET",
        &format!("/v2.0/security-groups?name=default&project_id={PA}"),
        None,
    )["security_groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut groups_a: Vec<String> = (0..4)
        .map(|i| group(&cloud, PA, &format!("g{i}")))
        .collect();
    groups_a.push(default_a.clone());
    let mut seen = HashSet::new();
    for g in &groups_a[..4] {
        for _ in 0..2 + rng.next_u64() % 4 {
            if let Some(r) = random_rule(&mut rng, g, &groups_a, &mut seen, false) {
                cloud.call(
                    "POST",
                    "/v2.0/security-group-rules",
                    Some(json!({"security_group_rule": r})),
                );
            }
        }
    }
    // g3 sends only tcp 20-30 and icmp.
    let egress = cloud.call(
        "GET",
        &format!(
            "/v2.0/security-group-rules?security_group_id={}&direction=egress",
            groups_a[3]
        ),
        None,
    );
    for r in egress["security_group_rules"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        cloud.call("DELETE", &format!("/v2.0/security-group-rules/{id}"), None);
    }
    for r in [
        json!({"protocol": "tcp", "port_range_min": 20, "port_range_max": 30}),
        json!({"protocol": "icmp"}),
    ] {
        let mut body =
            json!({"security_group_id": groups_a[3], "direction": "egress", "project_id": PA});
        body.as_object_mut()
            .unwrap()
            .extend(r.as_object().unwrap().clone());
        cloud.call(
            "POST",
            "/v2.0/security-group-rules",
            Some(json!({"security_group_rule": body})),
        );
    }
    let open_b = group(&cloud, PB, "open");
    for proto in ["tcp", "udp", "icmp"] {
        let body = json!({"security_group_id": open_b, "direction": "ingress", "project_id": PB, "protocol": proto});
        cloud.call(
            "POST",
            "/v2.0/security-group-rules",
            Some(json!({"security_group_rule": body})),
        );
    }

    // The machines: project A's on net A (random groups, none, no port
    // security, admin down), one on net C, project B's on the same CIDR.
    let mut specs: Vec<(&'static str, &str, &str, String, Value)> = Vec::new();
    for i in 11..=18 {
        let n = rng.next_u64() % 3;
        let chosen: BTreeSet<String> = (0..n)
            .map(|_| groups_a[(rng.next_u64() % groups_a.len() as u64) as usize].clone())
            .collect();
        let chosen: Vec<String> = chosen.into_iter().collect();
        specs.push((
            PA,
            &net_a,
            &sub_a,
            format!("10.0.0.{i}"),
            json!({"security_groups": chosen}),
        ));
    }
    let no_security = json!({"security_groups": [], "port_security_enabled": false});
    specs.push((PA, &net_a, &sub_a, "10.0.0.19".into(), no_security));
    let down = json!({"security_groups": [groups_a[0]], "admin_state_up": false});
    specs.push((PA, &net_a, &sub_a, "10.0.0.20".into(), down));
    let admin_down = specs.len() - 1;
    let g0 = json!({"security_groups": [groups_a[0]]});
    specs.push((PA, &net_c, &sub_c, "10.1.0.5".into(), g0));
    for ip in ["10.0.0.11", "10.0.0.30"] {
        specs.push((
            PB,
            &net_b,
            &sub_b,
            ip.into(),
            json!({"security_groups": [open_b]}),
        ));
    }
    let mut machines: Vec<Machine> = Vec::new();
    for (project, net, sub, ip, extra) in specs {
        let host = 1 + (rng.next_u64() % 3) as usize;
        let (port, vm) = cloud.vm_with(project, net, sub, &ip, host, extra);
        vm.add_ip(&format!("{ip}/24")).unwrap();
        machines.push(Machine {
            port,
            project,
            ip: ip.parse().unwrap(),
            vm,
        });
    }
    // The spoofer holds an address its port does not have.
    let spoofer = 0;
    machines[spoofer]
        .vm
        .add_ip(&format!("{SPOOFED}/32"))
        .unwrap();

    for (i, m) in machines.iter().enumerate() {
        if i != admin_down {
            wait_for("ports ACTIVE", Duration::from_secs(30), || {
                cloud.status(&m.port) == "ACTIVE"
            });
        }
    }
    // Member sets reach the other hosts a round after the ports' own hosts.
    std::thread::sleep(Duration::from_secs(3));

    // The flows.
    let targets: Vec<IpAddr> = machines
        .iter()
        .map(|m| m.ip)
        .chain(["10.0.0.99", "10.0.0.250", "10.9.9.9"].map(|s| s.parse().unwrap()))
        .collect();
    let mut flows = Vec::new();
    while flows.len() < FLOWS {
        let src = (rng.next_u64() % machines.len() as u64) as usize;
        // Mostly a peer of the same project, so that rules decide.
        let peers: Vec<IpAddr> = machines
            .iter()
            .filter(|m| m.project == machines[src].project)
            .map(|m| m.ip)
            .collect();
        let dst = if chance(&mut rng, 70) {
            pick(&mut rng, &peers)
        } else {
            pick(&mut rng, &targets)
        };
        if dst == machines[src].ip {
            continue;
        }
        let to_port = machines
            .iter()
            .position(|m| m.ip == dst && m.project == machines[src].project)
            .filter(|_| chance(&mut rng, 25));
        let spoof = (src == spoofer && chance(&mut rng, 30)).then(|| SPOOFED.parse().unwrap());
        let id = flows.len();
        flows.push(Flow {
            id,
            src,
            spoof,
            dst,
            to_port,
            proto: pick(&mut rng, &[Proto::Tcp, Proto::Udp, Proto::Icmp]),
            dport: pick(&mut rng, &PORTS),
            sport: None,
        });
    }
    // A port named as destination is traced to its own first address.
    for f in &mut flows {
        if let Some(m) = f.to_port {
            f.dst = machines[m].ip;
        }
    }

    let (delivered, total) = traces_against_packets(&cloud, &machines, &flows, &targets);
    // A test of one outcome would prove little.
    assert!(
        delivered >= 30 && total - delivered >= 30,
        "{delivered} of {total} delivered"
    );
}

/// IPv6 flows, on one IPv6 network across three hosts: seeded random
/// IPv6 rules (ICMPv6 echo types, ports, prefixes, remote groups with IPv6
/// members), a port without port security, a spoofed IPv6 source, and
/// DHCPv6 "replies" a VM sends (from port 547 to 546), which only the host
/// may send. Every delivered flow also needed neighbour discovery, which
/// the trace lets through and the bridges answer.
#[test]
fn ipv6_traces_agree_with_real_packets() {
    let mut rng = seeded();
    let cloud = Cloud::new("t6", 3);
    let net = cloud.call(
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"project_id": PA}})),
    )["network"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Addresses as the API gives them (no RA mode), so they can be chosen.
    let sub = cloud.call(
        "POST",
        "/v2.0/subnets",
        Some(
            json!({"subnet": {"network_id": net, "project_id": PA, "ip_version": 6,
            "cidr": "fd00:70::/64"}}),
        ),
    )["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut groups: Vec<String> = (0..4)
        .map(|i| group(&cloud, PA, &format!("h{i}")))
        .collect();
    let mut seen = HashSet::new();
    for g in &groups {
        for _ in 0..2 + rng.next_u64() % 4 {
            if let Some(r) = random_rule(&mut rng, g, &groups, &mut seen, true) {
                cloud.call(
                    "POST",
                    "/v2.0/security-group-rules",
                    Some(json!({"security_group_rule": r})),
                );
            }
        }
    }
    let open = group(&cloud, PA, "open");
    for protocol in ["tcp", "udp", "ipv6-icmp"] {
        add_rule(
            &cloud,
            &open,
            "ingress",
            json!({"ethertype": "IPv6", "protocol": protocol}),
        );
    }
    groups.push(open);
    // The project's default group: its members (IPv6 ones included) reach
    // each other.
    groups.push(
        cloud.call(
            "GET",
            &format!("/v2.0/security-groups?name=default&project_id={PA}"),
            None,
        )["security_groups"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );

    let mut machines: Vec<Machine> = Vec::new();
    let mut members: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for i in 0x11..=0x19 {
        let n = 1 + rng.next_u64() % 2; // ports with no group: the IPv4 test
        let chosen: BTreeSet<&String> = (0..n)
            .map(|_| pick(&mut rng, &groups.iter().collect::<Vec<_>>()))
            .collect();
        let ip = format!("fd00:70::{i:x}");
        let mut extra = json!({"security_groups": chosen});
        if i == 0x19 {
            extra = json!({"security_groups": [], "port_security_enabled": false});
        } else {
            for g in chosen {
                members
                    .entry(g.clone())
                    .or_default()
                    .push(ip.parse().unwrap());
            }
        }
        let host = 1 + (rng.next_u64() % 3) as usize;
        let (port, vm) = cloud.vm_with(PA, &net, &sub, &ip, host, extra);
        vm.ns
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                "eth0",
                "nodad",
            ])
            .unwrap();
        machines.push(Machine {
            port,
            project: PA,
            ip: ip.parse().unwrap(),
            vm,
        });
    }
    let spoofer = 0;
    let spoofed: IpAddr = "fd00:70::201".parse().unwrap();
    machines[spoofer]
        .vm
        .ns
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("{spoofed}/128"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    for m in &machines {
        wait_for("ports ACTIVE", Duration::from_secs(30), || {
            cloud.status(&m.port) == "ACTIVE"
        });
    }
    // Member sets reach the other hosts a round after the ports' own hosts:
    // wait until every host's IPv6 member sets hold every member.
    for host in &cloud.hosts {
        for (g, ips) in &members {
            let set = agent::nft::ruleset::remote_set(g, true);
            wait_for("IPv6 member sets", Duration::from_secs(30), || {
                let Ok(out) = host.ns.exec("nft", &["list", "set", "inet", "vnet", &set]) else {
                    return true; // no port of this host names the group
                };
                let held: HashSet<&str> = out
                    .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
                    .collect();
                ips.iter().all(|ip| held.contains(ip.to_string().as_str()))
            });
        }
    }

    let targets: Vec<IpAddr> = machines
        .iter()
        .map(|m| m.ip)
        .chain(["fd00:70::99", "fd00:71::1"].map(|s| s.parse().unwrap()))
        .collect();
    let mut flows = Vec::new();
    while flows.len() < 240 {
        let src = (rng.next_u64() % machines.len() as u64) as usize;
        let dst = pick(&mut rng, &targets);
        if dst == machines[src].ip {
            continue;
        }
        let to_port = machines
            .iter()
            .position(|m| m.ip == dst)
            .filter(|_| chance(&mut rng, 25));
        let id = flows.len();
        let spoof = (src == spoofer && chance(&mut rng, 30)).then_some(spoofed);
        let mut flow = Flow {
            id,
            src,
            spoof,
            dst,
            to_port,
            proto: pick(&mut rng, &[Proto::Tcp, Proto::Udp, Proto::Icmp]),
            dport: pick(&mut rng, &PORTS),
            sport: None,
        };
        match rng.next_u64() % 100 {
            0..8 => {
                flow.proto = Proto::Udp;
                flow.sport = Some(DHCPV6_SERVER_PORT);
                flow.dport = DHCPV6_CLIENT_PORT;
            }
            8..14 => flow.proto = Proto::RouterAdvert,
            _ => {}
        }
        flows.push(flow);
    }
    let (delivered, total) = traces_against_packets(&cloud, &machines, &flows, &targets);
    assert!(
        delivered >= 30 && total - delivered >= 30,
        "{delivered} of {total} delivered"
    );
}

/// Traces every flow on the server, then sends it for real from inside the
/// VMs, and asserts they agree; returns (delivered, flows).
fn traces_against_packets(
    cloud: &Cloud,
    machines: &[Machine],
    flows: &[Flow],
    targets: &[IpAddr],
) -> (usize, usize) {
    // Every VM resolves every address once (a datagram to the discard
    // port, which no flow uses), so that no probe waits on a first ARP
    // while 80 threads share two cores. The bridges answer ARP from the
    // compiled state either way: a flow to an unresolvable address still
    // finds no neighbour.
    std::thread::scope(|s| {
        for m in machines {
            s.spawn(move || {
                m.vm.ns.enter().unwrap();
                let sock = UdpSocket::bind(SocketAddr::new(m.ip, 0)).unwrap();
                for t in targets.iter().filter(|t| t.is_ipv6() == m.ip.is_ipv6()) {
                    let _ = sock.send_to(b"warm", SocketAddr::new(*t, 9));
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // The traces, before any packet (traces read state, never conntrack).
    let started = Instant::now();
    let traces: Vec<Value> = flows
        .iter()
        .map(|f| trace(cloud.api, machines, f))
        .collect();
    let traced_in = started.elapsed();

    // The real packets: listeners in every VM, senders in parallel per VM.
    let all: Vec<Listeners> = machines.iter().map(|m| listeners(&m.vm, m.ip)).collect();
    let accepted: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());
    let stop = AtomicBool::new(false);
    let outcome: Mutex<BTreeMap<usize, bool>> = Mutex::new(BTreeMap::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        // Accept every connection, noting which VM got which flow (by source port).
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for (vm, l) in all.iter().enumerate() {
                    for listener in &l.tcp {
                        while let Ok((_, peer)) = listener.accept() {
                            let id = usize::from(peer.port().saturating_sub(20_000));
                            accepted.lock().unwrap().insert(id, vm);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let mut senders = Vec::new();
        for (src, m) in machines.iter().enumerate() {
            let queue: Mutex<Vec<&Flow>> =
                Mutex::new(flows.iter().filter(|f| f.src == src).collect());
            let queue = std::sync::Arc::new(queue);
            for _ in 0..6 {
                let queue = queue.clone();
                let outcome = &outcome;
                senders.push(s.spawn(move || {
                    m.vm.ns.enter().unwrap();
                    loop {
                        let Some(flow) = queue.lock().unwrap().pop() else {
                            return;
                        };
                        let ok = probe(flow, flow.spoof.unwrap_or(m.ip));
                        outcome.lock().unwrap().insert(flow.id, ok);
                    }
                }));
            }
        }
        for h in senders {
            h.join().unwrap();
        }
        std::thread::sleep(PROBE_TIMEOUT);
        stop.store(true, Ordering::Relaxed);
    });
    let probed_in = started.elapsed();
    let mut received: BTreeMap<usize, usize> = accepted.into_inner().unwrap();
    for (vm, l) in all.iter().enumerate() {
        for sock in &l.udp {
            let mut buf = [0u8; 16];
            while let Ok(n) = sock.recv(&mut buf) {
                if n == 4 {
                    let id = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    received.insert(id as usize, vm);
                }
            }
        }
        let mut buf = [0u8; 1500];
        let mut adverts = l.adverts.as_ref();
        while let Some(Ok(n)) = adverts.as_mut().map(|s| s.read(&mut buf)) {
            if n >= 16 && buf[0] == ICMPV6_ROUTER_ADVERT {
                let tag = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                if let Some(id) = flows.iter().position(|f| advert_tag(f.id) == tag) {
                    received.insert(id, vm);
                }
            }
        }
    }
    let mut outcome = outcome.into_inner().unwrap();
    for f in flows {
        if matches!(f.proto, Proto::Udp | Proto::RouterAdvert) {
            outcome.insert(f.id, received.contains_key(&f.id));
        }
    }

    // Every verdict against every packet.
    let mut disagreements = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (f, t) in flows.iter().zip(&traces) {
        let traced = t["verdict"] == "delivered";
        let real = outcome[&f.id];
        *reasons
            .entry(t["reason"].as_str().unwrap_or("delivered").to_owned())
            .or_default() += 1;
        let at = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "delivery")
            .and_then(|s| s["port"].as_str());
        let wrong_vm = match (received.get(&f.id), at) {
            (Some(vm), Some(port)) if f.proto != Proto::Icmp => machines[*vm].port != port,
            _ => false,
        };
        if traced != real || wrong_vm {
            disagreements.push(format!(
                "flow {f:?} from {} ({}): real {}{}, trace {}: {} / steps {}",
                machines[f.src].ip,
                machines[f.src].port,
                if real { "delivered" } else { "dropped" },
                if wrong_vm { " to another VM" } else { "" },
                t["verdict"],
                t["message"],
                t["steps"]
            ));
        }
    }
    let delivered = outcome.values().filter(|d| **d).count();
    let adverts: Vec<bool> = flows
        .iter()
        .filter(|f| f.proto == Proto::RouterAdvert)
        .map(|f| outcome[&f.id])
        .collect();
    eprintln!(
        "{} flows compared ({delivered} delivered, {} dropped) in {:.1} s of probing, traced in {:.2} s; verdicts: {reasons:?}; router advertisements from VMs: {} sent, {} delivered",
        flows.len(),
        flows.len() - delivered,
        probed_in.as_secs_f64(),
        traced_in.as_secs_f64(),
        adverts.len(),
        adverts.iter().filter(|d| **d).count()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} flows disagree:\n{}",
        disagreements.len(),
        flows.len(),
        disagreements.join("\n")
    );
    (delivered, flows.len())
}

/// A routed test's machine: (network, subnet, address, host, port
/// attributes, the gateway its default route goes to).
type MachineSpec<'a> = (&'a str, &'a str, &'a str, usize, Value, Option<&'a str>);

/// A rule of `group` from a JSON fragment (protocol, ports, remote).
fn add_rule(cloud: &Cloud, group: &str, direction: &str, extra: Value) {
    let mut body = json!({"security_group_id": group, "direction": direction, "project_id": PA});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    cloud.call(
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({"security_group_rule": body})),
    );
}

/// Routed east-west flows: router R joins X (10.10.0.0/24) and Y
/// (10.20.0.0/24), with an extra route to 192.168.50.0/24 via a VM on Y and
/// one to 172.16.0.0/16 via an address nothing holds. Z's gateway is on no
/// router; W's subnet has no gateway. Groups behind the router in both
/// directions: open, tcp 80 from X only with ICMP from the open group, a
/// restricted egress, and two stateless groups (one lets replies back).
#[test]
fn routed_traces_agree_with_real_packets() {
    let mut rng = seeded();
    let cloud = Cloud::new("tl", 3);
    let (net_x, sub_x) = cloud.network(PA, "10.10.0.0/24");
    let (net_y, sub_y) = cloud.network(PA, "10.20.0.0/24");
    let (net_z, sub_z) = cloud.network(PA, "10.30.0.0/24");
    let net_w = cloud.call(
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"project_id": PA}})),
    )["network"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sub_w = cloud.call(
        "POST",
        "/v2.0/subnets",
        Some(
            json!({"subnet": {"network_id": net_w, "project_id": PA, "ip_version": 4,
                                "cidr": "10.40.0.0/24", "gateway_ip": null}}),
        ),
    )["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let router = cloud.call(
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {"project_id": PA, "name": "r"}})),
    )["router"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for sub in [&sub_x, &sub_y] {
        cloud.call(
            "PUT",
            &format!("/v2.0/routers/{router}/add_router_interface"),
            Some(json!({"subnet_id": sub})),
        );
    }
    cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router}"),
        Some(json!({"router": {"routes": [
            {"destination": "192.168.50.0/24", "nexthop": "10.20.0.30"},
            {"destination": "172.16.0.0/16", "nexthop": "10.20.0.99"},
        ]}})),
    );

    let open = group(&cloud, PA, "open");
    for proto in ["tcp", "udp", "icmp"] {
        add_rule(&cloud, &open, "ingress", json!({"protocol": proto}));
    }
    let web = group(&cloud, PA, "web");
    add_rule(
        &cloud,
        &web,
        "ingress",
        json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "10.10.0.0/24"}),
    );
    add_rule(
        &cloud,
        &web,
        "ingress",
        json!({"protocol": "icmp", "remote_group_id": open}),
    );
    let narrow = group(&cloud, PA, "narrow-egress");
    let egress = cloud.call(
        "GET",
        &format!("/v2.0/security-group-rules?security_group_id={narrow}&direction=egress"),
        None,
    );
    for r in egress["security_group_rules"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        cloud.call("DELETE", &format!("/v2.0/security-group-rules/{id}"), None);
    }
    add_rule(
        &cloud,
        &narrow,
        "egress",
        json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22}),
    );
    add_rule(&cloud, &narrow, "egress", json!({"protocol": "icmp"}));
    add_rule(&cloud, &narrow, "ingress", json!({"protocol": "icmp"}));
    let stateless = |name: &str| {
        cloud.call(
            "POST",
            "/v2.0/security-groups",
            Some(json!({"security_group": {"name": name, "project_id": PA, "stateful": false}})),
        )["security_group"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // half1: tcp 5000 in, no way back in for replies; half2 lets replies
    // to the probes' source ports (20000 + flow id) in.
    let half1 = stateless("half1");
    let half2 = stateless("half2");
    for g in [&half1, &half2] {
        add_rule(
            &cloud,
            g,
            "ingress",
            json!({"protocol": "tcp", "port_range_min": 5000, "port_range_max": 5000}),
        );
    }
    add_rule(
        &cloud,
        &half2,
        "ingress",
        json!({"protocol": "tcp", "port_range_min": 20000, "port_range_max": 21000}),
    );

    let sg = |g: &[&String]| json!({ "security_groups": g });
    let nexthop_vm = json!({"security_groups": [open], "allowed_address_pairs": [{"ip_address": "192.168.50.0/24"}]});
    let specs: Vec<MachineSpec> = vec![
        (
            &net_x,
            &sub_x,
            "10.10.0.11",
            1,
            sg(&[&open]),
            Some("10.10.0.1"),
        ),
        (
            &net_x,
            &sub_x,
            "10.10.0.12",
            2,
            sg(&[&web]),
            Some("10.10.0.1"),
        ),
        (
            &net_x,
            &sub_x,
            "10.10.0.13",
            3,
            sg(&[&narrow]),
            Some("10.10.0.1"),
        ),
        (
            &net_x,
            &sub_x,
            "10.10.0.14",
            1,
            sg(&[&half1]),
            Some("10.10.0.1"),
        ),
        (
            &net_y,
            &sub_y,
            "10.20.0.21",
            1,
            sg(&[&open]),
            Some("10.20.0.1"),
        ),
        (
            &net_y,
            &sub_y,
            "10.20.0.22",
            2,
            sg(&[&web]),
            Some("10.20.0.1"),
        ),
        (
            &net_y,
            &sub_y,
            "10.20.0.23",
            3,
            sg(&[&half2]),
            Some("10.20.0.1"),
        ),
        (
            &net_y,
            &sub_y,
            "10.20.0.24",
            3,
            sg(&[&half1]),
            Some("10.20.0.1"),
        ),
        (
            &net_y,
            &sub_y,
            "10.20.0.30",
            3,
            nexthop_vm,
            Some("10.20.0.1"),
        ),
        (
            &net_z,
            &sub_z,
            "10.30.0.31",
            2,
            sg(&[&open]),
            Some("10.30.0.1"),
        ),
        (&net_w, &sub_w, "10.40.0.41", 3, sg(&[&open]), None),
    ];
    let mut machines: Vec<Machine> = Vec::new();
    let mut gateways = Vec::new();
    for (net, sub, ip, host, extra, gateway) in specs {
        let (port, vm) = cloud.vm_with(PA, net, sub, ip, host, extra);
        vm.add_ip(&format!("{ip}/24")).unwrap();
        gateways.push(gateway);
        machines.push(Machine {
            port,
            project: PA,
            ip: ip.parse().unwrap(),
            vm,
        });
    }
    for (m, gateway) in machines.iter().zip(&gateways) {
        if let Some(gw) = gateway {
            m.vm.ns
                .ip(&["route", "replace", "default", "via", gw])
                .unwrap();
        }
    }
    // The next hop VM stands for 192.168.50.0/24.
    let nexthop = &machines[8];
    nexthop
        .vm
        .ns
        .ip(&["addr", "add", "192.168.50.1/32", "dev", "lo"])
        .unwrap();
    for m in &machines {
        wait_for("ports ACTIVE", Duration::from_secs(30), || {
            cloud.status(&m.port) == "ACTIVE"
        });
    }
    // Facts, not sleeps: every host routes, the extra route is installed,
    // and the member set of `open` reached `web`'s hosts.
    for (from, to) in [
        (0, "192.168.50.1"),
        (1, "192.168.50.1"),
        (2, "192.168.50.1"),
        (0, "10.20.0.22"),
        (4, "10.10.0.12"),
    ] {
        wait_for("routed pings", Duration::from_secs(30), || {
            machines[from].vm.ping(to, 1) == 1
        });
    }

    let targets: Vec<IpAddr> = machines
        .iter()
        .map(|m| m.ip)
        .chain(["192.168.50.1", "172.16.5.5", "10.99.0.1"].map(|s| s.parse().unwrap()))
        .collect();
    let routers: [IpAddr; 2] = ["10.10.0.1", "10.20.0.1"].map(|s| s.parse().unwrap());
    let mut flows = Vec::new();
    while flows.len() < 240 {
        let src = (rng.next_u64() % machines.len() as u64) as usize;
        let id = flows.len();
        // Now and then the router's own addresses, by ping only (nothing
        // listens there, so TCP and UDP would say nothing about the path).
        if chance(&mut rng, 8) {
            flows.push(Flow {
                id,
                src,
                spoof: None,
                dst: pick(&mut rng, &routers),
                to_port: None,
                proto: Proto::Icmp,
                dport: 0,
                sport: None,
            });
            continue;
        }
        let dst = pick(&mut rng, &targets);
        if dst == machines[src].ip {
            continue;
        }
        let to_port = machines
            .iter()
            .position(|m| m.ip == dst)
            .filter(|_| chance(&mut rng, 25));
        flows.push(Flow {
            id,
            src,
            spoof: None,
            dst,
            to_port,
            proto: pick(&mut rng, &[Proto::Tcp, Proto::Udp, Proto::Icmp]),
            dport: pick(&mut rng, &[22, 80, 5000, 8080]),
            sport: None,
        });
    }
    let warm: Vec<IpAddr> = targets.iter().chain(&routers).copied().collect();
    let (delivered, total) = traces_against_packets(&cloud, &machines, &flows, &warm);
    assert!(
        delivered >= 20 && total - delivered >= 20,
        "{delivered} of {total} delivered"
    );
}
