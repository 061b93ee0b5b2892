//! `vnet bench scale`: one real server and N simulated hosts (default 1,000,
//! in a `vnet bench scale-agents` child process, real protocol, no kernel)
//! over a synthetic cloud of 100,000 ports on 10,000 networks, every port in
//! a security group, some groups naming others as remote. Measures the load,
//! the fan-out of one change, a member joining a group every host watches,
//! churn, the idle cost, a server restart storm and the bytes per change.
//! Event times come from the child's clock (CLOCK_MONOTONIC, the same here),
//! so how fast this process reads its pipe never counts.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::client::Conn;
use super::scale_agents::{MARKED_MAC_PREFIX, host_name};
use super::server::{BenchStore, Server};
use super::stats::{Samples, Usage, monotonic_ns, ms};
use crate::BoxError;

/// Longest any one awaited fact (every host has a change, a port is ACTIVE,
/// every host resumed) may take before the run fails.
const DEADLINE: Duration = Duration::from_secs(60);
/// The HTTP floor's requests.
const FLOOR_N: usize = 300;

#[derive(clap::Args, Clone, Debug)]
pub struct ScaleArgs {
    /// Simulated hosts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    hosts: u32,
    /// Ports in the cloud, spread evenly over the networks.
    #[arg(long, default_value_t = 100_000)]
    ports: usize,
    /// Networks, each with one /24, spread evenly over the projects.
    #[arg(long, default_value_t = 10_000)]
    networks: usize,
    /// Projects.
    #[arg(long, default_value_t = 100)]
    projects: usize,
    /// Port creates timed for the fan-out (one after another).
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Members joining the group every host watches (one after another).
    #[arg(long, default_value_t = 50)]
    joins: usize,
    /// Port creates (and as many deletes) per second during the churn.
    #[arg(long, default_value_t = 100)]
    churn_rate: u32,
    /// Seconds of churn, and of the idle measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients creating the cloud.
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

/// Who holds what: project p's network j's port k is global port
/// `(p * networks_per_project + j) * ports_per_network + k`, on host
/// `global % hosts`. Project 0's ports are in `mon`, whose rule names
/// `scrapers` (no ports yet): every host with a port of project 0 watches
/// `scrapers`. In other projects one port of each network is in `db`, whose
/// rule names `web`, the others in `web`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    hosts: usize,
    projects: usize,
    networks_per_project: usize,
    ports_per_network: usize,
}

impl Layout {
    fn new(args: &ScaleArgs) -> Result<Layout, BoxError> {
        let layout = Layout {
            hosts: args.hosts as usize,
            projects: args.projects,
            networks_per_project: args.networks / args.projects.max(1),
            ports_per_network: args.ports / args.networks.max(1),
        };
        if args.projects == 0
            || layout.networks_per_project * args.projects != args.networks
            || layout.ports_per_network * args.networks != args.ports
        {
            return Err(
                "--networks must be a multiple of --projects, --ports of --networks".into(),
            );
        }
        if layout.ports_per_network == 0 || layout.ports_per_network > 200 {
            return Err("each network's /24 takes 1 to 200 ports".into());
        }
        if layout.networks_per_project > 256 {
            return Err("at most 256 networks per project (one /24 each of a /16)".into());
        }
        if layout.projects < 2 {
            return Err("at least 2 projects".into());
        }
        Ok(layout)
    }

    fn host(&self, project: usize, network: usize, port: usize) -> usize {
        ((project * self.networks_per_project + network) * self.ports_per_network + port)
            % self.hosts
    }

    fn network_hosts(&self, project: usize, network: usize) -> BTreeSet<usize> {
        (0..self.ports_per_network)
            .map(|k| self.host(project, network, k))
            .collect()
    }

    /// The hosts watching `scrapers`: those of project 0's ports.
    fn scraper_watchers(&self) -> BTreeSet<usize> {
        (0..self.networks_per_project)
            .flat_map(|j| self.network_hosts(0, j))
            .collect()
    }

    fn cidr(project: usize, network: usize) -> String {
        // Project 0 apart, so its members never look like another's.
        let first = if project == 0 { 172 } else { 10 };
        format!("{first}.16.{network}.0/24")
    }
}

/// One project's ids.
#[derive(Clone, Debug, Default)]
struct Project {
    networks: Vec<String>,
    /// `mon`/`scrapers` in project 0, `web`/`db` in the others.
    groups: [String; 2],
}

pub async fn run(args: ScaleArgs) -> Result<(), BoxError> {
    let layout = Layout::new(&args)?;
    let mut server = Server::start(BenchStore::Embedded).await?;
    let figures = match measure(&args, layout, &mut server).await {
        Ok(figures) => figures,
        // A server that died says why in its log, which `usage` shows.
        Err(e) => return Err(server.usage().err().map_or(e, |dead| dead)),
    };
    print!("{}", figures.table());
    Ok(())
}

async fn measure(
    args: &ScaleArgs,
    layout: Layout,
    server: &mut Server,
) -> Result<Figures, BoxError> {
    let mut conn = Conn::connect(server.addr).await?;
    let floor = http_floor(&mut conn).await?;
    let agents = Agents::start(server, layout.hosts)?;
    let started = Instant::now();
    agents
        .wait("every host's first snapshot", |e| e.ready.then_some(()))
        .await?;
    let connect = started.elapsed();

    let before_load = agents.stats().await?;
    let load = load(server, &layout, args.clients).await?;
    let projects = load.projects.clone();
    // The server closed the first connection while it idled through the load.
    let mut conn = Conn::connect(server.addr).await?;
    agents.command("arm")?;
    // A member join every host of project 0 sees, not timed: once it is
    // everywhere, every change before it is too (each stream is in order).
    let mut rng = Lcg(7);
    join(&mut conn, &agents, &layout, &projects, &mut rng).await?;
    let resumed_during_load = agents.events().0.resumed.len();
    let load_bytes = agents.stats().await?.bytes - before_load.bytes;

    let before = agents.stats().await?;
    let fanout = fan_out(
        &mut conn,
        &agents,
        &layout,
        &projects,
        args.changes,
        &mut rng,
    )
    .await?;
    let after = agents.stats().await?;
    let bytes_per_host_change =
        (after.bytes - before.bytes) as f64 / fanout.host_changes.max(1) as f64;
    let mut joins = Vec::with_capacity(args.joins);
    for _ in 0..args.joins {
        joins.push(join(&mut conn, &agents, &layout, &projects, &mut rng).await?);
    }
    let churn = churn(server, &agents, &layout, &projects, args, &mut rng).await?;

    agents.command("disarm")?;
    let idle_before = server.usage()?;
    let agents_before = agents.usage(server)?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let idle = server.usage()?.since(&idle_before);
    let agents_idle = agents.usage(server)?.since(&agents_before);
    let rss = server.usage()?.rss_bytes;

    let storm = storm(server, &agents, &layout).await?;
    server.usage()?;
    Ok(Figures {
        layout,
        floor,
        connect,
        load: load.figure,
        resumed_during_load,
        load_bytes,
        fanout,
        bytes_per_host_change,
        joins: Samples::new(joins),
        churn,
        idle_cpu: idle.cpu_seconds / args.seconds as f64,
        agents_idle_cpu: agents_idle.cpu_seconds / args.seconds as f64,
        rss,
        storm,
    })
}

async fn http_floor(conn: &mut Conn) -> Result<Samples, BoxError> {
    let mut latencies = Vec::with_capacity(FLOOR_N);
    for _ in 0..FLOOR_N {
        latencies.push(conn.get("/").await?.elapsed);
    }
    Ok(Samples::new(latencies))
}

struct Loaded {
    projects: Arc<[Project]>,
    figure: LoadFigure,
}

struct LoadFigure {
    wall: Duration,
    requests: usize,
    server: Usage,
}

/// The cloud, created through the API by `clients` clients, a project at a
/// time each: bulk requests of a project's networks, subnets, groups and
/// rules, then of each network's ports.
async fn load(server: &mut Server, layout: &Layout, clients: usize) -> Result<Loaded, BoxError> {
    let before = server.usage()?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for c in 0..clients.max(1) {
        let conn = Conn::connect(server.addr).await?;
        let layout = *layout;
        tasks.spawn(async move {
            let mut conn = conn;
            let mut made = Vec::new();
            let mut requests = 0;
            for p in (c..layout.projects).step_by(clients.max(1)) {
                let (project, n) = create_project(&mut conn, &layout, p).await?;
                made.push((p, project));
                requests += n;
            }
            Ok::<_, BoxError>((made, requests))
        });
    }
    let mut projects = vec![Project::default(); layout.projects];
    let mut requests = 0;
    while let Some(done) = tasks.join_next().await {
        let (made, n) = done??;
        requests += n;
        for (p, project) in made {
            projects[p] = project;
        }
    }
    Ok(Loaded {
        projects: projects.into(),
        figure: LoadFigure {
            wall: started.elapsed(),
            requests,
            server: server.usage()?.since(&before),
        },
    })
}

fn project_id(p: usize) -> String {
    format!("scale-project-{p}")
}

async fn create_project(
    conn: &mut Conn,
    layout: &Layout,
    p: usize,
) -> Result<(Project, usize), BoxError> {
    let tenant = project_id(p);
    let networks: Vec<Value> = (0..layout.networks_per_project)
        .map(|j| json!({"name": format!("scale-{p}-{j}"), "project_id": tenant}))
        .collect();
    let reply = conn
        .create("/v2.0/networks", &json!({ "networks": networks }))
        .await?;
    let networks = ids(&reply.json()?, "networks")?;
    let subnets: Vec<Value> = networks
        .iter()
        .enumerate()
        .map(|(j, id)| {
            json!({"network_id": id, "project_id": tenant, "ip_version": 4,
                   "cidr": Layout::cidr(p, j)})
        })
        .collect();
    conn.create("/v2.0/subnets", &json!({ "subnets": subnets }))
        .await?;
    let names = if p == 0 {
        ["mon", "scrapers"]
    } else {
        ["web", "db"]
    };
    let groups: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "project_id": tenant}))
        .collect();
    let reply = conn
        .create(
            "/v2.0/security-groups",
            &json!({ "security_groups": groups }),
        )
        .await?;
    let groups = ids(&reply.json()?, "security_groups")?;
    let [first, second] = <[String; 2]>::try_from(groups).map_err(|_| "two groups")?;
    // mon admits scrapers on 9100; db admits web on 5432; web admits anyone on 80.
    let rules = if p == 0 {
        vec![rule(&first, 9100, Some(&second))]
    } else {
        vec![rule(&first, 80, None), rule(&second, 5432, Some(&first))]
    };
    conn.create(
        "/v2.0/security-group-rules",
        &json!({ "security_group_rules": rules }),
    )
    .await?;
    for (j, network) in networks.iter().enumerate() {
        let ports: Vec<Value> = (0..layout.ports_per_network)
            .map(|k| {
                let group = if p == 0 || k != p % layout.ports_per_network {
                    &first
                } else {
                    &second
                };
                json!({"network_id": network, "project_id": tenant,
                       "binding:host_id": host_name(layout.host(p, j, k)),
                       "device_owner": "compute:nova", "security_groups": [group]})
            })
            .collect();
        conn.create("/v2.0/ports", &json!({ "ports": ports }))
            .await?;
    }
    let requests = 4 + networks.len();
    Ok((
        Project {
            networks,
            groups: [first, second],
        },
        requests,
    ))
}

fn rule(group: &str, port: u16, remote_group: Option<&str>) -> Value {
    let mut rule = json!({"security_group_id": group, "direction": "ingress",
                          "protocol": "tcp", "port_range_min": port, "port_range_max": port});
    match remote_group {
        Some(g) => rule["remote_group_id"] = json!(g),
        None => rule["remote_ip_prefix"] = json!("0.0.0.0/0"),
    }
    rule
}

fn ids(reply: &Value, key: &str) -> Result<Vec<String>, BoxError> {
    reply[key]
        .as_array()
        .ok_or_else(|| format!("the reply has no {key}"))?
        .iter()
        .map(|r| {
            r["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "an item without an id".into())
        })
        .collect()
}

/// A deterministic pseudo-random sequence (so runs pick the same networks).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

/// A port body marked for the agents (its MAC), numbered by a counter.
fn marked_port(network: &str, project: usize, host: usize, group: &str, n: u64) -> Value {
    let mac = format!(
        "{MARKED_MAC_PREFIX}:{:02x}:{:02x}:{:02x}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    );
    json!({"port": {"network_id": network, "project_id": project_id(project),
                    "binding:host_id": host_name(host), "mac_address": mac,
                    "device_owner": "compute:nova", "security_groups": [group]}})
}

static MARKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_mark() -> u64 {
    MARKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

struct FanOut {
    /// From the POST leaving to the last host carrying the network having it.
    all_hosts: Samples,
    /// From the POST leaving to the port reported wired (ACTIVE).
    active: Samples,
    /// The POST alone.
    create: Samples,
    hosts_per_change: f64,
    host_changes: usize,
}

async fn fan_out(
    conn: &mut Conn,
    agents: &Agents,
    layout: &Layout,
    projects: &[Project],
    changes: usize,
    rng: &mut Lcg,
) -> Result<FanOut, BoxError> {
    let (mut all, mut active, mut create, mut host_changes) = (vec![], vec![], vec![], 0);
    for _ in 0..changes {
        let p = 1 + rng.below(layout.projects - 1);
        let j = rng.below(layout.networks_per_project);
        let host = rng.below(layout.hosts);
        let mut expected = layout.network_hosts(p, j);
        expected.insert(host);
        let body = marked_port(
            &projects[p].networks[j],
            p,
            host,
            &projects[p].groups[0],
            next_mark(),
        );
        let sent = monotonic_ns();
        let reply = conn.create("/v2.0/ports", &body).await?;
        create.push(reply.elapsed);
        let id = reply.id("port")?;
        let reached = agents
            .wait("a port on every host of its network", |e| {
                let hosts = e.ports.get(&id)?;
                let seen: BTreeSet<usize> = hosts.iter().map(|(h, _)| *h).collect();
                expected
                    .is_subset(&seen)
                    .then(|| hosts.iter().map(|(_, ns)| *ns).max())
                    .flatten()
            })
            .await?;
        let wired = agents
            .wait("a port ACTIVE", |e| e.wired.get(&id).copied())
            .await?;
        all.push(since(sent, reached));
        active.push(since(sent, wired));
        host_changes += expected.len();
    }
    Ok(FanOut {
        all_hosts: Samples::new(all),
        active: Samples::new(active),
        create: Samples::new(create),
        hosts_per_change: host_changes as f64 / changes.max(1) as f64,
        host_changes,
    })
}

fn since(sent_ns: u64, at_ns: u64) -> Duration {
    Duration::from_nanos(at_ns.saturating_sub(sent_ns))
}

/// A new port of project 0 in `scrapers`: its address joins the group every
/// host of project 0 watches. The time until the last of them has it.
async fn join(
    conn: &mut Conn,
    agents: &Agents,
    layout: &Layout,
    projects: &[Project],
    rng: &mut Lcg,
) -> Result<Duration, BoxError> {
    let j = rng.below(layout.networks_per_project);
    let host = rng.below(layout.hosts);
    let watchers = layout.scraper_watchers();
    let body = marked_port(
        &projects[0].networks[j],
        0,
        host,
        &projects[0].groups[1],
        next_mark(),
    );
    let sent = monotonic_ns();
    let reply = conn.create("/v2.0/ports", &body).await?;
    let ip = reply.json()?["port"]["fixed_ips"][0]["ip_address"]
        .as_str()
        .ok_or("a port without an address")?
        .to_owned();
    let member = format!("{ip}/32");
    let last = agents
        .wait("a member on every watching host", |e| {
            let hosts = e.members.get(&member)?;
            let seen: BTreeSet<usize> = hosts.iter().map(|(h, _)| *h).collect();
            watchers
                .is_subset(&seen)
                .then(|| hosts.iter().map(|(_, ns)| *ns).max())
                .flatten()
        })
        .await?;
    Ok(since(sent, last))
}

struct Churn {
    rate: u32,
    created: usize,
    active: Samples,
    /// Creates that started late because the previous ones had not answered.
    behind_schedule: usize,
    /// CPU of the server and of the simulated hosts, in cores, meanwhile.
    server_cores: f64,
    agents_cores: f64,
}

/// Creates at `churn_rate` per second on a fixed schedule, each port
/// deleted once ACTIVE: create → ACTIVE under the open streams.
async fn churn(
    server: &Server,
    agents: &Agents,
    layout: &Layout,
    projects: &Arc<[Project]>,
    args: &ScaleArgs,
    rng: &mut Lcg,
) -> Result<Churn, BoxError> {
    let total = args.churn_rate as usize * args.seconds as usize;
    let clk = server.clk_tck();
    let (server_before, agents_before) = (
        super::stats::usage(server.pid(), clk)?,
        agents.usage(server)?,
    );
    let started = Instant::now();
    let every = Duration::from_secs(1) / args.churn_rate.max(1);
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut behind = 0;
    for n in 0..total {
        let at = start + every * n as u32;
        if tokio::time::Instant::now() > at + every {
            behind += 1;
        }
        tokio::time::sleep_until(at).await;
        let p = 1 + rng.below(layout.projects - 1);
        let j = rng.below(layout.networks_per_project);
        let host = rng.below(layout.hosts);
        let body = marked_port(
            &projects[p].networks[j],
            p,
            host,
            &projects[p].groups[0],
            next_mark(),
        );
        let addr = server.addr;
        let events = agents.events.clone();
        tasks.spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let sent = monotonic_ns();
            let id = conn.create("/v2.0/ports", &body).await?.id("port")?;
            let wired = wait_for(&events, "a churned port ACTIVE", |e| {
                e.wired.get(&id).copied()
            })
            .await?;
            conn.delete(&format!("/v2.0/ports/{id}")).await?;
            Ok::<_, BoxError>(since(sent, wired))
        });
    }
    let mut active = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        active.push(done??);
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    Ok(Churn {
        rate: args.churn_rate,
        created: total,
        active: Samples::new(active),
        behind_schedule: behind,
        server_cores: super::stats::usage(server.pid(), clk)?
            .since(&server_before)
            .cpu_seconds
            / wall,
        agents_cores: agents.usage(server)?.since(&agents_before).cpu_seconds / wall,
    })
}

struct Storm {
    /// From the kill to the new server answering.
    server_ready: Duration,
    /// From the kill to the last host streaming again.
    all_resumed: Duration,
    bytes: u64,
    snapshots: u64,
}

/// kill -9 the server and start it again on its store: how long until
/// every host streams again, and what that sends.
async fn storm(server: &mut Server, agents: &Agents, layout: &Layout) -> Result<Storm, BoxError> {
    let before = agents.stats().await?;
    let resumed_before = agents.events().0.resumed.len();
    let killed = monotonic_ns();
    server.restart().await?;
    let server_ready = since(killed, monotonic_ns());
    let hosts = layout.hosts;
    let last = agents
        .wait("every host streaming again", |e| {
            let fresh = &e.resumed[resumed_before.min(e.resumed.len())..];
            let seen: BTreeSet<usize> = fresh.iter().map(|(h, _)| *h).collect();
            (seen.len() == hosts).then(|| fresh.iter().map(|(_, ns)| *ns).max())?
        })
        .await?;
    // The snapshots and deltas the resumed streams carry come right after.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = agents.stats().await?;
    Ok(Storm {
        server_ready,
        all_resumed: since(killed, last),
        bytes: after.bytes - before.bytes,
        snapshots: after.snapshots - before.snapshots,
    })
}

/// What the simulated hosts said, as the reader thread collects it.
#[derive(Default)]
struct Events {
    ready: bool,
    ports: HashMap<String, Vec<(usize, u64)>>,
    members: HashMap<String, Vec<(usize, u64)>>,
    wired: HashMap<String, u64>,
    resumed: Vec<(usize, u64)>,
    stats: Vec<AgentStats>,
}

#[derive(Clone, Copy, Debug, Default)]
struct AgentStats {
    bytes: u64,
    snapshots: u64,
}

type Shared = Arc<Mutex<(Events, Option<String>)>>;

/// The `scale-agents` child. Dropping it kills it.
struct Agents {
    child: Child,
    stdin: Mutex<ChildStdin>,
    /// The events, and the child's fatal complaint if its output stopped.
    events: Shared,
}

impl Agents {
    fn start(server: &Server, hosts: usize) -> Result<Agents, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "scale-agents", "--server"])
            .arg(format!("http://{}", server.addr))
            .arg("--hosts")
            .arg(hosts.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let events: Shared = Arc::default();
        let shared = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut guard = lock(&shared);
                if let Err(e) = record(&mut guard.0, &line) {
                    guard.1 = Some(format!("{e}: {line:?}"));
                }
            }
            let mut guard = lock(&shared);
            guard.1.get_or_insert_with(|| "scale-agents exited".into());
        });
        Ok(Agents {
            child,
            stdin: Mutex::new(stdin),
            events,
        })
    }

    fn command(&self, command: &str) -> Result<(), BoxError> {
        let mut stdin = self.stdin.lock().map_err(|_| "stdin lock")?;
        writeln!(stdin, "{command}")?;
        Ok(stdin.flush()?)
    }

    fn events(&self) -> MutexGuard<'_, (Events, Option<String>)> {
        lock(&self.events)
    }

    async fn stats(&self) -> Result<AgentStats, BoxError> {
        let n = self.events().0.stats.len();
        self.command("stats")?;
        self.wait("the agents' counters", |e| e.stats.get(n).copied())
            .await
    }

    async fn wait<T>(
        &self,
        what: &str,
        done: impl FnMut(&Events) -> Option<T>,
    ) -> Result<T, BoxError> {
        wait_for(&self.events, what, done).await
    }

    fn usage(&self, server: &Server) -> Result<Usage, BoxError> {
        super::stats::usage(self.child.id(), server.clk_tck())
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it says yes (the times come from the child, so the
/// polling adds nothing to them), the child fails, or [`DEADLINE`].
async fn wait_for<T>(
    events: &Shared,
    what: &str,
    mut done: impl FnMut(&Events) -> Option<T>,
) -> Result<T, BoxError> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        {
            let guard = lock(events);
            if let Some(value) = done(&guard.0) {
                return Ok(value);
            }
            if let Some(failure) = &guard.1 {
                return Err(format!("waiting for {what}: {failure}").into());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {DEADLINE:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, (Events, Option<String>)> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn record(events: &mut Events, line: &str) -> Result<(), BoxError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["ready"] => events.ready = true,
        ["port", host, id, ns] => events
            .ports
            .entry((*id).to_owned())
            .or_default()
            .push((host.parse()?, ns.parse()?)),
        ["member", host, member, ns] => events
            .members
            .entry((*member).to_owned())
            .or_default()
            .push((host.parse()?, ns.parse()?)),
        ["wired", id, ns] => {
            events.wired.insert((*id).to_owned(), ns.parse()?);
        }
        ["resumed", host, ns] => events.resumed.push((host.parse()?, ns.parse()?)),
        ["stats", bytes, _messages, snapshots] => events.stats.push(AgentStats {
            bytes: bytes.parse()?,
            snapshots: snapshots.parse()?,
        }),
        _ => return Err("an unknown line".into()),
    }
    Ok(())
}

struct Figures {
    layout: Layout,
    floor: Samples,
    connect: Duration,
    load: LoadFigure,
    resumed_during_load: usize,
    /// Stream bytes the hosts received while the cloud was created.
    load_bytes: u64,
    fanout: FanOut,
    bytes_per_host_change: f64,
    joins: Samples,
    churn: Churn,
    idle_cpu: f64,
    agents_idle_cpu: f64,
    rss: u64,
    storm: Storm,
}

impl Figures {
    fn table(&self) -> String {
        let l = &self.layout;
        let ports = l.projects * l.networks_per_project * l.ports_per_network;
        let f = &self.fanout;
        let floor = self.floor.p50();
        let ratio = |d: Duration| d.as_secs_f64() / floor.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "vnet bench scale: {} hosts, {ports} ports on {} networks in {} projects",
            l.hosts,
            l.projects * l.networks_per_project,
            l.projects
        ));
        line(format!(
            "baseline: HTTP floor (GET /) p50 {:.3} ms, p99 {:.3} ms",
            ms(floor),
            ms(self.floor.p99())
        ));
        line(format!(
            "connect: every host registered and holding its first snapshot in {:.2} s",
            self.connect.as_secs_f64()
        ));
        line(format!(
            "load: {ports} ports through the API in {:.1} s ({} requests, {:.0} ports/s); server CPU {:.1} s, RSS {:.0} MiB after; the hosts received {:.0} MB of stream; {} streams fell behind and resumed",
            self.load.wall.as_secs_f64(),
            self.load.requests,
            ports as f64 / self.load.wall.as_secs_f64().max(1e-9),
            self.load.server.cpu_seconds,
            self.load.server.rss_bytes as f64 / 1048576.0,
            self.load_bytes as f64 / 1e6,
            self.resumed_during_load
        ));
        line(format!(
            "fan-out: port create → all {:.1} hosts of its network: p50 {:.2} ms, p99 {:.2} ms ({:.0}× / {:.0}× the floor; the POST alone p50 {:.2} ms, p99 {:.2} ms) over {} creates",
            f.hosts_per_change,
            ms(f.all_hosts.p50()),
            ms(f.all_hosts.p99()),
            ratio(f.all_hosts.p50()),
            ratio(f.all_hosts.p99()),
            ms(f.create.p50()),
            ms(f.create.p99()),
            f.all_hosts.len()
        ));
        line(format!(
            "create → ACTIVE (reported by the simulated host), quiet cloud: p50 {:.2} ms, p99 {:.2} ms",
            ms(f.active.p50()),
            ms(f.active.p99())
        ));
        line(format!(
            "member join → all {} watching hosts: p50 {:.2} ms, p99 {:.2} ms over {} joins",
            l.scraper_watchers().len(),
            ms(self.joins.p50()),
            ms(self.joins.p99()),
            self.joins.len()
        ));
        let c = &self.churn;
        line(format!(
            "churn at {}/s creates and deletes: create → ACTIVE p50 {:.2} ms, p99 {:.2} ms over {} creates ({} started late); CPU: server {:.2} cores, simulated hosts {:.2}",
            c.rate,
            ms(c.active.p50()),
            ms(c.active.p99()),
            c.created,
            c.behind_schedule,
            c.server_cores,
            c.agents_cores
        ));
        line(format!(
            "idle: server CPU {:.2}% of one core for {} hosts' heartbeats and open streams (the simulated hosts: {:.2}%); server RSS {:.0} MiB",
            self.idle_cpu * 100.0,
            l.hosts,
            self.agents_idle_cpu * 100.0,
            self.rss as f64 / 1048576.0
        ));
        line(format!(
            "protocol volume: {:.0} bytes of stream per host per change",
            self.bytes_per_host_change
        ));
        let s = &self.storm;
        line(format!(
            "restart storm (kill -9, restart on the same store): server answering after {:.2} s, all {} hosts streaming after {:.2} s; {:.1} MB sent, {} snapshots",
            s.server_ready.as_secs_f64(),
            l.hosts,
            s.all_resumed.as_secs_f64(),
            s.bytes as f64 / 1e6,
            s.snapshots
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(hosts: usize) -> Layout {
        Layout {
            hosts,
            projects: 100,
            networks_per_project: 100,
            ports_per_network: 10,
        }
    }

    #[test]
    fn the_default_cloud_puts_project_0_on_every_host() {
        let l = layout(1000);
        assert_eq!(l.scraper_watchers().len(), 1000);
        // A network's ports sit on as many hosts as it has ports.
        assert_eq!(l.network_hosts(42, 7).len(), 10);
        // Fewer ports in project 0 than hosts: only the hosts holding them.
        assert_eq!(layout(5000).scraper_watchers().len(), 1000);
    }

    #[test]
    fn the_agents_lines_are_read_and_anything_else_refused() {
        let mut e = Events::default();
        for line in [
            "ready",
            "port 3 p1 100",
            "port 4 p1 120",
            "member 3 10.0.0.5/32 130",
            "wired p1 140",
            "resumed 9 150",
            "stats 1000 20 3",
        ] {
            record(&mut e, line).expect(line);
        }
        assert!(e.ready);
        assert_eq!(e.ports["p1"], vec![(3, 100), (4, 120)]);
        assert_eq!(e.members["10.0.0.5/32"], vec![(3, 130)]);
        assert_eq!(e.wired["p1"], 140);
        assert_eq!(e.resumed, vec![(9, 150)]);
        assert_eq!((e.stats[0].bytes, e.stats[0].snapshots), (1000, 3));
        assert!(record(&mut e, "port x p1 1").is_err());
        assert!(record(&mut e, "hello").is_err());
    }
}
