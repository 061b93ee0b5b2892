//! `vnet bench compiler`: issue 4's compiler figures, measured in this process
//! (the compiler is pure: there is no server to start). A synthetic cloud is
//! compiled from empty and every host snapshotted; then single port adds and
//! deletes (and router interface adds and floating IP associations) are timed in a large cloud and in one a tenth its size with the same
//! shape per network, and their ratio says whether one change's cost grows with
//! the cloud. It owns only the measuring: it must not change the compiler's inputs
//! to flatter it (ids are UUIDs, as the API makes them).

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ::compiler::{Compiler, Input};
use model::{
    Association, Direction, Ethertype, FixedIp, FloatingIp, Gateway, MacAddr, Network,
    OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Port, PortStatus, Router, SecurityGroup,
    SecurityGroupRule, SplitMix64, Standard, Subnet,
};
use serde_json::{Value, json};

use super::stats::{self, Samples, ratio};
use crate::BoxError;

/// OVN 23.03's ovn-northd on this kind of machine (issue 4), which recomputes
/// everything on each change: CPU seconds of one port add, and of a full
/// compile, at 10,000 ports.
const OVN_PORT_ADD_10K_S: f64 = 1.3;
const OVN_FULL_COMPILE_10K_S: f64 = 4.8;
/// The same at 50,000 ports (no 100,000-port figure exists), and its RSS.
const OVN_PORT_ADD_50K_S: f64 = 11.0;
const OVN_FULL_COMPILE_50K_S: f64 = 35.0;
const OVN_RSS_50K_MIB: f64 = 2.3 * 1024.0;

/// Issue 4's goals: one change under 1 ms, a full compile of 100,000 ports
/// under 2 s, and a change that costs the same whatever the cloud's size:
/// the same work (changes emitted, exactly), and about the same time (the
/// large cloud's p50 within this factor of the small one's; caches differ).
const GOAL_CHANGE_MS: f64 = 1.0;
const GOAL_FULL_COMPILE_S: f64 = 2.0;
const GOAL_WORK_GROWTH: f64 = 1.01;
const GOAL_TIME_GROWTH: f64 = 1.5;

/// The small cloud is the large one with this many times fewer networks and ports.
const SMALL_DIVISOR: usize = 10;
/// Seeds the ids, and which hosts carry which network: runs are comparable.
const SEED: u64 = 0x5eed_c0de_0004;

#[derive(clap::Args, Clone, Debug)]
pub struct CompilerArgs {
    /// Hosts, all registered, in both clouds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    hosts: u32,
    /// Networks of the large cloud, each with one subnet (the small cloud has a tenth).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    networks: u32,
    /// Ports of the large cloud, spread evenly over its networks (the small cloud has a tenth).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(10..=10_000_000))]
    ports: u32,
    /// Hosts each network's ports are bound to, round-robin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    hosts_per_network: u32,
    /// Single changes timed of each kind, in each cloud.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    changes: u32,
    /// Members of the security group one port joins (issue 5), spread over the hosts.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    group_members: u32,
    /// Rules of the group applied to a new port (issue 5).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    group_rules: u32,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The size of one synthetic cloud.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub(super) hosts: usize,
    pub(super) networks: usize,
    pub(super) ports: usize,
    pub(super) hosts_per_network: usize,
}

/// The figures of one cloud.
struct CloudFigures {
    shape: Shape,
    full_compile: Duration,
    changes_emitted: usize,
    snapshot_all: Duration,
    /// Local and remote ports in all the snapshots together.
    snapshot_ports: usize,
    /// How much the process's RSS grew over the full compile: what the
    /// compiler keeps. Only taken for the first cloud measured (memory one
    /// cloud frees is reused by the next).
    rss_growth: Option<u64>,
    singles: Singles,
}

/// Single `Compiler::apply` calls, by kind of change.
struct Singles {
    /// A port bound to a host that already carries its network.
    add: Single,
    /// The same ports deleted: their hosts keep the network.
    delete: Single,
    /// A port bound to a host new to its network: that host gets the network whole.
    add_first_on_host: Single,
    /// The same ports deleted: their hosts drop the network.
    delete_last_on_host: Single,
    /// A router (with a gateway, no interface yet) gets an interface on a
    /// network: every host carrying it now holds the router.
    interface_add: Single,
    /// A floating IP is associated with a port behind that router.
    fip_associate: Single,
}

/// Single changes of one kind: how long each took, and how much work they
/// were (the changes they emitted), which must not depend on the cloud's size.
struct Single {
    latencies: Samples,
    changes_emitted: usize,
}

impl Single {
    fn changes_per_op(&self) -> f64 {
        self.changes_emitted as f64 / self.latencies.len().max(1) as f64
    }
}

pub fn run(args: CompilerArgs) -> Result<(), BoxError> {
    let large = Shape {
        hosts: usize::try_from(args.hosts)?,
        networks: usize::try_from(args.networks)?,
        ports: usize::try_from(args.ports)?,
        hosts_per_network: usize::try_from(args.hosts_per_network.min(args.hosts))?,
    };
    let small = Shape {
        networks: large.networks / SMALL_DIVISOR,
        ports: large.ports / SMALL_DIVISOR,
        ..large
    };
    let changes = usize::try_from(args.changes)?;
    // The large cloud first, so that its RSS is not inflated by a previous one.
    let large = measure(large, changes, true)?;
    let small = measure(small, changes, false)?;
    let security = measure_security(
        large.shape.hosts,
        usize::try_from(args.group_members)?,
        usize::try_from(args.group_rules)?,
        changes,
    )?;
    if args.json {
        let mut v = to_json(&small, &large, changes);
        v["security"] = security_json(&security);
        println!("{v}");
    } else {
        print!("{}", table(&small, &large, changes));
        print!("{}", security_table(&security));
    }
    Ok(())
}

/// Issue 5's compiler figures: single changes to security groups in a cloud of
/// one network whose ports are all in one group that lets its members in (as
/// Neutron's default group does), so that every host with a member holds the
/// group's member set.
struct SecurityFigures {
    hosts: usize,
    members: usize,
    rules: usize,
    /// A port (already bound) joins the group: one element to every host holding the set.
    join: Single,
    /// The same ports leave it.
    leave: Single,
    /// A port (already bound, on a host that does not use it) joins a group of `rules` rules.
    apply_big_group: Single,
}

fn measure_security(
    hosts: usize,
    members: usize,
    rules: usize,
    changes: usize,
) -> Result<SecurityFigures, BoxError> {
    // The hosts of the synthetic cloud, and its network with its subnet.
    let shape = Shape {
        hosts,
        networks: 1,
        ports: members,
        hosts_per_network: hosts,
    };
    let mut cloud = SyntheticCloud::new(shape)?;
    let mut compiler = Compiler::new();
    for i in 0..hosts + 2 {
        compiler.apply(cloud.input(i));
    }
    let group = |id: &str| {
        Input::SecurityGroup(Box::new(SecurityGroup {
            std: standard(id.to_owned()),
            stateful: true,
            is_default: false,
        }))
    };
    let rule = |id: String, group: &str| SecurityGroupRule {
        std: standard(id),
        security_group_id: group.to_owned(),
        direction: Direction::Ingress,
        ethertype: Ethertype::IPv4,
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id: None,
        remote_address_group_id: None,
    };
    let (shared, big) = (cloud.rng.uuid(), cloud.rng.uuid());
    compiler.apply(group(&shared));
    let mut members_in = rule(cloud.rng.uuid(), &shared);
    members_in.remote_group_id = Some(shared.clone());
    compiler.apply(Input::SecurityGroupRule(Box::new(members_in)));
    compiler.apply(group(&big));
    for r in 0..rules {
        let [_, b1, b2, _] = u32::try_from(r).unwrap_or(0).to_be_bytes();
        let mut prefix = rule(cloud.rng.uuid(), &big);
        prefix.protocol = Some("tcp".into());
        prefix.port_range_min = Some(443);
        prefix.remote_ip_prefix = Some(format!("100.{b1}.{b2}.0/24").parse()?);
        compiler.apply(Input::SecurityGroupRule(Box::new(prefix)));
    }
    for p in 0..members {
        let mut port = cloud.port(0, p % hosts);
        port.security_groups = vec![shared.clone()];
        compiler.apply(Input::Port(Box::new(port)));
    }

    // The ports that join, bound before the clock starts, in no group.
    let mut outsiders: Vec<Port> = (0..changes)
        .map(|_| {
            let host = cloud.random_below(hosts);
            cloud.port(0, host)
        })
        .collect();
    for port in &outsiders {
        compiler.apply(Input::Port(Box::new(port.clone())));
    }
    let join = timed_group_puts(&mut compiler, &[&shared], &mut outsiders);
    let leave = timed_group_puts(&mut compiler, &[], &mut outsiders);
    // Each on a host of its own that holds nothing of the big group yet.
    let mut fresh: Vec<Port> = (0..changes)
        .map(|i| {
            let mut port = cloud.port(0, 0);
            port.binding_host_id = format!("fresh-{i:06}");
            port
        })
        .collect();
    for port in &fresh {
        compiler.apply(Input::Port(Box::new(port.clone())));
    }
    let apply_big_group = timed_group_puts(&mut compiler, &[&big], &mut fresh);
    Ok(SecurityFigures {
        hosts,
        members,
        rules,
        join,
        leave,
        apply_big_group,
    })
}

/// Each port put again in `groups`, timed alone (its input built before the
/// clock starts, its output dropped after it stops).
fn timed_group_puts(compiler: &mut Compiler, groups: &[&String], ports: &mut [Port]) -> Single {
    let mut latencies = Vec::with_capacity(ports.len());
    let mut changes_emitted = 0;
    for port in ports.iter_mut() {
        port.security_groups = groups.iter().map(|g| (*g).clone()).collect();
        let input = Input::Port(Box::new(port.clone()));
        let start = Instant::now();
        let changes = compiler.apply(input);
        latencies.push(start.elapsed());
        changes_emitted += changes.len();
    }
    Single {
        latencies: Samples::new(latencies),
        changes_emitted,
    }
}

fn security_rows(f: &SecurityFigures) -> [(String, &Single); 3] {
    [
        (
            format!("member joins a {}-member group", f.members),
            &f.join,
        ),
        ("member leaves it".to_owned(), &f.leave),
        (
            format!("{}-rule group applied to a new port", f.rules),
            &f.apply_big_group,
        ),
    ]
}

fn security_table(f: &SecurityFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsecurity groups: one network, {} members of a group that lets its \
         members in, on all {} hosts (each holds its member set)\n",
        f.members, f.hosts
    );
    let _ = writeln!(
        out,
        "{:<44}{:>8}{:>10}{:>10}{:>10}",
        "one change (Compiler::apply), us", "chg/op", "p50", "p99", "max"
    );
    for (what, s) in security_rows(f) {
        let l = &s.latencies;
        let _ = writeln!(
            out,
            "  {what:<42}{:>8.1}{:>10.2}{:>10.2}{:>10.2}",
            s.changes_per_op(),
            us(l.p50()),
            us(l.p99()),
            us(l.max()),
        );
    }
    let _ = writeln!(
        out,
        "  (a join is one member-set element to each host holding the set, plus the \
         port's own host; never the whole set)"
    );
    out
}

fn security_json(f: &SecurityFigures) -> Value {
    let single = |s: &Single| {
        let l = &s.latencies;
        json!({
            "n": l.len(),
            "changes_per_op": s.changes_per_op(),
            "p50_us": us(l.p50()),
            "p99_us": us(l.p99()),
            "max_us": us(l.max()),
        })
    };
    json!({
        "hosts": f.hosts,
        "group_members": f.members,
        "group_rules": f.rules,
        "member_join": single(&f.join),
        "member_leave": single(&f.leave),
        "apply_group_to_new_port": single(&f.apply_big_group),
    })
}

fn measure(shape: Shape, changes: usize, with_rss: bool) -> Result<CloudFigures, BoxError> {
    let mut cloud = SyntheticCloud::new(shape)?;
    let mut compiler = Compiler::new();
    let rss_before = rss_bytes()?;

    // Each input is made just before it is applied, so that no input outlives
    // its apply and the RSS grows by what the compiler keeps; only the applies
    // are timed (the clock's own cost, tens of ns per input, included).
    let mut full_compile = Duration::ZERO;
    let mut changes_emitted = 0;
    for i in 0..cloud.input_count() {
        let input = cloud.input(i);
        let start = Instant::now();
        changes_emitted += compiler.apply(input).len();
        full_compile += start.elapsed();
    }
    let rss_growth = if with_rss {
        Some(rss_bytes()?.saturating_sub(rss_before))
    } else {
        None
    };

    let start = Instant::now();
    let mut snapshot_ports = 0;
    for host in &cloud.host_names {
        let state = compiler.snapshot(host);
        snapshot_ports += state
            .networks
            .values()
            .map(|n| n.local_ports.len() + n.remote_ports.len())
            .sum::<usize>();
    }
    let snapshot_all = start.elapsed();

    let singles = singles(&mut cloud, &mut compiler, changes);
    Ok(CloudFigures {
        shape,
        full_compile,
        changes_emitted,
        snapshot_all,
        snapshot_ports,
        rss_growth,
        singles,
    })
}

/// `n` single adds then their deletes, first on hosts that carry the network
/// already, then on hosts new to it; each timed alone, its input built before
/// the clock starts and its output dropped after it stops.
fn singles(cloud: &mut SyntheticCloud, compiler: &mut Compiler, n: usize) -> Singles {
    let run = |cloud: &mut SyntheticCloud, compiler: &mut Compiler, first_on_host: bool| {
        let (mut adds, mut deletes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let network = cloud.random_below(cloud.shape.networks);
            let host = if first_on_host {
                cloud.host_not_carrying(network)
            } else {
                cloud.host_carrying(network)
            };
            let port = cloud.port(network, host);
            deletes.push(Input::PortDeleted(port.std.id.clone()));
            adds.push(Input::Port(Box::new(port)));
        }
        // All adds first, then all deletes: the cloud is back as it was.
        (timed(compiler, adds), timed(compiler, deletes))
    };
    let (add, delete) = run(cloud, compiler, false);
    let (add_first_on_host, delete_last_on_host) = run(cloud, compiler, true);
    // Routers: each with its gateway on one external network (untimed), then
    // an interface on a random network, then a floating IP for a port there.
    let (mut interfaces, mut fips) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for input in cloud.external_network() {
        compiler.apply(input);
    }
    for k in 0..n {
        let network = cloud.random_below(cloud.shape.networks);
        let (router, gateway_port, interface) = cloud.router(network, k);
        let host = cloud.host_carrying(network);
        let port = cloud.port(network, host);
        let fip = cloud.floating_ip(&port, &router.std.id, k);
        compiler.apply(Input::Router(Box::new(router)));
        compiler.apply(Input::Port(Box::new(gateway_port)));
        interfaces.push(Input::Port(Box::new(interface)));
        fips.push((Input::Port(Box::new(port)), fip));
    }
    let interface_add = timed(compiler, interfaces);
    let (ports, fips): (Vec<Input>, Vec<Input>) = fips.into_iter().unzip();
    for port in ports {
        compiler.apply(port);
    }
    let fip_associate = timed(compiler, fips);
    Singles {
        add,
        delete,
        add_first_on_host,
        delete_last_on_host,
        interface_add,
        fip_associate,
    }
}

/// Each input applied alone and timed, its output dropped after the clock
/// stops.
fn timed(compiler: &mut Compiler, inputs: Vec<Input>) -> Single {
    let mut latencies = Vec::with_capacity(inputs.len());
    let mut changes_emitted = 0;
    for input in inputs {
        let start = Instant::now();
        let changes = compiler.apply(input);
        latencies.push(start.elapsed());
        changes_emitted += changes.len();
    }
    Single {
        latencies: Samples::new(latencies),
        changes_emitted,
    }
}

/// A cloud of registered hosts and networks with one subnet each, whose ports
/// are bound round-robin to a few hosts per network, as the model would hold it.
pub(super) struct SyntheticCloud {
    shape: Shape,
    rng: SplitMix64,
    pub(super) host_names: Vec<String>,
    network_ids: Vec<String>,
    subnet_ids: Vec<String>,
    /// The hosts each network's ports are bound to (indexes into `host_names`).
    network_hosts: Vec<Vec<usize>>,
    /// Every network's subnet, but for its ids.
    subnet_template: Subnet,
    /// Ports made so far: numbers their MACs and addresses.
    ports_made: u32,
    /// One security group per network its ports are in (`vnet bench
    /// trace`); none unless [`SyntheticCloud::group_per_network`] made them.
    network_groups: Vec<String>,
}

impl SyntheticCloud {
    pub(super) fn new(shape: Shape) -> Result<Self, BoxError> {
        let mut rng = SplitMix64::new(SEED);
        let host_names = (0..shape.hosts)
            .map(|h| format!("compute-{h:05}"))
            .collect();
        let network_ids = (0..shape.networks).map(|_| rng.uuid()).collect();
        let subnet_ids = (0..shape.networks).map(|_| rng.uuid()).collect();
        // Evenly spaced from a random first host: distinct, and spread over all hosts.
        let step = (shape.hosts / shape.hosts_per_network).max(1);
        let network_hosts = (0..shape.networks)
            .map(|_| {
                let first = random_below(&mut rng, shape.hosts);
                (0..shape.hosts_per_network)
                    .map(|k| (first + k * step) % shape.hosts)
                    .collect()
            })
            .collect();
        // Every network's subnet is 10.0.0.0/16: tenants' ranges overlap.
        let subnet_template = Subnet {
            std: standard(String::new()),
            network_id: String::new(),
            ip_version: 4,
            cidr: "10.0.0.0/16".parse()?,
            gateway_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            allocation_pools: vec![],
            dns_nameservers: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))],
            host_routes: vec![],
            enable_dhcp: true,
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
            subnetpool_id: None,
            service_types: vec![],
        };
        Ok(SyntheticCloud {
            shape,
            rng,
            host_names,
            network_ids,
            subnet_ids,
            network_hosts,
            subnet_template,
            ports_made: 0,
            network_groups: Vec::new(),
        })
    }

    /// From now on each network's ports are in a group of their own, as a
    /// tenant's default group: egress to anywhere, ingress from its members.
    /// Returns the groups and their rules, as inputs.
    pub(super) fn group_per_network(&mut self) -> Vec<Input> {
        let mut inputs = Vec::new();
        for _ in 0..self.shape.networks {
            let group = self.rng.uuid();
            inputs.push(Input::SecurityGroup(Box::new(SecurityGroup {
                std: standard(group.clone()),
                stateful: true,
                is_default: false,
            })));
            for (direction, remote) in [
                (Direction::Egress, None),
                (Direction::Ingress, Some(group.clone())),
            ] {
                inputs.push(Input::SecurityGroupRule(Box::new(SecurityGroupRule {
                    std: standard(self.rng.uuid()),
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
            self.network_groups.push(group);
        }
        inputs
    }

    pub(super) fn input_count(&self) -> usize {
        self.shape.hosts + 2 * self.shape.networks + self.shape.ports
    }

    /// The i-th of the cloud's inputs, in the order a server would feed them:
    /// hosts register, then networks with their subnet, then ports spread
    /// evenly over the networks.
    pub(super) fn input(&mut self, i: usize) -> Input {
        let Shape {
            hosts, networks, ..
        } = self.shape;
        if i < hosts {
            return Input::Host {
                name: self.host_names[i].clone(),
                underlay_ip: underlay_ip(i),
                physical_networks: vec![],
                gateway: false,
                availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
            };
        }
        let i = i - hosts;
        if i < 2 * networks {
            // Each network, then its subnet.
            return match i % 2 {
                0 => Input::Network(Box::new(self.network(i / 2))),
                _ => Input::Subnet(Box::new(self.subnet(i / 2))),
            };
        }
        let p = i - 2 * networks;
        let network = p % networks;
        let carriers = &self.network_hosts[network];
        let host = carriers[(p / networks) % carriers.len()];
        Input::Port(Box::new(self.port(network, host)))
    }

    fn network(&self, n: usize) -> Network {
        Network {
            std: standard(self.network_ids[n].clone()),
            admin_state_up: true,
            mtu: 1450,
            legacy_shared: false,
            legacy_external: false,
            port_security_enabled: true,
            network_type: "vxlan".into(),
            segmentation_id: u32::try_from(n + 1).unwrap_or(u32::MAX),
            physical_network: None,
            availability_zone_hints: vec![],
            is_default: false,
        }
    }

    fn subnet(&self, n: usize) -> Subnet {
        Subnet {
            std: standard(self.subnet_ids[n].clone()),
            network_id: self.network_ids[n].clone(),
            ..self.subnet_template.clone()
        }
    }

    fn port(&mut self, network: usize, host: usize) -> Port {
        let i = self.ports_made;
        self.ports_made += 1;
        let [_, b1, b2, b3] = i.to_be_bytes();
        let [_, _, hi, lo] = (i % 65_000 + 2).to_be_bytes();
        Port {
            std: standard(self.rng.uuid()),
            network_id: self.network_ids[network].clone(),
            mac_address: MacAddr([0xfa, 0x16, 0x3e, b1, b2, b3]),
            admin_state_up: true,
            status: PortStatus::Down,
            device_id: String::new(),
            device_owner: "compute:nova".into(),
            fixed_ips: vec![FixedIp {
                subnet_id: self.subnet_ids[network].clone(),
                ip_address: IpAddr::V4(Ipv4Addr::new(10, 0, hi, lo)),
            }],
            security_groups: self
                .network_groups
                .get(network)
                .cloned()
                .into_iter()
                .collect(),
            port_security_enabled: true,
            allowed_address_pairs: vec![],
            extra_dhcp_opts: vec![],
            binding_host_id: self.host_names[host].clone(),
            binding_vnic_type: "normal".into(),
            binding_profile: String::new(),
        }
    }

    fn random_below(&mut self, n: usize) -> usize {
        random_below(&mut self.rng, n)
    }

    /// One flat external network on physical network `public` (its id is
    /// [`EXTERNAL`]), and the first tenth of the hosts re-registered as
    /// gateway hosts mapping it.
    fn external_network(&mut self) -> Vec<Input> {
        let mut inputs: Vec<Input> = (0..self.shape.hosts.div_ceil(10))
            .map(|h| Input::Host {
                name: self.host_names[h].clone(),
                underlay_ip: underlay_ip(h),
                physical_networks: vec![PHYSICAL_NETWORK.into()],
                gateway: true,
                availability_zone: compiler::protocol::DEFAULT_ZONE.into(),
            })
            .collect();
        inputs.push(Input::Network(Box::new(Network {
            std: standard(EXTERNAL.into()),
            network_type: "flat".into(),
            segmentation_id: 0,
            physical_network: Some(PHYSICAL_NETWORK.into()),
            mtu: 1500,
            ..self.network(0)
        })));
        inputs.push(Input::Subnet(Box::new(Subnet {
            std: standard(EXTERNAL.into()),
            network_id: EXTERNAL.into(),
            cidr: "100.64.0.0/10".parse().unwrap_or(self.subnet_template.cidr),
            gateway_ip: Some(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1))),
            enable_dhcp: false,
            ..self.subnet_template.clone()
        })));
        inputs
    }

    /// Router `k` with its gateway on [`EXTERNAL`], its gateway port, and
    /// (not yet applied) its interface port on `network`.
    fn router(&mut self, network: usize, k: usize) -> (Router, Port, Port) {
        let router_id = self.rng.uuid();
        let gateway_ip = external_ip(k, 0);
        let owned = |cloud: &mut Self, network_id: String, owner: &str, ip: FixedIp| Port {
            device_id: router_id.clone(),
            device_owner: owner.into(),
            network_id,
            fixed_ips: vec![ip],
            security_groups: vec![],
            binding_host_id: String::new(),
            ..cloud.port(network, 0)
        };
        let gateway_ip = FixedIp {
            subnet_id: EXTERNAL.into(),
            ip_address: gateway_ip,
        };
        let gateway_port = owned(
            self,
            EXTERNAL.into(),
            OWNER_ROUTER_GATEWAY,
            gateway_ip.clone(),
        );
        let interface_ip = FixedIp {
            subnet_id: self.subnet_ids[network].clone(),
            ip_address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        };
        let interface = owned(
            self,
            self.network_ids[network].clone(),
            OWNER_ROUTER_INTERFACE,
            interface_ip,
        );
        let router = Router {
            std: standard(router_id.clone()),
            admin_state_up: true,
            gateway: Some(Gateway {
                network_id: EXTERNAL.into(),
                enable_snat: true,
                port_id: gateway_port.std.id.clone(),
                external_fixed_ips: vec![gateway_ip],
            }),
            routes: vec![],
            availability_zone_hints: vec![],
        };
        (router, gateway_port, interface)
    }

    /// Floating IP `k`, associated with `port` behind `router_id`.
    fn floating_ip(&mut self, port: &Port, router_id: &str, k: usize) -> Input {
        Input::FloatingIp(Box::new(FloatingIp {
            std: standard(self.rng.uuid()),
            floating_network_id: EXTERNAL.into(),
            subnet_id: EXTERNAL.into(),
            floating_ip_address: external_ip(k, 1),
            floating_port_id: self.rng.uuid(),
            association: Some(Association {
                port_id: port.std.id.clone(),
                fixed_ip_address: port.fixed_ips[0].ip_address,
                router_id: router_id.into(),
            }),
            port_forwardings: vec![],
        }))
    }

    fn host_carrying(&mut self, network: usize) -> usize {
        let k = self.random_below(self.network_hosts[network].len());
        self.network_hosts[network][k]
    }

    /// A host none of the network's ports is bound to (the first one after a
    /// random start, so this ends even when few hosts are left).
    fn host_not_carrying(&mut self, network: usize) -> usize {
        let start = self.random_below(self.shape.hosts);
        (0..self.shape.hosts)
            .map(|k| (start + k) % self.shape.hosts)
            .find(|h| !self.network_hosts[network].contains(h))
            .unwrap_or(start)
    }
}

/// The L3 singles' external network and subnet (one id serves both).
const EXTERNAL: &str = "00000000-0000-4000-8000-00000000e7e1";
const PHYSICAL_NETWORK: &str = "public";

/// Router `k`'s gateway address (`which` 0) or its floating IP's (1), in
/// 100.64.0.0/10.
fn external_ip(k: usize, which: usize) -> IpAddr {
    let i = u32::try_from(2 * k + which + 2).unwrap_or(u32::MAX) & 0x003f_ffff;
    IpAddr::V4(Ipv4Addr::from(0x6440_0000 | i))
}

fn random_below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// This process's resident memory (only the RSS is read: the CPU clock rate
/// passed along does not matter).
fn rss_bytes() -> Result<u64, BoxError> {
    Ok(stats::usage(std::process::id(), 100.0)?.rss_bytes)
}

fn standard(id: String) -> Standard {
    Standard::new(id, "bench-project".into(), 0)
}

/// Host h's tunnel endpoint: 172.16.0.0/12 has room for 2^20 hosts.
fn underlay_ip(h: usize) -> IpAddr {
    let [_, b1, b2, b3] = u32::try_from(h).unwrap_or(0).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(172, 16 | (b1 & 0x0f), b2, b3))
}

// ---- report ---------------------------------------------------------------

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The single-change rows: name, small cloud's figure, large cloud's.
fn single_rows<'a>(
    small: &'a Singles,
    large: &'a Singles,
) -> [(&'static str, &'a Single, &'a Single); 6] {
    [
        (
            "port add (host carries the network)",
            &small.add,
            &large.add,
        ),
        (
            "port delete (host keeps the network)",
            &small.delete,
            &large.delete,
        ),
        (
            "port add (host new to the network)",
            &small.add_first_on_host,
            &large.add_first_on_host,
        ),
        (
            "port delete (host's last there)",
            &small.delete_last_on_host,
            &large.delete_last_on_host,
        ),
        (
            "router interface add (gateway router)",
            &small.interface_add,
            &large.interface_add,
        ),
        (
            "floating IP associate",
            &small.fip_associate,
            &large.fip_associate,
        ),
    ]
}

struct Goal {
    what: String,
    measured: f64,
    unit: &'static str,
    below: f64,
    /// OVN's figure for the same thing, where one exists.
    ovn: Option<f64>,
}

impl Goal {
    fn met(&self) -> bool {
        self.measured < self.below
    }

    fn vs_ovn(&self) -> Option<f64> {
        let x = self.ovn? / self.measured;
        x.is_finite().then_some(x)
    }
}

fn goals(small: &CloudFigures, large: &CloudFigures) -> Vec<Goal> {
    let (s, l) = (&small.singles, &large.singles);
    let p50_growth = |a: &Single, b: &Single| {
        ratio(b.latencies.p50(), a.latencies.p50()).unwrap_or(f64::INFINITY)
    };
    let work_growth = |a: &Single, b: &Single| b.changes_per_op() / a.changes_per_op();
    let ovn_at_10k = |figure: f64| (small.shape.ports == 10_000).then_some(figure);
    let (sp, lp) = (small.shape.ports, large.shape.ports);
    vec![
        Goal {
            what: format!("port add p99, {lp} ports"),
            measured: stats::ms(l.add.latencies.p99()),
            unit: " ms",
            below: GOAL_CHANGE_MS,
            ovn: None,
        },
        Goal {
            what: format!("port delete p99, {lp} ports"),
            measured: stats::ms(l.delete.latencies.p99()),
            unit: " ms",
            below: GOAL_CHANGE_MS,
            ovn: None,
        },
        Goal {
            what: format!("port add p99, {sp} ports"),
            measured: stats::ms(s.add.latencies.p99()),
            unit: " ms",
            below: GOAL_CHANGE_MS,
            ovn: ovn_at_10k(OVN_PORT_ADD_10K_S * 1e3),
        },
        Goal {
            what: format!("router interface add p99, {lp} ports"),
            measured: stats::ms(l.interface_add.latencies.p99()),
            unit: " ms",
            below: GOAL_CHANGE_MS,
            ovn: None,
        },
        Goal {
            what: format!("floating IP associate p99, {lp} ports"),
            measured: stats::ms(l.fip_associate.latencies.p99()),
            unit: " ms",
            below: GOAL_CHANGE_MS,
            ovn: None,
        },
        Goal {
            what: format!("full compile, {lp} ports"),
            measured: large.full_compile.as_secs_f64(),
            unit: " s",
            below: GOAL_FULL_COMPILE_S,
            ovn: None,
        },
        Goal {
            what: format!("full compile, {sp} ports"),
            measured: small.full_compile.as_secs_f64(),
            unit: " s",
            below: GOAL_FULL_COMPILE_S,
            ovn: ovn_at_10k(OVN_FULL_COMPILE_10K_S),
        },
        Goal {
            what: format!("port add work, {lp} / {sp}"),
            measured: work_growth(&s.add, &l.add),
            unit: "x",
            below: GOAL_WORK_GROWTH,
            ovn: None,
        },
        Goal {
            what: format!("port delete work, {lp} / {sp}"),
            measured: work_growth(&s.delete, &l.delete),
            unit: "x",
            below: GOAL_WORK_GROWTH,
            ovn: None,
        },
        Goal {
            what: format!("port add p50, {lp} / {sp}"),
            measured: p50_growth(&s.add, &l.add),
            unit: "x",
            below: GOAL_TIME_GROWTH,
            ovn: None,
        },
        Goal {
            what: format!("port delete p50, {lp} / {sp}"),
            measured: p50_growth(&s.delete, &l.delete),
            unit: "x",
            below: GOAL_TIME_GROWTH,
            ovn: None,
        },
    ]
}

fn table(small: &CloudFigures, large: &CloudFigures, changes: usize) -> String {
    let mut out = String::new();
    let shape =
        |c: &CloudFigures| format!("{} networks, {} ports", c.shape.networks, c.shape.ports);
    let _ = writeln!(
        out,
        "vnet bench compiler: {} registered hosts, each network's ports on {} of them; \
         small cloud {}, large cloud {};\n{changes} single changes of each kind in each; \
         one thread, in process{}\n",
        large.shape.hosts,
        large.shape.hosts_per_network,
        shape(small),
        shape(large),
        if cfg!(debug_assertions) {
            " (DEBUG BUILD: not representative)"
        } else {
            ""
        },
    );

    let _ = writeln!(
        out,
        "{:<44}{:>14}{:>14}{:>13}",
        "whole cloud", "small", "large", "large/small"
    );
    let whole = |what: &str, f: &dyn Fn(&CloudFigures) -> f64, decimals: usize| {
        let (a, b) = (f(small), f(large));
        format!(
            "  {what:<42}{a:>14.decimals$}{b:>14.decimals$}{:>13}\n",
            times((a > 0.0).then(|| b / a))
        )
    };
    out += &whole(
        "full compile from empty, s",
        &|c| c.full_compile.as_secs_f64(),
        3,
    );
    out += &whole("  changes emitted", &|c| c.changes_emitted as f64, 0);
    out += &whole(
        "  per input, us",
        &|c| us(c.full_compile) / (c.shape.hosts + 2 * c.shape.networks + c.shape.ports) as f64,
        2,
    );
    out += &whole(
        "snapshot of every host, ms",
        &|c| stats::ms(c.snapshot_all),
        1,
    );
    out += &whole("  ports in all snapshots", &|c| c.snapshot_ports as f64, 0);
    let _ = writeln!(
        out,
        "  {:<42}{:>14}{:>14.1}\n",
        "RSS growth over the full compile, MiB",
        "-",
        large.rss_growth.map_or(0.0, mib)
    );

    let _ = writeln!(
        out,
        "{:<44}{:>8}{:>8}{:>8}{:>8}{:>8}{:>9}{:>9}",
        "one change (Compiler::apply), us",
        "chg/op",
        "p50 sm",
        "p99 sm",
        "p50 lg",
        "p99 lg",
        "p50 l/s",
        "p99 l/s"
    );
    for (what, s, l) in single_rows(&small.singles, &large.singles) {
        let (sl, ll) = (&s.latencies, &l.latencies);
        let work = if (s.changes_per_op() - l.changes_per_op()).abs() < 0.05 {
            format!("{:.1}", l.changes_per_op())
        } else {
            format!("{:.1}/{:.1}", s.changes_per_op(), l.changes_per_op())
        };
        let _ = writeln!(
            out,
            "  {what:<42}{work:>8}{:>8.2}{:>8.2}{:>8.2}{:>8.2}{:>9}{:>9}",
            us(sl.p50()),
            us(sl.p99()),
            us(ll.p50()),
            us(ll.p99()),
            times(ratio(ll.p50(), sl.p50())),
            times(ratio(ll.p99(), sl.p99())),
        );
    }
    let _ = writeln!(
        out,
        "  (chg/op: host changes emitted per input, the work done; sm/lg: small/large cloud)\n"
    );

    let _ = writeln!(
        out,
        "{:<44}{:>11}{:>10}{:>6}{:>12}{:>11}",
        "goal", "measured", "goal", "", "OVN", "vs OVN"
    );
    for g in goals(small, large) {
        let _ = writeln!(
            out,
            "  {:<42}{:>11}{:>10}{:>6}{:>12}{:>11}",
            g.what,
            format!("{:.4}", g.measured),
            format!("< {}{}", g.below, g.unit),
            if g.met() { "met" } else { "MISS" },
            g.ovn.map_or_else(|| "-".into(), |v| format!("{v}")),
            times(g.vs_ovn()),
        );
    }
    let _ = writeln!(
        out,
        "  (OVN 23.03 ovn-northd recomputes everything on each change: port add {OVN_PORT_ADD_10K_S} s \
         at 10k ports, {OVN_PORT_ADD_50K_S} s at 50k;\n   full compile {OVN_FULL_COMPILE_10K_S} s at 10k, \
         {OVN_FULL_COMPILE_50K_S} s at 50k, {OVN_RSS_50K_MIB:.0} MiB RSS)"
    );
    out
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

fn to_json(small: &CloudFigures, large: &CloudFigures, changes: usize) -> Value {
    let single = |s: &Single| {
        let l = &s.latencies;
        json!({
            "n": l.len(),
            "changes_per_op": s.changes_per_op(),
            "p50_us": us(l.p50()),
            "p99_us": us(l.p99()),
            "max_us": us(l.max()),
        })
    };
    let cloud = |c: &CloudFigures| {
        json!({
            "hosts": c.shape.hosts,
            "networks": c.shape.networks,
            "ports": c.shape.ports,
            "hosts_per_network": c.shape.hosts_per_network,
            "full_compile_s": c.full_compile.as_secs_f64(),
            "changes_emitted": c.changes_emitted,
            "snapshot_all_hosts_ms": stats::ms(c.snapshot_all),
            "ports_in_snapshots": c.snapshot_ports,
            "rss_growth_bytes": c.rss_growth,
            "port_add": single(&c.singles.add),
            "port_delete": single(&c.singles.delete),
            "port_add_first_on_host": single(&c.singles.add_first_on_host),
            "port_delete_last_on_host": single(&c.singles.delete_last_on_host),
            "router_interface_add": single(&c.singles.interface_add),
            "floating_ip_associate": single(&c.singles.fip_associate),
        })
    };
    json!({
        "changes_per_kind": changes,
        "debug_build": cfg!(debug_assertions),
        "small": cloud(small),
        "large": cloud(large),
        "large_over_small": single_rows(&small.singles, &large.singles).iter().map(|(what, s, l)| json!({
            "what": what,
            "work": l.changes_per_op() / s.changes_per_op(),
            "p50": ratio(l.latencies.p50(), s.latencies.p50()),
            "p99": ratio(l.latencies.p99(), s.latencies.p99()),
        })).collect::<Vec<_>>(),
        "goals": goals(small, large).iter().map(|g| json!({
            "what": g.what,
            "measured": g.measured,
            "goal": format!("< {}{}", g.below, g.unit),
            "met": g.met(),
            "ovn": g.ovn,
            "vs_ovn": g.vs_ovn(),
        })).collect::<Vec<_>>(),
    })
}
