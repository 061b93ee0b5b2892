//! Security groups and their rules: the rule grammar Neutron accepts (a
//! rule's remote is a prefix, a group or an address group, at most one), its
//! normalisation, and the signature that makes duplicate rules detectable in O(1).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{ModelError, Standard};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub std: Standard,
    pub stateful: bool,
    /// The project's `default` group, created on its first request.
    pub is_default: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ingress" => Some(Direction::Ingress),
            "egress" => Some(Direction::Egress),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ethertype {
    IPv4,
    IPv6,
}

impl Ethertype {
    pub fn as_str(self) -> &'static str {
        match self {
            Ethertype::IPv4 => "IPv4",
            Ethertype::IPv6 => "IPv6",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ipv4" => Some(Ethertype::IPv4),
            "ipv6" => Some(Ethertype::IPv6),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    /// `name` stays empty: rules have none.
    pub std: Standard,
    pub security_group_id: String,
    pub direction: Direction,
    pub ethertype: Ethertype,
    /// As the tenant wrote it (lowercased name, or a number), `None` for any.
    pub protocol: Option<String>,
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<IpNet>,
    pub remote_group_id: Option<String>,
    /// The address group whose addresses it allows (Neutron's
    /// `remote_address_group_id`); absent in records older than address groups.
    #[serde(default)]
    pub remote_address_group_id: Option<String>,
}

impl SecurityGroupRule {
    /// What makes two rules of one group the same rule.
    pub fn signature(&self) -> RuleSignature {
        RuleSignature {
            direction: self.direction,
            ethertype: self.ethertype,
            protocol: self.protocol.as_deref().and_then(protocol_number),
            port_range_min: self.port_range_min,
            port_range_max: self.port_range_max,
            // 0.0.0.0/0 and ::/0 match what no prefix matches.
            remote_ip_prefix: self
                .remote_ip_prefix
                .map(|p| p.trunc())
                .filter(|p| p.prefix_len() != 0),
            remote_group_id: self.remote_group_id.clone(),
            remote_address_group_id: self.remote_address_group_id.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleSignature {
    direction: Direction,
    ethertype: Ethertype,
    protocol: Option<u8>,
    port_range_min: Option<u32>,
    port_range_max: Option<u32>,
    remote_ip_prefix: Option<IpNet>,
    remote_group_id: Option<String>,
    remote_address_group_id: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct SecurityGroupCreate {
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub stateful: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct SecurityGroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub stateful: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct RuleCreate {
    pub project_id: Option<String>,
    pub description: Option<String>,
    pub security_group_id: String,
    pub direction: Option<String>,
    pub ethertype: Option<String>,
    pub protocol: Option<String>,
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub remote_address_group_id: Option<String>,
}

/// IANA protocol names Neutron accepts, with their numbers.
const PROTOCOLS: [(&str, u8); 25] = [
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("icmpv6", 58),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
    ("ipinip", 4),
];

/// The IP protocol number of a name or a decimal number 0..=255.
pub fn protocol_number(protocol: &str) -> Option<u8> {
    PROTOCOLS
        .iter()
        .find(|(name, _)| *name == protocol)
        .map(|(_, n)| *n)
        .or_else(|| protocol.parse().ok())
}

/// Protocols whose rules may carry a port range.
fn has_ports(number: u8) -> bool {
    matches!(number, 6 | 17 | 33 | 132 | 136)
}

fn is_icmp(number: u8) -> bool {
    matches!(number, 1 | 58)
}

/// Check a rule request and build the rule, normalised, under `std` in
/// `group_id`. Whether its remote group exists is the caller's check.
pub fn build_rule(
    std: Standard,
    group_id: &str,
    req: RuleCreate,
) -> Result<SecurityGroupRule, ModelError> {
    let direction = match req.direction.as_deref() {
        Some(d) => Direction::parse(d)
            .ok_or_else(|| ModelError::invalid(format!("{d} is not in [ingress, egress]")))?,
        None => return Err(ModelError::invalid("direction is required")),
    };
    let ethertype = match req.ethertype.as_deref() {
        Some(e) => Ethertype::parse(e)
            .ok_or_else(|| ModelError::invalid(format!("{e} is not in [IPv4, IPv6]")))?,
        None => Ethertype::IPv4,
    };
    let protocol = match req.protocol.as_deref().map(str::to_ascii_lowercase) {
        None => None,
        Some(p) if p.is_empty() || p == "any" => None,
        Some(p) => {
            if protocol_number(&p).is_none() {
                return Err(ModelError::invalid(format!(
                    "Security group rule protocol {p} not supported. Only protocol values [None, ah, dccp, egp, esp, gre, hopopt, icmp, igmp, ipip, ipv6-encap, ipv6-frag, ipv6-icmp, icmpv6, ipv6-nonxt, ipv6-opts, ipv6-route, ospf, pgm, rsvp, sctp, tcp, udp, udplite, vrrp] and integer representations [0 to 255] are supported"
                )));
            }
            Some(p)
        }
    };
    let number = protocol.as_deref().and_then(protocol_number);
    let (min, max) = (req.port_range_min, req.port_range_max);
    match number {
        Some(n) if has_ports(n) => {
            if let Some(port) = [min, max]
                .into_iter()
                .flatten()
                .find(|p| !(1..=65535).contains(p))
            {
                return Err(ModelError::SecurityGroupInvalidPortValue { port });
            }
            // Neutron: a port range names both ends (the same port for one).
            match (min, max) {
                (None, None) => {}
                (Some(lo), Some(hi)) if lo <= hi => {}
                _ => return Err(ModelError::SecurityGroupInvalidPortRange),
            }
        }
        Some(n) if is_icmp(n) => {
            for (value, field, bound) in [(min, "type", "min"), (max, "code", "max")] {
                if let Some(value) = value.filter(|v| *v > 255) {
                    return Err(ModelError::SecurityGroupInvalidIcmpValue {
                        field: field.into(),
                        bound: bound.into(),
                        value,
                    });
                }
            }
            if let (None, Some(code)) = (min, max) {
                return Err(ModelError::SecurityGroupMissingIcmpType { code });
            }
        }
        None if min.is_some() || max.is_some() => {
            return Err(ModelError::SecurityGroupProtocolRequiredWithPorts);
        }
        _ => {
            if min.is_some() || max.is_some() {
                return Err(ModelError::InvalidProtocolForPortRange {
                    protocol: protocol.clone().unwrap_or_default(),
                });
            }
        }
    }
    let remote_ip_prefix = match req.remote_ip_prefix.as_deref() {
        None => None,
        Some(text) => {
            let net = parse_prefix(text)?;
            let v4 = ethertype == Ethertype::IPv4;
            if net.addr().is_ipv4() != v4 {
                return Err(ModelError::SecurityGroupRuleParameterConflict {
                    ethertype: ethertype.as_str().into(),
                    cidr: text.into(),
                });
            }
            Some(net)
        }
    };
    // Neutron's order of checks: the prefix is parsed (and its family
    // checked) before the remotes are counted.
    let remotes = [
        remote_ip_prefix.is_some(),
        req.remote_group_id.is_some(),
        req.remote_address_group_id.is_some(),
    ];
    if remotes.into_iter().filter(|r| *r).count() > 1 {
        return Err(ModelError::SecurityGroupMultipleRemoteEntites);
    }
    Ok(SecurityGroupRule {
        std,
        security_group_id: group_id.to_owned(),
        direction,
        ethertype,
        protocol,
        port_range_min: min,
        port_range_max: max,
        remote_ip_prefix,
        remote_group_id: req.remote_group_id,
        remote_address_group_id: req.remote_address_group_id,
    })
}

/// An IP prefix, or a bare address taken as a host prefix.
pub fn parse_prefix(text: &str) -> Result<IpNet, ModelError> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| ModelError::invalid(format!("'{text}' is not a valid IP subnet")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(f: impl FnOnce(&mut RuleCreate)) -> Result<SecurityGroupRule, ModelError> {
        let mut r = RuleCreate {
            direction: Some("ingress".into()),
            ..Default::default()
        };
        f(&mut r);
        build_rule(Standard::new("r".into(), "p".into(), 0), "g", r)
    }

    #[test]
    fn rejects_what_neutron_rejects() {
        assert!(matches!(
            rule(|r| {
                r.remote_ip_prefix = Some("10.0.0.0/8".into());
                r.remote_group_id = Some("g".into());
            }),
            Err(ModelError::SecurityGroupMultipleRemoteEntites)
        ));
        for (prefix, group) in [(true, false), (false, true)] {
            assert!(matches!(
                rule(|r| {
                    r.remote_ip_prefix = prefix.then(|| "10.0.0.0/8".into());
                    r.remote_group_id = group.then(|| "g".into());
                    r.remote_address_group_id = Some("ag".into());
                }),
                Err(ModelError::SecurityGroupMultipleRemoteEntites)
            ));
        }
        assert!(matches!(
            rule(|r| {
                r.protocol = Some("gre".into());
                r.port_range_min = Some(22);
            }),
            Err(ModelError::InvalidProtocolForPortRange { .. })
        ));
        assert!(matches!(
            rule(|r| r.port_range_min = Some(22)),
            Err(ModelError::SecurityGroupProtocolRequiredWithPorts)
        ));
        assert!(matches!(
            rule(|r| {
                r.protocol = Some("tcp".into());
                r.port_range_max = Some(6);
            }),
            Err(ModelError::SecurityGroupInvalidPortRange)
        ));
        assert!(matches!(
            rule(|r| {
                r.ethertype = Some("IPv4".into());
                r.remote_ip_prefix = Some("fd00::/64".into());
            }),
            Err(ModelError::SecurityGroupRuleParameterConflict { .. })
        ));
        assert!(matches!(
            rule(|r| {
                r.protocol = Some("icmp".into());
                r.port_range_max = Some(0);
            }),
            Err(ModelError::SecurityGroupMissingIcmpType { .. })
        ));
        assert!(
            rule(|r| {
                r.protocol = Some("tcp".into());
                r.port_range_min = Some(80);
                r.port_range_max = Some(22);
            })
            .is_err()
        );
        assert!(rule(|r| r.protocol = Some("bogus".into())).is_err());
        assert!(rule(|r| r.direction = Some("sideways".into())).is_err());
    }

    #[test]
    fn accepts_names_numbers_and_bare_addresses() {
        let r = rule(|r| {
            r.protocol = Some("TCP".into());
            r.port_range_min = Some(22);
            r.port_range_max = Some(22);
            r.remote_ip_prefix = Some("192.0.2.7".into());
        })
        .unwrap();
        assert_eq!(r.protocol.as_deref(), Some("tcp"));
        assert_eq!(r.remote_ip_prefix.unwrap().to_string(), "192.0.2.7/32");
        assert!(rule(|r| r.protocol = Some("132".into())).is_ok());
    }
}
