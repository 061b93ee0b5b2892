//! The `linux` backend against a real kernel, in throwaway namespaces (root):
//! what one reconcile builds, that a second one (same process or a restarted
//! one) changes nothing, that removals remove exactly what they should, and
//! that nothing vnet does not own is touched.

#![allow(clippy::unwrap_used)]

mod linux_common;

use std::collections::BTreeSet;

use agent::linux::{Op, PortWiring, Reconciler};
use compiler::protocol::HostState;
use linux_common::*;
use testworld::{EXTERNAL_DEV, Fabric, Host, OUTSIDE_IP, Outside, Vm};

const MAC_A: &str = "fa:16:3e:00:00:0a";
const MAC_B: &str = "fa:16:3e:00:00:0b";
const MAC_R1: &str = "fa:16:3e:00:01:01";
const MAC_R2: &str = "fa:16:3e:00:01:02";
const MAC_R3: &str = "fa:16:3e:00:02:01";

/// Network 100: local ports a (tapa) and b (tapb), remote ports r1 and r2 on
/// host 2; network 200: remote port r3 and local port m, whose device is
/// missing.
fn state() -> HostState {
    let mut n100 = network(100);
    n100.local_ports
        .insert("a".into(), local("tapa", MAC_A, "10.0.0.10"));
    n100.local_ports
        .insert("b".into(), local("tapb", MAC_B, "10.0.0.11"));
    n100.remote_ports
        .insert("r1".into(), remote(MAC_R1, "10.0.0.21", "192.0.2.2"));
    n100.remote_ports
        .insert("r2".into(), remote(MAC_R2, "fd00::22", "192.0.2.2"));
    let mut n200 = network(200);
    n200.local_ports.insert(
        "m".into(),
        local("tapmissing", "fa:16:3e:00:02:0f", "10.0.0.10"),
    );
    n200.remote_ports
        .insert("r3".into(), remote(MAC_R3, "10.0.0.21", "192.0.2.3"));
    let mut s = HostState::default();
    s.networks.insert("net100".into(), n100);
    s.networks.insert("net200".into(), n200);
    s
}

fn ours(set: &BTreeSet<String>) -> BTreeSet<String> {
    set.iter()
        .filter(|e| e.contains("vnbr") || e.contains("vnvx") || e.contains(" dev tap"))
        .filter(|e| {
            e.contains("static")
                || e.contains("self permanent") && e.contains("dst")
                || e.contains("PERMANENT")
        })
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn reconcile_builds_exactly_the_desired_kernel_state_and_then_nothing() {
    let fabric = Fabric::new("lr").unwrap();
    let host = Host::new(&fabric, "lr", 1).unwrap();
    let _a = Vm::new(&host, "lr", "tapa", MAC_A).unwrap();
    let _b = Vm::new(&host, "lr", "tapb", MAC_B).unwrap();
    // Things vnet does not own: a bridge with a port, an FDB entry and a
    // neighbour on it, a neighbour on the underlay.
    host.ns
        .sh(
            "ip link add br-other type bridge && ip link add dum0 type veth peer name dum1 && \
             ip link set dum0 master br-other && ip link set br-other up && ip link set dum0 up && \
             bridge fdb add 02:00:00:00:00:99 dev dum0 master static && \
             ip neigh add 10.99.0.1 lladdr 02:00:00:00:00:99 dev br-other nud permanent && \
             ip neigh add 192.0.2.99 lladdr 02:00:00:00:00:98 dev eth0 nud permanent",
        )
        .unwrap();
    let foreign_fdb = fdb(&host.ns);
    let foreign_neigh = neighbours(&host.ns);
    let foreign_links = links(&host.ns);

    let cfg = config(&host);
    let reports = reconcile_each(&host.ns, &cfg, &[state(), state()]);
    let first = &reports[0];
    assert!(first.failed.is_empty(), "{:#?}", first.failed);
    assert!(!first.applied.is_empty());
    assert_eq!(first.wired(), ["a", "b"]);
    assert_eq!(first.ports["m"], PortWiring::DeviceMissing);
    assert!(
        reports[1].unchanged(),
        "second reconcile: {:#?}",
        reports[1].applied
    );
    assert_eq!(reports[1].wired(), ["a", "b"]);

    // Links, as iproute2 sees them.
    let l = links(&host.ns);
    for vni in [100, 200] {
        let br = &l[&format!("vnbr{vni}")];
        assert_eq!(br["linkinfo"]["info_kind"], "bridge");
        assert_eq!(br["mtu"], 1450);
        assert_eq!(br["inet6_addr_gen_mode"], "none");
        assert!(br["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let vx = &l[&format!("vnvx{vni}")];
        assert_eq!(vx["master"], format!("vnbr{vni}"));
        assert_eq!(vx["mtu"], 1450);
        assert_eq!(vx["inet6_addr_gen_mode"], "none");
        assert!(vx["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let info = &vx["linkinfo"]["info_data"];
        assert_eq!(info["id"], vni);
        assert_eq!(info["local"], "192.0.2.1");
        assert_eq!(info["port"], 4789);
        assert_eq!(info["learning"], false);
        assert!(
            info.get("group").is_none() && info.get("remote").is_none(),
            "{info}"
        );
        let port = &vx["linkinfo"]["info_slave_data"];
        assert_eq!(port["learning"], false);
        assert_eq!(port["neigh_suppress"], true);
        assert_eq!(port["flood"], false);
        assert_eq!(port["mcast_flood"], false);
        assert_eq!(port["bcast_flood"], false);
    }
    for tap in ["tapa", "tapb"] {
        let t = &l[tap];
        assert_eq!(t["master"], "vnbr100");
        assert_eq!(t["mtu"], 1450);
        assert!(t["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        assert_eq!(t["linkinfo"]["info_slave_data"]["neigh_suppress"], false);
    }

    // FDB and neighbours: exactly these entries of ours, and no flood entry.
    let f = fdb(&host.ns);
    assert_eq!(
        ours(&f),
        set(&[
            "fa:16:3e:00:00:0a dev tapa master vnbr100 static",
            "fa:16:3e:00:00:0b dev tapb master vnbr100 static",
            "fa:16:3e:00:01:01 dev vnvx100 master vnbr100 static",
            "fa:16:3e:00:01:01 dev vnvx100 dst 192.0.2.2 self permanent",
            "fa:16:3e:00:01:02 dev vnvx100 master vnbr100 static",
            "fa:16:3e:00:01:02 dev vnvx100 dst 192.0.2.2 self permanent",
            "fa:16:3e:00:02:01 dev vnvx200 master vnbr200 static",
            "fa:16:3e:00:02:01 dev vnvx200 dst 192.0.2.3 self permanent",
        ])
    );
    assert!(
        !f.iter().any(|e| e.starts_with("00:00:00:00:00:00")),
        "{f:#?}"
    );
    let n = neighbours(&host.ns);
    assert_eq!(
        ours(&n),
        set(&[
            "10.0.0.10 dev vnbr100 lladdr fa:16:3e:00:00:0a PERMANENT",
            "10.0.0.11 dev vnbr100 lladdr fa:16:3e:00:00:0b PERMANENT",
            "10.0.0.21 dev vnbr100 lladdr fa:16:3e:00:01:01 PERMANENT",
            "fd00::22 dev vnbr100 lladdr fa:16:3e:00:01:02 PERMANENT",
            "10.0.0.10 dev vnbr200 lladdr fa:16:3e:00:02:0f PERMANENT",
            "10.0.0.21 dev vnbr200 lladdr fa:16:3e:00:02:01 PERMANENT",
        ])
    );
    // Foreign objects are as they were.
    assert!(foreign_fdb.is_subset(&f));
    assert!(foreign_neigh.is_subset(&n));
    for name in ["br-other", "dum0", "eth0"] {
        assert_eq!(l[name]["master"], foreign_links[name]["master"]);
        assert_eq!(l[name]["flags"], foreign_links[name]["flags"]);
    }

    // A restarted agent (a new reconciler) finds nothing to do.
    let restarted = reconcile_once(&host.ns, &cfg, &state());
    assert!(restarted.unchanged(), "{:#?}", restarted.applied);
    assert_eq!(restarted.wired(), ["a", "b"]);

    // Removing a remote port removes exactly its FDB and neighbour entries.
    let (fdb_before, neigh_before) = (fdb(&host.ns), neighbours(&host.ns));
    let mut less = state();
    less.networks
        .get_mut("net100")
        .unwrap()
        .remote_ports
        .remove("r1");
    let report = reconcile_once(&host.ns, &cfg, &less);
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    let shown: Vec<String> = report.applied.iter().map(Op::to_string).collect();
    assert_eq!(
        shown,
        [
            "bridge fdb del fa:16:3e:00:01:01 dev vnvx100 master",
            "bridge fdb del fa:16:3e:00:01:01 dev vnvx100 self",
            "ip neigh del 10.0.0.21 dev vnbr100",
        ]
    );
    let fdb_gone: BTreeSet<_> = fdb_before.difference(&fdb(&host.ns)).cloned().collect();
    assert_eq!(
        fdb_gone,
        set(&[
            "fa:16:3e:00:01:01 dev vnvx100 master vnbr100 static",
            "fa:16:3e:00:01:01 dev vnvx100 dst 192.0.2.2 self permanent",
        ])
    );
    let neigh_gone: BTreeSet<_> = neigh_before
        .difference(&neighbours(&host.ns))
        .cloned()
        .collect();
    assert_eq!(
        neigh_gone,
        set(&["10.0.0.21 dev vnbr100 lladdr fa:16:3e:00:01:01 PERMANENT"])
    );

    // Nothing desired: vnet's links go, the taps stay (detached), foreign
    // objects stay.
    let report = reconcile_once(&host.ns, &cfg, &HostState::default());
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    let l = links(&host.ns);
    assert!(
        !l.keys()
            .any(|n| n.starts_with("vnbr") || n.starts_with("vnvx")),
        "{:?}",
        l.keys()
    );
    for tap in ["tapa", "tapb"] {
        assert!(l[tap].get("master").is_none(), "{tap} still attached");
    }
    assert!(foreign_fdb.is_subset(&fdb(&host.ns)));
    assert!(foreign_neigh.is_subset(&neighbours(&host.ns)));
    assert_eq!(l["dum0"]["master"], "br-other");
}

#[test]
fn a_port_device_that_appears_later_is_wired_and_one_that_goes_is_reported() {
    let fabric = Fabric::new("lp").unwrap();
    let host = Host::new(&fabric, "lp", 1).unwrap();
    let cfg = config(&host);
    let mut s = HostState::default();
    let mut n = network(300);
    n.local_ports
        .insert("a".into(), local("tapa", MAC_A, "10.3.0.10"));
    s.networks.insert("net300".into(), n);

    let report = reconcile_once(&host.ns, &cfg, &s);
    assert_eq!(report.ports["a"], PortWiring::DeviceMissing);
    let vm = Vm::new(&host, "lp", "tapa", MAC_A).unwrap();
    let report = reconcile_once(&host.ns, &cfg, &s);
    assert_eq!(report.wired(), ["a"]);
    assert!(fdb(&host.ns).contains("fa:16:3e:00:00:0a dev tapa master vnbr300 static"));
    drop(vm);
    let report = reconcile_once(&host.ns, &cfg, &s);
    assert_eq!(report.ports["a"], PortWiring::DeviceMissing);
    assert!(report.unchanged(), "{:#?}", report.applied);
}

/// A port's device coming, going and coming back, each told to the cached
/// view by `devices_changed` (the daemon's link events) and reconciled by
/// the port's network alone: wired, reported missing, wired again with its
/// static FDB entry (the kernel dropped it with the device), the view each
/// time what the kernel has.
#[test]
fn a_device_that_comes_goes_and_returns_is_rewired_by_its_network_alone() {
    let fabric = Fabric::new("ld").unwrap();
    let host = Host::new(&fabric, "ld", 1).unwrap();
    let cfg = config(&host);
    let mut s = HostState::default();
    let mut n = network(300);
    n.local_ports
        .insert("a".into(), local("tapa", MAC_A, "10.3.0.10"));
    s.networks.insert("net300".into(), n);
    let net = set(&["net300"]);
    let dev = vec!["tapa".to_string()];
    host.ns.run(|| {
        runtime().block_on(async {
            let r = Reconciler::new(cfg.clone()).unwrap();
            let report = r.reconcile(&s).await.unwrap();
            assert_eq!(report.ports["a"], PortWiring::DeviceMissing);
            for round in 0..2 {
                let vm = Vm::new(&host, "ld", "tapa", MAC_A).unwrap();
                r.devices_changed(&dev).await.unwrap();
                let report = r.reconcile_changed(&s, Some(&net)).await.unwrap();
                assert_eq!(report.wired(), ["a"], "round {round}");
                assert_eq!(r.view().unwrap(), r.observe(&s).await.unwrap());
                let entry = "fa:16:3e:00:00:0a dev tapa master vnbr300 static";
                assert!(fdb(&host.ns).contains(entry), "round {round}");
                drop(vm);
                r.devices_changed(&dev).await.unwrap();
                let report = r.reconcile_changed(&s, Some(&net)).await.unwrap();
                assert_eq!(report.ports["a"], PortWiring::DeviceMissing);
                assert_eq!(r.view().unwrap(), r.observe(&s).await.unwrap());
            }
        })
    });
}

#[test]
fn cached_reconciles_change_only_what_changed_and_agree_with_the_kernel() {
    let fabric = Fabric::new("lc").unwrap();
    let host = Host::new(&fabric, "lc", 1).unwrap();
    let _a = Vm::new(&host, "lc", "tapa", MAC_A).unwrap();
    let _b = Vm::new(&host, "lc", "tapb", MAC_B).unwrap();
    let cfg = config(&host);
    let full = state();
    let mut less = full.clone();
    less.networks
        .get_mut("net100")
        .unwrap()
        .remote_ports
        .remove("r1");
    let mut moved = full.clone();
    // Port b leaves network 100 for network 200 (same device).
    let b = moved
        .networks
        .get_mut("net100")
        .unwrap()
        .local_ports
        .remove("b")
        .unwrap();
    moved
        .networks
        .get_mut("net200")
        .unwrap()
        .local_ports
        .insert("b".into(), b);
    let reports = reconcile_each_cached(
        &host.ns,
        &cfg,
        &[
            full.clone(),
            full.clone(),
            less,
            full.clone(),
            moved,
            HostState::default(),
            full,
        ],
    );
    assert!(reports[1].unchanged());
    assert_eq!(reports[2].applied.len(), 3, "{:#?}", reports[2].applied);
    assert_eq!(reports[3].applied.len(), 3, "{:#?}", reports[3].applied);
    assert_eq!(reports[4].wired(), ["a", "b"]);
    assert_eq!(reports[6].wired(), ["a", "b"]);
    // And a fresh reconciler agrees there is nothing left to do.
    let again = reconcile_once(&host.ns, &cfg, &state());
    assert!(again.unchanged(), "{:#?}", again.applied);
}

#[test]
fn link_events_tell_when_a_port_device_comes_and_goes() {
    use agent::linux::{LinkEvent, LinkEvents};
    use std::time::Duration;

    let fabric = Fabric::new("le").unwrap();
    let host = Host::new(&fabric, "le", 1).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            host.ns.run(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let mut events = LinkEvents::new().await.unwrap();
                        ready_tx.send(()).unwrap();
                        let mut seen = vec![];
                        while seen.len() < 2 {
                            let e = tokio::time::timeout(Duration::from_secs(5), events.next())
                                .await
                                .unwrap()
                                .unwrap();
                            if matches!(&e, LinkEvent::Added(n) | LinkEvent::Removed(n) if n == "tapa") {
                                seen.push(e);
                            }
                        }
                        seen
                    })
            })
        });
        ready_rx.recv().unwrap();
        let vm = Vm::new(&host, "le", "tapa", MAC_A).unwrap();
        // Changes to an existing link are not appearances.
        host.ns.ip(&["link", "set", "tapa", "mtu", "1400"]).unwrap();
        drop(vm);
        let seen = watcher.join().unwrap();
        assert_eq!(
            seen,
            [
                LinkEvent::Added("tapa".into()),
                LinkEvent::Removed("tapa".into())
            ]
        );
    });
}

const MAC_F: &str = "fa:16:3e:00:03:0a";
const MAC_RF: &str = "fa:16:3e:00:03:0b";

/// Network 100 as in `state`, plus a flat network on physical network
/// `external` with local port f (tapf) and remote port rf on host 2.
fn flat_state() -> HostState {
    let mut s = state();
    let mut flat = network(0);
    flat.physical_network = Some("external".into());
    flat.local_ports
        .insert("f".into(), local("tapf", MAC_F, "203.0.113.10"));
    flat.remote_ports
        .insert("rf".into(), remote(MAC_RF, "203.0.113.11", "192.0.2.2"));
    s.networks.insert("ext".into(), flat);
    s
}

#[test]
fn a_flat_network_enslaves_the_mapped_interface_and_detaches_it_when_gone() {
    let fabric = Fabric::new("lf").unwrap();
    fabric.add_external().unwrap();
    let host = Host::new(&fabric, "lf", 1).unwrap();
    host.plug_external(&fabric).unwrap();
    let outside = Outside::new(&fabric, "lf").unwrap();
    let _a = Vm::new(&host, "lf", "tapa", MAC_A).unwrap();
    let _b = Vm::new(&host, "lf", "tapb", MAC_B).unwrap();
    let vm = Vm::new(&host, "lf", "tapf", MAC_F).unwrap();
    vm.add_ip("203.0.113.10/24").unwrap();
    let mtu_before = links(&host.ns)[EXTERNAL_DEV]["mtu"].clone();
    let cfg = config(&host).with_physical_networks(
        [("external".to_owned(), EXTERNAL_DEV.to_owned())]
            .into_iter()
            .collect(),
    );
    let bridge = agent::linux::network_bridge(&flat_state().networks["ext"]);

    // Built once, then nothing: in one process, and in a restarted one.
    let reports = reconcile_each(&host.ns, &cfg, &[flat_state(), flat_state()]);
    assert!(reports[0].failed.is_empty(), "{:#?}", reports[0].failed);
    assert_eq!(reports[0].wired(), ["a", "b", "f"]);
    assert!(reports[1].unchanged(), "{:#?}", reports[1].applied);
    let restarted = reconcile_once(&host.ns, &cfg, &flat_state());
    assert!(restarted.unchanged(), "{:#?}", restarted.applied);
    let cached = reconcile_each_cached(&host.ns, &cfg, &[flat_state()]);
    assert!(cached[0].unchanged(), "{:#?}", cached[0].applied);

    let l = links(&host.ns);
    let br = &l[&bridge];
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    assert!(bridge.starts_with("vnbr"), "owned by its name");
    assert_eq!(l[EXTERNAL_DEV]["master"], bridge.as_str());
    assert_eq!(
        l[EXTERNAL_DEV]["mtu"], mtu_before,
        "the interface's MTU is the host's"
    );
    assert!(
        l[EXTERNAL_DEV]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );
    assert_eq!(l["tapf"]["master"], bridge.as_str());
    assert!(
        !l.contains_key("vnvx0"),
        "no VXLAN device for a flat network"
    );
    // The remote port of the flat network has no FDB entry anywhere, and
    // the flat bridge no neighbour entry: the physical segment resolves.
    assert!(
        !fdb(&host.ns)
            .iter()
            .any(|e| e.starts_with(MAC_RF) && e.contains("static"))
    );
    assert!(!neighbours(&host.ns).iter().any(|n| n.contains(&bridge)));

    // Real packets: the VM reaches the outside across the physical segment.
    assert_eq!(vm.ping(OUTSIDE_IP, 2), 2);
    assert_eq!(outside.ping("203.0.113.10", 2), 2);

    // The flat network goes: its bridge is deleted, the interface detached
    // (still there, still up), the VXLAN network untouched.
    let report = reconcile_once(&host.ns, &cfg, &state());
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    let l = links(&host.ns);
    assert!(!l.contains_key(&bridge));
    assert!(
        l[EXTERNAL_DEV].get("master").is_none(),
        "{}",
        l[EXTERNAL_DEV]
    );
    assert!(l.contains_key("tapf") && l["tapf"].get("master").is_none());
    assert_eq!(l["tapa"]["master"], "vnbr100");
    assert!(report.applied.iter().all(|op| !matches!(
        op,
        Op::DeleteLink { name } if name == EXTERNAL_DEV || name == "tapf"
    )));
    assert!(reconcile_once(&host.ns, &cfg, &state()).unchanged());
}

#[test]
fn a_flat_network_this_host_does_not_map_touches_nothing() {
    let fabric = Fabric::new("lu").unwrap();
    fabric.add_external().unwrap();
    let host = Host::new(&fabric, "lu", 1).unwrap();
    host.plug_external(&fabric).unwrap();
    let _f = Vm::new(&host, "lu", "tapf", MAC_F).unwrap();
    let before = links(&host.ns);
    let mut s = HostState::default();
    s.networks
        .insert("ext".into(), flat_state().networks["ext"].clone());
    let report = reconcile_once(&host.ns, &config(&host), &s);
    assert!(report.unchanged(), "{:#?}", report.applied);
    assert!(report.wired().is_empty());
    let after = links(&host.ns);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert!(after[EXTERNAL_DEV].get("master").is_none());
}
