//! A run's figures as a table for people or JSON for tools, every latency also
//! as a ratio to the floors measured in the same run, with the goals last.

use std::fmt::Write;

use serde_json::{Value, json};

use super::goals::{NEUTRON_PORT_P50_MS, goals};
use super::list_scale::{ListScale, short};
use super::results::{Floor, Floors, PortPhase, Results, clients};
use super::stats::{Samples, ms, ratio};

pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let p = r.plan;
    let _ = writeln!(
        out,
        "vnet bench api on the {} store: {} networks, {} ports per phase, {} clients, \
         {} rules; server pid {} (CLK_TCK {})",
        r.store, p.networks, p.ports, p.clients, p.rules, r.server_pid, r.clk_tck
    );
    let _ = writeln!(
        out,
        "every write is acknowledged after fsync; latencies are client round trips \
         on keep-alive connections\n"
    );
    baselines_table(&mut out, &r.floors);
    figures_table(&mut out, r);
    if let Some(scale) = &r.scale {
        scale_table(&mut out, scale);
    }
    goals_table(&mut out, r);
    out
}

fn scale_table(out: &mut String, s: &ListScale) {
    let _ = writeln!(
        out,
        "lists at scale (a server of their own; {} ports, then {}; one network holds {}, then {};\n\
         {} s of bulk creates between them; server RSS {:.1} MiB, then {:.1} MiB)",
        s.small_ports,
        s.big_ports,
        s.network_ports.0,
        s.network_ports.1,
        s.grow_seconds as u64,
        mib(s.rss_bytes.0),
        mib(s.rss_bytes.1),
    );
    let _ = writeln!(
        out,
        "{:<40}{:>7}{:>13}{:>13}{:>13}{:>13}{:>9}",
        "GET /v2.0/ports (or a tenant's list)",
        "items",
        format!("p50 ms {}", short(s.small_ports)),
        format!("p99 ms {}", short(s.small_ports)),
        format!("p50 ms {}", short(s.big_ports)),
        format!("p99 ms {}", short(s.big_ports)),
        "p50 x",
    );
    for l in &s.lists {
        let _ = writeln!(
            out,
            "  {:<38}{:>7}{:>13.3}{:>13.3}{:>13.3}{:>13.3}{:>9}",
            l.name,
            l.items,
            ms(l.small.p50()),
            ms(l.small.p99()),
            ms(l.big.p50()),
            ms(l.big.p99()),
            times(l.growth()),
        );
    }
    out.push('\n');
}

fn baselines_table(out: &mut String, f: &Floors) {
    let _ = writeln!(
        out,
        "{:<44}{:>9}{:>9}{:>7}{:>12}{:>12}",
        "baseline (start and end of the run pooled)",
        "p50 ms",
        "p99 ms",
        "n",
        "p50 start",
        "p50 end"
    );
    let mut floors = vec![
        ("HTTP floor: GET / (keep-alive)", &f.http),
        ("fsync floor: 4 KiB append + fdatasync", &f.fsync),
    ];
    if let Some(etcd) = &f.etcd_txn {
        floors.push(("etcd floor: 1-key put txn, one at a time", etcd));
    }
    for (name, floor) in floors {
        let s = &floor.pooled;
        let _ = writeln!(
            out,
            "  {name:<42}{:>9.3}{:>9.3}{:>7}{:>12.3}{:>12.3}",
            ms(s.p50()),
            ms(s.p99()),
            s.len(),
            ms(floor.start.p50()),
            ms(floor.end.p50()),
        );
    }
    out.push('\n');
}

/// One row of the figures table.
struct Row<'a> {
    name: String,
    per_second: Option<f64>,
    latencies: &'a Samples,
    cpu_per_1000: Option<f64>,
    client_cpu_per_1000: Option<f64>,
    disk_kib_per_port: Option<f64>,
    rss_bytes: Option<u64>,
    etcd_cpu_per_1000: Option<f64>,
}

fn plain(name: String, latencies: &Samples) -> Row<'_> {
    Row {
        name,
        per_second: None,
        latencies,
        cpu_per_1000: None,
        client_cpu_per_1000: None,
        disk_kib_per_port: None,
        rss_bytes: None,
        etcd_cpu_per_1000: None,
    }
}

fn phase(name: String, ph: &PortPhase) -> Row<'_> {
    Row {
        name,
        per_second: Some(ph.per_second()),
        latencies: &ph.latencies,
        cpu_per_1000: Some(ph.cpu_per_1000()),
        client_cpu_per_1000: Some(ph.client_cpu_per_1000()),
        disk_kib_per_port: Some(ph.disk_kib_per_port()),
        rss_bytes: Some(ph.server.rss_bytes),
        etcd_cpu_per_1000: ph.etcd_cpu_per_1000(),
    }
}

fn rows(r: &Results) -> Vec<Row<'_>> {
    let mut rows = vec![
        plain("network create".into(), &r.setup.network_create),
        plain("subnet create".into(), &r.setup.subnet_create),
        phase("port create, 1 client".into(), &r.single),
        phase(
            format!("port create, {}", clients(r.concurrent.clients)),
            &r.concurrent,
        ),
    ];
    for l in &r.lists {
        rows.push(plain(l.label(), &l.latencies));
    }
    let w = r.rules.window;
    rows.push(plain(format!("rule create, first {w}"), &r.rules.first));
    rows.push(plain(format!("rule create, last {w}"), &r.rules.last));
    rows.push(plain(
        format!("router interface add ({} on one)", r.l3.subnets),
        &r.l3.interface_add,
    ));
    rows.push(plain(
        "floating IP create + associate".into(),
        &r.l3.floating_ip,
    ));
    rows
}

fn figures_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "{:<36}{:>7}{:>9}{:>9}{:>10}{:>11}{:>9}{:>9}{:>10}{:>9}{:>10}",
        "figure",
        "per s",
        "p50 ms",
        "p99 ms",
        "p50/HTTP",
        "p50/fsync",
        "srv CPU",
        "cli CPU",
        "disk KiB",
        "RSS MiB",
        "etcd CPU"
    );
    for row in rows(r) {
        let s = row.latencies;
        let _ = writeln!(
            out,
            "  {:<34}{:>7}{:>9.3}{:>9.3}{:>10}{:>11}{:>9}{:>9}{:>10}{:>9}{:>10}",
            row.name,
            opt(row.per_second, 0),
            ms(s.p50()),
            ms(s.p99()),
            times(ratio(s.p50(), r.floors.http.p50())),
            times(ratio(s.p50(), r.floors.fsync.p50())),
            opt(row.cpu_per_1000, 3),
            opt(row.client_cpu_per_1000, 3),
            opt(row.disk_kib_per_port, 1),
            opt(row.rss_bytes.map(mib), 1),
            opt(row.etcd_cpu_per_1000, 3),
        );
    }
    let _ = writeln!(
        out,
        "  (srv/cli/etcd CPU: CPU-seconds per 1000 ports of the server, of this bench client \
         and of the etcd member;\n   disk KiB: written to storage by the server per port; \
         RSS: the server's, after the phase)\n"
    );
}

fn goals_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "{:<44}{:>11}{:>12}{:>6}{:>12}{:>11}",
        "goal", "measured", "goal", "", "Neutron", "vs Neutron"
    );
    for g in goals(r) {
        let _ = writeln!(
            out,
            "  {:<42}{:>11}{:>12}{:>6}{:>12}{:>11}",
            g.what,
            format!("{:.3}", g.measured),
            g.target_text(),
            if g.met() { "met" } else { "MISS" },
            opt(g.neutron, 1),
            times(g.vs_neutron()),
        );
    }
    let _ = writeln!(
        out,
        "  (Neutron: port create p50 {NEUTRON_PORT_P50_MS} ms; rule create slows ~1 ms \
         per rule already in the group)"
    );
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The port figures of runs on different stores, one line each, with each
/// run's own floors: what the store costs, side by side.
pub fn side_by_side(runs: &[Results]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "side by side (each run against its own floors)\n{:<10}{:<14}{:>8}{:>9}{:>9}{:>10}{:>10}{:>12}{:>12}",
        "store",
        "port create",
        "per s",
        "p50 ms",
        "p99 ms",
        "srv CPU",
        "etcd CPU",
        "fsync p50",
        "etcd p50"
    );
    for r in runs {
        for ph in [&r.single, &r.concurrent] {
            let _ = writeln!(
                out,
                "{:<10}{:<14}{:>8.0}{:>9.3}{:>9.3}{:>10.3}{:>10}{:>12.3}{:>12}",
                r.store,
                clients(ph.clients),
                ph.per_second(),
                ms(ph.latencies.p50()),
                ms(ph.latencies.p99()),
                ph.cpu_per_1000(),
                opt(ph.etcd_cpu_per_1000(), 3),
                ms(r.floors.fsync.p50()),
                opt(r.floors.etcd_txn.as_ref().map(|f| ms(f.p50())), 3),
            );
        }
    }
    let _ = writeln!(
        out,
        "  (CPU: CPU-seconds per 1000 ports; fsync p50: 4 KiB append + fdatasync; \
         etcd p50: one 1-key etcd txn, in ms)"
    );
    out
}

// ---- JSON -----------------------------------------------------------------

/// Runs on several stores: each run's JSON under its store's name.
pub fn json_side_by_side(runs: &[Results]) -> Value {
    Value::Object(runs.iter().map(|r| (r.store.to_owned(), json(r))).collect())
}

pub fn json(r: &Results) -> Value {
    json!({
        "config": {
            "store": r.store,
            "networks": r.plan.networks,
            "ports": r.plan.ports,
            "clients": r.plan.clients,
            "rules": r.plan.rules,
            "server_pid": r.server_pid,
            "clk_tck": r.clk_tck,
        },
        "baselines": {
            "http_floor": floor_json(&r.floors.http),
            "fsync_floor": floor_json(&r.floors.fsync),
            "etcd_txn_floor": r.floors.etcd_txn.as_ref().map(floor_json),
        },
        "network_create": latency_json(&r.setup.network_create, Some(&r.floors)),
        "subnet_create": latency_json(&r.setup.subnet_create, Some(&r.floors)),
        "port_create_single": phase_json(&r.single, &r.floors),
        "port_create_concurrent": phase_json(&r.concurrent, &r.floors),
        "lists": r.lists.iter().map(|l| json!({
            "name": l.name,
            "path": l.path,
            "items": l.items,
            "latency": latency_json(&l.latencies, Some(&r.floors)),
        })).collect::<Vec<_>>(),
        "rule_create": {
            "rules": r.rules.rules,
            "window": r.rules.window,
            "first": latency_json(&r.rules.first, Some(&r.floors)),
            "last": latency_json(&r.rules.last, Some(&r.floors)),
            "all": latency_json(&r.rules.all, Some(&r.floors)),
            "last_over_first_p50": r.rules.growth(),
        },
        "l3": {
            "subnets": r.l3.subnets,
            "router_interface_add": latency_json(&r.l3.interface_add, Some(&r.floors)),
            "floating_ip_create_associate": latency_json(&r.l3.floating_ip, Some(&r.floors)),
        },
        "lists_at_scale": r.scale.as_ref().map(|s| json!({
            "small_ports": s.small_ports,
            "big_ports": s.big_ports,
            "network_ports": [s.network_ports.0, s.network_ports.1],
            "grow_seconds": s.grow_seconds,
            "server_rss_bytes": [s.rss_bytes.0, s.rss_bytes.1],
            "lists": s.lists.iter().map(|l| json!({
                "name": l.name,
                "items": l.items,
                "small": latency_json(&l.small, None),
                "big": latency_json(&l.big, None),
                "big_over_small_p50": l.growth(),
            })).collect::<Vec<_>>(),
        })),
        "goals": goals(r).iter().map(|g| json!({
            "what": g.what,
            "measured": g.measured,
            "goal": g.target_text(),
            "met": g.met(),
            "neutron": g.neutron,
            "vs_neutron": g.vs_neutron(),
        })).collect::<Vec<_>>(),
    })
}

fn floor_json(f: &Floor) -> Value {
    json!({
        "pooled": latency_json(&f.pooled, None),
        "start": latency_json(&f.start, None),
        "end": latency_json(&f.end, None),
    })
}

fn latency_json(s: &Samples, floors: Option<&Floors>) -> Value {
    let mut v = json!({
        "n": s.len(),
        "p50_ms": ms(s.p50()),
        "p99_ms": ms(s.p99()),
        "max_ms": ms(s.max()),
    });
    if let (Some(f), Some(obj)) = (floors, v.as_object_mut()) {
        obj.insert(
            "p50_over_http_floor".into(),
            json!(ratio(s.p50(), f.http.p50())),
        );
        obj.insert(
            "p50_over_fsync_floor".into(),
            json!(ratio(s.p50(), f.fsync.p50())),
        );
        obj.insert(
            "p99_over_http_floor".into(),
            json!(ratio(s.p99(), f.http.p50())),
        );
        obj.insert(
            "p99_over_fsync_floor".into(),
            json!(ratio(s.p99(), f.fsync.p50())),
        );
    }
    v
}

fn phase_json(ph: &PortPhase, floors: &Floors) -> Value {
    json!({
        "clients": ph.clients,
        "ports": ph.ports,
        "wall_s": ph.wall.as_secs_f64(),
        "ports_per_s": ph.per_second(),
        "latency": latency_json(&ph.latencies, Some(floors)),
        "server_cpu_s": ph.server.cpu_seconds,
        "server_cpu_s_per_1000_ports": ph.cpu_per_1000(),
        "server_rss_bytes": ph.server.rss_bytes,
        "server_disk_write_bytes": ph.server.disk_write_bytes,
        "server_disk_kib_per_port": ph.disk_kib_per_port(),
        "server_write_calls": ph.server.write_calls,
        "client_cpu_s": ph.client_cpu_seconds,
        "etcd_cpu_s": ph.etcd.as_ref().map(|u| u.cpu_seconds),
        "etcd_cpu_s_per_1000_ports": ph.etcd_cpu_per_1000(),
    })
}
