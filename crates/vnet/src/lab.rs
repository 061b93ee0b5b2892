//! `vnet lab`: a cloud in a box on one machine, for demos and tests. A fabric
//! namespace with an underlay bridge and an external bridge (the physical
//! network `external`), N host namespaces each running a real `vnet agent`
//! with an interface into the external bridge (the first ones gateway hosts),
//! an `outside` namespace on the external bridge standing for the internet,
//! a real `vnet server` (on the embedded store) reachable at 127.0.0.1 and,
//! for the agents, on the fabric; VMs are namespaces plugged into their host
//! with their port's device. Everything it creates is named after the lab and
//! recorded in its state file, and `down` removes exactly that. Linux only,
//! as root.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::BoxError;

/// The fabric's address, where agents reach the lab's server.
const MGMT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const MGMT_PORT: u16 = 9696;
/// The physical network every lab host maps, and its bridge in the fabric.
pub const PHYSICAL_NETWORK: &str = "external";
const EXTERNAL_BRIDGE: &str = "brext";
/// Each host's interface into the external bridge.
const EXTERNAL_IFACE: &str = "ext0";
/// The outside world's address on the external network (TEST-NET-3).
pub const OUTSIDE_CIDR: &str = "203.0.113.1/24";

#[derive(Subcommand)]
pub enum Lab {
    /// Create the fabric, the hosts and their agents, and a server.
    Up {
        /// How many hypervisor hosts.
        #[arg(long, default_value_t = 2)]
        hosts: u8,
        /// How many of them (the first ones) are gateway hosts (`vnet agent
        /// --gateway`), which may run routers' default SNAT.
        #[arg(long, default_value_t = 1)]
        gateways: u8,
        /// The lab's name: prefix of everything it creates.
        #[arg(long, default_value = "lab")]
        name: String,
        /// Where the lab's server listens for you (the agents use the fabric).
        #[arg(long, default_value = "127.0.0.1:9696")]
        listen: SocketAddr,
        /// Use this server (http://HOST:PORT, reachable from the host
        /// namespaces) instead of starting one.
        #[arg(long)]
        server: Option<String>,
    },
    /// Show hosts, agents and VMs.
    Status {
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// VMs: namespaces plugged into a host with a port's device.
    #[command(subcommand)]
    Vm(Vm),
    /// The outside world: a namespace on the external network at 203.0.113.1/24.
    #[command(subcommand)]
    Outside(Outside),
    /// Remove everything the lab created, and only that.
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum Vm {
    /// Plug a VM into HOST with PORT's device and MAC.
    Create {
        vm: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        port: String,
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Run a command inside a VM (ping, nc, udhcpc, ip …).
    Exec {
        vm: String,
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Get the VM's address by DHCP (busybox udhcpc on its eth0).
    Dhcp {
        vm: String,
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Unplug and remove a VM.
    Delete {
        vm: String,
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum Outside {
    /// Run a command in the outside namespace (ping, nc, ip …).
    Exec {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Applies what udhcpc got (Debian's busybox ships no default script).
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; done
    echo "lease $ip/$mask router=${router:-none} mtu=${mtu:-none} dns=${dns:-none}"
    ;;
esac
"#;

/// What a lab created, so that `down` removes exactly that.
#[derive(Serialize, Deserialize, Default)]
pub struct LabState {
    pub name: String,
    pub api: String,
    pub fabric: String,
    pub server_pid: u32,
    pub hosts: Vec<LabHost>,
    pub vms: Vec<LabVm>,
    /// The outside world's namespace ("" before it exists).
    #[serde(default)]
    pub outside: String,
    /// The external network's bridge in the fabric ("" before it exists).
    #[serde(default)]
    pub external_bridge: String,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct LabHost {
    /// Also its network namespace, and its name for `binding:host_id`.
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub agent_pid: u32,
    /// Its interface into the external bridge, mapped to `external`.
    #[serde(default)]
    pub external_iface: String,
    /// Started with `--gateway`.
    #[serde(default)]
    pub gateway: bool,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct LabVm {
    pub name: String,
    pub netns: String,
    pub host: String,
    pub port: String,
    pub device: String,
}

fn dir(name: &str) -> PathBuf {
    PathBuf::from("/run/vnet-lab").join(name)
}

impl LabState {
    pub fn load(name: &str) -> Result<LabState, BoxError> {
        let text = std::fs::read_to_string(dir(name).join("state.json"))
            .map_err(|_| format!("no lab named '{name}' is up (vnet lab up --name {name})"))?;
        Ok(serde_json::from_str(&text)?)
    }

    fn save(&self) -> Result<(), BoxError> {
        std::fs::write(
            dir(&self.name).join("state.json"),
            serde_json::to_vec_pretty(self)?,
        )?;
        Ok(())
    }

    pub fn host(&self, name: &str) -> Result<&LabHost, BoxError> {
        let full = format!("{}-{name}", self.name);
        self.hosts
            .iter()
            .find(|h| h.name == name || h.name == full)
            .ok_or_else(|| format!("lab {} has no host {name}", self.name).into())
    }
}

/// Run a command; fail with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, BoxError> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(netns: &str, args: &[&str]) -> Result<String, BoxError> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn sysctl(netns: &str, key: &str, value: &str) -> Result<(), BoxError> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ],
    )
    .map(drop)
}

/// A veth pair, `name_a` in `ns_a` and `name_b` in `ns_b`, with IPv6 off on
/// both ends (its start-up multicast would only be noise on the overlay).
fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> Result<(), BoxError> {
    run(
        "ip",
        &[
            "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns",
            ns_b,
        ],
    )?;
    sysctl(ns_a, &format!("net.ipv6.conf.{name_a}.disable_ipv6"), "1")?;
    sysctl(ns_b, &format!("net.ipv6.conf.{name_b}.disable_ipv6"), "1")
}

/// A VM: namespace `netns` plugged into `host` by a veth whose host end is
/// `device` (the port's), its `eth0` up with the port's MAC and the network's
/// MTU. Nothing is left behind if it fails half-way.
pub fn plug_vm(netns: &str, host: &str, device: &str, mac: &str, mtu: u32) -> Result<(), BoxError> {
    run("ip", &["netns", "add", netns])?;
    let plugged = (|| -> Result<(), BoxError> {
        ip(netns, &["link", "set", "lo", "up"])?;
        veth(netns, "eth0", host, device)?;
        ip(
            netns,
            &[
                "link",
                "set",
                "eth0",
                "address",
                mac,
                "mtu",
                &mtu.to_string(),
                "up",
            ],
        )?;
        Ok(())
    })();
    if plugged.is_err() {
        let _ = run("ip", &["netns", "del", netns]);
    }
    plugged
}

/// Start a long-lived process in its own process group (it outlives us).
fn daemon(mut cmd: Command, log: PathBuf) -> Result<u32, BoxError> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()?;
    Ok(child.id())
}

/// A minimal HTTP/1.1 JSON exchange with the lab's server.
pub fn http(
    api: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), BoxError> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(api)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").ok_or("malformed HTTP reply")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status")?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Build the lab with one gateway host: see [`up_with_gateways`].
pub fn up(
    name: &str,
    hosts: u8,
    listen: SocketAddr,
    server: Option<&str>,
    vnet: &str,
) -> Result<LabState, BoxError> {
    up_with_gateways(name, hosts, 1, listen, server, vnet)
}

/// Build the lab: fabric, external network and outside, hosts (the first
/// `gateways` of them gateway hosts), server and agents. Returns once every
/// agent has registered.
pub fn up_with_gateways(
    name: &str,
    hosts: u8,
    gateways: u8,
    listen: SocketAddr,
    server: Option<&str>,
    vnet: &str,
) -> Result<LabState, BoxError> {
    if dir(name).join("state.json").exists() {
        return Err(format!("lab '{name}' is already up (vnet lab down --name {name})").into());
    }
    if hosts == 0 || hosts > 200 {
        return Err("--hosts must be 1 to 200".into());
    }
    if gateways > hosts {
        return Err(format!("--gateways {gateways} is more than --hosts {hosts}").into());
    }
    std::fs::create_dir_all(dir(name))?;
    let external = server
        .map(|url| {
            url.strip_prefix("http://")
                .map(|a| a.trim_end_matches('/').to_owned())
                .ok_or_else(|| format!("--server '{url}' is not http://HOST:PORT"))
        })
        .transpose()?;
    let mut state = LabState {
        name: name.to_owned(),
        api: external.clone().unwrap_or_else(|| listen.to_string()),
        fabric: format!("{name}-fabric"),
        ..Default::default()
    };
    // Saved before anything exists, so a failure half-way can still be torn down.
    state.save()?;
    let fabric = state.fabric.clone();
    run("ip", &["netns", "add", &fabric])?;
    for key in [
        "net.ipv6.conf.all.disable_ipv6",
        "net.ipv6.conf.default.disable_ipv6",
    ] {
        sysctl(&fabric, key, "1")?;
    }
    ip(&fabric, &["link", "set", "lo", "up"])?;
    ip(&fabric, &["link", "add", "br0", "type", "bridge"])?;
    ip(
        &fabric,
        &["addr", "add", &format!("{MGMT_IP}/24"), "dev", "br0"],
    )?;
    ip(&fabric, &["link", "set", "br0", "up"])?;
    ip(&fabric, &["link", "add", EXTERNAL_BRIDGE, "type", "bridge"])?;
    ip(&fabric, &["link", "set", EXTERNAL_BRIDGE, "up"])?;
    state.external_bridge = EXTERNAL_BRIDGE.to_owned();
    state.save()?;
    state.outside = outside_up(name, &fabric)?;
    state.save()?;

    let log_dir = dir(name);
    let agents_reach = match &external {
        Some(api) => format!("http://{api}"),
        None => {
            let mut server = Command::new(vnet);
            server.args([
                "server",
                "--listen",
                &state.api,
                "--listen",
                &format!("{fabric}/{MGMT_IP}:{MGMT_PORT}"),
                "--data-dir",
                &log_dir.join("data").to_string_lossy(),
            ]);
            server.args(unlimited_quotas());
            state.server_pid = daemon(server, log_dir.join("server.log"))?;
            state.save()?;
            format!("http://{MGMT_IP}:{MGMT_PORT}")
        }
    };

    for i in 1..=hosts {
        let host = format!("{name}-h{i}");
        let underlay_ip = Ipv4Addr::new(192, 0, 2, i);
        run("ip", &["netns", "add", &host])?;
        ip(&host, &["link", "set", "lo", "up"])?;
        for key in ["iptables", "ip6tables", "arptables"] {
            sysctl(&host, &format!("net.bridge.bridge-nf-call-{key}"), "0")?;
        }
        let uplink = format!("{name}u{i}");
        veth(&host, "eth0", &fabric, &uplink)?;
        ip(
            &host,
            &["addr", "add", &format!("{underlay_ip}/24"), "dev", "eth0"],
        )?;
        ip(&host, &["link", "set", "eth0", "up"])?;
        ip(&fabric, &["link", "set", &uplink, "master", "br0", "up"])?;
        // Its interface into the external network: no address, left down;
        // the agent enslaves it to the external network's bridge.
        let external_end = format!("{name}x{i}");
        veth(&host, EXTERNAL_IFACE, &fabric, &external_end)?;
        ip(
            &fabric,
            &[
                "link",
                "set",
                &external_end,
                "master",
                EXTERNAL_BRIDGE,
                "up",
            ],
        )?;
        let gateway = i <= gateways;
        let mut agent = Command::new(vnet);
        agent.args(["agent", "--netns", &host]).args([
            "--server",
            &agents_reach,
            "--host",
            &host,
            "--underlay-ip",
            &underlay_ip.to_string(),
            "--physical-network",
            &format!("{PHYSICAL_NETWORK}:{EXTERNAL_IFACE}"),
        ]);
        if gateway {
            agent.arg("--gateway");
        }
        let agent_pid = daemon(agent, log_dir.join(format!("agent-{host}.log")))?;
        state.hosts.push(LabHost {
            name: host,
            underlay_ip,
            agent_pid,
            external_iface: EXTERNAL_IFACE.to_owned(),
            gateway,
        });
        state.save()?;
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive = http(&state.api, "GET", "/vnet/v1/hosts", None)
            .ok()
            .and_then(|(_, v)| v["hosts"].as_array().cloned())
            .map_or(0, |hs| {
                hs.iter()
                    .filter(|h| {
                        h["alive"] == true && state.hosts.iter().any(|l| l.name == h["name"])
                    })
                    .count()
            });
        if alive == state.hosts.len() {
            return Ok(state);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {alive} of {hosts} agents registered; logs in {}",
                log_dir.display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The outside world: namespace `<lab>-outside`, its `eth0` on the external
/// bridge at [`OUTSIDE_CIDR`]. Returns its name; nothing is left behind if
/// it fails half-way.
fn outside_up(name: &str, fabric: &str) -> Result<String, BoxError> {
    let netns = format!("{name}-outside");
    run("ip", &["netns", "add", &netns])?;
    let made = (|| -> Result<(), BoxError> {
        ip(&netns, &["link", "set", "lo", "up"])?;
        let fabric_end = format!("{name}xo");
        veth(&netns, "eth0", fabric, &fabric_end)?;
        ip(
            fabric,
            &["link", "set", &fabric_end, "master", EXTERNAL_BRIDGE, "up"],
        )?;
        ip(&netns, &["addr", "add", OUTSIDE_CIDR, "dev", "eth0"])?;
        ip(&netns, &["link", "set", "eth0", "up"])?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = delete_netns(&netns);
        return Err(e);
    }
    Ok(netns)
}

/// Plug a VM into `host` with `port`'s device and MAC; returns it.
pub fn vm_create(
    state: &mut LabState,
    vm: &str,
    host: &str,
    port: &str,
) -> Result<LabVm, BoxError> {
    if state.vms.iter().any(|v| v.name == vm) {
        return Err(format!("VM {vm} exists").into());
    }
    let host = state.host(host)?.name.clone();
    let (status, reply) = http(&state.api, "GET", &format!("/v2.0/ports/{port}"), None)?;
    if status != 200 {
        return Err(format!("port {port}: {status} {reply}").into());
    }
    let mac = reply["port"]["mac_address"]
        .as_str()
        .ok_or("the port has no MAC")?;
    let network = reply["port"]["network_id"]
        .as_str()
        .ok_or("the port has no network")?;
    let (_, net) = http(
        &state.api,
        "GET",
        &format!("/v2.0/networks/{network}"),
        None,
    )?;
    let mtu = net["network"]["mtu"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(1450);
    let device = reply["port"]["binding:profile"]["device"]
        .as_str()
        .map_or_else(|| compiler::protocol::tap_name(port), str::to_owned);
    let netns = format!("{}-vm-{vm}", state.name);
    plug_vm(&netns, &host, &device, mac, mtu)?;
    let record = LabVm {
        name: vm.to_owned(),
        netns,
        host,
        port: port.to_owned(),
        device,
    };
    state.vms.push(record.clone());
    state.save()?;
    Ok(record)
}

fn vm_delete(state: &mut LabState, vm: &str) -> Result<(), BoxError> {
    let at = state
        .vms
        .iter()
        .position(|v| v.name == vm)
        .ok_or_else(|| format!("no VM {vm}"))?;
    let record = state.vms.remove(at);
    // Deleting the VM's namespace deletes its veth, and so the host's end.
    delete_netns(&record.netns)?;
    state.save()
}

/// `vnet server` flags lifting every default quota: a lab and a bench build
/// clouds far bigger than one tenant's default share.
pub fn unlimited_quotas() -> Vec<String> {
    model::QUOTA_KINDS
        .iter()
        .flat_map(|(name, _)| ["--quota".to_owned(), format!("{name}=-1")])
        .collect()
}

/// Delete a namespace, and first every process still in it (a daemon
/// started inside a VM would otherwise keep the namespace alive).
pub fn delete_netns(netns: &str) -> Result<(), BoxError> {
    if let Ok(pids) = run("ip", &["netns", "pids", netns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    run("ip", &["netns", "del", netns]).map(drop)
}

/// Remove everything the lab created: VMs, agents, server, namespaces.
pub fn down(name: &str) -> Result<(), BoxError> {
    let state = LabState::load(name)?;
    let kill = |pid: u32| {
        if pid != 0 {
            // The agent's process group.
            let _ = run("kill", &["-TERM", "--", &format!("-{pid}")]);
        }
    };
    for host in &state.hosts {
        kill(host.agent_pid);
    }
    kill(state.server_pid);
    let mut failures = Vec::new();
    // Each host's agent names its router namespaces `<host>-vnr-…`.
    let routers: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|ns| {
            state
                .hosts
                .iter()
                .any(|h| ns.starts_with(&format!("{}-vnr-", h.name)))
        })
        .collect();
    let namespaces = state
        .vms
        .iter()
        .map(|v| v.netns.clone())
        .chain(routers)
        .chain(state.hosts.iter().map(|h| h.name.clone()))
        .chain(Some(state.outside.clone()).filter(|o| !o.is_empty()))
        .chain([state.fabric.clone()]);
    for ns in namespaces {
        if let Err(e) = delete_netns(&ns)
            && std::path::Path::new("/run/netns").join(&ns).exists()
        {
            failures.push(e.to_string());
        }
    }
    std::fs::remove_dir_all(dir(name))?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; ").into())
    }
}

fn status(name: &str) -> Result<(), BoxError> {
    let state = LabState::load(name)?;
    println!("lab {}: API http://{} (noauth)", state.name, state.api);
    let hosts = http(&state.api, "GET", "/vnet/v1/hosts", None)
        .ok()
        .and_then(|(_, v)| v["hosts"].as_array().cloned())
        .unwrap_or_default();
    if !state.outside.is_empty() {
        println!(
            "outside: namespace {} at {OUTSIDE_CIDR} on physical network {PHYSICAL_NETWORK}",
            state.outside
        );
    }
    println!(
        "{:<16} {:<14} {:<8} {:<8} agent pid",
        "host", "underlay", "agent", "gateway"
    );
    for h in &state.hosts {
        let alive = hosts
            .iter()
            .find(|x| x["name"] == h.name.as_str())
            .map_or(
                "unknown",
                |x| if x["alive"] == true { "alive" } else { "dead" },
            );
        println!(
            "{:<16} {:<14} {:<8} {:<8} {}",
            h.name,
            h.underlay_ip,
            alive,
            if h.gateway { "yes" } else { "no" },
            h.agent_pid
        );
    }
    if !state.vms.is_empty() {
        println!("\n{:<12} {:<16} {:<16} port", "vm", "host", "device");
        for v in &state.vms {
            println!("{:<12} {:<16} {:<16} {}", v.name, v.host, v.device, v.port);
        }
    }
    Ok(())
}

pub fn main(lab: Lab) -> Result<(), BoxError> {
    let vnet = std::env::current_exe()?;
    let vnet = vnet.to_string_lossy();
    match lab {
        Lab::Up {
            hosts,
            gateways,
            name,
            listen,
            server,
        } => {
            let state = up_with_gateways(&name, hosts, gateways, listen, server.as_deref(), &vnet)
                .inspect_err(|_| {
                    let _ = down(&name);
                })?;
            println!(
                "lab {name} is up: {} hosts, API at http://{} (noauth)\n  export OS_AUTH_TYPE=none OS_ENDPOINT=http://{}",
                state.hosts.len(),
                state.api,
                state.api
            );
            for h in &state.hosts {
                println!(
                    "  host {} (underlay {}, {PHYSICAL_NETWORK}:{}{})",
                    h.name,
                    h.underlay_ip,
                    h.external_iface,
                    if h.gateway { ", gateway" } else { "" }
                );
            }
            println!(
                "  outside: {OUTSIDE_CIDR} on physical network {PHYSICAL_NETWORK} (vnet lab outside exec -- CMD)"
            );
            Ok(())
        }
        Lab::Status { name } => status(&name),
        Lab::Down { name } => down(&name),
        Lab::Vm(Vm::Create {
            vm,
            host,
            port,
            name,
        }) => {
            let mut state = LabState::load(&name)?;
            let record = vm_create(&mut state, &vm, &host, &port)?;
            println!("vm {vm} on {} with device {}", record.host, record.device);
            Ok(())
        }
        Lab::Vm(Vm::Exec { vm, name, command }) => {
            let state = LabState::load(&name)?;
            let record = state
                .vms
                .iter()
                .find(|v| v.name == vm)
                .ok_or_else(|| format!("no VM {vm}"))?;
            let err = Command::new("ip")
                .args(["netns", "exec", &record.netns])
                .args(&command)
                .exec();
            Err(err.into())
        }
        Lab::Vm(Vm::Dhcp { vm, name }) => {
            let state = LabState::load(&name)?;
            let record = state
                .vms
                .iter()
                .find(|v| v.name == vm)
                .ok_or_else(|| format!("no VM {vm}"))?;
            let script = dir(&name).join("udhcpc.sh");
            std::fs::write(&script, UDHCPC_SCRIPT)?;
            std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            let script = script.to_string_lossy();
            let out = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &record.netns,
                    "busybox",
                    "udhcpc",
                    "-i",
                    "eth0",
                    "-n",
                    "-q",
                    "-f",
                    "-t",
                    "5",
                    "-T",
                    "1",
                    "-s",
                    &script,
                ],
            )?;
            let lease = out
                .lines()
                .find(|l| l.starts_with("lease "))
                .ok_or("no DHCP answer")?;
            println!("{vm}: {lease}");
            Ok(())
        }
        Lab::Outside(Outside::Exec { name, command }) => {
            let state = LabState::load(&name)?;
            if state.outside.is_empty() {
                return Err(format!("lab {name} has no outside (it predates it)").into());
            }
            let err = Command::new("ip")
                .args(["netns", "exec", &state.outside])
                .args(&command)
                .exec();
            Err(err.into())
        }
        Lab::Vm(Vm::Delete { vm, name }) => {
            let mut state = LabState::load(&name)?;
            vm_delete(&mut state, &vm)
        }
    }
}
