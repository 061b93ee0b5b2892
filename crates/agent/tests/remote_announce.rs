//! A port on another host, learnt while a local VM already asks for its
//! address (root, namespaces), is announced by the host's bridge: the VM
//! hears at once, not at its own next ARP a second later (the bridge
//! answers ARP only from its entries and floods nothing over the overlay).

#![allow(clippy::unwrap_used)]

mod linux_common;

use agent::linux::{Reconciler, remote_arrivals};
use compiler::protocol::HostState;
use linux_common::*;
use testworld::{Fabric, Host, Vm};

const REMOTE: &str = "10.0.0.20";
const REMOTE_MAC: &str = "fa:16:3e:00:61:14";

#[test]
fn a_remote_port_is_announced_to_the_vm_already_asking_for_it() {
    let fabric = Fabric::new("rn").unwrap();
    let host = Host::new(&fabric, "rn", 1).unwrap();
    let vm = Vm::new(&host, "rn", "tapn", "fa:16:3e:00:61:0a").unwrap();
    vm.add_ip("10.0.0.10/24").unwrap();
    // The VM asks again only after 20 s: within the test's deadline, only
    // the announcement can answer it.
    vm.ns
        .sysctl("net.ipv4.neigh.eth0.retrans_time_ms", "20000")
        .unwrap();
    let mut state = HostState::default();
    let mut net = network(601);
    net.local_ports
        .insert("pa".into(), local("tapn", "fa:16:3e:00:61:0a", "10.0.0.10"));
    state.networks.insert("n".into(), net);
    let linux = config(&host);
    let first = reconcile_once(&host.ns, &linux, &state);
    assert!(first.failed.is_empty(), "{:#?}", first.failed);
    // A local port's own entry is no arrival: it answers ARP itself.
    assert_eq!(remote_arrivals(&state, &first.applied, None), vec![]);
    assert_eq!(vm.ping(REMOTE, 1), 0);
    assert_eq!(
        vm_neighbour(&vm, REMOTE).map(|(state, _)| state).as_deref(),
        Some("INCOMPLETE")
    );

    // The port on the other host arrives, as the daemon takes it: links,
    // then the announcements of what they added.
    if let Some(net) = state.networks.get_mut("n") {
        net.remote_ports
            .insert("pr".into(), remote(REMOTE_MAC, REMOTE, "192.0.2.2"));
    }
    let arrivals = host.ns.run(|| {
        runtime().block_on(async {
            let links = Reconciler::new(linux).unwrap();
            let report = links.reconcile(&state).await.unwrap();
            assert!(report.failed.is_empty(), "{:#?}", report.failed);
            let arrivals = remote_arrivals(&state, &report.applied, None);
            let announcer = agent::garp::Announcer::open().unwrap();
            for (bridge, ip, mac) in &arrivals {
                let index = agent::garp::ifindex(bridge).unwrap();
                announcer.announce(index, *ip, *mac).unwrap();
            }
            arrivals
        })
    });
    assert_eq!(
        arrivals,
        vec![(
            agent::linux::bridge_name(601),
            REMOTE.parse().unwrap(),
            mac(REMOTE_MAC)
        )]
    );
    wait_vm_learns(&vm, REMOTE, REMOTE_MAC);
}
