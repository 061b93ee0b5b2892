//! A router namespace's nftables table (its NAT, its metering) as a typed
//! value: owns rendering it as the `nft -f` script that replaces it whole
//! (whose body the fingerprint hashes) and as the nf_tables messages nft
//! 1.0.6 sends for that script (golden-bytes tested), so that the agent
//! replaces a table in-process, in one transaction, and either path gives
//! the same `nft list`. Pure: decides no rule (that is [`super::nat`] and
//! [`super::metering`]) and sends nothing.

use std::fmt::{self, Write};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE, NetlinkMessage};
use netlink_packet_netfilter::nftables::ChainMessage;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, DataAttribute, ExpressionAttribute, Expressions, Hook, HookNumber, Immediate,
    InetHookNumber, ListAttribute, MetaKey, NfTablesMessage, Operator, Register, RuleAttribute,
    RuleMessage, TableAttribute, TableMessage, Verdict as NlVerdict, VerdictAttribute,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};

use crate::nft::netlink::{IFNAMSIZ, request};
use crate::nft::rule::{
    PAYLOAD_NETWORK, PAYLOAD_TRANSPORT, Unencodable, bitwise, cmp, comment_userdata, expr,
    meta_load, payload_load,
};
use crate::nft::ruleset::fnv1a;

/// What a table's comment says before its fingerprint.
const COMMENT_PREFIX: &str = "vnet ";
/// libnftnl's `NFTNL_UDATA_TABLE_COMMENT`.
const UDATA_TABLE_COMMENT: u8 = 0;
/// `NF_ACCEPT`: a base chain's policy.
const NF_ACCEPT: u32 = 1;
/// `NFT_MSG_NEWOBJ`, `NFT_OBJECT_COUNTER` and the attributes of an object
/// and of a counter (uapi `nf_tables.h`).
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// `nat` expression: `NFTA_NAT_TYPE` (`NFT_NAT_SNAT` 0, `NFT_NAT_DNAT` 1),
/// `NFTA_NAT_FAMILY`, `NFTA_NAT_REG_ADDR_MIN`, `NFTA_NAT_REG_PROTO_MIN`,
/// `NFTA_NAT_FLAGS` (`NF_NAT_RANGE_PROTO_SPECIFIED`).
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NAT_PROTO_SPECIFIED: u32 = 2;
/// `NFT_REG_1`, `NFT_REG_2`: the registers the translation reads.
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFPROTO_IPV4: u32 = 2;
/// `objref` expression: `NFTA_OBJREF_IMM_TYPE`, `NFTA_OBJREF_IMM_NAME`.
const NFTA_OBJREF_IMM_TYPE: u16 = 1;
const NFTA_OBJREF_IMM_NAME: u16 = 2;

/// A table of family `ip` in a router's namespace, replaced whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    /// FNV-1a of the table's body (its counters and chains as text), hex:
    /// what its comment says, so that a look at the kernel tells whether
    /// it is current without reading rules back.
    pub fingerprint: String,
    /// Named counters.
    pub counters: Vec<String>,
    pub chains: Vec<Chain>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<BaseHook>,
    pub rules: Vec<Rule>,
}

/// The base chains a router's tables have (each with policy accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseHook {
    /// `type nat hook prerouting priority dstnat`.
    NatPrerouting,
    /// `type nat hook postrouting priority srcnat`.
    NatPostrouting,
    /// `type filter hook forward priority filter`.
    FilterForward,
}

/// Matches, in the order written, and what the rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `iifname ["!="] "NAME"` (`input`) or `oifname …`.
    Interface {
        input: bool,
        equal: bool,
        name: String,
    },
    /// `ip saddr|daddr ADDR`, written bare.
    Host { source: bool, address: Ipv4Addr },
    /// `ip saddr|daddr PREFIX`, written with its length.
    Prefix { source: bool, prefix: Ipv4Net },
    /// `tcp|udp|udplite|sctp dport PORT`.
    Dport { protocol: u8, port: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `dnat to ADDR[:PORT]`.
    Dnat {
        to: Ipv4Addr,
        port: Option<u16>,
    },
    /// `snat to ADDR`.
    Snat {
        to: Ipv4Addr,
    },
    Jump(String),
    Return,
    /// `counter name "NAME" return`.
    CountAndReturn(String),
}

impl Table {
    /// The table with these counters and chains, fingerprinted.
    pub fn new(name: &'static str, counters: Vec<String>, chains: Vec<Chain>) -> Self {
        let mut table = Table {
            name,
            fingerprint: String::new(),
            counters,
            chains,
        };
        table.fingerprint = format!("{:016x}", fnv1a(table.body().as_bytes()));
        table
    }

    fn body(&self) -> String {
        let mut body = String::new();
        for counter in &self.counters {
            let _ = writeln!(body, "\tcounter {counter} {{\n\t}}");
        }
        for chain in &self.chains {
            let _ = writeln!(body, "\tchain {} {{", chain.name);
            if let Some(hook) = chain.hook {
                let _ = writeln!(body, "\t\t{hook}");
            }
            for rule in &chain.rules {
                let _ = writeln!(body, "\t\t{rule}");
            }
            let _ = writeln!(body, "\t}}");
        }
        body
    }

    /// A script that replaces the table whole, in one transaction.
    pub fn text(&self) -> String {
        let name = self.name;
        format!(
            "table ip {name} {{}}\ndelete table ip {name}\ntable ip {name} {{\n\tcomment \"{COMMENT_PREFIX}{}\"\n{}}}\n",
            self.fingerprint,
            self.body()
        )
    }

    /// The messages of [`Table::text`], as nft sends them: the table made
    /// if missing, deleted, made again with its comment; its chains, its
    /// counters, its rules.
    pub fn messages(&self) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, Unencodable> {
        let table = |extra: Vec<TableAttribute>| {
            let mut attributes = vec![
                TableAttribute::Name(self.name.to_owned()),
                TableAttribute::Flags(Default::default()),
            ];
            attributes.extend(extra);
            TableMessage { attributes }
        };
        let mut out = vec![
            message(NfTablesMessage::NewTable(table(vec![])), NLM_F_CREATE),
            delete_message(self.name),
            message(
                NfTablesMessage::NewTable(table(vec![TableAttribute::UserData(comment_userdata(
                    &format!("{COMMENT_PREFIX}{}", self.fingerprint),
                ))])),
                NLM_F_CREATE,
            ),
        ];
        for chain in &self.chains {
            let mut attributes = vec![
                ChainAttribute::Table(self.name.to_owned()),
                ChainAttribute::Name(chain.name.clone()),
            ];
            if let Some(hook) = chain.hook {
                let (kind, number, priority) = hook.kernel();
                attributes.extend([
                    ChainAttribute::Type(kind.to_owned()),
                    ChainAttribute::Policy(NF_ACCEPT),
                    ChainAttribute::Hook(vec![
                        Hook::Number(HookNumber::Inet(number)),
                        Hook::Priority(priority as u32),
                    ]),
                ]);
            }
            out.push(message(
                NfTablesMessage::NewChain(ChainMessage { attributes }),
                NLM_F_CREATE,
            ));
        }
        for counter in &self.counters {
            let zero = 0u64.to_be_bytes().to_vec();
            let data = [
                DefaultNla::new(NFTA_COUNTER_BYTES, zero.clone()),
                DefaultNla::new(NFTA_COUNTER_PACKETS, zero),
            ];
            out.push(message(
                NfTablesMessage::NewObject(vec![
                    DefaultNla::new(NFTA_OBJ_TABLE, c_string(self.name)),
                    DefaultNla::new(NFTA_OBJ_NAME, c_string(counter)),
                    DefaultNla::new(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_OBJ_DATA | NLA_F_NESTED, nested(&data)),
                ]),
                NLM_F_CREATE,
            ));
        }
        for chain in &self.chains {
            for rule in &chain.rules {
                out.push(message(
                    NfTablesMessage::NewRule(RuleMessage {
                        attributes: vec![
                            RuleAttribute::Table(self.name.to_owned()),
                            RuleAttribute::Chain(chain.name.clone()),
                            RuleAttribute::Expressions(rule.expressions()?),
                        ],
                    }),
                    NLM_F_CREATE | NLM_F_APPEND,
                ));
            }
        }
        Ok(out)
    }
}

/// `delete table ip NAME`.
pub fn delete_message(name: &str) -> NetlinkMessage<NetfilterMessage> {
    message(NfTablesMessage::DeleteTable(named(name)), 0)
}

/// `list table ip NAME`, answered by the table (or `ENOENT`).
pub fn get_message(name: &str) -> NetlinkMessage<NetfilterMessage> {
    message(NfTablesMessage::GetTable(named(name)), 0)
}

fn named(name: &str) -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(name.to_owned())],
    }
}

/// The fingerprint a table's user data (its comment) carries.
pub fn fingerprint_of(user_data: &[u8]) -> Option<String> {
    let mut rest = user_data;
    while let [kind, len, tail @ ..] = rest {
        let value = tail.get(..usize::from(*len))?;
        if *kind == UDATA_TABLE_COMMENT {
            let comment = std::str::from_utf8(value).ok()?.trim_end_matches('\0');
            return comment.strip_prefix(COMMENT_PREFIX).map(str::to_owned);
        }
        rest = &tail[usize::from(*len)..];
    }
    None
}

fn message(inner: NfTablesMessage, flags: u16) -> NetlinkMessage<NetfilterMessage> {
    request(NetfilterProtoFamily::IPv4, inner, flags)
}

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn nested(attributes: &[DefaultNla]) -> Vec<u8> {
    use netlink_packet_core::Emitable;
    let mut bytes = vec![0; attributes.buffer_len()];
    attributes.emit(&mut bytes);
    bytes
}

impl BaseHook {
    /// Its chain type, hook and priority as the kernel takes them.
    fn kernel(self) -> (&'static str, InetHookNumber, i32) {
        match self {
            BaseHook::NatPrerouting => ("nat", InetHookNumber::PreRouting, -100),
            BaseHook::NatPostrouting => ("nat", InetHookNumber::PostRouting, 100),
            BaseHook::FilterForward => ("filter", InetHookNumber::Forward, 0),
        }
    }
}

impl fmt::Display for BaseHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, hook, priority) = match self {
            BaseHook::NatPrerouting => ("nat", "prerouting", "dstnat"),
            BaseHook::NatPostrouting => ("nat", "postrouting", "srcnat"),
            BaseHook::FilterForward => ("filter", "forward", "filter"),
        };
        write!(
            f,
            "type {kind} hook {hook} priority {priority}; policy accept;"
        )
    }
}

/// nftables' name of a protocol a `dport` may follow.
pub fn protocol_name(number: u8) -> Option<&'static str> {
    match number {
        6 => Some("tcp"),
        17 => Some("udp"),
        136 => Some("udplite"),
        132 => Some("sctp"),
        _ => None,
    }
}

fn direction(source: bool) -> &'static str {
    if source { "saddr" } else { "daddr" }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Interface { input, equal, name } => {
                let which = if *input { "iifname" } else { "oifname" };
                let op = if *equal { "" } else { "!= " };
                write!(f, "{which} {op}\"{name}\"")
            }
            Match::Host { source, address } => write!(f, "ip {} {address}", direction(*source)),
            Match::Prefix { source, prefix } => write!(f, "ip {} {prefix}", direction(*source)),
            Match::Dport { protocol, port } => match protocol_name(*protocol) {
                Some(name) => write!(f, "{name} dport {port}"),
                None => write!(f, "meta l4proto {protocol} th dport {port}"),
            },
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        match &self.action {
            Action::Dnat { to, port: None } => write!(f, "dnat to {to}"),
            Action::Dnat {
                to,
                port: Some(port),
            } => write!(f, "dnat to {to}:{port}"),
            Action::Snat { to } => write!(f, "snat to {to}"),
            Action::Jump(chain) => write!(f, "jump {chain}"),
            Action::Return => f.write_str("return"),
            Action::CountAndReturn(counter) => write!(f, "counter name \"{counter}\" return"),
        }
    }
}

fn verdict(data: Vec<VerdictAttribute>) -> ListAttribute<ExpressionAttribute> {
    expr(Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(data)),
    ]))
}

fn load(register: Register, value: Vec<u8>) -> ListAttribute<ExpressionAttribute> {
    expr(Expressions::Immediate(vec![
        Immediate::DestinationRegister(register),
        Immediate::Data(DataAttribute::Value(value)),
    ]))
}

fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

impl Rule {
    /// The rule's expressions as nft 1.0.6 sends them for its text.
    pub fn expressions(&self) -> Result<Vec<ListAttribute<ExpressionAttribute>>, Unencodable> {
        let mut out = vec![];
        for m in &self.matches {
            match m {
                Match::Interface { input, equal, name } => {
                    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
                        return Err(Unencodable(self.to_string()));
                    }
                    let mut padded = name.as_bytes().to_vec();
                    padded.resize(IFNAMSIZ, 0);
                    out.push(meta_load(if *input {
                        MetaKey::Iifname
                    } else {
                        MetaKey::Oifname
                    }));
                    let op = if *equal {
                        Operator::Equal
                    } else {
                        Operator::NotEqual
                    };
                    out.push(cmp(op, padded));
                }
                Match::Host { source, address } => {
                    out.push(payload_load(PAYLOAD_NETWORK, offset(*source), 4));
                    out.push(cmp(Operator::Equal, address.octets().to_vec()));
                }
                Match::Prefix { source, prefix } => {
                    let length = u32::from(prefix.prefix_len());
                    let network = prefix.trunc().network().octets();
                    if length > 0 && length % 8 == 0 {
                        // Byte-aligned: nft loads only the prefix's bytes.
                        let bytes = length / 8;
                        out.push(payload_load(PAYLOAD_NETWORK, offset(*source), bytes));
                        out.push(cmp(Operator::Equal, network[..bytes as usize].to_vec()));
                    } else {
                        out.push(payload_load(PAYLOAD_NETWORK, offset(*source), 4));
                        out.push(bitwise(prefix.netmask().octets().to_vec()));
                        out.push(cmp(Operator::Equal, network.to_vec()));
                    }
                }
                Match::Dport { protocol, port } => {
                    out.push(meta_load(MetaKey::L4Proto));
                    out.push(cmp(Operator::Equal, vec![*protocol]));
                    out.push(payload_load(PAYLOAD_TRANSPORT, 2, 2));
                    out.push(cmp(Operator::Equal, port.to_be_bytes().to_vec()));
                }
            }
        }
        match &self.action {
            Action::Dnat { to, port } => out.extend(nat(true, *to, *port)),
            Action::Snat { to } => out.extend(nat(false, *to, None)),
            Action::Jump(chain) => out.push(verdict(vec![
                VerdictAttribute::Code(NlVerdict::Jump),
                VerdictAttribute::Chain(chain.clone()),
            ])),
            Action::Return => out.push(verdict(vec![VerdictAttribute::Code(NlVerdict::Return)])),
            Action::CountAndReturn(counter) => {
                out.push(expr(Expressions::Other {
                    expression_type: "objref".into(),
                    attributes: vec![
                        u32_nla(NFTA_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER),
                        // libnftnl writes this name without its NUL.
                        DefaultNla::new(NFTA_OBJREF_IMM_NAME, counter.as_bytes().to_vec()),
                    ],
                }));
                out.push(verdict(vec![VerdictAttribute::Code(NlVerdict::Return)]));
            }
        }
        Ok(out)
    }
}

/// `dnat|snat to ADDR[:PORT]`: the address (and port) loaded into
/// registers, then the translation reading them.
fn nat(dnat: bool, to: Ipv4Addr, port: Option<u16>) -> Vec<ListAttribute<ExpressionAttribute>> {
    let mut out = vec![load(Register::Reg1, to.octets().to_vec())];
    let mut attributes = vec![
        u32_nla(NFTA_NAT_TYPE, u32::from(dnat)),
        u32_nla(NFTA_NAT_FAMILY, NFPROTO_IPV4),
        u32_nla(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1),
    ];
    if let Some(port) = port {
        out.push(load(Register::Reg2, port.to_be_bytes().to_vec()));
        attributes.extend([
            u32_nla(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2),
            u32_nla(NFTA_NAT_FLAGS, NAT_PROTO_SPECIFIED),
        ]);
    }
    out.push(expr(Expressions::Other {
        expression_type: "nat".into(),
        attributes,
    }));
    out
}

/// Offset of the source (or destination) address in the IPv4 header.
fn offset(source: bool) -> u32 {
    if source { 12 } else { 16 }
}

#[cfg(test)]
mod tests;
