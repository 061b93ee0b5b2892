//! nf_tables changes sent in-process: owns the encoding of a planned
//! transaction (its set-element changes here, its chain, set and rule steps
//! with [`super::rule`]) as nf_tables netlink messages (rust-netlink's
//! `netlink-packet-netfilter`) and the one batch exchange with the kernel.
//! It never reads a set or a chain before changing it: what they hold comes
//! from the caller's view.
//!
//! A batch is one nf_tables transaction: the kernel applies every message or
//! none. Each message asks for an acknowledgement, so the exchange ends when
//! every message is answered, and a refusal names the message it refused.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload, Parseable as _,
};
use netlink_packet_core::{ErrorBuffer, ErrorMessage};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, ListAttribute, NfTablesMessage, RuleAttribute,
    RuleMessage, SetAttribute, SetElementAttribute, SetElementFlags, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, Verdict as NlVerdict,
    VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::plan::{Op, Transaction};
use super::rule::{Unencodable, add_rule_messages};
use super::ruleset::{Family, MapKey, MapKind, MapValue, TABLE};

/// `NFNL_SUBSYS_NFTABLES`: a batch's resource id names the subsystem its
/// messages go to.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// libnftnl's `NFTNL_UDATA_SET_ELEM_FLAGS` TLV with
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN`: an interval running to the top of the
/// address space has no end element, and nft marks it so to list it back.
const UDATA_INTERVAL_OPEN: [u8; 6] = [1, 4, 1, 0, 0, 0];
/// Bytes of elements per message: a message's element list is one
/// attribute, whose length is 16 bits (a map's element with a jump names
/// its chain, so elements are not all of one size).
const ELEMENT_BYTES_PER_MESSAGE: usize = 60_000;
/// Below this a batch fits the socket's default send buffer.
const SEND_BUFFER_DEFAULT: usize = 128 * 1024;
/// What one acknowledgement takes of the receive buffer, as the kernel
/// counts it (a small message's whole allocation; nft reckons 1 KiB too).
/// The kernel writes every answer of a batch before vnet reads one, so
/// the buffer must hold them all: a thousand ports are some 20,000.
const ANSWER_ROOM: usize = 1024;
/// Below this the answers fit the socket's default receive buffer.
const RECEIVE_BUFFER_DEFAULT: usize = 208 * 1024;
/// How long the kernel may take to answer a batch before vnet gives up on
/// it (it answers in microseconds; this only bounds a kernel that never does).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What failed in a batch exchange.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the kernel refused message {index} of the batch ({what}): {source}")]
    Refused {
        /// Position in the batch, 0 the first message after batch begin.
        index: usize,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused the batch as a whole: {0}")]
    Batch(#[source] std::io::Error),
    #[error("no answer from the kernel for {0} messages of the batch")]
    Unanswered(usize),
    #[error("cannot decode the kernel's answer: {0}")]
    Decode(String),
}

/// The element changes of one named interval set of vnet's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDelta {
    pub family: Family,
    pub set: String,
    /// The set held nothing before this change (then, as nft does, the
    /// interval below the first element is closed explicitly).
    pub was_empty: bool,
    pub removed: Vec<IpNet>,
    pub added: Vec<IpNet>,
}

/// The element changes of one of vnet's named maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDelta {
    pub family: Family,
    pub map: String,
    pub kind: MapKind,
    pub removed: Vec<MapKey>,
    pub added: Vec<(MapKey, MapValue)>,
}

/// `IFNAMSIZ`: an interface name key is NUL-padded to it.
pub(crate) const IFNAMSIZ: usize = 16;

/// A map key's bytes as the kernel keeps them (a name NUL-padded, a mark
/// in host order); `None` for a name no interface can have.
fn map_key(key: &MapKey) -> Option<Vec<u8>> {
    match key {
        MapKey::Ifname(name) => {
            if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
                return None;
            }
            let mut k = name.as_bytes().to_vec();
            k.resize(IFNAMSIZ, 0);
            Some(k)
        }
        MapKey::Mark(mark) => Some(mark.to_ne_bytes().to_vec()),
    }
}

/// A map value's data: a verdict, or a number in host order as long as
/// the map's data (a zone is 16 bits).
fn map_data(kind: MapKind, value: &MapValue) -> DataAttribute {
    match value {
        MapValue::Jump(chain) => DataAttribute::Verdict(vec![
            VerdictAttribute::Code(NlVerdict::Jump),
            VerdictAttribute::Chain(chain.clone()),
        ]),
        MapValue::Number(n) => DataAttribute::Value(match kind {
            MapKind::IfnameZone => (*n as u16).to_ne_bytes().to_vec(),
            _ => n.to_ne_bytes().to_vec(),
        }),
    }
}

fn proto_family(family: Family) -> NetfilterProtoFamily {
    match family {
        Family::Bridge => NetfilterProtoFamily::Bridge,
        Family::Inet => NetfilterProtoFamily::Inet,
    }
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The first address after `net`, `None` when `net` reaches the top of its
/// address space.
fn after(net: &IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) => u32::from(n.broadcast())
            .checked_add(1)
            .map(|a| IpAddr::V4(a.into())),
        IpNet::V6(n) => u128::from(n.broadcast())
            .checked_add(1)
            .map(|a| IpAddr::V6(a.into())),
    }
}

fn element(key: IpAddr, end: bool) -> ListAttribute<SetElementAttribute> {
    let mut attrs = vec![];
    if end {
        attrs.push(SetElementAttribute::Flags(SetElementFlags::IntervalEnd));
    }
    attrs.push(SetElementAttribute::Key(DataAttribute::Value(octets(key))));
    ListAttribute::Element(attrs)
}

/// The elements of an interval set for these prefixes, as nft writes them:
/// each prefix is its first address and, flagged as an interval end, the
/// first address after it; sorted by address.
pub(crate) fn interval_elements(
    nets: &[IpNet],
    close_below: bool,
) -> Vec<ListAttribute<SetElementAttribute>> {
    let mut nets: Vec<IpNet> = nets.iter().map(IpNet::trunc).collect();
    nets.sort_by_key(|n| n.network());
    let mut out = vec![];
    if close_below
        && let Some(first) = nets.first()
        && !first.network().is_unspecified()
    {
        let zero = match first {
            IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        out.push(element(zero, true));
    }
    for net in &nets {
        match after(net) {
            Some(end) => {
                out.push(element(net.network(), false));
                out.push(element(end, true));
            }
            None => out.push(ListAttribute::Element(vec![
                SetElementAttribute::Key(DataAttribute::Value(octets(net.network()))),
                SetElementAttribute::UserData(UDATA_INTERVAL_OPEN.to_vec()),
            ])),
        }
    }
    out
}

/// Element lists of at most [`ELEMENT_BYTES_PER_MESSAGE`] bytes, an
/// interval's start and end always in the same one.
fn packed(
    elements: Vec<ListAttribute<SetElementAttribute>>,
) -> Vec<Vec<ListAttribute<SetElementAttribute>>> {
    let mut out: Vec<Vec<_>> = vec![];
    let (mut current, mut bytes) = (vec![], 0);
    let mut iter = elements.into_iter().peekable();
    while let Some(e) = iter.next() {
        let end = iter.next_if(is_interval_end);
        let len = e.buffer_len() + end.as_ref().map_or(0, Emitable::buffer_len);
        if bytes + len > ELEMENT_BYTES_PER_MESSAGE && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(e);
        current.extend(end);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn is_interval_end(e: &ListAttribute<SetElementAttribute>) -> bool {
    matches!(e, ListAttribute::Element(attrs) if attrs.iter().any(|a| matches!(a, SetElementAttribute::Flags(f) if f.contains(SetElementFlags::IntervalEnd))))
}

/// An nf_tables request about a table of vnet's host tables' `family`.
pub(crate) fn nft_message(
    family: Family,
    message: NfTablesMessage,
    flags: u16,
) -> NetlinkMessage<NetfilterMessage> {
    request(proto_family(family), message, flags)
}

/// An nf_tables request about a table of protocol family `proto`.
pub(crate) fn request(
    proto: NetfilterProtoFamily,
    message: NfTablesMessage,
    flags: u16,
) -> NetlinkMessage<NetfilterMessage> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(proto, 0, 0),
        message,
    ));
    m.header.flags = NLM_F_REQUEST | flags;
    m
}

/// The messages of these set changes: per set, its removals, then its
/// additions (a prefix removed and another added in its place never clash).
pub fn element_messages(deltas: &[SetDelta]) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let mut out = vec![];
    for d in deltas {
        let family = d.family;
        let list = |elements: &[ListAttribute<SetElementAttribute>]| SetElementMessage {
            attributes: vec![
                SetElementList::Table(TABLE.to_string()),
                SetElementList::Set(d.set.clone()),
                SetElementList::Elements(elements.to_vec()),
            ],
        };
        for chunk in packed(interval_elements(&d.removed, false)) {
            out.push(nft_message(
                family,
                NfTablesMessage::DeleteSetElement(list(&chunk)),
                0,
            ));
        }
        for chunk in packed(interval_elements(&d.added, d.was_empty)) {
            out.push(nft_message(
                family,
                NfTablesMessage::NewSetElement(list(&chunk)),
                NLM_F_CREATE,
            ));
        }
    }
    out
}

/// The messages of these map changes: per map, its removals, then its
/// additions (a key whose value changed is removed and added again).
pub fn map_element_messages(
    deltas: &[MapDelta],
) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, Unencodable> {
    let mut out = vec![];
    for d in deltas {
        let list = |elements: Vec<ListAttribute<SetElementAttribute>>| SetElementMessage {
            attributes: vec![
                SetElementList::Table(TABLE.to_string()),
                SetElementList::Set(d.map.clone()),
                SetElementList::Elements(elements),
            ],
        };
        let key = |k: &MapKey| {
            map_key(k)
                .map(|k| SetElementAttribute::Key(DataAttribute::Value(k)))
                .ok_or_else(|| Unencodable(format!("the map key {k}")))
        };
        let removed = d
            .removed
            .iter()
            .map(|k| Ok(ListAttribute::Element(vec![key(k)?])))
            .collect::<Result<Vec<_>, Unencodable>>()?;
        let added = d
            .added
            .iter()
            .map(|(k, v)| {
                Ok(ListAttribute::Element(vec![
                    key(k)?,
                    SetElementAttribute::Data(map_data(d.kind, v)),
                ]))
            })
            .collect::<Result<Vec<_>, Unencodable>>()?;
        for chunk in packed(removed) {
            out.push(nft_message(
                d.family,
                NfTablesMessage::DeleteSetElement(list(chunk)),
                0,
            ));
        }
        for chunk in packed(added) {
            out.push(nft_message(
                d.family,
                NfTablesMessage::NewSetElement(list(chunk)),
                NLM_F_CREATE,
            ));
        }
    }
    Ok(out)
}

/// libnftnl's set user data nft writes for a set of addresses:
/// `NFTNL_UDATA_SET_KEYBYTEORDER` big endian.
const UDATA_SET_KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];
/// nf_tables' data types of set keys (nft's `TYPE_IPADDR`, `TYPE_IP6ADDR`).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;

/// The messages of a whole transaction, in the order of its script (its
/// [`Op`]s). `Err` when a step has no encoding yet
/// (a table or a base chain created, a rule not typed): then the caller
/// runs the script instead.
pub fn transaction_messages(
    tx: &Transaction,
) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, Unencodable> {
    let mut out = vec![];
    let mut set_ids = 0u32;
    for op in &tx.ops {
        match op {
            Op::Elements => {
                out.extend(element_messages(&tx.set_deltas));
                out.extend(map_element_messages(&tx.map_deltas)?);
            }
            Op::AddRule {
                family,
                chain,
                rule,
                tag,
            } => out.extend(add_rule_messages(*family, chain, rule, tag, &mut set_ids)?),
            op => out.push(op_message(op, &mut set_ids)?),
        }
    }
    Ok(out)
}

fn op_message(op: &Op, set_ids: &mut u32) -> Result<NetlinkMessage<NetfilterMessage>, Unencodable> {
    let table = || TABLE.to_string();
    Ok(match op {
        Op::AddTable(family) => {
            return Err(Unencodable(format!("add table {}", family.as_str())));
        }
        Op::AddChain {
            hook: Some(hook), ..
        } => return Err(Unencodable(format!("a base chain ({hook})"))),
        Op::AddChain {
            family,
            name,
            hook: None,
        } => nft_message(
            *family,
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(table()),
                    ChainAttribute::Name(name.clone()),
                ],
            }),
            NLM_F_CREATE,
        ),
        Op::DeleteChain { family, name } => nft_message(
            *family,
            NfTablesMessage::DeleteChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(table()),
                    ChainAttribute::Name(name.clone()),
                ],
            }),
            0,
        ),
        Op::FlushChain { family, name } => nft_message(
            *family,
            NfTablesMessage::DeleteRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(table()),
                    RuleAttribute::Chain(name.clone()),
                ],
            }),
            0,
        ),
        Op::AddSet { family, name, v6 } => {
            *set_ids += 1;
            let (key_type, key_len) = if *v6 {
                (TYPE_IP6ADDR, 16)
            } else {
                (TYPE_IPADDR, 4)
            };
            nft_message(
                *family,
                NfTablesMessage::NewSet(SetMessage {
                    attributes: vec![
                        SetAttribute::Table(table()),
                        SetAttribute::Name(name.clone()),
                        SetAttribute::Flags(SetFlags::Interval),
                        SetAttribute::KeyType(key_type),
                        SetAttribute::KeyLen(key_len),
                        SetAttribute::Id(*set_ids),
                        SetAttribute::UserData(UDATA_SET_KEY_BIG_ENDIAN.to_vec()),
                    ],
                }),
                NLM_F_CREATE,
            )
        }
        Op::DeleteSet { family, name } => nft_message(
            *family,
            NfTablesMessage::DeleteSet(SetMessage {
                attributes: vec![
                    SetAttribute::Table(table()),
                    SetAttribute::Name(name.clone()),
                ],
            }),
            0,
        ),
        Op::AddMap { name, .. } => return Err(Unencodable(format!("the map {name}"))),
        Op::FlushMap { name, .. } => return Err(Unencodable(format!("flush map {name}"))),
        Op::AddRule { .. } | Op::Elements => {
            return Err(Unencodable("not one message".into()));
        }
    })
}

fn control(message: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        message,
    ));
    m.header.flags = NLM_F_REQUEST;
    m
}

/// The bytes of one batch: begin, `messages` (each asking for an
/// acknowledgement) and end, numbered from `first_seq`.
pub fn batch_bytes(messages: &[NetlinkMessage<NetfilterMessage>], first_seq: u32) -> Vec<u8> {
    let mut all = Vec::with_capacity(messages.len() + 2);
    all.push(control(ControlMessage::BatchBegin));
    all.extend(messages.iter().cloned().map(|mut m| {
        m.header.flags |= NLM_F_ACK;
        m
    }));
    all.push(control(ControlMessage::BatchEnd));
    let mut bytes = vec![];
    for (seq, mut m) in (first_seq..).zip(all) {
        m.header.sequence_number = seq;
        m.finalize();
        let start = bytes.len();
        bytes.resize(start + m.buffer_len(), 0);
        m.serialize(&mut bytes[start..]);
    }
    bytes
}

fn describe(m: &NetlinkMessage<NetfilterMessage>) -> String {
    match &m.payload {
        netlink_packet_core::NetlinkPayload::InnerMessage(inner) => {
            format!("{:?}", inner.inner).chars().take(200).collect()
        }
        other => format!("{:?}", other.message_type()),
    }
}

/// A bound nf_tables socket of the calling thread's network namespace,
/// whose reads give up after [`ANSWER_TIMEOUT`].
fn socket() -> Result<Socket, BatchError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(BatchError::Socket)?;
    socket.bind_auto().map_err(BatchError::Socket)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0),
    )
    .map_err(|e| BatchError::Socket(e.into()))?;
    Ok(socket)
}

/// Sends `messages` as one batch (one transaction) on a netlink socket of
/// the calling thread's network namespace and waits for every answer.
pub fn send_batch(messages: &[NetlinkMessage<NetfilterMessage>]) -> Result<(), BatchError> {
    if messages.is_empty() {
        return Ok(());
    }
    let socket = socket()?;
    // Sequence numbers: the batch begin is 1, message i is i + 2.
    let bytes = batch_bytes(messages, 1);
    // The whole batch is one datagram (one transaction): room for it, past
    // the default limit if need be (as nft does; vnet runs as root).
    let room = bytes.len().saturating_mul(2);
    if room > SEND_BUFFER_DEFAULT {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBufForce, &room)
            .map_err(|e| BatchError::Socket(e.into()))?;
    }
    let answers = messages.len().saturating_mul(ANSWER_ROOM);
    if answers > RECEIVE_BUFFER_DEFAULT {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &answers)
            .map_err(|e| BatchError::Socket(e.into()))?;
    }
    socket.send(&bytes, 0).map_err(BatchError::Socket)?;
    let mut unanswered = messages.len();
    let mut refusal: Option<BatchError> = None;
    while unanswered > 0 {
        let (datagram, _) = match socket.recv_from_full() {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(refusal.unwrap_or(BatchError::Unanswered(unanswered)));
            }
            Err(e) => return Err(BatchError::Socket(e)),
        };
        let mut offset = 0;
        while offset < datagram.len() {
            let buf = NetlinkBuffer::new_checked(&datagram[offset..])
                .map_err(|e| BatchError::Decode(e.to_string()))?;
            let len = buf.length() as usize;
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
            if buf.message_type() != NLMSG_ERROR {
                continue;
            }
            let seq = buf.sequence_number();
            let payload = buf.payload();
            let answer = ErrorMessage::parse(
                &ErrorBuffer::new_checked(&payload)
                    .map_err(|e| BatchError::Decode(e.to_string()))?,
            )
            .map_err(|e| BatchError::Decode(e.to_string()))?;
            let Some(code) = answer.code else {
                unanswered = unanswered.saturating_sub(1);
                continue;
            };
            let source = std::io::Error::from_raw_os_error(-code.get());
            if seq < 2 || seq as usize - 2 >= messages.len() {
                // The batch header (or end) itself: nothing else will come.
                return Err(BatchError::Batch(source));
            }
            let index = seq as usize - 2;
            unanswered = unanswered.saturating_sub(1);
            refusal.get_or_insert(BatchError::Refused {
                index,
                what: describe(&messages[index]),
                source,
            });
        }
    }
    refusal.map_or(Ok(()), Err)
}

/// Asks for one table (`request`: a `GETTABLE` naming it) on a netlink
/// socket of the calling thread's network namespace: its user data (nft
/// keeps its comment there), empty if it has none; `None` if there is no
/// such table.
pub fn table_user_data(
    request: &NetlinkMessage<NetfilterMessage>,
) -> Result<Option<Vec<u8>>, BatchError> {
    let socket = socket()?;
    let mut request = request.clone();
    request.header.flags |= NLM_F_ACK;
    request.header.sequence_number = 1;
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(BatchError::Socket)?;
    let mut user_data = None;
    loop {
        let (datagram, _) = socket.recv_from_full().map_err(BatchError::Socket)?;
        let mut offset = 0;
        while offset < datagram.len() {
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(&datagram[offset..])
                .map_err(|e| BatchError::Decode(e.to_string()))?;
            let len = message.header.length as usize;
            if len == 0 {
                return Err(BatchError::Decode("an empty message".into()));
            }
            offset += (len + 3) & !3;
            match message.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(user_data),
                        Some(code) if -code.get() == libc::ENOENT => Ok(None),
                        Some(code) => Err(BatchError::Refused {
                            index: 0,
                            what: describe(&request),
                            source: std::io::Error::from_raw_os_error(-code.get()),
                        }),
                    };
                }
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewTable(table)),
                    ..
                }) => {
                    user_data = Some(
                        table
                            .attributes
                            .into_iter()
                            .find_map(|a| match a {
                                TableAttribute::UserData(data) => Some(data),
                                _ => None,
                            })
                            .unwrap_or_default(),
                    );
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
