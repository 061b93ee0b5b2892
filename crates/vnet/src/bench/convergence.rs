//! `vnet bench convergence` (root): in a lab of two hosts, how long from a
//! `POST /v2.0/ports` with `binding:host_id` returning until the port is
//! ACTIVE, and until a VM on the other host reaches it. VM devices and
//! addresses are prepared before each POST, so the figure is vnet's (the
//! server, the stream, both agents), not a VM's boot.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::stats::{Samples, ms};
use crate::BoxError;
use crate::lab::{self, LabState, http, run};

/// Longest a port may take to converge before the bench gives up.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Figures {
    pub ports: usize,
    pub active: Samples,
    pub reachable: Samples,
    /// The same ping, against a VM that is already reachable: the cost of
    /// asking, included in `reachable`.
    pub ping_floor: Samples,
}

fn call(state: &LabState, method: &str, path: &str, body: Value) -> Result<Value, BoxError> {
    let (status, reply) = http(&state.api, method, path, Some(&body))?;
    if !(200..300).contains(&status) {
        return Err(format!("{method} {path}: {status} {reply}").into());
    }
    Ok(reply)
}

fn ping_once(netns: &str, ip: &str) -> bool {
    run(
        "ip",
        &[
            "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "1", ip,
        ],
    )
    .is_ok()
}

/// A VM plugged into `host` with `mac` and `ip` already set: ready before
/// its port exists.
fn prepare_vm(netns: &str, host: &str, device: &str, mac: &str, ip: &str) -> Result<(), BoxError> {
    lab::plug_vm(netns, host, device, mac, 1450)?;
    run(
        "ip",
        &[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{ip}/16"),
            "dev",
            "eth0",
        ],
    )?;
    Ok(())
}

pub fn run_bench(ports: usize) -> Result<Figures, BoxError> {
    if ports == 0 || ports > 250 {
        return Err("--ports must be 1 to 250".into());
    }
    let name = format!("cv{}", std::process::id() % 10_000);
    let api = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let vnet = std::env::current_exe()?;
    let result = (|| {
        let state = lab::up(&name, 2, api, None, &vnet.to_string_lossy())?;
        measure(&state, ports)
    })();
    let mut extra_namespaces: Vec<String> = (0..=ports).map(|i| format!("{name}-cv{i}")).collect();
    extra_namespaces.retain(|ns| std::path::Path::new("/run/netns").join(ns).exists());
    for ns in extra_namespaces {
        let _ = lab::delete_netns(&ns);
    }
    // A failed `up` has removed its lab already.
    if lab::is_up(&name) {
        lab::down(&name)?;
    }
    result
}

fn measure(lab: &LabState, ports: usize) -> Result<Figures, BoxError> {
    let (h1, h2) = (lab.hosts[0].name.clone(), lab.hosts[1].name.clone());
    let net = call(
        lab,
        "POST",
        "/v2.0/networks",
        json!({"network": {"name": "convergence"}}),
    )?;
    let net = net["network"]["id"]
        .as_str()
        .ok_or("no network id")?
        .to_owned();
    let subnet = call(
        lab,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.9.0.0/16"}}),
    )?;
    let subnet = subnet["subnet"]["id"]
        .as_str()
        .ok_or("no subnet id")?
        .to_owned();
    let port_body = |i: usize, host: &str| {
        json!({"port": {
            "network_id": net, "binding:host_id": host,
            "mac_address": format!("fa:16:3e:c0:{:02x}:{:02x}", i / 256, i % 256),
            "fixed_ips": [{"subnet_id": subnet, "ip_address": format!("10.9.{}.{}", i / 250, 1 + i % 250)}],
            "binding:profile": {"device": format!("cv{i}")},
        }})
    };
    let ip_of = |i: usize| format!("10.9.{}.{}", i / 250, 1 + i % 250);
    let mac_of = |i: usize| format!("fa:16:3e:c0:{:02x}:{:02x}", i / 256, i % 256);

    // The peer: a VM on h2 that every new port must become reachable from.
    let peer_ns = format!("{}-cv0", lab.name);
    prepare_vm(&peer_ns, &h2, "cv0", &mac_of(0), &ip_of(0))?;
    call(lab, "POST", "/v2.0/ports", port_body(0, &h2))?;

    let mut active = Vec::with_capacity(ports);
    let mut reachable = Vec::with_capacity(ports);
    let mut ping_floor = Vec::with_capacity(ports);
    for i in 1..=ports {
        let netns = format!("{}-cv{i}", lab.name);
        prepare_vm(&netns, &h1, &format!("cv{i}"), &mac_of(i), &ip_of(i))?;
        let reply = call(lab, "POST", "/v2.0/ports", port_body(i, &h1))?;
        let posted = Instant::now();
        let id = reply["port"]["id"].as_str().ok_or("no port id")?.to_owned();
        loop {
            let (_, port) = http(
                &lab.api,
                "GET",
                &format!("/v2.0/ports/{id}?fields=status"),
                None,
            )?;
            if port["port"]["status"] == "ACTIVE" {
                active.push(posted.elapsed());
                break;
            }
            if posted.elapsed() > TIMEOUT {
                return Err(format!("port {i} not ACTIVE after {TIMEOUT:?}").into());
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        while !ping_once(&peer_ns, &ip_of(i)) {
            if posted.elapsed() > TIMEOUT {
                return Err(format!("port {i} not reachable after {TIMEOUT:?}").into());
            }
        }
        reachable.push(posted.elapsed());
        let asked = Instant::now();
        if !ping_once(&peer_ns, &ip_of(i)) {
            return Err(format!("port {i} stopped answering").into());
        }
        ping_floor.push(asked.elapsed());
    }
    Ok(Figures {
        ports,
        active: Samples::new(active),
        reachable: Samples::new(reachable),
        ping_floor: Samples::new(ping_floor),
    })
}

pub fn print(f: &Figures) {
    println!(
        "vnet bench convergence: {} ports bound to one host, a peer VM on another",
        f.ports
    );
    println!(
        "{:<52} {:>9} {:>9}",
        "from POST /v2.0/ports returning until …", "p50 ms", "p99 ms"
    );
    for (what, s) in [
        (
            "the port is ACTIVE (agent wired it, reported it)",
            &f.active,
        ),
        ("a VM on the other host reaches it (ping)", &f.reachable),
        ("  baseline: one ping that succeeds at once", &f.ping_floor),
    ] {
        println!("{what:<52} {:>9.2} {:>9.2}", ms(s.p50()), ms(s.p99()));
    }
}
