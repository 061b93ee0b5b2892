//! `vnet server --store etcd` as a user runs it: a real etcd member on loopback
//! and real server processes over HTTP. What is created survives a clean stop and
//! a kill -9 of the server; several servers on one prefix are replicas of one
//! cloud (reads on any see writes acknowledged by any, allocation stays unique,
//! and a killed leader is replaced with nothing acknowledged lost); a dead etcd
//! turns writes into 503s in Neutron's error shape, not hangs.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, VNET, free_addr, http, try_http};
use compiler::protocol::{
    HostRegistration, HostState, PROTOCOL_VERSION, PortStatusReport, StreamMessage,
};
use serde_json::{Value, json};
use store::etcd::local::LocalEtcd;

fn start_etcd(dir: &Path) -> LocalEtcd {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(LocalEtcd::start(dir)).unwrap()
}

fn server_command(etcd: &LocalEtcd, api: SocketAddr) -> Command {
    server_command_with(etcd, api, etcd.limits().max_ops)
}

fn server_command_with(etcd: &LocalEtcd, api: SocketAddr, max_txn_ops: usize) -> Command {
    on_endpoints(etcd.client_url(), api, max_txn_ops)
}

/// A server on the etcd members at `endpoints` (comma-separated).
fn on_endpoints(endpoints: &str, api: SocketAddr, max_txn_ops: usize) -> Command {
    let limits = store::etcd::local::LocalEtcd::LIMITS;
    let mut cmd = Command::new(VNET);
    cmd.args([
        "server",
        "--listen",
        &api.to_string(),
        "--store",
        "etcd",
        "--etcd-endpoints",
        endpoints,
        "--etcd-max-txn-ops",
        &max_txn_ops.to_string(),
        "--etcd-max-request-bytes",
        &limits.max_bytes.to_string(),
        "--etcd-timeout",
        "2",
        "--etcd-claim-ttl",
        "2",
    ]);
    cmd
}

/// A server on `etcd`, answering.
fn server(etcd: &LocalEtcd, api: SocketAddr, log: &Path) -> Proc {
    answering(server_command(etcd, api), api, log)
}

/// `cmd` started, once it answers on `api`.
fn answering(cmd: Command, api: SocketAddr, log: &Path) -> Proc {
    let mut proc = common::spawn(cmd, log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(api).is_err() {
        if Instant::now() > deadline || proc.0.try_wait().unwrap().is_some() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the server did not answer; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    proc
}

fn call(api: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let (status, reply) = http(api, method, path, Some(&body));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {reply}"
    );
    reply
}

/// A network named `n` with an IPv4 subnet of `cidr`; the network's id.
fn network_with_subnet(api: SocketAddr, cidr: &str) -> String {
    let net = call(
        api,
        "POST",
        "/v2.0/networks",
        json!({"network": {"name": "n"}}),
    );
    let net_id = net["network"]["id"].as_str().unwrap().to_owned();
    call(
        api,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4}}),
    );
    net_id
}

/// Ports (id, MAC, IP) on one subnet, sorted by id.
fn ports(api: SocketAddr) -> Vec<(String, String, String)> {
    let (status, reply) = http(api, "GET", "/v2.0/ports", None);
    assert_eq!(status, 200, "{reply}");
    let mut ports: Vec<_> = reply["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["mac_address"].as_str().unwrap().to_owned(),
                p["fixed_ips"][0]["ip_address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ports.sort();
    ports
}

fn stop(proc: &Proc) {
    let status = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn exited(proc: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_server_on_etcd_keeps_the_cloud_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let api = free_addr();
    let mut first = server(&etcd, api, &dir.path().join("server1.log"));

    let net_id = network_with_subnet(api, "10.7.0.0/24");
    for i in 0..5 {
        call(
            api,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": net_id, "name": format!("p{i}")}}),
        );
    }
    let before = ports(api);
    assert_eq!(before.len(), 5);

    // A second server on the same prefix follows the first.
    let second_api = free_addr();
    let mut second = server(&etcd, second_api, &dir.path().join("server2.log"));
    assert_eq!(
        ports(second_api),
        before,
        "a follower serves the same cloud"
    );
    stop(&second);
    assert!(exited(&mut second, Duration::from_secs(20)).success());

    // A clean stop lets go of the claim: the next server starts at once.
    stop(&first);
    assert!(exited(&mut first, Duration::from_secs(20)).success());
    let mut again = server(&etcd, api, &dir.path().join("server3.log"));
    assert_eq!(ports(api), before, "the cloud survives a clean restart");

    // Acknowledged writes survive kill -9; the next server waits out the claim.
    let port = call(
        api,
        "POST",
        "/v2.0/ports",
        json!({"port": {"network_id": net_id, "name": "last"}}),
    );
    let _ = again.0.kill();
    let _ = again.0.wait();
    let _after_kill = server(&etcd, api, &dir.path().join("server4.log"));
    let after = ports(api);
    assert_eq!(after.len(), 6);
    assert!(
        after
            .iter()
            .any(|(id, _, _)| id == port["port"]["id"].as_str().unwrap())
    );
    // No address or MAC handed out twice across the restarts.
    let mut ips: Vec<_> = after.iter().map(|(_, _, ip)| ip.clone()).collect();
    let mut macs: Vec<_> = after.iter().map(|(_, mac, _)| mac.clone()).collect();
    ips.sort();
    ips.dedup();
    macs.sort();
    macs.dedup();
    assert_eq!((ips.len(), macs.len()), (6, 6), "{after:?}");
}

#[test]
fn a_dead_etcd_makes_writes_fail_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let api = free_addr();
    let _server = server(&etcd, api, &dir.path().join("server.log"));
    call(
        api,
        "POST",
        "/v2.0/networks",
        json!({"network": {"name": "before"}}),
    );
    drop(etcd);
    let started = Instant::now();
    let (status, reply) = http(
        api,
        "POST",
        "/v2.0/networks",
        Some(&json!({"network": {"name": "after"}})),
    );
    assert_eq!(status, 503, "{reply}");
    assert_eq!(
        reply["NeutronError"]["type"], "ServiceUnavailable",
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A request that would write more keys than etcd takes in one transaction is
/// refused (400) and changes nothing; the server goes on serving.
#[test]
fn a_request_larger_than_one_etcd_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let api = free_addr();
    let log = dir.path().join("server.log");
    let proc = common::spawn(server_command_with(&etcd, api, 8), &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(api).is_err() {
        assert!(Instant::now() < deadline, "the server did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let net_id = network_with_subnet(api, "10.8.0.0/24");
    let bulk: Vec<Value> = (0..20)
        .map(|i| json!({"network_id": net_id, "name": format!("p{i}")}))
        .collect();
    let (status, reply) = http(api, "POST", "/v2.0/ports", Some(&json!({"ports": bulk})));
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["NeutronError"]["type"], "InvalidInput", "{reply}");
    assert_eq!(ports(api), vec![], "a refused bulk create made nothing");
    call(
        api,
        "POST",
        "/v2.0/ports",
        json!({"ports": [{"network_id": net_id}, {"network_id": net_id}]}),
    );
    assert_eq!(ports(api).len(), 2);
    drop(proc);
}

/// `GET /vnet/v1/replica` of a server: whether it leads.
fn leads(api: SocketAddr) -> bool {
    try_http(api, "GET", "/vnet/v1/replica", None)
        .is_some_and(|(status, r)| status == 200 && r["replica"]["leads"] == true)
}

/// A port made: its id, its address, and when the request that made it was sent.
type Made = (String, String, Instant);

/// Creates a port on `net_id` through `apis[at]`, moving on to the next replica
/// while one does not answer or answers 503; `None` when the subnet is full.
fn create_port(apis: &[SocketAddr], at: &mut usize, net_id: &str) -> Option<Made> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = json!({"port": {"network_id": net_id}});
    loop {
        assert!(Instant::now() < deadline, "no replica took a create");
        let sent = Instant::now();
        match try_http(apis[*at], "POST", "/v2.0/ports", Some(&body)) {
            Some((201, p)) => {
                let port = &p["port"];
                let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
                return Some((port["id"].as_str().unwrap().to_owned(), ip.to_owned(), sent));
            }
            Some((409, r)) if r["NeutronError"]["type"] == "IpAddressGenerationFailure" => {
                return None;
            }
            Some((503, _)) | None => {
                *at = (*at + 1) % apis.len();
                std::thread::sleep(Duration::from_millis(50));
            }
            Some((status, reply)) => panic!("create: {status} {reply}"),
        }
    }
}

/// Three servers on one etcd are replicas of one cloud: one leads, the others
/// forward writes to it and serve reads from their own copy, after catching up
/// with every acknowledged write. Killing the leader (-9) elects another with
/// nothing acknowledged lost.
#[test]
fn replicas_serve_one_cloud_and_survive_their_leader() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let apis: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut procs: Vec<Option<Proc>> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| {
            Some(server(
                &etcd,
                *api,
                &dir.path().join(format!("server{i}.log")),
            ))
        })
        .collect();
    common::wait_for("one replica to lead", Duration::from_secs(20), || {
        apis.iter().filter(|a| leads(**a)).count() == 1
    });

    // Read your writes: a write through one replica is in a read through any
    // other made after the first answered.
    for (i, from) in apis.iter().enumerate() {
        let to = apis[(i + 1) % apis.len()];
        let net = call(
            *from,
            "POST",
            "/v2.0/networks",
            json!({"network": {"name": format!("n{i}")}}),
        );
        let id = net["network"]["id"].as_str().unwrap();
        let (status, read) = http(to, "GET", &format!("/v2.0/networks/{id}"), None);
        assert_eq!(
            status, 200,
            "written through {from}, read through {to}: {read}"
        );
        // If-Match through a follower is checked by the leader.
        let path = format!("/v2.0/networks/{id}");
        let rename = json!({"network": {"name": "renamed"}});
        let stale = common::http_with(
            to,
            "PUT",
            &path,
            &rename,
            &[("If-Match", "revision_number=99")],
        );
        assert_eq!(stale.0, 412, "{}", stale.1);
        let revision = read["network"]["revision_number"].to_string();
        let matching = common::http_with(
            to,
            "PUT",
            &path,
            &rename,
            &[("If-Match", &format!("revision_number={revision}"))],
        );
        assert_eq!(matching.0, 200, "{}", matching.1);
        let (_, again) = http(*from, "GET", &path, None);
        assert_eq!(again["network"]["name"], "renamed");
    }

    // Eight clients spread over the replicas on one /28 (13 addresses): no
    // address twice, and exactly the pool's size of creates succeed.
    let small = network_with_subnet(apis[0], "10.9.0.0/28");
    let created: Vec<Made> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let (apis, small) = (&apis, &small);
                s.spawn(move || {
                    let mut at = c % apis.len();
                    let mut mine = Vec::new();
                    while let Some(port) = create_port(apis, &mut at, small) {
                        mine.push(port);
                    }
                    mine
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let mut ips: Vec<&str> = created.iter().map(|(_, ip, _)| ip.as_str()).collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!((created.len(), ips.len()), (13, 13), "{created:?}");

    // Kill -9 the leader during a stream of creates through every replica:
    // another leads, every acknowledged create exists, and the dead one's
    // clients go on through the others.
    // Room for every create until the failover is over: about 1,000 fit in
    // the 3.5 s of a quick one here (a /22 filled up), and it may take 20 s.
    let big = network_with_subnet(apis[1], "10.10.0.0/18");
    call(
        apis[2],
        "PUT",
        "/v2.0/quotas/admin",
        json!({"quota": {"port": -1}}),
    );
    let leader = apis.iter().position(|a| leads(*a)).unwrap();
    let stop_at = std::sync::Mutex::new(None::<Instant>);
    let killed = std::sync::Mutex::new(None::<Instant>);
    let first_after = std::sync::Mutex::new(None::<Instant>);
    let acked: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|c| {
                let (apis, big, stop_at, killed, first_after) =
                    (&apis, &big, &stop_at, &killed, &first_after);
                s.spawn(move || {
                    let mut at = c;
                    let mut mine = Vec::new();
                    loop {
                        if stop_at.lock().unwrap().is_some_and(|t| Instant::now() > t) {
                            return mine;
                        }
                        let (id, _, sent) =
                            create_port(apis, &mut at, big).expect("the /18 is not full");
                        if let Some(k) = *killed.lock().unwrap() {
                            let mut first = first_after.lock().unwrap();
                            // Sent after the kill: an answer the dead leader could not give.
                            if first.is_none() && sent > k {
                                *first = Some(Instant::now());
                            }
                        }
                        mine.push(id);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let mut dead = procs[leader].take().unwrap();
        let _ = dead.0.kill();
        let _ = dead.0.wait();
        *killed.lock().unwrap() = Some(Instant::now());
        common::wait_for("another replica to lead", Duration::from_secs(20), || {
            apis.iter().filter(|a| leads(**a)).count() == 1
        });
        common::wait_for("a create after the kill", Duration::from_secs(20), || {
            first_after.lock().unwrap().is_some()
        });
        *stop_at.lock().unwrap() = Some(Instant::now() + Duration::from_secs(1));
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let pause = first_after.lock().unwrap().unwrap() - killed.lock().unwrap().unwrap();
    eprintln!("leader killed: first acknowledged create {pause:?} later");
    let survivors: Vec<SocketAddr> = (0..3).filter(|i| *i != leader).map(|i| apis[i]).collect();
    for api in &survivors {
        let (status, list) = http(*api, "GET", &format!("/v2.0/ports?network_id={big}"), None);
        assert_eq!(status, 200, "{list}");
        let listed: std::collections::BTreeSet<&str> = list["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|id| !listed.contains(id.as_str()))
            .collect();
        assert!(lost.is_empty(), "acknowledged but gone on {api}: {lost:?}");
        let mut ips: Vec<&str> = list["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["fixed_ips"][0]["ip_address"].as_str().unwrap())
            .collect();
        let n = ips.len();
        ips.sort_unstable();
        ips.dedup();
        assert_eq!(ips.len(), n, "an address handed out twice");
    }

    // An agent's replica dies (-9): the agent moves to another, resumes its
    // stream from its last revision there (deltas, no snapshot: nothing to
    // re-program), and its host and wired port stay up.
    let follower = (0..3).find(|i| *i != leader && !leads(apis[*i])).unwrap();
    let standing = 3 - leader - follower;
    let agent = agent::sync::Server::parse(&format!(
        "http://{},http://{}",
        apis[follower], apis[standing]
    ))
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bound = |name: &str| {
        let port = json!({"port": {"network_id": big, "name": name, "binding:host_id": "h1"}});
        call(apis[standing], "POST", "/v2.0/ports", port)["port"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    rt.block_on(agent.register(&registration("h1"))).unwrap();
    let wired = bound("wired");
    let mut stream = rt.block_on(agent.stream("h1", None)).unwrap();
    let seen = rt.block_on(read_until_port(&mut stream, &wired, true));
    rt.block_on(agent.report_ports(
        "h1",
        &PortStatusReport {
            revision: seen,
            wired: vec![wired.clone()],
        },
    ))
    .unwrap();
    let status = |api: SocketAddr| {
        http(api, "GET", &format!("/v2.0/ports/{wired}"), None).1["port"]["status"].clone()
    };
    assert_eq!(status(apis[standing]), "ACTIVE");
    drop(stream);
    let mut dead = procs[follower].take().unwrap();
    let _ = dead.0.kill();
    let _ = dead.0.wait();
    let moved = Instant::now();
    rt.block_on(agent.register(&registration("h1"))).unwrap();
    let later = bound("later");
    let mut stream = rt.block_on(agent.stream("h1", Some(seen))).unwrap();
    rt.block_on(read_until_port(&mut stream, &later, false));
    eprintln!(
        "agent's replica killed: streaming from another {:?} later",
        moved.elapsed()
    );
    assert_eq!(status(apis[standing]), "ACTIVE", "the wired port stayed up");
    let (_, host) = http(apis[standing], "GET", "/vnet/v1/hosts/h1", None);
    assert_eq!(host["host"]["alive"], true, "{host}");
    drop(procs);
}

fn registration(name: &str) -> HostRegistration {
    HostRegistration {
        protocol_version: PROTOCOL_VERSION,
        name: name.into(),
        underlay_ip: "192.0.2.1".parse().unwrap(),
        capabilities: Vec::new(),
        physical_networks: Vec::new(),
        gateway: false,
        availability_zone: "nova".into(),
    }
}

/// Reads `stream` until `port` is one of the host's ports; the revision
/// then. Only the first message may be a snapshot, and only if `snapshot`.
async fn read_until_port(stream: &mut agent::sync::StateStream, port: &str, snapshot: bool) -> i64 {
    let mut state = HostState::default();
    let mut first = true;
    let within = Duration::from_secs(20);
    loop {
        let message = tokio::time::timeout(within, stream.next())
            .await
            .expect("a state message in time")
            .unwrap()
            .expect("the stream goes on");
        let revision = match message {
            StreamMessage::Snapshot { revision, state: s } => {
                assert!(
                    snapshot && first,
                    "a snapshot where the stream should resume"
                );
                state = s;
                revision
            }
            StreamMessage::Delta { revision, changes } => {
                assert!(
                    !(snapshot && first),
                    "a resumed stream where a snapshot was due"
                );
                for change in changes {
                    state.apply(change);
                }
                revision
            }
            StreamMessage::Idle { revision } => revision,
        };
        first = false;
        if state.port_security.contains_key(port) {
            return revision;
        }
    }
}

/// Creates networks through `apis` from two clients (each moving on when a
/// replica does not answer or answers 503) while `during` runs, and a second
/// after. The ids acknowledged, and the longest time between two
/// acknowledgements. `during` is given the count acknowledged so far.
fn under_load(
    apis: &[SocketAddr],
    during: impl FnOnce(&dyn Fn() -> usize),
) -> (Vec<String>, Duration) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    let acked: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for c in 0..2 {
            let (stop, acked) = (&stop, &acked);
            s.spawn(move || {
                let mut at = c % apis.len();
                let body = json!({"network": {"name": "load"}});
                while !stop.load(Ordering::Relaxed) {
                    match try_http(apis[at], "POST", "/v2.0/networks", Some(&body)) {
                        Some((201, n)) => {
                            let id = n["network"]["id"].as_str().unwrap().to_owned();
                            acked.lock().unwrap().push((Instant::now(), id));
                        }
                        Some((503, _)) | None => {
                            at = (at + 1) % apis.len();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Some((status, reply)) => panic!("create: {status} {reply}"),
                    }
                }
            });
        }
        during(&|| acked.lock().unwrap().len());
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
    });
    let mut acked = acked.into_inner().unwrap();
    acked.sort();
    let pause = acked
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    (acked.into_iter().map(|(_, id)| id).collect(), pause)
}

/// Network ids a replica lists.
fn network_ids(api: SocketAddr) -> std::collections::BTreeSet<String> {
    let (status, list) = http(api, "GET", "/v2.0/networks", None);
    assert_eq!(status, 200, "{list}");
    list["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Two replicas on three etcd members, under write load: a member killed,
/// then the leader member killed, pause writes briefly and lose nothing
/// acknowledged; quorum lost, the leader steps down, writes answer 503
/// (Neutron's shape) and reads are served; quorum back, writes go on through
/// either replica, neither restarted, nothing acknowledged lost.
#[test]
fn replicas_ride_out_etcd_member_faults() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut etcd = rt
        .block_on(store::etcd::local::LocalCluster::start(dir.path(), 3))
        .unwrap();
    let endpoints = etcd.client_urls().join(",");
    let apis = [free_addr(), free_addr()];
    let max_ops = store::etcd::local::LocalEtcd::LIMITS.max_ops;
    let command = |api| on_endpoints(&endpoints, api, max_ops);
    let mut procs: Vec<Proc> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| {
            answering(
                command(*api),
                *api,
                &dir.path().join(format!("server{i}.log")),
            )
        })
        .collect();
    common::wait_for("one replica to lead", Duration::from_secs(20), || {
        apis.iter().filter(|a| leads(**a)).count() == 1
    });
    call(
        apis[0],
        "PUT",
        "/v2.0/quotas/admin",
        json!({"quota": {"network": -1}}),
    );

    let leader_member = rt.block_on(etcd.leader()).unwrap();
    let other_member = (leader_member + 1) % 3;
    let (acked, pause) = under_load(&apis, |count| {
        let more = |what: &str| {
            let seen = count();
            common::wait_for(what, Duration::from_secs(20), || count() > seen + 10);
        };
        more("creates before the faults");
        etcd.kill(other_member);
        more("creates with a member down");
        etcd.restart(other_member).unwrap();
        etcd.kill(leader_member);
        more("creates after etcd's leader was killed");
    });
    eprintln!(
        "etcd members killed under load: longest pause {pause:?}, {} creates",
        acked.len()
    );
    // The goal is under 5 s (2.4-3.9 s measured here); the bound leaves room
    // for a loaded CI machine, and still fails writes that stopped.
    assert!(pause < Duration::from_secs(10), "writes paused {pause:?}");
    let survivor = apis
        .iter()
        .copied()
        .find(|a| try_http(*a, "GET", "/v2.0/networks", None).is_some())
        .unwrap();
    let listed = network_ids(survivor);
    let lost: Vec<&String> = acked.iter().filter(|id| !listed.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but gone: {lost:?}");

    // Quorum lost: writes are refused in Neutron's shape, within a bound;
    // reads are served from memory.
    etcd.restart(leader_member).unwrap();
    common::wait_for("etcd whole again", Duration::from_secs(30), || {
        rt.block_on(etcd.leader()).is_some()
    });
    // A leader whose lease etcd could not confirm in time while it elected
    // (a 2 s ttl here) has stepped down; one leads again soon.
    let mut leader = None;
    common::wait_for("a replica to lead again", Duration::from_secs(30), || {
        leader = apis.iter().copied().find(|a| leads(*a));
        leader.is_some()
    });
    let leader = leader.unwrap();
    let follower = apis.iter().copied().find(|a| *a != leader).unwrap();
    etcd.kill(0);
    etcd.kill(1);
    // With nothing written, only the lease can tell the leader it may have
    // lost its claim: it stops answering as leader within the claim's ttl
    // (2 s), plus a read barrier's etcd timeout (2 s) for the answer.
    let started = Instant::now();
    common::wait_for("the leader to step down", Duration::from_secs(10), || {
        !leads(leader)
    });
    eprintln!(
        "quorum lost: the leader stepped down within {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    for api in [leader, follower] {
        let (status, reply) = http(api, "POST", "/v2.0/networks", Some(&json!({"network": {}})));
        assert_eq!(status, 503, "{reply}");
        assert_eq!(
            reply["NeutronError"]["type"], "ServiceUnavailable",
            "{reply}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let kept: std::collections::BTreeSet<String> = acked.iter().cloned().collect();
    for api in [leader, follower] {
        assert!(network_ids(api).is_superset(&kept), "reads without quorum");
    }

    // Quorum back: some replica leads and takes writes, with no restart of
    // any (the old leader took the claim up again, or follows).
    etcd.restart(0).unwrap();
    etcd.restart(1).unwrap();
    let (after, _) = under_load(&apis, |count| {
        common::wait_for("a create with quorum back", Duration::from_secs(30), || {
            count() > 0
        });
    });
    assert!(!after.is_empty());
    common::wait_for(
        "a create through the old leader",
        Duration::from_secs(30),
        || {
            try_http(
                leader,
                "POST",
                "/v2.0/networks",
                Some(&json!({"network": {}})),
            )
            .is_some_and(|(status, _)| status == 201)
        },
    );
    for proc in &mut procs {
        assert!(proc.0.try_wait().unwrap().is_none(), "a replica stopped");
    }
    let everywhere: Vec<_> = apis.iter().map(|a| network_ids(*a)).collect();
    assert_eq!(everywhere[0], everywhere[1], "the replicas converged");
    assert!(
        after
            .iter()
            .chain(&acked)
            .all(|id| everywhere[0].contains(id))
    );
    drop(procs);
}
