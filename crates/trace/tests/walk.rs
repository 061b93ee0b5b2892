//! The walk over a small cloud, through both views: the server's compiler
//! (borrowing queries) and the hosts' snapshots (what agents get). Every
//! trace must come out the same through both.

#![allow(clippy::unwrap_used)] // a broken fixture should panic the test

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use compiler::{Compiler, Input};
use model::{
    Association, Direction, Ethertype, FixedIp, FloatingIp, Gateway, HostRoute, MacAddr, Network,
    OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Port, PortForwarding, PortStatus, Router,
    SecurityGroup, SecurityGroupRule, Standard, Subnet,
};
use trace::{
    Facts, Packet, Query, Reason, Snapshots, Source, Stage, Target, Trace, Verdict, trace,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn std(id: &str) -> Standard {
    Standard::new(id.into(), "p".into(), 0)
}

fn network(id: &str, vni: u32) -> Input {
    Input::Network(Box::new(Network {
        std: std(id),
        admin_state_up: true,
        mtu: 1450,
        legacy_shared: false,
        legacy_external: false,
        port_security_enabled: true,
        network_type: "vxlan".into(),
        segmentation_id: vni,
        physical_network: None,
        availability_zone_hints: vec![],
        is_default: false,
    }))
}

fn subnet(id: &str, network_id: &str, cidr: &str) -> Input {
    Input::Subnet(Box::new(Subnet {
        std: std(id),
        network_id: network_id.into(),
        ip_version: if cidr.contains(':') { 6 } else { 4 },
        cidr: cidr.parse().unwrap(),
        gateway_ip: None,
        allocation_pools: vec![],
        dns_nameservers: vec![],
        host_routes: vec![],
        enable_dhcp: true,
        ipv6_ra_mode: None,
        ipv6_address_mode: None,
        subnetpool_id: None,
        service_types: vec![],
    }))
}

fn port(id: &str, net: &str, sub: &str, host: &str, last: u8, addr: &str, groups: &[&str]) -> Port {
    Port {
        std: std(id),
        network_id: net.into(),
        mac_address: MacAddr([0xfa, 0x16, 0x3e, 0, 0, last]),
        admin_state_up: true,
        status: PortStatus::Active,
        device_id: String::new(),
        device_owner: String::new(),
        fixed_ips: vec![FixedIp {
            subnet_id: sub.into(),
            ip_address: ip(addr),
        }],
        security_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        port_security_enabled: true,
        allowed_address_pairs: vec![],
        extra_dhcp_opts: vec![],
        binding_host_id: host.into(),
        binding_vnic_type: "normal".into(),
        binding_profile: String::new(),
    }
}

fn group(id: &str, stateful: bool) -> Input {
    Input::SecurityGroup(Box::new(SecurityGroup {
        std: std(id),
        stateful,
        is_default: false,
    }))
}

#[allow(clippy::too_many_arguments)]
fn rule(
    id: &str,
    group: &str,
    dir: Direction,
    proto: Option<&str>,
    ports: Option<(u32, u32)>,
    prefix: Option<&str>,
    remote_group: Option<&str>,
) -> Input {
    Input::SecurityGroupRule(Box::new(SecurityGroupRule {
        std: std(id),
        security_group_id: group.into(),
        direction: dir,
        ethertype: Ethertype::IPv4,
        protocol: proto.map(str::to_owned),
        port_range_min: ports.map(|p| p.0),
        port_range_max: ports.map(|p| p.1),
        remote_ip_prefix: prefix.map(|p| p.parse().unwrap()),
        remote_group_id: remote_group.map(str::to_owned),
        remote_address_group_id: None,
    }))
}

/// Liveness and model facts, as a test sets them.
#[derive(Default)]
struct World {
    dead: BTreeSet<String>,
    status: BTreeMap<String, PortStatus>,
    ips: BTreeMap<(String, IpAddr), String>,
    floating_ips: BTreeMap<IpAddr, String>,
}

impl Facts for World {
    fn agent_alive(&self, host: &str) -> bool {
        !self.dead.contains(host)
    }
    fn port_status(&self, port_id: &str) -> Option<PortStatus> {
        Some(*self.status.get(port_id).unwrap_or(&PortStatus::Active))
    }
    fn port_with_ip(&self, network_id: &str, ip: IpAddr) -> Option<String> {
        self.ips.get(&(network_id.to_owned(), ip)).cloned()
    }
    fn floating_ip_with_address(&self, address: IpAddr) -> Option<String> {
        self.floating_ips.get(&address).cloned()
    }
}

struct Cloud {
    compiler: Compiler,
    world: World,
    hosts: Vec<String>,
}

impl Cloud {
    fn new() -> Self {
        let mut compiler = Compiler::new();
        for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
            compiler.apply(Input::Host {
                name: (*h).into(),
                underlay_ip: ip(&format!("192.0.2.{}", i + 1)),
                physical_networks: vec![],
                gateway: false,
                availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
            });
        }
        for input in [
            network("net-a", 100),
            subnet("sub-a", "net-a", "10.0.0.0/24"),
            network("net-b", 200),
            subnet("sub-b", "net-b", "10.0.0.0/24"),
            group("web", true),
            group("ssh", true),
            group("loose", false),
            rule("r-eg", "web", Direction::Egress, None, None, None, None),
            rule(
                "r-web",
                "web",
                Direction::Ingress,
                Some("tcp"),
                Some((80, 90)),
                None,
                None,
            ),
            rule("r-ssh-eg", "ssh", Direction::Egress, None, None, None, None),
            rule(
                "r-ssh",
                "ssh",
                Direction::Ingress,
                Some("tcp"),
                Some((22, 22)),
                None,
                Some("web"),
            ),
            rule(
                "r-icmp",
                "ssh",
                Direction::Ingress,
                Some("icmp"),
                None,
                Some("10.0.0.0/28"),
                None,
            ),
            rule(
                "r-loose-eg",
                "loose",
                Direction::Egress,
                Some("udp"),
                None,
                None,
                None,
            ),
            rule(
                "r-loose-in",
                "loose",
                Direction::Ingress,
                Some("udp"),
                None,
                None,
                None,
            ),
            group("half", false),
            rule(
                "r-half-eg",
                "half",
                Direction::Egress,
                Some("tcp"),
                None,
                None,
                None,
            ),
            rule(
                "r-half-in",
                "half",
                Direction::Ingress,
                Some("tcp"),
                Some((5000, 5000)),
                None,
                None,
            ),
        ] {
            compiler.apply(input);
        }
        let mut cloud = Cloud {
            compiler,
            world: World::default(),
            hosts: vec!["h1".into(), "h2".into(), "h3".into()],
        };
        cloud.put(port("a1", "net-a", "sub-a", "h1", 1, "10.0.0.5", &["web"]));
        cloud.put(port("a2", "net-a", "sub-a", "h2", 2, "10.0.0.6", &["ssh"]));
        cloud.put(port("a3", "net-a", "sub-a", "h1", 3, "10.0.0.7", &["ssh"]));
        cloud.put(port("b1", "net-b", "sub-b", "h2", 4, "10.0.0.8", &["web"]));
        cloud.put(port("u1", "net-a", "sub-a", "", 5, "10.0.0.20", &["ssh"]));
        cloud.put(port(
            "l1",
            "net-a",
            "sub-a",
            "h3",
            6,
            "10.0.0.30",
            &["loose"],
        ));
        cloud.put(port(
            "l2",
            "net-a",
            "sub-a",
            "h2",
            7,
            "10.0.0.31",
            &["loose"],
        ));
        cloud.put(port(
            "s1",
            "net-a",
            "sub-a",
            "h3",
            10,
            "10.0.0.50",
            &["half"],
        ));
        cloud.put(port(
            "s2",
            "net-a",
            "sub-a",
            "h1",
            11,
            "10.0.0.51",
            &["half"],
        ));
        cloud
    }

    fn put(&mut self, p: Port) {
        for f in &p.fixed_ips {
            self.world
                .ips
                .insert((p.network_id.clone(), f.ip_address), p.std.id.clone());
        }
        self.compiler.apply(Input::Port(Box::new(p)));
    }

    /// The trace through the compiler, checked equal to the one through snapshots.
    fn trace(&self, q: &Query) -> Trace {
        let snapshots = Snapshots {
            states: self
                .hosts
                .iter()
                .map(|h| (h.clone(), self.compiler.snapshot(h)))
                .collect(),
        };
        let by_compiler = trace(&self.compiler, &self.world, q).unwrap();
        let by_snapshots = trace(&snapshots, &self.world, q).unwrap();
        assert_eq!(by_compiler, by_snapshots, "the two views disagree");
        by_compiler
    }
}

fn tcp(from: &str, to: Target, dport: u16) -> Query {
    Query {
        from: Source::Port(from.into()),
        to,
        packet: Packet {
            protocol: 6,
            destination_port: Some(dport),
            ..Packet::default()
        },
    }
}

fn dropped(t: &Trace) -> Reason {
    assert_eq!(t.verdict, Verdict::Dropped, "{t:#?}");
    t.reason.unwrap()
}

#[test]
fn a_remote_group_rule_lets_ssh_in_across_hosts() {
    let c = Cloud::new();
    let t = c.trace(&tcp("a1", Target::Ip(ip("10.0.0.6")), 22));
    assert!(t.delivered(), "{t:#?}");
    let ingress = t
        .steps
        .iter()
        .find(|s| s.rule.as_deref() == Some("r-ssh"))
        .unwrap();
    assert_eq!(ingress.host.as_deref(), Some("h2"));
    assert!(t.steps.iter().any(|s| s.stage == trace::Stage::Tunnel));
    // Same host, by port: no tunnel.
    let t = c.trace(&tcp("a1", Target::Port("a3".into()), 22));
    assert!(t.delivered(), "{t:#?}");
    assert!(!t.steps.iter().any(|s| s.stage == trace::Stage::Tunnel));
}

#[test]
fn no_rule_names_the_group_and_hints_the_fix() {
    let c = Cloud::new();
    let t = c.trace(&tcp("a1", Target::Ip(ip("10.0.0.6")), 23));
    assert_eq!(dropped(&t), Reason::NoRuleAllows);
    let hint = t.hint.unwrap();
    assert!(
        hint.contains("ingress rule allowing tcp 23 from 10.0.0.5/32 or from group web"),
        "{hint}"
    );
    assert!(hint.contains("to group ssh"), "{hint}");
    // A port range, and a prefix remote: icmp from 10.0.0.5 is in 10.0.0.0/28.
    assert!(
        c.trace(&tcp("a3", Target::Ip(ip("10.0.0.5")), 85))
            .delivered()
    );
    let ping = Query {
        from: Source::Port("a1".into()),
        to: Target::Ip(ip("10.0.0.6")),
        packet: Packet {
            protocol: 1,
            ..Packet::default()
        },
    };
    assert!(c.trace(&ping).delivered());
    // From a member of ssh (not web): the remote group does not match.
    assert_eq!(
        dropped(&c.trace(&tcp("a3", Target::Ip(ip("10.0.0.6")), 22))),
        Reason::NoRuleAllows
    );
}

#[test]
fn addresses_off_the_network_have_no_route_and_networks_are_isolated() {
    let c = Cloud::new();
    // Off-link, and sub-a has no gateway.
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Ip(ip("10.9.0.1")), 22))),
        Reason::NoGateway
    );
    // b1's address is on net-b: from net-a nothing answers for it.
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Ip(ip("10.0.0.8")), 80))),
        Reason::NotOnNetwork
    );
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Port("b1".into()), 80))),
        Reason::DifferentNetwork
    );
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Ip(ip("10.0.0.20")), 22))),
        Reason::DestinationPortUnbound
    );
}

#[test]
fn spoofed_sources_dead_agents_and_down_ports_stop_it() {
    let mut c = Cloud::new();
    let mut q = tcp("a1", Target::Ip(ip("10.0.0.6")), 22);
    q.packet.source_ip = Some(ip("10.0.0.99"));
    assert_eq!(dropped(&c.trace(&q)), Reason::SpoofedSource);

    c.world.dead.insert("h2".into());
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Ip(ip("10.0.0.6")), 22))),
        Reason::HostAgentDead
    );
    c.world.dead.clear();
    c.world.status.insert("a2".into(), PortStatus::Down);
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Ip(ip("10.0.0.6")), 22))),
        Reason::PortDown
    );
    c.world.status.clear();
    let mut down = port("a2", "net-a", "sub-a", "h2", 2, "10.0.0.6", &["ssh"]);
    down.admin_state_up = false;
    c.put(down);
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Ip(ip("10.0.0.6")), 22))),
        Reason::PortAdminDown
    );
}

#[test]
fn ports_on_unregistered_hosts_are_unreachable() {
    let mut c = Cloud::new();
    c.put(port("x1", "net-a", "sub-a", "h9", 9, "10.0.0.40", &["web"]));
    c.hosts.push("h9".into());
    assert_eq!(
        dropped(&c.trace(&tcp("a1", Target::Ip(ip("10.0.0.40")), 80))),
        Reason::RemoteHostNotRegistered
    );
}

#[test]
fn stateless_groups_need_rules_for_replies() {
    let c = Cloud::new();
    let udp = Query {
        from: Source::Port("l1".into()),
        to: Target::Ip(ip("10.0.0.31")),
        packet: Packet {
            protocol: 17,
            destination_port: Some(5000),
            ..Packet::default()
        },
    };
    assert!(c.trace(&udp).delivered());
    // TCP: the stateless group allows no tcp at all.
    let t = c.trace(&tcp("l1", Target::Ip(ip("10.0.0.31")), 5000));
    assert_eq!(dropped(&t), Reason::NoRuleAllows);
    // tcp 5000 gets in, but its reply (to an ephemeral port) does not:
    // stateless groups keep no connection.
    let t = c.trace(&tcp("s1", Target::Port("s2".into()), 5000));
    assert_eq!(dropped(&t), Reason::NoRuleAllows);
    let last = t.steps.last().unwrap();
    assert_eq!(
        (last.stage, last.port.as_deref()),
        (trace::Stage::Reply, Some("s1"))
    );
    assert!(t.message.contains("stateless"), "{}", t.message);
    // With the reply's port allowed too, it goes through.
    let mut q = tcp("s1", Target::Port("s2".into()), 5000);
    q.packet.source_port = Some(5000);
    assert!(c.trace(&q).delivered());
}

#[test]
fn the_trace_is_json() {
    let c = Cloud::new();
    let t = c.trace(&tcp("a1", Target::Ip(ip("10.0.0.6")), 23));
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["verdict"], "dropped");
    assert_eq!(v["reason"], "no_rule_allows");
    assert_eq!(v["steps"][0]["stage"], "source");
}

#[test]
fn icmp_toward_ipv6_is_icmpv6_and_rules_read_it_so() {
    let mut c = Cloud::new();
    for input in [
        subnet("sub-a6", "net-a", "fd00::/64"),
        group("v6", true),
        Input::SecurityGroupRule(Box::new(SecurityGroupRule {
            std: std("r-v6-icmp"),
            security_group_id: "v6".into(),
            direction: Direction::Ingress,
            ethertype: Ethertype::IPv6,
            // Neutron's legacy name: ICMP on an IPv6 rule means ICMPv6.
            protocol: Some("icmp".into()),
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: Some("fd00::/64".parse().unwrap()),
            remote_group_id: None,
            remote_address_group_id: None,
        })),
        Input::SecurityGroupRule(Box::new(SecurityGroupRule {
            std: std("r-v6-eg"),
            security_group_id: "v6".into(),
            direction: Direction::Egress,
            ethertype: Ethertype::IPv6,
            protocol: None,
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id: None,
            remote_address_group_id: None,
        })),
    ] {
        c.compiler.apply(input);
    }
    let mut p = port(
        "v1",
        "net-a",
        "sub-a6",
        "h1",
        20,
        "fd00::20",
        &["v6", "web"],
    );
    p.fixed_ips.push(FixedIp {
        subnet_id: "sub-a".into(),
        ip_address: ip("10.0.0.60"),
    });
    c.put(p);
    c.put(port("v2", "net-a", "sub-a6", "h2", 21, "fd00::21", &["v6"]));
    let ping = |to: &str| Query {
        from: Source::Port("v1".into()),
        to: Target::Ip(ip(to)),
        packet: Packet {
            protocol: 1,
            ..Packet::default()
        },
    };
    // IPv4 rules (all of `web`'s) say nothing of IPv6: the egress rule is `v6`'s.
    let t = c.trace(&ping("fd00::21"));
    assert!(t.delivered(), "{t:#?}");
    assert!(t.steps.iter().any(|s| s.rule.as_deref() == Some("r-v6-eg")));
    assert_eq!((t.packet.protocol, t.packet.icmp_type), (58, Some(128)));
    assert_eq!(
        t.packet.source_ip,
        Some(ip("fd00::20")),
        "the source of the destination's version"
    );
    // Neighbour discovery is always allowed in; a TCP packet is not.
    assert_eq!(
        dropped(&c.trace(&tcp("v1", Target::Ip(ip("fd00::21")), 22))),
        Reason::NoRuleAllows
    );
    let mut q = ping("fd00::21");
    q.packet.icmp_type = Some(135);
    let t = c.trace(&q);
    assert!(t.delivered(), "{t:#?}");
    assert!(t.steps.iter().any(|s| s.detail.contains("always allowed")));
}

// ---- routed east-west ------------------------------------------------------

fn subnet_gw(id: &str, network_id: &str, cidr: &str, gateway: Option<&str>) -> Input {
    let Input::Subnet(mut s) = subnet(id, network_id, cidr) else {
        unreachable!()
    };
    s.gateway_ip = gateway.map(ip);
    Input::Subnet(s)
}

fn router(id: &str, routes: &[(&str, &str)]) -> Input {
    Input::Router(Box::new(Router {
        std: std(id),
        admin_state_up: true,
        gateway: None,
        routes: routes
            .iter()
            .map(|(d, n)| HostRoute {
                destination: d.parse().unwrap(),
                nexthop: ip(n),
            })
            .collect(),
        availability_zone_hints: vec![],
    }))
}

fn interface(id: &str, router: &str, net: &str, sub: &str, last: u8, addr: &str) -> Port {
    let mut p = port(id, net, sub, "", last, addr, &[]);
    p.device_owner = OWNER_ROUTER_INTERFACE.into();
    p.device_id = router.into();
    p
}

/// Router R1 joins ra (10.1.0.0/24) and rb (10.2.0.0/24), with an extra
/// route to 192.168.7.0/24 via vb2 and one to 172.16.0.0/16 via an address
/// nothing holds; rc has a gateway no router holds; rd has no gateway.
fn routed() -> Cloud {
    let mut c = Cloud::new();
    for input in [
        network("ra", 301),
        subnet_gw("sub-ra", "ra", "10.1.0.0/24", Some("10.1.0.1")),
        network("rb", 302),
        subnet_gw("sub-rb", "rb", "10.2.0.0/24", Some("10.2.0.1")),
        network("rc", 303),
        subnet_gw("sub-rc", "rc", "10.3.0.0/24", Some("10.3.0.1")),
        network("rd", 304),
        subnet_gw("sub-rd", "rd", "10.4.0.0/24", None),
        router(
            "R1",
            &[
                ("192.168.7.0/24", "10.2.0.20"),
                ("172.16.0.0/16", "10.2.0.99"),
            ],
        ),
    ] {
        c.compiler.apply(input);
    }
    c.put(interface("qa", "R1", "ra", "sub-ra", 0x41, "10.1.0.1"));
    c.put(interface("qb", "R1", "rb", "sub-rb", 0x42, "10.2.0.1"));
    c.put(port(
        "va1",
        "ra",
        "sub-ra",
        "h1",
        0x51,
        "10.1.0.10",
        &["web"],
    ));
    c.put(port(
        "vb2",
        "rb",
        "sub-rb",
        "h2",
        0x52,
        "10.2.0.20",
        &["ssh"],
    ));
    c.put(port(
        "vb1",
        "rb",
        "sub-rb",
        "h1",
        0x53,
        "10.2.0.21",
        &["ssh"],
    ));
    c.put(port(
        "vc3",
        "rc",
        "sub-rc",
        "h3",
        0x54,
        "10.3.0.30",
        &["web"],
    ));
    c.put(port(
        "vd1",
        "rd",
        "sub-rd",
        "h1",
        0x55,
        "10.4.0.5",
        &["web"],
    ));
    c.put(port(
        "sa",
        "ra",
        "sub-ra",
        "h1",
        0x56,
        "10.1.0.51",
        &["half"],
    ));
    c.put(port(
        "sb",
        "rb",
        "sub-rb",
        "h2",
        0x57,
        "10.2.0.50",
        &["half"],
    ));
    c
}

fn stage_steps(t: &Trace, stage: Stage) -> Vec<&trace::Step> {
    t.steps.iter().filter(|s| s.stage == stage).collect()
}

#[test]
fn routed_across_hosts_on_the_sending_host() {
    let c = routed();
    let t = c.trace(&tcp("va1", Target::Ip(ip("10.2.0.20")), 22));
    assert!(t.delivered(), "{t:#?}");
    let gw = stage_steps(&t, Stage::Gateway);
    assert_eq!(gw.len(), 1, "{t:#?}");
    assert_eq!(gw[0].router.as_deref(), Some("R1"));
    assert_eq!(gw[0].port.as_deref(), Some("qa"));
    assert_eq!(gw[0].host.as_deref(), Some("h1"));
    let routing = stage_steps(&t, Stage::Routing);
    assert_eq!(routing.len(), 1, "{t:#?}");
    assert_eq!(routing[0].host.as_deref(), Some("h1"));
    assert_eq!(routing[0].port.as_deref(), Some("qb"));
    assert_eq!(routing[0].network.as_deref(), Some("rb"));
    let route = routing[0].route.as_ref().unwrap();
    assert_eq!(route.destination, "10.2.0.0/24".parse().unwrap());
    assert_eq!(route.nexthop, None);
    let tunnel = stage_steps(&t, Stage::Tunnel);
    assert_eq!(tunnel[0].host.as_deref(), Some("h2"));
    assert_eq!(tunnel[0].network.as_deref(), Some("rb"));
    let delivery = stage_steps(&t, Stage::Delivery);
    assert_eq!(delivery[0].port.as_deref(), Some("vb2"));
    // The ingress rule names group web as remote: va1 is in it.
    assert!(t.steps.iter().any(|s| s.rule.as_deref() == Some("r-ssh")));

    // By port, and on one host: no tunnel.
    let t = c.trace(&tcp("va1", Target::Port("vb1".into()), 22));
    assert!(t.delivered(), "{t:#?}");
    assert!(stage_steps(&t, Stage::Tunnel).is_empty(), "{t:#?}");
    assert_eq!(stage_steps(&t, Stage::Routing).len(), 1);

    // Security behind the router still decides: ssh allows only tcp 22.
    assert_eq!(
        dropped(&c.trace(&tcp("va1", Target::Ip(ip("10.2.0.20")), 80))),
        Reason::NoRuleAllows
    );
}

#[test]
fn missing_routes_gateways_and_interfaces_are_named() {
    let c = routed();
    let t = c.trace(&tcp("va1", Target::Ip(ip("10.3.0.30")), 80));
    assert_eq!(dropped(&t), Reason::NoRoute);
    assert!(
        t.message.contains("no route to 10.3.0.30 on router R1"),
        "{}",
        t.message
    );
    let t = c.trace(&tcp("vc3", Target::Ip(ip("10.1.0.10")), 80));
    assert_eq!(dropped(&t), Reason::NoRouterInterface);
    assert!(
        t.message
            .contains("no router interface on 10.3.0.1 for subnet sub-rc"),
        "{}",
        t.message
    );
    let t = c.trace(&tcp("vd1", Target::Ip(ip("10.1.0.10")), 80));
    assert_eq!(dropped(&t), Reason::NoGateway);
    assert!(t.message.contains("subnet sub-rd"), "{}", t.message);
    // An extra route whose next hop nothing holds.
    let t = c.trace(&tcp("va1", Target::Ip(ip("172.16.1.1")), 80));
    assert_eq!(dropped(&t), Reason::NotOnNetwork, "{t:#?}");
    assert_eq!(
        stage_steps(&t, Stage::Routing)[0]
            .route
            .as_ref()
            .unwrap()
            .nexthop,
        Some(ip("10.2.0.99"))
    );
}

#[test]
fn extra_routes_deliver_to_the_next_hop_and_routers_answer_for_themselves() {
    let c = routed();
    let t = c.trace(&tcp("va1", Target::Ip(ip("192.168.7.5")), 22));
    assert!(t.delivered(), "{t:#?}");
    let route = stage_steps(&t, Stage::Routing)[0].route.clone().unwrap();
    assert_eq!(route.destination, "192.168.7.0/24".parse().unwrap());
    assert_eq!(route.nexthop, Some(ip("10.2.0.20")));
    assert_eq!(
        stage_steps(&t, Stage::Delivery)[0].port.as_deref(),
        Some("vb2")
    );
    // The next hop's ingress chain decides.
    assert_eq!(
        dropped(&c.trace(&tcp("va1", Target::Ip(ip("192.168.7.5")), 80))),
        Reason::NoRuleAllows
    );
    let ping = |to: &str| Query {
        from: Source::Port("va1".into()),
        to: Target::Ip(ip(to)),
        packet: Packet {
            protocol: 1,
            ..Packet::default()
        },
    };
    // Its own gateway, and the router's address on another subnet.
    for to in ["10.1.0.1", "10.2.0.1"] {
        let t = c.trace(&ping(to));
        assert!(t.delivered(), "{t:#?}");
        let d = stage_steps(&t, Stage::Delivery);
        assert_eq!(d[0].router.as_deref(), Some("R1"), "{t:#?}");
    }
}

#[test]
fn stateless_replies_are_routed_on_the_destination_host() {
    let c = routed();
    // half: egress tcp anywhere, ingress tcp 5000 only, stateless. The
    // reply (to port 40000) is refused at sa's ingress, after being routed
    // back on sb's host.
    let t = c.trace(&tcp("sa", Target::Ip(ip("10.2.0.50")), 5000));
    assert_eq!(dropped(&t), Reason::NoRuleAllows, "{t:#?}");
    let reply: Vec<_> = stage_steps(&t, Stage::Reply);
    assert!(
        reply.iter().any(|s| s.router.as_deref() == Some("R1")
            && s.host.as_deref() == Some("h2")
            && s.route.is_some()),
        "{t:#?}"
    );
    assert_eq!(reply.last().unwrap().port.as_deref(), Some("sa"));
    assert!(t.message.contains("the reply"), "{}", t.message);
    // Stateful: conntrack lets it back, after the routed reply path.
    let t = c.trace(&tcp("va1", Target::Ip(ip("10.2.0.20")), 22));
    assert!(
        stage_steps(&t, Stage::Reply)
            .iter()
            .any(|s| s.host.as_deref() == Some("h2") && s.router.as_deref() == Some("R1")),
        "{t:#?}"
    );
}

#[test]
fn a_router_missing_from_the_model_index_is_found_by_the_host_view() {
    let mut c = routed();
    // The model's index lags: the compiled state decides, in both views.
    c.world.ips.clear();
    let t = c.trace(&tcp("va1", Target::Ip(ip("10.2.0.20")), 22));
    assert!(t.delivered(), "{t:#?}");
}

#[test]
fn routers_chain_on_the_sending_host_and_loops_run_out_of_ttl() {
    let mut c = routed();
    // R2 joins rb (10.2.0.2) and re (10.5.0.0/24); R1 reaches re through
    // it. Both hold 10.66.0.0/16 via each other: a loop.
    for input in [
        network("re", 305),
        subnet_gw("sub-re", "re", "10.5.0.0/24", Some("10.5.0.1")),
        router(
            "R1",
            &[("10.5.0.0/24", "10.2.0.2"), ("10.66.0.0/16", "10.2.0.2")],
        ),
        router("R2", &[("10.66.0.0/16", "10.2.0.1")]),
    ] {
        c.compiler.apply(input);
    }
    c.put(interface("qe2", "R2", "rb", "sub-rb", 0x43, "10.2.0.2"));
    c.put(interface("qe", "R2", "re", "sub-re", 0x44, "10.5.0.1"));
    c.put(port(
        "ve2",
        "re",
        "sub-re",
        "h2",
        0x58,
        "10.5.0.50",
        &["ssh"],
    ));

    // R2 has no way back to ra: the SYN arrives, its reply dies on h2.
    let t = c.trace(&tcp("va1", Target::Ip(ip("10.5.0.50")), 22));
    assert_eq!(dropped(&t), Reason::NoRoute);
    assert!(t.message.contains("the reply"), "{}", t.message);
    let last = t.steps.last().unwrap();
    assert_eq!(
        (last.stage, last.router.as_deref(), last.host.as_deref()),
        (Stage::Reply, Some("R2"), Some("h2"))
    );
    c.compiler.apply(router(
        "R2",
        &[("10.66.0.0/16", "10.2.0.1"), ("10.1.0.0/24", "10.2.0.1")],
    ));
    let t = c.trace(&tcp("va1", Target::Ip(ip("10.5.0.50")), 22));
    assert!(t.delivered(), "{t:#?}");
    let routing = stage_steps(&t, Stage::Routing);
    let hops: Vec<(&str, &str)> = routing
        .iter()
        .map(|s| (s.router.as_deref().unwrap(), s.host.as_deref().unwrap()))
        .collect();
    assert_eq!(hops, [("R1", "h1"), ("R2", "h1")], "{t:#?}");
    // The reply goes back through R2 then R1, both on h2.
    let back: Vec<(&str, &str)> = stage_steps(&t, Stage::Reply)
        .iter()
        .filter(|s| s.route.is_some())
        .map(|s| (s.router.as_deref().unwrap(), s.host.as_deref().unwrap()))
        .collect();
    assert_eq!(back, [("R2", "h2"), ("R1", "h2")], "{t:#?}");
    assert!(t.message.contains("routed"), "{}", t.message);

    let t = c.trace(&tcp("va1", Target::Ip(ip("10.66.1.1")), 22));
    assert_eq!(dropped(&t), Reason::TtlExceeded);
    // The VM's 64 runs out after 63 forwards.
    assert_eq!(stage_steps(&t, Stage::Routing).len(), 64, "{t:#?}");
}

/// [`routed`] with R1's gateway on a flat external network whose physical
/// network only h2 maps as a gateway host, SNAT as `snat` says.
fn with_gateway(snat: bool) -> Cloud {
    let mut c = routed();
    c.compiler.apply(Input::Host {
        name: "h2".into(),
        underlay_ip: ip("192.0.2.2"),
        physical_networks: vec!["public".into()],
        gateway: true,
        availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
    });
    let Input::Network(mut ext) = network("ext", 0) else {
        unreachable!()
    };
    ext.network_type = "flat".into();
    ext.physical_network = Some("public".into());
    c.compiler.apply(Input::Network(ext));
    c.compiler.apply(subnet_gw(
        "sub-ext",
        "ext",
        "203.0.113.0/24",
        Some("203.0.113.1"),
    ));
    let gateway_ip = FixedIp {
        subnet_id: "sub-ext".into(),
        ip_address: ip("203.0.113.5"),
    };
    let Input::Router(mut r1) = router(
        "R1",
        &[
            ("192.168.7.0/24", "10.2.0.20"),
            ("172.16.0.0/16", "10.2.0.99"),
        ],
    ) else {
        unreachable!()
    };
    r1.gateway = Some(Gateway {
        network_id: "ext".into(),
        enable_snat: snat,
        port_id: "gw-r1".into(),
        external_fixed_ips: vec![gateway_ip],
    });
    c.compiler.apply(Input::Router(r1));
    let mut gw = port("gw-r1", "ext", "sub-ext", "", 0x60, "203.0.113.5", &[]);
    gw.device_owner = OWNER_ROUTER_GATEWAY.into();
    gw.device_id = "R1".into();
    c.put(gw);
    c
}

#[test]
fn the_way_out_is_the_floating_ip_on_its_host_or_snat_on_the_gateway_host() {
    let mut c = with_gateway(true);
    // h1 has no floating IP for va1: across the external network to h2,
    // which leaves it as the gateway address.
    let t = c.trace(&tcp("va1", Target::Ip(ip("198.51.100.7")), 443));
    assert!(t.delivered(), "{t:#?}");
    assert!(
        t.message
            .contains("leaves the cloud on external network ext from host h2 as 203.0.113.5"),
        "{}",
        t.message
    );
    let nat = stage_steps(&t, Stage::Nat);
    assert_eq!(
        nat.iter().map(|s| s.host.as_deref()).collect::<Vec<_>>(),
        [Some("h1"), Some("h2")],
        "{t:#?}"
    );
    assert!(nat[1].detail.contains("SNAT 10.1.0.10 → 203.0.113.5"));

    // A floating IP for va1: it leaves from its own host, as the floating IP.
    c.compiler.apply(Input::FloatingIp(Box::new(FloatingIp {
        std: std("fip1"),
        floating_network_id: "ext".into(),
        subnet_id: "sub-ext".into(),
        floating_ip_address: ip("203.0.113.9"),
        floating_port_id: "fp1".into(),
        association: Some(Association {
            port_id: "va1".into(),
            fixed_ip_address: ip("10.1.0.10"),
            router_id: "R1".into(),
        }),
        port_forwardings: vec![],
    })));
    let t = c.trace(&tcp("va1", Target::Ip(ip("198.51.100.7")), 443));
    assert!(
        t.message.contains("from host h1 as 203.0.113.9"),
        "{}",
        t.message
    );
    assert_eq!(stage_steps(&t, Stage::Nat).len(), 1);

    // The gateway host's agent stops: the way out through it is dead.
    c.world.dead.insert("h2".into());
    let t = c.trace(&tcp("sa", Target::Ip(ip("198.51.100.7")), 443));
    assert_eq!(dropped(&t), Reason::HostAgentDead, "{t:#?}");

    // No gateway host at all (h2 no longer offers one).
    c.compiler.apply(Input::Host {
        name: "h2".into(),
        underlay_ip: ip("192.0.2.2"),
        physical_networks: vec![],
        gateway: false,
        availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
    });
    let t = c.trace(&tcp("sa", Target::Ip(ip("198.51.100.7")), 443));
    assert_eq!(dropped(&t), Reason::NoGatewayHost, "{t:#?}");
    assert!(t.hint.as_deref().unwrap_or("").contains("--gateway"));
    // The floating IP's host still lets va1 out.
    assert!(
        c.trace(&tcp("va1", Target::Ip(ip("198.51.100.7")), 443))
            .delivered()
    );
}

#[test]
fn without_snat_the_private_source_leaves_and_without_a_gateway_there_is_no_route() {
    let c = with_gateway(false);
    let t = c.trace(&tcp("va1", Target::Ip(ip("198.51.100.7")), 443));
    assert!(
        t.message.contains("from host h2 as 10.1.0.10"),
        "{}",
        t.message
    );
    assert!(
        stage_steps(&t, Stage::Nat)[1]
            .detail
            .contains("enable_snat is false")
    );
    let c = routed();
    let t = c.trace(&tcp("va1", Target::Ip(ip("198.51.100.7")), 443));
    assert_eq!(dropped(&t), Reason::NoRoute);
}

/// IPv6 behind a router whose gateway network has an IPv6 subnet leaves by
/// the sender's own host's uplink, unNATed, whichever host the gateway's;
/// with no upstream IPv6 gateway, only the external IPv6 subnet is routed.
#[test]
fn ipv6_leaves_unnatted_by_its_own_hosts_uplink() {
    let mut c = with_gateway(true);
    let Input::Subnet(mut ext6) =
        subnet_gw("sub-ext6", "ext", "2001:db8:e::/64", Some("2001:db8:e::1"))
    else {
        unreachable!()
    };
    for input in [
        subnet_gw("sub-ra6", "ra", "fd00:1::/64", Some("fd00:1::1")),
        Input::Subnet(ext6.clone()),
        group("v6out", true),
        Input::SecurityGroupRule(Box::new(SecurityGroupRule {
            std: std("v6out-e"),
            security_group_id: "v6out".into(),
            direction: Direction::Egress,
            ethertype: Ethertype::IPv6,
            protocol: None,
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id: None,
            remote_address_group_id: None,
        })),
    ] {
        c.compiler.apply(input);
    }
    c.put(interface("qa6", "R1", "ra", "sub-ra6", 0x43, "fd00:1::1"));
    c.put(port(
        "va6",
        "ra",
        "sub-ra6",
        "h1",
        0x58,
        "fd00:1::10",
        &["v6out"],
    ));
    let mut gw = port("gw-r1", "ext", "sub-ext", "", 0x60, "203.0.113.5", &[]);
    gw.fixed_ips.push(FixedIp {
        subnet_id: "sub-ext6".into(),
        ip_address: ip("2001:db8:e::5"),
    });
    gw.device_owner = OWNER_ROUTER_GATEWAY.into();
    gw.device_id = "R1".into();
    c.put(gw);

    // h2 holds the gateway; va6 on h1 leaves from h1, as itself.
    let out = tcp("va6", Target::Ip(ip("2001:db8:ff::7")), 443);
    let t = c.trace(&out);
    assert!(t.delivered(), "{t:#?}");
    assert!(
        t.message.contains("from host h1 as fd00:1::10"),
        "{}",
        t.message
    );
    assert!(stage_steps(&t, Stage::Nat).is_empty(), "{t:#?}");

    // In: the outside routes va6's prefix to R1's gateway address, held on
    // h2; R1 routes it across to h1, where va6's groups decide.
    let inbound = |from: &str| Query {
        from: Source::Outside(ip(from)),
        to: Target::Port("va6".into()),
        packet: Packet {
            protocol: 6,
            destination_port: Some(443),
            ..Packet::default()
        },
    };
    assert_eq!(
        dropped(&c.trace(&inbound("2001:db8:ff::7"))),
        Reason::NoRuleAllows
    );
    c.compiler
        .apply(Input::SecurityGroupRule(Box::new(SecurityGroupRule {
            std: std("v6in-443"),
            security_group_id: "v6out".into(),
            direction: Direction::Ingress,
            ethertype: Ethertype::IPv6,
            protocol: Some("tcp".into()),
            port_range_min: Some(443),
            port_range_max: Some(443),
            remote_ip_prefix: None,
            remote_group_id: None,
            remote_address_group_id: None,
        })));
    let t = c.trace(&inbound("2001:db8:ff::7"));
    assert!(t.delivered(), "{t:#?}");
    assert!(t.message.contains("unNATed"), "{}", t.message);
    let entry = &stage_steps(&t, Stage::Routing)[0];
    assert_eq!(entry.host.as_deref(), Some("h2"), "{t:#?}");
    assert!(entry.detail.contains("2001:db8:e::5"), "{}", entry.detail);
    assert!(!stage_steps(&t, Stage::Tunnel).is_empty(), "{t:#?}");
    assert!(stage_steps(&t, Stage::Nat).is_empty(), "{t:#?}");
    // IPv4 reaches a port from outside only through a floating IP.
    assert_eq!(
        trace(&c.compiler, &c.world, &inbound("198.51.100.7")),
        Err(trace::TraceError::OutsideToPort)
    );

    // No upstream: the external IPv6 subnet alone is on link.
    ext6.gateway_ip = None;
    c.compiler.apply(Input::Subnet(ext6));
    assert_eq!(dropped(&c.trace(&out)), Reason::NoRoute);
    assert!(
        c.trace(&tcp("va6", Target::Ip(ip("2001:db8:e::77")), 443))
            .delivered()
    );
}

fn from_outside(to: &str, protocol: u8, dport: Option<u16>) -> Query {
    Query {
        from: Source::Outside(ip("198.51.100.7")),
        to: Target::Ip(ip(to)),
        packet: Packet {
            protocol,
            destination_port: dport,
            ..Packet::default()
        },
    }
}

fn floating_ip(
    id: &str,
    address: &str,
    fixed: Option<(&str, &str)>,
    forwards: &[PortForwarding],
) -> Input {
    Input::FloatingIp(Box::new(FloatingIp {
        std: std(id),
        floating_network_id: "ext".into(),
        subnet_id: "sub-ext".into(),
        floating_ip_address: ip(address),
        floating_port_id: format!("fp-{id}"),
        association: fixed.map(|(port, fixed)| Association {
            port_id: port.into(),
            fixed_ip_address: ip(fixed),
            router_id: "R1".into(),
        }),
        port_forwardings: forwards.to_vec(),
    }))
}

fn forward(id: &str, external: u16, port: &str, internal: (&str, u16)) -> PortForwarding {
    PortForwarding {
        id: id.into(),
        protocol: "tcp".into(),
        external_port: external,
        internal_port: internal.1,
        internal_port_id: port.into(),
        internal_ip_address: ip(internal.0),
        description: String::new(),
        router_id: "R1".into(),
    }
}

#[test]
fn from_outside_a_floating_ip_is_dnated_on_its_host_and_answered_from_there() {
    let mut c = with_gateway(true);
    for (id, address, fixed, forwards) in [
        ("fip1", "203.0.113.9", Some(("va1", "10.1.0.10")), vec![]),
        (
            "fip2",
            "203.0.113.10",
            None,
            vec![forward("pf-a", 8080, "va1", ("10.1.0.10", 80))],
        ),
        // Forwards to ports on two hosts: it lives on the first one's.
        (
            "fip3",
            "203.0.113.11",
            None,
            vec![
                forward("pf-a", 8080, "va1", ("10.1.0.10", 80)),
                forward("pf-b", 9090, "sb", ("10.2.0.50", 5000)),
            ],
        ),
    ] {
        c.world.floating_ips.insert(ip(address), id.into());
        c.compiler.apply(floating_ip(id, address, fixed, &forwards));
    }

    let t = c.trace(&from_outside("203.0.113.9", 6, Some(80)));
    assert!(t.delivered(), "{t:#?}");
    assert!(
        t.message
            .contains("reaches port va1 on host h1 (DNAT 203.0.113.9 → 10.1.0.10)"),
        "{}",
        t.message
    );
    assert_eq!(stage_steps(&t, Stage::Nat)[0].host.as_deref(), Some("h1"));
    // The port's groups still decide.
    let t = c.trace(&from_outside("203.0.113.9", 6, Some(22)));
    assert_eq!(dropped(&t), Reason::NoRuleAllows, "{t:#?}");
    // Not a floating IP.
    let t = c.trace(&from_outside("203.0.113.77", 6, Some(80)));
    assert_eq!(dropped(&t), Reason::NoFloatingIp);

    // A port forwarding: only its protocol and port; ping reaches the uplink.
    let t = c.trace(&from_outside("203.0.113.10", 6, Some(8080)));
    assert!(
        t.message
            .contains("port forwarding tcp 8080 → 10.1.0.10:80"),
        "{t:#?}"
    );
    assert_eq!(
        dropped(&c.trace(&from_outside("203.0.113.10", 6, Some(8081)))),
        Reason::NoFloatingIp
    );
    assert!(c.trace(&from_outside("203.0.113.10", 1, None)).delivered());

    // A floating IP lives on one host (its first forwarding's port's):
    // a forwarding to a port on another host is not realised, and the trace
    // says so as the kernel would answer.
    let t = c.trace(&from_outside("203.0.113.11", 6, Some(9090)));
    assert_eq!(dropped(&t), Reason::NoFloatingIp, "{t:#?}");
    assert!(
        c.trace(&from_outside("203.0.113.11", 6, Some(8080)))
            .delivered()
    );

    // Traces from outside go to addresses.
    let q = Query {
        to: Target::Port("va1".into()),
        ..from_outside("203.0.113.9", 6, Some(80))
    };
    assert!(trace(&c.compiler, &c.world, &q).is_err());
}

fn address_group(id: &str, addresses: &[&str]) -> Input {
    Input::AddressGroup(Box::new(model::AddressGroup {
        std: std(id),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
    }))
}

#[test]
fn an_address_group_rule_decides_for_the_addresses_in_it() {
    let mut c = Cloud::new();
    c.compiler.apply(address_group("ag", &["10.0.0.5/32"]));
    c.compiler
        .apply(Input::SecurityGroupRule(Box::new(SecurityGroupRule {
            std: std("r-ag"),
            security_group_id: "ssh".into(),
            direction: Direction::Ingress,
            ethertype: Ethertype::IPv4,
            protocol: Some("tcp".into()),
            port_range_min: Some(2222),
            port_range_max: Some(2222),
            remote_ip_prefix: None,
            remote_group_id: None,
            remote_address_group_id: Some("ag".into()),
        })));
    let t = c.trace(&tcp("a1", Target::Port("a2".into()), 2222));
    assert!(t.delivered(), "{t:#?}");
    let ingress = t
        .steps
        .iter()
        .find(|s| s.rule.as_deref() == Some("r-ag"))
        .unwrap();
    assert_eq!(ingress.security_group.as_deref(), Some("ssh"));
    assert!(
        ingress.detail.contains("from address group ag")
            && ingress.detail.contains("(address 10.0.0.5/32)"),
        "{}",
        ingress.detail
    );
    // a3's address is not in the group.
    let t = c.trace(&tcp("a3", Target::Port("a2".into()), 2222));
    assert_eq!(t.verdict, Verdict::Dropped, "{t:#?}");
    // Until it is.
    c.compiler
        .apply(address_group("ag", &["10.0.0.5/32", "10.0.0.0/29"]));
    let t = c.trace(&tcp("a3", Target::Port("a2".into()), 2222));
    assert!(t.delivered(), "{t:#?}");
    assert!(t.steps.iter().any(|s| s.rule.as_deref() == Some("r-ag")));
}
