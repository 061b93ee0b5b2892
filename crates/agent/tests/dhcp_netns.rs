//! The DHCP server against a real client, in network namespaces (root).
//!
//! World: a "host" namespace with a bridge, and "VM" namespaces each joined to
//! it by a veth whose host end is named like a Nova tap and attached to the
//! bridge (as the agent wires ports), VM end `eth0` with the port's MAC and
//! MTU 1450. The server runs in the host namespace on a dedicated thread
//! (`setns`, then a current-thread runtime). The client is
//! `busybox udhcpc`, with a script that applies what it got and records it.
//!
//! Everything (namespaces, processes, files) is removed on drop, panics
//! included.
#![allow(clippy::unwrap_used)]
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use agent::dhcp::{DhcpServer, PortStatus};
use compiler::protocol::{DhcpLease, DhcpOptionSpec, RouteSpec};
use model::MacAddr;
use tokio::sync::mpsc;

// === helpers ===

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(role: &str) -> String {
    format!(
        "vdhcp-{role}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Self {
        let name = unique(role);
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Never panic here: we may be unwinding already.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A process killed on drop.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("files"));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

enum Cmd {
    SetPorts(Vec<(String, DhcpLease)>),
    UpdatePorts(Vec<(String, Option<DhcpLease>)>),
    Status(String, std_mpsc::Sender<Option<PortStatus>>),
}

/// The DHCP server, running in `ns` on its own thread; stopped on drop.
struct ServerThread {
    tx: Option<mpsc::UnboundedSender<Cmd>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ServerThread {
    fn start(ns: &Netns) -> Self {
        let path = format!("/run/netns/{}", ns.name);
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let thread = thread::spawn(move || {
            let file = fs::File::open(&path).unwrap();
            // SAFETY: `file` is an open netns file; setns only changes this
            // thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut server = DhcpServer::new();
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        Cmd::SetPorts(ports) => server.set_ports(ports),
                        Cmd::UpdatePorts(edits) => server.update_ports(edits, |_| false),
                        Cmd::Status(device, reply) => {
                            let _ = reply.send(server.status(&device));
                        }
                    }
                }
            });
        });
        ServerThread {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn set_ports(&self, ports: Vec<(&str, DhcpLease)>) {
        let ports = ports.into_iter().map(|(d, l)| (d.to_owned(), l)).collect();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::SetPorts(ports))
            .unwrap();
    }

    fn update_ports(&self, edits: Vec<(&str, Option<DhcpLease>)>) {
        let edits = edits.into_iter().map(|(d, l)| (d.to_owned(), l)).collect();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::UpdatePorts(edits))
            .unwrap();
    }

    fn status(&self, device: &str) -> PortStatus {
        self.served(device).expect("device is served")
    }

    fn served(&self, device: &str) -> Option<PortStatus> {
        let (tx, rx) = std_mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::Status(device.to_owned(), tx))
            .unwrap();
        rx.recv().unwrap()
    }

    fn wait_serving(&self, device: &str, serving: bool) {
        wait_until(
            &format!("{device} serving={serving}"),
            Duration::from_secs(5),
            || self.status(device).serving == serving,
        );
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A host namespace with a bridge (and the gateway's address on it, so that
/// unicast renewals to the server identifier resolve as with a router).
struct Host {
    ns: Netns,
}

const BRIDGE: &str = "brq-test";
const GATEWAY: &str = "10.0.0.1";

impl Host {
    fn new() -> Self {
        let ns = Netns::new("host");
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE]);
        ns.ip(&["link", "set", BRIDGE, "up"]);
        Host { ns }
    }

    /// Plug a VM in through `tap` (host end, on the bridge) and `eth0`.
    fn plug(&self, vm: &Netns, tap: &str, mac: &str) {
        sh(&[
            "ip",
            "link",
            "add",
            tap,
            "netns",
            &self.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &vm.name,
        ]);
        vm.ip(&["link", "set", "eth0", "address", mac, "mtu", "1450", "up"]);
        self.ns
            .ip(&["link", "set", tap, "mtu", "1450", "master", BRIDGE, "up"]);
    }

    fn unplug(&self, tap: &str) {
        self.ns.ip(&["link", "del", tap]);
    }
}

const SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script: apply what came with the event, record it, and record
# the event last (the test waits on the events file).
event="$1"
case "$event" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    env | grep -E '^(ip|mask|router|mtu|staticroutes|dns|serverid|lease|siaddr|tftp|bootfile|domain|ntpsrv)=' | sort > "$DHCP_OUT/$event.tmp"
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "$router" dev "$interface"
    fi
    mv "$DHCP_OUT/$event.tmp" "$DHCP_OUT/$event"
    ;;
esac
echo "$event" >> "$DHCP_OUT/events"
exit 0
"#;

/// A udhcpc client of one VM: its script and what the script recorded.
struct Client {
    dir: Scratch,
}

impl Client {
    fn new() -> Self {
        let dir = Scratch::new();
        let script = dir.0.join("script.sh");
        fs::write(&script, SCRIPT).unwrap();
        sh(&["chmod", "+x", script.to_str().unwrap()]);
        Client { dir }
    }

    /// `busybox udhcpc` in `vm`, after `prefix` (e.g. a `timeout`).
    fn command(&self, vm: &Netns, prefix: &[&str], extra: &[&str]) -> Command {
        let script = self.dir.0.join("script.sh");
        let mut args = prefix.to_vec();
        args.extend_from_slice(&["busybox", "udhcpc", "-i", "eth0", "-f"]);
        args.extend_from_slice(&["-s", script.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let mut cmd = vm.exec(&args);
        cmd.env("DHCP_OUT", &self.dir.0);
        cmd
    }

    /// Run udhcpc once (`-n -q`): true if it obtained a lease.
    fn obtain(&self, vm: &Netns, tries: u32) -> (bool, String) {
        let tries = tries.to_string();
        let out = self
            .command(
                vm,
                &["timeout", "30"],
                &["-n", "-q", "-t", &tries, "-T", "1"],
            )
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), log)
    }

    /// Start udhcpc in the background (it stays to renew). No `timeout`
    /// in between: killing the child must kill udhcpc itself.
    fn spawn(&self, vm: &Netns) -> Background {
        Background(
            self.command(vm, &[], &["-t", "5", "-T", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn events(&self) -> Vec<String> {
        fs::read_to_string(self.dir.0.join("events"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The variables the script saw at `event` (bound, renew).
    fn env(&self, event: &str) -> BTreeMap<String, String> {
        fs::read_to_string(self.dir.0.join(event))
            .unwrap_or_else(|e| panic!("no {event} recorded: {e}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn lease(mac_addr: &str, ip: &str) -> DhcpLease {
    DhcpLease {
        mac: mac(mac_addr),
        ip: ip.parse().unwrap(),
        prefix_len: 24,
        gateway: Some(GATEWAY.parse().unwrap()),
        dns_nameservers: vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
        host_routes: vec![RouteSpec {
            destination: "192.168.10.0/24".parse().unwrap(),
            nexthop: "10.0.0.254".parse().unwrap(),
        }],
        // Not the veth's 1450: seeing 1400 in the VM proves option 26 applied.
        mtu: 1400,
        lease_seconds: 3600,
        // The port's own (Neutron's extra_dhcp_opts of ip_version 4), as
        // a PXE-booting port has them, by name and by number.
        extra_options: [
            ("bootfile-name", "pxelinux.0"),
            ("tftp-server", "tftp.example"),
            ("server-ip-address", "10.0.0.9"),
            ("option:domain-name", "example.org"),
            ("42", "10.0.0.4"),
            ("router", "10.0.0.99"),
        ]
        .into_iter()
        .map(|(name, value)| DhcpOptionSpec {
            name: name.into(),
            value: value.into(),
        })
        .collect(),
    }
}

/// Frames with UDP source port 67 that left through `device` while `f` ran.
fn dhcp_replies_out_of(host: &Host, device: &str, f: impl FnOnce()) -> usize {
    let dir = Scratch::new();
    let pcap = dir.0.join("out.pcap");
    let mut tcpdump = Background(
        host.ns
            .exec(&[
                "tcpdump",
                "-i",
                device,
                "-U",
                "-n",
                "-w",
                pcap.to_str().unwrap(),
                "-Q",
                "out",
                "udp",
                "src",
                "port",
                "67",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // tcpdump says "listening on …" once its filter is in place.
    {
        use std::io::Read;
        let stderr = tcpdump.0.stderr.as_mut().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("listening on") {
            assert_eq!(stderr.read(&mut byte).unwrap(), 1, "tcpdump exited");
            seen.push(byte[0]);
        }
    }
    f();
    thread::sleep(Duration::from_millis(200));
    drop(tcpdump);
    let out = run(&["tcpdump", "-n", "-r", pcap.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

// === tests ===

const MAC1: &str = "fa:16:3e:00:00:01";
const MAC2: &str = "fa:16:3e:00:00:02";
const TAP1: &str = "tap2edab4ec-d2";
const TAP2: &str = "tap7c1f0a3b-9e";

/// The VM gets exactly its port's lease and applies it; a VM on the same
/// bridge whose MAC has no lease gets nothing, neither from its own device
/// (served, but for another MAC) nor through the bridge; a changed lease is
/// picked up at the next renewal (NAK, then the new address).
#[test]
fn vm_gets_exactly_its_ports_lease() {
    let host = Host::new();
    let vm1 = Netns::new("vm1");
    let vm2 = Netns::new("vm2");
    host.plug(&vm1, TAP1, MAC1);
    host.plug(&vm2, TAP2, MAC2);

    let server = ServerThread::start(&host.ns);
    server.set_ports(vec![
        (TAP1, lease(MAC1, "10.0.0.5")),
        // TAP2's port has another MAC than the VM behind it.
        (TAP2, lease("fa:16:3e:00:00:99", "10.0.0.6")),
    ]);
    server.wait_serving(TAP1, true);
    server.wait_serving(TAP2, true);

    // --- VM 1: exactly its lease, and only its own device carries replies.
    let client1 = Client::new();
    let mut obtained = (false, String::new());
    let leaked = dhcp_replies_out_of(&host, TAP2, || {
        obtained = client1.obtain(&vm1, 5);
    });
    assert!(obtained.0, "udhcpc failed:\n{}", obtained.1);
    assert_eq!(leaked, 0, "a reply for VM 1 left through VM 2's device");

    let env = client1.env("bound");
    let expect = |k: &str, v: &str| assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    expect("ip", "10.0.0.5");
    expect("mask", "24");
    expect("router", GATEWAY);
    expect("serverid", GATEWAY);
    expect("dns", "10.0.0.2 10.0.0.3");
    expect("mtu", "1400");
    expect("lease", "3600");
    expect(
        "staticroutes",
        "0.0.0.0/0 10.0.0.1 192.168.10.0/24 10.0.0.254",
    );
    // The port's own options; its `router` is the server's to say.
    expect("siaddr", "10.0.0.9");
    expect("tftp", "tftp.example");
    expect("bootfile", "pxelinux.0");
    expect("domain", "example.org");
    expect("ntpsrv", "10.0.0.4");

    // What the kernel of VM 1 now has.
    let addrs = vm1.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.0.0.5/24 "), "{addrs}");
    assert_eq!(addrs.matches("inet ").count(), 1, "{addrs}");
    let link = vm1.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1400 "), "{link}");
    let routes = vm1.ip(&["-4", "route", "show"]);
    assert!(routes.contains("default via 10.0.0.1 dev eth0"), "{routes}");
    assert!(
        routes.contains("192.168.10.0/24 via 10.0.0.254 dev eth0"),
        "{routes}"
    );
    let status1 = server.status(TAP1);
    assert_eq!(status1.replies, 2, "OFFER and ACK: {status1:?}");

    // Other traffic on the tap never reaches the server (kernel filter).
    let ping = vm1
        .exec(&["busybox", "ping", "-c", "3", "-W", "1", GATEWAY])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    assert_eq!(server.status(TAP1), status1);

    // --- VM 2: its MAC has no lease: no answer, and udhcpc -n gives up.
    let before1 = server.status(TAP1);
    let client2 = Client::new();
    let (ok, log) = client2.obtain(&vm2, 2);
    assert!(!ok, "VM 2 got a lease:\n{log}");
    assert!(!client2.events().iter().any(|e| e == "bound"));
    let status2 = server.status(TAP2);
    assert!(status2.requests >= 2, "{status2:?}");
    assert_eq!(status2.replies, 0, "{status2:?}");
    // VM 2's broadcasts flooded out of TAP1 are frames TAP1 *sent*: ignored.
    assert_eq!(server.status(TAP1), before1);
    let addrs = vm2.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(!addrs.contains("inet "), "{addrs}");

    // --- Renewal and a lease changed in place: the port's IP moves to .7.
    let client = Client::new();
    let _udhcpc = client.spawn(&vm1);
    wait_until("bound", Duration::from_secs(10), || {
        client.events().iter().any(|e| e == "bound")
    });
    // A renewal is a unicast to the server identifier (the gateway, here an
    // address of the host's bridge): seen on the tap all the same, and ACKed.
    let replies = server.status(TAP1).replies;
    signal_udhcpc(&client);
    wait_until("renew", Duration::from_secs(10), || {
        client.events().iter().any(|e| e == "renew")
    });
    assert_eq!(client.env("renew").get("ip").unwrap(), "10.0.0.5");
    // At least one ACK: now and then udhcpc 1.35 is not listening yet when
    // our ACK (sent well under a millisecond after the request) arrives; its
    // kernel answers "port 68 unreachable" and udhcpc repeats the request
    // (broadcast, rebinding) a second later, which is ACKed too.
    assert!(server.status(TAP1).replies > replies);

    server.set_ports(vec![
        (TAP1, lease(MAC1, "10.0.0.7")),
        (TAP2, lease("fa:16:3e:00:00:99", "10.0.0.6")),
    ]);
    signal_udhcpc(&client);
    // NAK → deconfig → DISCOVER → bound with the new address.
    wait_until("bound again", Duration::from_secs(15), || {
        client.events().iter().filter(|e| *e == "bound").count() == 2
    });
    assert_eq!(client.env("bound").get("ip").unwrap(), "10.0.0.7");
    let events = client.events();
    let renew = events.iter().rposition(|e| e == "renew").unwrap();
    assert!(events[renew..].iter().any(|e| e == "nak"), "{events:?}");
    let addrs = vm1.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.0.0.7/24 "), "{addrs}");
}

/// Send SIGUSR1 (renew) to the udhcpc whose script writes to `client`'s dir.
fn signal_udhcpc(client: &Client) {
    let dir = client.dir.0.to_str().unwrap().to_owned();
    // Find it by its script path on the command line.
    let pids = run(&["pgrep", "-f", &format!("^busybox udhcpc .*{dir}/script.sh")]);
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    let pid = pids.lines().next().expect("udhcpc is running");
    sh(&["kill", "-USR1", pid]);
}

/// A port whose device does not exist yet is served once it appears; a
/// device deleted and created again (new ifindex) is served again.
#[test]
fn devices_that_appear_late_or_come_back_are_served() {
    let host = Host::new();
    let vm = Netns::new("vm");
    const TAP: &str = "tapc0ffee00-11";
    const MAC: &str = "fa:16:3e:00:00:11";

    let server = ServerThread::start(&host.ns);
    server.set_ports(vec![(TAP, lease(MAC, "10.0.0.11"))]);
    thread::sleep(Duration::from_millis(300));
    assert!(!server.status(TAP).serving, "no device yet");

    // Appears: picked up by the retry tick, no set_ports needed.
    host.plug(&vm, TAP, MAC);
    server.wait_serving(TAP, true);
    let client = Client::new();
    let (ok, log) = client.obtain(&vm, 5);
    assert!(ok, "{log}");
    assert_eq!(client.env("bound").get("ip").unwrap(), "10.0.0.11");

    // Goes down and up again: the same socket serves on.
    host.ns.ip(&["link", "set", TAP, "down"]);
    thread::sleep(Duration::from_millis(200));
    host.ns.ip(&["link", "set", TAP, "up"]);
    assert!(server.status(TAP).serving);
    let client = Client::new();
    let (ok, log) = client.obtain(&vm, 5);
    assert!(ok, "{log}");

    // Disappears (the kernel unbinds the socket): noticed without help.
    host.unplug(TAP);
    server.wait_serving(TAP, false);

    // Comes back under the same name, with a new ifindex.
    host.plug(&vm, TAP, MAC);
    server.set_ports(vec![(TAP, lease(MAC, "10.0.0.12"))]);
    server.wait_serving(TAP, true);
    let client = Client::new();
    let (ok, log) = client.obtain(&vm, 5);
    assert!(ok, "{log}");
    assert_eq!(client.env("bound").get("ip").unwrap(), "10.0.0.12");

    // Dropped from the ports: no longer served, and nothing answers.
    server.set_ports(vec![]);
    let client = Client::new();
    let (ok, log) = client.obtain(&vm, 2);
    assert!(!ok, "{log}");
}

/// Edits change only the devices they list: a lease handed again unchanged
/// leaves its port's task and socket be (its counters run on), a changed
/// one is answered at once, a removed device is no longer served, and the
/// devices not listed are not disturbed.
#[test]
fn edits_change_only_their_devices() {
    let host = Host::new();
    let vm1 = Netns::new("vm1");
    let vm2 = Netns::new("vm2");
    host.plug(&vm1, TAP1, MAC1);
    host.plug(&vm2, TAP2, MAC2);
    let server = ServerThread::start(&host.ns);
    server.set_ports(vec![
        (TAP1, lease(MAC1, "10.0.0.5")),
        (TAP2, lease(MAC2, "10.0.0.6")),
    ]);
    server.wait_serving(TAP1, true);
    server.wait_serving(TAP2, true);
    let client = Client::new();
    let (ok, log) = client.obtain(&vm1, 5);
    assert!(ok, "{log}");
    let answered = server.status(TAP1).replies;
    assert!(answered > 0);

    // The same lease again, and another device's new one.
    server.update_ports(vec![
        (TAP1, Some(lease(MAC1, "10.0.0.5"))),
        (TAP2, Some(lease(MAC2, "10.0.0.8"))),
    ]);
    let client2 = Client::new();
    let (ok, log) = client2.obtain(&vm2, 5);
    assert!(ok, "{log}");
    assert_eq!(client2.env("bound").get("ip").unwrap(), "10.0.0.8");
    let tap1 = server.status(TAP1);
    // A new task would count from nothing.
    assert!(tap1.serving && tap1.replies >= answered, "{tap1:?}");

    // TAP2 removed; TAP1, not listed, serves on.
    server.update_ports(vec![(TAP2, None)]);
    wait_until("TAP2 unserved", Duration::from_secs(5), || {
        server.served(TAP2).is_none()
    });
    let (ok, log) = Client::new().obtain(&vm2, 2);
    assert!(!ok, "{log}");
    let (ok, log) = Client::new().obtain(&vm1, 5);
    assert!(ok, "{log}");
    assert!(server.status(TAP1).replies > answered);
}
