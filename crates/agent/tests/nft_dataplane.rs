//! Security groups and port security enforced by `agent::nft`, checked with
//! real packets (root, namespaces): VMs with static IPs on one host and
//! across two, each host wired by the `linux` reconciler and then filtered
//! by the nft reconciler, with hand-made host states.

#![allow(clippy::unwrap_used)]

mod linux_common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};

use agent::nft::{NftConfig, NftReconciler, NftReport, ObservedNft};
use compiler::protocol::{
    AllowedSource, HostState, PortSecuritySpec, RuleDirection, RuleEthertype, RuleRemote, RuleSpec,
    SecurityGroupSpec,
};
use linux_common::*;
use testworld::{Fabric, Host, Netns, Vm};

const SERVER: &str = r#"
import socket, threading
def serve(c):
    try:
        while True:
            d = c.recv(100)
            if not d: break
            c.sendall(d)
    except Exception: pass
    c.close()
def tcp(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', p)); s.listen(64)
    while True:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
def udp(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', p))
    while True:
        d, a = s.recvfrom(100); s.sendto(d, a)
for p in (80, 22): threading.Thread(target=tcp, args=(p,), daemon=True).start()
threading.Thread(target=udp, args=(53,), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
"#;

/// `proto ip port [src[:port]]`: one exchange; prints ok or fail. With `hold` as
/// the source, one exchange, then another after a line on stdin.
const CLIENT: &str = r#"
import socket, sys
proto, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = sys.argv[4] if len(sys.argv) > 4 else None
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM)
s.settimeout(1.5)
if src and src != 'hold':
    host, _, sport = src.partition(':')
    s.bind((host, int(sport or 0)))
def once(m):
    s.send(m)
    return s.recv(10) == m
try:
    s.connect((ip, port))
    print('ok' if once(b'x') else 'fail', flush=True)
    if src == 'hold':
        sys.stdin.readline()
        print('ok' if once(b'y') else 'fail', flush=True)
except Exception as e:
    print('fail', e, flush=True)
"#;

/// A VM's echo server (TCP 80 and 22, UDP 53), killed on drop.
struct Server(Child);

impl Server {
    fn start(vm: &Vm) -> Server {
        let mut child = vm
            .ns
            .command("python3")
            .args(["-c", SERVER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether one exchange over `proto` from `vm` (from `src` if given) to
/// `ip:port` gets its echo.
fn flows(vm: &Vm, proto: &str, ip: &str, port: u16, src: Option<&str>) -> bool {
    let port = port.to_string();
    let mut args = vec!["-c", CLIENT, proto, ip, &port];
    args.extend(src);
    let out = vm.ns.exec("python3", &args).unwrap();
    out.trim() == "ok"
}

fn tcp(vm: &Vm, ip: &str, port: u16) -> bool {
    flows(vm, "tcp", ip, port, None)
}

fn rule(
    dir: RuleDirection,
    protocol: Option<u8>,
    ports: Option<(u16, u16)>,
    remote: RuleRemote,
) -> RuleSpec {
    RuleSpec {
        id: format!("{dir:?}-{protocol:?}-{ports:?}"),
        direction: dir,
        ethertype: RuleEthertype::IPv4,
        protocol,
        ports,
        icmp: None,
        remote,
    }
}

fn icmp_echo(dir: RuleDirection, remote: RuleRemote) -> RuleSpec {
    RuleSpec {
        icmp: Some((8, None)),
        ..rule(dir, Some(1), None, remote)
    }
}

fn secured(s: &mut HostState, port: &str, mac_s: &str, ip_s: &str, groups: &[&str]) {
    s.port_security.insert(
        port.into(),
        PortSecuritySpec {
            enabled: true,
            security_groups: groups.iter().map(|g| g.to_string()).collect(),
            allowed_sources: vec![AllowedSource {
                mac: mac(mac_s),
                ip: format!("{ip_s}/32").parse().unwrap(),
            }],
        },
    );
}

fn unsecured(s: &mut HostState, port: &str) {
    s.port_security.insert(
        port.into(),
        PortSecuritySpec {
            enabled: false,
            security_groups: vec![],
            allowed_sources: vec![],
        },
    );
}

/// "client": egress anywhere. "server": TCP 80 from members of "client",
/// UDP 53 from anyone, ping from 10.0.0.0/24; no egress rule (so only
/// replies go out).
fn groups(s: &mut HostState, clients: &[&str]) {
    s.security_groups.insert(
        "client".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![rule(RuleDirection::Egress, None, None, RuleRemote::Any)],
        },
    );
    s.security_groups.insert(
        "server".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![
                rule(
                    RuleDirection::Ingress,
                    Some(6),
                    Some((80, 80)),
                    RuleRemote::Group("client".into()),
                ),
                rule(
                    RuleDirection::Ingress,
                    Some(17),
                    Some((53, 53)),
                    RuleRemote::Any,
                ),
                icmp_echo(
                    RuleDirection::Ingress,
                    RuleRemote::Prefix("10.0.0.0/24".parse().unwrap()),
                ),
            ],
        },
    );
    s.remote_groups.insert(
        "client".into(),
        clients
            .iter()
            .map(|ip| format!("{ip}/32").parse().unwrap())
            .collect::<BTreeSet<_>>(),
    );
}

fn nft(ns: &Netns, state: &HostState) -> NftReport {
    ns.run(|| {
        NftReconciler::new(NftConfig::default())
            .reconcile(state)
            .unwrap()
    })
}

/// A cached reconcile by a long-lived reconciler (the daemon's steady
/// state); checks that its view is what nftables then holds.
fn nft_cached(ns: &Netns, r: &NftReconciler, state: &HostState) -> NftReport {
    ns.run(|| {
        let report = r.reconcile_cached(state).unwrap();
        let want = agent::nft::desired(state, &NftConfig::default());
        assert_eq!(r.observe().unwrap(), ObservedNft::from_ruleset(&want));
        report
    })
}

fn wire(host: &Host, state: &HostState) -> NftReport {
    let report = reconcile_once(&host.ns, &config(host), state);
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    nft(&host.ns, state)
}

#[test]
fn security_groups_and_port_security_on_one_host() {
    let fabric = Fabric::new("nf").unwrap();
    let host = Host::new(&fabric, "nf", 1).unwrap();
    // (port, device, mac, ip): a and d are clients, b the server, c and e
    // have port security off.
    let ports = [
        ("pa", "tapa", "fa:16:3e:00:20:0a", "10.0.0.10"),
        ("pb", "tapb", "fa:16:3e:00:20:0b", "10.0.0.11"),
        ("pc", "tapc", "fa:16:3e:00:20:0c", "10.0.0.12"),
        ("pd", "tapd", "fa:16:3e:00:20:0d", "10.0.0.13"),
        ("pe", "tape", "fa:16:3e:00:20:0e", "10.0.0.14"),
    ];
    let mut state = HostState::default();
    let mut net = network(100);
    for (port, dev, m, ip) in ports {
        net.local_ports.insert(port.into(), local(dev, m, ip));
    }
    state.networks.insert("n".into(), net);
    secured(&mut state, "pa", ports[0].2, ports[0].3, &["client"]);
    secured(&mut state, "pb", ports[1].2, ports[1].3, &["server"]);
    unsecured(&mut state, "pc");
    // d uses the client group's rules but is not (yet) a member.
    secured(&mut state, "pd", ports[3].2, ports[3].3, &["client"]);
    unsecured(&mut state, "pe");
    groups(&mut state, &["10.0.0.10"]);

    let vms: Vec<Vm> = ports
        .iter()
        .map(|(_, dev, m, ip)| {
            let vm = Vm::new(&host, "nf", dev, m).unwrap();
            vm.add_ip(&format!("{ip}/24")).unwrap();
            vm
        })
        .collect();
    let (a, b, c, d, e) = (&vms[0], &vms[1], &vms[2], &vms[3], &vms[4]);
    let _servers: Vec<Server> = vms.iter().map(Server::start).collect();

    let first = wire(&host, &state);
    assert!(!first.transaction.is_empty());
    // The bridge was born with netfilter on: nothing to switch.
    assert!(first.bridges_switched.is_empty());

    // The server's ingress rules, with replies let out by conntrack.
    assert!(
        tcp(a, "10.0.0.11", 80),
        "a → b tcp/80 (a is a client member)"
    );
    assert!(!tcp(a, "10.0.0.11", 22), "a → b tcp/22: no rule");
    assert!(flows(a, "udp", "10.0.0.11", 53, None), "a → b udp/53");
    assert_eq!(a.ping("10.0.0.11", 2), 2, "a → b ping from the prefix");
    assert!(!tcp(d, "10.0.0.11", 80), "d is not a member of client");
    // b has no egress rule: it only answers.
    assert_eq!(b.ping("10.0.0.10", 1), 0, "b → a ping");
    assert!(!tcp(b, "10.0.0.12", 80), "b → c tcp");
    // a has no ingress rule.
    assert!(!tcp(c, "10.0.0.10", 80), "c → a tcp");
    // Ports without port security pass freely, both ways.
    assert!(tcp(c, "10.0.0.14", 22) && tcp(e, "10.0.0.12", 80), "c ↔ e");
    assert!(tcp(a, "10.0.0.12", 22), "a → c");
    assert!(!tcp(c, "10.0.0.11", 80), "c is no client member");
    assert_eq!(c.ping("10.0.0.11", 1), 1, "c → b ping: from the prefix");

    // Anti-spoofing: a forged source IP, then a forged MAC, are dropped.
    a.ns.ip(&["addr", "add", "10.0.0.99/24", "dev", "eth0"])
        .unwrap();
    assert!(
        !flows(a, "tcp", "10.0.0.12", 22, Some("10.0.0.99")),
        "forged IP"
    );
    assert!(
        flows(a, "tcp", "10.0.0.12", 22, Some("10.0.0.10")),
        "real IP"
    );
    a.ns.ip(&["link", "set", "eth0", "address", "fa:16:3e:00:20:99"])
        .unwrap();
    assert!(!tcp(a, "10.0.0.12", 22), "forged MAC");
    a.ns.ip(&["link", "set", "eth0", "address", ports[0].2])
        .unwrap();
    assert!(tcp(a, "10.0.0.12", 22), "MAC restored");

    // Unchanged: a second reconcile and a fresh reconciler apply nothing.
    let again = wire(&host, &state);
    assert!(again.unchanged(), "{:#?}", again.transaction);

    // A connection held open across updates that still allow it.
    let mut held =
        a.ns.command("python3")
            .args(["-c", CLIENT, "tcp", "10.0.0.11", "80", "hold"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut held_out = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    held_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok", "held connection opens");

    // Updates by one long-lived reconciler, planning against its view.
    let daemon = NftReconciler::new(NftConfig::default());
    assert!(nft_cached(&host.ns, &daemon, &state).unchanged());

    // A rule added opens a flow: one group chain rewritten.
    let mut opened = state.clone();
    if let Some(g) = opened.security_groups.get_mut("server") {
        g.rules.push(rule(
            RuleDirection::Ingress,
            Some(6),
            Some((20, 25)),
            RuleRemote::Any,
        ));
    }
    let r = nft_cached(&host.ns, &daemon, &opened);
    assert_eq!(
        r.transaction.chains_written,
        vec!["inet/g_server_i".to_string()],
        "{}",
        r.transaction.script
    );
    assert!(tcp(a, "10.0.0.11", 22), "tcp/22 opened");
    assert!(tcp(d, "10.0.0.11", 22), "tcp/22 opened for anyone");

    // d joins the client group: one element, no rule.
    let mut joined = opened.clone();
    joined
        .remote_groups
        .get_mut("client")
        .unwrap()
        .insert("10.0.0.13/32".parse().unwrap());
    let r = nft_cached(&host.ns, &daemon, &joined);
    assert_eq!(
        r.transaction.script,
        "add element inet vnet rg_client_4 { 10.0.0.13/32 }\n"
    );
    assert!(tcp(d, "10.0.0.11", 80), "d is now a member");

    // The rule removed again closes new connections; the held one (still
    // allowed by the tcp/80 rule) carries on.
    let mut closed = joined.clone();
    if let Some(g) = closed.security_groups.get_mut("server") {
        g.rules.pop();
    }
    let r = nft_cached(&host.ns, &daemon, &closed);
    assert_eq!(
        r.transaction.chains_written,
        vec!["inet/g_server_i".to_string()]
    );
    assert!(!tcp(a, "10.0.0.11", 22), "tcp/22 closed");
    writeln!(held.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    held_out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "ok",
        "the held connection survived three updates"
    );
    let _ = held.wait();

    // Port security turned off for b: it passes freely.
    let mut free = closed.clone();
    unsecured(&mut free, "pb");
    nft(&host.ns, &free);
    assert!(
        tcp(e, "10.0.0.11", 22),
        "e → b tcp/22 with b's security off"
    );
    assert!(tcp(b, "10.0.0.12", 80), "b → c");
    assert!(nft(&host.ns, &free).unchanged());
}

#[test]
fn groups_across_two_hosts_and_zones_per_network() {
    let fabric = Fabric::new("nx").unwrap();
    let h1 = Host::new(&fabric, "nx", 1).unwrap();
    let h2 = Host::new(&fabric, "nx", 2).unwrap();
    // Network 100: server b on host 1; clients a (member) and d (not yet) on
    // host 2. Network 200, same CIDR and addresses: a2 on host 2 and b2 on
    // host 1, whose group allows nothing in.
    let b = ("pb", "tapb", "fa:16:3e:00:30:0b", "10.0.0.11");
    let a = ("pa", "tapa", "fa:16:3e:00:30:0a", "10.0.0.10");
    let d = ("pd", "tapd", "fa:16:3e:00:30:0d", "10.0.0.13");
    let b2 = ("pb2", "tapb2", "fa:16:3e:00:40:0b", "10.0.0.11");
    let a2 = ("pa2", "tapa2", "fa:16:3e:00:40:0a", "10.0.0.10");
    let on_h1 = [(b, 100), (b2, 200)];
    let on_h2 = [(a, 100), (d, 100), (a2, 200)];
    let hosts = [&h1, &h2];
    let mut states = vec![HostState::default(), HostState::default()];
    for (h, (mine, theirs)) in [(&on_h1[..], &on_h2[..]), (&on_h2[..], &on_h1[..])]
        .into_iter()
        .enumerate()
    {
        let s = &mut states[h];
        let other = hosts[1 - h].underlay_ip().to_string();
        for ((port, dev, m, ip), vni) in mine {
            s.networks
                .entry(format!("n{vni}"))
                .or_insert_with(|| network(*vni))
                .local_ports
                .insert(port.to_string(), local(dev, m, ip));
            let groups: &[&str] = match *port {
                "pb" => &["server"],
                "pb2" => &["closed"],
                _ => &["client"],
            };
            secured(s, port, m, ip, groups);
        }
        for ((port, _, m, ip), vni) in theirs {
            s.networks
                .entry(format!("n{vni}"))
                .or_insert_with(|| network(*vni))
                .remote_ports
                .insert(port.to_string(), remote(m, ip, &other));
        }
        groups(s, &["10.0.0.10"]);
        s.security_groups.insert(
            "closed".into(),
            SecurityGroupSpec {
                stateful: true,
                rules: vec![],
            },
        );
    }
    let mut vms = vec![];
    for (h, list) in [(&h1, &on_h1[..]), (&h2, &on_h2[..])] {
        for ((_, dev, m, ip), _) in list {
            let vm = Vm::new(h, "nx", dev, m).unwrap();
            vm.add_ip(&format!("{ip}/24")).unwrap();
            vms.push(vm);
        }
    }
    let (vb, vb2, va, vd, va2) = (&vms[0], &vms[1], &vms[2], &vms[3], &vms[4]);
    let _servers: Vec<Server> = [vb, vb2].into_iter().map(Server::start).collect();
    for (h, s) in hosts.iter().zip(&states) {
        wire(h, s);
    }

    assert!(tcp(va, "10.0.0.11", 80), "a → b across hosts");
    assert!(!tcp(va, "10.0.0.11", 22), "a → b tcp/22 across hosts");
    assert!(!tcp(vd, "10.0.0.11", 80), "d not yet a member");
    assert!(!tcp(va2, "10.0.0.11", 80), "b2 lets nothing in");

    // Identical 5-tuples in two networks: a's UDP flow to b (allowed, so
    // conntrack has it established) must not let a2's identical packets to
    // b2 in.
    let mut held = va
        .ns
        .command("python3")
        .args(["-c", CLIENT, "udp", "10.0.0.11", "53", "10.0.0.10:5353"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    BufReader::new(held.stdout.take().unwrap())
        .read_line(&mut out)
        .unwrap();
    assert_eq!(out.trim(), "ok");
    let _ = held.wait();
    assert!(
        !flows(va2, "udp", "10.0.0.11", 53, Some("10.0.0.10:5353")),
        "a2 → b2 with a's 5-tuple: another zone"
    );

    // d joins the client group: host 1 (the server's) changes one element.
    states[0]
        .remote_groups
        .get_mut("client")
        .unwrap()
        .insert("10.0.0.13/32".parse().unwrap());
    let r = nft(&h1.ns, &states[0]);
    assert_eq!(
        r.transaction.script,
        "add element inet vnet rg_client_4 { 10.0.0.13/32 }\n"
    );
    assert!(tcp(vd, "10.0.0.11", 80), "d → b as a member");
    // Both hosts stay converged.
    for (h, s) in hosts.iter().zip(&states) {
        assert!(nft(&h.ns, s).unchanged());
    }
}

/// Pings `ip` (v4 or v6) once from `vm`, from `src` if given.
fn ping_from(vm: &Vm, ip: &str, src: Option<&str>) -> bool {
    let mut args = vec!["ping", "-c", "1", "-W", "1"];
    if let Some(src) = src {
        args.extend(["-I", src]);
    }
    args.push(ip);
    vm.ns.exec("busybox", &args).is_ok()
}

#[test]
fn ipv6_rules_neighbour_discovery_and_anti_spoofing() {
    let fabric = Fabric::new("n6").unwrap();
    let host = Host::new(&fabric, "n6", 1).unwrap();
    let ports = [
        ("pa", "tapa", "fa:16:3e:00:60:0a", "fd00::10"),
        ("pb", "tapb", "fa:16:3e:00:60:0b", "fd00::11"),
    ];
    let mut state = HostState::default();
    let mut net = network(600);
    for (port, dev, m, ip) in ports {
        net.local_ports.insert(port.into(), local(dev, m, ip));
    }
    state.networks.insert("n".into(), net);
    for ((port, _, m, ip), group) in ports.iter().zip(["client6", "server6"]) {
        state.port_security.insert(
            port.to_string(),
            PortSecuritySpec {
                enabled: true,
                security_groups: vec![group.into()],
                allowed_sources: vec![AllowedSource {
                    mac: mac(m),
                    ip: format!("{ip}/128").parse().unwrap(),
                }],
            },
        );
    }
    let v6 = |r: RuleSpec| RuleSpec {
        ethertype: RuleEthertype::IPv6,
        ..r
    };
    state.security_groups.insert(
        "client6".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![v6(rule(RuleDirection::Egress, None, None, RuleRemote::Any))],
        },
    );
    state.security_groups.insert(
        "server6".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![v6(RuleSpec {
                icmp: Some((128, None)),
                ..rule(
                    RuleDirection::Ingress,
                    Some(58),
                    None,
                    RuleRemote::Prefix("fd00::/64".parse().unwrap()),
                )
            })],
        },
    );
    let vms: Vec<Vm> = ports
        .iter()
        .map(|(_, dev, m, ip)| {
            let vm = Vm::new(&host, "n6", dev, m).unwrap();
            vm.ns
                .sysctl("net.ipv6.conf.eth0.disable_ipv6", "0")
                .unwrap();
            vm.ns
                .ip(&["addr", "add", &format!("{ip}/64"), "dev", "eth0", "nodad"])
                .unwrap();
            vm
        })
        .collect();
    wire(&host, &state);
    let (a, b) = (&vms[0], &vms[1]);
    assert!(
        ping_from(a, "fd00::11", None),
        "a → b ping6 (ND and the rule)"
    );
    assert!(!ping_from(b, "fd00::10", None), "b → a: a lets nothing in");
    a.ns.ip(&["addr", "add", "fd00::99/64", "dev", "eth0", "nodad"])
        .unwrap();
    assert!(
        !ping_from(a, "fd00::11", Some("fd00::99")),
        "forged IPv6 source"
    );
    assert!(
        ping_from(a, "fd00::11", Some("fd00::10")),
        "real IPv6 source"
    );
}

/// `nf_call_iptables` and `nf_call_ip6tables` of a bridge, as `ip -d -j` says.
fn bridge_nf(ns: &Netns, bridge: &str) -> (u64, u64) {
    let v = json(ns, "ip", &["-d", "-j", "link", "show", bridge]);
    let data = &v[0]["linkinfo"]["info_data"];
    (
        data["nf_call_iptables"].as_u64().unwrap(),
        data["nf_call_ip6tables"].as_u64().unwrap(),
    )
}

#[test]
fn bridges_are_born_filtered_and_opened_only_without_secured_ports() {
    let fabric = Fabric::new("nb").unwrap();
    let host = Host::new(&fabric, "nb", 1).unwrap();
    let mut state = HostState::default();
    let mut net = network(800);
    net.local_ports
        .insert("pa".into(), local("tapa", "fa:16:3e:00:80:0a", "10.0.0.10"));
    state.networks.insert("n".into(), net);
    unsecured(&mut state, "pa");
    let _vm = Vm::new(&host, "nb", "tapa", "fa:16:3e:00:80:0a").unwrap();
    // The linux reconciler creates the bridge with netfilter on.
    assert!(
        reconcile_once(&host.ns, &config(&host), &state)
            .failed
            .is_empty()
    );
    assert_eq!(bridge_nf(&host.ns, "vnbr800"), (1, 1));
    // No secured port: the nft reconciler turns it off, once.
    let r = nft(&host.ns, &state);
    assert_eq!(r.bridges_switched, vec!["vnbr800".to_string()]);
    assert_eq!(bridge_nf(&host.ns, "vnbr800"), (0, 0));
    assert!(nft(&host.ns, &state).unchanged());
    // A secured port: on again.
    secured(&mut state, "pa", "fa:16:3e:00:80:0a", "10.0.0.10", &[]);
    assert_eq!(nft(&host.ns, &state).bridges_switched.len(), 1);
    assert_eq!(bridge_nf(&host.ns, "vnbr800"), (1, 1));
    // A further linux reconcile leaves the switches alone.
    assert!(
        reconcile_once(&host.ns, &config(&host), &state)
            .applied
            .is_empty()
    );
    assert_eq!(bridge_nf(&host.ns, "vnbr800"), (1, 1));
}

#[test]
fn an_address_group_admits_its_addresses_and_grows_without_reloading() {
    let fabric = Fabric::new("ng").unwrap();
    let host = Host::new(&fabric, "ng", 1).unwrap();
    // b serves tcp/80 to the addresses of address group "ag" (a's only, at
    // first); a and d may send anywhere.
    let ports = [
        ("pa", "tapa", "fa:16:3e:00:50:0a", "10.0.0.10"),
        ("pb", "tapb", "fa:16:3e:00:50:0b", "10.0.0.11"),
        ("pd", "tapd", "fa:16:3e:00:50:0d", "10.0.0.13"),
    ];
    let mut state = HostState::default();
    let mut net = network(100);
    for (port, dev, m, ip) in ports {
        net.local_ports.insert(port.into(), local(dev, m, ip));
    }
    state.networks.insert("n".into(), net);
    secured(&mut state, "pa", ports[0].2, ports[0].3, &["client"]);
    secured(&mut state, "pb", ports[1].2, ports[1].3, &["web"]);
    secured(&mut state, "pd", ports[2].2, ports[2].3, &["client"]);
    state.security_groups.insert(
        "client".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![rule(RuleDirection::Egress, None, None, RuleRemote::Any)],
        },
    );
    state.security_groups.insert(
        "web".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![rule(
                RuleDirection::Ingress,
                Some(6),
                Some((80, 80)),
                RuleRemote::AddressGroup("ag".into()),
            )],
        },
    );
    let ag = |list: &[&str]| -> BTreeSet<ipnet::IpNet> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    };
    state
        .address_groups
        .insert("ag".into(), ag(&["10.0.0.10/32", "fd00::10/128"]));

    let vms: Vec<Vm> = ports
        .iter()
        .map(|(_, dev, m, ip)| {
            let vm = Vm::new(&host, "ng", dev, m).unwrap();
            vm.add_ip(&format!("{ip}/24")).unwrap();
            vm
        })
        .collect();
    let (a, d) = (&vms[0], &vms[2]);
    let _servers: Vec<Server> = vms.iter().map(Server::start).collect();
    wire(&host, &state);
    assert!(tcp(a, "10.0.0.11", 80), "a's address is in the group");
    assert!(!tcp(d, "10.0.0.11", 80), "d's is not");
    assert!(!tcp(a, "10.0.0.11", 22), "the rule is tcp/80 only");

    // An address (a prefix holding d's) added: one element, no chain, no
    // table reloaded.
    let daemon = NftReconciler::new(NftConfig::default());
    assert!(nft_cached(&host.ns, &daemon, &state).unchanged());
    let mut grown = state.clone();
    grown.address_groups.insert(
        "ag".into(),
        ag(&["10.0.0.10/32", "10.0.0.12/30", "fd00::10/128"]),
    );
    let r = nft_cached(&host.ns, &daemon, &grown);
    assert_eq!(
        r.transaction.script,
        "add element inet vnet ag_ag_4 { 10.0.0.12/30 }\n"
    );
    assert!(tcp(d, "10.0.0.11", 80), "d's address is in the group now");
    assert!(tcp(a, "10.0.0.11", 80), "a's still is");

    // Both removed but d's prefix: a is out.
    let mut shrunk = grown.clone();
    shrunk
        .address_groups
        .insert("ag".into(), ag(&["10.0.0.12/30"]));
    let r = nft_cached(&host.ns, &daemon, &shrunk);
    assert!(r.transaction.chains_written.is_empty(), "{r:#?}");
    assert!(!tcp(a, "10.0.0.11", 80), "a's address left the group");
    assert!(tcp(d, "10.0.0.11", 80), "d's prefix is still there");
}

/// `nft -j list ruleset` as a fresh host's and an upgraded host's must
/// agree: handles (numbered in the order objects were made) left out,
/// tables, chains, sets and maps in name order, a map's or set's elements
/// sorted (a hash map lists in its random seed's order), rules in their
/// chain's order.
fn ruleset_listing(ns: &Netns) -> Vec<serde_json::Value> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.remove("handle");
                if let Some(serde_json::Value::Array(elements)) = o.get_mut("elem") {
                    elements.sort_by_key(|e| e.to_string());
                }
                o.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut all = json(ns, "nft", &["-j", "list", "ruleset"]);
    strip(&mut all);
    let mut items: Vec<serde_json::Value> = all["nftables"].as_array().unwrap().clone();
    // Objects in name order; rules stay in order after them (a stable sort
    // by chain keeps each chain's order).
    items.sort_by_key(|item| match item.get("rule") {
        Some(r) => (1, format!("{} {} {}", r["family"], r["table"], r["chain"])),
        None => (0, item.to_string()),
    });
    items
}

/// `nft monitor` in a namespace: what committed there, line by line.
struct Monitor<'a> {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    ns: &'a Netns,
}

impl<'a> Monitor<'a> {
    /// Returns once the monitor sees a commit in `ns`.
    fn start(ns: &'a Netns) -> Monitor<'a> {
        let mut child = ns
            .command("nft")
            .arg("monitor")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut monitor = Monitor { child, lines, ns };
        // The monitor listens once a marker's commit reaches it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if monitor
                .mark(std::time::Duration::from_millis(200))
                .is_some()
            {
                return monitor;
            }
            assert!(std::time::Instant::now() < deadline, "nft monitor silent");
        }
    }

    /// Commits a marker transaction (a table made and deleted) and returns
    /// every line the monitor printed before it, if the marker's commit
    /// is seen within `wait`.
    fn mark(&mut self, wait: std::time::Duration) -> Option<Vec<String>> {
        self.ns
            .sh("nft -f - <<'EOF'\nadd table netdev nu_mark\ndelete table netdev nu_mark\nEOF")
            .unwrap();
        let deadline = std::time::Instant::now() + wait;
        let mut before = vec![];
        let mut marked = false;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if line.contains("nu_mark") {
                marked = true;
            } else if marked && line.starts_with("# new generation") {
                return Some(before);
            } else if !marked {
                before.push(line);
            }
        }
    }
}

impl Drop for Monitor<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host upgraded from the agent whose base chains dispatched through
/// anonymous maps (2b4a067) to the named maps and the ports' filters to
/// their profiles' shared chains: its first start takes the
/// kernel's old ruleset to exactly a fresh host's, in one commit, and the
/// rules hold for real packets. The fixture is that agent's own
/// transaction for `state.json` on a fresh host (README, "Tests", says how
/// it was made).
#[test]
fn an_old_agents_ruleset_is_upgraded_in_one_commit() {
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nft_2b4a067");
    let read = |name: &str| std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    let state: HostState = serde_json::from_str(&read("state.json")).unwrap();
    let old = read("ruleset.nft");

    let fabric = Fabric::new("nu").unwrap();
    let upgraded = Host::new(&fabric, "nu", 1).unwrap();
    let fresh = Host::new(&fabric, "nu", 2).unwrap();
    let vms: Vec<Vm> = state
        .networks
        .values()
        .flat_map(|n| n.local_ports.values())
        .map(|p| {
            let vm = Vm::new(&upgraded, "nu", &p.device, &p.mac.to_string()).unwrap();
            vm.add_ip(&format!("{}/24", p.fixed_ips[0].ip_address))
                .unwrap();
            vm
        })
        .collect();
    // By device: tapa, tapb (server), tapc (no port security), tapd, tape.
    let (a, b, c, d) = (&vms[0], &vms[1], &vms[2], &vms[3]);
    let _servers: Vec<Server> = vms.iter().map(Server::start).collect();
    for host in [&upgraded, &fresh] {
        let report = reconcile_once(&host.ns, &config(host), &state);
        assert!(report.failed.is_empty(), "{:#?}", report.failed);
    }

    // The old agent's kernel state, and its rules in force.
    upgraded
        .ns
        .sh(&format!("nft -f - <<'EOF'\n{old}EOF"))
        .unwrap();
    assert!(tcp(a, "10.0.0.11", 80), "old rules: a (client) → b tcp/80");
    assert!(!tcp(d, "10.0.0.11", 80), "old rules: d is no member");

    // The new agent's first start, watched commit by commit.
    let mut monitor = Monitor::start(&upgraded.ns);
    let report = nft(&upgraded.ns, &state);
    let seen = monitor
        .mark(std::time::Duration::from_secs(10))
        .expect("the monitor saw the marker");
    let commits: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("# new generation"))
        .collect();
    assert_eq!(commits.len(), 1, "one transaction: {seen:#?}");
    // The base chains rewritten and their named maps made, the ports'
    // filter chains replaced by their profiles' (the anti-spoofing chains
    // kept: their text did not change).
    let mut written = report.transaction.chains_written.clone();
    written.retain(|c| !c.starts_with("inet/pe_") && !c.starts_with("inet/pi_"));
    written.retain(|c| !c.starts_with("bridge/pt_"));
    written.sort();
    assert_eq!(
        written,
        [
            "bridge/forward",
            "bridge/prerouting",
            "inet/egress",
            "inet/ingress",
            "inet/prerouting"
        ],
        "{}",
        report.transaction.script
    );
    let profiles = report.transaction.chains_written.len() - written.len();
    assert_eq!(
        profiles,
        3 * 2,
        "two profiles (client, server): {written:?}"
    );
    assert_eq!(report.transaction.sets_created.len(), 6);
    let mut deleted = report.transaction.chains_deleted.clone();
    deleted.sort();
    let want: Vec<String> = ["e", "i", "t"]
        .iter()
        .flat_map(|c| ["tapa", "tapb", "tapd", "tape"].map(|d| format!("{c}_{d}")))
        .map(|c| match &c[..1] {
            "t" => format!("bridge/{c}"),
            _ => format!("inet/{c}"),
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(deleted, want);

    // A fresh host's ruleset, and a second start plans nothing.
    assert!(!nft(&fresh.ns, &state).transaction.is_empty());
    assert_eq!(ruleset_listing(&upgraded.ns), ruleset_listing(&fresh.ns));
    assert!(nft(&upgraded.ns, &state).unchanged());

    // The rules, with real packets.
    assert!(tcp(a, "10.0.0.11", 80), "a (client) → b tcp/80");
    assert!(!tcp(a, "10.0.0.11", 22), "a → b tcp/22: no rule");
    assert!(!tcp(d, "10.0.0.11", 80), "d is no member of client");
    assert_eq!(c.ping("10.0.0.11", 1), 1, "c → b ping from the prefix");
    assert_eq!(b.ping("10.0.0.10", 1), 0, "b has no egress rule");
    assert!(tcp(a, "10.0.0.12", 22), "a → c (no port security)");
    assert!(!tcp(c, "10.0.0.10", 80), "a has no ingress rule");
    a.ns.ip(&["addr", "add", "10.0.0.99/24", "dev", "eth0"])
        .unwrap();
    assert!(
        !flows(a, "tcp", "10.0.0.12", 22, Some("10.0.0.99")),
        "a forged source"
    );
}
