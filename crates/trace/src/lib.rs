//! `vnet trace`: a packet walked through the same compiled per-host state
//! the agents program (anti-spoofing, egress group, L2 lookup, the gateway
//! and the distributed routers on the sending host, VXLAN tunnel, ingress
//! group, delivery), with every step's host, object and decision,
//! and where it dies, the rule or missing piece that killed it and a hint.
//! Pure: no I/O, no clock; liveness comes in through [`Facts`]. It must
//! never copy a host's state: every question is a borrowing lookup.

mod filter;
mod report;
mod route;
mod view;
mod walk;

use std::net::IpAddr;

use model::MacAddr;
use serde::{Deserialize, Serialize};

pub use filter::{Allowed, ChainDecision, Flow, PORT_PROTOCOLS, allowed_source, port_chain};
pub use report::{Decision, Reason, RouteTaken, Stage, Step, Trace, TracedPacket, Verdict};
pub use view::{Compiled, Facts, GroupRef, NetworkRef, PortRef, Snapshots};
pub use walk::trace;

/// What to trace: a packet from a port to an address or a port, or from
/// the outside to a floating IP or (IPv6, not NATed) a port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub from: Source,
    pub to: Target,
    pub packet: Packet,
}

/// Where the packet starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A port, by id.
    Port(String),
    /// An address outside the cloud, on an external network's far side
    /// (toward a floating IP, or a port's IPv6 address).
    Outside(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Ip(IpAddr),
    /// One of the port's fixed IPs (of the source's family, IPv4 first).
    Port(String),
}

/// The packet's headers; what is left out takes the source port's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 ipv6-icmp, …).
    pub protocol: u8,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    /// ICMP type and code (echo request when left out).
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// A source address other than the port's own (to test anti-spoofing).
    pub source_ip: Option<IpAddr>,
    pub source_mac: Option<MacAddr>,
}

/// A query the trace cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("port {0} could not be found")]
    UnknownSourcePort(String),
    #[error("port {0} could not be found")]
    UnknownDestinationPort(String),
    #[error("{0}")]
    InvalidPacket(String),
    /// From the outside, IPv4 goes to an address (a floating IP); a port
    /// is reached only at an IPv6 address (IPv6 is not NATed).
    #[error(
        "from outside, IPv4 reaches a port only through a floating IP: trace to the floating IP's address (a port is reached directly only over IPv6, from an IPv6 source, at an IPv6 address it holds)"
    )]
    OutsideToPort,
}
