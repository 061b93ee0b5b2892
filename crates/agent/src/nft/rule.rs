//! One rule of vnet's as a typed value: owns rendering it both as the nft
//! text `ruleset` and `plan` use (and tag), and as the nf_tables expressions
//! nft 1.0.6 sends for that text (golden-bytes tested), so either path gives
//! the same `nft list`. It decides no rule of a host (that is `ruleset`) and
//! does no I/O. A shape not typed yet is [`Rule::Text`]: text only, no
//! expressions, so a change naming it must go by `nft -f`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netlink_packet_core::{DefaultNla, NLM_F_APPEND, NLM_F_CREATE, NetlinkMessage};
use netlink_packet_netfilter::NetfilterMessage;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute,
    RuleMessage, SetAttribute, SetDescription, SetElementAttribute, SetElementList,
    SetElementMessage, SetFlags, SetMessage, Verdict as NlVerdict, VerdictAttribute,
};

use super::netlink::nft_message;
use super::ruleset::{Family, TABLE};

/// Connection states a rule matches (`ct state …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    EstablishedRelated,
    Invalid,
}

/// One match of a rule, in the order it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `meta nfproto ipv4|ipv6`.
    NfProto { v6: bool },
    /// `meta l4proto N`.
    L4Proto(u8),
    /// `th dport LO` or `th dport LO-HI` (after `meta l4proto`).
    ThDport(u16, u16),
    /// `icmp[v6] type T [icmp[v6] code C]` (after `meta l4proto 1|58`).
    Icmp { v6: bool, ty: u8, code: Option<u8> },
    /// `udp sport S udp dport D`.
    UdpPorts { sport: u16, dport: u16 },
    /// `ct state …`.
    Ct(CtState),
    /// `ether saddr MAC`.
    EtherSaddr([u8; 6]),
    /// `ip|ip6 saddr|daddr ADDR`, one address written bare.
    Host { src: bool, addr: IpAddr },
    /// `arp saddr ether MAC arp saddr ip ADDR[/LEN]` (right after `ether
    /// saddr`: nft merges the two loads each pair makes).
    Arp {
        sha: [u8; 6],
        spa: Ipv4Addr,
        len: Option<u8>,
    },
    /// `ip|ip6 saddr|daddr PREFIX`, written with its length.
    Prefix { src: bool, net: IpNet },
    /// `ip|ip6 saddr|daddr @SET`: a lookup in a named set.
    InSet { src: bool, v6: bool, set: String },
    /// `icmpv6 type { T, U, … }`: a lookup in an anonymous set made with
    /// the rule.
    Icmpv6TypeIn(Vec<u8>),
    /// `ip|ip6 saddr|daddr { P, Q, … }`: a lookup in an anonymous interval
    /// set made with the rule (prefixes without overlaps).
    AnyOf {
        src: bool,
        v6: bool,
        nets: Vec<IpNet>,
    },
}

/// What a rule does when every match holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
}

/// A rule: typed matches and a verdict, or text: a shape not typed yet,
/// or one only the nft path writes (the base chains' lookups in the named
/// dispatch maps, written with their tables on a first start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    Typed {
        matches: Vec<Match>,
        verdict: Verdict,
    },
    /// `meta mark set meta mark | BITS`.
    MarkOr(u32),
    /// `iifname != "PREFIX*" udp dport PORT notrack`.
    NoTrackUdp {
        not_iif_prefix: String,
        dport: u16,
    },
    Text(String),
}

/// Why a rule has no expressions: the nft path must carry it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no nf_tables expressions for `{0}` yet")]
pub struct Unencodable(pub String);

impl Rule {
    pub fn new(matches: Vec<Match>, verdict: Verdict) -> Self {
        Rule::Typed { matches, verdict }
    }
}

fn l3(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

fn dir(src: bool) -> &'static str {
    if src { "saddr" } else { "daddr" }
}

fn mac(b: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::NfProto { v6 } => {
                write!(f, "meta nfproto {}", if *v6 { "ipv6" } else { "ipv4" })
            }
            Match::L4Proto(p) => write!(f, "meta l4proto {p}"),
            Match::ThDport(lo, hi) if lo == hi => write!(f, "th dport {lo}"),
            Match::ThDport(lo, hi) => write!(f, "th dport {lo}-{hi}"),
            Match::Icmp { v6, ty, code } => {
                let icmp = if *v6 { "icmpv6" } else { "icmp" };
                write!(f, "{icmp} type {ty}")?;
                match code {
                    Some(c) => write!(f, " {icmp} code {c}"),
                    None => Ok(()),
                }
            }
            Match::UdpPorts { sport, dport } => write!(f, "udp sport {sport} udp dport {dport}"),
            Match::Ct(CtState::EstablishedRelated) => f.write_str("ct state established,related"),
            Match::Ct(CtState::Invalid) => f.write_str("ct state invalid"),
            Match::EtherSaddr(b) => write!(f, "ether saddr {}", mac(b)),
            Match::Arp { sha, spa, len } => {
                write!(f, "arp saddr ether {} arp saddr ip {spa}", mac(sha))?;
                match len {
                    Some(l) => write!(f, "/{l}"),
                    None => Ok(()),
                }
            }
            Match::Host { src, addr } => write!(f, "{} {} {addr}", l3(addr.is_ipv6()), dir(*src)),
            Match::Prefix { src, net } => {
                write!(f, "{} {} {net}", l3(matches!(net, IpNet::V6(_))), dir(*src))
            }
            Match::InSet { src, v6, set } => write!(f, "{} {} @{set}", l3(*v6), dir(*src)),
            Match::Icmpv6TypeIn(types) => {
                let list: Vec<String> = types.iter().map(ToString::to_string).collect();
                write!(f, "icmpv6 type {{ {} }}", list.join(", "))
            }
            Match::AnyOf { src, v6, nets } => {
                let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
                write!(f, "{} {} {{ {} }}", l3(*v6), dir(*src), list.join(", "))
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Text(t) => f.write_str(t),
            Rule::MarkOr(bits) => write!(f, "meta mark set meta mark | {bits:#010x}"),
            Rule::NoTrackUdp {
                not_iif_prefix,
                dport,
            } => write!(
                f,
                "iifname != \"{not_iif_prefix}*\" udp dport {dport} notrack"
            ),
            Rule::Typed { matches, verdict } => {
                for m in matches {
                    write!(f, "{m} ")?;
                }
                write!(f, "{verdict}")
            }
        }
    }
}

// nf_tables constants (uapi `nf_tables.h`).
const PAYLOAD_LINK: u32 = 0;
pub(crate) const PAYLOAD_NETWORK: u32 = 1;
pub(crate) const PAYLOAD_TRANSPORT: u32 = 2;
/// `NFTA_CT_KEY`, `NFTA_CT_DREG`, `NFT_CT_STATE`.
const CT_KEY: u16 = 2;
const CT_DREG: u16 = 1;
const CT_STATE: u32 = 0;
/// Conntrack state bits (`NF_CT_STATE_BIT`): invalid 1, established 2,
/// related 4.
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED_RELATED: u32 = 2 | 4;
/// `NFPROTO_IPV4`, `NFPROTO_IPV6`.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const ETHERTYPE_ARP: u16 = 0x0806;
/// `NFT_BITWISE_BOOL`: mask and xor.
const BITWISE_BOOL: u32 = 0;
/// `NF_ACCEPT`, `NF_DROP`.
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
/// libnftnl's `NFTNL_UDATA_RULE_COMMENT`: the rule's comment, as user data
/// (a TLV: type, length, the string with its NUL).
const UDATA_RULE_COMMENT: u8 = 0;

pub(crate) fn expr(e: Expressions) -> ListAttribute<ExpressionAttribute> {
    ListAttribute::from(e)
}

pub(crate) fn meta_load(key: MetaKey) -> ListAttribute<ExpressionAttribute> {
    // nft writes the key before the register.
    expr(Expressions::Meta(vec![
        Meta::Key(key),
        Meta::DestinationRegister(Register::Reg1),
    ]))
}

pub(crate) fn payload_load(base: u32, offset: u32, len: u32) -> ListAttribute<ExpressionAttribute> {
    expr(Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ]))
}

pub(crate) fn cmp(op: Operator, value: Vec<u8>) -> ListAttribute<ExpressionAttribute> {
    expr(Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(value)),
    ]))
}

pub(crate) fn bitwise(mask: Vec<u8>) -> ListAttribute<ExpressionAttribute> {
    let len = mask.len() as u32;
    let xor = vec![0; mask.len()];
    expr(Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(len),
        Bitwise::Mask(DataAttribute::Value(mask)),
        Bitwise::Xor(DataAttribute::Value(xor)),
    ]))
}

/// `meta mark set meta mark | bits`: the mark (host order) kept where
/// `bits` is clear, then `bits` set.
fn mark_or(bits: u32) -> Vec<ListAttribute<ExpressionAttribute>> {
    vec![
        meta_load(MetaKey::Mark),
        expr(Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Op(BITWISE_BOOL),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value((!bits).to_ne_bytes().to_vec())),
            Bitwise::Xor(DataAttribute::Value(bits.to_ne_bytes().to_vec())),
        ])),
        expr(Expressions::Meta(vec![
            Meta::Key(MetaKey::Mark),
            Meta::SourceRegister(Register::Reg1),
        ])),
    ]
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Offset of the source address in the IP header (the destination follows
/// it), and the address's length.
fn addr_field(v6: bool, src: bool) -> (u32, u32) {
    match (v6, src) {
        (false, true) => (12, 4),
        (false, false) => (16, 4),
        (true, true) => (8, 16),
        (true, false) => (24, 16),
    }
}

/// An anonymous constant set a rule looks up in, sent just before it in
/// the same batch and named there by its id (the kernel names it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnonSet {
    pub id: u32,
    key_type: u32,
    key_len: u32,
    user_data: Vec<u8>,
    /// Keys.
    elements: Vec<Vec<u8>>,
    /// An interval set's elements instead, as nft writes them.
    intervals: Option<Vec<ListAttribute<SetElementAttribute>>>,
}

/// The name nft gives a new anonymous set (the kernel fills in the number).
const ANON_SET: &str = "__set%d";
/// nft's data types of addresses (`TYPE_IPADDR`, `TYPE_IP6ADDR`).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;

/// The user data nft writes for an anonymous interval set of addresses:
/// key byte order (big endian), elements merged, and the key's `typeof`
/// (the payload field: protocol `ip` 12 or `ip6` 13, field saddr/daddr).
fn addr_udata(v6: bool, src: bool) -> Vec<u8> {
    let (proto, field) = match (v6, src) {
        (false, true) => (12, 11),
        (false, false) => (12, 12),
        (true, true) => (13, 8),
        (true, false) => (13, 9),
    };
    vec![
        0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x02, 0x04, 0x01, 0x00, 0x00, 0x00, 0x03, 0x14, 0x00,
        0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x04, proto, 0x00, 0x00, 0x00, 0x01, 0x04,
        field, 0x00, 0x00, 0x00,
    ]
}

/// nft's data type of ICMPv6 types (`TYPE_ICMPV6_TYPE`).
const TYPE_ICMPV6_TYPE: u32 = 29;
/// The user data nft writes for a set keyed by `icmpv6 type`: key byte
/// order (big endian) and the key's `typeof` expression (the payload field
/// icmpv6 type), which `nft list` reads to print the elements.
const UDATA_ICMPV6_TYPE: [u8; 28] = [
    0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x03, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c,
    0x00, 0x04, 0x0e, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x00, 0x00, 0x00,
];

impl AnonSet {
    fn len(&self) -> usize {
        self.intervals
            .as_ref()
            .map_or(self.elements.len(), Vec::len)
    }

    fn messages(&self, family: Family) -> [NetlinkMessage<NetfilterMessage>; 2] {
        let mut attributes = vec![
            SetAttribute::Table(TABLE.to_string()),
            SetAttribute::Name(ANON_SET.to_string()),
        ];
        attributes.push(SetAttribute::Flags(if self.intervals.is_some() {
            SetFlags::Anonymous | SetFlags::Constant | SetFlags::Interval
        } else {
            SetFlags::Anonymous | SetFlags::Constant
        }));
        attributes.push(SetAttribute::KeyType(self.key_type));
        attributes.push(SetAttribute::KeyLen(self.key_len));
        attributes.extend([
            SetAttribute::Id(self.id),
            SetAttribute::Description(vec![SetDescription::Size(self.len() as u32)]),
            SetAttribute::UserData(self.user_data.clone()),
        ]);
        let set = NfTablesMessage::NewSet(SetMessage { attributes });
        let elements = NfTablesMessage::NewSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table(TABLE.to_string()),
                SetElementList::Set(ANON_SET.to_string()),
                SetElementList::SetId(self.id),
                SetElementList::Elements(match &self.intervals {
                    Some(intervals) => intervals.clone(),
                    None => self
                        .elements
                        .iter()
                        .map(|k| {
                            ListAttribute::Element(vec![SetElementAttribute::Key(
                                DataAttribute::Value(k.clone()),
                            )])
                        })
                        .collect(),
                }),
            ],
        });
        [
            nft_message(family, set, NLM_F_CREATE),
            nft_message(family, elements, NLM_F_CREATE),
        ]
    }
}

impl Rule {
    /// The rule's expressions as nft 1.0.6 sends them for its text, in a
    /// table of `family` (anonymous sets numbered from 1, not returned).
    pub fn expressions(
        &self,
        family: Family,
    ) -> Result<Vec<ListAttribute<ExpressionAttribute>>, Unencodable> {
        self.encode(family, &mut 0).map(|(_, e)| e)
    }

    /// The rule's expressions and the anonymous sets they look up in
    /// (ids after `last_set_id`, which is advanced).
    pub fn encode(
        &self,
        family: Family,
        last_set_id: &mut u32,
    ) -> Result<(Vec<AnonSet>, Vec<ListAttribute<ExpressionAttribute>>), Unencodable> {
        let unencodable = || Unencodable(self.to_string());
        let mut sets = vec![];
        let (matches, verdict) = match self {
            Rule::Typed { matches, verdict } => (matches, verdict),
            Rule::MarkOr(bits) => return Ok((vec![], mark_or(*bits))),
            Rule::NoTrackUdp {
                not_iif_prefix,
                dport,
            } => {
                if not_iif_prefix.is_empty() || not_iif_prefix.len() >= super::netlink::IFNAMSIZ {
                    return Err(unencodable());
                }
                return Ok((
                    vec![],
                    vec![
                        meta_load(MetaKey::Iifname),
                        cmp(Operator::NotEqual, not_iif_prefix.as_bytes().to_vec()),
                        meta_load(MetaKey::L4Proto),
                        cmp(Operator::Equal, vec![17]),
                        payload_load(PAYLOAD_TRANSPORT, 2, 2),
                        cmp(Operator::Equal, dport.to_be_bytes().to_vec()),
                        // An expression with no data: its name alone.
                        ListAttribute::Element(vec![ExpressionAttribute::Name("notrack".into())]),
                    ],
                ));
            }
            Rule::Text(_) => return Err(unencodable()),
        };
        let mut out = vec![];
        // The MAC of an `ether saddr` just written (ARP merges with it).
        let mut ether: Option<[u8; 6]> = None;
        let mut arp = false;
        // What earlier matches established, as nft's dependency tracking
        // has it: a match needing a protocol it does not know gets nft's
        // implicit check first (only the ones vnet's rules need).
        let mut l3: Option<bool> = None;
        let mut l4: Option<u8> = None;
        let need_l3 = |out: &mut Vec<_>, l3: &mut Option<bool>, v6: bool| match *l3 {
            Some(known) if known == v6 => Ok(()),
            Some(_) => Err(()),
            None => {
                match family {
                    Family::Inet => {
                        out.push(meta_load(MetaKey::Nfproto));
                        out.push(cmp(
                            Operator::Equal,
                            vec![if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }],
                        ));
                    }
                    Family::Bridge => {
                        out.push(meta_load(MetaKey::EtherTypeProtocol));
                        let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
                        out.push(cmp(Operator::Equal, ethertype.to_be_bytes().to_vec()));
                    }
                }
                *l3 = Some(v6);
                Ok(())
            }
        };
        for m in matches {
            let after_ether = ether.take();
            if arp {
                // Nothing vnet writes follows an ARP match.
                return Err(unencodable());
            }
            match m {
                Match::NfProto { v6 } => {
                    if family != Family::Inet || l3.is_some() {
                        return Err(unencodable());
                    }
                    need_l3(&mut out, &mut l3, *v6).map_err(|()| unencodable())?;
                }
                Match::L4Proto(p) => {
                    if l4.is_some() {
                        return Err(unencodable());
                    }
                    out.push(meta_load(MetaKey::L4Proto));
                    out.push(cmp(Operator::Equal, vec![*p]));
                    l4 = Some(*p);
                }
                Match::ThDport(lo, hi) => {
                    if l4.is_none() {
                        return Err(unencodable());
                    }
                    out.push(payload_load(PAYLOAD_TRANSPORT, 2, 2));
                    if lo == hi {
                        out.push(cmp(Operator::Equal, lo.to_be_bytes().to_vec()));
                    } else {
                        out.push(cmp(Operator::GreatherThanEqual, lo.to_be_bytes().to_vec()));
                        out.push(cmp(Operator::LessThanEqual, hi.to_be_bytes().to_vec()));
                    }
                }
                Match::Icmp { v6, ty, code } => {
                    if l4 != Some(if *v6 { 58 } else { 1 }) {
                        return Err(unencodable());
                    }
                    // nft merges type and code (adjacent bytes) into one load.
                    match code {
                        None => {
                            out.push(payload_load(PAYLOAD_TRANSPORT, 0, 1));
                            out.push(cmp(Operator::Equal, vec![*ty]));
                        }
                        Some(c) => {
                            out.push(payload_load(PAYLOAD_TRANSPORT, 0, 2));
                            out.push(cmp(Operator::Equal, vec![*ty, *c]));
                        }
                    }
                }
                Match::UdpPorts { sport, dport } => {
                    match l4 {
                        None => {
                            out.push(meta_load(MetaKey::L4Proto));
                            out.push(cmp(Operator::Equal, vec![17]));
                            l4 = Some(17);
                        }
                        Some(17) => {}
                        Some(_) => return Err(unencodable()),
                    }
                    // Source and destination port, adjacent: one load.
                    out.push(payload_load(PAYLOAD_TRANSPORT, 0, 4));
                    let mut v = sport.to_be_bytes().to_vec();
                    v.extend(dport.to_be_bytes());
                    out.push(cmp(Operator::Equal, v));
                }
                Match::Ct(state) => {
                    let bits = match state {
                        CtState::EstablishedRelated => CT_ESTABLISHED_RELATED,
                        CtState::Invalid => CT_INVALID,
                    };
                    out.push(expr(Expressions::Other {
                        expression_type: "ct".into(),
                        attributes: vec![
                            DefaultNla::new(CT_KEY, CT_STATE.to_be_bytes().to_vec()),
                            DefaultNla::new(CT_DREG, 1u32.to_be_bytes().to_vec()),
                        ],
                    }));
                    out.push(bitwise(bits.to_ne_bytes().to_vec()));
                    out.push(cmp(Operator::NotEqual, vec![0; 4]));
                }
                Match::EtherSaddr(mac) => {
                    if family != Family::Bridge {
                        return Err(unencodable());
                    }
                    out.push(payload_load(PAYLOAD_LINK, 6, 6));
                    out.push(cmp(Operator::Equal, mac.to_vec()));
                    ether = Some(*mac);
                }
                Match::Arp { sha, spa, len } => {
                    let Some(src_mac) = after_ether.filter(|_| l3.is_none()) else {
                        return Err(unencodable());
                    };
                    if !matches!(len, None | Some(32)) {
                        return Err(unencodable());
                    }
                    // nft's dependency (`ether type arp`) follows the source
                    // MAC in the frame: one load of both; so are the ARP
                    // sender's MAC and address.
                    out.truncate(out.len() - 2);
                    out.push(payload_load(PAYLOAD_LINK, 6, 8));
                    let mut v = src_mac.to_vec();
                    v.extend(ETHERTYPE_ARP.to_be_bytes());
                    out.push(cmp(Operator::Equal, v));
                    out.push(payload_load(PAYLOAD_NETWORK, 8, 10));
                    let mut v = sha.to_vec();
                    v.extend(spa.octets());
                    out.push(cmp(Operator::Equal, v));
                    arp = true;
                }
                Match::Host { src, addr } => {
                    let v6 = addr.is_ipv6();
                    need_l3(&mut out, &mut l3, v6).map_err(|()| unencodable())?;
                    let (offset, len) = addr_field(v6, *src);
                    out.push(payload_load(PAYLOAD_NETWORK, offset, len));
                    out.push(cmp(Operator::Equal, octets(*addr)));
                }
                Match::Prefix { src, net } => {
                    let v6 = matches!(net, IpNet::V6(_));
                    need_l3(&mut out, &mut l3, v6).map_err(|()| unencodable())?;
                    let (offset, len) = addr_field(v6, *src);
                    let plen = u32::from(net.prefix_len());
                    let addr = octets(net.trunc().network());
                    if plen == 0 {
                        return Err(unencodable());
                    }
                    if plen % 8 == 0 {
                        // Byte-aligned: nft loads only the prefix's bytes.
                        let bytes = plen / 8;
                        out.push(payload_load(PAYLOAD_NETWORK, offset, bytes));
                        out.push(cmp(Operator::Equal, addr[..bytes as usize].to_vec()));
                    } else {
                        out.push(payload_load(PAYLOAD_NETWORK, offset, len));
                        out.push(bitwise(octets(net.netmask())));
                        out.push(cmp(Operator::Equal, addr));
                    }
                }
                Match::InSet { src, v6, set } => {
                    need_l3(&mut out, &mut l3, *v6).map_err(|()| unencodable())?;
                    let (offset, len) = addr_field(*v6, *src);
                    out.push(payload_load(PAYLOAD_NETWORK, offset, len));
                    // By name only: the kernel finds the set by its name
                    // (nft adds the id of its own cache, read only when no
                    // set has the name).
                    out.push(expr(Expressions::Lookup(vec![
                        Lookup::SourceRegister(Register::Reg1),
                        Lookup::Set(set.clone()),
                    ])));
                }
                Match::Icmpv6TypeIn(types) => {
                    match l4 {
                        Some(58) => {}
                        Some(_) => return Err(unencodable()),
                        None => {
                            if l3.is_none() && family == Family::Bridge {
                                return Err(unencodable());
                            }
                            need_l3(&mut out, &mut l3, true).map_err(|()| unencodable())?;
                            out.push(meta_load(MetaKey::L4Proto));
                            out.push(cmp(Operator::Equal, vec![58]));
                            l4 = Some(58);
                        }
                    }
                    *last_set_id += 1;
                    let id = *last_set_id;
                    sets.push(AnonSet {
                        id,
                        key_type: TYPE_ICMPV6_TYPE,
                        key_len: 1,
                        user_data: UDATA_ICMPV6_TYPE.to_vec(),
                        intervals: None,
                        elements: types.iter().map(|t| vec![*t]).collect(),
                    });
                    out.push(payload_load(PAYLOAD_TRANSPORT, 0, 1));
                    out.push(expr(Expressions::Lookup(vec![
                        Lookup::SourceRegister(Register::Reg1),
                        Lookup::Set(ANON_SET.to_string()),
                        Lookup::SetId(id),
                    ])));
                }
                Match::AnyOf { src, v6, nets } => {
                    // A prefix reaching the top of the space is an open
                    // interval: not encoded.
                    let top = |n: &IpNet| match n {
                        IpNet::V4(n) => n.broadcast() == Ipv4Addr::BROADCAST,
                        IpNet::V6(n) => u128::from(n.broadcast()) == u128::MAX,
                    };
                    if nets.is_empty() || nets.iter().any(|n| top(n) || n.addr().is_ipv6() != *v6) {
                        return Err(unencodable());
                    }
                    need_l3(&mut out, &mut l3, *v6).map_err(|()| unencodable())?;
                    let (offset, len) = addr_field(*v6, *src);
                    *last_set_id += 1;
                    let id = *last_set_id;
                    sets.push(AnonSet {
                        id,
                        key_type: if *v6 { TYPE_IP6ADDR } else { TYPE_IPADDR },
                        key_len: len,
                        user_data: addr_udata(*v6, *src),
                        elements: vec![],
                        intervals: Some(super::netlink::interval_elements(nets, true)),
                    });
                    out.push(payload_load(PAYLOAD_NETWORK, offset, len));
                    out.push(expr(Expressions::Lookup(vec![
                        Lookup::SourceRegister(Register::Reg1),
                        Lookup::Set(ANON_SET.to_string()),
                        Lookup::SetId(id),
                    ])));
                }
            }
        }
        let data = match verdict {
            Verdict::Accept => vec![VerdictAttribute::Code(NlVerdict::Other(NF_ACCEPT))],
            Verdict::Drop => vec![VerdictAttribute::Code(NlVerdict::Other(NF_DROP))],
            Verdict::Return => vec![VerdictAttribute::Code(NlVerdict::Return)],
            Verdict::Jump(chain) => vec![
                VerdictAttribute::Code(NlVerdict::Jump),
                VerdictAttribute::Chain(chain.clone()),
            ],
        };
        out.push(expr(Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(data)),
        ])));
        Ok((sets, out))
    }
}

/// The rule's comment as nft stores it: user data `plan` reads back as the
/// rule's tag.
pub fn comment_userdata(comment: &str) -> Vec<u8> {
    let mut out = vec![UDATA_RULE_COMMENT, (comment.len() + 1).min(255) as u8];
    out.extend(comment.as_bytes().iter().take(254));
    out.push(0);
    out
}

/// `add rule FAMILY vnet CHAIN RULE comment "TAG"`: the anonymous sets it
/// looks up in (ids after `last_set_id`), then the rule, appended at the
/// chain's end, as nft sends them.
pub fn add_rule_messages(
    family: Family,
    chain: &str,
    rule: &Rule,
    tag: &str,
    last_set_id: &mut u32,
) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, Unencodable> {
    let (sets, expressions) = rule.encode(family, last_set_id)?;
    let mut out: Vec<_> = sets.iter().flat_map(|s| s.messages(family)).collect();
    out.push(nft_message(
        family,
        NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.to_string()),
                RuleAttribute::Chain(chain.to_string()),
                RuleAttribute::Expressions(expressions),
                RuleAttribute::UserData(comment_userdata(tag)),
            ],
        }),
        NLM_F_CREATE | NLM_F_APPEND,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests;
