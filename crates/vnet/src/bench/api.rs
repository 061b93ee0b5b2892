//! `vnet bench api`: issue 2's "Figures to report". Measures the HTTP and fsync
//! floors (and, on etcd, etcd's own transaction floor), then creates networks with a subnet each, ports from one client and
//! from many, lists ports, creates rules as one security group grows, and
//! (issue 3) attaches subnets to a router and gives their ports floating IPs.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use store::Store as _;
use tokio::task::JoinSet;

use super::client::Conn;
use super::list_scale;
use super::report;
use super::results::{Floor, Floors, L3Figure, ListFigure, PortPhase, Results, RuleFigure, Setup};
use super::server::{BenchStore, Server};
use super::stats::{Samples, Usage};
use crate::BoxError;

/// Requests of the HTTP floor and syncs of the fsync floor (each taken twice),
/// and repetitions of each list.
const HTTP_FLOOR_N: usize = 500;
const FSYNC_FLOOR_N: usize = 100;
const LIST_REPS: usize = 50;
/// Size of one fsync-floor write: one page, as a one-page WAL commit appends.
const FSYNC_WRITE: usize = 4096;
/// Rules at each end of the group's growth whose latencies are compared.
const RULE_WINDOW: usize = 100;
/// Ports one network's /20 subnet may take (4093 addresses are allocatable).
const PORTS_PER_NETWORK: usize = 4000;
/// Subnets attached to the one router of the L3 phase (each /24 of 172.16/12).
const L3_SUBNETS: usize = 200;

#[derive(clap::Args, Clone, Debug)]
pub struct ApiArgs {
    /// Networks to create, each with one IPv4 /20 subnet.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=4096))]
    networks: u16,
    /// Ports created in each of the two port phases (one client, then many).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    ports: u32,
    /// Concurrent clients of the second port phase, each on its own connection.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    clients: u16,
    /// Rules created in one security group (tcp ports 1000 and up, all distinct).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    rules: u32,
    /// Ports of the big cloud of the lists-at-scale phase (on a server of its
    /// own, on the first store, after 1,000 ports); 0 skips the phase.
    #[arg(long, default_value_t = 100_000)]
    scale_ports: u32,
    /// The vnet binary the lists-at-scale phase runs as its server (this
    /// one by default): an older build gives the baseline of the same lists
    /// on the same cloud.
    #[arg(long)]
    scale_server: Option<PathBuf>,
    /// The store the server runs on; `both` measures the embedded store, then
    /// etcd (one member of its own on loopback), in the same run.
    #[arg(long, value_enum, default_value_t = StoreChoice::Embedded)]
    store: StoreChoice,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    Embedded,
    Etcd,
    Both,
}

impl StoreChoice {
    fn stores(self) -> &'static [BenchStore] {
        match self {
            StoreChoice::Embedded => &[BenchStore::Embedded],
            StoreChoice::Etcd => &[BenchStore::Etcd],
            StoreChoice::Both => &[BenchStore::Embedded, BenchStore::Etcd],
        }
    }
}

/// The sizes of a run, as plain counts.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub networks: usize,
    pub ports: usize,
    pub clients: usize,
    pub rules: usize,
    pub scale_ports: usize,
}

pub async fn run(args: ApiArgs) -> Result<(), BoxError> {
    let plan = plan(&args)?;
    let mut runs = Vec::new();
    for &store in args.store.stores() {
        // One server at a time: the other one would share the cores.
        let mut server = Server::start(store).await?;
        let results = measure(plan, &mut server, store).await?;
        // A server that died at the very end would have answered with errors.
        server.usage()?;
        drop(server);
        runs.push(results);
    }
    // Lists at scale once, on a server of their own with the first store.
    if let (true, Some(&store), Some(first)) = (
        plan.scale_ports > 0,
        args.store.stores().first(),
        runs.first_mut(),
    ) {
        let exe = match &args.scale_server {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()?,
        };
        first.scale = Some(list_scale::measure(plan.scale_ports, store, &exe).await?);
    }
    if args.json {
        let json = match runs.as_slice() {
            [one] => report::json(one),
            all => report::json_side_by_side(all),
        };
        println!("{json}");
    } else {
        for results in &runs {
            print!("{}", report::table(results));
            println!();
        }
        if runs.len() > 1 {
            print!("{}", report::side_by_side(&runs));
        }
    }
    Ok(())
}

fn plan(args: &ApiArgs) -> Result<Plan, BoxError> {
    let plan = Plan {
        networks: usize::from(args.networks),
        ports: usize::try_from(args.ports)?,
        clients: usize::from(args.clients),
        rules: usize::try_from(args.rules)?,
        scale_ports: usize::try_from(args.scale_ports)?,
    };
    list_scale::check(plan.scale_ports)?;
    // Both port phases spread round-robin over the networks.
    if (2 * plan.ports).div_ceil(plan.networks) > PORTS_PER_NETWORK {
        return Err(format!(
            "{} ports on {} networks would exhaust their /20 subnets: use more networks",
            2 * plan.ports,
            plan.networks
        )
        .into());
    }
    Ok(plan)
}

async fn measure(plan: Plan, server: &mut Server, store: BenchStore) -> Result<Results, BoxError> {
    let mut conn = Conn::connect(server.addr).await?;
    // The floors are taken at the start and again at the end, then pooled, so
    // that a disturbance of this shared machine during the run shows in them too.
    let etcd_start = etcd_floor(server).await?;
    let (http_start, fsync_start) = floors(&mut conn, server).await?;
    let setup = create_networks(&mut conn, plan.networks).await?;
    let networks: Arc<[String]> = setup.network_ids.clone().into();
    let single = ports_single(&mut conn, server, &networks, plan.ports).await?;
    // With the default 1000 ports, this is Neutron's "list 1000 ports".
    let mid_run = list_figure(&mut conn, "list ports, after phase 1", PORTS, plan.ports).await?;
    let concurrent = ports_concurrent(server, &networks, plan.ports, plan.clients).await?;
    let mut lists = vec![mid_run];
    lists.extend(lists_after(&mut conn, &networks, plan.ports).await?);
    let rules = rules(&mut conn, plan.rules).await?;
    let l3 = l3(&mut conn, L3_SUBNETS).await?;
    let (http_end, fsync_end) = floors(&mut conn, server).await?;
    let etcd_end = etcd_floor(server).await?;
    let floors = Floors {
        http: Floor::new(http_start, http_end),
        fsync: Floor::new(fsync_start, fsync_end),
        etcd_txn: etcd_start.zip(etcd_end).map(|(a, b)| Floor::new(a, b)),
    };
    Ok(Results {
        plan,
        store: store.name(),
        server_pid: server.pid(),
        clk_tck: server.clk_tck(),
        floors,
        setup,
        single,
        concurrent,
        lists,
        rules,
        l3,
        scale: None,
    })
}

/// The HTTP floor, then the fsync floor.
async fn floors(conn: &mut Conn, server: &Server) -> Result<(Samples, Samples), BoxError> {
    let http = http_floor(conn).await?;
    let fsync = fsync_floor(server.scratch().join("fsync-probe")).await?;
    Ok((http, fsync))
}

/// `GET /` on a warm keep-alive connection: the cost of HTTP alone.
async fn http_floor(conn: &mut Conn) -> Result<Samples, BoxError> {
    let mut latencies = Vec::with_capacity(HTTP_FLOOR_N);
    for _ in 0..HTTP_FLOOR_N {
        latencies.push(conn.get("/").await?.elapsed);
    }
    Ok(Samples::new(latencies))
}

/// One page appended and fdatasync'ed, on the store's filesystem: the cost of
/// durability alone.
async fn fsync_floor(path: PathBuf) -> Result<Samples, BoxError> {
    tokio::task::spawn_blocking(move || {
        let samples = fsync_samples(&path);
        let _ = std::fs::remove_file(&path);
        samples
    })
    .await?
}

fn fsync_samples(path: &std::path::Path) -> Result<Samples, BoxError> {
    let mut file = File::create(path)?;
    let page = [0x5a_u8; FSYNC_WRITE];
    let mut latencies = Vec::with_capacity(FSYNC_FLOOR_N);
    for _ in 0..FSYNC_FLOOR_N {
        let start = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        latencies.push(start.elapsed());
    }
    Ok(Samples::new(latencies))
}

/// With the etcd store: single-key put transactions straight to the server's
/// etcd member, one at a time, under a prefix of their own (the same count as
/// the fsync floor). What one durable etcd transaction costs before vnet adds
/// anything.
async fn etcd_floor(server: &Server) -> Result<Option<Samples>, BoxError> {
    let Some((url, _)) = server.etcd() else {
        return Ok(None);
    };
    let mut options = store::etcd::Options::new(vec![url.to_owned()]);
    options.prefix = "/vnet-bench-floor".into();
    let etcd = store::etcd::EtcdStore::connect(options).await?;
    let mut latencies = Vec::with_capacity(FSYNC_FLOOR_N);
    for i in 0..FSYNC_FLOOR_N {
        let txn = store::Txn {
            success: vec![store::TxnOp::Put {
                key: format!("k/{}", i % 10),
                value: vec![0x5a; 256],
            }],
            ..store::Txn::default()
        };
        let start = Instant::now();
        etcd.txn(txn).await?;
        latencies.push(start.elapsed());
    }
    Ok(Some(Samples::new(latencies)))
}

/// `n` networks, each with the IPv4 subnet [`subnet_cidr`].
pub(super) async fn create_networks(conn: &mut Conn, n: usize) -> Result<Setup, BoxError> {
    let (mut network_ids, mut networks, mut subnets) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let body = json!({"network": {"name": format!("bench-net-{i}")}});
        let reply = conn.create("/v2.0/networks", &body).await?;
        let id = reply.id("network")?;
        networks.push(reply.elapsed);
        let body = json!({"subnet": {
            "name": format!("bench-subnet-{i}"),
            "network_id": id,
            "ip_version": 4,
            "cidr": subnet_cidr(i),
        }});
        subnets.push(conn.create("/v2.0/subnets", &body).await?.elapsed);
        network_ids.push(id);
    }
    Ok(Setup {
        network_ids,
        network_create: Samples::new(networks),
        subnet_create: Samples::new(subnets),
    })
}

/// The i-th /20 of 10.0.0.0/8 (i < 4096).
fn subnet_cidr(i: usize) -> String {
    let block = i * 16;
    format!("10.{}.{}.0/20", block >> 8, block & 0xff)
}

/// Port `i` of a phase goes on network `i mod networks`.
pub(super) fn port_body(networks: &[String], i: usize) -> Value {
    json!({"port": {"network_id": networks[i % networks.len()]}})
}

async fn ports_single(
    conn: &mut Conn,
    server: &mut Server,
    networks: &Arc<[String]>,
    ports: usize,
) -> Result<PortPhase, BoxError> {
    let meter = Meter::start(server)?;
    let mut latencies = Vec::with_capacity(ports);
    for i in 0..ports {
        let body = port_body(networks, i);
        latencies.push(conn.create("/v2.0/ports", &body).await?.elapsed);
    }
    meter.stop(server, 1, latencies)
}

/// `clients` tasks, each on its own connection (opened before the clock
/// starts), create `ports` ports between them: client c creates ports c,
/// c + clients, c + 2 clients, ...
async fn ports_concurrent(
    server: &mut Server,
    networks: &Arc<[String]>,
    ports: usize,
    clients: usize,
) -> Result<PortPhase, BoxError> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::connect(server.addr).await?);
    }
    let meter = Meter::start(server)?;
    // Dropping the set on an error aborts the other clients.
    let mut tasks = JoinSet::new();
    for (c, conn) in conns.into_iter().enumerate() {
        tasks.spawn(client_ports(conn, networks.clone(), c, clients, ports));
    }
    let mut latencies = Vec::with_capacity(ports);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    meter.stop(server, clients, latencies)
}

pub(super) async fn client_ports(
    mut conn: Conn,
    networks: Arc<[String]>,
    first: usize,
    step: usize,
    ports: usize,
) -> Result<Vec<Duration>, BoxError> {
    let mut latencies = Vec::with_capacity(ports / step + 1);
    for i in (first..ports).step_by(step) {
        let body = port_body(&networks, i);
        latencies.push(conn.create("/v2.0/ports", &body).await?.elapsed);
    }
    Ok(latencies)
}

/// The wall clock and both processes' usage since a phase started.
struct Meter {
    start: Instant,
    server: Usage,
    client: Usage,
    etcd: Option<Usage>,
}

impl Meter {
    fn start(server: &mut Server) -> Result<Meter, BoxError> {
        Ok(Meter {
            server: server.usage()?,
            client: server.client_usage()?,
            etcd: server.etcd_usage()?,
            start: Instant::now(),
        })
    }

    fn stop(
        self,
        server: &mut Server,
        clients: usize,
        latencies: Vec<Duration>,
    ) -> Result<PortPhase, BoxError> {
        let wall = self.start.elapsed();
        Ok(PortPhase {
            clients,
            ports: latencies.len(),
            wall,
            latencies: Samples::new(latencies),
            server: server.usage()?.since(&self.server),
            client_cpu_seconds: server.client_usage()?.since(&self.client).cpu_seconds,
            etcd: match (server.etcd_usage()?, &self.etcd) {
                (Some(now), Some(before)) => Some(now.since(before)),
                _ => None,
            },
        })
    }
}

const PORTS: &str = "/v2.0/ports";

/// Lists after both port phases (2 × `ports` ports), each checked for its count.
async fn lists_after(
    conn: &mut Conn,
    networks: &[String],
    ports: usize,
) -> Result<Vec<ListFigure>, BoxError> {
    let total = 2 * ports;
    // Each phase put ports 0, n, 2n, ... on the first network.
    let on_first = 2 * ports.div_ceil(networks.len());
    let cases = [
        ("list ports", PORTS.to_owned(), total),
        (
            "list ports ?network_id=",
            format!("{PORTS}?network_id={}", networks[0]),
            on_first,
        ),
        (
            "list ports ?limit=1000",
            format!("{PORTS}?limit=1000"),
            total.min(1000),
        ),
    ];
    let mut figures = Vec::with_capacity(cases.len());
    for (name, path, items) in cases {
        figures.push(list_figure(conn, name, &path, items).await?);
    }
    Ok(figures)
}

async fn list_figure(
    conn: &mut Conn,
    name: &'static str,
    path: &str,
    items: usize,
) -> Result<ListFigure, BoxError> {
    let mut latencies = Vec::with_capacity(LIST_REPS);
    for rep in 0..LIST_REPS {
        let reply = conn.get(path).await?;
        latencies.push(reply.elapsed);
        if rep == 0 {
            let got = reply.count("ports")?;
            if got != items {
                return Err(format!("GET {path} listed {got} ports, expected {items}").into());
            }
        }
    }
    Ok(ListFigure {
        name,
        path: path.to_owned(),
        items,
        latencies: Samples::new(latencies),
    })
}

/// One new group, then `n` distinct ingress tcp rules in it, one at a time.
async fn rules(conn: &mut Conn, n: usize) -> Result<RuleFigure, BoxError> {
    let body = json!({"security_group": {"name": "bench-rules"}});
    let group = conn
        .create("/v2.0/security-groups", &body)
        .await?
        .id("security_group")?;
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let port = 1000 + i;
        let body = json!({"security_group_rule": {
            "security_group_id": group,
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": port,
            "port_range_max": port,
        }});
        let reply = conn.create("/v2.0/security-group-rules", &body).await?;
        latencies.push(reply.elapsed);
    }
    let window = RULE_WINDOW.min(n / 2).max(1).min(n);
    Ok(RuleFigure {
        rules: n,
        window,
        first: Samples::new(latencies[..window].to_vec()),
        last: Samples::new(latencies[n - window..].to_vec()),
        all: Samples::new(latencies),
    })
}

/// An external network and one router with a gateway on it; then, `n`
/// times: a network and subnet (untimed), the subnet added to the router
/// (timed), a port on it (untimed) and a floating IP created with that port
/// (timed: allocation and association in one request).
async fn l3(conn: &mut Conn, n: usize) -> Result<L3Figure, BoxError> {
    let body = json!({"network": {"name": "bench-external", "router:external": true}});
    let external = conn.create("/v2.0/networks", &body).await?.id("network")?;
    let body =
        json!({"subnet": {"network_id": external, "ip_version": 4, "cidr": "100.64.0.0/16"}});
    conn.create("/v2.0/subnets", &body).await?;
    let body =
        json!({"router": {"name": "bench", "external_gateway_info": {"network_id": external}}});
    let router = conn.create("/v2.0/routers", &body).await?.id("router")?;
    let add = format!("/v2.0/routers/{router}/add_router_interface");
    let (mut interface_add, mut floating_ip) = (Vec::new(), Vec::new());
    for i in 0..n {
        let body = json!({"network": {"name": format!("bench-l3-{i}")}});
        let network = conn.create("/v2.0/networks", &body).await?.id("network")?;
        let cidr = format!("172.{}.{}.0/24", 16 + i / 256, i % 256);
        let body = json!({"subnet": {"network_id": network, "ip_version": 4, "cidr": cidr}});
        let subnet = conn.create("/v2.0/subnets", &body).await?.id("subnet")?;
        interface_add.push(
            conn.put(&add, &json!({ "subnet_id": subnet }))
                .await?
                .elapsed,
        );
        let body = json!({"port": {"network_id": network}});
        let port = conn.create("/v2.0/ports", &body).await?.id("port")?;
        let body = json!({"floatingip": {"floating_network_id": external, "port_id": port}});
        floating_ip.push(conn.create("/v2.0/floatingips", &body).await?.elapsed);
    }
    Ok(L3Figure {
        subnets: n,
        interface_add: Samples::new(interface_add),
        floating_ip: Samples::new(floating_ip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_distinct_twenties_of_ten_slash_eight() {
        assert_eq!(subnet_cidr(0), "10.0.0.0/20");
        assert_eq!(subnet_cidr(1), "10.0.16.0/20");
        assert_eq!(subnet_cidr(16), "10.1.0.0/20");
        assert_eq!(subnet_cidr(4095), "10.255.240.0/20");
    }
}
