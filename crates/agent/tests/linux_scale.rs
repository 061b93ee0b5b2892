//! The agent figure (root, a throwaway namespace): reconcile time for a host
//! with 1,000 local ports and 10,000 remote ports (so 10,000 remote MACs:
//! 20,000 FDB entries, plus 11,000 neighbour entries) over 100 networks, from
//! empty, with nothing to do, after a restart, and for one change. Ignored by
//! default; run with
//!
//! ```text
//! cargo test --release -p agent --test linux_scale -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)]

mod linux_common;

use std::time::Instant;

use agent::linux::{ReconcileReport, Reconciler};
use compiler::protocol::HostState;
use linux_common::*;
use testworld::Netns;

const NETWORKS: u32 = 100;
const LOCAL_PER_NETWORK: u32 = 10;
const REMOTE_PER_NETWORK: u32 = 100;

fn mac_of(kind: u8, net: u32, port: u32) -> String {
    format!(
        "fa:16:{kind:02x}:{:02x}:{:02x}:{:02x}",
        net & 0xff,
        port >> 8,
        port & 0xff
    )
}

fn device(net: u32, port: u32) -> String {
    format!("tb{net:03}x{port:03}")
}

fn big_state() -> HostState {
    let mut s = HostState::default();
    for n in 0..NETWORKS {
        let mut net = network(5000 + n);
        for p in 0..LOCAL_PER_NETWORK {
            net.local_ports.insert(
                format!("l{n}-{p}"),
                local(
                    &device(n, p),
                    &mac_of(0x3e, n, p),
                    &format!("10.{n}.0.{}", p + 2),
                ),
            );
        }
        for p in 0..REMOTE_PER_NETWORK {
            let vtep = format!("192.0.2.{}", 10 + p % 50);
            net.remote_ports.insert(
                format!("r{n}-{p}"),
                remote(&mac_of(0x3f, n, p), &format!("10.{n}.1.{}", p + 2), &vtep),
            );
        }
        s.networks.insert(format!("net{n}"), net);
    }
    s
}

fn line(what: &str, r: &ReconcileReport) {
    println!(
        "{what:<34} total {:>8.1} ms  (observe {:>7.1}, plan {:>6.1}, execute {:>8.1})  ops {:>6}  failed {}",
        r.timings.total.as_secs_f64() * 1e3,
        r.timings.observe.as_secs_f64() * 1e3,
        r.timings.plan.as_secs_f64() * 1e3,
        r.timings.execute.as_secs_f64() * 1e3,
        r.applied.len(),
        r.failed.len()
    );
}

#[test]
#[ignore = "figure: takes a few seconds; run with --ignored --nocapture"]
fn reconcile_1000_local_ports_and_10000_remote_macs() {
    let ns = Netns::new("ls").unwrap();
    ns.sysctl("net.bridge.bridge-nf-call-iptables", "0")
        .unwrap();
    ns.sysctl("net.bridge.bridge-nf-call-ip6tables", "0")
        .unwrap();
    ns.sysctl("net.bridge.bridge-nf-call-arptables", "0")
        .unwrap();
    // The taps, as Nova would have made them (one `ip -batch`, not timed).
    let mut batch = String::new();
    for n in 0..NETWORKS {
        for p in 0..LOCAL_PER_NETWORK {
            batch += &format!("tuntap add {} mode tap\n", device(n, p));
        }
    }
    batch += "tuntap add tbextra mode tap\n";
    let file = std::env::temp_dir().join(format!("{}.batch", ns.name()));
    std::fs::write(&file, batch).unwrap();
    let done = ns.exec("ip", &["-batch", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    done.unwrap();

    let state = big_state();
    let mut changed = state.clone();
    changed
        .networks
        .get_mut("net42")
        .unwrap()
        .remote_ports
        .insert(
            "new".into(),
            remote("fa:16:40:00:00:01", "10.42.1.250", "192.0.2.77"),
        );
    let mut with_local = state.clone();
    with_local
        .networks
        .get_mut("net42")
        .unwrap()
        .local_ports
        .insert(
            "extra".into(),
            local("tbextra", "fa:16:41:00:00:01", "10.42.0.250"),
        );
    let cfg = linux_common::config_for("192.0.2.1");

    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            println!(
                "host: {NETWORKS} networks, {} local ports, {} remote ports",
                NETWORKS * LOCAL_PER_NETWORK,
                NETWORKS * REMOTE_PER_NETWORK
            );
            let r = Reconciler::new(cfg.clone()).unwrap();
            let first = r.reconcile(&state).await.unwrap();
            line("from empty", &first);
            assert!(
                first.failed.is_empty(),
                "{:#?}",
                &first.failed[..3.min(first.failed.len())]
            );
            assert_eq!(first.wired().len(), (NETWORKS * LOCAL_PER_NETWORK) as usize);
            let again = r.reconcile(&state).await.unwrap();
            line("again, nothing to do", &again);
            assert!(again.unchanged());
            let add = r.reconcile(&changed).await.unwrap();
            line("one remote port added", &add);
            assert_eq!(add.applied.len(), 3);
            let del = r.reconcile(&state).await.unwrap();
            line("one remote port removed", &del);
            assert_eq!(del.applied.len(), 3);
            let add = r.reconcile_cached(&changed).await.unwrap();
            line("one remote port added (cached)", &add);
            assert_eq!(add.applied.len(), 3);
            let del = r.reconcile_cached(&state).await.unwrap();
            line("one remote port removed (cached)", &del);
            assert_eq!(del.applied.len(), 3);
            let add = r.reconcile_cached(&with_local).await.unwrap();
            line("one local port added (cached)", &add);
            assert_eq!(
                add.wired().len(),
                (NETWORKS * LOCAL_PER_NETWORK) as usize + 1
            );
            let del = r.reconcile_cached(&state).await.unwrap();
            line("one local port removed (cached)", &del);
            assert_eq!(r.view().unwrap(), r.observe(&state).await.unwrap());
            drop(r);
            let started = Instant::now();
            let restarted = Reconciler::new(cfg.clone()).unwrap();
            let after_restart = restarted.reconcile(&state).await.unwrap();
            line("restarted agent, nothing to do", &after_restart);
            assert!(after_restart.unchanged());
            println!(
                "restart to converged: {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            let empty = restarted.reconcile(&HostState::default()).await.unwrap();
            line("everything removed", &empty);
            assert!(empty.failed.is_empty());
        });
    });
}
