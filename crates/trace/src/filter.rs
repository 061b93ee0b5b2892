//! The nftables semantics of one port's chain, as `agent::nft::ruleset`
//! builds it, applied to one packet: what a port always allows, then its
//! groups' rules (protocol numbers, port ranges only for port-bearing
//! protocols, ICMP type/code, remote any/prefix/group/address group by
//! ethertype). It must stay in step with that ruleset; it reads, it never
//! builds nft text.

use std::net::IpAddr;

use compiler::protocol::{PortSecuritySpec, RuleDirection, RuleEthertype, RuleRemote, RuleSpec};
use ipnet::IpNet;

use crate::view::Compiled;

/// Protocols whose rules name destination ports (`th dport`).
pub const PORT_PROTOCOLS: [u8; 5] = [6, 17, 33, 132, 136];

/// One packet as the filters see it (addresses as sent, after anti-spoofing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp: Option<(u8, u8)>,
}

impl Flow {
    pub fn v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// Whether it asks for an answer a connection needs back: TCP, or an
    /// ICMP echo request.
    pub fn needs_reply(&self) -> bool {
        self.protocol == 6 || matches!(self.icmp, Some((8 | 128, _)))
    }

    /// The reply to this packet (ports swapped, echo answered).
    pub fn reply(&self) -> Flow {
        Flow {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            icmp: self.icmp.map(|(t, c)| match t {
                8 => (0, c),
                128 => (129, c),
                t => (t, c),
            }),
            ..*self
        }
    }
}

/// Why a chain let a packet through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// What every port allows (DHCP with the agent, neighbour discovery).
    Always(&'static str),
    /// A rule of a group; `member` is the remote group's member (or the
    /// address group's address) that matched.
    Rule {
        group: String,
        rule: RuleSpec,
        member: Option<IpNet>,
    },
}

/// A port chain's decision on a new packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainDecision {
    Accept(Allowed),
    /// No rule of `groups` (the port's groups the host holds) allows it;
    /// `unknown`: groups the port names that the host does not hold.
    Drop {
        groups: Vec<String>,
        unknown: Vec<String>,
    },
}

/// Whether the chain of a secured port is stateful, and the groups it jumps
/// to: a port is stateful if any of its (held) groups is, or if it has none.
pub fn port_groups<V: Compiled + ?Sized>(
    view: &V,
    host: &str,
    spec: &PortSecuritySpec,
) -> (bool, Vec<String>, Vec<String>) {
    let (mut held, mut unknown) = (Vec::new(), Vec::new());
    let mut stateful = false;
    for g in &spec.security_groups {
        match view.group(host, g) {
            Some(group) => {
                stateful |= group.stateful;
                held.push(g.clone());
            }
            None => unknown.push(g.clone()),
        }
    }
    (stateful || held.is_empty(), held, unknown)
}

/// The port chain `e_<dev>`/`i_<dev>` for a packet of a new connection
/// (established ones are accepted before it, when stateful).
pub fn port_chain<V: Compiled + ?Sized>(
    view: &V,
    host: &str,
    spec: &PortSecuritySpec,
    dir: RuleDirection,
    flow: &Flow,
) -> ChainDecision {
    if let Some(what) = always_allowed(dir, flow) {
        return ChainDecision::Accept(Allowed::Always(what));
    }
    let (_, groups, unknown) = port_groups(view, host, spec);
    for g in &groups {
        let Some(group) = view.group(host, g) else {
            continue;
        };
        for rule in group.rules.iter().filter(|r| r.direction == dir) {
            if let Some(member) = rule_matches(view, host, rule, flow) {
                return ChainDecision::Accept(Allowed::Rule {
                    group: g.clone(),
                    rule: (*rule).clone(),
                    member,
                });
            }
        }
    }
    ChainDecision::Drop { groups, unknown }
}

/// DHCP(v6) with the agent and neighbour discovery, as `port_rules` writes them.
fn always_allowed(dir: RuleDirection, f: &Flow) -> Option<&'static str> {
    let udp = |s: u16, d: u16| f.protocol == 17 && f.sport == Some(s) && f.dport == Some(d);
    let icmpv6 = |types: &[u8]| {
        f.v6() && f.protocol == 58 && f.icmp.is_some_and(|(t, _)| types.contains(&t))
    };
    match dir {
        RuleDirection::Egress if !f.v6() && udp(68, 67) => Some("DHCP request"),
        RuleDirection::Egress if f.v6() && udp(546, 547) => Some("DHCPv6 request"),
        RuleDirection::Egress if icmpv6(&[131, 133, 135, 136, 143]) => {
            Some("neighbour discovery / MLD")
        }
        RuleDirection::Ingress if !f.v6() && udp(67, 68) => Some("DHCP reply"),
        RuleDirection::Ingress if f.v6() && udp(547, 546) => Some("DHCPv6 reply"),
        RuleDirection::Ingress if icmpv6(&[130, 134, 135, 136]) => {
            Some("router advertisement / neighbour discovery / MLD")
        }
        _ => None,
    }
}

/// Whether one rule accepts the flow: `Some(member)` if it does (the remote
/// group member, or the address group's address, that matched).
pub fn rule_matches<V: Compiled + ?Sized>(
    view: &V,
    host: &str,
    rule: &RuleSpec,
    f: &Flow,
) -> Option<Option<IpNet>> {
    let v6 = f.v6();
    if (rule.ethertype == RuleEthertype::IPv6) != v6 {
        return None;
    }
    if let Some(p) = rule.protocol {
        // ICMP named on an IPv6 rule means ICMPv6.
        let p = if p == 1 && v6 { 58 } else { p };
        if p != f.protocol {
            return None;
        }
        if let Some((lo, hi)) = rule.ports.filter(|_| PORT_PROTOCOLS.contains(&p)) {
            let dport = f.dport?;
            if dport < lo || dport > hi {
                return None;
            }
        }
        if let Some((ty, code)) = rule.icmp.filter(|_| p == 1 || p == 58) {
            let (t, c) = f.icmp?;
            if t != ty || code.is_some_and(|code| code != c) {
                return None;
            }
        }
    }
    let remote = match rule.direction {
        RuleDirection::Egress => f.dst,
        RuleDirection::Ingress => f.src,
    };
    match &rule.remote {
        RuleRemote::Any => Some(None),
        // A prefix of the other family makes no nft rule at all.
        RuleRemote::Prefix(p) => {
            (matches!(p, IpNet::V6(_)) == v6 && p.contains(&remote)).then_some(None)
        }
        RuleRemote::Group(g) => match view.member(host, g, remote) {
            Some(Some(member)) => Some(Some(member)),
            _ => None,
        },
        // The address group's set holds only addresses of the rule's family.
        RuleRemote::AddressGroup(g) => match view.address(host, g, remote) {
            Some(Some(address)) => Some(Some(address)),
            _ => None,
        },
    }
}

/// Anti-spoofing (`s_<dev>`): the (MAC, source IP) pair must be one the port
/// may send from. Returns the allowed source that matched.
pub fn allowed_source(spec: &PortSecuritySpec, mac: model::MacAddr, ip: IpAddr) -> Option<IpNet> {
    let pair = spec
        .allowed_sources
        .iter()
        .find(|s| s.mac == mac && s.ip.trunc().contains(&ip))
        .map(|s| s.ip);
    // IPv6 link-local is let through from the port's MACs once it has an
    // IPv6 source at all.
    let link_local = || {
        let fe80: IpNet = IpNet::V6(
            ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64).ok()?,
        );
        let has_v6 = spec
            .allowed_sources
            .iter()
            .any(|s| matches!(s.ip, IpNet::V6(_)));
        let own_mac = spec.allowed_sources.iter().any(|s| s.mac == mac);
        (has_v6 && own_mac && fe80.contains(&ip)).then_some(fe80)
    };
    pair.or_else(link_local)
}
