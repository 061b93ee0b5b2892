//! Shared by the `linux_*` tests: hand-built host states, running the
//! reconciler inside a host namespace, and reading the kernel back through
//! iproute2's JSON.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use agent::linux::{LinuxConfig, ReconcileReport, Reconciler};
use compiler::protocol::{FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, RemotePortSpec};
use model::MacAddr;
use serde_json::Value;
use testworld::{Host, Netns, Vm};

pub fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn network(vni: u32) -> NetworkSpec {
    NetworkSpec {
        vni,
        mtu: 1450,
        physical_network: None,
        subnets: BTreeMap::new(),
        local_ports: BTreeMap::new(),
        remote_ports: BTreeMap::new(),
    }
}

pub fn local(device: &str, mac_s: &str, addr: &str) -> LocalPortSpec {
    LocalPortSpec {
        mac: mac(mac_s),
        fixed_ips: vec![FixedIpSpec {
            subnet_id: "s".into(),
            ip_address: ip(addr),
        }],
        device: device.into(),
        admin_state_up: true,
        dhcpv4_options: vec![],
        dhcpv6_options: vec![],
    }
}

pub fn remote(mac_s: &str, addr: &str, vtep: &str) -> RemotePortSpec {
    RemotePortSpec {
        mac: mac(mac_s),
        ips: vec![ip(addr)],
        vtep: ip(vtep),
    }
}

pub fn config(host: &Host) -> LinuxConfig {
    LinuxConfig::new(IpAddr::V4(host.underlay_ip()))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One reconcile by a fresh reconciler (a fresh agent process) in `ns`.
pub fn reconcile_once(ns: &Netns, config: &LinuxConfig, state: &HostState) -> ReconcileReport {
    reconcile_each(ns, config, std::slice::from_ref(state))
        .pop()
        .unwrap()
}

/// Reconciles to each state in turn with one reconciler (one agent process
/// that lives through them) in `ns`.
pub fn reconcile_each(
    ns: &Netns,
    config: &LinuxConfig,
    states: &[HostState],
) -> Vec<ReconcileReport> {
    ns.run(|| {
        runtime().block_on(async {
            let reconciler = Reconciler::new(config.clone()).unwrap();
            let mut reports = vec![];
            for s in states {
                let report = reconciler.reconcile(s).await.unwrap();
                if report.failed.is_empty() {
                    // The view a cached reconcile would plan against is
                    // what the kernel has.
                    let view = reconciler.view().unwrap();
                    assert_eq!(view, reconciler.observe(s).await.unwrap());
                }
                reports.push(report);
            }
            reports
        })
    })
}

/// `nft -j list ruleset` without handles (they count differently).
pub fn ruleset(ns: &Netns) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("handle");
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = json(ns, "nft", &["-j", "list", "ruleset"]);
    strip(&mut v);
    v
}

pub fn json(ns: &Netns, program: &str, args: &[&str]) -> Value {
    let out = ns.exec(program, args).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{program} {args:?}: {e}: {out}"))
}

/// A VM's ARP entry for `ip`: its state and MAC, as `ip -j neigh` says.
pub fn vm_neighbour(vm: &Vm, ip: &str) -> Option<(String, Option<String>)> {
    let v = json(&vm.ns, "ip", &["-j", "neigh", "show", ip, "dev", "eth0"]);
    let entry = v.as_array()?.first()?;
    Some((
        entry["state"][0].as_str()?.to_owned(),
        entry["lladdr"].as_str().map(str::to_owned),
    ))
}

/// Waits (5 s at most) until the VM's ARP entry for `ip` holds `mac`.
pub fn wait_vm_learns(vm: &Vm, ip: &str, mac: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while vm_neighbour(vm, ip).and_then(|(_, m)| m).as_deref() != Some(mac) {
        assert!(
            std::time::Instant::now() < deadline,
            "the VM never learnt {ip}: {:?}",
            vm_neighbour(vm, ip)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `ip -d -j link show`, by name.
pub fn links(ns: &Netns) -> BTreeMap<String, Value> {
    let all = json(ns, "ip", &["-d", "-j", "link", "show"]);
    all.as_array()
        .unwrap()
        .iter()
        .map(|l| (l["ifname"].as_str().unwrap().to_string(), l.clone()))
        .collect()
}

/// Every FDB entry (`bridge -j fdb show`) as `mac dev [master M] [dst D] flags state`.
pub fn fdb(ns: &Netns) -> BTreeSet<String> {
    let all = json(ns, "bridge", &["-j", "fdb", "show"]);
    all.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut s = format!(
                "{} dev {}",
                e["mac"].as_str().unwrap(),
                e["ifname"].as_str().unwrap()
            );
            if let Some(m) = e["master"].as_str() {
                s += &format!(" master {m}");
            }
            if let Some(d) = e["dst"].as_str() {
                s += &format!(" dst {d}");
            }
            for f in e["flags"].as_array().into_iter().flatten() {
                s += &format!(" {}", f.as_str().unwrap());
            }
            if let Some(st) = e["state"].as_str() {
                s += &format!(" {st}");
            }
            s
        })
        .collect()
}

/// Every neighbour entry (`ip -j neigh show`, IPv4 and IPv6) as `ip dev lladdr STATE…`.
pub fn neighbours(ns: &Netns) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let all = json(ns, "ip", &[family, "-j", "neigh", "show"]);
        for n in all.as_array().unwrap() {
            let states: Vec<&str> = n["state"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            out.insert(format!(
                "{} dev {} lladdr {} {}",
                n["dst"].as_str().unwrap(),
                n["dev"].as_str().unwrap(),
                n["lladdr"].as_str().unwrap_or("-"),
                states.join(",")
            ));
        }
    }
    out
}

pub fn config_for(underlay_ip: &str) -> LinuxConfig {
    LinuxConfig::new(ip(underlay_ip))
}

/// Reconciles to each state in turn with `reconcile_cached` (one process),
/// checking after each that the cached view is what the kernel has.
pub fn reconcile_each_cached(
    ns: &Netns,
    config: &LinuxConfig,
    states: &[HostState],
) -> Vec<ReconcileReport> {
    ns.run(|| {
        runtime().block_on(async {
            let reconciler = Reconciler::new(config.clone()).unwrap();
            let mut reports = vec![];
            for s in states {
                let report = reconciler.reconcile_cached(s).await.unwrap();
                assert!(report.failed.is_empty(), "{:#?}", report.failed);
                assert_eq!(
                    reconciler.view().unwrap(),
                    reconciler.observe(s).await.unwrap()
                );
                reports.push(report);
            }
            reports
        })
    })
}
