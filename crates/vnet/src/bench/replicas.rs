//! `vnet bench replicas`: port creates on three etcd members on loopback,
//! through one server, then through three replicas with the clients spread
//! over them, in the same run; then a fourth replica joining that cloud (from
//! its start to its first answer: loading from etcd, compiling, serving) and
//! its RSS; then how long after a kill -9 of the leading replica the first
//! create sent after it succeeds. It starts and kills
//! only its own processes (by pid), and removes its directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::etcd::local::{LocalCluster, LocalEtcd};
use tokio::task::JoinSet;

use super::api::{client_ports, create_networks, port_body};
use super::client::Conn;
use super::stats::{self, Samples, ms};
use crate::BoxError;

#[derive(clap::Args, Clone, Debug)]
pub struct ReplicasArgs {
    /// Ports created in each configuration.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    ports: u32,
    /// Concurrent clients, each on its own connection (spread round-robin
    /// over the replicas).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    clients: u16,
}

/// One configuration's figures.
struct Figures {
    servers: usize,
    ports: usize,
    wall: Duration,
    latencies: Samples,
    server_cpu_seconds: f64,
    etcd_cpu_seconds: f64,
    /// A replica started on the cloud made: until it answered, and its RSS
    /// then (with more than one server).
    join: Option<(Duration, u64)>,
    /// From the kill -9 of the leader to the first create sent after it
    /// that succeeded (with more than one server).
    failover: Option<Duration>,
}

pub async fn run(args: ReplicasArgs) -> Result<(), BoxError> {
    let ports = usize::try_from(args.ports)?;
    let clients = usize::from(args.clients);
    let one = measure(1, ports, clients).await?;
    let three = measure(3, ports, clients).await?;
    println!(
        "port creates on three etcd members (loopback), {clients} clients, {ports} ports each"
    );
    println!(
        "| servers | ports/s | ratio | p50 ms | p99 ms | server CPU s / 1000 ports | etcd CPU s / 1000 ports | a replica joins: ready in, RSS | leader kill -9 → first create |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let baseline = one.ports as f64 / one.wall.as_secs_f64();
    for f in [&one, &three] {
        let rate = f.ports as f64 / f.wall.as_secs_f64();
        let per_k = 1000.0 / f.ports as f64;
        println!(
            "| {} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {} | {} |",
            f.servers,
            rate / baseline,
            ms(f.latencies.p50()),
            ms(f.latencies.p99()),
            f.server_cpu_seconds * per_k,
            f.etcd_cpu_seconds * per_k,
            f.join.map_or("-".into(), |(d, rss)| format!(
                "{:.2} s, {} MiB",
                d.as_secs_f64(),
                rss >> 20
            )),
            f.failover
                .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        );
    }
    Ok(())
}

/// Child processes killed (SIGKILL, by their own pid) on drop, and the
/// directory removed.
struct Run {
    root: PathBuf,
    servers: Vec<Child>,
    addrs: Vec<SocketAddr>,
}

impl Drop for Run {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn measure(servers: usize, ports: usize, clients: usize) -> Result<Figures, BoxError> {
    let root = std::env::temp_dir().join(format!(
        "vnet-bench-replicas-{}-{servers}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root)?;
    let mut run = Run {
        root: root.clone(),
        servers: Vec::new(),
        addrs: Vec::new(),
    };
    let etcd = LocalCluster::start(&root, 3).await?;
    let endpoints = etcd.client_urls().join(",");
    for i in 0..servers {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        run.servers.push(spawn(&root, i, addr, &endpoints)?);
        run.addrs.push(addr);
    }
    for addr in &run.addrs {
        wait_ready(*addr, Duration::from_secs(10)).await?;
    }
    let mut conn = Conn::connect(run.addrs[0]).await?;
    let networks: Arc<[String]> = create_networks(&mut conn, ports.div_ceil(4000).max(1))
        .await?
        .network_ids
        .into();
    let mut conns = Vec::with_capacity(clients);
    for c in 0..clients {
        conns.push(Conn::connect(run.addrs[c % servers]).await?);
    }
    let clk_tck = super::server::clk_tck();
    let cpu = |pids: &[u32]| -> Result<f64, BoxError> {
        pids.iter()
            .map(|pid| stats::usage(*pid, clk_tck).map(|u| u.cpu_seconds))
            .sum()
    };
    let server_pids: Vec<u32> = run.servers.iter().map(Child::id).collect();
    let etcd_pids = etcd.pids();
    let (server_before, etcd_before) = (cpu(&server_pids)?, cpu(&etcd_pids)?);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (c, conn) in conns.into_iter().enumerate() {
        tasks.spawn(client_ports(conn, networks.clone(), c, clients, ports));
    }
    let mut latencies = Vec::with_capacity(ports);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let wall = start.elapsed();
    let server_cpu_seconds = cpu(&server_pids)? - server_before;
    let etcd_cpu_seconds = cpu(&etcd_pids)? - etcd_before;
    let (join, failover) = match servers {
        1 => (None, None),
        _ => (
            Some(join(&mut run, &endpoints, clk_tck).await?),
            Some(failover(&mut run, &networks).await?),
        ),
    };
    drop(etcd);
    Ok(Figures {
        servers,
        ports: latencies.len(),
        wall,
        latencies: Samples::new(latencies),
        server_cpu_seconds,
        etcd_cpu_seconds,
        join,
        failover,
    })
}

/// Starts one more replica on the cloud made and times it until it answers
/// (it listens once it has loaded and compiled the cloud); its RSS then.
async fn join(run: &mut Run, endpoints: &str, clk_tck: f64) -> Result<(Duration, u64), BoxError> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let started = Instant::now();
    run.servers
        .push(spawn(&run.root, run.addrs.len(), addr, endpoints)?);
    run.addrs.push(addr);
    wait_ready(addr, Duration::from_secs(300)).await?;
    let ready = started.elapsed();
    let pid = run
        .servers
        .last()
        .map(Child::id)
        .ok_or("no replica started")?;
    Ok((ready, stats::usage(pid, clk_tck)?.rss_bytes))
}

/// Kills the leading replica (-9) and times the first create, sent after the
/// kill to any other replica, that succeeds.
async fn failover(run: &mut Run, networks: &[String]) -> Result<Duration, BoxError> {
    let mut leader = None;
    for (i, addr) in run.addrs.iter().enumerate() {
        let replica = Conn::connect(*addr)
            .await?
            .get("/vnet/v1/replica")
            .await?
            .json()?;
        if replica["replica"]["leads"] == true {
            leader = Some(i);
        }
    }
    let leader = leader.ok_or("no replica leads")?;
    run.servers[leader].kill()?;
    let killed = Instant::now();
    let body = port_body(networks, 0);
    let others: Vec<SocketAddr> = (0..run.addrs.len())
        .filter(|i| *i != leader)
        .map(|i| run.addrs[i])
        .collect();
    for attempt in 0usize.. {
        if killed.elapsed() > Duration::from_secs(60) {
            break;
        }
        let addr = others[attempt % others.len()];
        if let Ok(mut conn) = Conn::connect(addr).await
            && conn.create("/v2.0/ports", &body).await.is_ok()
        {
            return Ok(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("no replica took a write within 60 s of the leader's death".into())
}

fn spawn(root: &Path, i: usize, addr: SocketAddr, endpoints: &str) -> Result<Child, BoxError> {
    let log = std::fs::File::create(root.join(format!("server{i}.log")))?;
    let limits = LocalEtcd::LIMITS;
    Command::new(std::env::current_exe()?)
        .args(["server", "--listen", &addr.to_string()])
        .args(["--store", "etcd", "--etcd-endpoints", endpoints])
        .arg(format!("--etcd-max-txn-ops={}", limits.max_ops))
        .arg(format!("--etcd-max-request-bytes={}", limits.max_bytes))
        .args(["--etcd-timeout", "2", "--etcd-claim-ttl", "2"])
        .args(crate::lab::unlimited_quotas())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start a server: {e}").into())
}

async fn wait_ready(addr: SocketAddr, within: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut conn) = Conn::connect(addr).await
            && conn.get("/").await.is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("the server at {addr} did not answer within {within:?}").into())
}
