#![allow(clippy::unwrap_used)]

//! The hinted path of [`Served`] against the whole rebuild, after every
//! batch of random sequences of the stream's changes: the same table, and
//! the servers, fed the edits, hold what the whole lists would give them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use compiler::protocol::{
    Change, DhcpOptionSpec, FixedIpSpec, HostState, LocalPortSpec, PortSecuritySpec,
    RemotePortSpec, RouterInterfaceSpec, RouterSpec, SubnetSpec,
};
use ipnet::IpNet;
use model::Ipv6Mode;
use proptest::prelude::*;

use super::*;

/// One change to a host's state, on a few ids so that they collide.
#[derive(Clone, Debug)]
enum Step {
    /// A port set in a network (`moved`: left in no other network).
    Port {
        slot: u8,
        network: u8,
        device: u8,
        subnets: Vec<u8>,
        option: bool,
        moved: bool,
    },
    RemovePort(u8),
    Network {
        network: u8,
        mtu: u32,
    },
    RemoveNetwork(u8),
    Subnet {
        network: u8,
        subnet: u8,
        dhcp: bool,
        ra: Option<u8>,
        address: Option<u8>,
        dns: bool,
    },
    RemoveSubnet {
        network: u8,
        subnet: u8,
    },
    /// A router with interfaces on (network, subnet).
    Router {
        router: u8,
        interfaces: Vec<(u8, u8)>,
    },
    RemoveRouter(u8),
    /// What makes no lease: another host's port, a port's security.
    Noise(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (
            0u8..6,
            0u8..3,
            0u8..4,
            prop::collection::vec(0u8..3, 0..3),
            any::<bool>(),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(slot, network, device, subnets, option, moved)| Step::Port {
                slot,
                network,
                device,
                subnets,
                option,
                moved,
            }),
        2 => (0u8..6).prop_map(Step::RemovePort),
        2 => (0u8..3, prop::sample::select(vec![1450u32, 1500])).prop_map(
            |(network, mtu)| Step::Network { network, mtu }
        ),
        1 => (0u8..3).prop_map(Step::RemoveNetwork),
        4 => (
            0u8..3,
            0u8..3,
            any::<bool>(),
            prop::option::of(0u8..3),
            prop::option::of(0u8..3),
            any::<bool>(),
        )
            .prop_map(|(network, subnet, dhcp, ra, address, dns)| Step::Subnet {
                network,
                subnet,
                dhcp,
                ra,
                address,
                dns,
            }),
        1 => (0u8..3, 0u8..3).prop_map(|(network, subnet)| Step::RemoveSubnet { network, subnet }),
        2 => (0u8..2, prop::collection::vec((0u8..3, 0u8..3), 0..3))
            .prop_map(|(router, interfaces)| Step::Router { router, interfaces }),
        1 => (0u8..2).prop_map(Step::RemoveRouter),
        1 => (0u8..6).prop_map(Step::Noise),
    ]
}

/// Subnet `k` of every network: the first IPv4, the others IPv6.
fn cidr(subnet: u8) -> IpNet {
    match subnet {
        0 => "10.0.0.0/24".parse().unwrap(),
        k => format!("fd00:{k}::/64").parse().unwrap(),
    }
}

/// An address of `subnet`: `host` 1 is a router's.
fn address(subnet: u8, host: u8) -> IpAddr {
    match subnet {
        0 => format!("10.0.0.{host}").parse().unwrap(),
        k => format!("fd00:{k}::{host:x}").parse().unwrap(),
    }
}

fn mode(m: u8) -> Ipv6Mode {
    match m {
        0 => Ipv6Mode::Slaac,
        1 => Ipv6Mode::Dhcpv6Stateful,
        _ => Ipv6Mode::Dhcpv6Stateless,
    }
}

/// The network a port or subnet comes with, if the host lacks it.
fn network_for(state: &HostState, network: u8) -> Option<Change> {
    let network_id = format!("n{network}");
    (!state.networks.contains_key(&network_id)).then(|| Change::NetworkUpsert {
        network_id,
        vni: 100 + u32::from(network),
        mtu: 1450,
        physical_network: None,
    })
}

/// The stream's changes that make `step` of `state`.
fn changes(state: &HostState, step: &Step) -> Vec<Change> {
    let holding = |id: &str| -> Vec<String> {
        state
            .networks
            .iter()
            .filter(|(_, net)| net.local_ports.contains_key(id))
            .map(|(n, _)| n.clone())
            .collect()
    };
    match step.clone() {
        Step::Port {
            slot,
            network,
            device,
            subnets,
            option,
            moved,
        } => {
            let port_id = format!("p{slot}");
            let network_id = format!("n{network}");
            let mut out: Vec<Change> = holding(&port_id)
                .into_iter()
                .filter(|held| moved && *held != network_id)
                .map(|held| Change::LocalPortRemove {
                    network_id: held,
                    port_id: port_id.clone(),
                })
                .collect();
            out.extend(network_for(state, network));
            let mut fixed_ips: Vec<FixedIpSpec> = subnets
                .iter()
                .map(|k| FixedIpSpec {
                    subnet_id: format!("s{k}"),
                    ip_address: address(*k, 10 + slot),
                })
                .collect();
            fixed_ips.dedup();
            out.push(Change::LocalPortUpsert {
                network_id,
                port_id,
                spec: LocalPortSpec {
                    mac: format!("fa:16:3e:00:00:{slot:02x}").parse().unwrap(),
                    fixed_ips,
                    // Two ports may name one device.
                    device: format!("tap{device}"),
                    admin_state_up: true,
                    dhcpv4_options: option
                        .then(|| DhcpOptionSpec {
                            name: "ntp-server".into(),
                            value: "10.0.0.5".into(),
                        })
                        .into_iter()
                        .collect(),
                    dhcpv6_options: option
                        .then(|| DhcpOptionSpec {
                            name: "dns-server".into(),
                            value: "fd00::53".into(),
                        })
                        .into_iter()
                        .collect(),
                },
            });
            out
        }
        Step::RemovePort(slot) => {
            let port_id = format!("p{slot}");
            holding(&port_id)
                .into_iter()
                .map(|network_id| Change::LocalPortRemove {
                    network_id,
                    port_id: port_id.clone(),
                })
                .collect()
        }
        Step::Network { network, mtu } => vec![Change::NetworkUpsert {
            network_id: format!("n{network}"),
            vni: 100 + u32::from(network),
            mtu,
            physical_network: None,
        }],
        Step::RemoveNetwork(network) => vec![Change::NetworkRemove {
            network_id: format!("n{network}"),
        }],
        Step::Subnet {
            network,
            subnet,
            dhcp,
            ra,
            address: address_mode,
            dns,
        } => {
            let v6 = subnet != 0;
            let mut out: Vec<Change> = network_for(state, network).into_iter().collect();
            out.push(Change::SubnetUpsert {
                network_id: format!("n{network}"),
                subnet_id: format!("s{subnet}"),
                spec: SubnetSpec {
                    cidr: cidr(subnet),
                    gateway_ip: Some(address(subnet, 1)),
                    dns_nameservers: if dns {
                        vec![address(subnet, 53)]
                    } else {
                        vec![]
                    },
                    host_routes: vec![],
                    enable_dhcp: dhcp,
                    ipv6_ra_mode: ra.filter(|_| v6).map(mode),
                    ipv6_address_mode: address_mode.filter(|_| v6).map(mode),
                },
            });
            out
        }
        Step::RemoveSubnet { network, subnet } => vec![Change::SubnetRemove {
            network_id: format!("n{network}"),
            subnet_id: format!("s{subnet}"),
        }],
        Step::Router { router, interfaces } => vec![Change::RouterUpsert {
            router_id: format!("r{router}"),
            spec: RouterSpec {
                interfaces: interfaces
                    .iter()
                    .enumerate()
                    .map(|(i, (network, subnet))| {
                        let prefix = cidr(*subnet).prefix_len();
                        (
                            format!("ri{router}{i}"),
                            RouterInterfaceSpec {
                                network_id: format!("n{network}"),
                                mac: format!("fa:16:3e:01:{router:02x}:{i:02x}").parse().unwrap(),
                                addresses: vec![IpNet::new(address(*subnet, 1), prefix).unwrap()],
                            },
                        )
                    })
                    .collect(),
                ..RouterSpec::default()
            },
        }],
        Step::RemoveRouter(router) => vec![Change::RouterRemove {
            router_id: format!("r{router}"),
        }],
        Step::Noise(slot) => vec![
            Change::RemotePortUpsert {
                network_id: format!("n{}", slot % 3),
                port_id: format!("q{slot}"),
                spec: RemotePortSpec {
                    mac: format!("fa:16:3e:00:01:{slot:02x}").parse().unwrap(),
                    ips: vec![address(0, 100 + slot)],
                    vtep: "192.0.2.9".parse().unwrap(),
                },
            },
            Change::PortSecurityUpsert {
                port_id: format!("p{slot}"),
                spec: PortSecuritySpec {
                    enabled: false,
                    security_groups: vec![],
                    allowed_sources: vec![],
                },
            },
        ],
    }
}

/// What the servers hold: the DHCP server's leases, the IPv6 server's
/// services, by device.
type Servers = (
    BTreeMap<String, compiler::protocol::DhcpLease>,
    BTreeMap<String, Ipv6Service>,
);

/// As `set_ports` leaves them given the whole lists (the last of a device
/// wins; the IPv6 server drops empty services first).
fn given_whole(served: &Served) -> Servers {
    let dhcp: HashMap<_, _> = served.dhcp().collect();
    let ipv6: HashMap<_, _> = served.ipv6().filter(|(_, s)| !s.is_empty()).collect();
    (dhcp.into_iter().collect(), ipv6.into_iter().collect())
}

/// As `update_ports` leaves them.
fn apply(servers: &mut Servers, edits: Edits) {
    for (device, lease) in edits.dhcp {
        match lease {
            Some(lease) => servers.0.insert(device, lease),
            None => servers.0.remove(&device),
        };
    }
    for (device, service) in edits.ipv6 {
        match service.filter(|s| !s.is_empty()) {
            Some(service) => servers.1.insert(device, service),
            None => servers.1.remove(&device),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every batch, hinted or whole (as a start or a resync), the
    /// kept table is the one built from the state alone, and servers fed
    /// only its edits hold what the whole lists give them.
    #[test]
    fn the_hinted_path_never_drifts_from_the_whole_rebuild(
        batches in prop::collection::vec(
            (prop::collection::vec(step(), 1..4), prop::bool::weighted(0.2)),
            1..40,
        ),
    ) {
        let domain: dhcpv6::DnsDomain = "example.org".parse().unwrap();
        let mut state = HostState::default();
        let mut hinted = Served::default();
        let mut servers = Servers::default();
        let mut served_leases = 0;
        for (batch, whole) in &batches {
            let mut hints = ServeHints::default();
            for step in batch {
                for change in changes(&state, step) {
                    hints.note(&change, &state);
                    state.apply(change);
                }
            }
            if *whole {
                hints = ServeHints::everything();
            }
            let edits = hinted.update(&state, &domain, &hints);
            apply(&mut servers, edits);
            let whole = Served::rebuild(&state, &domain);
            prop_assert_eq!(&hinted, &whole, "after {:?}", batch);
            let want = given_whole(&whole);
            prop_assert_eq!(&servers, &want, "servers, after {:?}", batch);
            served_leases += want.0.len() + want.1.len();
        }
        // Not a run of empty tables.
        prop_assume!(served_leases > 0);
    }
}

/// The hints name the ports a change is to, and every port of a network
/// whose subnets or routers changed, routers' before and after.
#[test]
fn hints_name_ports_and_networks() {
    let mut state = HostState::default();
    let router = |network: &str| Change::RouterUpsert {
        router_id: "r".into(),
        spec: RouterSpec {
            interfaces: [(
                "i".to_owned(),
                RouterInterfaceSpec {
                    network_id: network.into(),
                    mac: "fa:16:3e:01:00:00".parse().unwrap(),
                    addresses: vec![],
                },
            )]
            .into(),
            ..RouterSpec::default()
        },
    };
    state.apply(router("n1"));
    let mut hints = ServeHints::default();
    hints.note(&router("n2"), &state);
    hints.note(
        &Change::LocalPortRemove {
            network_id: "n3".into(),
            port_id: "p".into(),
        },
        &state,
    );
    hints.note(
        &Change::PortSecurityRemove {
            port_id: "q".into(),
        },
        &state,
    );
    assert_eq!(
        hints,
        ServeHints {
            all: false,
            networks: ["n1".to_owned(), "n2".to_owned()].into(),
            ports: [("n3".to_owned(), "p".to_owned())].into(),
        }
    );
    hints.merge(ServeHints::everything());
    assert_eq!(hints, ServeHints::everything());
}
