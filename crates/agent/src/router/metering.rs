//! A router's metering as nftables text: `table ip vnet_metering` in the
//! router's own namespace, one named counter per label (`l-<label id>`) and
//! one chain per label on the forward hook. Apart from the NAT table so that
//! NAT changes (a floating IP coming or going) never reset the counters; it
//! is replaced whole, like the NAT table, only when its own text changes.
//! Pure: the text, its fingerprint (the table's comment), and reading the
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
use std::fmt::Write;

use compiler::protocol::{MeteringLabelSpec, MeteringRuleSpec, RuleDirection};
use ipnet::IpNet;

use super::nat::fnv1a;

/// The table, in each router namespace (family `ip`).
pub const TABLE: &str = "vnet_metering";

/// A label's counter name.
pub fn counter_name(label_id: &str) -> String {
    format!("l-{label_id}")
}

/// A whole `table ip vnet_metering`, ready for `nft -f -`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeteringRuleset {
    /// FNV-1a of the table's body, hex: what the table's comment says.
    pub fingerprint: String,
    pub text: String,
}

/// The counters of the labels `metering` on the uplink `device`; `None`
/// without labels.
pub fn ruleset(
    device: &str,
    metering: &BTreeMap<String, MeteringLabelSpec>,
) -> Option<MeteringRuleset> {
    if metering.is_empty() {
        return None;
    }
    let mut body = String::new();
    for label_id in metering.keys() {
        let _ = writeln!(body, "\tcounter {} {{\n\t}}", counter_name(label_id));
    }
    let _ = writeln!(body, "\tchain forward {{");
    let _ = writeln!(
        body,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    for label_id in metering.keys() {
        let _ = writeln!(body, "\t\tjump label-{label_id}");
    }
    let _ = writeln!(body, "\t}}");
    for (label_id, label) in metering {
        let _ = writeln!(body, "\tchain label-{label_id} {{");
        // Excluded first, whatever order the rules came in.
        for excluded in [true, false] {
            for rule in label.rules.values().filter(|r| r.excluded == excluded) {
                let Some(matches) = rule_match(device, rule) else {
                    continue;
                };
                let verdict = if excluded {
                    "return".to_owned()
                } else {
                    format!("counter name \"{}\" return", counter_name(label_id))
                };
                let _ = writeln!(body, "\t\t{matches} {verdict}");
            }
        }
        let _ = writeln!(body, "\t}}");
    }
    let fingerprint = format!("{:016x}", fnv1a(body.as_bytes()));
    let text = format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\tcomment \"vnet {fingerprint}\"\n{body}}}\n"
    );
    Some(MeteringRuleset { fingerprint, text })
}

/// What a rule matches, as nft expressions; `None` for a rule that can
/// match nothing here (an IPv6 prefix: the uplink carries IPv4 only).
fn rule_match(device: &str, rule: &MeteringRuleSpec) -> Option<String> {
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
    let mut text = match rule.direction {
        RuleDirection::Ingress => format!("iifname \"{device}\" oifname != \"{device}\""),
        RuleDirection::Egress => format!("oifname \"{device}\" iifname != \"{device}\""),
    };
    if let Some(source) = source {
        let _ = write!(text, " ip saddr {source}");
    }
    if let Some(destination) = destination {
        let _ = write!(text, " ip daddr {destination}");
    }
    Some(text)
}

/// The fingerprint a listing of the table carries.
pub fn fingerprint_of(listing: &str) -> Option<String> {
    super::nat::fingerprint_of(listing)
}

/// (packets, bytes) of one label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// The labels' counters in `nft -j list counters table ip vnet_metering`
/// output, by label id.
pub fn counters_of(json: &str) -> BTreeMap<String, Count> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return BTreeMap::new();
    };
    value
        .get("nftables")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let counter = item.get("counter")?;
            let label = counter.get("name")?.as_str()?.strip_prefix("l-")?;
            let count = Count {
                packets: counter.get("packets")?.as_u64()?,
                bytes: counter.get("bytes")?.as_u64()?,
            };
            Some((label.to_owned(), count))
        })
        .collect()
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
        assert_eq!(set.text, expected);
        assert_eq!(ruleset("qg-x", &BTreeMap::new()), None);
    }

    #[test]
    fn counters_read_back_by_label() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "ip", "name": "l-abc", "table": "vnet_metering", "handle": 3, "packets": 4, "bytes": 336}},
            {"counter": {"family": "ip", "name": "other", "table": "vnet_metering", "handle": 4, "packets": 1, "bytes": 1}}]}"#;
        assert_eq!(
            counters_of(json),
            BTreeMap::from([(
                "abc".to_owned(),
                Count {
                    packets: 4,
                    bytes: 336
                }
            )])
        );
        assert!(counters_of("not json").is_empty());
    }
}
