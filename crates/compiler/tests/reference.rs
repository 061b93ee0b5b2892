//! Random sequences of inputs (a few networks, VXLAN or flat on a physical
//! network, and changing between the two; subnets, hosts, ports that move
//! between hosts and networks, security groups and rules naming each other as
//! remote groups or address groups, ports joining and leaving groups,
//! addresses joining and leaving address groups, toggling port security and
//! carrying address pairs, with deletes) checked after every step:
//! (a) each host's changes emitted so far, replayed, give exactly its snapshot;
//! (b) each snapshot equals a from-scratch computation written plainly below;
//! (c) a host whose state did not change was sent nothing;
//! Routers: ports become interfaces of two routers and stop being them, on
//! any network, and routers come and go with extra routes and gateways;
//! hosts offer gateway service on physical networks, come and go; floating
//! IPs are associated with ports and forward ports to them, and follow them.
//! (d) the narrow queries `vnet trace` reads (how a host sees a port, a
//! network, a group, a member set) answer as the snapshot says.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::{Replay, ip, network, port, subnet};
use compiler::Input;
use compiler::protocol::{
    AllowedSource, DhcpOptionSpec, FixedIpSpec, FloatingIpSpec, HostState, LocalPortSpec,
    NetworkSpec, PortForwardingSpec, PortSecuritySpec, RemotePortSpec, RouteSpec,
    RouterGatewaySpec, RouterInterfaceSpec, RouterSpec, RuleDirection, RuleEthertype, RuleRemote,
    RuleSpec, SecurityGroupSpec, SubnetSpec,
};
use ipnet::IpNet;
use model::{
    AddressPair, Association, Direction, Ethertype, ExtraDhcpOpt, FloatingIp, Gateway, HostRoute,
    Network, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Port, PortForwarding, Router,
    SecurityGroup, SecurityGroupRule, Standard, Subnet,
};
use proptest::prelude::*;

const NETWORKS: usize = 3;
const SUBNETS: usize = 4;
const PORTS: usize = 8;
const GROUPS: usize = 3;
const RULES: usize = 6;
const ADDRESS_GROUPS: usize = 2;
/// What an address group may hold (bits of `Op::AddressGroupPut`): hosts,
/// networks, nested prefixes and IPv6, some where the ports' addresses are.
const AG_ADDRESSES: [&str; 6] = [
    "10.0.0.1/32",
    "10.0.0.0/24",
    "10.1.0.0/16",
    "10.2.0.7/32",
    "fd00::/64",
    "fd00::1/128",
];
const ROUTERS: usize = 2;
const FLOATING_IPS: usize = 2;
/// Protocols as tenants write them.
const PROTOCOLS: [Option<&str>; 9] = [
    None,
    Some("any"),
    Some("tcp"),
    Some("udp"),
    Some("6"),
    Some("icmp"),
    Some("58"),
    Some("gre"),
    Some("132"),
];
/// Address-pair prefixes, by subnet index `{s}`: a host, a network, and a
/// prefix with host bits set (truncated to its network).
const PAIRS: [&str; 3] = ["10.{s}.0.1/32", "10.{s}.0.0/24", "10.{s}.0.3/24"];
/// Physical networks flat networks are on.
const PHYSICAL_NETWORKS: [&str; 2] = ["external", "physnet2"];
/// Host names ports may be bound to; index 0 is "" (unbound).
const HOSTS: [&str; 5] = ["", "h1", "h2", "h3", "h4"];
const PROFILES: [&str; 5] = [
    "",
    "{}",
    r#"{"device": "veth-a"}"#,
    r#"{"device": 3}"#,
    "not json",
];

#[derive(Clone, Debug)]
enum Op {
    NetworkPut {
        net: usize,
        vni: u32,
        mtu: u32,
        /// An index into PHYSICAL_NETWORKS: the network is flat there.
        flat: Option<usize>,
    },
    NetworkDelete(usize),
    SubnetPut {
        subnet: usize,
        net: usize,
        variant: u8,
    },
    SubnetDelete(usize),
    PortPut(PortPut),
    PortDelete(usize),
    HostPut {
        host: usize,
        ip_last: u8,
        /// Bits: the PHYSICAL_NETWORKS it maps.
        physnets: u8,
        gateway: bool,
    },
    HostDelete(usize),
    GroupPut {
        group: usize,
        stateful: bool,
    },
    GroupDelete(usize),
    RulePut(RulePut),
    RuleDelete(usize),
    /// Bits: the AG_ADDRESSES it holds.
    AddressGroupPut {
        ag: usize,
        addresses: u8,
    },
    AddressGroupDelete(usize),
    RouterPut {
        router: usize,
        routes: u8,
        /// (network, gateway port, enable_snat)
        gateway: Option<(usize, usize, bool)>,
    },
    RouterDelete(usize),
    FloatingIpPut {
        fip: usize,
        router: usize,
        /// The associated port, and the last octet of its fixed IP.
        association: Option<(usize, u8)>,
        /// Forwardings, each to a port (only without an association).
        forwardings: Vec<usize>,
    },
    FloatingIpDelete(usize),
}

#[derive(Clone, Debug)]
struct RulePut {
    rule: usize,
    group: usize,
    egress: bool,
    ipv6: bool,
    protocol: usize,
    port_range_min: Option<u32>,
    port_range_max: Option<u32>,
    /// 0: none, 1: 0.0.0.0/0 (or ::/0), 2: a prefix, 3..3+GROUPS: remote
    /// group (remote - 3), then address group (remote - 3 - GROUPS).
    remote: usize,
}

#[derive(Clone, Debug)]
struct PortPut {
    port: usize,
    net: usize,
    host: usize,
    mac_last: u8,
    /// (subnet index, last octet)
    ips: Vec<(usize, u8)>,
    admin_state_up: bool,
    profile: usize,
    groups: Vec<usize>,
    port_security: bool,
    /// (subnet index, PAIRS index, MAC last octet)
    pairs: Vec<(usize, usize, u8)>,
    /// 0: a VM's port; 1 + r: an interface of router r; 1 + ROUTERS: a
    /// floating IP's port; 2 + ROUTERS + r: the gateway port of router r.
    owner: usize,
    /// (IP version, value) of its extra DHCP options.
    dhcp_opts: Vec<(u8, u8)>,
}

fn op() -> impl Strategy<Value = Op> {
    let port_put = (
        0..PORTS,
        0..NETWORKS,
        0..HOSTS.len(),
        1..4u8,
        prop::collection::vec((0..SUBNETS, 1..4u8), 0..3),
        any::<bool>(),
        0..PROFILES.len(),
        (
            prop::collection::vec(0..GROUPS, 0..3),
            prop::bool::weighted(0.8),
            prop::collection::vec((0..SUBNETS, 0..PAIRS.len(), 1..3u8), 0..2),
            prop_oneof![
                6 => Just(0usize),
                3 => 1..=ROUTERS,
                1 => Just(ROUTERS + 1),
                1 => ROUTERS + 2..2 * ROUTERS + 2,
            ],
            prop::collection::vec((prop::sample::select(vec![4u8, 6]), 0..2u8), 0..3),
        ),
    )
        .prop_map(
            |(
                port,
                net,
                host,
                mac_last,
                ips,
                admin_state_up,
                profile,
                (groups, port_security, pairs, owner, dhcp_opts),
            )| {
                Op::PortPut(PortPut {
                    port,
                    net,
                    host,
                    mac_last,
                    ips,
                    admin_state_up,
                    profile,
                    groups,
                    port_security,
                    pairs,
                    owner,
                    dhcp_opts,
                })
            },
        );
    let rule_put = (
        (0..RULES, 0..GROUPS, any::<bool>(), any::<bool>()),
        (
            0..PROTOCOLS.len(),
            prop::option::of(prop::sample::select(vec![0u32, 8, 22, 80])),
            prop::option::of(prop::sample::select(vec![0u32, 22, 255])),
            0..3 + GROUPS + ADDRESS_GROUPS,
        ),
    )
        .prop_map(
            |((rule, group, egress, ipv6), (protocol, port_range_min, port_range_max, remote))| {
                Op::RulePut(RulePut {
                    rule,
                    group,
                    egress,
                    ipv6,
                    protocol,
                    port_range_min,
                    port_range_max,
                    remote,
                })
            },
        );
    prop_oneof![
        2 => (
            0..NETWORKS,
            1..3u32,
            prop::sample::select(vec![1400u32, 1450]),
            prop::option::weighted(0.3, 0..PHYSICAL_NETWORKS.len()),
        )
            .prop_map(|(net, vni, mtu, flat)| Op::NetworkPut { net, vni, mtu, flat }),
        1 => (0..NETWORKS).prop_map(Op::NetworkDelete),
        2 => (0..SUBNETS, 0..NETWORKS, 0..4u8)
            .prop_map(|(subnet, net, variant)| Op::SubnetPut { subnet, net, variant }),
        1 => (0..SUBNETS).prop_map(Op::SubnetDelete),
        8 => port_put,
        2 => (0..PORTS).prop_map(Op::PortDelete),
        2 => (1..HOSTS.len(), 1..3u8, 0..4u8, any::<bool>()).prop_map(
            |(host, ip_last, physnets, gateway)| Op::HostPut { host, ip_last, physnets, gateway }
        ),
        1 => (1..HOSTS.len()).prop_map(Op::HostDelete),
        2 => (0..GROUPS, prop::bool::weighted(0.8))
            .prop_map(|(group, stateful)| Op::GroupPut { group, stateful }),
        1 => (0..GROUPS).prop_map(Op::GroupDelete),
        4 => rule_put,
        2 => (0..RULES).prop_map(Op::RuleDelete),
        2 => (0..ADDRESS_GROUPS, 0..64u8)
            .prop_map(|(ag, addresses)| Op::AddressGroupPut { ag, addresses }),
        1 => (0..ADDRESS_GROUPS).prop_map(Op::AddressGroupDelete),
        2 => (
            0..ROUTERS,
            0..3u8,
            prop::option::weighted(0.7, (0..NETWORKS, 0..PORTS, any::<bool>())),
        )
            .prop_map(|(router, routes, gateway)| Op::RouterPut { router, routes, gateway }),
        1 => (0..ROUTERS).prop_map(Op::RouterDelete),
        2 => (
            0..FLOATING_IPS,
            0..ROUTERS,
            prop::option::weighted(0.6, (0..PORTS, 1..4u8)),
            prop::collection::vec(0..PORTS, 0..3),
        )
            .prop_map(|(fip, router, association, forwardings)| Op::FloatingIpPut {
                fip,
                router,
                association,
                forwardings: if association.is_some() { vec![] } else { forwardings },
            }),
        1 => (0..FLOATING_IPS).prop_map(Op::FloatingIpDelete),
    ]
}

fn net_id(i: usize) -> String {
    format!("n{i}")
}

fn subnet_id(i: usize) -> String {
    format!("s{i}")
}

fn port_id(i: usize) -> String {
    format!("p{i}")
}

fn group_id(i: usize) -> String {
    format!("g{i}")
}

fn address_group_id(i: usize) -> String {
    format!("ag{i}")
}

fn router_id(i: usize) -> String {
    format!("R{i}")
}

fn rule_id(i: usize) -> String {
    format!("r{i}")
}

fn fip_id(i: usize) -> String {
    format!("f{i}")
}

/// The input of an op, in model terms.
fn input(op: &Op) -> Input {
    match op {
        Op::NetworkPut {
            net,
            vni,
            mtu,
            flat,
        } => {
            let mut n = network(&net_id(*net), *vni, *mtu);
            if let Some(physnet) = flat {
                n.network_type = model::FLAT.into();
                n.segmentation_id = 0;
                n.physical_network = Some(PHYSICAL_NETWORKS[*physnet].into());
            }
            Input::Network(Box::new(n))
        }
        Op::NetworkDelete(net) => Input::NetworkDeleted(net_id(*net)),
        Op::SubnetPut {
            subnet: i,
            net,
            variant,
        } => {
            let mut s = subnet(&subnet_id(*i), &net_id(*net), &format!("10.{i}.0.0/24"));
            s.enable_dhcp = variant & 1 == 0;
            if variant & 2 != 0 {
                s.dns_nameservers = vec![ip("192.0.2.53")];
                s.host_routes = vec![HostRoute {
                    destination: "172.16.0.0/12".parse().unwrap(),
                    nexthop: ip(&format!("10.{i}.0.254")),
                }];
            }
            Input::Subnet(Box::new(s))
        }
        Op::SubnetDelete(i) => Input::SubnetDeleted(subnet_id(*i)),
        Op::PortPut(p) => {
            let ips: Vec<(String, String)> = p
                .ips
                .iter()
                .map(|(s, last)| (subnet_id(*s), format!("10.{s}.0.{last}")))
                .collect();
            let ips: Vec<(&str, &str)> =
                ips.iter().map(|(s, a)| (s.as_str(), a.as_str())).collect();
            let mut model = port(
                &port_id(p.port),
                &net_id(p.net),
                HOSTS[p.host],
                p.mac_last,
                &ips,
            );
            model.admin_state_up = p.admin_state_up;
            model.binding_profile = PROFILES[p.profile].into();
            model.security_groups = p.groups.iter().map(|g| group_id(*g)).collect();
            model.port_security_enabled = p.port_security;
            model.allowed_address_pairs = p
                .pairs
                .iter()
                .map(|(s, pair, mac_last)| AddressPair {
                    ip_address: PAIRS[*pair].replace("{s}", &s.to_string()).parse().unwrap(),
                    mac_address: common::mac(*mac_last),
                })
                .collect();
            model.extra_dhcp_opts = p
                .dhcp_opts
                .iter()
                .map(|(ip_version, value)| ExtraDhcpOpt {
                    opt_name: "domain-search".into(),
                    opt_value: format!("d{value}.example"),
                    ip_version: *ip_version,
                })
                .collect();
            match p.owner {
                0 => {}
                r if r <= ROUTERS => {
                    model.device_owner = OWNER_ROUTER_INTERFACE.into();
                    model.device_id = router_id(r - 1);
                }
                r if r == ROUTERS + 1 => model.device_owner = "network:floatingip".into(),
                r => {
                    model.device_owner = OWNER_ROUTER_GATEWAY.into();
                    model.device_id = router_id(r - ROUTERS - 2);
                }
            }
            Input::Port(Box::new(model))
        }
        Op::PortDelete(i) => Input::PortDeleted(port_id(*i)),
        Op::HostPut {
            host,
            ip_last,
            physnets,
            gateway,
        } => Input::Host {
            name: HOSTS[*host].into(),
            underlay_ip: ip(&format!("192.0.2.{ip_last}")),
            physical_networks: (0..PHYSICAL_NETWORKS.len())
                .filter(|i| physnets & (1 << i) != 0)
                .map(|i| PHYSICAL_NETWORKS[i].to_owned())
                .collect(),
            gateway: *gateway,
            availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
        },
        Op::HostDelete(host) => Input::HostDeleted(HOSTS[*host].into()),
        Op::GroupPut { group, stateful } => Input::SecurityGroup(Box::new(SecurityGroup {
            std: Standard::new(group_id(*group), "project".into(), 0),
            stateful: *stateful,
            is_default: *group == 0,
        })),
        Op::GroupDelete(group) => Input::SecurityGroupDeleted(group_id(*group)),
        Op::RulePut(r) => {
            let ethertype = if r.ipv6 {
                Ethertype::IPv6
            } else {
                Ethertype::IPv4
            };
            let (remote_ip_prefix, remote_group_id, remote_address_group_id) =
                match (r.remote, r.ipv6) {
                    (0, _) => (None, None, None),
                    (1, false) => (Some("0.0.0.0/0".parse().unwrap()), None, None),
                    (1, true) => (Some("::/0".parse().unwrap()), None, None),
                    (2, false) => (Some("192.0.2.7/24".parse().unwrap()), None, None),
                    (2, true) => (Some("fd00::1/64".parse().unwrap()), None, None),
                    (g, _) if g < 3 + GROUPS => (None, Some(group_id(g - 3)), None),
                    (g, _) => (None, None, Some(address_group_id(g - 3 - GROUPS))),
                };
            Input::SecurityGroupRule(Box::new(SecurityGroupRule {
                std: Standard::new(rule_id(r.rule), "project".into(), 0),
                security_group_id: group_id(r.group),
                direction: if r.egress {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                ethertype,
                protocol: PROTOCOLS[r.protocol].map(str::to_owned),
                port_range_min: r.port_range_min,
                port_range_max: r.port_range_max,
                remote_ip_prefix,
                remote_group_id,
                remote_address_group_id,
            }))
        }
        Op::RuleDelete(rule) => Input::SecurityGroupRuleDeleted(rule_id(*rule)),
        Op::AddressGroupPut { ag, addresses } => {
            Input::AddressGroup(Box::new(model::AddressGroup {
                std: Standard::new(address_group_id(*ag), "project".into(), 0),
                addresses: (0..AG_ADDRESSES.len())
                    .filter(|i| addresses & (1 << i) != 0)
                    .map(|i| AG_ADDRESSES[i].parse().unwrap())
                    .collect(),
            }))
        }
        Op::AddressGroupDelete(ag) => Input::AddressGroupDeleted(address_group_id(*ag)),
        Op::RouterPut {
            router,
            routes,
            gateway,
        } => Input::Router(Box::new(Router {
            std: Standard::new(router_id(*router), "project".into(), 0),
            admin_state_up: true,
            gateway: gateway.map(|(net, port, enable_snat)| Gateway {
                network_id: net_id(net),
                enable_snat,
                port_id: port_id(port),
                external_fixed_ips: vec![],
            }),
            routes: (0..*routes)
                .map(|i| HostRoute {
                    destination: format!("172.{i}.0.0/16").parse().unwrap(),
                    nexthop: ip(&format!("10.{i}.0.9")),
                })
                .collect(),
            availability_zone_hints: vec![],
        })),
        Op::RouterDelete(router) => Input::RouterDeleted(router_id(*router)),
        Op::FloatingIpPut {
            fip,
            router,
            association,
            forwardings,
        } => Input::FloatingIp(Box::new(FloatingIp {
            std: Standard::new(fip_id(*fip), "project".into(), 0),
            floating_network_id: net_id(0),
            subnet_id: subnet_id(0),
            floating_ip_address: ip(&format!("203.0.113.{}", 10 + fip)),
            floating_port_id: format!("fp{fip}"),
            association: association.map(|(port, last)| Association {
                port_id: port_id(port),
                fixed_ip_address: ip(&format!("10.0.0.{last}")),
                router_id: router_id(*router),
            }),
            port_forwardings: forwardings
                .iter()
                .enumerate()
                .map(|(i, port)| PortForwarding {
                    id: format!("pf{fip}{i}"),
                    protocol: if i == 1 { "udp" } else { "tcp" }.into(),
                    external_port: 2000 + i as u16,
                    internal_port: 22,
                    internal_port_id: port_id(*port),
                    internal_ip_address: ip(&format!("10.0.0.{}", 20 + port)),
                    description: String::new(),
                    router_id: router_id(*router),
                })
                .collect(),
        })),
        Op::FloatingIpDelete(fip) => Input::FloatingIpDeleted(fip_id(*fip)),
    }
}

/// The weight rendezvous hashing gives a (router, host) pair: FNV-1a of
/// the router id, a 0xff byte and the host name.
fn gateway_weight(router_id: &str, host: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in router_id.bytes().chain([0xff]).chain(host.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A registered host's offer: the physical networks it maps, and whether
/// it runs routers' SNAT.
#[derive(Clone)]
struct HostInfo {
    underlay_ip: IpAddr,
    physical_networks: Vec<String>,
    gateway: bool,
}

/// The topology as plain maps, updated by each input: the reference's input.
#[derive(Default)]
struct World {
    networks: BTreeMap<String, Network>,
    subnets: BTreeMap<String, Subnet>,
    ports: BTreeMap<String, Port>,
    hosts: BTreeMap<String, HostInfo>,
    groups: BTreeMap<String, SecurityGroup>,
    rules: BTreeMap<String, SecurityGroupRule>,
    address_groups: BTreeMap<String, model::AddressGroup>,
    routers: BTreeMap<String, Router>,
    floating_ips: BTreeMap<String, FloatingIp>,
}

/// The host a port is bound to: none for ports routers and floating IPs own.
fn bound_host(p: &Port) -> &str {
    if p.device_owner.starts_with("network:router") || p.device_owner == "network:floatingip" {
        ""
    } else {
        &p.binding_host_id
    }
}

impl World {
    fn apply(&mut self, input: &Input) {
        match input.clone() {
            Input::Network(n) => {
                self.networks.insert(n.std.id.clone(), *n);
            }
            Input::NetworkDeleted(id) => {
                self.networks.remove(&id);
            }
            Input::Subnet(s) => {
                self.subnets.insert(s.std.id.clone(), *s);
            }
            Input::SubnetDeleted(id) => {
                self.subnets.remove(&id);
            }
            Input::Port(p) => {
                self.ports.insert(p.std.id.clone(), *p);
            }
            Input::PortDeleted(id) => {
                self.ports.remove(&id);
            }
            // Zones matter only to routers with zone hints, which the
            // generated clouds do not have (compiler/tests/zones.rs has them).
            Input::Host {
                name,
                underlay_ip,
                physical_networks,
                gateway,
                ..
            } => {
                self.hosts.insert(
                    name,
                    HostInfo {
                        underlay_ip,
                        physical_networks,
                        gateway,
                    },
                );
            }
            Input::HostDeleted(name) => {
                self.hosts.remove(&name);
            }
            Input::SecurityGroup(g) => {
                self.groups.insert(g.std.id.clone(), *g);
            }
            Input::SecurityGroupDeleted(id) => {
                self.groups.remove(&id);
            }
            Input::SecurityGroupRule(r) => {
                self.rules.insert(r.std.id.clone(), *r);
            }
            Input::SecurityGroupRuleDeleted(id) => {
                self.rules.remove(&id);
            }
            Input::AddressGroup(g) => {
                self.address_groups.insert(g.std.id.clone(), *g);
            }
            Input::AddressGroupDeleted(id) => {
                self.address_groups.remove(&id);
            }
            Input::Router(r) => {
                self.routers.insert(r.std.id.clone(), *r);
            }
            Input::RouterDeleted(id) => {
                self.routers.remove(&id);
            }
            Input::FloatingIp(f) => {
                self.floating_ips.insert(f.std.id.clone(), *f);
            }
            Input::FloatingIpDeleted(id) => {
                self.floating_ips.remove(&id);
            }
            // The proptest makes no metering labels (their own unit tests
            // cover them).
            Input::MeteringLabel(_)
            | Input::MeteringLabelDeleted(_)
            | Input::MeteringLabelRule(_)
            | Input::MeteringLabelRuleDeleted(_) => {}
        }
    }

    /// The host running a router's SNAT: of the registered gateway hosts
    /// mapping its external network's physical network, the heaviest.
    fn gateway_host(&self, router: &Router) -> Option<String> {
        let gateway = router.gateway.as_ref()?;
        let physnet = self
            .networks
            .get(&gateway.network_id)?
            .physical_network
            .as_ref()?;
        self.hosts
            .iter()
            .filter(|(_, h)| h.gateway && h.physical_networks.contains(physnet))
            .max_by_key(|(name, _)| gateway_weight(&router.std.id, name))
            .map(|(name, _)| name.clone())
    }

    /// Plainly: a router's uplink as every holder sees it, once its port is known.
    fn gateway_spec(&self, router: &Router) -> Option<RouterGatewaySpec> {
        let gateway = router.gateway.as_ref()?;
        let port = self
            .ports
            .get(&gateway.port_id)
            .filter(|p| p.device_owner == OWNER_ROUTER_GATEWAY && p.device_id == router.std.id)?;
        let mut addresses = vec![];
        let mut upstreams = vec![];
        for f in &port.fixed_ips {
            let Some(s) = self.subnets.get(&f.subnet_id) else {
                continue;
            };
            if s.network_id != gateway.network_id {
                continue;
            }
            addresses.push(IpNet::new(f.ip_address, s.cidr.prefix_len()).unwrap());
            upstreams.extend(s.gateway_ip);
        }
        Some(RouterGatewaySpec {
            network_id: gateway.network_id.clone(),
            port_id: gateway.port_id.clone(),
            mac: port.mac_address,
            addresses,
            nexthop: upstreams
                .iter()
                .find(|i| i.is_ipv4())
                .or(upstreams.first())
                .copied(),
            ipv6_nexthop: upstreams.iter().find(|i| i.is_ipv6()).copied(),
            enable_snat: gateway.enable_snat,
            host: self.gateway_host(router),
        })
    }

    /// The floating IPs realised on a host: each lives on its associated
    /// port's host, or else on the host of its first forwarding whose port
    /// is bound; there it holds what of it leads to ports on that host.
    fn reference_floating_ips(&self, host: &str) -> BTreeMap<String, FloatingIpSpec> {
        let bound = |port: &str| {
            self.ports
                .get(port)
                .map(bound_host)
                .filter(|h| !h.is_empty())
        };
        let mut held = BTreeMap::new();
        for (id, fip) in &self.floating_ips {
            let home = match &fip.association {
                Some(a) => bound(&a.port_id),
                None => fip
                    .port_forwardings
                    .iter()
                    .find_map(|p| bound(&p.internal_port_id)),
            };
            if home != Some(host) {
                continue;
            }
            let Some(router_id) = fip.router_id() else {
                continue;
            };
            let spec = FloatingIpSpec {
                router_id: router_id.to_owned(),
                port_id: fip.floating_port_id.clone(),
                address: fip.floating_ip_address,
                fixed_ip: fip.association.as_ref().map(|a| a.fixed_ip_address),
                port_forwardings: fip
                    .port_forwardings
                    .iter()
                    .filter(|p| bound(&p.internal_port_id) == Some(host))
                    .map(|p| {
                        let spec = PortForwardingSpec {
                            protocol: if p.protocol == "udp" { 17 } else { 6 },
                            external_port: p.external_port,
                            internal_ip: p.internal_ip_address,
                            internal_port: p.internal_port,
                        };
                        (p.id.clone(), spec)
                    })
                    .collect(),
            };
            held.insert(id.clone(), spec);
        }
        held
    }

    /// The interfaces of each router named by a port, by router id.
    fn interfaces(&self) -> BTreeMap<&str, Vec<&Port>> {
        let mut routers: BTreeMap<&str, Vec<&Port>> = BTreeMap::new();
        for p in self.ports.values() {
            if p.device_owner == OWNER_ROUTER_INTERFACE && !p.device_id.is_empty() {
                routers.entry(&p.device_id).or_default().push(p);
            }
        }
        routers
    }

    /// The routers a host holds: those with an interface on a network where
    /// the host has a bound port, and those it is the gateway host of.
    fn held_routers(&self, host: &str) -> BTreeMap<String, RouterSpec> {
        let bound_networks: BTreeSet<&String> = self
            .ports
            .values()
            .filter(|p| bound_host(p) == host)
            .map(|p| &p.network_id)
            .collect();
        let mut held = BTreeMap::new();
        let mut routers = self.interfaces();
        for id in self.routers.keys() {
            routers.entry(id).or_default();
        }
        for (router, interfaces) in routers {
            let resource = self.routers.get(router);
            let gateway_host = resource.and_then(|r| self.gateway_host(r));
            if !interfaces
                .iter()
                .any(|p| bound_networks.contains(&p.network_id))
                && gateway_host.as_deref() != Some(host)
            {
                continue;
            }
            let spec = RouterSpec {
                interfaces: interfaces
                    .iter()
                    .map(|p| {
                        let addresses = p
                            .fixed_ips
                            .iter()
                            .filter_map(|f| {
                                let s = self.subnets.get(&f.subnet_id)?;
                                (s.network_id == p.network_id)
                                    .then(|| IpNet::new(f.ip_address, s.cidr.prefix_len()).unwrap())
                            })
                            .collect();
                        let spec = RouterInterfaceSpec {
                            network_id: p.network_id.clone(),
                            mac: p.mac_address,
                            addresses,
                        };
                        (p.std.id.clone(), spec)
                    })
                    .collect(),
                routes: self
                    .routers
                    .get(router)
                    .map(|r| {
                        r.routes
                            .iter()
                            .map(|h| RouteSpec {
                                destination: h.destination,
                                nexthop: h.nexthop,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                gateway: resource.and_then(|r| self.gateway_spec(r)),
                // The proptest makes no metering labels.
                metering: Default::default(),
            };
            held.insert(router.to_owned(), spec);
        }
        held
    }

    /// A host's desired state computed from scratch, straight from the rules:
    /// it holds every router with an interface on a network where it has a
    /// bound port; it carries each known network with a port bound to it or
    /// an interface of a router it holds; it sees all the network's subnets,
    /// its own ports, and the ports of registered others.
    fn reference(&self, host: &str) -> HostState {
        let mut state = HostState::default();
        if host.is_empty() {
            return state;
        }
        state.routers = self.held_routers(host);
        state.floating_ips = self.reference_floating_ips(host);
        let routed: BTreeSet<&String> = state
            .routers
            .iter()
            .flat_map(|(id, r)| {
                let uplink = self
                    .routers
                    .get(id)
                    .and_then(|r| r.gateway.as_ref())
                    .map(|g| &g.network_id);
                r.interfaces.values().map(|i| &i.network_id).chain(uplink)
            })
            .collect();
        for (network_id, net) in &self.networks {
            let on_network = || self.ports.values().filter(|p| &p.network_id == network_id);
            let local_ports: BTreeMap<String, LocalPortSpec> = on_network()
                .filter(|p| bound_host(p) == host)
                .map(|p| (p.std.id.clone(), reference_local(p)))
                .collect();
            if local_ports.is_empty() && !routed.contains(network_id) {
                continue;
            }
            let remote_ports = on_network()
                .filter(|p| !bound_host(p).is_empty() && bound_host(p) != host)
                .filter_map(|p| {
                    let vtep = self.hosts.get(bound_host(p))?.underlay_ip;
                    let spec = RemotePortSpec {
                        mac: p.mac_address,
                        ips: p.fixed_ips.iter().map(|f| f.ip_address).collect(),
                        vtep,
                    };
                    Some((p.std.id.clone(), spec))
                })
                .collect();
            let subnets = self
                .subnets
                .values()
                .filter(|s| &s.network_id == network_id)
                .map(|s| (s.std.id.clone(), reference_subnet(s)))
                .collect();
            state.networks.insert(
                network_id.clone(),
                NetworkSpec {
                    vni: net.segmentation_id,
                    mtu: net.mtu,
                    physical_network: net.physical_network.clone(),
                    subnets,
                    local_ports,
                    remote_ports,
                },
            );
        }
        self.reference_security(host, &mut state);
        state
    }

    /// The security part, from scratch: every port bound to the host has its
    /// port security; the known groups its enabled ports are in have their
    /// rules; every group such a rule names has the addresses of all the ports
    /// (bound or not) in it with port security enabled.
    fn reference_security(&self, host: &str, state: &mut HostState) {
        let local = || self.ports.values().filter(|p| bound_host(p) == host);
        for p in local() {
            state
                .port_security
                .insert(p.std.id.clone(), reference_port_security(p));
        }
        let used: BTreeSet<&String> = local()
            .filter(|p| p.port_security_enabled)
            .flat_map(|p| &p.security_groups)
            .collect();
        for group in used {
            let Some(g) = self.groups.get(group) else {
                continue;
            };
            let rules: Vec<RuleSpec> = self
                .rules
                .values()
                .filter(|r| &r.security_group_id == group)
                .map(reference_rule)
                .collect();
            for rule in &rules {
                if let RuleRemote::Group(remote) = &rule.remote {
                    state
                        .remote_groups
                        .insert(remote.clone(), self.reference_members(remote));
                }
                // An address group it names: its addresses, none if unknown.
                if let RuleRemote::AddressGroup(ag) = &rule.remote {
                    let addresses = self
                        .address_groups
                        .get(ag)
                        .map(|g| g.addresses.clone())
                        .unwrap_or_default();
                    state.address_groups.insert(ag.clone(), addresses);
                }
            }
            state.security_groups.insert(
                group.clone(),
                SecurityGroupSpec {
                    stateful: g.stateful,
                    rules,
                },
            );
        }
    }

    fn reference_members(&self, group: &str) -> BTreeSet<IpNet> {
        let mut members = BTreeSet::new();
        for p in self.ports.values() {
            if !p.port_security_enabled || !p.security_groups.iter().any(|g| g == group) {
                continue;
            }
            for f in &p.fixed_ips {
                members.insert(IpNet::from(f.ip_address));
            }
            for pair in &p.allowed_address_pairs {
                members.insert(pair.ip_address.trunc());
            }
        }
        members
    }
}

fn reference_port_security(p: &Port) -> PortSecuritySpec {
    let mut groups = if p.port_security_enabled {
        p.security_groups.clone()
    } else {
        vec![]
    };
    groups.sort();
    groups.dedup();
    let mut sources: Vec<AllowedSource> = p
        .fixed_ips
        .iter()
        .map(|f| AllowedSource {
            mac: p.mac_address,
            ip: IpNet::from(f.ip_address),
        })
        .chain(p.allowed_address_pairs.iter().map(|a| AllowedSource {
            mac: a.mac_address,
            ip: a.ip_address.trunc(),
        }))
        .collect();
    sources.sort();
    sources.dedup();
    PortSecuritySpec {
        enabled: p.port_security_enabled,
        security_groups: groups,
        allowed_sources: sources,
    }
}

/// A rule normalised plainly, by Neutron's reading of each field.
fn reference_rule(r: &SecurityGroupRule) -> RuleSpec {
    let v6 = r.ethertype == Ethertype::IPv6;
    let protocol: Option<u8> = match r.protocol.as_deref() {
        None | Some("any") => None,
        Some("tcp") => Some(6),
        Some("udp") => Some(17),
        Some("icmp") if v6 => Some(58),
        Some("icmp") => Some(1),
        Some("gre") => Some(47),
        Some(n) => Some(n.parse().unwrap()),
    };
    let u16_of = |v: u32| u16::try_from(v).unwrap();
    let u8_of = |v: u32| u8::try_from(v).unwrap();
    let (mut ports, mut icmp) = (None, None);
    match protocol {
        Some(6 | 17 | 33 | 132 | 136) => {
            if let Some(min) = r.port_range_min {
                ports = Some((u16_of(min), u16_of(r.port_range_max.unwrap_or(min))));
            }
        }
        Some(1 | 58) => {
            if let Some(t) = r.port_range_min {
                icmp = Some((u8_of(t), r.port_range_max.map(u8_of)));
            }
        }
        _ => {}
    }
    let remote = if let Some(prefix) = r.remote_ip_prefix {
        if prefix.prefix_len() == 0 {
            RuleRemote::Any
        } else {
            RuleRemote::Prefix(prefix.trunc())
        }
    } else if let Some(g) = &r.remote_group_id {
        RuleRemote::Group(g.clone())
    } else if let Some(ag) = &r.remote_address_group_id {
        RuleRemote::AddressGroup(ag.clone())
    } else {
        RuleRemote::Any
    };
    RuleSpec {
        id: r.std.id.clone(),
        direction: match r.direction {
            Direction::Ingress => RuleDirection::Ingress,
            Direction::Egress => RuleDirection::Egress,
        },
        ethertype: if v6 {
            RuleEthertype::IPv6
        } else {
            RuleEthertype::IPv4
        },
        protocol,
        ports,
        icmp,
        remote,
    }
}

fn reference_subnet(s: &Subnet) -> SubnetSpec {
    SubnetSpec {
        cidr: s.cidr,
        gateway_ip: s.gateway_ip,
        dns_nameservers: s.dns_nameservers.clone(),
        host_routes: s
            .host_routes
            .iter()
            .map(|r| RouteSpec {
                destination: r.destination,
                nexthop: r.nexthop,
            })
            .collect(),
        enable_dhcp: s.enable_dhcp,
        ipv6_ra_mode: s.ipv6_ra_mode,
        ipv6_address_mode: s.ipv6_address_mode,
    }
}

fn reference_local(p: &Port) -> LocalPortSpec {
    let named = serde_json::from_str::<serde_json::Value>(&p.binding_profile)
        .ok()
        .and_then(|v| v.get("device")?.as_str().map(str::to_owned))
        .filter(|d| !d.is_empty());
    let options = |version: u8| {
        p.extra_dhcp_opts
            .iter()
            .filter(|o| o.ip_version == version)
            .map(|o| DhcpOptionSpec {
                name: o.opt_name.clone(),
                value: o.opt_value.clone(),
            })
            .collect()
    };
    LocalPortSpec {
        mac: p.mac_address,
        fixed_ips: p
            .fixed_ips
            .iter()
            .map(|f| FixedIpSpec {
                subnet_id: f.subnet_id.clone(),
                ip_address: f.ip_address,
            })
            .collect(),
        device: named.unwrap_or_else(|| format!("tap{}", &p.std.id)),
        admin_state_up: p.admin_state_up,
        dhcpv4_options: options(4),
        dhcpv6_options: options(6),
    }
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut replay = Replay::default();
    let mut world = World::default();
    for (step, op) in ops.iter().enumerate() {
        let before = replay.states.clone();
        let input = input(op);
        world.apply(&input);
        let changes = replay.apply(input);
        let sent: BTreeSet<&str> = changes.iter().map(|(h, _)| h.as_str()).collect();
        for host in HOSTS {
            let replayed = replay.states.get(host).cloned().unwrap_or_default();
            let snapshot = replay.compiler.snapshot(host);
            prop_assert_eq!(
                &replayed,
                &snapshot,
                "(a) step {} ({:?}): host {:?}'s replayed changes differ from its snapshot",
                step,
                op,
                host
            );
            prop_assert_eq!(
                &snapshot,
                &world.reference(host),
                "(b) step {} ({:?}): host {:?}'s snapshot differs from the reference",
                step,
                op,
                host
            );
            let unchanged = before.get(host).cloned().unwrap_or_default() == replayed;
            prop_assert!(
                !(unchanged && sent.contains(host)),
                "(c) step {} ({:?}): host {:?} was sent changes that changed nothing",
                step,
                op,
                host
            );
        }
        for host in HOSTS {
            queries_match_snapshot(&replay.compiler, host, step)?;
        }
        for n in 0..NETWORKS {
            let id = net_id(n);
            let carriers: Vec<&str> = replay.compiler.hosts_of_network(&id).collect();
            let expected: Vec<&str> = HOSTS
                .into_iter()
                .filter(|h| world.reference(h).networks.contains_key(&id))
                .collect();
            prop_assert_eq!(carriers, expected, "hosts_of_network({})", id);
        }
    }
    // (e) The same inputs taken in at once, as a server's start-up does
    // (no changes made), compile the same state.
    let built = compiler::Compiler::build(ops.iter().map(input));
    for host in HOSTS {
        prop_assert_eq!(
            built.snapshot(host),
            replay.compiler.snapshot(host),
            "(e) host {:?}: built at once differs from applied one by one",
            host
        );
        queries_match_snapshot(&built, host, ops.len())?;
    }
    for n in 0..NETWORKS {
        let id = net_id(n);
        let built_carriers: Vec<&str> = built.hosts_of_network(&id).collect();
        let carriers: Vec<&str> = replay.compiler.hosts_of_network(&id).collect();
        prop_assert_eq!(built_carriers, carriers, "(e) hosts_of_network({})", id);
    }
    Ok(())
}

/// (d): every query of one host against its snapshot.
fn queries_match_snapshot(
    compiler: &compiler::Compiler,
    host: &str,
    step: usize,
) -> Result<(), TestCaseError> {
    use compiler::PortSeen;
    let snapshot = compiler.snapshot(host);
    for n in 0..NETWORKS {
        let id = net_id(n);
        let seen = compiler
            .network_seen_from(host, &id)
            .map(|v| (v.vni, v.subnets.clone()));
        let want = snapshot
            .networks
            .get(&id)
            .map(|n| (n.vni, n.subnets.clone()));
        prop_assert_eq!(
            seen,
            want,
            "(d) step {}: {} sees network {}",
            step,
            host,
            id
        );
    }
    for p in 0..PORTS {
        let id = port_id(p);
        let want = snapshot.networks.values().find_map(|n| {
            n.local_ports.get(&id).map(PortSeen::Local).or_else(|| {
                n.remote_ports.get(&id).map(|r| PortSeen::Remote {
                    mac: r.mac,
                    vtep: r.vtep,
                })
            })
        });
        prop_assert_eq!(
            compiler.port_seen_from(host, &id),
            want,
            "(d) step {}: {} sees port {}",
            step,
            host,
            &id
        );
        prop_assert_eq!(
            compiler.port_security_on(host, &id),
            snapshot.port_security.get(&id),
            "(d) step {}: {} holds the port security of {}",
            step,
            host,
            &id
        );
        // Its addresses resolve, on the host's view of its network, to a
        // port holding them (two ports may share one while a test moves them).
        for (network_id, n) in &snapshot.networks {
            let ips: Vec<IpAddr> = n
                .local_ports
                .get(&id)
                .map(|l| l.fixed_ips.iter().map(|f| f.ip_address).collect())
                .or_else(|| n.remote_ports.get(&id).map(|r| r.ips.clone()))
                .unwrap_or_default();
            for ip in ips {
                let holder = compiler.port_with_ip_seen_from(host, network_id, ip);
                let holds = holder.is_some_and(|h| {
                    n.neighbours().any(|(a, _)| a == ip)
                        && (n
                            .local_ports
                            .get(h)
                            .is_some_and(|l| l.fixed_ips.iter().any(|f| f.ip_address == ip))
                            || n.remote_ports.get(h).is_some_and(|r| r.ips.contains(&ip)))
                });
                prop_assert!(
                    holds,
                    "(d) step {}: {} resolves {} to {:?}",
                    step,
                    host,
                    ip,
                    holder
                );
            }
        }
    }
    for r in 0..ROUTERS {
        let id = router_id(r);
        prop_assert_eq!(
            compiler.router_seen_from(host, &id),
            snapshot.routers.get(&id),
            "(d) step {}: {} holds router {}",
            step,
            host,
            &id
        );
    }
    // The floating IPs it realises, whole and by id.
    let held: Vec<&compiler::protocol::FloatingIpSpec> =
        compiler.floating_ips_seen_from(host).collect();
    prop_assert_eq!(
        held.len(),
        snapshot.floating_ips.len(),
        "(d) step {}: {}'s floating IPs",
        step,
        host
    );
    for (id, spec) in &snapshot.floating_ips {
        prop_assert_eq!(
            compiler.floating_ip_home(id),
            Some((host, spec)),
            "(d) step {}: {} holds floating IP {}",
            step,
            host,
            id
        );
    }
    for p in 0..PORTS {
        let id = port_id(p);
        let want = snapshot
            .routers
            .iter()
            .find_map(|(r, spec)| spec.interfaces.get(&id).map(|i| (r.as_str(), i)));
        prop_assert_eq!(
            compiler.router_interface_seen_from(host, &id),
            want,
            "(d) step {}: {} holds router interface {}",
            step,
            host,
            &id
        );
    }
    // Every router address on a carried network resolves to an interface
    // holding it; an address no interface holds resolves to none.
    for n in 0..NETWORKS {
        let network_id = net_id(n);
        let carried = snapshot.networks.contains_key(&network_id);
        let held: Vec<(IpAddr, &String, &String)> = snapshot
            .routers
            .iter()
            .flat_map(|(r, spec)| {
                spec.interfaces
                    .iter()
                    .filter(|(_, i)| i.network_id == network_id)
                    .flat_map(move |(p, i)| i.addresses.iter().map(move |a| (a.addr(), r, p)))
            })
            .collect();
        for (ip, _, _) in &held {
            let seen = compiler.router_interface_with_ip_seen_from(host, &network_id, *ip);
            let holds = seen.is_some_and(|(r, p)| {
                held.iter()
                    .any(|(a, hr, hp)| a == ip && hr.as_str() == r && hp.as_str() == p)
            });
            prop_assert_eq!(
                holds,
                carried,
                "(d) step {}: {} resolves router address {} on {} to {:?}",
                step,
                host,
                ip,
                &network_id,
                seen
            );
        }
        for probe in ["10.0.0.1", "10.1.0.1", "10.2.0.1", "10.3.0.1", "10.0.0.200"] {
            let ip: IpAddr = probe.parse().unwrap();
            if held.iter().any(|(a, _, _)| *a == ip) {
                continue;
            }
            prop_assert_eq!(
                compiler.router_interface_with_ip_seen_from(host, &network_id, ip),
                None,
                "(d) step {}: {} finds a router on {} at {}",
                step,
                host,
                &network_id,
                ip
            );
        }
    }
    for g in 0..GROUPS {
        let id = group_id(g);
        let seen = compiler
            .group_seen_from(host, &id)
            .map(|v| (v.stateful, v.rules().cloned().collect::<Vec<_>>()));
        let want = snapshot
            .security_groups
            .get(&id)
            .map(|s| (s.stateful, s.rules.clone()));
        prop_assert_eq!(
            seen,
            want,
            "(d) step {}: {} holds group {}",
            step,
            host,
            &id
        );
        let set = snapshot.remote_groups.get(&id);
        for probe in [
            "10.0.0.1", "10.0.0.3", "10.1.0.2", "10.2.0.7", "10.3.0.1", "fd00::1",
        ] {
            let ip: IpAddr = probe.parse().unwrap();
            let want = set.map(|s| s.iter().any(|m| m.contains(&ip)));
            let seen = compiler
                .member_seen_from(host, &id, ip)
                .map(|m| m.is_some());
            prop_assert_eq!(
                seen,
                want,
                "(d) step {}: {} finds {} in {}",
                step,
                host,
                ip,
                &id
            );
        }
    }
    for ag in 0..ADDRESS_GROUPS {
        let id = address_group_id(ag);
        let set = snapshot.address_groups.get(&id);
        for probe in [
            "10.0.0.1", "10.0.0.9", "10.1.2.3", "10.2.0.7", "fd00::1", "fd00::2",
        ] {
            let ip: IpAddr = probe.parse().unwrap();
            let want = set.map(|s| s.iter().any(|m| m.contains(&ip)));
            let seen = compiler
                .address_seen_from(host, &id, ip)
                .map(|m| m.is_some());
            prop_assert_eq!(
                seen,
                want,
                "(d) step {}: {} finds {} in address group {}",
                step,
                host,
                ip,
                &id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn emitted_changes_and_snapshots_match_a_from_scratch_reference(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        check(&ops)?;
    }
}

/// The reference's tap rule agrees with the protocol's for the short ids used here.
#[test]
fn the_reference_names_taps_as_the_protocol_does() {
    assert_eq!(
        format!("tap{}", port_id(3)),
        compiler::protocol::tap_name(&port_id(3))
    );
}
