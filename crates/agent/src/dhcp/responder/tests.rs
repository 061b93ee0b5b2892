#![allow(clippy::unwrap_used)]

//! Golden frames in `../testdata/*.hex` were captured once with
//! `tcpdump -w` on the host end of a veth whose other end was in a VM
//! namespace running `busybox udhcpc` (BusyBox v1.35.0, Debian 12) against
//! busybox udhcpd: a DISCOVER, the REQUEST of SELECTING, and the REQUEST of
//! RENEWING (sent through the VM kernel's UDP socket, so its UDP checksum is
//! the partial one checksum offload leaves). Client MAC fa:16:3e:12:34:56,
//! xid 0x0a762b32, offered 10.0.0.5 by server 10.0.0.1.

use super::*;
use compiler::protocol::RouteSpec;

const DISCOVER: &str = include_str!("../testdata/udhcpc_discover.hex");
const REQUEST_SELECTING: &str = include_str!("../testdata/udhcpc_request_selecting.hex");
const REQUEST_RENEWING: &str = include_str!("../testdata/udhcpc_request_renewing.hex");
/// Our OFFER to `DISCOVER` for `lease()`: pins the emitted bytes. Checked once
/// with `tcpdump -vv` (decodes every option, "udp sum ok").
const OFFER: &str = include_str!("../testdata/vnet_offer.hex");

const CLIENT: MacAddr = MacAddr([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]);
const XID: u32 = 0x0a76_2b32;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn lease() -> DhcpLease {
    DhcpLease {
        mac: CLIENT,
        ip: "10.0.0.5".parse().unwrap(),
        prefix_len: 24,
        gateway: Some("10.0.0.1".parse().unwrap()),
        dns_nameservers: vec!["10.0.0.2".parse().unwrap(), "8.8.8.8".parse().unwrap()],
        host_routes: vec![RouteSpec {
            destination: "192.168.10.0/24".parse().unwrap(),
            nexthop: "10.0.0.254".parse().unwrap(),
        }],
        mtu: 1450,
        lease_seconds: 86_400,
        extra_options: vec![],
    }
}

/// A reply frame taken apart, with every layer checked on the way.
#[derive(Debug)]
struct Reply {
    eth_src: MacAddr,
    eth_dst: MacAddr,
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    message_type: DhcpMessageType,
    xid: u32,
    chaddr: MacAddr,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    broadcast: bool,
    dhcp_len: usize,
    /// Every option in order, as (code, data).
    options: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    fn parse(frame: &[u8]) -> Reply {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let ip_repr = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(ip_repr.next_header, IpProtocol::Udp);
        assert_eq!(ip.total_len() as usize, frame.len() - ETHERNET_HEADER_LEN);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let (src, dst) = (ip_repr.src_addr.into(), ip_repr.dst_addr.into());
        assert!(udp.verify_checksum(&src, &dst), "UDP checksum");
        assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
        let dhcp = DhcpPacket::new_checked(udp.payload()).unwrap();
        assert_eq!(dhcp.opcode(), DhcpOpCode::Reply);
        assert_eq!(dhcp.magic_number(), 0x6382_5363);
        let options: Vec<(u8, Vec<u8>)> =
            dhcp.options().map(|o| (o.kind, o.data.to_vec())).collect();
        let message_type = match options.iter().find(|(c, _)| *c == 53) {
            Some((_, t)) if t.len() == 1 => DhcpMessageType::from(t[0]),
            other => panic!("message type option: {other:?}"),
        };
        Reply {
            eth_src: MacAddr(eth.src_addr().0),
            eth_dst: MacAddr(eth.dst_addr().0),
            ip_src: ip_repr.src_addr,
            ip_dst: ip_repr.dst_addr,
            message_type,
            xid: dhcp.transaction_id(),
            chaddr: MacAddr(dhcp.client_hardware_address().0),
            ciaddr: dhcp.client_ip(),
            yiaddr: dhcp.your_ip(),
            siaddr: dhcp.server_ip(),
            broadcast: dhcp.flags().contains(DhcpFlags::BROADCAST),
            dhcp_len: udp.payload().len(),
            options,
        }
    }

    fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d.as_slice())
    }

    fn codes(&self) -> Vec<u8> {
        self.options.iter().map(|(c, _)| *c).collect()
    }
}

fn reply(frame: &[u8], lease: &DhcpLease) -> Reply {
    Reply::parse(&respond(frame, lease).expect("a reply"))
}

/// Rewrite the DHCP part of a captured request (the UDP checksum goes stale,
/// which the responder ignores by design).
fn edit_dhcp(frame: &str, f: impl FnOnce(&mut DhcpPacket<&mut [u8]>)) -> Vec<u8> {
    let mut bytes = hex(frame);
    let start = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;
    let mut dhcp = DhcpPacket::new_checked(&mut bytes[start..]).unwrap();
    f(&mut dhcp);
    bytes
}

/// Set the message type option (53) of a captured request in place.
fn with_message_type(frame: &str, t: DhcpMessageType) -> Vec<u8> {
    let mut bytes = hex(frame);
    let start = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + 240;
    assert_eq!(&bytes[start..start + 2], &[53, 1]);
    bytes[start + 2] = t.into();
    bytes
}

// === golden: what udhcpc really sends ===

#[test]
fn golden_frames_parse_as_udhcpc_sent_them() {
    let discover = hex(DISCOVER);
    let r = parse_request(&discover).unwrap();
    assert_eq!(r.message_type, DhcpMessageType::Discover);
    assert_eq!((r.transaction_id, r.client_mac), (XID, CLIENT));
    assert_eq!(r.client_ip, Ipv4Addr::UNSPECIFIED);
    assert!(!r.broadcast);
    assert_eq!(r.requested_ip, None);
    assert_eq!(r.max_message_size, Some(576));
    assert_eq!(
        r.client_identifier.as_deref(),
        Some(&[1, 0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56][..])
    );

    let selecting = hex(REQUEST_SELECTING);
    let r = parse_request(&selecting).unwrap();
    assert_eq!(r.message_type, DhcpMessageType::Request);
    assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 5)));
    assert_eq!(r.server_identifier, Some(Ipv4Addr::new(10, 0, 0, 1)));

    let renewing = hex(REQUEST_RENEWING);
    let r = parse_request(&renewing).unwrap();
    assert_eq!(r.message_type, DhcpMessageType::Request);
    assert_eq!(r.client_ip, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!((r.requested_ip, r.server_identifier), (None, None));
}

#[test]
fn discover_gets_an_offer_with_every_option() {
    let r = reply(&hex(DISCOVER), &lease());
    assert_eq!(r.message_type, DhcpMessageType::Offer);
    assert_eq!((r.xid, r.chaddr), (XID, CLIENT));
    // L2 unicast to the client, from the fixed server MAC.
    assert_eq!((r.eth_dst, r.eth_src), (CLIENT, SERVER_MAC));
    // No BROADCAST flag: IP unicast to the offered address, from the gateway.
    assert!(!r.broadcast);
    assert_eq!(r.ip_dst, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(r.ip_src, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(r.yiaddr, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(r.ciaddr, Ipv4Addr::UNSPECIFIED);

    assert_eq!(r.option(53), Some(&[2][..]));
    assert_eq!(
        r.option(54),
        Some(&[10, 0, 0, 1][..]),
        "server id = gateway"
    );
    assert_eq!(r.option(1), Some(&[255, 255, 255, 0][..]));
    assert_eq!(r.option(3), Some(&[10, 0, 0, 1][..]));
    assert_eq!(r.option(6), Some(&[10, 0, 0, 2, 8, 8, 8, 8][..]));
    assert_eq!(r.option(26), Some(&1450u16.to_be_bytes()[..]));
    assert_eq!(r.option(51), Some(&86_400u32.to_be_bytes()[..]));
    assert_eq!(r.option(58), Some(&43_200u32.to_be_bytes()[..]));
    assert_eq!(r.option(59), Some(&75_600u32.to_be_bytes()[..]));
    // RFC 3442: the default route via the gateway, then the host route.
    assert_eq!(
        r.option(121),
        Some(&[0, 10, 0, 0, 1, 24, 192, 168, 10, 10, 0, 0, 254][..])
    );
    // RFC 6842: the client identifier comes back.
    assert_eq!(
        r.option(61),
        Some(&[1, 0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56][..])
    );
    // At least BOOTP's 300 bytes, within udhcpc's 576 (with IP and UDP).
    assert!((300..=576 - 28).contains(&r.dhcp_len), "{}", r.dhcp_len);

    // smoltcp's own parser reads the same.
    let frame = respond(&hex(DISCOVER), &lease()).unwrap();
    let dhcp = DhcpPacket::new_checked(&frame[14 + 20 + 8..]).unwrap();
    let repr = DhcpRepr::parse(&dhcp).unwrap();
    assert_eq!(repr.message_type, DhcpMessageType::Offer);
    assert_eq!(repr.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(repr.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(repr.server_identifier, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(
        (
            repr.lease_duration,
            repr.renew_duration,
            repr.rebind_duration
        ),
        (Some(86_400), Some(43_200), Some(75_600))
    );
    assert_eq!(repr.client_identifier, Some(EthernetAddress(CLIENT.0)));
}

#[test]
fn small_replies_are_padded_to_bootp_size() {
    let mut bare = lease();
    bare.gateway = None;
    bare.dns_nameservers.clear();
    bare.host_routes.clear();
    let r = reply(&hex(DISCOVER), &bare);
    assert_eq!(r.dhcp_len, 300);
}

#[test]
fn offer_bytes_are_pinned() {
    let got = respond(&hex(DISCOVER), &lease()).unwrap();
    assert_eq!(got, hex(OFFER), "emitted OFFER changed:\n{}", to_hex(&got));
}

fn to_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect()
}

#[test]
fn selecting_request_for_the_lease_is_acked() {
    let r = reply(&hex(REQUEST_SELECTING), &lease());
    assert_eq!(r.message_type, DhcpMessageType::Ack);
    assert_eq!((r.xid, r.chaddr, r.eth_dst), (XID, CLIENT, CLIENT));
    assert_eq!(r.yiaddr, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(r.ip_dst, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(r.option(51), Some(&86_400u32.to_be_bytes()[..]));
    assert_eq!(r.option(1), Some(&[255, 255, 255, 0][..]));
}

#[test]
fn request_for_another_address_is_naked_and_broadcast() {
    let mut moved = lease();
    moved.ip = "10.0.0.7".parse().unwrap();
    let r = reply(&hex(REQUEST_SELECTING), &moved);
    assert_eq!(r.message_type, DhcpMessageType::Nak);
    assert_eq!(r.eth_dst, CLIENT);
    assert_eq!(r.ip_dst, Ipv4Addr::BROADCAST);
    assert_eq!(
        (r.yiaddr, r.ciaddr),
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
    );
    // A NAK carries no configuration.
    assert_eq!(r.codes(), vec![53, 54, 56, 61]);
}

#[test]
fn selecting_another_server_gets_nothing() {
    let mut other = lease();
    other.gateway = Some("10.0.0.254".parse().unwrap());
    assert_eq!(respond(&hex(REQUEST_SELECTING), &other), None);
}

#[test]
fn renewal_with_offloaded_checksum_is_acked_by_unicast() {
    let r = reply(&hex(REQUEST_RENEWING), &lease());
    assert_eq!(r.message_type, DhcpMessageType::Ack);
    assert_eq!(r.ciaddr, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(r.yiaddr, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!((r.ip_dst, r.eth_dst), (Ipv4Addr::new(10, 0, 0, 5), CLIENT));

    // The port's address changed under the lease: the renewal is refused.
    let mut moved = lease();
    moved.ip = "10.0.0.9".parse().unwrap();
    assert_eq!(
        reply(&hex(REQUEST_RENEWING), &moved).message_type,
        DhcpMessageType::Nak
    );
}

#[test]
fn init_reboot_is_judged_on_the_requested_address() {
    // INIT-REBOOT: option 50 set, no server id, ciaddr zero.
    let frame = edit_dhcp(REQUEST_SELECTING, |d| {
        d.set_client_ip(Ipv4Addr::UNSPECIFIED);
    });
    let mut bytes = frame.clone();
    // Blank option 54 (…, 54, 4, a, b, c, d, …) into pads.
    let at = bytes
        .windows(6)
        .position(|w| w == [54, 4, 10, 0, 0, 1])
        .unwrap();
    bytes[at..at + 6].fill(0);
    assert_eq!(parse_request(&bytes).unwrap().server_identifier, None);
    assert_eq!(reply(&bytes, &lease()).message_type, DhcpMessageType::Ack);
    let mut moved = lease();
    moved.ip = "10.0.0.9".parse().unwrap();
    assert_eq!(reply(&bytes, &moved).message_type, DhcpMessageType::Nak);
}

#[test]
fn broadcast_flag_gets_an_ip_broadcast() {
    let frame = edit_dhcp(DISCOVER, |d| d.set_flags(DhcpFlags::BROADCAST));
    let r = reply(&frame, &lease());
    assert!(r.broadcast, "flags are copied");
    assert_eq!(r.ip_dst, Ipv4Addr::BROADCAST);
    assert_eq!(r.eth_dst, CLIENT, "still L2 unicast to chaddr");
}

#[test]
fn inform_gets_options_but_no_lease() {
    let frame = with_message_type(REQUEST_RENEWING, DhcpMessageType::Inform);
    let r = reply(&frame, &lease());
    assert_eq!(r.message_type, DhcpMessageType::Ack);
    assert_eq!(r.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.ciaddr, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(r.ip_dst, Ipv4Addr::new(10, 0, 0, 5));
    for absent in [51, 58, 59] {
        assert_eq!(r.option(absent), None, "option {absent}");
    }
    assert_eq!(r.option(1), Some(&[255, 255, 255, 0][..]));
    assert_eq!(r.option(26), Some(&1450u16.to_be_bytes()[..]));
}

#[test]
fn release_decline_and_replies_get_nothing() {
    for t in [
        DhcpMessageType::Release,
        DhcpMessageType::Decline,
        DhcpMessageType::Offer,
        DhcpMessageType::Ack,
        DhcpMessageType::Nak,
        DhcpMessageType::Unknown(99),
    ] {
        let frame = with_message_type(REQUEST_RENEWING, t);
        assert_eq!(respond(&frame, &lease()), None, "{t:?}");
    }
    // Our own OFFER, seen again (it is a BOOTREPLY to port 68): nothing.
    let offer = respond(&hex(DISCOVER), &lease()).unwrap();
    assert_eq!(respond(&offer, &lease()), None);
}

#[test]
fn another_mac_gets_nothing() {
    let mut other = lease();
    other.mac = MacAddr([0xfa, 0x16, 0x3e, 0, 0, 1]);
    for frame in [DISCOVER, REQUEST_SELECTING, REQUEST_RENEWING] {
        assert_eq!(respond(&hex(frame), &other), None);
    }
}

#[test]
fn relayed_requests_get_nothing() {
    let frame = edit_dhcp(DISCOVER, |d| {
        d.set_relay_agent_ip(Ipv4Addr::new(10, 9, 9, 9))
    });
    assert_eq!(respond(&frame, &lease()), None);
}

#[test]
fn ipv6_lease_gets_nothing() {
    let mut v6 = lease();
    v6.ip = "2001:db8::5".parse().unwrap();
    v6.prefix_len = 64;
    assert_eq!(respond(&hex(DISCOVER), &v6), None);
}

#[test]
fn without_gateway_the_fallback_identity_and_no_default_route() {
    let mut no_gw = lease();
    no_gw.gateway = None;
    let r = reply(&hex(DISCOVER), &no_gw);
    assert_eq!(r.ip_src, FALLBACK_SERVER_ID);
    assert_eq!(r.option(54), Some(&FALLBACK_SERVER_ID.octets()[..]));
    assert_eq!(r.option(3), None);
    assert_eq!(r.option(121), Some(&[24, 192, 168, 10, 10, 0, 0, 254][..]));

    // SELECTING with the fallback identity is ours.
    let frame = edit_dhcp(REQUEST_SELECTING, |_| {});
    let mut bytes = frame;
    let at = bytes
        .windows(6)
        .position(|w| w == [54, 4, 10, 0, 0, 1])
        .unwrap();
    bytes[at + 2..at + 6].copy_from_slice(&FALLBACK_SERVER_ID.octets());
    assert_eq!(reply(&bytes, &no_gw).message_type, DhcpMessageType::Ack);

    // Without host routes there is no option 121, nor 3, nor DNS if none.
    no_gw.host_routes.clear();
    no_gw.dns_nameservers.clear();
    let r = reply(&hex(DISCOVER), &no_gw);
    assert_eq!(r.codes(), vec![53, 54, 1, 51, 58, 59, 26, 61]);
}

#[test]
fn explicit_default_route_is_not_doubled() {
    let mut l = lease();
    l.host_routes = vec![
        RouteSpec {
            destination: "0.0.0.0/0".parse().unwrap(),
            nexthop: "10.0.0.253".parse().unwrap(),
        },
        // Host bits are cleared; the /0..=/32 widths take 0..=4 octets.
        RouteSpec {
            destination: "172.16.5.77/12".parse().unwrap(),
            nexthop: "10.0.0.254".parse().unwrap(),
        },
        RouteSpec {
            destination: "203.0.113.9/32".parse().unwrap(),
            nexthop: "10.0.0.254".parse().unwrap(),
        },
        // IPv6 routes are not for DHCPv4.
        RouteSpec {
            destination: "2001:db8::/32".parse().unwrap(),
            nexthop: "fe80::1".parse().unwrap(),
        },
    ];
    let r = reply(&hex(DISCOVER), &l);
    assert_eq!(
        r.option(121),
        Some(
            &[
                0, 10, 0, 0, 253, //
                12, 172, 16, 10, 0, 0, 254, //
                32, 203, 0, 113, 9, 10, 0, 0, 254,
            ][..]
        )
    );
}

#[test]
fn many_routes_fit_the_client_limit_and_split_long_options() {
    let mut l = lease();
    l.host_routes = (0..100u8)
        .map(|i| RouteSpec {
            destination: format!("10.{i}.0.0/16").parse().unwrap(),
            nexthop: "10.0.0.254".parse().unwrap(),
        })
        .collect();
    // udhcpc says 576: the whole IP datagram stays within it.
    let frame = hex(DISCOVER);
    let r = reply(&frame, &l);
    assert!(r.dhcp_len + 28 <= 576, "{}", r.dhcp_len);
    let routes: Vec<u8> = r
        .options
        .iter()
        .filter(|(c, _)| *c == 121)
        .flat_map(|(_, d)| d.clone())
        .collect();
    // Default route first, then whole 7-byte /16 routes in order.
    assert_eq!(&routes[..5], &[0, 10, 0, 0, 1]);
    assert_eq!((routes.len() - 5) % 7, 0);
    assert_eq!(&routes[5..12], &[16, 10, 0, 10, 0, 0, 254]);

    // A client that takes bigger messages gets every route, split into
    // option instances of at most 255 bytes at route boundaries (RFC 3396).
    let big = edit_dhcp(DISCOVER, |_| {});
    let mut big = big;
    let at = big.windows(4).position(|w| w == [57, 2, 2, 64]).unwrap();
    big[at + 2..at + 4].copy_from_slice(&1500u16.to_be_bytes());
    let r = reply(&big, &l);
    let chunks: Vec<&Vec<u8>> = r
        .options
        .iter()
        .filter(|(c, _)| *c == 121)
        .map(|(_, d)| d)
        .collect();
    assert!(chunks.len() >= 2);
    assert!(chunks.iter().all(|c| c.len() <= 255));
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    assert_eq!(total, 5 + 100 * 7);
    assert!(r.dhcp_len + 28 <= 1450);

    // A client that claims to take more than the link carries is held to
    // the link's MTU.
    let mut huge = hex(DISCOVER);
    huge[at + 2..at + 4].copy_from_slice(&9000u16.to_be_bytes());
    l.host_routes.extend(l.host_routes.clone());
    let r = reply(&huge, &l);
    assert!(r.dhcp_len + 28 <= 1450, "{}", r.dhcp_len);
}

#[test]
fn more_than_three_dns_servers_all_go_out() {
    let mut l = lease();
    l.dns_nameservers = (1..=5)
        .map(|i| format!("10.0.0.{i}").parse().unwrap())
        .collect();
    let r = reply(&hex(DISCOVER), &l);
    assert_eq!(r.option(6).unwrap().len(), 20);
}

fn with_extra(options: &[(&str, &str)]) -> DhcpLease {
    let mut l = lease();
    l.extra_options = options
        .iter()
        .map(|(name, value)| compiler::protocol::DhcpOptionSpec {
            name: (*name).into(),
            value: (*value).into(),
        })
        .collect();
    l
}

#[test]
fn a_ports_own_options_are_read_as_dnsmasq_reads_them() {
    let opt = |name: &str, value: &str| extra_option(name, value);
    let o = |code: u8, body: &[u8]| Some(Extra::Option(code, body.to_vec()));
    assert_eq!(opt("bootfile-name", "pxelinux.0"), o(67, b"pxelinux.0"));
    assert_eq!(
        opt("option:tftp-server", "tftp.example"),
        o(66, b"tftp.example")
    );
    assert_eq!(
        opt("dns-server", "10.1.1.1, 10.1.1.2"),
        o(6, &[10, 1, 1, 1, 10, 1, 1, 2])
    );
    assert_eq!(opt("26", "9000"), o(26, &9000u16.to_be_bytes()));
    assert_eq!(opt("mtu", "9000"), o(26, &9000u16.to_be_bytes()));
    assert_eq!(
        opt("domain-search", "a.example,b"),
        o(119, b"\x01a\x07example\x00\x01b\x00")
    );
    // A number dnsmasq has no name for: addresses if they are, else text.
    assert_eq!(opt("150", "10.0.0.9"), o(150, &[10, 0, 0, 9]));
    assert_eq!(opt("224", "10.0.0.9"), o(224, &[10, 0, 0, 9]));
    assert_eq!(
        opt("252", "http://wpad/wpad.dat"),
        o(252, b"http://wpad/wpad.dat")
    );
    assert_eq!(
        opt("server-ip-address", "10.0.0.9"),
        Some(Extra::NextServer("10.0.0.9".parse().unwrap()))
    );
    // The lease's own, unknown names, and values not of the option's kind.
    for (name, value) in [
        ("router", "10.0.0.99"),
        ("3", "10.0.0.99"),
        ("1", "255.255.255.0"),
        ("51", "60"),
        ("121", "0.0.0.0/0,10.0.0.1"),
        ("no-such-option", "x"),
        ("dns-server", "not-an-address"),
        ("mtu", "70000"),
        ("domain-search", "bad..name"),
        ("bootfile-name", ""),
        ("256", "x"),
    ] {
        assert_eq!(opt(name, value), None, "{name}={value}");
    }
    assert_eq!(
        opt("hostname", &"x".repeat(256)),
        None,
        "longer than one option"
    );
}

#[test]
fn a_ports_own_options_go_out_and_replace_the_servers() {
    let l = with_extra(&[
        ("bootfile-name", "pxelinux.0"),
        ("server-ip-address", "10.0.0.9"),
        ("dns-server", "10.9.9.9"),
        ("router", "10.0.0.99"),
    ]);
    let offer = reply(&hex(DISCOVER), &l);
    assert_eq!(offer.option(67), Some(&b"pxelinux.0"[..]));
    assert_eq!(offer.siaddr, "10.0.0.9".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        offer.option(6),
        Some(&[10, 9, 9, 9][..]),
        "in place of the subnet's"
    );
    assert_eq!(offer.codes().iter().filter(|c| **c == 6).count(), 1);
    assert_eq!(
        offer.option(3),
        Some(&[10, 0, 0, 1][..]),
        "the router is the server's"
    );
    // Without them: no siaddr, the subnet's DNS servers.
    let plain = reply(&hex(DISCOVER), &lease());
    assert_eq!(plain.siaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(plain.option(6).unwrap().len(), 8);
    // A NAK carries none of them.
    let mut moved = l;
    moved.ip = "10.0.0.7".parse().unwrap();
    let nak = reply(&hex(REQUEST_SELECTING), &moved);
    assert_eq!(nak.message_type, DhcpMessageType::Nak);
    assert_eq!(nak.codes(), vec![53, 54, 56, 61]);
    assert_eq!(nak.siaddr, Ipv4Addr::UNSPECIFIED);
}

#[test]
fn a_ports_own_options_never_push_the_reply_past_the_clients_limit() {
    let long: Vec<(String, String)> = (0..8)
        .map(|i| (format!("{}", 224 + i), "x".repeat(200)))
        .collect();
    let named: Vec<(&str, &str)> = long.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let r = reply(&hex(DISCOVER), &with_extra(&named));
    // udhcpc asks for no more than 576 bytes: the IP datagram stays within.
    assert!(r.dhcp_len + 28 <= 576, "{}", r.dhcp_len);
    assert!(r.option(224).is_some(), "the first fits");
}

// === malformed input: never a panic, never a reply ===

#[test]
fn not_dhcp_gets_nothing() {
    let discover = hex(DISCOVER);
    // Not IPv4 (ARP ethertype).
    let mut arp = discover.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(respond(&arp, &lease()), None);
    // Not UDP (protocol changed: header checksum then fails as well).
    let mut tcp = discover.clone();
    tcp[23] = 6;
    assert_eq!(respond(&tcp, &lease()), None);
    // Bad IPv4 header checksum.
    let mut bad = discover.clone();
    bad[24] ^= 0xff;
    assert_eq!(respond(&bad, &lease()), None);
    // To port 68 (a client port), not 67.
    let mut to_client = discover.clone();
    to_client[36..38].copy_from_slice(&68u16.to_be_bytes());
    assert_eq!(respond(&to_client, &lease()), None);
    // A fragment (more-fragments flag; header checksum fixed up).
    let mut frag = discover.clone();
    frag[20] |= 0x20;
    let mut ip = Ipv4Packet::new_unchecked(&mut frag[14..]);
    ip.fill_checksum();
    assert_eq!(respond(&frag, &lease()), None);
    // Wrong magic cookie.
    let cookie = 14 + 20 + 8 + 236;
    let mut magic = discover.clone();
    magic[cookie] = 0;
    assert_eq!(respond(&magic, &lease()), None);
    // No message type option: plain BOOTP.
    let mut bootp = discover.clone();
    bootp[cookie + 4] = 0;
    assert_eq!(parse_request(&bootp).map(|r| r.message_type), None);
    // Hardware length other than 6.
    let mut hlen = discover;
    hlen[14 + 20 + 8 + 2] = 16;
    assert_eq!(respond(&hlen, &lease()), None);
}

#[test]
fn every_truncation_is_harmless() {
    for golden in [DISCOVER, REQUEST_SELECTING, REQUEST_RENEWING] {
        let frame = hex(golden);
        for len in 0..frame.len() {
            // The IP total length then exceeds the frame: always dropped.
            assert_eq!(respond(&frame[..len], &lease()), None, "len {len}");
        }
    }
}

#[test]
fn every_single_byte_corruption_is_harmless() {
    for golden in [DISCOVER, REQUEST_SELECTING, REQUEST_RENEWING] {
        let frame = hex(golden);
        for at in 0..frame.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut f = frame.clone();
                f[at] = value;
                if let Some(out) = respond(&f, &lease()) {
                    // Whatever is answered is well formed.
                    let r = Reply::parse(&out);
                    assert_eq!(r.chaddr, CLIENT);
                }
            }
        }
    }
}

#[test]
fn random_garbage_is_harmless() {
    // xorshift64: deterministic, no dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let headers = hex(DISCOVER);
    for _ in 0..20_000 {
        let len = (next() % 700) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half keep real headers so the garbage reaches the DHCP parser.
        if next() % 2 == 0 {
            let keep = f.len().min(14 + 20 + 8 + 240);
            f[..keep].copy_from_slice(&headers[..keep]);
        }
        if let Some(out) = respond(&f, &lease()) {
            Reply::parse(&out);
        }
    }
}

#[test]
fn options_that_lie_about_their_length_are_harmless() {
    let frame = hex(DISCOVER);
    let start = 14 + 20 + 8 + 240;
    for len_byte in [0u8, 1, 3, 5, 200, 255] {
        for at in (start..frame.len()).step_by(3) {
            let mut f = frame.clone();
            if at + 1 < f.len() {
                f[at] = 61;
                f[at + 1] = len_byte;
            }
            let _ = respond(&f, &lease());
        }
    }
}
