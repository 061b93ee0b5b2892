//! The `vnet` binary as a user meets it, without root: a real `vnet server`
//! process stopped with SIGTERM while an agent's state stream is open, its
//! refusals of bad flags (before it creates anything), and `vnet trace` and
//! `vnet lab` taking names and giving clear errors.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, VNET, free_addr, http, wait_for};
use serde_json::{Value, json};

/// A server on a fresh data dir (`dir/data`), answering.
fn server(dir: &std::path::Path, api: SocketAddr) -> Proc {
    let mut cmd = Command::new(VNET);
    cmd.args([
        "server",
        "--listen",
        &api.to_string(),
        "--data-dir",
        dir.join("data").to_str().unwrap(),
    ]);
    let proc = common::spawn(cmd, &dir.join("server.log"));
    wait_for("the server", Duration::from_secs(10), || {
        TcpStream::connect(api).is_ok()
    });
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

fn register(api: SocketAddr, host: &str) {
    let reg = json!({"protocol_version": compiler::protocol::PROTOCOL_VERSION,
                     "name": host, "underlay_ip": "192.0.2.1", "capabilities": []});
    call(api, "PUT", &format!("/vnet/v1/hosts/{host}"), reg);
}

/// A network with 10.0.0.0/24 and named ports bound to `host`, reported
/// wired (so ACTIVE); returns their ids.
fn active_ports(api: SocketAddr, host: &str, names: &[&str]) -> Vec<String> {
    let net = call(
        api,
        "POST",
        "/v2.0/networks",
        json!({"network": {"name": "n"}}),
    );
    let net = net["network"]["id"].as_str().unwrap().to_owned();
    call(
        api,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
    );
    let ids: Vec<String> = names
        .iter()
        .map(|name| {
            let port = call(
                api,
                "POST",
                "/v2.0/ports",
                json!({"port": {"network_id": net, "name": name, "binding:host_id": host}}),
            );
            port["port"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    call(
        api,
        "PUT",
        &format!("/vnet/v1/hosts/{host}/ports"),
        json!({"revision": 0, "wired": ids}),
    );
    for id in &ids {
        let port = call(api, "GET", &format!("/v2.0/ports/{id}"), json!(null));
        assert_eq!(port["port"]["status"], "ACTIVE", "{port}");
    }
    ids
}

fn vnet(args: &[&str]) -> Output {
    Command::new(VNET).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 16 #3: a server stopped while an agent streams its state exits
/// within the grace period, and its hosts' ports stay as they were (the
/// reaper does not take the silence of a stopping server for dead agents).
#[test]
fn sigterm_with_an_open_state_stream_exits_promptly_and_leaves_ports_active() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let mut srv = server(dir.path(), api);
    register(api, "h1");
    let ports = active_ports(api, "h1", &["p1"]);

    // The agent's stream, open: its snapshot line has arrived.
    let mut stream = TcpStream::connect(api).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /vnet/v1/hosts/h1/state HTTP/1.1\r\nHost: {api}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while !line.contains("snapshot") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed");
    }

    let stopped = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &srv.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = stopped + api::SHUTDOWN_GRACE + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = srv.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {:?} of SIGTERM",
            deadline - stopped
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    // The stream was ended by the server, not left hanging.
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains("missed its heartbeats"), "{log}");
    drop(srv);

    // Restarted on the same data: the port is still ACTIVE.
    let _srv = server(dir.path(), api);
    let port = call(
        api,
        "GET",
        &format!("/v2.0/ports/{}", ports[0]),
        json!(null),
    );
    assert_eq!(port["port"]["status"], "ACTIVE", "{port}");
}

/// Issue 16 #10: bounds and refusals come before any side effect.
#[test]
fn bad_server_flags_are_refused_before_anything_is_created() {
    let out = vnet(&["server", "--max-mtu", "10"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("68..=9000"), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(VNET)
        .args([
            "server",
            "--auth",
            "keystone",
            "--keystone-url",
            "http://127.0.0.1:5000",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("VNET_AGENT_TOKEN", "t")
        .env_remove("VNET_KEYSTONE_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--keystone-password"), "{err}");
    assert!(
        !err.contains("Neutron v2.0 API"),
        "it claimed to listen: {err}"
    );
    assert!(!data.exists(), "it created the data dir");
}

/// Issue 16 #10 and #2: "Address already in use" names the address.
#[test]
fn a_taken_address_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = vnet(&[
        "server",
        "--listen",
        &addr.to_string(),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
        "{err}"
    );
}

/// Issue 16 #10 and #9: lab arguments are checked before anything exists,
/// with the ranges that are valid.
#[test]
fn lab_arguments_are_refused_with_valid_ranges_and_nothing_created() {
    let out = vnet(&["lab", "up", "--hosts", "300"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1..=200"), "{}", stderr(&out));

    let name = "bad name/with slash";
    let out = vnet(&["lab", "up", "--name", name]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lab name"), "{}", stderr(&out));
    assert!(!std::path::Path::new("/run/vnet-lab/bad name").exists());
    assert!(!std::path::Path::new("/run/vnet-lab-logs/bad name").exists());
}

/// Issue 16 #7: `vnet trace` takes port names, and prints names with short
/// ids; an unknown name is a sentence, not a JSON 404.
#[test]
fn trace_takes_port_names_and_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let _srv = server(dir.path(), api);
    register(api, "h1");
    let ids = active_ports(api, "h1", &["vm1-port", "vm2-port"]);
    let server = format!("http://{api}");
    let trace = |from: &str, to: &str| {
        Command::new(VNET)
            .args(["trace", "--from", from, "--to", to, "--server", &server])
            .env_remove("OS_ENDPOINT")
            .env_remove("OS_PROJECT_ID")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    // The compiler follows the store: wait until it has the ports.
    let mut out = trace("vm1-port", "vm2-port");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stderr(&out).contains("PortNotCompiled") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        out = trace("vm1-port", "vm2-port");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(2),
        "{text}{}",
        stderr(&out)
    );
    let label = format!("vm1-port ({})", &ids[0][..8]);
    assert!(text.contains(&label), "{text}");
    assert!(
        text.contains(&format!("vm2-port ({})", &ids[1][..8])),
        "{text}"
    );

    let out = trace("no-such-port", "10.0.0.9");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no port named or with id 'no-such-port'"),
        "{}",
        stderr(&out)
    );
}

/// Issue 16 #10: `lab vm create` explains its arguments, and which host
/// names it takes.
#[test]
fn lab_vm_create_documents_its_arguments() {
    let out = vnet(&["lab", "vm", "create", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("`h1` or its full name `<lab>-h1`"), "{help}");
    assert!(help.contains("its name or id"), "{help}");
    assert!(help.contains("must be bound to that host"), "{help}");
}
