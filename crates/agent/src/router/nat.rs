//! A router's NAT: `table ip vnet` in the router's own namespace (so
//! tenants with overlapping addresses never share a conntrack table or a
//! rule). Floating IPs are one-to-one NAT on the uplink; port forwardings
//! DNAT one (protocol, port) each; the gateway host adds the default SNAT
//! to the gateway address. Pure: decides the rules; [`super::table`] writes
//! them.

use std::net::{IpAddr, Ipv4Addr};

use compiler::protocol::FloatingIpSpec;

use super::table::{Action, BaseHook, Chain, Match, Rule, Table, protocol_name};

/// The table, in each router namespace (family `ip`).
pub const TABLE: &str = "vnet";

/// The NAT of a router's uplink `device` on this host: its floating IPs
/// (with their IPv4 address) and, on the gateway host with SNAT enabled,
/// the address everything else leaves with. `None`: nothing to translate.
pub fn ruleset(
    device: &str,
    floating: &[(&FloatingIpSpec, Ipv4Addr)],
    snat: Option<Ipv4Addr>,
) -> Option<Table> {
    let interface = |input| Match::Interface {
        input,
        equal: true,
        name: device.to_owned(),
    };
    let mut prerouting = Vec::new();
    let mut postrouting = Vec::new();
    for (fip, address) in floating {
        let address = *address;
        if let Some(IpAddr::V4(fixed)) = fip.fixed_ip {
            prerouting.push(Rule {
                matches: vec![
                    interface(true),
                    Match::Host {
                        source: false,
                        address,
                    },
                ],
                action: Action::Dnat {
                    to: fixed,
                    port: None,
                },
            });
            postrouting.push(Rule {
                matches: vec![
                    interface(false),
                    Match::Host {
                        source: true,
                        address: fixed,
                    },
                ],
                action: Action::Snat { to: address },
            });
        }
        for pf in fip.port_forwardings.values() {
            let IpAddr::V4(internal) = pf.internal_ip else {
                continue;
            };
            if protocol_name(pf.protocol).is_none() {
                continue;
            }
            prerouting.push(Rule {
                matches: vec![
                    interface(true),
                    Match::Host {
                        source: false,
                        address,
                    },
                    Match::Dport {
                        protocol: pf.protocol,
                        port: pf.external_port,
                    },
                ],
                action: Action::Dnat {
                    to: internal,
                    port: Some(pf.internal_port),
                },
            });
        }
    }
    if let Some(address) = snat {
        postrouting.push(Rule {
            matches: vec![interface(false)],
            action: Action::Snat { to: address },
        });
    }
    if prerouting.is_empty() && postrouting.is_empty() {
        return None;
    }
    let chain = |name: &str, hook, rules| Chain {
        name: name.to_owned(),
        hook: Some(hook),
        rules,
    };
    Some(Table::new(
        TABLE,
        vec![],
        vec![
            chain("prerouting", BaseHook::NatPrerouting, prerouting),
            chain("postrouting", BaseHook::NatPostrouting, postrouting),
        ],
    ))
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
        assert_eq!(nat.text(), expected);
        // The fingerprint hashes the chains, as the agents before netlink
        // did: a table they wrote is current for this one.
        let chains = &expected[expected.find("\tchain").unwrap()..expected.len() - 2];
        assert_eq!(
            nat.fingerprint,
            format!("{:016x}", crate::nft::ruleset::fnv1a(chains.as_bytes()))
        );
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
