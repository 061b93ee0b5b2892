//! `vnet server --store etcd` as a user runs it: a real etcd member on loopback
//! and real server processes over HTTP. What is created survives a clean stop and
//! a kill -9 of the server, a second server on the same prefix is refused, and a
//! dead etcd turns writes into 503s in Neutron's error shape, not hangs.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, VNET, free_addr, http};
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
    let limits = etcd.limits();
    let mut cmd = Command::new(VNET);
    cmd.args([
        "server",
        "--listen",
        &api.to_string(),
        "--store",
        "etcd",
        "--etcd-endpoints",
        etcd.client_url(),
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
    let mut proc = common::spawn(server_command(etcd, api), log);
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

    // A second server on the same prefix is refused while the first runs.
    let second_api = free_addr();
    let mut second = common::spawn(
        server_command(&etcd, second_api),
        &dir.path().join("server2.log"),
    );
    let status = exited(&mut second, Duration::from_secs(20));
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("server2.log")).unwrap();
    assert!(log.contains("holds etcd prefix /vnet"), "{log}");

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
