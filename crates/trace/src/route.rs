//! A router's route lookup, as the kernel's main table in its namespace
//! decides it: its own addresses, the connected subnets of its interfaces,
//! and the extra routes the agent installs. Pure, over one `RouterSpec`; it
//! must stay in step with `agent::router`'s plan (what it installs, how).

use std::net::IpAddr;

use compiler::protocol::RouterSpec;
use ipnet::IpNet;

/// A router's route lookup, as its namespace's main table decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteChoice<'a> {
    /// One of its own addresses: delivered to the router itself.
    Local { interface: &'a str },
    /// A connected subnet of an interface.
    Connected {
        interface: &'a str,
        network: &'a str,
        prefix: IpNet,
    },
    /// An extra route, out of the interface whose subnet holds its next hop.
    Extra {
        interface: &'a str,
        network: &'a str,
        prefix: IpNet,
        nexthop: IpAddr,
    },
}

/// Longest prefix over the connected subnets and the extra routes the agent
/// installs (those whose next hop is on a connected subnet; the kernel
/// refuses the others). On a tie the extra route wins: the agent installs
/// it with `ip route replace`, which takes the connected route's place.
pub(crate) fn route_lookup(spec: &RouterSpec, dst: IpAddr) -> Option<RouteChoice<'_>> {
    let interfaces = || {
        spec.interfaces
            .iter()
            .flat_map(|(id, i)| i.addresses.iter().map(move |a| (id.as_str(), i, a)))
    };
    if let Some((id, _, _)) = interfaces().find(|(_, _, a)| a.addr() == dst) {
        return Some(RouteChoice::Local { interface: id });
    }
    let connected = interfaces()
        .filter(|(_, _, a)| a.trunc().contains(&dst))
        .max_by_key(|(_, _, a)| a.prefix_len())
        .map(|(id, i, a)| RouteChoice::Connected {
            interface: id,
            network: &i.network_id,
            prefix: a.trunc(),
        });
    let extra = spec
        .routes
        .iter()
        .filter(|r| r.destination.contains(&dst) && r.nexthop.is_ipv4() == dst.is_ipv4())
        .filter_map(|r| {
            let (id, i, _) = interfaces()
                .filter(|(_, _, a)| a.trunc().contains(&r.nexthop))
                .max_by_key(|(_, _, a)| a.prefix_len())?;
            Some(RouteChoice::Extra {
                interface: id,
                network: &i.network_id,
                prefix: r.destination.trunc(),
                nexthop: r.nexthop,
            })
        })
        // The first of the longest (max_by_key keeps the last).
        .rev()
        .max_by_key(|c| prefix_len(c));
    match (connected, extra) {
        (Some(c), Some(e)) if prefix_len(&c) > prefix_len(&e) => Some(c),
        (_, Some(e)) => Some(e),
        (c, None) => c,
    }
}

fn prefix_len(c: &RouteChoice<'_>) -> u8 {
    match c {
        RouteChoice::Local { .. } => 128,
        RouteChoice::Connected { prefix, .. } | RouteChoice::Extra { prefix, .. } => {
            prefix.prefix_len()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // fixtures

    use compiler::protocol::{RouteSpec, RouterInterfaceSpec};
    use model::MacAddr;

    use super::*;

    fn spec(routes: &[(&str, &str)]) -> RouterSpec {
        let interface = |net: &str, addr: &str| RouterInterfaceSpec {
            network_id: net.into(),
            mac: MacAddr([0xfa, 0x16, 0x3e, 0, 0, 1]),
            addresses: vec![addr.parse().unwrap()],
        };
        RouterSpec {
            interfaces: [
                ("qa".to_owned(), interface("a", "10.1.0.1/24")),
                ("qb".to_owned(), interface("b", "10.2.0.1/16")),
            ]
            .into(),
            routes: routes
                .iter()
                .map(|(d, n)| RouteSpec {
                    destination: d.parse().unwrap(),
                    nexthop: n.parse().unwrap(),
                })
                .collect(),
            gateway: None,
            metering: Default::default(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_addresses_then_the_longest_prefix() {
        let s = spec(&[("10.2.7.0/24", "10.1.0.9"), ("10.2.7.0/26", "10.2.0.9")]);
        assert_eq!(
            route_lookup(&s, ip("10.2.0.1")),
            Some(RouteChoice::Local { interface: "qb" })
        );
        // /26 beats /24 beats the connected /16.
        assert!(matches!(
            route_lookup(&s, ip("10.2.7.5")),
            Some(RouteChoice::Extra { interface: "qb", nexthop, .. }) if nexthop == ip("10.2.0.9")
        ));
        assert!(matches!(
            route_lookup(&s, ip("10.2.7.100")),
            Some(RouteChoice::Extra { interface: "qa", nexthop, .. }) if nexthop == ip("10.1.0.9")
        ));
        assert!(matches!(
            route_lookup(&s, ip("10.2.9.9")),
            Some(RouteChoice::Connected {
                interface: "qb",
                network: "b",
                ..
            })
        ));
        assert_eq!(route_lookup(&s, ip("10.3.0.1")), None);
    }

    #[test]
    fn a_tie_goes_to_the_extra_route_and_unreachable_next_hops_are_not_installed() {
        // `ip route replace` puts the extra route in the connected one's place.
        let s = spec(&[("10.1.0.0/24", "10.2.0.9"), ("10.9.0.0/16", "10.7.0.1")]);
        assert!(matches!(
            route_lookup(&s, ip("10.1.0.5")),
            Some(RouteChoice::Extra {
                interface: "qb",
                ..
            })
        ));
        // 10.7.0.1 is on no interface's subnet: the kernel refuses the route.
        assert_eq!(route_lookup(&s, ip("10.9.1.1")), None);
        // An IPv6 address finds nothing in an IPv4 router.
        assert_eq!(route_lookup(&s, ip("fd00::1")), None);
    }
}
