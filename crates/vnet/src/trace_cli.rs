//! `vnet trace`: asks the server (`POST /vnet/v1/trace`) why a packet does or
//! does not get from a port to an address or port (or from the outside to a
//! floating IP), and prints its answer one
//! step per line, the verdict and the hint (or the API's JSON with `--json`).
//! It owns the wording of the terminal output only; the trace is the server's.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{BoxError, names};

#[derive(clap::Args, Clone, Debug)]
pub struct TraceArgs {
    /// The port the packet leaves from: its name or id.
    #[arg(
        long,
        required_unless_present = "from_outside",
        conflicts_with = "from_outside"
    )]
    from: Option<String>,
    /// Or an address outside the cloud, toward a floating IP (--to).
    #[arg(long)]
    from_outside: Option<IpAddr>,
    /// The destination: an IP address, or a port's name or id.
    #[arg(long)]
    to: String,
    /// tcp, udp, icmp, ipv6-icmp, … or a protocol number.
    #[arg(long, default_value = "icmp")]
    proto: String,
    /// Destination port (tcp, udp, sctp, …).
    #[arg(long)]
    dport: Option<u16>,
    /// Source port (tcp, udp, …).
    #[arg(long)]
    sport: Option<u16>,
    /// ICMP type (echo request when left out).
    #[arg(long)]
    icmp_type: Option<u8>,
    #[arg(long)]
    icmp_code: Option<u8>,
    /// Send from this address instead of the port's own (tests anti-spoofing).
    #[arg(long)]
    src_ip: Option<IpAddr>,
    /// Send from this MAC instead of the port's own.
    #[arg(long)]
    src_mac: Option<String>,
    /// The vnet server.
    #[arg(long, default_value = "http://127.0.0.1:9696", env = "OS_ENDPOINT")]
    server: String,
    /// Act as this project (noauth's X-Project-Id); admin of the default project if unset.
    #[arg(long, env = "OS_PROJECT_ID")]
    project: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// The request body of `POST /vnet/v1/trace`.
pub fn request(args: &TraceArgs) -> Value {
    let mut t = json!({
        "protocol": args.proto.parse::<u8>().map_or_else(|_| json!(args.proto), |n| json!(n)),
    });
    match (&args.from, args.from_outside) {
        (Some(port), _) => t["from_port"] = json!(port),
        (None, Some(ip)) => t["from_ip"] = json!(ip),
        (None, None) => {}
    }
    match args.to.parse::<IpAddr>() {
        Ok(ip) => t["to_ip"] = json!(ip),
        Err(_) => t["to_port"] = json!(args.to),
    }
    for (key, value) in [
        ("destination_port", args.dport.map(u32::from)),
        ("source_port", args.sport.map(u32::from)),
        ("icmp_type", args.icmp_type.map(u32::from)),
        ("icmp_code", args.icmp_code.map(u32::from)),
    ] {
        if let Some(v) = value {
            t[key] = json!(v);
        }
    }
    if let Some(ip) = args.src_ip {
        t["source_ip"] = json!(ip);
    }
    if let Some(mac) = &args.src_mac {
        t["source_mac"] = json!(mac);
    }
    json!({ "trace": t })
}

/// Runs the trace; `Ok(true)` if the packet is delivered. Ports may be
/// given by name; the output names what has a name.
pub fn run(args: &TraceArgs) -> Result<bool, BoxError> {
    let api = args
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let project = args.project.as_deref();
    let mut resolved = args.clone();
    if let Some(from) = &args.from {
        resolved.from = Some(names::resolve(&api, project, names::PORTS, from)?);
    }
    if args.to.parse::<IpAddr>().is_err() {
        resolved.to = names::resolve(&api, project, names::PORTS, &args.to)?;
    }
    let (status, body) = post(&args.server, project, &request(&resolved))?;
    if status != 200 {
        let err = &body["NeutronError"];
        return Err(match (err["type"].as_str(), err["message"].as_str()) {
            (Some(kind), Some(message)) => format!("{kind}: {message}").into(),
            _ => format!("the server answered {status}: {body}").into(),
        });
    }
    let trace = &body["trace"];
    let text = if args.json {
        format!("{body}\n")
    } else {
        render(trace, &names::names_of(&api, project, &ids_in(trace)))
    };
    // A closed pipe (`| head`) is the reader's choice, not an error.
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(trace["verdict"] == "delivered")
}

/// Every id (UUID) a trace mentions, once each.
fn ids_in(value: &Value) -> Vec<String> {
    fn walk(value: &Value, ids: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::String(text) => {
                for (at, _) in text.char_indices() {
                    if let Some(word) = text.get(at..at + 36)
                        && is_uuid(word.as_bytes())
                    {
                        ids.insert(word.to_owned());
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, ids)),
            Value::Object(map) => map.values().for_each(|v| walk(v, ids)),
            _ => {}
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    walk(value, &mut ids);
    ids.into_iter().collect()
}

fn is_uuid(w: &[u8]) -> bool {
    w.len() == 36
        && w.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The trace for a terminal: one line per step (host, object, decision,
/// detail), then the verdict and the hint; an id with a name in `names`
/// shows as "name (short id)".
pub fn render(t: &Value, names: &HashMap<String, String>) -> String {
    let shorten = |text: &str| shorten(text, names);
    let short = |id: &str| match names.get(id) {
        Some(name) => names::label(name, id),
        None => names::short(id).to_owned(),
    };
    let p = &t["packet"];
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let with_port = |ip: &Value, port: &Value| {
        if port.is_null() {
            s(ip)
        } else {
            format!("{}:{}", s(ip), port)
        }
    };
    let protocol = match p["protocol"].as_u64() {
        Some(1) => "icmp".to_owned(),
        Some(6) => "tcp".to_owned(),
        Some(17) => "udp".to_owned(),
        Some(58) => "ipv6-icmp".to_owned(),
        _ => format!("protocol {}", p["protocol"]),
    };
    let mut out = format!(
        "trace: {protocol} {} → {}{}\n",
        with_port(&p["source_ip"], &p["source_port"]),
        with_port(&p["destination_ip"], &p["destination_port"]),
        if p["icmp_type"].is_null() {
            String::new()
        } else {
            format!(" (icmp type {} code {})", p["icmp_type"], p["icmp_code"])
        }
    );
    for (i, step) in t["steps"].as_array().into_iter().flatten().enumerate() {
        // On a router's steps the port is the router's interface.
        let port_word = if step["router"].is_string() {
            "interface"
        } else {
            "port"
        };
        let mut object = [
            ("router", "router"),
            ("network", "network"),
            ("port", port_word),
            ("security_group", "group"),
            ("rule", "rule"),
        ]
        .iter()
        .filter_map(|(key, word)| step[*key].as_str().map(|v| format!("{word} {}", short(v))))
        .collect::<Vec<_>>();
        if let Some(destination) = step["route"]["destination"].as_str() {
            object.push(match step["route"]["nexthop"].as_str() {
                Some(nexthop) => format!("route {destination} via {nexthop}"),
                None => format!("route {destination}"),
            });
        }
        let object = object.join(" ");
        out.push_str(&format!(
            "{:>2}. {:<13} {:<10} {:<30} {:<7} {}\n",
            i + 1,
            s(&step["stage"]).replace('_', "-"),
            step["host"].as_str().unwrap_or("-"),
            object,
            s(&step["decision"]).to_uppercase(),
            shorten(&s(&step["detail"])),
        ));
    }
    out.push_str(&format!("verdict: {}\n", shorten(&s(&t["message"]))));
    if let Some(hint) = t["hint"].as_str() {
        out.push_str(&format!("hint: {}\n", shorten(hint)));
    }
    out
}

/// Every UUID in `text` cut to its first group (as the object column), and
/// its name before it when it has one.
fn shorten(text: &str, names: &HashMap<String, String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            let id = &text[i..i + 36];
            match names.get(id) {
                Some(name) => out.push_str(&names::label(name, id)),
                None => out.push_str(&text[i..i + 8]),
            }
            i += 36;
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// One HTTP/1.1 JSON POST (the server answers with Content-Length).
pub fn post(server: &str, project: Option<&str>, body: &Value) -> Result<(u16, Value), BoxError> {
    let addr = server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr)
        .map_err(|e| format!("cannot reach the vnet server at {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.to_string();
    let project = project
        .map(|p| format!("X-Project-Id: {p}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST /vnet/v1/trace HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{project}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").ok_or("malformed HTTP reply")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status")?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TraceArgs,
    }

    #[test]
    fn the_request_names_an_address_or_a_port_and_only_what_was_given() {
        let cli = Cli::try_parse_from([
            "vnet", "--from", "p1", "--to", "10.0.0.6", "--proto", "tcp", "--dport", "22",
        ])
        .expect("arguments");
        let r = request(&cli.args);
        assert_eq!(r["trace"]["to_ip"], "10.0.0.6");
        assert_eq!(r["trace"]["protocol"], "tcp");
        assert_eq!(r["trace"]["destination_port"], 22);
        assert!(r["trace"].get("source_port").is_none());
        let cli = Cli::try_parse_from(["vnet", "--from", "p1", "--to", "p2", "--proto", "47"])
            .expect("arguments");
        let r = request(&cli.args);
        assert_eq!(
            (&r["trace"]["to_port"], &r["trace"]["protocol"]),
            (&json!("p2"), &json!(47))
        );
    }

    #[test]
    fn a_trace_renders_one_line_per_step_then_verdict_and_hint() {
        let t = json!({
            "packet": {"protocol": 6, "source_ip": "10.0.0.5", "source_port": 40000,
                       "destination_ip": "10.0.0.6", "destination_port": 22},
            "steps": [
                {"stage": "source", "host": "h1", "port": "2edab4ec-d2b5-40f2-b37c-da8d89eb9259",
                 "decision": "pass", "detail": "port 2edab4ec-d2b5-40f2-b37c-da8d89eb9259 is ACTIVE"},
                {"stage": "ingress", "host": "h2", "security_group": "web", "decision": "drop",
                 "detail": "no ingress rule"},
            ],
            "verdict": "dropped", "message": "dropped at ingress", "hint": "add a rule",
        });
        let text = render(&t, &HashMap::new());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].contains("tcp 10.0.0.5:40000 → 10.0.0.6:22"),
            "{text}"
        );
        assert!(
            lines[1].contains("port 2edab4ec") && lines[1].contains("PASS"),
            "{text}"
        );
        assert!(lines[1].ends_with("port 2edab4ec is ACTIVE"), "{text}");
        assert!(
            lines[2].contains("group web") && lines[2].contains("DROP"),
            "{text}"
        );
        assert_eq!(lines[3], "verdict: dropped at ingress");
        assert_eq!(lines[4], "hint: add a rule");
    }

    #[test]
    fn ids_with_names_show_as_name_and_short_id() {
        let group = "d46ecc83-1b2a-4c3d-9e8f-0a1b2c3d4e5f";
        let t = json!({
            "packet": {"protocol": 6, "source_ip": "10.0.0.5", "destination_ip": "10.0.0.6"},
            "steps": [{"stage": "ingress", "host": "h2", "security_group": group,
                       "decision": "drop", "detail": format!("no ingress rule of group(s) {group}")}],
            "verdict": "dropped", "message": "dropped", "hint": format!("add a rule to group {group}"),
        });
        assert_eq!(ids_in(&t), vec![group.to_owned()]);
        let names = HashMap::from([(group.to_owned(), "web80".to_owned())]);
        let text = render(&t, &names);
        assert!(text.contains("group web80 (d46ecc83)"), "{text}");
        assert!(text.contains("group(s) web80 (d46ecc83)"), "{text}");
        assert!(
            text.contains("hint: add a rule to group web80 (d46ecc83)"),
            "{text}"
        );
    }

    #[test]
    fn router_steps_show_the_router_its_interface_and_the_route() {
        let t = json!({
            "packet": {"protocol": 1, "source_ip": "10.1.0.10", "destination_ip": "192.168.7.5",
                       "icmp_type": 8, "icmp_code": 0},
            "steps": [
                {"stage": "gateway", "host": "h1", "network": "ra",
                 "router": "2edab4ec-d2b5-40f2-b37c-da8d89eb9259", "port": "qa",
                 "decision": "forward", "detail": "off-link"},
                {"stage": "routing", "host": "h1", "network": "rb",
                 "router": "2edab4ec-d2b5-40f2-b37c-da8d89eb9259", "port": "qb",
                 "route": {"destination": "192.168.7.0/24", "nexthop": "10.2.0.20"},
                 "decision": "forward", "detail": "extra route"},
                {"stage": "routing", "host": "h1", "router": "r2", "port": "qc",
                 "route": {"destination": "10.3.0.0/24", "nexthop": null},
                 "decision": "forward", "detail": "connected"},
            ],
            "verdict": "delivered", "message": "delivered",
        });
        let text = render(&t, &HashMap::new());
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("gateway")
                && lines[1].contains("router 2edab4ec network ra interface qa"),
            "{text}"
        );
        assert!(
            lines[2].contains("route 192.168.7.0/24 via 10.2.0.20"),
            "{text}"
        );
        assert!(
            lines[3].contains("route 10.3.0.0/24") && !lines[3].contains("via"),
            "{text}"
        );
    }
}
