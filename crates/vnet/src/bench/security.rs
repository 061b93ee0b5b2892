//! `vnet bench security` (root, iperf3): TCP throughput between VMs on two
//! hosts of a lab as security groups grow. Three VM pairs, each on its own
//! network (so its bridge's netfilter switch is its own): `off` (port security
//! off), `ref` (security groups, one rule) and `subject` (the scenario). Every
//! repeat runs the three back to back and each figure is the median of the
//! per-repeat ratios, so the machine's drift cancels out. The linear-list
//! baseline (every packet walks N rules, as iptables-per-rule drivers do) is a
//! plain nftables chain the bench installs itself, beside vnet's. It also
//! times a member joining a large remote group, and a 1,000-rule group
//! reaching a host with a new port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::BoxError;
use crate::lab::{self, LabState, http, run};

/// How long, from its port's POST being sent, until a new member of a large
/// remote group is in the member set of every host that keeps that set (by
/// the kernel's notice, `nft monitor`).
pub struct Join {
    pub members: usize,
    pub times: Vec<Duration>,
}

/// How long, from its port's POST being sent, until a group of `rules` rules
/// that its host did not use yet is in that host's nftables.
pub struct Apply {
    pub rules: usize,
    pub times: Vec<Duration>,
}

pub struct Scenario {
    pub name: String,
    /// The subject pair's median, Gbit/s.
    pub gbits: f64,
    /// Medians of subject ÷ `off` and subject ÷ `ref`, run by run.
    pub vs_off: f64,
    pub vs_one_rule: f64,
}

pub struct Figures {
    pub scenarios: Vec<Scenario>,
    pub join: Option<Join>,
    pub apply: Option<Apply>,
}

pub(super) fn call(
    lab: &LabState,
    method: &str,
    path: &str,
    body: Value,
) -> Result<Value, BoxError> {
    let (status, reply) = http(&lab.api, method, path, Some(&body))?;
    if !(200..300).contains(&status) {
        return Err(format!("{method} {path}: {status} {reply}").into());
    }
    Ok(reply)
}

/// POST `{key: attrs}` to `path` and return the created resource's id.
pub(super) fn create(
    lab: &LabState,
    path: &str,
    key: &str,
    attrs: Value,
) -> Result<String, BoxError> {
    id(&call(lab, "POST", path, json!({ key: attrs }))?, key)
}

fn id(v: &Value, key: &str) -> Result<String, BoxError> {
    v[key]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no {key}.id").into())
}

/// POST rules in bulk, 500 per request.
fn add_rules(lab: &LabState, rules: Vec<Value>) -> Result<(), BoxError> {
    for chunk in rules.chunks(500) {
        call(
            lab,
            "POST",
            "/v2.0/security-group-rules",
            json!({"security_group_rules": chunk}),
        )?;
    }
    Ok(())
}

/// An ingress rule of `group` letting TCP 5201 in from `remote` (a prefix or
/// a group).
fn iperf_rule(group: &str, remote: (&str, &str)) -> Value {
    let mut rule = json!({"security_group_id": group, "direction": "ingress", "protocol": "tcp",
                          "port_range_min": 5201, "port_range_max": 5201});
    rule[remote.0] = json!(remote.1);
    rule
}

/// The i-th of a run of distinct /32 prefixes that no VM uses.
fn unused_prefix(i: usize) -> String {
    format!("172.{}.{}.{}/32", 16 + i / 65536, (i / 256) % 256, i % 256)
}

/// iperf3 from `client` to `server_ip` for `seconds`; Gbit/s received.
pub(super) fn iperf(client_ns: &str, server_ip: &str, seconds: u32) -> Result<f64, BoxError> {
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

/// Until `from` can open TCP to the iperf3 server at `to` (30 s at most).
pub(super) fn wait_for_iperf_server(from: &str, to: &str) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = [
        "netns", "exec", from, "busybox", "nc", "-w", "1", to, "5201",
    ];
    while run("ip", &probe).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{to}:5201 not reachable from {from} after 30 s").into());
        }
    }
    Ok(())
}

pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// A client VM on the first host and an iperf3 server VM on the second, on a
/// network of their own.
struct Pair {
    network: String,
    subnet: String,
    /// The first two octets of the network's /16.
    prefix: &'static str,
    client_port: String,
    server_port: String,
    client_ns: String,
    server_ip: String,
}

impl Pair {
    fn new(lab: &LabState, name: &str, prefix: &'static str) -> Result<Pair, BoxError> {
        let network = create(lab, "/v2.0/networks", "network", json!({ "name": name }))?;
        let subnet = create(
            lab,
            "/v2.0/subnets",
            "subnet",
            json!({"network_id": network, "ip_version": 4, "cidr": format!("{prefix}.0.0/16")}),
        )?;
        let port = |ip: &str, host: &str| {
            create(
                lab,
                "/v2.0/ports",
                "port",
                json!({"network_id": network, "binding:host_id": host,
                       "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}],
                       "port_security_enabled": false, "security_groups": []}),
            )
        };
        let (client_ip, server_ip) = (format!("{prefix}.0.1"), format!("{prefix}.0.2"));
        let client_port = port(&client_ip, &lab.hosts[0].name)?;
        let server_port = port(&server_ip, &lab.hosts[1].name)?;
        let mut state = LabState::load(&lab.name)?;
        let client = lab::vm_create(
            &mut state,
            &format!("{name}c"),
            &lab.hosts[0].name,
            &client_port,
        )?;
        let server = lab::vm_create(
            &mut state,
            &format!("{name}s"),
            &lab.hosts[1].name,
            &server_port,
        )?;
        for (vm, ip) in [(&client, &client_ip), (&server, &server_ip)] {
            run(
                "ip",
                &[
                    "-n",
                    &vm.netns,
                    "addr",
                    "add",
                    &format!("{ip}/16"),
                    "dev",
                    "eth0",
                ],
            )?;
        }
        run(
            "ip",
            &["netns", "exec", &server.netns, "iperf3", "-s", "-D"],
        )?;
        let pair = Pair {
            network,
            subnet,
            prefix,
            client_port,
            server_port,
            client_ns: client.netns,
            server_ip,
        };
        pair.reachable()?;
        Ok(pair)
    }

    /// Port security on for both: the client in `client_group` (egress
    /// open), the server in `server_group`.
    fn secure(
        &self,
        lab: &LabState,
        client_group: &str,
        server_group: &str,
    ) -> Result<(), BoxError> {
        for (port, group) in [
            (&self.client_port, client_group),
            (&self.server_port, server_group),
        ] {
            call(
                lab,
                "PUT",
                &format!("/v2.0/ports/{port}"),
                json!({"port": {"port_security_enabled": true, "security_groups": [group]}}),
            )?;
        }
        Ok(())
    }

    fn client_ip(&self) -> String {
        format!("{}.0.1/32", self.prefix)
    }

    /// Wait until the client can open TCP to the iperf3 server (the rules
    /// converged).
    fn reachable(&self) -> Result<(), BoxError> {
        wait_for_iperf_server(&self.client_ns, &self.server_ip)
    }

    fn iperf(&self, seconds: u32) -> Result<f64, BoxError> {
        iperf(&self.client_ns, &self.server_ip, seconds)
    }
}

pub fn run_bench(rules: &[usize], seconds: u32, repeats: usize) -> Result<Figures, BoxError> {
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
    // A failed `up` has removed its lab already.
    if lab::is_up(&name) {
        lab::down(&name)?;
    }
    result
}

fn measure(
    lab: &LabState,
    rules: &[usize],
    seconds: u32,
    repeats: usize,
) -> Result<Figures, BoxError> {
    let off = Pair::new(lab, "off", "10.11")?;
    let reference = Pair::new(lab, "ref", "10.12")?;
    let subject = Pair::new(lab, "sub", "10.13")?;
    // Clients are in `peers` (egress open, as every new group); each secured
    // server in a group of its own, whose ingress rules let its client in.
    let peers = create(
        lab,
        "/v2.0/security-groups",
        "security_group",
        json!({"name": "peers"}),
    )?;
    let one_rule = create(
        lab,
        "/v2.0/security-groups",
        "security_group",
        json!({"name": "ref"}),
    )?;
    add_rules(
        lab,
        vec![iperf_rule(
            &one_rule,
            ("remote_ip_prefix", &reference.client_ip()),
        )],
    )?;
    reference.secure(lab, &peers, &one_rule)?;

    let mut scenarios = Vec::new();
    let mut measure_now = |name: String| -> Result<(), BoxError> {
        // Minutes of work in all: say what runs, on stderr.
        eprintln!("bench security: {name}: {repeats} × 3 runs of {seconds} s…");
        for pair in [&off, &reference, &subject] {
            pair.reachable()?;
        }
        let (mut gbits, mut vs_off, mut vs_one_rule) = (vec![], vec![], vec![]);
        for _ in 0..repeats {
            let o = off.iperf(seconds)?;
            let r = reference.iperf(seconds)?;
            let s = subject.iperf(seconds)?;
            gbits.push(s);
            vs_off.push(s / o.max(f64::MIN_POSITIVE));
            vs_one_rule.push(s / r.max(f64::MIN_POSITIVE));
        }
        scenarios.push(Scenario {
            name,
            gbits: median(gbits),
            vs_off: median(vs_off),
            vs_one_rule: median(vs_one_rule),
        });
        Ok(())
    };
    measure_now("port security off (the off pair again: noise)".into())?;

    // The linear list: every frame of the subject's network forwarded on the
    // server's host walks N rules that do not match.
    let host_ns = &lab.hosts[1].name;
    for &n in rules {
        let mut script = format!(
            "table bridge linear {{\n chain forward {{\n  type filter hook forward priority 10; policy accept;\n  ip saddr != {}.0.0/16 accept\n",
            subject.prefix
        );
        for i in 0..n {
            script.push_str(&format!("  ip saddr {} drop\n", unused_prefix(i)));
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

    // vnet: the subject's server in `bench`, whose ingress rules grow.
    let group = create(
        lab,
        "/v2.0/security-groups",
        "security_group",
        json!({"name": "bench"}),
    )?;
    add_rules(
        lab,
        vec![iperf_rule(
            &group,
            ("remote_ip_prefix", &subject.client_ip()),
        )],
    )?;
    subject.secure(lab, &peers, &group)?;
    measure_now("security groups, 1 rule (the ref pair again: noise)".into())?;
    let mut added = 0;
    for &n in rules {
        add_rules(
            lab,
            (added..n)
                .map(|i| iperf_rule(&group, ("remote_ip_prefix", &unused_prefix(i))))
                .collect(),
        )?;
        added = n;
        measure_now(format!("security groups, {} prefix rules", n + 1))?;
    }

    // A remote group with many members: the rule is one set lookup. The
    // prefix rules go, so that the client is let in by its membership.
    let mut join = None;
    if let Some(&members) = rules.last() {
        delete_ingress_rules(lab, &group)?;
        let ports: Vec<Value> = (0..members)
            .map(|i| json!({"network_id": subject.network, "security_groups": [peers],
                            "fixed_ips": [{"subnet_id": subject.subnet,
                                           "ip_address": format!("{}.{}.{}", subject.prefix, 100 + i / 250, 1 + i % 250)}]}))
            .collect();
        for chunk in ports.chunks(500) {
            call(lab, "POST", "/v2.0/ports", json!({"ports": chunk}))?;
        }
        add_rules(lab, vec![iperf_rule(&group, ("remote_group_id", &peers))])?;
        measure_now(format!(
            "security groups, remote group of {} members",
            members + 1
        ))?;
        join = Some(member_joins(lab, &subject, &peers, members + 1)?);
    }
    let apply = Some(group_applies(lab, &subject, 1000)?);
    Ok(Figures {
        scenarios,
        join,
        apply,
    })
}

fn delete_ingress_rules(lab: &LabState, group: &str) -> Result<(), BoxError> {
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
    Ok(())
}

/// `nft monitor` in one host's namespace: every object the kernel commits
/// there, as the instant its line was read. Timing by the kernel's own
/// notice leaves out the polling processes a probe by `nft list` would
/// start (several milliseconds each) and their competition with the agent.
struct Monitor {
    host: String,
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

/// Longest a change may take to reach a host's kernel.
const WITHIN: Duration = Duration::from_secs(30);

impl Monitor {
    /// Started and listening: a table of the bench's own, added and deleted,
    /// has been seen, so no later commit can be missed.
    fn start(host: &str) -> Result<Monitor, BoxError> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", host, "nft", "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("nft monitor: no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let monitor = Monitor {
            host: host.to_owned(),
            child,
            lines,
        };
        let deadline = Instant::now() + WITHIN;
        loop {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    host,
                    "nft",
                    "add table inet vnet_bench_sync; delete table inet vnet_bench_sync",
                ],
            )?;
            let seen = monitor.wait(Instant::now() + Duration::from_millis(200), |line| {
                line.contains("vnet_bench_sync")
            });
            match seen {
                Ok(_) => return Ok(monitor),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => continue,
            }
        }
    }

    /// When the first line `wanted` picks was read.
    fn wait(&self, deadline: Instant, wanted: impl Fn(&str) -> bool) -> Result<Instant, BoxError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if wanted(&line) => return Ok(at),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!("nft monitor on {}: not seen in time", self.host).into());
                }
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `line` names `word` as a whole token (an address, a chain).
fn names(line: &str, word: &str) -> bool {
    line.split([' ', ',', '{', '}']).any(|t| t == word)
}

/// How many ports join the large group, one at a time.
const JOINS: usize = 30;

/// Ports join `group` (of `members` members) one at a time; each is timed
/// from its POST until every host that keeps the group's member set has its
/// address.
fn member_joins(
    lab: &LabState,
    pair: &Pair,
    group: &str,
    members: usize,
) -> Result<Join, BoxError> {
    let set = agent::nft::ruleset::remote_set(group, false);
    let holders: Vec<&str> = lab
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|h| {
            run(
                "ip",
                &[
                    "netns", "exec", h, "nft", "list", "set", "inet", "vnet", &set,
                ],
            )
            .is_ok()
        })
        .collect();
    if holders.is_empty() {
        return Err(format!("no host keeps the set {set}").into());
    }
    let monitors = holders
        .iter()
        .map(|h| Monitor::start(h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut times = Vec::new();
    for i in 0..JOINS {
        let ip = format!("{}.250.{}", pair.prefix, i + 1);
        let posting = Instant::now();
        call(
            lab,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": pair.network, "security_groups": [group],
                   "fixed_ips": [{"subnet_id": pair.subnet, "ip_address": ip}]}}),
        )?;
        let mut last = posting;
        for monitor in &monitors {
            let at = monitor.wait(posting + WITHIN, |line| {
                line.starts_with("add element") && names(line, &set) && names(line, &ip)
            })?;
            last = last.max(at);
        }
        times.push(last - posting);
    }
    Ok(Join { members, times })
}

/// Five times: a new group of `rules` rules, then a new port in it bound to
/// the first host, timed until the group's ingress chain is in that host's
/// nftables (the port's whole change is one transaction).
fn group_applies(lab: &LabState, pair: &Pair, rules: usize) -> Result<Apply, BoxError> {
    let host = &lab.hosts[0].name;
    let monitor = Monitor::start(host)?;
    let mut times = Vec::new();
    for k in 0..5 {
        let group = create(
            lab,
            "/v2.0/security-groups",
            "security_group",
            json!({"name": format!("big{k}")}),
        )?;
        add_rules(
            lab,
            (0..rules - 1)
                .map(|i| iperf_rule(&group, ("remote_ip_prefix", &unused_prefix(i))))
                .collect(),
        )?;
        let chain =
            agent::nft::ruleset::group_chain(&group, compiler::protocol::RuleDirection::Ingress);
        let posting = Instant::now();
        call(
            lab,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": pair.network, "security_groups": [group],
                   "binding:host_id": host,
                   "fixed_ips": [{"subnet_id": pair.subnet,
                                  "ip_address": format!("{}.251.{}", pair.prefix, k + 1)}]}}),
        )?;
        // The chain comes with its rules in the port's one transaction.
        let at = monitor.wait(posting + WITHIN, |line| {
            line.starts_with("add chain") && names(line, &chain)
        })?;
        times.push(at - posting);
    }
    Ok(Apply { rules, times })
}

fn print_times(what: &str, times: &[Duration]) {
    let samples = super::stats::Samples::new(times.to_vec());
    println!(
        "{what}: p50 {:.1} ms, max {:.1} ms ({} samples)",
        super::stats::ms(samples.p50()),
        super::stats::ms(samples.max()),
        times.len()
    );
}

pub fn print(figures: &Figures) {
    println!(
        "vnet bench security: iperf3 TCP between two VMs on two hosts; each ratio is the median, \
         over the repeats, of the scenario's pair against the off and 1-rule pairs run back to back"
    );
    println!(
        "{:<58} {:>7} {:>8} {:>10}",
        "scenario", "Gbit/s", "vs off", "vs 1 rule"
    );
    for s in &figures.scenarios {
        println!(
            "{:<58} {:>7.2} {:>7.2}x {:>9.2}x",
            s.name, s.gbits, s.vs_off, s.vs_one_rule
        );
    }
    if let Some(join) = &figures.join {
        print_times(
            &format!(
                "one member joining a {}-member remote group, until every host keeping its set has it",
                join.members
            ),
            &join.times,
        );
    }
    if let Some(apply) = &figures.apply {
        print_times(
            &format!(
                "a {}-rule group new to a host, applied with a new port, until in that host's nftables",
                apply.rules
            ),
            &apply.times,
        );
    }
}
