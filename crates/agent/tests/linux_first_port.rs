//! The first-port figure (root, a throwaway namespace): what the link
//! reconcile's execution costs for a network's first port on a host (its
//! bridge and VXLAN device made, the port wired) against a later port of the
//! same network, on a bare host and on one already holding many links (as a
//! gateway host holds router veths). Each result is checked against the
//! kernel. Ignored by default; run with
//!
//! ```text
//! cargo test --release -p agent --test linux_first_port -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)]

mod linux_common;

use std::collections::BTreeSet;
use std::time::Duration;

use agent::linux::{ReconcileReport, Reconciler};
use compiler::protocol::HostState;
use linux_common::*;
use testworld::Netns;

const NETWORKS: u32 = 40;

fn device(net: u32, port: u32) -> String {
    format!("fp{net:03}x{port}")
}

fn percentile(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn checked(r: &ReconcileReport) -> Duration {
    assert!(r.failed.is_empty(), "{:#?}", r.failed);
    r.timings.execute
}

#[test]
#[ignore = "figure: takes a few seconds; run with --ignored --nocapture"]
fn a_networks_first_port_against_its_later_ports() {
    for other_links in [0, 400] {
        first_and_later_ports(other_links);
    }
}

/// `other_links`: links the host holds besides vnet's and the ports.
fn first_and_later_ports(other_links: u32) {
    let ns = Netns::new("fp").unwrap();
    let mut batch = String::new();
    for n in 0..NETWORKS {
        for p in 0..2 {
            batch += &format!("tuntap add {} mode tap\n", device(n, p));
        }
    }
    for i in 0..other_links / 2 {
        batch += &format!("link add fpo{i}a type veth peer name fpo{i}b\n");
    }
    let file = std::env::temp_dir().join(format!("{}.batch", ns.name()));
    std::fs::write(&file, batch).unwrap();
    let done = ns.exec("ip", &["-batch", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    done.unwrap();
    let cfg = config_for("192.0.2.1");

    let (first, later) = ns.run(|| {
        runtime().block_on(async {
            let r = Reconciler::new(cfg.clone()).unwrap();
            let mut state = HostState::default();
            checked(&r.reconcile(&state).await.unwrap());
            let (mut first, mut later) = (vec![], vec![]);
            for n in 0..NETWORKS {
                let name = format!("net{n}");
                let changed = BTreeSet::from([name.clone()]);
                let mut net = network(7000 + n);
                net.local_ports.insert(
                    format!("p{n}-0"),
                    local(&device(n, 0), "fa:16:3e:70:00:00", "10.70.0.2"),
                );
                net.remote_ports.insert(
                    format!("r{n}"),
                    remote("fa:16:3f:70:00:00", "10.70.0.9", "192.0.2.2"),
                );
                state.networks.insert(name.clone(), net);
                let report = r.reconcile_changed(&state, Some(&changed)).await.unwrap();
                assert_eq!(report.wired().len(), 2 * n as usize + 1);
                first.push(checked(&report));
                state.networks.get_mut(&name).unwrap().local_ports.insert(
                    format!("p{n}-1"),
                    local(&device(n, 1), "fa:16:3e:70:00:01", "10.70.0.3"),
                );
                let report = r.reconcile_changed(&state, Some(&changed)).await.unwrap();
                assert_eq!(report.wired().len(), 2 * n as usize + 2);
                later.push(checked(&report));
            }
            // What the reconciler believes is what the kernel has.
            assert_eq!(r.view().unwrap(), r.observe(&state).await.unwrap());
            (first, later)
        })
    });
    for (what, v) in [("first port", first), ("later port", later)] {
        println!(
            "{what}: execute p50 {:.2} ms  p90 {:.2} ms  max {:.2} ms  ({} networks, {} other links)",
            percentile(v.clone(), 0.5),
            percentile(v.clone(), 0.9),
            percentile(v, 1.0),
            NETWORKS,
            other_links
        );
    }
}
