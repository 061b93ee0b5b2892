//! `vnet bench ipv6` (root, iperf3, dhclient): IPv6 in a two-host lab.
//! - From a port's POST to its VM holding its IPv6 address, by SLAAC (the
//!   host's router advertisement) and by DHCPv6 (dhclient -6), against a
//!   baseline measured in the same run: the same POST and plug, then a static
//!   address added by hand, until duplicate address detection passes (the
//!   VM's own cost, which neither way avoids).
//! - IPv6 VM↔VM TCP throughput across hosts against IPv4 between the same
//!   two VMs (a dual-stack network), per repeat.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::security::{call, create, iperf, median, wait_for_iperf_server};
use super::stats::{Samples, ms};
use crate::BoxError;
use crate::lab::{self, LabState, run};

pub struct Figures {
    pub ports: usize,
    pub slaac: Samples,
    pub dhcpv6: Samples,
    pub dad_floor: Samples,
    pub repeats: usize,
    pub ipv4_gbits: f64,
    pub ipv6_gbits: f64,
    /// Median of the per-repeat ratios IPv6 / IPv4.
    pub ipv6_vs_ipv4: f64,
}

const DEADLINE: Duration = Duration::from_secs(30);

pub fn run_bench(ports: usize, seconds: u32, repeats: usize) -> Result<Figures, BoxError> {
    if repeats == 0 || ports == 0 {
        return Err("--ports and --repeats must be at least 1".into());
    }
    let name = format!("vb{}", std::process::id() % 10_000);
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let vnet = std::env::current_exe()?;
    let result = lab::up(&name, 2, api, None, &vnet.to_string_lossy())
        .and_then(|state| measure(&state, ports, seconds, repeats));
    lab::down(&name)?;
    result
}

fn network(lab: &LabState, subnets: &[serde_json::Value]) -> Result<Vec<String>, BoxError> {
    let network = create(lab, "/v2.0/networks", "network", json!({}))?;
    let mut ids = vec![network.clone()];
    for subnet in subnets {
        let mut subnet = subnet.clone();
        subnet["network_id"] = json!(network);
        ids.push(create(lab, "/v2.0/subnets", "subnet", subnet)?);
    }
    Ok(ids)
}

fn v6(cidr: &str, mode: &str) -> serde_json::Value {
    json!({"ip_version": 6, "cidr": cidr, "ipv6_ra_mode": mode, "ipv6_address_mode": mode})
}

/// POST a port on `network` bound to host `host` (0-based) and plug a VM for
/// it; the VM's namespace and the port's IPv6 address.
fn port_vm(
    lab: &LabState,
    state: &mut LabState,
    network: &str,
    host: usize,
    vm: &str,
) -> Result<(String, Option<IpAddr>, Option<IpAddr>), BoxError> {
    let host = &lab.hosts[host].name;
    let port = call(
        lab,
        "POST",
        "/v2.0/ports",
        json!({"port": {"network_id": network, "binding:host_id": host,
                        "port_security_enabled": false, "security_groups": []}}),
    )?;
    let ips: Vec<IpAddr> = port["port"]["fixed_ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["ip_address"].as_str()?.parse().ok())
        .collect();
    let id = port["port"]["id"].as_str().ok_or("no port id")?;
    let netns = lab::vm_create(state, vm, host, id)?.netns;
    let v4 = ips.iter().copied().find(IpAddr::is_ipv4);
    let v6 = ips.iter().copied().find(IpAddr::is_ipv6);
    Ok((netns, v4, v6))
}

fn held(netns: &str, address: IpAddr) -> Result<(), BoxError> {
    if lab::wait_until(Instant::now() + DEADLINE, || {
        Ok(lab::held_ipv6(netns, address)?.is_some())
    })? {
        Ok(())
    } else {
        Err(format!("{netns} never held {address}").into())
    }
}

fn measure(
    lab: &LabState,
    ports: usize,
    seconds: u32,
    repeats: usize,
) -> Result<Figures, BoxError> {
    let mut state = LabState::load(&lab.name)?;
    let slaac_net = network(lab, &[v6("fd00:61::/64", "slaac")])?;
    let dhcp_net = network(lab, &[v6("fd00:62::/64", "dhcpv6-stateful")])?;
    let plain_net = network(
        lab,
        &[json!({"ip_version": 4, "cidr": "10.63.0.0/16", "enable_dhcp": false})],
    )?;
    let (mut slaac, mut dhcpv6, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that a slower stretch of the machine weighs on all three.
    for i in 0..ports {
        let start = Instant::now();
        let (netns, _, address) = port_vm(lab, &mut state, &slaac_net[0], i % 2, &format!("s{i}"))?;
        held(&netns, address.ok_or("no SLAAC address")?)?;
        slaac.push(start.elapsed());

        let start = Instant::now();
        let vm = format!("d{i}");
        let (netns, _, address) = port_vm(lab, &mut state, &dhcp_net[0], i % 2, &vm)?;
        let deadline = Instant::now() + DEADLINE;
        if !lab::wait_until(deadline, || lab::has_link_local(&netns))? {
            return Err(format!("{vm}: no link-local address").into());
        }
        lab::dhclient6(&lab.name, &vm, &netns, false)?;
        held(&netns, address.ok_or("no DHCPv6 address")?)?;
        dhcpv6.push(start.elapsed());

        let start = Instant::now();
        let (netns, _, _) = port_vm(lab, &mut state, &plain_net[0], i % 2, &format!("p{i}"))?;
        let address: IpAddr = format!("fd00:63::{:x}", i + 10).parse()?;
        lab::run(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{address}/64"),
                "dev",
                "eth0",
            ],
        )?;
        held(&netns, address)?;
        floor.push(start.elapsed());
    }

    // Throughput: one dual-stack network, a client on h1, a server on h2.
    let dual = network(
        lab,
        &[
            json!({"ip_version": 4, "cidr": "10.64.0.0/16"}),
            v6("fd00:64::/64", "slaac"),
        ],
    )?;
    let (client, _, client6) = port_vm(lab, &mut state, &dual[0], 0, "tc")?;
    let (server, server4, server6) = port_vm(lab, &mut state, &dual[0], 1, "ts")?;
    let (server4, server6) = (
        server4.ok_or("no IPv4 address")?,
        server6.ok_or("no IPv6 address")?,
    );
    lab::udhcpc(&lab.name, "tc", &client)?;
    lab::udhcpc(&lab.name, "ts", &server)?;
    held(&client, client6.ok_or("no IPv6 address")?)?;
    held(&server, server6)?;
    run("ip", &["netns", "exec", &server, "iperf3", "-s", "-D"])?;
    let (server4, server6) = (server4.to_string(), server6.to_string());
    wait_for_iperf_server(&client, &server4)?;
    wait_for_iperf_server(&client, &server6)?;
    let (mut four, mut six, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        let a = iperf(&client, &server4, seconds)?;
        let b = iperf(&client, &server6, seconds)?;
        ratios.push(b / a);
        four.push(a);
        six.push(b);
    }
    Ok(Figures {
        ports,
        slaac: Samples::new(slaac),
        dhcpv6: Samples::new(dhcpv6),
        dad_floor: Samples::new(floor),
        repeats,
        ipv4_gbits: median(four),
        ipv6_gbits: median(six),
        ipv6_vs_ipv4: median(ratios),
    })
}

pub fn print(f: &Figures) {
    println!(
        "vnet bench ipv6: two-host lab, {} ports of each kind (interleaved), iperf3 medians of {} repeats",
        f.ports, f.repeats
    );
    println!(
        "{:<72} {:>9} {:>9}",
        "from POST /v2.0/ports until its VM holds its IPv6 address", "p50 ms", "p99 ms"
    );
    for (what, s) in [
        ("SLAAC (the host's router advertisement)", &f.slaac),
        (
            "DHCPv6 stateful (dhclient -6, after link-local DAD)",
            &f.dhcpv6,
        ),
        (
            "  baseline: the same, a static address added at once (its DAD only)",
            &f.dad_floor,
        ),
    ] {
        println!("{what:<72} {:>9.0} {:>9.0}", ms(s.p50()), ms(s.p99()));
    }
    println!(
        "{:<44} {:>8} {:>9}",
        "VM -> VM across hosts", "Gbit/s", "ratio"
    );
    println!(
        "{:<44} {:>8.2} {:>9.2}",
        "IPv4 (baseline)", f.ipv4_gbits, 1.0
    );
    println!(
        "{:<44} {:>8.2} {:>9.2}",
        "IPv6 (same VMs, same run)", f.ipv6_gbits, f.ipv6_vs_ipv4
    );
}
