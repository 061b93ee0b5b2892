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
    /// What no port may send, whatever its groups allow: a router
    /// advertisement or a DHCPv6 reply (only the host answers those).
    Refused(&'static str),
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

/// A port's profile chain `pe_<profile>`/`pi_<profile>` (its groups, in
/// order) for a packet of a new connection
/// (established ones are accepted before it, when stateful).
pub fn port_chain<V: Compiled + ?Sized>(
    view: &V,
    host: &str,
    spec: &PortSecuritySpec,
    dir: RuleDirection,
    flow: &Flow,
) -> ChainDecision {
    if let Some(what) = always_refused(dir, flow) {
        return ChainDecision::Refused(what);
    }
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

/// What a port may never send, as `port_rules` drops it first.
pub fn always_refused(dir: RuleDirection, f: &Flow) -> Option<&'static str> {
    if dir != RuleDirection::Egress || !f.v6() {
        return None;
    }
    if f.protocol == 58 && f.icmp.is_some_and(|(t, _)| t == 134) {
        return Some("a router advertisement");
    }
    (f.protocol == 17 && f.sport == Some(547) && f.dport == Some(546)).then_some("a DHCPv6 reply")
}

/// DHCP(v6) requests to the agent and neighbour discovery, as `port_rules`
/// writes them.
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
        RuleDirection::Ingress if icmpv6(&[130, 135, 136]) => Some("neighbour discovery / MLD"),
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
    // A MAC's own IPv6 link-local address is let through once the port has
    // an IPv6 source at all.
    let link_local = || {
        let own = mac.ipv6_link_local();
        let has_v6 = spec
            .allowed_sources
            .iter()
            .any(|s| matches!(s.ip, IpNet::V6(_)));
        let own_mac = spec.allowed_sources.iter().any(|s| s.mac == mac);
        (has_v6 && own_mac && ip == IpAddr::V6(own)).then(|| IpNet::V6(ipnet::Ipv6Net::from(own)))
    };
    pair.or_else(link_local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compiler::protocol::AllowedSource;

    fn flow(protocol: u8, ports: Option<(u16, u16)>, icmp: Option<(u8, u8)>) -> Flow {
        Flow {
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1".parse().unwrap(),
            protocol,
            sport: ports.map(|p| p.0),
            dport: ports.map(|p| p.1),
            icmp,
        }
    }

    /// As `port_rules` drops them first: a VM's router advertisements and
    /// DHCPv6 replies, never what it receives or asks.
    #[test]
    fn router_advertisements_and_dhcpv6_replies_from_a_vm_are_refused() {
        let ra = flow(58, None, Some((134, 0)));
        let reply = flow(17, Some((547, 546)), None);
        let request = flow(17, Some((546, 547)), None);
        assert!(always_refused(RuleDirection::Egress, &ra).is_some());
        assert!(always_refused(RuleDirection::Egress, &reply).is_some());
        assert_eq!(always_refused(RuleDirection::Egress, &request), None);
        assert_eq!(always_refused(RuleDirection::Ingress, &ra), None);
        // Nor are they let in unconditionally any more (only the host's own,
        // which never cross the bridge).
        assert_eq!(always_allowed(RuleDirection::Ingress, &ra), None);
        assert_eq!(always_allowed(RuleDirection::Ingress, &reply), None);
        assert!(always_allowed(RuleDirection::Egress, &request).is_some());
    }

    #[test]
    fn only_the_macs_own_link_local_address_passes_anti_spoofing() {
        let mac: model::MacAddr = "fa:16:3e:aa:bb:cc".parse().unwrap();
        let spec = PortSecuritySpec {
            enabled: true,
            security_groups: vec![],
            allowed_sources: vec![AllowedSource {
                mac,
                ip: "fd00::5/128".parse().unwrap(),
            }],
        };
        let own: IpAddr = "fe80::f816:3eff:feaa:bbcc".parse().unwrap();
        assert!(allowed_source(&spec, mac, own).is_some());
        assert_eq!(allowed_source(&spec, mac, "fe80::1".parse().unwrap()), None);
        let other: model::MacAddr = "fa:16:3e:00:00:01".parse().unwrap();
        assert_eq!(allowed_source(&spec, other, own), None);
    }
}
