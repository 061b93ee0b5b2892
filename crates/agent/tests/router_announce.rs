//! A router interface announces its gateway address once it is wired
//! (root, namespaces): a VM that asked for its gateway before this host had
//! it (another host routed a packet to the VM first) learns it from the
//! router's gratuitous ARP, not from its own next ARP a second later.

#![allow(clippy::unwrap_used)]

mod linux_common;

use agent::linux::Reconciler;
use agent::router::{RouterConfig, RouterOp, RouterReconciler};
use compiler::protocol::{HostState, RouterInterfaceSpec, RouterSpec};
use linux_common::*;
use testworld::{Fabric, Host, Vm};

const GATEWAY: &str = "10.0.0.1";
const GATEWAY_MAC: &str = "fa:16:3e:00:60:01";

fn state_of(vm: &Vm) -> Option<String> {
    vm_neighbour(vm, GATEWAY).map(|(state, _)| state)
}

#[test]
fn a_new_interface_answers_the_vm_that_asked_before_it_was_here() {
    let fabric = Fabric::new("ra").unwrap();
    let host = Host::new(&fabric, "ra", 1).unwrap();
    let vm = Vm::new(&host, "ra", "tapa", "fa:16:3e:00:60:0a").unwrap();
    vm.add_ip("10.0.0.10/24").unwrap();
    // The VM asks again only after 20 s: within the test's deadline, only
    // the router's announcement can answer it.
    vm.ns
        .sysctl("net.ipv4.neigh.eth0.retrans_time_ms", "20000")
        .unwrap();
    let mut state = HostState::default();
    let mut net = network(600);
    net.local_ports
        .insert("pa".into(), local("tapa", "fa:16:3e:00:60:0a", "10.0.0.10"));
    state.networks.insert("n".into(), net);
    let linux = config(&host);
    assert!(reconcile_once(&host.ns, &linux, &state).failed.is_empty());
    // The VM asks for its gateway; nobody has it yet.
    assert_eq!(vm.ping(GATEWAY, 1), 0);
    assert_eq!(state_of(&vm).as_deref(), Some("INCOMPLETE"));

    // The router comes, with its interface on the VM's network.
    state.routers.insert(
        "r1".into(),
        RouterSpec {
            interfaces: [(
                "pr-0123456789".into(),
                RouterInterfaceSpec {
                    network_id: "n".into(),
                    mac: mac(GATEWAY_MAC),
                    addresses: vec![format!("{GATEWAY}/24").parse().unwrap()],
                },
            )]
            .into(),
            routes: vec![],
            gateway: None,
            metering: Default::default(),
        },
    );
    let routers = RouterConfig {
        netns_prefix: format!("{}-vnr-", host.ns.name()),
        host: "h1".into(),
    };
    // As the daemon does: routers, links (which attach the veth's host
    // end), then the announcements at once.
    let announced = host.ns.run(|| {
        runtime().block_on(async {
            let mut routers = RouterReconciler::new(routers).unwrap();
            let routed = routers.reconcile(&state, true).await;
            assert!(routed.failed.is_empty(), "{:#?}", routed.failed);
            let links = Reconciler::new(linux).unwrap();
            let wired = links.reconcile(&state).await.unwrap();
            assert!(wired.failed.is_empty(), "{:#?}", wired.failed);
            routers.announce(&wired.wired()).await
        })
    });
    assert!(
        matches!(announced.as_slice(), [RouterOp::Announce { ip, .. }] if ip.to_string() == GATEWAY),
        "{announced:?}"
    );
    wait_vm_learns(&vm, GATEWAY, GATEWAY_MAC);
    assert_eq!(vm.ping(GATEWAY, 1), 1, "the VM reaches its gateway");
}
