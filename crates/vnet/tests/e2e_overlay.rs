//! End to end, as root, in throwaway namespaces: a real `vnet server` and a
//! real `vnet agent` per host, two projects whose networks use the same CIDR,
//! VMs that get their addresses by DHCP, traffic across hosts through VXLAN,
//! isolation, no ARP or broadcast on the overlay, port deletion reaching the
//! other host, and an agent restart under a running ping.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testworld::{Capture, Fabric, Host, Netns, Vm, vxlan_frames};

const VNET: &str = env!("CARGO_BIN_EXE_vnet");
/// Where agents reach the server: an address on the fabric's bridge.
const MGMT_IP: &str = "192.0.2.254";
const MGMT_PORT: u16 = 9696;

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command, log: &std::path::Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    Proc(cmd.stdout(out).stderr(err).spawn().unwrap())
}

/// A minimal HTTP/1.1 JSON client (one request per connection).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Cloud {
    api: SocketAddr,
    hosts: Vec<Host>,
    agents: Vec<Option<Proc>>,
    logs: tempfile::TempDir,
    // Dropped last: everything above lives in namespaces plugged into it.
    _server: Proc,
    fabric: Fabric,
}

impl Cloud {
    fn new(prefix: &str, hosts: u8) -> Cloud {
        let logs = tempfile::tempdir().unwrap();
        let fabric = Fabric::new(prefix).unwrap();
        fabric
            .ns
            .ip(&["addr", "add", &format!("{MGMT_IP}/24"), "dev", "br0"])
            .unwrap();
        let hosts: Vec<Host> = (1..=hosts)
            .map(|i| Host::new(&fabric, prefix, i).unwrap())
            .collect();
        let api: SocketAddr = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let mut server = Command::new(VNET);
        server.args([
            "server",
            "--listen",
            &api.to_string(),
            "--listen",
            &format!("{}/{MGMT_IP}:{MGMT_PORT}", fabric.ns.name()),
            "--data-dir",
            logs.path().join("data").to_str().unwrap(),
        ]);
        let server = spawn(server, &logs.path().join("server.log"));
        wait_for("the server", Duration::from_secs(10), || {
            TcpStream::connect(api).is_ok()
        });
        let mut cloud = Cloud {
            api,
            hosts,
            agents: Vec::new(),
            logs,
            _server: server,
            fabric,
        };
        for i in 0..cloud.hosts.len() {
            let agent = cloud.start_agent(i);
            cloud.agents.push(Some(agent));
        }
        cloud
    }

    fn start_agent(&self, i: usize) -> Proc {
        let host = &self.hosts[i];
        let mut cmd = host.ns.command(VNET);
        cmd.args([
            "agent",
            "--server",
            &format!("http://{MGMT_IP}:{MGMT_PORT}"),
            "--host",
            &format!("h{}", host.index),
            "--underlay-ip",
            &host.underlay_ip().to_string(),
        ]);
        spawn(
            cmd,
            &self.logs.path().join(format!("agent-h{}.log", host.index)),
        )
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, reply) = http(self.api, method, path, body.as_ref());
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {reply}"
        );
        reply
    }

    fn network(&self, project: &str, cidr: &str) -> (String, String) {
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
    fn vm(&self, project: &str, net: &str, subnet: &str, ip: &str, h: usize) -> (String, Vm) {
        let body = json!({"port": {
            "network_id": net, "project_id": project, "binding:host_id": format!("h{h}"),
            "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}],
        }});
        let port = self.call("POST", "/v2.0/ports", Some(body))["port"].clone();
        let id = port["id"].as_str().unwrap().to_owned();
        let device = compiler::protocol::tap_name(&id);
        let vm = Vm::new(
            &self.hosts[h - 1],
            "e2",
            &device,
            port["mac_address"].as_str().unwrap(),
        )
        .unwrap();
        (id, vm)
    }

    fn status(&self, port: &str) -> String {
        self.call("GET", &format!("/v2.0/ports/{port}"), None)["port"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Run busybox udhcpc in the VM; returns the `ip/mask` it was given.
fn dhcp(vm: &Vm) -> String {
    let script = "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev $interface; \
                  ip addr add $ip/$mask dev $interface; echo \"LEASE $ip/$mask\";; esac\n";
    let path = std::env::temp_dir().join(format!("vnet-udhcpc-{}.sh", std::process::id()));
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
fn kernel_state(ns: &Netns) -> String {
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

#[test]
fn tenant_networks_are_real_across_hosts() {
    let cloud = Cloud::new("e2", 2);
    // Two projects, the same CIDR; each has a VM on each host. The .10 address
    // exists in both; .11 only in A, .12 only in B.
    let (net_a, sub_a) = cloud.network("proj-a", "10.0.0.0/24");
    let (net_b, sub_b) = cloud.network("proj-b", "10.0.0.0/24");
    let (a1, vm_a1) = cloud.vm("proj-a", &net_a, &sub_a, "10.0.0.10", 1);
    let (a2, vm_a2) = cloud.vm("proj-a", &net_a, &sub_a, "10.0.0.11", 2);
    let (b1, vm_b1) = cloud.vm("proj-b", &net_b, &sub_b, "10.0.0.10", 1);
    let (b2, vm_b2) = cloud.vm("proj-b", &net_b, &sub_b, "10.0.0.12", 2);
    for port in [&a1, &a2, &b1, &b2] {
        wait_for("ports ACTIVE", Duration::from_secs(20), || {
            cloud.status(port) == "ACTIVE"
        });
    }

    // Every VM gets exactly its port's address by DHCP, from its own host.
    for (vm, ip) in [
        (&vm_a1, "10.0.0.10"),
        (&vm_a2, "10.0.0.11"),
        (&vm_b1, "10.0.0.10"),
        (&vm_b2, "10.0.0.12"),
    ] {
        assert_eq!(dhcp(vm), format!("{ip}/24"));
    }

    // Traffic across hosts, watched on the underlay.
    let capture = Capture::start(&cloud.fabric.ns, "br0", "udp port 4789").unwrap();
    assert_eq!(vm_a1.ping("10.0.0.11", 3), 3, "A reaches A across hosts");
    assert_eq!(vm_b1.ping("10.0.0.12", 3), 3, "B reaches B across hosts");
    assert_eq!(vm_a1.ping("10.0.0.12", 2), 0, "A never reaches B's VM");
    assert_eq!(vm_b1.ping("10.0.0.11", 2), 0, "B never reaches A's VM");

    // A TCP connection across hosts.
    let mut listener = vm_a2.ns.command("busybox");
    listener
        .args(["nc", "-l", "-p", "7000"])
        .stdout(Stdio::piped());
    let listener = listener.spawn().unwrap();
    wait_for("the listener", Duration::from_secs(5), || {
        vm_a2
            .ns
            .exec("busybox", &["netstat", "-ltn"])
            .is_ok_and(|o| o.contains(":7000"))
    });
    vm_a1
        .ns
        .sh("echo across-hosts | busybox nc -w 2 10.0.0.11 7000")
        .unwrap();
    let received = listener.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&received.stdout).trim(),
        "across-hosts"
    );

    let frames = vxlan_frames(&capture.stop().unwrap());
    assert!(!frames.is_empty(), "the pings crossed the overlay");
    assert!(
        !frames.iter().any(|f| f.is_arp()),
        "ARP crossed the overlay"
    );
    assert!(
        !frames.iter().any(|f| f.is_flood()),
        "a broadcast crossed the overlay"
    );

    // Deleting a port removes its forwarding entry on the other host.
    let mac_b2 = vm_b2.mac.clone();
    assert!(
        cloud.hosts[0]
            .ns
            .exec("bridge", &["fdb", "show"])
            .unwrap()
            .contains(&mac_b2)
    );
    cloud.call("DELETE", &format!("/v2.0/ports/{b2}"), None);
    wait_for(
        "b2's FDB entry gone from h1",
        Duration::from_secs(10),
        || {
            !cloud.hosts[0]
                .ns
                .exec("bridge", &["fdb", "show"])
                .unwrap()
                .contains(&mac_b2)
        },
    );
    drop(vm_b2);

    // Kill h1's agent during a ping and start it again: traffic goes on and
    // the kernel ends exactly as it was.
    let mut cloud = cloud;
    let before = kernel_state(&cloud.hosts[0].ns);
    let mut ping = vm_a1.ns.command("busybox");
    ping.args(["ping", "-c", "40", "-i", "0.1", "10.0.0.11"])
        .stdout(Stdio::piped());
    let ping = ping.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(cloud.agents[0].take()); // SIGKILL
    std::thread::sleep(Duration::from_millis(500));
    cloud.agents[0] = Some(cloud.start_agent(0));
    let out = String::from_utf8_lossy(&ping.wait_with_output().unwrap().stdout).into_owned();
    let received: u32 = out
        .lines()
        .find_map(|l| {
            l.split_once("transmitted, ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(
        received >= 39,
        "lost more than one packet across the agent restart: {out}"
    );
    wait_for(
        "the restarted agent's first reconcile",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(cloud.logs.path().join("agent-h1.log"))
                .is_ok_and(|l| l.contains("vnet agent started"))
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        kernel_state(&cloud.hosts[0].ns),
        before,
        "the restart changed the kernel"
    );
    assert_eq!(cloud.status(&a1), "ACTIVE");
    drop((vm_a1, vm_a2, vm_b1));
}
