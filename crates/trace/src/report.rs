//! The trace's answer: its steps, its verdict and the hint. Plain data with
//! serde (the API's JSON is exactly this); no logic beyond wording.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where along the path a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Source,
    AntiSpoofing,
    Egress,
    L2Lookup,
    /// The packet is off-link: to its subnet's gateway (a router interface).
    Gateway,
    /// A router's route lookup (connected subnet or extra route; TTL − 1).
    Routing,
    /// Out of a router's uplink: policy routing and NAT (a floating IP's
    /// SNAT on its own host, or the default SNAT on the gateway host).
    Nat,
    Tunnel,
    Destination,
    Ingress,
    Delivery,
    Reply,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::AntiSpoofing => "anti-spoofing",
            Stage::Egress => "egress",
            Stage::L2Lookup => "l2-lookup",
            Stage::Gateway => "gateway",
            Stage::Routing => "routing",
            Stage::Nat => "nat",
            Stage::Tunnel => "tunnel",
            Stage::Destination => "destination",
            Stage::Ingress => "ingress",
            Stage::Delivery => "delivery",
            Stage::Reply => "reply",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Nothing to decide here (checked, fine).
    Pass,
    Accept,
    Forward,
    Deliver,
    Drop,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::Accept => "accept",
            Decision::Forward => "forward",
            Decision::Deliver => "deliver",
            Decision::Drop => "drop",
        }
    }
}

/// One step: where (host), on what (network, port, router, route, group,
/// rule), and what happened. On a router's steps `port` is the router
/// interface (its port id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub stage: Stage,
    pub host: Option<String>,
    pub network: Option<String>,
    pub port: Option<String>,
    #[serde(default)]
    pub router: Option<String>,
    /// The route a router took (`routing` steps).
    #[serde(default)]
    pub route: Option<RouteTaken>,
    pub security_group: Option<String>,
    pub rule: Option<String>,
    pub decision: Decision,
    pub detail: String,
}

/// The route a router's lookup chose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTaken {
    /// The route's prefix: a connected subnet, or an extra route's
    /// destination.
    pub destination: IpNet,
    /// An extra route's next hop; `None` for a connected subnet.
    pub nexthop: Option<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Delivered,
    Dropped,
}

/// Why a packet was dropped: the missing piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    SourcePortUnbound,
    HostAgentDead,
    PortAdminDown,
    PortDown,
    NetworkNotCarried,
    NoSourceAddress,
    SpoofedSource,
    NoRuleAllows,
    NoRoute,
    /// The source's subnet has no gateway_ip, and the address is off-link.
    NoGateway,
    /// The subnet's gateway IP is on no router interface (nor any port).
    NoRouterInterface,
    /// The TTL ran out between routers (a routing loop).
    TtlExceeded,
    /// A router's gateway has no live host to run its default SNAT on.
    NoGatewayHost,
    /// From outside: the address is no realised floating IP, or nothing is
    /// forwarded for the packet's protocol and port.
    NoFloatingIp,
    /// From outside: the reply would not leave as the floating IP.
    ReplyNotTranslated,
    DifferentNetwork,
    NotOnNetwork,
    DestinationPortUnbound,
    RemoteHostNotRegistered,
}

/// The packet as traced, once its addresses are settled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedPacket {
    pub protocol: u8,
    pub source_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub packet: TracedPacket,
    pub steps: Vec<Step>,
    pub verdict: Verdict,
    /// Set when dropped.
    pub reason: Option<Reason>,
    /// The verdict in one sentence.
    pub message: String,
    /// What would fix it, when dropped.
    pub hint: Option<String>,
}

impl Trace {
    pub fn delivered(&self) -> bool {
        self.verdict == Verdict::Delivered
    }
}
