//! The `nf_call_iptables`/`nf_call_ip6tables` switches of vnet's bridges,
//! read and set over rtnetlink (rust-netlink's `netlink-packet-route`) on a
//! socket of the calling thread's network namespace, in-process. It touches
//! only those two switches, and only of bridges named with vnet's prefix.
//!
//! A plain blocking socket, not the link backend's async connection: the nft
//! reconciler runs on a blocking thread, in that thread's namespace.

use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage,
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

/// How long the kernel may take to answer before vnet gives up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What failed talking to rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the kernel refused to switch netfilter on bridge {bridge}: {source}")]
    Refused {
        bridge: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused the link dump: {0}")]
    Dump(#[source] std::io::Error),
    #[error("cannot decode the kernel's answer: {0}")]
    Decode(String),
}

/// The request turning a bridge's two netfilter switches on or off, naming
/// the bridge (as `ip link set NAME type bridge nf_call_iptables V
/// nf_call_ip6tables V` does, which names it by index after a lookup).
pub fn switch_request(bridge: &str, on: bool) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut link = LinkMessage::default();
    link.attributes = vec![
        LinkAttribute::IfName(bridge.to_string()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::NfCallIpTables(on),
                InfoBridge::NfCallIp6Tables(on),
            ])),
        ]),
    ];
    let mut m = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
    m.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    m
}

fn socket() -> Result<Socket, BridgeError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(BridgeError::Socket)?;
    socket.bind_auto().map_err(BridgeError::Socket)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0),
    )
    .map_err(|e| BridgeError::Socket(e.into()))?;
    Ok(socket)
}

fn send(
    socket: &Socket,
    messages: &mut [NetlinkMessage<RouteNetlinkMessage>],
) -> Result<(), BridgeError> {
    let mut bytes = vec![];
    for (seq, m) in (1u32..).zip(messages.iter_mut()) {
        m.header.sequence_number = seq;
        m.finalize();
        let start = bytes.len();
        bytes.resize(start + m.buffer_len(), 0);
        m.serialize(&mut bytes[start..]);
    }
    socket.send(&bytes, 0).map_err(BridgeError::Socket)?;
    Ok(())
}

/// The kernel's next datagram, as messages.
fn receive(socket: &Socket) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, BridgeError> {
    let (datagram, _) = socket.recv_from_full().map_err(BridgeError::Socket)?;
    let mut out = vec![];
    let mut offset = 0;
    while offset < datagram.len() {
        let buf = NetlinkBuffer::new_checked(&datagram[offset..])
            .map_err(|e| BridgeError::Decode(e.to_string()))?;
        let len = buf.length() as usize;
        if len == 0 {
            break;
        }
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..offset + len])
            .map_err(|e| BridgeError::Decode(e.to_string()))?;
        out.push(m);
        offset += (len + 3) & !3;
    }
    Ok(out)
}

/// Sets each bridge's switches (one request each, all sent at once; each
/// acknowledged).
pub fn switch(flips: &[(String, bool)]) -> Result<(), BridgeError> {
    if flips.is_empty() {
        return Ok(());
    }
    let socket = socket()?;
    let mut requests: Vec<_> = flips.iter().map(|(b, on)| switch_request(b, *on)).collect();
    send(&socket, &mut requests)?;
    let mut unanswered = flips.len();
    while unanswered > 0 {
        for m in receive(&socket)? {
            if let NetlinkPayload::Error(e) = m.payload {
                unanswered = unanswered.saturating_sub(1);
                if let Some(code) = e.code {
                    let index = (m.header.sequence_number as usize).saturating_sub(1);
                    return Err(BridgeError::Refused {
                        bridge: flips.get(index).map(|f| f.0.clone()).unwrap_or_default(),
                        source: std::io::Error::from_raw_os_error(-code.get()),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether a link message is one of vnet's bridges, and then whether both
/// of its switches are on.
pub fn bridge_switches(link: &LinkMessage, prefix: &str) -> Option<(String, bool)> {
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    if !name.starts_with(prefix) {
        return None;
    }
    let info = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    if !info
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)))
    {
        return None;
    }
    let data = info.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Bridge(d)) => Some(d),
        _ => None,
    })?;
    let ip4 = data
        .iter()
        .any(|d| matches!(d, InfoBridge::NfCallIpTables(true)));
    let ip6 = data
        .iter()
        .any(|d| matches!(d, InfoBridge::NfCallIp6Tables(true)));
    Some((name, ip4 && ip6))
}

/// vnet's bridges (named with `prefix`) and whether IP traffic through
/// them goes to netfilter: one link dump.
pub fn observe(prefix: &str) -> Result<Vec<(String, bool)>, BridgeError> {
    let socket = socket()?;
    let mut req = LinkMessage::default();
    // Counters are most of a link message and of no use here.
    req.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut dump = NetlinkMessage::from(RouteNetlinkMessage::GetLink(req));
    dump.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    send(&socket, std::slice::from_mut(&mut dump))?;
    let mut out = vec![];
    loop {
        for m in receive(&socket)? {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    out.extend(bridge_switches(&link, prefix));
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(BridgeError::Dump(std::io::Error::from_raw_os_error(
                            -code.get(),
                        )));
                    }
                }
                _ if m.header.message_type == NLMSG_DONE
                    || m.header.message_type == NLMSG_ERROR =>
                {
                    return Ok(out);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
