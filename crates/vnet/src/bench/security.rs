//! `vnet bench security` (root, iperf3): TCP throughput between two VMs on two
//! hosts of a lab as security groups grow, each figure a ratio to the same
//! pair with port security off, measured in the same run. The linear-list
//! baseline (every packet walks N rules, as iptables-per-rule drivers do) is
//! a plain nftables chain the bench installs itself, beside vnet's.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::BoxError;
use crate::lab::{self, LabState, http, run};

/// How long, from its port's POST returning, until a new member of a large
/// remote group is in the member set of every host that keeps that set.
pub struct Join {
    pub members: usize,
    pub times: Vec<Duration>,
}

pub struct Scenario {
    pub name: String,
    /// Median of the runs, Gbit/s.
    pub gbits: f64,
}

fn call(lab: &LabState, method: &str, path: &str, body: Value) -> Result<Value, BoxError> {
    let (status, reply) = http(&lab.api, method, path, Some(&body))?;
    if !(200..300).contains(&status) {
        return Err(format!("{method} {path}: {status} {reply}").into());
    }
    Ok(reply)
}

/// POST `{key: attrs}` to `path` and return the created resource's id.
fn create(lab: &LabState, path: &str, key: &str, attrs: Value) -> Result<String, BoxError> {
    id(&call(lab, "POST", path, json!({ key: attrs }))?, key)
}

fn id(v: &Value, key: &str) -> Result<String, BoxError> {
    v[key]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no {key}.id").into())
}

/// iperf3 from `client` to `server_ip` for `seconds`; Gbit/s received.
fn iperf(client_ns: &str, server_ip: &str, seconds: u32) -> Result<f64, BoxError> {
    // Bounded: a flow that stalls must fail the bench, not hang it.
    let limit = (seconds + 30).to_string();
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            client_ns,
            "timeout",
            &limit,
            "iperf3",
            "-c",
            server_ip,
            "-t",
            &seconds.to_string(),
            "-J",
        ],
    )?;
    let v: Value = serde_json::from_str(&out)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 gave no result".into())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// Wait until `client` can open TCP to the iperf3 server (the rules converged).
fn reachable(client_ns: &str, ip: &str) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while run(
        "ip",
        &[
            "netns", "exec", client_ns, "busybox", "nc", "-w", "1", ip, "5201",
        ],
    )
    .is_err()
    {
        if Instant::now() > deadline {
            return Err(format!("{ip}:5201 not reachable after 30 s").into());
        }
    }
    Ok(())
}

pub fn run_bench(
    rules: &[usize],
    seconds: u32,
    repeats: usize,
) -> Result<(Vec<Scenario>, Option<Join>), BoxError> {
    let name = format!("sb{}", std::process::id() % 10_000);
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let vnet = std::env::current_exe()?;
    let result = lab::up(&name, 2, api, None, &vnet.to_string_lossy())
        .and_then(|state| measure(&state, rules, seconds, repeats));
    let _ = run(
        "ip",
        &[
            "netns",
            "exec",
            &format!("{name}-h2"),
            "nft",
            "delete",
            "table",
            "bridge",
            "linear",
        ],
    );
    lab::down(&name)?;
    result
}

fn measure(
    lab: &LabState,
    rules: &[usize],
    seconds: u32,
    repeats: usize,
) -> Result<(Vec<Scenario>, Option<Join>), BoxError> {
    let net = create(lab, "/v2.0/networks", "network", json!({"name": "bench"}))?;
    let subnet = create(
        lab,
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": net, "ip_version": 4, "cidr": "10.10.0.0/16"}),
    )?;
    let group = create(
        lab,
        "/v2.0/security-groups",
        "security_group",
        json!({"name": "bench"}),
    )?;
    let port = |ip: &str, host: &str| {
        call(
            lab,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": net, "binding:host_id": host,
                   "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}],
                   "port_security_enabled": false, "security_groups": []}}),
        )
        .and_then(|p| id(&p, "port"))
    };
    let (h1, h2) = (lab.hosts[0].name.clone(), lab.hosts[1].name.clone());
    let client = port("10.10.0.1", &h1)?;
    let server = port("10.10.0.2", &h2)?;
    let mut state = LabState::load(&lab.name)?;
    let client_vm = lab::vm_create(&mut state, "client", &h1, &client)?;
    let server_vm = lab::vm_create(&mut state, "server", &h2, &server)?;
    for (vm, ip) in [(&client_vm, "10.10.0.1/16"), (&server_vm, "10.10.0.2/16")] {
        run("ip", &["-n", &vm.netns, "addr", "add", ip, "dev", "eth0"])?;
    }
    run(
        "ip",
        &["netns", "exec", &server_vm.netns, "iperf3", "-s", "-D"],
    )?;
    reachable(&client_vm.netns, "10.10.0.2")?;

    let mut scenarios = Vec::new();
    let mut join = None;
    let mut measure_now = |name: String| -> Result<(), BoxError> {
        reachable(&client_vm.netns, "10.10.0.2")?;
        let runs = (0..repeats)
            .map(|_| iperf(&client_vm.netns, "10.10.0.2", seconds))
            .collect::<Result<Vec<_>, _>>()?;
        scenarios.push(Scenario {
            name,
            gbits: median(runs),
        });
        Ok(())
    };
    measure_now("port security off (baseline)".into())?;

    // The linear list: every forwarded frame on the server's host walks N
    // rules that do not match, then one that does.
    let host_ns = &lab.hosts[1].name;
    for &n in rules {
        let mut script = String::from(
            "table bridge linear {\n chain forward {\n  type filter hook forward priority 10; policy accept;\n",
        );
        for i in 0..n {
            script.push_str(&format!(
                "  ip saddr 172.{}.{}.{}/32 drop\n",
                16 + i / 65536,
                (i / 256) % 256,
                i % 256
            ));
        }
        script.push_str(" }\n}\n");
        let path = std::env::temp_dir().join(format!("vnet-linear-{}.nft", std::process::id()));
        std::fs::write(&path, script)?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                host_ns,
                "nft",
                "-f",
                &path.to_string_lossy(),
            ],
        )?;
        measure_now(format!("linear list, {n} rules (iptables-style baseline)"))?;
        run(
            "ip",
            &[
                "netns", "exec", host_ns, "nft", "delete", "table", "bridge", "linear",
            ],
        )?;
        let _ = std::fs::remove_file(path);
    }

    // vnet: both ports secured from here on. The client is in `peers`
    // (egress open, as every new group); the server in `bench`, whose
    // ingress rules grow.
    let peers = create(
        lab,
        "/v2.0/security-groups",
        "security_group",
        json!({"name": "peers"}),
    )?;
    for (port, group) in [(&client, &peers), (&server, &group)] {
        call(
            lab,
            "PUT",
            &format!("/v2.0/ports/{port}"),
            json!({"port": {"port_security_enabled": true, "security_groups": [group]}}),
        )?;
    }
    call(
        lab,
        "POST",
        "/v2.0/security-group-rules",
        json!({"security_group_rule": {"security_group_id": group, "direction": "ingress",
               "protocol": "tcp", "port_range_min": 5201, "port_range_max": 5201,
               "remote_ip_prefix": "10.10.0.1/32"}}),
    )?;
    measure_now("security groups on both ports, 1 rule".into())?;
    let mut added = 0;
    for &n in rules {
        let body: Vec<Value> = (added..n)
            .map(|i| {
                json!({"security_group_id": group, "direction": "ingress", "protocol": "tcp",
                       "port_range_min": 5201, "port_range_max": 5201,
                       "remote_ip_prefix": format!("172.{}.{}.{}/32", 16 + i / 65536, (i / 256) % 256, i % 256)})
            })
            .collect();
        for chunk in body.chunks(500) {
            call(
                lab,
                "POST",
                "/v2.0/security-group-rules",
                json!({"security_group_rules": chunk}),
            )?;
        }
        added = n;
        measure_now(format!(
            "security groups on both ports, {} prefix rules",
            n + 1
        ))?;
    }
    // A remote group with many members: the rule is one set lookup. The
    // prefix rules go, so that the client is let in by its membership.
    if let Some(&members) = rules.last() {
        let (_, listed) = http(
            &lab.api,
            "GET",
            &format!(
                "/v2.0/security-group-rules?security_group_id={group}&direction=ingress&fields=id"
            ),
            None,
        )?;
        for rule in listed["security_group_rules"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(rule) = rule["id"].as_str() {
                http(
                    &lab.api,
                    "DELETE",
                    &format!("/v2.0/security-group-rules/{rule}"),
                    None,
                )?;
            }
        }
        let body: Vec<Value> = (0..members)
            .map(|i| json!({"network_id": net, "security_groups": [peers],
                            "fixed_ips": [{"subnet_id": subnet, "ip_address": format!("10.10.{}.{}", 100 + i / 250, 1 + i % 250)}]}))
            .collect();
        for chunk in body.chunks(500) {
            call(lab, "POST", "/v2.0/ports", json!({"ports": chunk}))?;
        }
        call(
            lab,
            "POST",
            "/v2.0/security-group-rules",
            json!({"security_group_rule": {"security_group_id": group, "direction": "ingress",
                   "protocol": "tcp", "port_range_min": 5201, "port_range_max": 5201,
                   "remote_group_id": peers}}),
        )?;
        measure_now(format!(
            "security groups on both ports, remote group of {} members",
            members + 1
        ))?;
        join = Some(member_joins(lab, &net, &subnet, &peers, members + 1)?);
    }
    // The baseline again: how far the machine drifted during the run.
    for port in [&client, &server] {
        call(
            lab,
            "PUT",
            &format!("/v2.0/ports/{port}"),
            json!({"port": {"security_groups": [], "port_security_enabled": false}}),
        )?;
    }
    measure_now("port security off, again at the end (drift check)".into())?;
    Ok((scenarios, join))
}

/// Ten ports join `group` (of `members` members) one at a time; each is timed
/// until every host that keeps the group's member set has its address.
fn member_joins(
    lab: &LabState,
    net: &str,
    subnet: &str,
    group: &str,
    members: usize,
) -> Result<Join, BoxError> {
    let set = format!("rg_{group}_4");
    let holders: Vec<String> = lab
        .hosts
        .iter()
        .filter(|h| {
            run(
                "ip",
                &[
                    "netns", "exec", &h.name, "nft", "list", "set", "inet", "vnet", &set,
                ],
            )
            .is_ok()
        })
        .map(|h| h.name.clone())
        .collect();
    if holders.is_empty() {
        return Err(format!("no host keeps the set {set}").into());
    }
    let mut times = Vec::new();
    for i in 0..10 {
        let ip = format!("10.10.250.{}", i + 1);
        call(
            lab,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": net, "security_groups": [group],
                   "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}]}}),
        )?;
        let posted = Instant::now();
        for host in &holders {
            // `get element` asks for one element: a probe that does not dump
            // (and compete with the agent over) a 10,000-element set.
            let element = format!("{{ {ip} }}");
            loop {
                let probe = [
                    "netns", "exec", host, "nft", "get", "element", "inet", "vnet", &set, &element,
                ];
                if run("ip", &probe).is_ok() {
                    break;
                }
                if posted.elapsed() > Duration::from_secs(30) {
                    return Err(format!("{ip} not in {set} on {host} after 30 s").into());
                }
            }
        }
        times.push(posted.elapsed());
    }
    Ok(Join { members, times })
}

pub fn print_join(join: &Join) {
    let samples = super::stats::Samples::new(join.times.clone());
    println!(
        "one member joining a {}-member remote group, until every host keeping its set has it: p50 {:.1} ms, max {:.1} ms ({} joins)",
        join.members,
        super::stats::ms(samples.p50()),
        super::stats::ms(samples.max()),
        join.times.len()
    );
}

pub fn print(scenarios: &[Scenario]) {
    let rate = |prefix: &str| {
        scenarios
            .iter()
            .find(|s| s.name.starts_with(prefix))
            .map_or(f64::NAN, |s| s.gbits.max(f64::MIN_POSITIVE))
    };
    let off = rate("port security off");
    let one_rule = rate("security groups on both ports, 1 rule");
    println!("vnet bench security: iperf3 TCP between two VMs on two hosts (median of runs)");
    println!(
        "{:<66} {:>7} {:>8} {:>10}",
        "scenario", "Gbit/s", "vs off", "vs 1 rule"
    );
    for s in scenarios {
        println!(
            "{:<66} {:>7.2} {:>7.2}x {:>9.2}x",
            s.name,
            s.gbits,
            s.gbits / off,
            s.gbits / one_rule
        );
    }
}
