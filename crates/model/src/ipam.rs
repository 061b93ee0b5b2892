//! IP address management: allocation pools, finding a free address, and the
//! EUI-64 addresses of IPv6 auto-address subnets. Works on plain values; the
//! record of which address belongs to whom lives in `Cloud`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(self.start, ip) && self.start <= ip && ip <= self.end
    }

    pub fn overlaps(&self, other: &IpRange) -> bool {
        same_family(self.start, other.start) && self.start <= other.end && other.start <= self.end
    }

    pub fn size(&self) -> u128 {
        to_u128(self.end) - to_u128(self.start) + 1
    }
}

pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// The address `n` of the family of `like`; `n` must fit that family.
fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Whether `ip` may be given to a port on `cidr`: inside it, and for IPv4 not
/// the network or broadcast address (for IPv6 not the subnet-router anycast).
pub fn is_assignable(cidr: &IpNet, ip: IpAddr) -> bool {
    if !cidr.contains(&ip) || ip == cidr.network() {
        return false;
    }
    match cidr {
        IpNet::V4(net) if net.prefix_len() < 31 => ip != cidr.broadcast(),
        _ => true,
    }
}

/// Neutron's default pools: the CIDR minus the network address, the IPv4
/// broadcast address and the gateway (which splits the range in two).
pub fn default_pools(cidr: &IpNet, gateway: Option<IpAddr>) -> Vec<IpRange> {
    let first = to_u128(cidr.network()) + 1;
    let last = match cidr {
        IpNet::V4(net) if net.prefix_len() < 31 => to_u128(cidr.broadcast()) - 1,
        _ => to_u128(cidr.broadcast()),
    };
    if first > last {
        return Vec::new();
    }
    let like = cidr.network();
    let range = |a: u128, b: u128| IpRange {
        start: from_u128(like, a),
        end: from_u128(like, b),
    };
    match gateway.map(to_u128) {
        Some(gw) if (first..=last).contains(&gw) => {
            let mut pools = Vec::new();
            if gw > first {
                pools.push(range(first, gw - 1));
            }
            if gw < last {
                pools.push(range(gw + 1, last));
            }
            pools
        }
        _ => vec![range(first, last)],
    }
}

/// The first free address at or after `cursor` in `pools` (wrapping once to the
/// start), skipping `allocated`. Amortised O(1) for sequential allocation: the
/// cursor moves past what was handed out, and a run of taken addresses is
/// skipped one ordered-map step at a time.
pub fn next_free<V>(
    pools: &[IpRange],
    allocated: &BTreeMap<IpAddr, V>,
    cursor: Option<IpAddr>,
) -> Option<IpAddr> {
    let from = cursor.map(to_u128);
    first_free_from(pools, allocated, from)
        .or_else(|| from.and_then(|_| first_free_from(pools, allocated, None)))
}

fn first_free_from<V>(
    pools: &[IpRange],
    allocated: &BTreeMap<IpAddr, V>,
    from: Option<u128>,
) -> Option<IpAddr> {
    for pool in pools {
        let (lo, hi) = (to_u128(pool.start), to_u128(pool.end));
        let mut candidate = match from {
            Some(c) if c > hi => continue,
            Some(c) => c.max(lo),
            None => lo,
        };
        for (ip, _) in allocated.range(from_u128(pool.start, candidate)..=pool.end) {
            if to_u128(*ip) != candidate {
                break;
            }
            if candidate == hi {
                break;
            }
            candidate += 1;
        }
        if !allocated.contains_key(&from_u128(pool.start, candidate)) {
            return Some(from_u128(pool.start, candidate));
        }
    }
    None
}

/// The modified EUI-64 address of `mac` in the /64 `prefix` (RFC 4291 §2.5.1).
pub fn eui64(prefix: &IpNet, mac: MacAddr) -> Option<IpAddr> {
    let IpNet::V6(net) = prefix else { return None };
    if net.prefix_len() != 64 {
        return None;
    }
    let network = u128::from(net.network()) & !u128::from(u64::MAX);
    Some(IpAddr::V6(Ipv6Addr::from(
        network | u128::from(mac.interface_id()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_pools_skip_network_broadcast_and_gateway() {
        let pools = default_pools(&net("10.20.30.0/24"), Some(ip("10.20.30.1")));
        assert_eq!(
            pools,
            vec![IpRange {
                start: ip("10.20.30.2"),
                end: ip("10.20.30.254")
            }]
        );
        let split = default_pools(&net("10.0.0.0/28"), Some(ip("10.0.0.5")));
        assert_eq!(
            split,
            vec![
                IpRange {
                    start: ip("10.0.0.1"),
                    end: ip("10.0.0.4")
                },
                IpRange {
                    start: ip("10.0.0.6"),
                    end: ip("10.0.0.14")
                }
            ]
        );
        let v6 = default_pools(&net("fd00:20:30::/64"), Some(ip("fd00:20:30::")));
        assert_eq!(
            v6,
            vec![IpRange {
                start: ip("fd00:20:30::1"),
                end: ip("fd00:20:30:0:ffff:ffff:ffff:ffff")
            }]
        );
    }

    #[test]
    fn next_free_skips_taken_and_wraps() {
        let pools = default_pools(&net("10.0.0.0/29"), Some(ip("10.0.0.1")));
        let mut taken = BTreeMap::new();
        for a in ["10.0.0.2", "10.0.0.3", "10.0.0.5"] {
            taken.insert(ip(a), ());
        }
        assert_eq!(next_free(&pools, &taken, None), Some(ip("10.0.0.4")));
        assert_eq!(
            next_free(&pools, &taken, Some(ip("10.0.0.5"))),
            Some(ip("10.0.0.6"))
        );
        // From the end it wraps to the first hole.
        taken.insert(ip("10.0.0.6"), ());
        assert_eq!(
            next_free(&pools, &taken, Some(ip("10.0.0.6"))),
            Some(ip("10.0.0.4"))
        );
        taken.insert(ip("10.0.0.4"), ());
        assert_eq!(next_free(&pools, &taken, Some(ip("10.0.0.3"))), None);
    }

    #[test]
    fn eui64_matches_neutron() {
        // From the recorded Neutron exchange: fa:16:3e:f0:76:88 on fd00:20:30::/64.
        let mac: MacAddr = "fa:16:3e:f0:76:88".parse().unwrap();
        assert_eq!(
            eui64(&net("fd00:20:30::/64"), mac),
            Some(ip("fd00:20:30:0:f816:3eff:fef0:7688"))
        );
        assert_eq!(eui64(&net("fd00:20:30::/80"), mac), None);
    }

    #[test]
    fn assignable_excludes_network_and_broadcast() {
        let n = net("10.0.0.0/24");
        assert!(!is_assignable(&n, ip("10.0.0.0")));
        assert!(!is_assignable(&n, ip("10.0.0.255")));
        assert!(is_assignable(&n, ip("10.0.0.1")));
        assert!(!is_assignable(&n, ip("10.0.1.1")));
    }
}
