//! `vnet lab` as a new user drives it (root): a refused second `up` that
//! changes nothing, a second lab on a taken port failing fast with the
//! cause, `vm create`'s refusals, names for ports, `status` after the server
//! died, `restart-server`, and `down` keeping the logs. The lab's name is
//! this test's own (`lt<pid>`); a guard takes it down even on failure.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{VNET, http, wait_for};
use serde_json::{Value, json};

/// Takes the lab down on drop, whatever happened.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if Path::new("/run/vnet-lab").join(&self.0).exists() {
            let _ = Command::new(VNET)
                .args(["lab", "down", "--name", &self.0])
                .output();
        }
        let _ = std::fs::remove_dir_all(Path::new("/run/vnet-lab-logs").join(&self.0));
    }
}

fn lab(name: &str, args: &[&str]) -> Output {
    Command::new(VNET)
        .arg("lab")
        .args(args)
        .args(["--name", name])
        .env_remove("VNET_LAB")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn call(api: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let (status, reply) = http(api, method, path, Some(&body));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {reply}"
    );
    reply
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn server_pid(name: &str) -> u32 {
    let state: Value = serde_json::from_slice(
        &std::fs::read(Path::new("/run/vnet-lab").join(name).join("state.json")).unwrap(),
    )
    .unwrap();
    u32::try_from(state["server_pid"].as_u64().unwrap()).unwrap()
}

#[test]
fn a_users_first_hour_with_the_lab() {
    let name = format!("lt{}", std::process::id() % 100_000);
    let _guard = LabGuard(name.clone());
    let api = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let up = lab(&name, &["up", "--hosts", "2", "--listen", &api.to_string()]);
    assert!(up.status.success(), "{}", text(&up));
    // Progress on stderr while it works; the result names the lab quoted.
    assert!(text(&up).contains("waiting for 2 agents"), "{}", text(&up));
    assert!(
        text(&up).contains(&format!("lab '{name}' is up")),
        "{}",
        text(&up)
    );

    // A network and ports: p1 bound to h1, p2 to h2, p3 unbound.
    let net = call(
        api,
        "POST",
        "/v2.0/networks",
        json!({"network": {"name": "demo"}}),
    );
    let net = net["network"]["id"].as_str().unwrap().to_owned();
    call(
        api,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
    );
    for (port, host) in [("p1", Some(1)), ("p2", Some(2)), ("p3", None)] {
        let mut body = json!({"port": {"network_id": net, "name": port}});
        if let Some(h) = host {
            body["port"]["binding:host_id"] = json!(format!("{name}-h{h}"));
        }
        call(api, "POST", "/v2.0/ports", body);
    }

    // #1: a second `up` refuses and changes nothing.
    let server = server_pid(&name);
    let again = lab(&name, &["up", "--listen", &api.to_string()]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("already up"), "{}", text(&again));
    assert!(
        Path::new(&format!("/proc/{server}")).exists(),
        "the server is gone"
    );
    let (status, _) = http(api, "GET", &format!("/v2.0/networks/{net}"), None);
    assert_eq!(status, 200, "the network is gone");
    assert!(netns_exists(&format!("{name}-h1")));

    // #2: a second lab on the same address fails fast, says why and what to
    // use instead, and leaves nothing behind.
    let other = format!("{name}b");
    let _other_guard = LabGuard(other.clone());
    let started = Instant::now();
    let second = lab(&other, &["up", "--listen", &api.to_string()]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(started.elapsed() < Duration::from_secs(10));
    let said = text(&second);
    assert!(
        said.contains(&format!("cannot listen on {api}")) && said.contains("in use"),
        "{said}"
    );
    assert!(
        said.contains("--listen 127.0.0.1:"),
        "no free port suggested: {said}"
    );
    assert!(!Path::new("/run/vnet-lab").join(&other).exists());
    assert!(!netns_exists(&format!("{other}-fabric")));

    // #6 and #7: ports by name; a port on another host, an unbound one, and
    // one already in a VM are refused with what to do.
    let vm = lab(
        &name,
        &["vm", "create", "vm1", "--host", "h1", "--port", "p1"],
    );
    assert!(vm.status.success(), "{}", text(&vm));
    for (args, expected) in [
        (["vm2", "--host", "h1", "--port", "p2"], "--host"),
        (
            ["vm3", "--host", "h1", "--port", "p3"],
            "not bound to a host",
        ),
        (
            ["vm4", "--host", "h1", "--port", "p1"],
            "already plugged into VM vm1",
        ),
        (["vm5", "--host", "h1", "--port", "nope"], "no port named"),
    ] {
        let mut all = vec!["vm", "create"];
        all.extend(args);
        let out = lab(&name, &all);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(expected), "{}", text(&out));
        assert!(!netns_exists(&format!("{name}-vm-{}", args[0])));
    }

    // #8: status shows the VM's port by name, its status and address.
    let dhcp = lab(&name, &["vm", "dhcp", "vm1"]);
    assert!(dhcp.status.success(), "{}", text(&dhcp));
    wait_for("p1 ACTIVE in status", Duration::from_secs(10), || {
        let status = lab(&name, &["status"]);
        let out = text(&status);
        out.contains("p1 (") && out.contains("ACTIVE") && out.contains("10.0.0.")
    });
    // #10: a reader that goes away is not a panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let piped = Command::new(VNET)
        .args(["lab", "status", "--name", &name])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(piped.status.code(), Some(0), "{}", text(&piped));

    // #8 and #4: the server killed, status says so and how to restart it;
    // restart-server brings it back on the same data, tracked in the state.
    Command::new("kill")
        .args(["-KILL", &server.to_string()])
        .status()
        .unwrap();
    wait_for("the server's death", Duration::from_secs(10), || {
        std::net::TcpStream::connect(api).is_err()
    });
    let status = text(&lab(&name, &["status"]));
    assert!(status.contains("UNREACHABLE"), "{status}");
    assert!(status.contains("vnet lab restart-server"), "{status}");
    let restart = lab(&name, &["restart-server"]);
    assert!(restart.status.success(), "{}", text(&restart));
    assert_ne!(server_pid(&name), server);
    let (status, _) = http(api, "GET", &format!("/v2.0/networks/{net}"), None);
    assert_eq!(status, 200, "the network did not survive the restart");
    let log = Path::new("/run/vnet-lab-logs")
        .join(&name)
        .join(format!("agent-{name}-h1.log"));
    wait_for("the agent's reconnection", Duration::from_secs(15), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("reconnected"))
    });

    // #8: down says what it did and where the logs are, and keeps them.
    let new_server = server_pid(&name);
    let down = lab(&name, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("logs kept in"), "{}", text(&down));
    assert!(log.exists());
    assert!(!netns_exists(&format!("{name}-h1")));
    assert!(!netns_exists(&format!("{name}-vm-vm1")));
    assert!(
        !Path::new(&format!("/proc/{new_server}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{new_server}/stat"))
                .is_ok_and(|s| s.contains(") Z"))
    );
}
