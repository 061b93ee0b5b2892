//! Quotas: how many of each kind a project may own. A project's limits are
//! the configured defaults with its own overrides on top; -1 is unlimited.
//! The counting lives in `Cloud`; this is the data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Kind, Standard};

/// The kinds a quota limits, under Neutron's quota names.
pub const QUOTA_KINDS: [(&str, Kind); 9] = [
    ("network", Kind::Network),
    ("subnet", Kind::Subnet),
    ("port", Kind::Port),
    ("router", Kind::Router),
    ("floatingip", Kind::FloatingIp),
    ("security_group", Kind::SecurityGroup),
    ("security_group_rule", Kind::SecurityGroupRule),
    ("subnetpool", Kind::SubnetPool),
    ("rbac_policy", Kind::RbacPolicy),
];

/// The quota name of a kind.
pub fn quota_name(kind: Kind) -> Option<&'static str> {
    QUOTA_KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map(|(name, _)| *name)
}

/// Limits by quota name; -1 is unlimited.
pub type Limits = BTreeMap<String, i64>;

/// Defaults high enough for OpenStack's own test suites (Neutron's are
/// 100 networks and subnets, 500 ports, 10 routers, 50 floating IPs, 10 groups
/// and 100 rules; subnet pools are unlimited and RBAC policies 10, as there).
pub fn default_limits() -> Limits {
    [
        ("network", 100),
        ("subnet", 100),
        ("port", 500),
        ("router", 100),
        ("floatingip", 500),
        ("security_group", 150),
        ("security_group_rule", 1000),
        ("subnetpool", -1),
        ("rbac_policy", 10),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A project's overrides, stored under its project id (`std.id` is the project).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub std: Standard,
    pub limits: Limits,
}
