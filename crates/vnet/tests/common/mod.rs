//! The end-to-end harness: a real `vnet server` and a real `vnet agent` per
//! host in a testworld (fabric, hosts, VMs), driven over HTTP.

#![allow(clippy::unwrap_used, dead_code)] // each test uses part of it

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testworld::{EXTERNAL_DEV, Fabric, Host, Netns, Outside, Vm};

pub const VNET: &str = env!("CARGO_BIN_EXE_vnet");
/// Where agents reach the server: an address on the fabric's bridge.
pub const MGMT_IP: &str = "192.0.2.254";
pub const MGMT_PORT: u16 = 9696;
/// The physical network of the external segment, as agents map it.
pub const PHYSICAL_NETWORK: &str = "external";

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address free right now (the kernel's pick).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn spawn(mut cmd: Command, log: &std::path::Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    Proc(cmd.stdout(out).stderr(err).spawn().unwrap())
}

/// A minimal HTTP/1.1 JSON client (one request per connection).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    try_http(addr, method, path, body).unwrap()
}

/// [`http`] with extra request headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    request(addr, method, path, Some(body), headers).unwrap()
}

/// [`http`] to a server that may be gone: `None` when the connection fails.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    request(addr, method, path, body, &[])
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Cloud {
    pub api: SocketAddr,
    // Agents go before their hosts: an agent left running could make a
    // router namespace after its host's guard swept them.
    pub agents: Vec<Option<Proc>>,
    pub hosts: Vec<Host>,
    pub logs: tempfile::TempDir,
    /// The internet on the external segment, if the cloud has one.
    pub outside: Option<Outside>,
    /// Hosts 1…`mapped` map [`PHYSICAL_NETWORK`] to their `ext0`.
    mapped: u8,
    server: Option<Proc>,
    /// The etcd member the server stores in, for a cloud on etcd.
    etcd: Option<store::etcd::local::LocalEtcd>,
    // Dropped last: everything above lives in namespaces plugged into it.
    pub fabric: Fabric,
}

impl Cloud {
    pub fn new(prefix: &str, hosts: u8) -> Cloud {
        Cloud::build(prefix, hosts, None, false)
    }

    /// With its server on `--store etcd`, on an etcd member of its own.
    pub fn on_etcd(prefix: &str, hosts: u8) -> Cloud {
        Cloud::build(prefix, hosts, None, true)
    }

    /// With an external segment ([`PHYSICAL_NETWORK`]) and the outside on it;
    /// the first `mapped` hosts are plugged into it and their agents map it.
    pub fn with_external(prefix: &str, hosts: u8, mapped: u8) -> Cloud {
        Cloud::build(prefix, hosts, Some(mapped), false)
    }

    fn build(prefix: &str, hosts: u8, external: Option<u8>, on_etcd: bool) -> Cloud {
        let logs = tempfile::tempdir().unwrap();
        let fabric = Fabric::new(prefix).unwrap();
        fabric
            .ns
            .ip(&["addr", "add", &format!("{MGMT_IP}/24"), "dev", "br0"])
            .unwrap();
        let mapped = external.unwrap_or(0);
        let outside = external.map(|_| {
            fabric.add_external().unwrap();
            Outside::new(&fabric, prefix).unwrap()
        });
        let hosts: Vec<Host> = (1..=hosts)
            .map(|i| {
                let host = Host::new(&fabric, prefix, i).unwrap();
                if i <= mapped {
                    host.plug_external(&fabric).unwrap();
                }
                host
            })
            .collect();
        let api: SocketAddr = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let etcd = on_etcd.then(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(store::etcd::local::LocalEtcd::start(logs.path()))
                .unwrap()
        });
        let mut cloud = Cloud {
            api,
            hosts,
            agents: Vec::new(),
            logs,
            outside,
            mapped,
            server: None,
            etcd,
            fabric,
        };
        cloud.start_server();
        for i in 0..cloud.hosts.len() {
            let agent = cloud.start_agent(i);
            cloud.agents.push(Some(agent));
        }
        cloud
    }

    /// Starts the server (on the cloud's store) and waits until it answers.
    pub fn start_server(&mut self) {
        self.server = Some(self.server_on(self.api, MGMT_PORT, "server.log"));
    }

    /// A second server on the cloud's etcd (a replica), on a loopback
    /// address of its own and on the management address's next port (the
    /// agents know both); waits until it answers. Its address and process.
    pub fn start_replica(&self) -> (SocketAddr, Proc) {
        let api = free_addr();
        (api, self.server_on(api, MGMT_PORT + 1, "replica.log"))
    }

    /// Kills the server (-9), as a crash would.
    pub fn kill_server(&mut self) {
        drop(self.server.take());
    }

    fn server_on(&self, api: SocketAddr, mgmt_port: u16, log: &str) -> Proc {
        let mut server = Command::new(VNET);
        server.args([
            "server",
            "--listen",
            &api.to_string(),
            "--listen",
            &format!("{}/{MGMT_IP}:{mgmt_port}", self.fabric.ns.name()),
            "--data-dir",
            self.logs.path().join("data").to_str().unwrap(),
        ]);
        if let Some(etcd) = &self.etcd {
            let limits = etcd.limits();
            server.args([
                "--store",
                "etcd",
                "--etcd-endpoints",
                etcd.client_url(),
                "--etcd-max-txn-ops",
                &limits.max_ops.to_string(),
                "--etcd-max-request-bytes",
                &limits.max_bytes.to_string(),
                "--etcd-claim-ttl",
                "2",
            ]);
        }
        let server = spawn(server, &self.logs.path().join(log));
        wait_for("the server", Duration::from_secs(10), || {
            TcpStream::connect(api).is_ok()
        });
        server
    }

    /// Stops the server with SIGTERM (a clean stop) and waits for it to exit.
    pub fn stop_server(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &server.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for("the server to exit", Duration::from_secs(20), || {
            server.0.try_wait().unwrap().is_some()
        });
    }

    /// On etcd, the agents know a replica's address too ([`Cloud::start_replica`]).
    fn servers_for_agents(&self) -> String {
        let first = format!("http://{MGMT_IP}:{MGMT_PORT}");
        match self.etcd {
            Some(_) => format!("{first},http://{MGMT_IP}:{}", MGMT_PORT + 1),
            None => first,
        }
    }

    pub fn start_agent(&self, i: usize) -> Proc {
        let host = &self.hosts[i];
        let mut cmd = Command::new(VNET);
        cmd.args([
            "agent",
            "--netns",
            host.ns.name(),
            "--server",
            &self.servers_for_agents(),
            "--host",
            &format!("h{}", host.index),
            "--underlay-ip",
            &host.underlay_ip().to_string(),
        ]);
        // A host on the external segment may also run routers' default SNAT.
        if host.index <= self.mapped {
            cmd.args([
                "--physical-network",
                &format!("{PHYSICAL_NETWORK}:{EXTERNAL_DEV}"),
                "--gateway",
            ]);
        }
        spawn(
            cmd,
            &self.logs.path().join(format!("agent-h{}.log", host.index)),
        )
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, reply) = http(self.api, method, path, body.as_ref());
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {reply}"
        );
        reply
    }

    pub fn network(&self, project: &str, cidr: &str) -> (String, String) {
        let net = self.call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"project_id": project}})),
        );
        let net = net["network"]["id"].as_str().unwrap().to_owned();
        let body = json!({"subnet": {"network_id": net, "project_id": project, "ip_version": 4, "cidr": cidr}});
        let subnet = self.call("POST", "/v2.0/subnets", Some(body));
        (net, subnet["subnet"]["id"].as_str().unwrap().to_owned())
    }

    /// A port with a chosen address, bound to host `h` (1-based), and its VM.
    pub fn vm(&self, project: &str, net: &str, subnet: &str, ip: &str, h: usize) -> (String, Vm) {
        self.vm_with(project, net, subnet, ip, h, json!({}))
    }

    /// As `vm`, with more port attributes (`security_groups`, …).
    pub fn vm_with(
        &self,
        project: &str,
        net: &str,
        subnet: &str,
        ip: &str,
        h: usize,
        extra: Value,
    ) -> (String, Vm) {
        let mut body = json!({"port": {
            "network_id": net, "project_id": project, "binding:host_id": format!("h{h}"),
            "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}],
        }});
        if let (Some(port), Some(extra)) = (body["port"].as_object_mut(), extra.as_object()) {
            port.extend(extra.clone());
        }
        let port = self.call("POST", "/v2.0/ports", Some(body))["port"].clone();
        let id = port["id"].as_str().unwrap().to_owned();
        let device = compiler::protocol::tap_name(&id);
        let mac = port["mac_address"].as_str().unwrap();
        // IPv6 on only where the port's address is IPv6: otherwise its
        // start-up traffic is noise.
        let vm = if ip.contains(':') {
            Vm::dual_stack(&self.hosts[h - 1], "e2", &device, mac)
        } else {
            Vm::new(&self.hosts[h - 1], "e2", &device, mac)
        }
        .unwrap();
        (id, vm)
    }

    /// The agent log of host `h` (1-based).
    pub fn agent_log(&self, h: usize) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("agent-h{h}.log")))
            .unwrap_or_default()
    }

    pub fn status(&self, port: &str) -> String {
        self.call("GET", &format!("/v2.0/ports/{port}"), None)["port"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The router namespaces host `i`'s agent made (0-based).
pub fn router_namespaces(cloud: &Cloud, i: usize) -> Vec<String> {
    let prefix = format!("{}-vnr-", cloud.hosts[i].ns.name());
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

/// What a router namespace holds (links, addresses, routes, rules and NAT),
/// as `ip` and `nft` say.
pub fn router_state(netns: &str) -> String {
    let ip =
        |args: &[&str]| testworld::run_cmd("ip", &[&["-n", netns][..], args].concat()).unwrap();
    let nft = testworld::run_cmd("ip", &["netns", "exec", netns, "nft", "list", "ruleset"]);
    format!(
        "{}\n{}\n{}\n{}\n{}",
        ip(&["-br", "link"]),
        ip(&["-br", "addr"]),
        ip(&["route", "show", "table", "all"]),
        ip(&["rule", "show"]),
        nft.unwrap()
    )
}

pub fn add_interface(cloud: &Cloud, router: &str, subnet: &str) -> String {
    let info = cloud.call(
        "PUT",
        &format!("/v2.0/routers/{router}/add_router_interface"),
        Some(json!({"subnet_id": subnet})),
    );
    info["port_id"].as_str().unwrap().to_owned()
}

pub fn default_route(vm: &Vm, gateway: &str) {
    vm.ns
        .ip(&["route", "replace", "default", "via", gateway])
        .unwrap();
}

/// Sends one line over TCP from namespace `from` to `ip:port`, where `to`
/// listens; what `to` got.
pub fn tcp(from: &Netns, to: &Netns, ip: &str, port: u16) -> String {
    tcp_via(from, to, ip, port, port)
}

/// As [`tcp`], sent to `ip:port` while `to` listens on `listen` (a port
/// forwarding between them). A try whose connection fails (busybox's
/// connect timeout, printed) is tried again: a path that works answers
/// within three, a broken one never.
pub fn tcp_via(from: &Netns, to: &Netns, ip: &str, port: u16, listen: u16) -> String {
    let mut received = String::new();
    for _ in 0..3 {
        received = tcp_once(from, to, ip, port, listen);
        if !received.is_empty() {
            break;
        }
    }
    received
}

fn tcp_once(from: &Netns, to: &Netns, ip: &str, port: u16, listen: u16) -> String {
    // The listener's stdin is a pipe left open until its output is read:
    // busybox nc half-closes the connection the moment its stdin ends (an
    // inherited /dev/null: on accept), and the client exits cleanly at the
    // peer's end of stream, unsent whatever its `echo` had not yet written
    // (on a busy machine, often all of it).
    let mut listener = to.command("busybox");
    listener
        .args(["nc", "-l", "-p", &listen.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut listener = listener.spawn().unwrap();
    wait_for("the listener", Duration::from_secs(5), || {
        to.exec("busybox", &["netstat", "-ltn"])
            .is_ok_and(|o| o.contains(&format!(":{listen} ")))
    });
    // A connection that fails leaves the listener waiting: end it.
    let sent = from.sh(&format!("echo hello | busybox nc -w 3 {ip} {port}"));
    if let Err(e) = sent {
        eprintln!("{e}");
        let _ = listener.kill();
    }
    let received = listener.wait_with_output().unwrap();
    String::from_utf8_lossy(&received.stdout).trim().to_owned()
}

/// Run busybox udhcpc in the VM; returns the `ip/mask` it was given.
pub fn dhcp(vm: &Vm) -> String {
    let script = "#!/bin/sh\ncase \"$1\" in bound|renew) ip -4 addr flush dev $interface; \
                  ip addr add $ip/$mask dev $interface; echo \"LEASE $ip/$mask\";; esac\n";
    // A file of this call's own, removed when it returns (even on panic);
    // closed before it runs (a file open for writing cannot be executed).
    let path = tempfile::Builder::new()
        .prefix("vnet-udhcpc-")
        .suffix(".sh")
        .tempfile()
        .unwrap()
        .into_temp_path();
    std::fs::write(&path, script).unwrap();
    vm.ns
        .exec("chmod", &["+x", path.to_str().unwrap()])
        .unwrap();
    let out = vm
        .ns
        .exec(
            "busybox",
            &[
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
                path.to_str().unwrap(),
            ],
        )
        .unwrap_or_else(|e| panic!("udhcpc failed: {e}"));
    out.lines()
        .find_map(|l| l.strip_prefix("LEASE "))
        .unwrap_or_else(|| panic!("no lease in: {out}"))
        .to_owned()
}

/// What the kernel of a host holds that vnet programs, without the bridge
/// timers that tick on their own.
pub fn kernel_state(ns: &Netns) -> String {
    let links: Vec<String> = ns
        .ip(&["-d", "link", "show"])
        .unwrap()
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let mut kept = Vec::new();
            while let Some(word) = words.next() {
                if word.ends_with("_timer") {
                    words.next();
                } else {
                    kept.push(word);
                }
            }
            kept.join(" ")
        })
        .collect();
    let links = links.join("\n");
    let fdb = ns.exec("bridge", &["fdb", "show"]).unwrap();
    let neigh = ns.ip(&["neigh", "show", "nud", "permanent"]).unwrap();
    format!("{links}\n{fdb}\n{neigh}")
}
