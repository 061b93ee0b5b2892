//! The one vnet binary: `vnet server`, `agent`, `lab`, `bench` and `trace`.
//! The only place that turns errors into exit codes.

mod bench;
mod lab;
mod names;
mod trace_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use model::CloudConfig;

#[derive(Parser)]
#[command(name = "vnet", version, about = "Virtual networks for clouds")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Neutron v2.0 API on the embedded store (or on etcd).
    Server(Box<ServerArgs>),
    /// Run this host's agent: program the kernel, serve DHCP, report ports.
    Agent(AgentArgs),
    /// A cloud in a box: a fabric, hosts with agents, a server, and VMs (root).
    #[command(subcommand)]
    Lab(lab::Lab),
    /// Benchmarks of vnet's hot paths.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Why a packet does or does not get from a port to an address or port:
    /// each step (host, object, decision), the verdict and a hint. Exits 0
    /// if delivered, 2 if dropped.
    Trace(trace_cli::TraceArgs),
}

#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Address to listen on, as ADDR or NETNS/ADDR (inside a named network
    /// namespace, e.g. a lab's management network); repeatable. Keep it on
    /// loopback or a private network: noauth trusts its callers.
    #[arg(long, default_value = "127.0.0.1:9696", value_parser = parse_listen)]
    listen: Vec<Listen>,
    /// Where the cloud's state lives: `embedded` (one SQLite file in
    /// --data-dir, one machine) or `etcd` (an etcd cluster, --etcd-endpoints).
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,
    /// Directory of the embedded store (one SQLite file).
    #[arg(long, default_value = "vnet-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Project of requests without X-Project-Id (they act as its admin).
    #[arg(long, default_value = "admin")]
    default_project: String,
    /// First three octets of generated MAC addresses.
    #[arg(long, default_value = "fa:16:3e", value_parser = parse_mac_base)]
    mac_base: [u8; 3],
    /// VXLAN VNIs handed to new networks, as FIRST:LAST.
    #[arg(long, default_value = "1:65535", value_parser = parse_range)]
    vni_range: (u32, u32),
    /// Default and maximum network MTU, 68 (IPv4's minimum) to 9000.
    #[arg(long, default_value_t = 1450, value_parser = clap::value_parser!(u32).range(68..=9000))]
    max_mtu: u32,
    /// A default quota, as NAME=LIMIT (e.g. port=1000; -1 is unlimited);
    /// repeatable. Projects get these unless an admin sets their own.
    #[arg(long = "quota", value_parser = parse_quota)]
    quotas: Vec<(String, i64)>,
    /// Who vouches for callers: `noauth` (they name their own project with
    /// X-Project-Id; development only) or `keystone` (X-Auth-Token).
    #[arg(long, value_enum, default_value_t = AuthMode::Noauth)]
    auth: AuthMode,
    #[command(flatten)]
    keystone: KeystoneArgs,
    /// A secret every agent must send (`X-Vnet-Agent-Token`) to register,
    /// report and read host state under /vnet/v1/hosts. Required with
    /// `--auth keystone`: there the agent API would otherwise be open.
    #[arg(long, env = "VNET_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
    /// Write this file (the server's pid) once every listener is bound:
    /// how `vnet lab` knows its own server started, whatever else answers
    /// on the port.
    #[arg(long, hide = true)]
    ready_file: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum StoreKind {
    Embedded,
    Etcd,
}

/// The etcd store's settings (with --store etcd).
#[derive(clap::Args, Clone)]
pub struct EtcdArgs {
    /// Client URLs of the etcd cluster's members, comma-separated
    /// (http://10.0.0.1:2379,http://10.0.0.2:2379,...).
    #[arg(long, value_delimiter = ',', env = "VNET_ETCD_ENDPOINTS")]
    etcd_endpoints: Vec<String>,
    /// Key prefix of this cloud's keys in etcd: clouds with different
    /// prefixes share a cluster without seeing each other.
    #[arg(long, default_value = store::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// The cluster's --max-txn-ops (etcd's default is 128): the server keeps
    /// each transaction under it.
    #[arg(long, default_value_t = store::etcd::ETCD_DEFAULT_LIMITS.max_ops)]
    etcd_max_txn_ops: usize,
    /// The cluster's --max-request-bytes (etcd's default is 1.5 MiB).
    #[arg(long, default_value_t = store::etcd::ETCD_DEFAULT_LIMITS.max_bytes)]
    etcd_max_request_bytes: usize,
    /// Seconds an etcd request may take before it fails (clients then get a
    /// 503): an etcd without quorum does not answer at all.
    #[arg(long, default_value_t = 10)]
    etcd_timeout: u64,
    /// Seconds the leading server's claim on the prefix outlives it if it
    /// dies without letting go (kill -9, or cut off from etcd): another
    /// replica leads after that. Writes of a server whose claim ran out are
    /// refused.
    #[arg(long, default_value_t = 10)]
    etcd_claim_ttl: u64,
    /// The URL other replicas on the same etcd prefix reach this one at:
    /// while it leads, they forward writes there (default: http:// and the
    /// first --listen address).
    #[arg(long)]
    advertise: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum AuthMode {
    Noauth,
    Keystone,
}

/// Keystone settings (with --auth keystone). Each can come from the
/// environment instead, so the password stays off the command line.
#[derive(clap::Args, Clone)]
struct KeystoneArgs {
    /// Keystone's URL, e.g. http://keystone:5000.
    #[arg(long, env = "VNET_KEYSTONE_URL")]
    keystone_url: Option<String>,
    /// The server's own Keystone user (it needs the admin or service role to validate tokens).
    #[arg(long, env = "VNET_KEYSTONE_USER", default_value = "neutron")]
    keystone_user: String,
    /// That user's password.
    #[arg(long, env = "VNET_KEYSTONE_PASSWORD", hide_env_values = true)]
    keystone_password: Option<String>,
    /// The project the service token is scoped to.
    #[arg(long, env = "VNET_KEYSTONE_PROJECT", default_value = "service")]
    keystone_project: String,
    #[arg(long, env = "VNET_KEYSTONE_USER_DOMAIN", default_value = "Default")]
    keystone_user_domain: String,
    #[arg(long, env = "VNET_KEYSTONE_PROJECT_DOMAIN", default_value = "Default")]
    keystone_project_domain: String,
    /// Longest a validated token is trusted without asking Keystone again
    /// (seconds): a token revoked in Keystone works here until then at most.
    #[arg(long, default_value_t = 300)]
    token_cache_ttl: u64,
    /// Most tokens kept in the validation cache.
    #[arg(long, default_value_t = 10_000)]
    token_cache_size: usize,
}

impl KeystoneArgs {
    fn config(self) -> Result<api::AuthConfig, BoxError> {
        let url = self
            .keystone_url
            .ok_or("--auth keystone needs --keystone-url (or VNET_KEYSTONE_URL)")?;
        let password = self
            .keystone_password
            .ok_or("--auth keystone needs --keystone-password (or VNET_KEYSTONE_PASSWORD)")?;
        Ok(api::AuthConfig::Keystone(api::KeystoneConfig {
            url,
            user: self.keystone_user,
            password,
            project: self.keystone_project,
            user_domain: self.keystone_user_domain,
            project_domain: self.keystone_project_domain,
            cache_ttl: std::time::Duration::from_secs(self.token_cache_ttl),
            cache_capacity: self.token_cache_size,
        }))
    }
}

#[derive(clap::Args, Clone)]
pub struct AgentArgs {
    /// The vnet server, http://HOST:PORT, or its replicas comma-separated
    /// (http://A:9696,http://B:9696): when one stops answering the agent
    /// moves to the next and resumes its state stream there.
    #[arg(long, default_value = "http://127.0.0.1:9696")]
    server: String,
    /// This host's name, as ports are bound to it (binding:host_id).
    #[arg(long)]
    host: String,
    /// This host's VXLAN tunnel endpoint address.
    #[arg(long)]
    underlay_ip: std::net::IpAddr,
    /// The server's agent token (`vnet server --agent-token`).
    #[arg(long, env = "VNET_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run as the agent of the host that is this named network namespace
    /// (a lab's or test's host): the agent enters it before anything else,
    /// and stays in the machine's mount namespace, so the router namespaces
    /// it makes are seen (and outlive it) as `ip netns` ones.
    #[arg(long)]
    netns: Option<String>,
    /// Prefix of this host's router namespaces (default `vnr-`, or
    /// `NETNS-vnr-` with --netns). Every namespace with it is the agent's.
    #[arg(long)]
    router_netns_prefix: Option<String>,
    /// Map a physical network to this host's interface on it, NAME:IFACE
    /// (repeatable, like Neutron's bridge_mappings). A flat network on NAME
    /// is a bridge enslaving IFACE; the interface should carry no address.
    #[arg(long = "physical-network", value_name = "NAME:IFACE")]
    physical_networks: Vec<String>,
    /// This host may run default SNAT for routers (a gateway host).
    #[arg(long)]
    gateway: bool,
    /// This host's availability zone: routers with zone hints take their
    /// gateway host from the zones they name.
    #[arg(long, default_value = compiler::protocol::DEFAULT_ZONE)]
    availability_zone: String,
    /// The DNS domain of this host's DHCPv6 replies (their domain search
    /// list), Neutron's `dns_domain`; empty for none.
    #[arg(long, default_value = "openstacklocal")]
    dns_domain: agent::dhcp::dhcpv6::DnsDomain,
}

/// Where to listen: an address, in the current or a named network namespace.
#[derive(Clone, Debug)]
struct Listen {
    netns: Option<String>,
    addr: SocketAddr,
}

fn parse_quota(s: &str) -> Result<(String, i64), String> {
    let (name, limit) = s.split_once('=').ok_or("expected NAME=LIMIT")?;
    if !model::QUOTA_KINDS.iter().any(|(n, _)| *n == name) {
        let names: Vec<&str> = model::QUOTA_KINDS.iter().map(|(n, _)| *n).collect();
        return Err(format!("unknown quota {name}: one of {}", names.join(", ")));
    }
    match limit.parse::<i64>() {
        Ok(l) if l >= -1 => Ok((name.to_owned(), l)),
        _ => Err(format!("{limit} is not a limit (-1 or more)")),
    }
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    let (netns, addr) = match s.rsplit_once('/') {
        Some((ns, addr)) => (Some(ns.to_owned()), addr),
        None => (None, s),
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("'{s}' is not ADDR:PORT or NETNS/ADDR:PORT"))?;
    Ok(Listen { netns, addr })
}

/// Why a listener could not be had; it names the address, so that "Address
/// already in use" says which one.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error("cannot listen on {addr}{}: {source}", netns.as_ref().map(|n| format!(" in network namespace {n}")).unwrap_or_default())]
    Bind {
        addr: SocketAddr,
        netns: Option<String>,
        #[source]
        source: std::io::Error,
    },
}

/// Bind a listener; in a named namespace, from a thread that enters it first
/// (a socket stays in the namespace it was created in).
fn bind(listen: &Listen) -> Result<tokio::net::TcpListener, BoxError> {
    let named = |source| ListenError::Bind {
        addr: listen.addr,
        netns: listen.netns.clone(),
        source,
    };
    let listener = match &listen.netns {
        None => std::net::TcpListener::bind(listen.addr).map_err(named)?,
        Some(ns) => {
            let (ns, addr) = (ns.clone(), listen.addr);
            std::thread::spawn(move || -> Result<std::net::TcpListener, BoxError> {
                let file = std::fs::File::open(format!("/run/netns/{ns}"))
                    .map_err(|e| format!("network namespace {ns}: {e}"))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering network namespace {ns}: {e}"))?;
                Ok(std::net::TcpListener::bind(addr)?)
            })
            .join()
            .map_err(|_| "the namespace listener thread panicked")?
            .map_err(|e| match e.downcast::<std::io::Error>() {
                Ok(io) => Box::new(named(*io)) as BoxError,
                Err(other) => other,
            })?
        }
    };
    // Listen again with the system's largest accept queue (std's is 128):
    // the thousand agents that reconnect at once while a restarted server
    // loads its store then wait queued, answered the moment it is ready,
    // instead of having their SYNs dropped and resent a second or more later.
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN)
        .map_err(|e| named(e.into()))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

fn parse_mac_base(s: &str) -> Result<[u8; 3], String> {
    let mac: model::MacAddr = format!("{s}:00:00:00")
        .parse()
        .map_err(|_| format!("'{s}' is not three MAC octets like fa:16:3e"))?;
    if !mac.is_valid_port_mac() {
        return Err(format!("'{s}' would make multicast MACs"));
    }
    Ok([mac.0[0], mac.0[1], mac.0[2]])
}

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("'{s}' is not FIRST:LAST within 1:16777215");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a == 0 || a > b || b > 0x00ff_ffff {
        return Err(bad());
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        // The lab drives commands and child processes; it needs no runtime.
        Command::Lab(lab) => lab::main(lab),
        // One blocking request: no runtime either.
        Command::Trace(args) => match trace_cli::run(&args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        command => run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnet: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), BoxError> {
    // Before the runtime's threads exist, so that all of them are inside.
    if let Command::Agent(AgentArgs {
        netns: Some(netns), ..
    }) = &command
    {
        let file = std::fs::File::open(format!("/run/netns/{netns}"))
            .map_err(|e| format!("network namespace {netns}: {e}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering network namespace {netns}: {e}"))?;
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        match command {
            Command::Server(args) => server(*args).await,
            Command::Agent(args) => {
                let netns_prefix = match (args.router_netns_prefix, &args.netns) {
                    (Some(prefix), _) => prefix,
                    (None, Some(netns)) => format!("{netns}-vnr-"),
                    (None, None) => agent::router::RouterConfig::default().netns_prefix,
                };
                let config = agent::daemon::AgentConfig {
                    server: args.server,
                    host: args.host.clone(),
                    underlay_ip: args.underlay_ip,
                    token: args.token,
                    router: agent::router::RouterConfig {
                        netns_prefix,
                        host: args.host,
                    },
                    physical_networks: agent::mappings::parse(&args.physical_networks)?,
                    gateway: args.gateway,
                    availability_zone: args.availability_zone,
                    dns_domain: args.dns_domain,
                };
                agent::daemon::run(config, shutdown_signal())
                    .await
                    .map_err(Into::into)
            }
            Command::Bench(b) => bench::run(b).await,
            Command::Lab(_) | Command::Trace(_) => {
                Err("the lab and trace run without the async runtime".into())
            }
        }
    })
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn server(args: ServerArgs) -> Result<(), BoxError> {
    // Flags first: a refused configuration creates nothing and claims no port.
    let auth = match args.auth {
        AuthMode::Noauth => {
            tracing::warn!(
                "auth is noauth: callers choose their project with X-Project-Id; for development only"
            );
            api::AuthConfig::NoAuth
        }
        AuthMode::Keystone => {
            if args.agent_token.is_none() {
                return Err(
                    "--auth keystone needs --agent-token (or VNET_AGENT_TOKEN): \
                            without it anyone could act as an agent"
                        .into(),
                );
            }
            let auth = args.keystone.config()?;
            if let api::AuthConfig::Keystone(k) = &auth {
                tracing::info!(url = %k.url, user = %k.user, project = %k.project, "auth is keystone");
            }
            auth
        }
    };
    let (store, _lock, where_) = open_store(args.store, &args.data_dir, &args.etcd).await?;
    let mut listeners = Vec::new();
    for listen in &args.listen {
        let listener = bind(listen)?;
        tracing::info!(
            listen = %listener.local_addr()?,
            netns = listen.netns.as_deref().unwrap_or("-"),
            store = %where_,
            "vnet server: Neutron v2.0 API"
        );
        listeners.push(listener);
    }
    if let Some(file) = &args.ready_file {
        std::fs::write(file, std::process::id().to_string())
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    let advertise = match (&args.etcd.advertise, args.listen.first()) {
        (Some(url), _) => url.clone(),
        (None, Some(listen)) => format!("http://{}", listen.addr),
        (None, None) => String::new(),
    };
    let config = api::ServerConfig {
        advertise,
        auth,
        agent_token: args.agent_token,
        default_project: args.default_project,
        cloud: CloudConfig {
            mac_base: args.mac_base,
            vni_range: args.vni_range,
            max_mtu: args.max_mtu,
            seed: seed(),
            default_quotas: model::default_limits()
                .into_iter()
                .chain(args.quotas)
                .collect(),
        },
    };
    let served = api::serve(listeners, store.shared(), config, shutdown_signal()).await;
    store.close().await;
    served?;
    tracing::info!("vnet server stopped");
    Ok(())
}

/// The store the server runs on, held so a clean stop can let go of it.
enum OpenStore {
    Embedded(Arc<store::embedded::EmbeddedStore>),
    Etcd(Arc<store::etcd::EtcdStore>),
}

impl OpenStore {
    fn shared(&self) -> Arc<dyn store::Store> {
        match self {
            OpenStore::Embedded(s) => s.clone(),
            OpenStore::Etcd(s) => s.clone(),
        }
    }

    /// Ends this server's claim on an etcd store at once, so a restart need not
    /// wait for its lease to run out.
    async fn close(&self) {
        if let OpenStore::Etcd(s) = self {
            s.release().await;
        }
    }
}

/// Opens the chosen store: the embedded one made this server's alone by a
/// lock file in the data dir; etcd shared by replicas, one of which leads
/// (the API claims it). Returns it, the lock file, and where it is.
async fn open_store(
    kind: StoreKind,
    data_dir: &std::path::Path,
    e: &EtcdArgs,
) -> Result<(OpenStore, Option<std::fs::File>, String), BoxError> {
    match kind {
        StoreKind::Embedded => {
            let lock = lock_data_dir(data_dir)?;
            let store = store::embedded::EmbeddedStore::open(data_dir)?;
            let where_ = format!("embedded {}", data_dir.display());
            Ok((OpenStore::Embedded(Arc::new(store)), Some(lock), where_))
        }
        StoreKind::Etcd => {
            if e.etcd_endpoints.is_empty() {
                return Err("--store etcd needs --etcd-endpoints URL[,URL...]".into());
            }
            let options = store::etcd::Options {
                endpoints: e.etcd_endpoints.clone(),
                prefix: e.etcd_prefix.clone(),
                request_timeout: std::time::Duration::from_secs(e.etcd_timeout.max(1)),
                limits: store::TxnLimits {
                    max_ops: e.etcd_max_txn_ops.max(1),
                    max_bytes: e.etcd_max_request_bytes,
                },
                claim_ttl: std::time::Duration::from_secs(e.etcd_claim_ttl),
            };
            let store = store::etcd::EtcdStore::connect(options).await?;
            let where_ = format!(
                "etcd {} prefix {}",
                e.etcd_endpoints.join(","),
                e.etcd_prefix
            );
            Ok((OpenStore::Etcd(Arc::new(store)), None, where_))
        }
    }
}

/// One server per data dir: a second one would keep its own copy of the cloud
/// in memory and overwrite the first one's writes. The lock dies with the process.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, BoxError> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::create(dir.join("vnet.lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(format!("another vnet server is using {}", dir.display()).into())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// A seed for ids and MACs that differs between runs and between processes.
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
