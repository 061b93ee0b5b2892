//! `vnet trace`: asks the server (`POST /vnet/v1/trace`) why a packet does or
//! does not get from a port to an address or port, and prints its answer one
//! step per line, the verdict and the hint (or the API's JSON with `--json`).
//! It owns the wording of the terminal output only; the trace is the server's.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::BoxError;

#[derive(clap::Args, Clone, Debug)]
pub struct TraceArgs {
    /// The port the packet leaves from (id).
    #[arg(long)]
    from: String,
    /// The destination: an IP address, or a port id.
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
        "from_port": args.from,
        "protocol": args.proto.parse::<u8>().map_or_else(|_| json!(args.proto), |n| json!(n)),
    });
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

/// Runs the trace; `Ok(true)` if the packet is delivered.
pub fn run(args: &TraceArgs) -> Result<bool, BoxError> {
    let (status, body) = post(&args.server, args.project.as_deref(), &request(args))?;
    if status != 200 {
        let err = &body["NeutronError"];
        return Err(match (err["type"].as_str(), err["message"].as_str()) {
            (Some(kind), Some(message)) => format!("{kind}: {message}").into(),
            _ => format!("the server answered {status}: {body}").into(),
        });
    }
    let trace = &body["trace"];
    if args.json {
        println!("{body}");
    } else {
        print!("{}", render(trace));
    }
    Ok(trace["verdict"] == "delivered")
}

/// The trace for a terminal: one line per step (host, object, decision,
/// detail), then the verdict and the hint.
pub fn render(t: &Value) -> String {
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
    let mut out = format!(
        "trace: protocol {} {} → {}{}\n",
        p["protocol"],
        with_port(&p["source_ip"], &p["source_port"]),
        with_port(&p["destination_ip"], &p["destination_port"]),
        if p["icmp_type"].is_null() {
            String::new()
        } else {
            format!(" (icmp type {} code {})", p["icmp_type"], p["icmp_code"])
        }
    );
    for (i, step) in t["steps"].as_array().into_iter().flatten().enumerate() {
        let object = [
            ("network", "network"),
            ("port", "port"),
            ("security_group", "group"),
            ("rule", "rule"),
        ]
        .iter()
        .filter_map(|(key, word)| step[*key].as_str().map(|v| format!("{word} {}", short(v))))
        .collect::<Vec<_>>()
        .join(" ");
        out.push_str(&format!(
            "{:>2}. {:<13} {:<10} {:<30} {:<7} {}\n",
            i + 1,
            s(&step["stage"]).replace('_', "-"),
            step["host"].as_str().unwrap_or("-"),
            object,
            s(&step["decision"]).to_uppercase(),
            s(&step["detail"]),
        ));
    }
    out.push_str(&format!("verdict: {}\n", s(&t["message"])));
    if let Some(hint) = t["hint"].as_str() {
        out.push_str(&format!("hint: {hint}\n"));
    }
    out
}

/// The first 8 characters of an id (a UUID's first group), enough to tell
/// objects apart on one screen; `--json` has them whole.
fn short(id: &str) -> &str {
    id.get(..8).filter(|_| id.len() > 12).unwrap_or(id)
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
