//! The DHCPv4 responder: one received Ethernet frame and the lease of the
//! port whose device it arrived on in, the reply frame (or nothing) out.
//!
//! Pure: no sockets, no clock, no state. Every byte is parsed and emitted with
//! `smoltcp::wire` (Ethernet, IPv4, UDP, DHCP), following smoltcp's contract:
//! untrusted input only goes through `new_checked`, so no input panics.
//!
//! What it answers (RFC 2131 §4.3, relay agents aside):
//! - DISCOVER → OFFER of the lease's address;
//! - REQUEST → ACK if the address asked for (requested-IP option, or `ciaddr`
//!   when renewing) is the lease's, else NAK; a REQUEST naming another server
//!   (SELECTING with a foreign server identifier) gets nothing;
//! - INFORM → ACK with the options but no address and no lease time;
//! - DECLINE, RELEASE, anything not a DHCP request from a client, anything
//!   relayed (`giaddr` set: nothing relays on a port's own device), and any
//!   client hardware address other than the lease's → nothing.
//!
//! # Server identity
//! The server identifier (option 54) and the reply's source IP are the
//! subnet's gateway IP, the same on every host. Why:
//! - a renewing client unicasts to the server identifier; the gateway is on
//!   the client's link (and already in its ARP cache), so the renewal leaves
//!   the VM through its own device, where the agent sees it whatever MAC or IP
//!   it is addressed to (the socket reads the device, not an address);
//! - the same identity on every host means a VM that moves keeps renewing with
//!   "the same server", and no address of the subnet is spent on DHCP (OVN does
//!   the same for its native DHCP);
//! - without a gateway, [`FALLBACK_SERVER_ID`] (link-local, never a port's
//!   address, as GCE's DHCP server uses) stands in; a client that cannot route
//!   to it renews by broadcast at T2 (rebinding), which is answered as well.
//!
//! # The port's own options
//! A port's `extra_dhcp_opts` of `ip_version` 4 are read as dnsmasq reads
//! them (Neutron hands them to dnsmasq): by name or number, with or without
//! `option:`, values as text, addresses, numbers or domain lists by the
//! option's kind ([`extra_option`]). One replaces the server's own option of
//! its code; `server-ip-address` is the `siaddr` a PXE client boots from.
//! The options that make the lease itself (mask, router, lease times,
//! message type, server identifier, routes) stay the server's, and an option
//! the server cannot read is left out, never guessed.
//!
//! Replies come from [`SERVER_MAC`], a fixed locally administered address; it
//! never enters a bridge's FDB because replies are written straight onto the
//! port's device, never through the bridge.

use std::net::{IpAddr, Ipv4Addr};

use compiler::protocol::DhcpLease;
use ipnet::Ipv4Net;
use model::MacAddr;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpHardware, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpFlags, DhcpMessageType, DhcpOpCode,
    DhcpOption, DhcpPacket, DhcpRepr, ETHERNET_HEADER_LEN, EthernetAddress, EthernetFrame,
    EthernetProtocol, EthernetRepr, IPV4_HEADER_LEN, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    UDP_HEADER_LEN, UdpPacket, UdpRepr,
};

/// Source MAC of every reply: `02` (locally administered, unicast) then
/// "vnet" in ASCII.
pub const SERVER_MAC: MacAddr = MacAddr([0x02, 0x76, 0x6e, 0x65, 0x74, 0x00]);

/// Server identifier when the subnet has no (IPv4) gateway.
pub const FALLBACK_SERVER_ID: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// BOOTP's minimum message (236-byte header plus a 64-byte vendor area): some
/// clients and relays drop anything shorter, so replies are padded to it.
const MIN_DHCP_LEN: usize = 300;

/// Every client must accept an IP datagram this large (RFC 2131 §2); the
/// client may raise it with option 57.
const MIN_MAX_MESSAGE_SIZE: usize = 576;

// Option codes smoltcp's `DhcpRepr` does not model (or models too narrowly).
const OPT_DNS: u8 = 6;
const OPT_INTERFACE_MTU: u8 = 26;
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_REBINDING_TIME: u8 = 59;
const OPT_MESSAGE: u8 = 56;
const OPT_CLIENT_ID: u8 = 61;
const OPT_CLASSLESS_STATIC_ROUTE: u8 = 121;
// Option codes read from requests.
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_MAX_MESSAGE_SIZE: u8 = 57;

/// A DHCP request from a client, as far as the responder cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub message_type: DhcpMessageType,
    /// `xid`.
    pub transaction_id: u32,
    /// `chaddr`: the key of the lease.
    pub client_mac: MacAddr,
    /// `ciaddr`.
    pub client_ip: Ipv4Addr,
    /// `giaddr`.
    pub relay_agent_ip: Ipv4Addr,
    /// The BROADCAST flag: the client cannot receive unicast IP before it has
    /// an address.
    pub broadcast: bool,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_identifier: Option<Ipv4Addr>,
    /// Option 61, raw; echoed back (RFC 6842).
    pub client_identifier: Option<Vec<u8>>,
    /// Option 57.
    pub max_message_size: Option<u16>,
}

/// What the responder answers a request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Offer,
    Ack,
    /// ACK to an INFORM: options only, no address, no lease time.
    InformAck,
    Nak,
}

/// The reply frame to `frame` (received on the device of the port whose lease
/// is `lease`), or `None` if nothing must answer it.
pub fn respond(frame: &[u8], lease: &DhcpLease) -> Option<Vec<u8>> {
    let request = parse_request(frame)?;
    let lease = LeaseV4::new(lease)?;
    let answer = decide(&request, &lease)?;
    Some(build_reply(&request, &lease, answer))
}

/// Parse a DHCP client message out of an Ethernet frame: IPv4 (unfragmented,
/// valid header checksum), UDP to port 67, BOOTREQUEST with a DHCP message
/// type. `None` for anything else.
///
/// The UDP checksum is deliberately not verified: a client that renews over
/// its kernel's UDP socket leaves the checksum to offload, so a frame read
/// from the VM's device carries a partial one (as the captured udhcpc renewal
/// in `testdata/` does).
///
/// Options are read from `DhcpPacket` rather than through `DhcpRepr::parse`,
/// which rejects a whole message whose 7-byte client identifier is not of
/// the Ethernet type (legal per RFC 2132) and needs the opcode to match.
pub fn parse_request(frame: &[u8]) -> Option<Request> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let ip_repr = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).ok()?;
    if ip_repr.next_header != IpProtocol::Udp {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    if udp.dst_port() != DHCP_SERVER_PORT {
        return None;
    }
    // The UDP length field bounds the payload (`check_len` made it safe).
    let dhcp = DhcpPacket::new_checked(udp.payload()).ok()?;
    if dhcp.opcode() != DhcpOpCode::Request
        || dhcp.hardware_type() != ArpHardware::Ethernet
        || dhcp.hardware_len() != 6
        || dhcp.magic_number() != 0x6382_5363
    {
        return None;
    }

    let mut message_type = None;
    let mut requested_ip = None;
    let mut server_identifier = None;
    let mut client_identifier = None;
    let mut max_message_size = None;
    for option in dhcp.options() {
        match (option.kind, option.data) {
            (OPT_MESSAGE_TYPE, [t]) => message_type = Some(DhcpMessageType::from(*t)),
            (OPT_REQUESTED_IP, &[a, b, c, d]) => requested_ip = Some(Ipv4Addr::new(a, b, c, d)),
            (OPT_SERVER_ID, &[a, b, c, d]) => server_identifier = Some(Ipv4Addr::new(a, b, c, d)),
            (OPT_CLIENT_ID, data) if !data.is_empty() => client_identifier = Some(data.to_vec()),
            (OPT_MAX_MESSAGE_SIZE, &[hi, lo]) => {
                max_message_size = Some(u16::from_be_bytes([hi, lo]));
            }
            _ => {}
        }
    }

    Some(Request {
        message_type: message_type?,
        transaction_id: dhcp.transaction_id(),
        client_mac: MacAddr(dhcp.client_hardware_address().0),
        client_ip: dhcp.client_ip(),
        relay_agent_ip: dhcp.relay_agent_ip(),
        broadcast: dhcp.flags().contains(DhcpFlags::BROADCAST),
        requested_ip,
        server_identifier,
        client_identifier,
        max_message_size,
    })
}

/// The IPv4 view of a lease, validated: what the reply is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseV4 {
    pub mac: MacAddr,
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    /// Destination (host bits cleared) and next hop; IPv6 routes dropped.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub mtu: Option<u16>,
    pub lease_seconds: u32,
    /// The port's own options as (code, body), in the API's order.
    pub extra: Vec<(u8, Vec<u8>)>,
    /// `siaddr` (dnsmasq's `server-ip-address`).
    pub next_server: Option<Ipv4Addr>,
}

impl LeaseV4 {
    /// `None` if the lease's address is not IPv4 or its prefix is not one.
    pub fn new(lease: &DhcpLease) -> Option<Self> {
        let IpAddr::V4(ip) = lease.ip else {
            return None;
        };
        let address = Ipv4Net::new(ip, lease.prefix_len).ok()?;
        let extras: Vec<Extra> = lease
            .extra_options
            .iter()
            .filter_map(|o| extra_option(&o.name, &o.value))
            .collect();
        let v4 = |ip: &IpAddr| match ip {
            IpAddr::V4(ip) => Some(*ip),
            IpAddr::V6(_) => None,
        };
        let routes = lease
            .host_routes
            .iter()
            .filter_map(|r| match (r.destination, r.nexthop) {
                (ipnet::IpNet::V4(dst), IpAddr::V4(hop)) => Some((dst.trunc(), hop)),
                _ => None,
            })
            .collect();
        Some(LeaseV4 {
            mac: lease.mac,
            address,
            gateway: lease.gateway.as_ref().and_then(v4).filter(|g| *g != ip),
            dns_servers: lease.dns_nameservers.iter().filter_map(v4).collect(),
            routes,
            // Option 26's minimum is 68 (RFC 2132 §5.1).
            mtu: u16::try_from(lease.mtu).ok().filter(|m| *m >= 68),
            lease_seconds: lease.lease_seconds,
            extra: extras
                .iter()
                .filter_map(|e| match e {
                    Extra::Option(code, body) => Some((*code, body.clone())),
                    Extra::NextServer(_) => None,
                })
                .collect(),
            next_server: extras.iter().rev().find_map(|e| match e {
                Extra::NextServer(ip) => Some(*ip),
                Extra::Option(..) => None,
            }),
        })
    }

    /// Option 54 and the reply's source IP: the gateway, else the fallback.
    pub fn server_identifier(&self) -> Ipv4Addr {
        self.gateway.unwrap_or(FALLBACK_SERVER_ID)
    }
}

/// How to answer `request` for the port whose lease is `lease`; `None` means
/// stay silent.
pub fn decide(request: &Request, lease: &LeaseV4) -> Option<Answer> {
    if request.client_mac != lease.mac || !request.relay_agent_ip.is_unspecified() {
        return None;
    }
    let ours = lease.address.addr();
    match request.message_type {
        DhcpMessageType::Discover => Some(Answer::Offer),
        DhcpMessageType::Request => {
            // SELECTING names the server it chose; another server's offer was
            // taken (or ours is stale), so this one is not for us.
            if let Some(server) = request.server_identifier
                && server != lease.server_identifier()
            {
                return None;
            }
            // SELECTING and INIT-REBOOT put the address in option 50;
            // RENEWING and REBINDING in `ciaddr`.
            let asked = request
                .requested_ip
                .or((!request.client_ip.is_unspecified()).then_some(request.client_ip))?;
            Some(if asked == ours {
                Answer::Ack
            } else {
                Answer::Nak
            })
        }
        DhcpMessageType::Inform => Some(Answer::InformAck),
        _ => None,
    }
}

/// Emit the reply frame. Infallible: every length is computed before emitting.
pub fn build_reply(request: &Request, lease: &LeaseV4, answer: Answer) -> Vec<u8> {
    let server_id = lease.server_identifier();
    let ours = lease.address.addr();

    // Options beyond what `DhcpRepr` carries, as owned bytes first so the
    // `DhcpOption`s below can borrow them.
    let mut owned: Vec<(u8, Vec<u8>)> = Vec::new();
    if answer != Answer::Nak {
        if answer != Answer::InformAck {
            let seconds = u64::from(lease.lease_seconds);
            // RFC 2131 §4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease.
            let t1 = u32::try_from(seconds / 2).unwrap_or(u32::MAX);
            let t2 = u32::try_from(seconds * 7 / 8).unwrap_or(u32::MAX);
            owned.push((OPT_RENEWAL_TIME, t1.to_be_bytes().to_vec()));
            owned.push((OPT_REBINDING_TIME, t2.to_be_bytes().to_vec()));
        }
        if !lease.dns_servers.is_empty() {
            // At most 63 servers fit one option; smoltcp's own field holds 3.
            let data = lease
                .dns_servers
                .iter()
                .take(63)
                .flat_map(|s| s.octets())
                .collect();
            owned.push((OPT_DNS, data));
        }
        if let Some(mtu) = lease.mtu {
            owned.push((OPT_INTERFACE_MTU, mtu.to_be_bytes().to_vec()));
        }
    } else {
        owned.push((OPT_MESSAGE, b"address is not this client's".to_vec()));
    }
    if answer != Answer::Nak {
        // The port's own replace the server's of their code.
        owned.retain(|(kind, _)| !lease.extra.iter().any(|(code, _)| code == kind));
    }
    if let Some(id) = &request.client_identifier {
        owned.push((OPT_CLIENT_ID, id.clone()));
    }

    let mut repr = DhcpRepr {
        message_type: match answer {
            Answer::Offer => DhcpMessageType::Offer,
            Answer::Ack | Answer::InformAck => DhcpMessageType::Ack,
            Answer::Nak => DhcpMessageType::Nak,
        },
        transaction_id: request.transaction_id,
        secs: 0,
        client_hardware_address: EthernetAddress(request.client_mac.0),
        client_ip: match answer {
            Answer::Ack | Answer::InformAck => request.client_ip,
            Answer::Offer | Answer::Nak => Ipv4Addr::UNSPECIFIED,
        },
        your_ip: match answer {
            Answer::Offer | Answer::Ack => ours,
            Answer::InformAck | Answer::Nak => Ipv4Addr::UNSPECIFIED,
        },
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: request.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(server_id),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    if answer != Answer::Nak {
        repr.subnet_mask = Some(lease.address.netmask());
        repr.router = lease.gateway;
        repr.server_ip = lease.next_server.unwrap_or(Ipv4Addr::UNSPECIFIED);
        if answer != Answer::InformAck {
            repr.lease_duration = Some(lease.lease_seconds);
        }
    }

    // The port's own options, then classless static routes, fill what room
    // the client's size limit leaves.
    let mut base_options: Vec<DhcpOption<'_>> = owned
        .iter()
        .map(|(kind, data)| DhcpOption { kind: *kind, data })
        .collect();
    // The client's limit (never below 576), and never beyond the link's MTU.
    let link_mtu = lease
        .mtu
        .map_or(1500, usize::from)
        .max(MIN_MAX_MESSAGE_SIZE);
    let max_datagram =
        usize::from(request.max_message_size.unwrap_or(0)).clamp(MIN_MAX_MESSAGE_SIZE, link_mtu);
    let max_dhcp_len = max_datagram - IPV4_HEADER_LEN - UDP_HEADER_LEN;
    let routes = if answer == Answer::Nak {
        Vec::new()
    } else {
        let used = DhcpRepr {
            additional_options: &base_options,
            ..repr.clone()
        }
        .buffer_len();
        let mut room = max_dhcp_len.saturating_sub(used);
        for (kind, data) in &lease.extra {
            if 2 + data.len() <= room {
                room -= 2 + data.len();
                base_options.push(DhcpOption { kind: *kind, data });
            }
        }
        classless_routes(lease, room)
    };
    let mut options = base_options;
    options.extend(routes.iter().map(|data| DhcpOption {
        kind: OPT_CLASSLESS_STATIC_ROUTE,
        data,
    }));
    repr.additional_options = &options;

    let dhcp_len = repr.buffer_len().max(MIN_DHCP_LEN);
    let dst_ip = if answer == Answer::Nak {
        // RFC 2131 §4.1: NAKs are broadcast (when not relayed).
        Ipv4Addr::BROADCAST
    } else if !request.client_ip.is_unspecified() {
        request.client_ip
    } else if request.broadcast {
        Ipv4Addr::BROADCAST
    } else {
        // Unicast to an address the client does not have yet: fine at L2,
        // where the frame goes to `chaddr` whatever the IP says.
        ours
    };
    emit_frame(&repr, dhcp_len, server_id, dst_ip, request.client_mac)
}

/// One of a port's own options, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extra {
    Option(u8, Vec<u8>),
    /// `server-ip-address`: the reply's `siaddr`.
    NextServer(Ipv4Addr),
}

/// How an option's value is written.
#[derive(Clone, Copy)]
enum Kind {
    Addresses,
    Text,
    U16,
    U32,
    Domains,
}

/// The options a port may set, by dnsmasq's name and code. The ones that
/// make the lease (1, 3, 50–61, 121) are the server's alone.
const NAMED: &[(&str, u8, Kind)] = &[
    ("time-offset", 2, Kind::U32),
    ("dns-server", 6, Kind::Addresses),
    ("log-server", 7, Kind::Addresses),
    ("hostname", 12, Kind::Text),
    ("domain-name", 15, Kind::Text),
    ("root-path", 17, Kind::Text),
    ("mtu", 26, Kind::U16),
    ("ntp-server", 42, Kind::Addresses),
    ("netbios-ns", 44, Kind::Addresses),
    ("tftp-server", 66, Kind::Text),
    ("bootfile-name", 67, Kind::Text),
    ("domain-search", 119, Kind::Domains),
    ("tftp-server-address", 150, Kind::Addresses),
];

/// One of a port's `extra_dhcp_opts` (`ip_version` 4) read: by dnsmasq's
/// name or number (`option:` prefix allowed), the value as that option's
/// kind; a number dnsmasq has no name for takes addresses if every item is
/// one, else text. `None` for the lease's own options, names it does not
/// know, and values that are not of the option's kind or exceed one
/// option (255 bytes).
pub fn extra_option(name: &str, value: &str) -> Option<Extra> {
    let name = name.trim();
    let name = name.strip_prefix("option:").unwrap_or(name);
    let value = value.trim();
    if name == "server-ip-address" {
        return value.parse().ok().map(Extra::NextServer);
    }
    let addresses = || -> Option<Vec<u8>> {
        let mut body = Vec::new();
        for item in value.split(',') {
            body.extend_from_slice(&item.trim().parse::<Ipv4Addr>().ok()?.octets());
        }
        Some(body)
    };
    let (code, kind) = match NAMED.iter().find(|(n, _, _)| *n == name) {
        Some((_, code, kind)) => (*code, *kind),
        None => {
            let code: u8 = name.parse().ok()?;
            match NAMED.iter().find(|(_, c, _)| *c == code) {
                Some((_, _, kind)) => (code, *kind),
                None if addresses().is_some() => (code, Kind::Addresses),
                None => (code, Kind::Text),
            }
        }
    };
    if matches!(code, 0 | 1 | 3 | 50..=61 | 121 | 255) {
        return None;
    }
    let body = match kind {
        Kind::Addresses => addresses()?,
        Kind::Text => value.as_bytes().to_vec(),
        Kind::U16 => value.parse::<u16>().ok()?.to_be_bytes().to_vec(),
        Kind::U32 => value.parse::<u32>().ok()?.to_be_bytes().to_vec(),
        Kind::Domains => super::dhcpv6::domain_list(value)?,
    };
    (!body.is_empty() && body.len() <= usize::from(u8::MAX)).then_some(Extra::Option(code, body))
}

/// Option 121 (RFC 3442) payloads: the default route via the gateway first
/// (clients that take option 121 ignore option 3), then the host routes, as
/// many as fit in `room` bytes; split into several option instances when
/// longer than one option holds (RFC 3396).
fn classless_routes(lease: &LeaseV4, room: usize) -> Vec<Vec<u8>> {
    if lease.routes.is_empty() {
        return Vec::new();
    }
    let has_default = lease.routes.iter().any(|(dst, _)| dst.prefix_len() == 0);
    let default = lease
        .gateway
        .filter(|_| !has_default)
        .map(|gw| (Ipv4Net::default(), gw));
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut used = 0;
    for (dst, hop) in default.iter().chain(lease.routes.iter()) {
        let significant = usize::from(dst.prefix_len()).div_ceil(8);
        let mut route = Vec::with_capacity(1 + significant + 4);
        route.push(dst.prefix_len());
        route.extend_from_slice(&dst.addr().octets()[..significant]);
        route.extend_from_slice(&hop.octets());
        let starts_chunk = chunks
            .last()
            .is_none_or(|c| c.len() + route.len() > usize::from(u8::MAX));
        let cost = route.len() + if starts_chunk { 2 } else { 0 };
        if used + cost > room {
            break;
        }
        used += cost;
        match chunks.last_mut() {
            Some(chunk) if !starts_chunk => chunk.extend_from_slice(&route),
            _ => chunks.push(route),
        }
    }
    chunks
}

fn emit_frame(
    dhcp: &DhcpRepr<'_>,
    dhcp_len: usize,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    dst_mac: MacAddr,
) -> Vec<u8> {
    let udp_len = UDP_HEADER_LEN + dhcp_len;
    let ip_repr = Ipv4Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let eth_repr = EthernetRepr {
        src_addr: EthernetAddress(SERVER_MAC.0),
        dst_addr: EthernetAddress(dst_mac.0),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + udp_len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth_repr.emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    let caps = ChecksumCapabilities::default();
    ip_repr.emit(&mut ip, &caps);
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    UdpRepr {
        src_port: DHCP_SERVER_PORT,
        dst_port: DHCP_CLIENT_PORT,
    }
    .emit(
        &mut udp,
        &IpAddress::Ipv4(src_ip),
        &IpAddress::Ipv4(dst_ip),
        dhcp_len,
        |payload| {
            let mut packet = DhcpPacket::new_unchecked(payload);
            // Cannot fail: the buffer is at least `buffer_len()` long, and
            // every option is at most 255 bytes (routes are chunked, DNS
            // servers capped, the client id came from a one-byte length).
            let emitted = dhcp.emit(&mut packet);
            debug_assert!(emitted.is_ok(), "{emitted:?}");
        },
        &caps,
    );
    buf
}

#[cfg(test)]
mod tests;
