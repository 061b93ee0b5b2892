//! `vnet lab`: a cloud in a box on one machine, for demos and tests. A fabric
//! namespace with an underlay bridge and an external bridge (the physical
//! network `external`), N host namespaces each running a real `vnet agent`
//! with an interface into the external bridge (the first ones gateway hosts),
//! an `outside` namespace on the external bridge standing for the internet,
//! a real `vnet server` (on the embedded store) reachable at 127.0.0.1 and,
//! for the agents, on the fabric; VMs are namespaces plugged into their host
//! with their port's device. Everything it creates is named after the lab and
//! recorded in its state file, and `down` removes exactly that (its logs
//! stay, in [`log_dir`], until the next `up` of the same name). A refused
//! command (a bad name, a lab already up, a port in use) changes nothing:
//! every check runs before the first thing is created. The lab knows its
//! server by its process (a ready file it writes once listening), never by
//! whatever answers on the port. Linux only, as root.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A lab's name: `--name`, or `VNET_LAB` in the environment (so a shell can
/// work in one lab without repeating it).
#[derive(clap::Args, Clone)]
pub struct LabName {
    /// The lab's name: prefix of everything it creates (letters, digits and
    /// '-', at most 11 characters, as it prefixes interface names).
    #[arg(long = "name", env = "VNET_LAB", default_value = "lab")]
    pub name: String,
}

#[derive(Subcommand)]
pub enum Lab {
    /// Create the fabric, the hosts and their agents, and a server. Refused
    /// (changing nothing) if the lab is already up.
    Up {
        /// How many hypervisor hosts (1 to 200).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=200))]
        hosts: u8,
        /// How many of them (the first ones) are gateway hosts (`vnet agent
        /// --gateway`), which may run routers' default SNAT.
        #[arg(long, default_value_t = 1)]
        gateways: u8,
        #[command(flatten)]
        name: LabName,
        /// Where the lab's server listens for you (the agents use the fabric).
        /// Each lab needs its own: a second lab takes another port.
        #[arg(long, env = "VNET_LAB_LISTEN", default_value = "127.0.0.1:9696")]
        listen: SocketAddr,
        /// Use this server (http://HOST:PORT, reachable from the host
        /// namespaces) instead of starting one.
        #[arg(long)]
        server: Option<String>,
    },
    /// Show the server, hosts and agents, and VMs with their ports' status
    /// and addresses.
    Status {
        #[command(flatten)]
        name: LabName,
    },
    /// Stop the lab's server and start it again on the same data (after it
    /// was killed, or to pick up a new binary); agents reconnect by themselves.
    RestartServer {
        #[command(flatten)]
        name: LabName,
    },
    /// VMs: namespaces plugged into a host with a port's device.
    #[command(subcommand)]
    Vm(Vm),
    /// The outside world: a namespace on the external network at 203.0.113.1/24.
    #[command(subcommand)]
    Outside(Outside),
    /// Remove everything the lab created, and only that (its logs stay).
    Down {
        #[command(flatten)]
        name: LabName,
    },
}

#[derive(Subcommand)]
pub enum Vm {
    /// Plug a VM into HOST with PORT's device and MAC. The port must be
    /// bound to that host (`openstack port create --host <lab>-h1 …`).
    Create {
        /// The VM's name (its namespace is `<lab>-vm-<VM>`).
        vm: String,
        /// The host: `h1` or its full name `<lab>-h1`.
        #[arg(long)]
        host: String,
        /// The port: its name or id.
        #[arg(long)]
        port: String,
        #[command(flatten)]
        name: LabName,
    },
    /// Run a command inside a VM (ping, nc, udhcpc, ip …).
    Exec {
        vm: String,
        #[command(flatten)]
        name: LabName,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Give the VM every address of its port: IPv4 by DHCP (busybox udhcpc),
    /// IPv6 by SLAAC (waited for) and DHCPv6 (dhclient -6) as its subnets'
    /// ipv6_address_mode says.
    Dhcp {
        vm: String,
        #[command(flatten)]
        name: LabName,
    },
    /// Unplug and remove a VM.
    Delete {
        vm: String,
        #[command(flatten)]
        name: LabName,
    },
}

#[derive(Subcommand)]
pub enum Outside {
    /// Run a command in the outside namespace (ping, nc, ip …).
    Exec {
        #[command(flatten)]
        name: LabName,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Why the lab refused or failed; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab name '{name}' {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("VM name '{name}' {reason}")]
    BadVmName { name: String, reason: &'static str },
    #[error(
        "lab '{name}' is already up; nothing was changed (vnet lab status --name {name}; \
         vnet lab restart-server --name {name} if its server stopped; vnet lab down --name {name} removes it)"
    )]
    AlreadyUp { name: String },
    #[error(
        "cannot listen on {addr}: {cause} (another vnet server, scripts/run.sh or another lab?); \
         {suggestion}"
    )]
    ListenUnavailable {
        addr: SocketAddr,
        cause: std::io::Error,
        suggestion: String,
    },
    #[error("the lab's server did not start: {reason}; its log, {log}, ends with:\n{tail}")]
    ServerFailed {
        reason: String,
        log: String,
        tail: String,
    },
    #[error("the agent of {host} exited ({status}); its log, {log}, ends with:\n{tail}")]
    AgentFailed {
        host: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("lab {name} uses the server at {api}, not one of its own: restart that one yourself")]
    ExternalServer { name: String, api: String },
    #[error(
        "port {port} is not bound to a host: bind it to {host} (openstack port set --host {host} {port}), then create the VM"
    )]
    PortUnbound { port: String, host: String },
    #[error(
        "port {port} is bound to host {bound}, not {host}: create the VM with --host {bound}, or rebind the port (openstack port set --host {host} {port})"
    )]
    PortOnOtherHost {
        port: String,
        bound: String,
        host: String,
    },
    #[error(
        "port {port} is already plugged into VM {vm}: delete that VM first (vnet lab vm delete {vm})"
    )]
    PortPlugged { port: String, vm: String },
    #[error(
        "port {port} belongs to {owner}, not to a VM: create a port of its own (openstack port create --network NETWORK --host {host} NAME)"
    )]
    PortNotForVm {
        port: String,
        owner: String,
        host: String,
    },
}

/// Applies what udhcpc got (Debian's busybox ships no default script).
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; done
    echo "lease $ip/$mask router=${router:-none} mtu=${mtu:-none} dns=${dns:-none}"
    ;;
esac
"#;

/// busybox udhcpc on the VM's eth0: the `lease …` line its script printed.
pub(crate) fn udhcpc(name: &str, vm: &str, netns: &str) -> Result<String, BoxError> {
    let script = dir(name).join("udhcpc.sh");
    std::fs::write(&script, UDHCPC_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let script = script.to_string_lossy();
    let out = run(
        "ip",
        &[
            "netns", "exec", netns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5",
            "-T", "1", "-s", &script,
        ],
    )
    .map_err(|e| {
        format!("{vm}: no DHCP lease ({e}); vnet lab status --name {name} shows its port")
    })?;
    let lease = out
        .lines()
        .find(|l| l.starts_with("lease "))
        .ok_or_else(|| {
            format!("{vm}: no DHCP answer; vnet lab status --name {name} shows its port")
        })?;
    Ok(lease.to_owned())
}

/// Each fixed IP of a port with its subnet's `ipv6_address_mode` (`None`
/// for IPv4 and for IPv6 subnets with none).
fn port_address_modes(
    state: &LabState,
    port: &str,
) -> Result<Vec<(std::net::IpAddr, Option<String>)>, BoxError> {
    let (status, reply) = http(&state.api, "GET", &format!("/v2.0/ports/{port}"), None)?;
    if status != 200 {
        return Err(format!("port {port}: {status} {reply}").into());
    }
    let mut out = Vec::new();
    for fixed in reply["port"]["fixed_ips"].as_array().into_iter().flatten() {
        let (Some(ip), Some(subnet)) = (fixed["ip_address"].as_str(), fixed["subnet_id"].as_str())
        else {
            continue;
        };
        let ip: std::net::IpAddr = ip.parse()?;
        let (_, subnet) = http(&state.api, "GET", &format!("/v2.0/subnets/{subnet}"), None)?;
        let mode = subnet["subnet"]["ipv6_address_mode"]
            .as_str()
            .map(str::to_owned);
        out.push((ip, mode));
    }
    Ok(out)
}

/// How long a VM may take to hold its IPv6 addresses: duplicate address
/// detection takes one to two seconds, a DHCPv6 exchange a few more.
const IPV6_DEADLINE: Duration = Duration::from_secs(30);

/// Wait for the VM's SLAAC addresses (no longer tentative) and run dhclient
/// -6 for DHCPv6: stateful for the addresses, stateless (`-S`) for options.
/// One line per address and one for the DNS servers and domain search list
/// DHCPv6 gave.
fn ipv6_addresses(
    name: &str,
    vm: &str,
    netns: &str,
    modes: &[(std::net::IpAddr, Option<String>)],
) -> Result<Vec<String>, BoxError> {
    let mut lines = Vec::new();
    let v6 = |wanted: &[&str]| -> Vec<std::net::IpAddr> {
        modes
            .iter()
            .filter(|(ip, mode)| {
                ip.is_ipv6() && mode.as_deref().is_some_and(|m| wanted.contains(&m))
            })
            .map(|(ip, _)| *ip)
            .collect()
    };
    let slaac = v6(&["slaac", "dhcpv6-stateless"]);
    let stateful = v6(&["dhcpv6-stateful"]);
    let stateless = !v6(&["dhcpv6-stateless"]).is_empty();
    let deadline = Instant::now() + IPV6_DEADLINE;
    if !stateful.is_empty() || stateless {
        // A DHCPv6 client speaks from its link-local address, usable once
        // duplicate address detection has passed.
        if !wait_until(deadline, || has_link_local(netns))? {
            return Err(format!("{vm}: no IPv6 link-local address on eth0").into());
        }
        lines.extend(dhclient6(name, vm, netns, stateful.is_empty())?);
    }
    for address in slaac.iter().chain(&stateful) {
        let mut cidr = None;
        if !wait_until(deadline, || {
            cidr = held_ipv6(netns, *address)?;
            Ok(cidr.is_some())
        })? {
            return Err(format!(
                "{vm}: no IPv6 address {address} after {}s; vnet lab status --name {name} shows its port",
                IPV6_DEADLINE.as_secs()
            )
            .into());
        }
        let how = if stateful.contains(address) {
            "dhcpv6"
        } else {
            "slaac"
        };
        lines.push(format!("ipv6 {} ({how})", cidr.unwrap_or_default()));
    }
    Ok(lines)
}

/// Poll `done` every 20 ms until it holds (`true`) or `deadline` passes
/// (`false`).
pub(crate) fn wait_until(
    deadline: Instant,
    mut done: impl FnMut() -> Result<bool, BoxError>,
) -> Result<bool, BoxError> {
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The VM's eth0 has a link-local address that passed duplicate address
/// detection.
pub(crate) fn has_link_local(netns: &str) -> Result<bool, BoxError> {
    let link = ip(
        netns,
        &["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"],
    )?;
    Ok(link.contains("fe80:") && !link.contains("tentative"))
}

/// `address/len` if the VM's eth0 holds `address`, no longer tentative.
pub(crate) fn held_ipv6(
    netns: &str,
    address: std::net::IpAddr,
) -> Result<Option<String>, BoxError> {
    let held = ip(
        netns,
        &["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"],
    )?;
    Ok(held
        .lines()
        .find(|l| l.contains(&format!(" {address}/")) && !l.contains("tentative"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
        .map(str::to_owned))
}

/// Applies what dhclient -6 got and says it in `OUT` (dhclient gives its
/// script an environment of its own, so the path is written in).
const DHCLIENT6_SCRIPT: &str = r#"#!/bin/sh
if [ -n "$new_ip6_address" ]; then
    ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface"
fi
if [ -n "$new_ip6_address$new_dhcp6_name_servers" ]; then
    echo "dns6 ${new_dhcp6_name_servers:-none} search ${new_dhcp6_domain_search:-none}" >> "OUT"
fi
"#;

/// One DHCPv6 exchange with dhclient -6 in the VM (`-S`: information only),
/// stopped once its script has run: the `dns6 … search …` line it wrote.
pub(crate) fn dhclient6(
    name: &str,
    vm: &str,
    netns: &str,
    stateless: bool,
) -> Result<Vec<String>, BoxError> {
    let dir = dir(name).join(format!("dhclient6-{vm}"));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("out");
    let script = dir.join("script.sh");
    std::fs::write(
        &script,
        DHCLIENT6_SCRIPT.replace("OUT", &out.to_string_lossy()),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        netns,
        "dhclient",
        "-6",
        "-d",
        "-cf",
        "/dev/null",
    ])
    .arg("-lf")
    .arg(dir.join("leases"))
    .arg("-pf")
    .arg(dir.join("pid"))
    .arg("-sf")
    .arg(&script)
    .env("VNET_DHCLIENT6_OUT", &out)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if stateless {
        cmd.arg("-S");
    }
    let mut client = cmd
        .arg("eth0")
        .spawn()
        .map_err(|e| format!("dhclient: {e}"))?;
    let deadline = Instant::now() + IPV6_DEADLINE;
    let got = loop {
        if let Ok(text) = std::fs::read_to_string(&out)
            && !text.is_empty()
        {
            break Ok(text.lines().map(str::to_owned).collect());
        }
        if Instant::now() >= deadline || client.try_wait().ok().flatten().is_some() {
            break Err(format!(
                "{vm}: no DHCPv6 answer (dhclient's log: {}); vnet lab status --name {name} shows its port",
                dir.join("log").display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = client.kill();
    let _ = client.wait();
    got
}

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

/// Where a lab's server and agents log. Apart from its state, so that `down`
/// and a failed `up` leave the logs to read; the next `up` of the same name
/// starts them afresh (and a reboot clears `/run`).
pub fn log_dir(name: &str) -> PathBuf {
    PathBuf::from("/run/vnet-lab-logs").join(name)
}

/// A lab's name prefixes namespaces (`<name>-h1`) and interfaces
/// (`<name>u200`, at most 15 bytes), so it is checked before anything exists.
pub fn check_name(name: &str) -> Result<(), LabError> {
    let bad = |reason| {
        Err(LabError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 11 {
        return bad("must be 1 to 11 characters (it prefixes interface names)");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("must start with a letter");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return bad("may hold only letters, digits and '-'");
    }
    Ok(())
}

/// A VM's name is part of its namespace's name.
fn check_vm_name(name: &str) -> Result<(), LabError> {
    let bad = |reason| {
        Err(LabError::BadVmName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 40 {
        return bad("must be 1 to 40 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("may hold only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Progress of long work, on stderr (stdout keeps the result).
fn progress(name: &str, what: &str) {
    eprintln!("lab {name}: {what}");
}

/// Print to stdout; a reader that went away (`| head`) is not an error.
pub fn say(text: &str) -> Result<(), BoxError> {
    use std::io::Write;
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Whether a lab of that name is up (has its state).
pub fn is_up(name: &str) -> bool {
    check_name(name).is_ok() && dir(name).join("state.json").exists()
}

impl LabState {
    pub fn load(name: &str) -> Result<LabState, BoxError> {
        check_name(name)?;
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
        // The VM has IPv6 as a guest does (link-local, SLAAC); the host's
        // end stays without.
        sysctl(netns, "net.ipv6.conf.eth0.disable_ipv6", "0")?;
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

/// Start a long-lived process in its own process group (it outlives us),
/// its output appended to `log`.
fn daemon(mut cmd: Command, log: &Path) -> Result<Child, BoxError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()?;
    Ok(child)
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `pid` runs (a zombie, dead but not yet reaped, does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Stop `pid`'s process group: TERM, then KILL if it is still there after
/// `grace`. Returns once the process is gone.
fn stop(pid: u32, grace: Duration) {
    if pid == 0 {
        return;
    }
    let _ = run("kill", &["-TERM", "--", &format!("-{pid}")]);
    let deadline = Instant::now() + grace;
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if running(pid) {
        let _ = run("kill", &["-KILL", "--", &format!("-{pid}")]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Refuse an address something already listens on, suggesting a free port.
fn check_listen(addr: SocketAddr) -> Result<(), LabError> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(source) => {
            let free = (1..=100u16)
                .filter_map(|i| addr.port().checked_add(i))
                .map(|port| SocketAddr::new(addr.ip(), port))
                .find(|a| std::net::TcpListener::bind(a).is_ok());
            let suggestion = match free {
                Some(a) => {
                    format!("{a} is free: vnet lab up --listen {a} (then OS_ENDPOINT=http://{a})")
                }
                None => "choose another address with --listen".to_owned(),
            };
            Err(LabError::ListenUnavailable {
                addr,
                cause: source,
                suggestion,
            })
        }
    }
}

/// Start the lab's server on its data dir and wait until it is listening:
/// its ready file appears (then it is ours that listens), or it exits (then
/// its log says why), or 30 s pass.
fn start_server(state: &LabState, vnet: &str) -> Result<Child, BoxError> {
    let ready = dir(&state.name).join("server.ready");
    let _ = std::fs::remove_file(&ready);
    let log = log_dir(&state.name).join("server.log");
    let mut server = Command::new(vnet);
    server.args([
        "server",
        "--listen",
        &state.api,
        "--listen",
        &format!("{}/{MGMT_IP}:{MGMT_PORT}", state.fabric),
        "--data-dir",
        &dir(&state.name).join("data").to_string_lossy(),
        "--ready-file",
        &ready.to_string_lossy(),
    ]);
    server.args(unlimited_quotas());
    let mut child = daemon(server, &log)?;
    let failed = |reason: String| LabError::ServerFailed {
        reason,
        log: log.display().to_string(),
        tail: tail(&log),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ready.exists() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            return Err(failed(format!("it exited ({status})")).into());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed("it was not listening after 30 s".to_owned()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until every agent of the lab is registered and alive, failing fast
/// when the server or an agent this process started exits.
fn wait_for_agents(
    state: &LabState,
    server: Option<&mut Child>,
    agents: &mut [Child],
) -> Result<(), BoxError> {
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive = http(&state.api, "GET", "/vnet/v1/hosts", None)
            .ok()
            .and_then(|(_, v)| v["hosts"].as_array().cloned())
            .map_or(0, |hs| {
                hs.iter()
                    .filter(|h| {
                        // A restarted server takes its hosts for alive
                        // until they miss heartbeats: only one it has
                        // heard from since (heartbeat_at) is counted.
                        h["alive"] == true
                            && !h["heartbeat_at"]
                                .as_str()
                                .is_some_and(|t| t.starts_with("1970"))
                            && state.hosts.iter().any(|l| l.name == h["name"])
                    })
                    .count()
            });
        if alive == state.hosts.len() {
            return Ok(());
        }
        if let Some(child) = server.as_deref_mut()
            && let Some(status) = child.try_wait()?
        {
            let log = log_dir(&state.name).join("server.log");
            return Err(LabError::ServerFailed {
                reason: format!("it exited ({status})"),
                log: log.display().to_string(),
                tail: tail(&log),
            }
            .into());
        }
        for (host, child) in state.hosts.iter().zip(agents.iter_mut()) {
            if let Some(status) = child.try_wait()? {
                let log = log_dir(&state.name).join(format!("agent-{}.log", host.name));
                return Err(LabError::AgentFailed {
                    host: host.name.clone(),
                    status: status.to_string(),
                    log: log.display().to_string(),
                    tail: tail(&log),
                }
                .into());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {alive} of {} agents registered after 30 s; logs in {}",
                state.hosts.len(),
                log_dir(&state.name).display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 JSON exchange with the lab's server.
pub fn http(
    api: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), BoxError> {
    http_as(api, None, method, path, body)
}

/// [`http`] as a project (noauth's `X-Project-Id`), or as the server's
/// default project's admin.
pub fn http_as(
    api: &str,
    project: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), BoxError> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(api)
        .map_err(|e| format!("cannot reach the vnet server at {api}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let project = project
        .map(|p| format!("X-Project-Id: {p}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n{project}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
/// agent has registered. Everything is checked before anything is created,
/// so a refusal changes nothing; a failure once building has started
/// removes what was built, and keeps the logs.
pub fn up_with_gateways(
    name: &str,
    hosts: u8,
    gateways: u8,
    listen: SocketAddr,
    server: Option<&str>,
    vnet: &str,
) -> Result<LabState, BoxError> {
    check_name(name)?;
    if hosts == 0 || hosts > 200 {
        return Err("--hosts must be 1 to 200".into());
    }
    if gateways > hosts {
        return Err(format!("--gateways {gateways} is more than --hosts {hosts}").into());
    }
    if dir(name).join("state.json").exists() {
        return Err(LabError::AlreadyUp {
            name: name.to_owned(),
        }
        .into());
    }
    let external = server
        .map(|url| {
            url.strip_prefix("http://")
                .map(|a| a.trim_end_matches('/').to_owned())
                .ok_or_else(|| format!("--server '{url}' is not http://HOST:PORT"))
        })
        .transpose()?;
    if external.is_none() {
        check_listen(listen)?;
    }
    // Building starts here: from now on a failure removes what was built.
    let logs = log_dir(name);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(dir(name))?;
    build(name, hosts, gateways, listen, external, vnet).map_err(|e| {
        let _ = down(name);
        // Also when it failed before its state was first saved.
        let _ = std::fs::remove_dir(dir(name));
        format!(
            "{e}\nthe lab was removed; its logs are kept in {}",
            logs.display()
        )
        .into()
    })
}

fn build(
    name: &str,
    hosts: u8,
    gateways: u8,
    listen: SocketAddr,
    external: Option<String>,
    vnet: &str,
) -> Result<LabState, BoxError> {
    let mut state = LabState {
        name: name.to_owned(),
        api: external.clone().unwrap_or_else(|| listen.to_string()),
        fabric: format!("{name}-fabric"),
        ..Default::default()
    };
    // Saved before anything exists, so a failure half-way can still be torn down.
    state.save()?;
    progress(name, "creating the fabric and the outside");
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

    let logs = log_dir(name);
    let mut server = None;
    let agents_reach = match &external {
        Some(api) => format!("http://{api}"),
        None => {
            progress(name, &format!("starting the server on {}", state.api));
            let child = start_server(&state, vnet)?;
            state.server_pid = child.id();
            state.save()?;
            server = Some(child);
            format!("http://{MGMT_IP}:{MGMT_PORT}")
        }
    };

    let mut agents = Vec::new();
    for i in 1..=hosts {
        let host = format!("{name}-h{i}");
        progress(
            name,
            &format!("creating host {host} and starting its agent"),
        );
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
        let child = daemon(agent, &logs.join(format!("agent-{host}.log")))?;
        state.hosts.push(LabHost {
            name: host,
            underlay_ip,
            agent_pid: child.id(),
            external_iface: EXTERNAL_IFACE.to_owned(),
            gateway,
        });
        agents.push(child);
        state.save()?;
    }
    progress(name, &format!("waiting for {hosts} agents to register"));
    wait_for_agents(&state, server.as_mut(), &mut agents)?;
    Ok(state)
}

/// Stop the lab's server and start it again on the same data dir and
/// addresses; returns once every agent is alive again.
pub fn restart_server(name: &str, vnet: &str) -> Result<LabState, BoxError> {
    let mut state = LabState::load(name)?;
    if state.server_pid == 0 {
        return Err(LabError::ExternalServer {
            name: name.to_owned(),
            api: state.api.clone(),
        }
        .into());
    }
    if running(state.server_pid) {
        progress(
            name,
            &format!("stopping the server (pid {})", state.server_pid),
        );
        stop(state.server_pid, Duration::from_secs(15));
    }
    let listen: SocketAddr = state
        .api
        .parse()
        .map_err(|_| format!("the lab's API address '{}' is not ADDR:PORT", state.api))?;
    check_listen(listen)?;
    std::fs::create_dir_all(log_dir(name))?;
    progress(name, &format!("starting the server on {}", state.api));
    let mut child = start_server(&state, vnet)?;
    state.server_pid = child.id();
    state.save()?;
    progress(name, "waiting for the agents to reconnect");
    wait_for_agents(&state, Some(&mut child), &mut [])?;
    Ok(state)
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

/// Whether `port` (the API's view of it) may be plugged into a new VM on
/// `host`: a VM's own port, bound to that host, in no other VM.
pub fn check_vm_port(state: &LabState, host: &str, port: &Value) -> Result<(), LabError> {
    let id = port["id"].as_str().unwrap_or_default();
    let label = match port["name"].as_str() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => id.to_owned(),
    };
    let owner = port["device_owner"].as_str().unwrap_or_default();
    if owner.starts_with("network:") {
        return Err(LabError::PortNotForVm {
            port: label,
            owner: owner.to_owned(),
            host: host.to_owned(),
        });
    }
    if let Some(vm) = state.vms.iter().find(|v| v.port == id) {
        return Err(LabError::PortPlugged {
            port: label,
            vm: vm.name.clone(),
        });
    }
    match port["binding:host_id"].as_str().unwrap_or_default() {
        "" => Err(LabError::PortUnbound {
            port: label,
            host: host.to_owned(),
        }),
        bound if bound != host => Err(LabError::PortOnOtherHost {
            port: label,
            bound: bound.to_owned(),
            host: host.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Plug a VM into `host` with `port`'s device and MAC (`port` by name or
/// id); returns it. Refused, changing nothing, unless [`check_vm_port`]
/// agrees.
pub fn vm_create(
    state: &mut LabState,
    vm: &str,
    host: &str,
    port: &str,
) -> Result<LabVm, BoxError> {
    check_vm_name(vm)?;
    if state.vms.iter().any(|v| v.name == vm) {
        return Err(format!("VM {vm} exists (vnet lab vm delete {vm} first)").into());
    }
    let host = state.host(host)?.name.clone();
    let port = crate::names::resolve(&state.api, None, crate::names::PORTS, port)?;
    let (status, reply) = http(&state.api, "GET", &format!("/v2.0/ports/{port}"), None)?;
    if status != 200 {
        return Err(format!("port {port}: {status} {reply}").into());
    }
    check_vm_port(state, &host, &reply["port"])?;
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
        .map_or_else(|| compiler::protocol::tap_name(&port), str::to_owned);
    let netns = format!("{}-vm-{vm}", state.name);
    plug_vm(&netns, &host, &device, mac, mtu)?;
    let record = LabVm {
        name: vm.to_owned(),
        netns,
        host,
        port,
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

/// What `down` removed.
pub struct Removed {
    pub processes: usize,
    pub namespaces: usize,
}

/// Remove everything the lab created: VMs, agents, server, namespaces, its
/// state and data. Its logs stay in [`log_dir`].
pub fn down(name: &str) -> Result<Removed, BoxError> {
    let state = LabState::load(name)?;
    let pids: Vec<u32> = state
        .hosts
        .iter()
        .map(|h| h.agent_pid)
        .chain([state.server_pid])
        .filter(|pid| *pid != 0)
        .collect();
    // Agents first: the server going first would only make them retry.
    for pid in &pids {
        stop(*pid, Duration::from_secs(10));
    }
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
    let namespaces: Vec<String> = state
        .vms
        .iter()
        .map(|v| v.netns.clone())
        .chain(routers)
        .chain(state.hosts.iter().map(|h| h.name.clone()))
        .chain(Some(state.outside.clone()).filter(|o| !o.is_empty()))
        .chain([state.fabric.clone()])
        .filter(|ns| Path::new("/run/netns").join(ns).exists())
        .collect();
    for ns in &namespaces {
        if let Err(e) = delete_netns(ns)
            && Path::new("/run/netns").join(ns).exists()
        {
            failures.push(e.to_string());
        }
    }
    std::fs::remove_dir_all(dir(name))?;
    if failures.is_empty() {
        Ok(Removed {
            processes: pids.len(),
            namespaces: namespaces.len(),
        })
    } else {
        Err(failures.join("; ").into())
    }
}

/// What a user needs next: where the API is and whether it answers, the
/// hosts and their agents, the VMs with their ports' status and addresses,
/// and where the logs are.
fn status(name: &str) -> Result<String, BoxError> {
    use std::fmt::Write;
    let state = LabState::load(name)?;
    let mut out = String::new();
    writeln!(out, "lab {}: API http://{} (noauth)", state.name, state.api)?;
    let reached = http(&state.api, "GET", "/vnet/v1/hosts", None);
    let server = match state.server_pid {
        0 => "external".to_owned(),
        pid if running(pid) => format!("pid {pid}, running"),
        pid => format!("pid {pid}, NOT running"),
    };
    let hosts = match &reached {
        Ok((_, v)) => {
            writeln!(out, "server: {server}, answering")?;
            v["hosts"].as_array().cloned().unwrap_or_default()
        }
        Err(e) => {
            writeln!(out, "server: {server}, UNREACHABLE ({e})")?;
            if state.server_pid != 0 {
                writeln!(
                    out,
                    "  start it again: vnet lab restart-server --name {name}"
                )?;
            }
            Vec::new()
        }
    };
    writeln!(out, "logs: {}", log_dir(name).display())?;
    if !state.outside.is_empty() {
        writeln!(
            out,
            "outside: namespace {} at {OUTSIDE_CIDR} on physical network {PHYSICAL_NETWORK}",
            state.outside
        )?;
    }
    writeln!(
        out,
        "\n{:<16} {:<14} {:<8} {:<8} agent pid",
        "host", "underlay", "agent", "gateway"
    )?;
    for h in &state.hosts {
        let alive = if reached.is_err() {
            "?"
        } else {
            hosts
                .iter()
                .find(|x| x["name"] == h.name.as_str())
                .map_or("unregistered", |x| {
                    if x["alive"] == true { "alive" } else { "dead" }
                })
        };
        writeln!(
            out,
            "{:<16} {:<14} {:<8} {:<8} {}{}",
            h.name,
            h.underlay_ip,
            alive,
            if h.gateway { "yes" } else { "no" },
            h.agent_pid,
            if running(h.agent_pid) {
                ""
            } else {
                " (not running)"
            }
        )?;
    }
    if reached.is_err() && !state.hosts.is_empty() {
        writeln!(out, "(agent '?': the server cannot be asked)")?;
    }
    if !state.vms.is_empty() {
        writeln!(
            out,
            "\n{:<12} {:<16} {:<16} {:<22} {:<7} addresses",
            "vm", "host", "device", "port", "status"
        )?;
        for v in &state.vms {
            let port = reached
                .as_ref()
                .ok()
                .and_then(|_| {
                    http(&state.api, "GET", &format!("/v2.0/ports/{}", v.port), None).ok()
                })
                .filter(|(code, _)| *code == 200)
                .map(|(_, p)| p["port"].clone());
            let (label, port_status, addresses) = match &port {
                Some(p) => (
                    crate::names::label(p["name"].as_str().unwrap_or_default(), &v.port),
                    p["status"].as_str().unwrap_or("?").to_owned(),
                    p["fixed_ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["ip_address"].as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                None if reached.is_ok() => (v.port.clone(), "GONE".to_owned(), String::new()),
                None => (v.port.clone(), "?".to_owned(), String::new()),
            };
            writeln!(
                out,
                "{:<12} {:<16} {:<16} {:<22} {:<7} {}",
                v.name, v.host, v.device, label, port_status, addresses
            )?;
        }
    }
    Ok(out)
}

pub fn main(lab: Lab) -> Result<(), BoxError> {
    let vnet = std::env::current_exe()?;
    let vnet = vnet.to_string_lossy();
    match lab {
        Lab::Up {
            hosts,
            gateways,
            name: LabName { name },
            listen,
            server,
        } => {
            let state = up_with_gateways(&name, hosts, gateways, listen, server.as_deref(), &vnet)?;
            let mut out = format!(
                "lab '{name}' is up: {} hosts, API at http://{} (noauth)\n  export OS_AUTH_TYPE=none OS_ENDPOINT=http://{}\n",
                state.hosts.len(),
                state.api,
                state.api
            );
            for h in &state.hosts {
                out.push_str(&format!(
                    "  host {} (underlay {}, {PHYSICAL_NETWORK}:{}{})\n",
                    h.name,
                    h.underlay_ip,
                    h.external_iface,
                    if h.gateway { ", gateway" } else { "" }
                ));
            }
            out.push_str(&format!(
                "  outside: {OUTSIDE_CIDR} on physical network {PHYSICAL_NETWORK} (vnet lab outside exec -- CMD)\n  logs: {}\n",
                log_dir(&name).display()
            ));
            say(&out)
        }
        Lab::Status {
            name: LabName { name },
        } => say(&status(&name)?),
        Lab::RestartServer {
            name: LabName { name },
        } => {
            let state = restart_server(&name, &vnet)?;
            say(&format!(
                "lab '{name}': server restarted (pid {}), API at http://{}, {} agents alive\n",
                state.server_pid,
                state.api,
                state.hosts.len()
            ))
        }
        Lab::Down {
            name: LabName { name },
        } => {
            let removed = down(&name)?;
            say(&format!(
                "lab '{name}' is down: stopped {} processes, removed {} namespaces; logs kept in {}\n",
                removed.processes,
                removed.namespaces,
                log_dir(&name).display()
            ))
        }
        Lab::Vm(Vm::Create {
            vm,
            host,
            port,
            name: LabName { name },
        }) => {
            let mut state = LabState::load(&name)?;
            let record = vm_create(&mut state, &vm, &host, &port)?;
            say(&format!(
                "vm {vm} on {} with device {}\n",
                record.host, record.device
            ))
        }
        Lab::Vm(Vm::Exec {
            vm,
            name: LabName { name },
            command,
        }) => {
            let state = LabState::load(&name)?;
            let record = state
                .vms
                .iter()
                .find(|v| v.name == vm)
                .ok_or_else(|| format!("no VM {vm} in lab {name}"))?;
            let err = Command::new("ip")
                .args(["netns", "exec", &record.netns])
                .args(&command)
                .exec();
            Err(err.into())
        }
        Lab::Vm(Vm::Dhcp {
            vm,
            name: LabName { name },
        }) => {
            let state = LabState::load(&name)?;
            let record = state
                .vms
                .iter()
                .find(|v| v.name == vm)
                .ok_or_else(|| format!("no VM {vm} in lab {name}"))?;
            let mut out = String::new();
            let modes = port_address_modes(&state, &record.port)?;
            if modes.iter().any(|(ip, _)| ip.is_ipv4()) {
                let lease = udhcpc(&name, &vm, &record.netns)?;
                out.push_str(&format!("{vm}: {lease}\n"));
            }
            for line in ipv6_addresses(&name, &vm, &record.netns, &modes)? {
                out.push_str(&format!("{vm}: {line}\n"));
            }
            say(&out)
        }
        Lab::Outside(Outside::Exec {
            name: LabName { name },
            command,
        }) => {
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
        Lab::Vm(Vm::Delete {
            vm,
            name: LabName { name },
        }) => {
            let mut state = LabState::load(&name)?;
            vm_delete(&mut state, &vm)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_are_checked_for_what_they_prefix() {
        for good in ["lab", "lab2", "a-b", "abcdefghijk"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "bad name/with slash",
            "2lab",
            "abcdefghijkl",
            "../x",
            "a_b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_vm_name("vm-1.a_b").is_ok());
        assert!(check_vm_name("vm 1").is_err());
    }

    fn lab_with_vm() -> LabState {
        LabState {
            name: "lab".into(),
            vms: vec![LabVm {
                name: "vm1".into(),
                netns: "lab-vm-vm1".into(),
                host: "lab-h1".into(),
                port: "p1".into(),
                device: "tapp1".into(),
            }],
            ..LabState::default()
        }
    }

    #[test]
    fn a_vm_takes_only_its_own_port_bound_to_its_host() {
        let lab = lab_with_vm();
        let port = |id: &str, host: &str, owner: &str| {
            serde_json::json!({"id": id, "name": format!("{id}-name"),
                               "binding:host_id": host, "device_owner": owner})
        };
        assert!(check_vm_port(&lab, "lab-h1", &port("p2", "lab-h1", "")).is_ok());
        assert!(matches!(
            check_vm_port(&lab, "lab-h1", &port("p2", "lab-h2", "")),
            Err(LabError::PortOnOtherHost { .. })
        ));
        assert!(matches!(
            check_vm_port(&lab, "lab-h1", &port("p2", "", "")),
            Err(LabError::PortUnbound { .. })
        ));
        assert!(matches!(
            check_vm_port(&lab, "lab-h1", &port("p1", "lab-h1", "")),
            Err(LabError::PortPlugged { .. })
        ));
        assert!(matches!(
            check_vm_port(&lab, "lab-h1", &port("p3", "", "network:router_interface")),
            Err(LabError::PortNotForVm { .. })
        ));
    }

    /// A server that exits at once is reported with its log's last lines,
    /// and the log stays (issue 16 #2). The "server" is a script that fails
    /// as `vnet server` does when its address is taken.
    #[test]
    fn a_server_that_exits_is_reported_with_its_log() {
        let name = format!("ut{}", std::process::id() % 100_000);
        let scratch = tempfile::tempdir().unwrap();
        let fake = scratch.path().join("vnet");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'vnet: cannot listen on 127.0.0.1:1: Address already in use' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let state = LabState {
            name: name.clone(),
            api: "127.0.0.1:1".into(),
            fabric: format!("{name}-fabric"),
            ..LabState::default()
        };
        std::fs::create_dir_all(dir(&name)).unwrap();
        std::fs::create_dir_all(log_dir(&name)).unwrap();
        let started = Instant::now();
        let result = start_server(&state, &fake.to_string_lossy());
        let _ = std::fs::remove_dir_all(dir(&name));
        let log = log_dir(&name).join("server.log");
        let kept = log.exists();
        let _ = std::fs::remove_dir_all(log_dir(&name));
        let error = result.err().unwrap().to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(error.contains("did not start"), "{error}");
        assert!(error.contains("Address already in use"), "{error}");
        assert!(error.contains(&log.display().to_string()), "{error}");
        assert!(kept, "the log was removed");
    }
}
