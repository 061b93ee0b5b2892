//! `POST /vnet/v1/trace` in-process: the verdict over the server's own
//! compiler and host registry, and its tenant scoping (other projects'
//! ports are 404, their objects never shown).

#![allow(clippy::unwrap_used)] // a failed setup step should panic the test

mod common;

use std::sync::Arc;
use std::time::Duration;

use api::App;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(
    app: &Arc<App>,
    project: Option<&str>,
    method: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(p) = project {
        req = req.header("x-project-id", p);
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    let resp = api::router(app.clone(), None).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A network with a 10.0.0.0/24 subnet and `hosts.len()` ports of `project`.
async fn tenant(app: &Arc<App>, project: &str, hosts: &[&str]) -> Vec<(String, String)> {
    let p = Some(project);
    let (_, net) = call(app, p, "POST", "/v2.0/networks", json!({"network": {}})).await;
    let net = net["network"]["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        app,
        p,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut ports = vec![];
    for h in hosts {
        let (_, port) = call(
            app,
            None,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": net, "binding:host_id": h, "project_id": project}}),
        )
        .await;
        ports.push((
            port["port"]["id"].as_str().unwrap().to_owned(),
            port["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    ports
}

async fn trace(app: &Arc<App>, project: Option<&str>, body: Value) -> (StatusCode, Value) {
    // The compiler follows the store's watch: wait until it has the ports.
    for _ in 0..100 {
        let (status, v) = call(
            app,
            project,
            "POST",
            "/vnet/v1/trace",
            json!({ "trace": body }),
        )
        .await;
        if status != StatusCode::CONFLICT {
            return (status, v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the compiler never caught up");
}

#[tokio::test]
async fn traces_are_scoped_to_the_callers_project() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::app(dir.path()).await;
    app.start_background();
    for (host, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        let reg = json!({"protocol_version": compiler::protocol::PROTOCOL_VERSION, "name": host, "underlay_ip": ip, "capabilities": []});
        call(&app, None, "PUT", &format!("/vnet/v1/hosts/{host}"), reg).await;
    }
    let a = tenant(&app, "pa", &["h1", "h2", "h2"]).await;
    let b = tenant(&app, "pb", &["h1"]).await;
    for host in ["h1", "h2"] {
        let wired: Vec<&str> = a.iter().chain(&b).map(|(id, _)| id.as_str()).collect();
        let (s, _) = call(
            &app,
            None,
            "PUT",
            &format!("/vnet/v1/hosts/{host}/ports"),
            json!({"revision": 0, "wired": wired}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }

    // The default group lets its members in: delivered across hosts.
    let (s, v) = trace(
        &app,
        Some("pa"),
        json!({"from_port": a[0].0, "to_port": a[1].0, "protocol": "tcp", "destination_port": 22}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["trace"]["verdict"], "delivered", "{v:#}");
    assert!(
        v["trace"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "tunnel")
    );

    // Project B's port on the same CIDR: A's third address is not on B's network.
    let (s, v) = trace(
        &app,
        Some("pb"),
        json!({"from_port": b[0].0, "to_ip": a[2].1, "protocol": "icmp"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["trace"]["reason"], "not_on_network", "{v:#}");
    let text = v.to_string();
    for (id, _) in &a {
        assert!(
            !text.contains(id.as_str()),
            "project A's port {id} shown to B: {text}"
        );
    }

    // Another project's port, as source or destination: 404 as if absent.
    let (s, v) = trace(
        &app,
        Some("pb"),
        json!({"from_port": a[0].0, "to_ip": "10.0.0.9", "protocol": "icmp"}),
    )
    .await;
    assert_eq!(
        (s, v["NeutronError"]["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("PortNotFound"))
    );
    let (s, v) = trace(
        &app,
        Some("pb"),
        json!({"from_port": b[0].0, "to_port": a[0].0, "protocol": "icmp"}),
    )
    .await;
    assert_eq!(
        (s, v["NeutronError"]["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("PortNotFound"))
    );

    // A shared network: B may trace to A's port by address, but sees
    // none of A's objects, only the decisions.
    let (_, shared) = call(
        &app,
        None,
        "POST",
        "/v2.0/networks",
        json!({"network": {"shared": true, "project_id": "pa"}}),
    )
    .await;
    let shared = shared["network"]["id"].as_str().unwrap().to_owned();
    call(&app, None, "POST", "/v2.0/subnets", json!({"subnet": {"network_id": shared, "ip_version": 4, "cidr": "10.5.0.0/24", "project_id": "pa"}})).await;
    let mut on_shared = vec![];
    for project in ["pa", "pb"] {
        let (s, port) = call(
            &app,
            None,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": shared, "binding:host_id": "h2", "project_id": project}}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{port}");
        on_shared.push((
            port["port"]["id"].as_str().unwrap().to_owned(),
            port["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    let wired: Vec<&str> = a
        .iter()
        .chain(&on_shared)
        .map(|(id, _)| id.as_str())
        .collect();
    call(
        &app,
        None,
        "PUT",
        "/vnet/v1/hosts/h2/ports",
        json!({"revision": 0, "wired": wired}),
    )
    .await;
    let (s, v) = trace(&app, Some("pb"), json!({"from_port": on_shared[1].0, "to_ip": on_shared[0].1, "protocol": "tcp", "destination_port": 22})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v.to_string();
    assert!(
        !text.contains(on_shared[0].0.as_str()),
        "A's port shown to B: {text}"
    );
    assert_eq!(
        v["trace"]["verdict"], "dropped",
        "A's default group lets no outsider in: {v:#}"
    );
    assert_eq!(
        v["trace"]["message"],
        "dropped at a port of another project"
    );
    // Once A lets anyone in, B's packet is delivered: still without A's
    // port, its host or its group in any step, verdict or hint.
    let (_, groups) = call(
        &app,
        Some("pa"),
        "GET",
        "/v2.0/security-groups?name=default",
        json!({}),
    )
    .await;
    let group = groups["security_groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, rule) = call(
        &app,
        Some("pa"),
        "POST",
        "/v2.0/security-group-rules",
        json!({"security_group_rule": {"security_group_id": group, "direction": "ingress",
               "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    let rule = rule["security_group_rule"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut delivered = Value::Null;
    for _ in 0..100 {
        let (_, v) = trace(&app, Some("pb"), json!({"from_port": on_shared[1].0, "to_ip": on_shared[0].1, "protocol": "tcp", "destination_port": 22})).await;
        if v["trace"]["verdict"] == "delivered" {
            delivered = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = delivered.to_string();
    assert_eq!(delivered["trace"]["verdict"], "delivered", "{text}");
    for secret in [on_shared[0].0.as_str(), &group, &rule] {
        assert!(!text.contains(secret), "{secret} shown to B: {text}");
    }

    // Malformed requests: Neutron's error shape.
    let (s, v) = trace(
        &app,
        None,
        json!({"from_port": a[0].0, "to_ip": "10.0.0.9", "protocol": "bogus"}),
    )
    .await;
    assert_eq!(
        (s, v["NeutronError"]["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidInput"))
    );
    let (s, _) = trace(
        &app,
        None,
        json!({"from_port": a[0].0, "to_ip": "10.0.0.9", "protocol": "tcp"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "tcp needs a destination port");
}

/// The body's `id` of a created resource.
fn id_of(v: &Value, kind: &str) -> String {
    v[kind]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn routed_traces_resolve_behind_routers_and_hide_other_projects() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::app(dir.path()).await;
    app.start_background();
    for (host, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        let reg = json!({"protocol_version": compiler::protocol::PROTOCOL_VERSION, "name": host, "underlay_ip": ip, "capabilities": []});
        call(&app, None, "PUT", &format!("/vnet/v1/hosts/{host}"), reg).await;
    }
    // Project pa: a shared network S (10.5.0.0/24) and a private one M
    // (10.6.0.0/24), joined by pa's router; pa's VM on M, on h2.
    let mut subnets = vec![];
    let mut networks = vec![];
    for (cidr, shared) in [("10.5.0.0/24", true), ("10.6.0.0/24", false)] {
        let (_, n) = call(
            &app,
            None,
            "POST",
            "/v2.0/networks",
            json!({"network": {"shared": shared, "project_id": "pa"}}),
        )
        .await;
        let n = id_of(&n, "network");
        let (s, sub) = call(
            &app,
            None,
            "POST",
            "/v2.0/subnets",
            json!({"subnet": {"network_id": n, "ip_version": 4, "cidr": cidr, "project_id": "pa"}}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{sub}");
        subnets.push(id_of(&sub, "subnet"));
        networks.push(n);
    }
    let (_, router) = call(
        &app,
        Some("pa"),
        "POST",
        "/v2.0/routers",
        json!({"router": {"name": "r"}}),
    )
    .await;
    let router = id_of(&router, "router");
    let mut interfaces = vec![];
    for sub in &subnets {
        let (s, v) = call(
            &app,
            Some("pa"),
            "PUT",
            &format!("/v2.0/routers/{router}/add_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        interfaces.push(v["port_id"].as_str().unwrap().to_owned());
    }
    let mut ports = vec![];
    for (net, host, project) in [(&networks[1], "h2", "pa"), (&networks[0], "h1", "pb")] {
        let (s, port) = call(
            &app,
            None,
            "POST",
            "/v2.0/ports",
            json!({"port": {"network_id": net, "binding:host_id": host, "project_id": project}}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{port}");
        ports.push((
            id_of(&port, "port"),
            port["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    for host in ["h1", "h2"] {
        let wired: Vec<&str> = ports.iter().map(|(id, _)| id.as_str()).collect();
        call(
            &app,
            None,
            "PUT",
            &format!("/vnet/v1/hosts/{host}/ports"),
            json!({"revision": 0, "wired": wired}),
        )
        .await;
    }
    let (vm_a, ip_a) = &ports[0];
    let (vm_b, _) = &ports[1];

    // The admin sees the whole routed path: pa's router on the source's
    // host, the route, M and the VM's host.
    let body = json!({"from_port": vm_b, "to_ip": ip_a, "protocol": "tcp", "destination_port": 22});
    let (s, v) = trace(&app, None, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let steps = v["trace"]["steps"].as_array().unwrap();
    let routing = steps.iter().find(|s| s["stage"] == "routing").unwrap();
    assert_eq!(routing["router"], json!(router), "{v:#}");
    assert_eq!(routing["host"], "h1", "{v:#}");
    assert_eq!(routing["route"]["destination"], "10.6.0.0/24", "{v:#}");
    assert!(
        steps.iter().any(|s| s["port"] == json!(vm_a)),
        "the address resolves behind the router: {v:#}"
    );
    // pa's default group lets no outsider in.
    assert_eq!(v["trace"]["reason"], "no_rule_allows", "{v:#}");

    // pb sees the decisions, none of pa's objects.
    let (s, v) = trace(&app, Some("pb"), body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v.to_string();
    for hidden in [router.as_str(), vm_a.as_str(), networks[1].as_str(), "h2"] {
        assert!(!text.contains(hidden), "{hidden} shown to pb: {v:#}");
    }
    let stages: Vec<&str> = v["trace"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(
        stages.contains(&"gateway") && stages.contains(&"routing"),
        "{stages:?}"
    );
    assert_eq!(v["trace"]["reason"], "no_rule_allows", "{v:#}");
    assert_eq!(
        v["trace"]["message"],
        "dropped at a port of another project"
    );

    // Issue 16 #7: a router's interface port is never bound; a trace to it
    // goes to its address (the router answers), never hints at binding it,
    // and a trace cannot start from it.
    let to_router = json!({"from_port": vm_a, "to_port": interfaces[1], "protocol": "icmp"});
    let (s, v) = trace(&app, Some("pa"), to_router).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["trace"]["packet"]["destination_ip"], "10.6.0.1", "{v:#}");
    assert!(!v.to_string().contains("binding:host_id"), "{v:#}");
    let from_router = json!({"from_port": interfaces[1], "to_ip": ip_a, "protocol": "icmp"});
    let (s, v) = trace(&app, None, from_router).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("not a VM's"),
        "{v}"
    );
}

#[tokio::test]
async fn traces_from_outside_go_only_to_the_callers_floating_ips() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::app(dir.path()).await;
    app.start_background();
    let reg = json!({"protocol_version": compiler::protocol::PROTOCOL_VERSION, "name": "h1",
                     "underlay_ip": "192.0.2.1", "capabilities": []});
    call(&app, None, "PUT", "/vnet/v1/hosts/h1", reg).await;
    let (_, public) = call(
        &app,
        None,
        "POST",
        "/v2.0/networks",
        json!({"network": {"router:external": true, "provider:network_type": "flat",
                           "provider:physical_network": "public"}}),
    )
    .await;
    let public = id_of(&public, "network");
    let (s, _) = call(
        &app,
        None,
        "POST",
        "/v2.0/subnets",
        json!({"subnet": {"network_id": public, "ip_version": 4, "cidr": "203.0.113.0/24"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let ports = tenant(&app, "p1", &["h1"]).await;
    let (_, subnets) = call(&app, Some("p1"), "GET", "/v2.0/subnets", json!({})).await;
    let subnet = subnets["subnets"][0]["id"].as_str().unwrap().to_owned();
    let (_, router) = call(
        &app,
        Some("p1"),
        "POST",
        "/v2.0/routers",
        json!({"router": {"external_gateway_info": {"network_id": public}}}),
    )
    .await;
    let router = id_of(&router, "router");
    call(
        &app,
        Some("p1"),
        "PUT",
        &format!("/v2.0/routers/{router}/add_router_interface"),
        json!({"subnet_id": subnet}),
    )
    .await;
    let (s, fip) = call(
        &app,
        Some("p1"),
        "POST",
        "/v2.0/floatingips",
        json!({"floatingip": {"floating_network_id": public, "port_id": ports[0].0}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{fip}");
    let address = fip["floatingip"]["floating_ip_address"].clone();
    let inward = json!({"from_ip": "198.51.100.7", "to_ip": address, "protocol": "icmp"});

    // Its owner traces in, and the walk starts at its host's router.
    let (s, t) = trace(&app, Some("p1"), inward.clone()).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["trace"]["steps"][1]["stage"], "nat", "{t}");
    // Another project learns nothing of it: 404, as for an address that
    // is no floating IP.
    let (s, t) = trace(&app, Some("p2"), inward.clone()).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{t}");
    let (s, _) = trace(
        &app,
        Some("p2"),
        json!({"from_ip": "198.51.100.7", "to_ip": "203.0.113.250", "protocol": "icmp"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // One source only; from outside, an address only.
    let mut both = inward.clone();
    both["from_port"] = json!(ports[0].0);
    assert_eq!(
        trace(&app, Some("p1"), both).await.0,
        StatusCode::BAD_REQUEST
    );
    let to_port = json!({"from_ip": "198.51.100.7", "to_port": ports[0].0, "protocol": "icmp"});
    assert_eq!(trace(&app, None, to_port).await.0, StatusCode::BAD_REQUEST);
}
