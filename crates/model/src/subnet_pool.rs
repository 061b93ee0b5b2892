//! Subnet pools: a project's address space, the prefix bounds of the subnets
//! carved from it, and the prefix arithmetic (merging, subtracting, finding
//! room) that allocation needs. Pure values; which subnets a pool holds is
//! `Cloud`'s index, and the checks against it are `cloud/subnet_pool.rs`'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ipam::to_u128;
use crate::{ModelError, Standard};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetPool {
    pub std: Standard,
    pub ip_version: u8,
    /// Merged (no two overlap or could be joined), in address order.
    pub prefixes: Vec<IpNet>,
    pub default_prefixlen: u8,
    pub min_prefixlen: u8,
    pub max_prefixlen: u8,
    /// How much of the pool one project may take, in addresses for IPv4
    /// and /64s for IPv6; `None` is no limit.
    pub default_quota: Option<u32>,
    /// Sharing is the pool's RBAC policies' (`cloud/rbac.rs`); pools stored
    /// before them carried it here, read only by `Cloud::upgrade`.
    #[serde(default, rename = "shared", skip_serializing)]
    pub legacy_shared: bool,
    pub is_default: bool,
}

#[derive(Clone, Debug, Default)]
pub struct SubnetPoolCreate {
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub prefixes: Vec<IpNet>,
    pub default_prefixlen: Option<u32>,
    pub min_prefixlen: Option<u32>,
    pub max_prefixlen: Option<u32>,
    pub default_quota: Option<u32>,
    pub shared: Option<bool>,
    pub is_default: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct SubnetPoolUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    /// The new whole list: it must contain every address the pool had.
    pub prefixes: Option<Vec<IpNet>>,
    pub default_prefixlen: Option<u32>,
    pub min_prefixlen: Option<u32>,
    pub max_prefixlen: Option<u32>,
    pub default_quota: Option<u32>,
    pub is_default: Option<bool>,
}

/// The widest address of a family, in bits.
pub fn family_bits(ip_version: u8) -> u8 {
    if ip_version == 4 { 32 } else { 128 }
}

/// Neutron's default `min_prefixlen` (and so `default_prefixlen`).
pub fn default_min_prefixlen(ip_version: u8) -> u8 {
    if ip_version == 4 { 8 } else { 64 }
}

/// Check a pool's prefixes: at least one, all of one IP version (host bits
/// are dropped, as Neutron does). Returns that version and the prefixes merged.
pub fn merge_prefixes(given: &[IpNet]) -> Result<(u8, Vec<IpNet>), ModelError> {
    let nets: Vec<IpNet> = given.iter().map(IpNet::trunc).collect();
    let Some(first) = nets.first() else {
        return Err(ModelError::EmptySubnetPoolPrefixList);
    };
    let v4 = first.addr().is_ipv4();
    if nets.iter().any(|n| n.addr().is_ipv4() != v4) {
        return Err(ModelError::PrefixVersionMismatch);
    }
    Ok((if v4 { 4 } else { 6 }, PrefixSet::of(v4, &nets).cidrs()))
}

/// Check a pool's prefix length bounds as Neutron does, in its order.
pub fn check_bounds(ip_version: u8, min: u32, max: u32, default: u32) -> Result<(), ModelError> {
    let bounds = |prefix_type: &'static str, prefixlen, base_prefix_type: &'static str, base| {
        ModelError::IllegalSubnetPoolPrefixBounds {
            prefix_type,
            prefixlen,
            base_prefix_type,
            base_prefixlen: base,
        }
    };
    if min > max {
        return Err(bounds("min_prefixlen", min, "max_prefixlen", max));
    }
    let widest = u32::from(family_bits(ip_version));
    if max > widest {
        return Err(bounds("max_prefixlen", max, "ip_version_max", widest));
    }
    if default < min {
        return Err(bounds("default_prefixlen", default, "min_prefixlen", min));
    }
    if default > max {
        return Err(bounds("default_prefixlen", default, "max_prefixlen", max));
    }
    Ok(())
}

/// A set of addresses of one family, as sorted, disjoint, non-adjacent
/// inclusive ranges: what Neutron does with `netaddr.IPSet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixSet {
    v4: bool,
    ranges: Vec<(u128, u128)>,
}

impl PrefixSet {
    pub fn of<'a>(v4: bool, nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut ranges: Vec<(u128, u128)> = nets
            .into_iter()
            .filter(|n| n.addr().is_ipv4() == v4)
            .map(|n| (to_u128(n.network()), to_u128(n.broadcast())))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                // Overlapping or adjacent: one range (`last.1 + 1` cannot
                // overflow when `lo` is above it).
                Some(last) if lo <= last.1 || lo - 1 == last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        PrefixSet { v4, ranges: merged }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The addresses of `self` not in `other`.
    pub fn minus(&self, other: &PrefixSet) -> PrefixSet {
        let mut out = Vec::new();
        for &(lo, hi) in &self.ranges {
            let mut from = Some(lo);
            for &(olo, ohi) in &other.ranges {
                let Some(start) = from else { break };
                if ohi < start || olo > hi {
                    continue;
                }
                if olo > start {
                    out.push((start, olo - 1));
                }
                from = if ohi >= hi { None } else { Some(ohi + 1) };
            }
            if let Some(start) = from {
                out.push((start, hi));
            }
        }
        PrefixSet {
            v4: self.v4,
            ranges: out,
        }
    }

    pub fn intersects(&self, other: &PrefixSet) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| other.ranges.iter().any(|&(a, b)| a <= hi && lo <= b))
    }

    pub fn contains_all(&self, other: &PrefixSet) -> bool {
        other.minus(self).is_empty()
    }

    /// The fewest CIDRs covering the set, in address order.
    pub fn cidrs(&self) -> Vec<IpNet> {
        let bits: u32 = if self.v4 { 32 } else { 128 };
        let mut out = Vec::new();
        for &(lo, hi) in &self.ranges {
            let mut start = lo;
            loop {
                // The largest aligned block at `start` that ends within the range.
                let align = start.trailing_zeros().min(bits);
                let room = hi - start; // the block's size minus one may not exceed this
                let size_bits = (0..=align)
                    .rev()
                    .find(|&k| {
                        if k == 128 {
                            room == u128::MAX
                        } else {
                            (1u128 << k) - 1 <= room
                        }
                    })
                    .unwrap_or(0);
                out.push(self.net(start, (bits - size_bits) as u8));
                if size_bits == 128 {
                    break;
                }
                let last = start + ((1u128 << size_bits) - 1);
                if last >= hi {
                    break;
                }
                start = last + 1;
            }
        }
        out
    }

    fn net(&self, start: u128, prefix_len: u8) -> IpNet {
        let addr = if self.v4 {
            // Only IPv4 values (below 2^32) are in an IPv4 set.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(start).unwrap_or(u32::MAX)))
        } else {
            IpAddr::V6(Ipv6Addr::from(start))
        };
        // The prefix length is at most the family's width by construction.
        IpNet::new(addr, prefix_len).unwrap_or_else(|_| IpNet::from(addr))
    }
}

/// Where a subnet of `prefix_len` goes in `available`, as Neutron picks it:
/// the smallest free block that can hold it (the first such in address
/// order), and its first subnet, so large blocks stay whole for later.
pub fn best_fit(available: &PrefixSet, prefix_len: u8) -> Option<IpNet> {
    let mut blocks = available.cidrs();
    // Stable: among blocks of one size, address order stays.
    blocks.sort_by_key(|b| std::cmp::Reverse(b.prefix_len()));
    blocks
        .into_iter()
        .find(|b| b.prefix_len() <= prefix_len)
        .and_then(|b| IpNet::new(b.network(), prefix_len).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn prefixes_are_merged_and_of_one_version() {
        let (v, p) = merge_prefixes(&nets(&[
            "10.0.1.0/24",
            "10.0.0.0/24",
            "10.0.0.128/25",
            "10.1.2.3/16",
        ]))
        .unwrap();
        assert_eq!(v, 4);
        assert_eq!(p, nets(&["10.0.0.0/23", "10.1.0.0/16"]));
        assert_eq!(
            merge_prefixes(&nets(&["10.0.0.0/24", "fd00::/64"])),
            Err(ModelError::PrefixVersionMismatch)
        );
        assert_eq!(
            merge_prefixes(&[]),
            Err(ModelError::EmptySubnetPoolPrefixList)
        );
        let (v, p) = merge_prefixes(&nets(&["::/0"])).unwrap();
        assert_eq!((v, p), (6, nets(&["::/0"])));
        let (_, p) = merge_prefixes(&nets(&["0.0.0.0/0", "10.0.0.0/8"])).unwrap();
        assert_eq!(p, nets(&["0.0.0.0/0"]));
    }

    #[test]
    fn subtracting_splits_into_the_fewest_cidrs() {
        let all = PrefixSet::of(true, &nets(&["10.0.0.0/16"]));
        let used = PrefixSet::of(true, &nets(&["10.0.0.0/24", "10.0.3.0/24"]));
        let free = all.minus(&used);
        assert_eq!(
            free.cidrs(),
            nets(&[
                "10.0.1.0/24",
                "10.0.2.0/24",
                "10.0.4.0/22",
                "10.0.8.0/21",
                "10.0.16.0/20",
                "10.0.32.0/19",
                "10.0.64.0/18",
                "10.0.128.0/17"
            ])
        );
        assert!(free.intersects(&PrefixSet::of(true, &nets(&["10.0.2.5/32"]))));
        assert!(!free.intersects(&used));
        assert!(all.contains_all(&free));
        assert!(!free.contains_all(&all));
        let v6 = PrefixSet::of(false, &nets(&["::/0"]));
        assert_eq!(v6.minus(&v6).cidrs(), Vec::<IpNet>::new());
        let low = PrefixSet::of(false, &nets(&["::/1"]));
        assert_eq!(v6.minus(&low).cidrs(), nets(&["8000::/1"]));
        assert_eq!(low.cidrs(), nets(&["::/1"]));
    }

    #[test]
    fn best_fit_takes_the_smallest_block_that_holds_it() {
        let all = PrefixSet::of(true, &nets(&["10.0.0.0/16"]));
        let used = PrefixSet::of(true, &nets(&["10.0.0.0/24", "10.0.3.0/24"]));
        let free = all.minus(&used);
        assert_eq!(best_fit(&free, 24), Some("10.0.1.0/24".parse().unwrap()));
        assert_eq!(best_fit(&free, 26), Some("10.0.1.0/26".parse().unwrap()));
        assert_eq!(best_fit(&free, 22), Some("10.0.4.0/22".parse().unwrap()));
        assert_eq!(best_fit(&free, 17), Some("10.0.128.0/17".parse().unwrap()));
        assert_eq!(best_fit(&free, 16), None);
    }

    #[test]
    fn bounds_read_like_neutron() {
        assert!(check_bounds(4, 8, 32, 8).is_ok());
        assert_eq!(
            check_bounds(4, 24, 16, 24).unwrap_err().to_string(),
            "Illegal prefix bounds: min_prefixlen=24, max_prefixlen=16."
        );
        assert_eq!(
            check_bounds(4, 8, 33, 8).unwrap_err().to_string(),
            "Illegal prefix bounds: max_prefixlen=33, ip_version_max=32."
        );
        assert_eq!(
            check_bounds(6, 64, 128, 48).unwrap_err().to_string(),
            "Illegal prefix bounds: default_prefixlen=48, min_prefixlen=64."
        );
        assert!(check_bounds(4, 8, 24, 28).is_err());
    }
}
