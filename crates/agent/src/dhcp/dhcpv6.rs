//! The DHCPv6 responder: one received Ethernet frame and the DHCPv6 lease of
//! the port whose device it arrived on in, the reply frame (or nothing) out.
//!
//! Pure: no sockets, no clock, no state. Messages are decoded and encoded by
//! `dhcproto`; the Ethernet, IPv6 and UDP headers here. It answers only the
//! port's own MAC, never a relayed message, and gives exactly the port's
//! fixed IPv6 addresses on its `dhcpv6-stateful` subnets (Neutron's
//! `ipv6_address_mode`); `dhcpv6-stateless` subnets give only options.
//!
//! What it answers (RFC 8415, a server on the client's link):
//! - SOLICIT → ADVERTISE with the addresses in the client's first IA_NA
//!   and preference 255, so that the client requests at once (REPLY when
//!   the client asks for rapid commit); nothing when the port
//!   has no stateful address;
//! - REQUEST and RENEW naming this server, REBIND → REPLY with the addresses;
//! - CONFIRM → REPLY, Success when every address the client holds is the
//!   port's, else NotOnLink;
//! - INFORMATION-REQUEST → REPLY with the options only;
//! - RELEASE and DECLINE naming this server → REPLY, Success (the addresses
//!   are the API's; nothing is freed).
//!
//! Every reply carries the options of the lease: the DNS servers of the
//! port's DHCPv6 subnets, the agent's DNS domain as the domain search list
//! (Neutron's `dns_domain`, which its dnsmasq sends), and the port's
//! `extra_dhcp_opts` of `ip_version` 6 that [`extra_option`] knows, each
//! replacing the option of its code.
//!
//! The server DUID is a DUID-LL of [`SERVER_MAC`], the same on every host,
//! so a client renews with "the same server" wherever its port's host is.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::str::FromStr;

use compiler::protocol::{LEASE_SECONDS, NetworkSpec};
use dhcproto::v6::{
    self, DhcpOption, DhcpOptions, IAAddr, IANA, MessageType, Status, StatusCode, UnknownOption,
};
use dhcproto::{Decodable, Encodable};
use ipnet::IpNet;
use model::{Ipv6Mode, MacAddr};

use super::responder::SERVER_MAC;
use super::router_advert::upper_layer_checksum;

const ETHERTYPE_IPV6: u16 = 0x86dd;
const UDP: u8 = 17;
const CLIENT_PORT: u16 = 546;
const SERVER_PORT: u16 = 547;
const ETH_LEN: usize = 14;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;

/// Option codes (RFC 3646, 4075, 4242, 5908, 5970) of what a reply says.
const OPTION_DNS_SERVERS: u16 = 23;
const OPTION_DOMAIN_LIST: u16 = 24;
const OPTION_SNTP_SERVERS: u16 = 31;
const OPTION_INFORMATION_REFRESH_TIME: u16 = 32;
const OPTION_NTP_SERVER: u16 = 56;
const OPTION_BOOTFILE_URL: u16 = 59;
const OPTION_BOOTFILE_PARAM: u16 = 60;
/// NTP server suboption: a server's address (RFC 5908 §4.1).
const NTP_SUBOPTION_SRV_ADDR: u16 = 1;

/// What the DHCPv6 server hands one local port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcpv6Lease {
    pub mac: MacAddr,
    /// Its fixed IPs on `dhcpv6-stateful` subnets (empty: stateless only).
    pub addresses: Vec<Ipv6Addr>,
    /// The options every reply carries, by code, as their bodies on the
    /// wire.
    pub options: BTreeMap<u16, Vec<u8>>,
}

/// The agent's DNS domain (`vnet agent --dns-domain`, Neutron's
/// `dns_domain`), sent as the domain search list; empty: none is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsDomain(Vec<u8>);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a domain name (labels of 1 to 63 characters, 253 in all)")]
pub struct InvalidDomain(String);

impl FromStr for DnsDomain {
    type Err = InvalidDomain;

    fn from_str(domain: &str) -> Result<Self, InvalidDomain> {
        if domain.is_empty() {
            return Ok(DnsDomain::default());
        }
        domain_list(domain)
            .map(DnsDomain)
            .ok_or_else(|| InvalidDomain(domain.to_owned()))
    }
}

/// The DHCPv6 lease of a local port: `None` unless it has an address on a
/// subnet whose `ipv6_address_mode` is `dhcpv6-stateful` or
/// `dhcpv6-stateless`.
pub fn port_lease(net: &NetworkSpec, port_id: &str, domain: &DnsDomain) -> Option<Dhcpv6Lease> {
    let port = net.local_ports.get(port_id)?;
    let mut lease = Dhcpv6Lease {
        mac: port.mac,
        addresses: Vec::new(),
        options: BTreeMap::new(),
    };
    let mut dns_servers = Vec::new();
    let mut served = false;
    for fixed in &port.fixed_ips {
        let Some(subnet) = net.subnets.get(&fixed.subnet_id) else {
            continue;
        };
        let (IpNet::V6(_), std::net::IpAddr::V6(ip)) = (subnet.cidr, fixed.ip_address) else {
            continue;
        };
        match subnet.ipv6_address_mode {
            Some(Ipv6Mode::Dhcpv6Stateful) => lease.addresses.push(ip),
            Some(Ipv6Mode::Dhcpv6Stateless) => {}
            _ => continue,
        }
        served = true;
        for dns in &subnet.dns_nameservers {
            if let std::net::IpAddr::V6(dns) = dns
                && !dns_servers.contains(dns)
            {
                dns_servers.push(*dns);
            }
        }
    }
    if !served {
        return None;
    }
    if !dns_servers.is_empty() {
        let body = dns_servers.iter().flat_map(|a| a.octets()).collect();
        lease.options.insert(OPTION_DNS_SERVERS, body);
    }
    if !domain.0.is_empty() {
        lease.options.insert(OPTION_DOMAIN_LIST, domain.0.clone());
    }
    for extra in &port.dhcpv6_options {
        if let Some((code, body)) = extra_option(&extra.name, &extra.value) {
            lease.options.insert(code, body);
        }
    }
    Some(lease)
}

/// One of a port's `extra_dhcp_opts` (`ip_version` 6) as (code, body): by
/// dnsmasq's name (as Neutron hands them to it, with or without its
/// `option6:` prefix) or number, the value as dnsmasq reads it (addresses
/// and names separated by commas, addresses optionally in brackets).
/// `None` for an option this server does not say, or a value that is not
/// one: the port is served without it.
pub fn extra_option(name: &str, value: &str) -> Option<(u16, Vec<u8>)> {
    let name = name.strip_prefix("option6:").unwrap_or(name);
    let items = || value.split(',').map(str::trim);
    let addresses = || -> Option<Vec<Ipv6Addr>> {
        items()
            .map(|a| a.trim_start_matches('[').trim_end_matches(']').parse().ok())
            .collect()
    };
    match name {
        "dns-server" | "23" => Some((
            OPTION_DNS_SERVERS,
            addresses()?.iter().flat_map(|a| a.octets()).collect(),
        )),
        "domain-search" | "24" => Some((OPTION_DOMAIN_LIST, domain_list(value)?)),
        "sntp-server" | "31" => Some((
            OPTION_SNTP_SERVERS,
            addresses()?.iter().flat_map(|a| a.octets()).collect(),
        )),
        "information-refresh-time" | "32" => Some((
            OPTION_INFORMATION_REFRESH_TIME,
            value.trim().parse::<u32>().ok()?.to_be_bytes().to_vec(),
        )),
        "ntp-server" | "56" => Some((
            OPTION_NTP_SERVER,
            addresses()?
                .iter()
                .flat_map(|a| {
                    let mut sub = NTP_SUBOPTION_SRV_ADDR.to_be_bytes().to_vec();
                    sub.extend_from_slice(&16u16.to_be_bytes());
                    sub.extend_from_slice(&a.octets());
                    sub
                })
                .collect(),
        )),
        "bootfile-url" | "59" => Some((OPTION_BOOTFILE_URL, value.as_bytes().to_vec())),
        "bootfile-param" | "60" => {
            let mut body = Vec::new();
            for param in items() {
                body.extend_from_slice(&u16::try_from(param.len()).ok()?.to_be_bytes());
                body.extend_from_slice(param.as_bytes());
            }
            Some((OPTION_BOOTFILE_PARAM, body))
        }
        _ => None,
    }
    .filter(|(_, body)| body.len() <= usize::from(u16::MAX))
}

/// Domain names separated by commas, in DNS wire form without compression
/// (RFC 8415 §10, as option 24 requires; DHCPv4's option 119 takes the same,
/// RFC 3397); `None` if one is not a name.
pub(crate) fn domain_list(names: &str) -> Option<Vec<u8>> {
    let mut wire = Vec::new();
    for name in names.split(',').map(str::trim) {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() || name.len() > 253 {
            return None;
        }
        for label in name.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|l| (1..=63).contains(l))?;
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return None;
            }
            wire.push(len);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
    }
    Some(wire)
}

/// This server's DUID: DUID-LL (type 3), hardware type Ethernet (1).
pub fn server_duid() -> Vec<u8> {
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&SERVER_MAC.0);
    duid
}

/// A request as read from a frame: who sent it and the message.
#[derive(Debug)]
pub struct Request {
    pub client_mac: MacAddr,
    pub client_ip: Ipv6Addr,
    pub message: v6::Message,
}

/// The DHCPv6 message in `frame`, if it is one from a client (UDP 546 →
/// 547, no extension header).
pub fn parse_request(frame: &[u8]) -> Option<Request> {
    if frame.get(12..14)? != ETHERTYPE_IPV6.to_be_bytes() || frame.get(ETH_LEN)? >> 4 != 6 {
        return None;
    }
    let ip = frame.get(ETH_LEN..ETH_LEN + IPV6_LEN)?;
    if ip[6] != UDP {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let udp = frame.get(ETH_LEN + IPV6_LEN..ETH_LEN + IPV6_LEN + payload_len)?;
    let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    if udp.len() < UDP_LEN || port(0) != CLIENT_PORT || port(2) != SERVER_PORT {
        return None;
    }
    let payload = &udp[UDP_LEN..];
    if !decodable(payload) {
        return None;
    }
    let message = v6::Message::from_bytes(payload).ok()?;
    let mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let source: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
    Some(Request {
        client_mac: MacAddr(mac),
        client_ip: Ipv6Addr::from(source),
        message,
    })
}

/// Option codes (RFC 8415) whose lengths [`decodable`] checks.
const OPTION_IA_NA: u16 = 3;
const OPTION_IA_TA: u16 = 4;
const OPTION_IAADDR: u16 = 5;
const OPTION_PREFERENCE: u16 = 7;
const OPTION_ELAPSED_TIME: u16 = 8;
const OPTION_RELAY_MSG: u16 = 9;
const OPTION_UNICAST: u16 = 12;
const OPTION_STATUS_CODE: u16 = 13;
const OPTION_RAPID_COMMIT: u16 = 14;
const OPTION_VENDOR_CLASS: u16 = 16;
const OPTION_VENDOR_OPTS: u16 = 17;
const OPTION_RECONF_MSG: u16 = 19;
const OPTION_RECONF_ACCEPT: u16 = 20;
const OPTION_IA_PD: u16 = 25;
const OPTION_IAPREFIX: u16 = 26;

/// Whether `dhcproto` may decode this client message. Version 0.15 reads
/// some options by their kind's size rather than their stated length, and
/// subtracts from a length without checking it (a status code shorter than
/// 2 bytes, a vendor class or vendor options shorter than 4): an overflow,
/// a panic in a debug build, from one crafted frame (found by the `dhcpv6`
/// fuzz target). So the options are walked first, containers included, and
/// a message with one whose length is not its kind's is refused; a relay
/// message never comes from a VM.
fn decodable(message: &[u8]) -> bool {
    const RELAY_FORW: u8 = 12;
    const RELAY_REPL: u8 = 13;
    match message.first() {
        Some(&RELAY_FORW | &RELAY_REPL) | None => false,
        Some(_) => message.get(4..).is_some_and(options_decodable),
    }
}

fn options_decodable(mut options: &[u8]) -> bool {
    while !options.is_empty() {
        let Some(&[c0, c1, l0, l1]) = options.get(..4) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(body) = options.get(4..4 + len) else {
            return false;
        };
        let nested = |header: usize| body.get(header..).is_some_and(options_decodable);
        let fine = match u16::from_be_bytes([c0, c1]) {
            OPTION_RAPID_COMMIT | OPTION_RECONF_ACCEPT => len == 0,
            OPTION_PREFERENCE | OPTION_RECONF_MSG => len == 1,
            OPTION_ELAPSED_TIME => len == 2,
            OPTION_UNICAST => len == 16,
            OPTION_STATUS_CODE => len >= 2,
            OPTION_VENDOR_CLASS => len >= 4,
            OPTION_VENDOR_OPTS | OPTION_IA_TA => nested(4),
            OPTION_IA_NA | OPTION_IA_PD => nested(12),
            OPTION_IAADDR => nested(24),
            OPTION_IAPREFIX => nested(25),
            OPTION_RELAY_MSG => false,
            _ => true,
        };
        if !fine {
            return false;
        }
        options = &options[4 + len..];
    }
    true
}

/// The reply to `frame` for this lease, as a whole Ethernet frame; `None`
/// when there is nothing to answer.
pub fn respond(frame: &[u8], lease: &Dhcpv6Lease) -> Option<Vec<u8>> {
    let request = parse_request(frame)?;
    if request.client_mac != lease.mac {
        return None;
    }
    let reply = reply_message(&request.message, lease)?;
    let payload = reply.to_vec().ok()?;
    frame_to(request.client_mac, request.client_ip, &payload)
}

fn reply_message(request: &v6::Message, lease: &Dhcpv6Lease) -> Option<v6::Message> {
    let opts = request.opts();
    let client_id = match opts.get(v6::OptionCode::ClientId) {
        Some(DhcpOption::ClientId(id)) => Some(id.clone()),
        _ => None,
    };
    let names_us = match opts.get(v6::OptionCode::ServerId) {
        Some(DhcpOption::ServerId(id)) => Some(*id == server_duid()),
        _ => None,
    };
    let iaid = match opts.get(v6::OptionCode::IANA) {
        Some(DhcpOption::IANA(ia)) => Some(ia.id),
        _ => None,
    };
    let rapid = opts.get(v6::OptionCode::RapidCommit).is_some();
    let mut out = DhcpOptions::new();
    let reply_type = match request.msg_type() {
        MessageType::Solicit => {
            // RFC 8415 §16.2: a Solicit carries a client id and no server id.
            if client_id.is_none() || names_us.is_some() || lease.addresses.is_empty() {
                return None;
            }
            out.insert(DhcpOption::IANA(self::iana(iaid?, lease)));
            if rapid {
                out.insert(DhcpOption::RapidCommit);
                MessageType::Reply
            } else {
                // The only server on the port's link: the client need not
                // wait for others' advertisements (RFC 8415 §18.2.1).
                out.insert(DhcpOption::Preference(255));
                MessageType::Advertise
            }
        }
        MessageType::Request | MessageType::Renew => {
            if names_us != Some(true) || client_id.is_none() || lease.addresses.is_empty() {
                return None;
            }
            out.insert(DhcpOption::IANA(self::iana(iaid?, lease)));
            MessageType::Reply
        }
        MessageType::Rebind => {
            if names_us.is_some() || client_id.is_none() || lease.addresses.is_empty() {
                return None;
            }
            out.insert(DhcpOption::IANA(self::iana(iaid?, lease)));
            MessageType::Reply
        }
        MessageType::Confirm => {
            if names_us.is_some() || client_id.is_none() {
                return None;
            }
            let held = opts
                .get_all(v6::OptionCode::IANA)
                .unwrap_or_default()
                .iter()
                .filter_map(|o| match o {
                    DhcpOption::IANA(ia) => Some(ia),
                    _ => None,
                })
                .flat_map(|ia| ia.opts.iter())
                .filter_map(|o| match o {
                    DhcpOption::IAAddr(a) => Some(a.addr),
                    _ => None,
                });
            let ours = held.into_iter().all(|a| lease.addresses.contains(&a));
            out.insert(status(if ours {
                Status::Success
            } else {
                Status::NotOnLink
            }));
            MessageType::Reply
        }
        MessageType::InformationRequest => {
            if names_us == Some(false) {
                return None;
            }
            MessageType::Reply
        }
        MessageType::Release | MessageType::Decline => {
            if names_us != Some(true) || client_id.is_none() {
                return None;
            }
            out.insert(status(Status::Success));
            MessageType::Reply
        }
        _ => return None,
    };
    if let Some(id) = client_id {
        out.insert(DhcpOption::ClientId(id));
    }
    out.insert(DhcpOption::ServerId(server_duid()));
    for (code, body) in &lease.options {
        out.insert(DhcpOption::Unknown(UnknownOption::new(
            (*code).into(),
            body.clone(),
        )));
    }
    let mut reply = v6::Message::new_with_id(reply_type, request.xid());
    reply.set_opts(out);
    Some(reply)
}

fn status(status: Status) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status,
        msg: String::new(),
    })
}

/// The port's addresses in one IA_NA: preferred and valid for a lease (the
/// API owns them; they never change under it), renewed at half, rebound at
/// 80 %, as RFC 8415 §21.4 recommends.
fn iana(id: u32, lease: &Dhcpv6Lease) -> IANA {
    let mut opts = DhcpOptions::new();
    for addr in &lease.addresses {
        opts.insert(DhcpOption::IAAddr(IAAddr {
            addr: *addr,
            preferred_life: LEASE_SECONDS,
            valid_life: LEASE_SECONDS,
            opts: DhcpOptions::new(),
        }));
    }
    IANA {
        id,
        t1: LEASE_SECONDS / 2,
        t2: LEASE_SECONDS / 5 * 4,
        opts,
    }
}

/// Ethernet + IPv6 + UDP around a DHCPv6 payload, from the server's
/// link-local address to the client's; `None` if it does not fit in one
/// (a port's extra options can be that long).
fn frame_to(client_mac: MacAddr, client_ip: Ipv6Addr, payload: &[u8]) -> Option<Vec<u8>> {
    let source = SERVER_MAC.ipv6_link_local();
    let udp_len = u16::try_from(UDP_LEN + payload.len()).ok()?;
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let checksum = match upper_layer_checksum(source, client_ip, UDP, &udp) {
        0 => 0xffff, // RFC 768: zero means "none", which IPv6 forbids
        c => c,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = Vec::with_capacity(ETH_LEN + IPV6_LEN + udp.len());
    frame.extend_from_slice(&client_mac.0);
    frame.extend_from_slice(&SERVER_MAC.0);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&[UDP, 255]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&client_ip.octets());
    frame.extend_from_slice(&udp);
    Some(frame)
}

#[cfg(test)]
mod tests;
