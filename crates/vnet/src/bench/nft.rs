//! `vnet bench nft` (root): the agent's nftables work per change, in
//! process (like the compiler bench, the agent's `NftReconciler` is linked
//! in), on the in-process netlink path and on the `nft` process path side by
//! side in the same run: each in its own scratch network namespace, change
//! by change in turn, so the machine's drift hits both alike.
//!
//! Changes, against a host whose remote group has `members` members: a
//! member joining (then leaving), and a secured port added (new chains).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use agent::nft::{NftConfig, NftReconciler, ObservedNft, desired, plan};
use compiler::protocol::{
    AllowedSource, FixedIpSpec, HostState, LocalPortSpec, NetworkSpec, PortSecuritySpec,
    RuleDirection, RuleEthertype, RuleRemote, RuleSpec, SecurityGroupSpec,
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
    /// The planning alone (desired ruleset, view, plan; no kernel).
    pub planning: Samples,
}

pub struct Figures {
    pub members: usize,
    pub changes: Vec<Change>,
}

fn member(i: usize) -> IpNet {
    // 10.128.0.0/9: never a port's address below.
    let a = Ipv4Addr::from(0x0a80_0000u32 + i as u32);
    IpNet::from(IpAddr::V4(a))
}

fn port(state: &mut HostState, i: usize) {
    let device = format!("tapb{i}");
    let mac = model::MacAddr([0xfa, 0x16, 0x3e, 0, (i >> 8) as u8, i as u8]);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (1 + i % 250) as u8));
    if let Some(net) = state.networks.get_mut("n") {
        net.local_ports.insert(
            format!("p{i}"),
            LocalPortSpec {
                mac,
                fixed_ips: vec![FixedIpSpec {
                    subnet_id: "s".into(),
                    ip_address: ip,
                }],
                device,
                admin_state_up: true,
                dhcpv6_options: vec![],
            },
        );
    }
    state.port_security.insert(
        format!("p{i}"),
        PortSecuritySpec {
            enabled: true,
            security_groups: vec!["web".into()],
            allowed_sources: vec![AllowedSource {
                mac,
                ip: IpNet::from(ip),
            }],
        },
    );
}

/// A host with two secured ports in group "web", which admits TCP 80 from
/// the `members` members of "client".
fn host(members: usize) -> HostState {
    let mut s = HostState::default();
    s.networks.insert(
        "n".into(),
        NetworkSpec {
            vni: 100,
            mtu: 1450,
            physical_network: None,
            subnets: BTreeMap::new(),
            local_ports: BTreeMap::new(),
            remote_ports: BTreeMap::new(),
        },
    );
    port(&mut s, 0);
    port(&mut s, 1);
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
    fn apply(&self, state: &HostState) -> Result<Duration, BoxError> {
        let netns = self.netns.clone();
        let file = std::fs::File::open(format!("/run/netns/{netns}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let start = Instant::now();
        self.reconciler.reconcile_cached(state)?;
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
    let members = args.members;
    let changes = args.changes;
    // A thread of its own: it moves between the namespaces.
    let joined = std::thread::spawn(move || measure(&sides, members, changes)).join();
    for netns in names {
        let _ = run("ip", &["netns", "del", &netns]);
    }
    let changes = match joined {
        Ok(result) => result?,
        Err(_) => return Err("the nft bench thread panicked".into()),
    };
    Ok(Figures {
        members: args.members,
        changes,
    })
}

fn measure(
    sides: &[(&'static str, Side)],
    members: usize,
    changes: usize,
) -> Result<Vec<Change>, BoxError> {
    let mut state = host(members);
    for (_, side) in sides {
        side.apply(&state)?;
    }
    let mut times: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    let kinds = [
        "a member joins a group (one set element)",
        "a member leaves a group (one set element)",
        "a secured port is added (new chains, dispatch rules)",
    ];
    for i in 0..changes {
        let joined = member(members + i);
        let mut steps = vec![];
        let mut s = state.clone();
        if let Some(g) = s.remote_groups.get_mut("client") {
            g.insert(joined);
        }
        steps.push((kinds[0], s.clone()));
        if let Some(g) = s.remote_groups.get_mut("client") {
            g.remove(&joined);
        }
        steps.push((kinds[1], s.clone()));
        port(&mut s, 2 + i);
        steps.push((kinds[2], s.clone()));
        let config = NftConfig::default();
        let mut view = ObservedNft::from_ruleset(&desired(&state, &config));
        for (kind, next) in steps {
            // What the agent computes whichever the path (no kernel): the
            // desired ruleset, the plan against its view, the next view.
            let start = Instant::now();
            let want = desired(&next, &config);
            let _ = plan(&want, &view);
            view = ObservedNft::from_ruleset(&want);
            times
                .entry((kind, "cpu"))
                .or_default()
                .push(start.elapsed());
            for (path, side) in sides {
                times
                    .entry((kind, path))
                    .or_default()
                    .push(side.apply(&next)?);
            }
        }
        state = s;
    }
    Ok(kinds
        .iter()
        .map(|k| Change {
            what: k,
            netlink: times.remove(&(*k, "netlink")).map(Samples::new),
            nft: times.remove(&(*k, "nft")).map(Samples::new),
            planning: Samples::new(times.remove(&(*k, "cpu")).unwrap_or_default()),
        })
        .collect())
}

pub fn print(f: &Figures) {
    println!(
        "vnet bench nft: the agent's nftables work per change, a host keeping a {}-member group; \
         the netlink path and the nft-process path in the same run, change by change in turn",
        f.members
    );
    println!(
        "{:<54} {:>16} {:>16} {:>10} {:>18}",
        "change", "netlink p50/p99", "nft p50/p99", "p99 ratio", "planning p50/p99"
    );
    let show = |s: &Option<Samples>| {
        s.as_ref().map_or("-".to_string(), |s| {
            format!("{:.2}/{:.2} ms", ms(s.p50()), ms(s.p99()))
        })
    };
    for c in &f.changes {
        let r = match (&c.netlink, &c.nft) {
            (Some(a), Some(b)) => {
                ratio(a.p99(), b.p99()).map_or("-".into(), |r| format!("{r:.3}x"))
            }
            _ => "-".into(),
        };
        println!(
            "{:<54} {:>16} {:>16} {:>10} {:>18}",
            c.what,
            show(&c.netlink),
            show(&c.nft),
            r,
            show(&Some(c.planning.clone()))
        );
    }
}
