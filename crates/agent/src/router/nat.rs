//! A router's NAT as nftables text: `table ip vnet` in the router's own
//! namespace (so tenants with overlapping addresses never share a conntrack
//! table or a rule). Floating IPs are one-to-one NAT on the uplink; port
//! forwardings DNAT one (protocol, port) each; the gateway host adds the
//! default SNAT to the gateway address. Pure: the text and its fingerprint,
//! which the table carries as its comment so that a look at the kernel says
//! whether it is current without parsing rules back.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use compiler::protocol::FloatingIpSpec;

/// The table, in each router namespace (family `ip`).
pub const TABLE: &str = "vnet";

/// A whole `table ip vnet`, ready for `nft -f -`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatRuleset {
    /// FNV-1a of the chains, hex: what the table's comment says.
    pub fingerprint: String,
    /// A script that replaces the table whole, in one transaction.
    pub text: String,
}

/// The NAT of a router's uplink `device` on this host: its floating IPs
/// (with their IPv4 address) and, on the gateway host with SNAT enabled,
/// the address everything else leaves with. `None`: nothing to translate.
pub fn ruleset(
    device: &str,
    floating: &[(&FloatingIpSpec, Ipv4Addr)],
    snat: Option<Ipv4Addr>,
) -> Option<NatRuleset> {
    let mut prerouting = Vec::new();
    let mut postrouting = Vec::new();
    for (fip, address) in floating {
        if let Some(IpAddr::V4(fixed)) = fip.fixed_ip {
            prerouting.push(format!(
                "iifname \"{device}\" ip daddr {address} dnat to {fixed}"
            ));
            postrouting.push(format!(
                "oifname \"{device}\" ip saddr {fixed} snat to {address}"
            ));
        }
        for pf in fip.port_forwardings.values() {
            let (IpAddr::V4(internal), Some(protocol)) = (pf.internal_ip, protocol(pf.protocol))
            else {
                continue;
            };
            prerouting.push(format!(
                "iifname \"{device}\" ip daddr {address} {protocol} dport {} dnat to {internal}:{}",
                pf.external_port, pf.internal_port
            ));
        }
    }
    if let Some(address) = snat {
        postrouting.push(format!("oifname \"{device}\" snat to {address}"));
    }
    if prerouting.is_empty() && postrouting.is_empty() {
        return None;
    }
    let mut chains = String::new();
    for (name, hook, priority, rules) in [
        ("prerouting", "prerouting", "dstnat", &prerouting),
        ("postrouting", "postrouting", "srcnat", &postrouting),
    ] {
        let _ = writeln!(chains, "\tchain {name} {{");
        let _ = writeln!(
            chains,
            "\t\ttype nat hook {hook} priority {priority}; policy accept;"
        );
        for rule in rules {
            let _ = writeln!(chains, "\t\t{rule}");
        }
        let _ = writeln!(chains, "\t}}");
    }
    let fingerprint = format!("{:016x}", fnv1a(chains.as_bytes()));
    let text = format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\tcomment \"vnet {fingerprint}\"\n{chains}}}\n"
    );
    Some(NatRuleset { fingerprint, text })
}

/// The fingerprint a listing of the table (`nft list table ip vnet`) carries.
pub fn fingerprint_of(listing: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("comment \"vnet ")?;
        Some(rest.trim_end_matches(['"', ';']).to_owned())
    })
}

/// nftables' name of a protocol a port forwarding may carry.
fn protocol(number: u8) -> Option<&'static str> {
    match number {
        6 => Some("tcp"),
        17 => Some("udp"),
        136 => Some("udplite"),
        132 => Some("sctp"),
        _ => None,
    }
}

pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use compiler::protocol::PortForwardingSpec;

    use super::*;

    fn fip(fixed: Option<&str>, forwardings: &[(u8, u16, &str, u16)]) -> FloatingIpSpec {
        FloatingIpSpec {
            router_id: "r1".into(),
            port_id: "fp".into(),
            address: "203.0.113.10".parse().unwrap(),
            fixed_ip: fixed.map(|f| f.parse().unwrap()),
            port_forwardings: forwardings
                .iter()
                .enumerate()
                .map(|(i, (protocol, external_port, ip, internal_port))| {
                    let spec = PortForwardingSpec {
                        protocol: *protocol,
                        external_port: *external_port,
                        internal_ip: ip.parse().unwrap(),
                        internal_port: *internal_port,
                    };
                    (format!("pf{i}"), spec)
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn floating_ips_forwardings_and_snat_as_nft_text() {
        let one_to_one = fip(Some("10.0.0.5"), &[]);
        let forwarded = fip(
            None,
            &[(6, 2222, "10.0.0.6", 22), (17, 5353, "10.0.0.6", 53)],
        );
        let address = |last| Ipv4Addr::new(203, 0, 113, last);
        let nat = ruleset(
            "qg-gw",
            &[(&one_to_one, address(10)), (&forwarded, address(11))],
            Some(address(2)),
        )
        .unwrap();
        let expected = "\
table ip vnet {}
delete table ip vnet
table ip vnet {
\tcomment \"vnet FP\"
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname \"qg-gw\" ip daddr 203.0.113.10 dnat to 10.0.0.5
\t\tiifname \"qg-gw\" ip daddr 203.0.113.11 tcp dport 2222 dnat to 10.0.0.6:22
\t\tiifname \"qg-gw\" ip daddr 203.0.113.11 udp dport 5353 dnat to 10.0.0.6:53
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname \"qg-gw\" ip saddr 10.0.0.5 snat to 203.0.113.10
\t\toifname \"qg-gw\" snat to 203.0.113.2
\t}
}
"
        .replace("FP", &nat.fingerprint);
        assert_eq!(nat.text, expected);
        // The listing nft prints carries the same fingerprint back.
        let listing = format!(
            "table ip vnet {{\n\tcomment \"vnet {}\"\n\tchain prerouting {{\n",
            nat.fingerprint
        );
        assert_eq!(fingerprint_of(&listing), Some(nat.fingerprint.clone()));
        // Another translation, another fingerprint.
        let other = ruleset("qg-gw", &[(&one_to_one, address(10))], None).unwrap();
        assert_ne!(other.fingerprint, nat.fingerprint);
    }

    #[test]
    fn nothing_to_translate_is_no_table() {
        assert_eq!(ruleset("qg-gw", &[], None), None);
        let unassociated = fip(None, &[]);
        assert_eq!(
            ruleset(
                "qg-gw",
                &[(&unassociated, Ipv4Addr::new(203, 0, 113, 9))],
                None
            ),
            None
        );
    }
}
