#![allow(clippy::unwrap_used)]

//! The incremental desired objects, and the diff of what they touched,
//! against the full path's after every step of random sequences of
//! changes, over a model kernel (`Observed::apply`) converged at each step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use compiler::protocol::{
    FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, RemotePortSpec, RouterInterfaceSpec,
    RouterSpec, SubnetSpec,
};
use model::MacAddr;
use proptest::prelude::*;

use super::*;
use crate::linux::link::LinkKind;
use crate::linux::observed::ObservedLink;
use crate::linux::{Op, Phase, diff};

/// One change, on few ids so that they collide (two networks may share a
/// VNI, two ports a device or a MAC).
#[derive(Clone, Debug)]
enum Step {
    Network {
        id: u8,
        vni: u8,
        mtu: bool,
        v6: bool,
    },
    RemoveNetwork(u8),
    Local {
        network: u8,
        port: u8,
        device: u8,
        mac: u8,
    },
    Remote {
        network: u8,
        port: u8,
        mac: u8,
        vtep: u8,
    },
    RemovePort {
        network: u8,
        port: u8,
    },
    Router {
        router: u8,
        network: u8,
        mac: u8,
    },
    RemoveRouter(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0u8..3, 0u8..4, any::<bool>(), any::<bool>())
            .prop_map(|(id, vni, mtu, v6)| Step::Network { id, vni, mtu, v6 }),
        1 => (0u8..3).prop_map(Step::RemoveNetwork),
        3 => (0u8..3, 0u8..6, 0u8..16, 0u8..8).prop_map(|(network, port, device, mac)| {
            Step::Local { network, port, device, mac }
        }),
        3 => (0u8..3, 0u8..6, 0u8..8, 0u8..2).prop_map(|(network, port, mac, vtep)| {
            Step::Remote { network, port, mac, vtep }
        }),
        2 => (0u8..3, 0u8..6).prop_map(|(network, port)| Step::RemovePort { network, port }),
        1 => (0u8..2, 0u8..3, 0u8..8).prop_map(|(router, network, mac)| Step::Router {
            router,
            network,
            mac
        }),
        1 => (0u8..2).prop_map(Step::RemoveRouter),
    ]
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0xfa, 0x16, 0x3e, 0, 0, last + 1])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn network(vni: u8) -> NetworkSpec {
    NetworkSpec {
        vni: 100 + u32::from(vni),
        mtu: 1450,
        physical_network: None,
        subnets: BTreeMap::new(),
        local_ports: BTreeMap::new(),
        remote_ports: BTreeMap::new(),
    }
}

/// Applies `step`; the networks it changed.
fn apply(state: &mut HostState, step: &Step) -> BTreeSet<String> {
    let id = |n: u8| format!("n{n}");
    match *step {
        Step::Network {
            id: n,
            vni,
            mtu,
            v6,
        } => {
            let net = state.networks.entry(id(n)).or_insert_with(|| network(vni));
            net.vni = 100 + u32::from(vni);
            net.mtu = if mtu { 1400 } else { 1450 };
            let cidr = if v6 { "fd00::/64" } else { "10.0.0.0/24" };
            net.subnets.insert(
                "s".into(),
                SubnetSpec {
                    cidr: cidr.parse().unwrap(),
                    gateway_ip: None,
                    dns_nameservers: vec![],
                    host_routes: vec![],
                    enable_dhcp: true,
                    ipv6_ra_mode: None,
                    ipv6_address_mode: None,
                },
            );
            [id(n)].into()
        }
        Step::RemoveNetwork(n) => {
            state.networks.remove(&id(n));
            [id(n)].into()
        }
        Step::Local {
            network: n,
            port,
            device,
            mac: m,
        } => {
            let net = state.networks.entry(id(n)).or_insert_with(|| network(n));
            net.remote_ports.remove(&format!("p{port}"));
            net.local_ports.insert(
                format!("p{port}"),
                LocalPortSpec {
                    mac: mac(m),
                    fixed_ips: vec![FixedIpSpec {
                        subnet_id: "s".into(),
                        ip_address: ip(&format!("10.0.0.{}", 10 + port)),
                    }],
                    // Now and then a device another port names.
                    device: if device < 2 {
                        format!("tap{device}")
                    } else {
                        format!("tap{n}{port}")
                    },
                    admin_state_up: port % 2 == 0,
                    dhcpv4_options: vec![],
                    dhcpv6_options: vec![],
                },
            );
            [id(n)].into()
        }
        Step::Remote {
            network: n,
            port,
            mac: m,
            vtep,
        } => {
            let net = state.networks.entry(id(n)).or_insert_with(|| network(n));
            net.local_ports.remove(&format!("p{port}"));
            net.remote_ports.insert(
                format!("p{port}"),
                RemotePortSpec {
                    mac: mac(m),
                    ips: vec![ip(&format!("10.0.0.{}", 10 + port))],
                    vtep: ip(&format!("192.0.2.{}", 2 + vtep)),
                },
            );
            [id(n)].into()
        }
        Step::RemovePort { network: n, port } => {
            if let Some(net) = state.networks.get_mut(&id(n)) {
                net.local_ports.remove(&format!("p{port}"));
                net.remote_ports.remove(&format!("p{port}"));
            }
            [id(n)].into()
        }
        Step::Router {
            router,
            network: n,
            mac: m,
        } => {
            let interfaces = [(
                format!("i{router}"),
                RouterInterfaceSpec {
                    network_id: id(n),
                    mac: mac(m),
                    addresses: vec!["10.0.0.1/24".parse().unwrap()],
                },
            )]
            .into();
            state.routers.insert(
                format!("r{router}"),
                RouterSpec {
                    interfaces,
                    ..RouterSpec::default()
                },
            );
            BTreeSet::new()
        }
        Step::RemoveRouter(router) => {
            state.routers.remove(&format!("r{router}"));
            BTreeSet::new()
        }
    }
}

/// Every device a port may name, plugged in and left alone.
fn kernel() -> Observed {
    let mut o = Observed::default();
    let devices = (0..2)
        .map(|d| format!("tap{d}"))
        .chain((0..3).flat_map(|n| (0..6).map(move |p| format!("tap{n}{p}"))));
    let routers = (0..2).map(|r| crate::linux::router_port_name(&format!("i{r}")));
    for (i, name) in devices.chain(routers).enumerate() {
        o.links.insert(
            name,
            ObservedLink {
                index: 10 + i as u32,
                kind: LinkKind::Other("tun".into()),
                mtu: 1500,
                address: None,
                up: false,
                master: None,
                ipv6_silent: Some(false),
                port_flags: None,
            },
        );
    }
    o
}

fn sorted(ops: &[Op]) -> Vec<(Phase, String)> {
    let mut out: Vec<(Phase, String)> = ops.iter().map(|o| (o.phase(), o.to_string())).collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every step: the kept objects are the full path's, and the
    /// diff of what the update touched is the whole diff (as a set: within
    /// a phase, operations are independent).
    #[test]
    fn the_incremental_path_never_drifts_from_the_full_one(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let config = LinuxConfig::new(ip("192.0.2.1"));
        let mut state = HostState::default();
        let mut kept = IncrementalDesired::new(&state, &config);
        let plugged = kernel();
        let mut kernel = plugged.clone();
        for step in &steps {
            let changed = apply(&mut state, step);
            let touched = kept.update(&state, &changed, &config);
            let want = Desired::from_host_state(&state, &config);
            prop_assert_eq!(kept.desired(), &want, "after {:?}", step);
            let whole = diff(&want, &kernel);
            if let Some(touched) = &touched {
                let (w, h) = restrict(kept.desired(), &kernel, touched);
                prop_assert_eq!(sorted(&diff(&w, &h)), sorted(&whole), "after {:?}", step);
            }
            for op in &whole {
                kernel.apply(op);
            }
            kernel.retain_relevant(&want);
            prop_assert!(diff(&want, &kernel).is_empty());
            // The view forgets devices it does not wire; they are still
            // plugged in (the reconciler looks them up when named).
            for (name, link) in plugged.links.clone() {
                kernel.links.entry(name).or_insert(link);
            }
        }
    }
}

#[test]
fn a_router_port_touches_its_device_and_its_bridges_table() {
    let config = LinuxConfig::new(ip("192.0.2.1"));
    let mut state = HostState::default();
    let mut kept = IncrementalDesired::new(&state, &config);
    let mut kernel = kernel();
    let remote = Step::Remote {
        network: 1,
        port: 0,
        mac: 0,
        vtep: 0,
    };
    for step in [
        remote,
        Step::Router {
            router: 0,
            network: 1,
            mac: 1,
        },
    ] {
        let changed = apply(&mut state, &step);
        let touched = kept.update(&state, &changed, &config).unwrap();
        let whole = diff(kept.desired(), &kernel);
        let (w, h) = restrict(kept.desired(), &kernel, &touched);
        assert!(!whole.is_empty(), "{step:?}");
        assert_eq!(sorted(&diff(&w, &h)), sorted(&whole));
        for op in &whole {
            kernel.apply(op);
        }
    }
}
