//! `vnet bench trace`: the latency of one `vnet trace` in a large cloud,
//! measured in this process (the trace engine and the compiler are pure), on
//! the topology `vnet bench compiler` builds, with one security group per
//! network. Beside it, in the same run, what the trace avoids: one
//! `Compiler::snapshot` of the source host, and the floor of one port lookup.
//! Routed traces cross one of `ROUTERS` routers added to that cloud, each
//! joining two subnets of its own. It owns only the measuring.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ::compiler::{Compiler, Input};
use ::trace::{Facts, Packet, Query, Source, Target};
use model::{
    Direction, Ethertype, FixedIp, HostRoute, MacAddr, Network, OWNER_ROUTER_INTERFACE, Port,
    PortStatus, Router, SecurityGroup, SecurityGroupRule, SplitMix64, Standard, Subnet,
};
use serde_json::json;

use super::compiler::{Shape, SyntheticCloud};
use super::stats::{Samples, ms, ratio};
use crate::BoxError;

/// Issue 6's goal: a trace's p99 under 1 ms at 100,000 ports.
const GOAL_P99_MS: f64 = 1.0;
const SEED: u64 = 0x5eed_c0de_0006;
/// Routers added to the synthetic cloud, each with two networks of its own
/// and one VM on each (100.64.R.0/24 and 100.65.R.0/24).
const ROUTERS: usize = 200;

#[derive(clap::Args, Clone, Debug)]
pub struct TraceArgs {
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    hosts: u32,
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    networks: u32,
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(2..=10_000_000))]
    ports: u32,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    hosts_per_network: u32,
    /// Traces timed of each kind.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    traces: u32,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Every agent alive, every port ACTIVE: the trace walks the whole path.
/// Addresses are found as the server's model finds them: one index lookup.
struct AllUp {
    /// Network id → address → port id.
    addresses: HashMap<String, HashMap<IpAddr, String>>,
}

impl Facts for AllUp {
    fn agent_alive(&self, _: &str) -> bool {
        true
    }
    fn port_status(&self, _: &str) -> Option<PortStatus> {
        Some(PortStatus::Active)
    }
    fn port_with_ip(&self, network_id: &str, ip: IpAddr) -> Option<String> {
        self.addresses.get(network_id)?.get(&ip).cloned()
    }
    fn floating_ip_with_address(&self, _: IpAddr) -> Option<String> {
        None
    }
}

pub fn run(args: TraceArgs) -> Result<(), BoxError> {
    let shape = Shape {
        hosts: usize::try_from(args.hosts)?,
        networks: usize::try_from(args.networks)?,
        ports: usize::try_from(args.ports)?,
        hosts_per_network: usize::try_from(args.hosts_per_network.min(args.hosts))?,
    };
    let mut cloud = SyntheticCloud::new(shape)?;
    let mut compiler = Compiler::new();
    let started = Instant::now();
    for input in cloud.group_per_network() {
        compiler.apply(input);
    }
    // Each network's ports (id, address), as they are made.
    let mut by_network: HashMap<String, Vec<(String, IpAddr)>> = HashMap::new();
    for i in 0..cloud.input_count() {
        let input = cloud.input(i);
        if let Input::Port(p) = &input
            && let Some(f) = p.fixed_ips.first()
        {
            by_network
                .entry(p.network_id.clone())
                .or_default()
                .push((p.std.id.clone(), f.ip_address));
        }
        compiler.apply(input);
    }
    let mut routed_addresses = HashMap::new();
    let routed = routed_pairs(
        &mut compiler,
        &mut routed_addresses,
        shape.hosts,
        shape.networks,
    )?;
    let build = started.elapsed();
    let mut facts = AllUp {
        addresses: by_network
            .iter()
            .map(|(net, ports)| {
                let by_ip = ports.iter().map(|(id, ip)| (*ip, id.clone())).collect();
                (net.clone(), by_ip)
            })
            .collect(),
    };
    facts.addresses.extend(routed_addresses);
    let mut networks: Vec<&Vec<(String, IpAddr)>> = by_network
        .values()
        .filter(|ports| ports.len() >= 2)
        .collect();
    networks.sort_by(|a, b| a[0].0.cmp(&b[0].0));
    if networks.is_empty() {
        return Err("no network has two ports to trace between".into());
    }

    let mut rng = SplitMix64::new(SEED);
    let mut routed_rng = SplitMix64::new(SEED ^ 1);
    let n = usize::try_from(args.traces)?;
    let mut pick = || {
        let ports = networks[(rng.next_u64() % networks.len() as u64) as usize];
        let a = (rng.next_u64() % ports.len() as u64) as usize;
        let b = (a + 1 + (rng.next_u64() % (ports.len() as u64 - 1)) as usize) % ports.len();
        (ports[a].clone(), ports[b].clone())
    };
    let tcp = |from: &str, to: Target| Query {
        from: Source::Port(from.to_owned()),
        to,
        packet: Packet {
            protocol: 6,
            destination_port: Some(22),
            ..Packet::default()
        },
    };
    let mut kinds: Vec<(&str, Vec<Query>)> = vec![
        ("to a port (delivered)", vec![]),
        ("to an IP (delivered)", vec![]),
        ("to an IP off the network (no router interface)", vec![]),
        ("routed to another subnet, across hosts (delivered)", vec![]),
    ];
    let mut sources = Vec::with_capacity(n);
    for _ in 0..n {
        let ((from, _), (to, to_ip)) = pick();
        kinds[0].1.push(tcp(&from, Target::Port(to)));
        kinds[1].1.push(tcp(&from, Target::Ip(to_ip)));
        kinds[2]
            .1
            .push(tcp(&from, Target::Ip(IpAddr::from([192, 168, 7, 7]))));
        sources.push(from);
        let (from, to_ip) = &routed[(routed_rng.next_u64() % routed.len() as u64) as usize];
        kinds[3].1.push(tcp(from, Target::Ip(*to_ip)));
    }

    let mut rows = Vec::new();
    let mut all = Vec::new();
    for (name, queries) in &kinds {
        let mut latencies = Vec::with_capacity(queries.len());
        let mut delivered = 0;
        for q in queries {
            let start = Instant::now();
            let t = ::trace::trace(&compiler, &facts, q)?;
            latencies.push(start.elapsed());
            delivered += usize::from(t.delivered());
            black_box(t);
        }
        all.extend_from_slice(&latencies);
        rows.push((name.to_string(), Samples::new(latencies), Some(delivered)));
    }
    let all = Samples::new(all);
    // The baseline: the per-host state a trace would otherwise read whole.
    let snapshot = timed(sources.iter().take(n.min(2000)), |host_of| {
        let host = compiler.port(host_of).map(|p| p.host).unwrap_or_default();
        black_box(compiler.snapshot(host));
    });
    let lookup = timed(sources.iter(), |id| {
        black_box(compiler.port(id).map(|p| p.host));
    });
    let vs_snapshot = ratio(all.p50(), snapshot.p50());
    let met = ms(all.p99()) < GOAL_P99_MS;

    if args.json {
        let row = |s: &Samples| json!({"p50_us": us(s.p50()), "p99_us": us(s.p99()), "max_us": us(s.max()), "n": s.len()});
        let kinds: Vec<_> = rows
            .iter()
            .map(|(name, s, delivered)| json!({"kind": name, "latency": row(s), "delivered": delivered}))
            .collect();
        println!(
            "{}",
            json!({
                "hosts": shape.hosts, "networks": shape.networks, "ports": shape.ports,
                "build_s": build.as_secs_f64(),
                "traces": kinds, "all": row(&all),
                "baseline_snapshot": row(&snapshot), "floor_port_lookup": row(&lookup),
                "trace_p50_over_snapshot_p50": vs_snapshot,
                "goal_p99_ms": GOAL_P99_MS, "met": met,
            })
        );
        return Ok(());
    }
    println!(
        "vnet bench trace: {} ports, {} networks, {} hosts ({} per network), one group per network; compiled in {:.1} s",
        shape.ports,
        shape.networks,
        shape.hosts,
        shape.hosts_per_network,
        build.as_secs_f64()
    );
    println!();
    println!("| measured | n | p50 µs | p99 µs | max µs | delivered |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s, delivered) in rows.iter().map(|(n, s, d)| (n.as_str(), s, *d)).chain([
        ("all traces", &all, None),
        (
            "baseline: Compiler::snapshot of the source host",
            &snapshot,
            None,
        ),
        ("floor: one port lookup", &lookup, None),
    ]) {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {} |",
            s.len(),
            us(s.p50()),
            us(s.p99()),
            us(s.max()),
            delivered.map_or("-".into(), |d| d.to_string())
        );
    }
    println!();
    println!(
        "trace p50 / snapshot p50: {}; goal p99 < {GOAL_P99_MS} ms: {}",
        vs_snapshot.map_or("-".into(), |r| format!("{r:.3}")),
        if met { "met" } else { "NOT met" }
    );
    Ok(())
}

fn timed<'a>(ids: impl Iterator<Item = &'a String>, mut f: impl FnMut(&str)) -> Samples {
    let mut latencies = Vec::new();
    for id in ids {
        let start = Instant::now();
        f(id);
        latencies.push(start.elapsed());
    }
    Samples::new(latencies)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Adds `ROUTERS` routers to the cloud, each joining two networks of its
/// own with a VM on each, on two different hosts, in one group that lets
/// its members in; returns each router's (source port, destination IP).
fn routed_pairs(
    compiler: &mut Compiler,
    addresses: &mut HashMap<String, HashMap<IpAddr, String>>,
    hosts: usize,
    networks: usize,
) -> Result<Vec<(String, IpAddr)>, BoxError> {
    let std = |id: String| Standard::new(id, "bench-project".into(), 0);
    let mut pairs = Vec::with_capacity(ROUTERS);
    for r in 0..ROUTERS {
        let router = format!("bench-router-{r}");
        let group = format!("bench-router-group-{r}");
        compiler.apply(Input::SecurityGroup(Box::new(SecurityGroup {
            std: std(group.clone()),
            stateful: true,
            is_default: false,
        })));
        for (k, (direction, remote)) in [
            (Direction::Egress, None),
            (Direction::Ingress, Some(group.clone())),
        ]
        .into_iter()
        .enumerate()
        {
            compiler.apply(Input::SecurityGroupRule(Box::new(SecurityGroupRule {
                std: std(format!("{group}-rule-{k}")),
                security_group_id: group.clone(),
                direction,
                ethertype: Ethertype::IPv4,
                protocol: None,
                port_range_min: None,
                port_range_max: None,
                remote_ip_prefix: None,
                remote_group_id: remote,
                remote_address_group_id: None,
            })));
        }
        compiler.apply(Input::Router(Box::new(Router {
            std: std(router.clone()),
            admin_state_up: true,
            gateway: None,
            routes: Vec::<HostRoute>::new(),
            availability_zone_hints: vec![],
        })));
        let octet = u8::try_from(r).unwrap_or(u8::MAX);
        let mut vms = Vec::new();
        for side in 0..2u8 {
            let net = format!("bench-rnet-{r}-{side}");
            let sub = format!("bench-rsub-{r}-{side}");
            let prefix = [100, 64 + side, octet, 0];
            let at = |last: u8| IpAddr::from([prefix[0], prefix[1], prefix[2], last]);
            compiler.apply(Input::Network(Box::new(Network {
                std: std(net.clone()),
                admin_state_up: true,
                mtu: 1450,
                legacy_shared: false,
                legacy_external: false,
                port_security_enabled: true,
                network_type: "vxlan".into(),
                segmentation_id: u32::try_from(networks + 1 + 2 * r + usize::from(side))
                    .unwrap_or(u32::MAX),
                physical_network: None,
                availability_zone_hints: vec![],
                is_default: false,
            })));
            compiler.apply(Input::Subnet(Box::new(Subnet {
                std: std(sub.clone()),
                network_id: net.clone(),
                ip_version: 4,
                cidr: format!("{}/24", at(0)).parse()?,
                gateway_ip: Some(at(1)),
                allocation_pools: vec![],
                dns_nameservers: vec![],
                host_routes: vec![],
                enable_dhcp: true,
                ipv6_ra_mode: None,
                ipv6_address_mode: None,
                subnetpool_id: None,
                service_types: vec![],
            })));
            let host = format!("compute-{:05}", (r * 7 + usize::from(side)) % hosts.max(1));
            let port = |id: String, last: u8, host: String, owner: &str, device: &str| Port {
                std: std(id),
                network_id: net.clone(),
                mac_address: MacAddr([0xfa, 0x16, 0x3f, side, octet, last]),
                admin_state_up: true,
                status: PortStatus::Active,
                device_id: device.into(),
                device_owner: owner.into(),
                fixed_ips: vec![FixedIp {
                    subnet_id: sub.clone(),
                    ip_address: at(last),
                }],
                security_groups: vec![group.clone()],
                port_security_enabled: true,
                allowed_address_pairs: vec![],
                extra_dhcp_opts: vec![],
                binding_host_id: host,
                binding_vnic_type: "normal".into(),
                binding_profile: String::new(),
            };
            let interface = format!("bench-rif-{r}-{side}");
            let vm = format!("bench-rvm-{r}-{side}");
            let entries = addresses.entry(net.clone()).or_default();
            entries.insert(at(1), interface.clone());
            entries.insert(at(10), vm.clone());
            compiler.apply(Input::Port(Box::new(port(
                interface,
                1,
                String::new(),
                OWNER_ROUTER_INTERFACE,
                &router,
            ))));
            compiler.apply(Input::Port(Box::new(port(
                vm.clone(),
                10,
                host,
                "compute:nova",
                "",
            ))));
            vms.push((vm, at(10)));
        }
        if let [(from, _), (_, to_ip)] = vms.as_slice() {
            pairs.push((from.clone(), *to_ip));
        }
    }
    Ok(pairs)
}
