//! Router advertisements for one local port: which ones its network's IPv6
//! subnets call for (Neutron's `ipv6_ra_mode`), as whole Ethernet frames, and
//! whether a received frame is a router solicitation to answer.
//!
//! Pure: no sockets, no clock. It never advertises a subnet without an
//! `ipv6_ra_mode` (an external router does, or nothing), and it knows nothing
//! of other hosts: every frame is written on the port's own device only.
//!
//! What the frames say, as Neutron's radvd configuration does:
//! - `slaac` and `dhcpv6-stateless` prefixes are on-link and autonomous,
//!   `dhcpv6-stateful` ones on-link only; the managed flag is set when a
//!   subnet is stateful, the other-configuration flag when one is stateless;
//! - the source is the link-local address of the router interface holding the
//!   subnet's gateway (the VM's default router), with a router lifetime of
//!   three maximum intervals; a subnet with no router interface is advertised
//!   from [`SERVER_MAC`]'s link-local address with lifetime 0 (no default
//!   route), so one port may get one advertisement per router;
//! - the network's MTU, and the subnets' IPv6 DNS servers as RDNSS.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::Duration;

use compiler::protocol::HostState;
use ipnet::{IpNet, Ipv6Net};
use model::{Ipv6Mode, MacAddr};

use super::responder::SERVER_MAC;

/// Neutron's `min_rtr_adv_interval` and `max_rtr_adv_interval` (radvd's
/// `MinRtrAdvInterval`/`MaxRtrAdvInterval` in its template).
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
pub const MAX_INTERVAL: Duration = Duration::from_secs(100);

/// radvd's defaults for what Neutron leaves unset: `AdvDefaultLifetime` (3 ×
/// max interval), `AdvValidLifetime`, `AdvPreferredLifetime` and
/// `AdvRDNSSLifetime` (2 × max interval), in seconds.
const ROUTER_LIFETIME: u16 = 300;
const VALID_LIFETIME: u32 = 86_400;
const PREFERRED_LIFETIME: u32 = 14_400;
const RDNSS_LIFETIME: u32 = 200;

const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ETH_LEN: usize = 14;
const IPV6_LEN: usize = 40;

/// One advertisement: from one router (or from no router), for one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Ethernet source; the IPv6 source is its EUI-64 link-local address.
    pub source_mac: MacAddr,
    /// 0: not a default router.
    pub router_lifetime: u16,
    pub managed: bool,
    pub other_config: bool,
    pub mtu: u32,
    /// (prefix, autonomous).
    pub prefixes: Vec<(Ipv6Net, bool)>,
    pub dns_servers: Vec<Ipv6Addr>,
}

/// The advertisements a local port gets, one per source; empty when its
/// network has no subnet with an `ipv6_ra_mode` (or the port is not local).
pub fn port_adverts(state: &HostState, network_id: &str, port_id: &str) -> Vec<Advert> {
    let Some(net) = state.networks.get(network_id) else {
        return Vec::new();
    };
    if !net.local_ports.contains_key(port_id) {
        return Vec::new();
    }
    let mut by_source: BTreeMap<Option<MacAddr>, Advert> = BTreeMap::new();
    for subnet in net.subnets.values() {
        let (IpNet::V6(cidr), Some(mode)) = (subnet.cidr, subnet.ipv6_ra_mode) else {
            continue;
        };
        let router_mac = state
            .routers
            .values()
            .flat_map(|r| r.interfaces.values())
            .find(|i| {
                i.network_id == network_id
                    && i.addresses.iter().any(|a| subnet.cidr.contains(&a.addr()))
            })
            .map(|i| i.mac);
        let advert = by_source.entry(router_mac).or_insert_with(|| Advert {
            source_mac: router_mac.unwrap_or(SERVER_MAC),
            router_lifetime: if router_mac.is_some() {
                ROUTER_LIFETIME
            } else {
                0
            },
            managed: false,
            other_config: false,
            mtu: net.mtu,
            prefixes: Vec::new(),
            dns_servers: Vec::new(),
        });
        advert.managed |= mode == Ipv6Mode::Dhcpv6Stateful;
        advert.other_config |= mode == Ipv6Mode::Dhcpv6Stateless;
        advert
            .prefixes
            .push((cidr.trunc(), mode != Ipv6Mode::Dhcpv6Stateful));
        for dns in &subnet.dns_nameservers {
            if let std::net::IpAddr::V6(dns) = dns
                && !advert.dns_servers.contains(dns)
            {
                advert.dns_servers.push(*dns);
            }
        }
    }
    by_source.into_values().collect()
}

/// Is `frame` a router solicitation (ICMPv6 133, hop limit 255, as RFC 4861
/// §6.1.1 requires)? Extension headers are not followed: no host puts any
/// before a solicitation.
pub fn is_router_solicitation(frame: &[u8]) -> bool {
    let field = |at: usize| frame.get(at).copied();
    frame.len() >= ETH_LEN + IPV6_LEN + 8
        && frame[12..14] == ETHERTYPE_IPV6.to_be_bytes()
        && field(ETH_LEN).map(|b| b >> 4) == Some(6)
        && field(ETH_LEN + 6) == Some(ICMPV6)
        && field(ETH_LEN + 7) == Some(255)
        && field(ETH_LEN + IPV6_LEN) == Some(ROUTER_SOLICITATION)
        && field(ETH_LEN + IPV6_LEN + 1) == Some(0)
}

/// The advertisement as one Ethernet frame to the all-nodes address (written
/// on the port's device, so only its VM receives it).
pub fn frame(advert: &Advert) -> Vec<u8> {
    let source = advert.source_mac.ipv6_link_local();
    let mut icmp = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, 64];
    let flags = (u8::from(advert.managed) << 7) | (u8::from(advert.other_config) << 6);
    icmp.push(flags);
    icmp.extend_from_slice(&advert.router_lifetime.to_be_bytes());
    icmp.extend_from_slice(&[0; 8]); // reachable time, retransmission timer: unspecified
    // Source link-layer address: the VM needs no solicitation to reach us.
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&advert.source_mac.0);
    icmp.extend_from_slice(&[5, 1, 0, 0]);
    icmp.extend_from_slice(&advert.mtu.to_be_bytes());
    for (prefix, autonomous) in &advert.prefixes {
        icmp.extend_from_slice(&[3, 4, prefix.prefix_len()]);
        icmp.push(0x80 | (u8::from(*autonomous) << 6));
        icmp.extend_from_slice(&VALID_LIFETIME.to_be_bytes());
        icmp.extend_from_slice(&PREFERRED_LIFETIME.to_be_bytes());
        icmp.extend_from_slice(&[0; 4]);
        icmp.extend_from_slice(&prefix.network().octets());
    }
    if !advert.dns_servers.is_empty() {
        // Length in units of 8 octets: 1 for the header, 2 per address
        // (at most 5 servers per subnet, so it fits).
        let len = 1 + 2 * advert.dns_servers.len();
        icmp.extend_from_slice(&[25, u8::try_from(len).unwrap_or(u8::MAX), 0, 0]);
        icmp.extend_from_slice(&RDNSS_LIFETIME.to_be_bytes());
        for dns in &advert.dns_servers {
            icmp.extend_from_slice(&dns.octets());
        }
    }
    let checksum = icmpv6_checksum(source, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

    let mut frame = Vec::with_capacity(ETH_LEN + IPV6_LEN + icmp.len());
    frame.extend_from_slice(&ALL_NODES_MAC);
    frame.extend_from_slice(&advert.source_mac.0);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    // An advertisement is far below 64 KiB.
    frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[ICMPV6, 255]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&ALL_NODES.octets());
    frame.extend_from_slice(&icmp);
    frame
}

/// The internet checksum over the IPv6 pseudo-header and `payload`.
pub(super) fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, payload: &[u8]) -> u16 {
    upper_layer_checksum(source, destination, ICMPV6, payload)
}

/// RFC 8200 §8.1: the pseudo-header (addresses, upper-layer length, next
/// header) then the payload, with its checksum field zero.
pub(super) fn upper_layer_checksum(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    next_header: u8,
    payload: &[u8],
) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = match pair {
                [a, b] => u16::from_be_bytes([*a, *b]),
                [a] => u16::from_be_bytes([*a, 0]),
                _ => 0,
            };
            sum += u64::from(word);
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(payload.len() as u32).to_be_bytes());
    add(&[0, 0, 0, next_header]);
    add(payload);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compiler::protocol::{
        LocalPortSpec, NetworkSpec, RouterInterfaceSpec, RouterSpec, SubnetSpec,
    };

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn subnet(cidr: &str, ra: Option<Ipv6Mode>, dns: &[&str]) -> SubnetSpec {
        SubnetSpec {
            cidr: cidr.parse().unwrap(),
            gateway_ip: None,
            dns_nameservers: dns.iter().map(|d| d.parse().unwrap()).collect(),
            host_routes: vec![],
            enable_dhcp: true,
            ipv6_ra_mode: ra,
            ipv6_address_mode: ra,
        }
    }

    fn state(subnets: Vec<(&str, SubnetSpec)>, router_on: Option<&str>) -> HostState {
        let mut s = HostState::default();
        s.networks.insert(
            "n".into(),
            NetworkSpec {
                vni: 7,
                mtu: 1450,
                physical_network: None,
                subnets: subnets
                    .into_iter()
                    .map(|(id, s)| (id.to_owned(), s))
                    .collect(),
                local_ports: [(
                    "p".to_owned(),
                    LocalPortSpec {
                        mac: mac("fa:16:3e:00:00:01"),
                        fixed_ips: vec![],
                        device: "tapp".into(),
                        admin_state_up: true,
                        dhcpv4_options: vec![],
                        dhcpv6_options: vec![],
                    },
                )]
                .into(),
                remote_ports: Default::default(),
            },
        );
        if let Some(address) = router_on {
            s.routers.insert(
                "r".into(),
                RouterSpec {
                    interfaces: [(
                        "ri".to_owned(),
                        RouterInterfaceSpec {
                            network_id: "n".into(),
                            mac: mac("fa:16:3e:aa:bb:cc"),
                            addresses: vec![address.parse().unwrap()],
                        },
                    )]
                    .into(),
                    ..Default::default()
                },
            );
        }
        s
    }

    #[test]
    fn link_local_is_the_kernels_eui64() {
        assert_eq!(
            mac("fa:16:3e:aa:bb:cc").ipv6_link_local(),
            "fe80::f816:3eff:feaa:bbcc".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn modes_give_neutrons_flags_and_a_router_only_with_an_interface() {
        let s = state(
            vec![
                (
                    "a",
                    subnet("fd00:1::/64", Some(Ipv6Mode::Slaac), &["fd00:1::53"]),
                ),
                (
                    "b",
                    subnet("fd00:2::/64", Some(Ipv6Mode::Dhcpv6Stateful), &[]),
                ),
                (
                    "c",
                    subnet("fd00:3::/64", Some(Ipv6Mode::Dhcpv6Stateless), &[]),
                ),
                ("d", subnet("fd00:4::/64", None, &[])),
                ("e", subnet("10.0.0.0/24", None, &["10.0.0.53"])),
            ],
            Some("fd00:1::1/64"),
        );
        let adverts = port_adverts(&s, "n", "p");
        assert_eq!(adverts.len(), 2, "{adverts:?}");
        let routed = adverts
            .iter()
            .find(|a| a.router_lifetime > 0)
            .expect("one from the router");
        assert_eq!(routed.source_mac, mac("fa:16:3e:aa:bb:cc"));
        assert_eq!(
            routed.prefixes,
            vec![("fd00:1::/64".parse().unwrap(), true)]
        );
        assert_eq!(
            routed.dns_servers,
            vec!["fd00:1::53".parse::<Ipv6Addr>().unwrap()]
        );
        assert!(!routed.managed && !routed.other_config);
        let unrouted = adverts.iter().find(|a| a.router_lifetime == 0).unwrap();
        assert_eq!(unrouted.source_mac, SERVER_MAC);
        assert!(unrouted.managed && unrouted.other_config);
        assert_eq!(
            unrouted.prefixes,
            vec![
                ("fd00:2::/64".parse().unwrap(), false),
                ("fd00:3::/64".parse().unwrap(), true)
            ]
        );
        assert!(port_adverts(&s, "n", "other").is_empty());
        let external = state(vec![("d", subnet("fd00:4::/64", None, &[]))], None);
        assert!(port_adverts(&external, "n", "p").is_empty());
    }

    /// Golden bytes, checked field by field against RFC 4861 §4.2 and RFC
    /// 8106 §5.1 (and by `tcpdump -vv`, which decodes it without complaint
    /// and verifies its checksum).
    #[test]
    fn advertisement_frame_golden() {
        let advert = Advert {
            source_mac: mac("fa:16:3e:aa:bb:cc"),
            router_lifetime: 300,
            managed: false,
            other_config: true,
            mtu: 1450,
            prefixes: vec![("fd00:1::/64".parse().unwrap(), true)],
            dns_servers: vec!["fd00:1::53".parse().unwrap()],
        };
        let frame = frame(&advert);
        assert_eq!(
            hex(&frame),
            include_str!("testdata/vnet_router_advert.hex").trim()
        );
        // The checksum verifies: summing the pseudo-header and the message
        // with its checksum in place gives zero.
        let source = advert.source_mac.ipv6_link_local();
        assert_eq!(icmpv6_checksum(source, ALL_NODES, &frame[54..]), 0);
    }

    #[test]
    fn solicitations_are_recognised_and_nothing_else() {
        // A router solicitation as Linux sends it (from a link-local address,
        // with the source link-layer option).
        let rs = include_str!("testdata/linux_router_solicit.hex").trim();
        let rs: Vec<u8> = (0..rs.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&rs[i..i + 2], 16).unwrap())
            .collect();
        assert!(is_router_solicitation(&rs));
        let mut low_hop = rs.clone();
        low_hop[ETH_LEN + 7] = 64;
        assert!(!is_router_solicitation(&low_hop));
        assert!(!is_router_solicitation(&rs[..50]));
        assert!(!is_router_solicitation(&frame(&Advert {
            source_mac: SERVER_MAC,
            router_lifetime: 0,
            managed: false,
            other_config: false,
            mtu: 1500,
            prefixes: vec![],
            dns_servers: vec![],
        })));
    }
}
