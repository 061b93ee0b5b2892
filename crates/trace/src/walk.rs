//! The walk itself: one packet from its source port to its destination,
//! step by step, each step a few lookups in the compiled state (see
//! `view`). It decides nothing the agent's kernel state would not decide;
//! the nftables semantics live in `filter`, the wording of hints here.

use std::net::IpAddr;

use compiler::PortSeen;
use compiler::protocol::{PortSecuritySpec, RuleDirection, RuleEthertype, RuleRemote, RuleSpec};
use model::PortStatus;

use crate::filter::{self, Allowed, ChainDecision, Flow, PORT_PROTOCOLS};
use crate::report::{Decision, Reason, Stage, Step, Trace, TracedPacket, Verdict};
use crate::view::{Compiled, Facts, PortRef};
use crate::{Query, Target, TraceError};

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
#[derive(Default)]
struct On<'a> {
    host: Option<&'a str>,
    network: Option<&'a str>,
    port: Option<&'a str>,
    group: Option<&'a str>,
    rule: Option<&'a str>,
}

impl<'v, V: Compiled + ?Sized, F: Facts + ?Sized> Walk<'v, V, F> {
    fn step(&mut self, stage: Stage, on: On<'_>, decision: Decision, detail: String) {
        self.steps.push(Step {
            stage,
            host: on.host.map(str::to_owned),
            network: on.network.map(str::to_owned),
            port: on.port.map(str::to_owned),
            security_group: on.group.map(str::to_owned),
            rule: on.rule.map(str::to_owned),
            decision,
            detail,
        });
    }

    /// The walk: `Err` for a query that cannot start, else the verdict
    /// (`Ok(message)` delivered, `Err(stop)` dropped).
    fn run(&mut self, q: &Query) -> Result<Result<String, Stop>, TraceError> {
        let view = self.view;
        let src = view
            .port(&q.from_port)
            .ok_or_else(|| TraceError::UnknownSourcePort(q.from_port.clone()))?;
        let dst_port = match &q.to {
            Target::Port(id) => Some((
                id.as_str(),
                view.port(id)
                    .ok_or_else(|| TraceError::UnknownDestinationPort(id.clone()))?,
            )),
            Target::Ip(_) => None,
        };
        let flow = self.flow(q, &src, dst_port.map(|(_, p)| p))?;
        Ok(self.walk(q, &src, dst_port, flow))
    }

    /// The packet's addresses and L4 fields, settled.
    fn flow(
        &mut self,
        q: &Query,
        src: &PortRef<'_>,
        dst_port: Option<PortRef<'_>>,
    ) -> Result<Option<Flow>, TraceError> {
        let p = &q.packet;
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
        Ok(source.map(|src| Flow {
            src,
            dst,
            protocol,
            sport: p
                .source_port
                .or(PORT_PROTOCOLS.contains(&protocol).then_some(40_000)),
            dport: p.destination_port,
            icmp,
        }))
    }

    fn walk(
        &mut self,
        q: &Query,
        src: &PortRef<'_>,
        dst_port: Option<(&str, PortRef<'_>)>,
        flow: Option<Flow>,
    ) -> Result<String, Stop> {
        let view = self.view;
        let from = q.from_port.as_str();
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

        // ---- L2 lookup in the source's network ---------------------------
        let on_l2 = || On {
            host: Some(host),
            network: Some(net),
            ..On::default()
        };
        if let Some((id, port)) = dst_port
            && port.network_id != net
        {
            self.step(
                Stage::L2Lookup,
                on_l2(),
                Decision::Drop,
                format!("port {id} is on network {}, not on {net}", port.network_id),
            );
            return Err(stop(
                Reason::DifferentNetwork,
                format!(
                    "dropped: port {id} is on another network ({}); networks are isolated and vnet has no routers yet",
                    port.network_id
                ),
                format!(
                    "put both ports on one network (give the source a port on network {})",
                    port.network_id
                ),
            ));
        }
        let subnet = network
            .subnets
            .iter()
            .find(|(_, s)| s.cidr.contains(&flow.dst));
        let Some((subnet_id, subnet)) = subnet else {
            self.step(
                Stage::L2Lookup,
                on_l2(),
                Decision::Drop,
                format!("{} is in none of the network's subnets: no route", flow.dst),
            );
            return Err(stop(
                Reason::NoRoute,
                format!(
                    "dropped: no route to {}: it is not on network {net}, and routers are not available in vnet yet",
                    flow.dst
                ),
                "only addresses of the source's own network are reachable until routers exist"
                    .to_owned(),
            ));
        };
        let Some(target) = self.resolve(host, net, flow.dst) else {
            return Err(self.unresolved(host, net, &flow, dst_port.map(|(id, _)| id)));
        };
        let target = target.as_str();
        let target_ref = view.port(target);
        let seen = view.port_seen(host, target);
        let (Some(target_ref), Some(seen)) = (target_ref, seen) else {
            return Err(self.unresolved(host, net, &flow, Some(target)));
        };
        let dst_host = target_ref.host;
        match seen {
            PortSeen::Local(local) => self.step(
                Stage::L2Lookup,
                On {
                    port: Some(target),
                    ..on_l2()
                },
                Decision::Forward,
                format!(
                    "{} is port {target} (MAC {}) in subnet {} ({subnet_id}): on this host's bridge, device {}",
                    flow.dst, local.mac, subnet.cidr, local.device
                ),
            ),
            PortSeen::Remote { mac, vtep } => self.step(
                Stage::L2Lookup,
                On {
                    port: Some(target),
                    ..on_l2()
                },
                Decision::Forward,
                format!(
                    "{} is port {target} (MAC {mac}) in subnet {}: static FDB entry to the VXLAN device of VNI {vni}, remote VTEP {vtep}",
                    flow.dst, subnet.cidr
                ),
            ),
        }

        // ---- the tunnel, and the destination host ------------------------
        if let PortSeen::Remote { vtep, .. } = seen {
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
            if view.network(dst_host, net).is_none() {
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
            }
            self.step(
                Stage::Tunnel,
                on_tunnel(),
                Decision::Forward,
                format!("VXLAN VNI {vni}: host {host} → host {dst_host} (VTEP {vtep}), bridge of VNI {vni} there"),
            );
        }

        // ---- the destination port ----------------------------------------
        let on_dst = || On {
            host: Some(dst_host),
            network: Some(net),
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
            format!(
                "delivered to port {target}, device {}",
                target_ref.local.device
            ),
        );

        // ---- the reply, where no conntrack lets it back -----------------
        let needs_reply = flow.protocol == 6 || matches!(flow.icmp, Some((8 | 128, _)));
        if needs_reply {
            let reply = flow.reply();
            let stateless = |h: &str, s: Option<&PortSecuritySpec>| {
                s.is_some_and(|s| !filter::port_groups(view, h, s).0)
            };
            let dst_stateless = stateless(dst_host, dst_security);
            let src_stateless = stateless(host, security);
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
            "delivered: {} {} → {} reaches port {target} on host {dst_host}",
            proto_words(&flow),
            flow.src,
            flow.dst
        ))
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
                let via = member.map(|m| format!(" (member {m})")).unwrap_or_default();
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
    fn unresolved(&mut self, host: &str, net: &str, flow: &Flow, named: Option<&str>) -> Stop {
        let view = self.view;
        let candidate = named
            .map(str::to_owned)
            .or_else(|| self.facts.port_with_ip(net, flow.dst));
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
                format!(
                    "no port of network {net} holds {}: ARP/ND for it goes unanswered",
                    flow.dst
                ),
            );
            return stop(
                Reason::NotOnNetwork,
                format!("dropped: nothing on network {net} has address {}", flow.dst),
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
                    format!("port {id} holds {} but is bound to host {h}, which has never registered: no VTEP known, no FDB entry", flow.dst),
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
                    format!("port {id} holds {} but is not bound to any host", flow.dst),
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
    }
    s
}
