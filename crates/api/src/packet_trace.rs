//! `POST /vnet/v1/trace`: parses a trace request, scopes it to the caller's
//! project, and runs the pure `trace` engine over the server's compiler and
//! the host registry (addresses resolve, through the model's index, in
//! whichever network the walk reaches: the source's, or one a router
//! routes to), then hides other projects' objects from a non-admin. It owns the request's JSON shape and the scoping; it
//! must not decide anything about the packet itself (that is `trace`'s).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use model::{Caller, Cloud, Facet, Kind, MacAddr, ModelError, PortStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use trace::{Facts, Packet, Query, Source, Target, TraceError};

use crate::auth::noauth_caller;
use crate::error::ApiError;
use crate::hosts::Hosts;
use crate::state::App;

/// The request body, inside `{"trace": …}` (or bare).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRequest {
    #[serde(default)]
    from_port: Option<String>,
    /// An address outside the cloud, toward a floating IP (or, IPv6, a
    /// port's own address).
    #[serde(default)]
    from_ip: Option<IpAddr>,
    #[serde(default)]
    to_ip: Option<IpAddr>,
    #[serde(default)]
    to_port: Option<String>,
    /// A name (`tcp`, `icmp`, …) or a number.
    protocol: Value,
    #[serde(default)]
    source_port: Option<u16>,
    #[serde(default)]
    destination_port: Option<u16>,
    #[serde(default)]
    icmp_type: Option<u8>,
    #[serde(default)]
    icmp_code: Option<u8>,
    #[serde(default)]
    source_ip: Option<IpAddr>,
    #[serde(default)]
    source_mac: Option<String>,
}

/// Liveness from the host registry, ports from the model.
struct ServerFacts<'a> {
    cloud: &'a Cloud,
    hosts: &'a Hosts,
}

impl Facts for ServerFacts<'_> {
    fn agent_alive(&self, host: &str) -> bool {
        self.hosts.get(host).is_some_and(|h| h.alive)
    }

    fn port_status(&self, port_id: &str) -> Option<PortStatus> {
        self.cloud.port(port_id).map(|p| p.status)
    }

    fn port_with_ip(&self, network_id: &str, ip: IpAddr) -> Option<String> {
        self.cloud
            .port_with_ip(network_id, ip)
            .map(|p| p.std.id.clone())
    }

    fn floating_ip_with_address(&self, address: IpAddr) -> Option<String> {
        self.cloud
            .floating_ip_with_address(address)
            .map(|f| f.std.id.clone())
    }
}

fn port_not_found(id: &str) -> ApiError {
    ModelError::NotFound {
        kind: Kind::Port,
        id: id.to_owned(),
    }
    .into()
}

fn protocol_of(v: &Value) -> Result<u8, ApiError> {
    let p = match v {
        Value::String(s) => model::protocol_number(&s.to_ascii_lowercase()),
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        _ => None,
    };
    p.ok_or_else(|| {
        ApiError::invalid_input(format!(
            "protocol {v} is not an IP protocol name or number 0-255"
        ))
    })
}

fn query_of(body: &[u8]) -> Result<Query, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Body contains invalid data: {e}")))?;
    let v = v.get("trace").cloned().unwrap_or(v);
    let r: TraceRequest = serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("Body contains invalid data: {e}")))?;
    let from = match (r.from_port, r.from_ip) {
        (Some(port), None) => Source::Port(port),
        (None, Some(ip)) => Source::Outside(ip),
        _ => {
            return Err(ApiError::invalid_input(
                "give exactly one of from_port and from_ip",
            ));
        }
    };
    let to = match (r.to_ip, r.to_port) {
        (Some(ip), None) => Target::Ip(ip),
        (None, Some(port)) => Target::Port(port),
        _ => {
            return Err(ApiError::invalid_input(
                "give exactly one of to_ip and to_port",
            ));
        }
    };
    let source_mac = r
        .source_mac
        .map(|m| m.parse::<MacAddr>())
        .transpose()
        .map_err(|e| ApiError::invalid_input(e.to_string()))?;
    Ok(Query {
        from,
        to,
        packet: Packet {
            protocol: protocol_of(&r.protocol)?,
            source_port: r.source_port,
            destination_port: r.destination_port,
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_code,
            source_ip: r.source_ip,
            source_mac,
        },
    })
}

/// From outside, an IPv6 address that is no floating IP is a port's own
/// (IPv6 is not NATed): the trace goes to the one port holding it that the
/// caller may trace to.
fn fit_outside_target(cloud: &Cloud, caller: &Caller, q: &mut Query) -> Result<(), ApiError> {
    let (Source::Outside(_), Target::Ip(ip)) = (&q.from, &q.to) else {
        return Ok(());
    };
    if ip.is_ipv4() || cloud.floating_ip_with_address(*ip).is_some() {
        return Ok(());
    }
    let holders: Vec<&str> = cloud
        .faceted(Kind::Port, Facet::FixedIp, &ip.to_string())
        .into_iter()
        .flatten()
        .filter(|id| {
            cloud
                .port(id)
                .is_some_and(|p| caller.owns(&p.std.project_id))
        })
        .map(|id| &**id)
        .collect();
    match holders[..] {
        [] => Ok(()),
        [id] => {
            q.to = Target::Port(id.to_owned());
            Ok(())
        }
        _ => Err(ApiError::invalid_input(format!(
            "{ip} is held by ports on several networks ({}): trace to_port",
            holders.join(", ")
        ))),
    }
}

/// A non-admin traces only from its own ports, toward its own ports or
/// any address, or from outside toward its own floating IPs or its own
/// ports' IPv6 addresses; a port or floating IP it may not see is a 404,
/// as if it did not exist.
fn check_scope(cloud: &Cloud, caller: &Caller, q: &Query) -> Result<(), ApiError> {
    let owned = |id: &str| {
        cloud
            .port(id)
            .is_some_and(|p| caller.owns(&p.std.project_id))
    };
    match (&q.from, &q.to) {
        (Source::Port(id), _) if !owned(id) => return Err(port_not_found(id)),
        (Source::Outside(_), Target::Ip(ip)) if !caller.is_admin => {
            let mine = cloud
                .floating_ip_with_address(*ip)
                .is_some_and(|f| caller.owns(&f.std.project_id));
            if !mine {
                return Err(ModelError::NotFound {
                    kind: Kind::FloatingIp,
                    id: ip.to_string(),
                }
                .into());
            }
        }
        _ => {}
    }
    if let Target::Port(id) = &q.to
        && !owned(id)
    {
        return Err(port_not_found(id));
    }
    Ok(())
}

/// Ports vnet owns (router interfaces and gateways, floating IPs) are never
/// bound, so a trace from or to one as a VM's would end in "bind it". A
/// trace starts at a VM's port; toward a router's port it goes to that
/// port's address, which the router itself answers.
fn fit_owned_ports(cloud: &Cloud, q: &mut Query) -> Result<(), ApiError> {
    let owner = |id: &str| {
        cloud
            .port(id)
            .map(|p| p.device_owner.clone())
            .filter(|o| o.starts_with("network:"))
    };
    if let Source::Port(from) = &q.from
        && let Some(owner) = owner(from)
    {
        return Err(ApiError::invalid_input(format!(
            "port {from} is a {owner} port, not a VM's: a trace starts at a VM's port"
        )));
    }
    if let Target::Port(id) = &q.to
        && let Some(owner) = owner(id)
    {
        let addresses: Vec<IpAddr> = cloud
            .port(id)
            .map(|p| p.fixed_ips.iter().map(|f| f.ip_address).collect())
            .unwrap_or_default();
        let ip = addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or(addresses.first())
            .copied()
            .ok_or_else(|| {
                ApiError::invalid_input(format!("port {id} ({owner}) has no address to trace to"))
            })?;
        q.to = Target::Ip(ip);
    }
    Ok(())
}

/// Steps at another project's objects (a port, a router, a network it may
/// not see, reached over a shared network or through a router) keep their
/// stage and decision but lose those objects, the host they are on (unless
/// it is the source's own), the route and the wording. A verdict or hint
/// naming any of them is worded without them.
fn redact(cloud: &Cloud, caller: &Caller, source_host: &str, t: &mut trace::Trace) {
    if caller.is_admin {
        return;
    }
    let foreign_port = |id: &str| {
        cloud
            .port(id)
            .is_none_or(|p| !caller.owns(&p.std.project_id))
    };
    let foreign_router = |id: &str| {
        cloud
            .router(id)
            .is_none_or(|r| !caller.owns(&r.std.project_id))
    };
    let hidden_network = |id: &str| {
        cloud
            .network(id)
            .is_none_or(|n| !cloud.can_see_network(caller, n))
    };
    let mut hidden: Vec<String> = Vec::new();
    let mut last_redacted = false;
    let mut last_what = "";
    for step in &mut t.steps {
        let port = step.port.as_deref().is_some_and(foreign_port);
        let router = step.router.as_deref().is_some_and(foreign_router);
        let network = step.network.as_deref().is_some_and(hidden_network);
        last_redacted = port || router || network;
        if !last_redacted {
            continue;
        }
        let mut hide = |field: &mut Option<String>| {
            if let Some(v) = field.take() {
                hidden.push(v);
            }
        };
        if port || router {
            hide(&mut step.port);
            hide(&mut step.security_group);
            hide(&mut step.rule);
        }
        if router {
            hide(&mut step.router);
        }
        if network {
            hide(&mut step.network);
        }
        if step.host.as_deref() != Some(source_host) {
            hide(&mut step.host);
        }
        step.route = None;
        let what = if router {
            "a router of another project"
        } else if port {
            "a port of another project"
        } else {
            "a network of another project"
        };
        step.detail = format!("{what}: {}", step.decision.as_str());
        last_what = what;
    }
    hidden.retain(|v| !v.is_empty());
    let names_hidden = |text: &str| hidden.iter().any(|v| text.contains(v.as_str()));
    if t.delivered() {
        if names_hidden(&t.message) {
            t.message = "delivered, through objects of another project".into();
        }
    } else if last_redacted {
        t.message = format!("dropped at {last_what}");
        t.hint = Some("ask its owner".into());
    } else if names_hidden(&t.message) {
        t.message = "dropped on the way, at objects of another project".into();
        t.hint = Some("ask their owner".into());
    }
    if t.hint.as_deref().is_some_and(names_hidden) {
        t.hint = Some("ask the owner of the objects on the way".into());
    }
}

pub async fn trace_packet(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = noauth_caller(&headers, &app.default_project);
    let mut query = query_of(&body)?;
    let cloud = app.read();
    fit_outside_target(&cloud, &caller, &mut query)?;
    check_scope(&cloud, &caller, &query)?;
    fit_owned_ports(&cloud, &mut query)?;
    let source_host = match &query.from {
        Source::Port(id) => cloud
            .port(id)
            .map(|p| p.binding_host_id.clone())
            .unwrap_or_default(),
        Source::Outside(_) => String::new(),
    };
    let facts = ServerFacts {
        cloud: &cloud,
        hosts: &app.hosts,
    };
    let mut t = app
        .fabric
        .read(|compiler| trace::trace(compiler, &facts, &query))
        .map_err(|e| match e {
            TraceError::UnknownSourcePort(id) | TraceError::UnknownDestinationPort(id) => {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "PortNotCompiled",
                    format!("port {id} is not in the compiled state yet; retry"),
                )
            }
            TraceError::InvalidPacket(m) => ApiError::invalid_input(m),
            TraceError::OutsideToPort => ApiError::invalid_input(e.to_string()),
        })?;
    redact(&cloud, &caller, &source_host, &mut t);
    Ok(Json(json!({ "trace": t })))
}
