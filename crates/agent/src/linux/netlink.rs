//! The netlink side of the backend: one rtnetlink connection (bound to the
//! network namespace of the thread that opened it) that dumps links, FDB and
//! neighbours, and executes a plan. A plan's operations are pipelined on the
//! connection in its order (many requests in flight, each acknowledged), so a
//! plan of 20,000 entries costs one conversation, not 20,000 processes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use futures::stream::{self, StreamExt};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoPortData,
    InfoPortKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkVxlan};

use model::MacAddr;

use super::Error;
use super::link::PortFlags;
use super::observed::link_name;
use super::plan::Op;

/// Requests in flight at once: enough to keep the kernel busy, few enough
/// that their acknowledgements never overflow the socket's receive buffer.
const IN_FLIGHT: usize = 256;
/// Creations in flight at once: each is answered with its new link, some
/// kilobytes, and the socket's receive buffer (212 KB by default) must hold
/// every unread one.
const CREATES_IN_FLIGHT: usize = 16;
/// A dump the kernel marks interrupted (the table changed under it) is redone.
const DUMP_ATTEMPTS: usize = 5;

/// Why the kernel did not take one operation.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no device named {0}")]
    NoSuchDevice(String),
    #[error("the kernel refused it")]
    Kernel(#[source] io::Error),
    #[error("the netlink connection is closed")]
    ConnectionClosed,
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// An operation that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op}")]
pub struct OpFailure {
    pub op: Op,
    #[source]
    pub error: OpError,
}

/// One rtnetlink connection and the task that drives it.
#[derive(Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace. Must run
    /// inside a tokio runtime.
    pub fn connect() -> Result<Self, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
        let task = tokio::spawn(connection);
        Ok(Netlink { handle, task })
    }

    pub async fn dump_links(&self) -> Result<Vec<LinkMessage>, Error> {
        let mut req = LinkMessage::default();
        // Counters are most of a link message and of no use here.
        req.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let msg = RouteNetlinkMessage::GetLink(req);
        self.dump("links", msg, |m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .await
    }

    /// The links of these names that exist (one pipelined request each).
    pub async fn get_links(&self, names: &[String]) -> Result<Vec<LinkMessage>, Error> {
        let replies: Vec<Result<Option<LinkMessage>, Error>> = stream::iter(names)
            .map(|name| async move {
                let mut replies = self
                    .handle
                    .clone()
                    .request(get_link(name))
                    .map_err(|_| Error::ConnectionClosed)?;
                let mut found = None;
                while let Some(reply) = replies.next().await {
                    match reply.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                            found = Some(l)
                        }
                        NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
                            None => {}
                            Some(libc::ENODEV) => return Ok(None),
                            Some(errno) => {
                                return Err(Error::Dump {
                                    what: "a link",
                                    source: io::Error::from_raw_os_error(errno),
                                });
                            }
                        },
                        _ => {}
                    }
                }
                Ok(found)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let mut links = Vec::new();
        for r in replies {
            links.extend(r?);
        }
        Ok(links)
    }

    /// `AddressFamily::Bridge` dumps the FDB; `Inet`/`Inet6` the neighbours.
    pub async fn dump_neighbours(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>, Error> {
        let mut req = NeighbourMessage::default();
        req.header.family = family;
        let what = if family == AddressFamily::Bridge {
            "fdb"
        } else {
            "neighbours"
        };
        self.dump(what, RouteNetlinkMessage::GetNeighbour(req), |m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.family == family => Some(n),
            _ => None,
        })
        .await
    }

    async fn dump<T>(
        &self,
        what: &'static str,
        request: RouteNetlinkMessage,
        keep: impl Fn(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>, Error> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut req = NetlinkMessage::from(request.clone());
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut replies = self
                .handle
                .clone()
                .request(req)
                .map_err(|_| Error::ConnectionClosed)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            while let Some(reply) = replies.next().await {
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => out.extend(keep(m)),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(Error::Dump {
                            what,
                            source: e.to_io(),
                        });
                    }
                    _ => {}
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::DumpInterrupted { what })
    }

    /// Name → index of every link in the namespace.
    pub async fn link_indexes(&self) -> Result<HashMap<String, u32>, Error> {
        Ok(self
            .dump_links()
            .await?
            .iter()
            .filter_map(|l| Some((link_name(l)?, l.header.index)))
            .collect())
    }

    /// Runs `ops` (in phase order, as [`super::plan`] returns them) and
    /// returns those that failed. `indexes` maps names to link indexes as
    /// observed; the links this creates are added to it.
    /// Also returns the indexes as they are afterwards.
    pub async fn execute(
        &self,
        ops: &[Op],
        mut indexes: HashMap<String, u32>,
    ) -> Result<(Vec<OpFailure>, HashMap<String, u32>), Error> {
        // The kernel applies a socket's requests one by one in the order
        // they arrive, each before it reads the next: phases need no wait
        // between them. Creations alone are a batch of their own: the
        // requests after them wait for the indexes they return, and fewer
        // are in flight.
        let before = ops.iter().position(is_create).unwrap_or(ops.len());
        let after = ops.iter().rposition(is_create).map_or(0, |last| last + 1);
        let batches = [
            (&ops[..before], IN_FLIGHT),
            (&ops[before..after.max(before)], CREATES_IN_FLIGHT),
            (&ops[after.max(before)..], IN_FLIGHT),
        ];
        let mut failures = Vec::new();
        for (batch, window) in batches {
            for (op, outcome) in self.pipeline(batch, &indexes, window).await {
                match outcome {
                    Ok(Some(index)) => {
                        indexes.insert(op.device().to_string(), index);
                    }
                    Ok(None) => {}
                    Err(error) => failures.push(OpFailure {
                        op: op.clone(),
                        error,
                    }),
                }
            }
        }
        Ok((failures, indexes))
    }

    /// Sends `batch`'s requests in its order (at most `window` operations
    /// unanswered) and gathers each one's outcome: for a creation, the new
    /// link's index.
    async fn pipeline<'a>(
        &self,
        batch: &'a [Op],
        indexes: &HashMap<String, u32>,
        window: usize,
    ) -> Vec<(&'a Op, Result<Option<u32>, OpError>)> {
        stream::iter(batch)
            .map(|op| {
                // Queued here, as `buffered` takes each operation in turn,
                // not when its future is first polled: the order is the plan's.
                let queue = |req| {
                    self.handle
                        .clone()
                        .request(req)
                        .map_err(|_| OpError::ConnectionClosed)
                };
                let replies = request(op, indexes).and_then(queue);
                // What a creation made is asked for by name right behind it,
                // answered in the same pass: never a dump of every link (on a
                // host of many links that cost more than the creation), and
                // not the creation's echo (NLM_F_ECHO: Linux 6.18 echoes a new
                // bridge but not a new VXLAN device).
                let lookup = is_create(op).then(|| queue(get_link(op.device())));
                async move {
                    let outcome = match replies {
                        Ok(replies) => outcome(replies, op).await,
                        Err(e) => Err(e),
                    };
                    let outcome = match (outcome, lookup) {
                        (Ok(()), Some(Ok(replies))) => Ok(index_of(replies, op.device()).await),
                        (Ok(()), Some(Err(e))) => Err(e),
                        (Ok(()), None) => Ok(None),
                        (Err(e), _) => Err(e),
                    };
                    (op, outcome)
                }
            })
            .buffered(window)
            .collect()
            .await
    }
}

/// What the kernel answered to `op`'s request.
async fn outcome(
    mut replies: impl futures::Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + Unpin,
    op: &Op,
) -> Result<(), OpError> {
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    let errno = -code.get();
                    if is_delete(op) && (errno == libc::ENOENT || errno == libc::ENODEV) {
                        return Ok(()); // already gone
                    }
                    return Err(OpError::Kernel(io::Error::from_raw_os_error(errno)));
                }
            }
            NetlinkPayload::Done(_) | NetlinkPayload::Noop => {}
            other => return Err(OpError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(())
}

/// The index of the link named `name` in the answer to [`get_link`] (none if
/// there is no such link).
async fn index_of(
    mut replies: impl futures::Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + Unpin,
    name: &str,
) -> Option<u32> {
    let mut index = None;
    while let Some(reply) = replies.next().await {
        if let NetlinkPayload::InnerMessage(msg) = reply.payload {
            index = index.or(link_index(&msg, name));
        }
    }
    index
}

/// `msg`'s link index if it is the link named `name`.
fn link_index(msg: &RouteNetlinkMessage, name: &str) -> Option<u32> {
    match msg {
        RouteNetlinkMessage::NewLink(link) if link_name(link).as_deref() == Some(name) => {
            Some(link.header.index)
        }
        _ => None,
    }
}

/// `ip link show NAME`, counters left out.
fn get_link(name: &str) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut req = LinkMessage::default();
    req.attributes.push(LinkAttribute::IfName(name.to_string()));
    req.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(req));
    msg.header.flags = NLM_F_REQUEST;
    msg
}

fn is_create(op: &Op) -> bool {
    matches!(op, Op::CreateBridge { .. } | Op::CreateVxlan { .. })
}

fn is_delete(op: &Op) -> bool {
    matches!(
        op,
        Op::DeleteFdb { .. }
            | Op::DeleteVxlanFdb { .. }
            | Op::DeleteNeighbour { .. }
            | Op::DeleteLink { .. }
    )
}

const CHANGE: u16 = NLM_F_REQUEST | NLM_F_ACK;
const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const UPSERT: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;

/// The netlink request that performs `op`.
pub fn request(
    op: &Op,
    indexes: &HashMap<String, u32>,
) -> Result<NetlinkMessage<RouteNetlinkMessage>, OpError> {
    let index = |name: &str| {
        indexes
            .get(name)
            .copied()
            .ok_or_else(|| OpError::NoSuchDevice(name.to_string()))
    };
    let (msg, flags) = match op {
        Op::CreateBridge { name, mtu, address } => {
            // Born with its IP traffic going through netfilter (fail
            // closed: security groups apply from the first frame); the nft
            // backend turns it off for bridges without a secured port.
            let link = LinkMessageBuilder::<LinkBridge>::new(name)
                .mtu(*mtu)
                .address(address.0.to_vec())
                .append_info_data(InfoBridge::NfCallIpTables(true))
                .append_info_data(InfoBridge::NfCallIp6Tables(true))
                .build();
            (RouteNetlinkMessage::NewLink(link), CREATE)
        }
        Op::CreateVxlan {
            name,
            vni,
            local,
            port,
            mtu,
        } => {
            let builder = LinkMessageBuilder::<LinkVxlan>::new(name)
                .id(*vni)
                .port(*port)
                .learning(false)
                .mtu(*mtu);
            let builder = match local {
                IpAddr::V4(ip) => builder.local(*ip),
                IpAddr::V6(ip) => builder.local6(*ip),
            };
            (RouteNetlinkMessage::NewLink(builder.build()), CREATE)
        }
        Op::DeleteLink { name } => {
            let mut link = LinkMessage::default();
            link.header.index = index(name)?;
            (RouteNetlinkMessage::DelLink(link), CHANGE)
        }
        Op::SetMtu { dev, mtu } => set_link(index(dev)?, vec![LinkAttribute::Mtu(*mtu)]),
        Op::SetAddress { dev, mac } => {
            set_link(index(dev)?, vec![LinkAttribute::Address(mac.0.to_vec())])
        }
        Op::SetMaster { dev, master } => {
            set_link(index(dev)?, vec![LinkAttribute::Controller(index(master)?)])
        }
        Op::Detach { dev } => set_link(index(dev)?, vec![LinkAttribute::Controller(0)]),
        Op::SilenceIpv6 { dev } => set_link(
            index(dev)?,
            vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )])],
        ),
        Op::SetPortFlags { dev, flags } => {
            let mut link = LinkMessage::default();
            link.header.index = index(dev)?;
            link.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(port_flags(flags))),
            ]));
            (RouteNetlinkMessage::NewLink(link), CHANGE)
        }
        Op::SetUp { dev, up } => {
            let mut link = LinkMessage::default();
            link.header.index = index(dev)?;
            link.header.change_mask = LinkFlags::Up;
            if *up {
                link.header.flags = LinkFlags::Up;
            }
            (RouteNetlinkMessage::SetLink(link), CHANGE)
        }
        Op::AddFdb { dev, mac, .. } => {
            let n = fdb(
                index(dev)?,
                NeighbourState::Noarp,
                NeighbourFlags::Controller,
                mac,
            );
            (RouteNetlinkMessage::NewNeighbour(n), UPSERT)
        }
        Op::DeleteFdb { dev, mac, .. } => {
            let n = fdb(
                index(dev)?,
                NeighbourState::Noarp,
                NeighbourFlags::Controller,
                mac,
            );
            (RouteNetlinkMessage::DelNeighbour(n), CHANGE)
        }
        Op::AddVxlanFdb { dev, mac, dst } => {
            let mut n = fdb(
                index(dev)?,
                NeighbourState::Permanent,
                NeighbourFlags::Own,
                mac,
            );
            n.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                    *dst,
                )));
            (RouteNetlinkMessage::NewNeighbour(n), UPSERT)
        }
        Op::DeleteVxlanFdb { dev, mac } => {
            let n = fdb(
                index(dev)?,
                NeighbourState::Permanent,
                NeighbourFlags::Own,
                mac,
            );
            (RouteNetlinkMessage::DelNeighbour(n), CHANGE)
        }
        Op::AddNeighbour { bridge, ip, mac } => {
            let mut n = neighbour(index(bridge)?, ip);
            n.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
            (RouteNetlinkMessage::NewNeighbour(n), UPSERT)
        }
        Op::DeleteNeighbour { bridge, ip } => (
            RouteNetlinkMessage::DelNeighbour(neighbour(index(bridge)?, ip)),
            CHANGE,
        ),
    };
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    Ok(req)
}

fn set_link(index: u32, attributes: Vec<LinkAttribute>) -> (RouteNetlinkMessage, u16) {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes = attributes;
    (RouteNetlinkMessage::SetLink(link), CHANGE)
}

fn port_flags(f: &PortFlags) -> Vec<InfoBridgePort> {
    vec![
        InfoBridgePort::Learning(f.learning),
        InfoBridgePort::NeighSupress(f.neigh_suppress),
        InfoBridgePort::UnicastFlood(f.flood),
        InfoBridgePort::MulticastFlood(f.mcast_flood),
        InfoBridgePort::BroadcastFlood(f.bcast_flood),
    ]
}

fn fdb(
    ifindex: u32,
    state: NeighbourState,
    flags: NeighbourFlags,
    mac: &MacAddr,
) -> NeighbourMessage {
    let mut n = NeighbourMessage::default();
    n.header.family = AddressFamily::Bridge;
    n.header.ifindex = ifindex;
    n.header.state = state;
    n.header.flags = flags;
    n.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    n
}

fn neighbour(ifindex: u32, ip: &IpAddr) -> NeighbourMessage {
    let mut n = NeighbourMessage::default();
    n.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    n.header.ifindex = ifindex;
    n.header.state = NeighbourState::Permanent;
    n.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(*ip)));
    n
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
