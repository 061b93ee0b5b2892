//! `vnet bench convergence` (root): in a lab of two hosts, how long from a
//! `POST /v2.0/ports` with `binding:host_id` returning until the port is
//! ACTIVE, and until a VM on the other host reaches it; then, behind a
//! router with a gateway, from a floating IP's POST (associated) until the
//! outside reaches it, and from a router interface's PUT until a VM on
//! another subnet and host is routed to. VM devices, addresses and routes
//! are prepared before each call, so the figure is vnet's (the server, the
//! stream, the agents), not a VM's boot. With `host_ports`, the measured
//! host first holds that many more ports in the same security group (on a
//! network of their own, with no device: their chains, sets and entries
//! are there), so the figure is not an empty host's. The measured network's
//! first port on that host is timed apart: its bridge and VXLAN device are
//! made with it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::stats::{Samples, ms};
use crate::BoxError;
use crate::lab::{self, LabState, http, run};

/// The VMs' subnet's gateway.
const GATEWAY: &str = "10.9.255.254";

/// Longest a port may take to converge before the bench gives up.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Figures {
    pub ports: usize,
    pub host_ports: usize,
    /// The network's first port on the measured host: its bridge and VXLAN
    /// device are made with it (network creation, deferred to its first
    /// port there), so it is timed apart from the `ports` after it.
    pub first_active: Samples,
    pub active: Samples,
    pub reachable: Samples,
    /// The same ping, against a VM that is already reachable: the cost of
    /// asking, included in `reachable`.
    pub ping_floor: Samples,
    /// From a floating IP's POST until the outside pings it.
    pub floating_ip: Samples,
    /// From `add_router_interface` until a VM across it answers.
    pub interface: Samples,
    /// One ping from the outside to a floating IP already reachable.
    pub outside_ping_floor: Samples,
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

pub fn run_bench(ports: usize, host_ports: usize) -> Result<Figures, BoxError> {
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
        measure(&state, ports, host_ports)
    })();
    // The peer cv0, the network's first port and the `ports` after it
    // (cv1 ..= cv<ports + 1>), and a router interface's VM for each of them.
    let mut extra_namespaces: Vec<String> = (0..=ports + 1)
        .flat_map(|i| [format!("{name}-cv{i}"), format!("{name}-cr{i}")])
        .chain([format!("{name}-{SENTINEL}")])
        .collect();
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

/// The VM whose port, created after the ports a host holds beforehand,
/// says (ACTIVE) that its agent has taken them all in.
const SENTINEL: &str = "cvs";

/// `count` ports bound to `host` in `group`, on a network of their own,
/// with no device; returns once the host's agent has them all (a port
/// created after them, with a device, is ACTIVE).
fn hold_ports(lab: &LabState, host: &str, group: &str, count: usize) -> Result<(), BoxError> {
    let net = call(
        lab,
        "POST",
        "/v2.0/networks",
        json!({"network": {"name": "held"}}),
    )?;
    let project = net["network"]["project_id"]
        .as_str()
        .ok_or("no project id")?
        .to_owned();
    let net = id_of(&net, "network")?;
    // Past the default quota of 500 ports.
    call(
        lab,
        "PUT",
        &format!("/v2.0/quotas/{project}"),
        json!({"quota": {"port": -1}}),
    )?;
    call(
        lab,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.200.0.0/16"}}),
    )?;
    let ids: Vec<usize> = (0..count).collect();
    for chunk in ids.chunks(100) {
        let ports: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"network_id": net, "binding:host_id": host, "security_groups": [group],
                       "binding:profile": {"device": format!("held{i}")}})
            })
            .collect();
        call(lab, "POST", "/v2.0/ports", json!({ "ports": ports }))?;
    }
    let netns = format!("{}-{SENTINEL}", lab.name);
    let (mac, ip) = ("fa:16:3e:c1:00:01", "10.200.255.1");
    lab::plug_vm(&netns, host, SENTINEL, mac, 1450)?;
    let port = call(
        lab,
        "POST",
        "/v2.0/ports",
        json!({"port": {
            "network_id": net, "binding:host_id": host, "security_groups": [group],
            "mac_address": mac, "fixed_ips": [{"ip_address": ip}],
            "binding:profile": {"device": SENTINEL},
        }}),
    )?;
    let id = id_of(&port, "port")?;
    let posted = Instant::now();
    loop {
        let (_, port) = http(
            &lab.api,
            "GET",
            &format!("/v2.0/ports/{id}?fields=status"),
            None,
        )?;
        if port["port"]["status"] == "ACTIVE" {
            return Ok(());
        }
        if posted.elapsed() > HOLD_TIMEOUT {
            return Err(format!("{count} held ports not taken in after {HOLD_TIMEOUT:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Longest a host may take to take in the ports it holds beforehand.
const HOLD_TIMEOUT: Duration = Duration::from_secs(300);

fn measure(lab: &LabState, ports: usize, host_ports: usize) -> Result<Figures, BoxError> {
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
        // The gateway (a router's interface, later) clear of the VMs' addresses.
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.9.0.0/16",
                          "gateway_ip": GATEWAY}}),
    )?;
    let subnet = subnet["subnet"]["id"]
        .as_str()
        .ok_or("no subnet id")?
        .to_owned();
    // Reachable from anywhere by ping (the outside is in no group).
    let group = call(
        lab,
        "POST",
        "/v2.0/security-groups",
        json!({"security_group": {"name": "convergence"}}),
    )?;
    let group = group["security_group"]["id"]
        .as_str()
        .ok_or("no group id")?
        .to_owned();
    call(
        lab,
        "POST",
        "/v2.0/security-group-rules",
        json!({"security_group_rule": {
            "security_group_id": group, "direction": "ingress", "ethertype": "IPv4",
            "protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0",
        }}),
    )?;
    if host_ports > 0 {
        hold_ports(lab, &h1, &group, host_ports)?;
    }
    let port_body = |i: usize, host: &str| {
        json!({"port": {
            "network_id": net, "binding:host_id": host, "security_groups": [group],
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

    let mut port_ids = Vec::with_capacity(ports);
    let mut first_active = vec![];
    let mut active = Vec::with_capacity(ports);
    let mut reachable = Vec::with_capacity(ports);
    let mut ping_floor = Vec::with_capacity(ports);
    // Port 1 is the network's first on h1; the `ports` after it are timed.
    for i in 1..=ports + 1 {
        let netns = format!("{}-cv{i}", lab.name);
        prepare_vm(&netns, &h1, &format!("cv{i}"), &mac_of(i), &ip_of(i))?;
        let reply = call(lab, "POST", "/v2.0/ports", port_body(i, &h1))?;
        let posted = Instant::now();
        let id = reply["port"]["id"].as_str().ok_or("no port id")?.to_owned();
        port_ids.push(id.clone());
        loop {
            let (_, port) = http(
                &lab.api,
                "GET",
                &format!("/v2.0/ports/{id}?fields=status"),
                None,
            )?;
            if port["port"]["status"] == "ACTIVE" {
                let to = if i == 1 {
                    &mut first_active
                } else {
                    &mut active
                };
                to.push(posted.elapsed());
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
        if i > 1 {
            reachable.push(posted.elapsed());
        }
        let asked = Instant::now();
        if !ping_once(&peer_ns, &ip_of(i)) {
            return Err(format!("port {i} stopped answering").into());
        }
        ping_floor.push(asked.elapsed());
    }
    let (floating_ip, outside_ping_floor, interface) = measure_l3(lab, &port_ids, &subnet, &group)?;
    Ok(Figures {
        ports,
        host_ports,
        first_active: Samples::new(first_active),
        active: Samples::new(active),
        reachable: Samples::new(reachable),
        ping_floor: Samples::new(ping_floor),
        floating_ip,
        interface,
        outside_ping_floor,
    })
}

fn id_of(reply: &Value, kind: &str) -> Result<String, BoxError> {
    Ok(reply[kind]["id"]
        .as_str()
        .ok_or_else(|| format!("no {kind} id"))?
        .to_owned())
}

/// How long since `since` until `netns` gets its first ping reply from
/// `ip`, pinging every 10 ms (a lost ping costs 10 ms, not a 1 s wait).
fn first_reply(netns: &str, ip: &str, since: Instant, what: &str) -> Result<Duration, BoxError> {
    use std::io::{BufRead, BufReader};
    let deadline = TIMEOUT.as_secs().to_string();
    let mut ping = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "busybox", "ping", "-i", "0.01"])
        .args(["-w", &deadline, ip])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let replied = ping.stdout.take().and_then(|out| {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("bytes from"))
            .map(|_| since.elapsed())
    });
    let _ = ping.kill();
    let _ = ping.wait();
    replied.ok_or_else(|| format!("{what} not reachable after {TIMEOUT:?}").into())
}

/// The L3 figures, with the VMs `cv1…` on h1 (of `port_ids`, in `subnet`)
/// put behind a router with a gateway on a flat external network: a
/// floating IP for each, then as many router interfaces on new subnets, each
/// with a VM on h2 (`cr1…`) that `cv1` must reach.
fn measure_l3(
    lab: &LabState,
    port_ids: &[String],
    subnet: &str,
    group: &str,
) -> Result<(Samples, Samples, Samples), BoxError> {
    let public = call(
        lab,
        "POST",
        "/v2.0/networks",
        json!({"network": {
            "name": "public", "router:external": true,
            "provider:network_type": "flat",
            "provider:physical_network": lab::PHYSICAL_NETWORK,
        }}),
    )?;
    let public = id_of(&public, "network")?;
    call(
        lab,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {
            "network_id": public, "ip_version": 4, "cidr": "203.0.113.0/24",
            "gateway_ip": "203.0.113.1", "enable_dhcp": false,
        }}),
    )?;
    let router = call(
        lab,
        "POST",
        "/v2.0/routers",
        json!({"router": {"name": "convergence", "external_gateway_info": {"network_id": public}}}),
    )?;
    let router = id_of(&router, "router")?;
    let add_interface = |subnet: &str| {
        call(
            lab,
            "PUT",
            &format!("/v2.0/routers/{router}/add_router_interface"),
            json!({"subnet_id": subnet}),
        )
    };
    add_interface(subnet)?;
    let vm_ns = |prefix: &str, i: usize| format!("{}-{prefix}{i}", lab.name);
    let ports = port_ids.len();
    for i in 1..=ports {
        route_via(&vm_ns("cv", i), GATEWAY)?;
    }

    let (mut floating, mut floor) = (Vec::with_capacity(ports), Vec::with_capacity(ports));
    for i in 1..=ports {
        let fip = call(
            lab,
            "POST",
            "/v2.0/floatingips",
            json!({"floatingip": {"floating_network_id": public, "port_id": port_ids[i - 1]}}),
        )?;
        let posted = Instant::now();
        let address = fip["floatingip"]["floating_ip_address"]
            .as_str()
            .ok_or("no floating IP address")?
            .to_owned();
        floating.push(first_reply(
            &lab.outside,
            &address,
            posted,
            "a floating IP",
        )?);
        let asked = Instant::now();
        floor.push(first_reply(&lab.outside, &address, asked, "a floating IP")?);
    }

    let h2 = lab.hosts[1].name.clone();
    let mut interface = Vec::with_capacity(ports);
    for i in 1..=ports {
        let (net, sub) = (
            call(lab, "POST", "/v2.0/networks", json!({"network": {}}))?,
            format!("10.{}.{}.0/24", 10 + i / 250, i % 250),
        );
        let net = id_of(&net, "network")?;
        let sub = call(
            lab,
            "POST",
            "/v2.0/subnets",
            json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": sub}}),
        )?;
        let gateway = sub["subnet"]["gateway_ip"]
            .as_str()
            .ok_or("no gateway")?
            .to_owned();
        let sub = id_of(&sub, "subnet")?;
        let port = call(
            lab,
            "POST",
            "/v2.0/ports",
            json!({"port": {
                "network_id": net, "binding:host_id": h2, "security_groups": [group],
                "binding:profile": {"device": format!("cr{i}")},
            }}),
        )?;
        let mac = port["port"]["mac_address"].as_str().ok_or("no MAC")?;
        let ip = port["port"]["fixed_ips"][0]["ip_address"]
            .as_str()
            .ok_or("no IP")?
            .to_owned();
        let netns = vm_ns("cr", i);
        prepare_vm(&netns, &h2, &format!("cr{i}"), mac, &ip)?;
        route_via(&netns, &gateway)?;
        add_interface(&sub)?;
        let added = Instant::now();
        interface.push(first_reply(
            &vm_ns("cv", 1),
            &ip,
            added,
            "a router interface",
        )?);
    }
    Ok((
        Samples::new(floating),
        Samples::new(floor),
        Samples::new(interface),
    ))
}

fn route_via(netns: &str, gateway: &str) -> Result<(), BoxError> {
    run(
        "ip",
        &["-n", netns, "route", "replace", "default", "via", gateway],
    )?;
    Ok(())
}

pub fn print(f: &Figures) {
    println!(
        "vnet bench convergence: {} ports bound to one host (holding {} more ports in the \
         same security group), after the first of their network there, a peer VM on another",
        f.ports, f.host_ports
    );
    println!(
        "{:<74} {:>9} {:>9}",
        "from POST /v2.0/ports returning until …", "p50 ms", "p99 ms"
    );
    for (what, s) in [
        (
            "the port is ACTIVE (agent wired it, reported it)",
            &f.active,
        ),
        (
            "  the network's first port on the host (its bridge, VXLAN made)",
            &f.first_active,
        ),
        ("a VM on the other host reaches it (ping)", &f.reachable),
        ("  baseline: one ping that succeeds at once", &f.ping_floor),
        (
            "from POST /v2.0/floatingips (associated) until the outside reaches it",
            &f.floating_ip,
        ),
        (
            "  baseline: the same probe of a floating IP already reachable",
            &f.outside_ping_floor,
        ),
        (
            "from add_router_interface until a VM across it is reached",
            &f.interface,
        ),
    ] {
        println!("{what:<74} {:>9.2} {:>9.2}", ms(s.p50()), ms(s.p99()));
    }
}
