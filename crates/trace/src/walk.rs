//! The walk itself: one packet from its source port to its destination
//! (on-link, or through its gateway and the routers of the sending host),
//! and for a routed flow its reply back, step by step, each step a few
//! lookups in the compiled state (see `view`). It decides nothing the
//! agent's kernel state would not decide; the nftables semantics live in
//! `filter`, a router's table in `route`, the wording of hints here.

use std::net::IpAddr;

use compiler::PortSeen;
use compiler::protocol::{
    LocalPortSpec, PortSecuritySpec, RouterGatewaySpec, RuleDirection, RuleEthertype, RuleRemote,
    RuleSpec,
};
use model::PortStatus;

use crate::filter::{self, Allowed, ChainDecision, Flow, PORT_PROTOCOLS};
use crate::report::{Decision, Reason, RouteTaken, Stage, Step, Trace, TracedPacket, Verdict};
use crate::route::{RouteChoice, route_lookup};
use crate::view::{Compiled, Facts, PortRef};
use crate::{Packet, Query, Source, Target, TraceError};

/// The source port of a packet whose query names none: an ephemeral one
/// (no rule vnet programs matches source ports but DHCP's, 67/68/546/547).
const EPHEMERAL_PORT: u16 = 40_000;

/// Walk `query`'s packet through `view` (what the agents program), with
/// `facts` for liveness and port status.
pub fn trace<V: Compiled + ?Sized, F: Facts + ?Sized>(
    view: &V,
    facts: &F,
    query: &Query,
) -> Result<Trace, TraceError> {
    let mut walk = Walk {
        view,
        facts,
        steps: Vec::new(),
        packet: TracedPacket {
            protocol: query.packet.protocol,
            source_ip: None,
            destination_ip: None,
            source_port: query.packet.source_port,
            destination_port: query.packet.destination_port,
            icmp_type: None,
            icmp_code: None,
        },
    };
    let outcome = walk.run(query)?;
    let (verdict, reason, message, hint) = match outcome {
        Ok(message) => (Verdict::Delivered, None, message, None),
        Err(stop) => (Verdict::Dropped, Some(stop.reason), stop.message, stop.hint),
    };
    Ok(Trace {
        packet: walk.packet,
        steps: walk.steps,
        verdict,
        reason,
        message,
        hint,
    })
}

/// Where the packet died.
struct Stop {
    reason: Reason,
    message: String,
    hint: Option<String>,
}

fn stop(reason: Reason, message: String, hint: impl Into<Option<String>>) -> Stop {
    Stop {
        reason,
        message,
        hint: hint.into(),
    }
}

struct Walk<'v, V: ?Sized, F: ?Sized> {
    view: &'v V,
    facts: &'v F,
    steps: Vec<Step>,
    packet: TracedPacket,
}

/// A port's chain on a host: what `filter` reads.
#[derive(Clone, Copy)]
struct PortAt<'a> {
    host: &'a str,
    port: &'a str,
    /// `None`: port security disabled (or not held).
    security: Option<&'a PortSecuritySpec>,
}

/// A step's objects.
#[derive(Clone, Copy, Default)]
struct On<'a> {
    host: Option<&'a str>,
    network: Option<&'a str>,
    port: Option<&'a str>,
    router: Option<&'a str>,
    group: Option<&'a str>,
    rule: Option<&'a str>,
}

/// A step on a host's bridge of a network, at a router or port.
fn on_net<'a>(
    host: &'a str,
    net: &'a str,
    router: Option<&'a str>,
    port: Option<&'a str>,
) -> On<'a> {
    On {
        host: Some(host),
        network: Some(net),
        port,
        router,
        ..On::default()
    }
}

/// Where a lookup on a bridge sends the frame.
enum Reached<'a> {
    /// A port's device, on this host or behind a tunnel, on `network`.
    Port {
        id: String,
        port: PortRef<'a>,
        seen: PortSeen<'a>,
        network: String,
    },
    /// A router's interface: its veth on this host's bridge.
    Router { router: String, interface: String },
    /// Out of the cloud: a router's uplink on `host`, onto the external
    /// network, with the source it leaves with.
    Outside {
        host: String,
        network: String,
        source: IpAddr,
    },
}

/// What became of a packet from the outside once a router routed it.
enum Inside<'a> {
    /// It reached a router's own address: the message.
    Router(String),
    /// Delivered to port `target` on `host`; where its reply went, if it
    /// needs one.
    Port {
        target: String,
        host: String,
        reply: Option<Reached<'a>>,
    },
}

/// Where a packet lands, and whether a router forwarded it.
struct Arrival<'a> {
    to: Reached<'a>,
    routed: bool,
}

impl<'v, V: Compiled + ?Sized, F: Facts + ?Sized> Walk<'v, V, F> {
    fn step(&mut self, stage: Stage, on: On<'_>, decision: Decision, detail: String) {
        let step = self.make_step(stage, on, decision, detail);
        self.steps.push(step);
    }

    fn make_step(&self, stage: Stage, on: On<'_>, decision: Decision, detail: String) -> Step {
        Step {
            stage,
            host: on.host.map(str::to_owned),
            network: on.network.map(str::to_owned),
            port: on.port.map(str::to_owned),
            router: on.router.map(str::to_owned),
            route: None,
            security_group: on.group.map(str::to_owned),
            rule: on.rule.map(str::to_owned),
            decision,
            detail,
        }
    }

    /// Whether a port's chain on `host` is stateless (its groups keep no
    /// connection state), so a reply must pass its rules too.
    fn stateless(&self, host: &str, security: Option<&PortSecuritySpec>) -> bool {
        security.is_some_and(|s| !filter::port_groups(self.view, host, s).0)
    }

    /// The walk: `Err` for a query that cannot start, else the verdict
    /// (`Ok(message)` delivered, `Err(stop)` dropped).
    fn run(&mut self, q: &Query) -> Result<Result<String, Stop>, TraceError> {
        let view = self.view;
        let from = match &q.from {
            Source::Port(id) => id,
            Source::Outside(ip) => {
                let id = match &q.to {
                    Target::Ip(dst) => {
                        let flow = self.flow_in(q, *ip, *dst)?;
                        return Ok(self.walk_in(&flow));
                    }
                    Target::Port(id) => id,
                };
                // Only IPv6 reaches a port's own address from outside.
                let port = view
                    .port(id)
                    .ok_or_else(|| TraceError::UnknownDestinationPort(id.clone()))?;
                let dst = port
                    .local
                    .fixed_ips
                    .iter()
                    .map(|f| f.ip_address)
                    .find(|a| a.is_ipv6() && ip.is_ipv6())
                    .ok_or(TraceError::OutsideToPort)?;
                let flow = self.flow_in(q, *ip, dst)?;
                return Ok(self.walk_in_unnatted(&flow, id, &port));
            }
        };
        let src = view
            .port(from)
            .ok_or_else(|| TraceError::UnknownSourcePort(from.clone()))?;
        let dst_port = match &q.to {
            Target::Port(id) => Some((
                id.as_str(),
                view.port(id)
                    .ok_or_else(|| TraceError::UnknownDestinationPort(id.clone()))?,
            )),
            Target::Ip(_) => None,
        };
        let flow = self.flow(q, &src, dst_port.map(|(_, p)| p))?;
        Ok(self.walk(q, from, &src, dst_port, flow))
    }

    /// The packet's addresses and L4 fields, settled.
    fn flow(
        &mut self,
        q: &Query,
        src: &PortRef<'_>,
        dst_port: Option<PortRef<'_>>,
    ) -> Result<Option<Flow>, TraceError> {
        let p = &q.packet;
        let is_icmp = check_packet(p)?;
        let wants_v6 = p.source_ip.map(|ip| ip.is_ipv6());
        let dst = match (&q.to, dst_port) {
            (Target::Ip(ip), _) => Some(*ip),
            (Target::Port(_), Some(port)) => {
                let ips = || port.local.fixed_ips.iter().map(|f| f.ip_address);
                ips()
                    .find(|ip| wants_v6.is_none_or(|v6| ip.is_ipv6() == v6) && ip.is_ipv4())
                    .or_else(|| ips().find(|ip| wants_v6.is_none_or(|v6| ip.is_ipv6() == v6)))
            }
            (Target::Port(_), None) => None,
        };
        if let (Some(s), Some(d)) = (p.source_ip, dst)
            && s.is_ipv6() != d.is_ipv6()
        {
            return Err(TraceError::InvalidPacket(format!(
                "source {s} and destination {d} are of different IP versions"
            )));
        }
        let Some(dst) = dst else {
            return Ok(None);
        };
        let source = p.source_ip.or_else(|| source_ip(src, dst));
        Ok(self.settle(p, is_icmp, source, dst))
    }

    /// A packet from the outside (`src`) to `dst`, a floating IP.
    fn flow_in(&mut self, q: &Query, src: IpAddr, dst: IpAddr) -> Result<Flow, TraceError> {
        let p = &q.packet;
        let is_icmp = check_packet(p)?;
        if src.is_ipv6() != dst.is_ipv6() || p.source_ip.is_some() {
            return Err(TraceError::InvalidPacket(format!(
                "from outside, the source is {src} (no other source address), of {dst}'s IP version"
            )));
        }
        self.settle(p, is_icmp, Some(src), dst)
            .ok_or_else(|| TraceError::InvalidPacket("no source address".into()))
    }

    /// The packet's protocol, ICMP type and ports as traced, from what the
    /// query left out.
    fn settle(
        &mut self,
        p: &Packet,
        is_icmp: bool,
        source: Option<IpAddr>,
        dst: IpAddr,
    ) -> Option<Flow> {
        let protocol = match p.protocol {
            // ICMP toward an IPv6 address is ICMPv6, as the rules read it.
            1 if dst.is_ipv6() => 58,
            n => n,
        };
        let icmp = is_icmp.then(|| {
            let echo = if dst.is_ipv6() { 128 } else { 8 };
            (p.icmp_type.unwrap_or(echo), p.icmp_code.unwrap_or(0))
        });
        let sport = p
            .source_port
            .or(PORT_PROTOCOLS.contains(&protocol).then_some(EPHEMERAL_PORT));
        self.packet.protocol = protocol;
        self.packet.source_port = sport;
        self.packet.source_ip = source;
        self.packet.destination_ip = Some(dst);
        self.packet.icmp_type = icmp.map(|(t, _)| t);
        self.packet.icmp_code = icmp.map(|(_, c)| c);
        source.map(|src| Flow {
            src,
            dst,
            protocol,
            sport,
            dport: p.destination_port,
            icmp,
        })
    }

    fn walk(
        &mut self,
        q: &Query,
        from: &str,
        src: &PortRef<'_>,
        dst_port: Option<(&str, PortRef<'_>)>,
        flow: Option<Flow>,
    ) -> Result<String, Stop> {
        let view = self.view;
        let net = src.network_id;

        // ---- the source port, on its host --------------------------------
        if src.host.is_empty() {
            self.step(
                Stage::Source,
                On {
                    network: Some(net),
                    port: Some(from),
                    ..On::default()
                },
                Decision::Drop,
                "the port is not bound to any host".into(),
            );
            return Err(stop(
                Reason::SourcePortUnbound,
                format!(
                    "dropped: source port {from} is not bound to a host, so nothing can send from it"
                ),
                "bind it (binding:host_id), as booting a VM on it does".to_owned(),
            ));
        }
        let host = src.host;
        let on_src = || On {
            host: Some(host),
            network: Some(net),
            port: Some(from),
            ..On::default()
        };
        self.endpoint_alive(Stage::Source, from, src, on_src())?;
        let Some(network) = view.network(host, net) else {
            self.step(
                Stage::Source,
                on_src(),
                Decision::Drop,
                format!("host {host} does not carry network {net}"),
            );
            return Err(stop(
                Reason::NetworkNotCarried,
                format!(
                    "dropped: host {host} does not carry network {net} (is the network deleted?)"
                ),
                None,
            ));
        };
        let vni = network.vni;
        self.step(
            Stage::Source,
            on_src(),
            Decision::Pass,
            format!(
                "port {from} (MAC {}, device {}) is ACTIVE on host {host}, network {net} (VNI {vni}); its agent is alive",
                src.local.mac, src.local.device
            ),
        );
        let Some(flow) = flow else {
            let what = match &q.to {
                Target::Port(id) => {
                    format!("destination port {id} has no address of the source's IP version")
                }
                Target::Ip(ip) => format!("source port {from} has no {} address", family(*ip)),
            };
            self.step(Stage::Source, on_src(), Decision::Drop, what.clone());
            return Err(stop(
                Reason::NoSourceAddress,
                format!("dropped: {what}"),
                "add a subnet of that IP version to the network and a fixed IP to the port"
                    .to_owned(),
            ));
        };

        // ---- anti-spoofing and egress, on the source host ---------------
        let mac = q.packet.source_mac.unwrap_or(src.local.mac);
        let security = view.port_security(host, from).filter(|s| s.enabled);
        match security {
            Some(spec) => match filter::allowed_source(spec, mac, flow.src) {
                Some(pair) => self.step(
                    Stage::AntiSpoofing,
                    on_src(),
                    Decision::Pass,
                    format!("source {mac} {} is allowed (pair {mac} {pair})", flow.src),
                ),
                None => {
                    self.step(
                        Stage::AntiSpoofing,
                        on_src(),
                        Decision::Drop,
                        format!(
                            "source {mac} {} is not one of the port's (MAC, IP) pairs",
                            flow.src
                        ),
                    );
                    return Err(stop(
                        Reason::SpoofedSource,
                        format!(
                            "dropped: spoofed source {} (MAC {mac}) on port {from}",
                            flow.src
                        ),
                        format!(
                            "send from the port's own address, or add {}/{} to its allowed_address_pairs",
                            flow.src,
                            if flow.src.is_ipv6() { 128 } else { 32 }
                        ),
                    ));
                }
            },
            None => self.step(
                Stage::AntiSpoofing,
                on_src(),
                Decision::Pass,
                "port security is disabled: any source goes".into(),
            ),
        }
        self.filter(
            Stage::Egress,
            RuleDirection::Egress,
            PortAt {
                host,
                port: from,
                security,
            },
            &flow,
            None,
        )?;

        // ---- L2 lookup, or the gateway and the routers, on this host -----
        let named = dst_port.map(|(id, p)| (id, p.network_id));
        if let Some((id, port_net)) = named
            && port_net != net
            && network.subnets.values().any(|s| s.cidr.contains(&flow.dst))
        {
            self.step(
                Stage::L2Lookup,
                On {
                    host: Some(host),
                    network: Some(net),
                    ..On::default()
                },
                Decision::Drop,
                format!(
                    "port {id} is on network {port_net}, not on {net}, yet {} is on this network's subnets: it is sent on-link, never routed",
                    flow.dst
                ),
            );
            return Err(stop(
                Reason::DifferentNetwork,
                format!(
                    "dropped: port {id} is on another network ({port_net}) whose addresses overlap this network's, so {} never leaves network {net}",
                    flow.dst
                ),
                format!(
                    "give the source a port on network {port_net}, or use subnets that do not overlap behind a router"
                ),
            ));
        }
        let arrival = self.forward(host, net, &flow, named, src.local)?;
        let routed = arrival.routed;
        let (target, target_ref, seen, dst_net) = match arrival.to {
            Reached::Router { router, interface } => {
                return self.at_router(host, &router, &interface, &flow, from, security);
            }
            Reached::Outside {
                host: out,
                network,
                source,
            } => return self.outside(host, &out, &network, source, &flow, from, security),
            Reached::Port {
                id,
                port,
                seen,
                network,
            } => (id, port, seen, network),
        };
        if let Some((id, _)) = dst_port
            && id != target
        {
            // The named port's address leads elsewhere (it is on a network
            // the route does not reach, under an overlapping CIDR).
            return Err(stop(
                Reason::DifferentNetwork,
                format!(
                    "dropped: {} leads to port {target} on network {dst_net}, not to port {id}",
                    flow.dst
                ),
                format!(
                    "port {id} is not reachable under its address from here: check its network and the router's subnets"
                ),
            ));
        }
        let target = target.as_str();
        let dst_net = dst_net.as_str();
        let dst_host = target_ref.host;
        // A port that does not hold the destination got it as a next hop
        // (an extra route via a VM): what it does next is its own business.
        let via = !target_ref
            .local
            .fixed_ips
            .iter()
            .any(|f| f.ip_address == flow.dst);

        // ---- the tunnel, and the destination host ------------------------
        if let PortSeen::Remote { vtep, .. } = seen {
            self.tunnel(host, dst_host, dst_net, vtep)?;
        }

        // ---- the destination port ----------------------------------------
        let on_dst = || On {
            host: Some(dst_host),
            network: Some(dst_net),
            port: Some(target),
            ..On::default()
        };
        self.endpoint_alive(Stage::Destination, target, &target_ref, on_dst())?;
        let dst_security = view.port_security(dst_host, target).filter(|s| s.enabled);
        self.filter(
            Stage::Ingress,
            RuleDirection::Ingress,
            PortAt {
                host: dst_host,
                port: target,
                security: dst_security,
            },
            &flow,
            Some(src),
        )?;
        self.step(
            Stage::Delivery,
            on_dst(),
            Decision::Deliver,
            if via {
                format!(
                    "delivered to port {target}, device {}, as the next hop toward {} (the port does not hold it: it routes it on, or not)",
                    target_ref.local.device, flow.dst
                )
            } else {
                format!(
                    "delivered to port {target}, device {}",
                    target_ref.local.device
                )
            },
        );

        // ---- the reply, where no conntrack lets it back -----------------
        let needs_reply = flow.needs_reply();
        if needs_reply && via {
            self.step(
                Stage::Reply,
                On {
                    host: Some(dst_host),
                    port: Some(target),
                    ..On::default()
                },
                Decision::Pass,
                format!(
                    "the reply comes from {} beyond port {target}: the port's anti-spoofing must allow it (allowed_address_pairs), not checked here",
                    flow.dst
                ),
            );
        }
        if needs_reply {
            let reply = flow.reply();
            let dst_stateless = self.stateless(dst_host, dst_security);
            let src_stateless = self.stateless(host, security);
            if dst_stateless {
                self.filter(
                    Stage::Reply,
                    RuleDirection::Egress,
                    PortAt {
                        host: dst_host,
                        port: target,
                        security: dst_security,
                    },
                    &reply,
                    None,
                )
                .map_err(|e| replied(e, RuleDirection::Egress))?;
            }
            if routed {
                self.reply_path(dst_host, dst_net, &reply, from, target_ref.local)?;
            }
            if src_stateless {
                self.filter(
                    Stage::Reply,
                    RuleDirection::Ingress,
                    PortAt {
                        host,
                        port: from,
                        security,
                    },
                    &reply,
                    None,
                )
                .map_err(|e| replied(e, RuleDirection::Ingress))?;
            }
            if !dst_stateless && !src_stateless {
                self.step(
                    Stage::Reply,
                    On::default(),
                    Decision::Pass,
                    "the reply belongs to the connection: conntrack lets it back".into(),
                );
            }
        }
        Ok(format!(
            "delivered: {} {} → {} reaches port {target} on host {dst_host}{}",
            proto_words(&flow),
            flow.src,
            flow.dst,
            if routed { ", routed" } else { "" }
        ))
    }

    /// A packet addressed to a router's own address: the router answers it
    /// from its namespace on the sending host (ICMP echo; nothing listens
    /// on TCP or UDP there, so TCP is refused, which still reaches it).
    fn at_router(
        &mut self,
        host: &str,
        router: &str,
        interface: &str,
        flow: &Flow,
        from: &str,
        security: Option<&PortSecuritySpec>,
    ) -> Result<String, Stop> {
        self.step(
            Stage::Delivery,
            On {
                host: Some(host),
                router: Some(router),
                port: Some(interface),
                ..On::default()
            },
            Decision::Deliver,
            format!(
                "{} is router {router}'s own address (interface {interface}): its namespace on host {host} answers (ICMP echo; TCP is refused, nothing listens)",
                flow.dst
            ),
        );
        let needs_reply = flow.needs_reply();
        let stateless = self.stateless(host, security);
        if needs_reply && stateless {
            self.filter(
                Stage::Reply,
                RuleDirection::Ingress,
                PortAt {
                    host,
                    port: from,
                    security,
                },
                &flow.reply(),
                None,
            )
            .map_err(|e| replied(e, RuleDirection::Ingress))?;
        }
        Ok(format!(
            "delivered: {} {} → {} reaches router {router} on host {host}",
            proto_words(flow),
            flow.src,
            flow.dst
        ))
    }

    /// From a port's device on `host`, network `net`, to wherever the
    /// packet lands on a bridge: on-link it is an L2 lookup; off-link it
    /// goes to its subnet's gateway, then through the routers this host
    /// realises (distributed routing: every hop on the sending host).
    /// `named`: the destination port the query named, with its network.
    fn forward(
        &mut self,
        host: &str,
        net: &str,
        flow: &Flow,
        named: Option<(&str, &str)>,
        sender: &LocalPortSpec,
    ) -> Result<Arrival<'v>, Stop> {
        let view = self.view;
        let Some(network) = view.network(host, net) else {
            return Err(self.not_carried(host, net));
        };
        let named_here = |n: &str| named.filter(|(_, pn)| *pn == n).map(|(id, _)| id);
        if network.subnets.values().any(|s| s.cidr.contains(&flow.dst)) {
            let to = self.lookup(host, net, flow.dst, named_here(net))?;
            return Ok(Arrival { to, routed: false });
        }
        // Off-link: the sender's subnet's gateway (the VM's default route):
        // the subnet of the source address, else (a source beyond the port,
        // as a next hop VM replies from) of the port's own address.
        let sending = network
            .subnets
            .iter()
            .find(|(_, s)| s.cidr.contains(&flow.src))
            .or_else(|| {
                sender
                    .fixed_ips
                    .iter()
                    .filter(|f| f.ip_address.is_ipv6() == flow.src.is_ipv6())
                    .find_map(|f| network.subnets.get_key_value(&f.subnet_id))
            });
        let Some((subnet_id, subnet)) = sending else {
            self.step(
                Stage::Gateway,
                on_net(host, net, None, None),
                Decision::Drop,
                format!(
                    "{} is on none of network {net}'s subnets, and neither is the source {}: no gateway to send it to",
                    flow.dst, flow.src
                ),
            );
            return Err(stop(
                Reason::NoGateway,
                format!(
                    "dropped: no route to {}: it is off network {net}, and the source {} is on none of its subnets",
                    flow.dst, flow.src
                ),
                "send from an address of the port's subnet".to_owned(),
            ));
        };
        let cidr = subnet.cidr;
        let Some(gateway) = subnet.gateway_ip else {
            self.step(
                Stage::Gateway,
                on_net(host, net, None, None),
                Decision::Drop,
                format!(
                    "{} is off-link and subnet {subnet_id} ({cidr}) has no gateway",
                    flow.dst
                ),
            );
            return Err(stop(
                Reason::NoGateway,
                format!(
                    "dropped: subnet {subnet_id} ({cidr}) has no gateway, so nothing routes {} off network {net}",
                    flow.dst
                ),
                format!("set the subnet's gateway_ip and add subnet {subnet_id} to a router"),
            ));
        };
        let first = match self.router_with_ip(host, net, gateway) {
            Some((router, interface)) => {
                let mac = view
                    .router_interface(host, &interface)
                    .map(|(_, i)| i.mac.to_string())
                    .unwrap_or_default();
                self.step(
                    Stage::Gateway,
                    on_net(host, net, Some(&router), Some(&interface)),
                    Decision::Forward,
                    format!(
                        "{} is off-link: to gateway {gateway} of subnet {subnet_id} ({cidr}), router {router}'s interface {interface} (MAC {mac}), its veth on this host's bridge",
                        flow.dst
                    ),
                );
                Reached::Router { router, interface }
            }
            None if self.resolve(host, net, gateway).is_some() => {
                self.step(
                    Stage::Gateway,
                    on_net(host, net, None, None),
                    Decision::Forward,
                    format!(
                        "{} is off-link: to gateway {gateway} of subnet {subnet_id} ({cidr}), which a port holds, not a router",
                        flow.dst
                    ),
                );
                self.lookup(host, net, gateway, None)?
            }
            None => {
                let detail = format!(
                    "no router interface on {gateway} for subnet {subnet_id} ({cidr}) on host {host}"
                );
                self.step(
                    Stage::Gateway,
                    on_net(host, net, None, None),
                    Decision::Drop,
                    detail.clone(),
                );
                return Err(stop(
                    Reason::NoRouterInterface,
                    format!("dropped: {} is off-link and {detail}", flow.dst),
                    format!(
                        "add subnet {subnet_id} to a router (openstack router add subnet ROUTER {subnet_id})"
                    ),
                ));
            }
        };
        match first {
            Reached::Router { router, interface } => {
                self.route(host, net, router, interface, flow, named)
            }
            to => Ok(Arrival { to, routed: true }),
        }
    }

    /// Through `router` (entered by `interface`, on network `net`) and the
    /// routers after it, all on `host`, to where the packet lands.
    fn route(
        &mut self,
        host: &str,
        net: &str,
        mut router: String,
        mut interface: String,
        flow: &Flow,
        named: Option<(&str, &str)>,
    ) -> Result<Arrival<'v>, Stop> {
        let view = self.view;
        let named_here = |n: &str| named.filter(|(_, pn)| *pn == n).map(|(id, _)| id);
        // The VM sent it with TTL 64; each router takes one.
        let mut ttl: u8 = 64;
        loop {
            let Some(spec) = view.router(host, &router) else {
                return Err(self.not_carried(host, net));
            };
            let route = route_lookup(spec, flow.dst);
            if route.is_none()
                && let Some(gateway) = &spec.gateway
                && (flow.dst.is_ipv4() || ipv6_uplink_routes(gateway, flow.dst))
            {
                let gateway = gateway.clone();
                return self.uplink(host, &router, &gateway, flow);
            }
            let Some(route) = route else {
                self.step(
                    Stage::Routing,
                    on_net(host, net, Some(&router), Some(&interface)),
                    Decision::Drop,
                    format!(
                        "router {router} has no route to {} (no interface's subnet holds it, and no extra route covers it)",
                        flow.dst
                    ),
                );
                return Err(stop(
                    Reason::NoRoute,
                    format!("dropped: no route to {} on router {router}", flow.dst),
                    format!(
                        "add the destination's subnet to router {router}, or an extra route to it via a next hop on one of its subnets"
                    ),
                ));
            };
            let (out, out_net, prefix, nexthop) = match route {
                RouteChoice::Local { interface: own } => {
                    return Ok(Arrival {
                        to: Reached::Router {
                            router: router.clone(),
                            interface: own.to_owned(),
                        },
                        routed: true,
                    });
                }
                RouteChoice::Connected {
                    interface,
                    network,
                    prefix,
                } => (interface, network, prefix, None),
                RouteChoice::Extra {
                    interface,
                    network,
                    prefix,
                    nexthop,
                } => (interface, network, prefix, Some(nexthop)),
            };
            ttl -= 1;
            if ttl == 0 {
                self.step(
                    Stage::Routing,
                    on_net(host, net, Some(&router), Some(&interface)),
                    Decision::Drop,
                    format!("TTL exceeded at router {router}: the routers loop"),
                );
                return Err(stop(
                    Reason::TtlExceeded,
                    format!(
                        "dropped: TTL exceeded on the way to {} (a routing loop through router {router})",
                        flow.dst
                    ),
                    "check the routers' extra routes: they send the packet in a circle".to_owned(),
                ));
            }
            let how = match nexthop {
                None => format!("connected subnet {prefix}"),
                Some(nh) => format!("extra route {prefix} via {nh}"),
            };
            let detail = format!(
                "router {router}: {} by {how}, out of interface {out} on network {out_net}; TTL {} → {ttl}",
                flow.dst,
                ttl + 1
            );
            let (out, out_net) = (out.to_owned(), out_net.to_owned());
            self.steps.push(Step {
                route: Some(RouteTaken {
                    destination: prefix,
                    nexthop,
                }),
                ..self.make_step(
                    Stage::Routing,
                    on_net(host, &out_net, Some(&router), Some(&out)),
                    Decision::Forward,
                    detail,
                )
            });
            let hop = nexthop.unwrap_or(flow.dst);
            let named = if nexthop.is_none() {
                named_here(&out_net)
            } else {
                None
            };
            match self.lookup(host, &out_net, hop, named)? {
                Reached::Router {
                    router: next,
                    interface: next_interface,
                } => {
                    router = next;
                    interface = next_interface;
                }
                to => return Ok(Arrival { to, routed: true }),
            }
        }
    }

    /// Out of router `router`'s uplink, as its namespace's policy rules
    /// decide after the main table found no route. IPv6 (when the gateway
    /// has an IPv6 address) leaves by this host's own uplink, unNATed. For
    /// IPv4, a floating IP of this
    /// host for the source (or a port forwarding's reply) leaves here as
    /// the floating IP; anything else goes to the gateway host, which
    /// leaves it as the gateway address (unchanged with SNAT off).
    fn uplink(
        &mut self,
        host: &str,
        router: &str,
        gateway: &RouterGatewaySpec,
        flow: &Flow,
    ) -> Result<Arrival<'v>, Stop> {
        let ext = gateway.network_id.as_str();
        let uplink = format!(
            "qg-{}",
            gateway.port_id.get(..11).unwrap_or(&gateway.port_id)
        );
        let on = |host| on_net(host, ext, Some(router), Some(&gateway.port_id));
        if flow.dst.is_ipv6() {
            self.step(
                Stage::Routing,
                on(host),
                Decision::Forward,
                format!(
                    "router {router}: no route to {} in its main table: out of this host's uplink {uplink} on external network {ext} to its IPv6 gateway, unNATed (IPv6 is never NATed; the outside routes it back to the gateway's IPv6 address)",
                    flow.dst
                ),
            );
            return Ok(left(host, ext, flow.src));
        }
        let floating = self.view.floating_ips(host).into_iter().find(|f| {
            f.router_id == router
                && (f.fixed_ip == Some(flow.src)
                    || f.port_forwardings.values().any(|pf| {
                        pf.internal_ip == flow.src
                            && pf.protocol == flow.protocol
                            && flow.sport == Some(pf.internal_port)
                    }))
        });
        if let Some(fip) = floating {
            let address = fip.address;
            self.step(
                Stage::Nat,
                on(host),
                Decision::Forward,
                format!(
                    "router {router}: no route in its main table; {} is floating IP {address}'s fixed address on this host, so it leaves by this host's uplink {uplink} on external network {ext}, SNAT {} → {address}",
                    flow.src, flow.src
                ),
            );
            return Ok(left(host, ext, address));
        }
        let Some(gateway_host) = gateway.host.as_deref() else {
            self.step(
                Stage::Nat,
                on(host),
                Decision::Drop,
                format!(
                    "router {router}: no route to {} in its main table, and its gateway on external network {ext} has no gateway host",
                    flow.dst
                ),
            );
            return Err(stop(
                Reason::NoGatewayHost,
                format!(
                    "dropped: router {router} has no live gateway host to take {} out to {}",
                    flow.src, flow.dst
                ),
                format!(
                    "run an agent with --gateway that maps external network {ext}'s physical network (--physical-network NAME:IFACE), or give {} a floating IP",
                    flow.src
                ),
            ));
        };
        if gateway_host != host {
            self.step(
                Stage::Nat,
                on(host),
                Decision::Forward,
                format!(
                    "router {router}: no route to {} in its main table and no floating IP for {}: across external network {ext} by uplink {uplink} to its gateway host {gateway_host} (gateway port MAC {})",
                    flow.dst, flow.src, gateway.mac
                ),
            );
            if !self.facts.agent_alive(gateway_host) {
                self.step(
                    Stage::Nat,
                    on(gateway_host),
                    Decision::Drop,
                    format!("gateway host {gateway_host}'s agent is not heartbeating"),
                );
                return Err(stop(
                    Reason::HostAgentDead,
                    format!(
                        "dropped: router {router}'s gateway host {gateway_host} is not alive (the server moves the gateway once it finds the host dead)"
                    ),
                    format!("check the agent on {gateway_host}"),
                ));
            }
        }
        let gateway_ip = gateway
            .addresses
            .iter()
            .map(|a| a.addr())
            .find(IpAddr::is_ipv4);
        let (source, how) = match gateway_ip {
            Some(ip) if gateway.enable_snat => (ip, format!("SNAT {} → {ip}", flow.src)),
            _ => (
                flow.src,
                format!(
                    "no SNAT (enable_snat is false): it leaves as {}, which the outside must route back",
                    flow.src
                ),
            ),
        };
        self.step(
            Stage::Nat,
            on(gateway_host),
            Decision::Forward,
            format!(
                "router {router} on its gateway host {gateway_host}: out of uplink {uplink} on external network {ext}, {how}"
            ),
        );
        Ok(left(gateway_host, ext, source))
    }

    /// From the outside to a floating IP: on the host that holds it, its
    /// router's uplink DNATs it (to the fixed IP, or by a port forwarding),
    /// and the router routes it to the port there; the reply must leave by
    /// the same uplink, as the floating IP, or the outside drops it.
    fn walk_in(&mut self, flow: &Flow) -> Result<String, Stop> {
        let view = self.view;
        self.step(
            Stage::Source,
            On::default(),
            Decision::Pass,
            format!("from {} outside the cloud, to {}", flow.src, flow.dst),
        );
        let not_floating = |detail: String| {
            stop(
                Reason::NoFloatingIp,
                format!("dropped: {detail}"),
                "create a floating IP and associate it with the VM's port (or forward a port to it)"
                    .to_owned(),
            )
        };
        let Some(fip_id) = self.facts.floating_ip_with_address(flow.dst) else {
            return Err(not_floating(format!(
                "{} is no floating IP of this cloud",
                flow.dst
            )));
        };
        let Some((host, fip)) = view.floating_ip(&fip_id) else {
            return Err(not_floating(format!(
                "floating IP {fip_id} ({}) is on no host: it is associated with no bound port behind a router with a gateway",
                flow.dst
            )));
        };
        let Some(gateway) = view
            .router(host, &fip.router_id)
            .and_then(|r| r.gateway.clone())
        else {
            return Err(self.not_carried(host, &fip.router_id));
        };
        let ext = gateway.network_id.as_str();
        let router = fip.router_id.as_str();
        let on = On {
            host: Some(host),
            network: Some(ext),
            router: Some(router),
            port: Some(&gateway.port_id),
            ..On::default()
        };
        if !self.facts.agent_alive(host) {
            self.step(
                Stage::Nat,
                on,
                Decision::Drop,
                format!("host {host}'s agent is not heartbeating"),
            );
            return Err(stop(
                Reason::HostAgentDead,
                format!(
                    "dropped: floating IP {} lives on host {host}, whose agent is not alive",
                    flow.dst
                ),
                format!("check the agent on {host}"),
            ));
        }
        let forwarding = fip
            .port_forwardings
            .values()
            .find(|pf| pf.protocol == flow.protocol && flow.dport == Some(pf.external_port));
        let (inner, how) = match (fip.fixed_ip, forwarding) {
            (Some(fixed), _) => (
                Flow {
                    dst: fixed,
                    ..*flow
                },
                format!("DNAT {} → {fixed}", flow.dst),
            ),
            (None, Some(pf)) => (
                Flow {
                    dst: pf.internal_ip,
                    dport: Some(pf.internal_port),
                    ..*flow
                },
                format!(
                    "port forwarding {} {} → {}:{}",
                    protocol_name(pf.protocol),
                    pf.external_port,
                    pf.internal_ip,
                    pf.internal_port
                ),
            ),
            (None, None) => {
                let detail = format!(
                    "floating IP {} has no port forwarding for {} and no fixed IP: router {router}'s uplink on host {host} takes it (ICMP echo is answered there, nothing else)",
                    flow.dst,
                    proto_words(flow)
                );
                if matches!(flow.icmp, Some((8, _))) {
                    self.step(Stage::Delivery, on, Decision::Deliver, detail);
                    return Ok(format!(
                        "delivered: {} {} → {} reaches router {router}'s uplink on host {host}",
                        proto_words(flow),
                        flow.src,
                        flow.dst
                    ));
                }
                self.step(Stage::Nat, on, Decision::Drop, detail);
                return Err(not_floating(format!(
                    "nothing is forwarded for {} on floating IP {}",
                    proto_words(flow),
                    flow.dst
                )));
            }
        };
        self.step(
            Stage::Nat,
            on,
            Decision::Forward,
            format!(
                "floating IP {} on router {router}'s uplink on host {host} (external network {ext}): {how}",
                flow.dst
            ),
        );
        let uplink = gateway.port_id.clone();
        let arrival = self.route(host, ext, fip.router_id.clone(), uplink, &inner, None)?;
        let (target, dst_host, reply) = match self.inside(host, router, arrival, &inner)? {
            Inside::Router(message) => return Ok(message),
            Inside::Port {
                target,
                host,
                reply,
            } => (target, host, reply),
        };
        match reply {
            None => {}
            Some(Reached::Outside { host: out, .. }) if out == host => {
                // The DNAT's conntrack entry, not the NAT rules, gives the
                // reply its source.
                if let Some(last) = self.steps.last_mut() {
                    last.detail = format!(
                        "reply: router {router} on host {host}: the connection's conntrack entry undoes the {how}, so it leaves by the uplink as {}",
                        flow.dst
                    );
                }
            }
            Some(Reached::Outside {
                host: out, source, ..
            }) => {
                return Err(stop(
                    Reason::ReplyNotTranslated,
                    format!(
                        "dropped: the reply leaves from host {out} as {source}, not as floating IP {} from host {host}: the outside drops it",
                        flow.dst
                    ),
                    "forward ports of one floating IP only to ports on one host".to_owned(),
                ));
            }
            Some(_) => return Err(never_leaves(flow)),
        }
        Ok(format!(
            "delivered: {} {} → {} reaches port {target} on host {dst_host} ({how})",
            proto_words(flow),
            flow.src,
            flow.dst
        ))
    }

    /// From the outside straight to a port's IPv6 address (IPv6 is never
    /// NATed): the outside routes the port's prefix to its router's gateway
    /// address, which the uplink on the router's gateway host holds; the
    /// router routes it to the port, and the reply leaves unNATed by the
    /// uplink of the port's own host.
    fn walk_in_unnatted(
        &mut self,
        flow: &Flow,
        id: &str,
        port: &PortRef<'v>,
    ) -> Result<String, Stop> {
        let view = self.view;
        self.step(
            Stage::Source,
            On::default(),
            Decision::Pass,
            format!(
                "from {} outside the cloud, to {} (port {id})",
                flow.src, flow.dst
            ),
        );
        let net = port.network_id;
        let on_port = On {
            host: Some(port.host),
            network: Some(net),
            port: Some(id),
            ..On::default()
        };
        if port.host.is_empty() {
            self.endpoint_alive(Stage::Destination, id, port, on_port)?;
        }
        let no_way_in = |this: &mut Self, on: On<'_>, detail: String, hint: String| {
            this.step(Stage::Routing, on, Decision::Drop, detail.clone());
            stop(Reason::NoRoute, format!("dropped: {detail}"), hint)
        };
        let interface = view
            .network(port.host, net)
            .and_then(|n| n.subnets.values().find(|s| s.cidr.contains(&flow.dst)))
            .and_then(|s| s.gateway_ip)
            .and_then(|gw| view.router_interface_with_ip(port.host, net, gw));
        let Some((router, interface)) = interface else {
            return Err(no_way_in(
                self,
                on_port,
                format!(
                    "{}'s subnet on network {net} has no router interface",
                    flow.dst
                ),
                "add the subnet to a router with an external gateway (openstack router add subnet)"
                    .to_owned(),
            ));
        };
        let router = router.to_owned();
        let on_router = On {
            host: Some(port.host),
            router: Some(&router),
            port: Some(interface),
            ..On::default()
        };
        let gateway = view
            .router(port.host, &router)
            .and_then(|r| r.gateway.clone());
        let address = gateway
            .as_ref()
            .and_then(|g| g.addresses.iter().map(|a| a.addr()).find(IpAddr::is_ipv6));
        let (Some(gateway), Some(address)) = (gateway, address) else {
            return Err(no_way_in(
                self,
                on_router,
                format!(
                    "router {router} has no IPv6 address on an external network, so nothing routes {} in",
                    flow.dst
                ),
                format!("set router {router}'s external gateway on a network with an IPv6 subnet"),
            ));
        };
        let ext = gateway.network_id.as_str();
        let on_uplink = |host| on_net(host, ext, Some(&router), Some(&gateway.port_id));
        let Some(host) = gateway.host.clone() else {
            self.step(
                Stage::Routing,
                on_uplink(port.host),
                Decision::Drop,
                format!("router {router}'s gateway address {address} is on no host: it has no gateway host"),
            );
            return Err(stop(
                Reason::NoGatewayHost,
                format!(
                    "dropped: router {router} has no live gateway host to hold {address}, where the outside sends {}",
                    flow.dst
                ),
                format!(
                    "run an agent with --gateway that maps external network {ext}'s physical network (--physical-network NAME:IFACE)"
                ),
            ));
        };
        if !self.facts.agent_alive(&host) {
            self.step(
                Stage::Routing,
                on_uplink(&host),
                Decision::Drop,
                format!("gateway host {host}'s agent is not heartbeating"),
            );
            return Err(stop(
                Reason::HostAgentDead,
                format!("dropped: router {router}'s gateway host {host} is not alive"),
                format!("check the agent on {host}"),
            ));
        }
        self.step(
            Stage::Routing,
            on_uplink(&host),
            Decision::Forward,
            format!(
                "the outside routes {} to router {router}'s gateway address {address} on its gateway host {host} (external network {ext}), unNATed",
                flow.dst
            ),
        );
        let arrival = self.route(
            &host,
            ext,
            router.clone(),
            gateway.port_id.clone(),
            flow,
            None,
        )?;
        match self.inside(&host, &router, arrival, flow)? {
            Inside::Router(message) => Ok(message),
            Inside::Port {
                reply: Some(Reached::Port { .. } | Reached::Router { .. }),
                ..
            } => Err(never_leaves(flow)),
            Inside::Port { target, host, .. } => Ok(format!(
                "delivered: {} {} → {} reaches port {target} on host {host}, unNATed",
                proto_words(flow),
                flow.src,
                flow.dst
            )),
        }
    }

    /// A packet from the outside that router `router` routed (`arrival`):
    /// delivered to a port there (its ingress rules passed), and where the
    /// reply, if it needs one, ends up.
    fn inside(
        &mut self,
        host: &str,
        router: &str,
        arrival: Arrival<'v>,
        inner: &Flow,
    ) -> Result<Inside<'v>, Stop> {
        let view = self.view;
        let (target, target_ref, seen, dst_net) = match arrival.to {
            Reached::Port {
                id,
                port,
                seen,
                network,
            } => (id, port, seen, network),
            Reached::Router { router, .. } => {
                return Ok(Inside::Router(format!(
                    "delivered: {} {} → {} reaches router {router} on host {host}",
                    proto_words(inner),
                    inner.src,
                    inner.dst
                )));
            }
            Reached::Outside { host: out, .. } => {
                return Err(stop(
                    Reason::NoRoute,
                    format!(
                        "dropped: {} leaves the cloud again from host {out}: router {router} has no route to it",
                        inner.dst
                    ),
                    None,
                ));
            }
        };
        let dst_host = target_ref.host;
        if let PortSeen::Remote { vtep, .. } = seen {
            self.tunnel(host, dst_host, &dst_net, vtep)?;
        }
        let on_dst = || On {
            host: Some(dst_host),
            network: Some(&dst_net),
            port: Some(&target),
            ..On::default()
        };
        self.endpoint_alive(Stage::Destination, &target, &target_ref, on_dst())?;
        let security = view.port_security(dst_host, &target).filter(|s| s.enabled);
        self.filter(
            Stage::Ingress,
            RuleDirection::Ingress,
            PortAt {
                host: dst_host,
                port: &target,
                security,
            },
            inner,
            None,
        )?;
        self.step(
            Stage::Delivery,
            on_dst(),
            Decision::Deliver,
            format!(
                "delivered to port {target}, device {}",
                target_ref.local.device
            ),
        );
        let mut reply_to = None;
        if inner.needs_reply() {
            let reply = inner.reply();
            if self.stateless(dst_host, security) {
                self.filter(
                    Stage::Reply,
                    RuleDirection::Egress,
                    PortAt {
                        host: dst_host,
                        port: &target,
                        security,
                    },
                    &reply,
                    None,
                )
                .map_err(|e| replied(e, RuleDirection::Egress))?;
            }
            // The reply is routed on the VM's host.
            let first = self.steps.len();
            let back = self.forward(dst_host, &dst_net, &reply, None, target_ref.local);
            for step in &mut self.steps[first..] {
                step.detail = format!("reply: {}", step.detail);
                step.stage = Stage::Reply;
            }
            reply_to = Some(back?.to);
        }
        Ok(Inside::Port {
            target,
            host: dst_host.to_owned(),
            reply: reply_to,
        })
    }

    /// The packet left the cloud from `out` as `source`: what happens
    /// beyond is the outside's. Its reply comes back by the same host and
    /// NAT (conntrack), and meets the source port's ingress chain.
    #[allow(clippy::too_many_arguments)]
    fn outside(
        &mut self,
        host: &str,
        out: &str,
        network: &str,
        source: IpAddr,
        flow: &Flow,
        from: &str,
        security: Option<&PortSecuritySpec>,
    ) -> Result<String, Stop> {
        let needs_reply = flow.needs_reply();
        let stateless = self.stateless(host, security);
        if needs_reply && stateless {
            self.filter(
                Stage::Reply,
                RuleDirection::Ingress,
                PortAt {
                    host,
                    port: from,
                    security,
                },
                &flow.reply(),
                None,
            )
            .map_err(|e| replied(e, RuleDirection::Ingress))?;
        }
        Ok(format!(
            "delivered: {} {} → {} leaves the cloud on external network {network} from host {out} as {source}",
            proto_words(flow),
            flow.src,
            flow.dst
        ))
    }

    /// The reply, routed on the destination's host (distributed routing is
    /// asymmetric), back to the source port. Its steps are `reply` steps.
    fn reply_path(
        &mut self,
        dst_host: &str,
        dst_net: &str,
        reply: &Flow,
        from: &str,
        sender: &LocalPortSpec,
    ) -> Result<(), Stop> {
        let first = self.steps.len();
        let back = self.forward(dst_host, dst_net, reply, None, sender);
        for step in &mut self.steps[first..] {
            step.detail = format!("reply: {}", step.detail);
            step.stage = Stage::Reply;
        }
        let back = back.map_err(|mut s| {
            s.message = format!(
                "{} (the reply, routed on host {dst_host}: a connection needs its replies)",
                s.message
            );
            s
        })?;
        match back.to {
            Reached::Port { id, seen, .. } if id == from => {
                if let PortSeen::Remote { vtep, .. } = seen {
                    let host = self.view.port(from).map(|p| p.host).unwrap_or_default();
                    self.step(
                        Stage::Reply,
                        On {
                            host: Some(host),
                            ..On::default()
                        },
                        Decision::Forward,
                        format!(
                            "reply: VXLAN from host {dst_host} back to host {host} (VTEP {vtep})"
                        ),
                    );
                }
                Ok(())
            }
            Reached::Port { id, .. } => Err(stop(
                Reason::DifferentNetwork,
                format!(
                    "dropped: the reply to {} goes to port {id}, not back to the source (routed on host {dst_host})",
                    reply.dst
                ),
                "check the subnets' gateways and the routers' routes on the way back".to_owned(),
            )),
            Reached::Router { router, .. } => Err(stop(
                Reason::DifferentNetwork,
                format!(
                    "dropped: the reply to {} ends at router {router}'s own address",
                    reply.dst
                ),
                None,
            )),
            Reached::Outside { host, network, .. } => Err(stop(
                Reason::DifferentNetwork,
                format!(
                    "dropped: the reply to {} leaves the cloud on external network {network} from host {host}, never reaching the source",
                    reply.dst
                ),
                "check the subnets' gateways and the routers' routes on the way back".to_owned(),
            )),
        }
    }

    /// The router interface holding `ip` on `net` as `host` sees it: found
    /// through the model's index and confirmed in the host's view, else the
    /// host's view of the network's routers decides.
    fn router_with_ip(&self, host: &str, net: &str, ip: IpAddr) -> Option<(String, String)> {
        if let Some(id) = self.facts.port_with_ip(net, ip)
            && let Some((router, interface)) = self.view.router_interface(host, &id)
            && interface.network_id == net
            && interface.addresses.iter().any(|a| a.addr() == ip)
        {
            return Some((router.to_owned(), id));
        }
        self.view
            .router_interface_with_ip(host, net, ip)
            .map(|(r, p)| (r.to_owned(), p.to_owned()))
    }

    /// The L2 lookup on `host`'s bridge of `net` for `ip`: a router's
    /// interface (its veth on the bridge) or a port, local or behind a
    /// tunnel.
    fn lookup(
        &mut self,
        host: &str,
        net: &str,
        ip: IpAddr,
        named: Option<&str>,
    ) -> Result<Reached<'v>, Stop> {
        let view = self.view;
        let Some(network) = view.network(host, net) else {
            return Err(self.not_carried(host, net));
        };
        let in_subnet = network
            .subnets
            .iter()
            .find(|(_, s)| s.cidr.contains(&ip))
            .map(|(id, s)| format!(" in subnet {} ({id})", s.cidr))
            .unwrap_or_default();
        if let Some((router, interface)) = self.router_with_ip(host, net, ip) {
            let mac = view
                .router_interface(host, &interface)
                .map(|(_, i)| i.mac.to_string())
                .unwrap_or_default();
            self.step(
                Stage::L2Lookup,
                on_net(host, net, Some(&router), Some(&interface)),
                Decision::Forward,
                format!(
                    "{ip} is router {router}'s interface {interface} (MAC {mac}){in_subnet}: its veth on this host's bridge"
                ),
            );
            return Ok(Reached::Router { router, interface });
        }
        let Some(target) = self.resolve(host, net, ip) else {
            return Err(self.unresolved(host, net, ip, named));
        };
        let (Some(port), Some(seen)) = (view.port(&target), view.port_seen(host, &target)) else {
            return Err(self.unresolved(host, net, ip, Some(&target)));
        };
        let vni = network.vni;
        let detail = match seen {
            PortSeen::Local(local) => format!(
                "{ip} is port {target} (MAC {}){in_subnet}: on this host's bridge, device {}",
                local.mac, local.device
            ),
            PortSeen::Remote { mac, vtep } => format!(
                "{ip} is port {target} (MAC {mac}){in_subnet}: static FDB entry to the VXLAN device of VNI {vni}, remote VTEP {vtep}"
            ),
        };
        self.step(
            Stage::L2Lookup,
            on_net(host, net, None, Some(&target)),
            Decision::Forward,
            detail,
        );
        Ok(Reached::Port {
            id: target,
            port,
            seen,
            network: net.to_owned(),
        })
    }

    /// The VXLAN hop from `host` to `dst_host` on `net`.
    fn tunnel(&mut self, host: &str, dst_host: &str, net: &str, vtep: IpAddr) -> Result<(), Stop> {
        let on_tunnel = || On {
            host: Some(dst_host),
            network: Some(net),
            ..On::default()
        };
        if !self.facts.agent_alive(dst_host) {
            self.step(
                Stage::Tunnel,
                on_tunnel(),
                Decision::Drop,
                format!("the agent of host {dst_host} (VTEP {vtep}) is dead"),
            );
            return Err(stop(
                Reason::HostAgentDead,
                format!(
                    "dropped: the agent of host {dst_host} is dead (missed its heartbeats), so its ports are DOWN"
                ),
                format!("start or restart `vnet agent` on {dst_host}"),
            ));
        }
        let Some(network) = self.view.network(dst_host, net) else {
            self.step(
                Stage::Tunnel,
                on_tunnel(),
                Decision::Drop,
                format!("host {dst_host} does not carry network {net}"),
            );
            return Err(stop(
                Reason::NetworkNotCarried,
                format!("dropped: host {dst_host} does not carry network {net}"),
                None,
            ));
        };
        let vni = network.vni;
        self.step(
            Stage::Tunnel,
            on_tunnel(),
            Decision::Forward,
            format!(
                "VXLAN VNI {vni}: host {host} → host {dst_host} (VTEP {vtep}), bridge of VNI {vni} there"
            ),
        );
        Ok(())
    }

    fn not_carried(&mut self, host: &str, net: &str) -> Stop {
        self.step(
            Stage::L2Lookup,
            On {
                host: Some(host),
                network: Some(net),
                ..On::default()
            },
            Decision::Drop,
            format!("host {host} does not carry network {net}"),
        );
        stop(
            Reason::NetworkNotCarried,
            format!("dropped: host {host} does not carry network {net}"),
            None,
        )
    }

    /// The port `host`'s neighbour entries give `ip` to. The model names the
    /// one port holding an address (an index lookup); it is taken once the
    /// host's compiled view agrees. Otherwise (no holder, or the compiled
    /// state not there yet) the host's view of the network is scanned: the
    /// compiled state decides.
    fn resolve(&self, host: &str, net: &str, ip: IpAddr) -> Option<String> {
        if let Some(id) = self.facts.port_with_ip(net, ip) {
            let holds = self.view.port(&id).is_some_and(|p| {
                p.network_id == net && p.local.fixed_ips.iter().any(|f| f.ip_address == ip)
            });
            if holds && self.view.port_seen(host, &id).is_some() {
                return Some(id);
            }
        }
        self.view.port_with_ip(host, net, ip).map(str::to_owned)
    }

    /// The checks every endpoint passes: its host's agent alive, admin up,
    /// ACTIVE (wired by the agent).
    fn endpoint_alive(
        &mut self,
        stage: Stage,
        id: &str,
        port: &PortRef<'_>,
        on: On<'_>,
    ) -> Result<(), Stop> {
        let host = port.host;
        let which = if stage == Stage::Source {
            "source"
        } else {
            "destination"
        };
        if host.is_empty() {
            self.step(
                stage,
                on,
                Decision::Drop,
                format!("port {id} is not bound to any host"),
            );
            return Err(stop(
                Reason::DestinationPortUnbound,
                format!("dropped: destination port {id} is not bound to a host"),
                "bind it (binding:host_id), as booting a VM on it does".to_owned(),
            ));
        }
        if !self.facts.agent_alive(host) {
            self.step(
                stage,
                on,
                Decision::Drop,
                format!("the agent of host {host} is dead"),
            );
            return Err(stop(
                Reason::HostAgentDead,
                format!(
                    "dropped: the agent of host {host} ({which} port {id}) is dead (missed its heartbeats)"
                ),
                format!("start or restart `vnet agent` on {host}"),
            ));
        }
        if !port.local.admin_state_up {
            self.step(
                stage,
                on,
                Decision::Drop,
                format!("port {id} is administratively down: its device is down"),
            );
            return Err(stop(
                Reason::PortAdminDown,
                format!("dropped: {which} port {id} is administratively down"),
                format!("set admin_state_up to true on port {id}"),
            ));
        }
        let status = self.facts.port_status(id);
        if status != Some(PortStatus::Active) {
            let status = status.map_or("unknown", PortStatus::as_str);
            self.step(
                stage,
                on,
                Decision::Drop,
                format!("port {id} is {status}: not wired by its agent"),
            );
            return Err(stop(
                Reason::PortDown,
                format!(
                    "dropped: {which} port {id} is {status}: the agent on {host} has not wired it"
                ),
                format!(
                    "check that device {} exists on host {host} (the VM is running) and the agent's log",
                    port.local.device
                ),
            ));
        }
        Ok(())
    }

    /// A port chain; `peer`: the other end (for the hint).
    fn filter(
        &mut self,
        stage: Stage,
        dir: RuleDirection,
        chain: PortAt<'_>,
        flow: &Flow,
        peer: Option<&PortRef<'_>>,
    ) -> Result<(), Stop> {
        let PortAt {
            host,
            port: port_id,
            security,
        } = chain;
        let on = || On {
            host: Some(host),
            port: Some(port_id),
            ..On::default()
        };
        let dir_word = dir_word(dir);
        let Some(spec) = security else {
            self.step(
                stage,
                on(),
                Decision::Pass,
                format!("port {port_id}: port security disabled, {dir_word} not filtered"),
            );
            return Ok(());
        };
        match filter::port_chain(self.view, host, spec, dir, flow) {
            ChainDecision::Accept(Allowed::Always(what)) => {
                self.step(
                    stage,
                    on(),
                    Decision::Accept,
                    format!("{dir_word} {what}: always allowed"),
                );
                Ok(())
            }
            ChainDecision::Accept(Allowed::Rule {
                group,
                rule,
                member,
            }) => {
                let noun = match rule.remote {
                    RuleRemote::AddressGroup(_) => "address",
                    _ => "member",
                };
                let via = member.map(|m| format!(" ({noun} {m})")).unwrap_or_default();
                self.step(
                    stage,
                    On {
                        group: Some(&group),
                        rule: Some(&rule.id),
                        ..on()
                    },
                    Decision::Accept,
                    format!(
                        "rule {} of group {group}: {}{via}",
                        rule.id,
                        describe_rule(&rule)
                    ),
                );
                Ok(())
            }
            ChainDecision::Refused(what) => {
                let detail =
                    format!("{what} from a VM is always dropped: only the host answers its VMs");
                self.step(stage, on(), Decision::Drop, detail.clone());
                Err(stop(
                    Reason::NoRuleAllows,
                    format!("dropped at {dir_word} of port {port_id} on host {host}: {detail}"),
                    "no security group rule can allow it".to_owned(),
                ))
            }
            ChainDecision::Drop { groups, unknown } => {
                let what = format!("{} {} → {}", proto_words(flow), flow.src, flow.dst);
                let detail = if groups.is_empty() {
                    format!(
                        "port {port_id} has no security group on this host: new {dir_word} traffic is dropped"
                    )
                } else {
                    format!(
                        "no {dir_word} rule of group(s) {} allows {what}",
                        groups.join(", ")
                    )
                };
                let mut detail = detail;
                if !unknown.is_empty() {
                    detail.push_str(&format!(
                        " (group(s) {} do not exist: they allow nothing)",
                        unknown.join(", ")
                    ));
                }
                self.step(
                    stage,
                    On {
                        group: groups.first().map(String::as_str),
                        ..on()
                    },
                    Decision::Drop,
                    detail.clone(),
                );
                let hint = self.rule_hint(dir, &groups, flow, peer);
                Err(stop(
                    Reason::NoRuleAllows,
                    format!("dropped at {dir_word} of port {port_id} on host {host}: {detail}"),
                    hint,
                ))
            }
        }
    }

    /// "add an ingress rule to group X allowing tcp 22 from 10.0.0.5/32 or
    /// from group Y".
    fn rule_hint(
        &self,
        dir: RuleDirection,
        groups: &[String],
        flow: &Flow,
        peer: Option<&PortRef<'_>>,
    ) -> String {
        let (remote, word) = match dir {
            RuleDirection::Egress => (flow.dst, "to"),
            RuleDirection::Ingress => (flow.src, "from"),
        };
        let len = if remote.is_ipv6() { 128 } else { 32 };
        let peer_group = peer
            .and_then(|p| p.security)
            .filter(|s| s.enabled)
            .and_then(|s| s.security_groups.first());
        let or_group = peer_group
            .map(|g| format!(" or {word} group {g}"))
            .unwrap_or_default();
        let allowing = format!(
            "{} rule allowing {} {word} {remote}/{len}{or_group}",
            dir_word(dir),
            proto_words(flow)
        );
        match groups.first() {
            Some(g) => format!("add an {allowing} to group {g}"),
            None => format!(
                "give the port a security group with an {allowing}, or disable its port security"
            ),
        }
    }

    /// Why `host`'s view has no port for the destination address.
    fn unresolved(&mut self, host: &str, net: &str, ip: IpAddr, named: Option<&str>) -> Stop {
        let view = self.view;
        let candidate = named
            .map(str::to_owned)
            .or_else(|| self.facts.port_with_ip(net, ip));
        fn on<'a>(host: &'a str, net: &'a str, port: Option<&'a str>) -> On<'a> {
            On {
                host: Some(host),
                network: Some(net),
                port,
                ..On::default()
            }
        }
        let Some(id) = candidate else {
            self.step(
                Stage::L2Lookup,
                on(host, net, None),
                Decision::Drop,
                format!("no port of network {net} holds {ip}: ARP/ND for it goes unanswered"),
            );
            return stop(
                Reason::NotOnNetwork,
                format!("dropped: nothing on network {net} has address {}", ip),
                "check the address: a port of another network, even on the same CIDR, is unreachable (networks are isolated)".to_owned(),
            );
        };
        let port = view.port(&id);
        match port {
            Some(p) if !p.host.is_empty() => {
                let h = p.host;
                self.step(
                    Stage::L2Lookup,
                    on(host, net, Some(&id)),
                    Decision::Drop,
                    format!("port {id} holds {} but is bound to host {h}, which has never registered: no VTEP known, no FDB entry", ip),
                );
                stop(
                    Reason::RemoteHostNotRegistered,
                    format!(
                        "dropped: port {id} is bound to host {h}, whose agent has never registered"
                    ),
                    format!("start `vnet agent` on {h} (or fix the port's binding:host_id)"),
                )
            }
            _ => {
                self.step(
                    Stage::L2Lookup,
                    on(host, net, Some(&id)),
                    Decision::Drop,
                    format!("port {id} holds {} but is not bound to any host", ip),
                );
                stop(
                    Reason::DestinationPortUnbound,
                    format!("dropped: destination port {id} is not bound to a host"),
                    "bind it (binding:host_id), as booting a VM on it does".to_owned(),
                )
            }
        }
    }
}

/// The reply to a packet from the outside was routed back into the cloud.
fn never_leaves(flow: &Flow) -> Stop {
    stop(
        Reason::ReplyNotTranslated,
        format!("dropped: the reply to {} never leaves the cloud", flow.src),
        None,
    )
}

fn replied(mut s: Stop, dir: RuleDirection) -> Stop {
    s.message = format!(
        "{} (the reply: the groups are stateless, so replies need their own {} rule)",
        s.message,
        dir_word(dir)
    );
    s
}

/// The port's address that sends to `dst`: its first of the same IP version.
fn source_ip(src: &PortRef<'_>, dst: IpAddr) -> Option<IpAddr> {
    src.local
        .fixed_ips
        .iter()
        .map(|f| f.ip_address)
        .find(|ip| ip.is_ipv6() == dst.is_ipv6())
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() { "IPv6" } else { "IPv4" }
}

fn dir_word(dir: RuleDirection) -> &'static str {
    match dir {
        RuleDirection::Ingress => "ingress",
        RuleDirection::Egress => "egress",
    }
}

fn protocol_name(n: u8) -> String {
    match n {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        n => format!("protocol {n}"),
    }
}

/// "tcp 22", "icmp type 8 code 0", "protocol 47".
pub fn proto_words(f: &Flow) -> String {
    let name = protocol_name(f.protocol);
    match (f.dport, f.icmp) {
        (Some(port), _) => format!("{name} {port}"),
        (None, Some((t, c))) => format!("{name} type {t} code {c}"),
        _ => name,
    }
}

fn describe_rule(r: &RuleSpec) -> String {
    let mut s = format!(
        "{} {}",
        dir_word(r.direction),
        match r.ethertype {
            RuleEthertype::IPv4 => "IPv4",
            RuleEthertype::IPv6 => "IPv6",
        }
    );
    match r.protocol {
        Some(p) => s.push_str(&format!(" {}", protocol_name(p))),
        None => s.push_str(" any protocol"),
    }
    if let Some((lo, hi)) = r.ports {
        if lo == hi {
            s.push_str(&format!(" port {lo}"));
        } else {
            s.push_str(&format!(" ports {lo}-{hi}"));
        }
    }
    if let Some((t, c)) = r.icmp {
        s.push_str(&format!(" type {t}"));
        if let Some(c) = c {
            s.push_str(&format!(" code {c}"));
        }
    }
    let word = match r.direction {
        RuleDirection::Ingress => "from",
        RuleDirection::Egress => "to",
    };
    match &r.remote {
        RuleRemote::Any => s.push_str(&format!(" {word} anywhere")),
        RuleRemote::Prefix(p) => s.push_str(&format!(" {word} {p}")),
        RuleRemote::Group(g) => s.push_str(&format!(" {word} group {g}")),
        RuleRemote::AddressGroup(g) => s.push_str(&format!(" {word} address group {g}")),
    }
    s
}

/// Leaving the cloud from `host` on external network `ext` as `source`.
/// Whether a router's uplink routes IPv6 to `dst`, as `agent::router`
/// installs its IPv6 table: the external IPv6 subnets on link, and the
/// rest via their gateway, if there is one.
fn ipv6_uplink_routes(gateway: &RouterGatewaySpec, dst: IpAddr) -> bool {
    let mut subnets = gateway.addresses.iter().filter(|a| a.addr().is_ipv6());
    subnets.any(|a| gateway.ipv6_nexthop.is_some() || a.trunc().contains(&dst))
}

fn left<'a>(host: &str, ext: &str, source: IpAddr) -> Arrival<'a> {
    Arrival {
        to: Reached::Outside {
            host: host.to_owned(),
            network: ext.to_owned(),
            source,
        },
        routed: true,
    }
}

/// The packet's fields that must agree (ports only with TCP/UDP-like
/// protocols, ICMP type only with ICMP); whether it is ICMP.
fn check_packet(p: &Packet) -> Result<bool, TraceError> {
    let is_icmp = matches!(p.protocol, 1 | 58);
    if PORT_PROTOCOLS.contains(&p.protocol) && p.destination_port.is_none() {
        return Err(TraceError::InvalidPacket(format!(
            "protocol {} needs a destination port",
            p.protocol
        )));
    }
    if !PORT_PROTOCOLS.contains(&p.protocol)
        && (p.destination_port.is_some() || p.source_port.is_some())
    {
        return Err(TraceError::InvalidPacket(format!(
            "protocol {} has no ports",
            p.protocol
        )));
    }
    if !is_icmp && (p.icmp_type.is_some() || p.icmp_code.is_some()) {
        return Err(TraceError::InvalidPacket(
            "an ICMP type or code needs protocol icmp or ipv6-icmp".into(),
        ));
    }
    Ok(is_icmp)
}
