//! The trace's answer: its steps, its verdict and the hint. Plain data with
//! serde (the API's JSON is exactly this); no logic beyond wording.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Where along the path a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Source,
    AntiSpoofing,
    Egress,
    L2Lookup,
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

/// One step: where (host), on what (network, port, group, rule), and what
/// happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub stage: Stage,
    pub host: Option<String>,
    pub network: Option<String>,
    pub port: Option<String>,
    pub security_group: Option<String>,
    pub rule: Option<String>,
    pub decision: Decision,
    pub detail: String,
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
