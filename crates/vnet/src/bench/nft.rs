//! `vnet bench nft` (root): the agent's nftables work per change, in
//! process (like the compiler bench, the agent's `NftReconciler` is linked
//! in), on the in-process netlink path and on the `nft` process path side by
//! side in the same run: each in its own scratch network namespace, change
//! by change in turn, so the machine's drift hits both alike. And the
//! agent's planning alone (no kernel), nftables and links, on the full path
//! (the whole desired state rebuilt and diffed), the incremental one (every
//! piece's inputs compared, what changed rebuilt) and, for nftables, the
//! hinted one (only the pieces the stream's changes name looked at: what
//! the agent does), side by side in the same way.
//!
//! Changes, against a host with `local_ports` secured ports and
//! `remote_ports` remote ports on 100 networks, whose remote group has
//! `members` members: a member joining (then leaving), and a secured port
//! added (new chains).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use agent::linux::{self, Desired, IncrementalDesired, LinkKind, LinuxConfig, Observed};
use agent::nft::{
    Hints, IncrementalRuleset, NftConfig, NftReconciler, ObservedNft, desired, plan, plan_touched,
};
use compiler::protocol::{
    AllowedSource, Change as StreamChange, FixedIpSpec, HostState, LocalPortSpec, NetworkSpec,
    PortSecuritySpec, RemotePortSpec, RuleDirection, RuleEthertype, RuleRemote, RuleSpec,
    SecurityGroupSpec,
};
use ipnet::IpNet;

use super::stats::{Samples, ms, ratio};
use crate::BoxError;
use crate::lab::run;

#[derive(clap::Args)]
pub struct NftArgs {
    /// Members of the remote group the host already keeps.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Secured local ports the host already has.
    #[arg(long, default_value_t = 1_000)]
    local_ports: usize,
    /// Ports of the host's networks on other hosts.
    #[arg(long, default_value_t = 10_000)]
    remote_ports: usize,
    /// Changes of each kind, per path.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Run only one path (`netlink` or `nft`), e.g. to count the processes
    /// it starts: `perf stat -e syscalls:sys_enter_execve vnet bench nft
    /// --only netlink`.
    #[arg(long)]
    only: Option<String>,
}

/// One kind of change, timed on both paths.
pub struct Change {
    pub what: &'static str,
    pub netlink: Option<Samples>,
    pub nft: Option<Samples>,
    /// The nftables planning alone (desired ruleset, plan, next view; no
    /// kernel), on the full path, the incremental one and the hinted one.
    pub planning: Samples,
    pub planning_incremental: Samples,
    pub planning_hinted: Samples,
    /// The links' planning alone (desired objects, diff against the
    /// view), likewise.
    pub links: Samples,
    pub links_incremental: Samples,
    /// Copying the host's state once (the daemon used to, three to four
    /// times per delta).
    pub state_copy: Samples,
}

pub struct Figures {
    pub members: usize,
    pub local_ports: usize,
    pub remote_ports: usize,
    pub changes: Vec<Change>,
}

/// The host's networks.
const NETWORKS: usize = 100;

fn member(i: usize) -> IpNet {
    // 10.128.0.0/9: never a port's address below.
    let a = Ipv4Addr::from(0x0a80_0000u32 + i as u32);
    IpNet::from(IpAddr::V4(a))
}

fn network_id(i: usize) -> String {
    format!("n{}", i % NETWORKS)
}

/// The stream's changes that bring secured port `i` to the host.
fn port(i: usize) -> [StreamChange; 2] {
    let device = format!("tapb{i}");
    let mac = model::MacAddr([0xfa, 0x16, 0x3e, 0, (i >> 8) as u8, i as u8]);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (1 + i % 250) as u8));
    [
        StreamChange::LocalPortUpsert {
            network_id: network_id(i),
            port_id: format!("p{i}"),
            spec: LocalPortSpec {
                mac,
                fixed_ips: vec![FixedIpSpec {
                    subnet_id: "s".into(),
                    ip_address: ip,
                }],
                device,
                admin_state_up: true,
                dhcpv4_options: vec![],
                dhcpv6_options: vec![],
            },
        },
        StreamChange::PortSecurityUpsert {
            port_id: format!("p{i}"),
            spec: PortSecuritySpec {
                enabled: true,
                security_groups: vec!["web".into()],
                allowed_sources: vec![AllowedSource {
                    mac,
                    ip: IpNet::from(ip),
                }],
            },
        },
    ]
}

/// A host with `local` secured ports in group "web", which admits TCP 80
/// from the `members` members of "client", and `remote` ports elsewhere,
/// over 100 networks.
fn host(members: usize, local: usize, remote: usize) -> HostState {
    let mut s = HostState::default();
    for n in 0..NETWORKS {
        s.networks.insert(
            network_id(n),
            NetworkSpec {
                vni: 100 + n as u32,
                mtu: 1450,
                physical_network: None,
                subnets: BTreeMap::new(),
                local_ports: BTreeMap::new(),
                remote_ports: BTreeMap::new(),
            },
        );
    }
    for i in 0..local {
        for change in port(i) {
            s.apply(change);
        }
    }
    for i in 0..remote {
        let net = s.networks.get_mut(&network_id(i));
        let mac = model::MacAddr([0xfa, 0x16, 0x3f, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a40_0000u32 + i as u32));
        if let Some(net) = net {
            net.remote_ports.insert(
                format!("r{i}"),
                RemotePortSpec {
                    mac,
                    ips: vec![ip],
                    vtep: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2 + (i % 200) as u8)),
                },
            );
        }
    }
    s.security_groups.insert(
        "web".into(),
        SecurityGroupSpec {
            stateful: true,
            rules: vec![RuleSpec {
                id: "r".into(),
                direction: RuleDirection::Ingress,
                ethertype: RuleEthertype::IPv4,
                protocol: Some(6),
                ports: Some((80, 80)),
                icmp: None,
                remote: RuleRemote::Group("client".into()),
            }],
        },
    );
    s.remote_groups.insert(
        "client".into(),
        (0..members).map(member).collect::<BTreeSet<_>>(),
    );
    s
}

/// One path: its namespace and its reconciler, as an agent keeps it.
struct Side {
    netns: String,
    reconciler: NftReconciler,
}

impl Side {
    fn apply(&self, state: &HostState, hints: &Hints) -> Result<Duration, BoxError> {
        let netns = self.netns.clone();
        let file = std::fs::File::open(format!("/run/netns/{netns}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let start = Instant::now();
        self.reconciler.reconcile_hinted(state, hints)?;
        Ok(start.elapsed())
    }
}

pub fn run_bench(args: &NftArgs) -> Result<Figures, BoxError> {
    let base = format!("vnb{}", std::process::id() % 10_000);
    let mut sides = vec![];
    for (path, by_process) in [("netlink", false), ("nft", true)] {
        if args.only.as_deref().is_some_and(|o| o != path) {
            continue;
        }
        let netns = format!("{base}-{path}");
        run("ip", &["netns", "add", &netns])?;
        sides.push((
            path,
            Side {
                netns,
                reconciler: NftReconciler::new(NftConfig::default()).by_process(by_process),
            },
        ));
    }
    let names: Vec<String> = sides.iter().map(|(_, s)| s.netns.clone()).collect();
    let host = host(args.members, args.local_ports, args.remote_ports);
    let changes = args.changes;
    let local = args.local_ports;
    // A thread of its own: it moves between the namespaces.
    let joined = std::thread::spawn(move || measure(&sides, host, local, changes)).join();
    for netns in names {
        let _ = run("ip", &["netns", "del", &netns]);
    }
    let changes = match joined {
        Ok(result) => result?,
        Err(_) => return Err("the nft bench thread panicked".into()),
    };
    Ok(Figures {
        members: args.members,
        local_ports: args.local_ports,
        remote_ports: args.remote_ports,
        changes,
    })
}

/// A kernel with every local port's device plugged in and the host's
/// links converged to `state`: what the link reconciler's view holds.
fn converged_links(state: &HostState, config: &LinuxConfig) -> Observed {
    let mut kernel = Observed::default();
    let devices = state.networks.values().flat_map(|n| n.local_ports.values());
    for (i, port) in devices.enumerate() {
        kernel.links.insert(
            port.device.clone(),
            linux::ObservedLink {
                index: 10 + i as u32,
                kind: LinkKind::Other("tun".into()),
                mtu: 1500,
                address: None,
                up: false,
                master: None,
                ipv6_silent: Some(false),
                port_flags: None,
            },
        );
    }
    let want = Desired::from_host_state(state, config);
    for op in linux::diff(&want, &kernel) {
        kernel.apply(&op);
    }
    kernel.retain_relevant(&want);
    kernel
}

/// What the agent computes for one desired state, whichever the kernel
/// path: its planning on the full path and on the incremental one, each
/// timed, and the state's copy.
struct Planner {
    nft_config: NftConfig,
    links_config: LinuxConfig,
    nft_view: ObservedNft,
    nft_kept: IncrementalRuleset,
    nft_kept_view: ObservedNft,
    nft_hinted: IncrementalRuleset,
    nft_hinted_view: ObservedNft,
    links_view: Observed,
    links_kept: IncrementalDesired,
}

impl Planner {
    fn new(state: &HostState) -> Self {
        let nft_config = NftConfig::default();
        let links_config = LinuxConfig::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let nft_kept = IncrementalRuleset::new(state, &nft_config);
        let nft_view = ObservedNft::from_ruleset(nft_kept.ruleset());
        Planner {
            nft_kept_view: nft_view.clone(),
            nft_hinted_view: nft_view.clone(),
            nft_view,
            nft_hinted: nft_kept.clone(),
            nft_kept,
            links_view: converged_links(state, &links_config),
            links_kept: IncrementalDesired::new(state, &links_config),
            nft_config,
            links_config,
        }
    }

    /// Plans `next` (which `hints` took it to) every way, each after the
    /// other; their times in the order full nft, incremental nft, hinted
    /// nft, full links, incremental links, the state's copy. Each path's
    /// plan must be the others'.
    fn plan(
        &mut self,
        next: &HostState,
        hints: &Hints,
        changed_network: Option<&str>,
    ) -> Result<[Duration; 6], BoxError> {
        let start = Instant::now();
        let want = desired(next, &self.nft_config);
        let whole = plan(&want, &self.nft_view);
        self.nft_view = ObservedNft::from_ruleset(&want);
        let nft_full = start.elapsed();

        let start = Instant::now();
        let touched = self.nft_kept.update(next, &self.nft_config);
        let tx = plan_touched(self.nft_kept.ruleset(), &self.nft_kept_view, &touched);
        self.nft_kept_view
            .apply_touched(self.nft_kept.ruleset(), &touched, &tx);
        let nft_incremental = start.elapsed();
        if tx != whole {
            return Err("the incremental nftables plan is not the full one".into());
        }

        let start = Instant::now();
        let touched = self.nft_hinted.update_hinted(next, &self.nft_config, hints);
        let tx = plan_touched(self.nft_hinted.ruleset(), &self.nft_hinted_view, &touched);
        self.nft_hinted_view
            .apply_touched(self.nft_hinted.ruleset(), &touched, &tx);
        let nft_hinted = start.elapsed();
        if tx != whole {
            return Err("the hinted nftables plan is not the full one".into());
        }

        let start = Instant::now();
        let want = Desired::from_host_state(next, &self.links_config);
        let ops = linux::diff(&want, &self.links_view);
        let links_full = start.elapsed();

        let start = Instant::now();
        let changed: BTreeSet<String> = changed_network.into_iter().map(String::from).collect();
        let touched = self.links_kept.update(next, &changed, &self.links_config);
        let incremental_ops = match &touched {
            Some(t) => {
                let (w, h) = linux::restrict(self.links_kept.desired(), &self.links_view, t);
                linux::diff(&w, &h)
            }
            None => linux::diff(self.links_kept.desired(), &self.links_view),
        };
        let links_incremental = start.elapsed();
        if incremental_ops.len() != ops.len() {
            return Err("the incremental link plan is not the full one".into());
        }
        for op in &ops {
            self.links_view.apply(op);
        }
        self.links_view.retain_relevant(&want);

        let start = Instant::now();
        let copy = next.clone();
        let state_copy = start.elapsed();
        drop(copy);
        Ok([
            nft_full,
            nft_incremental,
            nft_hinted,
            links_full,
            links_incremental,
            state_copy,
        ])
    }
}

fn measure(
    sides: &[(&'static str, Side)],
    mut state: HostState,
    local_ports: usize,
    changes: usize,
) -> Result<Vec<Change>, BoxError> {
    let members = state.remote_groups.get("client").map_or(0, BTreeSet::len);
    for (_, side) in sides {
        side.apply(&state, &Hints::everything())?;
    }
    let mut planner = Planner::new(&state);
    const PLANNING: [&str; 6] = ["cpu", "cpu+", "cpu*", "links", "links+", "copy"];
    let mut times: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    let kinds = [
        "a member joins a group (one set element)",
        "a member leaves a group (one set element)",
        "a secured port is added (new chains, dispatch map elements)",
    ];
    for i in 0..changes {
        let joined = member(members + i);
        let group_id = "client".to_string();
        let added = local_ports + i;
        let steps: [(&str, Vec<StreamChange>, Option<String>); 3] = [
            (
                kinds[0],
                vec![StreamChange::RemoteGroupMemberAdd {
                    group_id: group_id.clone(),
                    member: joined,
                }],
                None,
            ),
            (
                kinds[1],
                vec![StreamChange::RemoteGroupMemberRemove {
                    group_id,
                    member: joined,
                }],
                None,
            ),
            (kinds[2], port(added).into(), Some(network_id(added))),
        ];
        for (kind, delta, changed_network) in steps {
            let mut hints = Hints::default();
            for change in delta {
                hints.note(&change);
                state.apply(change);
            }
            // What the agent computes whichever the kernel path.
            let planned = planner.plan(&state, &hints, changed_network.as_deref())?;
            for (what, took) in PLANNING.iter().zip(planned) {
                times.entry((kind, what)).or_default().push(took);
            }
            for (path, side) in sides {
                times
                    .entry((kind, path))
                    .or_default()
                    .push(side.apply(&state, &hints)?);
            }
        }
    }
    Ok(kinds
        .iter()
        .map(|k| Change {
            what: k,
            netlink: times.remove(&(*k, "netlink")).map(Samples::new),
            nft: times.remove(&(*k, "nft")).map(Samples::new),
            planning: Samples::new(times.remove(&(*k, "cpu")).unwrap_or_default()),
            planning_incremental: Samples::new(times.remove(&(*k, "cpu+")).unwrap_or_default()),
            planning_hinted: Samples::new(times.remove(&(*k, "cpu*")).unwrap_or_default()),
            links: Samples::new(times.remove(&(*k, "links")).unwrap_or_default()),
            links_incremental: Samples::new(times.remove(&(*k, "links+")).unwrap_or_default()),
            state_copy: Samples::new(times.remove(&(*k, "copy")).unwrap_or_default()),
        })
        .collect())
}

pub fn print(f: &Figures) {
    println!(
        "vnet bench nft: the agent's nftables work per change, a host with {} secured ports, \
         {} remote ports and a {}-member group; the netlink path and the nft-process path in \
         the same run, change by change in turn",
        f.local_ports, f.remote_ports, f.members
    );
    println!(
        "{:<54} {:>16} {:>16} {:>10}",
        "change", "netlink p50/p99", "nft p50/p99", "p99 ratio"
    );
    let show = |s: &Samples| format!("{:.3}/{:.3} ms", ms(s.p50()), ms(s.p99()));
    let shown = |s: &Option<Samples>| s.as_ref().map_or("-".to_string(), show);
    let against = |a: &Samples, b: &Samples| {
        ratio(a.p50(), b.p50()).map_or("-".into(), |r| format!("{r:.3}x"))
    };
    for c in &f.changes {
        let r = match (&c.netlink, &c.nft) {
            (Some(a), Some(b)) => {
                ratio(a.p99(), b.p99()).map_or("-".into(), |r| format!("{r:.3}x"))
            }
            _ => "-".into(),
        };
        println!(
            "{:<54} {:>16} {:>16} {:>10}",
            c.what,
            shown(&c.netlink),
            shown(&c.nft),
            r
        );
    }
    println!(
        "the agent's planning alone (no kernel), p50/p99; the full path (whole state rebuilt \
         and diffed), the incremental one (every piece compared) and the hinted one (the \
         pieces the changes name: the agent's), change by change in turn; ratios of p50s"
    );
    println!(
        "{:<54} {:>20} {:>20} {:>20} {:>8} {:>8} {:>20} {:>20} {:>8} {:>20}",
        "change",
        "nftables full",
        "incremental",
        "hinted",
        "/full",
        "/incr.",
        "links full",
        "incremental",
        "ratio",
        "one state copy"
    );
    for c in &f.changes {
        println!(
            "{:<54} {:>20} {:>20} {:>20} {:>8} {:>8} {:>20} {:>20} {:>8} {:>20}",
            c.what,
            show(&c.planning),
            show(&c.planning_incremental),
            show(&c.planning_hinted),
            against(&c.planning_hinted, &c.planning),
            against(&c.planning_hinted, &c.planning_incremental),
            show(&c.links),
            show(&c.links_incremental),
            against(&c.links_incremental, &c.links),
            show(&c.state_copy),
        );
    }
}
