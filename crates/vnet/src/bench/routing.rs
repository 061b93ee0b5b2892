//! `vnet bench routing` (root, iperf3): TCP throughput of vnet's L3 paths in
//! a two-host lab, each as a ratio to a direct veth pair measured in the
//! same repeat: routed east-west across hosts (a distributed router), and
//! the outside to a floating IP. KERNEL-NOTES measured the same paths built
//! by hand as ratios to a veth pair too (0.73 and 0.79), so vnet's ratio over
//! that one says how it compares with the hand-built path. Ports have port
//! security off, as the hand-built paths had no filtering.

use serde_json::json;

use super::security::{call, create, iperf, median, wait_for_iperf_server};
use crate::BoxError;
use crate::lab::{self, LabState, run};

/// KERNEL-NOTES' hand-built paths, as ratios to a veth pair.
const HAND_BUILT_ROUTED: f64 = 0.73;
const HAND_BUILT_FLOATING_IP: f64 = 0.79;

pub struct Figures {
    pub repeats: usize,
    pub veth_gbits: f64,
    pub routed_gbits: f64,
    pub floating_gbits: f64,
    /// Medians of the per-repeat ratios to the veth pair.
    pub routed_vs_veth: f64,
    pub floating_vs_veth: f64,
}

pub fn run_bench(seconds: u32, repeats: usize) -> Result<Figures, BoxError> {
    if repeats == 0 {
        return Err("--repeats must be at least 1".into());
    }
    let name = format!("rb{}", std::process::id() % 10_000);
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let vnet = std::env::current_exe()?;
    let veth = [format!("{name}-va"), format!("{name}-vb")];
    let result = lab::up(&name, 2, api, None, &vnet.to_string_lossy())
        .and_then(|state| measure(&state, &veth, seconds, repeats));
    for ns in &veth {
        if std::path::Path::new("/run/netns").join(ns).exists() {
            let _ = lab::delete_netns(ns);
        }
    }
    lab::down(&name)?;
    result
}

fn measure(
    lab: &LabState,
    veth: &[String; 2],
    seconds: u32,
    repeats: usize,
) -> Result<Figures, BoxError> {
    // The baseline: two namespaces joined by one veth pair.
    for ns in veth {
        run("ip", &["netns", "add", ns])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    }
    run(
        "ip",
        &[
            "-n", &veth[0], "link", "add", "eth0", "type", "veth", "peer", "eth0", "netns",
            &veth[1],
        ],
    )?;
    for (ns, ip) in [(&veth[0], "10.99.0.1/30"), (&veth[1], "10.99.0.2/30")] {
        run("ip", &["-n", ns, "addr", "add", ip, "dev", "eth0"])?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
    }
    iperf_server(&veth[1])?;

    // Routed: a client on h1 in 10.21/16, a server on h2 in 10.22/16, one
    // router between them, with its gateway on the lab's external network.
    let public = create(
        lab,
        "/v2.0/networks",
        "network",
        json!({"name": "public", "router:external": true,
               "provider:network_type": "flat",
               "provider:physical_network": lab::PHYSICAL_NETWORK}),
    )?;
    create(
        lab,
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": public, "ip_version": 4, "cidr": "203.0.113.0/24",
               "gateway_ip": "203.0.113.1", "enable_dhcp": false}),
    )?;
    let router = create(
        lab,
        "/v2.0/routers",
        "router",
        json!({"name": "bench", "external_gateway_info": {"network_id": public}}),
    )?;
    let mut state = LabState::load(&lab.name)?;
    let mut vm = |prefix: &str, host: usize| -> Result<(String, String, String), BoxError> {
        let network = create(lab, "/v2.0/networks", "network", json!({}))?;
        let subnet = create(
            lab,
            "/v2.0/subnets",
            "subnet",
            json!({"network_id": network, "ip_version": 4, "cidr": format!("{prefix}.0.0/16")}),
        )?;
        call(
            lab,
            "PUT",
            &format!("/v2.0/routers/{router}/add_router_interface"),
            json!({"subnet_id": subnet}),
        )?;
        let ip = format!("{prefix}.0.10");
        let host = &lab.hosts[host].name;
        let port = create(
            lab,
            "/v2.0/ports",
            "port",
            json!({"network_id": network, "binding:host_id": host,
                   "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}],
                   "port_security_enabled": false, "security_groups": []}),
        )?;
        let netns = lab::vm_create(&mut state, &format!("r{prefix}"), host, &port)?.netns;
        run(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip}/16"),
                "dev",
                "eth0",
            ],
        )?;
        let gateway = format!("{prefix}.0.1");
        run(
            "ip",
            &["-n", &netns, "route", "add", "default", "via", &gateway],
        )?;
        Ok((netns, ip, port))
    };
    let (client, _, _) = vm("10.21", 0)?;
    let (server, server_ip, server_port) = vm("10.22", 1)?;
    iperf_server(&server)?;
    let fip = call(
        lab,
        "POST",
        "/v2.0/floatingips",
        json!({"floatingip": {"floating_network_id": public, "port_id": server_port}}),
    )?;
    let fip = fip["floatingip"]["floating_ip_address"]
        .as_str()
        .ok_or("no floating IP address")?
        .to_owned();
    for (from, to) in [
        (veth[0].as_str(), "10.99.0.2"),
        (&client, &server_ip),
        (&lab.outside, &fip),
    ] {
        wait_for_iperf_server(from, to)?;
    }

    let (mut v, mut r, mut f) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_ratio, mut f_ratio) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let base = iperf(&veth[0], "10.99.0.2", seconds)?;
        let routed = iperf(&client, &server_ip, seconds)?;
        let floating = iperf(&lab.outside, &fip, seconds)?;
        r_ratio.push(routed / base);
        f_ratio.push(floating / base);
        v.push(base);
        r.push(routed);
        f.push(floating);
    }
    Ok(Figures {
        repeats,
        veth_gbits: median(v),
        routed_gbits: median(r),
        floating_gbits: median(f),
        routed_vs_veth: median(r_ratio),
        floating_vs_veth: median(f_ratio),
    })
}

fn iperf_server(netns: &str) -> Result<(), BoxError> {
    run("ip", &["netns", "exec", netns, "iperf3", "-s", "-D"])?;
    Ok(())
}

pub fn print(f: &Figures) {
    println!(
        "vnet bench routing: iperf3 TCP, two-host lab, medians of {} repeats (ratios per repeat)",
        f.repeats
    );
    println!(
        "{:<44} {:>8} {:>9} {:>12} {:>14}",
        "path", "Gbit/s", "vs veth", "hand-built", "vs hand-built"
    );
    println!(
        "{:<44} {:>8.2} {:>9.2} {:>12} {:>14}",
        "direct veth pair (baseline)", f.veth_gbits, 1.0, "1.00", "-"
    );
    for (what, gbits, ratio, hand) in [
        (
            "routed across hosts (distributed router)",
            f.routed_gbits,
            f.routed_vs_veth,
            HAND_BUILT_ROUTED,
        ),
        (
            "outside -> floating IP",
            f.floating_gbits,
            f.floating_vs_veth,
            HAND_BUILT_FLOATING_IP,
        ),
    ] {
        println!(
            "{what:<44} {gbits:>8.2} {ratio:>9.2} {hand:>12.2} {:>13.2}x",
            ratio / hand
        );
    }
}
