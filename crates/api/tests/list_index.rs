//! Lists answered from the model's facet indexes say exactly what a scan
//! says: every indexed filter (alone, with several values, with another
//! filter, or none), for admins and tenants, in id order both ways and by name, with
//! every limit, marker and direction, checked against the filtered full list;
//! and a tenant's unfiltered lists, on random clouds with sharing, against
//! what `GET /{id}` shows it.

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// `project`: `None` is the default (admin) caller; `Some(p)` a member of p.
async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    project: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(p) = project {
        req = req.header("X-Project-Id", p).header("X-Roles", "member");
    }
    let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
    let resp = app
        .clone()
        .oneshot(
            req.header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

async fn create(app: &axum::Router, path: &str, body: Value) -> Value {
    let (status, reply) = call(app, "POST", path, None, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    reply
}

/// Networks of projects a (two) and b (one), each with a subnet, and ports
/// of every combination of names, devices, owners and hosts among them.
async fn cloud(app: &axum::Router) -> Vec<String> {
    let mut networks = Vec::new();
    for (i, project) in ["a", "a", "b"].into_iter().enumerate() {
        let body = json!({"network": {"name": format!("net-{}", i % 2), "project_id": project}});
        let id = create(app, "/v2.0/networks", body).await["network"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = json!({"subnet": {"network_id": id, "ip_version": 4,
                                      "cidr": format!("10.{i}.0.0/24"), "project_id": project}});
        create(app, "/v2.0/subnets", body).await;
        networks.push(id);
    }
    for i in 0..48usize {
        let net = i % 3;
        let project = if net == 2 { "b" } else { "a" };
        let name = ["", "web", "db"][i % 3 / 2 + i % 2];
        let device = ["", "vm-1", "vm-2", "vm-3"][i % 4];
        let owner = ["", "compute:nova"][i / 4 % 2];
        let host = ["", "host-1", "host-2"][i / 8 % 3];
        let mut port = json!({
            "network_id": networks[net],
            "project_id": project,
            "name": name,
            "device_id": device,
            "device_owner": owner,
            "binding:host_id": host,
        });
        if i % 5 == 0 {
            port["fixed_ips"] = json!([{"ip_address": format!("10.{net}.0.{}", 100 + i)}]);
        }
        create(app, "/v2.0/ports", json!({ "port": port })).await;
    }
    networks
}

/// An external network, a router of project a from it to a's first
/// network, and floating IPs of a: two associated (one then moved to
/// another port, one then released) and one never associated.
async fn floating_ips(app: &axum::Router, network: &str) -> String {
    let body = json!({"network": {"name": "ext", "router:external": true}});
    let ext = create(app, "/v2.0/networks", body).await["network"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"subnet": {"network_id": ext, "ip_version": 4, "cidr": "203.0.113.0/24"}});
    create(app, "/v2.0/subnets", body).await;
    let body = json!({"router": {"project_id": "a", "external_gateway_info": {"network_id": ext}}});
    let router = create(app, "/v2.0/routers", body).await["router"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, subnets) = call(
        app,
        "GET",
        &format!("/v2.0/subnets?network_id={network}"),
        None,
        None,
    )
    .await;
    let subnet = subnets["subnets"][0]["id"].as_str().unwrap();
    let path = format!("/v2.0/routers/{router}/add_router_interface");
    let (status, reply) = call(app, "PUT", &path, None, Some(json!({"subnet_id": subnet}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, ports) = call(
        app,
        "GET",
        &format!("/v2.0/ports?network_id={network}&device_owner=compute:nova"),
        None,
        None,
    )
    .await;
    let port = |i: usize| ports["ports"][i]["id"].as_str().unwrap().to_owned();
    let mut fips = Vec::new();
    for port_id in [Some(port(0)), Some(port(1)), None] {
        let body = json!({"floatingip": {"floating_network_id": ext, "project_id": "a", "port_id": port_id}});
        let fip = create(app, "/v2.0/floatingips", body).await;
        fips.push(fip["floatingip"]["id"].as_str().unwrap().to_owned());
    }
    for (fip, port_id) in [(&fips[0], Some(port(2))), (&fips[1], None)] {
        let body = json!({"floatingip": {"port_id": port_id}});
        let (status, reply) = call(
            app,
            "PUT",
            &format!("/v2.0/floatingips/{fip}"),
            None,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    ext
}

/// A page's ids, and its links as (rel, marker, page_reverse).
type Page = (Vec<String>, Vec<(String, String, bool)>);

/// The page Neutron's pagination gives of `all` (the filtered, sorted list):
/// its ids and its links as (rel, marker, page_reverse); `None` when the
/// marker is not in the list.
fn expected_page(
    all: &[String],
    limit: Option<usize>,
    marker: Option<&str>,
    reverse: bool,
) -> Option<Page> {
    let at = match marker {
        Some(m) => Some(all.iter().position(|id| id == m)?),
        None => None,
    };
    let n = limit.unwrap_or(usize::MAX);
    let (start, end) = match (at, reverse) {
        (Some(i), true) => (i.saturating_sub(n), i),
        (Some(i), false) => (i + 1, all.len().min((i + 1).saturating_add(n))),
        (None, _) => (0, all.len().min(n)),
    };
    let page = all[start..end].to_vec();
    let mut links = Vec::new();
    if limit.is_some() {
        if end < all.len()
            && let Some(last) = page.last()
        {
            links.push(("next".to_owned(), last.clone(), false));
        }
        if (start > 0 || marker.is_some())
            && let Some(first) = page.first()
        {
            links.push(("previous".to_owned(), first.clone(), true));
        }
    }
    Some((page, links))
}

/// A list reply's ids and its links as (rel, marker, page_reverse).
fn page_of(reply: &Value, plural: &str) -> Page {
    let ids = reply[plural]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let links = reply[format!("{plural}_links")]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let href = l["href"].as_str().unwrap();
            let query = href.split_once('?').unwrap().1;
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
            let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            (
                l["rel"].as_str().unwrap().to_owned(),
                get("marker").unwrap(),
                get("page_reverse").is_some(),
            )
        })
        .collect();
    (ids, links)
}

/// Whether a rendered item passes `attr=wanted` as Neutron's filters read it.
fn passes(item: &Value, attr: &str, wanted: &str) -> bool {
    match (attr, wanted.split_once('=')) {
        ("fixed_ips", Some((key, value))) => {
            item["fixed_ips"]
                .as_array()
                .unwrap()
                .iter()
                .any(|ip| match key {
                    "ip_address_substr" => ip["ip_address"].as_str().unwrap().contains(value),
                    _ => ip[key] == value,
                })
        }
        _ => match item.get(attr) {
            Some(Value::Array(values)) => values.iter().any(|v| v == wanted),
            value => value.and_then(Value::as_str) == Some(wanted),
        },
    }
}

/// Every page variant of `filters` (each `(attr, [values])`) on `plural`,
/// for `caller`, against the full list filtered here.
async fn check(
    app: &axum::Router,
    plural: &str,
    caller: Option<&str>,
    filters: &[(&str, Vec<String>)],
) {
    let url = format!("/v2.0/{}", plural.replace('_', "-"));
    // By name, unfiltered: a sort no index answers, so the reference is a
    // scan (of a tenant's candidates, which the random-cloud test below
    // checks against `GET /{id}`).
    let (status, full) = call(app, "GET", &format!("{url}?sort_key=name"), caller, None).await;
    assert_eq!(status, StatusCode::OK);
    let everything = full[plural].as_array().unwrap();
    let matching: Vec<&Value> = everything
        .iter()
        .filter(|item| {
            filters
                .iter()
                .all(|(attr, values)| values.iter().any(|v| passes(item, attr, v)))
        })
        .collect();
    let mut query: Vec<(String, String)> = Vec::new();
    for (attr, values) in filters {
        for v in values {
            query.push(((*attr).to_owned(), v.clone()));
        }
    }
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    for sort in ["", "id:desc", "name:asc"] {
        let mut sorted = matching.clone();
        let mut sort_query = Vec::new();
        if let Some((key, dir)) = sort.split_once(':') {
            sort_query.push(("sort_key".to_owned(), key.to_owned()));
            sort_query.push(("sort_dir".to_owned(), dir.to_owned()));
            sorted.sort_by(|a, b| {
                let o = a[key]
                    .as_str()
                    .cmp(&b[key].as_str())
                    .then(id(a).cmp(&id(b)));
                if dir == "desc" { o.reverse() } else { o }
            });
        } else {
            sorted.sort_by_key(|v| id(v));
        }
        let all: Vec<String> = sorted.iter().map(|v| id(v)).collect();
        // Markers: none, the first, one in the middle, the last, and one
        // the filter leaves out (a 404).
        let outsider = everything.iter().map(id).find(|i| !all.contains(i));
        let mut markers: Vec<Option<String>> = vec![None];
        markers.extend([all.first(), all.get(all.len() / 2), all.last()].map(|m| m.cloned()));
        markers.push(outsider);
        markers.dedup();
        for limit in [None, Some(2)] {
            for marker in &markers {
                for reverse in [false, true] {
                    let mut pairs = query.clone();
                    pairs.extend(sort_query.clone());
                    if let Some(n) = limit {
                        pairs.push(("limit".into(), n.to_string()));
                    }
                    if let Some(m) = marker {
                        pairs.push(("marker".into(), m.clone()));
                    }
                    if reverse {
                        pairs.push(("page_reverse".into(), "True".into()));
                    }
                    let qs = serde_urlencoded::to_string(&pairs).unwrap();
                    let path = format!("{url}?{qs}");
                    let (status, reply) = call(app, "GET", &path, caller, None).await;
                    let want = expected_page(&all, limit, marker.as_deref(), reverse);
                    match want {
                        None => assert_eq!(status, StatusCode::NOT_FOUND, "{caller:?} {path}"),
                        Some(want) => {
                            assert_eq!(status, StatusCode::OK, "{caller:?} {path}: {reply}");
                            assert_eq!(page_of(&reply, plural), want, "{caller:?} {path}");
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn indexed_lists_page_exactly_as_a_scan_filters() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(common::app(dir.path()).await, None);
    let networks = cloud(&app).await;
    let ext = floating_ips(&app, &networks[0]).await;
    let (_, ports) = call(&app, "GET", "/v2.0/ports", None, None).await;
    let ports = ports["ports"].as_array().unwrap().clone();
    let some_ip = ports
        .iter()
        .find_map(|p| p["fixed_ips"][0]["ip_address"].as_str())
        .unwrap()
        .to_owned();
    let some_subnet = ports[0]["fixed_ips"][0]["subnet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = ports
        .iter()
        .find(|p| p["project_id"] == "a")
        .and_then(|p| p["security_groups"][0].as_str())
        .unwrap()
        .to_owned();
    let (_, fips) = call(&app, "GET", "/v2.0/floatingips", None, None).await;
    let fip_port = fips["floatingips"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f["port_id"].as_str())
        .unwrap()
        .to_owned();
    let s = |v: &str| v.to_owned();
    let port_filters: Vec<Vec<(&str, Vec<String>)>> = vec![
        vec![("network_id", vec![networks[0].clone()])],
        vec![("network_id", vec![networks[0].clone(), networks[2].clone()])],
        vec![("network_id", vec![s("no-such-network")])],
        vec![("device_id", vec![s("vm-1")])],
        vec![("device_id", vec![s("vm-1"), s("vm-3")])],
        vec![("device_owner", vec![s("compute:nova")])],
        vec![("binding:host_id", vec![s("host-1")])],
        vec![("project_id", vec![s("a")])],
        vec![("tenant_id", vec![s("b")])],
        vec![("name", vec![s("web")])],
        vec![("name", vec![s("")])],
        vec![("fixed_ips", vec![format!("ip_address={some_ip}")])],
        vec![("fixed_ips", vec![format!("subnet_id={some_subnet}")])],
        vec![("fixed_ips", vec![s("ip_address_substr=10.0")])],
        vec![
            ("network_id", vec![networks[0].clone(), networks[1].clone()]),
            ("device_id", vec![s("vm-2")]),
        ],
        vec![
            ("device_owner", vec![s("compute:nova")]),
            ("binding:host_id", vec![s("host-2")]),
            ("name", vec![s("db")]),
        ],
    ];
    for caller in [None, Some("a"), Some("b")] {
        // Project b sees one network's ports: what a tenant may not see is
        // the point of the one filter beyond the project.
        let filters = if caller == Some("b") {
            &port_filters[6..9]
        } else {
            &port_filters[..]
        };
        for filters in filters {
            check(&app, "ports", caller, filters).await;
        }
        // No indexed filter: in id order, walked over every id of the kind.
        check(&app, "ports", caller, &[]).await;
        check(&app, "ports", caller, &[("status", vec![s("DOWN")])]).await;
        check(&app, "networks", caller, &[]).await;
        check(
            &app,
            "subnets",
            caller,
            &[("network_id", vec![networks[1].clone()])],
        )
        .await;
        check(&app, "networks", caller, &[("project_id", vec![s("a")])]).await;
        check(&app, "networks", caller, &[("name", vec![s("net-0")])]).await;
        check(
            &app,
            "ports",
            caller,
            &[("security_groups", vec![group.clone()])],
        )
        .await;
        let by_group = [("security_group_id", vec![group.clone()])];
        check(&app, "security_group_rules", caller, &by_group).await;
        let by_network = [("floating_network_id", vec![ext.clone()])];
        check(&app, "floatingips", caller, &by_network).await;
        check(
            &app,
            "floatingips",
            caller,
            &[("port_id", vec![fip_port.clone()])],
        )
        .await;
    }
}

/// A tenant's list without an indexed filter reads only its candidates (its
/// project's records and what is shared with it): on clouds of several
/// projects with random sharing, every page of every collection, for each
/// tenant, walked by markers forward, backward and in reverse id order,
/// holds exactly the records `GET /{id}` lets that tenant see.
#[tokio::test]
async fn tenant_lists_page_exactly_what_the_tenant_may_see() {
    for seed in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let app = api::router(common::app(dir.path()).await, None);
        random_cloud(&app, seed).await;
        for caller in PROJECTS {
            for (path, plural) in COLLECTIONS {
                let seen = visible(&app, path, plural, caller).await;
                for limit in [1, 3, 7] {
                    let forward = walk(&app, path, plural, caller, limit, "").await;
                    assert_eq!(forward, seen, "seed {seed} {caller} {path} limit {limit}");
                    let mut down = walk(&app, path, plural, caller, limit, "id:desc").await;
                    down.reverse();
                    assert_eq!(down, seen, "seed {seed} {caller} {path} id:desc {limit}");
                    let back = walk_back(&app, path, plural, caller, limit, &seen).await;
                    assert_eq!(back, seen, "seed {seed} {caller} {path} back {limit}");
                }
            }
        }
    }
}

const PROJECTS: [&str; 4] = ["p0", "p1", "p2", "p3"];

/// Every collection a tenant may list, and its JSON key.
const COLLECTIONS: [(&str, &str); 12] = [
    ("networks", "networks"),
    ("subnets", "subnets"),
    ("ports", "ports"),
    ("security-groups", "security_groups"),
    ("security-group-rules", "security_group_rules"),
    ("subnetpools", "subnetpools"),
    ("rbac-policies", "rbac_policies"),
    ("routers", "routers"),
    ("address-groups", "address_groups"),
    ("metering/metering-labels", "metering_labels"),
    ("metering/metering-label-rules", "metering_label_rules"),
    (
        "default-security-group-rules",
        "default_security_group_rules",
    ),
];

/// xorshift64: the same cloud for the same seed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn owner(&mut self) -> &'static str {
        ["p0", "p1", "p2", "p3", "admin"][self.roll(5)]
    }

    fn target(&mut self) -> &'static str {
        ["p0", "p1", "p2", "p3", "*"][self.roll(5)]
    }
}

/// Networks (some shared, some external) with a subnet and ports of random
/// projects, groups, subnet pools (some shared), address groups, routers and
/// metering labels, then RBAC grants of every type to projects and to
/// everyone, some deleted and some retargeted again. Refusals (a duplicate
/// grant, a grant still in use) are part of the game.
async fn random_cloud(app: &axum::Router, seed: u64) {
    let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let id = |reply: &Value, key: &str| reply[key]["id"].as_str().unwrap().to_owned();
    let mut objects: Vec<(&str, String)> = Vec::new();
    for i in 0..8 {
        let owner = dice.owner();
        let body = json!({"network": {"project_id": owner, "shared": dice.roll(4) == 0,
                                      "router:external": dice.roll(5) == 0}});
        let network = id(&create(app, "/v2.0/networks", body).await, "network");
        let project = if dice.roll(3) == 0 {
            dice.owner()
        } else {
            owner
        };
        let body = json!({"subnet": {"network_id": network, "ip_version": 4,
                                     "cidr": format!("10.{i}.0.0/24"), "project_id": project}});
        create(app, "/v2.0/subnets", body).await;
        for _ in 0..2 {
            let body = json!({"port": {"network_id": network, "project_id": dice.owner()}});
            create(app, "/v2.0/ports", body).await;
        }
        objects.push(("network", network));
    }
    for _ in 0..5 {
        let body = json!({"security_group": {"project_id": dice.owner()}});
        let group = id(
            &create(app, "/v2.0/security-groups", body).await,
            "security_group",
        );
        objects.push(("security_group", group));
    }
    for i in 0..4 {
        let body = json!({"subnetpool": {"project_id": dice.owner(), "shared": dice.roll(3) == 0,
                                         "prefixes": [format!("10.{}.0.0/16", 100 + i)]}});
        let pool = id(&create(app, "/v2.0/subnetpools", body).await, "subnetpool");
        objects.push(("subnetpool", pool));
    }
    for _ in 0..3 {
        let body = json!({"address_group": {"project_id": dice.owner(), "addresses": []}});
        create(app, "/v2.0/address-groups", body).await;
        create(
            app,
            "/v2.0/routers",
            json!({"router": {"project_id": dice.owner()}}),
        )
        .await;
        let body = json!({"metering_label": {"project_id": dice.owner()}});
        let label = id(
            &create(app, "/v2.0/metering/metering-labels", body).await,
            "metering_label",
        );
        let body = json!({"metering_label_rule": {"metering_label_id": label,
                                                  "remote_ip_prefix": "10.0.0.0/8",
                                                  "direction": "ingress"}});
        create(app, "/v2.0/metering/metering-label-rules", body).await;
    }
    let mut policies = Vec::new();
    for _ in 0..14 {
        let (object_type, object) = &objects[dice.roll(objects.len())];
        let action = if *object_type == "network" && dice.roll(2) == 0 {
            "access_as_external"
        } else {
            "access_as_shared"
        };
        let body = json!({"rbac_policy": {"object_type": object_type, "object_id": object,
                                          "action": action, "target_tenant": dice.target()}});
        let (status, reply) = call(app, "POST", "/v2.0/rbac-policies", None, Some(body)).await;
        if status == StatusCode::CREATED {
            policies.push(id(&reply, "rbac_policy"));
        }
    }
    for policy in policies.iter().step_by(3) {
        let path = format!("/v2.0/rbac-policies/{policy}");
        if dice.roll(2) == 0 {
            call(app, "DELETE", &path, None, None).await;
        } else {
            let body = json!({"rbac_policy": {"target_tenant": dice.target()}});
            call(app, "PUT", &path, None, Some(body)).await;
        }
    }
}

/// The ids of every record of the collection (as an admin lists them)
/// that `GET /{id}` shows `caller`, in id order: the model's visibility
/// predicate alone, asked one record at a time.
async fn visible(app: &axum::Router, path: &str, plural: &str, caller: &str) -> Vec<String> {
    let (status, all) = call(app, "GET", &format!("/v2.0/{path}"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mut seen = Vec::new();
    for r in all[plural].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let (status, _) = call(
            app,
            "GET",
            &format!("/v2.0/{path}/{id}"),
            Some(caller),
            None,
        )
        .await;
        if status == StatusCode::OK {
            seen.push(id.to_owned());
        }
    }
    seen.sort();
    seen
}

/// Every page of `caller`'s list from the start, `limit` at a time, each
/// asked with the marker of the previous page's `next` link.
async fn walk(
    app: &axum::Router,
    path: &str,
    plural: &str,
    caller: &str,
    limit: usize,
    sort: &str,
) -> Vec<String> {
    let mut base = format!("/v2.0/{path}?limit={limit}");
    if let Some((key, dir)) = sort.split_once(':') {
        base.push_str(&format!("&sort_key={key}&sort_dir={dir}"));
    }
    let mut ids = Vec::new();
    let mut query = base.clone();
    loop {
        let (status, reply) = call(app, "GET", &query, Some(caller), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {reply}");
        let (page, links) = page_of(&reply, plural);
        assert!(page.len() <= limit, "{query}");
        ids.extend(page);
        match links.iter().find(|(rel, _, _)| rel == "next") {
            Some((_, marker, _)) => query = format!("{base}&marker={marker}"),
            None => return ids,
        }
    }
}

/// `seen`'s pages walked back from its last id by `page_reverse` and each
/// page's `previous` link, put back in order, with that last id.
async fn walk_back(
    app: &axum::Router,
    path: &str,
    plural: &str,
    caller: &str,
    limit: usize,
    seen: &[String],
) -> Vec<String> {
    let Some(last) = seen.last() else {
        return Vec::new();
    };
    let mut pages = vec![vec![last.clone()]];
    let mut marker = last.clone();
    loop {
        let query = format!("/v2.0/{path}?limit={limit}&marker={marker}&page_reverse=True");
        let (status, reply) = call(app, "GET", &query, Some(caller), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {reply}");
        let (page, links) = page_of(&reply, plural);
        let full = page.len() == limit;
        let Some(first) = page.first().cloned() else {
            break;
        };
        pages.push(page);
        // A full page may have more before it; its `previous` link says where.
        match links.iter().find(|(rel, _, _)| rel == "previous") {
            Some((_, m, _)) if full => marker = m.clone(),
            _ => break,
        }
        assert_eq!(marker, first, "{query}");
    }
    pages.into_iter().rev().flatten().collect()
}
