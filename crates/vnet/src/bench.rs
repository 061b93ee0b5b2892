//! `vnet bench`: measures of vnet's hot paths against a real server process, a
//! child of this one on loopback with a fresh data dir. It owns only the measuring:
//! it must not link the server in, reach into its crates, or report failed requests.
//! The one exception is the compiler, pure and measured in this process.

mod api;
mod client;
mod compiler;
mod convergence;
mod goals;
mod ipv6;
mod list_scale;
mod nft;
mod replicas;
mod report;
mod results;
mod routing;
mod scale;
mod scale_agents;
mod security;
mod server;
mod stats;
mod trace;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// The Neutron API: port creates (one client, then many), lists and rule
    /// creates, next to the HTTP and fsync floors measured in the same run;
    /// then, on a server of their own, filtered lists at 1,000 ports and at
    /// 100,000.
    Api(api::ApiArgs),
    /// Port creates through one server, then three replicas, on three etcd
    /// members on loopback (same run); the failover of a killed leader.
    Replicas(replicas::ReplicasArgs),
    /// The compiler, in process: a full compile of a synthetic cloud, and one
    /// port add or delete in it and in one a tenth its size.
    Compiler(compiler::CompilerArgs),
    /// `vnet trace` in process: one trace's latency in the compiler bench's
    /// cloud, next to one snapshot of the source host measured in the same run.
    Trace(trace::TraceArgs),
    /// One server and 1,000 simulated hosts over 100,000 ports: the load,
    /// one change's fan-out, a member joining a group every host watches,
    /// churn, the idle cost, a restart storm, the bytes per change.
    Scale(scale::ScaleArgs),
    /// The simulated hosts of `bench scale`, driven by it over stdin/stdout.
    #[command(hide = true)]
    ScaleAgents(scale_agents::ScaleAgentsArgs),
    /// Convergence in a two-host lab (root): from a port's POST returning to
    /// ACTIVE, and to a peer on the other host reaching it.
    Convergence {
        /// How many ports to bind, one after another.
        #[arg(long, default_value_t = 50)]
        ports: usize,
        /// Ports (no device, same security group) the host holds first.
        #[arg(long, default_value_t = 0)]
        host_ports: usize,
    },
    /// The agent's nftables work per change (root, in process): the
    /// in-process netlink path next to the `nft` process path, same run.
    Nft(nft::NftArgs),
    /// Throughput of routed and floating IP paths, in a two-host lab (root,
    /// iperf3), as ratios to a veth pair measured in the same run.
    Routing {
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Runs per path (medians are reported).
        #[arg(long, default_value_t = 7)]
        repeats: usize,
    },
    /// IPv6 in a two-host lab (root, iperf3, dhclient): from a port's
    /// creation to its VM holding its address (SLAAC, DHCPv6) against the
    /// VM's own duplicate address detection, and IPv6 against IPv4
    /// throughput between the same VMs, in the same run.
    Ipv6 {
        /// Ports of each kind (SLAAC, DHCPv6, baseline).
        #[arg(long, default_value_t = 20)]
        ports: usize,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Runs per protocol (medians are reported).
        #[arg(long, default_value_t = 7)]
        repeats: usize,
    },
    /// Throughput as security groups grow, in a two-host lab (root, iperf3).
    Security {
        /// Rule counts to measure, for vnet's groups and the linear baseline.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        rules: Vec<usize>,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 2)]
        seconds: u32,
        /// Runs per scenario and pair (medians are reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
}

pub async fn run(bench: Bench) -> Result<(), crate::BoxError> {
    match bench {
        Bench::Api(args) => api::run(args).await,
        Bench::Replicas(args) => replicas::run(args).await,
        Bench::Compiler(args) => compiler::run(args),
        Bench::Trace(args) => trace::run(args),
        Bench::Scale(args) => scale::run(args).await,
        Bench::ScaleAgents(args) => scale_agents::run(args).await,
        Bench::Routing { seconds, repeats } => {
            let figures =
                tokio::task::spawn_blocking(move || routing::run_bench(seconds, repeats)).await??;
            routing::print(&figures);
            Ok(())
        }
        Bench::Ipv6 {
            ports,
            seconds,
            repeats,
        } => {
            let figures =
                tokio::task::spawn_blocking(move || ipv6::run_bench(ports, seconds, repeats))
                    .await??;
            ipv6::print(&figures);
            Ok(())
        }
        Bench::Security {
            rules,
            seconds,
            repeats,
        } => {
            let figures =
                tokio::task::spawn_blocking(move || security::run_bench(&rules, seconds, repeats))
                    .await??;
            security::print(&figures);
            Ok(())
        }
        Bench::Nft(args) => {
            let figures = tokio::task::spawn_blocking(move || nft::run_bench(&args)).await??;
            nft::print(&figures);
            Ok(())
        }
        Bench::Convergence { ports, host_ports } => {
            // The lab drives child processes and blocking HTTP: off the runtime.
            let figures =
                tokio::task::spawn_blocking(move || convergence::run_bench(ports, host_ports))
                    .await??;
            convergence::print(&figures);
            Ok(())
        }
    }
}
