//! A router's metering: `table ip vnet_metering` in the router's own
//! namespace, one named counter per label (`l-<label id>`) and one chain
//! per label on the forward hook. Apart from the NAT table so that NAT
//! changes (a floating IP coming or going) never reset the counters; it is
//! replaced whole, like the NAT table, only when its own rules change.
//! Pure: decides the rules ([`super::table`] writes them) and reads the
//! counters back from `nft -j` output.
//!
//! A packet is counted once per label, on the one router where it crosses
//! the uplink between the tenant side and the outside: ingress enters by
//! the uplink and leaves by another device, egress the reverse. (Traffic a
//! non-gateway host sends to the gateway host leaves by its uplink there
//! and enters and leaves the gateway host's uplink: counted once, on the
//! host it came from.) Within a label, excluded rules are evaluated first
//! and stop it, as Neutron's iptables driver does; the first counting rule
//! that matches counts it and stops.

use std::collections::BTreeMap;

use compiler::protocol::{MeteringLabelSpec, MeteringRuleSpec, RuleDirection};
use ipnet::IpNet;

use super::table::{Action, BaseHook, Chain, Match, Rule, Table};

/// The table, in each router namespace (family `ip`).
pub const TABLE: &str = "vnet_metering";

/// A label's counter name.
pub fn counter_name(label_id: &str) -> String {
    format!("l-{label_id}")
}

/// The counters of the labels `metering` on the uplink `device`; `None`
/// without labels.
pub fn ruleset(device: &str, metering: &BTreeMap<String, MeteringLabelSpec>) -> Option<Table> {
    if metering.is_empty() {
        return None;
    }
    let counters = metering.keys().map(|id| counter_name(id)).collect();
    let mut chains = vec![Chain {
        name: "forward".into(),
        hook: Some(BaseHook::FilterForward),
        rules: metering
            .keys()
            .map(|id| Rule {
                matches: vec![],
                action: Action::Jump(format!("label-{id}")),
            })
            .collect(),
    }];
    for (label_id, label) in metering {
        let mut rules = vec![];
        // Excluded first, whatever order the rules came in.
        for excluded in [true, false] {
            for rule in label.rules.values().filter(|r| r.excluded == excluded) {
                let Some(matches) = rule_match(device, rule) else {
                    continue;
                };
                let action = if excluded {
                    Action::Return
                } else {
                    Action::CountAndReturn(counter_name(label_id))
                };
                rules.push(Rule { matches, action });
            }
        }
        chains.push(Chain {
            name: format!("label-{label_id}"),
            hook: None,
            rules,
        });
    }
    Some(Table::new(TABLE, counters, chains))
}

/// What a rule matches; `None` for a rule that can match nothing here (an
/// IPv6 prefix: the uplink carries IPv4 only).
fn rule_match(device: &str, rule: &MeteringRuleSpec) -> Option<Vec<Match>> {
    let v4 = |p: Option<IpNet>| match p {
        Some(IpNet::V4(p)) => Ok(Some(p.trunc())),
        Some(IpNet::V6(_)) => Err(()),
        None => Ok(None),
    };
    let mut source = v4(rule.source_ip_prefix).ok()?;
    let mut destination = v4(rule.destination_ip_prefix).ok()?;
    // Neutron's legacy prefix: the tenant side (`-s` egress, `-d` ingress).
    if let Some(remote) = v4(rule.remote_ip_prefix).ok()? {
        match rule.direction {
            RuleDirection::Egress => source = Some(remote),
            RuleDirection::Ingress => destination = Some(remote),
        }
    }
    let interface = |input, equal| Match::Interface {
        input,
        equal,
        name: device.to_owned(),
    };
    // Ingress enters by the uplink and leaves by another device.
    let ingress = rule.direction == RuleDirection::Ingress;
    let mut matches = vec![interface(ingress, true), interface(!ingress, false)];
    if let Some(prefix) = source {
        matches.push(Match::Prefix {
            source: true,
            prefix,
        });
    }
    if let Some(prefix) = destination {
        matches.push(Match::Prefix {
            source: false,
            prefix,
        });
    }
    Some(matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: RuleDirection, excluded: bool, remote: &str) -> MeteringRuleSpec {
        MeteringRuleSpec {
            direction,
            excluded,
            remote_ip_prefix: Some(remote.parse().unwrap()),
            source_ip_prefix: None,
            destination_ip_prefix: None,
        }
    }

    #[test]
    fn excluded_rules_first_then_counting_rules_ipv6_left_out() {
        let mut label = MeteringLabelSpec::default();
        label.rules.insert(
            "a".into(),
            rule(RuleDirection::Egress, false, "10.0.0.0/24"),
        );
        label
            .rules
            .insert("b".into(), rule(RuleDirection::Egress, true, "10.0.0.7/32"));
        label.rules.insert(
            "c".into(),
            rule(RuleDirection::Ingress, false, "2001:db8::/64"),
        );
        label.rules.insert(
            "d".into(),
            MeteringRuleSpec {
                source_ip_prefix: Some("203.0.113.0/24".parse().unwrap()),
                remote_ip_prefix: None,
                ..rule(RuleDirection::Ingress, false, "0.0.0.0/0")
            },
        );
        let labels = BTreeMap::from([("L".to_owned(), label)]);
        let set = ruleset("qg-x", &labels).unwrap();
        let expected = "\
table ip vnet_metering {}
delete table ip vnet_metering
table ip vnet_metering {
\tcomment \"vnet FP\"
\tcounter l-L {
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tjump label-L
\t}
\tchain label-L {
\t\toifname \"qg-x\" iifname != \"qg-x\" ip saddr 10.0.0.7/32 return
\t\toifname \"qg-x\" iifname != \"qg-x\" ip saddr 10.0.0.0/24 counter name \"l-L\" return
\t\tiifname \"qg-x\" oifname != \"qg-x\" ip saddr 203.0.113.0/24 counter name \"l-L\" return
\t}
}
"
        .replace("FP", &set.fingerprint);
        assert_eq!(set.text(), expected);
        // The fingerprint hashes the counters and chains, as the agents
        // before netlink did: a table they wrote is current for this one.
        let body = &expected[expected.find("\tcounter").unwrap()..expected.len() - 2];
        assert_eq!(
            set.fingerprint,
            format!("{:016x}", crate::nft::ruleset::fnv1a(body.as_bytes()))
        );
        assert_eq!(ruleset("qg-x", &BTreeMap::new()), None);
    }
}
