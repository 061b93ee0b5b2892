//! `vnet bench api`'s lists at scale (issue 13): the same filtered, paged
//! lists (an admin's, and a tenant's of one of many projects) in a cloud of
//! 1,000 ports and then, on the same server, of 100,000, each as p50/p99 and
//! the ratio of the two. It owns its own server and builds the cloud through
//! the API's bulk create; only the lists are timed, once the server is idle.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::Conn;
use super::server::{BenchStore, Server};
use super::stats::{Samples, ratio};
use crate::BoxError;

/// The size of the small cloud, the baseline of every ratio.
pub const BASE_PORTS: usize = 1000;
/// Networks the ports are spread over, round-robin, each with one /16.
pub const NETWORKS: usize = 10;
/// Ports one network's /16 may take (65,533 addresses are allocatable).
const PORTS_PER_NETWORK: usize = 65_000;
/// Ports per bulk create.
const BULK: usize = 1000;
/// The projects the cloud's ports, networks and groups are spread over,
/// besides the tenant's: one network per `PORTS_PER_NETWORK_OF_OTHERS`
/// ports and one group per `PORTS_PER_GROUP` (10,000 and 1,000 at 100,000).
const OTHER_PROJECTS: usize = 99;
const PORTS_PER_NETWORK_OF_OTHERS: usize = 10;
const PORTS_PER_GROUP: usize = 100;
/// The project whose member lists, and how many networks, ports and groups
/// it has of its own in both clouds (besides the shared networks and its
/// default group): over two pages of each.
const TENANT: &str = "bench-tenant";
const TENANT_RECORDS: usize = 50;
/// Page size of every list, and timed repetitions of each (after a warm-up).
const PAGE: usize = 20;
const REPS: usize = 200;
const WARM_UP: usize = 10;
/// The server is idle when it spends under `IDLE_CPU` CPU-seconds in a
/// `SETTLE_STEP`; it is given at most `SETTLE_MAX` to get there.
const SETTLE_STEP: Duration = Duration::from_millis(500);
const IDLE_CPU: f64 = 0.05;
const SETTLE_MAX: Duration = Duration::from_secs(120);

/// One list, timed in both clouds.
pub struct ScaleList {
    pub name: &'static str,
    /// Ports it returns (the same at both sizes).
    pub items: usize,
    pub small: Samples,
    pub big: Samples,
}

impl ScaleList {
    /// p50 in the big cloud over p50 in the small one: 1 when a list costs
    /// its page, not the cloud.
    pub fn growth(&self) -> Option<f64> {
        ratio(self.big.p50(), self.small.p50())
    }
}

pub struct ListScale {
    pub small_ports: usize,
    pub big_ports: usize,
    /// Ports in the one network the `network_id` lists name, at each size.
    pub network_ports: (usize, usize),
    /// Seconds the bulk creates from the small cloud to the big one took.
    pub grow_seconds: f64,
    /// The server's RSS after the lists, at each size.
    pub rss_bytes: (u64, u64),
    pub lists: Vec<ScaleList>,
}

/// Whether `ports` is a size this phase can build (0: skip it).
pub fn check(ports: usize) -> Result<(), BoxError> {
    if ports != 0 && ports < BASE_PORTS {
        return Err(format!("--scale-ports must be 0 or at least {BASE_PORTS}").into());
    }
    if ports.div_ceil(NETWORKS) > PORTS_PER_NETWORK {
        return Err(format!("--scale-ports {ports} would exhaust {NETWORKS} /16 subnets").into());
    }
    Ok(())
}

/// "1k", "100k": a cloud's size in a label.
pub fn short(ports: usize) -> String {
    if ports.is_multiple_of(1000) {
        format!("{}k", ports / 1000)
    } else {
        ports.to_string()
    }
}

/// Port `i` goes on network `i mod NETWORKS`, and to VM `i / 2` (two ports
/// each), of another project than the tenant's.
fn port_body(networks: &[String], i: usize) -> Value {
    json!({
        "network_id": networks[i % networks.len()],
        "device_id": device(i / 2),
        "device_owner": "compute:nova",
        "project_id": other_project(i),
    })
}

fn other_project(i: usize) -> String {
    format!("bench-project-{}", i % OTHER_PROJECTS)
}

fn device(vm: usize) -> String {
    format!("bench-vm-{vm}")
}

/// The phase on a server run from `exe` (this binary, or an older build
/// for a baseline).
pub async fn measure(
    big_ports: usize,
    store: BenchStore,
    exe: &Path,
) -> Result<ListScale, BoxError> {
    let mut server = Server::start_binary(store, exe).await?;
    let mut conn = Conn::connect(server.addr).await?;
    let mut tenant = Conn::member(server.addr, TENANT).await?;
    let mut networks = Vec::with_capacity(NETWORKS);
    for i in 0..NETWORKS {
        // Shared: the tenant's network list shows them beside its own.
        let body = json!({"network": {"name": format!("scale-net-{i}"), "shared": true}});
        let id = conn.create("/v2.0/networks", &body).await?.id("network")?;
        let body = json!({"subnet": {
            "network_id": id, "ip_version": 4, "cidr": format!("10.{i}.0.0/16"),
        }});
        conn.create("/v2.0/subnets", &body).await?;
        networks.push(id);
    }
    tenant_records(&mut tenant).await?;
    grow(&mut conn, &networks, 0, BASE_PORTS).await?;
    settle(&mut server).await?;
    let cases = cases(&networks[0]);
    let mut small = Vec::with_capacity(cases.len());
    for case in &cases {
        let conn = if case.tenant { &mut tenant } else { &mut conn };
        small.push(time_list(conn, case).await?);
    }
    let small_rss = server.usage()?.rss_bytes;
    let start = Instant::now();
    grow(&mut conn, &networks, BASE_PORTS, big_ports).await?;
    let grow_seconds = start.elapsed().as_secs_f64();
    settle(&mut server).await?;
    let mut lists = Vec::with_capacity(cases.len());
    for (case, small) in cases.into_iter().zip(small) {
        let conn = if case.tenant { &mut tenant } else { &mut conn };
        let big = time_list(conn, &case).await?;
        lists.push(ScaleList {
            name: case.name,
            items: case.items,
            small,
            big,
        });
    }
    Ok(ListScale {
        small_ports: BASE_PORTS,
        big_ports,
        network_ports: (BASE_PORTS.div_ceil(NETWORKS), big_ports.div_ceil(NETWORKS)),
        grow_seconds,
        rss_bytes: (small_rss, server.usage()?.rss_bytes),
        lists,
    })
}

/// One timed list: its label, path, the items it returns, and whether the
/// tenant (else the admin) asks.
struct Case {
    name: &'static str,
    path: String,
    items: usize,
    tenant: bool,
}

/// The lists: a page of one network's ports, the page after it (by the first
/// page's `next` link, as a client pages), one VM's ports, and an admin's
/// page of every port with no filter, and the page after it; then the
/// tenant's first and next page of its ports, networks and groups.
fn cases(network: &str) -> Vec<Case> {
    let by_network = format!("/v2.0/ports?network_id={network}&limit={PAGE}");
    let unfiltered = format!("/v2.0/ports?limit={PAGE}");
    let admin = |name, path: &String, items| Case {
        name,
        path: path.clone(),
        items,
        tenant: false,
    };
    let mut cases = vec![
        admin("?network_id=&limit=20", &by_network, PAGE),
        admin("?network_id=&limit=20, next page", &by_network, PAGE),
        admin("?limit=20", &unfiltered, PAGE),
        admin("?limit=20, next page", &unfiltered, PAGE),
        admin(
            "?device_id=&limit=20",
            &format!("/v2.0/ports?device_id={}&limit={PAGE}", device(0)),
            2,
        ),
    ];
    for (collection, names) in [
        ("ports", ["tenant: ports", "tenant: ports, next page"]),
        (
            "networks",
            ["tenant: networks", "tenant: networks, next page"],
        ),
        (
            "security-groups",
            [
                "tenant: security-groups",
                "tenant: security-groups, next page",
            ],
        ),
    ] {
        for name in names {
            cases.push(Case {
                name,
                path: format!("/v2.0/{collection}?limit={PAGE}"),
                items: PAGE,
                tenant: true,
            });
        }
    }
    cases
}

/// The tenant's own: a network with a subnet and `TENANT_RECORDS` ports on
/// it, as many networks in all, and as many security groups.
async fn tenant_records(tenant: &mut Conn) -> Result<(), BoxError> {
    let body = json!({"network": {"name": "tenant-net"}});
    let network = tenant
        .create("/v2.0/networks", &body)
        .await?
        .id("network")?;
    let body = json!({"subnet": {
        "network_id": network, "ip_version": 4, "cidr": "192.168.0.0/24",
    }});
    tenant.create("/v2.0/subnets", &body).await?;
    let ports = (0..TENANT_RECORDS).map(|_| json!({"network_id": network}));
    bulk(tenant, "ports", ports).await?;
    let networks = (1..TENANT_RECORDS).map(|i| json!({"name": format!("tenant-net-{i}")}));
    bulk(tenant, "networks", networks).await?;
    let groups = (0..TENANT_RECORDS).map(|i| json!({"name": format!("tenant-group-{i}")}));
    bulk(tenant, "security-groups", groups).await?;
    Ok(())
}

/// Waits until the server is idle: it compiles what the bulk creates wrote
/// after answering them, and lists timed meanwhile would measure that too.
async fn settle(server: &mut Server) -> Result<(), BoxError> {
    let deadline = Instant::now() + SETTLE_MAX;
    let mut before = server.usage()?.cpu_seconds;
    while Instant::now() < deadline {
        tokio::time::sleep(SETTLE_STEP).await;
        let now = server.usage()?.cpu_seconds;
        if now - before < IDLE_CPU {
            return Ok(());
        }
        before = now;
    }
    Err(format!("the server was still busy {SETTLE_MAX:?} after the bulk creates").into())
}

/// Ports `from..to`, and other projects' networks and groups in proportion,
/// in bulk creates.
async fn grow(
    conn: &mut Conn,
    networks: &[String],
    from: usize,
    to: usize,
) -> Result<(), BoxError> {
    let mut i = from;
    while i < to {
        let end = to.min(i + BULK);
        bulk(conn, "ports", (i..end).map(|p| port_body(networks, p))).await?;
        for (collection, per) in [
            ("networks", PORTS_PER_NETWORK_OF_OTHERS),
            ("security-groups", PORTS_PER_GROUP),
        ] {
            let records = (i.div_ceil(per)..end.div_ceil(per))
                .map(|n| json!({ "project_id": other_project(n) }));
            bulk(conn, collection, records).await?;
        }
        i = end;
    }
    Ok(())
}

/// One bulk create of `records` in `collection` (none when there are none).
async fn bulk(
    conn: &mut Conn,
    collection: &str,
    records: impl Iterator<Item = Value>,
) -> Result<(), BoxError> {
    let records: Vec<Value> = records.collect();
    if records.is_empty() {
        return Ok(());
    }
    let path = format!("/v2.0/{collection}");
    conn.create(&path, &json!({ plural(&path): records }))
        .await?;
    Ok(())
}

/// `WARM_UP` then `REPS` timed GETs of the list, checked for its count. A
/// "next page" case first follows the list's own `next` link.
async fn time_list(conn: &mut Conn, case: &Case) -> Result<Samples, BoxError> {
    let plural = plural(&case.path);
    let path = if case.name.ends_with("next page") {
        next_link(conn, &case.path, &plural).await?
    } else {
        case.path.clone()
    };
    let mut latencies = Vec::with_capacity(REPS);
    for rep in 0..WARM_UP + REPS {
        let reply = conn.get(&path).await?;
        if rep == 0 {
            let got = reply.count(&plural)?;
            if got != case.items {
                let want = case.items;
                return Err(format!("GET {path} listed {got} {plural}, expected {want}").into());
            }
        }
        if rep >= WARM_UP {
            latencies.push(reply.elapsed);
        }
    }
    Ok(Samples::new(latencies))
}

/// A list's JSON key: its collection's path segment (`security-groups` →
/// `security_groups`).
fn plural(path: &str) -> String {
    let collection = path.trim_start_matches("/v2.0/");
    let collection = collection.split('?').next().unwrap_or(collection);
    collection.replace('-', "_")
}

/// The path of the `next` link of the list at `path`.
async fn next_link(conn: &mut Conn, path: &str, plural: &str) -> Result<String, BoxError> {
    let page = conn.get(path).await?.json()?;
    let href = page[format!("{plural}_links")]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["rel"] == "next")
        .and_then(|l| l["href"].as_str())
        .ok_or_else(|| format!("GET {path} has no next link"))?;
    let at = href
        .find("/v2.0/")
        .ok_or_else(|| format!("a next link outside /v2.0: {href}"))?;
    Ok(href[at..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_below_the_base_or_beyond_the_subnets_are_refused() {
        assert!(check(0).is_ok());
        assert!(check(100_000).is_ok());
        assert!(check(BASE_PORTS - 1).is_err());
        assert!(check(NETWORKS * PORTS_PER_NETWORK + 1).is_err());
    }

    #[test]
    fn a_list_is_read_by_its_collection_key() {
        assert_eq!(plural("/v2.0/ports?limit=20"), "ports");
        assert_eq!(plural("/v2.0/security-groups?limit=20"), "security_groups");
    }

    #[test]
    fn a_vm_has_two_ports_on_two_networks() {
        let networks: Vec<String> = (0..NETWORKS).map(|i| format!("n{i}")).collect();
        assert_eq!(port_body(&networks, 0)["device_id"], "bench-vm-0");
        assert_eq!(port_body(&networks, 1)["device_id"], "bench-vm-0");
        assert_eq!(port_body(&networks, 1)["network_id"], "n1");
        assert_eq!(port_body(&networks, 2)["device_id"], "bench-vm-1");
    }
}
