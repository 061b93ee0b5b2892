//! Random sequences of inputs (a few networks, subnets, hosts, and ports that
//! move between hosts and networks, with deletes) checked after every step:
//! (a) each host's changes emitted so far, replayed, give exactly its snapshot;
//! (b) each snapshot equals a from-scratch computation written plainly below;
//! (c) a host whose state did not change was sent nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::{Replay, ip, network, port, subnet};
use compiler::Input;
use compiler::protocol::{
    FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, RemotePortSpec, RouteSpec, SubnetSpec,
};
use model::{HostRoute, Network, Port, Subnet};
use proptest::prelude::*;

const NETWORKS: usize = 3;
const SUBNETS: usize = 4;
const PORTS: usize = 8;
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
    },
    HostDelete(usize),
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
    )
        .prop_map(
            |(port, net, host, mac_last, ips, admin_state_up, profile)| {
                Op::PortPut(PortPut {
                    port,
                    net,
                    host,
                    mac_last,
                    ips,
                    admin_state_up,
                    profile,
                })
            },
        );
    prop_oneof![
        2 => (0..NETWORKS, 1..3u32, prop::sample::select(vec![1400u32, 1450]))
            .prop_map(|(net, vni, mtu)| Op::NetworkPut { net, vni, mtu }),
        1 => (0..NETWORKS).prop_map(Op::NetworkDelete),
        2 => (0..SUBNETS, 0..NETWORKS, 0..4u8)
            .prop_map(|(subnet, net, variant)| Op::SubnetPut { subnet, net, variant }),
        1 => (0..SUBNETS).prop_map(Op::SubnetDelete),
        8 => port_put,
        2 => (0..PORTS).prop_map(Op::PortDelete),
        2 => (1..HOSTS.len(), 1..3u8).prop_map(|(host, ip_last)| Op::HostPut { host, ip_last }),
        1 => (1..HOSTS.len()).prop_map(Op::HostDelete),
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

/// The input of an op, in model terms.
fn input(op: &Op) -> Input {
    match op {
        Op::NetworkPut { net, vni, mtu } => {
            Input::Network(Box::new(network(&net_id(*net), *vni, *mtu)))
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
            Input::Port(Box::new(model))
        }
        Op::PortDelete(i) => Input::PortDeleted(port_id(*i)),
        Op::HostPut { host, ip_last } => Input::Host {
            name: HOSTS[*host].into(),
            underlay_ip: ip(&format!("192.0.2.{ip_last}")),
        },
        Op::HostDelete(host) => Input::HostDeleted(HOSTS[*host].into()),
    }
}

/// The topology as plain maps, updated by each input: the reference's input.
#[derive(Default)]
struct World {
    networks: BTreeMap<String, Network>,
    subnets: BTreeMap<String, Subnet>,
    ports: BTreeMap<String, Port>,
    hosts: BTreeMap<String, IpAddr>,
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
            Input::Host { name, underlay_ip } => {
                self.hosts.insert(name, underlay_ip);
            }
            Input::HostDeleted(name) => {
                self.hosts.remove(&name);
            }
        }
    }

    /// A host's desired state computed from scratch, straight from the rules:
    /// it carries each known network with a port bound to it; it sees all the
    /// network's subnets, its own ports, and the ports of registered others.
    fn reference(&self, host: &str) -> HostState {
        let mut state = HostState::default();
        if host.is_empty() {
            return state;
        }
        for (network_id, net) in &self.networks {
            let on_network = || self.ports.values().filter(|p| &p.network_id == network_id);
            let local_ports: BTreeMap<String, LocalPortSpec> = on_network()
                .filter(|p| p.binding_host_id == host)
                .map(|p| (p.std.id.clone(), reference_local(p)))
                .collect();
            if local_ports.is_empty() {
                continue;
            }
            let remote_ports = on_network()
                .filter(|p| !p.binding_host_id.is_empty() && p.binding_host_id != host)
                .filter_map(|p| {
                    let vtep = *self.hosts.get(&p.binding_host_id)?;
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
                    subnets,
                    local_ports,
                    remote_ports,
                },
            );
        }
        state
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
    }
}

fn reference_local(p: &Port) -> LocalPortSpec {
    let named = serde_json::from_str::<serde_json::Value>(&p.binding_profile)
        .ok()
        .and_then(|v| v.get("device")?.as_str().map(str::to_owned))
        .filter(|d| !d.is_empty());
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
